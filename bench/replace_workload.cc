// ec_bench replace: how fast a cluster is whole again after a node dies for
// good. A local cluster (--nodes 7: one spare beyond k+m) takes a --size
// file; one node (the last) is SIGKILLed; after --replace-after the
// survivors rebuild its shards on live nodes outside their stripes and move
// them in the records (node_replace.cc). Reported per round (a fresh cluster
// each): the re-placement passes' time (the daemons' own clock, from
// gathering the records to the last move recorded), the shard bytes they
// rebuilt and their rate, next to the same run's baselines on the same
// cluster: the PUT of the file (its rate of shard bytes written, (k+m)/k of
// the file), a healthy read of it, and a degraded read with the node down
// before its shards moved (each of its data shards decoded from k others). Afterwards two
// more nodes are killed and the file must still read back bit-exact.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <regex>
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

// Re-placement as the live nodes report it.
struct ReplaceState {
  bool answered = true;
  bool running = false;
  double passes = 0, planned = 0, moved = 0, failed = 0, bytes = 0, degraded = 0, longest_pass_s = 0;
};

ReplaceState Poll(const LocalCluster& c, int nodes, int dead) {
  ReplaceState r;
  for (int i = 0; i < nodes; ++i) {
    if (i == dead) continue;
    const std::string j = StatusJson(c.sock(i));
    if (j.empty()) {
      r.answered = false;
      continue;
    }
    r.running |= j.find("\"replace\": {\"running\": true") != std::string::npos;
    r.passes += StatusNumber(j, "replace", "passes");
    r.planned += StatusNumber(j, "replace", "planned");
    r.moved += StatusNumber(j, "replace", "moved");
    r.failed += StatusNumber(j, "replace", "failed");
    r.bytes += StatusNumber(j, "replace", "bytes_sent");
    r.degraded += StatusNumber(j, "stripes", "degraded");
    r.longest_pass_s = std::max(r.longest_pass_s, StatusNumber(j, "replace", "last_pass_s"));
  }
  return r;
}

}  // namespace

