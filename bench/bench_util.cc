#include "bench_util.h"

#include "common/json.h"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <unistd.h>

namespace fern::bench {

AlignedBuffer AllocateTouched(size_t bytes, uint8_t fill) {
  size_t rounded = (std::max<size_t>(bytes, 1) + 4095) / 4096 * 4096;
  AlignedBuffer b(static_cast<uint8_t*>(std::aligned_alloc(4096, rounded)));
  if (!b) {
    std::fprintf(stderr, "ec_bench: out of memory allocating %zu bytes\n", rounded);
    std::exit(1);
  }
  std::memset(b.get(), fill, rounded);
  return b;
}

double MeasureGbps(int threads, size_t items, size_t bytes_per_call, double seconds,
                   const std::function<void(int, size_t)>& body) {
  using Clock = std::chrono::steady_clock;
  std::atomic<bool> stop{false};
  std::vector<uint64_t> calls(threads, 0);
  std::barrier start(threads + 1);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      start.arrive_and_wait();
      uint64_t n = 0;
      size_t i = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        body(t, i);
        ++n;
        if (++i == items) i = 0;
      }
      calls[t] = n;
    });
  }
  start.arrive_and_wait();
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : pool) th.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  uint64_t total = 0;
  for (auto c : calls) total += c;
  return static_cast<double>(total) * bytes_per_call / elapsed / 1e9;
}

CpuInfo DescribeCpu() {
  CpuInfo out;
  std::ifstream in("/proc/cpuinfo");
  std::string line, name, family, model;
  auto value = [](const std::string& l) {
    const size_t start = l.find(':') == std::string::npos ? std::string::npos
                                                          : l.find_first_not_of(" \t", l.find(':') + 1);
    return start == std::string::npos ? std::string() : l.substr(start);
  };
  while (std::getline(in, line) && !line.empty()) {  // the first processor is enough
    if (line.rfind("model name", 0) == 0) name = value(line);
    if (line.rfind("cpu family", 0) == 0) family = value(line);
    if (line.rfind("model\t", 0) == 0) model = value(line);
    if (line.rfind("flags", 0) == 0) {
      std::istringstream flags(value(line));
      for (std::string f; flags >> f;) {
        out.avx512 = out.avx512 || f == "avx512bw";
        out.gfni = out.gfni || f == "gfni";
      }
    }
  }
  out.model = name.empty() ? "unknown" : name + " (family " + family + " model " + model + ")";
  return out;
}

MachineCpu ReadMachineCpu() {
  MachineCpu out;
  std::ifstream in("/proc/stat");
  std::string cpu;
  // cpu user nice system idle iowait irq softirq steal ...
  uint64_t f[8] = {};
  if (!(in >> cpu) || cpu != "cpu") return out;
  for (uint64_t& x : f) {
    if (!(in >> x)) return MachineCpu{};
  }
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  out.busy = static_cast<double>(f[0] + f[1] + f[2] + f[5] + f[6]) / tick;
  out.idle = static_cast<double>(f[3] + f[4]) / tick;
  out.steal = static_cast<double>(f[7]) / tick;
  out.softirq = static_cast<double>(f[6]) / tick;
  return out;
}

double ProcessCpuSeconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return -1;
  // pid (comm) state ppid ... : utime and stime are fields 14 and 15, the
  // 12th and 13th after the comm, which may itself hold spaces.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 0; i < 11 && rest >> field; ++i) {
  }
  if (!(rest >> utime >> stime)) return -1;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

Json& Json::Add(const std::string& key, const std::string& value) {
  fields_.emplace_back(key, JsonString(value));
  return *this;
}

Json& Json::Add(const std::string& key, double value) {
  char buf[64];
  if (std::isfinite(value)) {
    std::snprintf(buf, sizeof buf, "%.4g", value);
  } else {
    std::snprintf(buf, sizeof buf, "null");
  }
  fields_.emplace_back(key, buf);
  return *this;
}

Json& Json::Add(const std::string& key, int64_t value) {
  fields_.emplace_back(key, std::to_string(value));
  return *this;
}

Json& Json::Add(const std::string& key, bool value) {
  fields_.emplace_back(key, value ? "true" : "false");
  return *this;
}

std::string Json::ToString() const {
  std::string s = "{";
  for (size_t i = 0; i < fields_.size(); ++i) {
    if (i) s += ", ";
    s += "\"" + fields_[i].first + "\": " + fields_[i].second;
  }
  return s + "}";
}

}  // namespace fern::bench
