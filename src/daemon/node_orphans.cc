// Orphan sweep (NodeOptions::orphan_sweep, Node::SweepOrphans in node.h):
// shards this node holds that no record places here are deleted, two passes
// in a row and unchanged, so that space lost to a gateway that died
// mid-put, to deletes a restarted gateway forgot, or to old copies of moved
// shards comes back without anyone having to remember it.
//
// One pass, on the loop:
//   1. the shards held here (both tiers), as they are now;
//   2. ORPHAN_CHECK to every live node: the file ids of the puts each is
//      writing (their shards land before their record) and whether a
//      re-placement pass runs there (its moved shards are named in the
//      records only when the pass ends); any node not answering, or one
//      replacing, ends the pass with nothing deleted;
//   3. every record from every live node (ListRecords): a put finished
//      before step 2 asked stored its record before it finished, so a shard
//      listed in step 1 is either in a put step 2 saw or named here;
//   4. each shard of step 1 whose version no newest record (or kept
//      version) places on this node, of no put being written, is unnamed;
//      one the previous pass found unnamed too, with the same CRC and seq,
//      is deleted (the two passes cover a record in transit, as a rename
//      between its new path and the old one's tombstone).
//   5. the same records finish renames cut short (FinishCutShortRenames in
//      node_namespace.cc).
// With more than m nodes dead a record may live only on dead nodes: the
// pass then deletes nothing.
#include <cstdio>

#include "daemon/node.h"
#include "daemon/node_internal.h"
#include "fern_wire.pb.h"

namespace fern::daemon {

using transport::InMessage;
using transport::OutMessage;
using transport::Responder;

struct Node::OrphanPass {
  std::vector<ShardMeta> held;  // step 1
  std::set<uint64_t> writing;   // step 2: file ids of puts not finished
  bool replacing = false;       // step 2: a re-placement pass runs somewhere
  std::function<void(Status)> done;
};

void Node::InstallOrphanHandler() {
  transport_->Handle(wire::ORPHAN_CHECK, [this](InMessage, Responder r) {
    wire::OrphanCheckReply reply;
    for (uint64_t id : puts_writing_) reply.add_writing(id);
    reply.set_replacing(replace_.running);
    r.Reply(OutMessage{wire::ORPHAN_CHECK, reply.SerializeAsString(), {}});
  });
}

void Node::MaybeSweepOrphans() {
  if (options_.orphan_sweep <= Duration::zero() || orphans_.running) return;
  if (orphan_next_ == TimePoint{}) {
    // Nodes started together would all sweep at once, each gathering every
    // record: the first pass is spread over a period by node id.
    const size_t n = std::max<size_t>(view_.nodes().size(), 1);
    orphan_next_ = now_ + options_.orphan_sweep + options_.orphan_sweep * (options_.id.value % n) / n;
    return;
  }
  if (now_ < orphan_next_) return;
  orphan_next_ = now_ + options_.orphan_sweep;
  SweepOrphans([](Status) {});
}

void Node::SweepOrphans(std::function<void(Status)> done) {
  if (orphans_.running) return done(FailedPreconditionError("an orphan sweep is running already"));
  orphans_.running = true;
  auto pass = std::make_shared<OrphanPass>();
  pass->done = std::move(done);
  // A pass that deletes nothing: counted, its reason kept for status.
  auto skip = [this, pass](const std::string& why) {
    orphans_.running = false;
    ++orphans_.passes;
    ++orphans_.skipped;
    orphans_.last_error = "orphan sweep: " + why + "; nothing deleted";
    pass->done(UnavailableError(orphans_.last_error));
  };
  int dead = 0;
  for (const auto& info : view_.nodes()) dead += view_.IsAlive(info.id) ? 0 : 1;
  if (dead > options_.m) {
    return skip(std::to_string(dead) + " nodes dead, more than m=" + std::to_string(options_.m) +
                ": a record may live only on them");
  }
  pass->held = data_->List();
  for (ShardMeta& meta : parity_->List()) pass->held.push_back(std::move(meta));

  AskEveryLiveNode(
      wire::ORPHAN_CHECK, {},
      [pass](const InMessage& m) {
        wire::OrphanCheckReply reply;
        if (!reply.ParseFromString(m.header)) return InvalidArgumentError("bad ORPHAN_CHECK reply");
        pass->writing.insert(reply.writing().begin(), reply.writing().end());
        pass->replacing = pass->replacing || reply.replacing();
        return Status();
      },
      [this, pass, skip](Answers a) {
        if (a.answered < a.asked) {
          return skip(std::to_string(a.asked - a.answered) + " nodes did not answer (" +
                      std::string(a.last_error.message()) + ")");
        }
        if (pass->replacing) return skip("a re-placement pass is running");
        ListRecords(
            [this, pass, skip](StatusOr<std::vector<RecordPtr>> records) {
              if (!records.ok()) return skip(std::string(records.status().message()));
              FinishOrphanPass(pass, *records);
            },
            /*everything=*/true);
      });
}

void Node::FinishOrphanPass(const std::shared_ptr<OrphanPass>& pass, const std::vector<RecordPtr>& records) {
  FinishCutShortRenames(records);
  // Every version the records keep, by file id (a put's file id is new).
  std::unordered_map<uint64_t, std::vector<RecordPtr>> layouts;
  for (const RecordPtr& rec : records) {
    if (rec->deleted() || rec->is_dir()) continue;
    for (RecordPtr& v : internal::Versions(rec)) layouts[v->file_id()].push_back(std::move(v));
  }
  auto named_here = [&](const ShardKey& key) {
    auto it = layouts.find(key.file_id);
    if (it == layouts.end()) return false;
    for (const RecordPtr& layout : it->second) {
      if (layout->version() != key.version) continue;
      const std::vector<NodeId> nodes = StripeNodes(*layout, key.stripe);
      // A layout this node cannot place counts as naming it: kept.
      if (key.index >= nodes.size() || nodes[key.index] == options_.id) return true;
    }
    return false;
  };
  decltype(orphan_candidates_) next;
  uint64_t deleted = 0, bytes = 0;
  for (const ShardMeta& meta : pass->held) {
    const ShardKey& key = meta.key;
    if (pass->writing.count(key.file_id) || named_here(key) || PswBusy(key)) continue;
    auto before = orphan_candidates_.find(key);
    if (before == orphan_candidates_.end() || before->second != std::make_pair(meta.crc32c, meta.seq)) {
      next[key] = {meta.crc32c, meta.seq};  // the next pass decides
      continue;
    }
    ShardStore* store = key.index < static_cast<uint32_t>(options_.k) ? data_ : parity_;
    {
      // Still the shard both passes saw (not rewritten since step 1)? The
      // view lets go of the slot before it is removed.
      auto now = store->Read(key, ShardStore::Check::kTrustCaller);
      if (!now.ok() || now->meta.crc32c != meta.crc32c || now->meta.seq != meta.seq) continue;
    }
    if (store->Remove(key).ok()) {
      ++deleted;
      bytes += meta.length;
    }
  }
  orphan_candidates_ = std::move(next);
  orphans_.running = false;
  ++orphans_.passes;
  orphans_.candidates = orphan_candidates_.size();
  orphans_.deleted += deleted;
  orphans_.bytes_freed += bytes;
  orphans_.last_error.clear();
  if (deleted) {
    std::fprintf(stderr,
                 "fern-ec: node %u: orphan sweep deleted %llu shards (%llu bytes) that no record places here\n",
                 options_.id.value, static_cast<unsigned long long>(deleted), static_cast<unsigned long long>(bytes));
  }
  pass->done(Status());
}

}  // namespace fern::daemon
