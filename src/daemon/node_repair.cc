// Node::Repair (see node.h): rebuild the shards this node should hold but
// does not, from k of the other shards of each stripe.
#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <tuple>

#include "daemon/node.h"
#include "daemon/node_internal.h"
#include "ec/crc32c.h"
#include "fern_wire.pb.h"

namespace fern::daemon {

using transport::InMessage;
using transport::OutMessage;

struct Node::RepairOp {
  struct Task {
    std::shared_ptr<wire::FileRecord> layout;  // the version the shard belongs to (path set)
    uint64_t stripe = 0;
    int index = 0;
    bool absent = false;  // the record says it was never written (a degraded write)
  };
  std::vector<Task> tasks;
  size_t next = 0;
  int in_flight = 0;
  bool finishing = false;
  Status failure;
  // Absent shards now here, per (path, file_id, version): the records'
  // absent bits to clear (META_AMEND with filled moves) before the pass ends.
  internal::AmendsByVersion fills;
  void Filled(const Task& t, NodeId self) { fills.Add(*t.layout, t.stripe, t.index, self, self)->set_filled(true); }
  std::function<void(Status)> done;
};

// Every live path's newest full record, from every live node (with
// `everything`, directories and tombstones too).
void Node::ListRecords(std::function<void(StatusOr<std::vector<RecordPtr>>)> done, bool everything) {
  wire::MetaList list;
  list.set_dir("/");
  list.set_full(true);
  GatherNewest(list, [everything, done = std::move(done)](NewestRecords newest, Answers a) {
    // Every live node must answer: a missing one may own the only
    // record of some path.
    if (a.answered < a.asked) {
      return done(UnavailableError("list records: " + std::to_string(a.asked - a.answered) +
                                   " nodes did not answer: " + std::string(a.last_error.message())));
    }
    std::vector<RecordPtr> live;
    for (auto& [path, r] : newest) {
      if (everything || (internal::Live(*r) && !r->is_dir())) live.push_back(r);
    }
    done(std::move(live));
  });
}

void Node::Repair(std::function<void(Status)> done) {
  if (repair_.running) return done(AbortedError("a repair pass is already running"));
  repair_.running = true;
  ++repair_.passes;
  auto op = std::make_shared<RepairOp>();
  op->done = [this, done = std::move(done)](Status s) {
    repair_.running = false;
    if (!s.ok()) repair_.last_error = std::string(s.message());
    done(s);
  };
  ListRecords(
      [this, op](StatusOr<std::vector<RecordPtr>> records) {
    if (!records.ok()) return op->done(records.status().WithContext("repair"));
    const int k = options_.k, n = k + options_.m;
    for (const RecordPtr& rec : *records) {
      // A path this node owns whose newest record it missed (it was down):
      // it keeps that one from now on.
      const auto owners = placement_.MetadataOwners(rec->path(), view_);
      auto mine = records_.find(rec->path());
      if (std::count(owners.begin(), owners.end(), options_.id) > 0 &&
          (mine == records_.end() || internal::Newer(*rec, *mine->second))) {
        InstallRecord(std::make_unique<wire::FileRecord>(*rec), [](Status) {});
      }
      if (!internal::Live(*rec) || rec->is_dir()) continue;
      for (const RecordPtr& layout : internal::Versions(rec)) {
        const uint64_t stripes = geometry_.StripeCount(layout->size());
        for (uint64_t s = 0; s < stripes; ++s) {
          const std::vector<NodeId> nodes = StripeNodes(*layout, s);
          const uint32_t absent = AbsentMask(*layout, s);
          for (int i = 0; i < n && i < static_cast<int>(nodes.size()); ++i) {
            if (nodes[i] != options_.id) continue;
            ++repair_.shards_checked;
            ShardStore* store = i < k ? data_ : parity_;
            const ShardKey key{layout->file_id(), layout->version(), s, static_cast<uint32_t>(i)};
            const RepairOp::Task task{layout, s, i, (absent >> i & 1) != 0};
            if (store->Read(key, ShardStore::Check::kVerify).ok()) {
              if (task.absent) op->Filled(task, options_.id);  // written, its bit not yet cleared
              continue;
            }
            ++repair_.shards_missing;
            op->tasks.push_back(task);
          }
        }
      }
    }
    RepairNext(op);
      },
      /*everything=*/true);
}

void Node::RepairNext(const std::shared_ptr<RepairOp>& op) {
  while (op->next < op->tasks.size() && op->in_flight < kRepairWindow) {
    ++op->in_flight;
    RepairShard(op, op->next++);
  }
  if (op->in_flight > 0 || op->next < op->tasks.size() || op->finishing) return;
  op->finishing = true;
  // Absent shards written: every replica of the record clears their bits.
  auto pending = std::make_shared<int>(1);
  auto one_done = [op, pending]() {
    if (--*pending == 0) op->done(op->failure);
  };
  // Fills a replica missed in an earlier pass go again: the newest record
  // (which this pass planned from) may already have them.
  std::vector<wire::MetaAmend> amends = op->fills.Take();
  for (auto& a : unsent_fills_) amends.push_back(std::move(a));
  unsent_fills_.clear();
  for (auto& a : amends) {
    auto amend = std::make_shared<const wire::MetaAmend>(std::move(a));
    ++*pending;
    StoreAmend(amend, [this, op, one_done, amend](Status s) {
      if (!s.ok()) {
        if (op->failure.ok()) op->failure = s.WithContext("record the shards written");
        unsent_fills_.push_back(*amend);  // the next pass sends it again
      }
      one_done();
    });
  }
  one_done();
}

void Node::RepairShard(const std::shared_ptr<RepairOp>& op, size_t task) {
  const RepairOp::Task& t = op->tasks[task];
  RebuildShard(t.layout, t.stripe, t.index, [this, op, task](StatusOr<RebuiltShard> r) {
    const RepairOp::Task& t = op->tasks[task];
    const int k = options_.k;
    Status s = r.status();
    if (r.ok()) {
      ShardStore* store = t.index < k ? data_ : parity_;
      const ShardKey key{t.layout->file_id(), t.layout->version(), t.stripe, static_cast<uint32_t>(t.index)};
      const uint64_t len = r->bytes->size();
      auto res = store->Reserve(key, len);
      if (!res.ok()) {
        s = res.status();
      } else {
        std::memcpy((*res)->data().data(), r->bytes->data(), len);
        DropPswShard(key);  // an update state would write to the old slot
        ShardMeta meta{key, len, r->seq, r->epoch, r->crc32c};
        if (t.index >= k) meta.stripe_crcs = r->data_crcs;
        s = store->Commit(std::move(*res), meta);
      }
    }
    if (s.ok()) {
      ++repair_.shards_restored;
      if (t.absent) op->Filled(t, options_.id);
    } else {
      ++repair_.shards_failed;
      if (op->failure.ok()) {
        op->failure = UnavailableError("repair shard " + std::to_string(t.index) + " of stripe " +
                                       std::to_string(t.stripe) + " of file " +
                                       std::to_string(t.layout->file_id()) + ": " + std::string(s.message()));
      }
    }
    --op->in_flight;
    RepairNext(op);
  });
}

void Node::RebuildShard(const RecordPtr& layout, uint64_t stripe, int index,
                        std::function<void(StatusOr<RebuiltShard>)> done) {
  struct Gather {
    std::vector<std::span<uint8_t>> shards;
    std::vector<std::shared_ptr<void>> owners;
    std::vector<uint64_t> seqs, epochs;  // PSW: each shard's last update
    internal::ShardChecks checks;
    ec::ShardSet present;
    int pending = 1;
  };
  const int k = options_.k, n = k + options_.m;
  const uint64_t len = geometry_.StripeShardLen(layout->size(), stripe);
  const std::vector<NodeId> nodes = StripeNodes(*layout, stripe);
  auto g = std::make_shared<Gather>();
  g->shards.resize(n);
  g->owners.resize(n);
  g->seqs.assign(n, 0);
  g->epochs.assign(n, 0);
  g->checks = internal::ShardChecks(n);
  auto finish = [this, g, len, k, n, index, done = std::move(done)]() {
    if (--g->pending > 0) return;
    // Decode only from shards holding the same update (an in-place update
    // may be between its shards; its round rebuilds this one if it must).
    const ec::ShardSet same = internal::SameSeqShards(g->present, g->seqs, k);
    if (g->present.size() < k) {
      return done(UnavailableError("only " + std::to_string(g->present.size()) + " other shards reachable"));
    }
    if (same.size() < k) return done(UnavailableError("the other shards are at different update seqs"));
    RebuiltShard out;
    for (int i = 0; i < n; ++i) {
      if (!same.contains(i)) continue;
      out.seq = g->seqs[i];
      out.epoch = std::max(out.epoch, g->epochs[i]);
    }
    out.bytes = std::make_shared<std::vector<uint8_t>>(len);
    std::vector<uint8_t*> ptrs(n, nullptr);
    for (int i = 0; i < n; ++i) {
      if (g->present.contains(i)) ptrs[i] = g->shards[i].data();
    }
    ptrs[index] = out.bytes->data();
    ec::ShardSet want;
    want.insert(index);
    if (Status s = CheckedDecode(ptrs, same, want, len, g->checks, &out.data_crcs); !s.ok()) return done(s);
    out.crc32c = ec::Crc32c(*out.bytes);
    done(std::move(out));
  };
  for (int i = 0; i < n && i < static_cast<int>(nodes.size()); ++i) {
    if (i == index || !view_.IsAlive(nodes[i])) continue;
    wire::ShardGet get;
    auto* id = get.mutable_id();
    id->set_file_id(layout->file_id());
    id->set_version(layout->version());
    id->set_stripe(stripe);
    id->set_index(i);
    ++g->pending;
    transport_->Call(nodes[i], OutMessage{wire::SHARD_GET, get.SerializeAsString(), {}},
                     {options_.rpc_timeout, nullptr}, [g, i, len, finish](StatusOr<InMessage> r) {
                       wire::ShardGetReply reply;
                       if (r.ok() && reply.ParseFromString(r->header) && r->payload.size() == len &&
                           reply.length() == len && ec::Crc32c(r->payload) == reply.crc32c()) {
                         g->shards[i] = r->payload;
                         g->owners[i] = r->payload_owner;
                         g->seqs[i] = reply.seq();
                         g->epochs[i] = reply.epoch();
                         g->checks.Take(i, reply);
                         g->present.insert(i);
                       }
                       finish();
                     });
  }
  finish();
}

}  // namespace fern::daemon
