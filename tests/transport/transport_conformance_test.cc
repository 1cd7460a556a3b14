// One conformance suite for every Transport: UCX between this process and a
// real transport_peer process over UCX_TLS=tcp (killed with SIGKILL), and the
// in-process loopback network. Each test drives a client (node 1) against a
// peer (node 2) running tests/transport/peer_handlers.h.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ec/crc32c.h"
#include "fern_wire.pb.h"
#include "peer_handlers.h"
#include "common/subprocess.h"
#include "test_util.h"
#include "transport/loopback_transport.h"
#include "transport/ucx_transport.h"

namespace fern::transport {
namespace {

using namespace std::chrono_literals;
using fern::testing::TestRng;

const NodeId kClient(1);
const NodeId kPeer(2);

class Harness {
 public:
  virtual ~Harness() = default;
  virtual Transport& client() = 0;
  virtual const Clock& clock() = 0;
  virtual void KillPeer() = 0;
  virtual void RestartPeer() = 0;
  // Progresses the client (and, in-process, the peer) until done() or timeout.
  bool Run(const std::function<bool()>& done, Duration timeout) {
    return ProgressUntil(client(), done, timeout, clock());
  }
};

class UcxHarness final : public Harness {
 public:
  UcxHarness() {
    setenv("UCX_TLS", "tcp", 0);
    StartPeer(0);
    UcxOptions o;
    o.self = kClient;
    o.listen = false;
    o.peers[kPeer] = "127.0.0.1:" + std::to_string(port_);
    auto t = UcxTransport::Create(o);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    client_ = std::move(t).value();
  }
  Transport& client() override { return *client_; }
  const Clock& clock() override { return *RealClock::Get(); }
  void KillPeer() override { peer_.Kill(SIGKILL); }
  void RestartPeer() override { StartPeer(port_); }

 private:
  void StartPeer(uint16_t port) {
    ASSERT_TRUE(peer_.Start({FERN_TRANSPORT_PEER, "--node", "2", "--port", std::to_string(port)}));
    auto line = peer_.ReadLine(10s);
    ASSERT_TRUE(line.has_value()) << "transport_peer did not start";
    ASSERT_EQ(line->rfind("READY ", 0), 0u) << *line;
    port_ = static_cast<uint16_t>(std::stoi(line->substr(6)));
  }

  fern::Subprocess peer_;
  uint16_t port_ = 0;
  std::unique_ptr<UcxTransport> client_;
};

class LoopbackHarness final : public Harness {
 public:
  LoopbackHarness() : net_(fern::testing::RunSeed()) {
    client_ = net_.AddNode(kClient);
    RestartPeer();
  }
  Transport& client() override { return *client_; }
  const Clock& clock() override { return net_.clock(); }
  void KillPeer() override { net_.Crash(kPeer); }
  void RestartPeer() override {
    peer_ = net_.AddNode(kPeer);
    testing::InstallPeerHandlers(*peer_, std::make_shared<testing::PeerState>());
  }

 private:
  LoopbackNetwork net_;
  std::unique_ptr<LoopbackTransport> client_;
  std::unique_ptr<LoopbackTransport> peer_;
};

OutMessage Echo(const std::string& text, Payload payload = {}, bool no_reply = false,
                uint32_t reply_len = 0) {
  wire::Echo e;
  e.set_text(text);
  e.set_no_reply(no_reply);
  e.set_reply_payload_len(reply_len);
  return OutMessage{wire::ECHO, e.SerializeAsString(), std::move(payload)};
}

std::string TextOf(const InMessage& m) {
  wire::Echo e;
  return e.ParseFromString(m.header) ? e.text() : "<unparsable>";
}

std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> v(n);
  fern::testing::FillRandom(rng, v.data(), n);
  return v;
}

class TransportConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "ucx") {
      h_ = std::make_unique<UcxHarness>();
    } else {
      h_ = std::make_unique<LoopbackHarness>();
    }
  }
  Transport& client() { return h_->client(); }

  // A call that blocks (progressing) until it completes.
  StatusOr<InMessage> CallAndWait(NodeId to, OutMessage m, CallOptions o = {}) {
    std::optional<StatusOr<InMessage>> result;
    client().Call(to, std::move(m), std::move(o), [&](StatusOr<InMessage> r) { result = std::move(r); });
    EXPECT_TRUE(h_->Run([&] { return result.has_value(); }, 60s)) << "call never completed";
    if (!result) return InternalError("call never completed");
    return std::move(*result);
  }

  std::unique_ptr<Harness> h_;
};

