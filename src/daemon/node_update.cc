// PSW in the daemon (DESIGN §2, daemon/sequencer.h): the three roles one
// node plays for in-place updates, over the transport.
//
//   gateway    Node::Update cuts the client's ranges into stripe pieces and
//              drives each: SEQ_REQUEST to the file's sequencer, SEQ_APPLY
//              to the stripe's k data shards, then waits for SEQ_RESULT.
//   sequencer  on the file's first live metadata owner: a psw::Sequencer per
//              file version (FileSeq), whose actions this file performs
//              (grants, commits, recovery rounds). PersistEpoch stores the
//              record with psw_epoch before any later action goes out.
//   shard      a psw::ShardUpdateState per shard being updated (ShardPsw),
//              writing through ShardStore::OpenForUpdate and resealing the
//              header (seq, epoch, CRC) after each applied update. A data
//              shard forwards its delta to the parity shards; every shard
//              acknowledges to the sequencer (SEQ_ACK).
//
// A parity shard with some but not all deltas of a seq in place is left
// unsealed (its CRC fails): read as an erasure, never decoded from.
//
// A parity shard keeps recording the CRCs of the data it encodes
// (ShardMeta::stripe_crcs, which degraded reads check decodes against)
// through updates: each delta carries its data shard's new CRC, and the
// parity records them with the seq once every delta of it is in. Where one
// is not known (a data shard that applied several buffered seqs at once
// knows only its newest; a rollback below the parity's seq) the header
// records none until every data shard's CRC is known again (each comes
// with that shard's next delta; a rebuild or a full write brings all):
// decodes of that stripe are unchecked meanwhile, never checked against
// stale CRCs.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <vector>

#include "daemon/node.h"
#include "daemon/node_internal.h"
#include "daemon/sequencer.h"
#include "ec/crc32c.h"
#include "fern_wire.pb.h"

namespace fern::daemon {
namespace {

using transport::InMessage;
using transport::OutMessage;
using transport::Payload;
using transport::Responder;
using internal::SetId;

ShardKey KeyOf(const wire::ShardId& id) { return ShardKey{id.file_id(), id.version(), id.stripe(), id.index()}; }

Status StatusOf(int32_t code, const std::string& message) {
  if (code == 0) return Status();
  return Status(static_cast<StatusCode>(code), message);
}

std::string Slot(uint64_t stripe, int shard) {
  return "stripe " + std::to_string(stripe) + " shard " + std::to_string(shard);
}

}  // namespace

// One sequencer this node hosts: the file version's psw::Sequencer and the
// queue of its actions. Actions run in order; a PersistEpoch holds back the
// ones after it until the record with the new epoch is stored.
struct Node::FileSeq {
  std::string path;
  wire::FileRecord record;  // the version's record, psw_epoch as persisted
  std::optional<psw::Sequencer> seq;
  std::deque<psw::Action> pending;
  bool persisting = false;
  // Deferred SEQ_REQUEST replies, by (writer node, request), and when each
  // arrived: a writer stops waiting after 3 x rpc_timeout.
  std::map<std::pair<uint64_t, uint64_t>, std::pair<Responder, TimePoint>> grants;
  // Granted updates and when they must have committed (UpdateTimedOut).
  std::map<uint64_t, std::pair<psw::Seq, TimePoint>> deadlines;  // by stripe
  // Rebuilds waiting for their target node to come back.
  std::vector<psw::RebuildShard> parked;

  // Runs event(sequencer, &actions) and queues the actions it produced
  // (Execute performs them). An error is a protocol bug: logged.
  template <typename F>
  void On(F&& event) {
    psw::Actions out;
    if (Status s = event(*seq, &out); !s.ok()) {
      std::fprintf(stderr, "fern-ec: sequencer %s: %s\n", path.c_str(), s.ToString().c_str());
    }
    for (auto& a : out) pending.push_back(std::move(a));
  }
};

// One shard's PSW state on its node, with the writable view it updates and
// the CRC32C of each kCrcBlock of its bytes: a reseal re-sums only the
// blocks an update touched and combines the rest (a 4 KiB update of a
// 1 MiB shard sums 64 KiB, not 1 MiB).
struct ShardPsw {
  static constexpr uint64_t kCrcBlock = 64 * 1024;
  ShardStore::MutableView view;
  std::optional<psw::ShardUpdateState> state;
  ShardStore* store = nullptr;
  std::vector<uint32_t> block_crc;
  std::vector<bool> dirty;

  // Parity only: the CRC32C of each of the stripe's k data shards as the
  // bytes here encode them (nullopt where not known), and the new CRCs
  // deltas brought, by (seq, epoch, data index), until their seq is in.
  std::vector<std::optional<uint32_t>> data_crcs;
  std::map<std::tuple<uint64_t, uint64_t, int>, uint32_t> incoming;
  static constexpr size_t kMaxIncoming = 4096;

