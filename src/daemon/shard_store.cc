#include "daemon/shard_store.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "common/flags.h"
#include "ec/crc32c.h"
#include "ec/erasure_coder.h"

namespace fern::daemon {

std::string ShardKey::ToString() const {
  return "shard(file " + std::to_string(file_id) + " v" + std::to_string(version) + " stripe " +
         std::to_string(stripe) + " index " + std::to_string(index) + ")";
}

size_t ShardKeyHash::operator()(const ShardKey& k) const {
  uint64_t h = k.file_id * 0x9E3779B97F4A7C15ull;
  h ^= (k.version + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull;
  h ^= (k.stripe + 0x94D049BB133111EBull) * 0x9E3779B97F4A7C15ull;
  h ^= k.index * 0xD6E8FEB86659FD93ull;
  return static_cast<size_t>(h ^ (h >> 29));
}

namespace {

constexpr size_t kPage = 4096;

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};
// A staging buffer: page-aligned and a whole number of pages long, so it can
// be written with O_DIRECT.
using Stage = std::unique_ptr<uint8_t[], AlignedFree>;

size_t RoundUpToPage(size_t n) { return (n + kPage - 1) / kPage * kPage; }

// Byte ranges [start, end) of `fd`'s bytes [from, from + len) that sit in
// written blocks (neither holes nor unwritten extents), merged, in order,
// clipped to the range; nullopt when the file system does not answer
// FIEMAP (tmpfs, for one) or answers nothing for a file that has blocks.
std::optional<std::vector<std::pair<uint64_t, uint64_t>>> WrittenRanges(int fd, uint64_t from,
                                                                        uint64_t len) {
  constexpr unsigned kBatch = 128;
  const size_t bytes = sizeof(fiemap) + kBatch * sizeof(fiemap_extent);
  std::vector<uint64_t> buf(bytes / sizeof(uint64_t) + 1);
  auto* map = reinterpret_cast<fiemap*>(buf.data());
  std::vector<std::pair<uint64_t, uint64_t>> out;
  const uint64_t end = from + len;
  uint64_t at = from;
  bool any = false;
  while (at < end) {
    std::memset(map, 0, bytes);
    map->fm_start = at;
    map->fm_length = end - at;
    map->fm_flags = FIEMAP_FLAG_SYNC;
    map->fm_extent_count = kBatch;
    if (ioctl(fd, FS_IOC_FIEMAP, map) != 0) return std::nullopt;
    if (map->fm_mapped_extents == 0) break;
    any = true;
    bool last = false;
    for (unsigned i = 0; i < map->fm_mapped_extents; ++i) {
      const fiemap_extent& e = map->fm_extents[i];
      last = last || (e.fe_flags & FIEMAP_EXTENT_LAST);
      at = std::max<uint64_t>(at, e.fe_logical + e.fe_length);
      if (e.fe_flags & (FIEMAP_EXTENT_UNWRITTEN | FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC)) continue;
      const uint64_t a = std::max<uint64_t>(e.fe_logical, from);
      const uint64_t b = std::min<uint64_t>(e.fe_logical + e.fe_length, end);
      if (a >= b) continue;
      if (!out.empty() && out.back().second >= a) {
        out.back().second = std::max(out.back().second, b);
      } else {
        out.emplace_back(a, b);
      }
    }
    if (last) break;
  }
  struct stat st {};
  if (!any && fstat(fd, &st) == 0 && st.st_blocks > 0 && from == 0) return std::nullopt;
  return out;
}

// The complement of `written` within [from, end): the parts to prepare.
std::vector<std::pair<uint64_t, uint64_t>> Gaps(const std::vector<std::pair<uint64_t, uint64_t>>& written,
                                                 uint64_t from, uint64_t end) {
  std::vector<std::pair<uint64_t, uint64_t>> gaps;
  uint64_t at = from;
  for (const auto& [a, b] : written) {
    if (a > at) gaps.emplace_back(at, std::min(a, end));
    at = std::max(at, b);
  }
  if (at < end) gaps.emplace_back(at, end);
  return gaps;
}

// Slot bookkeeping shared by both stores: which slot holds which key, free
// slots, reservations, and reader pins that delay reuse. A slot is
// "prepared" once its blocks on disk have been written (see
// FileShardStore::PrepareSlots); free prepared slots are handed out first.
class SlotTable {
 public:
  explicit SlotTable(uint64_t slots) : state_(slots, kFree), prepared_(slots, 1) {
    for (uint64_t i = slots; i-- > 0;) free_.push_back(i);
  }

  std::mutex& mu() { return mu_; }

  // REQUIRES: mu held (every method below).
  bool Take(uint64_t* slot) {
    std::vector<uint64_t>& from = free_.empty() ? unprepared_ : free_;
    if (from.empty()) return false;
    *slot = from.back();
    from.pop_back();
    state_[*slot] = kReserved;
    return true;
  }
  // A free slot that is not prepared yet, taken for preparing it (one at a
  // time, never the last free one); FinishPreparing gives it back.
  bool TakeUnprepared(uint64_t* slot) {
    if (unprepared_.empty() || preparing_ || free_.size() + unprepared_.size() < 2) return false;
    *slot = unprepared_.back();
    unprepared_.pop_back();
    state_[*slot] = kReserved;
    preparing_ = true;
    return true;
  }
  // `wrote`: zeros went into the slot (counted), `prepared`: it is now
  // written whole (counted as unprepared until Flushed).
  void FinishPreparing(uint64_t slot, bool prepared, bool wrote) {
    if (prepared) {
      MarkPrepared(slot);
      ++unflushed_;
    }
    if (wrote) ++zeroed_;
    Release(slot);
    preparing_ = false;
    wanted_.store(false, std::memory_order_relaxed);
    preparing_done_.notify_all();
  }
  void Flushed() { unflushed_ = 0; }
  // Preparing failed for good: count every slot as prepared.
  void GiveUpPreparing() {
    std::fill(prepared_.begin(), prepared_.end(), 1);
    unflushed_ = 0;
    RebuildFreeList();
  }
  // True while a slot is being prepared: it is free, only briefly taken.
  bool preparing() const { return preparing_; }
  // A Reserve waits for the slot being prepared: the preparer stops early.
  bool wanted() const { return wanted_.load(std::memory_order_relaxed); }
  // REQUIRES: l holds mu().
  void WaitPreparing(std::unique_lock<std::mutex>& l) {
    wanted_.store(true, std::memory_order_relaxed);
    preparing_done_.wait(l, [this] { return !preparing_; });
  }
  uint64_t zeroed() const { return zeroed_; }
  void Release(uint64_t slot) {
    if (pins_.count(slot)) {
      state_[slot] = kFreeWhenUnpinned;
      return;
    }
    state_[slot] = kFree;
    (prepared_[slot] ? free_ : unprepared_).push_back(slot);
  }
  // Which slots are prepared (by slot number); the free lists follow.
  void SetPrepared(const std::vector<uint8_t>& prepared) {
    prepared_ = prepared;
    RebuildFreeList();
  }
  void MarkPrepared(uint64_t slot) { prepared_[slot] = 1; }
  // Free slots not prepared yet: the one being prepared and those prepared
  // but not flushed yet included.
  uint64_t unprepared() const { return unprepared_.size() + (preparing_ ? 1 : 0) + unflushed_; }
  // Installs a committed slot for its key; returns the slot it replaces.
  std::optional<uint64_t> Install(const ShardMeta& meta, uint64_t slot) {
    state_[slot] = kCommitted;
    std::optional<uint64_t> old;
    auto it = index_.find(meta.key);
    if (it != index_.end()) old = it->second.slot;
    index_[meta.key] = Entry{slot, meta};
    return old;
  }
  // Marks a slot committed while recovering, without the free-list.
  void Recover(const ShardMeta& meta, uint64_t slot) {
    auto it = index_.find(meta.key);
    if (it != index_.end() && it->second.meta.seq >= meta.seq) return;  // keep the newer
    if (it != index_.end()) state_[it->second.slot] = kFree;
    state_[slot] = kCommitted;
    index_[meta.key] = Entry{slot, meta};
  }
  void RebuildFreeList() {
    free_.clear();
    unprepared_.clear();
    for (uint64_t i = state_.size(); i-- > 0;) {
      if (state_[i] == kFree) (prepared_[i] ? free_ : unprepared_).push_back(i);
    }
  }
  std::optional<std::pair<uint64_t, ShardMeta>> Find(const ShardKey& key) const {
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    return std::make_pair(it->second.slot, it->second.meta);
  }
  // New meta for the key's slot, if it is still `slot`.
  bool Update(const ShardMeta& meta, uint64_t slot) {
    auto it = index_.find(meta.key);
    if (it == index_.end() || it->second.slot != slot) return false;
    it->second.meta = meta;
    return true;
  }
  bool Erase(const ShardKey& key, uint64_t* slot) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    *slot = it->second.slot;
    index_.erase(it);
    return true;
  }
  void Pin(uint64_t slot) { ++pins_[slot]; }
  void Unpin(uint64_t slot) {
    if (--pins_[slot] > 0) return;
    pins_.erase(slot);
    if (state_[slot] == kFreeWhenUnpinned) {
      state_[slot] = kFree;
      (prepared_[slot] ? free_ : unprepared_).push_back(slot);
    }
  }
  std::vector<ShardMeta> List() const {
    std::vector<ShardMeta> out;
    for (auto& [k, e] : index_) out.push_back(e.meta);
    return out;
  }
  uint64_t total() const { return state_.size(); }
  size_t pinned() const { return pins_.size(); }
  uint64_t used() const {
    return state_.size() - free_.size() - unprepared_.size() - (preparing_ ? 1 : 0);
  }

 private:
  enum State : uint8_t { kFree, kReserved, kCommitted, kFreeWhenUnpinned };
  struct Entry {
    uint64_t slot;
    ShardMeta meta;
  };
  std::mutex mu_;
  std::vector<State> state_;
  std::vector<uint8_t> prepared_;    // by slot: 1 once its blocks were written
  bool preparing_ = false;
  uint64_t unflushed_ = 0;  // prepared, their zeros not flushed yet
  uint64_t zeroed_ = 0;     // slots zeros were written into
  std::atomic<bool> wanted_{false};
  std::condition_variable preparing_done_;
  std::vector<uint64_t> free_;        // free and prepared; back() is taken first
  std::vector<uint64_t> unprepared_;  // free, not prepared yet
  std::unordered_map<ShardKey, Entry, ShardKeyHash> index_;
  std::unordered_map<uint64_t, int> pins_;
};

// Common store logic over a flat array of slots; subclasses provide memory
// and durability.
class SlotStore : public ShardStore {
 public:
  SlotStore(uint64_t slots, uint64_t slot_capacity)
      : table_(slots), slot_capacity_(slot_capacity) {}
  ~SlotStore() override {
    // A view still held would unpin into freed memory later: fail here, loudly.
    std::lock_guard<std::mutex> l(table_.mu());
    if (table_.pinned() > 0) {
      std::fprintf(stderr, "fern-ec: shard store destroyed while %zu read views are alive\n",
                   table_.pinned());
      std::abort();
    }
  }

