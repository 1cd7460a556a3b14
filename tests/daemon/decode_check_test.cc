// internal::DecodeChecked: a degraded decode is checked against the data
// CRCs the stripe's parity shards record, and a shard that is wrong but
// matches its own CRC never turns into wrong bytes returned as good ones.
#include <gtest/gtest.h>

#include "daemon/node_internal.h"
#include "ec/crc32c.h"
#include "test_util.h"

namespace fern::daemon {
namespace {

constexpr int kK = 4, kM = 2, kN = kK + kM;
constexpr size_t kLen = 4096;

// One encoded stripe as a reader would have fetched it: bytes, each shard's
// own CRC, and what each parity records.
struct Stripe {
  std::vector<std::vector<uint8_t>> shards;
  std::vector<uint32_t> crcs;
  std::vector<std::vector<uint32_t>> stripe_crcs;
  std::unique_ptr<ec::ErasureCoder> coder;

  explicit Stripe(std::mt19937_64& rng) : shards(kN, std::vector<uint8_t>(kLen)), crcs(kN), stripe_crcs(kN) {
    coder = std::move(ec::MakeErasureCoder({.backend = "jerasure", .k = kK, .m = kM})).value();
    std::vector<const uint8_t*> data;
    std::vector<uint8_t*> parity;
    for (int i = 0; i < kK; ++i) {
      fern::testing::FillRandom(rng, shards[i].data(), kLen);
      data.push_back(shards[i].data());
    }
    for (int j = 0; j < kM; ++j) parity.push_back(shards[kK + j].data());
    EXPECT_TRUE(coder->Encode(data, parity, kLen).ok());
    for (int i = 0; i < kN; ++i) crcs[i] = ec::Crc32c(shards[i]);
    for (int j = kK; j < kN; ++j) stripe_crcs[j].assign(crcs.begin(), crcs.begin() + kK);
  }
  // A parity changed and resealed: wrong, yet its own CRC matches, and (as
  // after ShardStore::Reseal) it records no data CRCs.
  void CorruptParityConsistently(int j) {
    shards[j][kLen / 3] ^= 0x5a;
    crcs[j] = ec::Crc32c(shards[j]);
    stripe_crcs[j].clear();
  }
  // Decodes the shards not in `have` into fresh buffers; returns them with the status.
  Status Decode(ec::ShardSet have, std::vector<std::vector<uint8_t>>* out, bool* verified) {
    out->assign(kN, std::vector<uint8_t>(kLen, 0));
    std::vector<uint8_t*> ptrs(kN);
    ec::ShardSet want;
    for (int i = 0; i < kN; ++i) {
      if (have.contains(i)) {
        ptrs[i] = shards[i].data();
      } else if (i < kK) {
        ptrs[i] = (*out)[i].data();
        want.insert(i);
      }
    }
    return internal::DecodeChecked(*coder, ptrs, have, want, kLen, crcs, stripe_crcs, verified);
  }
};

ec::ShardSet Without(std::initializer_list<int> gone) {
  ec::ShardSet s = ec::ShardSet::FirstN(kN);
  for (int i : gone) s.erase(i);
  return s;
}

TEST(DecodeChecked, DecodedDataMatchingTheRecordedCrcsIsVerified) {
  auto rng = fern::testing::TestRng();
  Stripe st(rng);
  const auto original = st.shards;
  std::vector<std::vector<uint8_t>> out;
  bool verified = false;
  ASSERT_TRUE(st.Decode(Without({0, 1}), &out, &verified).ok());
  EXPECT_TRUE(verified);
  EXPECT_EQ(out[0], original[0]);
  EXPECT_EQ(out[1], original[1]);
}

TEST(DecodeChecked, AWrongParityThatMatchesItsOwnCrcIsRefusedWithNoSpareShard) {
  auto rng = fern::testing::TestRng();
  Stripe st(rng);
  st.CorruptParityConsistently(4);
  std::vector<std::vector<uint8_t>> out;
  bool verified = true;
  Status s = st.Decode(Without({0, 1}), &out, &verified);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  EXPECT_EQ(ToErrno(s), EIO);
  EXPECT_NE(s.message().find("shards 0,1 decoded from {2,3,4,5}"), std::string::npos) << s.message();
  EXPECT_FALSE(verified);
}

TEST(DecodeChecked, AWrongParityIsDecodedAroundWhenASpareShardIsThere) {
  auto rng = fern::testing::TestRng();
  Stripe st(rng);
  const auto original = st.shards;
  st.CorruptParityConsistently(4);
  std::vector<std::vector<uint8_t>> out;
  bool verified = false;
  Status s = st.Decode(Without({0}), &out, &verified);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(verified);
  EXPECT_EQ(out[0], original[0]);
}

TEST(DecodeChecked, NothingRecordedDecodesUnverified) {
  auto rng = fern::testing::TestRng();
  Stripe st(rng);
  const auto original = st.shards;
  for (auto& c : st.stripe_crcs) c.clear();  // parity written by a format-1 daemon
  std::vector<std::vector<uint8_t>> out;
  bool verified = true;
  ASSERT_TRUE(st.Decode(Without({1, 3}), &out, &verified).ok());
  EXPECT_FALSE(verified);
  EXPECT_EQ(out[1], original[1]);
  EXPECT_EQ(out[3], original[3]);
}

// A parity whose record disagrees with a data shard that is present: one of
// them is wrong and nothing tells which, so the decode that uses both is
// not trusted; with a spare shard the other parity vouches for the result.
TEST(DecodeChecked, ARecordThatDisagreesWithThePresentDataIsNotTrusted) {
  auto rng = fern::testing::TestRng();
  Stripe st(rng);
  const auto original = st.shards;
  st.stripe_crcs[4][2] ^= 1;
  std::vector<std::vector<uint8_t>> out;
  bool verified = false;
  ASSERT_TRUE(st.Decode(Without({0}), &out, &verified).ok());
  EXPECT_TRUE(verified);
  EXPECT_EQ(out[0], original[0]);
  EXPECT_EQ(st.Decode(Without({0, 1}), &out, &verified).code(), StatusCode::kDataLoss);
}

// StripeCrcsOf: what a rebuilt parity records.
TEST(DecodeChecked, ARebuiltParityRecordsCrcsOnlyWhenTheyAreKnown) {
  auto rng = fern::testing::TestRng();
  Stripe st(rng);
  const std::vector<uint32_t> data_crcs(st.crcs.begin(), st.crcs.begin() + kK);
  EXPECT_EQ(internal::StripeCrcsOf(Without({4}), kK, kN, st.crcs, st.stripe_crcs), data_crcs);
  EXPECT_EQ(internal::StripeCrcsOf(Without({0, 4}), kK, kN, st.crcs, st.stripe_crcs), data_crcs);
  st.stripe_crcs[5][1] ^= 1;  // disagrees with data shard 1, which is present
  EXPECT_TRUE(internal::StripeCrcsOf(Without({0, 4}), kK, kN, st.crcs, st.stripe_crcs).empty());
  st.stripe_crcs[5].clear();
  EXPECT_TRUE(internal::StripeCrcsOf(Without({0, 4}), kK, kN, st.crcs, st.stripe_crcs).empty());
}

}  // namespace
}  // namespace fern::daemon
