#include "daemon/node.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include <sys/mman.h>
#include <unistd.h>

#include "daemon/node_internal.h"
#include "ec/crc32c.h"
#include "fern_wire.pb.h"

namespace fern::daemon {
namespace {

using transport::InMessage;
using transport::OutMessage;
using transport::Payload;
using transport::ReceiveBuffer;
using transport::Responder;

// A reserved slot travelling from the payload sink to the handler.
struct PendingShard {
  std::unique_ptr<ShardStore::Reservation> reservation;
};

ShardKey KeyOf(const wire::ShardId& id) {
  return ShardKey{id.file_id(), id.version(), id.stripe(), id.index()};
}

using internal::SetId;

std::string NodeList(const std::vector<NodeId>& nodes) {
  std::string s;
  for (auto n : nodes) s += (s.empty() ? "" : ",") + std::to_string(n.value);
  return s;
}

Node::FileInfo InfoOf(const wire::FileRecord& r) {
  return {r.version(), r.size(), r.uid(), r.gid(), r.mode(), r.mtime_ns()};
}

}  // namespace

Node::BufferPool::~BufferPool() {
  for (uint8_t* p : free_) std::free(p);
}

std::shared_ptr<uint8_t> Node::BufferPool::Take() {
  uint8_t* p = nullptr;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!free_.empty()) {
      p = free_.back();
      free_.pop_back();
    }
  }
  if (!p) {
    p = static_cast<uint8_t*>(std::aligned_alloc(64, bytes_));  // faulted in by its first use
    if (!p) return nullptr;
  }
  return std::shared_ptr<uint8_t>(p, [pool = shared_from_this()](uint8_t* q) {
    std::lock_guard<std::mutex> l(pool->mu_);
    if (pool->free_.size() < pool->keep_) {
      pool->free_.push_back(q);
    } else {
      std::free(q);
    }
  });
}

struct Node::PutOp {
  std::string path;
  uint64_t absent_stripes = 0;  // stripes written with fewer than k+m shards (min_shards)
  std::set<uint32_t> absent_nodes;
  std::span<const uint8_t> bytes;
  std::shared_ptr<const void> owner;
  std::function<void(Status)> done;
  wire::FileRecord record;
  std::vector<wire::FileRecord> expired;  // versions to collect after commit
  uint64_t stripes = 0;
  uint64_t next_stripe = 0;   // the next stripe to encode and send
  int stripes_in_flight = 0;
  int pending = 0;            // metadata commit
  Status failure;
  // Stripes sent again after a shard's node failed mid-put, and where
  // their earlier try sent shards (landed or maybe landed), by stripe:
  // (index, node).
  std::map<uint64_t, int> stripe_retries;
  std::map<uint64_t, std::vector<std::pair<int, NodeId>>> sent_before;
  // Nodes a request of this put timed out on (alive, maybe, but stuck: a
  // stopped process, a loop blocked on a hung disk): stripes sent again
  // are placed without them.
  std::set<uint32_t> slow_nodes;
};

struct Node::GetOp {
  std::string path;
  wire::FileRecord record;
  std::function<void(StatusOr<FileInfo>)> done;
  std::span<uint8_t> out;  // GetInto: the caller's bytes
  // GetToFile: the descriptor written with pwrite (out stays empty); shared
  // so that it stays open while writes run.
  std::shared_ptr<const int> out_file;
  // Per stripe: the shard payloads that arrived intact.
  struct Stripe {
    std::vector<std::shared_ptr<void>> owners;
    std::vector<std::span<uint8_t>> shards;
    ec::ShardSet present;
    ec::ShardSet tried;
    std::vector<uint64_t> seqs;  // each present shard's update seq (PSW)
    std::vector<uint64_t> epochs;  // and its sequencer epoch
    internal::ShardChecks checks;
    int pending = 0;
    bool parity_fetched = false;
    int refetches = 0;  // decodes refused because the shards' seqs differed
    // NodeOptions::check_reads: the parity shard whose header was asked for
    // its data CRCs (-1: none), its seq, and whether the data disagreed.
    int record_from = -1;
    uint64_t record_seq = 0;
    bool record_asked = false;
    bool suspect = false;
    // Hedging (NodeOptions::read_hedge). Requests of an earlier round were
    // left behind: their replies are refused and change nothing.
    uint32_t round = 0;
    ec::ShardSet receiving;  // replies of this round whose bytes are landing
    TimePoint asked{};       // when the stripe's first requests went out
    bool hedge_armed = false;
    bool hedged = false;
    bool checked = false;  // a hedged stripe's data passed CheckAgainstRecord already
  };
  std::vector<Stripe> stripes;
  uint64_t next_stripe = 0;  // the next stripe to fetch
  int in_flight = 0;         // stripes being fetched (at most kGetWindow)
  // Output bytes [0, ready) have their pages allocated (PrefaultOutput);
  // a stripe is fetched only once its range is ready.
  uint64_t ready = UINT64_MAX;
  int prefaults_pending = 0;
  bool finished = false;
  Status failure;
};

StatusOr<std::unique_ptr<Node>> Node::Create(const NodeOptions& options,
                                             transport::Transport* transport, ShardStore* data,
                                             ShardStore* parity, placement::ClusterView view,
                                             MetaStore* meta) {
  if (options.keep_versions < 1) return InvalidArgumentError("keep_versions must be >= 1");
  if (options.min_shards != 0 && (options.min_shards < options.k || options.min_shards > options.k + options.m)) {
    return InvalidArgumentError("min_shards must be between k=" + std::to_string(options.k) + " and k+m=" +
                                std::to_string(options.k + options.m) + " (0: k+m), not " +
                                std::to_string(options.min_shards));
  }
  FERN_ASSIGN_OR_RETURN(auto placement,
                        placement::Placement::Make(options.placement_seed, options.k, options.m));
  FERN_ASSIGN_OR_RETURN(auto coder, ec::MakeErasureCoder({.backend = options.backend,
                                                          .technique = options.technique,
                                                          .k = options.k,
                                                          .m = options.m}));
  FERN_ASSIGN_OR_RETURN(auto geometry, ec::StripeGeometry::Make(options.k, options.shard_size,
                                                                coder->alignment()));
  std::unique_ptr<Node> node(new Node(options, transport, data, parity, std::move(view),
                                      placement, std::move(coder), geometry));
  if (meta) {
    node->meta_ = meta;
  } else {
    node->owned_meta_ = NewMemoryMetaStore();
    node->meta_ = node->owned_meta_.get();
  }
  FERN_ASSIGN_OR_RETURN(auto records, node->meta_->LoadAll());
  for (auto& r : records) {
    std::string path = r.path();  // not r.path(): the right side is evaluated first
    node->records_[path] = std::make_unique<wire::FileRecord>(std::move(r));
  }
  node->InstallHandlers();
  return node;
}

Node::Node(const NodeOptions& options, transport::Transport* t, ShardStore* data,
           ShardStore* parity, placement::ClusterView view, placement::Placement placement,
           std::unique_ptr<ec::ErasureCoder> coder, ec::StripeGeometry geometry)
    : options_(options),
      transport_(t),
      data_(data),
      parity_(parity),
      view_(std::move(view)),
      placement_(placement),
      coder_(std::move(coder)),
      geometry_(geometry),
      stripe_pool_(std::make_shared<BufferPool>((options.m + options.k) * options.shard_size, 64)),
      reply_pool_(std::make_shared<BufferPool>((options.shard_size + 63) / 64 * 64, 256)) {
  if (options.batch_durable_commits) {
    flusher_ = std::make_unique<DurableFlusher>(parity_);
    meta_writer_ = std::make_unique<WorkerThread>("fern-meta-log");
  }
  if (options.encode_on_worker) {
    encoder_ = std::make_unique<WorkerThread>("fern-encode");
    writer_ = std::make_unique<WorkerThread>("fern-get-write");
  }
}

Node::~Node() = default;

void Node::SetAlive(NodeId peer, bool alive, const std::string& why) {
  if (peer == options_.id || view_.IsAlive(peer) == alive) return;
  view_ = view_.WithAlive(peer, alive);
  if (alive) last_heard_[peer.value] = now_;
  if (alive) dead_since_.erase(peer.value);  // dead again later: its clock starts afresh
  PswMembership(peer, alive);
  if (on_membership_) on_membership_(peer, alive, why);
}

void Node::FlushDurable() {
  PswSync();
  // Called every loop round: no syscall unless a job can have finished.
  if (encoder_ && encoder_->in_flight() > 0) encoder_->Drain();
  if (writer_ && writer_->in_flight() > 0) writer_->Drain();
  if (meta_writer_ && meta_writer_->in_flight() > 0) meta_writer_->Drain();
  if (!flusher_) return;
  for (auto& p : durable_pending_) {
    auto responder = std::make_shared<Responder>(std::move(p.responder));
    const ShardKey key = p.commit.meta.key;
    flusher_->Submit(std::move(p.commit), [this, responder, key](Status s) {
      auto it = durable_in_flight_.find(key);
      if (it != durable_in_flight_.end() && --it->second.count == 0) {
        if (it->second.deleted) (void)parity_->Remove(key);
        durable_in_flight_.erase(it);
      }
      if (s.ok()) {
        responder->Reply(OutMessage{wire::SHARD_PUT, {}, {}});
      } else {
        responder->Fail(s);
      }
    });
  }
  durable_pending_.clear();
  // Called every loop round: no syscall unless a batch can have finished.
  if (flusher_->in_flight() > 0) flusher_->Drain();
}

std::vector<int> Node::event_fds() const {
  std::vector<int> fds;
  if (flusher_) fds.push_back(flusher_->event_fd());
  if (encoder_) fds.push_back(encoder_->event_fd());
  if (writer_) fds.push_back(writer_->event_fd());
  if (meta_writer_) fds.push_back(meta_writer_->event_fd());
  return fds;
}
Node::StripeHealth Node::stripe_health() const {
  StripeHealth h;
  const bool all_alive = view_.live_count() == static_cast<int>(view_.nodes().size());
  auto any_absent = [](const wire::FileRecord& r) {
    for (const auto& mv : r.moved()) {
      if (mv.absent() != 0) return true;
    }
    return false;
  };
  for (const auto& [path, rec] : records_) {
    if (!internal::Live(*rec) || rec->is_dir()) continue;
    auto first = placement_.Sequencer(path, view_);
    if (!first.ok() || *first != options_.id) continue;
    ++h.files;
    const uint64_t stripes = geometry_.StripeCount(rec->size());
    h.stripes += stripes;
    if (all_alive && !any_absent(*rec)) continue;
    for (uint64_t s = 0; s < stripes; ++s) {
      const int down = ShardsDown(*rec, s);
      if (down > options_.m) {
        ++h.lost;
      } else if (down > 0) {
        ++h.degraded;
      }
    }
  }
  return h;
}

