// A local fern-ec cluster for ec_bench workloads: `fern-ec local start` in a
// directory of its own, stopped and removed again by the destructor. Data
// shards live under `root` (tmpfs), parity and metadata under `parity_root`
// (a disk). The fern-ec binaries are found next to the running ec_bench.
#pragma once

#include <cstdint>
#include <string>

namespace fern::bench {

// The directory of the running executable.
std::string BinDir();
// Runs `cmd` with /bin/sh; its exit code, or -1 if it did not exit.
int Sh(const std::string& cmd);

struct LocalClusterOptions {
  std::string root;         // on tmpfs; created, removed at the end
  std::string parity_root;  // on disk; created, removed at the end
  int nodes = 6;
  int k = 4;
  int m = 2;
  uint64_t shard_size = 1 << 20;
  uint64_t data_capacity = 0;    // per node
  uint64_t parity_capacity = 0;  // per node
};

class LocalCluster {
 public:
  explicit LocalCluster(LocalClusterOptions o);
  ~LocalCluster();
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  bool ok() const { return ok_; }
  const std::string& root() const { return o_.root; }
  std::string sock(int node) const { return o_.root + "/node-" + std::to_string(node) + "/sock"; }
  bool Kill(int node);

 private:
  LocalClusterOptions o_;
  bool ok_ = false;
};

}  // namespace fern::bench
