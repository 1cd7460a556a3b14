#include "daemon/commit_queue.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace fern::daemon {
namespace {

// A task that records its start and hands its finished callback to the test.
struct Recorder {
  std::vector<std::string> log;
  std::vector<CommitQueue::Finished> pending;
  CommitQueue::Task Task(const std::string& name) {
    return [this, name](CommitQueue::Finished finished) {
      log.push_back(name);
      pending.push_back(std::move(finished));
    };
  }
  void FinishOldest() {
    auto f = std::move(pending.front());
    pending.erase(pending.begin());
    f();
  }
};

TEST(CommitQueue, TasksOfOnePathRunOneAtATimeInOrder) {
  CommitQueue q;
  Recorder r;
  q.Run("/a", r.Task("a1"));
  q.Run("/a", r.Task("a2"));
  q.Run("/b", r.Task("b1"));  // another path does not wait for /a
  EXPECT_EQ(r.log, (std::vector<std::string>{"a1", "b1"}));
  EXPECT_EQ(q.queued(), 3u);
  r.FinishOldest();  // a1
  EXPECT_EQ(r.log, (std::vector<std::string>{"a1", "b1", "a2"}));
  r.FinishOldest();  // b1
  r.FinishOldest();  // a2
  EXPECT_EQ(q.queued(), 0u);
}

TEST(CommitQueue, FinishedTwiceCountsOnce) {
  CommitQueue q;
  CommitQueue::Finished keep;
  q.Run("/a", [&](CommitQueue::Finished f) { keep = f; });
  keep();
  keep();
  EXPECT_EQ(q.queued(), 0u);
  int ran = 0;
  q.Run("/a", [&](CommitQueue::Finished f) { ++ran; f(); });
  EXPECT_EQ(ran, 1);
}

TEST(CommitQueue, SynchronousTasksDoNotRecurse) {
  CommitQueue q;
  Recorder blocker;
  q.Run("/a", blocker.Task("first"));
  int ran = 0;
  for (int i = 0; i < 100000; ++i) q.Run("/a", [&](CommitQueue::Finished f) { ++ran; f(); });
  blocker.FinishOldest();  // 100000 tasks that finish inside their call: a loop, not a stack
  EXPECT_EQ(ran, 100000);
  EXPECT_EQ(q.queued(), 0u);
}

TEST(CommitQueue, AfterWaitsForEverythingQueuedUnderThePrefix) {
  CommitQueue q;
  Recorder r;
  q.Run("/d/x", r.Task("x"));
  q.Run("/d/y", r.Task("y"));
  q.Run("/dz", r.Task("dz"));  // not under /d
  bool d_done = false, all_done = false, idle_done = false;
  q.After("/d", [&] { d_done = true; });
  q.After("/", [&] { all_done = true; });
  q.After("/e", [&] { idle_done = true; });  // nothing queued: at once
  EXPECT_TRUE(idle_done);
  q.Run("/d/x", r.Task("x2"));  // queued after the After: not waited for
  r.FinishOldest();             // x
  EXPECT_FALSE(d_done);
  r.FinishOldest();  // y
  EXPECT_TRUE(d_done);
  EXPECT_FALSE(all_done);
  // Finish dz; x2 (started when x's marker passed) is still running.
  for (size_t i = 0; i < r.pending.size(); ++i) {
    if (r.log[r.log.size() - r.pending.size() + i] == "dz") {
      auto f = r.pending[i];
      r.pending.erase(r.pending.begin() + static_cast<long>(i));
      f();
      break;
    }
  }
  EXPECT_TRUE(all_done);
  EXPECT_EQ(q.queued(), 1u);  // x2
}

TEST(CommitQueue, AsyncFailuresAreKeptUntilTakenAndClearedBySuccess) {
  CommitQueue q;
  q.AsyncStarted(100);
  q.AsyncStarted(50);
  EXPECT_EQ(q.async_pending(), 2u);
  EXPECT_EQ(q.async_pending_bytes(), 150u);
  q.AsyncFinished("/d/a", 100, UnavailableError("4 of 6 nodes alive"));
  q.AsyncFinished("/d/b", 50, Status());
  EXPECT_EQ(q.async_pending(), 0u);
  EXPECT_EQ(q.async_failed_total(), 1u);
  EXPECT_TRUE(q.TakeFailure("/d/b").ok());
  EXPECT_TRUE(q.TakeFailure("/d/ab").ok());  // a sibling, not under /d/a
  Status s = q.TakeFailure("/d");
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(std::string(s.message()).find("/d/a"), std::string::npos) << s.ToString();
  EXPECT_TRUE(q.TakeFailure("/d").ok());  // reported once
  EXPECT_NE(q.last_async_error().find("4 of 6"), std::string::npos);

  q.AsyncStarted(1);
  q.AsyncFinished("/c", 1, InternalError("disk"));
  q.Committed("/c");  // a later sync commit of /c succeeded
  EXPECT_TRUE(q.TakeFailure("/").ok());
}

TEST(PathUnder, ComponentBoundaries) {
  EXPECT_TRUE(PathUnder("/a/b", "/a"));
  EXPECT_TRUE(PathUnder("/a", "/a"));
  EXPECT_TRUE(PathUnder("/a", "/"));
  EXPECT_FALSE(PathUnder("/ab", "/a"));
  EXPECT_FALSE(PathUnder("/a", "/a/b"));
}

}  // namespace
}  // namespace fern::daemon
