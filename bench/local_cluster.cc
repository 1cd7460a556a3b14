#include "local_cluster.h"

#include <sys/wait.h>
#include <unistd.h>


#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "common/flags.h"

namespace fern::bench {

std::string BinDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::filesystem::path(std::string(buf, n)).parent_path().string() : ".";
}

int Sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

int ParseClusterBench(const std::string& name, const std::string& usage,
                      const std::vector<std::string>& args, ClusterBenchOptions* o,
                      const std::function<void(FlagSet&)>& extra) {
  FlagSet f(usage);
  f.Int("nodes", &o->nodes, "daemons");
  f.Int("k", &o->k, "data shards per stripe");
  f.Int("m", &o->m, "parity shards per stripe");
  f.Size("size", &o->size, "file size");
  f.Size("shard-size", &o->shard_size, "bytes per shard");
  f.Int("rounds", &o->rounds, "repetitions of each measurement (the median is reported)");
  f.String("root", &o->root, "cluster directory on tmpfs (default /dev/shm/fern-bench-" + name + "-PID)");
  f.String("disk-dir", &o->disk_dir, "a directory on disk: parity, metadata, the disk baseline");
  f.Bool("cold-parity", &o->cold_parity,
         "measure on fresh parity slabs (the daemons' first writes after their first start) "
         "instead of waiting for the daemons to prepare them");
  f.Bool("json", &o->json, "print one JSON object");
  if (extra) extra(f);
  if (auto s = f.Parse(args); !s.ok()) {
    std::fprintf(stderr, "ec_bench %s: %s\n", name.c_str(), s.ToString().c_str());
    return 2;
  }
  if (f.help_requested()) return std::printf("%s", f.Help().c_str()), 0;
  if (!f.positional().empty()) {
    std::fprintf(stderr, "ec_bench %s: unexpected argument '%s'\n", name.c_str(), f.positional()[0].c_str());
    return 2;
  }
  if (o->nodes < o->k + o->m || o->k < 1 || o->m < 1 || o->rounds < 1 || o->size == 0) {
    std::fprintf(stderr, "ec_bench %s: need m >= 1, nodes >= k+m, rounds >= 1, size > 0\n", name.c_str());
    return 2;
  }
  if (o->root.empty()) o->root = "/dev/shm/fern-bench-" + name + "-" + std::to_string(getpid());
  return -1;
}

uint64_t PerNodeCapacity(const ClusterBenchOptions& o, int m) {
  return 3 * (o.size / o.k + o.shard_size) * (o.k + m) / o.nodes + (64 << 20);
}

Json ClusterBenchJson(const std::string& workload, const ClusterBenchOptions& o, const std::string& cpu) {
  Json j;
  j.Add("workload", workload)
      .Add("cpu", cpu)
      .Add("nodes", o.nodes)
      .Add("k", o.k)
      .Add("m", o.m)
      .Add("size_bytes", o.size)
      .Add("shard_bytes", o.shard_size);
  return j;
}

LocalClusterOptions BenchCluster(const ClusterBenchOptions& o, int m, const std::string& tag) {
  const uint64_t per_node = PerNodeCapacity(o, m);
  return {.root = tag.empty() ? o.root : o.root + "/" + tag,
          .parity_root = o.disk_dir + "/fern-bench-parity-" + std::to_string(getpid()) + "-" + (tag.empty() ? "0" : tag),
          .nodes = o.nodes,
          .k = o.k,
          .m = m,
          .shard_size = o.shard_size,
          .data_capacity = per_node,
          .parity_capacity = m ? per_node : (64 << 20),
          .prepare_parity = !o.cold_parity};
}

LocalCluster::LocalCluster(LocalClusterOptions o) : o_(std::move(o)) {
  ok_ = Sh(BinDir() + "/fern-ec local start --root " + o_.root + " --parity-root " + o_.parity_root +
           " --nodes " + std::to_string(o_.nodes) + " --k " + std::to_string(o_.k) + " --m " +
           std::to_string(o_.m) + " --shard-size " + std::to_string(o_.shard_size) +
           " --data-capacity " + std::to_string(o_.data_capacity) + " --parity-capacity " +
           std::to_string(o_.parity_capacity) + " --replace-after " + std::to_string(o_.replace_after_s) +
           (o_.prepare_parity ? " --prepare-parity=1 --wait-prepared" : " --prepare-parity=0") +
           " >/dev/null") == 0;
}

LocalCluster::~LocalCluster() {
  Sh(BinDir() + "/fern-ec local stop --root " + o_.root + " >/dev/null 2>&1");
  std::filesystem::remove_all(o_.root);
  std::filesystem::remove_all(o_.parity_root);
}

bool LocalCluster::Kill(int node) {
  return Sh(BinDir() + "/fern-ec local kill " + std::to_string(node) + " --root " + o_.root) == 0;
}

}  // namespace fern::bench