  uint64_t BlockLen(size_t b) const { return std::min<uint64_t>(kCrcBlock, view.data.size() - b * kCrcBlock); }
  // Sums every block; false when they do not add up to the header's CRC.
  bool Init() {
    const size_t blocks = (view.data.size() + kCrcBlock - 1) / kCrcBlock;
    block_crc.assign(blocks, 0);
    dirty.assign(blocks, true);
    return Crc() == view.meta.crc32c;
  }
  void Dirty(uint64_t offset, uint64_t length) {
    if (length == 0) return;
    for (uint64_t b = offset / kCrcBlock; b < dirty.size() && b * kCrcBlock < offset + length; ++b) dirty[b] = true;
  }
  void DirtyAll() { std::fill(dirty.begin(), dirty.end(), true); }
  uint32_t Crc() {
    uint32_t crc = 0;
    for (size_t b = 0; b < block_crc.size(); ++b) {
      if (dirty[b]) {
        block_crc[b] = ec::Crc32c(view.data.subspan(b * kCrcBlock, BlockLen(b)));
        dirty[b] = false;
      }
      crc = b == 0 ? block_crc[0] : ec::Crc32cCombine(crc, block_crc[b], BlockLen(b));
    }
    return crc;
  }
  // Parity: the delta of data shard `index` for (seq, epoch) said what the
  // data shard's CRC became.
  void Brought(uint64_t seq, uint64_t epoch, int index, uint32_t crc) {
    if (incoming.size() < kMaxIncoming) incoming[{seq, epoch, index}] = crc;
  }
  // Parity: seq `a` is in the bytes; the data shards it changed now have
  // the CRCs their deltas brought (or none known). Entries of that seq and
  // older ones are spent.
  void Took(const psw::ShardApplied& a) {
    for (int i = 0; i < static_cast<int>(data_crcs.size()); ++i) {
      if (!a.data_mask.contains(i)) continue;
      auto it = incoming.find({a.seq, a.epoch, i});
      data_crcs[i] = it == incoming.end() ? std::nullopt : std::optional<uint32_t>(it->second);
    }
    std::erase_if(incoming, [&](const auto& e) { return std::get<0>(e.first) <= a.seq; });
  }
  void Forget() {
    std::fill(data_crcs.begin(), data_crcs.end(), std::nullopt);
    incoming.clear();
  }
  // What the header records: a parity's k data CRCs when every one is
  // known, else none; nothing for a data shard (nullopt).
  std::optional<std::vector<uint32_t>> Record() const {
    if (!state || !state->is_parity()) return std::nullopt;
    std::vector<uint32_t> out;
    for (const auto& c : data_crcs) {
      if (!c) return std::vector<uint32_t>{};
      out.push_back(*c);
    }
    return out;
  }
  // Writes the header for the bytes as they are (state's seq and epoch).
  Status Reseal(const ShardKey& key, bool sync, std::optional<uint32_t> crc = std::nullopt) {
    const psw::ShardHeader h = state->header();
    return store->Reseal(key, h.applied_seq, h.epoch, sync, crc ? *crc : Crc(), Record());
  }
};

// Shard states kept between updates before clean ones are dropped.
constexpr size_t kMaxIdleShards = 4096;

struct Node::PswState {
  std::map<std::pair<uint64_t, uint64_t>, std::unique_ptr<FileSeq>> seqs;  // (file_id, version)
  std::unordered_map<ShardKey, std::unique_ptr<ShardPsw>, ShardKeyHash> shards;
  struct Waiting {
    std::function<void(Status)> done;
    TimePoint deadline;
  };
  std::map<uint64_t, Waiting> results;  // SEQ_RESULT awaited, by request
  uint64_t next_request = 0;
  PswStats stats;
  // Parity acknowledgements waiting for the next parity Sync.
  std::vector<std::pair<NodeId, std::string>> unsynced;
};

// One client update: its pieces, each one stripe's contiguous part of a range.
struct Node::UpdateOp {
  std::string path;
  wire::FileRecord record;
  std::span<const uint8_t> bytes;
  std::shared_ptr<const void> owner;
  std::function<void(StatusOr<uint64_t>)> done;
  struct Piece {
    uint64_t stripe = 0;
    uint64_t offset = 0;  // within the stripe's data
    uint64_t length = 0;
    size_t bytes_at = 0;  // where its bytes start in `bytes`
    int retries = 0;      // sent again after Aborted (kUpdateRetries)
  };
  std::vector<Piece> pieces;
  size_t next = 0;
  int in_flight = 0;
  bool finished = false;
  Status failure;
};



Node::PswStats Node::psw_stats() const {
  PswStats s = psw_->stats;
  s.sequencers = psw_->seqs.size();
  return s;
}

// ---- gateway -----------------------------------------------------------------

void Node::Update(const std::string& path, uint64_t base_version, uint64_t file_size,
                  std::vector<ByteRange> ranges, std::span<const uint8_t> bytes,
                  std::shared_ptr<const void> owner, const Caller& caller,
                  std::function<void(StatusOr<uint64_t>)> done) {
  auto op = std::make_shared<UpdateOp>();
  op->path = path;
  op->bytes = bytes;
  op->owner = std::move(owner);
  op->done = std::move(done);
  uint64_t total = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const auto& r = ranges[i];
    if (r.length == 0 || r.offset > file_size || r.length > file_size - r.offset ||
        (i > 0 && r.offset < ranges[i - 1].offset + ranges[i - 1].length)) {
      return op->done(InvalidArgumentError("update " + path + ": range " + std::to_string(i) +
                                           " is empty, overlaps or lies outside the file"));
    }
    total += r.length;
  }
  if (total != bytes.size()) {
    return op->done(InvalidArgumentError("update " + path + ": the ranges hold " + std::to_string(total) +
                                         " bytes, " + std::to_string(bytes.size()) + " were sent"));
  }
  LookupRecord(path, [this, op, base_version, file_size, caller,
                      ranges = std::move(ranges)](StatusOr<RecordPtr> cur) {
    if (!cur.ok()) return op->done(cur.status().WithContext("update " + op->path));
    const wire::FileRecord& r = **cur;
    if (Status s = internal::CheckReadableFile(r, op->path, Caller{0, 0}, "update"); !s.ok()) {
      return op->done(s);
    }
    if (!internal::Permits(r, caller, W_OK)) {
      return op->done(PermissionDeniedError("update " + op->path + ": uid " + std::to_string(caller.uid) +
                                            " may not write it"));
    }
    if (r.version() != base_version || r.size() != file_size) {
      return op->done(FailedPreconditionError("update " + op->path + ": version " + std::to_string(base_version) +
                                              " of " + std::to_string(file_size) + " bytes is no longer current (" +
                                              std::to_string(r.version()) + ", " + std::to_string(r.size()) +
                                              " bytes)")
                          .WithErrno(ESTALE));
    }
    if (r.k() != static_cast<uint32_t>(options_.k) || r.m() != static_cast<uint32_t>(options_.m) ||
        r.shard_size() != options_.shard_size || r.technique() != coder_->technique()) {
      return op->done(UnimplementedError(op->path + " was written with a different layout"));
    }
    op->record = r;
    const uint64_t stripe_bytes = uint64_t(options_.k) * options_.shard_size;
    size_t at = 0;
    for (const auto& range : ranges) {
      uint64_t off = range.offset, left = range.length;
      while (left > 0) {
        const uint64_t stripe = off / stripe_bytes, within = off % stripe_bytes;
        const uint64_t len = std::min(left, stripe_bytes - within);
        op->pieces.push_back({stripe, within, len, at});
        at += len;
        off += len;
        left -= len;
      }
    }
    if (op->pieces.empty()) return op->done(r.version());
    // Refused before any piece is applied while a stripe it touches cannot
    // take one (the writer sends the whole file instead); a node that fails
    // later fails only its own pieces.
    for (size_t i = 0; i < op->pieces.size() && op->failure.ok(); ++i) {
      if (i == 0 || op->pieces[i].stripe != op->pieces[i - 1].stripe) {
        op->failure = UpdateBlocked(op->record, op->pieces[i].stripe);
      }
    }
    UpdateNext(op);
  });
}

