// ec_bench stuck: what a node that stops answering costs reads and writes
// through gateways that do not know it yet (hedged reads and writes,
// docs/daemon.md). A local cluster (--nodes 7: stripes can be placed
// without one node) takes one --size file per round; its last node is
// SIGSTOPped (alive in every view, silent: a paused process, a loop
// blocked on a hung disk) and one gateway reads the file back while
// another writes a new one, each in a stop of its own, the node resumed in
// between and before --dead-after could declare it dead. Same-run
// baselines: the healthy put and get on the same cluster, and the same
// stuck get and put on a second cluster whose daemons hedge nothing
// (FERN_EC_READ_HEDGE=0, FERN_EC_WRITE_HEDGE=0): what such a node cost
// before hedging, about one --rpc-timeout (5 s in local clusters). Every
// read and the files written meanwhile are compared with what was written.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "local_cluster.h"
#include "workloads.h"

namespace fern::bench {
namespace {

struct Variant {
  std::vector<double> healthy_put_s, healthy_get_s, stuck_get_s, stuck_put_s;
  long hedged_read_stripes = 0, hedged_put_stripes = 0;
};

double SecondsOf(double gbps, uint64_t size) { return gbps > 0 ? size / 1e9 / gbps : -1; }

// One cluster's rounds. False when a step failed (said on stderr).
bool RunVariant(const ClusterBenchOptions& o, bool hedged, int memfd, int dest, const uint8_t* data, Variant* v) {
  const char* who = "ec_bench stuck";
  if (!hedged) {
    setenv("FERN_EC_READ_HEDGE", "0", 1);
    setenv("FERN_EC_WRITE_HEDGE", "0", 1);
  }
  // Two files a round (BenchCluster sizes the tiers for three versions of one).
  LocalClusterOptions lo = BenchCluster(o, o.m, hedged ? "hedged" : "unhedged");
  const uint64_t scale = std::max<uint64_t>(1, (2 * o.rounds + 2) / 3);
  lo.data_capacity *= scale;
  lo.parity_capacity *= scale;
  LocalCluster c(lo);
  unsetenv("FERN_EC_READ_HEDGE");
  unsetenv("FERN_EC_WRITE_HEDGE");
  if (!c.ok()) return std::fprintf(stderr, "%s: cannot start the cluster\n", who), false;
  const int stuck = o.nodes - 1;
  int pid = 0;
  std::ifstream(c.root() + "/node-" + std::to_string(stuck) + "/pid") >> pid;
  if (pid <= 0) return std::fprintf(stderr, "%s: no pid for node %d\n", who, stuck), false;
  // A stop of its own per measurement; the node catches up before the next.
  auto stopped = [&](auto&& measure) {
    kill(pid, SIGSTOP);
    const double gbps = measure();
    kill(pid, SIGCONT);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    return gbps;
  };
  for (int r = 0; r < o.rounds; ++r) {
    // Two gateways per round, neither one that learned of the node before.
    const int reader = 2 * r, writer = 2 * r + 1;
    const std::string path = "/stuck/f" + std::to_string(r);
    const double put = PutVia(c, reader, path, memfd, o.size, who);
    const double get = GetVia(c, reader, path, dest, data, o.size, who);
    const double stuck_get = stopped([&] { return GetVia(c, reader, path, dest, data, o.size, who); });
    const double stuck_put = stopped([&] { return PutVia(c, writer, path + ".new", memfd, o.size, who); });
    if (put < 0 || get < 0 || stuck_get < 0 || stuck_put < 0) return false;
    if (GetVia(c, stuck, path + ".new", dest, data, o.size, who) < 0) return false;  // whole once it is back
    v->healthy_put_s.push_back(SecondsOf(put, o.size));
    v->healthy_get_s.push_back(SecondsOf(get, o.size));
    v->stuck_get_s.push_back(SecondsOf(stuck_get, o.size));
    v->stuck_put_s.push_back(SecondsOf(stuck_put, o.size));
    const std::string rj = StatusJson(c.sock(reader)), wj = StatusJson(c.sock(writer));
    v->hedged_read_stripes += static_cast<long>(StatusNumber(rj, "hedged_reads", "stripes"));
    v->hedged_put_stripes += static_cast<long>(StatusNumber(wj, "hedged_reads", "put_stripes"));
  }
  return true;
}

}  // namespace

int RunStuck(const std::vector<std::string>& args) {
  ClusterBenchOptions o;
  o.nodes = 7;
  o.size = 256 << 20;
  if (int rc = ParseClusterBench(
          "stuck",
          "usage: ec_bench stuck [--nodes 7 --k 4 --m 2 --size 256MiB --rounds 3] [flags]\n\n"
          "Stops one node of a local cluster (SIGSTOP: alive to its peers, silent) and\n"
          "measures a get and a put through gateways that do not know it yet, against\n"
          "the same run's healthy get and put, and against a second cluster whose\n"
          "daemons hedge nothing (FERN_EC_READ_HEDGE=0 FERN_EC_WRITE_HEDGE=0): what a\n"
          "stuck node cost before hedged reads and writes. Needs --nodes > k+m and\n"
          "two gateways per round besides the stopped node.",
          args, &o);
      rc >= 0) {
    return rc;
  }
  if (o.nodes <= o.k + o.m) return std::fprintf(stderr, "ec_bench stuck: needs --nodes > k+m\n"), 2;
  if (2 * o.rounds > o.nodes - 1) {
    return std::fprintf(stderr, "ec_bench stuck: --rounds %d needs %d gateways besides the stopped node; --nodes %d has %d\n",
                        o.rounds, 2 * o.rounds, o.nodes, o.nodes - 1),
           2;
  }
  const uint64_t seed = std::random_device{}();
  AlignedBuffer data;
  const int memfd = RandomMemfd(o.size, seed, "ec-bench-stuck", &data);
  const int dest = memfd_create("ec-bench-stuck-read", MFD_CLOEXEC);
  if (memfd < 0 || dest < 0 || ftruncate(dest, static_cast<off_t>(o.size)) != 0) {
    std::fprintf(stderr, "ec_bench stuck: cannot stage %llu bytes in a memfd\n", static_cast<unsigned long long>(o.size));
    return 1;
  }
  Variant hedged, unhedged;
  const bool ok = RunVariant(o, true, memfd, dest, data.get(), &hedged) &&
                  RunVariant(o, false, memfd, dest, data.get(), &unhedged);
  close(memfd);
  close(dest);
  std::filesystem::remove_all(o.root);
  if (!ok) return 1;
  const double put = Median(hedged.healthy_put_s), get = Median(hedged.healthy_get_s);
  const double sget = Median(hedged.stuck_get_s), sput = Median(hedged.stuck_put_s);
  const double uget = Median(unhedged.stuck_get_s), uput = Median(unhedged.stuck_put_s);
  const std::string cpu = DescribeCpu().model;
  Json j = ClusterBenchJson("stuck", o, cpu);
  j.Add("seed", static_cast<int64_t>(seed))
      .Add("healthy_put_s", put)
      .Add("healthy_get_s", get)
      .Add("stuck_get_s", sget)
      .Add("stuck_put_s", sput)
      .Add("unhedged_stuck_get_s", uget)
      .Add("unhedged_stuck_put_s", uput)
      .Add("ratio_stuck_vs_healthy_get", sget / get)
      .Add("ratio_stuck_vs_healthy_put", sput / put)
      .Add("ratio_hedged_vs_unhedged_stuck_get", sget / uget)
      .Add("ratio_hedged_vs_unhedged_stuck_put", sput / uput)
      .Add("hedged_read_stripes", static_cast<int64_t>(hedged.hedged_read_stripes))
      .Add("hedged_put_stripes", static_cast<int64_t>(hedged.hedged_put_stripes))
      .Add("verified", true);
  if (o.json) {
    std::printf("%s\n", j.ToString().c_str());
    return 0;
  }
  std::printf("stuck node, %d nodes k=%d m=%d, %llu MiB, median of %d (cpu: %s, seed %llu)\n", o.nodes, o.k, o.m,
              static_cast<unsigned long long>(o.size >> 20), o.rounds, cpu.c_str(),
              static_cast<unsigned long long>(seed));
  std::printf("  healthy:                 get %.2f s  put %.2f s\n", get, put);
  std::printf("  node stopped, hedged:    get %.2f s  put %.2f s  (%.1fx and %.1fx healthy; %ld read stripes, %ld put "
              "stripes hedged)\n",
              sget, sput, sget / get, sput / put, hedged.hedged_read_stripes, hedged.hedged_put_stripes);
  std::printf("  node stopped, no hedges: get %.2f s  put %.2f s  (the same cluster before hedging)\n", uget, uput);
  std::printf("  hedged / unhedged: get %.2f  put %.2f\n", sget / uget, sput / uput);
  std::printf("  every read verified: yes\n");
  return 0;
}

}  // namespace fern::bench
