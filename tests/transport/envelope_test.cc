// The envelope decoder faces the network: garbage must never crash it or make
// it allocate more than the limits allow. A randomized fuzz loop (seeded,
// printed) plus the specific malformations a peer could send.
#include "transport/envelope.h"

#include <random>

#include <gtest/gtest.h>

#include "fern_wire.pb.h"
#include "test_util.h"

namespace fern::transport {
namespace {

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

Frame Valid() {
  Frame f;
  f.kind = 10;
  f.flags = kFlagRequest;
  f.request_id = 42;
  f.src = NodeId(3);
  f.payload_len = 4096;
  f.body = "shard put header";
  return f;
}

TEST(Envelope, RoundTrip) {
  Frame f = Valid();
  auto d = DecodeFrame(Bytes(EncodeFrame(f)), 4096, Limits{});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->kind, 10);
  EXPECT_EQ(d->request_id, 42u);
  EXPECT_EQ(d->src, NodeId(3));
  EXPECT_EQ(d->body, "shard put header");
  EXPECT_TRUE(d->is_request());
}

TEST(Envelope, RejectsEachMalformation) {
  Limits limits;
  auto code = [&](const Frame& f, uint64_t data_len) {
    return DecodeFrame(Bytes(EncodeFrame(f)), data_len, limits).status().code();
  };
  Frame f = Valid();
  EXPECT_EQ(code(f, 4095), StatusCode::kInvalidArgument);  // length disagrees with the data
  f = Valid();
  f.kind = 0;
  EXPECT_EQ(code(f, 4096), StatusCode::kInvalidArgument);
  f = Valid();
  f.flags = kFlagRequest | kFlagReply;
  EXPECT_EQ(code(f, 4096), StatusCode::kInvalidArgument);
  f = Valid();
  f.request_id = 0;
  EXPECT_EQ(code(f, 4096), StatusCode::kInvalidArgument);
  f = Valid();
  f.status_code = StatusCode::kDataLoss;  // only replies carry a status
  EXPECT_EQ(code(f, 4096), StatusCode::kInvalidArgument);
  f = Valid();
  f.payload_len = limits.max_payload + 1;
  EXPECT_EQ(code(f, f.payload_len), StatusCode::kOutOfRange);
  f = Valid();
  f.body.assign(limits.max_body + 1, 'x');
  EXPECT_EQ(code(f, 4096), StatusCode::kOutOfRange);
  // Wrong version.
  wire::Envelope e;
  e.set_version(2);
  e.set_kind(1);
  EXPECT_EQ(DecodeFrame(Bytes(e.SerializeAsString()), 0, limits).status().code(),
            StatusCode::kInvalidArgument);
  // Empty and truncated.
  EXPECT_EQ(DecodeFrame({}, 0, limits).status().code(), StatusCode::kInvalidArgument);
  std::string good = EncodeFrame(Valid());
  for (size_t cut = 1; cut < good.size(); ++cut) {
    auto d = DecodeFrame(Bytes(good.substr(0, cut)), 4096, limits);
    EXPECT_FALSE(d.ok() && d->body == Valid().body) << "truncated at " << cut << " decoded whole";
  }
}

TEST(Envelope, HugeLengthPrefixDoesNotAllocate) {
  // Field 9 (body), wire type 2, with a declared length of 2^31 and 4 bytes.
  std::string evil = {0x08, 0x01, 0x10, 0x01, 0x4a, char(0x80), char(0x80), char(0x80),
                      char(0x80), 0x08, 'a', 'b', 'c', 'd'};
  auto d = DecodeFrame(Bytes(evil), 0, Limits{});
  EXPECT_FALSE(d.ok());
  // Larger than the envelope limit: refused before parsing.
  std::string big(Limits{}.max_body * 2, '\x0a');
  EXPECT_EQ(DecodeFrame(Bytes(big), 0, Limits{}).status().code(), StatusCode::kOutOfRange);
}

TEST(Envelope, RandomGarbageNeverCrashes) {
  auto rng = fern::testing::TestRng();
  const Limits limits{.max_body = 1024, .max_payload = 1 << 20, .max_status_message = 256};
  const std::string good = EncodeFrame(Valid());
  int accepted = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string input;
    switch (rng() % 3) {
      case 0: {  // pure noise
        input.resize(rng() % 200);
        for (auto& c : input) c = static_cast<char>(rng());
        break;
      }
      case 1: {  // a valid envelope with a few bytes flipped, cut or repeated
        input = good;
        for (int f = 0, n = 1 + rng() % 4; f < n; ++f) input[rng() % input.size()] ^= 1 << (rng() % 8);
        if (rng() % 4 == 0) input.resize(rng() % input.size());
        if (rng() % 8 == 0) input += input;
        break;
      }
      default: {  // random field soup
        wire::Envelope e;
        e.set_version(rng() % 3);
        e.set_kind(rng() % 70000);
        e.set_flags(rng() % 5);
        e.set_request_id(rng() % 3);
        e.set_payload_len(rng() % (2 << 20));
        e.set_status_code(static_cast<int32_t>(rng() % 20) - 2);
        e.set_body(std::string(rng() % 2048, 'b'));
        input = e.SerializeAsString();
      }
    }
    const uint64_t data_len = rng() % 2 ? 4096 : rng() % (2 << 20);
    auto d = DecodeFrame(Bytes(input), data_len, limits);
    if (d.ok()) {
      ++accepted;
      ASSERT_LE(d->body.size(), limits.max_body);
      ASSERT_EQ(d->payload_len, data_len);
      ASSERT_NE(d->kind, 0);
    }
  }
  RecordProperty("accepted", accepted);
}

}  // namespace
}  // namespace fern::transport
