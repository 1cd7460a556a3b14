// The Envelope (proto/fern_wire.proto) framing every transported message:
// encoding, and decoding that validates every length against Limits before
// anything is allocated. Shared by both Transport implementations so the
// loopback transport exercises the same validation as UCX.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "common/ids.h"
#include "common/status.h"
#include "transport/transport.h"

namespace fern::transport {

inline constexpr uint32_t kWireVersion = 1;
inline constexpr uint32_t kFlagRequest = 1;
inline constexpr uint32_t kFlagReply = 2;

struct Frame {
  MessageKind kind = 0;
  uint32_t flags = 0;
  uint64_t request_id = 0;
  NodeId src;
  uint64_t payload_len = 0;
  StatusCode status_code = StatusCode::kOk;
  std::string status_message;
  std::string body;

  bool is_request() const { return flags & kFlagRequest; }
  bool is_reply() const { return flags & kFlagReply; }
};

std::string EncodeFrame(const Frame& frame);

// Decodes and validates an envelope whose message carries `data_len` payload
// bytes. OutOfRange for anything over `limits` (checked before parsing),
// InvalidArgument for everything malformed: bad protobuf, wrong version, kind
// 0 or > 65535, bad flag combinations, payload_len != data_len.
StatusOr<Frame> DecodeFrame(std::span<const uint8_t> envelope, uint64_t data_len,
                            const Limits& limits);

}  // namespace fern::transport
