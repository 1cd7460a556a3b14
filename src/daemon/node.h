// Node: the services one fern-ec daemon runs over its Transport.
//
//   shard service     SHARD_PUT / SHARD_GET / SHARD_DELETE on this node's two
//                     ShardStores (data shards in tmpfs, parity on disk). A
//                     SHARD_PUT payload is received straight into a reserved
//                     slot (PayloadSink); a full store answers ENOSPC before
//                     any byte moves.
//   metadata service  META_PUT / META_GET / META_LIST: FileRecords of the
//                     paths this node owns (one of the m+1 owners by
//                     placement), kept in a MetaStore (on disk: survives
//                     restarts). The highest (generation, file_id) wins.
//   gateway           Put / Get of whole files and the namespace operations
//                     (Stat, Access, List, Unlink, Rename, Mkdir, Rmdir) on
//                     behalf of local clients, with POSIX permission checks
//                     against the caller's uid/gid.
//
// Namespace: every path has a record at its owners; a change (put, rename,
// unlink, mkdir, rmdir) writes a record with generation + 1, and removal
// writes a tombstone (deleted = true) rather than forgetting the path, so an
// owner that missed the change cannot resurrect it. Directories are explicit
// (Mkdir) or implicit (a prefix of a live path); "/" always exists. Implicit
// directories and "/" report root:root 01777: anyone may create, only the
// owner (or root) may remove or rename a file. Listing asks every live node.
// Each put gets a fresh file_id (shard keys never collide with older,
// renamed or deleted files); --keep-versions committed versions are kept and
// the shards of older ones, of removed files and of failed puts are deleted.
//
// Put(path, bytes): asks the path's live metadata owners for the current
// version, stripes the bytes (StripeGeometry), encodes each stripe, sends
// the k+m shards of version+1 to their nodes (Placement; a dead home node is
// replaced by the next live one and the stripe is recorded in the record's
// `moved` list), and only when every shard of every stripe is acknowledged
// commits the new FileRecord to every live owner. Until then readers see the
// previous version, which is never overwritten: a new version's shards have
// new keys.
//
// Get(path): takes the newest record any live owner has, fetches the k data
// shards of each stripe in parallel, checks each payload's CRC32C, and on any
// missing or corrupt shard fetches the parity shards and decodes. More than
// m shards unavailable in a stripe is DataLoss naming the stripe and nodes:
// never wrong bytes.
//
// Threading: a Node lives on its transport's event loop; every method and
// callback runs there. Not thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "daemon/meta_store.h"
#include "daemon/durable_flusher.h"
#include "daemon/worker_thread.h"
#include "daemon/shard_store.h"
#include "ec/erasure_coder.h"
#include "ec/stripe_geometry.h"
#include "placement/placement.h"
#include "transport/transport.h"

namespace fern::wire {
class FileRecord;
class MetaAmend;
class MetaList;
class SeqRequest;
}
namespace fern::daemon::psw {
struct RebuildShard;
}