uint64_t Node::durable_batches() const { return flusher_ ? flusher_->batches() : 0; }
uint64_t Node::durable_shards() const { return flusher_ ? flusher_->shards() : 0; }

void Node::PeerFailed(NodeId peer, const Status& why) { SetAlive(peer, false, std::string(why.message())); }

void Node::WatchDisk() {
  if (!flusher_ || options_.disk_stall == Duration::zero()) return;
  // Parity batches and record log appends: both on the parity disk.
  const uint64_t finished = flusher_->batches() + meta_writes_done_;
  const size_t waiting = flusher_->in_flight() + (meta_writer_ ? meta_writer_->in_flight() : 0);
  auto seconds = [](Duration d) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f", std::chrono::duration<double>(d).count());
    return std::string(text);
  };
  if (waiting == 0 || finished != disk_.batches_seen) {
    if (disk_.stalled) {
      std::fprintf(stderr,
                   "fern-ec: node %u: parity disk finished a write after %s s: taking writes again (%llu refused "
                   "meanwhile)\n",
                   options_.id.value, seconds(now_ - disk_.waiting_since).c_str(),
                   static_cast<unsigned long long>(disk_.refused));
    }
    disk_.batches_seen = finished;
    disk_.waiting_since = now_;
    disk_.stalled = false;
    return;
  }
  if (disk_.stalled || now_ - disk_.waiting_since < options_.disk_stall) return;
  disk_.stalled = true;
  ++disk_.stalls;
  std::fprintf(stderr,
               "fern-ec: node %u: parity disk stalled: no write finished for %s s with %zu parity shards and "
               "file records waiting; peers count this node dead until one does\n",
               options_.id.value, seconds(now_ - disk_.waiting_since).c_str(), waiting);
}

Status Node::RefuseIfDiskStalled(const char* what) {
  if (!disk_.stalled) return Status();
  ++disk_.refused;
  return UnavailableError("node " + std::to_string(options_.id.value) + ": parity disk stalled (no write finished for " +
                          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now_ - disk_.waiting_since).count()) +
                          " s): " + what + " refused");
}

const placement::ClusterView& Node::WriteView(std::optional<placement::ClusterView>* narrowed,
                                              const std::set<uint32_t>& left_out) const {
  if (!disk_.stalled && left_out.empty()) return view_;
  *narrowed = disk_.stalled ? view_.WithAlive(options_.id, false) : view_;
  for (uint32_t id : left_out) **narrowed = (*narrowed)->WithAlive(NodeId(id), false);
  return **narrowed;
}

bool Node::PeerUnusable(NodeId node, const Status& failure) {
  if (failure.code() == StatusCode::kDeadlineExceeded) {
    slow_until_[node.value] = now_ + options_.dead_after;
    return true;
  }
  return failure.code() == StatusCode::kUnavailable || !view_.IsAlive(node);
}

bool Node::IsSlow(NodeId id) const {
  auto it = slow_until_.find(id.value);
  return it != slow_until_.end() && it->second > now_;
}

std::set<uint32_t> Node::SlowNodes() {
  std::set<uint32_t> slow;
  for (auto it = slow_until_.begin(); it != slow_until_.end();) {
    if (it->second <= now_) {
      it = slow_until_.erase(it);
      continue;
    }
    slow.insert(it->first);
    ++it;
  }
  return slow;
}

Node::DiskWatch Node::disk_watch() const {
  return {disk_.stalled, disk_.stalled ? now_ - disk_.waiting_since : Duration{}, disk_.stalls, disk_.refused};
}

void Node::Tick(TimePoint now) {
  // This node's own loop stalled (an overloaded machine, a paused daemon):
  // the silence is ours, not the peers'. Start their clocks afresh.
  const bool stalled = now_ != TimePoint{} && now - now_ > options_.dead_after / 2;
  now_ = now;
  if (stalled) {
    for (auto& [id, heard] : last_heard_) heard = now;
  }
  WatchDisk();
  wire::Heartbeat hb;
  hb.set_cluster_epoch(view_.epoch());
  if (disk_.stalled) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now_ - disk_.waiting_since).count();
    hb.set_disk_stalled_ms(static_cast<uint64_t>(std::max<int64_t>(ms, 1)));
  }
  const std::string body = hb.SerializeAsString();
  // SetAlive replaces view_, so walk a copy of the ids, not view_.nodes().
  std::vector<NodeId> peers;
  peers.reserve(view_.nodes().size());
  for (const auto& info : view_.nodes()) {
    if (info.id != options_.id) peers.push_back(info.id);
  }
  for (NodeId peer : peers) {
    auto heard = last_heard_.find(peer.value);
    if (heard == last_heard_.end()) {
      last_heard_[peer.value] = now;  // grace from the first tick
    } else if (view_.IsAlive(peer) && now - heard->second > options_.dead_after) {
      SetAlive(peer, false,
               "silent for " +
                   std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - heard->second).count()) +
                   " ms");
    }
    transport_->Send(peer, OutMessage{wire::HEARTBEAT, body, {}});
  }
  PswTick();
  MaybeReplace();
  MaybeSweepOrphans();
  // Deletes held for nodes that were down: sent once they are back.
  size_t budget = kDeferredDeletesPerTick;
  for (auto it = deferred_deletes_.begin(); it != deferred_deletes_.end() && budget > 0;) {
    const NodeId to(it->first);
    if (!view_.IsAlive(to)) {
      ++it;
      continue;
    }
    auto& keys = it->second;
    while (!keys.empty() && budget > 0) {
      const ShardKey key = keys.back();
      keys.pop_back();
      --budget;
      DeleteShard(to, key, [this, to, key](Status st) {
        if (st.ok() || st.code() == StatusCode::kNotFound) {
          ++deferred_deletes_sent_;
        } else {
          deferred_deletes_[to.value].push_back(key);  // try again
        }
      });
    }
    it = keys.empty() ? deferred_deletes_.erase(it) : std::next(it);
  }
  // Nodes back whose old copies of moved shards can go (node_replace.cc).
  std::vector<NodeId> back;
  for (const auto& [id, keys] : moved_away_) {
    if (view_.IsAlive(NodeId(id)) && !keys.empty()) back.push_back(NodeId(id));
  }
  for (NodeId id : back) DeleteMovedAway(id);
  // Nodes this gateway wrote stripes without: each live one is told, every
  // tick until it answers, so its repair pass writes what it missed (it may
  // have come back before the put committed, or without restarting).
  for (uint32_t id : absent_on_) {
    if (!view_.IsAlive(NodeId(id)) || hinting_.count(id)) continue;
    hinting_.insert(id);
    transport_->Call(NodeId(id), OutMessage{wire::REPAIR_HINT, {}, {}}, {options_.rpc_timeout, nullptr},
                     [this, id](StatusOr<InMessage> r) {
                       hinting_.erase(id);
                       if (r.ok()) absent_on_.erase(id);
                     });
  }
}

// Unique per put: the path's hash mixed with this node, the time and a
// counter, so shard keys of a new version never meet those of a removed,
// renamed or concurrently written file.
uint64_t Node::NewFileId(const std::string& path) {
  const uint64_t salt = options_.id_seed ? placement::Mix64(options_.id_seed) : internal::NowNs();
  uint64_t id = placement::Mix64(placement::HashPath(path) ^ salt ^
                                 (uint64_t{options_.id.value} << 40) ^ ++file_id_counter_);
  return id ? id : 1;
}

bool Node::InstallRecord(std::unique_ptr<wire::FileRecord> rec, std::function<void(Status)> done) {
  auto& slot = records_[rec->path()];
  if (slot && internal::Newer(*slot, *rec)) {
    done(Status());  // a newer one is here already
    return false;
  }
  // The record log is on the parity disk: not queued behind a stall.
  if (Status s = RefuseIfDiskStalled("file record"); !s.ok()) {
    done(s);
    return false;
  }
  if (!meta_writer_) {
    Status s = meta_->Put(*rec);
    if (s.ok()) slot = std::move(rec);
    done(s);
    return s.ok();
  }
  // Taken now, logged on meta_writer_ from a copy; done once durable.
  auto copy = std::make_shared<const wire::FileRecord>(*rec);
  slot = std::move(rec);
  auto result = std::make_shared<Status>();
  meta_writer_->Submit([meta = meta_, copy, result] { *result = meta->Put(*copy); },
                       [this, copy, result, done = std::move(done)] {
                         ++meta_writes_done_;
                         if (!result->ok()) {
                           // In memory here but not in the log: the writer hears of
                           // the failure; a restart of this node forgets the record.
                           std::fprintf(stderr, "fern-ec: node %u: record of %s not logged: %s\n",
                                        options_.id.value, copy->path().c_str(), result->ToString().c_str());
                         }
                         done(*result);
                       });
  return true;
}