void Node::UpdateNext(const std::shared_ptr<UpdateOp>& op) {
  while (op->failure.ok() && op->next < op->pieces.size() && op->in_flight < kUpdateWindow) {
    ++op->in_flight;
    UpdatePiece(op, op->next++);
  }
  if (op->in_flight > 0 || op->finished) return;
  op->finished = true;
  if (!op->failure.ok()) {
    ++psw_->stats.updates_failed;
    // errno hints do not cross the wire: restore the ones the client acts on.
    Status s = op->failure.WithContext("update " + op->path);
    if (s.errno_hint() == 0 && s.code() == StatusCode::kFailedPrecondition) s = s.WithErrno(ESTALE);
    if (s.errno_hint() == 0 && s.code() == StatusCode::kAborted) s = s.WithErrno(EIO);
    return op->done(s);
  }
  ++psw_->stats.updates_committed;
  op->done(op->record.version());
}

Status Node::UpdateBlocked(const wire::FileRecord& record, uint64_t stripe) {
  const std::vector<NodeId> nodes = StripeNodes(record, stripe);
  const int n = options_.k + options_.m;
  if (static_cast<int>(nodes.size()) != n) return UnavailableError("no placement for the stripe");
  const uint32_t absent = AbsentMask(record, stripe);
  for (int i = 0; i < n; ++i) {
    if (absent >> i & 1) {
      // Written without this shard (--min-shards): not until its node has it.
      return UnavailableError("stripe " + std::to_string(stripe) + ": shard " + std::to_string(i) + " on " +
                              nodes[i].ToString() + " is not written yet")
          .WithErrno(EAGAIN);
    }
    if (!view_.IsAlive(nodes[i]) || IsSlow(nodes[i])) {
      // All k+m shards must apply an update before it commits: not now (a
      // node a request timed out on lately would only time out again).
      return UnavailableError("stripe " + std::to_string(stripe) + ": shard " + std::to_string(i) + " on " +
                              nodes[i].ToString() + (view_.IsAlive(nodes[i]) ? " is not answering" : " is down"))
          .WithErrno(EAGAIN);
    }
  }
  return Status();
}

void Node::UpdatePiece(const std::shared_ptr<UpdateOp>& op, size_t index) {
  const UpdateOp::Piece piece = op->pieces[index];
  auto finish = [this, op, index](Status s) {
    if (s.code() == StatusCode::kAborted && op->failure.ok() && op->pieces[index].retries < kUpdateRetries) {
      ++op->pieces[index].retries;
      ++psw_->stats.pieces_retried;
      std::fprintf(stderr, "fern-ec: node %u: update %s stripe %llu: %s; sending it again\n", options_.id.value,
                   op->path.c_str(), static_cast<unsigned long long>(op->pieces[index].stripe),
                   std::string(s.message()).c_str());
      return UpdatePiece(op, index);
    }
    if (!s.ok() && op->failure.ok()) op->failure = s;
    --op->in_flight;
    UpdateNext(op);
  };
  if (Status blocked = UpdateBlocked(op->record, piece.stripe); !blocked.ok()) return finish(blocked);
  const std::vector<NodeId> nodes = StripeNodes(op->record, piece.stripe);
  auto host = placement_.Sequencer(op->path, view_);
  if (!host.ok()) return finish(host.status());
  const uint64_t request = (uint64_t{options_.id.value} << 48) ^ ++psw_->next_request;
  wire::SeqRequest req;
  req.set_path(op->path);
  req.set_file_id(op->record.file_id());
  req.set_version(op->record.version());
  req.set_stripe(piece.stripe);
  req.set_offset(piece.offset);
  req.set_length(piece.length);
  req.set_request(request);
  const NodeId seq_node = *host;
  // A grant may wait behind the stripe's earlier updates.
  transport_->Call(
      seq_node, OutMessage{wire::SEQ_REQUEST, req.SerializeAsString(), {}}, {3 * options_.rpc_timeout, nullptr},
      [this, op, piece, nodes, seq_node, request, finish](StatusOr<InMessage> r) {
        if (!r.ok()) return finish(r.status().WithContext("sequencer " + seq_node.ToString()));
        wire::SeqGrant grant;
        if (!grant.ParseFromString(r->header)) return finish(InternalError("bad SEQ_REQUEST reply"));
        const uint64_t len = geometry_.StripeShardLen(op->record.size(), piece.stripe);
        auto split = psw::SplitStripeRange(options_.k, len, {piece.offset, piece.length});
        if (!split.ok()) return finish(split.status());
        // The result comes from the sequencer once all k+m shards applied it
        // (or recovery decided); until then the bytes must stay with us.
        psw_->results[request] = {[finish, op](Status s) { finish(s); }, now_ + 3 * options_.rpc_timeout};
        wire::SeqApply apply;
        apply.set_seq(grant.seq());
        apply.set_epoch(grant.epoch());
        apply.set_data_mask(psw::DataMask(*split).bits());
        auto* route = apply.mutable_route();
        route->set_sequencer(seq_node.value);
        route->set_path(op->path);
        for (NodeId id : nodes) route->add_nodes(id.value);
        for (int i = 0; i < options_.k; ++i) {
          SetId(apply.mutable_id(), op->record.file_id(), op->record.version(), piece.stripe, i);
          std::span<const uint8_t> bytes;
          apply.set_offset(0);
          for (const auto& p : *split) {
            if (p.shard != i) continue;
            apply.set_offset(p.shard_offset);
            bytes = op->bytes.subspan(piece.bytes_at + p.range_offset, p.length);
          }
          apply.set_length(bytes.size());
          // A refusal shows in the sequencer's result (the shard never
          // acknowledges; recovery rolls the update back): nothing to do here.
          transport_->Call(nodes[i], OutMessage{wire::SEQ_APPLY, apply.SerializeAsString(), Payload::View(bytes, op)},
                           {options_.rpc_timeout, nullptr}, [](StatusOr<InMessage>) {});
        }
      });
}

// ---- sequencer host ------------------------------------------------------------

Node::FileSeq* Node::HostSequencer(const wire::FileRecord& record, Status* error) {
  const auto key = std::make_pair(record.file_id(), record.version());
  if (auto it = psw_->seqs.find(key); it != psw_->seqs.end()) return it->second.get();
  auto fs = std::make_unique<FileSeq>();
  fs->path = record.path();
  fs->record = record;
  const psw::SequencerConfig config{options_.k, options_.m, geometry_.StripeCount(record.size())};
  psw::Actions actions;
  StatusOr<psw::Sequencer> seq = InternalError("unset");
  if (record.psw_epoch() == 0) {
    seq = psw::Sequencer::Start(config, 0, &actions);
  } else {
    // A sequencer ran before (this node restarted, or another owner hosted
    // it): learn every stripe's seq from its shards, treating the slots on
    // dead nodes, and those a degraded write left absent, as lost.
    std::vector<psw::ShardSlot> failed;
    for (uint64_t s = 0; s < config.stripes; ++s) {
      const auto nodes = StripeNodes(record, s);
      const uint32_t absent = AbsentMask(record, s);  // never written: lost too
      for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
        if (!view_.IsAlive(nodes[i]) || (absent >> i & 1)) failed.push_back({s, i});
      }
    }
    seq = psw::Sequencer::Recover(config, record.psw_epoch(), failed, &actions);
  }
  if (!seq.ok()) {
    *error = seq.status();
    return nullptr;
  }
  fs->seq.emplace(std::move(seq).value());
  for (auto& a : actions) fs->pending.push_back(std::move(a));
  FileSeq* raw = fs.get();
  psw_->seqs[key] = std::move(fs);
  return raw;
}