int RunReplace(const std::vector<std::string>& args) {
  ClusterBenchOptions o;
  o.nodes = 7;
  o.rounds = 1;
  double replace_after = 10;
  if (int rc = ParseClusterBench(
          "replace",
          "usage: ec_bench replace [--nodes 7 --k 4 --m 2 --size 1GiB] [flags]\n\n"
          "Kills one node of a local cluster holding a --size file and measures how\n"
          "long the survivors take to rebuild its shards on live nodes outside their\n"
          "stripes (re-placement, after --replace-after), against the same run's PUT\n"
          "and degraded read of the file; then kills two more nodes and reads the file\n"
          "back. Needs --nodes > k+m. Each round is a fresh cluster.",
          args, &o, [&](FlagSet& f) {
            f.Double("replace-after", &replace_after, "seconds a node stays dead before its shards move");
          });
      rc >= 0) {
    return rc;
  }
  if (o.nodes <= o.k + o.m) return std::fprintf(stderr, "ec_bench replace: needs --nodes > k+m\n"), 2;
  if (o.m < 2) return std::fprintf(stderr, "ec_bench replace: needs m >= 2 (kills three nodes in all)\n"), 2;
  const uint64_t seed = std::random_device{}();
  AlignedBuffer data;
  const int memfd = RandomMemfd(o.size, seed, "ec-bench-replace", &data);
  const int dest = memfd_create("ec-bench-replace-read", MFD_CLOEXEC);
  if (memfd < 0 || dest < 0 || ftruncate(dest, o.size) != 0) {
    std::fprintf(stderr, "ec_bench replace: cannot stage %llu bytes in a memfd\n", static_cast<unsigned long long>(o.size));
    return 1;
  }
  struct RemoveAtExit {  // the rounds' clusters live under it
    std::string dir;
    ~RemoveAtExit() { std::filesystem::remove_all(dir); }
  } remove_root{o.root};
  const int dead = o.nodes - 1;
  std::vector<double> put_gbps, healthy_gbps, degraded_gbps, pass_s, rebuilt_bytes, wait_s;
  bool verified = true;
  for (int round = 0; round < o.rounds && verified; ++round) {
    LocalClusterOptions lo = BenchCluster(o, o.m, "r" + std::to_string(round));
    lo.replace_after_s = replace_after;
    LocalCluster c(lo);
    if (!c.ok()) {
      std::fprintf(stderr, "ec_bench replace: the cluster did not start\n");
      return 1;
    }
    const double put = PutVia(c, 0, "/bench/file", memfd, o.size, "ec_bench replace");
    if (put < 0) return 1;
    put_gbps.push_back(put);
    const double healthy = GetVia(c, 0, "/bench/file", dest, data.get(), o.size, "ec_bench replace");
    if (healthy < 0) return 1;
    healthy_gbps.push_back(healthy);
    const auto killed = Clock::now();
    if (!c.Kill(dead)) return std::fprintf(stderr, "ec_bench replace: kill failed\n"), 1;
    // Degraded read while the node's shards are still where it was.
    const double degraded = GetVia(c, 0, "/bench/file", dest, data.get(), o.size, "ec_bench replace");
    if (degraded < 0) return 1;
    if (Seconds(killed) >= replace_after) {
      std::fprintf(stderr, "ec_bench replace: the degraded read (%.2f GB/s) ended %.1f s after the kill, past --replace-after; raise it\n",
                   degraded, Seconds(killed));
      return 1;
    }
    degraded_gbps.push_back(degraded);
    ReplaceState st;
    for (int i = 0; i < 6000; ++i) {
      st = Poll(c, o.nodes, dead);
      if (st.answered && !st.running && st.degraded == 0 && st.moved > 0 && st.moved == st.planned) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    wait_s.push_back(Seconds(killed));
    if (!(st.degraded == 0 && st.moved > 0 && st.failed == 0)) {
      std::fprintf(stderr, "ec_bench replace: not whole after %.1f s: %.0f moved of %.0f planned, %.0f failed, %.0f degraded\n",
                   Seconds(killed), st.moved, st.planned, st.failed, st.degraded);
      return 1;
    }
    pass_s.push_back(st.longest_pass_s);
    rebuilt_bytes.push_back(st.bytes);
    // Two more nodes down: the file must still read back.
    if (!c.Kill(1) || !c.Kill(2)) return std::fprintf(stderr, "ec_bench replace: kill failed\n"), 1;
    if (GetVia(c, 0, "/bench/file", dest, data.get(), o.size, "ec_bench replace") < 0) verified = false;
  }
  close(memfd);
  close(dest);
  const double put = Median(put_gbps), healthy = Median(healthy_gbps), degraded = Median(degraded_gbps), pass = Median(pass_s),
               bytes = Median(rebuilt_bytes), wait = Median(wait_s);
  const double shard_bytes_put = put * (o.k + o.m) / o.k;  // GB/s of shard bytes a PUT writes
  const double rebuild = pass > 0 ? bytes / pass / 1e9 : 0;
  const CpuInfo cpu = DescribeCpu();
  Json j = ClusterBenchJson("replace", o, cpu.model);
  j.Add("rounds", static_cast<int>(pass_s.size()))
      .Add("seed", seed)
      .Add("replace_after_s", replace_after)
      .Add("rebuilt_bytes", bytes)
      .Add("replace_pass_s", pass)
      .Add("rebuild_gbps", rebuild)
      .Add("kill_to_whole_s", wait)
      .Add("put_gbps", put)
      .Add("put_shard_gbps", shard_bytes_put)
      .Add("healthy_read_gbps", healthy)
      .Add("degraded_read_gbps", degraded)
      .Add("ratio_rebuild_vs_put_shards", rebuild / shard_bytes_put)
      .Add("ratio_rebuild_vs_degraded_read", rebuild / degraded)
      .Add("verified_after_two_more_kills", verified);
  if (o.json) {
    std::printf("%s\n", j.ToString().c_str());
  } else {
    std::printf("replace %d nodes k=%d m=%d, %llu MiB file, node %d killed, median of %zu (cpu: %s)\n", o.nodes, o.k,
                o.m, static_cast<unsigned long long>(o.size >> 20), dead, pass_s.size(), cpu.model.c_str());
    std::printf("  re-placement: %.1f MiB of shards rebuilt elsewhere in %.2f s = %.2f GB/s (whole %.1f s after the kill, "
                "%.0f s of it waiting --replace-after)\n",
                bytes / (1 << 20), pass, rebuild, wait, replace_after);
    std::printf("  same run: PUT %.2f GB/s of file = %.2f GB/s of shards; healthy read %.2f GB/s, degraded read %.2f GB/s\n",
                put, shard_bytes_put, healthy, degraded);
    std::printf("  rebuild / PUT shard rate = %.2f; rebuild / degraded read = %.2f\n", rebuild / shard_bytes_put,
                rebuild / degraded);
    std::printf("  two more nodes killed after: file read back bit-exact: %s\n", verified ? "yes" : "NO");
  }
  return verified ? 0 : 1;
}

}  // namespace fern::bench