void Node::InstallHandlers() {
  InstallPswHandlers();
  InstallOrphanHandler();
  // ---- shard service ----
  transport_->Handle(
      wire::SHARD_PUT,
      [this](InMessage m, Responder r) {
        wire::ShardPut put;
        if (!put.ParseFromString(m.header)) return r.Fail(InvalidArgumentError("bad SHARD_PUT header"));
        auto pending = std::static_pointer_cast<PendingShard>(m.payload_owner);
        ShardStore* store = put.id().index() < static_cast<uint32_t>(options_.k) ? data_ : parity_;
        ShardMeta meta{KeyOf(put.id()), put.length(), put.seq(), put.epoch(), put.crc32c()};
        meta.stripe_crcs.assign(put.stripe_crc32c().begin(), put.stripe_crc32c().end());
        if (put.replace_if_unchanged()) {
          // Checked here and committed below, on the loop, where in-place
          // updates run too (not in a group commit): none can slip in between.
          auto cur = store->Read(meta.key, ShardStore::Check::kTrustCaller);
          if (!cur.ok() || cur->meta.seq != put.seq() || cur->meta.epoch != put.epoch() ||
              cur->meta.crc32c != put.expect_crc32c() || PswBusy(meta.key)) {
            return r.Fail(FailedPreconditionError(meta.key.ToString() + " changed since it was read, or is being "
                                                  "updated in place: not replaced"));
          }
        }
        DropPswShard(meta.key);  // replaced: an update in progress wrote to the old slot
        if (store == parity_ && options_.batch_durable_commits && !put.replace_if_unchanged()) {
          // Not queued behind a stalled disk: the gateway sends it elsewhere.
          if (Status s = RefuseIfDiskStalled("parity shard"); !s.ok()) return r.Fail(s);
          ++durable_in_flight_[meta.key].count;
          durable_pending_.push_back({{std::move(pending->reservation), meta}, std::move(r)});
          return;
        }
        Status s = store->Commit(std::move(pending->reservation), meta);
        if (!s.ok()) return r.Fail(s);
        r.Reply(OutMessage{wire::SHARD_PUT, {}, {}});
      },
      [this](NodeId, transport::MessageKind, std::string_view header,
             uint64_t len) -> StatusOr<ReceiveBuffer> {
        wire::ShardPut put;
        if (!put.ParseFromArray(header.data(), static_cast<int>(header.size())) ||
            put.length() != len) {
          return InvalidArgumentError("SHARD_PUT header does not describe its payload");
        }
        if (const int crcs = put.stripe_crc32c_size();
            crcs != 0 && (crcs != options_.k || put.id().index() < static_cast<uint32_t>(options_.k))) {
          return InvalidArgumentError("SHARD_PUT of shard " + std::to_string(put.id().index()) + " carries " +
                                      std::to_string(crcs) + " stripe data CRCs; only a parity shard carries them, k=" +
                                      std::to_string(options_.k));
        }
        ShardStore* store = put.id().index() < static_cast<uint32_t>(options_.k) ? data_ : parity_;
        auto pending = std::make_shared<PendingShard>();
        FERN_ASSIGN_OR_RETURN(pending->reservation, store->Reserve(KeyOf(put.id()), len));
        return ReceiveBuffer{pending->reservation->data(), pending};
      });

  transport_->Handle(wire::SHARD_GET, [this](InMessage m, Responder r) {
    wire::ShardGet get;
    if (!get.ParseFromString(m.header)) return r.Fail(InvalidArgumentError("bad SHARD_GET header"));
    ShardStore* store = get.id().index() < static_cast<uint32_t>(options_.k) ? data_ : parity_;
    // The gateway checks the CRC after the transfer: one pass over the bytes,
    // not two. An inspection checks here and moves no bytes.
    auto view = store->Read(KeyOf(get.id()),
                            get.verify_only() ? ShardStore::Check::kVerify : ShardStore::Check::kTrustCaller);
    if (!view.ok()) return r.Fail(view.status());
    wire::ShardGetReply reply;
    reply.set_length(view->meta.length);
    reply.set_crc32c(view->meta.crc32c);
    reply.set_seq(view->meta.seq);
    reply.set_epoch(view->meta.epoch);
    for (uint32_t c : view->meta.stripe_crcs) reply.add_stripe_crc32c(c);
    if (get.verify_only() || get.header_only()) {
      return r.Reply(OutMessage{wire::SHARD_GET, reply.SerializeAsString(), {}});
    }
    auto held = std::make_shared<ShardStore::View>(std::move(view).value());
    r.Reply(OutMessage{wire::SHARD_GET, reply.SerializeAsString(), Payload::View(held->data, held)});
  });

  transport_->Handle(wire::SHARD_DELETE, [this](InMessage m, Responder r) {
    wire::ShardDelete del;
    if (!del.ParseFromString(m.header)) return r.Fail(InvalidArgumentError("bad SHARD_DELETE header"));
    ShardStore* store = del.id().index() < static_cast<uint32_t>(options_.k) ? data_ : parity_;
    if (auto it = durable_in_flight_.find(KeyOf(del.id())); store == parity_ && it != durable_in_flight_.end()) {
      it->second.deleted = true;  // removed when its commit lands (FlushDurable)
    }
    DropPswShard(KeyOf(del.id()));
    Status s = store->Remove(KeyOf(del.id()));
    if (!s.ok() && s.code() != StatusCode::kNotFound) return r.Fail(s);
    r.Reply(OutMessage{wire::SHARD_DELETE, {}, {}});
  });

  // ---- membership ----
  transport_->Handle(wire::HEARTBEAT, [this](InMessage m, Responder) {
    // Stamped with the last tick's time: at most a tick (1 s) early, which
    // only makes the silence look longer by that much.
    last_heard_[m.from.value] = now_;
    wire::Heartbeat hb;
    if (hb.ParseFromString(m.header) && hb.disk_stalled_ms() > 0) {
      // Alive but unable to make parity durable: dead to this node's writes
      // and reads until its heartbeats say the disk moves again.
      return SetAlive(m.from, false,
                      "its parity disk has finished no write for " + std::to_string(hb.disk_stalled_ms()) + " ms");
    }
    if (!view_.IsAlive(m.from)) SetAlive(m.from, true, "heartbeat received");
  });

  transport_->Handle(wire::REPAIR_HINT, [this](InMessage, Responder r) {
    repair_hint_ = true;
    r.Reply(OutMessage{wire::REPAIR_HINT, {}, {}});
  });

  // ---- metadata service ----
  transport_->Handle(wire::META_PUT, [this](InMessage m, Responder r) {
    auto rec = std::make_unique<wire::FileRecord>();
    if (!rec->ParseFromString(m.header)) return r.Fail(InvalidArgumentError("bad META_PUT header"));
    auto responder = std::make_shared<Responder>(std::move(r));
    InstallRecord(std::move(rec), [responder](Status s) {
      if (!s.ok()) return responder->Fail(s);
      responder->Reply(OutMessage{wire::META_PUT, {}, {}});
    });
  });
  transport_->Handle(wire::META_AMEND, [this](InMessage m, Responder r) {
    wire::MetaAmend amend;
    if (!amend.ParseFromString(m.header)) return r.Fail(InvalidArgumentError("bad META_AMEND header"));
    auto it = records_.find(amend.path());
    if (it == records_.end()) return r.Fail(NotFoundError(amend.path() + ": no such file"));
    wire::FileRecord changed = *it->second;
    auto applied = AmendRecord(&changed, amend);
    if (!applied.ok()) return r.Fail(applied.status());
    if (*applied > 0) {
      // More moves applied: newer than the record here, so it is taken.
      changed.set_amended(changed.amended() + static_cast<uint64_t>(*applied));
      auto responder = std::make_shared<Responder>(std::move(r));
      const bool taken = InstallRecord(std::make_unique<wire::FileRecord>(std::move(changed)), [responder](Status s) {
        if (!s.ok()) return responder->Fail(s);
        responder->Reply(OutMessage{wire::META_AMEND, {}, {}});
      });
      // A sequencer hosted here keeps its own copy, which it persists with
      // a newer epoch (and would put the old layout back).
      if (taken) AmendHostedSeq(amend);
      return;
    }
    r.Reply(OutMessage{wire::META_AMEND, {}, {}});
  });
  transport_->Handle(wire::META_GET, [this](InMessage m, Responder r) {
    wire::MetaGet get;
    if (!get.ParseFromString(m.header)) return r.Fail(InvalidArgumentError("bad META_GET header"));
    auto it = records_.find(get.path());
    if (it == records_.end()) return r.Fail(NotFoundError(get.path() + ": no such file"));
    r.Reply(OutMessage{wire::META_GET, it->second->SerializeAsString(), {}});
  });
  transport_->Handle(wire::META_LIST, [this](InMessage m, Responder r) {
    wire::MetaList list;
    if (!list.ParseFromString(m.header)) return r.Fail(InvalidArgumentError("bad META_LIST header"));
    const std::string prefix = list.dir() == "/" ? "/" : list.dir() + "/";
    auto reply = std::make_shared<std::string>();
    wire::MetaListReply out;
    for (auto it = records_.lower_bound(prefix);
         it != records_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
      if (list.full()) {
        *out.add_records() = *it->second;
        continue;
      }
      auto* e = out.add_records();
      e->set_path(it->second->path());
      e->set_generation(it->second->generation());
      e->set_file_id(it->second->file_id());
      e->set_deleted(it->second->deleted());
      e->set_is_dir(it->second->is_dir());
    }
    // In the payload: a big directory outgrows the header limit.
    *reply = out.SerializeAsString();
    r.Reply(OutMessage{wire::META_LIST, {},
                       Payload::View({reinterpret_cast<const uint8_t*>(reply->data()), reply->size()},
                                     reply)});
  });
}

struct Node::Lookup {
  std::string path;
  std::string request;  // the META_GET
  std::shared_ptr<wire::FileRecord> best;
  std::set<uint32_t> asked;        // replicas asked
  std::set<uint32_t> waiting;      // asked, not answered yet
  std::set<uint32_t> left_behind;  // laggards a hedge stopped waiting for
  int answered = 0;                // OK or NotFound
  bool owner_answered = false;     // a metadata owner itself, not a stand-in
  bool finished = false;
  bool hedge_armed = false;
  TimePoint started{};
  Status last_error;
  std::function<void(StatusOr<RecordPtr>)> done;
};

void Node::LookupRecord(const std::string& path, std::function<void(StatusOr<RecordPtr>)> done) {
  auto lk = std::make_shared<Lookup>();
  lk->path = path;
  lk->done = std::move(done);
  lk->started = transport_->clock().Now();
  wire::MetaGet get;
  get.set_path(path);
  lk->request = get.SerializeAsString();
  std::vector<NodeId> owners;
  // Asked as a write would store: without nodes stuck lately (their stand-ins
  // instead), or this node while its disk is stalled, if an owner is left.
  std::optional<placement::ClusterView> narrowed;
  const placement::ClusterView* view = &WriteView(&narrowed, SlowNodes());
  std::vector<NodeId> replicas = placement_.MetadataReplicas(path, *view, &owners);
  if (view != &view_ && std::none_of(owners.begin(), owners.end(), [&](NodeId id) { return view->IsAlive(id); })) {
    view = &view_;
    replicas = placement_.MetadataReplicas(path, *view, &owners);
  }
  for (NodeId replica : replicas) AskForRecord(lk, replica, std::count(owners.begin(), owners.end(), replica) > 0);
  if (lk->asked.empty()) lk->done(UnavailableError("all metadata owners of " + path + " are down"));
}

