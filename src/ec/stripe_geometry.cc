#include "ec/stripe_geometry.h"

#include <algorithm>
#include <string>

namespace fern::ec {

StatusOr<StripeGeometry> StripeGeometry::Make(int k, size_t shard_size, size_t alignment) {
  if (k < 1) return InvalidArgumentError("stripe geometry: k must be >= 1");
  if (alignment == 0) return InvalidArgumentError("stripe geometry: alignment must be >= 1");
  if (shard_size == 0 || shard_size > kMaxShardSize || shard_size % alignment != 0) {
    return InvalidArgumentError("shard size " + std::to_string(shard_size) +
                                " must be positive, at most 1 GiB and a multiple of " +
                                std::to_string(alignment));
  }
  return StripeGeometry(k, shard_size, alignment);
}

uint64_t StripeGeometry::StripeCount(uint64_t file_size) const {
  return (file_size + stripe_size() - 1) / stripe_size();
}

ShardLocation StripeGeometry::Locate(uint64_t file_offset) const {
  ShardLocation loc;
  loc.stripe = file_offset / stripe_size();
  const uint64_t in_stripe = file_offset % stripe_size();
  loc.shard = static_cast<int>(in_stripe / shard_size_);
  loc.offset = in_stripe % shard_size_;
  return loc;
}

uint64_t StripeGeometry::FileOffset(const ShardLocation& loc) const {
  return loc.stripe * stripe_size() + uint64_t{shard_size_} * loc.shard + loc.offset;
}

size_t StripeGeometry::ShardDataBytes(uint64_t file_size, uint64_t stripe, int shard) const {
  const uint64_t start = FileOffset({stripe, shard, 0});
  if (start >= file_size) return 0;
  return static_cast<size_t>(std::min<uint64_t>(shard_size_, file_size - start));
}

size_t StripeGeometry::StripeShardLen(uint64_t file_size, uint64_t stripe) const {
  const size_t bytes = ShardDataBytes(file_size, stripe, 0);  // shard 0 holds the most
  return (bytes + alignment_ - 1) / alignment_ * alignment_;
}

}  // namespace fern::ec