namespace fern::daemon {
namespace internal {
struct ShardChecks;
}

struct NodeOptions {
  NodeId id;
  int k = 4;
  int m = 2;
  uint64_t shard_size = 1 << 20;
  std::string backend = "auto";  // ec::CoderOptions::backend
  std::string technique = "reed_sol_van";
  uint64_t placement_seed = 0;
  Duration rpc_timeout = std::chrono::seconds(10);
  int keep_versions = 2;  // committed versions kept per file (>= 1)
  // A peer not heard from (HEARTBEAT) for this long is declared dead.
  Duration dead_after = std::chrono::seconds(10);
  // Parity shards received are committed by a DurableFlusher thread in
  // batches (group commit: two disk flushes per batch, not two per shard,
  // and the loop keeps receiving meanwhile) and acknowledged by
  // FlushDurable(): the owner must call it after every Progress() and when
  // one of event_fds() is readable. false: each commits as it arrives.
  bool batch_durable_commits = false;
  // Stripes of a put are encoded and checksummed on a worker thread while
  // the loop sends earlier ones, and a get's output pages are allocated
  // there ahead of its fetches (the daemon); false: inline, in the loop
  // (deterministic, for the seeded loopback tests). With a worker the owner
  // must call FlushDurable() when one of event_fds() is readable.
  bool encode_on_worker = false;
  // Nonzero: file ids come from this seed and a counter instead of the
  // clock, so a seeded test's placement (and so its run) replays exactly.
  uint64_t id_seed = 0;
  // A healthy read (every data shard intact) also asks one parity shard for
  // the header with the data CRCs it records and compares them with the
  // data shards': a data shard wrong but matching its own CRC is then
  // decoded around (or the read fails with EIO), never returned. false:
  // each data shard's own CRC is trusted.
  bool check_reads = true;
  // Hedged reads: a stripe still waiting for a data shard (or for the parity
  // header it checks them against) three times as long as its first shard
  // took to arrive, and at least read_hedge, also fetches its parity and is
  // served by the first shards that decode. The laggard's request is left
  // behind: bytes it sends later are refused, never written. A stuck or
  // overloaded node then costs a read a few round trips of its neighbours,
  // not rpc_timeout. Record lookups hedge alike (LookupRecord). Zero: never.
  Duration read_hedge = std::chrono::milliseconds(50);
  // Hedged writes: a put's stripe whose shards' nodes lag three times as
  // long as its first acknowledgement took, and at least write_hedge, is
  // placed and sent again without them (as after a timeout, while a
  // placement without them exists), and a record store goes on to the
  // stand-ins of owners that lag so. A stuck node then costs a put about
  // write_hedge, not rpc_timeout; a stripe sent again costs its bytes
  // twice, hence a longer floor than reads'. Zero: never.
  Duration write_hedge = std::chrono::seconds(1);
  // Re-placement: a node dead this long no longer holds its shards. The
  // stripes' first live metadata owner rebuilds each of its shards on a
  // live node holding none of the stripe (Placement::Replacement), at most
  // kRepairWindow at a time, and moves them in the records (META_AMEND), so
  // the stripe is whole again and m more nodes may fail. Zero: never (the
  // stripes stay degraded until the node is back).
  Duration replace_after = std::chrono::seconds(60);
  // Degraded writes (DESIGN §3): with fewer than k+m live nodes a put still
  // commits if every stripe lands at least this many shards (k..k+m) on
  // live nodes; the shards of dead nodes no live node can stand in for are
  // not written, and are rebuilt by those nodes' repair when they are back
  // (the stripes count as degraded until then). 0: k+m, every put whole.
  int min_shards = 0;
  // Orphan sweep, run by Tick every this long (the first pass one period
  // after start, spread by node id): shards held here that no record names
  // on this node, of no put or re-placement still running anywhere, are
  // deleted once two passes in a row found them so, unchanged. What it
  // catches: shards of a put whose gateway died, deletes that a restarted
  // gateway forgot, old copies on a node that came back after its shards
  // moved. Needs every live node to answer and at most m nodes dead (a
  // record lives on m+1), else the pass deletes nothing. Zero: never.
  Duration orphan_sweep = std::chrono::minutes(5);
  // A stalled parity disk (a hung NVMe): parity shards waiting for a
  // DurableFlusher batch that has not finished for this long. The node
  // then says so in its heartbeats and its peers count it dead (puts place
  // around it, reads decode around it, re-placement starts after
  // replace_after) until a batch finishes; meanwhile it refuses parity
  // shards and metadata writes with Unavailable instead of queueing them
  // behind the stall, and places its own puts' stripes without itself.
  // Keep it well below rpc_timeout: a put waiting on the node then finds
  // it dead when its request times out, and sends the stripe elsewhere.
  // Only with batch_durable_commits (a synchronous commit would stall the
  // loop itself: silence, then dead_after). Zero: never.
  Duration disk_stall = std::chrono::seconds(4);
};

// Who asks: the client's uid/gid from SO_PEERCRED. uid 0 passes every
// permission check.
struct Caller {
  uint32_t uid = 0;
  uint32_t gid = 0;
};

struct Attr {
  bool is_dir = false;
  uint64_t size = 0;
  uint64_t version = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t mode = 0;  // permission bits (07777)
  uint64_t mtime_ns = 0;
};

struct DirEntry {
  std::string name;
  bool is_dir = false;
};

struct FileData {
  uint64_t version = 0;
  std::vector<uint8_t> bytes;
};

class Node {
 public:
  // REQUIRES: transport, data and parity outlive the node.
  // `meta` holds the records this node owns; null: in memory only.
  static StatusOr<std::unique_ptr<Node>> Create(const NodeOptions& options,
                                                transport::Transport* transport,
                                                ShardStore* data, ShardStore* parity,
                                                placement::ClusterView view,
                                                MetaStore* meta = nullptr);
  ~Node();

  // The membership this node acts on (failure detection updates it).
  void SetView(placement::ClusterView view) { view_ = std::move(view); }

  // Failure detection and rejoin (DESIGN §3). The owner calls Tick about
  // once a second with its clock: every other node gets a HEARTBEAT; a live
  // peer silent for dead_after is declared dead (a paused process still
  // holds its TCP connection, so only silence shows it); a peer marked dead
  // whose HEARTBEAT arrives is alive again. Transport peer failures are
  // reported with PeerFailed. Every change bumps the view's epoch and runs
  // the membership callback.
  void Tick(TimePoint now);
  void PeerFailed(NodeId peer, const Status& why);
  using MembershipCallback = std::function<void(NodeId peer, bool alive, const std::string& why)>;
  void OnMembershipChange(MembershipCallback cb) { on_membership_ = std::move(cb); }
  const placement::ClusterView& view() const { return view_; }
  // The erasure-coding backend in use ("gfni", "isal", "jerasure").
  std::string_view coder_backend() const { return coder_->backend(); }
  NodeId id() const { return options_.id; }
  size_t records_owned() const { return records_.size(); }
  // The newest version of each live file whose first live metadata owner
  // is this node (so the nodes of a cluster count each file once, when
  // their views agree): its stripes, how many have a shard on a node that
  // is down (degraded: reads decode around it) and how many more than m
  // (lost until nodes come back: reads fail with EIO). Placement only, no
  // shard is read: a shard missing on a live node (a wiped tmpfs) shows in
  // repair_progress instead. O(stripes x nodes) while a node is down, O(1)
  // per file otherwise. Loop thread.
  struct StripeHealth {
    uint64_t files = 0;
    uint64_t stripes = 0;
    uint64_t degraded = 0;
    uint64_t lost = 0;
  };
  StripeHealth stripe_health() const;

  // Repair: finds every shard this node should hold under the current
  // records (each live file and each kept version, where placement or the
  // record's `moved` list puts a shard here) and rebuilds the ones missing
  // or failing their CRC, decoding from k of the other shards, at most
  // kRepairWindow stripes at a time (the rate limit). For a node that
  // restarted with an empty tmpfs. done: OK when every such shard is
  // present; Unavailable when some could not be rebuilt (peers down: try
  // again later).
  struct RepairProgress {
    bool running = false;
    uint64_t passes = 0;
    uint64_t shards_checked = 0;
    uint64_t shards_missing = 0;
    uint64_t shards_restored = 0;
    uint64_t shards_failed = 0;
    std::string last_error;
  };
  void Repair(std::function<void(Status)> done);

