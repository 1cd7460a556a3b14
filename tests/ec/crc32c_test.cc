#include "ec/crc32c.h"

#include <cstring>
#include <random>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"

namespace fern::ec {
namespace {

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(Crc32c, KnownVectors) {
  // RFC 3720 (iSCSI) B.4 and the usual check value.
  for (auto f : {&Crc32c, &Crc32cTable, &Crc32cHardware, &Crc32cIsal}) {
    EXPECT_EQ(f(Bytes("123456789"), 0), 0xE3069283u);
    EXPECT_EQ(f(Bytes(""), 0), 0u);
    std::vector<uint8_t> zeros(32, 0), ones(32, 0xff);
    EXPECT_EQ(f(zeros, 0), 0x8A9136AAu);
    EXPECT_EQ(f(ones, 0), 0x62A8AB43u);
  }
}

TEST(Crc32c, ImplementationsAgreeAndExtend) {
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> buf(100000 + rng() % 1000);
  fern::testing::FillRandom(rng, buf.data(), buf.size());
  for (int i = 0; i < 50; ++i) {
    size_t off = rng() % buf.size();
    size_t n = rng() % (buf.size() - off);
    std::span<const uint8_t> s(buf.data() + off, n);  // unaligned starts, odd lengths
    uint32_t t = Crc32cTable(s);
    ASSERT_EQ(Crc32cHardware(s), t);
    ASSERT_EQ(Crc32cIsal(s), t);
    ASSERT_EQ(Crc32c(s), t);
    size_t cut = n ? rng() % n : 0;
    ASSERT_EQ(Crc32c(s.subspan(cut), Crc32c(s.first(cut))), t);
  }
}

TEST(Crc32c, DetectsASingleFlippedBit) {
  std::vector<uint8_t> buf(1 << 20, 0x5a);
  uint32_t before = Crc32c(buf);
  buf[123457] ^= 0x10;
  EXPECT_NE(Crc32c(buf), before);
}

}  // namespace
}  // namespace fern::ec

namespace fern::ec {
namespace {

// Combining the CRCs of two pieces equals the CRC of their concatenation,
// for empty, odd and large pieces.
TEST(Crc32cCombine, EqualsTheCrcOfTheConcatenation) {
  std::mt19937_64 rng(12345);
  for (size_t la : {size_t{0}, size_t{1}, size_t{7}, size_t{4096}, size_t{65536}, size_t{1 << 20}}) {
    for (size_t lb : {size_t{0}, size_t{1}, size_t{13}, size_t{65536}, size_t{(1 << 20) + 3}}) {
      std::vector<uint8_t> a(la), b(lb);
      for (auto& x : a) x = static_cast<uint8_t>(rng());
      for (auto& x : b) x = static_cast<uint8_t>(rng());
      std::vector<uint8_t> ab(a);
      ab.insert(ab.end(), b.begin(), b.end());
      EXPECT_EQ(Crc32cCombine(Crc32c(a), Crc32c(b), lb), Crc32c(ab)) << la << " + " << lb;
    }
  }
}

}  // namespace
}  // namespace fern::ec
