// PSW: the pessimistic sequential-writing protocol for in-place and
// concurrent updates of committed stripes (DESIGN §2 "In-place and
// concurrent updates", §4: the sequencer is the file's first live metadata
// owner). Three pure pieces, no I/O, no clock, no threads, no randomness:
// events go in, actions come out, and the host (the daemon, or a test's
// simulated cluster) moves the actions over the network.
//
// One update of one stripe, seq N:
//
//   writer W ──Request(stripe, range)──▶ Sequencer        (one per file)
//   W ◀──GrantUpdate(stripe, N, epoch E)── Sequencer      (only once seq N-1
//                                                          of the stripe is
//                                                          committed/resolved)
//   W ──DataUpdate(N, E, new bytes)──▶ every data shard   (empty for the
//                                                          shards the range
//                                                          does not touch)
//   data shard i: delta_i = old ⊕ new, keeps old (undo) ──ParityDelta──▶
//   every parity shard j: parity_j ^= C[j][i] × delta_i, keeps old (undo)
//   every shard ──applied(N, E)──▶ Sequencer
//   all k+m applied: UpdateCommitted → W, CommitShards → every shard (drop undo)
//
// Invariants the pieces keep together:
//   - Per stripe, seqs are dense (1, 2, ...; 0 is the full write of the
//     version) and every shard applies them strictly in order: a shard
//     buffers an update that arrives before its predecessor.
//   - Pessimistic: the sequencer grants seq N+1 of a stripe only after seq N
//     committed or was resolved by recovery, so at most one update per stripe
//     is in flight, and every shard of a stripe sees the same order. Two
//     writers overlapping in a stripe get the sequencer's order on every
//     shard; disjoint ranges compose to their union.
//   - An update commits only when all k+m shards applied it; until a shard
//     learns of the commit it keeps the bytes the update overwrote (undo),
//     so the update can still be rolled back.
//   - Fencing: every recovery round runs under a new sequencer epoch, made
//     durable (PersistEpoch) before any message carries it. A shard refuses
//     anything stamped with an epoch older than the newest it has seen, so a
//     late message of a dead writer, sequencer or round cannot change a
//     stripe after recovery decided its fate. Seqs above a rolled-back
//     update are reused under a newer epoch, and the first update granted
//     after a round never shares the round's epoch, so a straggling
//     duplicate of a round's rollback or rebuild cannot touch it either.
//
// Recovery (DecideRecovery, run by the Sequencer for every stripe that lost a
// shard, a writer, or its sequencer). A round at a new epoch E:
//   1. fence: every live shard raises its epoch to E (refusing older
//      messages from then on) and reports its header (epoch, applied seq,
//      committed seq) and how far it can undo;
//   2. THE RULE: the stripe goes to the NEWEST seq t that at least k
//      survivors hold or can undo to. Those survivors ("keep") roll back to
//      t (a no-op for the ones already at t);
//   3. every other shard -- lost, lagging behind t, or unable to undo to t --
//      is rebuilt at t by decoding from the kept ones; a lagging survivor
//      keeps its old bytes as undo, so a round interrupted here can still
//      go back;
//   4. commit t on every shard; the stripe takes updates again.
// So an update that reached at least k shards is rolled forward (the others
// are rebuilt with it), one that reached fewer is rolled back. A committed
// update is never rolled back: it reached all k+m shards, a shard keeps no
// undo below a seq it knows committed, and only dying takes it off one. A
// crash during a round starts another at a newer epoch; the answers of the
// old one are ignored and its stragglers fenced. Throughout, the last
// committed seq stays held by (or undoable to on) at least k shards that
// are not down -- a shard is down from its loss until the round that
// rebuilds it finishes -- so with at most m shards of a stripe down some seq
// is always reachable by k of them. A stripe where none is (more than m
// down) is DataLoss, never wrong bytes.
//
// The host's part: perform the actions of one call in order, PersistEpoch
// durably before anything after it; deliver messages at least once in any
// order (a message may be lost only with its sender or receiver, and then
// the failure is reported: ShardsFailed, WriterFailed); run deadlines for
// granted updates (UpdateTimedOut); and when the file's first live metadata
// owner changes (Placement::Sequencer), build the new sequencer with
// Recover from the epoch in the file's record. A Sequencer keeps O(stripes)
// state.
//
// Thread-safety: none; Sequencer and ShardUpdateState are values owned by one
// event loop (the metadata owner's, the shard's node's).
//
// Errors: InvalidArgument for malformed events (stripe or shard out of
// range, a range outside the shard), Aborted for an update, fence, rollback
// or rebuild stamped with a stale epoch (fencing), FailedPrecondition for an
// event the protocol cannot produce (a protocol bug: e.g. rolling back past
// the kept undo), ResourceExhausted when a shard would buffer too many
// out-of-order pieces, DataLoss for a stripe recovery cannot restore.
// Duplicated and late events that are merely stale (an ack of an update
// already committed, a report of a superseded round) are ignored with OK:
// the network reorders and duplicates, and that is not an error. A call
// that returns an error changes no state and appends no action.
#pragma once

