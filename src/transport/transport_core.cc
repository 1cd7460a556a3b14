#include "transport/transport_core.h"

#include <cstdlib>
#include <string>

namespace fern::transport {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace

ReceiveBuffer AllocateReceiveBuffer(uint64_t len) {
  // 64-byte aligned so payloads can feed the erasure coder directly.
  const size_t n = (std::max<uint64_t>(len, 1) + 63) / 64 * 64;
  std::shared_ptr<uint8_t> mem(static_cast<uint8_t*>(std::aligned_alloc(64, n)), FreeDeleter());
  if (!mem) return ReceiveBuffer{};
  return ReceiveBuffer{std::span<uint8_t>(mem.get(), len), mem};
}

namespace {

// Builds the reply frame for one request and hands it to the route.
void ReplyVia(const std::function<void(Frame, Payload)>& route, MessageKind kind, NodeId self,
              uint64_t request_id, StatusOr<OutMessage> reply) {
  Frame f;
  f.kind = kind;
  f.flags = kFlagReply;
  f.request_id = request_id;
  f.src = self;
  Payload payload;
  if (reply.ok()) {
    f.body = std::move(reply->header);
    payload = std::move(reply->payload);
    f.payload_len = payload.bytes.size();
  } else {
    f.status_code = reply.status().code();
    f.status_message = std::string(reply.status().message().substr(0, 4096));
  }
  route(std::move(f), std::move(payload));
}

}  // namespace

// The single reply of one request goes back through the implementation's route.
struct TransportCore::Route final : Responder::Sink {
  MessageKind kind = 0;
  NodeId self;
  ReplyRoute route;
  std::weak_ptr<int> alive;
  void Send(uint64_t request_id, StatusOr<OutMessage> reply) override {
    if (alive.expired()) return;  // the transport is gone; so is the connection
    ReplyVia(route, kind, self, request_id, std::move(reply));
  }
};

void TransportCore::Retire() {
  alive_.reset();
  handlers_.clear();
  peer_failure_ = nullptr;
  posted_.clear();
  timers_.clear();
}

void TransportCore::Handle(MessageKind kind, Handler handler, PayloadSink sink) {
  handlers_[kind] = Registered{std::move(handler), std::move(sink)};
}

void TransportCore::Send(NodeId to, OutMessage message, SendCallback done) {
  Frame f;
  f.kind = message.kind;
  f.src = self_;
  f.body = std::move(message.header);
  f.payload_len = message.payload.bytes.size();
  ++stats_.messages_sent;
  stats_.payload_bytes_sent += f.payload_len;
  SendFrame(to, std::move(f), std::move(message.payload), std::move(done));
}

void TransportCore::Call(NodeId to, OutMessage request, CallOptions options, ReplyCallback done) {
  const uint64_t id = next_request_id_++;
  const TimePoint deadline = clock_.Now() + options.timeout;
  const bool earliest = deadlines_.empty() || deadline < deadlines_.begin()->first;
  outstanding_[id] = Outstanding{to, request.kind, deadlines_.emplace(deadline, id),
                                 std::move(done), std::move(options.reply_sink)};
  Frame f;
  f.kind = request.kind;
  f.flags = kFlagRequest;
  f.request_id = id;
  f.src = self_;
  f.body = std::move(request.header);
  f.payload_len = request.payload.bytes.size();
  ++stats_.messages_sent;
  stats_.payload_bytes_sent += f.payload_len;
  SendFrame(to, std::move(f), std::move(request.payload), [this, id, to](Status s) {
    if (!s.ok()) Complete(id, s.WithContext("send to " + to.ToString()));
  });
  if (earliest) Notify();  // the owner's timer must be re-armed earlier
}

void TransportCore::After(Duration delay, std::function<void()> fn) {
  const TimePoint at = clock_.Now() + delay;
  const bool earliest = (deadlines_.empty() || at < deadlines_.begin()->first) &&
                        (timers_.empty() || at < timers_.begin()->first);
  timers_.emplace(at, std::move(fn));
  if (earliest) Notify();  // the owner's timer must be re-armed earlier
}

void TransportCore::CountRejected(const Status& decode_error) {
  if (decode_error.code() == StatusCode::kOutOfRange) {
    ++stats_.rejected_oversized;
  } else {
    ++stats_.rejected_malformed;
  }
}

StatusOr<ReceiveBuffer> TransportCore::BeginReceive(const Frame& frame, const ReplyRoute& route) {
  PayloadSink sink;
  if (frame.is_reply()) {
    auto it = outstanding_.find(frame.request_id);
    if (it == outstanding_.end() || it->second.to != frame.src) {
      ++stats_.late_replies;
      return NotFoundError("reply " + std::to_string(frame.request_id) + " from " +
                           frame.src.ToString() + " matches no outstanding request");
    }
    sink = it->second.reply_sink;
  } else {
    auto it = handlers_.find(frame.kind);
    if (it == handlers_.end()) {
      ++stats_.rejected_unknown_kind;
      Status s = InvalidArgumentError("no handler for message kind " + std::to_string(frame.kind) +
                                      " on " + self_.ToString());
      if (frame.is_request()) ReplyVia(route, frame.kind, self_, frame.request_id, s);
      return s;
    }
    sink = it->second.sink;
  }
  ReceiveBuffer buffer;
  if (sink) {
    auto b = sink(frame.src, frame.kind, frame.body, frame.payload_len);
    if (!b.ok() || b->bytes.size() < frame.payload_len) {
      Status s = b.ok() ? InternalError("payload sink returned a short buffer") : b.status();
      if (frame.is_request()) ReplyVia(route, frame.kind, self_, frame.request_id, s);
      if (frame.is_reply()) Complete(frame.request_id, s);
      return s;
    }
    buffer = std::move(b).value();
    buffer.bytes = buffer.bytes.first(frame.payload_len);
  } else {
    buffer = AllocateReceiveBuffer(frame.payload_len);
    if (!buffer.owner) {
      Status s = ResourceExhaustedError("cannot allocate " + std::to_string(frame.payload_len) +
                                        " bytes for a payload");
      if (frame.is_request()) ReplyVia(route, frame.kind, self_, frame.request_id, s);
      if (frame.is_reply()) Complete(frame.request_id, s);
      return s;
    }
  }
  return buffer;
}

void TransportCore::FinishReceive(Frame frame, ReceiveBuffer buffer, ReplyRoute route) {
  ++stats_.messages_received;
  stats_.payload_bytes_received += frame.payload_len;
  InMessage m;
  m.from = frame.src;
  m.kind = frame.kind;
  m.header = std::move(frame.body);
  m.payload = buffer.bytes;
  m.payload_owner = std::move(buffer.owner);
  if (frame.is_reply()) {
    if (frame.status_code != StatusCode::kOk) {
      Complete(frame.request_id, Status(frame.status_code, frame.status_message));
    } else {
      Complete(frame.request_id, std::move(m));
    }
    return;
  }
  auto it = handlers_.find(frame.kind);
  if (it == handlers_.end()) return;  // checked in BeginReceive; unregistered since
  Responder responder;
  if (frame.is_request()) {
    auto r = std::make_shared<Route>();
    r->kind = frame.kind;
    r->self = self_;
    r->route = std::move(route);
    r->alive = alive_;
    responder = Responder(std::move(r), frame.request_id);
  }
  // std::function needs a copyable target; the Responder is move-only.
  auto resp = std::make_shared<Responder>(std::move(responder));
  Post([handler = it->second.handler, m = std::move(m), resp]() mutable {
    handler(std::move(m), std::move(*resp));
  });
}

void TransportCore::Complete(uint64_t request_id, StatusOr<InMessage> result) {
  auto it = outstanding_.find(request_id);
  if (it == outstanding_.end()) return;
  ReplyCallback done = std::move(it->second.done);
  deadlines_.erase(it->second.deadline);
  outstanding_.erase(it);
  Post([done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
}

void TransportCore::FailPeer(NodeId peer, const Status& why) {
  ++stats_.peer_failures;
  std::vector<uint64_t> ids;
  for (auto& [id, o] : outstanding_) {
    if (o.to == peer) ids.push_back(id);
  }
  for (uint64_t id : ids) {
    Complete(id, UnavailableError(peer.ToString() + " failed: " + std::string(why.message())));
  }
  if (peer_failure_) {
    Post([h = peer_failure_, peer, why] { h(peer, why); });
  }
}

void TransportCore::FailAll(const Status& why) {
  std::vector<uint64_t> ids;
  for (auto& [id, o] : outstanding_) ids.push_back(id);
  for (uint64_t id : ids) Complete(id, why);
  timers_.clear();
}

void TransportCore::Post(std::function<void()> fn) {
  posted_.push_back(std::move(fn));
  Notify();
}

void TransportCore::FireDeadlines() {
  const TimePoint now = clock_.Now();
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const uint64_t id = deadlines_.begin()->second;
    auto it = outstanding_.find(id);
    ++stats_.deadlines_expired;
    Complete(id, DeadlineExceededError("request " + std::to_string(id) + " (kind " +
                                       std::to_string(it->second.kind) + ") to " +
                                       it->second.to.ToString() + " timed out"));
  }
  while (!timers_.empty() && timers_.begin()->first <= now) {
    Post(std::move(timers_.begin()->second));
    timers_.erase(timers_.begin());
  }
}

void TransportCore::RunPosted() {
  FireDeadlines();
  while (!posted_.empty()) {
    auto fn = std::move(posted_.front());
    posted_.pop_front();
    fn();
  }
}

std::optional<TimePoint> TransportCore::NextDeadline() const {
  std::optional<TimePoint> next;
  if (!deadlines_.empty()) next = deadlines_.begin()->first;
  if (!timers_.empty() && (!next || timers_.begin()->first < *next)) next = timers_.begin()->first;
  return next;
}

}  // namespace fern::transport
