// WorkerThread: CPU work taken off the daemon's event loop (encoding and
// checksumming stripes while the loop keeps sending and receiving).
//
// The loop thread Submit()s a job and its completion; the worker runs jobs
// in submission order; completions run on the loop thread, in Drain(), in
// the same order, which the owner calls when event_fd() is readable (or
// after every loop round). Completions must not run on the worker: they
// touch the transport and the node's state, which only the loop owns.
//
// Thread-safety: Submit, Drain and the destructor on the owner's thread
// only; Post from any thread until the destructor starts. The destructor
// finishes the jobs submitted and posted and runs no completions (the owner
// is going away).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fern::daemon {

class WorkerThread {
 public:
  // `name` (up to 15 characters) shows in top, ps -L and perf.
  explicit WorkerThread(const char* name = "fern-worker");
  ~WorkerThread();
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  // `job` runs on the worker; `done` later on the owner's thread, in Drain.
  void Submit(std::function<void()> job, std::function<void()> done);
  // `job` runs on the worker, in order with the submitted ones, and has no
  // completion (in_flight and event_fd do not see it). For work whose
  // result nobody waits for, such as freeing memory: a shared_ptr's deleter
  // may Post from whichever thread lets go of it last.
  void Post(std::function<void()> job);
  // Runs the completions of finished jobs. Returns how many ran.
  size_t Drain();
  // Readable while completions wait for Drain (an eventfd); it may also be
  // readable once after a Drain that took everything, which then returns 0.
  int event_fd() const { return event_fd_; }
  // Jobs submitted whose completion has not run yet.
  size_t in_flight() const { return in_flight_; }

 private:
  struct Item {
    std::function<void()> job;
    std::function<void()> done;
  };
  void Run();

  int event_fd_ = -1;
  size_t in_flight_ = 0;  // owner's thread only
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;                 // guarded by mu_
  std::vector<std::function<void()>> done_;  // guarded by mu_
  bool stop_ = false;                      // guarded by mu_
  std::thread thread_;                     // last: starts after the rest exists
};

}  // namespace fern::daemon
