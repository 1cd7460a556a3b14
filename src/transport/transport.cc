#include "transport/transport.h"

#include <cstring>
#include <vector>

namespace fern::transport {

Payload Payload::Copy(std::span<const uint8_t> bytes) {
  auto copy = std::make_shared<std::vector<uint8_t>>(bytes.begin(), bytes.end());
  return Payload{std::span<const uint8_t>(copy->data(), copy->size()), copy};
}

Responder& Responder::operator=(Responder&& other) noexcept {
  if (this != &other) {
    if (sink_) sink_->Send(request_id_, InternalError("request dropped by handler"));
    sink_ = std::move(other.sink_);
    request_id_ = other.request_id_;
    other.sink_.reset();
  }
  return *this;
}

Responder::~Responder() {
  if (sink_) sink_->Send(request_id_, InternalError("request dropped by handler"));
}

void Responder::Reply(OutMessage reply) {
  if (!sink_) return;
  auto sink = std::move(sink_);
  sink_.reset();
  sink->Send(request_id_, std::move(reply));
}

void Responder::Fail(Status status) {
  if (!sink_) return;
  if (status.ok()) status = InternalError("handler failed a request with OK");
  auto sink = std::move(sink_);
  sink_.reset();
  sink->Send(request_id_, std::move(status));
}

bool ProgressUntil(Transport& t, const std::function<bool()>& done, Duration timeout,
                   const Clock& clock) {
  const TimePoint deadline = clock.Now() + timeout;
  while (true) {
    t.Progress();
    if (done()) return true;
    const TimePoint now = clock.Now();
    if (now >= deadline) return false;
    t.Wait(std::min<Duration>(deadline - now, std::chrono::milliseconds(100)));
  }
}

}  // namespace fern::transport