  class Res final : public Reservation {
   public:
    Res(SlotStore* s, ShardKey k, uint64_t slot, uint64_t len, Stage stage)
        : store_(s), owner_(s), key_(k), slot_(slot), len_(len), stage_(std::move(stage)) {}
    ~Res() override {
      if (store_) {
        std::lock_guard<std::mutex> l(store_->table_.mu());
        store_->table_.Release(slot_);
      }
      if (stage_) owner_->GiveStage(std::move(stage_));
    }
    const ShardKey& key() const override { return key_; }
    std::span<uint8_t> data() override { return {stage_ ? stage_.get() : owner_->SlotData(slot_), len_}; }

    SlotStore* store_;  // null once the slot belongs to the index
    SlotStore* const owner_;
    ShardKey key_;
    uint64_t slot_;
    uint64_t len_;
    Stage stage_;  // the bytes, when the store stages writes
  };

  StatusOr<std::unique_ptr<Reservation>> Reserve(const ShardKey& key, uint64_t length) override {
    if (length > slot_capacity_) {
      return InvalidArgumentError(key.ToString() + ": " + std::to_string(length) +
                                  " bytes exceed the slot capacity of " +
                                  std::to_string(slot_capacity_));
    }
    uint64_t slot;
    {
      std::unique_lock<std::mutex> l(table_.mu());
      while (!table_.Take(&slot)) {
        // The last free slot may be in the preparing thread's hands for a
        // few milliseconds: it is free space, so wait for it.
        if (!table_.preparing()) {
          return ResourceExhaustedError(Where() + " is full (" + std::to_string(table_.total()) +
                                        " slots of " + FormatSize(slot_capacity_) + ")");
        }
        table_.WaitPreparing(l);
      }
    }
    return std::unique_ptr<Reservation>(new Res(this, key, slot, length, TakeStage()));
  }

