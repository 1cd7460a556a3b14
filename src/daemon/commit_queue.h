// CommitQueue: the order of client operations on one path in one daemon, and
// the bookkeeping of asynchronous commits (DESIGN §2, commit modes).
//
// Every operation that changes a path (PUT, UNLINK, RENAME) runs as a Task
// queued on that path: tasks of one path run one at a time, in the order
// they were queued, each until it calls its `finished` callback. Without it
// an async PUT still in flight could commit after a later PUT, UNLINK or
// RENAME of the same path and silently undo it. Reads (GET, STAT, LIST,
// WAIT) use After(): they start once everything queued before them under a
// path has finished, so a program that closed a file in async mode and
// another that opens it on the same node next see the new bytes.
//
// Asynchronous commits: the client is answered when the PUT is queued;
// AsyncStarted/AsyncFinished count what is still in flight (for backpressure
// and `fern-ec status`) and keep the failure of each path until someone takes
// it: the next close (async PUT) or WAIT of that path reports it, and a later
// successful commit of the path clears it (its newest bytes are then safe).
//
// Not thread-safe: owned by the daemon's event loop; tasks, their finished
// callbacks and After() callbacks run on that thread (callbacks may run
// inside Run/After when nothing is queued ahead of them).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "common/status.h"

namespace fern::daemon {

class CommitQueue {
 public:
  using Finished = std::function<void()>;
  // A task must call `finished` exactly once (later calls are ignored).
  using Task = std::function<void(Finished finished)>;

  // Queues `task` on `path`; it starts once every task queued on `path`
  // earlier has finished (at once if none is).
  void Run(const std::string& path, Task task);

  // Runs `fn` once every task queued so far on `prefix` or on any path under
  // it ("/" covers every path) has finished; at once if none is queued.
  void After(const std::string& prefix, std::function<void()> fn);

  // Tasks queued or running, over all paths.
  size_t queued() const { return queued_; }

  // Asynchronous commits of `bytes` bytes to `path`.
  void AsyncStarted(uint64_t bytes);
  void AsyncFinished(const std::string& path, uint64_t bytes, const Status& result);
  // A successful synchronous commit of `path`: an older async failure is moot.
  void Committed(const std::string& path) { failures_.erase(path); }
  // The recorded async failure of `prefix` or of paths under it, cleared;
  // OK if there is none. With several, the first by path.
  Status TakeFailure(const std::string& prefix);

  uint64_t async_pending() const { return async_pending_; }
  uint64_t async_pending_bytes() const { return async_pending_bytes_; }
  uint64_t async_failed_total() const { return async_failed_total_; }
  // The newest async failure in words (kept after it was taken), "" if none.
  const std::string& last_async_error() const { return last_async_error_; }

 private:
  struct Queue {
    std::deque<Task> tasks;
    bool running = false;
  };
  void Pump(const std::string& path);
  // Paths with a queue that equal `prefix` or lie under it.
  std::vector<std::string> QueuedUnder(const std::string& prefix) const;

  std::map<std::string, Queue> queues_;
  std::set<std::string> pumping_;  // paths whose Pump loop is on the stack
  size_t queued_ = 0;

  uint64_t async_pending_ = 0;
  uint64_t async_pending_bytes_ = 0;
  uint64_t async_failed_total_ = 0;
  std::map<std::string, Status> failures_;
  std::string last_async_error_;
};

// True if `path` is `prefix` or lies under it ("/" is the prefix of all).
bool PathUnder(const std::string& path, const std::string& prefix);

}  // namespace fern::daemon
