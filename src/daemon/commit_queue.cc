#include "daemon/commit_queue.h"

#include <memory>
#include <utility>
#include <vector>

namespace fern::daemon {

bool PathUnder(const std::string& path, const std::string& prefix) {
  if (prefix == "/") return true;
  if (path.size() < prefix.size() || path.compare(0, prefix.size(), prefix) != 0) return false;
  return path.size() == prefix.size() || path[prefix.size()] == '/';
}

void CommitQueue::Run(const std::string& path, Task task) {
  queues_[path].tasks.push_back(std::move(task));
  ++queued_;
  Pump(path);
}

// Starts the next task of `path` while none is running. A task that finishes
// inside its own call returns here and the loop starts the next one, so a
// long run of synchronous tasks does not recurse.
void CommitQueue::Pump(const std::string& path) {
  if (!pumping_.insert(path).second) return;  // an outer Pump of this path continues
  while (true) {
    auto it = queues_.find(path);
    if (it == queues_.end()) break;
    Queue& q = it->second;
    if (q.running) break;
    if (q.tasks.empty()) {
      queues_.erase(it);
      break;
    }
    Task task = std::move(q.tasks.front());
    q.tasks.pop_front();
    q.running = true;
    auto called = std::make_shared<bool>(false);
    task([this, path, called] {
      if (*called) return;
      *called = true;
      --queued_;
      auto it = queues_.find(path);
      if (it != queues_.end()) it->second.running = false;
      Pump(path);
    });
  }
  pumping_.erase(path);
}

std::vector<std::string> CommitQueue::QueuedUnder(const std::string& prefix) const {
  std::vector<std::string> out;
  for (const auto& [path, q] : queues_) {
    if (PathUnder(path, prefix)) out.push_back(path);
  }
  return out;
}

void CommitQueue::After(const std::string& prefix, std::function<void()> fn) {
  const auto paths = QueuedUnder(prefix);
  if (paths.empty()) return fn();
  // One marker task behind the current tail of each queue; the last marker
  // to run calls fn.
  auto left = std::make_shared<size_t>(paths.size());
  auto shared_fn = std::make_shared<std::function<void()>>(std::move(fn));
  for (const auto& path : paths) {
    Run(path, [left, shared_fn](Finished finished) {
      finished();
      if (--*left == 0) (*shared_fn)();
    });
  }
}

void CommitQueue::AsyncStarted(uint64_t bytes) {
  ++async_pending_;
  async_pending_bytes_ += bytes;
}

void CommitQueue::AsyncFinished(const std::string& path, uint64_t bytes, const Status& result) {
  --async_pending_;
  async_pending_bytes_ -= bytes;
  if (result.ok()) {
    failures_.erase(path);
    return;
  }
  ++async_failed_total_;
  last_async_error_ = "async commit of " + path + ": " + result.ToString();
  failures_[path] = result;
}

Status CommitQueue::TakeFailure(const std::string& prefix) {
  for (auto it = failures_.begin(); it != failures_.end(); ++it) {
    if (!PathUnder(it->first, prefix)) continue;
    Status s = it->second;
    const std::string path = it->first;
    failures_.erase(it);
    return Status(s.code(), "an earlier asynchronous commit of " + path + " failed: " +
                                std::string(s.message()))
        .WithErrno(ToErrno(s));
  }
  return Status();
}

}  // namespace fern::daemon
