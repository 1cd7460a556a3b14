// CRC-32C (Castagnoli), the checksum in every shard header.
//
// Standard CRC-32C: Crc32c("123456789") == 0xE3069283. Extendable:
// Crc32c(b, Crc32c(a)) == Crc32c(a concatenated with b). Uses ISA-L's
// crc32_iscsi when built with ISA-L, else the SSE4.2 instruction, else a
// table. Thread-safe, no allocation.
#pragma once

#include <cstdint>
#include <span>

namespace fern::ec {

uint32_t Crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

// Crc32c(a concatenated with b) from crc_a = Crc32c(a), crc_b = Crc32c(b)
// and b's length, without the bytes: O(log len_b) 32x32 bit-matrix steps.
// Lets a shard updated in place (PSW) reseal by re-summing only the blocks
// that changed.
uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

// The individual implementations, for tests and benchmarks. Hardware returns
// the table result when the CPU lacks SSE4.2; Isal the best other one when
// built without ISA-L.
uint32_t Crc32cTable(std::span<const uint8_t> data, uint32_t crc = 0);
uint32_t Crc32cHardware(std::span<const uint8_t> data, uint32_t crc = 0);
uint32_t Crc32cIsal(std::span<const uint8_t> data, uint32_t crc = 0);

}  // namespace fern::ec
