#include "local_cluster.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>


#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

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

namespace {
double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

double PutVia(const LocalCluster& c, int via, const std::string& path, int memfd, uint64_t size, const char* who) {
  client::Request req = ClientRequest(client::Op::kPut, path);
  req.size = size;
  req.mode = 0644;
  client::Reply reply;
  const auto t0 = std::chrono::steady_clock::now();
  int rc = ClientRoundtrip(c.sock(via), req, memfd, &reply, nullptr);
  const double s = SecondsSince(t0);
  if (rc != 0 || reply.err != 0) {
    std::fprintf(stderr, "%s: put %s through node %d: %s %s\n", who, path.c_str(), via,
                 std::strerror(rc ? rc : reply.err), reply.message);
    return -1;
  }
  return size / s / 1e9;
}

double GetVia(const LocalCluster& c, int via, const std::string& path, int into, const uint8_t* expect,
              uint64_t size, const char* who) {
  static const std::vector<uint8_t> zeros(64 << 20);
  for (uint64_t at = 0; at < size; at += zeros.size()) {
    const size_t n = std::min<uint64_t>(zeros.size(), size - at);
    if (pwrite(into, zeros.data(), n, static_cast<off_t>(at)) != static_cast<ssize_t>(n)) {
      std::fprintf(stderr, "%s: cannot clear the read buffer: %s\n", who, std::strerror(errno));
      return -1;
    }
  }
  client::Request req = ClientRequest(client::Op::kGet, path);
  req.flags = client::kGetInto;
  client::Reply reply;
  const auto t0 = std::chrono::steady_clock::now();
  int rc = ClientRoundtrip(c.sock(via), req, into, &reply, nullptr);
  const double s = SecondsSince(t0);
  if (rc != 0 || reply.err != 0 || reply.size != size) {
    std::fprintf(stderr, "%s: get %s through node %d: %s %s\n", who, path.c_str(), via,
                 std::strerror(rc ? rc : reply.err), reply.message);
    return -1;
  }
  void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, into, 0);
  const bool same = p != MAP_FAILED && std::memcmp(p, expect, size) == 0;
  if (p != MAP_FAILED) munmap(p, size);
  if (!same) {
    std::fprintf(stderr, "%s: get %s through node %d returned different bytes\n", who, path.c_str(), via);
    return -1;
  }
  return size / s / 1e9;
}

std::string StatusJson(const std::string& sock) {
  client::Request req = ClientRequest(client::Op::kStatus, "/");
  client::Reply reply;
  int fd = -1;
  if (ClientRoundtrip(sock, req, -1, &reply, &fd) != 0 || reply.err != 0 || fd < 0) {
    if (fd >= 0) close(fd);
    return "";
  }
  std::string out(reply.size, '\0');
  const ssize_t n = pread(fd, out.data(), out.size(), 0);
  close(fd);
  return n == static_cast<ssize_t>(out.size()) ? out : "";
}

double StatusNumber(const std::string& json, const std::string& block, const std::string& key) {
  const size_t at = json.find("\"" + block + "\": {");
  if (at == std::string::npos) return -1;
  const size_t end = json.find('}', at);
  const size_t k = json.find("\"" + key + "\": ", at);
  if (k == std::string::npos || k > end) return -1;
  return std::strtod(json.c_str() + k + key.size() + 4, nullptr);
}

int RandomMemfd(uint64_t size, uint64_t seed, const char* name, AlignedBuffer* data) {
  std::mt19937_64 rng(seed);
  *data = AllocateTouched(size, 0);
  for (uint64_t i = 0; i < size; i += 8) {
    const uint64_t v = rng();
    std::memcpy(data->get() + i, &v, std::min<uint64_t>(8, size - i));
  }
  const int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return -1;
  if (ftruncate(fd, static_cast<off_t>(size)) != 0 ||
      pwrite(fd, data->get(), size, 0) != static_cast<ssize_t>(size)) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace fern::bench
