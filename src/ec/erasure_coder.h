// ErasureCoder: Reed-Solomon encode, decode and parity-delta update of one
// stripe at a time.
//
// A stripe is k data shards followed by m parity shards, all of the same
// length `len`:
//
//      index:   0      1     ...   k-1  |  k       ...   k+m-1
//             +------+------+-----+------+--------+-----+--------+
//             | D0   | D1   | ... | Dk-1 | P0     | ... | Pm-1   |
//             +------+------+-----+------+--------+-----+--------+
//               data (tmpfs of k nodes)    parity (NVMe of m nodes)
//
//   P_j = sum_i C[j][i] * D_i  over GF(2^8) (polynomial 0x11d), byte by byte
//   for the matrix techniques; C is the m x k coding matrix.
//
// Techniques (the bytes each one produces are a stable on-disk format, pinned
// by golden vectors in tests/ec):
//   reed_sol_van  Jerasure's Vandermonde matrix (w=8). Row 0 is all ones.
//   cauchy        Jerasure's cauchy_good_general matrix used as a byte matrix.
//   cauchy_good   the same matrix expanded to a bit-matrix (w=8) and run as an
//                 XOR schedule on packets of `packet_size` bytes. Its parity
//                 bytes are laid out differently from `cauchy`: a separate
//                 format, Jerasure only.
//   liber8tion    m=2, k<=8 only: Plank's minimum-density RAID-6 bit-matrix
//                 (w=8), MDS like Reed-Solomon (any 2 losses) but not a
//                 GF(2^8) code; the fewest XORs Jerasure offers for m=2. Same
//                 packet layout as cauchy_good, its own format, Jerasure only.
//   xor           m=1, P0 = D0 ^ ... ^ Dk-1 (the test oracle; byte-identical to
//                 reed_sol_van with m=1).
// The Jerasure, ISA-L and gfni backends produce byte-identical parity for
// reed_sol_van and cauchy, because they are fed the same matrix. gfni is
// fern-ec's own kernel (GF2P8AFFINEQB, one 8x8 bit-matrix per coefficient) on
// CPUs with GFNI and AVX-512BW; AvailableBackends() lists it only there
// (and not with FERN_DISABLE_GFNI set, which tests the fallback).
//
// Buffers: the caller allocates and owns every shard buffer; the coder never
// keeps a pointer past the call. Any alignment is accepted (misaligned buffers
// may take a slower bounce path in some backends). `len` must be a multiple of
// alignment(): 1 for the matrix techniques, 8 * packet_size for cauchy_good
// and liber8tion.
// len == 0 is valid and does nothing.
//
// Thread-safety: a coder is immutable after construction except for its
// decode-table cache, which is internally locked; Encode, Decode and
// ApplyDelta may run concurrently from any number of threads.
//
// Errors: InvalidArgument for misuse (wrong counts, null buffers, bad len),
// DataLoss when more than m shards are missing (never wrong bytes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"
#include "ec/gf256.h"

namespace fern::ec {

// k + m never exceeds this, so a set of shard indices fits in 32 bits.
inline constexpr int kMaxShards = 32;

// A set of shard indices in [0, k+m).
class ShardSet {
 public:
  constexpr ShardSet() = default;
  constexpr explicit ShardSet(uint32_t bits) : bits_(bits) {}
  static constexpr ShardSet FirstN(int n) {
    return ShardSet(n >= 32 ? ~0u : ((1u << n) - 1));
  }
  constexpr bool contains(int i) const { return (bits_ >> i) & 1u; }
  constexpr void insert(int i) { bits_ |= 1u << i; }
  constexpr void erase(int i) { bits_ &= ~(1u << i); }
  int size() const { return __builtin_popcount(bits_); }
  constexpr bool empty() const { return bits_ == 0; }
  constexpr uint32_t bits() const { return bits_; }
  friend constexpr bool operator==(ShardSet a, ShardSet b) { return a.bits_ == b.bits_; }

