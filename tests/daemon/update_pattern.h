// The bytes update_writer writes (tests/daemon/update_writer.cc), shared
// with the test that checks them. Header-only: the writer links nothing.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace fern::testing {

// Iteration i of writer w writes this byte at offset off. With `overlap`
// (writers 0 and 1, iterations < 64): w*64 + (i + off) % 64, never equal to
// the other writer's byte, an earlier iteration's, or an initial byte >= 128.
inline uint8_t UpdatePattern(uint64_t w, uint64_t i, uint64_t off, bool overlap) {
  if (overlap) return static_cast<uint8_t>(w * 64 + (i + off) % 64);
  uint64_t x = (w + 1) * 0x9E3779B97F4A7C15ull ^ (i * 0xBF58476D1CE4E5B9ull) ^ (off * 0x94D049BB133111EBull);
  x ^= x >> 31;
  return static_cast<uint8_t>(x);
}

// The [start, end) runs writer w of n owns in a file of `size` bytes: in
// every 4099-byte block, a slice from 3 bytes past its share's start to 2
// before its end (unaligned, disjoint); with `overlap`, [70000, 90000).
inline std::vector<std::pair<uint64_t, uint64_t>> UpdateOwned(uint64_t w, uint64_t n, uint64_t size, bool overlap) {
  std::vector<std::pair<uint64_t, uint64_t>> owned;
  if (overlap) {
    owned.push_back({70000, 90000});
    return owned;
  }
  constexpr uint64_t kBlock = 4099;
  for (uint64_t b = 0; b * kBlock < size; ++b) {
    uint64_t s = b * kBlock + w * kBlock / n + 3, e = b * kBlock + (w + 1) * kBlock / n - 2;
    if (e > size) e = size;
    if (s < e) owned.push_back({s, e});
  }
  return owned;
}

}  // namespace fern::testing
