#include "daemon/worker_thread.h"

#include <poll.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace fern::daemon {
namespace {

bool WaitReadable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1;
}

// Jobs run off the caller's thread; completions run in Drain, on the
// caller's thread, in submission order, after their job.
TEST(WorkerThread, CompletionsRunInOrderOnTheOwnersThreadAfterTheirJob) {
  WorkerThread w;
  const auto owner = std::this_thread::get_id();
  std::vector<int> ran_jobs, ran_done;
  std::atomic<int> jobs{0};
  bool job_on_owner = false;
  for (int i = 0; i < 50; ++i) {
    w.Submit(
        [&, i] {
          if (std::this_thread::get_id() == owner) job_on_owner = true;
          ran_jobs.push_back(i);  // jobs run one at a time, on one thread
          jobs.fetch_add(1);
        },
        [&, i] {
          EXPECT_EQ(std::this_thread::get_id(), owner);
          EXPECT_GT(jobs.load(), i) << "completion " << i << " before its job";
          ran_done.push_back(i);
        });
  }
  EXPECT_EQ(w.in_flight(), 50u);
  while (w.in_flight() > 0) {
    ASSERT_TRUE(WaitReadable(w.event_fd(), 10000)) << "no completion became ready";
    w.Drain();
  }
  EXPECT_FALSE(job_on_owner);
  ASSERT_EQ(ran_done.size(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(ran_jobs[i], i);
    EXPECT_EQ(ran_done[i], i);
  }
  // The fd may stay readable once more (a job finished between Drain's read
  // of the counter and its swap); nothing is left or repeated.
  EXPECT_EQ(w.Drain(), 0u);
  EXPECT_EQ(ran_done.size(), 50u);
}

// The destructor finishes every submitted job and runs no completion.
TEST(WorkerThread, DestructorFinishesJobsWithoutCompletions) {
  std::atomic<int> jobs{0};
  int done = 0;
  {
    WorkerThread w;
    for (int i = 0; i < 20; ++i) {
      w.Submit(
          [&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
            jobs.fetch_add(1);
          },
          [&] { ++done; });
    }
  }
  EXPECT_EQ(jobs.load(), 20);
  EXPECT_EQ(done, 0);
}

// Posted jobs run on the worker, in order with submitted ones, from any
// thread, and never produce a completion.
TEST(WorkerThread, PostedJobsRunOnTheWorkerWithoutCompletions) {
  WorkerThread w;
  const auto owner = std::this_thread::get_id();
  std::atomic<int> posted{0};
  std::atomic<bool> on_owner{false};
  std::vector<std::thread> posters;
  for (int t = 0; t < 4; ++t) {
    posters.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        w.Post([&] {
          if (std::this_thread::get_id() == owner) on_owner = true;
          posted.fetch_add(1);
        });
      }
    });
  }
  for (auto& t : posters) t.join();
  EXPECT_EQ(w.in_flight(), 0u);
  // A submitted job after them runs after them: its completion is the barrier.
  int seen_at_barrier = -1;
  w.Submit([&] { seen_at_barrier = posted.load(); }, [] {});
  while (w.in_flight() > 0) {
    ASSERT_TRUE(WaitReadable(w.event_fd(), 10000)) << "the barrier never completed";
    w.Drain();
  }
  EXPECT_EQ(seen_at_barrier, 400);
  EXPECT_FALSE(on_owner.load());
  EXPECT_EQ(w.Drain(), 0u);
}

// What a posted job holds is let go after it ran and outside the worker's
// lock, so a deleter that posts again (the daemon releases client memory
// that way) neither deadlocks nor is lost; the destructor runs it too.
TEST(WorkerThread, AJobLettingGoOfWhatPostsAgainDoesNotDeadlock) {
  std::atomic<int> released{0};
  {
    WorkerThread w;
    for (int i = 0; i < 10; ++i) {
      auto held = std::shared_ptr<int>(new int(i), [&w, &released](int* p) {
        w.Post([p, &released] {
          delete p;
          released.fetch_add(1);
        });
      });
      w.Post([held] { EXPECT_GE(*held, 0); });
    }
  }
  EXPECT_EQ(released.load(), 10);
}

}  // namespace
}  // namespace fern::daemon