void Node::AskForRecord(const std::shared_ptr<Lookup>& lk, NodeId replica, bool is_owner) {
  lk->asked.insert(replica.value);
  lk->waiting.insert(replica.value);
  transport_->Call(replica, OutMessage{wire::META_GET, lk->request, {}}, {options_.rpc_timeout, nullptr},
                   [this, lk, is_owner, replica](StatusOr<InMessage> r) {
                     if (r.ok()) {
                       auto rec = std::make_shared<wire::FileRecord>();
                       if (rec->ParseFromString(r->header)) {
                         ++lk->answered;
                         lk->owner_answered |= is_owner;
                         if (!lk->best || internal::Newer(*rec, *lk->best)) lk->best = rec;
                       }
                     } else if (r.status().code() == StatusCode::kNotFound) {
                       ++lk->answered;
                       lk->owner_answered |= is_owner;
                     } else {
                       lk->last_error = r.status();
                       // Records written while it was out went to its stand-in.
                       const bool unusable = PeerUnusable(replica, r.status());
                       if (unusable && !lk->finished) AskStandIns(lk, {replica.value});
                     }
                     lk->waiting.erase(replica.value);
                     FinishLookup(lk);
                   });
}

void Node::FinishLookup(const std::shared_ptr<Lookup>& lk) {
  if (lk->finished) return;
  if (std::any_of(lk->waiting.begin(), lk->waiting.end(), [&](uint32_t w) { return !lk->left_behind.count(w); })) {
    // A replica is still out: hedge (NodeOptions::read_hedge) once it lags
    // three times as long as the first answer took.
    if (lk->waiting.size() < lk->asked.size()) {
      HedgeOnce(options_.read_hedge, lk->started, &lk->hedge_armed, [this, lk] { HedgeLookup(lk); });
    }
    return;
  }
  lk->finished = true;
  const std::string& path = lk->path;
  if (lk->best) return lk->done(lk->best);
  // Every write reaches a live owner (StoreRecord): stand-ins alone cannot
  // say the path does not exist.
  if (lk->owner_answered) return lk->done(NotFoundError(path + ": no such file"));
  if (lk->answered > 0) {
    return lk->done(UnavailableError("all metadata owners of " + path + " are down and no stand-in holds its record"));
  }
  lk->done(UnavailableError("no metadata owner of " + path + " answered: " + std::string(lk->last_error.message())));
}

void Node::HedgeLookup(const std::shared_ptr<Lookup>& lk) {
  if (lk->finished || lk->waiting.empty()) return;
  const std::set<uint32_t> lagging = lk->waiting;
  const size_t asked = lk->asked.size();
  AskStandIns(lk, lagging);
  if (lk->asked.size() == asked && !lk->owner_answered) {
    // Nobody else to ask and no owner has answered: wait for the laggards.
    for (uint32_t w : lagging) lk->left_behind.erase(w);
    return;
  }
  ++hedges_.lookups;
  FinishLookup(lk);
}

// Replicas that failed or lag are left behind and their stand-ins asked:
// the replicas a write would have used had it found them out (StoreRecord),
// so the newest committed record is among the answers unless more than m
// of its holders fail.
void Node::AskStandIns(const std::shared_ptr<Lookup>& lk, const std::set<uint32_t>& out) {
  lk->left_behind.insert(out.begin(), out.end());
  std::set<uint32_t> slow = SlowNodes();
  slow.insert(lk->left_behind.begin(), lk->left_behind.end());
  std::vector<NodeId> owners;
  std::optional<placement::ClusterView> narrowed;
  const placement::ClusterView& view = WriteView(&narrowed, slow);
  for (NodeId replica : placement_.MetadataReplicas(lk->path, view, &owners)) {
    if (lk->asked.count(replica.value)) continue;
    AskForRecord(lk, replica, std::count(owners.begin(), owners.end(), replica) > 0);
  }
}

void Node::Put(const std::string& path, std::span<const uint8_t> bytes,
               std::shared_ptr<const void> owner, const Caller& caller, uint32_t mode,
               std::function<void(Status)> done) {
  auto op = std::make_shared<PutOp>();
  op->path = path;
  op->bytes = bytes;
  op->owner = std::move(owner);
  op->done = std::move(done);
  op->slow_nodes = SlowNodes();
  if (path == "/") return op->done(InvalidArgumentError("put /: is a directory").WithErrno(EISDIR));
  LookupRecord(path, [this, op, caller, mode](StatusOr<RecordPtr> cur) {
    if (!cur.ok() && cur.status().code() != StatusCode::kNotFound) {
      return op->done(cur.status().WithContext("put " + op->path));
    }
    const wire::FileRecord* old = cur.ok() && internal::Live(**cur) ? cur->get() : nullptr;
    if (old && old->is_dir()) {
      return op->done(InvalidArgumentError("put " + op->path + ": is a directory").WithErrno(EISDIR));
    }
    if (old && !internal::Permits(*old, caller, W_OK)) {
      return op->done(PermissionDeniedError("put " + op->path + ": uid " +
                                            std::to_string(caller.uid) + " may not write it"));
    }
    wire::FileRecord& rec = op->record;
    rec.set_path(op->path);
    rec.set_file_id(NewFileId(op->path));
    // Until the put ends its shards have no record: an orphan sweep asking
    // this node leaves them alone.
    puts_writing_.insert(rec.file_id());
    op->done = [this, id = rec.file_id(), done = std::move(op->done)](Status s) {
      if (auto it = puts_writing_.find(id); it != puts_writing_.end()) puts_writing_.erase(it);
      done(std::move(s));
    };
    rec.set_version(cur.ok() ? (*cur)->version() + 1 : 1);  // a tombstone keeps the counter
    rec.set_generation(cur.ok() ? (*cur)->generation() + 1 : 1);
    rec.set_uid(old ? old->uid() : caller.uid);
    rec.set_gid(old ? old->gid() : caller.gid);
    rec.set_mode(old ? old->mode() : (mode & 07777));
    rec.set_mtime_ns(internal::NowNs());
    if (old) {
      // Keep keep_versions - 1 older versions; the rest are collected after
      // this one commits.
      std::vector<wire::FileRecord> older{*old};
      older.back().clear_history();
      older.back().clear_path();
      for (const auto& h : old->history()) older.push_back(h);
      for (size_t i = 0; i < older.size(); ++i) {
        if (static_cast<int>(i) + 1 < options_.keep_versions) {
          *rec.add_history() = older[i];
        } else {
          op->expired.push_back(older[i]);
        }
      }
    }
    rec.set_size(op->bytes.size());
    rec.set_k(options_.k);
    rec.set_m(options_.m);
    rec.set_shard_size(options_.shard_size);
    rec.set_technique(std::string(coder_->technique()));
    rec.set_cluster_epoch(view_.epoch());
    SendShards(op);
  });
}

void Node::SendShards(const std::shared_ptr<PutOp>& op) {
  op->stripes = geometry_.StripeCount(op->bytes.size());
  IssueStripes(op);
}

// Keeps up to kStripeWindow stripes encoded and in flight; each finished
// stripe returns its buffers to the pool and lets the next one go.
void Node::IssueStripes(const std::shared_ptr<PutOp>& op) {
  while (op->failure.ok() && op->next_stripe < op->stripes &&
         op->stripes_in_flight < kStripeWindow) {
    Status s = IssueStripe(op, op->next_stripe++);
    if (!s.ok()) op->failure = s;
  }
  if (op->stripes_in_flight > 0) return;
  if (!op->failure.ok()) {
    // Nothing of this version becomes visible; free the shards that landed.
    DeleteShards(op->record, op->next_stripe);
    return op->done(op->failure.WithContext("put " + op->path));
  }
  if (op->next_stripe == op->stripes) CommitRecord(op);
}

// A stripe's data pointers, parity buffers and shard CRCs, filled by the
// encoder (the worker thread, or the loop when inline).
struct Node::EncodedStripe {
  std::vector<const uint8_t*> data;
  std::vector<uint8_t*> parity;
  std::vector<uint32_t> crcs;  // k data then m parity
  size_t len = 0;
  Status status;
};

Status Node::IssueStripe(const std::shared_ptr<PutOp>& op, uint64_t s) {
  const uint64_t size = op->bytes.size();
  const int k = options_.k;
  std::shared_ptr<uint8_t> buf = stripe_pool_->Take();  // m parity + k padded shards
  if (!buf) return ResourceExhaustedError("out of memory for stripe buffers");
  auto e = std::make_shared<EncodedStripe>();
  e->len = geometry_.StripeShardLen(size, s);
  e->data.resize(k);
  for (int i = 0; i < k; ++i) {
    const size_t have = geometry_.ShardDataBytes(size, s, i);
    const uint8_t* src = op->bytes.data() + geometry_.FileOffset({s, i, 0});
    if (have == e->len) {
      e->data[i] = src;  // a whole shard: sent straight from the caller's bytes
    } else {
      uint8_t* pad = buf.get() + (options_.m + i) * options_.shard_size;
      if (have) std::memcpy(pad, src, have);
      std::memset(pad + have, 0, e->len - have);
      e->data[i] = pad;
    }
  }
  e->parity.resize(options_.m);
  for (int j = 0; j < options_.m; ++j) e->parity[j] = buf.get() + j * options_.shard_size;
  // Encoding reads only the caller's bytes and `buf`, both kept alive by the
  // completion's captures; the coder is immutable.
  auto encode = [coder = coder_.get(), e] {
    e->crcs.resize(e->data.size() + e->parity.size());
    e->status = ec::EncodeWithCrcs(*coder, e->data, e->parity, e->len, e->crcs);
  };
  ++op->stripes_in_flight;
  if (!encoder_) {
    encode();
    Status st = SendStripe(op, s, buf, *e);
    if (!st.ok()) --op->stripes_in_flight;
    return st;
  }
  encoder_->Submit(std::move(encode), [this, op, s, buf, e] {
    Status st = op->failure.ok() ? SendStripe(op, s, buf, *e) : op->failure;
    if (st.ok()) return;
    if (op->failure.ok()) op->failure = st;
    --op->stripes_in_flight;
    IssueStripes(op);
  });
  return Status();
}