  // Re-placement (NodeOptions::replace_after), run by Tick: a pass starts
  // when a node has been dead replace_after and the view or the set of such
  // nodes changed since the last complete pass (again with backoff after
  // one that failed). Each pass counts what it did for status.
  struct ReplaceProgress {
    bool running = false;
    uint64_t passes = 0;
    uint64_t shards_planned = 0;  // this pass
    uint64_t shards_sent = 0;     // this pass: rebuilt and on their new node (not yet in the records)
    uint64_t bytes_sent = 0;      // this pass: the bytes of those shards
    double last_pass_s = 0;       // the last finished pass, from its start (records gathered, planned,
                                  // rebuilt, recorded), wall-clock seconds
    uint64_t shards_moved = 0;    // rebuilt elsewhere and amended in the records, all passes
    uint64_t shards_failed = 0;   // all passes
    uint64_t skipped = 0;         // moves dropped because their node came back, all passes
    uint64_t no_spare = 0;        // stripes no live node could take a shard of, last pass
    uint64_t lost = 0;            // stripes with more than m shards down, last pass
    uint64_t records_copied = 0;  // records copied to stand-ins of dead owners, all passes
    uint64_t orphans_deleted = 0; // old copies deleted on nodes that came back after their shards moved
    std::string last_error;
  };
  const ReplaceProgress& replace_progress() const { return replace_; }
  // Orphan sweep (NodeOptions::orphan_sweep). SweepOrphans runs one pass
  // now (Tick runs them on schedule): it lists the shards held here, asks
  // every live node which puts it is writing (ORPHAN_CHECK), gathers every
  // record (META_LIST), and deletes each shard no record places here that
  // the previous pass found so too, with the same CRC and seq; the rest of
  // those it found are remembered for the next pass. FailedPrecondition
  // while a pass runs, Unavailable when it deleted nothing because more
  // than m nodes are dead, a node did not answer, or a re-placement runs.
  // The same records finish renames cut short (FinishCutShortRenames).
  struct OrphanProgress {
    bool running = false;
    uint64_t passes = 0;          // finished passes, including skipped ones
    uint64_t skipped = 0;         // passes that deleted nothing (see SweepOrphans)
    uint64_t candidates = 0;      // shards the last pass found unnamed, to go at the next one if still so
    uint64_t deleted = 0;         // all passes
    uint64_t bytes_freed = 0;     // all passes
    uint64_t renames_finished = 0;  // old names removed for renames cut short, all passes
    std::string last_error;
  };
  const OrphanProgress& orphan_progress() const { return orphans_; }
  // The parity disk watch (NodeOptions::disk_stall), for status.
  struct DiskWatch {
    bool stalled = false;
    Duration stalled_for{};  // while stalled: since the last batch finished
    uint64_t stalls = 0;     // times the disk was found stalled
    uint64_t refused = 0;    // parity shards and records refused meanwhile
  };
  DiskWatch disk_watch() const;
  void SweepOrphans(std::function<void(Status)> done);
  // Puts committed with shards absent (NodeOptions::min_shards) by this
  // gateway: stripes written that way, all puts.
  uint64_t degraded_stripes_written() const { return degraded_stripes_written_; }
  // Shard deletes held for nodes that were down when their version was
  // removed, collected or failed (sent once they are back), and sent so far.
  size_t deferred_deletes_waiting() const {
    size_t n = 0;
    for (const auto& [id, keys] : deferred_deletes_) n += keys.size();
    return n;
  }
  uint64_t deferred_deletes_sent() const { return deferred_deletes_sent_; }
  // A gateway wrote stripes without this node's shards while it was taken
  // for dead (REPAIR_HINT, repeated by that gateway every tick until this
  // node answers): the owner should run a repair pass that starts after
  // the hint. Returns the hint once and clears it.
  bool TakeRepairHint() {
    const bool h = repair_hint_;
    repair_hint_ = false;
    return h;
  }

  // Hands parity shards received since the last call to the flusher and
  // acknowledges those it committed (NodeOptions::batch_durable_commits).
  // Never blocks.
  void FlushDurable();
  // The eventfds of the node's threads (the parity flusher with batching;
  // the encoder and the GetToFile writer with encode_on_worker): readable
  // when FlushDurable has finished work to carry on. Empty with neither.
  std::vector<int> event_fds() const;
  // Parity group commits so far: batches and the shards in them.
  uint64_t durable_batches() const;
  uint64_t durable_shards() const;
  const RepairProgress& repair_progress() const { return repair_; }
  // Stripes decoded by this node (degraded reads and repairs), how many of
  // them the data CRCs a parity shard records confirmed, and how many
  // decoded to bytes those CRCs refuse (the read or repair failed with
  // DataLoss instead). Loop thread.
  struct DecodeStats {
    uint64_t stripes = 0;
    uint64_t verified = 0;
    uint64_t rejected = 0;
  };
  const DecodeStats& decode_stats() const { return decode_stats_; }
  // Healthy stripes read by this node (NodeOptions::check_reads): how many
  // a parity's recorded data CRCs confirmed, how many could not be checked
  // (no record, a parity down or at another update seq), and how many
  // disagreed (then decoded with every parity and checked: counted in
  // decode_stats); and the data shards found wrong that were rewritten on
  // their nodes with the checked decoded bytes. Loop thread.
  struct ReadCheckStats {
    uint64_t verified = 0;
    uint64_t unchecked = 0;
    uint64_t mismatched = 0;
    uint64_t rewritten = 0;
  };
  const ReadCheckStats& read_check_stats() const { return read_checks_; }
  // Hedged reads (NodeOptions::read_hedge): stripes whose parity was
  // fetched because a shard lagged, how many of them were served without
  // waiting for the laggard, and record lookups hedged; hedged writes
  // (NodeOptions::write_hedge). Loop thread.
  struct HedgeStats {
    uint64_t hedged = 0;
    uint64_t served_early = 0;
    uint64_t lookups = 0;  // record lookups that asked stand-ins for a lagging owner
    uint64_t put_stripes = 0;  // put stripes sent again without lagging nodes (write_hedge)
    uint64_t records = 0;      // record stores that went on to stand-ins of lagging owners
  };
  const HedgeStats& hedge_stats() const { return hedges_; }