  Status Commit(std::unique_ptr<Reservation> reservation, const ShardMeta& meta) override {
    auto* r = static_cast<Res*>(reservation.get());
    if (!(meta.key == r->key_) || meta.length != r->len_) {
      return InvalidArgumentError("commit of " + meta.key.ToString() + " does not match its reservation");
    }
    const uint32_t crc = ec::Crc32c(r->data());
    if (crc != meta.crc32c) {
      return DataLossError(meta.key.ToString() + ": received bytes fail their CRC32C (torn transfer)");
    }
    if (r->stage_) FERN_RETURN_IF_ERROR(WriteStaged(r->slot_, r->stage_.get(), r->len_));
    FERN_RETURN_IF_ERROR(Persist(r->slot_, meta));
    std::lock_guard<std::mutex> l(table_.mu());
    Install(meta, r->slot_);
    r->store_ = nullptr;  // the slot now belongs to the index
    return Status();
  }

  std::vector<Status> CommitBatch(std::vector<PendingCommit> batch) override {
    std::vector<Status> out(batch.size());
    std::vector<size_t> good;
    for (size_t i = 0; i < batch.size(); ++i) {
      auto* r = static_cast<Res*>(batch[i].reservation.get());
      const ShardMeta& meta = batch[i].meta;
      if (!(meta.key == r->key_) || meta.length != r->len_) {
        out[i] = InvalidArgumentError("commit of " + meta.key.ToString() + " does not match its reservation");
      } else if (ec::Crc32c(r->data()) != meta.crc32c) {
        out[i] = DataLossError(meta.key.ToString() + ": received bytes fail their CRC32C (torn transfer)");
      } else {
        good.push_back(i);
      }
    }
    for (auto it = good.begin(); it != good.end();) {
      auto* r = static_cast<Res*>(batch[*it].reservation.get());
      Status w = r->stage_ ? WriteStaged(r->slot_, r->stage_.get(), r->len_) : Status();
      if (w.ok()) {
        ++it;
      } else {
        out[*it] = w;
        it = good.erase(it);
      }
    }
    if (good.empty()) return out;
    Status flushed = FlushAll();  // every shard's data, before any header names it
    for (size_t i : good) {
      auto* r = static_cast<Res*>(batch[i].reservation.get());
      if (flushed.ok()) out[i] = WriteHeader(r->slot_, batch[i].meta);
    }
    if (flushed.ok()) flushed = FlushAll();  // the headers
    for (size_t i : good) {
      if (!flushed.ok() && out[i].ok()) out[i] = flushed;
      if (!out[i].ok()) {
        // Its header may sit in the page cache already: invalidate it before
        // the reservation frees the slot, or writeback could revive it.
        Unpersist(static_cast<Res*>(batch[i].reservation.get())->slot_);
        continue;
      }
      auto* r = static_cast<Res*>(batch[i].reservation.get());
      std::lock_guard<std::mutex> l(table_.mu());
      Install(batch[i].meta, r->slot_);
      r->store_ = nullptr;
    }
    return out;
  }