#include <compare>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/status.h"
#include "ec/erasure_coder.h"

namespace fern::daemon::psw {

using Seq = uint64_t;
using Epoch = uint64_t;

struct WriterId {
  uint64_t value = 0;
  constexpr WriterId() = default;
  constexpr explicit WriterId(uint64_t v) : value(v) {}
  friend constexpr auto operator<=>(WriterId, WriterId) = default;
  std::string ToString() const { return "writer " + std::to_string(value); }
};

// Shard `shard` (0..k-1 data, k..k+m-1 parity) of stripe `stripe`.
struct ShardSlot {
  uint64_t stripe = 0;
  int shard = 0;
  friend bool operator==(const ShardSlot&, const ShardSlot&) = default;
};

// Bytes [offset, offset+length) of a stripe's data, counted as in
// StripeGeometry: data shard i holds [i*shard_len, (i+1)*shard_len).
struct UpdateRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// The part of an update range that falls into one data shard.
struct UpdatePiece {
  int shard = 0;              // data shard index
  uint64_t shard_offset = 0;  // where in the shard
  uint64_t range_offset = 0;  // where in the update's bytes
  uint64_t length = 0;
};

// Cuts a stripe range into per-data-shard pieces, in shard order; the shards
// they name are the update's data mask. InvalidArgument when the range is
// empty or ends past k * shard_len.
StatusOr<std::vector<UpdatePiece>> SplitStripeRange(int k, uint64_t shard_len, UpdateRange range);
ec::ShardSet DataMask(std::span<const UpdatePiece> pieces);

// ---- ShardUpdateState: one shard of one stripe, on the shard's node --------

// What a shard header carries for PSW (ShardMeta.seq/epoch on disk).
struct ShardHeader {
  Epoch epoch = 0;        // newest sequencer epoch this shard has seen
  Seq applied_seq = 0;    // updates 1..applied_seq are in the bytes
  Seq committed_seq = 0;  // updates 1..committed_seq are known committed
  friend bool operator==(const ShardHeader&, const ShardHeader&) = default;
};

// What a shard tells a recovery round (the header plus what it can undo).
struct ShardReport {
  Epoch epoch = 0;
  Seq applied_seq = 0;
  Seq committed_seq = 0;
  // Undo is kept for applied-but-uncommitted updates, or for parity pieces
  // of applied_seq+1 already applied in place (partial).
  bool has_undo = false;
  bool partial = false;
  // The lowest seq this shard can be rolled back to (applied_seq when it
  // keeps no undo).
  Seq undo_floor_seq = 0;
};

// The new bytes of update (seq, epoch) for one data shard. `bytes` is empty
// for a data shard the range does not touch (it still applies and
// acknowledges the seq: every shard sees every seq). `data_mask` is the set
// of data shards the update touches; parity shards expect a delta from each.
struct DataUpdate {
  Seq seq = 0;
  Epoch epoch = 0;
  ec::ShardSet data_mask;
  uint64_t offset = 0;  // within the shard
  std::span<const uint8_t> bytes;
};

// The delta (old ⊕ new) one touched data shard computed for update (seq,
// epoch), as every parity shard receives it.
struct ParityDelta {
  Seq seq = 0;
  Epoch epoch = 0;
  int data_index = 0;
  ec::ShardSet data_mask;
  uint64_t offset = 0;  // within the shard (the same for data and parity)
  std::span<const uint8_t> delta;
};

// A shard applied update (seq, epoch): acknowledge it to the sequencer, and
// when `forward` (a touched data shard applying it for the first time) send
// ParityDelta{seq, epoch, data_index, data_mask, offset, delta} to every
// parity shard of the stripe. On a parity shard, `data_mask` names the data
// shards whose deltas it applied.
struct ShardApplied {
  Seq seq = 0;
  Epoch epoch = 0;
  bool forward = false;
  int data_index = 0;
  ec::ShardSet data_mask;
  uint64_t offset = 0;
  std::vector<uint8_t> delta;
};

// The PSW state of one shard. The caller owns the shard bytes (a store slot,
// a mapping) and passes a view that must outlive the state; the state writes
// updates through it and owns its undo and buffered copies. Parity shards
// apply coef × delta with a scalar GF(2^8) product table (ec/gf256.h
// arithmetic): correct for any length and offset, not the backends' SIMD
// speed (ErasureCoder::ApplyDelta wants all m parity shards in one place,
// and a parity shard holds one).
class ShardUpdateState {
 public:
  // More out-of-order pieces than this are refused (ResourceExhausted); the
  // pessimistic sequencer keeps one update per stripe in flight, so a
  // correct cluster buffers a handful at most.
  static constexpr size_t kMaxBuffered = 1024;