// One try at sending a stripe's shards.
struct Node::StripeTry {
  int left = 0;
  Status failure;
  bool retryable = true;  // every failed shard's node failed (or is dead now)
  std::vector<std::pair<int, NodeId>> sent;  // a shard whose reply was lost may have landed too
  std::set<uint32_t> waiting;  // nodes asked, not answered yet
  TimePoint asked{};
  bool hedge_armed = false;
  bool left_behind = false;  // HedgeStripe sent the stripe again without the nodes still waiting
};

// Sends the k+m shards of an encoded stripe; the last reply lets the next
// stripe go. `buf` returns to the pool as soon as the transport has sent
// every shard in it (the sends' payloads own it), which for parity is well
// before the reply, sent only once the parity is on disk: recycled buffers
// then are still in the CPU's cache when the next stripe is encoded into
// them and sent. Nothing is ever resent from `buf` (a failed shard fails the
// put). On an error nothing was sent.
Status Node::SendStripe(const std::shared_ptr<PutOp>& op, uint64_t s, std::shared_ptr<uint8_t> buf,
                        const EncodedStripe& e) {
  FERN_RETURN_IF_ERROR(e.status);
  const int k = options_.k, n = options_.k + options_.m;
  const uint64_t file_id = op->record.file_id(), version = op->record.version();
  const size_t len = e.len;
  std::optional<placement::ClusterView> narrowed;
  FERN_ASSIGN_OR_RETURN(auto where, placement_.Place(file_id, s, WriteView(&narrowed, op->slow_nodes),
                                                     options_.min_shards ? options_.min_shards : n));
  // A stripe sent again (a node failed during its first try) replaces what
  // the try recorded about it. (Only then: a scan per stripe of a put with
  // many moved stripes would cost the square of their number.)
  if (op->stripe_retries.count(s)) {
    auto* moved_list = op->record.mutable_moved();
    for (int j = 0; j < moved_list->size(); ++j) {
      if (moved_list->Get(j).stripe() != s) continue;
      if (moved_list->Get(j).absent()) --op->absent_stripes;
      moved_list->DeleteSubrange(j, 1);
      break;
    }
  }
  if (where.degraded() || where.present() < n) {
    auto* moved = op->record.add_moved();
    moved->set_stripe(s);
    for (NodeId id : where.shards) moved->add_nodes(id.value);
    uint32_t absent = 0;
    for (int i = 0; i < n; ++i) {
      if (!where.absent[i]) continue;
      absent |= 1u << i;
      op->absent_nodes.insert(where.shards[i].value);
    }
    moved->set_absent(absent);
    if (absent) ++op->absent_stripes;
  }
  // Shards an earlier try left where this one does not put them go (on a
  // node that is down, once it is back).
  if (auto before = op->sent_before.find(s); before != op->sent_before.end()) {
    for (const auto& [i, node] : before->second) {
      if (where.absent[i] || where.shards[i] != node) {
        DeleteShardWhenUp(node, {file_id, version, s, static_cast<uint32_t>(i)});
      }
    }
    op->sent_before.erase(before);
  }
  const uint8_t* const buf_begin = buf.get();
  const uint8_t* const buf_end = buf_begin + (options_.m + k) * options_.shard_size;
  auto attempt = std::make_shared<StripeTry>();
  attempt->left = where.present();
  attempt->asked = transport_->clock().Now();
  for (int i = 0; i < n; ++i) {
    if (where.absent[i]) continue;  // its dead node rebuilds it when back (repair)
    attempt->sent.push_back({i, where.shards[i]});
    const uint8_t* bytes = i < k ? e.data[i] : e.parity[i - k];
    const bool in_buf = bytes >= buf_begin && bytes < buf_end;  // parity, or a padded data shard
    wire::ShardPut put;
    SetId(put.mutable_id(), file_id, version, s, i);
    put.set_length(len);
    put.set_crc32c(e.crcs[i]);
    put.set_durable(i >= k);
    if (i >= k) {
      for (int d = 0; d < k; ++d) put.add_stripe_crc32c(e.crcs[d]);
    }
    const NodeId to = where.shards[i];
    // The op (which holds the caller's bytes) lives until the reply.
    std::shared_ptr<const void> owner = in_buf ? std::shared_ptr<const void>(buf) : op;
    attempt->waiting.insert(to.value);
    transport_->Call(
        to, OutMessage{wire::SHARD_PUT, put.SerializeAsString(), Payload::View({bytes, len}, std::move(owner))},
        {options_.rpc_timeout, nullptr},
        [this, op, attempt, to, s, i](StatusOr<InMessage> r) {
          if (attempt->left_behind) {  // a hedge sent the stripe again without this node
            if (!r.ok()) (void)PeerUnusable(to, r.status());
            return;
          }
          attempt->waiting.erase(to.value);
          if (r.ok() && !attempt->waiting.empty()) {
            HedgeOnce(options_.write_hedge, attempt->asked, &attempt->hedge_armed,
                      [this, op, attempt, s] { HedgeStripe(op, attempt, s); });
          }
          if (!r.ok()) {
            // A node that failed (its connection, declared dead by now, or
            // no answer in time) is left out when the stripe is placed
            // again; a full store or a refusal would fail the same way twice.
            if (r.status().code() == StatusCode::kDeadlineExceeded) op->slow_nodes.insert(to.value);
            attempt->retryable = PeerUnusable(to, r.status()) && attempt->retryable;
            if (attempt->failure.ok()) {
              attempt->failure = r.status().WithContext("stripe " + std::to_string(s) + " shard " +
                                                        std::to_string(i) + " on " + to.ToString());
            }
          }
          if (--attempt->left > 0) return;
          --op->stripes_in_flight;
          if (!attempt->failure.ok() && op->failure.ok()) {
            if (attempt->retryable && ++op->stripe_retries[s] <= kStripeRetries) {
              // The first one names the cause; CommitRecord counts them all.
              if (op->stripe_retries.size() == 1 && op->stripe_retries[s] == 1) {
                std::fprintf(stderr, "fern-ec: node %u: put %s: %s; sending stripe %llu again\n",
                             options_.id.value, op->path.c_str(), std::string(attempt->failure.message()).c_str(),
                             static_cast<unsigned long long>(s));
              }
              op->sent_before[s] = std::move(attempt->sent);
              Status st = IssueStripe(op, s);
              if (st.ok()) return;
              attempt->failure = st;
            }
            op->failure = attempt->failure;
            // What this try landed is not where the record will say (the put
            // fails): deleted with the rest of the version by the op's end.
          }
          IssueStripes(op);
        });
  }
  return Status();
}

// NodeOptions::write_hedge: a stripe whose shards' nodes lag three times
// behind its first acknowledgement is placed and sent again without them,
// as if they had timed out, when a placement without them exists (else it
// waits for them). What they are sent still may land: deleted as any
// earlier try's shards are (sent_before).
void Node::HedgeStripe(const std::shared_ptr<PutOp>& op, const std::shared_ptr<StripeTry>& attempt, uint64_t s) {
  if (attempt->left_behind || attempt->left == 0 || attempt->waiting.empty() || !attempt->failure.ok() ||
      !op->failure.ok()) {
    return;
  }
  if (auto tried = op->stripe_retries.find(s); tried != op->stripe_retries.end() && tried->second >= kStripeRetries) {
    return;
  }
  std::set<uint32_t> without = op->slow_nodes;
  without.insert(attempt->waiting.begin(), attempt->waiting.end());
  std::optional<placement::ClusterView> narrowed;
  const int need = options_.min_shards ? options_.min_shards : options_.k + options_.m;
  if (!placement_.Place(op->record.file_id(), s, WriteView(&narrowed, without), need).ok()) return;
  attempt->left_behind = true;
  ++hedges_.put_stripes;
  op->slow_nodes = std::move(without);
  --op->stripes_in_flight;
  ++op->stripe_retries[s];
  op->sent_before[s] = std::move(attempt->sent);
  if (Status st = IssueStripe(op, s); !st.ok() && op->failure.ok()) op->failure = st;
  IssueStripes(op);
}

void Node::CommitRecord(const std::shared_ptr<PutOp>& op) {
  if (op->stripe_retries.size() > 1) {
    std::fprintf(stderr, "fern-ec: node %u: put %s: %zu of %llu stripes were sent again (nodes failed or stuck)\n",
                 options_.id.value, op->path.c_str(), op->stripe_retries.size(),
                 static_cast<unsigned long long>(op->stripes));
  }
  StoreRecord(op->record, [this, op](Status s) {
    if (!s.ok()) {
      // Not acknowledged by every live owner: reported as failed. An owner
      // that did store it serves the new version, whose shards stay.
      return op->done(s.WithContext("commit " + op->path));
    }
    if (op->absent_stripes > 0) {
      degraded_stripes_written_ += op->absent_stripes;
      std::string nodes;
      for (uint32_t id : op->absent_nodes) {
        nodes += (nodes.empty() ? "" : ",") + std::to_string(id);
        absent_on_.insert(id);
      }
      std::fprintf(stderr,
                   "fern-ec: node %u: put %s: %llu of %llu stripes written without their shards on dead nodes %s "
                   "(--min-shards %d): less protected until those nodes are back and repaired\n",
                   options_.id.value, op->path.c_str(), static_cast<unsigned long long>(op->absent_stripes),
                   static_cast<unsigned long long>(op->stripes), nodes.c_str(), options_.min_shards);
    }
    // The writer hears first: collecting expired versions is one
    // SHARD_DELETE per shard (1536 for a GiB at 1 MiB shards), and nothing
    // the writer or a reader sees waits on it.
    op->done(Status());
    for (const auto& old : op->expired) DeleteVersionUnlessNamedElsewhere(old);
  });
}

struct Node::RecordStore {
  std::string path;
  std::string rec;                // serialized
  std::set<uint32_t> took;        // replicas that stored it
  std::set<uint32_t> left_out;    // replicas that failed, dead or stuck: not asked again
  int retries_left = kRecordRetries;
  std::function<void(Status)> done;
};

void Node::StoreRecord(const wire::FileRecord& record, std::function<void(Status)> done) {
  auto st = std::make_shared<RecordStore>();
  st->path = record.path();
  st->rec = record.SerializeAsString();
  st->done = std::move(done);
  st->left_out = SlowNodes();
  StoreRecordRound(st);
}

