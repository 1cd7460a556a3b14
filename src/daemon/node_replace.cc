// Node re-placement (see NodeOptions::replace_after in node.h): the shards
// of a node that stays dead are rebuilt on spare nodes and moved in the
// records, so their stripes are whole again.
//
// Who: the first live metadata owner of each file (the node that counts
// its stripes in stripe_health and hosts its sequencer), from its own copy
// of the record. What: for the newest version and each kept one, every
// stripe with a shard on an eligible dead node and at most m shards down;
// the shard is decoded from k others (RebuildShard) and sent with SHARD_PUT
// to Placement::Replacement's node. Then the moves that landed go to every
// live owner of the path in one META_AMEND per version; an owner applies a
// move only where its record still has the shard on the dead node. A move
// that did not reach the records leaves its rebuilt shard unreferenced on
// the spare (the next pass picks the same spare and overwrites it).
#include <algorithm>
#include <cstdio>
#include <map>
#include <tuple>

#include "daemon/node.h"
#include "daemon/node_internal.h"
#include "fern_wire.pb.h"

namespace fern::daemon {

using transport::InMessage;
using transport::OutMessage;
using transport::Payload;

struct Node::ReplaceOp {
  struct Task {
    RecordPtr layout;  // the version the shard belongs to
    uint64_t stripe = 0;
    int index = 0;
    NodeId from, to;
    uint64_t length = 0;  // the shard's bytes
  };
  std::vector<Task> tasks;
  size_t next = 0;
  int in_flight = 0;
  int copies_pending = 0;  // records being copied to their stand-in owners
  std::string key;       // the view it acts on (MaybeReplace)
  uint64_t skipped = 0;  // moves dropped: their node came back
  bool planning = true;  // tasks still being listed: the pass cannot finish yet
  bool finishing = false;
  Status failure;
  internal::AmendsByVersion moved;  // moves that landed
};

void Node::MaybeReplace() {
  // Nodes first seen dead now (SetAlive, or a view set from outside) start
  // their clock; nodes alive again leave the map.
  std::string eligible;
  for (const auto& info : view_.nodes()) {
    if (view_.IsAlive(info.id)) {
      dead_since_.erase(info.id.value);
      continue;
    }
    auto [it, fresh] = dead_since_.try_emplace(info.id.value, now_);
    if (!fresh && now_ - it->second >= options_.replace_after) eligible += std::to_string(info.id.value) + ",";
  }
  if (options_.replace_after <= Duration::zero() || replace_.running || eligible.empty()) return;
  // A pass that moved shards is followed by another (a put or an update
  // racing it may have dropped a move); the view is settled only when a
  // pass finds nothing to do, and checked again every 10 minutes.
  const std::string key = std::to_string(view_.epoch()) + ":" + eligible;
  if ((key == replace_done_for_ && now_ - replace_done_at_ < std::chrono::minutes(10)) || now_ < replace_retry_at_) {
    return;
  }
  replace_.running = true;
  ++replace_.passes;
  replace_.shards_planned = 0;
  replace_.shards_sent = 0;
  replace_.bytes_sent = 0;
  replace_started_ = std::chrono::steady_clock::now();
  replace_.no_spare = 0;
  replace_.lost = 0;
  // Planned from the newest records any live node has (directories and
  // tombstones too, for the stand-ins): this node's own copy may be stale,
  // or missing files written while it was down.
  ListRecords(
      [this, eligible, key](StatusOr<std::vector<RecordPtr>> records) {
        auto op = std::make_shared<ReplaceOp>();
        op->key = key;
        if (!records.ok()) {
          op->failure = records.status().WithContext("re-placement");
        } else {
          PlanReplace(op, *records);
          if (!op->tasks.empty()) {
            std::fprintf(stderr, "fern-ec: node %u: re-placement pass %llu: %zu shards of dead nodes %s to rebuild\n",
                         options_.id.value, static_cast<unsigned long long>(replace_.passes), op->tasks.size(),
                         eligible.substr(0, eligible.size() - 1).c_str());
          }
        }
        op->planning = false;
        ReplaceNext(op);
      },
      /*everything=*/true);
}

void Node::PlanReplace(const std::shared_ptr<ReplaceOp>& op, const std::vector<RecordPtr>& records) {
  const int k = options_.k, m = options_.m, n = k + m;
  auto is_eligible = [&](NodeId id) {
    auto it = dead_since_.find(id.value);
    return !view_.IsAlive(id) && it != dead_since_.end() && now_ - it->second >= options_.replace_after;
  };
  for (const RecordPtr& rec : records) {
    const std::string& path = rec->path();
    auto first = placement_.Sequencer(path, view_);
    if (!first.ok() || *first != options_.id) continue;
    // This node owns the path: keep the newest record (it may have missed
    // writes while it was down).
    if (auto mine = records_.find(path); mine == records_.end() || internal::Newer(*rec, *mine->second)) {
      InstallRecord(std::make_unique<wire::FileRecord>(*rec), [](Status) {});
    }
    // An owner of the record stays dead: its stand-in gets a copy (of a
    // directory or a tombstone too), so m more nodes may fail without
    // losing the record.
    for (NodeId owner : placement_.MetadataOwners(path, view_)) {
      if (!is_eligible(owner)) continue;
      ++op->copies_pending;
      ++replace_.records_copied;
      StoreRecord(*rec, [this, op, path](Status s) {
        if (!s.ok() && op->failure.ok()) op->failure = s.WithContext("copy the record of " + path + " to its stand-in owners");
        --op->copies_pending;
        ReplaceNext(op);
      });
      break;
    }
    if (!internal::Live(*rec) || rec->is_dir()) continue;
    for (const RecordPtr& layout : internal::Versions(rec)) {
      // Only what this node's coder and geometry can decode (as reads).
      if (static_cast<int>(layout->k()) != k || static_cast<int>(layout->m()) != m ||
          layout->shard_size() != options_.shard_size || layout->technique() != coder_->technique()) {
        continue;
      }
      const uint64_t stripes = geometry_.StripeCount(layout->size());
      for (uint64_t s = 0; s < stripes; ++s) {
        std::vector<NodeId> nodes = StripeNodes(*layout, s);
        if (static_cast<int>(nodes.size()) != n) continue;
        const int down = ShardsDown(*layout, s);
        if (down == 0) continue;
        if (down > m) {
          ++replace_.lost;
          continue;
        }
        for (int i = 0; i < n; ++i) {
          if (!is_eligible(nodes[i])) continue;
          auto to = placement_.Replacement(layout->file_id(), s, nodes, view_);
          if (!to.ok()) {
            ++replace_.no_spare;
            break;
          }
          op->tasks.push_back({layout, s, i, nodes[i], *to, geometry_.StripeShardLen(layout->size(), s)});
          nodes[i] = *to;  // a second dead shard of the stripe goes elsewhere
        }
      }
    }
  }
  replace_.shards_planned = op->tasks.size();
}

void Node::ReplaceNext(const std::shared_ptr<ReplaceOp>& op) {
  while (op->next < op->tasks.size() && op->in_flight < kRepairWindow) {
    ++op->in_flight;
    ReplaceShard(op, op->next++);
  }
  if (op->in_flight == 0 && op->next == op->tasks.size() && op->copies_pending == 0 && !op->planning &&
      !op->finishing) {
    op->finishing = true;
    FinishReplace(op);
  }
}

void Node::ReplaceShard(const std::shared_ptr<ReplaceOp>& op, size_t task) {
  const ReplaceOp::Task& t = op->tasks[task];
  auto fail = [this, op, task](const Status& s) {
    const ReplaceOp::Task& t = op->tasks[task];
    ++replace_.shards_failed;
    if (op->failure.ok()) {
      op->failure = UnavailableError("move shard " + std::to_string(t.index) + " of stripe " +
                                     std::to_string(t.stripe) + " of " + t.layout->path() + " from " +
                                     t.from.ToString() + " to " + t.to.ToString() + ": " + std::string(s.message()));
    }
    --op->in_flight;
    ReplaceNext(op);
  };
  // Its node came back (with its shards, or repair rebuilds them there):
  // the stripe is whole where it is; moving the shard now could point the
  // record at bytes an in-place update has since changed on that node.
  auto skip_if_back = [this, op, task]() {
    if (!view_.IsAlive(op->tasks[task].from)) return false;
    ++op->skipped;
    ++replace_.skipped;
    --op->in_flight;
    ReplaceNext(op);
    return true;
  };
  if (skip_if_back()) return;
  RebuildShard(t.layout, t.stripe, t.index, [this, op, task, fail, skip_if_back](StatusOr<RebuiltShard> r) {
    if (skip_if_back()) return;
    if (!r.ok()) return fail(r.status());
    const ReplaceOp::Task& t = op->tasks[task];
    wire::ShardPut put;
    internal::SetId(put.mutable_id(), t.layout->file_id(), t.layout->version(), t.stripe, t.index);
    put.set_length(r->bytes->size());
    put.set_crc32c(r->crc32c);
    put.set_seq(r->seq);
    put.set_epoch(r->epoch);
    const bool parity = t.index >= options_.k;
    put.set_durable(parity);
    if (parity) {
      for (uint32_t c : r->data_crcs) put.add_stripe_crc32c(c);
    }
    auto bytes = r->bytes;
    transport_->Call(t.to,
                     OutMessage{wire::SHARD_PUT, put.SerializeAsString(),
                                Payload::View({bytes->data(), bytes->size()}, bytes)},
                     {options_.rpc_timeout, nullptr}, [this, op, task, fail](StatusOr<InMessage> reply) {
                       if (!reply.ok()) return fail(reply.status());
                       const ReplaceOp::Task& t = op->tasks[task];
                       op->moved.Add(*t.layout, t.stripe, t.index, t.from, t.to);
                       ++replace_.shards_sent;
                       replace_.bytes_sent += t.length;
                       --op->in_flight;
                       ReplaceNext(op);
                     });
  });
}

void Node::FinishReplace(const std::shared_ptr<ReplaceOp>& op) {
  struct Amends {
    int pending = 1;
    uint64_t moved = 0;
    Status failure;
  };
  auto am = std::make_shared<Amends>();
  auto finish_one = [this, op, am]() {
    if (--am->pending > 0) return;
    replace_.shards_moved += am->moved;
    Status s = op->failure.ok() ? am->failure : op->failure;
    replace_.running = false;
    replace_.last_pass_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - replace_started_).count();
    if (!s.ok()) {
      replace_.last_error = std::string(s.message());
      replace_retry_at_ = now_ + replace_backoff_;
      replace_backoff_ = std::min<Duration>(replace_backoff_ * 2, std::chrono::seconds(60));
    } else if (!op->tasks.empty()) {
      replace_retry_at_ = now_ + std::chrono::seconds(5);  // a follow-up pass checks nothing was dropped
      replace_backoff_ = std::chrono::seconds(5);
    } else {
      replace_done_for_ = op->key;
      replace_done_at_ = now_;
      replace_backoff_ = std::chrono::seconds(5);
    }
    if (!op->tasks.empty()) {
      std::fprintf(stderr, "fern-ec: node %u: re-placement pass %llu: %llu of %zu shards moved, %llu skipped (node back)%s%s\n",
                   options_.id.value, static_cast<unsigned long long>(replace_.passes),
                   static_cast<unsigned long long>(am->moved), op->tasks.size(),
                   static_cast<unsigned long long>(op->skipped), s.ok() ? "" : ": ", s.ok() ? "" : s.ToString().c_str());
    }
  };
  for (wire::MetaAmend& amend : op->moved.Take()) {
    // A move whose node is back meanwhile is dropped: its copy is the one
    // the stripe's updates reach.
    auto* moves = amend.mutable_moves();
    const auto back = std::remove_if(moves->begin(), moves->end(),
                                     [&](const wire::ShardMove& mv) { return view_.IsAlive(NodeId(mv.from_node())); });
    const int dropped = static_cast<int>(moves->end() - back);
    op->skipped += dropped;
    replace_.skipped += dropped;
    moves->erase(back, moves->end());
    if (amend.moves_size() == 0) continue;
    // Replicas that are down now get the moves from a later copy of the
    // record (re-placement copies records to stand-ins), or keep pointing
    // at the dead node (read degraded) until the follow-up pass.
    auto shared = std::make_shared<const wire::MetaAmend>(std::move(amend));
    ++am->pending;
    StoreAmend(shared, [this, am, finish_one, amend = shared](Status s) {
      if (!s.ok()) {
        if (am->failure.ok()) am->failure = s;
      } else {
        am->moved += amend->moves_size();
        // What the dead nodes still hold of these goes when they are back.
        for (const auto& mv : amend->moves()) {
          moved_away_[mv.from_node()].push_back(
              {amend->path(), ShardKey{amend->file_id(), amend->version(), mv.stripe(), mv.index()}});
        }
      }
      finish_one();
    });
  }
  finish_one();
}

