// The reference coder: single parity, P0 = D0 ^ D1 ^ ... ^ Dk-1, written in
// plain loops with no library underneath. It is the oracle the tests hold the
// real backends against (reed_sol_van with m=1 must produce the same bytes).
#include <cstring>
#include <string>

#include "ec/matrix_coder.h"

namespace fern::ec {
namespace {

void XorInto(const uint8_t* src, uint8_t* dst, size_t len) {
  for (size_t i = 0; i < len; ++i) dst[i] ^= src[i];
}

class XorCoder final : public ErasureCoder {
 public:
  explicit XorCoder(int k) : k_(k), coding_(1, k) {
    for (int c = 0; c < k; ++c) coding_.at(0, c) = 1;
  }

  int k() const override { return k_; }
  int m() const override { return 1; }
  std::string_view backend() const override { return "xor"; }
  std::string_view technique() const override { return "xor"; }
  size_t alignment() const override { return 1; }
  const gf256::Matrix& coding_matrix() const override { return coding_; }

  Status Encode(std::span<const uint8_t* const> data, std::span<uint8_t* const> parity,
                size_t len) const override {
    if (data.size() != static_cast<size_t>(k_) || parity.size() != 1) {
      return InvalidArgumentError("encode: expected " + std::to_string(k_) +
                                  " data and 1 parity buffers");
    }
    for (auto* p : data) {
      if (p == nullptr) return InvalidArgumentError("encode: null data buffer");
    }
    if (parity[0] == nullptr) return InvalidArgumentError("encode: null parity buffer");
    if (len == 0) return Status();
    std::memcpy(parity[0], data[0], len);
    for (int i = 1; i < k_; ++i) XorInto(data[i], parity[0], len);
    return Status();
  }

  Status Decode(std::span<uint8_t* const> shards, ShardSet present, ShardSet want,
                size_t len) const override {
    const int n = k_ + 1;
    if (shards.size() != static_cast<size_t>(n)) {
      return InvalidArgumentError("decode: expected " + std::to_string(n) + " shard buffers");
    }
    if ((present.bits() | want.bits()) & ~ShardSet::FirstN(n).bits()) {
      return InvalidArgumentError("decode: shard index out of range");
    }
    if (!ShardSet(present.bits() & want.bits()).empty()) {
      return InvalidArgumentError("decode: a shard is both present and wanted");
    }
    if (want.empty()) return Status();
    if (present.size() < k_) {
      return DataLossError("decode: " + std::to_string(n - present.size()) +
                           " shards missing, m=1");
    }
    int target = 0;
    while (!want.contains(target)) ++target;
    for (int i = 0; i < n; ++i) {
      if ((present.contains(i) || i == target) && shards[i] == nullptr) {
        return InvalidArgumentError("decode: null buffer for shard " + std::to_string(i));
      }
    }
    if (len == 0) return Status();
    std::memset(shards[target], 0, len);
    for (int i = 0; i < n; ++i) {
      if (i != target) XorInto(shards[i], shards[target], len);
    }
    return Status();
  }

  Status ApplyDelta(int data_index, std::span<const uint8_t> delta,
                    std::span<uint8_t* const> parity) const override {
    if (data_index < 0 || data_index >= k_ || parity.size() != 1 || parity[0] == nullptr) {
      return InvalidArgumentError("delta: bad data index or parity buffers");
    }
    XorInto(delta.data(), parity[0], delta.size());
    return Status();
  }

 private:
  const int k_;
  gf256::Matrix coding_;
};

}  // namespace

StatusOr<std::unique_ptr<ErasureCoder>> MakeXorCoder(const CoderOptions& options) {
  if (options.technique != "xor") {
    return InvalidArgumentError("backend xor only offers technique xor, not '" +
                                options.technique + "'");
  }
  if (options.m != 1) {
    return InvalidArgumentError("backend xor needs m=1, got m=" + std::to_string(options.m));
  }
  return std::unique_ptr<ErasureCoder>(new XorCoder(options.k));
}

}  // namespace fern::ec
