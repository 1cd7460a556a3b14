#include "ec/crc32c.h"

#include <array>
#include <cstring>

#include <nmmintrin.h>

#ifdef FERN_HAVE_ISAL
#include <isa-l/crc.h>
#endif

namespace fern::ec {
namespace {

constexpr uint32_t kPoly = 0x82F63B78;  // reflected Castagnoli polynomial

const std::array<uint32_t, 256>& Table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int j = 0; j < 8; ++j) c = (c >> 1) ^ ((c & 1) ? kPoly : 0);
      t[i] = c;
    }
    return t;
  }();
  return table;
}

__attribute__((target("sse4.2"))) uint32_t HardwareRaw(const uint8_t* p, size_t n, uint32_t c) {
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = _mm_crc32_u64(c64, v);
    p += 8;
    n -= 8;
  }
  c = static_cast<uint32_t>(c64);
  while (n-- > 0) c = _mm_crc32_u8(c, *p++);
  return c;
}

// The CRC register as a vector over GF(2): feeding a zero byte is a linear
// map. zero_bytes[j] is the map for 2^j zero bytes, as 32 columns (column i
// is the image of bit i), built by squaring the map of one zero bit.
struct ZeroOperators {
  uint32_t zero_bytes[64][32];
  static uint32_t Apply(const uint32_t* m, uint32_t v) {
    uint32_t out = 0;
    for (int i = 0; v != 0; ++i, v >>= 1) {
      if (v & 1) out ^= m[i];
    }
    return out;
  }
  static void Square(uint32_t* out, const uint32_t* m) {
    for (int i = 0; i < 32; ++i) out[i] = Apply(m, m[i]);
  }
  ZeroOperators() {
    uint32_t bit[32], two[32], four[32];
    bit[0] = 0x82F63B78u;  // reflected Castagnoli polynomial: bit 0 shifts out
    for (int i = 1; i < 32; ++i) bit[i] = 1u << (i - 1);
    Square(two, bit);
    Square(four, two);
    Square(zero_bytes[0], four);
    for (int j = 1; j < 64; ++j) Square(zero_bytes[j], zero_bytes[j - 1]);
  }
};

bool HaveSse42() {
  static const bool have = __builtin_cpu_supports("sse4.2");
  return have;
}

}  // namespace

uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  // Crc32c(a || b) = Z(crc_a) ^ crc_b, Z = len_b zero bytes fed to the
  // register (the pre- and post-inversions cancel).
  static const ZeroOperators ops;
  for (int j = 0; len_b != 0; ++j, len_b >>= 1) {
    if (len_b & 1) crc_a = ZeroOperators::Apply(ops.zero_bytes[j], crc_a);
  }
  return crc_a ^ crc_b;
}

uint32_t Crc32cTable(std::span<const uint8_t> data, uint32_t crc) {
  const auto& t = Table();
  uint32_t c = ~crc;
  for (uint8_t b : data) c = t[(c ^ b) & 0xff] ^ (c >> 8);
  return ~c;
}

uint32_t Crc32cHardware(std::span<const uint8_t> data, uint32_t crc) {
  if (!HaveSse42()) return Crc32cTable(data, crc);
  return ~HardwareRaw(data.data(), data.size(), ~crc);
}

uint32_t Crc32cIsal(std::span<const uint8_t> data, uint32_t crc) {
#ifdef FERN_HAVE_ISAL
  // crc32_iscsi takes and returns the register without the final inversion.
  return ~crc32_iscsi(const_cast<unsigned char*>(data.data()), static_cast<int>(data.size()),
                      ~crc);
#else
  return Crc32cHardware(data, crc);
#endif
}

uint32_t Crc32c(std::span<const uint8_t> data, uint32_t crc) {
#ifdef FERN_HAVE_ISAL
  // crc32_iscsi takes an int length; feed it in bounded pieces.
  constexpr size_t kPiece = size_t{1} << 30;
  while (data.size() > kPiece) {
    crc = Crc32cIsal(data.first(kPiece), crc);
    data = data.subspan(kPiece);
  }
  return Crc32cIsal(data, crc);
#else
  return Crc32cHardware(data, crc);
#endif
}

}  // namespace fern::ec
