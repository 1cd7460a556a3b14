// Internal to src/transport: what every Transport implementation shares —
// handler registry, outstanding calls and their deadlines, dispatch of decoded
// frames, the callback queue that makes every callback run inside Progress(),
// and the counters. An implementation only moves frames: it implements
// SendFrame, feeds received frames through BeginReceive/FinishReceive, and
// reports dead peers with FailPeer.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>

#include "transport/envelope.h"
#include "transport/transport.h"

namespace fern::transport {

class TransportCore : public Transport {
 public:
  NodeId self() const override { return self_; }
  void Handle(MessageKind kind, Handler handler, PayloadSink sink = nullptr) override;
  void OnPeerFailure(PeerFailureHandler handler) override { peer_failure_ = std::move(handler); }
  void Send(NodeId to, OutMessage message, SendCallback done = nullptr) override;
  void Call(NodeId to, OutMessage request, CallOptions options, ReplyCallback done) override;
  void After(Duration delay, std::function<void()> fn) override;
  const Clock& clock() const override { return clock_; }
  TransportStats stats() const override { return stats_; }

 protected:
  TransportCore(NodeId self, Limits limits, const Clock& clock)
      : self_(self), limits_(limits), clock_(clock) {}

  // Sends a request or one-way frame to a node. `done` runs (via Post) once
  // the transport is finished with the payload, with the send's status.
  virtual void SendFrame(NodeId to, Frame frame, Payload payload, SendCallback done) = 0;
  // Makes event_fd() readable (work was posted).
  virtual void Notify() = 0;

  // How a reply to one incoming request gets back to its sender.
  using ReplyRoute = std::function<void(Frame reply, Payload payload)>;

  // Validates a decoded incoming frame and picks the buffer its payload lands
  // in. On error the message must be dropped (and its payload discarded); a
  // request has already been answered with the error through `route`.
  StatusOr<ReceiveBuffer> BeginReceive(const Frame& frame, const ReplyRoute& route);
  // The payload is in the buffer: dispatch (queued to run in Progress()).
  void FinishReceive(Frame frame, ReceiveBuffer buffer, ReplyRoute route);
  // Counts a frame that failed DecodeFrame.
  void CountRejected(const Status& decode_error);

  // Completes every outstanding call to `peer` with Unavailable and queues
  // the peer-failure handler.
  void FailPeer(NodeId peer, const Status& why);
  // Completes every outstanding call with `why` and drops every timer (Shutdown).
  void FailAll(const Status& why);

  void Post(std::function<void()> fn);
  // Runs posted callbacks, expired deadlines and due timers until none is left.
  void RunPosted();
  std::optional<TimePoint> NextDeadline() const;
  bool HasPosted() const { return !posted_.empty(); }

  // Called first thing in the derived destructor: Responders still held
  // somewhere (handler state, queued callbacks) become no-ops instead of
  // calling into a half-destroyed transport, and handlers are released.
  void Retire();

  const Limits& limits() const { return limits_; }
  TransportStats& mutable_stats() { return stats_; }

 private:
  struct Route;
  struct Outstanding {
    NodeId to;
    MessageKind kind;
    std::multimap<TimePoint, uint64_t>::iterator deadline;
    ReplyCallback done;
    PayloadSink reply_sink;
  };
  struct Registered {
    Handler handler;
    PayloadSink sink;
  };

  void Complete(uint64_t request_id, StatusOr<InMessage> result);
  void FireDeadlines();

  const NodeId self_;
  const Limits limits_;
  const Clock& clock_;
  std::unordered_map<MessageKind, Registered> handlers_;
  PeerFailureHandler peer_failure_;
  uint64_t next_request_id_ = 1;
  std::unordered_map<uint64_t, Outstanding> outstanding_;
  std::multimap<TimePoint, uint64_t> deadlines_;
  std::multimap<TimePoint, std::function<void()>> timers_;  // After()
  std::deque<std::function<void()>> posted_;
  TransportStats stats_;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);  // Routes hold it weakly
};

// A heap buffer for payloads that arrive without a registered sink.
ReceiveBuffer AllocateReceiveBuffer(uint64_t len);

}  // namespace fern::transport