  // Data shard `index` (0..k-1). REQUIRES: `shard` outlives the state.
  static StatusOr<ShardUpdateState> Data(int k, int index, std::span<uint8_t> shard,
                                         const ShardHeader& header);
  // Parity shard `index` (k..k+m-1); coefs[i] = C[index-k][i], row index-k
  // of the coder's coding matrix (ErasureCoder::coding_matrix()).
  static StatusOr<ShardUpdateState> Parity(int k, int index, std::span<const uint8_t> coefs,
                                           std::span<uint8_t> shard, const ShardHeader& header);

  // Move-only: a copy would write through the same shard view.
  ShardUpdateState(ShardUpdateState&&) = default;
  ShardUpdateState& operator=(ShardUpdateState&&) = default;
  ShardUpdateState(const ShardUpdateState&) = delete;
  ShardUpdateState& operator=(const ShardUpdateState&) = delete;

  bool is_parity() const { return is_parity_; }
  int index() const { return index_; }
  ShardHeader header() const { return {epoch_, applied_, committed_}; }
  ShardReport report() const;
  size_t buffered() const { return buffered_count_; }

  // Data shards only. Applies the update when it is the next seq (then any
  // buffered successors), buffers it when it is ahead, re-acknowledges a
  // duplicate of an applied seq (without forwarding again). Appends one
  // ShardApplied per seq applied. Aborted when u.epoch is stale.
  Status ApplyData(const DataUpdate& u, std::vector<ShardApplied>* out);

  // Parity shards only. Applies the piece in place when it belongs to the
  // next seq, buffers it when ahead, ignores a duplicate. The seq counts as
  // applied (one ShardApplied appended) once a piece from every shard of its
  // data mask is in.
  Status ApplyParity(const ParityDelta& d, std::vector<ShardApplied>* out);