TEST_P(TransportConformance, SequentialRequestsGetTheirOwnReplies) {
  for (int i = 0; i < 50; ++i) {
    auto r = CallAndWait(kPeer, Echo("req " + std::to_string(i)));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(TextOf(*r), "req " + std::to_string(i));
    EXPECT_EQ(r->from, kPeer);
  }
}

TEST_P(TransportConformance, PayloadsArriveBitExact) {
  auto rng = TestRng();
  for (size_t n : {size_t{0}, size_t{1}, size_t{8191}, size_t{8192}, size_t{8193},
                   size_t{1} << 20, size_t{64} << 20}) {
    SCOPED_TRACE("payload " + std::to_string(n));
    auto bytes = RandomBytes(rng, n);
    const uint32_t crc = ec::Crc32c(bytes);
    auto r = CallAndWait(kPeer, Echo("p", Payload::Copy(bytes)), CallOptions{60s, nullptr});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->payload.size(), n);
    EXPECT_EQ(ec::Crc32c(r->payload), crc);
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), r->payload.begin()));
  }
}

// The contract callers build on (transport.h, Buffers): once the transport
// lets go of a payload's owner, it no longer reads the bytes, so the owner
// may recycle them at once. Each owner here overwrites its bytes when
// released; the peer echoes what it received, which must be what was sent.
TEST_P(TransportConformance, PayloadBytesAreNotReadAfterTheOwnerIsReleased) {
  auto rng = TestRng();
  for (size_t n : {size_t{8193}, size_t{64} << 10, size_t{1} << 20, size_t{4} << 20}) {
    SCOPED_TRACE("payload " + std::to_string(n));
    constexpr int kCalls = 8;
    std::vector<std::vector<uint8_t>> sent;
    int done = 0, released = 0;
    std::vector<std::optional<StatusOr<InMessage>>> replies(kCalls);
    for (int i = 0; i < kCalls; ++i) {
      sent.push_back(RandomBytes(rng, n));
      auto bytes = std::make_shared<std::vector<uint8_t>>(sent.back());
      // Recycled on release: what a pool does with a buffer it gets back.
      std::shared_ptr<const void> owner(bytes.get(), [bytes, &released](const void*) {
        std::fill(bytes->begin(), bytes->end(), uint8_t{0xAB});
        ++released;
      });
      client().Call(kPeer, Echo("p", Payload::View(*bytes, std::move(owner))), CallOptions{60s, nullptr},
                    [&, i](StatusOr<InMessage> r) {
                      replies[i] = std::move(r);
                      ++done;
                    });
    }
    // A reply can overtake the sender's own completion of the send: wait for both.
    ASSERT_TRUE(h_->Run([&] { return done == kCalls && released == kCalls; }, 60s))
        << done << " replies, " << released << " owners released of " << kCalls;
    for (int i = 0; i < kCalls; ++i) {
      ASSERT_TRUE(replies[i]->ok()) << replies[i]->status().ToString();
      ASSERT_EQ((*replies[i])->payload.size(), n);
      EXPECT_TRUE(std::equal(sent[i].begin(), sent[i].end(), (*replies[i])->payload.begin()))
          << "call " << i << ": the peer received bytes overwritten after the owner's release";
    }
  }
}

TEST_P(TransportConformance, ReplyPayloadLandsInTheSinkBuffer) {
  const size_t n = 4 << 20;
  auto dest = std::make_shared<std::vector<uint8_t>>(n + 100, 0);
  CallOptions o;
  o.reply_sink = [dest](NodeId, MessageKind, std::string_view, uint64_t len)
      -> StatusOr<ReceiveBuffer> {
    return ReceiveBuffer{std::span<uint8_t>(dest->data() + 100, len), dest};
  };
  auto r = CallAndWait(kPeer, Echo("sink", {}, false, n), std::move(o));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->payload.data(), dest->data() + 100);
  ASSERT_EQ(r->payload.size(), n);
  for (size_t i = 0; i < n; i += 4099) ASSERT_EQ((*dest)[100 + i], static_cast<uint8_t>(i * 7 + 3));
}

