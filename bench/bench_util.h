// Helpers shared by ec_bench workloads: aligned, pre-faulted buffers, a
// timed multi-thread runner, the median of repeated rounds, and a flat JSON
// object writer. Every workload reports its same-run baselines and ratios.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace fern::bench {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t, FreeDeleter>;

// 4 KiB-aligned, every page touched (filled with `fill`), so page faults are
// not measured.
AlignedBuffer AllocateTouched(size_t bytes, uint8_t fill);

// Runs body(thread, i) for i = 0, 1, 2, ... (wrapping at `items`) on `threads`
// threads until `seconds` have passed; returns GB/s = calls * bytes_per_call /
// elapsed / 1e9, over all threads.
double MeasureGbps(int threads, size_t items, size_t bytes_per_call, double seconds,
                   const std::function<void(int thread, size_t item)>& body);

double Median(std::vector<double> v);

// The CPU the figures came from: a shared cloud machine is not always placed
// on the same host type, and ISA-L picks its kernels by CPU (AVX-512 and
// GFNI or AVX2), so figures from different runs compare only alongside this.
struct CpuInfo {
  std::string model;  // "model name (family F model M)" from /proc/cpuinfo
  bool avx512 = false;  // avx512bw
  bool gfni = false;
};
CpuInfo DescribeCpu();

// The whole machine's CPU time so far, in core-seconds, from /proc/stat:
// busy is user + nice + system + irq + softirq (what every process and the
// kernel spent, the daemons of a local cluster included), steal what the
// hypervisor took. The difference of two snapshots is what a run cost the
// machine, a figure that noise in wall time (waits, a neighbour's load)
// moves far less than it moves throughput. All zero if /proc/stat is
// unreadable.
struct MachineCpu {
  double busy = 0;
  double steal = 0;
  double idle = 0;     // idle + iowait
  double softirq = 0;  // part of busy: network receive, block completions (no process is charged)
};
MachineCpu ReadMachineCpu();
// User + system core-seconds process `pid` (all its threads) has used, or
// -1 when it cannot be read.
double ProcessCpuSeconds(int pid);

// An ordered, flat JSON object.
class Json {
 public:
  Json& Add(const std::string& key, const std::string& value);
  Json& Add(const std::string& key, const char* value) { return Add(key, std::string(value)); }
  Json& Add(const std::string& key, double value);
  Json& Add(const std::string& key, int64_t value);
  Json& Add(const std::string& key, int value) { return Add(key, static_cast<int64_t>(value)); }
  Json& Add(const std::string& key, uint64_t value) { return Add(key, static_cast<int64_t>(value)); }
  Json& Add(const std::string& key, bool value);
  std::string ToString() const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;  // key, encoded value
};

}  // namespace fern::bench
