// GFNI backend: fern-ec's own region kernel for x86-64 CPUs with GFNI and
// AVX-512BW (Intel Ice Lake and later, AMD Zen 4 and later).
//
// Multiplying a byte by a constant c of GF(2^8) is linear over GF(2): bit k of
// the input contributes c * x^k. GF2P8AFFINEQB applies any 8x8 bit-matrix to
// every byte of a vector in one instruction, so each coefficient of the coding
// matrix becomes one 64-bit matrix, built once, and a 4+2 encode costs 8 such
// instructions and 6 XORs per 64 bytes of each shard, against ISA-L's table
// lookups (two shuffles, a shift and masks per coefficient) on CPUs whose ISA-L
// build predates its GFNI kernels (Debian 12 ships 2.30). Same field
// (0x11d), same matrices as the other backends: the parity bytes are
// identical, which tests/ec checks against Jerasure.
//
// Only this file is compiled for those instructions (function attributes), so
// the rest of the build runs on any x86-64; MakeGfniCoder refuses on a CPU
// without them, and GfniAvailable() tells the factory.
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "ec/matrix_coder.h"

namespace fern::ec {
namespace {

#define FERN_GFNI_TARGET __attribute__((target("avx512f,avx512bw,gfni")))

// The 8x8 bit-matrix of x -> c*x in GF(2^8), as GF2P8AFFINEQB takes it: byte
// (7 - i) of the qword is row i, whose bit j is bit i of c * x^j.
uint64_t AffineOf(uint8_t c) {
  uint64_t a = 0;
  for (int i = 0; i < 8; ++i) {
    uint64_t row = 0;
    for (int j = 0; j < 8; ++j) row |= static_cast<uint64_t>((gf256::Mul(c, uint8_t(1u << j)) >> i) & 1u) << j;
    a |= row << (8 * (7 - i));
  }
  return a;
}

// Up to kGroup outputs at a time: their accumulators stay in registers while
// every input streams past once.
constexpr int kGroup = 4;

template <int R, bool accumulate>
FERN_GFNI_TARGET void RunGroup(const uint8_t* const* in, int cols, uint8_t* const* out,
                               const uint64_t* affine, int stride, size_t len) {
  // affine[r * stride + c]: the matrix of output r, input c. Copied into
  // locals first: every store through a uint8_t* may alias anything, so the
  // compiler would otherwise reload the matrices and pointers after each one.
  const uint8_t* src[kMaxShards];
  uint8_t* dst[R];
  uint64_t mat[R][kMaxShards];
  for (int c = 0; c < cols; ++c) src[c] = in[c];
  for (int r = 0; r < R; ++r) {
    dst[r] = out[r];
    for (int c = 0; c < cols; ++c) mat[r][c] = affine[r * stride + c];
  }
  size_t at = 0;
  for (; at + 128 <= len; at += 128) {
    __m512i lo[R], hi[R];
    for (int r = 0; r < R; ++r) {
      lo[r] = accumulate ? _mm512_loadu_si512(dst[r] + at) : _mm512_setzero_si512();
      hi[r] = accumulate ? _mm512_loadu_si512(dst[r] + at + 64) : _mm512_setzero_si512();
    }
    for (int c = 0; c < cols; ++c) {
      const __m512i x0 = _mm512_loadu_si512(src[c] + at);
      const __m512i x1 = _mm512_loadu_si512(src[c] + at + 64);
      for (int r = 0; r < R; ++r) {
        const __m512i a = _mm512_set1_epi64(static_cast<long long>(mat[r][c]));
        lo[r] = _mm512_xor_si512(lo[r], _mm512_gf2p8affine_epi64_epi8(x0, a, 0));
        hi[r] = _mm512_xor_si512(hi[r], _mm512_gf2p8affine_epi64_epi8(x1, a, 0));
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm512_storeu_si512(dst[r] + at, lo[r]);
      _mm512_storeu_si512(dst[r] + at + 64, hi[r]);
    }
  }
  // The rest, up to 64 bytes at a time, the last one masked.
  for (; at < len; at += 64) {
    const size_t n = std::min<size_t>(64, len - at);
    const __mmask64 mask = n == 64 ? ~__mmask64{0} : ((__mmask64{1} << n) - 1);
    __m512i acc[R];
    for (int r = 0; r < R; ++r) {
      acc[r] = accumulate ? _mm512_maskz_loadu_epi8(mask, dst[r] + at) : _mm512_setzero_si512();
    }
    for (int c = 0; c < cols; ++c) {
      const __m512i x = _mm512_maskz_loadu_epi8(mask, src[c] + at);
      for (int r = 0; r < R; ++r) {
        const __m512i a = _mm512_set1_epi64(static_cast<long long>(mat[r][c]));
        acc[r] = _mm512_xor_si512(acc[r], _mm512_gf2p8affine_epi64_epi8(x, a, 0));
      }
    }
    for (int r = 0; r < R; ++r) _mm512_mask_storeu_epi8(dst[r] + at, mask, acc[r]);
  }
}

class GfniKernel final : public Kernel {
 public:
  // REQUIRES: m.cols <= kMaxShards (RunGroup's local arrays); the factory
  // never builds a larger stripe.
  explicit GfniKernel(const gf256::Matrix& m) : rows_(m.rows), cols_(m.cols), affine_(m.cells.size()) {
    if (m.cols > kMaxShards) std::abort();
    std::transform(m.cells.begin(), m.cells.end(), affine_.begin(), AffineOf);
  }

  void Run(const uint8_t* const* in, uint8_t* const* out, size_t len, bool accumulate) const override {
    for (int r = 0; r < rows_; r += kGroup) {
      const uint64_t* a = affine_.data() + static_cast<size_t>(r) * cols_;
      const int n = std::min(kGroup, rows_ - r);
      if (accumulate) {
        Dispatch<true>(n, in, out + r, a, len);
      } else {
        Dispatch<false>(n, in, out + r, a, len);
      }
    }
  }

 private:
  template <bool accumulate>
  void Dispatch(int n, const uint8_t* const* in, uint8_t* const* out, const uint64_t* a, size_t len) const {
    switch (n) {
      case 1: RunGroup<1, accumulate>(in, cols_, out, a, cols_, len); break;
      case 2: RunGroup<2, accumulate>(in, cols_, out, a, cols_, len); break;
      case 3: RunGroup<3, accumulate>(in, cols_, out, a, cols_, len); break;
      default: RunGroup<4, accumulate>(in, cols_, out, a, cols_, len); break;
    }
  }

  const int rows_;
  const int cols_;
  std::vector<uint64_t> affine_;  // row-major like the matrix; written once
};

}  // namespace

bool GfniAvailable() {
  // FERN_DISABLE_GFNI set (to anything) acts as a CPU without them (a
  // second ctest run proves the fallback on machines that have them).
  static const bool ok = [] {
    __builtin_cpu_init();  // in case this runs before libgcc's own constructor
    return __builtin_cpu_supports("gfni") && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && std::getenv("FERN_DISABLE_GFNI") == nullptr;
  }();
  return ok;
}

StatusOr<std::unique_ptr<ErasureCoder>> MakeGfniCoder(const CoderOptions& options) {
  if (!GfniAvailable()) {
    return UnimplementedError(
        std::getenv("FERN_DISABLE_GFNI") != nullptr
            ? "backend gfni is disabled (FERN_DISABLE_GFNI is set)"
            : "backend gfni needs a CPU with GFNI and AVX-512BW; this one lacks them");
  }
  return MakeByteMatrixCoder("gfni", options,
                             [](const gf256::Matrix& m) { return std::make_unique<GfniKernel>(m); });
}

}  // namespace fern::ec
