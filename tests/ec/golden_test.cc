// Golden vectors: CRC-32C of the parity of fixed inputs, per technique, and
// the coding matrices themselves. A library upgrade or a code change that moves
// a single parity byte fails here: the stored parity of existing checkpoints
// would no longer decode. Never "fix" these numbers without a format version.
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ec/crc32c.h"
#include "ec/erasure_coder.h"

namespace fern::ec {
namespace {

// splitmix64: a fixed byte stream independent of the standard library.
std::vector<uint8_t> FixedBytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  uint64_t x = seed;
  for (size_t i = 0; i < n; i += 8) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    for (size_t b = 0; b < 8 && i + b < n; ++b) out[i + b] = static_cast<uint8_t>(z >> (8 * b));
  }
  return out;
}

struct Golden {
  std::string technique;
  int k, m;
  size_t len;
  std::vector<uint32_t> parity_crc;
};

std::vector<uint32_t> ParityCrcs(const std::string& backend, const Golden& g) {
  // The cauchy_good layout depends on the packet size: pin it, not the default.
  const size_t ps = g.technique == "cauchy_good" || g.technique == "liber8tion" ? 8192 : 0;
  auto coder = MakeErasureCoder(
      {.backend = backend, .technique = g.technique, .k = g.k, .m = g.m, .packet_size = ps});
  EXPECT_TRUE(coder.ok()) << coder.status().ToString();
  if (!coder.ok()) return {};
  std::vector<std::vector<uint8_t>> data, parity(g.m, std::vector<uint8_t>(g.len));
  std::vector<const uint8_t*> dp;
  std::vector<uint8_t*> pp;
  for (int i = 0; i < g.k; ++i) data.push_back(FixedBytes(g.len, 1000 + i));
  for (auto& d : data) dp.push_back(d.data());
  for (auto& p : parity) pp.push_back(p.data());
  EXPECT_TRUE((*coder)->Encode(dp, pp, g.len).ok());
  std::vector<uint32_t> crcs;
  for (auto& p : parity) crcs.push_back(Crc32c(p));
  return crcs;
}

std::string Hex(const std::vector<uint32_t>& v) {
  std::string s = "{";
  char buf[16];
  for (auto x : v) {
    std::snprintf(buf, sizeof buf, "0x%08x, ", x);
    s += buf;
  }
  return s + "}";
}

const std::vector<Golden>& Goldens() {
  static const std::vector<Golden> g = {
      {"reed_sol_van", 4, 2, 65536, {0x5517b8c2, 0x186f17dc}},
      {"reed_sol_van", 10, 4, 4097, {0xfecaec56, 0x6f85f1d0, 0x2e6ea9be, 0x0468b949}},
      {"cauchy", 4, 2, 65536, {0x5517b8c2, 0xa02e9dec}},
      {"cauchy", 6, 3, 4097, {0xbf08acb2, 0x3a2351d5, 0x56ae436d}},
      // cauchy_good with 8 KiB packets.
      {"cauchy_good", 4, 2, 65536, {0x5517b8c2, 0xf1d3abe3}},
      {"cauchy_good", 8, 2, 131072, {0x6a33d2ce, 0x3b7f91a5}},
      // liber8tion with 8 KiB packets.
      {"liber8tion", 4, 2, 65536, {0x5517b8c2, 0x1e86580f}},
      {"liber8tion", 8, 2, 131072, {0x6a33d2ce, 0xd01ab1b4}},
  };
  return g;
}

TEST(Golden, ParityBytesAreStable) {
  for (const auto& g : Goldens()) {
    for (auto backend : AvailableBackends()) {
      if (backend == "xor") continue;
      if ((backend == "isal" || backend == "gfni") && (g.technique == "cauchy_good" || g.technique == "liber8tion")) {
        continue;
      }
      auto got = ParityCrcs(std::string(backend), g);
      EXPECT_EQ(got, g.parity_crc) << backend << " " << g.technique << " k=" << g.k
                                   << " m=" << g.m << " len=" << g.len << " got " << Hex(got);
    }
  }
}

TEST(Golden, CodingMatricesAreStable) {
  auto rsv = MakeErasureCoder({.backend = "jerasure", .technique = "reed_sol_van", .k = 4, .m = 2});
  auto cg = MakeErasureCoder({.backend = "jerasure", .technique = "cauchy", .k = 4, .m = 2});
  ASSERT_TRUE(rsv.ok() && cg.ok());
  EXPECT_EQ((*rsv)->coding_matrix().cells, (std::vector<uint8_t>{1, 1, 1, 1, 1, 0x46, 0x8f, 0xc8}));
  EXPECT_EQ((*cg)->coding_matrix().cells, (std::vector<uint8_t>{1, 1, 1, 1, 1, 0x02, 0x8e, 0x04}));
}

}  // namespace
}  // namespace fern::ec