void Node::AmendHostedSeq(const wire::MetaAmend& amend) {
  // Every sequencer of the path: the one of a newer version holds the
  // amended version in its record's history, and persists that record.
  for (auto& [key, fs] : psw_->seqs) {
    if (fs->path == amend.path()) (void)AmendRecord(&fs->record, amend);
  }
}

Node::FileSeq* Node::HostedSeq(const std::pair<uint64_t, uint64_t>& key) {
  auto it = psw_->seqs.find(key);
  return it == psw_->seqs.end() ? nullptr : it->second.get();
}

void Node::Execute(FileSeq* fs) {
  const auto key = std::make_pair(fs->record.file_id(), fs->record.version());
  while (!fs->persisting && !fs->pending.empty()) {
    psw::Action action = std::move(fs->pending.front());
    fs->pending.pop_front();
    // FERN_PSW_TRACE=1: every sequencer action on stderr (debugging aid).
    static const bool trace = std::getenv("FERN_PSW_TRACE") != nullptr;
    if (trace) {
      std::fprintf(stderr, "[psw %u] action %zu", options_.id.value, action.index());
      std::visit([](auto& a) {
        using T = std::decay_t<decltype(a)>;
        if constexpr (requires { a.slot; }) std::fprintf(stderr, " stripe %lu shard %d", a.slot.stripe, a.slot.shard);
        if constexpr (requires { a.stripe; }) std::fprintf(stderr, " stripe %lu", a.stripe);
        if constexpr (requires { a.seq; }) std::fprintf(stderr, " seq %lu", a.seq);
        if constexpr (requires { a.epoch; }) std::fprintf(stderr, " epoch %lu", a.epoch);
        (void)sizeof(T);
      }, action);
      std::fprintf(stderr, "\n");
    }
    auto stripe_id = [&](uint64_t stripe, int shard) {
      wire::ShardId id;
      SetId(&id, fs->record.file_id(), fs->record.version(), stripe, shard);
      return id;
    };
    // Feeds a shard's answer back into the sequencer (if it still exists).
    auto feed = [this, key](auto event) {
      if (FileSeq* f = HostedSeq(key)) {
        f->On(event);
        Execute(f);
      }
    };
    // A round's request to one shard, its answer fed back by `answered`. A
    // failure loses the shard for the round, except Aborted: a newer round
    // fenced the shard, and that round decides.
    auto ask_shard = [this, &fs, feed](psw::ShardSlot slot, transport::MessageKind kind, std::string body,
                                       auto answered) {
      const auto nodes = StripeNodes(fs->record, slot.stripe);
      transport_->Call(nodes.at(slot.shard), OutMessage{kind, std::move(body), {}}, {options_.rpc_timeout, nullptr},
                       [feed, slot, answered](StatusOr<InMessage> r) {
                         if (!r.ok() && r.status().code() == StatusCode::kAborted) return;
                         feed([&](psw::Sequencer& q, psw::Actions* out) {
                           return r.ok() ? answered(q, *r, out) : q.ShardsFailed({&slot, 1}, out);
                         });
                       });
    };
    std::visit(
        [&](auto& a) {
          using T = std::decay_t<decltype(a)>;
          if constexpr (std::is_same_v<T, psw::PersistEpoch>) {
            fs->record.set_psw_epoch(a.epoch);
            fs->persisting = true;
            StoreRecord(fs->record, [this, key](Status s) {
              auto it = psw_->seqs.find(key);
              if (it == psw_->seqs.end()) return;
              FileSeq* f = it->second.get();
              f->persisting = false;
              if (!s.ok()) {
                // Without a durable epoch no grant may go out: give up this
                // sequencer; the next request builds a new one (Recover).
                for (auto& [w, r] : f->grants) r.first.Fail(s.WithContext("persist sequencer epoch"));
                psw_->seqs.erase(it);
                return;
              }
              Execute(f);
            });
          } else if constexpr (std::is_same_v<T, psw::GrantUpdate>) {
            fs->deadlines[a.stripe] = {a.seq, now_ + 2 * options_.rpc_timeout};
            auto g = fs->grants.find({a.writer.value, a.request});
            if (g == fs->grants.end() || now_ - g->second.second > 3 * options_.rpc_timeout) {
              // Nobody waits for this grant any more: recover the stripe at
              // the next tick rather than after the whole deadline.
              fs->deadlines[a.stripe].second = now_;
              if (g != fs->grants.end()) fs->grants.erase(g);
              return;
            }
            wire::SeqGrant grant;
            grant.set_seq(a.seq);
            grant.set_epoch(a.epoch);
            g->second.first.Reply(OutMessage{wire::SEQ_REQUEST, grant.SerializeAsString(), {}});
            fs->grants.erase(g);
          } else if constexpr (std::is_same_v<T, psw::UpdateCommitted> || std::is_same_v<T, psw::UpdateAborted>) {
            Status status;
            if constexpr (std::is_same_v<T, psw::UpdateAborted>) status = a.status;
            if (auto d = fs->deadlines.find(a.stripe); d != fs->deadlines.end() && d->second.first == a.seq) {
              fs->deadlines.erase(d);
            }
            auto g = fs->grants.find({a.writer.value, a.request});
            if (g != fs->grants.end()) {  // refused before its grant
              g->second.first.Fail(status.ok() ? AbortedError("update refused") : status);
              fs->grants.erase(g);
              return;
            }
            wire::SeqResult res;
            res.set_request(a.request);
            res.set_seq(a.seq);
            res.set_status_code(static_cast<int32_t>(status.code()));
            res.set_status_message(std::string(status.message()));
            transport_->Send(NodeId(static_cast<uint32_t>(a.writer.value)),
                             OutMessage{wire::SEQ_RESULT, res.SerializeAsString(), {}});
          } else if constexpr (std::is_same_v<T, psw::CommitShards>) {
            const auto nodes = StripeNodes(fs->record, a.stripe);
            wire::SeqCommit c;
            c.set_seq(a.seq);
            c.set_epoch(a.epoch);
            for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
              *c.mutable_id() = stripe_id(a.stripe, i);
              transport_->Send(nodes[i], OutMessage{wire::SEQ_COMMIT, c.SerializeAsString(), {}});
            }
          } else if constexpr (std::is_same_v<T, psw::FenceShard>) {
            wire::SeqFence f;
            *f.mutable_id() = stripe_id(a.slot.stripe, a.slot.shard);
            f.set_epoch(a.epoch);
            ask_shard(a.slot, wire::SEQ_FENCE, f.SerializeAsString(),
                      [slot = a.slot, round = a.epoch](psw::Sequencer& q, const InMessage& m, psw::Actions* out) {
                        wire::SeqReport rep;
                        if (!rep.ParseFromString(m.header)) return q.ShardsFailed({&slot, 1}, out);
                        const psw::ShardReport report{rep.epoch(),    rep.applied_seq(), rep.committed_seq(),
                                                      rep.has_undo(), rep.partial(),     rep.undo_floor_seq()};
                        return q.ShardReported(slot.stripe, slot.shard, round, report, out);
                      });
          } else if constexpr (std::is_same_v<T, psw::RollBackShard>) {
            wire::SeqRollBack rb;
            *rb.mutable_id() = stripe_id(a.slot.stripe, a.slot.shard);
            rb.set_epoch(a.epoch);
            rb.set_seq(a.seq);
            ask_shard(a.slot, wire::SEQ_ROLLBACK, rb.SerializeAsString(),
                      [slot = a.slot, round = a.epoch](psw::Sequencer& q, const InMessage&, psw::Actions* out) {
                        return q.ShardRolledBack(slot.stripe, slot.shard, round, out);
                      });
          } else if constexpr (std::is_same_v<T, psw::RebuildShard>) {
            RebuildForRound(fs, a);
          } else if constexpr (std::is_same_v<T, psw::StripeResolved>) {
            if (a.status.ok()) {
              ++psw_->stats.stripes_resolved;
            } else {
              ++psw_->stats.stripes_lost;
              std::fprintf(stderr, "fern-ec: node %u: %s stripe %llu: %s\n", options_.id.value, fs->path.c_str(),
                           static_cast<unsigned long long>(a.stripe), a.status.ToString().c_str());
            }
          }
        },
        action);
  }
}

