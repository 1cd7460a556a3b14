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
  internal::ShardChecks checks{kN};
  std::vector<uint32_t>& crcs = checks.crcs;
  std::vector<std::vector<uint32_t>>& stripe_crcs = checks.stripe_crcs;
  std::unique_ptr<ec::ErasureCoder> coder;

  explicit Stripe(std::mt19937_64& rng) : shards(kN, std::vector<uint8_t>(kLen)) {
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
  // A shard changed whose own CRC still matches: its bytes are wrong and
  // nothing but the parity's record can tell. A parity changed and resealed
  // also records no data CRCs any more (ShardStore::Reseal); one whose
  // bytes went wrong some other way (a coder bug) keeps its record.
  void CorruptConsistently(int j, bool keep_record = false) {
    shards[j][kLen / 3] ^= 0x5a;
    crcs[j] = ec::Crc32c(shards[j]);
    if (!keep_record) stripe_crcs[j].clear();
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
    return internal::DecodeChecked(*coder, ptrs, have, want, kLen, checks, verified);
  }
  // Rebuilds parity shard 5 (not in `have`) into *rebuilt.
  Status RebuildParity5(ec::ShardSet have, std::vector<uint8_t>* rebuilt, bool* verified,
                        std::vector<uint32_t>* recorded) {
    rebuilt->assign(kLen, 0);
    std::vector<uint8_t*> ptrs(kN, nullptr);
    for (int i = 0; i < kN; ++i) {
      if (have.contains(i)) ptrs[i] = shards[i].data();
    }
    ptrs[5] = rebuilt->data();
    ec::ShardSet want;
    want.insert(5);
    return internal::DecodeChecked(*coder, ptrs, have, want, kLen, checks, verified, recorded);
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
  st.CorruptConsistently(4);
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
  st.CorruptConsistently(4);
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
  // A parity rebuilt from an unchecked decode records nothing; from all k
  // data shards present it records their CRCs.
  for (const bool data_missing : {true, false}) {
    std::vector<uint8_t> rebuilt;
    std::vector<uint32_t> recorded{1};
    ASSERT_TRUE(st.RebuildParity5(data_missing ? Without({2, 5}) : Without({5}), &rebuilt, &verified, &recorded).ok());
    EXPECT_EQ(rebuilt, original[5]);
    EXPECT_EQ(recorded.empty(), data_missing);
  }
}

// With data shard 0 missing (one spare shard) the decode is verified and
// right; with 0 and 1 missing (no spare) it is DataLoss.
void ExpectRightWithASpareAndRefusedWithout(Stripe& st, const std::vector<std::vector<uint8_t>>& original) {
  std::vector<std::vector<uint8_t>> out;
  bool verified = false;
  ASSERT_TRUE(st.Decode(Without({0}), &out, &verified).ok());
  EXPECT_TRUE(verified);
  EXPECT_EQ(out[0], original[0]);
  EXPECT_EQ(st.Decode(Without({0, 1}), &out, &verified).code(), StatusCode::kDataLoss);
}

// A parity whose record disagrees with a data shard that is present: one of
// them is wrong and nothing tells which, so the decode that uses both is
// not trusted; with a spare shard the other parity vouches for the result.
TEST(DecodeChecked, ARecordThatDisagreesWithThePresentDataIsNotTrusted) {
  auto rng = fern::testing::TestRng();
  Stripe st(rng);
  const auto original = st.shards;
  st.stripe_crcs[4][2] ^= 1;
  ExpectRightWithASpareAndRefusedWithout(st, original);
}

// The broken-coder case: parity 4's bytes are wrong, its record right.
TEST(DecodeChecked, AParityWithWrongBytesIsContradictedByItsOwnRecord) {
  auto rng = fern::testing::TestRng();
  Stripe st(rng);
  const auto original = st.shards;
  st.CorruptConsistently(4, /*keep_record=*/true);
  ExpectRightWithASpareAndRefusedWithout(st, original);
}

// A present data shard that is wrong but matches its own CRC: the accepted
// decode leaves it out, and its decoded bytes replace it where it lies.
TEST(DecodeChecked, AWrongPresentDataShardIsReplacedByItsDecodedBytes) {
  auto rng = fern::testing::TestRng();
  Stripe st(rng);
  const auto original = st.shards;
  st.CorruptConsistently(2);
  std::vector<std::vector<uint8_t>> out;
  bool verified = false;
  ASSERT_TRUE(st.Decode(Without({0}), &out, &verified).ok());
  EXPECT_TRUE(verified);
  EXPECT_EQ(out[0], original[0]);
  EXPECT_EQ(st.shards[2], original[2]) << "the wrong data shard was left in place";
}

// A rebuilt parity is encoded from the data (decoded first where missing),
// never decoded through another parity, and its data CRCs come back to be
// recorded with it.
TEST(DecodeChecked, AWantedParityIsEncodedFromCheckedData) {
  auto rng = fern::testing::TestRng();
  for (const bool data_missing : {false, true}) {
    SCOPED_TRACE(data_missing ? "data shard 0 missing too" : "all data present");
    Stripe st(rng);
    const auto original = st.shards;
    const std::vector<uint32_t> data_crcs(st.crcs.begin(), st.crcs.begin() + kK);
    if (!data_missing) st.CorruptConsistently(4, /*keep_record=*/true);
    std::vector<uint8_t> rebuilt;
    bool verified = false;
    std::vector<uint32_t> recorded;
    Status s = st.RebuildParity5(data_missing ? Without({0, 5}) : Without({5}), &rebuilt, &verified, &recorded);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_TRUE(verified);
    EXPECT_EQ(rebuilt, original[5]);
    EXPECT_EQ(recorded, data_crcs);
  }
}

}  // namespace
}  // namespace fern::daemon
