// Time, passed in rather than read from a global, so a whole cluster can run
// inside one test process on a fake clock. Steady (monotonic) time only:
// deadlines and heartbeats never jump with the wall clock.
#pragma once

#include <atomic>
#include <chrono>

namespace fern {

using Duration = std::chrono::nanoseconds;
using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Duration>;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

// The process's steady clock. Thread-safe.
class RealClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  static RealClock* Get();
};

// Moves only when told. Thread-safe.
class FakeClock final : public Clock {
 public:
  TimePoint Now() const override { return TimePoint(Duration(now_ns_.load())); }
  void Advance(Duration d) { now_ns_ += d.count(); }

 private:
  std::atomic<int64_t> now_ns_{int64_t{1} << 40};  // far from zero, to catch "0 = unset" bugs
};

}  // namespace fern
