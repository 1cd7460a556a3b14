#include "daemon/shard_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "common/flags.h"
#include "ec/crc32c.h"

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

// Slot bookkeeping shared by both stores: which slot holds which key, free
// slots, reservations, and reader pins that delay reuse.
class SlotTable {
 public:
  explicit SlotTable(uint64_t slots) : state_(slots, kFree) {
    for (uint64_t i = slots; i-- > 0;) free_.push_back(i);
  }

  std::mutex& mu() { return mu_; }

  // REQUIRES: mu held.
  bool Take(uint64_t* slot) {
    if (free_.empty()) return false;
    *slot = free_.back();
    free_.pop_back();
    state_[*slot] = kReserved;
    return true;
  }
  void Release(uint64_t slot) {
    if (pins_.count(slot)) {
      state_[slot] = kFreeWhenUnpinned;
      return;
    }
    state_[slot] = kFree;
    free_.push_back(slot);
  }
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
    for (uint64_t i = state_.size(); i-- > 0;) {
      if (state_[i] == kFree) free_.push_back(i);
    }
  }
  std::optional<std::pair<uint64_t, ShardMeta>> Find(const ShardKey& key) const {
    auto it = index_.find(key);
    if (it == index_.end()) return std::nullopt;
    return std::make_pair(it->second.slot, it->second.meta);
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
      free_.push_back(slot);
    }
  }
  std::vector<ShardMeta> List() const {
    std::vector<ShardMeta> out;
    for (auto& [k, e] : index_) out.push_back(e.meta);
    return out;
  }
  uint64_t total() const { return state_.size(); }
  size_t pinned() const { return pins_.size(); }
  uint64_t used() const { return state_.size() - free_.size(); }

 private:
  enum State : uint8_t { kFree, kReserved, kCommitted, kFreeWhenUnpinned };
  struct Entry {
    uint64_t slot;
    ShardMeta meta;
  };
  std::mutex mu_;
  std::vector<State> state_;
  std::vector<uint64_t> free_;
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
    Res(SlotStore* s, ShardKey k, uint64_t slot, uint64_t len)
        : store_(s), key_(k), slot_(slot), len_(len) {}
    ~Res() override {
      if (store_) {
        std::lock_guard<std::mutex> l(store_->table_.mu());
        store_->table_.Release(slot_);
      }
    }
    const ShardKey& key() const override { return key_; }
    std::span<uint8_t> data() override { return {store_->SlotData(slot_), len_}; }

    SlotStore* store_;
    ShardKey key_;
    uint64_t slot_;
    uint64_t len_;
  };

  StatusOr<std::unique_ptr<Reservation>> Reserve(const ShardKey& key, uint64_t length) override {
    if (length > slot_capacity_) {
      return InvalidArgumentError(key.ToString() + ": " + std::to_string(length) +
                                  " bytes exceed the slot capacity of " +
                                  std::to_string(slot_capacity_));
    }
    uint64_t slot;
    {
      std::lock_guard<std::mutex> l(table_.mu());
      if (!table_.Take(&slot)) {
        return ResourceExhaustedError(Where() + " is full (" + std::to_string(table_.total()) +
                                      " slots of " + FormatSize(slot_capacity_) + ")");
      }
    }
    return std::unique_ptr<Reservation>(new Res(this, key, slot, length));
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
    FERN_RETURN_IF_ERROR(Persist(r->slot_, meta));
    std::lock_guard<std::mutex> l(table_.mu());
    if (auto old = table_.Install(meta, r->slot_)) {
      Unpersist(*old);
      table_.Release(*old);
    }
    r->store_ = nullptr;  // the slot now belongs to the index
    return Status();
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
    return StoreUsage{table_.total(), table_.used(), slot_capacity_};
  }

 protected:
  virtual uint8_t* SlotData(uint64_t slot) const = 0;
  virtual Status Persist(uint64_t slot, const ShardMeta& meta) = 0;  // write header (+ flush)
  virtual void Unpersist(uint64_t slot) = 0;                          // invalidate header
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
struct SlotHeader {
  uint64_t magic;  // kMagic when committed
  uint32_t format;
  uint32_t data_crc;
  uint64_t file_id, version, stripe;
  uint32_t index, reserved;
  uint64_t length, seq, epoch;
  uint32_t header_crc;  // CRC32C of every byte before this field
  uint32_t pad;
};
constexpr uint64_t kMagic = 0x4452485346524546ull;  // "FERFSHRD" little-endian
constexpr uint32_t kFormat = 1;
constexpr uint64_t kHeaderPage = 4096;

