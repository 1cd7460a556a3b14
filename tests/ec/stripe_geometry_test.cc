#include "ec/stripe_geometry.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace fern::ec {
namespace {

TEST(StripeGeometry, RejectsBadShapes) {
  EXPECT_FALSE(StripeGeometry::Make(0, 1 << 20).ok());
  EXPECT_FALSE(StripeGeometry::Make(4, 0).ok());
  EXPECT_FALSE(StripeGeometry::Make(4, 1000, 64).ok());  // not a multiple of the alignment
  EXPECT_FALSE(StripeGeometry::Make(4, (size_t{1} << 30) + 8).ok());
  EXPECT_TRUE(StripeGeometry::Make(4, 1024, 64).ok());
}

TEST(StripeGeometry, StripeCountsAtTheEdges) {
  auto g = *StripeGeometry::Make(4, 1 << 20);
  const uint64_t S = g.stripe_size();
  EXPECT_EQ(S, 4u << 20);
  EXPECT_EQ(g.StripeCount(0), 0u);
  EXPECT_EQ(g.StripeCount(1), 1u);
  EXPECT_EQ(g.StripeCount(S - 1), 1u);
  EXPECT_EQ(g.StripeCount(S), 1u);
  EXPECT_EQ(g.StripeCount(S + 1), 2u);
  EXPECT_EQ(g.StripeCount(3 * S + 17), 4u);
}

TEST(StripeGeometry, LastPartialStripe) {
  auto g = *StripeGeometry::Make(4, 1024, 64);
  const uint64_t S = g.stripe_size();
  const uint64_t size = 3 * S + 17;
  EXPECT_EQ(g.ShardDataBytes(size, 3, 0), 17u);
  EXPECT_EQ(g.ShardDataBytes(size, 3, 1), 0u);
  EXPECT_EQ(g.StripeShardLen(size, 3), 64u);  // 17 rounded to the alignment
  EXPECT_EQ(g.StripeShardLen(size, 2), 1024u);
  EXPECT_EQ(g.StripeShardLen(size, 4), 0u);
  // shard - 1 and shard + 1 bytes.
  EXPECT_EQ(g.ShardDataBytes(1023, 0, 0), 1023u);
  EXPECT_EQ(g.ShardDataBytes(1025, 0, 1), 1u);
  EXPECT_EQ(g.StripeShardLen(1025, 0), 1024u);
  EXPECT_EQ(g.StripeShardLen(1, 0), 64u);
}

TEST(StripeGeometry, LocateAndFileOffsetAreInverse) {
  auto rng = fern::testing::TestRng();
  for (int k : {1, 2, 4, 10}) {
    for (size_t shard : {size_t{64}, size_t{4096}, size_t{1} << 20}) {
      auto g = *StripeGeometry::Make(k, shard);
      for (int i = 0; i < 1000; ++i) {
        uint64_t off = rng() % (uint64_t{1} << 40);
        ShardLocation loc = g.Locate(off);
        ASSERT_LT(loc.shard, k);
        ASSERT_LT(loc.offset, shard);
        ASSERT_EQ(g.FileOffset(loc), off);
      }
      EXPECT_EQ(g.Locate(shard), (ShardLocation{k == 1 ? 1u : 0u, k == 1 ? 0 : 1, 0}));
    }
  }
}

TEST(StripeGeometry, ShardBytesSumToFileSize) {
  auto rng = fern::testing::TestRng();
  auto g = *StripeGeometry::Make(6, 4096, 64);
  for (int i = 0; i < 200; ++i) {
    uint64_t size = rng() % (10 * g.stripe_size());
    uint64_t sum = 0;
    for (uint64_t s = 0; s < g.StripeCount(size); ++s) {
      for (int d = 0; d < 6; ++d) {
        sum += g.ShardDataBytes(size, s, d);
        ASSERT_LE(g.ShardDataBytes(size, s, d), g.StripeShardLen(size, s));
      }
    }
    ASSERT_EQ(sum, size);
  }
}

}  // namespace
}  // namespace fern::ec