void Node::StoreRecordRound(const std::shared_ptr<RecordStore>& st) {
  struct Round {
    int pending = 1;
    Status failure;
    bool retryable = true;  // every replica that failed is dead, unreachable or stuck
    std::set<uint32_t> waiting;  // asked, not answered yet
    bool left = false;           // a hedge went on without the replicas still waiting
    bool hedge_armed = false;
    TimePoint asked{};
  };
  auto round = std::make_shared<Round>();
  round->asked = transport_->clock().Now();
  auto finish_one = [this, st, round] {
    if (--round->pending > 0) return;
    if (round->failure.ok()) return st->done(Status());
    if (round->retryable && st->retries_left-- > 0) {
      // The record goes to the replicas of a view without them (stand-ins).
      std::fprintf(stderr, "fern-ec: node %u: record of %s: %s; storing it on other replicas\n", options_.id.value,
                   st->path.c_str(), std::string(round->failure.message()).c_str());
      return StoreRecordRound(st);
    }
    st->done(round->failure);
  };
  // Hedged (NodeOptions::write_hedge): replicas that lag three times
  // behind the first to take the record are left out, and the record goes
  // to the replicas of a view without them, as if they had timed out.
  auto hedge = [this, st, round] {
    if (round->left || round->pending == 0 || !round->failure.ok() || st->retries_left <= 0) return;
    std::set<uint32_t> without = st->left_out;
    without.insert(round->waiting.begin(), round->waiting.end());
    std::vector<NodeId> owners;
    std::optional<placement::ClusterView> narrowed;
    const placement::ClusterView& view = WriteView(&narrowed, without);
    std::set<uint32_t> holders = st->took;
    for (NodeId r : placement_.MetadataReplicas(st->path, view, &owners)) holders.insert(r.value);
    // Only while m+1 replicas still take it, one of them an owner: else
    // wait for the laggards.
    if (holders.size() < static_cast<size_t>(options_.m + 1) ||
        std::none_of(owners.begin(), owners.end(), [&](NodeId id) { return view.IsAlive(id) || st->took.count(id.value); })) {
      return;
    }
    round->left = true;
    ++hedges_.records;
    st->left_out = std::move(without);
    --st->retries_left;
    StoreRecordRound(st);
  };
  // At least one of the path's own owners must take it: stand-ins alone
  // are not asked once the owners are back, so a record only they hold
  // would be lost then.
  std::vector<NodeId> owners;
  std::optional<placement::ClusterView> narrowed;
  const placement::ClusterView& view = WriteView(&narrowed, st->left_out);
  const std::vector<NodeId> replicas = placement_.MetadataReplicas(st->path, view, &owners);
  if (std::none_of(owners.begin(), owners.end(), [&](NodeId id) { return view.IsAlive(id); })) {
    round->failure = UnavailableError("all " + std::to_string(options_.m + 1) + " metadata owners of " + st->path +
                                      " are down" + (st->left_out.empty() ? "" : " or stuck") +
                                      ": its record cannot be written");
    round->retryable = false;
  } else {
    for (NodeId replica : replicas) {
      if (st->took.count(replica.value)) continue;
      ++round->pending;
      round->waiting.insert(replica.value);
      transport_->Call(replica, OutMessage{wire::META_PUT, st->rec, {}}, {options_.rpc_timeout, nullptr},
                       [this, st, round, replica, finish_one, hedge](StatusOr<InMessage> r) {
                         if (round->left) {  // gone on without it
                           if (r.ok()) st->took.insert(replica.value);
                           if (!r.ok()) (void)PeerUnusable(replica, r.status());
                           return;
                         }
                         round->waiting.erase(replica.value);
                         if (r.ok()) {
                           st->took.insert(replica.value);
                           if (!round->waiting.empty()) {
                             HedgeOnce(options_.write_hedge, round->asked, &round->hedge_armed, hedge);
                           }
                         } else {
                           if (PeerUnusable(replica, r.status())) {
                             st->left_out.insert(replica.value);
                           } else {
                             round->retryable = false;  // a refusal would come again
                           }
                           if (round->failure.ok()) {
                             round->failure = r.status().WithContext("record of " + st->path + " on " +
                                                                     replica.ToString());
                           }
                         }
                         finish_one();
                       });
    }
  }
  finish_one();
}

void Node::GatherNewest(const wire::MetaList& list, std::function<void(NewestRecords, Answers)> done) {
  auto newest = std::make_shared<NewestRecords>();
  AskEveryLiveNode(
      wire::META_LIST, list.SerializeAsString(),
      [newest](const InMessage& m) {
        wire::MetaListReply reply;
        if (!reply.ParseFromArray(m.payload.data(), static_cast<int>(m.payload.size()))) {
          return InvalidArgumentError("bad META_LIST reply");
        }
        for (auto& rec : *reply.mutable_records()) {
          auto& slot = (*newest)[rec.path()];
          if (!slot || internal::Newer(rec, *slot)) slot = std::make_shared<wire::FileRecord>(std::move(rec));
        }
        return Status();
      },
      [newest, done = std::move(done)](Answers a) { done(std::move(*newest), std::move(a)); });
}

void Node::AskEveryLiveNode(transport::MessageKind kind, const std::string& body,
                            std::function<Status(const InMessage&)> take, std::function<void(Answers)> done) {
  struct Gather {
    int pending = 1;
    Answers answers;
    std::function<Status(const InMessage&)> take;
    std::function<void(Answers)> done;
  };
  auto g = std::make_shared<Gather>();
  g->take = std::move(take);
  g->done = std::move(done);
  auto finish_one = [g] {
    if (--g->pending == 0) g->done(std::move(g->answers));
  };
  for (const auto& info : view_.nodes()) {
    if (!view_.IsAlive(info.id)) continue;
    ++g->pending;
    ++g->answers.asked;
    transport_->Call(info.id, OutMessage{kind, body, {}}, {options_.rpc_timeout, nullptr},
                     [g, finish_one](StatusOr<InMessage> r) {
                       Status s = r.ok() ? g->take(*r) : r.status();
                       if (s.ok()) {
                         ++g->answers.answered;
                       } else {
                         g->answers.last_error = std::move(s);
                       }
                       finish_one();
                     });
  }
  finish_one();
}

uint32_t Node::AbsentMask(const wire::FileRecord& record, uint64_t stripe) const {
  for (const auto& moved : record.moved()) {
    if (moved.stripe() == stripe) return moved.absent();
  }
  return 0;
}

int Node::ShardsDown(const wire::FileRecord& record, uint64_t stripe) const {
  const std::vector<NodeId> nodes = StripeNodes(record, stripe);
  const uint32_t absent = AbsentMask(record, stripe);
  int down = 0;
  for (size_t i = 0; i < nodes.size(); ++i) down += (!view_.IsAlive(nodes[i]) || (absent >> i & 1)) ? 1 : 0;
  return down;
}

std::vector<NodeId> Node::StripeNodes(const wire::FileRecord& record, uint64_t stripe) const {
  for (const auto& moved : record.moved()) {
    if (moved.stripe() == stripe) {
      std::vector<NodeId> v;
      for (uint32_t id : moved.nodes()) v.push_back(NodeId(id));
      return v;
    }
  }
  auto home = placement_.Home(record.file_id(), stripe, view_);
  return home.ok() ? *home : std::vector<NodeId>{};
}

void Node::Get(const std::string& path, std::function<void(StatusOr<FileData>)> done) {
  auto data = std::make_shared<FileData>();
  GetInto(
      path,
      [data](uint64_t size) -> StatusOr<std::span<uint8_t>> {
        data->bytes.resize(size);
        return std::span<uint8_t>(data->bytes);
      },
      [data, done = std::move(done)](StatusOr<FileInfo> info) {
        if (!info.ok()) return done(info.status());
        data->version = info->version;
        done(std::move(*data));
      });
}

void Node::GetInto(const std::string& path, const Caller& caller, OutputAllocator output,
                   std::function<void(StatusOr<FileInfo>)> done) {
  StartGet(
      path, caller,
      [output = std::move(output)](GetOp* op, uint64_t size) -> Status {
        auto out = output(size);
        if (!out.ok()) return out.status();
        if (out->size() != size) return InternalError("output buffer of the wrong size");
        op->out = *out;
        return Status();
      },
      std::move(done));
}

void Node::GetToFile(const std::string& path, const Caller& caller, FileAllocator output,
                     std::function<void(StatusOr<FileInfo>)> done) {
  StartGet(
      path, caller,
      [output = std::move(output)](GetOp* op, uint64_t size) -> Status {
        auto fd = output(size);
        if (!fd.ok()) return fd.status();
        if (!*fd || **fd < 0) return InternalError("output file descriptor is not open");
        op->out_file = *fd;
        return Status();
      },
      std::move(done));
}

void Node::StartGet(const std::string& path, const Caller& caller,
                    std::function<Status(GetOp*, uint64_t size)> setup,
                    std::function<void(StatusOr<FileInfo>)> done) {
  LookupRecord(path, [this, path, caller, setup = std::move(setup), done = std::move(done)](
                         StatusOr<RecordPtr> rec) {
    if (!rec.ok()) return done(rec.status());
    const auto& r = **rec;
    if (Status s = internal::CheckReadableFile(r, path, caller, "read"); !s.ok()) return done(s);
    if (r.k() != static_cast<uint32_t>(options_.k) || r.m() != static_cast<uint32_t>(options_.m) ||
        r.shard_size() != options_.shard_size || r.technique() != coder_->technique()) {
      return done(UnimplementedError(path + " was written with a different layout (k=" +
                                     std::to_string(r.k()) + " m=" + std::to_string(r.m()) + ")"));
    }
    auto op = std::make_shared<GetOp>();
    op->path = path;
    op->record = r;
    op->done = done;
    if (Status s = setup(op.get(), r.size()); !s.ok()) return done(s);
    const uint64_t stripes = geometry_.StripeCount(r.size());
    op->stripes.resize(stripes);
    if (stripes == 0) return done(InfoOf(r));
    if (!op->out_file) PrefaultOutput(op);  // a file is written, never mapped
    IssueFetches(op);
  });
}

namespace {

// Allocates (faults in, writable) the pages under p[off, end); never changes
// a byte. Returns 0 or an errno.
int PopulateForWrite(uint8_t* p, uint64_t off, uint64_t end) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p + off) & ~uintptr_t{4095};
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p + end) + 4095) & ~uintptr_t{4095};
  if (madvise(reinterpret_cast<void*>(a), b - a, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) {
    return errno;  // EINVAL: a kernel without MADV_POPULATE_WRITE
  }
  return 0;
}

}  // namespace