 private:
  uint32_t bits_ = 0;
};

struct CoderOptions {
  std::string backend = "auto";  // "jerasure", "isal", "gfni", "xor", or "auto"
  std::string technique = "reed_sol_van";
  int k = 4;
  int m = 2;
  // cauchy_good and liber8tion only: bytes per packet; 0 picks the tuned
  // default.
  size_t packet_size = 0;
};

class ErasureCoder {
 public:
  virtual ~ErasureCoder() = default;

  virtual int k() const = 0;
  virtual int m() const = 0;
  virtual std::string_view backend() const = 0;
  virtual std::string_view technique() const = 0;
  // Shard lengths must be multiples of this.
  virtual size_t alignment() const = 0;
  // The m x k coding matrix over GF(2^8) (for the xor technique: one row of
  // ones) when coding_matrix_w() is 1. For bit-matrix codes with no GF(2^8)
  // form (liber8tion) coding_matrix_w() is 8 and the matrix is the
  // (8m) x (8k) GF(2) bit-matrix, entries 0 or 1.
  virtual const gf256::Matrix& coding_matrix() const = 0;
  virtual int coding_matrix_w() const { return 1; }

  // Computes the m parity shards from the k data shards.
  // REQUIRES: data.size() == k, parity.size() == m, no null pointer, parity
  // buffers do not overlap data buffers.
  virtual Status Encode(std::span<const uint8_t* const> data,
                        std::span<uint8_t* const> parity, size_t len) const = 0;

  // Reconstructs every shard in `want` from the shards in `present`.
  // `shards` has k+m entries indexed as in the diagram; entries in `present`
  // are read, entries in `want` are written, others may be null.
  // Returns DataLoss if present has fewer than k shards.
  // REQUIRES: want and present are disjoint.
  virtual Status Decode(std::span<uint8_t* const> shards, ShardSet present,
                        ShardSet want, size_t len) const = 0;

  // Parity-delta update for a change of data shard `data_index`:
  //   parity[j] ^= C[j][data_index] * delta      for j in 0..m-1
  // (for bit-matrix codes: the w x w block of C, applied per packet group)
  // where delta = old ^ new over the changed bytes and parity[j] points at the
  // same byte offset within parity shard j. Afterwards the parity equals a full
  // re-encode of the updated stripe.
  // REQUIRES: delta.size() and the offset of the change within the shard are
  // multiples of alignment(); parity.size() == m.
  virtual Status ApplyDelta(int data_index, std::span<const uint8_t> delta,
                            std::span<uint8_t* const> parity) const = 0;
};

// Encode, then the CRC-32C (crc32c.h) of each of the k data and m parity
// shards into crcs[0..k+m), in one pass: the stripe is encoded a block of
// kCrcEncodeBlock bytes (rounded up to coder.alignment()) at a time and each
// block summed while it is still in cache, so the bytes come from memory once
// instead of twice (1.5x as fast as encoding and then summing a 4+2 stripe of
// 1 MiB shards on a host whose memory copies ~6 GB/s). The parity bytes and
// CRCs equal coder.Encode followed by Crc32c of every shard.
// REQUIRES: as Encode; crcs.size() == k + m.
inline constexpr size_t kCrcEncodeBlock = 64 << 10;
Status EncodeWithCrcs(const ErasureCoder& coder, std::span<const uint8_t* const> data,
                      std::span<uint8_t* const> parity, size_t len, std::span<uint32_t> crcs);

// Builds a coder. backend "auto" picks the fastest backend available for the
// technique: for reed_sol_van and cauchy gfni where the CPU has it, else
// ISA-L when built in, else Jerasure.
StatusOr<std::unique_ptr<ErasureCoder>> MakeErasureCoder(const CoderOptions& options);

// Backends this build and this CPU offer, e.g. {"jerasure", "isal", "gfni", "xor"}.
std::span<const std::string_view> AvailableBackends();

// True when gf-complete's SIMD (SSSE3) region multiply for w=8 is active in
// this process. Without it Jerasure's matrix techniques run ~4x slower.
bool JerasureSimdActive();

}  // namespace fern::ec