  StatusOr<View> Read(const ShardKey& key, Check check) const override {
    auto* self = const_cast<SlotStore*>(this);
    uint64_t slot;
    ShardMeta meta;
    {
      std::lock_guard<std::mutex> l(self->table_.mu());
      auto e = self->table_.Find(key);
      if (!e) return NotFoundError(key.ToString() + " not in " + Where());
      slot = e->first;
      meta = e->second;
      self->table_.Pin(slot);
    }
    std::shared_ptr<const void> pin(static_cast<const void*>(self), [self, slot](const void*) {
      std::lock_guard<std::mutex> l(self->table_.mu());
      self->table_.Unpin(slot);
    });
    std::span<const uint8_t> data(SlotData(slot), meta.length);
    if (check == Check::kVerify && ec::Crc32c(data) != meta.crc32c) {
      return DataLossError(key.ToString() + " in " + Where() + " fails its CRC32C");
    }
    return View{meta, data, std::move(pin)};
  }

  StatusOr<MutableView> OpenForUpdate(const ShardKey& key, Check check) override {
    FERN_ASSIGN_OR_RETURN(View v, Read(key, check));
    return MutableView{v.meta, {const_cast<uint8_t*>(v.data.data()), v.data.size()}, std::move(v.pin)};
  }

  Status Sync() override { return FlushAll(); }

  Status Reseal(const ShardKey& key, uint64_t seq, uint64_t epoch, bool sync, std::optional<uint32_t> crc,
                std::optional<std::vector<uint32_t>> stripe_crcs) override {
    if (stripe_crcs && stripe_crcs->size() > static_cast<size_t>(ec::kMaxShards)) {
      return InvalidArgumentError("reseal " + key.ToString() + ": " + std::to_string(stripe_crcs->size()) +
                                  " stripe CRCs, at most " + std::to_string(ec::kMaxShards));
    }
    uint64_t slot;
    ShardMeta meta;
    {
      std::lock_guard<std::mutex> l(table_.mu());
      auto e = table_.Find(key);
      if (!e) return NotFoundError(key.ToString() + " not in " + Where());
      slot = e->first;
      meta = e->second;
    }
    const uint32_t now = crc ? *crc : ec::Crc32c({SlotData(slot), meta.length});
    // Without the caller's word, the data this parity encodes may have
    // changed: unchanged bytes at the same seq (a fence only moves the
    // epoch) keep their CRCs; every update in place moves the seq.
    if (stripe_crcs) {
      meta.stripe_crcs = std::move(*stripe_crcs);
    } else if (seq != meta.seq || now != meta.crc32c) {
      meta.stripe_crcs.clear();
    }
    meta.seq = seq;
    meta.epoch = epoch;
    meta.crc32c = now;
    FERN_RETURN_IF_ERROR(sync ? Persist(slot, meta) : WriteHeader(slot, meta));
    std::lock_guard<std::mutex> l(table_.mu());
    if (!table_.Update(meta, slot)) return NotFoundError(key.ToString() + " was replaced while resealing");
    return Status();
  }

  Status Remove(const ShardKey& key) override {
    std::lock_guard<std::mutex> l(table_.mu());
    uint64_t slot;
    if (!table_.Erase(key, &slot)) return NotFoundError(key.ToString() + " not in " + Where());
    Unpersist(slot);
    table_.Release(slot);
    return Status();
  }

  std::vector<ShardMeta> List() const override {
    auto* self = const_cast<SlotStore*>(this);
    std::lock_guard<std::mutex> l(self->table_.mu());
    return self->table_.List();
  }

  StoreUsage Usage() const override {
    auto* self = const_cast<SlotStore*>(this);
    std::lock_guard<std::mutex> l(self->table_.mu());
    return StoreUsage{table_.total(), table_.used(), slot_capacity_, table_.unprepared(), table_.zeroed()};
  }

