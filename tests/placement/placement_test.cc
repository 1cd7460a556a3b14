#include "placement/placement.h"

#include <algorithm>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "test_util.h"

namespace fern::placement {
namespace {

ClusterView Nodes(int n, int domains = 0) {
  std::vector<NodeInfo> v;
  for (int i = 0; i < n; ++i) {
    v.push_back(NodeInfo{NodeId(i), domains ? "rack" + std::to_string(i % domains) : "", true});
  }
  return *ClusterView::Make(v);
}

std::vector<uint32_t> Ids(const std::vector<NodeId>& v) {
  std::vector<uint32_t> out;
  for (auto id : v) out.push_back(id.value);
  return out;
}

// Pinned outputs: a change here moves every stored shard.
TEST(PlacementGolden, HashesAndPlacementsAreStable) {
  EXPECT_EQ(Mix64(0), 0u);
  EXPECT_EQ(Mix64(1), 0x5692161d100b05e5ull);  // SplitMix64's published value
  EXPECT_EQ(HashPath("/fern/ckpt/rank7.bin"), 14445479848290104286ull);
  auto p = *Placement::Make(42, 4, 2);
  auto view = Nodes(8);
  EXPECT_EQ(Ids(*p.Home(7, 0, view)), (std::vector<uint32_t>{2, 0, 3, 1, 5, 7}));
  EXPECT_EQ(Ids(*p.Home(7, 1, view)), (std::vector<uint32_t>{3, 4, 7, 5, 6, 0}));
  EXPECT_EQ(Ids(*p.Home(123456789, 99, view)), (std::vector<uint32_t>{5, 4, 2, 0, 7, 1}));
  EXPECT_EQ(Ids(p.MetadataOwners("/fern/ckpt/rank7.bin", view)), (std::vector<uint32_t>{6, 7, 4}));
}

TEST(Placement, DistinctNodesAndDeterministic) {
  auto p = *Placement::Make(fern::testing::RunSeed(), 4, 2);
  auto view = Nodes(9);
  for (uint64_t s = 0; s < 2000; ++s) {
    auto home = *p.Home(s * 31 + 5, s, view);
    ASSERT_EQ(home.size(), 6u);
    ASSERT_EQ(std::set<NodeId>(home.begin(), home.end()).size(), 6u);
    ASSERT_EQ(home, *p.Home(s * 31 + 5, s, view));
  }
}

TEST(Placement, BalancedShardsAndRoles) {
  auto p = *Placement::Make(fern::testing::RunSeed(), 4, 2);
  auto view = Nodes(10);
  std::map<uint32_t, int> shards, parity;
  const int kStripes = 60000;
  for (int s = 0; s < kStripes; ++s) {
    auto home = *p.Home(s / 100, s % 100, view);
    for (int i = 0; i < 6; ++i) {
      ++shards[home[i].value];
      if (i >= 4) ++parity[home[i].value];
    }
  }
  const double mean = kStripes * 6.0 / 10;
  for (auto& [node, count] : shards) {
    EXPECT_LT(count / mean, 1.03) << "node " << node;
    EXPECT_GT(count / mean, 0.97) << "node " << node;
    // Roles rotate: every node holds parity for about m/(k+m) of its shards.
    EXPECT_NEAR(double(parity[node]) / count, 2.0 / 6.0, 0.02) << "node " << node;
  }
}

TEST(Placement, LosingANodeMovesOnlyItsShards) {
  auto p = *Placement::Make(fern::testing::RunSeed(), 4, 2);
  auto view = Nodes(9);
  for (uint32_t dead = 0; dead < 9; ++dead) {
    auto degraded = view.WithAlive(NodeId(dead), false);
    int moved = 0;
    for (uint64_t s = 0; s < 3000; ++s) {
      auto before = *p.Place(77, s, view);
      auto after = *p.Place(77, s, degraded);
      ASSERT_FALSE(before.degraded());
      for (int i = 0; i < 6; ++i) {
        if (before.shards[i] == NodeId(dead)) {
          ASSERT_NE(after.shards[i], NodeId(dead));
          ASSERT_TRUE(after.moved[i]);
          ++moved;
        } else {
          ASSERT_EQ(after.shards[i], before.shards[i]) << "stripe " << s << " shard " << i;
        }
      }
      ASSERT_EQ(std::set<NodeId>(after.shards.begin(), after.shards.end()).size(), 6u);
      // Back alive: everything returns home.
      ASSERT_EQ(p.Place(77, s, degraded.WithAlive(NodeId(dead), true))->shards, before.shards);
    }
    EXPECT_GT(moved, 3000 * 6 / 9 / 2);  // the node held about 1/9 of 6 shards a stripe
  }
}

TEST(Placement, SpreadsOverFailureDomains) {
  auto p = *Placement::Make(fern::testing::RunSeed(), 4, 2);
  auto six_racks = Nodes(12, 6);
  auto three_racks = Nodes(12, 3);
  for (uint64_t s = 0; s < 3000; ++s) {
    std::set<std::string> racks;
    const auto six = *p.Home(9, s, six_racks);
    for (auto id : six) racks.insert(six_racks.Find(id)->domain);
    ASSERT_EQ(racks.size(), 6u) << "stripe " << s;
    std::map<std::string, int> per;
    const auto three = *p.Home(9, s, three_racks);
    for (auto id : three) ++per[three_racks.Find(id)->domain];
    for (auto& [rack, n] : per) ASSERT_EQ(n, 2) << "stripe " << s << " " << rack;
  }
  // A replacement prefers a rack the stripe does not use yet.
  auto degraded = six_racks.WithAlive(NodeId(0), false);
  for (uint64_t s = 0; s < 500; ++s) {
    auto pl = *p.Place(9, s, degraded);
    std::set<std::string> racks;
    for (auto id : pl.shards) racks.insert(six_racks.Find(id)->domain);
    ASSERT_EQ(racks.size(), 6u) << "stripe " << s;
  }
}

// A shard of a stored stripe whose node stays dead goes where a new write
// would have put it, to a node holding none of the stripe's shards, and a
// second loss in the same stripe gets a third node.
TEST(Placement, ReplacementOfAStoredShardIsWherePlaceWouldPutIt) {
  auto p = *Placement::Make(fern::testing::RunSeed(), 4, 2);
  auto view = Nodes(9, 9);
  for (uint64_t s = 0; s < 2000; ++s) {
    const auto home = *p.Home(5, s, view);
    const NodeId dead = home[s % 6];
    const auto one_down = view.WithAlive(dead, false);
    auto spare = p.Replacement(5, s, home, one_down);
    ASSERT_TRUE(spare.ok()) << spare.status().ToString();
    ASSERT_EQ(*spare, p.Place(5, s, one_down)->shards[s % 6]) << "stripe " << s;
    ASSERT_TRUE(one_down.IsAlive(*spare));
    ASSERT_EQ(std::count(home.begin(), home.end(), *spare), 0) << "stripe " << s;
    // Now a second node of the stripe dies too: its replacement avoids the first.
    auto moved = home;
    moved[s % 6] = *spare;
    const NodeId dead2 = home[(s + 1) % 6];
    auto second = p.Replacement(5, s, moved, one_down.WithAlive(dead2, false));
    ASSERT_TRUE(second.ok());
    ASSERT_EQ(std::count(moved.begin(), moved.end(), *second), 0) << "stripe " << s;
    ASSERT_NE(*second, dead);
  }
  // Every live node already holds a shard of the stripe: none to go to.
  auto six = Nodes(6);
  const auto home = *p.Home(5, 0, six);
  auto none = p.Replacement(5, 0, home, six.WithAlive(home[2], false));
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(none.status().message().find("already holds"), std::string_view::npos) << none.status().ToString();
}

// With min_shards below k+m, a dead home node no spare can stand in for
// keeps its place, marked absent; spares are still used first; fewer live
// nodes than min_shards is Unavailable.
TEST(Placement, MinShardsLeavesAbsentOnlyWhatNoSpareCanTake) {
  auto p = *Placement::Make(fern::testing::RunSeed(), 4, 2);
  auto six = Nodes(6);
  for (uint64_t s = 0; s < 200; ++s) {
    const auto home = *p.Home(3, s, six);
    const NodeId dead = home[s % 6];
    auto one_down = six.WithAlive(dead, false);
    EXPECT_EQ(p.Place(3, s, one_down).status().code(), StatusCode::kUnavailable);
    auto pl = p.Place(3, s, one_down, 5);
    ASSERT_TRUE(pl.ok()) << pl.status().ToString();
    EXPECT_EQ(pl->shards, home);  // nothing moves: the dead node keeps its place
    EXPECT_EQ(pl->present(), 5);
    for (int i = 0; i < 6; ++i) EXPECT_EQ(pl->absent[i], i == static_cast<int>(s % 6)) << "stripe " << s;
    EXPECT_FALSE(pl->degraded());
    EXPECT_EQ(p.Place(3, s, one_down.WithAlive(home[(s + 1) % 6], false), 5).status().code(),
              StatusCode::kUnavailable);
    auto two_down = one_down.WithAlive(home[(s + 1) % 6], false);
    EXPECT_EQ(p.Place(3, s, two_down, 4)->present(), 4);
  }
  // Seven nodes, two of a stripe's down: one spare takes one, one is absent.
  auto seven = Nodes(7);
  for (uint64_t s = 0; s < 200; ++s) {
    const auto home = *p.Home(4, s, seven);
    auto down = seven.WithAlive(home[0], false).WithAlive(home[5], false);
    auto pl = p.Place(4, s, down, 5);
    ASSERT_TRUE(pl.ok()) << pl.status().ToString();
    EXPECT_EQ(pl->present(), 5);
    EXPECT_TRUE(pl->moved[0]);
    EXPECT_TRUE(pl->absent[5]);
    EXPECT_EQ(pl->shards[5], home[5]);
  }
}

TEST(Placement, ClearErrorsWhenTooFewNodes) {
  auto p = *Placement::Make(1, 4, 2);
  auto five = Nodes(5);
  EXPECT_EQ(p.Home(1, 0, five).status().code(), StatusCode::kUnavailable);
  auto six = Nodes(6).WithAlive(NodeId(3), false);
  auto st = p.Place(1, 0, six).status();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("5 of 6 are alive"), std::string_view::npos) << st.ToString();
  EXPECT_FALSE(Placement::Make(1, 0, 2).ok());
  EXPECT_FALSE(Placement::Make(1, 30, 3).ok());
  std::vector<NodeInfo> dup = {{NodeId(1), "", true}, {NodeId(1), "", true}};
  EXPECT_FALSE(ClusterView::Make(dup).ok());
}

TEST(Placement, MetadataOwnersAndSequencer) {
  auto p = *Placement::Make(fern::testing::RunSeed(), 4, 2);
  auto view = Nodes(8);
  auto owners = p.MetadataOwners("/fern/a", view);
  ASSERT_EQ(owners.size(), 3u);
  EXPECT_EQ(std::set<NodeId>(owners.begin(), owners.end()).size(), 3u);
  EXPECT_EQ(*p.Sequencer("/fern/a", view), owners[0]);
  auto v1 = view.WithAlive(owners[0], false);
  EXPECT_EQ(*p.Sequencer("/fern/a", v1), owners[1]);
  EXPECT_EQ(p.MetadataOwners("/fern/a", v1), owners);  // owners are static
  auto v2 = v1.WithAlive(owners[1], false).WithAlive(owners[2], false);
  EXPECT_EQ(p.Sequencer("/fern/a", v2).status().code(), StatusCode::kUnavailable);
  EXPECT_GT(v2.epoch(), view.epoch());
  // Records live on the live owners, a stand-in taking each dead one's place.
  EXPECT_EQ(p.MetadataReplicas("/fern/a", view), owners);
  auto r1 = p.MetadataReplicas("/fern/a", v1);
  ASSERT_EQ(r1.size(), 3u);
  EXPECT_EQ(r1[0], owners[1]);
  EXPECT_EQ(r1[1], owners[2]);
  EXPECT_EQ(std::count(owners.begin(), owners.end(), r1[2]), 0);
  EXPECT_TRUE(v1.IsAlive(r1[2]));
  auto r2 = p.MetadataReplicas("/fern/a", v2);
  ASSERT_EQ(r2.size(), 3u);
  EXPECT_EQ(r2[0], r1[2]);  // the first stand-in stays
  for (NodeId id : r2) EXPECT_TRUE(v2.IsAlive(id));
  EXPECT_EQ(std::set<NodeId>(r2.begin(), r2.end()).size(), 3u);
  // Fewer live nodes than m+1: all of them.
  auto few = Nodes(4).WithAlive(NodeId(0), false).WithAlive(NodeId(1), false);
  EXPECT_EQ(p.MetadataReplicas("/fern/a", few).size(), 2u);
  // Paths spread over owners.
  std::map<uint32_t, int> first;
  for (int i = 0; i < 8000; ++i) ++first[p.MetadataOwners("/f/" + std::to_string(i), view)[0].value];
  for (auto& [node, n] : first) EXPECT_NEAR(n, 1000, 150) << "node " << node;
}

}  // namespace
}  // namespace fern::placement
