// ShardStore: the shards one daemon holds in one tier (data shards in tmpfs,
// parity shards on disk).
//
// Space is prepared ahead of need: a store is a fixed number of slots, each
// big enough for one shard of the cluster's shard size. The file-backed
// store keeps them in one slab file that is fallocate'd and mapped when the
// store opens, so writing a shard overwrites already-allocated pages (on
// tmpfs ~4x cheaper than allocating fresh ones) and a full tier shows up as
// ResourceExhausted (ENOSPC for the writer) at Reserve, before anything is
// acknowledged, never as a torn shard or a SIGBUS.
//
// Writing a shard:
//   auto r = store.Reserve(key, len);     // ResourceExhausted when full
//   receive or copy the bytes into r->data()   (e.g. UCX rendezvous into it)
//   store.Commit(*r, meta);               // checks the CRC, writes the header
// The header (key, length, seq, epoch, CRC32C of the data, the stripe's
// data CRCs for a parity shard, CRC of the header) is written after the data, and for a durable tier after the data is
// flushed, so a crash before Commit leaves no valid shard: the slot is free
// again when the store reopens. A shard is never overwritten in place: a new
// version of the same key goes to a new slot, and the old slot is freed when
// the new one commits.
//
// Removing invalidates the header in place without a flush of its own: the
// next durable commit's flush (or writeback) persists it. A crash before then
// may bring a removed shard back as a valid one; it belongs to a version no
// record names any more and is never read.
//
// Updating in place (PSW, DESIGN §2): the one exception to the rule above.
// OpenForUpdate hands out a writable view of a committed shard's slot (CRC
// checked first); the caller changes bytes through it, then Reseal records
// the new seq and epoch with the CRC of the bytes as they now are, and the
// stripe data CRCs the caller says the bytes now encode (the store cannot
// know them: without the caller's, they are kept only when seq and bytes
// are unchanged) (for a
// durable tier: data flushed, then the header, then flushed again). A crash
// between a change and its Reseal leaves bytes that fail their CRC: the
// shard reads as corrupt (an erasure), never as valid wrong bytes. Readers
// holding a View meanwhile may see a torn shard; its CRC tells them.
//
// Reading: Read verifies the data CRC (DataLoss on mismatch: the caller
// treats the shard as an erasure) and returns a view of the slot that stays
// valid, even if the shard is removed meanwhile, as long as the view is held.
//
// Thread-safety: all methods are thread-safe. Reservations and views must
// not outlive the store.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace fern::daemon {

struct ShardKey {
  uint64_t file_id = 0;
  uint64_t version = 0;
  uint64_t stripe = 0;
  uint32_t index = 0;
  friend bool operator==(const ShardKey&, const ShardKey&) = default;
  std::string ToString() const;
};

struct ShardKeyHash {
  size_t operator()(const ShardKey& k) const;
};

struct ShardMeta {
  ShardKey key;
  uint64_t length = 0;
  uint64_t seq = 0;
  uint64_t epoch = 0;
  uint32_t crc32c = 0;
  // Parity shards: the CRC32C of each of the stripe's k data shards that
  // these bytes encode, so a reader can check the data it decodes; empty
  // when not known (written without them, or changed in place by a caller
  // that could not say what they became: see Reseal). At most
  // ec::kMaxShards values.
  std::vector<uint32_t> stripe_crcs;
};

struct StoreUsage {
  uint64_t slots_total = 0;
  uint64_t slots_used = 0;  // committed, reserved, or pinned by readers
  uint64_t slot_capacity = 0;  // largest shard a slot holds, bytes
  uint64_t slots_unprepared = 0;  // free, not written on disk yet (FileStoreOptions::prepare)
  uint64_t slots_zeroed = 0;      // slots the store wrote zeros into since it opened
};

class ShardStore {
 public:
  // An uncommitted slot. Destroying it without Commit frees the slot.
  class Reservation {
   public:
    virtual ~Reservation() = default;
    virtual const ShardKey& key() const = 0;
    virtual std::span<uint8_t> data() = 0;  // exactly the reserved length
  };

  struct View {
    ShardMeta meta;
    std::span<const uint8_t> data;
    std::shared_ptr<const void> pin;  // keeps the slot from being reused
  };

  virtual ~ShardStore() = default;