// RebuildShard: decode the slot at (epoch, seq) from the round's sources and
// install it on the slot's node. A target that is down is parked until it
// is back (the stripe takes no updates meanwhile; reads decode around it).
void Node::RebuildForRound(FileSeq* fs, const psw::RebuildShard& a) {
  const auto nodes = StripeNodes(fs->record, a.slot.stripe);
  const int n = options_.k + options_.m;
  if (static_cast<int>(nodes.size()) != n) return;
  if (!view_.IsAlive(nodes[a.slot.shard])) {
    fs->parked.push_back(a);
    return;
  }
  const auto key = std::make_pair(fs->record.file_id(), fs->record.version());
  struct Fetch {
    psw::RebuildShard action;
    std::vector<std::shared_ptr<void>> owners;
    std::vector<std::span<uint8_t>> shards;
    internal::ShardChecks checks;
    ec::ShardSet present;
    int pending = 0;
    Status failure;
  };
  auto f = std::make_shared<Fetch>();
  f->action = a;
  f->owners.resize(n);
  f->shards.resize(n);
  f->checks = internal::ShardChecks(n);
  const uint64_t len = geometry_.StripeShardLen(fs->record.size(), a.slot.stripe);
  auto finish = [this, key, f, len, nodes]() {
    auto it = psw_->seqs.find(key);
    if (it == psw_->seqs.end()) return;
    FileSeq* fs = it->second.get();
    const psw::RebuildShard& a = f->action;
    const int n = options_.k + options_.m;
    if (!f->failure.ok() || f->present.size() < options_.k) {
      // A source moved on or went away: the round is stale or the stripe
      // lost another shard; a newer round (started by that failure) decides.
      std::fprintf(stderr, "fern-ec: node %u: rebuild %s %s: %s\n", options_.id.value, fs->path.c_str(),
                   Slot(a.slot.stripe, a.slot.shard).c_str(), f->failure.ToString().c_str());
      return;
    }
    auto out = std::make_shared<std::vector<uint8_t>>(len);
    std::vector<uint8_t*> ptrs(n, nullptr);
    for (int i = 0; i < n; ++i) {
      if (f->present.contains(i)) ptrs[i] = f->shards[i].data();
    }
    ptrs[a.slot.shard] = out->data();
    ec::ShardSet want;
    want.insert(a.slot.shard);
    std::vector<uint32_t> data_crcs;
    if (Status s = CheckedDecode(ptrs, f->present, want, len, f->checks, &data_crcs); !s.ok()) {
      std::fprintf(stderr, "fern-ec: node %u: rebuild decode: %s\n", options_.id.value, s.ToString().c_str());
      return;
    }
    wire::SeqInstall ins;
    SetId(ins.mutable_id(), fs->record.file_id(), fs->record.version(), a.slot.stripe, a.slot.shard);
    ins.set_epoch(a.epoch);
    ins.set_seq(a.seq);
    ins.set_committed_seq(a.committed_seq);
    ins.set_length(len);
    ins.set_crc32c(ec::Crc32c(*out));
    if (a.slot.shard >= options_.k) {
      for (uint32_t c : data_crcs) ins.add_stripe_crc32c(c);
    }
    const uint64_t stripe = a.slot.stripe;
    const int shard = a.slot.shard;
    const psw::Epoch round = a.epoch;
    transport_->Call(nodes[shard], OutMessage{wire::SEQ_INSTALL, ins.SerializeAsString(), Payload::View(*out, out)},
                     {options_.rpc_timeout, nullptr}, [this, key, stripe, shard, round](StatusOr<InMessage> r) {
                       if (!r.ok()) {
                         std::fprintf(stderr, "fern-ec: node %u: install %s: %s\n", options_.id.value,
                                      Slot(stripe, shard).c_str(), r.status().ToString().c_str());
                         return;  // fenced (a newer round) or its node failed (which starts one)
                       }
                       if (FileSeq* f = HostedSeq(key)) {
                         f->On([&](psw::Sequencer& q, psw::Actions* out) { return q.ShardRebuilt(stripe, shard, round, out); });
                         Execute(f);
                       }
                     });
  };
  f->pending = 1;
  for (int i = 0; i < n; ++i) {
    if (!a.sources.contains(i) || f->present.size() + f->pending - 1 >= options_.k) continue;
    wire::ShardGet get;
    SetId(get.mutable_id(), fs->record.file_id(), fs->record.version(), a.slot.stripe, i);
    ++f->pending;
    transport_->Call(nodes[i], OutMessage{wire::SHARD_GET, get.SerializeAsString(), {}},
                     {options_.rpc_timeout, nullptr}, [f, i, len, finish](StatusOr<InMessage> r) {
                       wire::ShardGetReply rep;
                       if (!r.ok()) {
                         f->failure = r.status();
                       } else if (!rep.ParseFromString(r->header) || r->payload.size() != len ||
                                  ec::Crc32c(r->payload) != rep.crc32c()) {
                         f->failure = DataLossError("source shard " + std::to_string(i) + " is torn");
                       } else if (rep.seq() != f->action.seq || rep.epoch() > f->action.epoch) {
                         f->failure = AbortedError("source shard " + std::to_string(i) + " is at seq " +
                                                   std::to_string(rep.seq()) + ", the round wants " +
                                                   std::to_string(f->action.seq));
                       } else {
                         f->shards[i] = r->payload;
                         f->owners[i] = r->payload_owner;
                         f->checks.Take(i, rep);
                         f->present.insert(i);
                       }
                       if (--f->pending == 0) finish();
                     });
  }
  if (--f->pending == 0) finish();
}