// A node calling itself (the gateway storing its own shard of a stripe):
// requests, payloads and replies into a sink, without any address for self.
TEST_P(TransportConformance, CallsToSelfAreServed) {
  testing::InstallPeerHandlers(client(), std::make_shared<testing::PeerState>());
  auto rng = TestRng();
  for (size_t n : {size_t{0}, size_t{1}, size_t{1} << 20}) {
    SCOPED_TRACE("payload " + std::to_string(n));
    auto bytes = RandomBytes(rng, n);
    auto r = CallAndWait(kClient, Echo("self", Payload::Copy(bytes)), CallOptions{60s, nullptr});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(TextOf(*r), "self");
    EXPECT_EQ(r->from, kClient);
    ASSERT_EQ(r->payload.size(), n);
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), r->payload.begin()));
  }
  const size_t n = 2 << 20;
  auto dest = std::make_shared<std::vector<uint8_t>>(n, 0);
  CallOptions o;
  o.reply_sink = [dest](NodeId, MessageKind, std::string_view, uint64_t len)
      -> StatusOr<ReceiveBuffer> { return ReceiveBuffer{std::span<uint8_t>(dest->data(), len), dest}; };
  auto r = CallAndWait(kClient, Echo("sink", {}, false, n), std::move(o));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->payload.data(), dest->data());
  for (size_t i = 0; i < n; i += 4099) ASSERT_EQ((*dest)[i], static_cast<uint8_t>(i * 7 + 3));
  // The peer is still served alongside.
  auto p = CallAndWait(kPeer, Echo("peer"));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(TextOf(*p), "peer");
}

TEST_P(TransportConformance, ManyRequestsInFlight) {
  auto rng = TestRng();
  const int kCalls = 200;
  std::vector<std::vector<uint8_t>> sent(kCalls);
  std::vector<std::optional<StatusOr<InMessage>>> got(kCalls);
  int done = 0;
  for (int i = 0; i < kCalls; ++i) {
    sent[i] = RandomBytes(rng, 1 + rng() % (96 << 10));
    client().Call(kPeer, Echo(std::to_string(i), Payload::Copy(sent[i])), {},
                  [&, i](StatusOr<InMessage> r) {
                    got[i] = std::move(r);
                    ++done;
                  });
  }
  ASSERT_TRUE(h_->Run([&] { return done == kCalls; }, 60s)) << done << " of " << kCalls;
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(got[i]->ok()) << got[i]->status().ToString();
    EXPECT_EQ(TextOf(**got[i]), std::to_string(i));
    ASSERT_TRUE(std::equal(sent[i].begin(), sent[i].end(), (*got[i])->payload.begin(),
                           (*got[i])->payload.end()));
  }
}

TEST_P(TransportConformance, DeadlineExpiresCleanly) {
  const TimePoint t0 = h_->clock().Now();
  auto r = CallAndWait(kPeer, Echo("hold", {}, true), CallOptions{300ms, nullptr});
  const Duration took = h_->clock().Now() - t0;
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 5s);
  EXPECT_EQ(client().stats().deadlines_expired, 1u);
  // The connection is still good.
  auto ok = CallAndWait(kPeer, Echo("after"));
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
}

TEST_P(TransportConformance, TimersRunInOrderOnceDue) {
  const TimePoint t0 = h_->clock().Now();
  std::vector<std::pair<int, Duration>> ran;
  auto at = [&](int id) { return [&, id] { ran.emplace_back(id, h_->clock().Now() - t0); }; };
  client().After(200ms, at(2));
  client().After(50ms, at(1));
  client().After(400ms, at(3));
  EXPECT_TRUE(ran.empty()) << "a timer ran inside After";
  ASSERT_TRUE(h_->Run([&] { return ran.size() == 3; }, 10s)) << ran.size() << " of 3 timers ran";
  EXPECT_EQ(ran[0].first, 1);
  EXPECT_EQ(ran[1].first, 2);
  EXPECT_EQ(ran[2].first, 3);
  EXPECT_GE(ran[0].second, 50ms);
  EXPECT_GE(ran[1].second, 200ms);
  EXPECT_GE(ran[2].second, 400ms);
}

