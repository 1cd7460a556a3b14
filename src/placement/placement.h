// Placement: which node holds each shard of each stripe, and which nodes own
// a file's metadata. A pure, seeded function of (file id, stripe, cluster
// view): every daemon computes the same answer with no coordination.
//
// Rendezvous (highest-random-weight) hashing. For a stripe, every node of
// the static node list gets the weight
//     w(node) = Mix64(Mix64(Mix64(seed ^ Mix64(file_id)) ^ stripe) ^ node_id)
// (Mix64 is the SplitMix64 finalizer, specified below; never std::hash) and
// nodes are ranked by descending weight, ties by ascending id. The first k+m
// of the ranking, taken so that failure domains are distinct while unused
// domains remain, are the stripe's *home* nodes: home[i] holds shard index i
// (0..k-1 data, k..k+m-1 parity). Because the ranking changes with the
// stripe, data and parity roles rotate over the nodes.
//
// Dead nodes: the ranking is over the static list, so a node leaving never
// shifts the others. A home node that is not alive is replaced by the next
// node of the ranking that is alive and not already in the stripe,
// preferring a failure domain the stripe does not use yet. Losing a node
// therefore moves only the shards that node held, and its return moves them
// back.
//
// Metadata: the owners of a path are the first m+1 nodes of the ranking
// with weight Mix64(seed ^ HashPath(path)) in place of the stripe term; the
// sequencer is the first live owner.
//
// Golden vectors in tests/placement pin all of this: changing the hash would
// silently move data, so it must never change without a format version.
//
// Thread-safety: Placement and ClusterView are immutable values.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/ids.h"
#include "common/status.h"

namespace fern::placement {

// SplitMix64's finalizer: x ^= x >> 30; x *= 0xbf58476d1ce4e5b9;
// x ^= x >> 27; x *= 0x94d049bb133111eb; x ^= x >> 31.
uint64_t Mix64(uint64_t x);
// FNV-1a (64-bit) of the bytes, then Mix64.
uint64_t HashPath(std::string_view path);

struct NodeInfo {
  NodeId id;
  std::string domain;  // failure domain (rack, switch); empty: its own domain
  bool alive = true;
};

// The static node list plus which nodes are alive, at one cluster epoch.
class ClusterView {
 public:
  ClusterView() = default;
  // Sorted by id; duplicate ids are an error.
  static StatusOr<ClusterView> Make(std::vector<NodeInfo> nodes, uint64_t epoch = 0);

  const std::vector<NodeInfo>& nodes() const { return nodes_; }
  uint64_t epoch() const { return epoch_; }
  const NodeInfo* Find(NodeId id) const;
  bool IsAlive(NodeId id) const;
  int live_count() const;
  // A copy with one node's liveness changed and the epoch bumped.
  ClusterView WithAlive(NodeId id, bool alive) const;

 private:
  std::vector<NodeInfo> nodes_;
  uint64_t epoch_ = 0;
};

struct StripePlacement {
  std::vector<NodeId> shards;  // k+m entries, index = shard index
  std::vector<bool> moved;     // shards[i] is a replacement for a dead home node
  // shards[i] is a dead home node no live node could stand in for: nothing
  // is written there (Place with min_shards < k+m only).
  std::vector<bool> absent;
  bool degraded() const;
  int present() const;  // k+m minus the absent shards
};

class Placement {
 public:
  // REQUIRES nothing: bad k, m come back from Make.
  static StatusOr<Placement> Make(uint64_t seed, int k, int m);

  int k() const { return k_; }
  int m() const { return m_; }
  uint64_t seed() const { return seed_; }

  // Every node of the view ranked for this stripe (the placement order).
  std::vector<NodeId> Ranking(uint64_t file_id, uint64_t stripe, const ClusterView& view) const;
  // Home nodes of the stripe, ignoring liveness. Unavailable if the view has
  // fewer than k+m nodes.
  StatusOr<std::vector<NodeId>> Home(uint64_t file_id, uint64_t stripe,
                                     const ClusterView& view) const;
  // Where the shards are now: home nodes, dead ones replaced. Unavailable if
  // fewer than k+m nodes are alive.
  StatusOr<StripePlacement> Place(uint64_t file_id, uint64_t stripe,
                                  const ClusterView& view) const;
  // The same, but with fewer than k+m live nodes a dead home node no spare
  // can stand in for keeps its place, marked absent, as long as at least
  // `min_shards` (k..k+m) shards land on live nodes; Unavailable otherwise.
  StatusOr<StripePlacement> Place(uint64_t file_id, uint64_t stripe, const ClusterView& view,
                                  int min_shards) const;
  // Where a shard of a stored stripe goes when the node holding it stays
  // dead: the first live node of the stripe's ranking that holds none of
  // its shards (`nodes`, the k+m where they are now, dead ones included),
  // preferring the failure domain least used by the stripe's live nodes —
  // the choice Place makes for a dead home node. Unavailable when every
  // live node already holds a shard of the stripe.
  StatusOr<NodeId> Replacement(uint64_t file_id, uint64_t stripe, std::span<const NodeId> nodes,
                               const ClusterView& view) const;

  // The m+1 metadata owners of a path (static; liveness ignored).
  std::vector<NodeId> MetadataOwners(std::string_view path, const ClusterView& view) const;
  // Where the path's record lives now: its live metadata owners (in owner
  // order), and for each dead one a stand-in, the next live node of the
  // path's ranking (the least-used failure domain first). Records are
  // written to and read from these; a stand-in holds the records written
  // while it stands in, and those re-placement copies to it.
  // `owners` (optional): the path's MetadataOwners, from the same ranking.
  std::vector<NodeId> MetadataReplicas(std::string_view path, const ClusterView& view,
                                       std::vector<NodeId>* owners = nullptr) const;
  // The first live metadata owner; Unavailable if all m+1 are down.
  StatusOr<NodeId> Sequencer(std::string_view path, const ClusterView& view) const;

 private:
  Placement(uint64_t seed, int k, int m) : seed_(seed), k_(k), m_(m) {}
  std::vector<NodeId> RankByKey(uint64_t key, const ClusterView& view) const;
  std::vector<NodeId> SpreadOverDomains(const std::vector<NodeId>& ranking,
                                        const ClusterView& view, int count) const;
  // The next live node of `ranking` not in `taken`, least-used domain of
  // `domain_uses` first; NodeId() (with *found false) when there is none.
  NodeId PickSpare(const std::vector<NodeId>& ranking, const std::set<NodeId>& taken,
                   const std::map<std::string, int>& domain_uses, const ClusterView& view,
                   bool* found) const;

  uint64_t seed_;
  int k_;
  int m_;
};

}  // namespace fern::placement