void Node::PswTick() {
  // Writers whose result never came.
  for (auto it = psw_->results.begin(); it != psw_->results.end();) {
    if (now_ < it->second.deadline) {
      ++it;
      continue;
    }
    auto done = std::move(it->second.done);
    it = psw_->results.erase(it);
    done(DeadlineExceededError("no result from the sequencer"));
  }
  // Granted updates that did not commit in time (a writer or shard stalled).
  for (auto& [key, fs] : psw_->seqs) {
    std::vector<std::pair<uint64_t, psw::Seq>> late;
    for (auto& [stripe, d] : fs->deadlines) {
      if (now_ >= d.second) late.push_back({stripe, d.first});
    }
    for (const auto& l : late) {
      fs->deadlines.erase(l.first);
      fs->On([&](psw::Sequencer& q, psw::Actions* out) { return q.UpdateTimedOut(l.first, l.second, out); });
    }
    if (!late.empty()) Execute(fs.get());
  }
}

void Node::PswMembership(NodeId peer, bool alive) {
  std::vector<std::pair<uint64_t, uint64_t>> drop;
  for (auto& [key, fs] : psw_->seqs) {
    auto host = placement_.Sequencer(fs->path, view_);
    if (!host.ok() || *host != options_.id) {
      drop.push_back(key);  // another owner sequences this file now
      continue;
    }
    if (alive) {
      auto parked = std::move(fs->parked);
      for (auto& a : parked) fs->pending.push_back(a);
    } else {
      fs->On([&](psw::Sequencer& q, psw::Actions* out) { return q.WriterFailed(psw::WriterId(peer.value), out); });
      // Only stripes with an update granted or under recovery need a round
      // now: an idle stripe's update is refused at the gateway while one of
      // its nodes is down.
      std::vector<psw::ShardSlot> slots;
      for (uint64_t s = 0; s < fs->seq->config().stripes; ++s) {
        if (!fs->seq->InFlight(s) && !fs->seq->InRecovery(s)) continue;
        const auto nodes = StripeNodes(fs->record, s);
        for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
          if (nodes[i] == peer) slots.push_back({s, i});
        }
      }
      if (!slots.empty()) fs->On([&](psw::Sequencer& q, psw::Actions* out) { return q.ShardsFailed(slots, out); });
    }
    Execute(fs.get());
  }
  for (auto& key : drop) {
    auto& fs = psw_->seqs[key];
    for (auto& [w, r] : fs->grants) r.first.Fail(UnavailableError("the sequencer moved to another node"));
    psw_->seqs.erase(key);
  }
}

// ---- shard side ----------------------------------------------------------------

void Node::DropPswShard(const ShardKey& key) { psw_->shards.erase(key); }

bool Node::PswBusy(const ShardKey& key) const {
  auto it = psw_->shards.find(key);
  if (it == psw_->shards.end()) return false;
  const psw::ShardReport rep = it->second->state->report();
  return rep.partial || rep.applied_seq != rep.committed_seq || it->second->state->buffered() > 0;
}

void Node::PswSync() {
  if (psw_->unsynced.empty()) return;
  auto acks = std::move(psw_->unsynced);
  psw_->unsynced.clear();
  if (Status s = parity_->Sync(); !s.ok()) {
    // Not durable: not acknowledged. The sequencer's deadline recovers the stripes.
    std::fprintf(stderr, "fern-ec: node %u: flush parity updates: %s\n", options_.id.value, s.ToString().c_str());
    return;
  }
  for (auto& [to, ack] : acks) transport_->Send(to, OutMessage{wire::SEQ_ACK, std::move(ack), {}});
}

