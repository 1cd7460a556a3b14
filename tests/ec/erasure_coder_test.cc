// Conformance suite for ErasureCoder, instantiated for every backend and
// technique. Parity of the matrix techniques is checked against a scalar
// GF(2^8) reference computed here; every decode is checked against the
// original bytes.
#include "ec/erasure_coder.h"

#include <algorithm>
#include <ostream>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ec/crc32c.h"
#include "ec/matrix_coder.h"
#include "test_util.h"

namespace fern::ec {
namespace {

using fern::testing::Buffer;
using fern::testing::FillRandom;
using fern::testing::TestRng;

struct Variant {
  std::string backend;
  std::string technique;
  size_t packet_size = 0;
};

void PrintTo(const Variant& v, std::ostream* os) {
  *os << v.backend << "/" << v.technique;
  if (v.packet_size) *os << "/ps" << v.packet_size;
}

std::string VariantName(const ::testing::TestParamInfo<Variant>& info) {
  std::string n = info.param.backend + "_" + info.param.technique;
  if (info.param.packet_size) n += "_ps" + std::to_string(info.param.packet_size);
  return n;
}

bool IsMatrixTechnique(const Variant& v) {
  return v.technique == "reed_sol_van" || v.technique == "cauchy" || v.technique == "xor";
}

// A stripe of k+m buffers, each with its own misalignment when asked.
struct Stripe {
  int k, m;
  size_t len;
  std::vector<Buffer> shards;
  Stripe(int k_, int m_, size_t len_, bool misaligned) : k(k_), m(m_), len(len_) {
    for (int i = 0; i < k + m; ++i) shards.emplace_back(len, misaligned ? (i * 7 + 1) % 16 : 0);
  }
  std::vector<const uint8_t*> data() {
    std::vector<const uint8_t*> p;
    for (int i = 0; i < k; ++i) p.push_back(shards[i].data());
    return p;
  }
  std::vector<uint8_t*> parity() {
    std::vector<uint8_t*> p;
    for (int i = k; i < k + m; ++i) p.push_back(shards[i].data());
    return p;
  }
  std::vector<uint8_t*> all() {
    std::vector<uint8_t*> p;
    for (auto& s : shards) p.push_back(s.data());
    return p;
  }
  std::vector<uint8_t> Bytes(int i) const {
    return std::vector<uint8_t>(shards[i].data(), shards[i].data() + len);
  }
};

// Scalar reference: parity j = sum_i C[j][i] * D_i.
std::vector<uint8_t> ReferenceParity(const gf256::Matrix& c, Stripe& s, int j) {
  std::vector<uint8_t> out(s.len, 0);
  for (int i = 0; i < s.k; ++i) {
    gf256::MulAddRegion(c.at(j, i), {s.shards[i].data(), s.len}, out);
  }
  return out;
}

// Scalar reference for bit-matrix techniques: each block of w*ps bytes of a
// shard is w packets of ps bytes; parity packet (j,t) is the XOR of the data
// packets (i,u) whose bit B[j*w+t][i*w+u] is set. For cauchy_good B is the
// expansion of C: column u of the w x w block of element e holds the bits of
// e * 2^u.
std::vector<uint8_t> ReferenceBitParity(const gf256::Matrix& b, int w, size_t ps, Stripe& s,
                                        int j) {
  std::vector<uint8_t> out(s.len, 0);
  for (size_t block = 0; block < s.len; block += w * ps) {
    for (int t = 0; t < w; ++t) {
      uint8_t* dst = out.data() + block + t * ps;
      for (int i = 0; i < s.k; ++i) {
        for (int u = 0; u < w; ++u) {
          if (!b.at(j * w + t, i * w + u)) continue;
          const uint8_t* src = s.shards[i].data() + block + u * ps;
          for (size_t x = 0; x < ps; ++x) dst[x] ^= src[x];
        }
      }
    }
  }
  return out;
}

gf256::Matrix ExpandToBits(const gf256::Matrix& c, int w) {
  gf256::Matrix b(c.rows * w, c.cols * w);
  for (int r = 0; r < c.rows; ++r) {
    for (int col = 0; col < c.cols; ++col) {
      uint8_t e = c.at(r, col);
      for (int u = 0; u < w; ++u, e = gf256::Mul(e, 2)) {
        for (int t = 0; t < w; ++t) b.at(r * w + t, col * w + u) = (e >> t) & 1;
      }
    }
  }
  return b;
}

// All subsets of {0..n-1} with at most `max` elements.
std::vector<ShardSet> SubsetsUpTo(int n, int max) {
  std::vector<ShardSet> out;
  for (uint32_t bits = 0; bits < (1u << n); ++bits) {
    if (__builtin_popcount(bits) <= max) out.emplace_back(bits);
  }
  return out;
}

class ErasureCoderTest : public ::testing::TestWithParam<Variant> {
 protected:
  std::unique_ptr<ErasureCoder> Make(int k, int m) {
    CoderOptions o;
    o.backend = GetParam().backend;
    o.technique = GetParam().technique;
    o.packet_size = GetParam().packet_size;
    o.k = k;
    o.m = m;
    auto coder = MakeErasureCoder(o);
    EXPECT_TRUE(coder.ok()) << coder.status().ToString();
    return coder.ok() ? std::move(coder).value() : nullptr;
  }

