// ec_bench update: in-place updates through the PSW delta path (client op
// UPDATE: sequencer grant, data shards apply, parity deltas, commit on all
// k+m) next to the full rewrite a store without a delta path must do, in
// the same run on the same cluster:
//   delta     --updates updates of --update-size bytes at random offsets,
//             --clients at once, each client through its own node
//   rewrite   a full PUT of the --size file, measured --rounds times; a
//             stripe's rewrite costs PUT time / stripes (PUT writes whole
//             stripes). Without a delta path each update rewrites the
//             stripes it touches: that sum is the rewrite time of the same
//             stripes, next to the delta path's time for the same updates
// and the ratio delta time / rewrite time (below 1: the delta path is
// cheaper). Also reported: rewriting each touched stripe once (all updates
// batched into one rewrite), the floor for a rewrite-based store. Afterwards the file is read back and compared
// with the updates applied locally.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "common/client_protocol.h"
#include "common/flags.h"
#include "local_cluster.h"
#include "workloads.h"

namespace fern::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

int MemfdOf(const void* bytes, uint64_t size, const char* name) {
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return -1;
  if (ftruncate(fd, static_cast<off_t>(size)) != 0 ||
      pwrite(fd, bytes, size, 0) != static_cast<ssize_t>(size)) {
    close(fd);
    return -1;
  }
  return fd;
}

// One UPDATE of [offset, offset+len) to `bytes`; 0 or an errno value.
int SendUpdate(const std::string& sock, const std::string& path, uint64_t version, uint64_t file_size,
               uint64_t offset, const uint8_t* bytes, uint64_t len, std::string* why) {
  std::vector<uint8_t> blob(sizeof(client::UpdateBlobHeader) + sizeof(client::UpdateBlobRange) + len);
  client::UpdateBlobHeader h;
  h.ranges = 1;
  h.file_size = file_size;
  h.base_version = version;
  client::UpdateBlobRange r{offset, len};
  std::memcpy(blob.data(), &h, sizeof h);
  std::memcpy(blob.data() + sizeof h, &r, sizeof r);
  std::memcpy(blob.data() + sizeof h + sizeof r, bytes, len);
  int fd = MemfdOf(blob.data(), blob.size(), "ec-bench-update");
  if (fd < 0) return errno;
  client::Request req = ClientRequest(client::Op::kUpdate, path);
  req.size = blob.size();
  client::Reply reply;
  int rc = ClientRoundtrip(sock, req, fd, &reply, nullptr);
  close(fd);
  if (rc == 0 && reply.err != 0) {
    rc = reply.err;
    *why = reply.message;
  }
  return rc;
}

}  // namespace

