#include "ec/erasure_coder.h"

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "ec/crc32c.h"
#include "ec/matrix_coder.h"

namespace fern::ec {
namespace {

// Chosen with ec_bench on this project's reference machine; see
// docs/performance.md.
constexpr size_t kDefaultPacketSize = 16384;
constexpr size_t kMaxPacketSize = 1 << 20;

std::vector<std::string_view> BuildBackends() {
  std::vector<std::string_view> v = {"jerasure"};
#ifdef FERN_HAVE_ISAL
  v.push_back("isal");
#endif
  if (GfniAvailable()) v.push_back("gfni");
  v.push_back("xor");
  return v;
}

}  // namespace

#ifndef FERN_HAVE_ISAL
StatusOr<std::unique_ptr<ErasureCoder>> MakeIsalCoder(const CoderOptions&) {
  return UnimplementedError("this build has no ISA-L backend (configured with FERN_WITH_ISAL=OFF)");
}
#endif

#ifndef FERN_HAVE_GFNI
StatusOr<std::unique_ptr<ErasureCoder>> MakeGfniCoder(const CoderOptions&) {
  return UnimplementedError("this build has no gfni backend (not an x86-64 build)");
}
bool GfniAvailable() { return false; }
#endif

std::span<const std::string_view> AvailableBackends() {
  static const std::vector<std::string_view> backends = BuildBackends();
  return backends;
}

Status EncodeWithCrcs(const ErasureCoder& coder, std::span<const uint8_t* const> data,
                      std::span<uint8_t* const> parity, size_t len, std::span<uint32_t> crcs) {
  const size_t k = data.size(), m = parity.size();
  if (k != static_cast<size_t>(coder.k()) || m != static_cast<size_t>(coder.m()) || crcs.size() != k + m) {
    return InvalidArgumentError("EncodeWithCrcs: " + std::to_string(k) + " data, " + std::to_string(m) +
                                " parity, " + std::to_string(crcs.size()) + " CRCs for k=" +
                                std::to_string(coder.k()) + " m=" + std::to_string(coder.m()));
  }
  const size_t align = coder.alignment();
  if (len % align != 0) {
    return InvalidArgumentError("shard length " + std::to_string(len) + " is not a multiple of " +
                                std::to_string(align));
  }
  // Bit-matrix codes lay out packets in groups of alignment() bytes, so any
  // aligned block encodes to the same bytes as the whole shard does there.
  const size_t block = (kCrcEncodeBlock + align - 1) / align * align;
  std::array<const uint8_t*, kMaxShards> d{};
  std::array<uint8_t*, kMaxShards> p{};
  for (uint32_t& c : crcs) c = 0;
  for (size_t at = 0; at < len; at += block) {
    const size_t n = std::min(block, len - at);
    for (size_t i = 0; i < k; ++i) d[i] = data[i] + at;
    for (size_t j = 0; j < m; ++j) p[j] = parity[j] + at;
    FERN_RETURN_IF_ERROR(coder.Encode({d.data(), k}, {p.data(), m}, n));
    for (size_t i = 0; i < k; ++i) crcs[i] = Crc32c({d[i], n}, crcs[i]);
    for (size_t j = 0; j < m; ++j) crcs[k + j] = Crc32c({p[j], n}, crcs[k + j]);
  }
  return Status();
}

StatusOr<std::unique_ptr<ErasureCoder>> MakeErasureCoder(const CoderOptions& options) {
  CoderOptions o = options;
  if (o.k < 1 || o.m < 0 || o.k + o.m > kMaxShards) {
    return InvalidArgumentError("k=" + std::to_string(o.k) + " m=" + std::to_string(o.m) +
                                ": need k >= 1, m >= 0 and k+m <= " +
                                std::to_string(kMaxShards));
  }
  const bool packets = o.technique == "cauchy_good" || o.technique == "liber8tion";
  if (packets) {
    if (o.packet_size == 0) o.packet_size = kDefaultPacketSize;
    if (o.packet_size % sizeof(long) != 0 || o.packet_size > kMaxPacketSize) {
      return InvalidArgumentError("packet size " + std::to_string(o.packet_size) +
                                  " must be a multiple of 8 and at most 1 MiB");
    }
  } else if (o.packet_size != 0) {
    return InvalidArgumentError("packet size applies to techniques cauchy_good and liber8tion only");
  }
  if (o.backend == "auto") {
    const bool matrix = o.technique == "reed_sol_van" || o.technique == "cauchy";
    if (matrix && GfniAvailable()) return MakeGfniCoder(o);
#ifdef FERN_HAVE_ISAL
    if (matrix) return MakeIsalCoder(o);
#endif
    if (o.technique == "xor") return MakeXorCoder(o);
    return MakeJerasureCoder(o);
  }
  if (o.backend == "jerasure") return MakeJerasureCoder(o);
  if (o.backend == "isal") return MakeIsalCoder(o);
  if (o.backend == "xor") return MakeXorCoder(o);
  if (o.backend == "gfni") return MakeGfniCoder(o);
  return InvalidArgumentError("unknown erasure-coding backend '" + o.backend +
                              "' (jerasure, isal, gfni, xor, auto)");
}

}  // namespace fern::ec