  std::vector<std::pair<int, int>> Geometries() const {
    if (GetParam().technique == "xor") return {{2, 1}, {4, 1}, {7, 1}};
    if (GetParam().technique == "liber8tion") return {{2, 2}, {4, 2}, {8, 2}};
    return {{2, 1}, {4, 2}, {6, 3}, {8, 2}, {10, 4}};
  }

  // Lengths to try: odd ones for the matrix techniques, multiples of the
  // alignment for bit-matrix techniques.
  std::vector<size_t> Lengths(const ErasureCoder& c, std::mt19937_64& rng) const {
    const size_t a = c.alignment();
    if (a == 1) {
      return {1, 7, 15, 16, 17, 63, 4095, 4096, 4097, 65537, 1 + rng() % 200000};
    }
    return {a, 2 * a, a * (1 + rng() % 4)};
  }
};

TEST_P(ErasureCoderTest, EncodeMatchesReference) {
  auto rng = TestRng();
  for (auto [k, m] : Geometries()) {
    auto coder = Make(k, m);
    ASSERT_NE(coder, nullptr);
    EXPECT_EQ(coder->k(), k);
    EXPECT_EQ(coder->m(), m);
    for (size_t len : Lengths(*coder, rng)) {
      for (bool misaligned : {false, true}) {
        SCOPED_TRACE("k=" + std::to_string(k) + " m=" + std::to_string(m) +
                     " len=" + std::to_string(len) + " misaligned=" + std::to_string(misaligned));
        Stripe s(k, m, len, misaligned);
        for (int i = 0; i < k; ++i) FillRandom(rng, s.shards[i].data(), len);
        ASSERT_TRUE(coder->Encode(s.data(), s.parity(), len).ok());
        for (auto& b : s.shards) EXPECT_TRUE(b.GuardIntact()) << "write past the shard end";
        if (IsMatrixTechnique(GetParam())) {
          for (int j = 0; j < m; ++j) {
            EXPECT_EQ(s.Bytes(k + j), ReferenceParity(coder->coding_matrix(), s, j))
                << "parity " << j;
          }
        } else {
          const int w = 8;
          const gf256::Matrix bits = coder->coding_matrix_w() == w
                                         ? coder->coding_matrix()
                                         : ExpandToBits(coder->coding_matrix(), w);
          for (int j = 0; j < m; ++j) {
            EXPECT_EQ(s.Bytes(k + j), ReferenceBitParity(bits, w, coder->alignment() / w, s, j))
                << "parity " << j;
          }
        }
      }
    }
  }
}

TEST_P(ErasureCoderTest, DecodesEveryErasurePatternUpToM) {
  auto rng = TestRng();
  for (auto [k, m] : Geometries()) {
    auto coder = Make(k, m);
    ASSERT_NE(coder, nullptr);
    const size_t len = coder->alignment() == 1 ? 1000 + rng() % 3000 : coder->alignment();
    for (bool misaligned : {false, true}) {
      // Large bit-matrix blocks: the misaligned path is covered by the ps64 variant.
      if (misaligned && len > 4096) continue;
      Stripe s(k, m, len, misaligned);
      for (int i = 0; i < k; ++i) FillRandom(rng, s.shards[i].data(), len);
      ASSERT_TRUE(coder->Encode(s.data(), s.parity(), len).ok());
      std::vector<std::vector<uint8_t>> original;
      for (int i = 0; i < k + m; ++i) original.push_back(s.Bytes(i));

      for (ShardSet lost : SubsetsUpTo(k + m, m)) {
        if (lost.empty()) continue;
        SCOPED_TRACE("k=" + std::to_string(k) + " m=" + std::to_string(m) + " lost=0x" +
                     std::to_string(lost.bits()) + " misaligned=" + std::to_string(misaligned));
        for (int i = 0; i < k + m; ++i) {
          if (lost.contains(i)) std::memset(s.shards[i].data(), 0xEE, len);
        }
        ShardSet present(ShardSet::FirstN(k + m).bits() & ~lost.bits());
        auto all = s.all();
        ASSERT_TRUE(coder->Decode(all, present, lost, len).ok());
        for (int i = 0; i < k + m; ++i) ASSERT_EQ(s.Bytes(i), original[i]) << "shard " << i;
      }
    }
  }
}

TEST_P(ErasureCoderTest, MoreThanMErasuresIsDataLossNotWrongBytes) {
  auto rng = TestRng();
  for (auto [k, m] : Geometries()) {
    auto coder = Make(k, m);
    ASSERT_NE(coder, nullptr);
    const size_t len = coder->alignment() == 1 ? 512 : coder->alignment();
    Stripe s(k, m, len, false);
    for (int i = 0; i < k; ++i) FillRandom(rng, s.shards[i].data(), len);
    ASSERT_TRUE(coder->Encode(s.data(), s.parity(), len).ok());
    ShardSet lost = ShardSet::FirstN(m + 1);  // data shards 0..m
    for (int i = 0; i <= m; ++i) std::memset(s.shards[i].data(), 0xEE, len);
    ShardSet present(ShardSet::FirstN(k + m).bits() & ~lost.bits());
    auto all = s.all();
    Status st = coder->Decode(all, present, lost, len);
    EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
    EXPECT_NE(st.message().find("shards missing"), std::string_view::npos) << st.ToString();
    for (int i = 0; i <= m; ++i) {
      EXPECT_EQ(s.Bytes(i), std::vector<uint8_t>(len, 0xEE)) << "lost shard " << i << " written";
    }
  }
}

TEST_P(ErasureCoderTest, DecodeWithExtraPresentShardsAndPartialWant) {
  // Rebuild one lost shard when the others are all there (the rebuild case):
  // only `want` is written, whatever else is missing.
  auto rng = TestRng();
  auto [k, m] = Geometries().back();
  auto coder = Make(k, m);
  ASSERT_NE(coder, nullptr);
  const size_t len = coder->alignment() == 1 ? 777 : coder->alignment();
  Stripe s(k, m, len, false);
  for (int i = 0; i < k; ++i) FillRandom(rng, s.shards[i].data(), len);
  ASSERT_TRUE(coder->Encode(s.data(), s.parity(), len).ok());
  for (int target = 0; target < k + m; ++target) {
    auto expected = s.Bytes(target);
    std::memset(s.shards[target].data(), 0, len);
    ShardSet present(ShardSet::FirstN(k + m).bits());
    present.erase(target);
    ShardSet want;
    want.insert(target);
    auto all = s.all();
    ASSERT_TRUE(coder->Decode(all, present, want, len).ok());
    EXPECT_EQ(s.Bytes(target), expected) << "shard " << target;
  }
}

TEST_P(ErasureCoderTest, DeltaUpdateEqualsReencode) {
  auto rng = TestRng();
  for (auto [k, m] : Geometries()) {
    auto coder = Make(k, m);
    ASSERT_NE(coder, nullptr);
    const size_t a = coder->alignment();
    const size_t len = a == 1 ? 4096 + rng() % 4096 : 4 * a;
    Stripe s(k, m, len, false);
    for (int i = 0; i < k; ++i) FillRandom(rng, s.shards[i].data(), len);
    ASSERT_TRUE(coder->Encode(s.data(), s.parity(), len).ok());
    for (int round = 0; round < 8; ++round) {
      const int d = static_cast<int>(rng() % k);
      // A changed range [off, off+n) of data shard d, aligned as required.
      size_t off = (rng() % len) / a * a;
      size_t n = std::max<size_t>(a, (rng() % (len - off + 1)) / a * a);
      if (off + n > len) off = len - n;
      SCOPED_TRACE("k=" + std::to_string(k) + " m=" + std::to_string(m) + " shard=" +
                   std::to_string(d) + " off=" + std::to_string(off) + " n=" + std::to_string(n));
      std::vector<uint8_t> fresh(n);
      FillRandom(rng, fresh.data(), n);
      std::vector<uint8_t> delta(n);
      for (size_t i = 0; i < n; ++i) delta[i] = s.shards[d].data()[off + i] ^ fresh[i];
      std::memcpy(s.shards[d].data() + off, fresh.data(), n);
      std::vector<uint8_t*> parity_at;
      for (auto* p : s.parity()) parity_at.push_back(p + off);
      ASSERT_TRUE(coder->ApplyDelta(d, delta, parity_at).ok());

      Stripe full(k, m, len, false);
      for (int i = 0; i < k; ++i) std::memcpy(full.shards[i].data(), s.shards[i].data(), len);
      ASSERT_TRUE(coder->Encode(full.data(), full.parity(), len).ok());
      for (int j = 0; j < m; ++j) ASSERT_EQ(s.Bytes(k + j), full.Bytes(k + j)) << "parity " << j;
    }
  }
}

// The one-pass encode + CRC must write what Encode writes and report what
// Crc32c says of every shard, for lengths on both sides of its block size.
TEST_P(ErasureCoderTest, EncodeWithCrcsEqualsEncodeThenCrc) {
  auto rng = TestRng();
  const auto [k, m] = Geometries()[1];
  auto coder = Make(k, m);
  ASSERT_NE(coder, nullptr);
  const size_t a = coder->alignment(), b = (kCrcEncodeBlock + a - 1) / a * a;
  std::vector<size_t> lens = {0, a, b - a, b, b + a, 3 * b + a, 1 << 20};
  if (a == 1) lens.push_back(3 * b + 17);
  for (size_t len : lens) {
    if (len % a != 0 || (len == b - a && b == a)) continue;
    SCOPED_TRACE("len=" + std::to_string(len));
    Stripe one(k, m, len, true), two(k, m, len, false);
    for (int i = 0; i < k; ++i) {
      FillRandom(rng, one.shards[i].data(), len);
      if (len) std::memcpy(two.shards[i].data(), one.shards[i].data(), len);
    }
    std::vector<uint32_t> crcs(k + m, 0xdeadbeef);
    ASSERT_TRUE(EncodeWithCrcs(*coder, one.data(), one.parity(), len, crcs).ok());
    ASSERT_TRUE(coder->Encode(two.data(), two.parity(), len).ok());
    for (int i = 0; i < k + m; ++i) {
      EXPECT_EQ(one.Bytes(i), two.Bytes(i)) << "shard " << i;
      EXPECT_EQ(crcs[i], Crc32c({two.shards[i].data(), len})) << "shard " << i;
      EXPECT_TRUE(one.shards[i].GuardIntact()) << "write past shard " << i;
    }
  }
  Stripe s(k, m, b, false);
  std::vector<uint32_t> short_crcs(k + m - 1);
  EXPECT_EQ(EncodeWithCrcs(*coder, s.data(), s.parity(), b, short_crcs).code(),
            StatusCode::kInvalidArgument);
  std::vector<uint32_t> crcs(k + m);
  auto data = s.data();
  EXPECT_EQ(EncodeWithCrcs(*coder, std::span(data).first(k - 1), s.parity(), b, crcs).code(),
            StatusCode::kInvalidArgument);
  if (a > 1) {
    EXPECT_EQ(EncodeWithCrcs(*coder, s.data(), s.parity(), b - 8, crcs).code(),
              StatusCode::kInvalidArgument);
  }
}

TEST_P(ErasureCoderTest, ZeroLengthIsANoOp) {
  auto coder = Make(4, GetParam().technique == "xor" ? 1 : 2);
  ASSERT_NE(coder, nullptr);
  Stripe s(coder->k(), coder->m(), 0, false);
  EXPECT_TRUE(coder->Encode(s.data(), s.parity(), 0).ok());
  ShardSet present = ShardSet::FirstN(coder->k());
  ShardSet want(ShardSet::FirstN(coder->k() + coder->m()).bits() & ~present.bits());
  auto all = s.all();
  EXPECT_TRUE(coder->Decode(all, present, want, 0).ok());
  for (auto& b : s.shards) EXPECT_TRUE(b.GuardIntact());
}

TEST_P(ErasureCoderTest, RejectsMisuseWithInvalidArgument) {
  auto coder = Make(4, GetParam().technique == "xor" ? 1 : 2);
  ASSERT_NE(coder, nullptr);
  const size_t len = coder->alignment() == 1 ? 64 : coder->alignment();
  Stripe s(coder->k(), coder->m(), len, false);
  auto data = s.data();
  auto parity = s.parity();
  // Too few data buffers.
  EXPECT_EQ(coder->Encode(std::span(data).first(2), parity, len).code(),
            StatusCode::kInvalidArgument);
  // A null buffer.
  data[1] = nullptr;
  EXPECT_EQ(coder->Encode(data, parity, len).code(), StatusCode::kInvalidArgument);
  // Present and wanted overlap.
  auto all = s.all();
  EXPECT_EQ(coder->Decode(all, ShardSet(0b11111), ShardSet(0b1), len).code(),
            StatusCode::kInvalidArgument);
  // Index out of range.
  EXPECT_EQ(coder->Decode(all, ShardSet::FirstN(coder->k()), ShardSet(1u << 31), len).code(),
            StatusCode::kInvalidArgument);
  // Data index out of range for a delta.
  std::vector<uint8_t> delta(len);
  EXPECT_EQ(coder->ApplyDelta(coder->k(), delta, parity).code(), StatusCode::kInvalidArgument);
  if (coder->alignment() > 1) {
    data = s.data();
    EXPECT_EQ(coder->Encode(data, parity, len - 8).code(), StatusCode::kInvalidArgument);
  }
}

std::vector<Variant> AllVariants() {
  std::vector<Variant> v = {
      {"jerasure", "reed_sol_van"},
      {"jerasure", "cauchy"},
      {"jerasure", "cauchy_good"},
      {"jerasure", "cauchy_good", 64},
      {"jerasure", "liber8tion"},
      {"jerasure", "liber8tion", 64},
      {"xor", "xor"},
      {"jerasure", "xor"},
  };
  for (auto b : AvailableBackends()) {
    if (b == "isal" || b == "gfni") {
      v.push_back({std::string(b), "reed_sol_van"});
      v.push_back({std::string(b), "cauchy"});
      v.push_back({std::string(b), "xor"});
    }
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(AllBackends, ErasureCoderTest, ::testing::ValuesIn(AllVariants()),
                         VariantName);

bool HaveBackend(std::string_view name) {
  auto b = AvailableBackends();
  return std::find(b.begin(), b.end(), name) != b.end();
}
bool HaveIsal() { return HaveBackend("isal"); }

// `backend` against Jerasure, fed the same matrix: the same parity bytes from
// Encode and from ApplyDelta, and Jerasure's parity decodes with `backend`,
// so either can read what the other wrote.
void ExpectSameParityAsJerasure(const std::string& backend, const std::vector<std::pair<int, int>>& layouts,
                                const std::vector<size_t>& fixed_lens) {
  auto rng = TestRng();
  for (std::string technique : {"reed_sol_van", "cauchy"}) {
    for (auto [k, m] : layouts) {
      CoderOptions o{.backend = "jerasure", .technique = technique, .k = k, .m = m};
      auto jer = MakeErasureCoder(o);
      o.backend = backend;
      auto other = MakeErasureCoder(o);
      ASSERT_TRUE(jer.ok() && other.ok()) << other.status().ToString();
      EXPECT_EQ((*jer)->coding_matrix().cells, (*other)->coding_matrix().cells);
      std::vector<size_t> lens = fixed_lens;
      lens.push_back(1 + rng() % 100000);
      for (size_t len : lens) {
        SCOPED_TRACE(backend + " " + technique + " k=" + std::to_string(k) + " m=" + std::to_string(m) +
                     " len=" + std::to_string(len));
        Stripe a(k, m, len, false), b(k, m, len, true);
        for (int i = 0; i < k; ++i) {
          FillRandom(rng, a.shards[i].data(), len);
          std::memcpy(b.shards[i].data(), a.shards[i].data(), len);
        }
        ASSERT_TRUE((*jer)->Encode(a.data(), a.parity(), len).ok());
        ASSERT_TRUE((*other)->Encode(b.data(), b.parity(), len).ok());
        for (int j = k; j < k + m; ++j) ASSERT_EQ(a.Bytes(j), b.Bytes(j)) << "parity " << j - k;
        // A change of the last data shard, its delta applied by each backend.
        std::vector<uint8_t> delta(len);
        FillRandom(rng, delta.data(), len);
        ASSERT_TRUE((*jer)->ApplyDelta(k - 1, delta, a.parity()).ok());
        ASSERT_TRUE((*other)->ApplyDelta(k - 1, delta, b.parity()).ok());
        for (int j = k; j < k + m; ++j) ASSERT_EQ(a.Bytes(j), b.Bytes(j)) << "parity " << j - k << " after delta";
        for (size_t i = 0; i < len; ++i) {
          a.shards[k - 1].data()[i] ^= delta[i];
          b.shards[k - 1].data()[i] ^= delta[i];
        }
        // Jerasure's stripe loses its first m shards; `backend` rebuilds them.
        ShardSet lost = ShardSet::FirstN(m);
        for (int i = 0; i < m; ++i) std::memset(a.shards[i].data(), 0, len);
        ShardSet present(ShardSet::FirstN(k + m).bits() & ~lost.bits());
        auto all = a.all();
        ASSERT_TRUE((*other)->Decode(all, present, lost, len).ok());
        for (int i = 0; i < m; ++i) ASSERT_EQ(a.Bytes(i), b.Bytes(i)) << "shard " << i;
      }
    }
  }
}

TEST(CrossBackend, JerasureAndIsalParityIdentical) {
  if (!HaveIsal()) GTEST_SKIP() << "built without ISA-L";
  ExpectSameParityAsJerasure("isal", {{2, 1}, {4, 2}, {6, 3}, {8, 2}, {10, 4}, {12, 4}},
                             {1, 33, 4096, 1 << 20});
}

// The gfni kernel's length classes: under one 64-byte vector, whole 128-byte
// steps, a masked tail; and output groups of 1 to 4 rows (m=9 is 4+4+1).
TEST(CrossBackend, GfniParityIdenticalToJerasure) {
  if (!HaveBackend("gfni")) GTEST_SKIP() << "this CPU lacks GFNI or AVX-512BW";
  ExpectSameParityAsJerasure("gfni", {{1, 1}, {4, 2}, {5, 3}, {6, 5}, {10, 4}, {12, 9}},
                             {1, 63, 64, 65, 127, 128, 129, 4096, 65536 + 191});
}

// reed_sol_van's first parity row is all ones, so with m=1 it is plain XOR:
// the tiny reference coder is an independent oracle for both backends.
TEST(CrossBackend, ReedSolVanWithOneParityIsXor) {
  auto rng = TestRng();
  CoderOptions xo{.backend = "xor", .technique = "xor", .k = 5, .m = 1};
  auto oracle = MakeErasureCoder(xo);
  ASSERT_TRUE(oracle.ok());
  for (auto backend : AvailableBackends()) {
    if (backend == "xor") continue;
    CoderOptions o{.backend = std::string(backend), .technique = "reed_sol_van", .k = 5, .m = 1};
    auto coder = MakeErasureCoder(o);
    ASSERT_TRUE(coder.ok());
    const size_t len = 10000 + rng() % 1000;
    Stripe a(5, 1, len, false), b(5, 1, len, false);
    for (int i = 0; i < 5; ++i) {
      FillRandom(rng, a.shards[i].data(), len);
      std::memcpy(b.shards[i].data(), a.shards[i].data(), len);
    }
    ASSERT_TRUE((*coder)->Encode(a.data(), a.parity(), len).ok());
    ASSERT_TRUE((*oracle)->Encode(b.data(), b.parity(), len).ok());
    EXPECT_EQ(a.Bytes(5), b.Bytes(5)) << backend;
  }
}

TEST(DecodeCache, OnePlanPerErasurePattern) {
  CoderOptions o{.backend = "jerasure", .technique = "reed_sol_van", .k = 4, .m = 2};
  auto coder = MakeErasureCoder(o);
  ASSERT_TRUE(coder.ok());
  auto* mc = dynamic_cast<MatrixCoder*>(coder->get());
  ASSERT_NE(mc, nullptr);
  Stripe s(4, 2, 256, false);
  auto all = s.all();
  ASSERT_TRUE(mc->Decode(all, ShardSet(0b111100), ShardSet(0b000011), 256).ok());
  ASSERT_TRUE(mc->Decode(all, ShardSet(0b111100), ShardSet(0b000011), 256).ok());
  EXPECT_EQ(mc->cached_plans(), 1u);
  ASSERT_TRUE(mc->Decode(all, ShardSet(0b111010), ShardSet(0b000101), 256).ok());
  EXPECT_EQ(mc->cached_plans(), 2u);
}

TEST(Factory, RejectsBadOptionsClearly) {
  auto expect_invalid = [](CoderOptions o, std::string_view needle) {
    auto c = MakeErasureCoder(o);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(needle), std::string_view::npos) << c.status().ToString();
  };
  expect_invalid({.k = 0, .m = 2}, "k=0");
  expect_invalid({.k = 30, .m = 3}, "k+m <= 32");
  expect_invalid({.backend = "nope"}, "unknown erasure-coding backend");
  expect_invalid({.technique = "liberation"}, "unknown technique");
  expect_invalid({.backend = "xor", .technique = "xor", .k = 4, .m = 2}, "m=1");
  expect_invalid({.technique = "cauchy_good", .packet_size = 12}, "multiple of 8");
  expect_invalid({.technique = "reed_sol_van", .packet_size = 4096}, "cauchy_good and liber8tion only");
  expect_invalid({.technique = "liber8tion", .k = 4, .m = 3}, "m=2 and k<=8");
  expect_invalid({.technique = "liber8tion", .k = 9, .m = 2}, "m=2 and k<=8");
  if (HaveIsal()) expect_invalid({.backend = "isal", .technique = "cauchy_good"}, "Jerasure only");
  if (HaveIsal()) expect_invalid({.backend = "isal", .technique = "liber8tion"}, "Jerasure only");
  if (HaveBackend("gfni")) expect_invalid({.backend = "gfni", .technique = "cauchy_good"}, "Jerasure only");
}

TEST(Factory, AutoPicksTheFastestBackendAvailable) {
  auto c = MakeErasureCoder({.backend = "auto", .technique = "reed_sol_van"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->backend(), HaveBackend("gfni") ? "gfni" : HaveIsal() ? "isal" : "jerasure");
  auto g = MakeErasureCoder({.backend = "auto", .technique = "cauchy_good"});
  ASSERT_TRUE(g.ok());
  EXPECT_EQ((*g)->backend(), "jerasure");
}

TEST(Factory, GfniOnACpuWithoutItSaysWhy) {
  if (HaveBackend("gfni")) GTEST_SKIP() << "this CPU has GFNI and AVX-512BW (ctest reruns this with FERN_DISABLE_GFNI=1)";
  auto c = MakeErasureCoder({.backend = "gfni", .technique = "reed_sol_van"});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(c.status().message().find("gfni"), std::string_view::npos) << c.status().ToString();
}

// gf-complete silently falls back from ~8 to ~2.4 GB/s when its SSSE3 path is
// not taken. This build must take it whenever the CPU has SSSE3; ctest runs
// this test a second time with GF_COMPLETE_DISABLE_SSSE3=1 to prove the check
// notices the slow path.
TEST(JerasureSimd, FastRegionMultiplyActiveWhenCpuHasSsse3) {
  const bool disabled = std::getenv("GF_COMPLETE_DISABLE_SSSE3") != nullptr;
  const bool cpu = __builtin_cpu_supports("ssse3");
  EXPECT_EQ(JerasureSimdActive(), cpu && !disabled)
      << "cpu ssse3=" << cpu << " GF_COMPLETE_DISABLE_SSSE3 set=" << disabled;
  // Either way the coder still produces correct parity.
  auto c = MakeErasureCoder({.backend = "jerasure", .technique = "reed_sol_van", .k = 4, .m = 2});
  ASSERT_TRUE(c.ok());
  Stripe s(4, 2, 4096, false);
  for (int i = 0; i < 4; ++i) std::memset(s.shards[i].data(), i * 37 + 1, 4096);
  ASSERT_TRUE((*c)->Encode(s.data(), s.parity(), 4096).ok());
  EXPECT_EQ(s.Bytes(4), ReferenceParity((*c)->coding_matrix(), s, 0));
  EXPECT_EQ(s.Bytes(5), ReferenceParity((*c)->coding_matrix(), s, 1));
}

}  // namespace
}  // namespace fern::ec