int RunUpdate(const std::vector<std::string>& args) {
  ClusterBenchOptions o;
  o.size = uint64_t{256} << 20;
  uint64_t update_size = 4096;
  int updates = 2000;
  int clients = 4;
  if (int rc = ParseClusterBench(
          "update",
          "usage: ec_bench update [--size 256MiB --update-size 4KiB --updates 2000 --clients 4] [flags]\n\n"
          "Starts a local cluster, writes a --size file, then changes it in place with\n"
          "--updates UPDATE requests of --update-size bytes at random offsets from\n"
          "--clients clients at once (client i through node i), and compares with\n"
          "a full PUT of the file in the same run: without a delta path each update\n"
          "rewrites the stripes it touches, at PUT time / stripes each (also shown:\n"
          "all updates folded into one rewrite of every stripe touched). The file is\n"
          "read back and compared with the updates applied locally.",
          args, &o,
          [&](FlagSet& f) {
            f.Size("update-size", &update_size, "bytes per update");
            f.Int("updates", &updates, "updates in total");
            f.Int("clients", &clients, "clients updating at once, each through its own node");
          });
      rc >= 0) {
    return rc;
  }
  if (update_size == 0 || update_size > o.size || updates < 1 || clients < 1 || clients > o.nodes) {
    std::fprintf(stderr, "ec_bench update: need 0 < --update-size <= --size, --updates >= 1, "
                         "1 <= --clients <= --nodes\n");
    return 2;
  }
  std::filesystem::create_directories(o.root);
  AlignedBuffer expect = AllocateTouched(o.size, 0);
  for (uint64_t i = 0; i < o.size; i += 8) {
    uint64_t v = (i * 0x9E3779B97F4A7C15ull) ^ (i >> 7);
    std::memcpy(expect.get() + i, &v, std::min<uint64_t>(8, o.size - i));
  }
  // Removed after the cluster is stopped (destroyed in reverse order): its
  // pid files live under root, and `local stop` needs them.
  struct RemoveAtExit {
    std::string dir;
    ~RemoveAtExit() { std::filesystem::remove_all(dir); }
  } remove_root{o.root};
  LocalCluster cluster(BenchCluster(o, o.m, "ec"));
  if (!cluster.ok()) return std::fprintf(stderr, "ec_bench update: cannot start the cluster\n"), 1;
  const std::string path = "/bench/update";
  int memfd = MemfdOf(expect.get(), o.size, "ec-bench-file");
  if (memfd < 0) return std::fprintf(stderr, "ec_bench update: cannot stage the file\n"), 1;

  // Full rewrites: PUT the whole file; the last one is the version updated.
  std::vector<double> put_s;
  uint64_t version = 0;
  for (int r = 0; r < o.rounds; ++r) {
    client::Request req = ClientRequest(client::Op::kPut, path);
    req.size = o.size;
    req.mode = 0644;
    client::Reply reply;
    const auto t0 = Clock::now();
    int rc = ClientRoundtrip(cluster.sock(0), req, memfd, &reply, nullptr);
    put_s.push_back(Seconds(t0));
    if (rc != 0 || reply.err != 0) {
      std::fprintf(stderr, "ec_bench update: put: %s %s\n", std::strerror(rc ? rc : reply.err), reply.message);
      return 1;
    }
    ++version;
  }
  close(memfd);

  // The updates, drawn up front from a printed seed.
  const uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  struct One {
    uint64_t offset;
    std::vector<uint8_t> bytes;
  };
  std::vector<std::vector<One>> work(clients);
  const uint64_t stripe_bytes = uint64_t(o.k) * o.shard_size;
  std::set<uint64_t> touched;
  uint64_t stripe_writes = 0;  // stripes rewritten if each update rewrote its own
  // Each client owns a disjoint slice of the file, so every update's bytes
  // are known whatever order they commit in.
  const uint64_t slice = o.size / clients;
  if (slice < update_size) return std::fprintf(stderr, "ec_bench update: --size too small for --clients\n"), 2;
  for (int i = 0; i < updates; ++i) {
    const int c = i % clients;
    const uint64_t off = c * slice + rng() % (slice - update_size + 1);
    One u{off, std::vector<uint8_t>(update_size)};
    for (auto& b : u.bytes) b = static_cast<uint8_t>(rng());
    for (uint64_t s = off / stripe_bytes; s <= (off + update_size - 1) / stripe_bytes; ++s) {
      touched.insert(s);
      ++stripe_writes;
    }
    work[c].push_back(std::move(u));
  }
  std::atomic<int> failures{0};
  std::mutex mu;
  std::vector<double> latencies;
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (const One& u : work[c]) {
        std::string why;
        const auto t = Clock::now();
        int rc = SendUpdate(cluster.sock(c), path, version, o.size, u.offset, u.bytes.data(), u.bytes.size(), &why);
        const double s = Seconds(t);
        std::lock_guard<std::mutex> l(mu);
        if (rc != 0) {
          if (failures++ < 5) std::fprintf(stderr, "ec_bench update: %s %s\n", std::strerror(rc), why.c_str());
          continue;
        }
        latencies.push_back(s);
        std::memcpy(expect.get() + u.offset, u.bytes.data(), u.bytes.size());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double delta_s = Seconds(t0);

  // Read back and compare.
  bool verified = failures == 0;
  {
    client::Request req = ClientRequest(client::Op::kGet, path);
    client::Reply reply;
    int fd = -1;
    int rc = ClientRoundtrip(cluster.sock(clients % o.nodes), req, -1, &reply, &fd);
    if (rc != 0 || reply.err != 0 || fd < 0 || reply.size != o.size) {
      std::fprintf(stderr, "ec_bench update: get: %s %s\n", std::strerror(rc ? rc : reply.err), reply.message);
      verified = false;
    } else {
      void* p = mmap(nullptr, o.size, PROT_READ, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED || std::memcmp(p, expect.get(), o.size) != 0) {
        std::fprintf(stderr, "ec_bench update: the file read back differs from the updates applied\n");
        verified = false;
      }
      if (p != MAP_FAILED) munmap(p, o.size);
      if (reply.file_version != version) verified = false;
    }
    if (fd >= 0) close(fd);
  }

  const uint64_t total_stripes = (o.size + stripe_bytes - 1) / stripe_bytes;
  const double put = Median(put_s);
  const double rewrite_s = put * static_cast<double>(stripe_writes) / total_stripes;
  const double rewrite_once_s = put * static_cast<double>(touched.size()) / total_stripes;
  const double changed = static_cast<double>(updates) * update_size;
  std::sort(latencies.begin(), latencies.end());
  const double p50 = latencies.empty() ? 0 : latencies[latencies.size() / 2];
  const double p99 = latencies.empty() ? 0 : latencies[latencies.size() * 99 / 100];
  Json j = ClusterBenchJson("update", o, DescribeCpu().model);
  j.Add("update_bytes", update_size)
      .Add("updates", updates)
      .Add("clients", clients)
      .Add("seed", seed)
      .Add("stripes_touched", static_cast<uint64_t>(touched.size()))
      .Add("stripes_total", total_stripes)
      .Add("delta_seconds", delta_s)
      .Add("delta_updates_per_s", updates / delta_s)
      .Add("delta_mbps", changed / delta_s / 1e6)
      .Add("delta_latency_p50_ms", p50 * 1e3)
      .Add("delta_latency_p99_ms", p99 * 1e3)
      .Add("full_put_seconds", put)
      .Add("full_put_gbps", o.size / put / 1e9)
      .Add("rewrite_same_stripes_seconds", rewrite_s)
      .Add("rewrite_touched_stripes_once_seconds", rewrite_once_s)
      .Add("ratio_delta_vs_rewrite_same_stripes", delta_s / rewrite_s)
      .Add("ratio_delta_vs_rewrite_once", delta_s / rewrite_once_s)
      .Add("failed_updates", failures.load())
      .Add("verified", verified);
  if (o.json) {
    std::printf("%s\n", j.ToString().c_str());
  } else {
    std::printf("update %d nodes k=%d m=%d, %llu MiB file, %d updates of %llu B from %d clients (seed %llu)\n",
                o.nodes, o.k, o.m, static_cast<unsigned long long>(o.size >> 20), updates,
                static_cast<unsigned long long>(update_size), clients, static_cast<unsigned long long>(seed));
    std::printf("  delta path: %.2f s, %.0f updates/s, %.1f MB/s changed, latency p50 %.2f ms p99 %.2f ms\n",
                delta_s, updates / delta_s, changed / delta_s / 1e6, p50 * 1e3, p99 * 1e3);
    std::printf("  full PUT: %.2f s (%.2f GB/s, %llu stripes); each update rewriting its stripes: %.2f s\n", put,
                o.size / put / 1e9, static_cast<unsigned long long>(total_stripes), rewrite_s);
    std::printf("  delta / rewrite of the same stripes = %.3f (below 1: the delta path is cheaper)\n",
                delta_s / rewrite_s);
    std::printf("  (all updates batched into one rewrite of the %zu stripes touched: %.2f s, ratio %.2f)\n",
                touched.size(), rewrite_once_s, delta_s / rewrite_once_s);
    std::printf("  failed updates %d; file read back equals the updates applied: %s\n", failures.load(),
                verified ? "yes" : "NO");
  }
  return verified ? 0 : 1;
}

}  // namespace fern::bench