  // Updates up to `seq` committed: drops their undo. A commit from an epoch
  // older than the shard's is ignored (OK): a newer round or commit decides
  // those seqs. FailedPrecondition when seq was never applied here.
  Status Commit(Seq seq, Epoch epoch);

  // A recovery round at `epoch` begins: from now on anything older is
  // refused, and buffered pieces of older epochs are dropped. Returns the
  // report for the round. Aborted when epoch is stale.
  StatusOr<ShardReport> Fence(Epoch epoch);

  // Restores the bytes of seq `target`: undoes partial pieces and applied
  // updates above it, newest first, byte-exact; drops buffered pieces.
  // FailedPrecondition when target > applied_seq or below undo_floor_seq;
  // Aborted when epoch is stale.
  Status RollBack(Epoch epoch, Seq target);

  // A recovery round rebuilt this (lagging) shard at `seq` by decoding the
  // others: `bytes` replace the shard's. Its previous bytes (partial pieces
  // undone first) are kept as undo, so the round can still roll the stripe
  // back until it commits; with applied seq above `seq` nothing is kept, and
  // at `seq` already (a duplicate) nothing changes. A lost shard is not
  // rebuilt through this: its replacement is a new state with the header
  // RebuildShard names. InvalidArgument on a size mismatch,
  // FailedPrecondition below the committed seq, Aborted when epoch is stale.
  Status Rebuild(Epoch epoch, Seq seq, std::span<const uint8_t> bytes);

 private:
  struct UndoPiece {
    uint64_t offset = 0;
    std::vector<uint8_t> old_bytes;
  };
  // Restoring `pieces` takes the shard from seq `seq` back to seq `from`.
  struct Undo {
    Seq seq = 0;
    Seq from = 0;
    std::vector<UndoPiece> pieces;
  };
  // A parity seq whose pieces are arriving: applied in place as they come.
  struct Partial {
    Epoch epoch = 0;
    ec::ShardSet data_mask;
    ec::ShardSet received;
    Undo undo;
  };
  struct Buffered {
    Epoch epoch = 0;
    int data_index = 0;
    ec::ShardSet data_mask;
    uint64_t offset = 0;
    std::vector<uint8_t> bytes;
  };

  ShardUpdateState(int k, int index, bool is_parity, std::vector<uint8_t> coefs,
                   std::span<uint8_t> shard, const ShardHeader& header);

  Status CheckRange(uint64_t offset, size_t length, const char* what) const;
  Status CheckEpoch(Epoch epoch, const char* what) const;
  void RaiseEpoch(Epoch epoch);
  void ApplyDataNow(Seq seq, Epoch epoch, ec::ShardSet mask, uint64_t offset,
                    std::span<const uint8_t> bytes, std::vector<ShardApplied>* out);
  void ApplyPieceNow(Seq seq, Epoch epoch, int data_index, ec::ShardSet mask, uint64_t offset,
                     std::span<const uint8_t> delta, std::vector<ShardApplied>* out);
  void Drain(std::vector<ShardApplied>* out);
  void Restore(const Undo& undo);
  void DropBuffered();
  std::string Name() const;

