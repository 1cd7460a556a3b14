// Helpers shared by fern-ec tests: a printed, overridable seed and byte
// buffers with chosen misalignment.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace fern::testing {

// The run's seed: FERN_TEST_SEED if set, else random. Printed once so a failing
// run can be replayed with FERN_TEST_SEED=<seed>.
inline uint64_t RunSeed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("FERN_TEST_SEED");
    uint64_t s = env ? std::strtoull(env, nullptr, 0) : std::random_device{}();
    std::fprintf(stderr, "[fern-test] FERN_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

// A generator for the current test: the run seed mixed with the test's name, so
// one test replays alone with the same bytes.
inline std::mt19937_64 TestRng() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "";
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  ::testing::Test::RecordProperty("seed", std::to_string(RunSeed()));
  return std::mt19937_64(RunSeed() ^ h);
}

inline void FillRandom(std::mt19937_64& rng, uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
}

inline std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> v(n);
  FillRandom(rng, v.data(), n);
  return v;
}

// A buffer whose data() sits `misalign` bytes past a 64-byte boundary, with
// guard bytes after the end that tests can check for overruns.
class Buffer {
 public:
  static constexpr size_t kGuard = 64;
  explicit Buffer(size_t n, size_t misalign = 0)
      : storage_(n + misalign + 64 + kGuard, 0xA5), size_(n) {
    uintptr_t base = reinterpret_cast<uintptr_t>(storage_.data());
    offset_ = ((64 - base % 64) % 64) + misalign;
  }
  uint8_t* data() { return storage_.data() + offset_; }
  const uint8_t* data() const { return storage_.data() + offset_; }
  size_t size() const { return size_; }
  bool GuardIntact() const {
    for (size_t i = 0; i < kGuard; ++i) {
      if (storage_[offset_ + size_ + i] != 0xA5) return false;
    }
    return true;
  }

 private:
  std::vector<uint8_t> storage_;
  size_t offset_ = 0;
  size_t size_;
};

}  // namespace fern::testing
