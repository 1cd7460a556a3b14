// A local fern-ec cluster for ec_bench workloads: `fern-ec local start` in a
// directory of its own, stopped and removed again by the destructor. Data
// shards live under `root` (tmpfs), parity and metadata under `parity_root`
// (a disk). The fern-ec binaries are found next to the running ec_bench.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "common/client_protocol.h"

namespace fern {
class FlagSet;
}

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
  bool prepare_parity = true;    // false: daemons leave fresh slabs unwritten, nothing waits
  double replace_after_s = 60;   // fern-ec local start --replace-after
};

// What every cluster workload of ec_bench takes on its command line.
struct ClusterBenchOptions {
  int nodes = 6;
  int k = 4;
  int m = 2;
  uint64_t size = uint64_t{1} << 30;
  uint64_t shard_size = 1 << 20;
  int rounds = 3;
  std::string root;  // cluster directory on tmpfs; default /dev/shm/fern-bench-WORKLOAD-PID
  std::string disk_dir = "/var/tmp";
  bool cold_parity = false;  // fresh parity slabs, as right after a daemon's first start
  bool json = false;
};

// Parses the shared flags of workload `name` (usage text `usage`) into o and
// checks them (m >= 1, nodes >= k+m, rounds >= 1, size > 0). Returns -1 to
// go on, or the exit code to return now (0 after --help, 2 for bad usage).
// `extra` adds a workload's own flags. Defaults are o's values on entry.
int ParseClusterBench(const std::string& name, const std::string& usage,
                      const std::vector<std::string>& args, ClusterBenchOptions* o,
                      const std::function<void(FlagSet&)>& extra = nullptr);

// Shard space per node for two kept versions of an o.size file plus the one
// being written, spread over the nodes, with m parity shards per stripe.
uint64_t PerNodeCapacity(const ClusterBenchOptions& o, int m);

// The cluster a workload runs on: o's layout with m parity shards, data
// under o.root/tag (o.root itself when tag is empty), parity and metadata
// under o.disk_dir; PerNodeCapacity on each tier (m = 0: a token parity tier).
// A cluster workload's JSON result, started with what every one reports:
// the workload's name, the CPU, nodes, k, m, size_bytes and shard_bytes.
Json ClusterBenchJson(const std::string& workload, const ClusterBenchOptions& o, const std::string& cpu);

LocalClusterOptions BenchCluster(const ClusterBenchOptions& o, int m, const std::string& tag);

// The client protocol for a bench (client::MakeRequest/Roundtrip) with
// std::string arguments.
inline client::Request ClientRequest(client::Op op, const std::string& path) {
  return client::MakeRequest(op, path.data(), path.size());
}
inline int ClientRoundtrip(const std::string& sock, client::Request& req, int send_fd, client::Reply* reply,
                           int* recv_fd) {
  return client::Roundtrip(sock.c_str(), req, send_fd, reply, recv_fd);
}

class LocalCluster {
 public:
  // Starts the cluster; unless prepare_parity is off, returns once the
  // daemons have prepared their parity slabs (`local start
  // --wait-prepared`), so a workload measures the steady state rather than
  // a fresh slab. ok() is false if either fails.
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

// A PUT of `size` bytes from `memfd` to `path` through node `via`: GB/s,
// or -1 (the reason printed, prefixed with `who`).
double PutVia(const LocalCluster& c, int via, const std::string& path, int memfd, uint64_t size,
              const char* who = "ec_bench");
// A GET of `path` through node `via` into `into` (a memfd of `size` bytes,
// zeroed first, before the clock starts, so bytes a read did not write
// show), compared with `expect`: GB/s, or -1 (the reason printed).
double GetVia(const LocalCluster& c, int via, const std::string& path, int into, const uint8_t* expect,
              uint64_t size, const char* who = "ec_bench");
// One node's status --json, or "" when it does not answer.
std::string StatusJson(const std::string& sock);
// `key` of the object `block` in a status --json document, or -1.
double StatusNumber(const std::string& json, const std::string& block, const std::string& key);

// `size` pseudo-random bytes from `seed` in *data and in a new memfd
// named `name`: the memfd, or -1.
int RandomMemfd(uint64_t size, uint64_t seed, const char* name, AlignedBuffer* data);

}  // namespace fern::bench