  int k_;
  int index_;
  bool is_parity_;
  // Parity only: mul_[i*256 + x] = C[index-k][i] × x in GF(2^8), one
  // 256-byte product table per data shard, so applying a delta costs one
  // lookup per byte.
  std::vector<uint8_t> mul_;
  std::span<uint8_t> shard_;
  Epoch epoch_;
  Seq applied_;
  Seq committed_;
  std::deque<Undo> undo_;  // applied, uncommitted; ascending seq
  std::optional<Partial> partial_;
  std::map<Seq, std::vector<Buffered>> buffered_;
  size_t buffered_count_ = 0;
};

// ---- Recovery --------------------------------------------------------------

// What a recovery round does to one stripe (the rule is in the file comment).
struct RecoveryDecision {
  Seq seq = 0;               // every shard ends at this seq
  ec::ShardSet keep;         // survivors rolled back to seq; the rebuild sources
  ec::ShardSet rolled_back;  // the part of keep that undoes something
  ec::ShardSet rebuild;      // lost, lagging, or unable to undo: decoded at seq
};

// reports[i] is shard i's report, or nullopt for a lost shard.
// REQUIRES: reports.size() == k + m. DataLoss when no seq is reachable by k
// survivors.
StatusOr<RecoveryDecision> DecideRecovery(int k, int m,
                                          std::span<const std::optional<ShardReport>> reports);

// ---- Sequencer: one per file, on its first live metadata owner -------------

struct UpdateRequest {
  WriterId writer;
  uint64_t request = 0;  // the writer's id for this update, echoed back
  uint64_t stripe = 0;
  UpdateRange range;
};

// Make `epoch` durable (the file's metadata record) before performing any
// later action of the same batch: a successor sequencer starts above it.
struct PersistEpoch {
  Epoch epoch = 0;
};
// To the writer: go ahead with update seq of the stripe, stamped epoch.
struct GrantUpdate {
  WriterId writer;
  uint64_t request = 0;
  uint64_t stripe = 0;
  Seq seq = 0;
  Epoch epoch = 0;
  UpdateRange range;
};
// To the writer: its update is committed (applied on all k+m shards, or
// rolled forward by recovery); a read now returns it.
struct UpdateCommitted {
  WriterId writer;
  uint64_t request = 0;
  uint64_t stripe = 0;
  Seq seq = 0;
  Epoch epoch = 0;
};
// To the writer: its update did not happen (rolled back, or refused before a
// grant: seq 0). `status` says why.
struct UpdateAborted {
  WriterId writer;
  uint64_t request = 0;
  uint64_t stripe = 0;
  Seq seq = 0;
  Status status;
};
// To every shard of the stripe: updates up to seq are committed.
struct CommitShards {
  uint64_t stripe = 0;
  Seq seq = 0;
  Epoch epoch = 0;
};
// To one shard: ShardUpdateState::Fence(epoch); answer with ShardReported.
struct FenceShard {
  ShardSlot slot;
  Epoch epoch = 0;
};
// To one shard: ShardUpdateState::RollBack(epoch, seq); answer with
// ShardRolledBack.
struct RollBackShard {
  ShardSlot slot;
  Epoch epoch = 0;
  Seq seq = 0;
};
// To the recovery service: decode the slot from `sources` (every one of them
// at header epoch `epoch`, applied seq `seq`, nothing partial; refuse
// otherwise: the round is stale) and install it -- on a live lagging shard
// with ShardUpdateState::Rebuild (refused if that shard has seen a newer
// epoch), on a lost one as a new state with header {epoch, seq,
// committed_seq} -- then answer ShardRebuilt.
struct RebuildShard {
  ShardSlot slot;
  Epoch epoch = 0;
  Seq seq = 0;
  // What the sequencer knows committed; seq itself is not until the round
  // finishes, and a newer round may still roll it back.
  Seq committed_seq = 0;
  ec::ShardSet sources;
};
// A recovery round finished: the stripe is consistent at seq (status OK) or
// lost (DataLoss).
struct StripeResolved {
  uint64_t stripe = 0;
  Epoch epoch = 0;
  Seq seq = 0;
  ec::ShardSet rolled_back;
  ec::ShardSet rebuilt;
  Status status;
};

using Action = std::variant<PersistEpoch, GrantUpdate, UpdateCommitted, UpdateAborted, CommitShards,
                            FenceShard, RollBackShard, RebuildShard, StripeResolved>;
using Actions = std::vector<Action>;

struct SequencerConfig {
  int k = 0;
  int m = 0;
  uint64_t stripes = 0;  // of the file version being updated
};

class Sequencer {
 public:
  // For a version just written whole: every stripe at seq 0. The epoch is
  // last_epoch + 1 (PersistEpoch appended).
  static StatusOr<Sequencer> Start(const SequencerConfig& config, Epoch last_epoch, Actions* out);
  // For a sequencer replacing a dead one (or restarting): last_epoch is the
  // highest epoch made durable (fold in the shard headers' epochs too when
  // they are at hand). Runs at last_epoch + 1 and starts a recovery round on
  // every stripe, treating `failed` slots as lost; the seqs are learned from
  // the shard reports. Updates are granted as stripes resolve.
  static StatusOr<Sequencer> Recover(const SequencerConfig& config, Epoch last_epoch,
                                     std::span<const ShardSlot> failed, Actions* out);

