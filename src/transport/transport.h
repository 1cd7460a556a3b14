// Transport: messages between fern-ec daemons.
//
// A message is a kind (fern.wire.Kind), a small header (a serialized protobuf
// of that kind, at most Limits::max_body bytes) and an optional bulk payload
// that travels beside the header, never inside it:
//
//     sender                                          receiver
//     OutMessage{kind, header, payload} --Send/Call--> sink(from, kind, header, len)
//                                                        -> buffer the payload lands in
//                                                      handler(InMessage, Responder)
//     reply callback(StatusOr<InMessage>) <-- Reply ---
//
// Two implementations: UcxTransport (UCX active messages; rendezvous payloads
// are received straight into the buffer the sink returns) and
// LoopbackTransport (N nodes in one process, seeded delivery order, fault
// hooks) for deterministic tests. Both pass tests/transport's conformance
// suite.
//
// Threading: a transport is owned by one event loop. No method is thread-safe
// and no hidden thread exists. Every callback (handlers, sinks, reply and send
// completions, peer failures) runs inside Progress() on the owner's thread,
// never inside Send/Call. The owner polls event_fd() for POLLIN (or calls
// Wait()), then calls Progress().
//
// Buffers: an outgoing payload must stay valid until the send completes; the
// Payload's `owner` is kept alive until then and released afterwards. An
// incoming payload lives in the buffer the sink returned (or a buffer the
// transport allocated when no sink is registered), kept alive by
// InMessage::payload_owner.
//
// Errors: every Call completes exactly once: with the reply, with the
// replier's error Status, DeadlineExceeded when the deadline passes,
// Unavailable when the peer fails or is unreachable, Cancelled at Shutdown.
// Malformed or oversized incoming messages are dropped, counted in stats(),
// and a request among them is answered with InvalidArgument when possible.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/ids.h"
#include "common/status.h"

namespace fern::transport {

using MessageKind = uint16_t;

// Size limits, validated before anything is allocated.
struct Limits {
  uint64_t max_body = 64 * 1024;               // serialized protobuf header
  uint64_t max_payload = uint64_t{1} << 30;    // bulk bytes of one message
  uint64_t max_status_message = 4096;
};

// Bytes to send plus whatever keeps them alive until the send completes.
struct Payload {
  std::span<const uint8_t> bytes;
  std::shared_ptr<const void> owner;

  // An owning copy (for small payloads and tests).
  static Payload Copy(std::span<const uint8_t> bytes);
  // A view of memory kept alive by `owner` (may be null if the caller
  // guarantees the memory outlives the send).
  static Payload View(std::span<const uint8_t> bytes, std::shared_ptr<const void> owner) {
    return Payload{bytes, std::move(owner)};
  }
};

struct OutMessage {
  MessageKind kind = 0;
  std::string header;  // serialized protobuf body
  Payload payload;
};

struct InMessage {
  NodeId from;
  MessageKind kind = 0;
  std::string header;
  std::span<uint8_t> payload;
  std::shared_ptr<void> payload_owner;
};

// Destination of an incoming payload.
struct ReceiveBuffer {
  std::span<uint8_t> bytes;  // at least `len` bytes
  std::shared_ptr<void> owner;
};
// Chooses where a payload of `len` bytes lands, before it is received. An
// error drops the message (a request is answered with that error).
using PayloadSink = std::function<StatusOr<ReceiveBuffer>(
    NodeId from, MessageKind kind, std::string_view header, uint64_t len)>;

// Answers one request. Movable, not copyable. Exactly one of Reply or Fail
// takes effect; a Responder destroyed unanswered fails the request with
// Internal ("request dropped by handler"). For one-way messages both are
// no-ops.
class Responder {
 public:
  class Sink {
   public:
    virtual ~Sink() = default;
    virtual void Send(uint64_t request_id, StatusOr<OutMessage> reply) = 0;
  };

  Responder() = default;
  Responder(std::shared_ptr<Sink> sink, uint64_t request_id)
      : sink_(std::move(sink)), request_id_(request_id) {}
  Responder(Responder&& other) noexcept { *this = std::move(other); }
  Responder& operator=(Responder&& other) noexcept;
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;
  ~Responder();

  bool expects_reply() const { return sink_ != nullptr; }
  void Reply(OutMessage reply);
  void Fail(Status status);

 private:
  std::shared_ptr<Sink> sink_;
  uint64_t request_id_ = 0;
};

using Handler = std::function<void(InMessage message, Responder responder)>;
using ReplyCallback = std::function<void(StatusOr<InMessage> reply)>;
using SendCallback = std::function<void(Status status)>;
using PeerFailureHandler = std::function<void(NodeId peer, const Status& why)>;

struct CallOptions {
  Duration timeout = std::chrono::seconds(10);
  PayloadSink reply_sink;  // optional: where the reply's payload lands
};

struct TransportStats {
  uint64_t messages_sent = 0;
  uint64_t messages_received = 0;
  uint64_t payload_bytes_sent = 0;
  uint64_t payload_bytes_received = 0;
  uint64_t rejected_malformed = 0;   // envelope did not parse or lengths disagree
  uint64_t rejected_oversized = 0;   // over Limits
  uint64_t rejected_unknown_kind = 0;
  uint64_t late_replies = 0;         // reply for a request no longer outstanding
  uint64_t deadlines_expired = 0;
  uint64_t peer_failures = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;

  virtual NodeId self() const = 0;

  // Registers the handler (and optional payload sink) for a kind. A message of
  // a kind with no handler is rejected and counted.
  virtual void Handle(MessageKind kind, Handler handler, PayloadSink sink = nullptr) = 0;
  virtual void OnPeerFailure(PeerFailureHandler handler) = 0;

  // One-way message. `done` (optional) reports local send completion.
  virtual void Send(NodeId to, OutMessage message, SendCallback done = nullptr) = 0;
  // Request/reply; `done` runs exactly once (see Errors above).
  virtual void Call(NodeId to, OutMessage request, CallOptions options, ReplyCallback done) = 0;
  // Runs `fn` inside Progress() once `delay` has passed on the transport's
  // clock (never inside After). Dropped by Shutdown unless due. A timer cannot be
  // cancelled: `fn` checks whether it is still wanted.
  virtual void After(Duration delay, std::function<void()> fn) = 0;
  // The clock deadlines and timers run on (a FakeClock in loopback tests).
  virtual const Clock& clock() const = 0;

  // A file descriptor that becomes readable when Progress() has work.
  virtual int event_fd() const = 0;
  // Runs everything that is ready, including callbacks. Never blocks.
  virtual void Progress() = 0;
  // Blocks until Progress() may have work or `max` passes.
  virtual void Wait(Duration max) = 0;

  // Fails outstanding calls with Cancelled and closes every connection. The
  // transport accepts no work afterwards. Idempotent.
  virtual void Shutdown() = 0;

  virtual TransportStats stats() const = 0;
};

// Progresses `t` until `done()` is true or `timeout` passes (on `clock`).
// Returns done(). For tools and tests; daemons run their own loop.
bool ProgressUntil(Transport& t, const std::function<bool()>& done, Duration timeout,
                   const Clock& clock = *RealClock::Get());

}  // namespace fern::transport
