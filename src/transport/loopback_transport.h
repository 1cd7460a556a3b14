// LoopbackTransport: N transports in one process joined by a LoopbackNetwork,
// for seeded, replayable tests of everything above the transport.
//
// Messages are encoded and validated exactly as on the wire (envelope.h) and
// payloads are copied, so aliasing bugs show. Delivery order is chosen by a
// seeded random generator among the messages that are ready; time is the
// network's FakeClock, which Wait() advances to the next event when nothing is
// ready, so deadlines and delays run without sleeping. Fault hooks drop,
// delay, duplicate or partition messages and crash nodes.
//
// Threading: single-threaded. Progress() of any node pumps the whole network
// (every node's callbacks run in it).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "transport/transport_core.h"

namespace fern::transport {

class LoopbackTransport;

class LoopbackNetwork {
 public:
  explicit LoopbackNetwork(uint64_t seed, Limits limits = {});
  ~LoopbackNetwork();
  LoopbackNetwork(const LoopbackNetwork&) = delete;
  LoopbackNetwork& operator=(const LoopbackNetwork&) = delete;

  // A new node. REQUIRES: no live node with this id (a crashed one may be
  // replaced: that is a restart).
  std::unique_ptr<LoopbackTransport> AddNode(NodeId id);

  // Faults. Rates are probabilities per message; delays uniform in [lo, hi].
  void SetDropRate(double p) { drop_rate_ = p; }
  void SetDuplicateRate(double p) { duplicate_rate_ = p; }
  void SetDelay(Duration lo, Duration hi) { delay_lo_ = lo; delay_hi_ = hi; }
  void Partition(NodeId a, NodeId b);
  // Messages from `from` to `to` take `extra` longer (a slow node); zero
  // removes it. Heal() removes every one.
  void SetLinkDelay(NodeId from, NodeId to, Duration extra);
  void Heal() {
    partitions_.clear();
    link_delays_.clear();
  }
  // The node stops: its queued traffic is lost, every other node's calls to
  // it fail with Unavailable and their peer-failure handlers run.
  void Crash(NodeId id);
  // Delivers raw bytes as if `from` had sent them (malformed-input tests).
  void InjectRaw(NodeId from, NodeId to, std::string envelope, std::vector<uint8_t> payload);

  // Delivers every ready message and runs every node's callbacks until quiet.
  void Pump();
  FakeClock& clock() { return clock_; }
  uint64_t seed() const { return seed_; }
  uint64_t delivered() const { return delivered_; }

 private:
  friend class LoopbackTransport;
  struct InFlight {
    NodeId from, to;
    std::string envelope;
    std::vector<uint8_t> payload;
    TimePoint ready_at;
  };

  void Enqueue(NodeId from, NodeId to, std::string envelope, std::vector<uint8_t> payload);
  bool DeliverOne();
  void Remove(LoopbackTransport* t);
  bool Alive(NodeId id) const;
  // Earliest future event (delayed message or deadline), if any.
  std::optional<TimePoint> NextEvent() const;

  const uint64_t seed_;
  const Limits limits_;
  FakeClock clock_;
  std::mt19937_64 rng_;
  std::map<NodeId, LoopbackTransport*> nodes_;
  std::vector<InFlight> queue_;
  std::set<std::pair<NodeId, NodeId>> partitions_;
  std::map<std::pair<NodeId, NodeId>, Duration> link_delays_;
  double drop_rate_ = 0;
  double duplicate_rate_ = 0;
  Duration delay_lo_{0}, delay_hi_{0};
  uint64_t delivered_ = 0;
  bool pumping_ = false;
};

class LoopbackTransport final : public TransportCore {
 public:
  ~LoopbackTransport() override;

  int event_fd() const override { return event_fd_; }
  void Progress() override;
  void Wait(Duration max) override;
  void Shutdown() override;

 private:
  friend class LoopbackNetwork;
  LoopbackTransport(LoopbackNetwork* net, NodeId id);

  void SendFrame(NodeId to, Frame frame, Payload payload, SendCallback done) override;
  void Notify() override;
  void Receive(NodeId from, const std::string& envelope, const std::vector<uint8_t>& payload);
  void Crashed();

  LoopbackNetwork* net_;
  int event_fd_ = -1;  // an eventfd, readable while the network has work
  bool dead_ = false;
};

}  // namespace fern::transport