void Node::StoreAmend(std::shared_ptr<const wire::MetaAmend> amend, std::function<void(Status)> done) {
  AmendHostedSeq(*amend);  // the sequencers hosted here keep their own copies
  const std::vector<NodeId> replicas = placement_.MetadataReplicas(amend->path(), view_);
  if (replicas.empty()) return done(UnavailableError(amend->path() + ": no metadata owner alive to record its changes"));
  struct Answers {
    size_t left;
    Status failure;
    std::function<void(Status)> done;
  };
  auto a = std::make_shared<Answers>(Answers{replicas.size(), Status(), std::move(done)});
  const std::string body = amend->SerializeAsString();
  for (NodeId replica : replicas) {
    transport_->Call(replica, OutMessage{wire::META_AMEND, body, {}}, {options_.rpc_timeout, nullptr},
                     [a, amend](StatusOr<InMessage> r) {
                       // A stand-in without that version (it stood in after the
                       // record was written) has nothing to change.
                       if (!r.ok() && r.status().code() != StatusCode::kNotFound && a->failure.ok()) {
                         a->failure = r.status().WithContext("amend the record of " + amend->path());
                       }
                       if (--a->left == 0) a->done(a->failure);
                     });
  }
}

void Node::DeleteMovedAway(NodeId peer) {
  auto it = moved_away_.find(peer.value);
  if (it == moved_away_.end()) return;
  std::map<std::string, std::vector<ShardKey>> by_path;
  for (auto& [path, key] : it->second) by_path[path].push_back(key);
  moved_away_.erase(it);
  for (auto& [p, keys] : by_path) {
    const std::string path = p;
    LookupRecord(path, [this, peer, path, keys = std::move(keys)](StatusOr<RecordPtr> rec) {
      if (!rec.ok() && rec.status().code() != StatusCode::kNotFound) {
        // No owner answered: ask again at the next tick.
        for (const ShardKey& key : keys) moved_away_[peer.value].push_back({path, key});
        return;
      }
      for (const ShardKey& key : keys) {
        if (!view_.IsAlive(peer)) {
          moved_away_[peer.value].push_back({path, key});  // dead again: when it is back
          continue;
        }
        const wire::FileRecord* layout =
            rec.ok() && internal::Live(**rec) ? internal::FindVersion(**rec, key.file_id, key.version) : nullptr;
        // Deleted only where the newest record names another node, alive,
        // for that shard. Not when it names this one again (a move lost),
        // nor when that node is down too (a later pass may move the shard
        // back here, and this delete could land after it), nor when the
        // version or the path is gone (renamed: another path's record may
        // still name it here): those stay, orphans at worst.
        if (layout == nullptr) continue;
        const std::vector<NodeId> nodes = StripeNodes(*layout, key.stripe);
        if (key.index >= nodes.size() || nodes[key.index] == peer || !view_.IsAlive(nodes[key.index])) continue;
        DeleteShard(peer, key, [this](Status s) {
          if (s.ok()) ++replace_.orphans_deleted;
        });
      }
    });
  }
}