// Allocates the output's pages before shards land in them: a page fault per
// 4 KiB page while receiving costs several times more. With a worker thread
// it runs there, a chunk at a time ahead of the fetches: in the loop, one
// call for a 512 MiB output kept every daemon waiting (26% of the machine,
// perf).
void Node::PrefaultOutput(const std::shared_ptr<GetOp>& op) {
  auto fail = [op](int err) {
    if (!op->failure.ok()) return;
    op->failure = FromErrno(err == EFAULT || err == ENOMEM ? ENOSPC : err,
                            "read " + op->path + ": allocate memory for the file");
  };
  const uint64_t size = op->out.size();
  if (!encoder_) {
    if (int err = PopulateForWrite(op->out.data(), 0, size); err != 0) fail(err);
    return;
  }
  constexpr uint64_t kChunk = 8 << 20;
  op->ready = 0;
  for (uint64_t off = 0; off < size; off += kChunk) {
    const uint64_t end = std::min(size, off + kChunk);
    auto err = std::make_shared<int>(0);
    ++op->prefaults_pending;
    encoder_->Submit([p = op->out.data(), off, end, err] { *err = PopulateForWrite(p, off, end); },
                     [this, op, end, err, fail] {
                       --op->prefaults_pending;
                       if (*err != 0) fail(*err);
                       if (*err == 0) op->ready = end;
                       IssueFetches(op);
                     });
  }
}

void Node::FetchStripe(const std::shared_ptr<GetOp>& op, uint64_t stripe, bool with_parity) {
  GetOp::Stripe& st = op->stripes[stripe];
  const int k = options_.k, n = k + options_.m;
  if (st.shards.empty()) {
    st.shards.resize(n);
    st.owners.resize(n);
    st.seqs.assign(n, 0);
    st.epochs.assign(n, 0);
    st.checks = internal::ShardChecks(n);
  }
  const std::vector<NodeId> nodes = StripeNodes(op->record, stripe);
  const uint64_t len = geometry_.StripeShardLen(op->record.size(), stripe);
  const int last = with_parity ? n : k;
  // A node a request timed out on lately (stopped, stuck) is left out while
  // the stripe has k shards on other live nodes: it costs the read one
  // timeout, not one per window of stripes until it is declared dead.
  bool avoid_slow = false;
  if (!slow_until_.empty() && static_cast<int>(nodes.size()) == n) {
    const uint32_t absent = AbsentMask(op->record, stripe);
    int fast = 0;
    for (int i = 0; i < n; ++i) fast += view_.IsAlive(nodes[i]) && !(absent >> i & 1) && !IsSlow(nodes[i]);
    avoid_slow = fast >= k;
  }
  if (!with_parity && st.asked == TimePoint{}) st.asked = transport_->clock().Now();
  const uint32_t round = st.round;
  ++st.pending;  // until every request below is out
  if (options_.check_reads && !with_parity && !st.record_asked && static_cast<int>(nodes.size()) == n) {
    // With the data shards: the header of the first live parity shard, for
    // the data CRCs it records (no bytes move; its node reads no shard).
    st.record_asked = true;
    const uint32_t absent = AbsentMask(op->record, stripe);
    for (int p = k; p < n; ++p) {
      if (!view_.IsAlive(nodes[p]) || (absent >> p & 1) || (avoid_slow && IsSlow(nodes[p]))) continue;
      wire::ShardGet get;
      SetId(get.mutable_id(), op->record.file_id(), op->record.version(), stripe, p);
      get.set_header_only(true);
      ++st.pending;
      transport_->Call(nodes[p], OutMessage{wire::SHARD_GET, get.SerializeAsString(), {}},
                       {options_.rpc_timeout, nullptr},
                       [this, op, stripe, p, round, node = nodes[p]](StatusOr<InMessage> r) {
                         if (!r.ok()) (void)PeerUnusable(node, r.status());
                         GetOp::Stripe& st = op->stripes[stripe];
                         if (st.round != round) return;  // left behind by a hedge
                         wire::ShardGetReply reply;
                         if (r.ok() && reply.ParseFromString(r->header)) {
                           st.checks.Take(p, reply);
                           st.record_from = p;
                           st.record_seq = reply.seq();
                         }
                         StripeReplyDone(op, stripe);
                       });
      break;
    }
  }
  for (int i = 0; i < last; ++i) {
    if (st.tried.contains(i)) continue;
    st.tried.insert(i);
    if (static_cast<int>(nodes.size()) != n || !view_.IsAlive(nodes[i]) || (avoid_slow && IsSlow(nodes[i]))) continue;
    wire::ShardGet get;
    SetId(get.mutable_id(), op->record.file_id(), op->record.version(), stripe, i);
    ++st.pending;
    // Every reply lands through a sink, so one left behind by a hedge is
    // refused before any of its bytes are written: a whole data shard of
    // GetInto straight into its place in the output (if it turns out
    // corrupt, decode overwrites it in FinishStripe), anything else into a
    // reused buffer whose pages are already there.
    uint8_t* dest = nullptr;
    if (!op->out_file && i < k && geometry_.ShardDataBytes(op->record.size(), stripe, i) == len) {
      dest = op->out.data() + geometry_.FileOffset({stripe, i, 0});
    }
    transport::CallOptions call{options_.rpc_timeout, nullptr};
    call.reply_sink = [this, op, stripe, i, round, dest, len](NodeId, transport::MessageKind, std::string_view,
                                                              uint64_t got) -> StatusOr<ReceiveBuffer> {
      GetOp::Stripe& st = op->stripes[stripe];
      if (st.round != round) return CancelledError("shard reply left behind by a hedged read");
      if (got == 0) return ReceiveBuffer{};  // an error reply: its status reaches the callback
      if (got != len) return InvalidArgumentError("shard reply of unexpected length");
      if (dest) {
        // Landing in the reader's buffer: the stripe waits for these bytes
        // (a pool buffer left behind is the receive's own).
        st.receiving.insert(i);
        return ReceiveBuffer{std::span<uint8_t>(dest, got), nullptr};
      }
      std::shared_ptr<uint8_t> buf = reply_pool_->Take();
      if (!buf) return ResourceExhaustedError("out of memory for a shard reply buffer");
      return ReceiveBuffer{std::span<uint8_t>(buf.get(), got), buf};
    };
    transport_->Call(nodes[i], OutMessage{wire::SHARD_GET, get.SerializeAsString(), {}},
                     std::move(call),
                     [this, op, stripe, i, len, round, node = nodes[i]](StatusOr<InMessage> r) {
                       if (!r.ok()) (void)PeerUnusable(node, r.status());
                       GetOp::Stripe& st = op->stripes[stripe];
                       if (st.round != round) return;  // left behind by a hedge
                       st.receiving.erase(i);
                       if (r.ok()) {
                         wire::ShardGetReply reply;
                         // A shard counts only if it is whole and its bytes match their CRC.
                         if (reply.ParseFromString(r->header) && r->payload.size() == len &&
                             reply.length() == len && ec::Crc32c(r->payload) == reply.crc32c()) {
                           st.shards[i] = r->payload;
                           st.owners[i] = r->payload_owner;
                           st.seqs[i] = reply.seq();
                           st.epochs[i] = reply.epoch();
                           st.checks.Take(i, reply);
                           st.present.insert(i);
                           if (i >= options_.k && st.record_from < 0) {
                             st.record_from = i;  // its header records the data CRCs too
                             st.record_seq = reply.seq();
                           }
                         }
                       }
                       if (options_.m > 0 && !st.parity_fetched) {
                         HedgeOnce(options_.read_hedge, st.asked, &st.hedge_armed,
                                   [this, op, stripe, round] { Hedge(op, stripe, round); });
                       }
                       StripeReplyDone(op, stripe);
                     });
  }
  if (--st.pending == 0) FinishStripe(op, stripe);
}

void Node::StripeReplyDone(const std::shared_ptr<GetOp>& op, uint64_t stripe) {
  GetOp::Stripe& st = op->stripes[stripe];
  if (--st.pending == 0) return FinishStripe(op, stripe);
  if (!st.hedged || !st.receiving.empty()) return;  // bytes still landing: wait for them
  // Hedged: finish without the requests still out once the stripe can be
  // served — every data shard (and, checking reads, a parity header to
  // check them against), or k shards at one update seq to decode from.
  const int k = options_.k;
  const ec::ShardSet data = ec::ShardSet::FirstN(k);
  const bool all_data = (st.present.bits() & data.bits()) == data.bits();
  if (all_data) {
    // Checked against a parity's record first: a mismatch waits for the
    // parity the hedge asked for, to decode around the wrong shard.
    if (options_.check_reads) {
      if (st.suspect || st.record_from < 0) return;
      if (!CheckAgainstRecord(op, stripe)) {
        st.suspect = true;
        return;
      }
      st.checked = true;
    }
  } else if (internal::SameSeqShards(st.present, st.seqs, k).size() < k) {
    return;
  }
  ++st.round;  // what is still out is left behind
  st.pending = 0;
  ++hedges_.served_early;
  FinishStripe(op, stripe);
}

void Node::HedgeAt(Duration floor, TimePoint asked, std::function<void()> fn) {
  const Duration took = transport_->clock().Now() - asked;
  transport_->After(std::max(floor - took, 2 * took), std::move(fn));
}

void Node::Hedge(const std::shared_ptr<GetOp>& op, uint64_t stripe, uint32_t round) {
  GetOp::Stripe& st = op->stripes[stripe];
  // Finished (nothing pending), or already fetching its parity.
  if (st.round != round || st.pending == 0 || st.parity_fetched || !op->failure.ok()) return;
  st.hedged = true;
  st.parity_fetched = true;
  ++hedges_.hedged;
  FetchStripe(op, stripe, true);  // asks every shard not asked yet: the parity
}