void Node::InstallPswHandlers() {
  psw_ = std::make_shared<PswState>();
  // Request ids must not repeat across restarts of this node: a sequencer
  // that outlived the restart would take a new request for a duplicate.
  psw_->next_request = internal::NowNs() & ((uint64_t{1} << 48) - 1);
  // The PSW state of a shard held here, created from its header on first use.
  auto shard_state = [this](const ShardKey& key) -> StatusOr<ShardPsw*> {
    if (auto it = psw_->shards.find(key); it != psw_->shards.end()) return it->second.get();
    const bool parity = key.index >= static_cast<uint32_t>(options_.k);
    ShardStore* store = parity ? parity_ : data_;
    auto entry = std::make_unique<ShardPsw>();
    entry->store = store;
    FERN_ASSIGN_OR_RETURN(entry->view, store->OpenForUpdate(key, ShardStore::Check::kTrustCaller));
    if (!entry->Init()) return DataLossError(key.ToString() + " fails its CRC32C: not updated in place");
    // The header has the last applied seq; the one before it committed (the
    // sequencer grants seq N only after N-1 committed).
    const psw::ShardHeader h{entry->view.meta.epoch, entry->view.meta.seq,
                             entry->view.meta.seq > 0 ? entry->view.meta.seq - 1 : 0};
    const int index = static_cast<int>(key.index);
    auto st = parity ? psw::ShardUpdateState::Parity(options_.k, index, coder_->coding_matrix().row(index - options_.k),
                                                     entry->view.data, h)
                     : psw::ShardUpdateState::Data(options_.k, index, entry->view.data, h);
    if (!st.ok()) return st.status();
    entry->state.emplace(std::move(st).value());
    if (parity) {
      entry->data_crcs.assign(options_.k, std::nullopt);
      const auto& recorded = entry->view.meta.stripe_crcs;
      if (static_cast<int>(recorded.size()) == options_.k) {
        std::copy(recorded.begin(), recorded.end(), entry->data_crcs.begin());
      }
    }
    ShardPsw* raw = entry.get();
    psw_->shards[key] = std::move(entry);
    return raw;
  };
  // After applying: reseal what is whole, acknowledge, forward deltas.
  auto applied = [this](const ShardKey& key, ShardPsw* sp, const wire::SeqRoute& route,
                        std::vector<psw::ShardApplied>& out) -> Status {
    if (out.empty()) return Status();
    const psw::ShardHeader h = sp->state->header();
    if (sp->state->is_parity()) {
      for (const auto& a : out) sp->Took(a);
    }
    // Parity on a durable tier is acknowledged after a group Sync
    // (FlushDurable): one flush for every update resealed in a loop round.
    const bool batched = options_.batch_durable_commits && sp->store == parity_;
    const uint32_t crc = sp->Crc();
    FERN_RETURN_IF_ERROR(sp->Reseal(key, /*sync=*/!batched, crc));
    for (auto& a : out) {
      ++psw_->stats.pieces_applied;
      wire::SeqAck ack;
      SetId(ack.mutable_id(), key.file_id, key.version, key.stripe, static_cast<int>(key.index));
      ack.set_seq(a.seq);
      ack.set_epoch(a.epoch);
      if (batched) {
        psw_->unsynced.push_back({NodeId(route.sequencer()), ack.SerializeAsString()});
      } else {
        transport_->Send(NodeId(route.sequencer()), OutMessage{wire::SEQ_ACK, ack.SerializeAsString(), {}});
      }
      if (!a.forward) continue;
      auto delta = std::make_shared<std::vector<uint8_t>>(std::move(a.delta));
      wire::SeqApply p;
      p.set_seq(a.seq);
      p.set_epoch(a.epoch);
      p.set_offset(a.offset);
      p.set_length(delta->size());
      p.set_data_mask(a.data_mask.bits());
      p.set_data_index(static_cast<uint32_t>(a.data_index));
      // The CRC is of the bytes as they are now: those of the newest seq
      // applied (a drain of buffered seqs knows no other's).
      if (a.seq == h.applied_seq) p.set_data_crc32c(crc);
      *p.mutable_route() = route;
      for (int j = options_.k; j < route.nodes_size(); ++j) {
        SetId(p.mutable_id(), key.file_id, key.version, key.stripe, j);
        transport_->Send(NodeId(route.nodes(j)),
                         OutMessage{wire::SEQ_APPLY, p.SerializeAsString(), Payload::View(*delta, delta)});
      }
    }
    return Status();
  };

  transport_->Handle(wire::SEQ_APPLY, [this, shard_state, applied](InMessage m, Responder r) {
    wire::SeqApply a;
    if (!a.ParseFromString(m.header) || a.length() != m.payload.size() ||
        a.route().nodes_size() != options_.k + options_.m) {
      return r.Fail(InvalidArgumentError("bad SEQ_APPLY header"));
    }
    const ShardKey key = KeyOf(a.id());
    auto sp = shard_state(key);
    if (!sp.ok()) return r.Fail(sp.status());
    std::vector<psw::ShardApplied> out;
    Status s;
    // The bytes this piece may change; buffered pieces drained behind it
    // may change any.
    if ((*sp)->state->buffered() > 0) {
      (*sp)->DirtyAll();
    } else {
      (*sp)->Dirty(a.offset(), m.payload.size());
    }
    if ((*sp)->state->is_parity()) {
      if (a.has_data_crc32c()) (*sp)->Brought(a.seq(), a.epoch(), static_cast<int>(a.data_index()), a.data_crc32c());
      s = (*sp)->state->ApplyParity({a.seq(), a.epoch(), static_cast<int>(a.data_index()), ec::ShardSet(a.data_mask()),
                                     a.offset(), m.payload},
                                    &out);
    } else {
      s = (*sp)->state->ApplyData({a.seq(), a.epoch(), ec::ShardSet(a.data_mask()), a.offset(), m.payload}, &out);
    }
    if (s.ok()) s = applied(key, *sp, a.route(), out);
    if (!s.ok()) return r.Fail(s);
    r.Reply(OutMessage{wire::SEQ_APPLY, {}, {}});
  });

  transport_->Handle(wire::SEQ_COMMIT, [this](InMessage m, Responder) {
    wire::SeqCommit c;
    if (!c.ParseFromString(m.header)) return;
    const ShardKey key = KeyOf(c.id());
    auto it = psw_->shards.find(key);
    if (it == psw_->shards.end()) return;
    (void)it->second->state->Commit(c.seq(), c.epoch());
    // Kept for the stripe's next update (no re-open, no CRC pass) while
    // fewer than kMaxIdleShards are held; beyond that a shard left with
    // nothing to undo lets go of its slot (its state is rebuilt from the
    // header on its next update).
    if (psw_->shards.size() <= kMaxIdleShards) return;
    const psw::ShardReport rep = it->second->state->report();
    if (rep.applied_seq == rep.committed_seq && !rep.has_undo && !rep.partial && it->second->state->buffered() == 0) {
      psw_->shards.erase(it);
    }
  });

  transport_->Handle(wire::SEQ_ACK, [this](InMessage m, Responder) {
    wire::SeqAck ack;
    if (!ack.ParseFromString(m.header)) return;
    FileSeq* f = HostedSeq({ack.id().file_id(), ack.id().version()});
    if (!f) return;  // a sequencer gone: its successor's round decides
    f->On([&](psw::Sequencer& q, psw::Actions* out) {
      return q.ShardApplied(ack.id().stripe(), static_cast<int>(ack.id().index()), ack.seq(), ack.epoch(), out);
    });
    Execute(f);
  });

  transport_->Handle(wire::SEQ_RESULT, [this](InMessage m, Responder) {
    wire::SeqResult res;
    if (!res.ParseFromString(m.header)) return;
    auto it = psw_->results.find(res.request());
    if (it == psw_->results.end()) return;  // timed out already
    auto done = std::move(it->second.done);
    psw_->results.erase(it);
    done(StatusOf(res.status_code(), res.status_message()));
  });

  transport_->Handle(wire::SEQ_REQUEST, [this](InMessage m, Responder r) {
    wire::SeqRequest req;
    if (!req.ParseFromString(m.header)) return r.Fail(InvalidArgumentError("bad SEQ_REQUEST header"));
    auto host = placement_.Sequencer(req.path(), view_);
    if (!host.ok() || *host != options_.id) {
      return r.Fail(UnavailableError("node " + std::to_string(options_.id.value) + " does not sequence " +
                                     req.path()));
    }
    if (auto it = psw_->seqs.find({req.file_id(), req.version()}); it != psw_->seqs.end()) {
      // This node owns the path's record: once a PUT committed a newer
      // version here, updates of the old one are refused (the writer falls
      // back to a full write of what it has).
      if (auto cur = records_.find(req.path());
          cur != records_.end() && internal::Live(*cur->second) && cur->second->file_id() != req.file_id()) {
        for (auto& [w, g] : it->second->grants) g.first.Fail(FailedPreconditionError(req.path() + " was replaced"));
        psw_->seqs.erase(it);
        return r.Fail(FailedPreconditionError(req.path() + ": version " + std::to_string(req.version()) +
                                              " was replaced by a newer one"));
      }
      return Sequence(it->second.get(), m.from, req, std::move(r));
    }
    // A new sequencer starts from the newest record any live owner has (this
    // node may have missed the last epoch while it was down).
    auto held = std::make_shared<Responder>(std::move(r));
    LookupRecord(req.path(), [this, req, held, from = m.from](StatusOr<RecordPtr> rec) {
      if (!rec.ok()) return held->Fail(rec.status());
      if ((*rec)->file_id() != req.file_id() || (*rec)->version() != req.version() || !internal::Live(**rec)) {
        return held->Fail(FailedPreconditionError(req.path() + ": version " + std::to_string(req.version()) +
                                                  " is no longer current"));
      }
      Status error;
      FileSeq* fs = HostSequencer(**rec, &error);
      if (!fs) return held->Fail(error);
      Sequence(fs, from, req, std::move(*held));
    });
  });

  transport_->Handle(wire::SEQ_FENCE, [shard_state](InMessage m, Responder r) {
    wire::SeqFence f;
    if (!f.ParseFromString(m.header)) return r.Fail(InvalidArgumentError("bad SEQ_FENCE header"));
    const ShardKey key = KeyOf(f.id());
    auto sp = shard_state(key);
    if (!sp.ok()) return r.Fail(sp.status());
    auto rep = (*sp)->state->Fence(f.epoch());
    if (!rep.ok()) return r.Fail(rep.status());
    // The raised epoch survives a restart when the bytes are whole.
    if (!rep->partial) (void)(*sp)->Reseal(key, true);
    std::erase_if((*sp)->incoming, [&](const auto& e) { return std::get<1>(e.first) < rep->epoch; });
    wire::SeqReport out;
    out.set_epoch(rep->epoch);
    out.set_applied_seq(rep->applied_seq);
    out.set_committed_seq(rep->committed_seq);
    out.set_has_undo(rep->has_undo);
    out.set_partial(rep->partial);
    out.set_undo_floor_seq(rep->undo_floor_seq);
    r.Reply(OutMessage{wire::SEQ_FENCE, out.SerializeAsString(), {}});
  });

  transport_->Handle(wire::SEQ_ROLLBACK, [shard_state](InMessage m, Responder r) {
    wire::SeqRollBack rb;
    if (!rb.ParseFromString(m.header)) return r.Fail(InvalidArgumentError("bad SEQ_ROLLBACK header"));
    const ShardKey key = KeyOf(rb.id());
    auto sp = shard_state(key);
    if (!sp.ok()) return r.Fail(sp.status());
    // Undoing only a partial seq returns the bytes the record is of.
    const bool below = rb.seq() < (*sp)->state->header().applied_seq;
    if (Status s = (*sp)->state->RollBack(rb.epoch(), rb.seq()); !s.ok()) return r.Fail(s);
    (*sp)->DirtyAll();
    if (below) (*sp)->Forget();
    if (Status s = (*sp)->Reseal(key, true); !s.ok()) return r.Fail(s);
    r.Reply(OutMessage{wire::SEQ_ROLLBACK, {}, {}});
  });

  transport_->Handle(wire::SEQ_INSTALL, [this, shard_state](InMessage m, Responder r) {
    wire::SeqInstall ins;
    if (!ins.ParseFromString(m.header) || ins.length() != m.payload.size() ||
        ec::Crc32c(m.payload) != ins.crc32c()) {
      return r.Fail(InvalidArgumentError("bad SEQ_INSTALL header"));
    }
    const ShardKey key = KeyOf(ins.id());
    const bool parity = key.index >= static_cast<uint32_t>(options_.k);
    if (const int crcs = ins.stripe_crc32c_size(); crcs != 0 && (crcs != options_.k || !parity)) {
      return r.Fail(InvalidArgumentError("SEQ_INSTALL of shard " + std::to_string(key.index) + " carries " +
                                         std::to_string(crcs) + " stripe data CRCs; only a parity shard carries k=" +
                                         std::to_string(options_.k)));
    }
    ShardStore* store = parity ? parity_ : data_;
    if (auto sp = shard_state(key); sp.ok()) {
      // A live, lagging shard: replaced, its old bytes kept as undo.
      if (Status s = (*sp)->state->Rebuild(ins.epoch(), ins.seq(), m.payload); !s.ok()) return r.Fail(s);
      (*sp)->DirtyAll();
      (*sp)->Forget();
      if (parity && ins.stripe_crc32c_size() == options_.k) {
        std::copy(ins.stripe_crc32c().begin(), ins.stripe_crc32c().end(), (*sp)->data_crcs.begin());
      }
      if (Status s = (*sp)->Reseal(key, true); !s.ok()) return r.Fail(s);
      return r.Reply(OutMessage{wire::SEQ_INSTALL, {}, {}});
    }
    // Lost here (wiped, corrupt): a fresh shard at the round's seq.
    DropPswShard(key);
    auto res = store->Reserve(key, m.payload.size());
    if (!res.ok()) return r.Fail(res.status());
    std::memcpy((*res)->data().data(), m.payload.data(), m.payload.size());
    ShardMeta meta{key, m.payload.size(), ins.seq(), ins.epoch(), ins.crc32c()};
    meta.stripe_crcs.assign(ins.stripe_crc32c().begin(), ins.stripe_crc32c().end());
    Status s = store->Commit(std::move(res).value(), meta);
    if (!s.ok()) return r.Fail(s);
    r.Reply(OutMessage{wire::SEQ_INSTALL, {}, {}});
  });
}

// Queues a writer's request at the file's sequencer.
void Node::Sequence(FileSeq* fs, NodeId from, const wire::SeqRequest& req, Responder r) {
  const auto id = std::make_pair(uint64_t{from.value}, req.request());
  if (fs->grants.count(id)) return;  // a duplicate: the first one is answered
  fs->grants.emplace(id, std::make_pair(std::move(r), now_));
  psw::Actions out;
  Status s = fs->seq->RequestUpdate({psw::WriterId(from.value), req.request(), req.stripe(),
                                     {req.offset(), req.length()}},
                                    &out);
  for (auto& a : out) fs->pending.push_back(std::move(a));
  if (!s.ok()) {
    auto g = fs->grants.find(id);
    if (g != fs->grants.end()) {
      g->second.first.Fail(s);
      fs->grants.erase(g);
    }
  }
  Execute(fs);
}

}  // namespace fern::daemon