  // Writes a new version of `path`. The bytes must stay valid (kept alive by
  // `owner`) until `done` runs.
  // A new file gets the caller's uid/gid and `mode`; replacing one needs
  // write permission and keeps its owner and mode.
  void Put(const std::string& path, std::span<const uint8_t> bytes,
           std::shared_ptr<const void> owner, const Caller& caller, uint32_t mode,
           std::function<void(Status)> done);
  void Put(const std::string& path, std::span<const uint8_t> bytes,
           std::shared_ptr<const void> owner, std::function<void(Status)> done) {
    Put(path, bytes, std::move(owner), Caller{}, 0644, std::move(done));
  }
  void Get(const std::string& path, std::function<void(StatusOr<FileData>)> done);

  // Namespace operations; errors carry the POSIX errno (Status::errno_hint):
  // ENOENT, EACCES, EEXIST, EISDIR, ENOTDIR, ENOTEMPTY, EXDEV (renaming a
  // directory), EBUSY (removing "/").
  void Stat(const std::string& path, std::function<void(StatusOr<Attr>)> done);
  // mask: R_OK|W_OK|X_OK bits, 0 for existence only.
  void Access(const std::string& path, const Caller& caller, int mask,
              std::function<void(Status)> done);
  void List(const std::string& dir, std::function<void(StatusOr<std::vector<DirEntry>>)> done);
  void Unlink(const std::string& path, const Caller& caller, std::function<void(Status)> done);
  void Rename(const std::string& from, const std::string& to, const Caller& caller,
              std::function<void(Status)> done);
  void Mkdir(const std::string& path, const Caller& caller, uint32_t mode,
             std::function<void(Status)> done);
  void Rmdir(const std::string& path, const Caller& caller, std::function<void(Status)> done);

  // Where GetInto writes: called once the file's size is known, returns
  // exactly `size` writable bytes that stay valid until `done` runs. Whole
  // data shards are received straight into it (no intermediate copy); the
  // node allocates its pages first (a full tmpfs fails the read with ENOSPC).
  using OutputAllocator = std::function<StatusOr<std::span<uint8_t>>(uint64_t size)>;
  struct FileInfo {
    uint64_t version = 0;
    uint64_t size = 0;
    uint32_t uid = 0;
    uint32_t gid = 0;
    uint32_t mode = 0;
    uint64_t mtime_ns = 0;
  };
  void GetInto(const std::string& path, const Caller& caller, OutputAllocator output,
               std::function<void(StatusOr<FileInfo>)> done);
  void GetInto(const std::string& path, OutputAllocator output,
               std::function<void(StatusOr<FileInfo>)> done) {
    GetInto(path, Caller{}, std::move(output), std::move(done));
  }
  // GetToFile: like GetInto, but `output` (called once the size is known)
  // returns a file descriptor already `size` bytes long, shared so that it
  // stays open while writes run: a caller's file or memfd (GET with kGetInto). The
  // node receives shards into pooled buffers and writes the bytes with
  // pwrite on a thread of its own (when encode_on_worker), so a slow file
  // system stalls neither the event loop nor encoding. A failed write
  // (ENOSPC, EFBIG) fails the read; the file is then partly written.
  using FileAllocator = std::function<StatusOr<std::shared_ptr<const int>>(uint64_t size)>;
  void GetToFile(const std::string& path, const Caller& caller, FileAllocator output,
                 std::function<void(StatusOr<FileInfo>)> done);

  // fern-ec inspect: the newest version of `path`, and for every stripe
  // where each shard lives and whether it is there and matches its CRC
  // (each holder checks its own bytes; none are moved). Needs read
  // permission. A stripe with fewer than k good shards is `lost`, with
  // fewer than k+m `degraded`.
  struct ShardReport {
    uint32_t index = 0;  // 0..k-1 data, k..k+m-1 parity
    NodeId node;
    // kAbsent: never written, as the record says (a degraded write,
    // NodeOptions::min_shards); its node writes it in its next repair pass.
    enum class State { kOk, kMissing, kCorrupt, kUnreachable, kAbsent } state = State::kUnreachable;
    uint64_t length = 0;
    uint32_t crc32c = 0;  // from the shard's header, when it answered
    uint64_t seq = 0;     // the last in-place update in its bytes (PSW)
    std::string error;    // why it is not kOk
  };
  struct StripeReport {
    uint64_t stripe = 0;
    int good = 0;  // shards in state kOk
    std::vector<ShardReport> shards;
  };
  struct Inspection {
    std::string path;
    FileInfo info;
    uint64_t file_id = 0;
    int k = 0, m = 0;
    uint64_t shard_size = 0;
    std::string technique;
    NodeId sequencer;        // who orders in-place updates of this file now
    uint64_t psw_epoch = 0;  // its last durable sequencer epoch
    std::vector<StripeReport> stripes;
  };
  void Inspect(const std::string& path, const Caller& caller, std::function<void(StatusOr<Inspection>)> done);

  // In-place update (PSW, DESIGN §2; node_update.cc). Changes `ranges` of
  // the committed version `base_version` of `path` (of `file_size` bytes) to
  // `bytes`, the ranges' new bytes concatenated. Each range is cut at stripe
  // boundaries; each piece is granted a seq by the file's sequencer (its
  // first live metadata owner, which hosts a psw::Sequencer), sent to the
  // stripe's data shards, which apply it in place and send parity deltas to
  // the parity shards, and commits once all k+m shards applied it. Pieces of
  // different stripes run in parallel (at most kUpdateWindow at once).
  // Needs write permission. FailedPrecondition+ESTALE when the newest
  // version or size is not base_version/file_size; Unavailable+EAGAIN when a
  // stripe's node is down (the update could not commit on all k+m shards);
  // Aborted (EIO) when a piece was refused or rolled back by recovery;
  // DeadlineExceeded when no answer came. On error, pieces already committed
  // stay: each piece is atomic, the update as a whole is not. `bytes` must
  // stay valid (held by `owner`) until done runs. done gets the version.
  struct ByteRange {
    uint64_t offset = 0;
    uint64_t length = 0;
  };
  void Update(const std::string& path, uint64_t base_version, uint64_t file_size,
              std::vector<ByteRange> ranges, std::span<const uint8_t> bytes,
              std::shared_ptr<const void> owner, const Caller& caller,
              std::function<void(StatusOr<uint64_t>)> done);

