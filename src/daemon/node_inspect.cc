// Node::Inspect (see node.h): where every shard of a file's newest version
// lives and whether it is intact, asked of the nodes that hold them.
#include "daemon/node.h"
#include "daemon/node_internal.h"
#include "fern_wire.pb.h"

namespace fern::daemon {

using transport::InMessage;
using transport::OutMessage;

struct Node::InspectOp {
  wire::FileRecord record;
  Inspection result;
  uint64_t next = 0;       // next stripe to ask about
  uint64_t finished = 0;   // stripes fully answered
  int in_flight = 0;       // stripes asked, not yet fully answered
  std::vector<int> pending;  // per stripe: shard answers still due
  std::function<void(StatusOr<Inspection>)> done;
};

void Node::Inspect(const std::string& path, const Caller& caller,
                   std::function<void(StatusOr<Inspection>)> done) {
  LookupRecord(path, [this, path, caller, done = std::move(done)](StatusOr<RecordPtr> rec) mutable {
    if (!rec.ok()) return done(rec.status());
    const auto& r = **rec;
    if (Status s = internal::CheckReadableFile(r, path, caller, "inspect"); !s.ok()) return done(s);
    auto op = std::make_shared<InspectOp>();
    op->record = r;
    op->done = std::move(done);
    Inspection& out = op->result;
    out.path = path;
    out.info = {r.version(), r.size(), r.uid(), r.gid(), r.mode(), r.mtime_ns()};
    out.file_id = r.file_id();
    out.k = static_cast<int>(r.k());
    out.m = static_cast<int>(r.m());
    out.shard_size = r.shard_size();
    out.technique = r.technique();
    if (auto seq = placement_.Sequencer(path, view_); seq.ok()) out.sequencer = *seq;
    out.psw_epoch = r.psw_epoch();
    const uint64_t stripes = geometry_.StripeCount(r.size());
    out.stripes.resize(stripes);
    op->pending.assign(stripes, 0);
    if (stripes == 0) return op->done(std::move(op->result));
    InspectNext(op);
  });
}

void Node::InspectNext(const std::shared_ptr<InspectOp>& op) {
  const uint64_t stripes = op->result.stripes.size();
  while (op->in_flight < kInspectWindow && op->next < stripes) {
    const uint64_t stripe = op->next++;
    ++op->in_flight;
    StripeReport& sr = op->result.stripes[stripe];
    sr.stripe = stripe;
    const auto nodes = StripeNodes(op->record, stripe);
    const uint32_t absent = AbsentMask(op->record, stripe);
    const int n = op->result.k + op->result.m;
    sr.shards.resize(n);
    op->pending[stripe] = n;
    auto answered = [this, op, stripe] {
      if (--op->pending[stripe] > 0) return;
      --op->in_flight;
      if (++op->finished == op->result.stripes.size()) return op->done(std::move(op->result));
      InspectNext(op);
    };
    for (int i = 0; i < n; ++i) {
      ShardReport& shard = sr.shards[i];
      shard.index = static_cast<uint32_t>(i);
      if (i >= static_cast<int>(nodes.size())) {
        shard.error = "no placement";
        answered();
        continue;
      }
      shard.node = nodes[i];
      if (!view_.IsAlive(nodes[i])) {
        shard.error = nodes[i].ToString() + " is down";
        answered();
        continue;
      }
      wire::ShardGet get;
      internal::SetId(get.mutable_id(), op->record.file_id(), op->record.version(), stripe, i);
      get.set_verify_only(true);
      transport_->Call(nodes[i], OutMessage{wire::SHARD_GET, get.SerializeAsString(), {}},
                       {options_.rpc_timeout, nullptr},
                       [op, stripe, i, answered, absent](StatusOr<InMessage> r) {
                         StripeReport& sr = op->result.stripes[stripe];
                         ShardReport& shard = sr.shards[i];
                         wire::ShardGetReply reply;
                         if (!r.ok()) {
                           const StatusCode c = r.status().code();
                           shard.state = c == StatusCode::kNotFound   ? ShardReport::State::kMissing
                                         : c == StatusCode::kDataLoss ? ShardReport::State::kCorrupt
                                                                      : ShardReport::State::kUnreachable;
                           shard.error = r.status().ToString();
                           if (c == StatusCode::kNotFound && (absent >> i & 1)) {
                             shard.state = ShardReport::State::kAbsent;
                             shard.error = "not written (a degraded write, --min-shards): " +
                                           shard.node.ToString() + " writes it in its next repair pass";
                           }
                         } else if (!reply.ParseFromString(r->header)) {
                           shard.error = "bad SHARD_GET reply";
                         } else {
                           shard.state = ShardReport::State::kOk;
                           shard.length = reply.length();
                           shard.crc32c = reply.crc32c();
                           shard.seq = reply.seq();
                           ++sr.good;
                         }
                         answered();
                       });
    }
  }
}

}  // namespace fern::daemon
