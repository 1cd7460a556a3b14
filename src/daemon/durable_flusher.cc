#include "daemon/durable_flusher.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <utility>

namespace fern::daemon {

DurableFlusher::DurableFlusher(ShardStore* store) : store_(store) {
  event_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  thread_ = std::thread([this] { Run(); });
}

DurableFlusher::~DurableFlusher() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
  if (event_fd_ >= 0) close(event_fd_);
}

void DurableFlusher::Submit(ShardStore::PendingCommit commit, Completion done) {
  ++in_flight_;
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back({std::move(commit), std::move(done)});
  }
  cv_.notify_one();
}

void DurableFlusher::Run() {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    cv_.wait(l, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, everything flushed
    std::vector<Item> batch;
    batch.swap(queue_);
    l.unlock();
    std::vector<ShardStore::PendingCommit> commits;
    commits.reserve(batch.size());
    for (auto& item : batch) commits.push_back(std::move(item.commit));
    std::vector<Status> results = store_->CommitBatch(std::move(commits));
    l.lock();
    ++batches_;
    shards_ += batch.size();
    for (size_t i = 0; i < batch.size(); ++i) done_.push_back({std::move(batch[i].done), results[i]});
    const uint64_t one = 1;
    (void)!write(event_fd_, &one, sizeof one);
  }
}

size_t DurableFlusher::Drain() {
  uint64_t counter;
  (void)!read(event_fd_, &counter, sizeof counter);
  std::vector<Result> ready;
  {
    std::lock_guard<std::mutex> l(mu_);
    ready.swap(done_);
  }
  in_flight_ -= ready.size();
  for (auto& r : ready) r.done(r.status);
  return ready.size();
}

uint64_t DurableFlusher::batches() const {
  std::lock_guard<std::mutex> l(mu_);
  return batches_;
}

uint64_t DurableFlusher::shards() const {
  std::lock_guard<std::mutex> l(mu_);
  return shards_;
}

}  // namespace fern::daemon
