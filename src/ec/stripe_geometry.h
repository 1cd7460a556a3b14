// StripeGeometry: where each byte of a file lives in its stripes.
//
// A file is cut into stripes of k * shard_size bytes. Within a stripe, data
// shard i holds the contiguous bytes [i*shard_size, (i+1)*shard_size), so a
// shard is one slice of the file (encode reads it straight from a mapping):
//
//   file:    |<----------- stripe 0 ----------->|<-- stripe 1 (last) -->|
//            | shard 0 | shard 1 | ... | shard k-1 | shard 0 |  (zeros) ...
//
// The last stripe may be partial: its shards are stored with length
// StripeShardLen (the data it holds, rounded up to the coder's alignment),
// and the bytes past the end of the file are zeros. An empty file has no
// stripes. All functions are pure; the object is an immutable value.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace fern::ec {

struct ShardLocation {
  uint64_t stripe = 0;
  int shard = 0;        // data shard index, 0..k-1
  uint64_t offset = 0;  // byte offset within the shard
  friend bool operator==(const ShardLocation&, const ShardLocation&) = default;
};

class StripeGeometry {
 public:
  static constexpr size_t kDefaultShardSize = 1 << 20;
  static constexpr size_t kMaxShardSize = size_t{1} << 30;

  // REQUIRES nothing: bad values come back as InvalidArgument.
  // shard_size must be a positive multiple of `alignment`, at most 1 GiB.
  static StatusOr<StripeGeometry> Make(int k, size_t shard_size, size_t alignment = 1);

  int k() const { return k_; }
  size_t shard_size() const { return shard_size_; }
  uint64_t stripe_size() const { return uint64_t{shard_size_} * k_; }

  uint64_t StripeCount(uint64_t file_size) const;
  ShardLocation Locate(uint64_t file_offset) const;
  uint64_t FileOffset(const ShardLocation& loc) const;
  // File bytes held by data shard `shard` of `stripe` (0 past the end).
  size_t ShardDataBytes(uint64_t file_size, uint64_t stripe, int shard) const;
  // Length every shard (data and parity) of `stripe` is encoded and stored
  // with. 0 for a stripe past the end of the file.
  size_t StripeShardLen(uint64_t file_size, uint64_t stripe) const;

 private:
  StripeGeometry(int k, size_t shard_size, size_t alignment)
      : k_(k), shard_size_(shard_size), alignment_(alignment) {}

  int k_;
  size_t shard_size_;
  size_t alignment_;
};

}  // namespace fern::ec
