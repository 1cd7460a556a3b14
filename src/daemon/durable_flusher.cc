#include "daemon/durable_flusher.h"

#include <memory>
#include <utility>

namespace fern::daemon {

DurableFlusher::DurableFlusher(ShardStore* store) : store_(store) {}

// The worker's destructor (the last member) runs every job still queued, so
// everything submitted is committed; no completion runs.
DurableFlusher::~DurableFlusher() = default;

void DurableFlusher::Submit(ShardStore::PendingCommit commit, Completion done) {
  ++in_flight_;
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back({std::move(commit), std::move(done)});
    if (job_waiting_) return;  // the waiting job takes this one too
    job_waiting_ = true;
  }
  // One job per batch: it takes whatever was queued when it starts, so what
  // arrives while a flush runs waits for the next job, as one batch.
  auto batch = std::make_shared<Batch>();
  worker_.Submit([this, batch] { CommitQueued(batch.get()); },
                 [this, batch] {
                   in_flight_ -= batch->done.size();
                   drained_ += batch->done.size();
                   for (size_t i = 0; i < batch->done.size(); ++i) batch->done[i](batch->status[i]);
                 });
}

void DurableFlusher::CommitQueued(Batch* out) {
  std::vector<Item> items;
  {
    std::lock_guard<std::mutex> l(mu_);
    items.swap(queue_);
    job_waiting_ = false;
  }
  std::vector<ShardStore::PendingCommit> commits;
  commits.reserve(items.size());
  for (auto& item : items) {
    commits.push_back(std::move(item.commit));
    out->done.push_back(std::move(item.done));
  }
  out->status = store_->CommitBatch(std::move(commits));
  std::lock_guard<std::mutex> l(mu_);
  ++batches_;
  shards_ += items.size();
}

size_t DurableFlusher::Drain() {
  drained_ = 0;
  worker_.Drain();
  return drained_;
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