  // ResourceExhausted when no slot is free; InvalidArgument when `length`
  // exceeds the slot capacity.
  virtual StatusOr<std::unique_ptr<Reservation>> Reserve(const ShardKey& key,
                                                         uint64_t length) = 0;
  // Makes the shard visible (and durable for a durable store). DataLoss if
  // the bytes in the slot do not match meta.crc32c; the slot is then freed.
  // REQUIRES: meta.key == reservation key, meta.length == reserved length.
  virtual Status Commit(std::unique_ptr<Reservation> reservation, const ShardMeta& meta) = 0;
  // Commit of several shards at once, one Status per entry in order. A
  // durable store flushes the data of the whole batch once, then writes the
  // headers and flushes once more: two disk flushes for the batch instead of
  // two per shard (group commit). Same guarantees as Commit for each entry.
  struct PendingCommit {
    std::unique_ptr<Reservation> reservation;
    ShardMeta meta;
  };
  virtual std::vector<Status> CommitBatch(std::vector<PendingCommit> batch);
  // kVerify: DataLoss if the stored bytes fail their CRC. kTrustCaller: no
  // CRC pass here, for a caller that checks View::meta.crc32c end to end
  // itself (the gateway does after the transfer), so bytes are summed once.
  enum class Check { kVerify, kTrustCaller };
  // NotFound, or DataLoss (kVerify only) if the stored bytes fail their CRC.
  virtual StatusOr<View> Read(const ShardKey& key, Check check = Check::kVerify) const = 0;
  struct MutableView {
    ShardMeta meta;
    std::span<uint8_t> data;
    std::shared_ptr<const void> pin;  // keeps the slot from being reused
  };
  // NotFound, or (kVerify) DataLoss when the stored bytes fail their CRC:
  // nothing is changed through a corrupt shard. kTrustCaller: the caller
  // checks meta.crc32c itself.
  virtual StatusOr<MutableView> OpenForUpdate(const ShardKey& key, Check check = Check::kVerify) = 0;
  // Recomputes the CRC over the shard's current bytes and writes its header
  // with seq and epoch. NotFound when the key is gone (removed or replaced
  // meanwhile: the change went to a slot nobody reads). sync = false: not
  // flushed yet, for a caller that resealed several shards and then calls
  // Sync once (group commit); until then a crash may leave the old header,
  // which no longer matches the bytes: an erasure, never valid wrong bytes.
  // `crc`: the CRC32C of the bytes as they are now, when the caller keeps
  // it up to date (by blocks, ec::Crc32cCombine); else the store sums them.
  // `stripe_crcs` (a parity shard): the data CRCs its bytes encode now, as
  // the caller tracked them through the update (empty: not known); nullopt:
  // the old ones are kept when seq and bytes are unchanged (a fence only
  // moves the epoch), else dropped. InvalidArgument beyond ec::kMaxShards.
  virtual Status Reseal(const ShardKey& key, uint64_t seq, uint64_t epoch, bool sync = true,
                        std::optional<uint32_t> crc = std::nullopt,
                        std::optional<std::vector<uint32_t>> stripe_crcs = std::nullopt) = 0;
  // Makes everything written so far durable (a durable tier); OK otherwise.
  virtual Status Sync() { return Status(); }
  virtual Status Remove(const ShardKey& key) = 0;
  virtual std::vector<ShardMeta> List() const = 0;
  virtual StoreUsage Usage() const = 0;
};

struct FileStoreOptions {
  std::string dir;               // created if missing
  uint64_t capacity = 1 << 30;   // bytes of shard data the tier can hold
  uint64_t slot_capacity = 1 << 20;  // the cluster's shard size
  bool durable = false;          // flush data and header before Commit returns
  bool prefault = true;          // populate the mapping when opening
  // Not populated (a disk): write every slot's blocks once, in the
  // background while the store is idle, at idle I/O priority. fallocate
  // leaves unwritten extents, and the first write into one costs the file
  // system an extent conversion in its journal at the flush that makes the
  // shard durable; measured on ext4 here, writes into written blocks ran
  // ~35% faster (docs/performance.md). Zeros go only where FIEMAP shows no
  // written block (those read as zeros already), so no byte changes; slots
  // found written when the store opens are not written again; on a file
  // system that cannot tell, every slot counts as prepared.
  bool prepare = false;
};

// Opens (or creates) the slab in options.dir and recovers every committed
// shard in it. ResourceExhausted if the space cannot be reserved.
StatusOr<std::unique_ptr<ShardStore>> OpenFileShardStore(const FileStoreOptions& options);

// The in-process fake: same contract, heap memory, `slots` slots.
std::unique_ptr<ShardStore> NewMemoryShardStore(uint64_t slots, uint64_t slot_capacity);

}  // namespace fern::daemon
