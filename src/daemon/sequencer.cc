#include "daemon/sequencer.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "ec/gf256.h"

namespace fern::daemon::psw {
namespace {

std::string SeqName(uint64_t stripe, Seq seq) {
  return "stripe " + std::to_string(stripe) + " seq " + std::to_string(seq);
}

std::string SetToString(ec::ShardSet set) {
  std::string s;
  for (int i = 0; i < ec::kMaxShards; ++i) {
    if (!set.contains(i)) continue;
    if (!s.empty()) s += ' ';
    s += std::to_string(i);
  }
  return s.empty() ? "none" : s;
}

}  // namespace

StatusOr<std::vector<UpdatePiece>> SplitStripeRange(int k, uint64_t shard_len, UpdateRange range) {
  if (k <= 0 || k >= ec::kMaxShards || shard_len == 0) {
    return InvalidArgumentError("split update: bad k=" + std::to_string(k) +
                                " or shard_len=" + std::to_string(shard_len));
  }
  const uint64_t stripe_bytes = shard_len * static_cast<uint64_t>(k);
  if (range.length == 0 || range.offset >= stripe_bytes ||
      range.length > stripe_bytes - range.offset) {
    return InvalidArgumentError("split update: range [" + std::to_string(range.offset) + ", +" +
                                std::to_string(range.length) + ") outside the stripe's " +
                                std::to_string(stripe_bytes) + " data bytes");
  }
  std::vector<UpdatePiece> pieces;
  uint64_t pos = range.offset;
  const uint64_t end = range.offset + range.length;
  while (pos < end) {
    UpdatePiece p;
    p.shard = static_cast<int>(pos / shard_len);
    p.shard_offset = pos % shard_len;
    p.range_offset = pos - range.offset;
    p.length = std::min(end - pos, shard_len - p.shard_offset);
    pieces.push_back(p);
    pos += p.length;
  }
  return pieces;
}

ec::ShardSet DataMask(std::span<const UpdatePiece> pieces) {
  ec::ShardSet mask;
  for (const auto& p : pieces) mask.insert(p.shard);
  return mask;
}

// ---- ShardUpdateState ------------------------------------------------------

ShardUpdateState::ShardUpdateState(int k, int index, bool is_parity, std::vector<uint8_t> coefs,
                                   std::span<uint8_t> shard, const ShardHeader& header)
    : k_(k),
      index_(index),
      is_parity_(is_parity),
      mul_(coefs.size() * 256),
      shard_(shard),
      epoch_(header.epoch),
      applied_(header.applied_seq),
      committed_(header.committed_seq) {
  // Multiplying by a constant is linear over XOR: c×x is the XOR of c×2^b
  // over the bits b of x, so eight field products fill each table.
  for (size_t i = 0; i < coefs.size(); ++i) {
    uint8_t* t = mul_.data() + i * 256;
    for (int b = 0; b < 8; ++b) t[1 << b] = ec::gf256::Mul(coefs[i], static_cast<uint8_t>(1 << b));
    for (int x = 3; x < 256; ++x) {
      const int low = x & -x;
      if (x != low) t[x] = t[x ^ low] ^ t[low];
    }
  }
}

StatusOr<ShardUpdateState> ShardUpdateState::Data(int k, int index, std::span<uint8_t> shard,
                                                  const ShardHeader& header) {
  if (k <= 0 || k >= ec::kMaxShards || index < 0 || index >= k) {
    return InvalidArgumentError("psw data shard: index " + std::to_string(index) +
                                " out of range for k=" + std::to_string(k));
  }
  if (header.committed_seq > header.applied_seq) {
    return InvalidArgumentError("psw data shard " + std::to_string(index) +
                                ": header committed seq above applied seq");
  }
  return ShardUpdateState(k, index, false, {}, shard, header);
}

StatusOr<ShardUpdateState> ShardUpdateState::Parity(int k, int index,
                                                    std::span<const uint8_t> coefs,
                                                    std::span<uint8_t> shard,
                                                    const ShardHeader& header) {
  if (k <= 0 || index < k || index >= ec::kMaxShards) {
    return InvalidArgumentError("psw parity shard: index " + std::to_string(index) +
                                " out of range for k=" + std::to_string(k));
  }
  if (coefs.size() != static_cast<size_t>(k)) {
    return InvalidArgumentError("psw parity shard " + std::to_string(index) + ": " +
                                std::to_string(coefs.size()) +
                                " coefficients, want k=" + std::to_string(k));
  }
  if (header.committed_seq > header.applied_seq) {
    return InvalidArgumentError("psw parity shard " + std::to_string(index) +
                                ": header committed seq above applied seq");
  }
  return ShardUpdateState(k, index, true, std::vector<uint8_t>(coefs.begin(), coefs.end()), shard,
                          header);
}

std::string ShardUpdateState::Name() const {
  return std::string(is_parity_ ? "parity" : "data") + " shard " + std::to_string(index_);
}

ShardReport ShardUpdateState::report() const {
  ShardReport r;
  r.epoch = epoch_;
  r.applied_seq = applied_;
  r.committed_seq = committed_;
  r.partial = partial_.has_value();
  r.has_undo = !undo_.empty() || r.partial;
  // Undo records chain from the oldest kept one's `from` up to applied_
  // (one per applied seq, one per rebuild), dropped from the front by commits.
  r.undo_floor_seq = undo_.empty() ? applied_ : undo_.front().from;
  return r;
}

Status ShardUpdateState::CheckRange(uint64_t offset, size_t length, const char* what) const {
  if (offset > shard_.size() || length > shard_.size() - offset) {
    return InvalidArgumentError(Name() + ": " + what + " [" + std::to_string(offset) + ", +" +
                                std::to_string(length) + ") outside the shard's " +
                                std::to_string(shard_.size()) + " bytes");
  }
  return Status();
}

Status ShardUpdateState::CheckEpoch(Epoch epoch, const char* what) const {
  if (epoch < epoch_) {
    return AbortedError(Name() + ": " + what + " stamped epoch " + std::to_string(epoch) +
                        ", shard has seen epoch " + std::to_string(epoch_) + " (fenced)");
  }
  return Status();
}

void ShardUpdateState::RaiseEpoch(Epoch epoch) {
  if (epoch <= epoch_) return;
  epoch_ = epoch;
  // Pieces of older epochs would be refused if they arrived now; the round
  // that raised the epoch decides those seqs, so they must not apply later.
  for (auto it = buffered_.begin(); it != buffered_.end();) {
    auto& v = it->second;
    const size_t before = v.size();
    std::erase_if(v, [&](const Buffered& b) { return b.epoch < epoch_; });
    buffered_count_ -= before - v.size();
    it = v.empty() ? buffered_.erase(it) : std::next(it);
  }
}

void ShardUpdateState::DropBuffered() {
  buffered_.clear();
  buffered_count_ = 0;
}

Status ShardUpdateState::ApplyData(const DataUpdate& u, std::vector<ShardApplied>* out) {
  if (is_parity_) return FailedPreconditionError(Name() + ": data update sent to a parity shard");
  FERN_RETURN_IF_ERROR(CheckEpoch(u.epoch, "update"));
  const std::string what = Name() + ": update seq " + std::to_string(u.seq);
  if (u.seq == 0) return InvalidArgumentError(what + ": seq 0 is the full write");
  if (u.data_mask.empty() || (u.data_mask.bits() & ~ec::ShardSet::FirstN(k_).bits())) {
    return InvalidArgumentError(what + ": bad data mask " + SetToString(u.data_mask));
  }
  if (u.data_mask.contains(index_) == u.bytes.empty()) {
    return InvalidArgumentError(
        what + ": " + std::to_string(u.bytes.size()) + " bytes but the data mask " +
        (u.data_mask.contains(index_) ? "includes" : "excludes") + " this shard");
  }
  FERN_RETURN_IF_ERROR(CheckRange(u.offset, u.bytes.size(), "update range"));

  if (u.seq <= applied_) {
    // A newer epoch only grants seqs above what every shard holds after the
    // round that raised it, so this is a protocol bug, not a duplicate.
    if (u.epoch > epoch_) {
      return FailedPreconditionError(what + " at epoch " + std::to_string(u.epoch) + " but seq " +
                                     std::to_string(applied_) + " already applied at epoch " +
                                     std::to_string(epoch_));
    }
    out->push_back({.seq = u.seq, .epoch = u.epoch});
    return Status();
  }
  if (u.seq > applied_ + 1) {
    auto it = buffered_.find(u.seq);
    const bool have =
        it != buffered_.end() && std::any_of(it->second.begin(), it->second.end(),
                                             [&](const Buffered& b) { return b.epoch >= u.epoch; });
    if (have) return Status();
    if (buffered_count_ >= kMaxBuffered) {
      return ResourceExhaustedError(what + ": " + std::to_string(buffered_count_) +
                                    " updates already buffered waiting for seq " +
                                    std::to_string(applied_ + 1));
    }
    RaiseEpoch(u.epoch);
    buffered_[u.seq].push_back({.epoch = u.epoch,
                                .data_index = index_,
                                .data_mask = u.data_mask,
                                .offset = u.offset,
                                .bytes = std::vector<uint8_t>(u.bytes.begin(), u.bytes.end())});
    ++buffered_count_;
    return Status();
  }
  RaiseEpoch(u.epoch);
  ApplyDataNow(u.seq, u.epoch, u.data_mask, u.offset, u.bytes, out);
  Drain(out);
  return Status();
}

void ShardUpdateState::ApplyDataNow(Seq seq, Epoch epoch, ec::ShardSet mask, uint64_t offset,
                                    std::span<const uint8_t> bytes,
                                    std::vector<ShardApplied>* out) {
  Undo undo{.seq = seq, .from = applied_, .pieces = {}};
  ShardApplied applied{.seq = seq,
                       .epoch = epoch,
                       .forward = mask.contains(index_),
                       .data_index = index_,
                       .data_mask = mask,
                       .offset = offset,
                       .delta = {}};
  if (!bytes.empty()) {
    uint8_t* dst = shard_.data() + offset;
    undo.pieces.push_back(
        {.offset = offset, .old_bytes = std::vector<uint8_t>(dst, dst + bytes.size())});
    applied.delta.resize(bytes.size());
    for (size_t i = 0; i < bytes.size(); ++i) applied.delta[i] = dst[i] ^ bytes[i];
    std::memcpy(dst, bytes.data(), bytes.size());
  }
  // An untouched shard still records an (empty) undo so undo records stay
  // one per applied seq and undo_floor_seq is simply the oldest one.
  undo_.push_back(std::move(undo));
  applied_ = seq;
  out->push_back(std::move(applied));
}

Status ShardUpdateState::ApplyParity(const ParityDelta& d, std::vector<ShardApplied>* out) {
  if (!is_parity_) return FailedPreconditionError(Name() + ": parity delta sent to a data shard");
  FERN_RETURN_IF_ERROR(CheckEpoch(d.epoch, "delta"));
  const std::string what = Name() + ": delta of data shard " + std::to_string(d.data_index) +
                           " for seq " + std::to_string(d.seq);
  if (d.seq == 0) return InvalidArgumentError(what + ": seq 0 is the full write");
  if (d.data_index < 0 || d.data_index >= k_ || !d.data_mask.contains(d.data_index) ||
      (d.data_mask.bits() & ~ec::ShardSet::FirstN(k_).bits())) {
    return InvalidArgumentError(what + ": bad data index or mask " + SetToString(d.data_mask));
  }
  if (d.delta.empty()) return InvalidArgumentError(what + ": empty delta");
  FERN_RETURN_IF_ERROR(CheckRange(d.offset, d.delta.size(), "delta range"));

  if (d.seq <= applied_) {
    if (d.epoch > epoch_) {
      return FailedPreconditionError(what + " at epoch " + std::to_string(d.epoch) + " but seq " +
                                     std::to_string(applied_) + " already applied at epoch " +
                                     std::to_string(epoch_));
    }
    out->push_back({.seq = d.seq, .epoch = d.epoch});
    return Status();
  }
  if (d.seq > applied_ + 1) {
    auto it = buffered_.find(d.seq);
    const bool have = it != buffered_.end() &&
                      std::any_of(it->second.begin(), it->second.end(), [&](const Buffered& b) {
                        return b.data_index == d.data_index && b.epoch >= d.epoch;
                      });
    if (have) return Status();
    if (buffered_count_ >= kMaxBuffered) {
      return ResourceExhaustedError(what + ": " + std::to_string(buffered_count_) +
                                    " deltas already buffered waiting for seq " +
                                    std::to_string(applied_ + 1));
    }
    RaiseEpoch(d.epoch);
    buffered_[d.seq].push_back({.epoch = d.epoch,
                                .data_index = d.data_index,
                                .data_mask = d.data_mask,
                                .offset = d.offset,
                                .bytes = std::vector<uint8_t>(d.delta.begin(), d.delta.end())});
    ++buffered_count_;
    return Status();
  }
  if (partial_) {
    // Every piece of one update carries its grant's epoch and mask; a piece
    // from a newer epoch means a round skipped rolling this one back.
    if (partial_->epoch != d.epoch || partial_->data_mask != d.data_mask) {
      return FailedPreconditionError(what + " at epoch " + std::to_string(d.epoch) + " mask " +
                                     SetToString(d.data_mask) + " but pieces of epoch " +
                                     std::to_string(partial_->epoch) + " mask " +
                                     SetToString(partial_->data_mask) + " are applied");
    }
    if (partial_->received.contains(d.data_index)) return Status();  // duplicate
  }
  RaiseEpoch(d.epoch);
  ApplyPieceNow(d.seq, d.epoch, d.data_index, d.data_mask, d.offset, d.delta, out);
  Drain(out);
  return Status();
}

void ShardUpdateState::ApplyPieceNow(Seq seq, Epoch epoch, int data_index, ec::ShardSet mask,
                                     uint64_t offset, std::span<const uint8_t> delta,
                                     std::vector<ShardApplied>* out) {
  if (!partial_) {
    partial_ = Partial{.epoch = epoch,
                       .data_mask = mask,
                       .received = {},
                       .undo = Undo{.seq = seq, .from = applied_, .pieces = {}}};
  }
  std::span<uint8_t> region = shard_.subspan(offset, delta.size());
  partial_->undo.pieces.push_back(
      {.offset = offset, .old_bytes = std::vector<uint8_t>(region.begin(), region.end())});
  const uint8_t* product = mul_.data() + static_cast<size_t>(data_index) * 256;
  for (size_t i = 0; i < delta.size(); ++i) region[i] ^= product[delta[i]];
  partial_->received.insert(data_index);
  if (partial_->received == partial_->data_mask) {
    undo_.push_back(std::move(partial_->undo));
    partial_.reset();
    applied_ = seq;
    out->push_back({.seq = seq, .epoch = epoch, .data_mask = mask});
  }
}

void ShardUpdateState::Drain(std::vector<ShardApplied>* out) {
  for (;;) {
    auto it = buffered_.find(applied_ + 1);
    if (it == buffered_.end()) return;
    std::vector<Buffered> pieces = std::move(it->second);
    buffered_.erase(it);
    buffered_count_ -= pieces.size();
    const Seq seq = applied_ + 1;
    if (!is_parity_) {
      const Buffered& b = pieces.back();  // the newest epoch's, if several
      RaiseEpoch(b.epoch);
      ApplyDataNow(seq, b.epoch, b.data_mask, b.offset, b.bytes, out);
      continue;
    }
    for (const Buffered& b : pieces) {
      if (applied_ >= seq) break;
      if (b.epoch < epoch_) continue;
      if (partial_ && (partial_->epoch != b.epoch || partial_->data_mask != b.data_mask ||
                       partial_->received.contains(b.data_index))) {
        continue;
      }
      RaiseEpoch(b.epoch);
      ApplyPieceNow(seq, b.epoch, b.data_index, b.data_mask, b.offset, b.bytes, out);
    }
    if (applied_ < seq) return;  // still waiting for pieces of seq
  }
}

Status ShardUpdateState::Commit(Seq seq, Epoch epoch) {
  if (epoch < epoch_) return Status();
  if (seq > applied_) {
    return FailedPreconditionError(Name() + ": commit of seq " + std::to_string(seq) +
                                   " but only seq " + std::to_string(applied_) + " applied");
  }
  RaiseEpoch(epoch);
  while (!undo_.empty() && undo_.front().seq <= seq) undo_.pop_front();
  committed_ = std::max(committed_, seq);
  return Status();
}

StatusOr<ShardReport> ShardUpdateState::Fence(Epoch epoch) {
  FERN_RETURN_IF_ERROR(CheckEpoch(epoch, "fence"));
  RaiseEpoch(epoch);
  return report();
}

void ShardUpdateState::Restore(const Undo& undo) {
  for (auto it = undo.pieces.rbegin(); it != undo.pieces.rend(); ++it) {
    std::memcpy(shard_.data() + it->offset, it->old_bytes.data(), it->old_bytes.size());
  }
}

Status ShardUpdateState::RollBack(Epoch epoch, Seq target) {
  FERN_RETURN_IF_ERROR(CheckEpoch(epoch, "rollback"));
  const ShardReport r = report();
  // A rebuild record spans several seqs when the shard lagged by more than
  // one; only its ends can be restored.
  const bool boundary =
      target == applied_ ||
      std::any_of(undo_.begin(), undo_.end(), [&](const Undo& u) { return u.from == target; });
  if (target > applied_ || target < r.undo_floor_seq || !boundary) {
    return FailedPreconditionError(Name() + ": cannot roll back to seq " + std::to_string(target) +
                                   ": applied seq " + std::to_string(applied_) +
                                   ", undo kept down to seq " + std::to_string(r.undo_floor_seq));
  }
  RaiseEpoch(epoch);
  if (partial_) {
    Restore(partial_->undo);
    partial_.reset();
  }
  while (!undo_.empty() && undo_.back().seq > target) {
    Restore(undo_.back());
    undo_.pop_back();
  }
  applied_ = target;
  DropBuffered();
  return Status();
}

Status ShardUpdateState::Rebuild(Epoch epoch, Seq seq, std::span<const uint8_t> bytes) {
  FERN_RETURN_IF_ERROR(CheckEpoch(epoch, "rebuild"));
  if (bytes.size() != shard_.size()) {
    return InvalidArgumentError(Name() + ": rebuild with " + std::to_string(bytes.size()) +
                                " bytes for a " + std::to_string(shard_.size()) + "-byte shard");
  }
  if (committed_ > seq) {
    return FailedPreconditionError(Name() + ": rebuild at seq " + std::to_string(seq) +
                                   " below committed seq " + std::to_string(committed_));
  }
  RaiseEpoch(epoch);
  // Back to clean bytes of applied_ first, so the undo kept below restores
  // exactly the state this shard reported.
  if (partial_) {
    Restore(partial_->undo);
    partial_.reset();
  }
  DropBuffered();
  // Already at seq: a duplicate of this rebuild (a lagging shard is rebuilt
  // to one seq, once). Its bytes are what decoding gives, and the undo its
  // first delivery kept must stay.
  if (applied_ == seq) return Status();
  if (applied_ < seq) {
    // Kept as undo: until the round commits it may still need to roll the
    // stripe back, and this shard's old bytes are one of the k it counts on.
    undo_.push_back(
        Undo{.seq = seq,
             .from = applied_,
             .pieces = {UndoPiece{
                 .offset = 0, .old_bytes = std::vector<uint8_t>(shard_.begin(), shard_.end())}}});
  } else {
    undo_.clear();
    committed_ = seq;
  }
  std::memcpy(shard_.data(), bytes.data(), bytes.size());
  applied_ = seq;
  return Status();
}

// ---- Recovery --------------------------------------------------------------

StatusOr<RecoveryDecision> DecideRecovery(int k, int m,
                                          std::span<const std::optional<ShardReport>> reports) {
  const int n = k + m;
  if (k <= 0 || m < 0 || n > ec::kMaxShards || reports.size() != static_cast<size_t>(n)) {
    return InvalidArgumentError("recovery: " + std::to_string(reports.size()) +
                                " reports for k=" + std::to_string(k) + " m=" + std::to_string(m));
  }
  // The newest reachable seq is always some survivor's applied seq: the count
  // of survivors able to reach t only drops where an applied seq ends.
  std::vector<Seq> candidates;
  ec::ShardSet lost;
  for (int i = 0; i < n; ++i) {
    if (reports[i]) {
      candidates.push_back(reports[i]->applied_seq);
    } else {
      lost.insert(i);
    }
  }
  std::sort(candidates.rbegin(), candidates.rend());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  for (Seq t : candidates) {
    RecoveryDecision d;
    d.seq = t;
    for (int i = 0; i < n; ++i) {
      const auto& r = reports[i];
      if (r && r->undo_floor_seq <= t && t <= r->applied_seq) {
        d.keep.insert(i);
        if (r->applied_seq > t || r->partial) d.rolled_back.insert(i);
      } else {
        d.rebuild.insert(i);
      }
    }
    if (d.keep.size() >= k) return d;
  }
  std::string held;
  for (int i = 0; i < n; ++i) {
    if (!reports[i]) continue;
    held += " " + std::to_string(i) + ":[" + std::to_string(reports[i]->undo_floor_seq) + "," +
            std::to_string(reports[i]->applied_seq) + "]";
  }
  return DataLossError("recovery: no seq is held by k=" + std::to_string(k) + " shards (lost: " +
                       SetToString(lost) + "; reachable seqs by shard:" + held + ")");
}

// ---- Sequencer -------------------------------------------------------------

struct Sequencer::StripeState {
  struct InFlight {
    UpdateRequest request;
    Seq seq = 0;
    Epoch epoch = 0;
    ec::ShardSet acked;
  };
  enum class Phase { kFencing, kRollingBack, kRebuilding };
  struct Round {
    Epoch epoch = 0;
    Phase phase = Phase::kFencing;
    ec::ShardSet waiting;
    std::vector<std::optional<ShardReport>> reports;
    RecoveryDecision decision;
  };

