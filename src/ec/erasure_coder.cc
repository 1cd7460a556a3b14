#include "ec/erasure_coder.h"

#include <array>
#include <string>

#include "ec/matrix_coder.h"

namespace fern::ec {
namespace {

// Chosen with ec_bench on this project's reference machine; see
// docs/performance.md.
constexpr size_t kDefaultPacketSize = 16384;
constexpr size_t kMaxPacketSize = 1 << 20;

#ifdef FERN_HAVE_ISAL
constexpr std::array<std::string_view, 3> kBackends = {"jerasure", "isal", "xor"};
#else
constexpr std::array<std::string_view, 2> kBackends = {"jerasure", "xor"};
#endif

}  // namespace

#ifndef FERN_HAVE_ISAL
StatusOr<std::unique_ptr<ErasureCoder>> MakeIsalCoder(const CoderOptions&) {
  return UnimplementedError("this build has no ISA-L backend (configured with FERN_WITH_ISAL=OFF)");
}
#endif

std::span<const std::string_view> AvailableBackends() { return kBackends; }

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
#ifdef FERN_HAVE_ISAL
    if (o.technique == "reed_sol_van" || o.technique == "cauchy") return MakeIsalCoder(o);
#endif
    if (o.technique == "xor") return MakeXorCoder(o);
    return MakeJerasureCoder(o);
  }
  if (o.backend == "jerasure") return MakeJerasureCoder(o);
  if (o.backend == "isal") return MakeIsalCoder(o);
  if (o.backend == "xor") return MakeXorCoder(o);
  return InvalidArgumentError("unknown erasure-coding backend '" + o.backend +
                              "' (jerasure, isal, xor, auto)");
}

}  // namespace fern::ec