  // fern-ec scrub: for every stripe of the newest version of `path` (or of
  // every file under it, when it is a directory), fetches all k+m shards,
  // re-encodes the data shards and compares with the stored parity. A
  // stripe is inconsistent when parity differs or its shards carry
  // different update seqs; with `repair`, differing parity is rewritten from
  // the data (when all shards agree on the seq). Stripes missing shards are
  // counted as degraded (the repair pass rebuilds those), not inconsistent.
  struct ScrubReport {
    uint64_t files = 0;
    uint64_t stripes = 0;
    uint64_t consistent = 0;
    uint64_t inconsistent = 0;
    uint64_t repaired = 0;
    uint64_t degraded = 0;
    std::vector<std::string> problems;  // one line per bad stripe
  };
  void Scrub(const std::string& path, const Caller& caller, bool repair,
             std::function<void(StatusOr<ScrubReport>)> done);

  // PSW counters for status: updates this gateway committed, pieces applied
  // as a shard, sequencers hosted, recovery rounds resolved.
  struct PswStats {
    uint64_t updates_committed = 0;
    uint64_t updates_failed = 0;
    uint64_t pieces_applied = 0;
    uint64_t pieces_retried = 0;  // this gateway's pieces sent again after a rollback (kUpdateRetries)
    uint64_t sequencers = 0;
    uint64_t stripes_resolved = 0;
    uint64_t stripes_lost = 0;
  };
  PswStats psw_stats() const;

 private:
  struct PswState;
  struct FileSeq;
  struct UpdateOp;
  struct ScrubOp;
  static constexpr int kUpdateWindow = 16;  // update pieces in flight per Update
  // A piece the sequencer rolled back or refused (Aborted: its bytes are in
  // no shard) goes again, at most this many times: the recovery round that
  // rolled it back has rebuilt what it lacked (a shard lost on a node that
  // restarted with an empty tmpfs), so the next try usually commits.
  static constexpr int kUpdateRetries = 2;
  void InstallPswHandlers();
  void PswTick();
  void PswMembership(NodeId peer, bool alive);
  FileSeq* HostSequencer(const wire::FileRecord& record, Status* error);
  FileSeq* HostedSeq(const std::pair<uint64_t, uint64_t>& key);  // null: not hosted here
  void Execute(FileSeq* fs);
  void Sequence(FileSeq* fs, NodeId from, const wire::SeqRequest& req, transport::Responder r);
  void RebuildForRound(FileSeq* fs, const psw::RebuildShard& a);
  void UpdateNext(const std::shared_ptr<UpdateOp>& op);
  // EAGAIN while a node of the stripe is down, stuck (IsSlow) or has not
  // written its shard (--min-shards): an update needs all k+m.
  Status UpdateBlocked(const wire::FileRecord& record, uint64_t stripe);
  void UpdatePiece(const std::shared_ptr<UpdateOp>& op, size_t piece);
  void ScrubStripe(const std::shared_ptr<ScrubOp>& op, const std::shared_ptr<wire::FileRecord>& rec, uint64_t stripe);
  void ScrubNext(const std::shared_ptr<ScrubOp>& op);
  void DropPswShard(const ShardKey& key);
  // An in-place update of this shard held here is not finished (applied
  // but uncommitted, partial, or pieces waiting).
  bool PswBusy(const ShardKey& key) const;
  void PswSync();  // one parity flush, then the acknowledgements it covers

 private:
  struct PutOp;
  struct GetOp;
  // Reused 64-byte-aligned buffers of one size, so a put's stripes and a
  // get's shard replies neither fault in nor zero-fill fresh pages. A taken
  // buffer returns to the pool when its last owner lets go, on any thread
  // (the pool lives as long as any of its buffers); beyond `keep` idle ones
  // it is freed. Thread-safe.
  class BufferPool : public std::enable_shared_from_this<BufferPool> {
   public:
    BufferPool(size_t bytes, size_t keep) : bytes_(bytes), keep_(keep) {}
    ~BufferPool();
    std::shared_ptr<uint8_t> Take();  // nullptr when out of memory