  Seq seq = 0;               // last committed or resolved
  Epoch resolved_epoch = 0;  // epoch of the last finished recovery round
  std::optional<InFlight> in_flight;
  std::deque<UpdateRequest> queue;
  ec::ShardSet lost;
  std::optional<Round> round;
  Status failed;  // DataLoss once recovery could not restore the stripe
};

Sequencer::Sequencer(const SequencerConfig& config, Epoch epoch)
    : config_(config), epoch_(epoch), stripes_(config.stripes) {}
Sequencer::Sequencer(Sequencer&&) noexcept = default;
Sequencer& Sequencer::operator=(Sequencer&&) noexcept = default;
Sequencer::~Sequencer() = default;

namespace {
Status CheckConfig(const SequencerConfig& c) {
  if (c.k <= 0 || c.m < 0 || c.k + c.m > ec::kMaxShards) {
    return InvalidArgumentError("sequencer: bad k=" + std::to_string(c.k) +
                                " m=" + std::to_string(c.m));
  }
  return Status();
}
}  // namespace

StatusOr<Sequencer> Sequencer::Start(const SequencerConfig& config, Epoch last_epoch,
                                     Actions* out) {
  FERN_RETURN_IF_ERROR(CheckConfig(config));
  Sequencer s(config, last_epoch + 1);
  out->push_back(PersistEpoch{s.epoch_});
  return s;
}

StatusOr<Sequencer> Sequencer::Recover(const SequencerConfig& config, Epoch last_epoch,
                                       std::span<const ShardSlot> failed, Actions* out) {
  FERN_RETURN_IF_ERROR(CheckConfig(config));
  Sequencer s(config, last_epoch + 1);
  for (const ShardSlot& slot : failed) FERN_RETURN_IF_ERROR(s.CheckSlot(slot.stripe, slot.shard));
  for (const ShardSlot& slot : failed) s.stripes_[slot.stripe].lost.insert(slot.shard);
  out->push_back(PersistEpoch{s.epoch_});
  std::vector<uint64_t> all(config.stripes);
  for (uint64_t i = 0; i < config.stripes; ++i) all[i] = i;
  s.BeginRounds(all, out);
  return s;
}

Status Sequencer::CheckStripe(uint64_t stripe) const {
  if (stripe >= stripes_.size()) {
    return InvalidArgumentError("sequencer: stripe " + std::to_string(stripe) + " of " +
                                std::to_string(stripes_.size()));
  }
  return Status();
}

Status Sequencer::CheckSlot(uint64_t stripe, int shard) const {
  FERN_RETURN_IF_ERROR(CheckStripe(stripe));
  if (shard < 0 || shard >= n()) {
    return InvalidArgumentError("sequencer: stripe " + std::to_string(stripe) + " shard " +
                                std::to_string(shard) +
                                " out of range, k+m=" + std::to_string(n()));
  }
  return Status();
}

bool Sequencer::Idle() const {
  return std::all_of(stripes_.begin(), stripes_.end(), [](const StripeState& s) {
    return !s.in_flight && !s.round && s.queue.empty();
  });
}

Seq Sequencer::stripe_seq(uint64_t stripe) const {
  return stripe < stripes_.size() ? stripes_[stripe].seq : 0;
}

bool Sequencer::InRecovery(uint64_t stripe) const {
  return stripe < stripes_.size() && stripes_[stripe].round.has_value();
}

std::optional<Seq> Sequencer::InFlight(uint64_t stripe) const {
  if (stripe >= stripes_.size() || !stripes_[stripe].in_flight) return std::nullopt;
  return stripes_[stripe].in_flight->seq;
}

Status Sequencer::RequestUpdate(const UpdateRequest& request, Actions* out) {
  FERN_RETURN_IF_ERROR(CheckStripe(request.stripe));
  if (request.range.length == 0) {
    return InvalidArgumentError("sequencer: empty update of stripe " +
                                std::to_string(request.stripe) + " by " +
                                request.writer.ToString());
  }
  StripeState& st = stripes_[request.stripe];
  if (!st.failed.ok()) return st.failed;
  // A request the network delivered twice is queued once. (One arriving
  // after its update finished is granted again; its writer ignores the
  // grant and the host's deadline resolves it.)
  auto same = [&](const UpdateRequest& r) {
    return r.writer == request.writer && r.request == request.request;
  };
  if ((st.in_flight && same(st.in_flight->request)) ||
      std::any_of(st.queue.begin(), st.queue.end(), same)) {
    return Status();
  }
  st.queue.push_back(request);
  MaybeGrant(request.stripe, out);
  return Status();
}

void Sequencer::MaybeGrant(uint64_t stripe, Actions* out) {
  StripeState& st = stripes_[stripe];
  if (!st.failed.ok() || st.round || st.in_flight || st.queue.empty()) return;
  if (st.resolved_epoch == epoch_) {
    // A duplicate of the round's RollBackShard or RebuildShard may still be
    // on the wire; stamped with the round's epoch it must find every shard
    // that took a newer update already fenced against it.
    ++epoch_;
    out->push_back(PersistEpoch{epoch_});
  }
  StripeState::InFlight f;
  f.request = st.queue.front();
  st.queue.pop_front();
  f.seq = st.seq + 1;
  f.epoch = epoch_;
  out->push_back(GrantUpdate{.writer = f.request.writer,
                             .request = f.request.request,
                             .stripe = stripe,
                             .seq = f.seq,
                             .epoch = f.epoch,
                             .range = f.request.range});
  st.in_flight = std::move(f);
}

Status Sequencer::ShardApplied(uint64_t stripe, int shard, Seq seq, Epoch epoch, Actions* out) {
  FERN_RETURN_IF_ERROR(CheckSlot(stripe, shard));
  StripeState& st = stripes_[stripe];
  if (st.round || !st.in_flight || st.in_flight->seq != seq || st.in_flight->epoch != epoch) {
    return Status();  // late, duplicate, or superseded by recovery
  }
  st.in_flight->acked.insert(shard);
  if (st.in_flight->acked.size() < n()) return Status();
  const StripeState::InFlight f = std::move(*st.in_flight);
  st.in_flight.reset();
  st.seq = f.seq;
  out->push_back(CommitShards{.stripe = stripe, .seq = f.seq, .epoch = f.epoch});
  out->push_back(UpdateCommitted{.writer = f.request.writer,
                                 .request = f.request.request,
                                 .stripe = stripe,
                                 .seq = f.seq,
                                 .epoch = f.epoch});
  MaybeGrant(stripe, out);
  return Status();
}

void Sequencer::StartRounds(const std::vector<uint64_t>& stripes, Actions* out) {
  if (stripes.empty()) return;
  ++epoch_;
  out->push_back(PersistEpoch{epoch_});
  BeginRounds(stripes, out);
}

void Sequencer::BeginRounds(const std::vector<uint64_t>& stripes, Actions* out) {
  for (uint64_t stripe : stripes) {
    StripeState& st = stripes_[stripe];
    if (!st.failed.ok()) continue;
    StripeState::Round round;
    round.epoch = epoch_;
    round.waiting = ec::ShardSet(ec::ShardSet::FirstN(n()).bits() & ~st.lost.bits());
    round.reports.resize(n());
    st.round = std::move(round);
    for (int i = 0; i < n(); ++i) {
      if (st.round->waiting.contains(i)) {
        out->push_back(FenceShard{.slot = {stripe, i}, .epoch = epoch_});
      }
    }
    if (st.round->waiting.empty()) OnReportsComplete(stripe, out);
  }
}

Status Sequencer::ShardsFailed(std::span<const ShardSlot> slots, Actions* out) {
  for (const ShardSlot& slot : slots) FERN_RETURN_IF_ERROR(CheckSlot(slot.stripe, slot.shard));
  std::vector<uint64_t> restart;
  for (const ShardSlot& slot : slots) {
    StripeState& st = stripes_[slot.stripe];
    if (!st.failed.ok()) continue;
    bool again = !st.lost.contains(slot.shard);
    // A lost shard whose rebuild is out may have been installed and died
    // again before its ShardRebuilt arrived: only a new round is sure.
    if (!again && st.round && st.round->phase == StripeState::Phase::kRebuilding &&
        st.round->waiting.contains(slot.shard)) {
      again = true;
    }
    if (!again) continue;
    st.lost.insert(slot.shard);
    if (std::find(restart.begin(), restart.end(), slot.stripe) == restart.end()) {
      restart.push_back(slot.stripe);
    }
  }
  StartRounds(restart, out);
  return Status();
}

Status Sequencer::WriterFailed(WriterId writer, Actions* out) {
  std::vector<uint64_t> recover;
  for (uint64_t i = 0; i < stripes_.size(); ++i) {
    StripeState& st = stripes_[i];
    std::erase_if(st.queue, [&](const UpdateRequest& r) { return r.writer == writer; });
    if (st.in_flight && !st.round && st.in_flight->request.writer == writer) recover.push_back(i);
  }
  StartRounds(recover, out);
  return Status();
}

Status Sequencer::UpdateTimedOut(uint64_t stripe, Seq seq, Actions* out) {
  FERN_RETURN_IF_ERROR(CheckStripe(stripe));
  const StripeState& st = stripes_[stripe];
  if (st.round || !st.in_flight || st.in_flight->seq != seq) return Status();
  StartRounds({stripe}, out);
  return Status();
}

Status Sequencer::ShardReported(uint64_t stripe, int shard, Epoch round, const ShardReport& report,
                                Actions* out) {
  FERN_RETURN_IF_ERROR(CheckSlot(stripe, shard));
  StripeState& st = stripes_[stripe];
  if (!st.round || st.round->epoch != round || st.round->phase != StripeState::Phase::kFencing ||
      !st.round->waiting.contains(shard)) {
    return Status();
  }
  st.round->reports[shard] = report;
  st.round->waiting.erase(shard);
  if (st.round->waiting.empty()) OnReportsComplete(stripe, out);
  return Status();
}

void Sequencer::OnReportsComplete(uint64_t stripe, Actions* out) {
  StripeState& st = stripes_[stripe];
  StatusOr<RecoveryDecision> d = DecideRecovery(config_.k, config_.m, st.round->reports);
  if (!d.ok()) {
    FailStripe(stripe,
               d.status().WithContext("stripe " + std::to_string(stripe) + " at epoch " +
                                      std::to_string(st.round->epoch)),
               out);
    return;
  }
  st.round->decision = std::move(*d);
  st.round->phase = StripeState::Phase::kRollingBack;
  st.round->waiting = st.round->decision.keep;
  // Every kept shard is told, even one with nothing to undo: the rollback
  // also drops its buffered pieces, and the rebuild below may read it only
  // once it is known to sit exactly at the round's seq.
  for (int i = 0; i < n(); ++i) {
    if (!st.round->waiting.contains(i)) continue;
    out->push_back(RollBackShard{
        .slot = {stripe, i}, .epoch = st.round->epoch, .seq = st.round->decision.seq});
  }
}

Status Sequencer::ShardRolledBack(uint64_t stripe, int shard, Epoch round, Actions* out) {
  FERN_RETURN_IF_ERROR(CheckSlot(stripe, shard));
  StripeState& st = stripes_[stripe];
  if (!st.round || st.round->epoch != round ||
      st.round->phase != StripeState::Phase::kRollingBack || !st.round->waiting.contains(shard)) {
    return Status();
  }
  st.round->waiting.erase(shard);
  if (st.round->waiting.empty()) StartRebuilds(stripe, out);
  return Status();
}

void Sequencer::StartRebuilds(uint64_t stripe, Actions* out) {
  StripeState& st = stripes_[stripe];
  st.round->phase = StripeState::Phase::kRebuilding;
  st.round->waiting = st.round->decision.rebuild;
  if (st.round->waiting.empty()) {
    FinishRound(stripe, out);
    return;
  }
  for (int i = 0; i < n(); ++i) {
    if (!st.round->waiting.contains(i)) continue;
    out->push_back(RebuildShard{.slot = {stripe, i},
                                .epoch = st.round->epoch,
                                .seq = st.round->decision.seq,
                                .committed_seq = std::min(st.seq, st.round->decision.seq),
                                .sources = st.round->decision.keep});
  }
}

Status Sequencer::ShardRebuilt(uint64_t stripe, int shard, Epoch round, Actions* out) {
  FERN_RETURN_IF_ERROR(CheckSlot(stripe, shard));
  StripeState& st = stripes_[stripe];
  if (!st.round || st.round->epoch != round || st.round->phase != StripeState::Phase::kRebuilding ||
      !st.round->waiting.contains(shard)) {
    return Status();
  }
  st.round->waiting.erase(shard);
  st.lost.erase(shard);
  if (st.round->waiting.empty()) FinishRound(stripe, out);
  return Status();
}

void Sequencer::FinishRound(uint64_t stripe, Actions* out) {
  StripeState& st = stripes_[stripe];
  const StripeState::Round round = std::move(*st.round);
  st.round.reset();
  st.seq = round.decision.seq;
  st.resolved_epoch = round.epoch;
  out->push_back(CommitShards{.stripe = stripe, .seq = st.seq, .epoch = round.epoch});
  out->push_back(StripeResolved{.stripe = stripe,
                                .epoch = round.epoch,
                                .seq = st.seq,
                                .rolled_back = round.decision.rolled_back,
                                .rebuilt = round.decision.rebuild,
                                .status = Status()});
  if (st.in_flight) {
    const StripeState::InFlight f = std::move(*st.in_flight);
    st.in_flight.reset();
    if (st.seq >= f.seq) {
      out->push_back(UpdateCommitted{.writer = f.request.writer,
                                     .request = f.request.request,
                                     .stripe = stripe,
                                     .seq = f.seq,
                                     .epoch = f.epoch});
    } else {
      out->push_back(UpdateAborted{
          .writer = f.request.writer,
          .request = f.request.request,
          .stripe = stripe,
          .seq = f.seq,
          .status = AbortedError(SeqName(stripe, f.seq) + " rolled back by recovery at epoch " +
                                 std::to_string(round.epoch) + ": it reached fewer than k=" +
                                 std::to_string(config_.k) + " shards")});
    }
  }
  MaybeGrant(stripe, out);
}

void Sequencer::FailStripe(uint64_t stripe, const Status& status, Actions* out) {
  StripeState& st = stripes_[stripe];
  const Epoch epoch = st.round ? st.round->epoch : epoch_;
  st.round.reset();
  st.failed = status;
  out->push_back(StripeResolved{.stripe = stripe,
                                .epoch = epoch,
                                .seq = st.seq,
                                .rolled_back = {},
                                .rebuilt = {},
                                .status = status});
  if (st.in_flight) {
    out->push_back(UpdateAborted{.writer = st.in_flight->request.writer,
                                 .request = st.in_flight->request.request,
                                 .stripe = stripe,
                                 .seq = st.in_flight->seq,
                                 .status = status});
    st.in_flight.reset();
  }
  for (const UpdateRequest& r : st.queue) {
    out->push_back(UpdateAborted{
        .writer = r.writer, .request = r.request, .stripe = stripe, .seq = 0, .status = status});
  }
  st.queue.clear();
}

}  // namespace fern::daemon::psw