void Node::FinishStripe(const std::shared_ptr<GetOp>& op, uint64_t stripe) {
  GetOp::Stripe& st = op->stripes[stripe];
  const int k = options_.k, n = k + options_.m;
  const uint64_t size = op->record.size();
  const uint64_t len = geometry_.StripeShardLen(size, stripe);
  const ec::ShardSet data_set = ec::ShardSet::FirstN(k);
  const bool all_data = (st.present.bits() & data_set.bits()) == data_set.bits();
  if (all_data && options_.check_reads && !st.suspect && !st.checked && !CheckAgainstRecord(op, stripe)) {
    // A data shard is not what the parity records: fetch every parity (a
    // hedged stripe already did) and decode checked below (DecodeChecked
    // finds the wrong shard and replaces its bytes, or the read fails with
    // DataLoss).
    st.suspect = true;
    if (!st.parity_fetched) {
      st.parity_fetched = true;
      FetchStripe(op, stripe, true);
      return;
    }
  }
  if (!all_data && !st.parity_fetched) {
    st.parity_fetched = true;
    FetchStripe(op, stripe, true);
    return;
  }
  if (!all_data || st.suspect) {
    if (st.present.size() < k) {
      std::vector<NodeId> missing;
      const auto nodes = StripeNodes(op->record, stripe);
      for (int i = 0; i < n && i < static_cast<int>(nodes.size()); ++i) {
        if (!st.present.contains(i)) missing.push_back(nodes[i]);
      }
      if (op->failure.ok()) {
        op->failure = DataLossError("read " + op->path + ": stripe " + std::to_string(stripe) +
                                    " has " + std::to_string(n - st.present.size()) +
                                    " shards unavailable (nodes " + NodeList(missing) +
                                    "), m=" + std::to_string(options_.m));
      }
    } else if (ec::ShardSet same = internal::SameSeqShards(st.present, st.seqs, k); same.size() < k) {
      // An in-place update is between its shards (PSW): decoding across
      // seqs would make wrong bytes. Fetch the stripe again; it settles in
      // milliseconds, or recovery settles it.
      if (++st.refetches > kMaxRefetches) {
        if (op->failure.ok()) {
          op->failure = UnavailableError("read " + op->path + ": stripe " + std::to_string(stripe) +
                                         ": shards stayed at different update seqs");
        }
      } else {
        st.present = ec::ShardSet();
        st.tried = ec::ShardSet();
        st.record_from = -1;  // the record is asked again with the shards
        st.record_seq = 0;
        st.checks = internal::ShardChecks(n);
        st.hedged = st.checked = st.suspect = false;
        st.parity_fetched = true;
        FetchStripe(op, stripe, true);
        return;
      }
    } else {
      st.present = same;
      // Rebuild the missing data shards into fresh buffers, then copy out.
      std::vector<uint8_t*> ptrs(n, nullptr);
      ec::ShardSet want;
      for (int i = 0; i < n; ++i) {
        if (st.present.contains(i)) {
          ptrs[i] = st.shards[i].data();
        } else if (i < k) {
          auto buf = std::make_shared<std::vector<uint8_t>>(len);
          st.owners[i] = buf;
          st.shards[i] = std::span<uint8_t>(buf->data(), len);
          ptrs[i] = buf->data();
          want.insert(i);
        }
      }
      std::vector<uint32_t> vouched;  // the data CRCs as they came out, when checked
      if (Status s = CheckedDecode(ptrs, st.present, want, len, st.checks, &vouched); !s.ok()) {
        std::fprintf(stderr, "fern-ec: node %u: read %s: stripe %llu: %s\n", options_.id.value, op->path.c_str(),
                     static_cast<unsigned long long>(stripe), s.ToString().c_str());
        if (op->failure.ok()) op->failure = s.WithContext("read " + op->path + ": decode stripe " + std::to_string(stripe));
      } else if (st.suspect && static_cast<int>(vouched.size()) == k) {
        RewriteReplacedData(op, stripe, vouched);
      }
    }
  }
  if (op->failure.ok() && op->out_file) return WriteStripeOut(op, stripe);
  if (op->failure.ok()) {
    for (int i = 0; i < k; ++i) {
      const size_t have = geometry_.ShardDataBytes(size, stripe, i);
      uint8_t* dest = op->out.data() + geometry_.FileOffset({stripe, i, 0});
      if (have && st.shards[i].data() != dest) std::memcpy(dest, st.shards[i].data(), have);
    }
  }
  st.shards.clear();
  st.owners.clear();
  st.checks = internal::ShardChecks();
  --op->in_flight;
  IssueFetches(op);
}

bool Node::CheckAgainstRecord(const std::shared_ptr<GetOp>& op, uint64_t stripe) {
  const GetOp::Stripe& st = op->stripes[stripe];
  const int k = options_.k;
  const std::vector<uint32_t>* record = st.record_from >= 0 ? &st.checks.stripe_crcs[st.record_from] : nullptr;
  bool one_seq = true;
  for (int i = 0; i < k; ++i) one_seq = one_seq && st.seqs[i] == st.record_seq;
  // No record to check against (a parity written without one, down, or
  // not at the data's update seq: an update is between the shards).
  if (!record || static_cast<int>(record->size()) != k || !one_seq) {
    ++read_checks_.unchecked;
    return true;
  }
  std::string wrong;
  for (int i = 0; i < k; ++i) {
    if (st.checks.crcs[i] != (*record)[i]) wrong += (wrong.empty() ? "" : ",") + std::to_string(i);
  }
  if (wrong.empty()) {
    ++read_checks_.verified;
    return true;
  }
  ++read_checks_.mismatched;
  std::fprintf(stderr,
               "fern-ec: node %u: read %s: stripe %llu: data shard %s does not match the data CRCs parity shard %d "
               "records (seq %llu): decoding with the parity\n",
               options_.id.value, op->path.c_str(), static_cast<unsigned long long>(stripe), wrong.c_str(),
               st.record_from, static_cast<unsigned long long>(st.record_seq));
  return false;
}

void Node::RewriteReplacedData(const std::shared_ptr<GetOp>& op, uint64_t stripe, const std::vector<uint32_t>& now) {
  const GetOp::Stripe& st = op->stripes[stripe];
  const std::vector<NodeId> nodes = StripeNodes(op->record, stripe);
  for (int i = 0; i < options_.k; ++i) {
    // Only a shard the decode read and replaced: one left out for being at
    // another update seq was decoded at the sources' seq, not its own.
    if (!st.present.contains(i) || now[i] == st.checks.crcs[i] || i >= static_cast<int>(nodes.size())) continue;
    // Only as it was read: an update or rewrite since wins (FailedPrecondition).
    auto bytes = std::make_shared<std::vector<uint8_t>>(st.shards[i].begin(), st.shards[i].end());
    const wire::ShardPut put = internal::ReplaceIfUnchanged(op->record, stripe, i, bytes->size(), now[i], st.seqs[i],
                                                            st.epochs[i], st.checks.crcs[i]);
    const std::string what = op->path + " stripe " + std::to_string(stripe) + " data shard " + std::to_string(i) +
                             " on " + nodes[i].ToString();
    transport_->Call(nodes[i], OutMessage{wire::SHARD_PUT, put.SerializeAsString(), Payload::View(*bytes, bytes)},
                     {options_.rpc_timeout, nullptr}, [this, what](StatusOr<InMessage> r) {
                       if (r.ok()) ++read_checks_.rewritten;
                       std::fprintf(stderr, "fern-ec: node %u: rewrite %s with its decoded bytes: %s\n",
                                    options_.id.value, what.c_str(),
                                    r.ok() ? "done" : r.status().ToString().c_str());
                     });
  }
}

Status Node::CheckedDecode(std::span<uint8_t* const> shards, ec::ShardSet have, ec::ShardSet want, size_t len,
                           const internal::ShardChecks& checks, std::vector<uint32_t>* data_crcs) {
  bool verified = false;
  Status s = internal::DecodeChecked(*coder_, shards, have, want, len, checks, &verified, data_crcs);
  ++decode_stats_.stripes;
  if (verified) ++decode_stats_.verified;
  if (s.code() == StatusCode::kDataLoss) ++decode_stats_.rejected;
  return s;
}

// GetToFile: the stripe's data bytes go into the output file with pwrite, on
// the worker when there is one; the stripe stays in flight until they have.
void Node::WriteStripeOut(const std::shared_ptr<GetOp>& op, uint64_t stripe) {
  GetOp::Stripe& st = op->stripes[stripe];
  struct Piece {
    const uint8_t* p;
    size_t n;
    uint64_t off;
  };
  auto job = std::make_shared<std::pair<std::vector<Piece>, int>>();
  for (int i = 0; i < options_.k; ++i) {
    const size_t have = geometry_.ShardDataBytes(op->record.size(), stripe, i);
    if (have) job->first.push_back({st.shards[i].data(), have, geometry_.FileOffset({stripe, i, 0})});
  }
  auto owners = std::make_shared<std::vector<std::shared_ptr<void>>>(std::move(st.owners));
  st.shards.clear();
  st.owners.clear();
  // The write holds the shard buffers and the file too: a worker that is
  // shutting down runs its queued jobs and drops their completions.
  auto write = [file = op->out_file, job, owners] {
    const int fd = *file;
    for (const Piece& piece : job->first) {
      size_t done = 0;
      while (done < piece.n) {
        const ssize_t w = pwrite(fd, piece.p + done, piece.n - done, static_cast<off_t>(piece.off + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          job->second = w < 0 ? errno : EIO;
          return;
        }
        done += static_cast<size_t>(w);
      }
    }
  };
  auto after = [this, op, job, owners] {
    if (job->second != 0 && op->failure.ok()) {
      op->failure = FromErrno(job->second, "read " + op->path + ": write the file out");
    }
    --op->in_flight;
    IssueFetches(op);
  };
  if (!writer_) {
    write();
    return after();
  }
  writer_->Submit(std::move(write), std::move(after));
}

// Keeps kGetWindow stripes in flight: all at once would queue every
// shard of a large file behind each other and past the RPC deadline.
void Node::IssueFetches(const std::shared_ptr<GetOp>& op) {
  while (op->failure.ok() && op->next_stripe < op->stripes.size() &&
         op->in_flight < kGetWindow) {
    const uint64_t next = op->next_stripe + 1;
    const uint64_t end = next < op->stripes.size() ? geometry_.FileOffset({next, 0, 0}) : op->record.size();
    if (end > op->ready) break;  // its pages are not allocated yet
    ++op->in_flight;
    FetchStripe(op, op->next_stripe++, false);
  }
  // Prefault jobs write into the output: it must outlive them.
  if (op->in_flight > 0 || op->prefaults_pending > 0 || op->finished) return;
  op->finished = true;
  if (!op->failure.ok()) return op->done(op->failure);
  op->done(InfoOf(op->record));
}

}  // namespace fern::daemon
