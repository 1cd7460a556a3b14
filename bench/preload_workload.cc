// ec_bench preload: how long an unmodified program spends writing a
// checkpoint through libfernec_preload.so into a local cluster, with sync
// and async commit, next to the same program writing the same file to local
// tmpfs and to local disk with fsync, all in the same run. Also the restart:
// the program reads the checkpoint back through the preload (every byte
// checked) next to reading the tmpfs file.
//
// The program is checkpoint_writer (plain open/write/close, 1 MiB writes);
// it reports the time from its open to its close returning, so process
// start-up is not counted. "async protected" adds the time `fern-ec wait`
// took after the program exited: when the checkpoint survived m losses.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "bench_util.h"
#include "local_cluster.h"
#include "workloads.h"

namespace fern::bench {
namespace {

using Options = ClusterBenchOptions;

// Runs cmd, returns the "seconds S" it printed, or -1 (its stderr passes through).
double Timed(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char line[256];
  double s = -1;
  while (std::fgets(line, sizeof line, p)) {
    if (std::sscanf(line, "seconds %lf", &s) != 1) s = -1;
  }
  const int rc = pclose(p);
  if (rc != 0) {
    std::fprintf(stderr, "ec_bench preload: failed (%d): %s\n", rc, cmd.c_str());
    return -1;
  }
  return s;
}

double WallSeconds(const std::string& cmd) {
  const auto t0 = std::chrono::steady_clock::now();
  if (Sh(cmd) != 0) return -1;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int RunPreload(const std::vector<std::string>& args) {
  Options o;
  if (int rc = ParseClusterBench(
          "preload",
          "usage: ec_bench preload [--size 1GiB --nodes 6 --k 4 --m 2] [flags]\n\n"
          "Starts a local cluster and runs an unmodified program (checkpoint_writer:\n"
          "open, 1 MiB writes, close) under the preload with FERN_EC_COMMIT=sync and\n"
          "=async, the same program on a fresh tmpfs file and on a disk file with\n"
          "fsync, and the restart read through the preload; the program's own time\n"
          "from open to close, median of --rounds, with ratios.",
          args, &o);
      rc >= 0) {
    return rc;
  }
  const std::string tag = std::to_string(getpid());
  const std::string writer = BinDir() + "/checkpoint_writer";
  const std::string size = std::to_string(o.size);
  const std::string tmpfs_file = "/dev/shm/fern-bench-ck-" + tag;
  const std::string disk_file = o.disk_dir + "/fern-bench-ck-" + tag;

  LocalCluster cluster(BenchCluster(o, o.m, ""));
  if (!cluster.ok()) return std::fprintf(stderr, "ec_bench preload: cannot start the cluster\n"), 1;
  const std::string run = BinDir() + "/fern-ec run --root " + o.root + " --node 0 -- ";
  const std::string wait = BinDir() + "/fern-ec wait --root " + o.root + " --node 0";

  std::vector<double> tmpfs_w, disk_w, sync_w, async_w, async_prot, fern_r, tmpfs_r;
  // Pass-through: the same program on unmanaged tmpfs paths with and without
  // the preload loaded (a checkpoint-sized write, and a loop of path calls).
  std::vector<double> plain_big, shim_big, plain_meta, shim_meta;
  const std::string shim = "LD_PRELOAD=" + BinDir() + "/../lib/libfernec_preload.so FERN_EC_SOCKET=" +
                           cluster.sock(0) + " ";
  const std::string meta_dir = "/dev/shm/fern-bench-meta-" + tag;
  std::filesystem::create_directories(meta_dir);
  bool failed = false;
  auto keep = [&](std::vector<double>& v, double x) {
    if (x < 0) failed = true;
    v.push_back(x);
  };
  for (int r = 0; r < o.rounds && !failed; ++r) {
    unlink(tmpfs_file.c_str());
    keep(tmpfs_w, Timed(writer + " write " + tmpfs_file + " " + size));
    keep(tmpfs_r, Timed(writer + " verify " + tmpfs_file + " " + size));
    unlink(tmpfs_file.c_str());
    unlink(disk_file.c_str());
    keep(disk_w, Timed(writer + " write " + disk_file + " " + size + " --fsync"));
    unlink(disk_file.c_str());
    keep(sync_w, Timed(run + writer + " write /fern/bench/ck " + size));
    keep(fern_r, Timed(run + writer + " verify /fern/bench/ck " + size));
    const double closed = Timed("FERN_EC_COMMIT=async " + run + writer + " write /fern/bench/ck " + size);
    keep(async_w, closed);
    const double waited = WallSeconds(wait);
    keep(async_prot, closed < 0 || waited < 0 ? -1 : closed + waited);
    unlink(tmpfs_file.c_str());
    keep(plain_big, Timed(writer + " write " + tmpfs_file + " " + size));
    unlink(tmpfs_file.c_str());
    keep(shim_big, Timed(shim + writer + " write " + tmpfs_file + " " + size));
    unlink(tmpfs_file.c_str());
    keep(plain_meta, Timed(writer + " meta " + meta_dir + " 20000"));
    keep(shim_meta, Timed(shim + writer + " meta " + meta_dir + " 20000"));
  }
  std::filesystem::remove_all(meta_dir);
  // The async version, read back: what a restart would see.
  if (!failed && Timed(run + writer + " verify /fern/bench/ck " + size) < 0) failed = true;

  auto gbps = [&](const std::vector<double>& v) { return o.size / Median(v) / 1e9; };
  const double tw = gbps(tmpfs_w), dw = gbps(disk_w), sw = gbps(sync_w), aw = gbps(async_w),
               ap = gbps(async_prot), fr = gbps(fern_r), tr = gbps(tmpfs_r);
  Json j;
  j.Add("workload", "preload")
      .Add("nodes", o.nodes)
      .Add("k", o.k)
      .Add("m", o.m)
      .Add("size_bytes", o.size)
      .Add("rounds", o.rounds)
      .Add("preload_sync_write_s", Median(sync_w))
      .Add("preload_async_close_s", Median(async_w))
      .Add("preload_async_protected_s", Median(async_prot))
      .Add("tmpfs_write_s", Median(tmpfs_w))
      .Add("disk_fsync_write_s", Median(disk_w))
      .Add("preload_read_s", Median(fern_r))
      .Add("tmpfs_read_s", Median(tmpfs_r))
      .Add("preload_sync_write_gbps", sw)
      .Add("preload_async_write_gbps", aw)
      .Add("preload_async_protected_gbps", ap)
      .Add("tmpfs_write_gbps", tw)
      .Add("disk_fsync_write_gbps", dw)
      .Add("preload_read_gbps", fr)
      .Add("tmpfs_read_gbps", tr)
      .Add("ratio_sync_vs_tmpfs_write", sw / tw)
      .Add("ratio_async_vs_tmpfs_write", aw / tw)
      .Add("ratio_sync_vs_disk_fsync_write", sw / dw)
      .Add("ratio_async_protected_vs_disk_fsync_write", ap / dw)
      .Add("ratio_read_vs_tmpfs_read", fr / tr)
      .Add("passthrough_write_overhead", Median(shim_big) / Median(plain_big) - 1)
      .Add("passthrough_path_calls_overhead", Median(shim_meta) / Median(plain_meta) - 1)
      .Add("target_async_within_1_2x_tmpfs_met", Median(async_w) <= 1.2 * Median(tmpfs_w))
      .Add("target_passthrough_under_2pct_met",
           Median(shim_big) / Median(plain_big) - 1 < 0.02 && Median(shim_meta) / Median(plain_meta) - 1 < 0.02)
      .Add("verified", !failed);
  if (o.json) {
    std::printf("%s\n", j.ToString().c_str());
  } else {
    std::printf("preload: %llu MiB checkpoint, %d nodes k=%d m=%d, program time open..close, median of %d\n",
                static_cast<unsigned long long>(o.size >> 20), o.nodes, o.k, o.m, o.rounds);
    std::printf("  local tmpfs write      %7.3f s  %5.2f GB/s   (baseline)\n", Median(tmpfs_w), tw);
    std::printf("  local disk + fsync     %7.3f s  %5.2f GB/s   (baseline)\n", Median(disk_w), dw);
    std::printf("  fern-ec sync commit    %7.3f s  %5.2f GB/s   %.2fx tmpfs, %.2fx disk+fsync\n",
                Median(sync_w), sw, sw / tw, sw / dw);
    std::printf("  fern-ec async close    %7.3f s  %5.2f GB/s   %.2fx tmpfs\n", Median(async_w), aw, aw / tw);
    std::printf("  fern-ec async protected%7.3f s  %5.2f GB/s   %.2fx disk+fsync\n", Median(async_prot), ap,
                ap / dw);
    std::printf("  restart read: fern-ec %.2f GB/s, tmpfs %.2f GB/s (%.2fx)\n", fr, tr, fr / tr);
    std::printf("  unmanaged paths with the preload loaded: %+.1f%% on a %llu MiB tmpfs write, %+.1f%% on\n"
                "    20000 x (stat, open, write 4 KiB, close, stat, unlink)   (target < 2%%)\n",
                100 * (Median(shim_big) / Median(plain_big) - 1), static_cast<unsigned long long>(o.size >> 20),
                100 * (Median(shim_meta) / Median(plain_meta) - 1));
    std::printf("  async close within 1.2x of tmpfs write time: %s\n",
                Median(async_w) <= 1.2 * Median(tmpfs_w) ? "yes" : "no");
    std::printf("  every read verified: %s\n", failed ? "NO (see errors above)" : "yes");
  }
  return failed ? 1 : 0;
}

}  // namespace fern::bench