uint32_t HeaderCrc(const SlotHeader& h) {
  return ec::Crc32c({reinterpret_cast<const uint8_t*>(&h), offsetof(SlotHeader, header_crc)});
}

class FileShardStore final : public SlotStore {
 public:
  FileShardStore(const FileStoreOptions& o, uint64_t slots, uint64_t stride)
      : SlotStore(slots, o.slot_capacity), options_(o), stride_(stride) {}
  ~FileShardStore() override {
    if (base_ != nullptr) munmap(base_, map_len_);
    if (fd_ >= 0) close(fd_);
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
    // huge=advise or always); a no-op elsewhere.
    madvise(base_, map_len_, MADV_HUGEPAGE);
    if (options_.prefault && madvise(base_, map_len_, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) {
      return FromErrno(errno, "populate " + path_);
    }
    if (!fresh) RecoverIndex();
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
    if (msync(reinterpret_cast<void*>(start), end - start, MS_SYNC) != 0) {
      return FromErrno(errno, "flush shard data in " + path_);
    }
    return Status();
  }

  Status Persist(uint64_t slot, const ShardMeta& meta) override {
    FERN_RETURN_IF_ERROR(Flush(SlotData(slot), meta.length));
    SlotHeader h{};
    h.magic = kMagic;
    h.format = kFormat;
    h.data_crc = meta.crc32c;
    h.file_id = meta.key.file_id;
    h.version = meta.key.version;
    h.stripe = meta.key.stripe;
    h.index = meta.key.index;
    h.length = meta.length;
    h.seq = meta.seq;
    h.epoch = meta.epoch;
    h.header_crc = HeaderCrc(h);
    std::memcpy(Header(slot), &h, sizeof h);
    return Flush(reinterpret_cast<uint8_t*>(Header(slot)), sizeof h);
  }

  void Unpersist(uint64_t slot) override {
    Header(slot)->magic = 0;
    (void)Flush(reinterpret_cast<uint8_t*>(Header(slot)), sizeof(SlotHeader));
  }

  void RecoverIndex() {
    std::lock_guard<std::mutex> l(table_.mu());
    for (uint64_t s = 0; s < table_.total(); ++s) {
      const SlotHeader h = *Header(s);
      if (h.magic != kMagic || h.format != kFormat || h.header_crc != HeaderCrc(h) ||
          h.length > slot_capacity_) {
        continue;  // free, or a write that never committed
      }
      ShardMeta m{{h.file_id, h.version, h.stripe, h.index}, h.length, h.seq, h.epoch, h.data_crc};
      table_.Recover(m, s);
    }
    table_.RebuildFreeList();
  }

  FileStoreOptions options_;
  const uint64_t stride_;
  std::string path_;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  uint64_t map_len_ = 0;
};

}  // namespace

StatusOr<std::unique_ptr<ShardStore>> OpenFileShardStore(const FileStoreOptions& options) {
  if (options.slot_capacity == 0 || options.capacity < options.slot_capacity) {
    return InvalidArgumentError("shard store " + options.dir + ": capacity " +
                                FormatSize(options.capacity) + " must hold at least one shard of " +
                                FormatSize(options.slot_capacity));
  }
  const uint64_t slots = options.capacity / options.slot_capacity;
  const uint64_t stride = kHeaderPage + (options.slot_capacity + 4095) / 4096 * 4096;
  auto store = std::make_unique<FileShardStore>(options, slots, stride);
  FERN_RETURN_IF_ERROR(store->Open());
  return std::unique_ptr<ShardStore>(std::move(store));
}

std::unique_ptr<ShardStore> NewMemoryShardStore(uint64_t slots, uint64_t slot_capacity) {
  return std::make_unique<MemoryShardStore>(slots, slot_capacity);
}

}  // namespace fern::daemon