   private:
    const size_t bytes_;
    const size_t keep_;
    std::mutex mu_;
    std::vector<uint8_t*> free_;  // guarded by mu_
  };
  // Stripes a put keeps encoded and in flight (each holds m parity buffers
  // of the pool), and stripes a get keeps being fetched. Measured with
  // ec_bench cluster (docs/performance.md): puts gained up to 24, gets to 48.
  static constexpr int kStripeWindow = 24;
  // A put's stripe whose shard's node failed while it was sent is placed
  // again without that node (the next one in placement order) and sent
  // again, at most this many times; the put fails only after that.
  static constexpr int kStripeRetries = 2;
  static constexpr int kGetWindow = 48;
  static constexpr int kRepairWindow = 4;
  static constexpr int kInspectWindow = 16;  // stripes checked at once
  static constexpr int kMaxRefetches = 50;   // a read's stripe refetched while seqs differ
  struct InspectOp;
  void InspectNext(const std::shared_ptr<InspectOp>& op);
  struct RepairOp;
  void ListRecords(std::function<void(StatusOr<std::vector<std::shared_ptr<wire::FileRecord>>>)> done,
                   bool everything = false);
  void RepairNext(const std::shared_ptr<RepairOp>& op);
  void RepairShard(const std::shared_ptr<RepairOp>& op, size_t task);
  // One shard of a stored stripe decoded from k others at one update seq,
  // fetched from their live nodes and checked against the data CRCs the
  // parity records: what Repair commits here and re-placement sends on.
  struct RebuiltShard {
    std::shared_ptr<std::vector<uint8_t>> bytes;
    uint64_t seq = 0;
    uint64_t epoch = 0;
    uint32_t crc32c = 0;
    std::vector<uint32_t> data_crcs;  // for a parity shard's header
  };
  void RebuildShard(const std::shared_ptr<wire::FileRecord>& layout, uint64_t stripe, int index,
                    std::function<void(StatusOr<RebuiltShard>)> done);
  struct ReplaceOp;
  void MaybeReplace();
  void PlanReplace(const std::shared_ptr<ReplaceOp>& op, const std::vector<std::shared_ptr<wire::FileRecord>>& records);
  void ReplaceNext(const std::shared_ptr<ReplaceOp>& op);
  void ReplaceShard(const std::shared_ptr<ReplaceOp>& op, size_t task);
  void FinishReplace(const std::shared_ptr<ReplaceOp>& op);
  // Applies `amend`'s moves to `rec` (its own version or a kept one,
  // matched by file_id and version), each only where the stripe's shard is
  // still on from_node: how many applied. NotFound without that version,
  // InvalidArgument for a move outside the layout or to an unknown node.
  StatusOr<int> AmendRecord(wire::FileRecord* rec, const wire::MetaAmend& amend) const;
  void AmendHostedSeq(const wire::MetaAmend& amend);  // node_update.cc
  // Sends `amend` to every replica of its path's record and applies it to
  // the sequencers hosted here; done: OK once every replica took it (one
  // without that version, answering NotFound, counts).
  void StoreAmend(std::shared_ptr<const wire::MetaAmend> amend, std::function<void(Status)> done);
  // `peer` is alive again (Tick): the shards this node moved away from it
  // while it was dead are deleted there, each once the newest record says
  // it lives on another live node.
  void DeleteMovedAway(NodeId peer);
  void InstallOrphanHandler();  // node_orphans.cc
  void MaybeSweepOrphans();
  // Tick: is a flusher batch older than disk_stall? Logs each change.
  void WatchDisk();
  // Unavailable while the parity disk is stalled (naming it), else OK.
  Status RefuseIfDiskStalled(const char* what);
  // The view a write places by: view_ without `left_out` (nodes that did
  // not answer this write in time) nor, while its disk is stalled, this
  // node (its peers count it dead; it should not write to itself either).
  // A narrowed view is a copy kept in `*narrowed`; view_ itself otherwise.
  const placement::ClusterView& WriteView(std::optional<placement::ClusterView>* narrowed,
                                          const std::set<uint32_t>& left_out = {}) const;
  // Nodes a request timed out on in the last dead_after (alive in the view,
  // but stuck): later puts and record stores start without them, and reads
  // fetch around them.
  // A node that was only slow is back after that; a stuck one is dead by then.
  std::set<uint32_t> SlowNodes();
  bool IsSlow(NodeId id) const;  // in SlowNodes; reads leave such a node out while k others serve the stripe
  // A request to `node` failed with `failure`: true if the node is
  // unreachable, dead or stuck (another node may take its part), false for
  // a refusal that would come again. A timeout marks it slow (SlowNodes).
  bool PeerUnusable(NodeId node, const Status& failure);
  // A rename cut short (its gateway died after writing the new name, before
  // removing the old) leaves both names live. Among `records` (every
  // newest record), an old name this node is the first live owner of whose
  // renaming_to names a live record of the same file id and version that
  // says renamed_from it gets its tombstone, as the rename would have
  // written: only if the previous pass saw it so too at the same generation
  // (a rename in progress does it itself in a moment). node_namespace.cc.
  void FinishCutShortRenames(const std::vector<std::shared_ptr<wire::FileRecord>>& records);
  struct OrphanPass;
  void FinishOrphanPass(const std::shared_ptr<OrphanPass>& pass,
                        const std::vector<std::shared_ptr<wire::FileRecord>>& records);
  Node(const NodeOptions& options, transport::Transport* t, ShardStore* data, ShardStore* parity,
       placement::ClusterView view, placement::Placement placement,
       std::unique_ptr<ec::ErasureCoder> coder, ec::StripeGeometry geometry);

