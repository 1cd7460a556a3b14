#include "placement/placement.h"

#include <algorithm>
#include <map>
#include <set>

namespace fern::placement {
namespace {

// A node with no domain is a domain of its own.
std::string DomainOf(const NodeInfo& n) {
  return n.domain.empty() ? "node:" + std::to_string(n.id.value) : n.domain;
}

}  // namespace

uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

uint64_t HashPath(std::string_view path) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : path) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return Mix64(h);
}

StatusOr<ClusterView> ClusterView::Make(std::vector<NodeInfo> nodes, uint64_t epoch) {
  std::sort(nodes.begin(), nodes.end(),
            [](const NodeInfo& a, const NodeInfo& b) { return a.id < b.id; });
  for (size_t i = 1; i < nodes.size(); ++i) {
    if (nodes[i].id == nodes[i - 1].id) {
      return InvalidArgumentError("cluster view lists " + nodes[i].id.ToString() + " twice");
    }
  }
  ClusterView v;
  v.nodes_ = std::move(nodes);
  v.epoch_ = epoch;
  return v;
}

const NodeInfo* ClusterView::Find(NodeId id) const {
  auto it = std::lower_bound(nodes_.begin(), nodes_.end(), id,
                             [](const NodeInfo& n, NodeId x) { return n.id < x; });
  return it != nodes_.end() && it->id == id ? &*it : nullptr;
}

bool ClusterView::IsAlive(NodeId id) const {
  const NodeInfo* n = Find(id);
  return n != nullptr && n->alive;
}

int ClusterView::live_count() const {
  return static_cast<int>(std::count_if(nodes_.begin(), nodes_.end(),
                                        [](const NodeInfo& n) { return n.alive; }));
}

ClusterView ClusterView::WithAlive(NodeId id, bool alive) const {
  ClusterView v = *this;
  for (auto& n : v.nodes_) {
    if (n.id == id) n.alive = alive;
  }
  ++v.epoch_;
  return v;
}

bool StripePlacement::degraded() const {
  return std::find(moved.begin(), moved.end(), true) != moved.end();
}

int StripePlacement::present() const {
  return static_cast<int>(shards.size()) - static_cast<int>(std::count(absent.begin(), absent.end(), true));
}

StatusOr<Placement> Placement::Make(uint64_t seed, int k, int m) {
  if (k < 1 || m < 0 || k + m > 32) {
    return InvalidArgumentError("placement needs k >= 1, m >= 0, k+m <= 32 (k=" +
                                std::to_string(k) + " m=" + std::to_string(m) + ")");
  }
  return Placement(seed, k, m);
}