 protected:
  // The committed `slot` now holds `meta`'s key; the slot it replaces is
  // freed. A shard that filled its slot wrote all of it: prepared.
  // REQUIRES: table_.mu() held.
  void Install(const ShardMeta& meta, uint64_t slot) {
    if (auto old = table_.Install(meta, slot)) {
      Unpersist(*old);
      table_.Release(*old);
    }
    if (RoundUpToPage(meta.length) == RoundUpToPage(slot_capacity_)) table_.MarkPrepared(slot);
  }
  virtual uint8_t* SlotData(uint64_t slot) const = 0;
  virtual Status Persist(uint64_t slot, const ShardMeta& meta) = 0;  // write header (+ flush)
  virtual void Unpersist(uint64_t slot) = 0;                          // invalidate header
  // CommitBatch's steps; the in-memory store has nothing to flush.
  virtual Status WriteHeader(uint64_t slot, const ShardMeta& meta) { return Persist(slot, meta); }
  virtual Status FlushAll() { return Status(); }
  // Staged writes (a store on disk): a reservation's bytes live in a pooled
  // buffer and reach the file with one write at commit, instead of being
  // received through the mapping, where every first touch of a page faults
  // and reads (zero-fills) it from the file system. A store that stages sets
  // stage_bytes_ and implements WriteStaged.
  // `stage` holds `len` bytes of shard in a buffer of RoundUpToPage(
  // stage_bytes_) bytes; WriteStaged may overwrite the bytes past `len`.
  virtual Status WriteStaged(uint64_t, uint8_t* /*stage*/, size_t /*len*/) {
    return InternalError("this store does not stage writes");
  }
  Stage TakeStage() {
    if (stage_bytes_ == 0) return nullptr;
    std::lock_guard<std::mutex> l(stage_mu_);
    if (stages_.empty()) {
      return Stage(static_cast<uint8_t*>(std::aligned_alloc(kPage, RoundUpToPage(stage_bytes_))));
    }
    auto s = std::move(stages_.back());
    stages_.pop_back();
    return s;
  }
  void GiveStage(Stage s) {
    std::lock_guard<std::mutex> l(stage_mu_);
    if (stages_.size() < kMaxIdleStages) stages_.push_back(std::move(s));
  }
  static constexpr size_t kMaxIdleStages = 64;
  uint64_t stage_bytes_ = 0;
  std::mutex stage_mu_;
  std::vector<Stage> stages_;  // guarded by stage_mu_
  virtual std::string Where() const = 0;

  SlotTable table_;
  const uint64_t slot_capacity_;
};

class MemoryShardStore final : public SlotStore {
 public:
  MemoryShardStore(uint64_t slots, uint64_t slot_capacity)
      : SlotStore(slots, slot_capacity), memory_(slots * slot_capacity) {}

 private:
  uint8_t* SlotData(uint64_t slot) const override {
    return const_cast<uint8_t*>(memory_.data()) + slot * slot_capacity_;
  }
  Status Persist(uint64_t, const ShardMeta&) override { return Status(); }
  void Unpersist(uint64_t) override {}
  std::string Where() const override { return "memory shard store"; }

  std::vector<uint8_t> memory_;
};

// On-disk slot header, at the start of each slot's 4 KiB header page.
// Format 2: a parity shard that records its stripe's data CRCs. Format 1
// (every header before 2026-12-06, and still every header with no data
// CRCs, so that an older daemon reads those) is the same up to `epoch`,
// with stripe_crc_count 0 and its header_crc where stripe_crcs starts. A
// daemon older than format 2 sees format-2 slots as free.
struct SlotHeader {
  uint64_t magic;  // kMagic when committed
  uint32_t format;
  uint32_t data_crc;
  uint64_t file_id, version, stripe;
  uint32_t index, stripe_crc_count;
  uint64_t length, seq, epoch;
  uint32_t stripe_crcs[ec::kMaxShards];  // ShardMeta::stripe_crcs
  uint32_t header_crc;  // CRC32C of every byte before this field
  uint32_t pad;
};
constexpr uint64_t kMagic = 0x4452485346524546ull;  // "FERFSHRD" little-endian
constexpr uint32_t kFormat = 2;
constexpr uint64_t kHeaderPage = 4096;
static_assert(sizeof(SlotHeader) <= kHeaderPage);

uint32_t HeaderCrc(const SlotHeader& h) {
  const size_t covered = h.format == 1 ? offsetof(SlotHeader, stripe_crcs) : offsetof(SlotHeader, header_crc);
  return ec::Crc32c({reinterpret_cast<const uint8_t*>(&h), covered});
}

// A committed header of a format this build reads, whole.
bool ValidHeader(const SlotHeader& h) {
  if (h.magic != kMagic) return false;
  if (h.format == 1) return h.stripe_crc_count == 0 && h.stripe_crcs[0] == HeaderCrc(h);
  return h.format == kFormat && h.stripe_crc_count <= ec::kMaxShards && h.header_crc == HeaderCrc(h);
}

class FileShardStore final : public SlotStore {
 public:
  FileShardStore(const FileStoreOptions& o, uint64_t slots, uint64_t stride)
      : SlotStore(slots, o.slot_capacity), options_(o), stride_(stride) {}
  ~FileShardStore() override {
    if (preparer_.joinable()) {
      {
        std::lock_guard<std::mutex> l(prepare_mu_);
        stop_ = true;
      }
      prepare_cv_.notify_all();
      preparer_.join();
    }
    if (base_ != nullptr) munmap(base_, map_len_);
    if (fd_ >= 0) close(fd_);
    if (direct_fd_ >= 0) close(direct_fd_);
  }

