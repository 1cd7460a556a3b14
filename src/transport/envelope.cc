#include "transport/envelope.h"

#include <string>

#include "fern_wire.pb.h"

namespace fern::transport {
namespace {

// Envelope fields other than body and status message take at most this much.
constexpr uint64_t kEnvelopeOverhead = 128;

}  // namespace

std::string EncodeFrame(const Frame& frame) {
  wire::Envelope e;
  e.set_version(kWireVersion);
  e.set_kind(frame.kind);
  e.set_flags(frame.flags);
  e.set_request_id(frame.request_id);
  e.set_src_node(frame.src.value);
  e.set_payload_len(frame.payload_len);
  e.set_status_code(static_cast<int32_t>(frame.status_code));
  if (!frame.status_message.empty()) e.set_status_message(frame.status_message);
  if (!frame.body.empty()) e.set_body(frame.body);
  return e.SerializeAsString();
}

StatusOr<Frame> DecodeFrame(std::span<const uint8_t> envelope, uint64_t data_len,
                            const Limits& limits) {
  const uint64_t max_envelope = limits.max_body + limits.max_status_message + kEnvelopeOverhead;
  if (envelope.size() > max_envelope) {
    return OutOfRangeError("envelope of " + std::to_string(envelope.size()) +
                           " bytes exceeds the limit of " + std::to_string(max_envelope));
  }
  if (data_len > limits.max_payload) {
    return OutOfRangeError("payload of " + std::to_string(data_len) +
                           " bytes exceeds the limit of " + std::to_string(limits.max_payload));
  }
  wire::Envelope e;
  if (envelope.empty() || !e.ParseFromArray(envelope.data(), static_cast<int>(envelope.size()))) {
    return InvalidArgumentError("envelope does not parse (" + std::to_string(envelope.size()) +
                                " bytes)");
  }
  if (e.version() != kWireVersion) {
    return InvalidArgumentError("wire version " + std::to_string(e.version()) +
                                " not supported (want " + std::to_string(kWireVersion) + ")");
  }
  if (e.kind() == 0 || e.kind() > 0xFFFF) {
    return InvalidArgumentError("message kind " + std::to_string(e.kind()) + " out of range");
  }
  const uint32_t flags = e.flags();
  if ((flags & ~(kFlagRequest | kFlagReply)) != 0 || flags == (kFlagRequest | kFlagReply)) {
    return InvalidArgumentError("bad envelope flags " + std::to_string(flags));
  }
  if (flags != 0 && e.request_id() == 0) {
    return InvalidArgumentError("request or reply without a request id");
  }
  if (e.payload_len() != data_len) {
    return InvalidArgumentError("envelope announces " + std::to_string(e.payload_len()) +
                                " payload bytes but " + std::to_string(data_len) + " arrived");
  }
  if (e.body().size() > limits.max_body) {
    return OutOfRangeError("header body of " + std::to_string(e.body().size()) +
                           " bytes exceeds the limit of " + std::to_string(limits.max_body));
  }
  if (e.status_message().size() > limits.max_status_message) {
    return OutOfRangeError("status message too long");
  }
  if (e.status_code() < 0 || e.status_code() > static_cast<int>(StatusCode::kDataLoss) ||
      (e.status_code() != 0 && !(flags & kFlagReply))) {
    return InvalidArgumentError("bad status code " + std::to_string(e.status_code()));
  }
  Frame f;
  f.kind = static_cast<MessageKind>(e.kind());
  f.flags = flags;
  f.request_id = e.request_id();
  f.src = NodeId(e.src_node());
  f.payload_len = e.payload_len();
  f.status_code = static_cast<StatusCode>(e.status_code());
  f.status_message = std::move(*e.mutable_status_message());
  f.body = std::move(*e.mutable_body());
  return f;
}

}  // namespace fern::transport