  void InstallHandlers();
  using RecordPtr = std::shared_ptr<wire::FileRecord>;
  // Newest record among the live owners' answers, tombstones included
  // (NotFound if no owner has one).
  // A replica that fails unusable (PeerUnusable), or lags three times
  // behind the first answer (hedged, NodeOptions::read_hedge), is left
  // behind and its stand-in asked: the newest record may be there only.
  void LookupRecord(const std::string& path, std::function<void(StatusOr<RecordPtr>)> done);
  struct Lookup;
  void AskForRecord(const std::shared_ptr<Lookup>& lk, NodeId replica, bool is_owner);
  void FinishLookup(const std::shared_ptr<Lookup>& lk);
  void HedgeLookup(const std::shared_ptr<Lookup>& lk);
  void AskStandIns(const std::shared_ptr<Lookup>& lk, const std::set<uint32_t>& out);
  // Writes `record` to every live owner of its path; OK when all acknowledged.
  // A replica that fails unreachable, dead or with no answer in time (a
  // stopped process, a loop blocked on a hung disk) is left out and the
  // record stored on the replicas of a view without it (its stand-in), up
  // to kRecordRetries times; a refusal fails the store.
  void StoreRecord(const wire::FileRecord& record, std::function<void(Status)> done);
  struct RecordStore;
  void StoreRecordRound(const std::shared_ptr<RecordStore>& st);
  static constexpr int kRecordRetries = 2;
  // Sends one request to every live node (this one too). `take` gets each
  // answer and returns an error for a malformed one; `done` then gets how
  // many answered well, how many were asked, and the last error seen.
  struct Answers {
    int answered = 0;
    int asked = 0;
    Status last_error;
  };
  void AskEveryLiveNode(transport::MessageKind kind, const std::string& body,
                        std::function<Status(const transport::InMessage&)> take, std::function<void(Answers)> done);
  // META_LIST `list` to every live node: the newest record of each path any
  // of them holds (tombstones and directories too), and who answered.
  using NewestRecords = std::map<std::string, std::shared_ptr<wire::FileRecord>>;
  void GatherNewest(const wire::MetaList& list, std::function<void(NewestRecords, Answers)> done);
  // The live (newest, not deleted) paths under `dir` from every live node.
  void ListAll(const std::string& dir,
               std::function<void(StatusOr<std::map<std::string, bool>>)> done);
  // Deletes the shards of `layout`'s version, stripes [0, stripes): at once
  // on live nodes (best effort), and on a dead node once it is heard from
  // again (deferred_deletes_, in memory: a gateway restart forgets them).
  void DeleteShards(const wire::FileRecord& layout, uint64_t stripes);
  // One SHARD_DELETE; `done` (may be null) gets the answer.
  void DeleteShard(NodeId node, const ShardKey& key, std::function<void(Status)> done);
  // DeleteShard now if the node is alive, else held for when it is back
  // (deferred_deletes_).
  void DeleteShardWhenUp(NodeId node, const ShardKey& key);
  void DeleteAllVersions(const wire::FileRecord& record);
  // Deletes the shards of one version (a record or a kept version), unless
  // it came through a rename cut short (wire FileRecord renaming_to /
  // renamed_from) and the other name is live and names the same file_id:
  // then both names hold the file, and the shards stay.
  void DeleteVersionUnlessNamedElsewhere(const wire::FileRecord& version);
  uint64_t NewFileId(const std::string& path);
  // Takes `record` as this node's copy of its path unless a newer one is
  // here (then done(OK) at once), and persists it in the record log; done
  // once it is durable there. With batch_durable_commits the log is
  // written on meta_writer_, off the loop (a hung disk then stalls the
  // writer, which WatchDisk sees, not the loop): the record is in records_
  // at once, so a later, older one is refused against it and the log keeps
  // each path's records in order. Without, synchronously, before it is
  // taken. Unavailable while the disk is stalled. Returns whether the record
  // is now this node's copy (false: a newer one is here, or refused).
  bool InstallRecord(std::unique_ptr<wire::FileRecord> record, std::function<void(Status)> done);
  void SendShards(const std::shared_ptr<PutOp>& op);
  void IssueStripes(const std::shared_ptr<PutOp>& op);
  Status IssueStripe(const std::shared_ptr<PutOp>& op, uint64_t stripe);
  struct EncodedStripe;
  // GetInto and GetToFile: `setup` points the op at its output once the
  // record (and so the size) is known.
  void StartGet(const std::string& path, const Caller& caller,
                std::function<Status(GetOp*, uint64_t size)> setup,
                std::function<void(StatusOr<FileInfo>)> done);
  void PrefaultOutput(const std::shared_ptr<GetOp>& op);
  Status SendStripe(const std::shared_ptr<PutOp>& op, uint64_t stripe,
                    std::shared_ptr<uint8_t> buf, const EncodedStripe& e);
  struct StripeTry;
  void HedgeStripe(const std::shared_ptr<PutOp>& op, const std::shared_ptr<StripeTry>& attempt, uint64_t s);
  void CommitRecord(const std::shared_ptr<PutOp>& op);
  void IssueFetches(const std::shared_ptr<GetOp>& op);
  void FetchStripe(const std::shared_ptr<GetOp>& op, uint64_t stripe, bool with_parity);
  void FinishStripe(const std::shared_ptr<GetOp>& op, uint64_t stripe);
  // A reply of the stripe's current round was handled: finish the stripe
  // when nothing is outstanding, or a hedged one as soon as it can be.
  void StripeReplyDone(const std::shared_ptr<GetOp>& op, uint64_t stripe);
  // NodeOptions::read_hedge: the stripe's hedge, armed at its first reply,
  // fetches the parity if the stripe is still waiting then.
  void Hedge(const std::shared_ptr<GetOp>& op, uint64_t stripe, uint32_t round);
  // Hedging (NodeOptions::read_hedge, write_hedge): the first answer to
  // requests sent at `asked` came now; `fn` runs once they have waited
  // three times as long, and at least `floor`. Once per `*armed`; never
  // when floor is zero. Called on every reply: `fn` becomes a timer only
  // when armed.
  template <typename F>
  void HedgeOnce(Duration floor, TimePoint asked, bool* armed, F&& fn) {
    if (floor <= Duration::zero() || *armed) return;
    *armed = true;
    HedgeAt(floor, asked, std::function<void()>(std::forward<F>(fn)));
  }
  void HedgeAt(Duration floor, TimePoint asked, std::function<void()> fn);
  // A healthy stripe's data CRCs against the record its parity header
  // brought (NodeOptions::check_reads), counted in read_checks_: false when
  // they disagree.
  bool CheckAgainstRecord(const std::shared_ptr<GetOp>& op, uint64_t stripe);
  // After a mismatched stripe decoded checked: the data shards among its
  // sources whose bytes the decode replaced (CRC `now[i]` not the one their
  // node sent; never one at another update seq, decoded for it) are
  // rewritten there, each only if still stored as read (ShardPut
  // replace_if_unchanged); counted in read_checks_.rewritten, logged.
  void RewriteReplacedData(const std::shared_ptr<GetOp>& op, uint64_t stripe, const std::vector<uint32_t>& now);
  // internal::DecodeChecked with the coder, counted in decode_stats_.
  Status CheckedDecode(std::span<uint8_t* const> shards, ec::ShardSet have, ec::ShardSet want, size_t len,
                       const internal::ShardChecks& checks, std::vector<uint32_t>* data_crcs = nullptr);
  void WriteStripeOut(const std::shared_ptr<GetOp>& op, uint64_t stripe);
  std::vector<NodeId> StripeNodes(const wire::FileRecord& record, uint64_t stripe) const;
  // Bit i: the record says shard i of the stripe was never written (a
  // degraded write, NodeOptions::min_shards) and its node has not filled it.
  uint32_t AbsentMask(const wire::FileRecord& record, uint64_t stripe) const;
  // Shards of the stripe unavailable: on a dead node, or absent.
  int ShardsDown(const wire::FileRecord& record, uint64_t stripe) const;