  Status Open() {
    std::error_code ec;
    std::filesystem::create_directories(options_.dir, ec);
    if (ec) return FromErrno(ec.value(), "create shard directory " + options_.dir);
    path_ = options_.dir + "/shards.slab";
    fd_ = open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0) return FromErrno(errno, "open " + path_);
    map_len_ = table_.total() * stride_;
    struct stat st {};
    fstat(fd_, &st);
    const bool fresh = static_cast<uint64_t>(st.st_size) < map_len_;
    // Reserve every byte now: a full tmpfs or disk fails here, at startup,
    // rather than as SIGBUS on a store through the mapping later.
    if (int rc = posix_fallocate(fd_, 0, map_len_); rc != 0) {
      return Status(rc == ENOSPC ? StatusCode::kResourceExhausted : StatusCode::kUnavailable,
                    "cannot reserve " + FormatSize(map_len_) + " for shards in " + options_.dir +
                        ": " + std::strerror(rc));
    }
    void* p = mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) return FromErrno(errno, "mmap " + path_);
    base_ = static_cast<uint8_t*>(p);
    // Huge pages where the filesystem allows them (a tmpfs mounted with
    // huge=advise or always). Not on a disk store: there (ext4, Linux 6.x)
    // it makes every fault read a whole 2 MiB around it, ignoring
    // MADV_RANDOM, and header recovery read the entire slab.
    if (options_.prefault) madvise(base_, map_len_, MADV_HUGEPAGE);
    if (options_.prefault && madvise(base_, map_len_, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) {
      return FromErrno(errno, "populate " + path_);
    }
    if (!fresh) {
      // Only each slot's header page is read. Readahead would read the
      // shard data around it too: on a disk store that is the whole slab at
      // every restart (838 MiB a node here), held in the page cache and
      // then invalidated by each slot's first O_DIRECT write.
      if (!options_.prefault) madvise(base_, map_len_, MADV_RANDOM);
      RecoverIndex();
      if (!options_.prefault) madvise(base_, map_len_, MADV_NORMAL);  // shard reads want readahead
    }
    // On disk (not populated) every write goes through write(2): see WriteStaged.
    if (options_.durable && !options_.prefault) {
      stage_bytes_ = options_.slot_capacity;
      // Shard data bypasses the page cache where the file system allows it:
      // a buffered write costs a copy plus page-cache bookkeeping of the
      // very CPU the daemons share, and the data is flushed right after
      // anyway. Headers stay buffered (small, and rewritten in place).
      direct_fd_ = open(path_.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC | O_NOFOLLOW);
      if (options_.prepare) StartPreparing();
    }
    return Status();
  }

  Status WriteStaged(uint64_t slot, uint8_t* stage, size_t len) override {
    NoteIo();  // its end is noted by the flush that always follows
    const uint64_t off = slot * stride_ + kHeaderPage;
    if (direct_fd_ >= 0 && len > 0 && direct_ok_.load(std::memory_order_relaxed)) {
      // Whole pages from a page-aligned buffer at a page-aligned offset; the
      // padding stays inside the slot (stride_ is rounded up to pages).
      const size_t padded = RoundUpToPage(len);
      std::memset(stage + len, 0, padded - len);
      Status s = WriteAt(direct_fd_, stage, padded, off);
      if (s.ok() || s.errno_hint() != EINVAL) return s;
      // The file system refused direct I/O after all: buffered from now on.
      if (direct_ok_.exchange(false)) {
        std::fprintf(stderr, "fern-ec: %s: O_DIRECT write refused (%s); writing buffered\n",
                     path_.c_str(), s.ToString().c_str());
      }
    }
    return WriteAt(fd_, stage, len, off);
  }

  Status WriteAt(const void* p, size_t n, uint64_t off) { return WriteAt(fd_, p, n, off); }