  Sequencer(Sequencer&&) noexcept;
  Sequencer& operator=(Sequencer&&) noexcept;
  ~Sequencer();

  // Queues the request behind the stripe's earlier ones (once: a duplicate
  // of a queued or in-flight request is ignored); grants it at once when the
  // stripe is idle. The stripe's DataLoss status if it is lost.
  Status RequestUpdate(const UpdateRequest& request, Actions* out);
  // Shard `shard` applied (seq, epoch). The k+m-th distinct ack of the
  // in-flight update commits it and grants the next queued one.
  Status ShardApplied(uint64_t stripe, int shard, Seq seq, Epoch epoch, Actions* out);
  // Slots whose shard is gone (node died, tmpfs lost): one new epoch, and a
  // (re)started recovery round on each affected stripe.
  Status ShardsFailed(std::span<const ShardSlot> slots, Actions* out);
  // The writer died: its queued requests are dropped, and each stripe where
  // its update is in flight is recovered.
  Status WriterFailed(WriterId writer, Actions* out);
  // The host's deadline for update seq of the stripe passed (a paused or
  // lost writer): the stripe is recovered.
  Status UpdateTimedOut(uint64_t stripe, Seq seq, Actions* out);
  // Answers of a recovery round; those of a superseded round are ignored.
  Status ShardReported(uint64_t stripe, int shard, Epoch round, const ShardReport& report,
                       Actions* out);
  Status ShardRolledBack(uint64_t stripe, int shard, Epoch round, Actions* out);
  Status ShardRebuilt(uint64_t stripe, int shard, Epoch round, Actions* out);

  Epoch epoch() const { return epoch_; }
  const SequencerConfig& config() const { return config_; }
  // No update granted, queued, or under recovery, on any stripe.
  bool Idle() const;
  // The stripe's last committed or resolved seq.
  Seq stripe_seq(uint64_t stripe) const;
  bool InRecovery(uint64_t stripe) const;
  // The seq of the stripe's in-flight update, if one is granted.
  std::optional<Seq> InFlight(uint64_t stripe) const;

 private:
  struct StripeState;

  explicit Sequencer(const SequencerConfig& config, Epoch epoch);
  Status CheckStripe(uint64_t stripe) const;
  Status CheckSlot(uint64_t stripe, int shard) const;
  int n() const { return config_.k + config_.m; }
  // A new epoch (persisted), then BeginRounds.
  void StartRounds(const std::vector<uint64_t>& stripes, Actions* out);
  // (Re)starts a round at the current epoch on each stripe: fences its live
  // shards; superseded rounds' answers are ignored from then on.
  void BeginRounds(const std::vector<uint64_t>& stripes, Actions* out);
  void OnReportsComplete(uint64_t stripe, Actions* out);
  void StartRebuilds(uint64_t stripe, Actions* out);
  void FinishRound(uint64_t stripe, Actions* out);
  void FailStripe(uint64_t stripe, const Status& status, Actions* out);
  void MaybeGrant(uint64_t stripe, Actions* out);

  SequencerConfig config_;
  Epoch epoch_;
  std::vector<StripeState> stripes_;
};

}  // namespace fern::daemon::psw
