// libFuzzer target for what a peer controls: the envelope bytes and the
// payload length UCX reports. Decodes with DecodeFrame, checks the
// invariants of an accepted frame, and pushes the same bytes through a
// loopback node's full receive path (validation, sink, dispatch). Run with
// -malloc_limit_mb so an allocation driven by an announced length fails the
// run. Built only with -DFERN_FUZZ=ON and clang (scripts/test.sh does it).
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fern_wire.pb.h"
#include "transport/envelope.h"
#include "transport/loopback_transport.h"

using namespace fern;
using namespace fern::transport;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t announced;
  std::memcpy(&announced, data, 4);
  const Limits limits{.max_body = 4096, .max_payload = 1 << 20, .max_status_message = 256};
  std::span<const uint8_t> envelope(data + 4, size - 4);

  auto f = DecodeFrame(envelope, announced, limits);
  if (f.ok()) {
    if (f->body.size() > limits.max_body || f->payload_len != announced ||
        f->payload_len > limits.max_payload || f->kind == 0 ||
        f->status_message.size() > limits.max_status_message) {
      __builtin_trap();
    }
  }

  // The same bytes through a node's receive path; the payload is whatever
  // input follows, cut to a small size so the run stays fast.
  static LoopbackNetwork* net = new LoopbackNetwork(1, limits);
  static std::unique_ptr<LoopbackTransport> node = [] {
    auto n = net->AddNode(NodeId(1));
    n->Handle(wire::ECHO, [](InMessage m, Responder r) { r.Reply(OutMessage{wire::ECHO, m.header, {}}); });
    return n;
  }();
  static std::unique_ptr<LoopbackTransport> peer = net->AddNode(NodeId(2));
  std::vector<uint8_t> payload(envelope.begin(), envelope.begin() + std::min<size_t>(envelope.size(), 64));
  net->InjectRaw(NodeId(2), NodeId(1), std::string(envelope.begin(), envelope.end()), payload);
  net->Pump();
  return 0;
}