  const NodeOptions options_;
  transport::Transport* const transport_;
  ShardStore* const data_;
  ShardStore* const parity_;
  placement::ClusterView view_;
  const placement::Placement placement_;
  const std::unique_ptr<ec::ErasureCoder> coder_;
  const ec::StripeGeometry geometry_;
  std::map<std::string, std::unique_ptr<wire::FileRecord>> records_;  // paths this node owns
  MetaStore* meta_ = nullptr;
  std::unique_ptr<MetaStore> owned_meta_;  // when Create got none
  uint64_t file_id_counter_ = 0;
  RepairProgress repair_;
  // Filled moves (absent shards this node wrote) some replica did not take:
  // sent again by the next repair pass, which fails until they land.
  std::vector<wire::MetaAmend> unsent_fills_;
  ReplaceProgress replace_;
  // Re-placement: since when each dead node has been seen dead, and the
  // view (epoch and eligible nodes) the last complete pass acted on.
  std::map<uint32_t, TimePoint> dead_since_;
  std::string replace_done_for_;
  TimePoint replace_done_at_{};
  TimePoint replace_retry_at_{};
  std::chrono::steady_clock::time_point replace_started_{};
  // Shards this node moved off each dead node, by node: (path, key).
  std::map<uint32_t, std::vector<std::pair<std::string, ShardKey>>> moved_away_;
  // Degraded writes: nodes this gateway left shards absent on (sent a
  // REPAIR_HINT when heard from again), stripes written so, and a hint
  // received.
  std::set<uint32_t> absent_on_;
  std::set<uint32_t> hinting_;  // REPAIR_HINT calls in flight
  // Deletes of unreferenced shards on nodes that were down (DeleteShards),
  // sent from Tick once they are alive, at most kDeferredDeletesPerTick a
  // tick; how many went out.
  static constexpr size_t kDeferredDeletesPerTick = 4096;
  std::map<uint32_t, std::vector<ShardKey>> deferred_deletes_;
  uint64_t deferred_deletes_sent_ = 0;
  uint64_t degraded_stripes_written_ = 0;
  bool repair_hint_ = false;
  Duration replace_backoff_ = std::chrono::seconds(5);
  // Orphan sweep: file ids of this gateway's puts not finished (a put's
  // shards land before its record), what the last pass found unnamed
  // (key -> CRC, seq), and when the next pass is due.
  std::multiset<uint64_t> puts_writing_;
  std::unordered_map<ShardKey, std::pair<uint32_t, uint64_t>, ShardKeyHash> orphan_candidates_;
  std::map<std::string, uint64_t> rename_candidates_;  // old name -> generation (FinishCutShortRenames)
  TimePoint orphan_next_{};
  OrphanProgress orphans_;
  std::map<uint32_t, TimePoint> slow_until_;  // SlowNodes
  // Parity disk watch: flusher batches finished when last seen, and since
  // when none has (with shards waiting).
  struct {
    uint64_t batches_seen = 0;
    TimePoint waiting_since{};
    bool stalled = false;
    uint64_t stalls = 0;
    uint64_t refused = 0;
  } disk_;
  DecodeStats decode_stats_;
  ReadCheckStats read_checks_;
  HedgeStats hedges_;
  void SetAlive(NodeId peer, bool alive, const std::string& why);
  TimePoint now_{};
  std::map<uint32_t, TimePoint> last_heard_;
  MembershipCallback on_membership_;
  // Stripe buffers (m parity + k padded data shards): one returns as soon
  // as the transport has sent its last shard (see SendStripe).
  std::shared_ptr<BufferPool> stripe_pool_;
  std::shared_ptr<BufferPool> reply_pool_;  // GetToFile's shard replies
  struct DurablePending {
    ShardStore::PendingCommit commit;
    transport::Responder responder;
  };
  std::vector<DurablePending> durable_pending_;
  std::unique_ptr<DurableFlusher> flusher_;  // with batch_durable_commits
  // With encode_on_worker. Declared after coder_ and the pools: destroyed (its
  // queued jobs finished) before what the jobs use.
  std::unique_ptr<WorkerThread> encoder_;
  // GetToFile's writes into callers' files, with encode_on_worker.
  std::unique_ptr<WorkerThread> writer_;
  // Record log appends (MetaStore::Put, fsync included), with
  // batch_durable_commits; the only caller of meta_->Put then.
  std::unique_ptr<WorkerThread> meta_writer_;
  uint64_t meta_writes_done_ = 0;  // their completions run (WatchDisk)
  // Parity shards received but not yet committed: a SHARD_DELETE that
  // overtakes its own shard (a put that timed out and cleans up) is applied
  // when the commit lands instead of being lost.
  struct InFlight {
    int count = 0;
    bool deleted = false;
  };
  std::unordered_map<ShardKey, InFlight, ShardKeyHash> durable_in_flight_;
  // Sequencers hosted, shard states, waiting writers (node_update.cc); shared
  // only so this header need not define it.
  std::shared_ptr<PswState> psw_;
};

}  // namespace fern::daemon