std::vector<NodeId> Placement::RankByKey(uint64_t key, const ClusterView& view) const {
  std::vector<std::pair<uint64_t, NodeId>> w;
  w.reserve(view.nodes().size());
  for (const auto& n : view.nodes()) w.emplace_back(Mix64(key ^ n.id.value), n.id);
  std::sort(w.begin(), w.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<NodeId> out;
  out.reserve(w.size());
  for (auto& [weight, id] : w) out.push_back(id);
  return out;
}

std::vector<NodeId> Placement::Ranking(uint64_t file_id, uint64_t stripe,
                                       const ClusterView& view) const {
  return RankByKey(Mix64(Mix64(seed_ ^ Mix64(file_id)) ^ stripe), view);
}

// Picks `count` nodes in ranking order, in passes: pass p takes a node only if
// its domain has been used p times so far. With enough domains every pick has
// a distinct domain; otherwise domains are reused as evenly as possible.
std::vector<NodeId> Placement::SpreadOverDomains(const std::vector<NodeId>& ranking,
                                                 const ClusterView& view, int count) const {
  std::vector<NodeId> picked;
  std::vector<bool> taken(ranking.size(), false);
  std::map<std::string, int> uses;
  for (int pass = 0; static_cast<int>(picked.size()) < count; ++pass) {
    bool any = false;
    for (size_t i = 0; i < ranking.size() && static_cast<int>(picked.size()) < count; ++i) {
      if (taken[i]) continue;
      const std::string d = DomainOf(*view.Find(ranking[i]));
      if (uses[d] != pass) continue;
      taken[i] = true;
      ++uses[d];
      picked.push_back(ranking[i]);
      any = true;
    }
    if (!any && pass > static_cast<int>(ranking.size())) break;
  }
  return picked;
}

StatusOr<std::vector<NodeId>> Placement::Home(uint64_t file_id, uint64_t stripe,
                                              const ClusterView& view) const {
  const int n = k_ + m_;
  if (static_cast<int>(view.nodes().size()) < n) {
    return UnavailableError("placement needs " + std::to_string(n) + " nodes for k=" +
                            std::to_string(k_) + " m=" + std::to_string(m_) + ", the view has " +
                            std::to_string(view.nodes().size()));
  }
  return SpreadOverDomains(Ranking(file_id, stripe, view), view, n);
}

StatusOr<StripePlacement> Placement::Place(uint64_t file_id, uint64_t stripe,
                                           const ClusterView& view) const {
  return Place(file_id, stripe, view, k_ + m_);
}

StatusOr<StripePlacement> Placement::Place(uint64_t file_id, uint64_t stripe, const ClusterView& view,
                                           int min_shards) const {
  const int n = k_ + m_;
  min_shards = std::clamp(min_shards, k_, n);
  if (view.live_count() < min_shards) {
    return UnavailableError("placement needs " + std::to_string(min_shards) + " live nodes, " +
                            std::to_string(view.live_count()) + " of " +
                            std::to_string(view.nodes().size()) + " are alive");
  }
  const std::vector<NodeId> ranking = Ranking(file_id, stripe, view);
  FERN_ASSIGN_OR_RETURN(std::vector<NodeId> home, Home(file_id, stripe, view));
  StripePlacement p;
  p.shards = home;
  p.moved.assign(n, false);
  p.absent.assign(n, false);
  std::set<NodeId> in_stripe;
  std::map<std::string, int> domain_uses;
  for (NodeId id : home) {
    if (view.IsAlive(id)) {
      in_stripe.insert(id);
      ++domain_uses[DomainOf(*view.Find(id))];
    }
  }
  for (int i = 0; i < n; ++i) {
    if (view.IsAlive(home[i])) continue;
    bool found = false;
    const NodeId best = PickSpare(ranking, in_stripe, domain_uses, view, &found);
    if (!found) {
      p.absent[i] = true;  // stays at its dead home: written when rebuilt there
      continue;
    }
    p.shards[i] = best;
    p.moved[i] = true;
    in_stripe.insert(best);
    ++domain_uses[DomainOf(*view.Find(best))];
  }
  return p;
}

NodeId Placement::PickSpare(const std::vector<NodeId>& ranking, const std::set<NodeId>& taken,
                            const std::map<std::string, int>& domain_uses, const ClusterView& view,
                            bool* found) const {
  NodeId best;
  int best_uses = -1;
  for (NodeId cand : ranking) {
    if (!view.IsAlive(cand) || taken.count(cand)) continue;
    auto it = domain_uses.find(DomainOf(*view.Find(cand)));
    const int u = it == domain_uses.end() ? 0 : it->second;
    if (best_uses < 0 || u < best_uses) {
      best = cand;
      best_uses = u;
      if (u == 0) break;
    }
  }
  *found = best_uses >= 0;
  return best;
}

StatusOr<NodeId> Placement::Replacement(uint64_t file_id, uint64_t stripe, std::span<const NodeId> nodes,
                                        const ClusterView& view) const {
  std::set<NodeId> taken(nodes.begin(), nodes.end());
  std::map<std::string, int> domain_uses;
  for (NodeId id : nodes) {
    if (view.IsAlive(id)) ++domain_uses[DomainOf(*view.Find(id))];
  }
  bool found = false;
  const NodeId best = PickSpare(Ranking(file_id, stripe, view), taken, domain_uses, view, &found);
  if (!found) {
    return UnavailableError("stripe " + std::to_string(stripe) + ": every live node (" +
                            std::to_string(view.live_count()) + ") already holds one of its shards");
  }
  return best;
}

std::vector<NodeId> Placement::MetadataOwners(std::string_view path,
                                              const ClusterView& view) const {
  std::vector<NodeId> r = RankByKey(Mix64(seed_ ^ HashPath(path)), view);
  const int owners = std::min<int>(m_ + 1, static_cast<int>(r.size()));
  return SpreadOverDomains(r, view, owners);
}

std::vector<NodeId> Placement::MetadataReplicas(std::string_view path, const ClusterView& view,
                                                std::vector<NodeId>* owners) const {
  const std::vector<NodeId> ranking = RankByKey(Mix64(seed_ ^ HashPath(path)), view);
  const std::vector<NodeId> home =
      SpreadOverDomains(ranking, view, std::min<int>(m_ + 1, static_cast<int>(ranking.size())));
  if (owners) *owners = home;
  std::vector<NodeId> out;
  std::set<NodeId> taken(home.begin(), home.end());
  std::map<std::string, int> uses;
  for (NodeId id : home) {
    if (!view.IsAlive(id)) continue;
    out.push_back(id);
    ++uses[DomainOf(*view.Find(id))];
  }
  while (out.size() < home.size()) {
    bool found = false;
    const NodeId next = PickSpare(ranking, taken, uses, view, &found);
    if (!found) break;
    out.push_back(next);
    taken.insert(next);
    ++uses[DomainOf(*view.Find(next))];
  }
  return out;
}

StatusOr<NodeId> Placement::Sequencer(std::string_view path, const ClusterView& view) const {
  for (NodeId id : MetadataOwners(path, view)) {
    if (view.IsAlive(id)) return id;
  }
  return UnavailableError("all " + std::to_string(m_ + 1) + " metadata owners of " +
                          std::string(path) + " are down");
}

}  // namespace fern::placement