StatusOr<int> Node::AmendRecord(wire::FileRecord* rec, const wire::MetaAmend& amend) const {
  wire::FileRecord* layout = internal::FindVersion(rec, amend.file_id(), amend.version());
  if (layout == nullptr || rec->deleted()) {
    return NotFoundError(amend.path() + ": no version " + std::to_string(amend.version()) + " of file " +
                         std::to_string(amend.file_id()) + " here");
  }
  const uint64_t n = layout->k() + layout->m();
  const uint64_t stripes = geometry_.StripeCount(layout->size());
  for (const auto& mv : amend.moves()) {
    if (mv.index() >= n || mv.stripe() >= stripes || view_.Find(NodeId(mv.to_node())) == nullptr) {
      return InvalidArgumentError("move of shard " + std::to_string(mv.index()) + " of stripe " +
                                  std::to_string(mv.stripe()) + " to node " + std::to_string(mv.to_node()) +
                                  " is outside " + amend.path() + "'s layout or the cluster");
    }
  }
  int applied = 0;
  for (const auto& mv : amend.moves()) {
    if (mv.filled()) {
      // An absent shard its node has written: the stripe is whole there.
      for (auto& e : *layout->mutable_moved()) {
        if (e.stripe() != mv.stripe() || !(e.absent() >> mv.index() & 1)) continue;
        if (mv.index() >= static_cast<uint32_t>(e.nodes_size()) || e.nodes(static_cast<int>(mv.index())) != mv.from_node()) {
          continue;
        }
        e.set_absent(e.absent() & ~(1u << mv.index()));
        ++applied;
      }
      continue;
    }
    // The shard's node is alive (back, or never dead in this view): it
    // stays the holder; its copy is the one updates reach.
    if (view_.IsAlive(NodeId(mv.from_node()))) continue;
    std::vector<NodeId> nodes = StripeNodes(*layout, mv.stripe());
    if (nodes.size() != n || nodes[mv.index()] != NodeId(mv.from_node())) continue;
    if (std::count(nodes.begin(), nodes.end(), NodeId(mv.to_node())) > 0) continue;  // never two shards on one node
    nodes[mv.index()] = NodeId(mv.to_node());
    wire::StripeNodes* entry = nullptr;
    for (auto& e : *layout->mutable_moved()) {
      if (e.stripe() == mv.stripe()) entry = &e;
    }
    if (entry == nullptr) {
      entry = layout->add_moved();
      entry->set_stripe(mv.stripe());
    }
    entry->clear_nodes();
    for (NodeId id : nodes) entry->add_nodes(id.value);
    entry->set_absent(entry->absent() & ~(1u << mv.index()));  // rebuilt on its new node
    ++applied;
  }
  return applied;
}

}  // namespace fern::daemon
