// LoopbackNetwork specifics: seeded determinism and the fault hooks the
// daemon's tests will lean on.
#include "transport/loopback_transport.h"

#include <gtest/gtest.h>

#include "fern_wire.pb.h"
#include "peer_handlers.h"
#include "test_util.h"

namespace fern::transport {
namespace {

using namespace std::chrono_literals;

OutMessage Echo(const std::string& text) {
  wire::Echo e;
  e.set_text(text);
  return OutMessage{wire::ECHO, e.SerializeAsString(), {}};
}

// The order in which 3 clients' 20 concurrent requests reach one server.
std::vector<std::string> ArrivalOrder(uint64_t seed) {
  LoopbackNetwork net(seed);
  auto server = net.AddNode(NodeId(9));
  std::vector<std::string> order;
  server->Handle(wire::ECHO, [&](InMessage m, Responder r) {
    wire::Echo e;
    e.ParseFromString(m.header);
    order.push_back(e.text());
    r.Reply(OutMessage{wire::ECHO, m.header, {}});
  });
  std::vector<std::unique_ptr<LoopbackTransport>> clients;
  int done = 0;
  for (int c = 1; c <= 3; ++c) {
    clients.push_back(net.AddNode(NodeId(c)));
    for (int i = 0; i < 20; ++i) {
      clients.back()->Call(NodeId(9), Echo(std::to_string(c) + "." + std::to_string(i)), {},
                           [&](StatusOr<InMessage> r) { done += r.ok(); });
    }
  }
  net.Pump();
  EXPECT_EQ(done, 60);
  return order;
}

TEST(Loopback, SameSeedSameOrder) {
  const uint64_t seed = fern::testing::RunSeed();
  EXPECT_EQ(ArrivalOrder(seed), ArrivalOrder(seed));
  EXPECT_NE(ArrivalOrder(seed), ArrivalOrder(seed + 1));  // 60! orders: equal would be a bug
}

struct Pair {
  LoopbackNetwork net{fern::testing::RunSeed()};
  std::unique_ptr<LoopbackTransport> a = net.AddNode(NodeId(1));
  std::unique_ptr<LoopbackTransport> b = net.AddNode(NodeId(2));
  Pair() { testing::InstallPeerHandlers(*b, std::make_shared<testing::PeerState>()); }

  // Sends n calls and returns how many got OK replies and how many timed out.
  std::pair<int, int> Calls(int n, Duration timeout) {
    int ok = 0, timed_out = 0, done = 0;
    for (int i = 0; i < n; ++i) {
      a->Call(NodeId(2), Echo("x"), CallOptions{timeout, nullptr}, [&](StatusOr<InMessage> r) {
        ++done;
        ok += r.ok();
        timed_out += r.status().code() == StatusCode::kDeadlineExceeded;
      });
    }
    EXPECT_TRUE(ProgressUntil(*a, [&] { return done == n; }, timeout + 1s, net.clock()));
    return {ok, timed_out};
  }
};

TEST(Loopback, PartitionTimesOutThenHeals) {
  Pair p;
  p.net.Partition(NodeId(1), NodeId(2));
  EXPECT_EQ(p.Calls(5, 1s), std::make_pair(0, 5));
  p.net.Heal();
  EXPECT_EQ(p.Calls(5, 1s), std::make_pair(5, 0));
}

TEST(Loopback, DroppedMessagesTimeOut) {
  Pair p;
  p.net.SetDropRate(0.5);
  auto [ok, timed_out] = p.Calls(200, 1s);
  EXPECT_EQ(ok + timed_out, 200);
  EXPECT_GT(timed_out, 100);  // a request or its reply dropped: 1 - 0.25 expected
  EXPECT_GT(ok, 20);
}

TEST(Loopback, DuplicatesAreAnsweredOnceAndCounted) {
  Pair p;
  p.net.SetDuplicateRate(1.0);
  EXPECT_EQ(p.Calls(10, 1s), std::make_pair(10, 0));
  EXPECT_GT(p.a->stats().late_replies, 0u);  // the second copy of each reply
}

TEST(Loopback, DelaysAdvanceTheFakeClock) {
  Pair p;
  p.net.SetDelay(100ms, 200ms);
  const TimePoint t0 = p.net.clock().Now();
  EXPECT_EQ(p.Calls(3, 2s), std::make_pair(3, 0));
  const Duration took = p.net.clock().Now() - t0;
  EXPECT_GE(took, 200ms);  // request and reply each delayed >= 100 ms
  EXPECT_LE(took, 400ms + 100ms);
}

TEST(Loopback, ALinkDelaySlowsOneDirectionUntilHealed) {
  Pair p;
  p.net.SetLinkDelay(NodeId(2), NodeId(1), 300ms);  // replies only
  TimePoint t0 = p.net.clock().Now();
  EXPECT_EQ(p.Calls(2, 2s), std::make_pair(2, 0));
  EXPECT_GE(p.net.clock().Now() - t0, 300ms);
  EXPECT_EQ(p.Calls(1, 200ms), std::make_pair(0, 1));  // slower than the deadline
  p.net.Heal();
  t0 = p.net.clock().Now();
  EXPECT_EQ(p.Calls(2, 2s), std::make_pair(2, 0));
  EXPECT_LT(p.net.clock().Now() - t0, 300ms);
}

TEST(Loopback, MalformedInjectedBytesAreCountedNotFatal) {
  Pair p;
  p.net.InjectRaw(NodeId(1), NodeId(2), "\xff\xff garbage", {});
  wire::Envelope e;
  e.set_version(1);
  e.set_kind(wire::ECHO);
  e.set_payload_len(10);  // but no payload arrives
  p.net.InjectRaw(NodeId(1), NodeId(2), e.SerializeAsString(), {});
  p.net.Pump();
  EXPECT_EQ(p.b->stats().rejected_malformed, 2u);
  EXPECT_EQ(p.Calls(3, 1s), std::make_pair(3, 0));  // still serving
}

}  // namespace
}  // namespace fern::transport