TEST_P(TransportConformance, UnknownKindIsAnsweredWithAnError) {
  auto r = CallAndWait(kPeer, OutMessage{999, "x", {}});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_NE(r.status().message().find("999"), std::string_view::npos);
  EXPECT_TRUE(CallAndWait(kPeer, Echo("still serving")).ok());
}

TEST_P(TransportConformance, OneWayMessageCompletesLocally) {
  std::optional<Status> sent;
  wire::Heartbeat hb;
  hb.set_cluster_epoch(7);
  client().Send(kPeer, OutMessage{wire::HEARTBEAT, hb.SerializeAsString(), {}},
                [&](Status s) { sent = s; });
  ASSERT_TRUE(h_->Run([&] { return sent.has_value(); }, 10s));
  EXPECT_TRUE(sent->ok()) << sent->ToString();
}

TEST_P(TransportConformance, UnreachableNodeFailsTheCall) {
  auto r = CallAndWait(NodeId(77), Echo("nobody"), CallOptions{5s, nullptr});
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
}

TEST_P(TransportConformance, PeerKilledMidTransferFailsEveryOutstandingCall) {
  auto rng = TestRng();
  // Make sure the connection exists, then start big transfers and a held call.
  ASSERT_TRUE(CallAndWait(kPeer, Echo("warm up")).ok());
  std::optional<Status> failure;
  client().OnPeerFailure([&](NodeId peer, const Status& why) {
    if (peer == kPeer) failure = why;
  });
  auto big = std::make_shared<std::vector<uint8_t>>(RandomBytes(rng, 64 << 20));
  const int kCalls = 6;
  int done = 0, failed = 0;
  for (int i = 0; i < kCalls; ++i) {
    client().Call(kPeer, Echo("big", Payload::View(*big, big), i == 0), CallOptions{120s, nullptr},
                  [&](StatusOr<InMessage> r) {
                    ++done;
                    if (!r.ok()) ++failed;
                  });
  }
  // Let the transfer get going, then kill the peer.
  h_->Run([] { return false; }, 50ms);
  const TimePoint killed_at = RealClock::Get()->Now();
  h_->KillPeer();
  ASSERT_TRUE(h_->Run([&] { return done == kCalls && failure.has_value(); }, 30s))
      << "done=" << done << " failure reported=" << failure.has_value();
  EXPECT_GE(failed, 1);  // at least the held call; the others may have finished first
  EXPECT_LT(RealClock::Get()->Now() - killed_at, 10s);
  EXPECT_EQ(failure->code() == StatusCode::kOk, false);
}

TEST_P(TransportConformance, RestartedPeerIsReachableAgain) {
  ASSERT_TRUE(CallAndWait(kPeer, Echo("before")).ok());
  bool failed = false;
  client().OnPeerFailure([&](NodeId, const Status&) { failed = true; });
  h_->KillPeer();
  // A call to the dead peer fails (no hang).
  auto dead = CallAndWait(kPeer, Echo("while dead"), CallOptions{10s, nullptr});
  EXPECT_FALSE(dead.ok());
  h_->Run([&] { return failed; }, 10s);
  h_->RestartPeer();
  StatusOr<InMessage> r = UnavailableError("not tried");
  for (int attempt = 0; attempt < 20 && !r.ok(); ++attempt) {
    r = CallAndWait(kPeer, Echo("after restart"), CallOptions{5s, nullptr});
    if (!r.ok()) h_->Run([] { return false; }, 200ms);
  }
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(TextOf(*r), "after restart");
}

INSTANTIATE_TEST_SUITE_P(Transports, TransportConformance, ::testing::Values("ucx", "loopback"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace fern::transport