  Status WriteAt(int fd, const void* p, size_t n, uint64_t off) {
    const auto* b = static_cast<const uint8_t*>(p);
    while (n > 0) {
      ssize_t w = pwrite(fd, b, n, static_cast<off_t>(off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return FromErrno(errno, "write shard into " + path_);
      b += w;
      off += static_cast<uint64_t>(w);
      n -= static_cast<size_t>(w);
    }
    return Status();
  }

 private:
  SlotHeader* Header(uint64_t slot) const {
    return reinterpret_cast<SlotHeader*>(base_ + slot * stride_);
  }
  uint8_t* SlotData(uint64_t slot) const override { return base_ + slot * stride_ + kHeaderPage; }
  std::string Where() const override { return "shard store " + options_.dir; }

  Status Flush(uint8_t* p, uint64_t len) {
    if (!options_.durable) return Status();
    uintptr_t start = reinterpret_cast<uintptr_t>(p) & ~uintptr_t{4095};
    uintptr_t end = reinterpret_cast<uintptr_t>(p) + len;
    const int rc = msync(reinterpret_cast<void*>(start), end - start, MS_SYNC);
    NoteIo();
    if (rc != 0) return FromErrno(errno, "flush shard data in " + path_);
    return Status();
  }

  Status FlushAll() override {
    if (!options_.durable) return Status();
    NoteIo();
    const int rc = fdatasync(fd_);
    NoteIo();  // idle time starts when a batch's flush ends
    if (rc != 0) return FromErrno(errno, "flush shards in " + path_);
    return Status();
  }

  Status Persist(uint64_t slot, const ShardMeta& meta) override {
    FERN_RETURN_IF_ERROR(Flush(SlotData(slot), meta.length));
    FERN_RETURN_IF_ERROR(WriteHeader(slot, meta));
    return Flush(reinterpret_cast<uint8_t*>(Header(slot)), sizeof(SlotHeader));
  }

  Status WriteHeader(uint64_t slot, const ShardMeta& meta) override {
    SlotHeader h{};
    h.magic = kMagic;
    // Format 1 when there are no data CRCs to record (every data shard):
    // a daemon from before format 2 still reads those.
    h.format = meta.stripe_crcs.empty() ? 1 : kFormat;
    h.data_crc = meta.crc32c;
    h.file_id = meta.key.file_id;
    h.version = meta.key.version;
    h.stripe = meta.key.stripe;
    h.index = meta.key.index;
    h.length = meta.length;
    h.seq = meta.seq;
    h.epoch = meta.epoch;
    h.stripe_crc_count = static_cast<uint32_t>(std::min<size_t>(meta.stripe_crcs.size(), ec::kMaxShards));
    std::copy_n(meta.stripe_crcs.begin(), h.stripe_crc_count, h.stripe_crcs);
    if (h.format == 1) {
      h.stripe_crcs[0] = HeaderCrc(h);  // where format 1 keeps its header CRC
    } else {
      h.header_crc = HeaderCrc(h);
    }
    if (stage_bytes_ == 0) {
      std::memcpy(Header(slot), &h, sizeof h);
      return Status();
    }
    // The whole header page in one write, so the kernel need not read it first.
    alignas(8) uint8_t page[kHeaderPage] = {};
    std::memcpy(page, &h, sizeof h);
    return WriteAt(page, sizeof page, slot * stride_);
  }

  // No flush: see the header (removal is made durable by the next flush).
  void Unpersist(uint64_t slot) override {
    if (stage_bytes_ == 0) {
      Header(slot)->magic = 0;
      return;
    }
    const uint64_t zero = 0;
    if (Status s = WriteAt(&zero, sizeof zero, slot * stride_); !s.ok()) {
      // The slot is reused anyway; at worst a restart revives an orphan no record names.
      std::fprintf(stderr, "fern-ec: invalidate slot %llu: %s\n", static_cast<unsigned long long>(slot),
                   s.ToString().c_str());
    }
  }

  void RecoverIndex() {
    std::lock_guard<std::mutex> l(table_.mu());
    for (uint64_t s = 0; s < table_.total(); ++s) {
      const SlotHeader h = *Header(s);
      if (!ValidHeader(h) || h.length > slot_capacity_) continue;  // free, or a write that never committed
      ShardMeta m{{h.file_id, h.version, h.stripe, h.index}, h.length, h.seq, h.epoch, h.data_crc};
      m.stripe_crcs.assign(h.stripe_crcs, h.stripe_crcs + h.stripe_crc_count);
      table_.Recover(m, s);
    }
    table_.RebuildFreeList();
  }

  // Which slots have written blocks (FIEMAP), and a thread that writes the
  // rest once, if any.
  void StartPreparing() {
    auto written = WrittenRanges(fd_, 0, map_len_);
    if (!written) return;  // cannot tell: all count as prepared
    std::vector<uint8_t> prepared(table_.total(), 0);
    size_t r = 0;
    for (uint64_t slot = 0; slot < table_.total(); ++slot) {
      const uint64_t start = slot * stride_, end = start + stride_;
      while (r < written->size() && (*written)[r].second <= start) ++r;
      prepared[slot] = r < written->size() && (*written)[r].first <= start && (*written)[r].second >= end;
    }
    std::lock_guard<std::mutex> l(table_.mu());
    table_.SetPrepared(prepared);
    if (std::count(prepared.begin(), prepared.end(), 0) > 0) {
      preparer_ = std::thread([this] { PrepareSlots(); });
    }
  }

  void NoteIo() {
    last_io_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                      std::memory_order_relaxed);
  }

  // The preparing thread: takes one unprepared free slot at a time and
  // writes zeros into the parts of it that are not written blocks yet (so
  // no byte that reads back differently: unwritten extents read as zeros),
  // while no shard was written for kIdleBefore. It stops short when a
  // Reserve wants the slot, flushes every kFlushEvery and when it runs out,
  // and then looks again every kRecheck (a short shard freed later leaves
  // part of its slot unwritten). At a write error it logs, gives up
  // (every slot counts as prepared; the store works as before) and ends.
  void PrepareSlots() {
    constexpr auto kIdleBefore = std::chrono::milliseconds(50);
    constexpr uint64_t kFlushEvery = 64 << 20;
    constexpr size_t kChunk = 256 << 10;
    constexpr auto kRecheck = std::chrono::seconds(1);
    // Idle I/O class: the disk serves this only when nothing else waits
    // (a scheduler that ignores priorities still gets the idle check).
    syscall(SYS_ioprio_set, 1 /*IOPRIO_WHO_PROCESS*/, 0 /*this thread*/, 3 << 13 /*IDLE*/);
    Stage zeros(static_cast<uint8_t*>(std::aligned_alloc(kPage, kChunk)));
    // Its own open file: a writeback error seen by this thread's flush must
    // not be consumed here instead of reaching a shard's FlushAll.
    int direct = open(path_.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC | O_NOFOLLOW);
    const int buffered = open(path_.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    Status error = zeros && buffered >= 0 ? Status() : FromErrno(errno, "open " + path_ + " to prepare it");
    if (zeros) std::memset(zeros.get(), 0, kChunk);
    uint64_t unflushed = 0;
    auto flush = [&] {
      if (unflushed == 0 || !error.ok()) return;
      if (fdatasync(buffered) != 0) error = FromErrno(errno, "flush prepared slots of " + path_);
      unflushed = 0;
      std::lock_guard<std::mutex> l(table_.mu());
      if (error.ok()) table_.Flushed();
    };
    while (error.ok()) {
      {
        std::unique_lock<std::mutex> l(prepare_mu_);
        const auto since = std::chrono::steady_clock::now().time_since_epoch() -
                           std::chrono::steady_clock::duration(last_io_ns_.load(std::memory_order_relaxed));
        if (since < kIdleBefore) {
          prepare_cv_.wait_for(l, kIdleBefore - since, [this] { return stop_; });
        }
        if (stop_) break;
        if (since < kIdleBefore) continue;
      }
      uint64_t slot;
      bool took;
      {
        std::lock_guard<std::mutex> l(table_.mu());
        took = table_.TakeUnprepared(&slot);
      }
      if (!took) {
        flush();
        std::unique_lock<std::mutex> l(prepare_mu_);
        prepare_cv_.wait_for(l, kRecheck, [this] { return stop_; });
        if (stop_) break;
        continue;
      }
      const uint64_t from = slot * stride_, to = from + stride_;
      auto written = WrittenRanges(buffered, from, stride_);
      if (!written) error = FromErrno(errno, "FIEMAP of " + path_);
      bool cut = false, wrote = false;
      std::vector<std::pair<uint64_t, uint64_t>> gaps;
      if (error.ok()) gaps = Gaps(*written, from, to);
      for (const auto& [a, b] : gaps) {
        for (uint64_t off = a; off < b && error.ok() && !cut; off += kChunk) {
          if (table_.wanted()) {
            cut = true;
            break;
          }
          const size_t n = std::min<uint64_t>(kChunk, b - off);
          const bool aligned = off % kPage == 0 && n % kPage == 0;
          error = WriteAt(aligned && direct >= 0 ? direct : buffered, zeros.get(), n, off);
          if (!error.ok() && error.errno_hint() == EINVAL && direct >= 0) {
            close(direct);  // the file system refuses direct I/O after all
            direct = -1;
            error = WriteAt(buffered, zeros.get(), n, off);
          }
          wrote = true;
          unflushed += n;
        }
      }
      {
        std::lock_guard<std::mutex> l(table_.mu());
        table_.FinishPreparing(slot, error.ok() && !cut, wrote);
      }
      if (unflushed >= kFlushEvery) flush();
    }
    flush();
    if (!error.ok()) {
      std::fprintf(stderr, "fern-ec: %s: preparing slots stopped: %s\n", path_.c_str(),
                   error.ToString().c_str());
      std::lock_guard<std::mutex> l(table_.mu());
      table_.GiveUpPreparing();
    }
    if (direct >= 0) close(direct);
    if (buffered >= 0) close(buffered);
  }

  FileStoreOptions options_;
  const uint64_t stride_;
  std::string path_;
  int fd_ = -1;
  int direct_fd_ = -1;  // the same file with O_DIRECT, or -1 (see Open)
  std::atomic<bool> direct_ok_{true};  // false once a direct write got EINVAL
  uint8_t* base_ = nullptr;
  uint64_t map_len_ = 0;
  std::atomic<int64_t> last_io_ns_{0};  // steady clock of the last shard write or flush
  std::mutex prepare_mu_;
  std::condition_variable prepare_cv_;
  bool stop_ = false;  // guarded by prepare_mu_
  std::thread preparer_;  // see PrepareSlots; joined first when closing
};

}  // namespace

StatusOr<std::unique_ptr<ShardStore>> OpenFileShardStore(const FileStoreOptions& options) {
  if (options.slot_capacity == 0 || options.capacity < options.slot_capacity) {
    return InvalidArgumentError("shard store " + options.dir + ": capacity " +
                                FormatSize(options.capacity) + " must hold at least one shard of " +
                                FormatSize(options.slot_capacity));
  }
  const uint64_t slots = options.capacity / options.slot_capacity;
  const uint64_t stride = kHeaderPage + RoundUpToPage(options.slot_capacity);
  auto store = std::make_unique<FileShardStore>(options, slots, stride);
  FERN_RETURN_IF_ERROR(store->Open());
  return std::unique_ptr<ShardStore>(std::move(store));
}

std::vector<Status> ShardStore::CommitBatch(std::vector<PendingCommit> batch) {
  std::vector<Status> out;
  out.reserve(batch.size());
  for (auto& c : batch) out.push_back(Commit(std::move(c.reservation), c.meta));
  return out;
}

std::unique_ptr<ShardStore> NewMemoryShardStore(uint64_t slots, uint64_t slot_capacity) {
  return std::make_unique<MemoryShardStore>(slots, slot_capacity);
}

}  // namespace fern::daemon
