// DurableFlusher: group commit of shards into a durable ShardStore on a
// WorkerThread of its own, so the daemon's event loop keeps receiving while
// the disk flushes.
//
// The loop thread Submit()s received shards with a completion; the flusher
// thread takes everything submitted so far as one batch and commits it with
// ShardStore::CommitBatch (two disk flushes per batch). Shards that arrive
// while a flush runs form the next batch, so batches grow with load instead
// of costing a flush each. Completions run on the loop thread, in Drain(),
// which the owner calls when event_fd() is readable (or after every loop
// round); they must not run on the flusher thread because they answer
// through the transport, which only the loop thread may touch.
//
// Thread-safety: Submit, Drain and the destructor on the owner's thread
// only. The destructor finishes what was submitted (flushes and runs no
// completions: the owner is going away).
#pragma once

#include <functional>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "daemon/shard_store.h"
#include "daemon/worker_thread.h"

namespace fern::daemon {

class DurableFlusher {
 public:
  using Completion = std::function<void(Status)>;

  // REQUIRES: store outlives the flusher.
  explicit DurableFlusher(ShardStore* store);
  ~DurableFlusher();
  DurableFlusher(const DurableFlusher&) = delete;
  DurableFlusher& operator=(const DurableFlusher&) = delete;

  void Submit(ShardStore::PendingCommit commit, Completion done);
  // Runs the completions of committed batches. Returns how many ran.
  size_t Drain();
  // Readable while completions wait for Drain (an eventfd).
  int event_fd() const { return worker_.event_fd(); }
  // Shards submitted and not yet drained.
  size_t in_flight() const { return in_flight_; }
  // Batches committed so far, and the shards in them (for status and tests).
  uint64_t batches() const;
  uint64_t shards() const;

 private:
  struct Item {
    ShardStore::PendingCommit commit;
    Completion done;
  };
  // One batch's completions and results, filled by its job.
  struct Batch {
    std::vector<Completion> done;
    std::vector<Status> status;
  };
  void CommitQueued(Batch* out);

  ShardStore* const store_;
  size_t in_flight_ = 0;   // owner thread only
  size_t drained_ = 0;     // completions run by the last worker_.Drain()
  mutable std::mutex mu_;
  std::vector<Item> queue_;     // guarded by mu_: submitted, not yet in a batch
  bool job_waiting_ = false;    // guarded by mu_: a job will take queue_
  uint64_t batches_ = 0;        // guarded by mu_
  uint64_t shards_ = 0;         // guarded by mu_
  WorkerThread worker_;         // last: its jobs use the members above
};

}  // namespace fern::daemon
