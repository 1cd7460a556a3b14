#include "daemon/worker_thread.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <utility>

namespace fern::daemon {

WorkerThread::WorkerThread(const char* name) : event_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  thread_ = std::thread([this] { Run(); });
  pthread_setname_np(thread_.native_handle(), name);  // a longer name is refused, harmlessly
}

WorkerThread::~WorkerThread() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
  if (event_fd_ >= 0) close(event_fd_);
}

void WorkerThread::Submit(std::function<void()> job, std::function<void()> done) {
  ++in_flight_;
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back({std::move(job), std::move(done)});
  }
  cv_.notify_one();
}

void WorkerThread::Post(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back({std::move(job), nullptr});
  }
  cv_.notify_one();
}

void WorkerThread::Run() {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    cv_.wait(l, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, every job run
    Item item = std::move(queue_.front());
    queue_.pop_front();
    l.unlock();
    item.job();
    item.job = nullptr;  // what it holds is let go here, not under mu_
    l.lock();
    if (!item.done) continue;  // posted
    done_.push_back(std::move(item.done));
    const uint64_t one = 1;
    (void)!write(event_fd_, &one, sizeof one);
  }
}

size_t WorkerThread::Drain() {
  uint64_t counter;
  (void)!read(event_fd_, &counter, sizeof counter);
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard<std::mutex> l(mu_);
    ready.swap(done_);
  }
  in_flight_ -= ready.size();
  for (auto& done : ready) done();
  return ready.size();
}

}  // namespace fern::daemon
