// ec_bench cluster: write and read throughput through a local fern-ec
// cluster (real daemons, UCX over TCP), next to same-run baselines:
//   tmpfs      write a fresh file on /dev/shm, read it back
//   disk       write a fresh file on --disk-dir and fsync, read it back
//   stripe     the same cluster layout with m=0 (striping, no protection)
// and the ratios the issue sets as targets:
//   ec_write / (k/(k+m) * stripe_write)   >= 0.9  (protection costs no more
//                                                  than moving its bytes)
//   ec_write / tmpfs_write                 >= 0.5
//   degraded_read / healthy_read           >= 0.5  (m nodes killed)
// The client is this process talking the client protocol to node 0, with
// the file already in a memfd (the preload's path), so neither a CLI copy
// nor a local file read is measured. Each figure is the median of --rounds.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "common/client_protocol.h"
#include "local_cluster.h"
#include "workloads.h"

namespace fern::bench {
namespace {

using Clock = std::chrono::steady_clock;

using Options = ClusterBenchOptions;

double Seconds(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

// What one put cost: the machine's CPU (every process, and the kernel's
// softirq work no process is charged for), and the part the cluster's
// daemons used, the gateway's own next to all of them; core-s per GiB.
struct PutCpu {
  MachineCpu machine;
  double gateway = -1;  // node 0's daemon, every thread; -1: unknown
  double daemons = -1;  // every daemon, the gateway included
};

// Node `sock`'s hedge counters (fern-ec status --json: hedged_reads):
// put stripes sent again, records gone on to stand-ins, read stripes that
// fetched parity; -1 each when the status cannot be read.
struct Hedges {
  long put_stripes = -1, records = -1, read_stripes = -1;
};
Hedges HedgesOf(const std::string& sock) {
  Hedges h;
  const std::string j = StatusJson(sock);
  if (j.empty()) return h;
  h.put_stripes = static_cast<long>(StatusNumber(j, "hedged_reads", "put_stripes"));
  h.records = static_cast<long>(StatusNumber(j, "hedged_reads", "records"));
  h.read_stripes = static_cast<long>(StatusNumber(j, "hedged_reads", "stripes"));
  return h;
}

class Cluster {
 public:
  Cluster(const Options& o, int m, const std::string& tag) : local_(BenchCluster(o, m, tag)) {
    for (int i = 0; i < o.nodes; ++i) {
      std::ifstream pidfile(local_.root() + "/node-" + std::to_string(i) + "/pid");
      int pid = 0;
      pidfile >> pid;
      pids_.push_back(pid);
    }
  }
  bool ok() const { return local_.ok(); }
  std::string sock(int node) const { return local_.sock(node); }
  bool Kill(int node) { return local_.Kill(node); }
  // Core-seconds each daemon has used so far (-1: unknown).
  std::vector<double> DaemonCpu() const {
    std::vector<double> v;
    for (int pid : pids_) v.push_back(pid > 0 ? ProcessCpuSeconds(pid) : -1);
    return v;
  }

  // GB/s of one put of the memfd, or -1. Appends to *cpu what the put cost
  // the machine, per GiB put.
  double Put(int memfd, uint64_t size, std::vector<PutCpu>* cpu) {
    client::Request req = ClientRequest(client::Op::kPut, "/bench/file");
    req.size = size;
    req.mode = 0644;
    client::Reply reply;
    const std::vector<double> d0 = DaemonCpu();
    const MachineCpu c0 = ReadMachineCpu();
    const auto t0 = Clock::now();
    int rc = ClientRoundtrip(sock(0), req, memfd, &reply, nullptr);
    const double s = Seconds(t0);
    const MachineCpu c1 = ReadMachineCpu();
    const std::vector<double> d1 = DaemonCpu();
    const double gib = static_cast<double>(size) / (1ull << 30);
    if (rc == 0 && reply.err == 0 && c0.busy > 0 && c1.busy >= c0.busy) {
      PutCpu put{{(c1.busy - c0.busy) / gib, (c1.steal - c0.steal) / gib, (c1.idle - c0.idle) / gib,
                  (c1.softirq - c0.softirq) / gib}};
      double all = 0;
      bool known = true;
      for (size_t i = 0; i < d0.size(); ++i) {
        known = known && d0[i] >= 0 && d1[i] >= d0[i];
        all += d1[i] - d0[i];
      }
      if (known) {
        put.gateway = (d1[0] - d0[0]) / gib;
        put.daemons = all / gib;
      }
      cpu->push_back(put);
    }
    if (rc != 0 || reply.err != 0) {
      std::fprintf(stderr, "ec_bench cluster: put: %s %s\n", std::strerror(rc ? rc : reply.err), reply.message);
      return -1;
    }
    return size / s / 1e9;
  }

  // GB/s of one get, the bytes compared with `expect` afterwards, or -1.
  // into < 0: the daemon's reply memfd, filled with fresh pages (what the
  // preload library maps); else GET with kGetInto into that memfd, whose
  // pages the caller already has (as the tmpfs read baseline's buffer).
  double Get(const uint8_t* expect, uint64_t size, int into = -1) {
    client::Request req = ClientRequest(client::Op::kGet, "/bench/file");
    if (into >= 0) req.flags = client::kGetInto;
    client::Reply reply;
    int fd = -1;
    const auto t0 = Clock::now();
    int rc = ClientRoundtrip(sock(0), req, into, &reply, into >= 0 ? nullptr : &fd);
    const double s = Seconds(t0);
    if (into >= 0) fd = dup(into);
    if (rc != 0 || reply.err != 0 || fd < 0 || reply.size != size) {
      std::fprintf(stderr, "ec_bench cluster: get: %s %s\n", std::strerror(rc ? rc : reply.err), reply.message);
      if (fd >= 0) close(fd);
      return -1;
    }
    void* p = size ? mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0) : nullptr;
    const bool same = size == 0 || (p != MAP_FAILED && std::memcmp(p, expect, size) == 0);
    if (p && p != MAP_FAILED) munmap(p, size);
    close(fd);
    if (!same) {
      std::fprintf(stderr, "ec_bench cluster: get returned different bytes\n");
      return -1;
    }
    return size / s / 1e9;
  }

 private:
  LocalCluster local_;
  std::vector<int> pids_;  // node i's daemon, 0 if unknown
};

// Writes `size` bytes to a fresh file in `dir` (optionally fsync), GB/s.
double FileWrite(const std::string& dir, const uint8_t* data, uint64_t size, bool sync) {
  const std::string path = dir + "/fern-bench-file-" + std::to_string(getpid());
  unlink(path.c_str());
  const auto t0 = Clock::now();
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  uint64_t at = 0;
  while (at < size) {
    ssize_t w = write(fd, data + at, std::min<uint64_t>(size - at, 64 << 20));
    if (w <= 0) {
      close(fd);
      return -1;
    }
    at += w;
  }
  if (sync && fsync(fd) != 0) return -1;
  close(fd);
  return size / Seconds(t0) / 1e9;
}

double FileRead(const std::string& dir, uint8_t* out, uint64_t size) {
  const std::string path = dir + "/fern-bench-file-" + std::to_string(getpid());
  const auto t0 = Clock::now();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  uint64_t at = 0;
  while (at < size) {
    ssize_t r = read(fd, out + at, std::min<uint64_t>(size - at, 64 << 20));
    if (r <= 0) break;
    at += r;
  }
  close(fd);
  return at == size ? size / Seconds(t0) / 1e9 : -1;
}

}  // namespace

int RunCluster(const std::vector<std::string>& args) {
  Options o;
  if (int rc = ParseClusterBench(
          "cluster",
          "usage: ec_bench cluster [--nodes 6 --k 4 --m 2 --size 1GiB] [flags]\n\n"
          "Starts a local cluster (fern-ec local start, data on /dev/shm, parity and\n"
          "metadata under --disk-dir), writes and reads --size bytes through node 0,\n"
          "and the same with m=0 through a second cluster kept up alongside (puts of\n"
          "the two alternate, the order flipped each round), then kills m nodes and\n"
          "reads degraded;\n"
          "baselines: a fresh tmpfs file and a disk file + fsync, same run. Reads land\n"
          "in memory the reader already has (GET into a memfd, as the baselines read\n"
          "into a touched buffer); ec_read_reply_memfd_gbps is the healthy read into\n"
          "the daemon's fresh reply memfd instead. Every read is compared with what\n"
          "was written. Each put also counts the machine's CPU time (/proc/stat, all\n"
          "processes: busy, steal and idle core-seconds per GiB) and splits the busy\n"
          "time into the gateway daemon's, the other daemons' and the rest\n"
          "(/proc/PID/stat; softirq shown apart), so EC and m=0 can be\n"
          "compared by what they cost as well as by how fast they ran. Each\n"
          "cluster's daemons first finish preparing their parity slabs (written\n"
          "once in the background after a daemon's first start), unless\n"
          "--cold-parity.",
          args, &o);
      rc >= 0) {
    return rc;
  }
  std::filesystem::create_directories(o.root);

  // The file, in a memfd like the preload stages it, plus a copy to compare.
  AlignedBuffer data = AllocateTouched(o.size, 0);
  for (uint64_t i = 0; i < o.size; i += 8) {
    uint64_t v = (i * 0x9E3779B97F4A7C15ull) ^ (i >> 7);
    std::memcpy(data.get() + i, &v, std::min<uint64_t>(8, o.size - i));
  }
  int memfd = memfd_create("ec-bench-cluster", MFD_CLOEXEC);
  if (memfd < 0 || ftruncate(memfd, o.size) != 0 ||
      pwrite(memfd, data.get(), o.size, 0) != static_cast<ssize_t>(o.size)) {
    std::fprintf(stderr, "ec_bench cluster: cannot stage %llu bytes in a memfd\n",
                 static_cast<unsigned long long>(o.size));
    return 1;
  }
  AlignedBuffer scratch = AllocateTouched(o.size, 1);
  // Where reads land: memory the reader already has, as `scratch` is for
  // the tmpfs and disk reads. Scrubbed between reads, so a read that wrote
  // nothing cannot pass.
  int dest = memfd_create("ec-bench-cluster-read", MFD_CLOEXEC);
  if (dest < 0 || fallocate(dest, 0, 0, static_cast<off_t>(o.size)) != 0) {
    std::fprintf(stderr, "ec_bench cluster: cannot allocate %llu bytes to read into\n",
                 static_cast<unsigned long long>(o.size));
    return 1;
  }
  auto read_into = [&, zeros = std::vector<uint8_t>(1 << 20)](Cluster& c) {
    for (uint64_t at = 0; at < o.size; at += zeros.size()) {
      const size_t n = std::min<uint64_t>(zeros.size(), o.size - at);
      if (pwrite(dest, zeros.data(), n, static_cast<off_t>(at)) != static_cast<ssize_t>(n)) return -1.0;
    }
    return c.Get(data.get(), o.size, dest);
  };

  std::vector<double> tmpfs_w, tmpfs_r, disk_w, disk_r, ec_w, ec_r, ec_r_fresh, deg_r, st_w, st_r;
  std::vector<PutCpu> ec_w_cpu, st_w_cpu;
  bool failed = false;
  auto keep = [&](std::vector<double>& v, double x) {
    if (x < 0) failed = true;
    v.push_back(x);
  };
  for (int r = 0; r < o.rounds; ++r) {
    keep(tmpfs_w, FileWrite("/dev/shm", data.get(), o.size, false));
    keep(tmpfs_r, FileRead("/dev/shm", scratch.get(), o.size));
    unlink(("/dev/shm/fern-bench-file-" + std::to_string(getpid())).c_str());
    keep(disk_w, FileWrite(o.disk_dir, data.get(), o.size, true));
    keep(disk_r, FileRead(o.disk_dir, scratch.get(), o.size));
    unlink((o.disk_dir + "/fern-bench-file-" + std::to_string(getpid())).c_str());
  }
  Hedges hedges;  // the EC gateway's, over the healthy rounds
  {
    // Both clusters stay up together and their puts alternate, the order
    // flipped every round, so that the EC put and the m=0 put it is judged
    // against meet the same state of this shared machine (run one after
    // the other, a drift over the run lands on one of them only).
    Cluster ec(o, o.m, "ec");
    if (!ec.ok()) return std::fprintf(stderr, "ec_bench cluster: cannot start the cluster\n"), 1;
    Cluster st(o, 0, "stripe");
    if (!st.ok()) return std::fprintf(stderr, "ec_bench cluster: cannot start the m=0 cluster\n"), 1;
    for (int r = 0; r < o.rounds; ++r) {
      if (r % 2 == 0) {
        keep(ec_w, ec.Put(memfd, o.size, &ec_w_cpu));
        keep(st_w, st.Put(memfd, o.size, &st_w_cpu));
      } else {
        keep(st_w, st.Put(memfd, o.size, &st_w_cpu));
        keep(ec_w, ec.Put(memfd, o.size, &ec_w_cpu));
      }
      keep(ec_r, read_into(ec));
      keep(st_r, read_into(st));
      keep(ec_r_fresh, ec.Get(data.get(), o.size));
    }
    hedges = HedgesOf(ec.sock(0));
    // Degraded: m nodes other than the gateway die; the first read notices
    // (connection errors), the measured ones run degraded throughout.
    for (int i = 0; i < o.m; ++i) ec.Kill(o.nodes - 1 - i);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    if (read_into(ec) < 0) failed = true;
    for (int r = 0; r < o.rounds; ++r) keep(deg_r, read_into(ec));
  }
  close(memfd);
  close(dest);
  std::filesystem::remove_all(o.root);

  const double k = o.k, n = o.k + o.m;
  const double ecw = Median(ec_w), ecr = Median(ec_r), ecr_fresh = Median(ec_r_fresh), degr = Median(deg_r), stw = Median(st_w),
               str = Median(st_r), tw = Median(tmpfs_w), tr = Median(tmpfs_r), dw = Median(disk_w),
               dr = Median(disk_r);
  const double protection_ratio = ecw / (k / n * stw);
  // The same target in machine CPU: an EC write may cost at most
  // (k+m)/k / 0.9 times the core-seconds of the striping-only write.
  auto median_of = [](const std::vector<PutCpu>& v, auto f) {
    std::vector<double> x;
    for (const PutCpu& c : v) x.push_back(f(c));
    return Median(x);
  };
  auto busy = [](const PutCpu& c) { return c.machine.busy; };
  auto steal = [](const PutCpu& c) { return c.machine.steal; };
  auto idle = [](const PutCpu& c) { return c.machine.idle; };
  auto softirq = [](const PutCpu& c) { return c.machine.softirq; };
  auto gateway = [](const PutCpu& c) { return c.gateway; };
  auto peers = [](const PutCpu& c) { return c.daemons < 0 ? -1 : c.daemons - c.gateway; };
  // Kernel threads (writeback, block completions, ksoftirqd), ec_bench,
  // anything else. (Softirq work done in a process's context is in its
  // system time too: part of the daemons', not added.)
  auto rest = [](const PutCpu& c) { return c.daemons < 0 ? -1 : c.machine.busy - c.daemons; };
  const double ec_busy = median_of(ec_w_cpu, busy), st_busy = median_of(st_w_cpu, busy);
  const double ec_steal = median_of(ec_w_cpu, steal), st_steal = median_of(st_w_cpu, steal);
  const double ec_idle = median_of(ec_w_cpu, idle), st_idle = median_of(st_w_cpu, idle);
  const double ec_gw = median_of(ec_w_cpu, gateway), st_gw = median_of(st_w_cpu, gateway);
  const double ec_peers = median_of(ec_w_cpu, peers), st_peers = median_of(st_w_cpu, peers);
  const double ec_softirq = median_of(ec_w_cpu, softirq), st_softirq = median_of(st_w_cpu, softirq);
  const double ec_rest = median_of(ec_w_cpu, rest), st_rest = median_of(st_w_cpu, rest);
  const double cpu_allowed = n / k / 0.9;
  const double cpu_ratio = st_busy > 0 ? ec_busy / st_busy : 0;
  // The parity the EC write made durable per second, next to the disk's own
  // write + fsync: near 1, the disk bounds the protected write.
  const double parity = ecw * o.m / k;
  // What the protection target asks of the disk: the parity of an EC write
  // at 0.9 x k/(k+m) x the m=0 write. Above 1 x the disk's own write +
  // fsync, the target asks the daemons to make parity durable faster than
  // the disk took plain bytes in the same run.
  const double target_parity = 0.9 * k / n * stw * o.m / k;
  const CpuInfo cpu = DescribeCpu();
  Json j = ClusterBenchJson("cluster", o, cpu.model);
  j.Add("rounds", o.rounds)
      .Add("parity_slabs", o.cold_parity ? "cold" : "prepared")
      .Add("ec_and_stripe_puts", "alternating, both clusters up")
      .Add("ec_write_gbps", ecw)
      .Add("ec_read_gbps", ecr)
      .Add("ec_read_reply_memfd_gbps", ecr_fresh)
      .Add("ec_degraded_read_gbps", degr)
      .Add("stripe_write_gbps", stw)
      .Add("stripe_read_gbps", str)
      .Add("replication", "not offered")
      .Add("tmpfs_write_gbps", tw)
      .Add("tmpfs_read_gbps", tr)
      .Add("disk_fsync_write_gbps", dw)
      .Add("disk_read_gbps", dr)
      .Add("ratio_ec_write_vs_kn_stripe_write", protection_ratio)
      .Add("ec_write_busy_core_s_per_gib", ec_busy)
      .Add("ec_write_steal_core_s_per_gib", ec_steal)
      .Add("ec_write_idle_core_s_per_gib", ec_idle)
      .Add("stripe_write_busy_core_s_per_gib", st_busy)
      .Add("stripe_write_steal_core_s_per_gib", st_steal)
      .Add("stripe_write_idle_core_s_per_gib", st_idle)
      .Add("ec_write_gateway_core_s_per_gib", ec_gw)
      .Add("ec_write_other_daemons_core_s_per_gib", ec_peers)
      .Add("ec_write_softirq_core_s_per_gib", ec_softirq)
      .Add("ec_write_rest_core_s_per_gib", ec_rest)
      .Add("stripe_write_gateway_core_s_per_gib", st_gw)
      .Add("stripe_write_other_daemons_core_s_per_gib", st_peers)
      .Add("stripe_write_softirq_core_s_per_gib", st_softirq)
      .Add("stripe_write_rest_core_s_per_gib", st_rest)
      .Add("ratio_ec_write_busy_vs_stripe_write_busy", cpu_ratio)
      .Add("ec_write_busy_allowed_ratio", cpu_allowed)
      .Add("ratio_ec_write_vs_tmpfs_write", ecw / tw)
      .Add("ratio_ec_write_vs_disk_fsync_write", ecw / dw)
      .Add("ec_parity_write_gbps", parity)
      .Add("ratio_ec_parity_vs_disk_fsync_write", parity / dw)
      .Add("target_protection_parity_gbps", target_parity)
      .Add("ratio_target_parity_vs_disk_fsync_write", target_parity / dw)
      .Add("ratio_ec_read_vs_tmpfs_read", ecr / tr)
      .Add("ratio_degraded_vs_healthy_read", degr / ecr)
      .Add("target_protection_0_9_met", protection_ratio >= 0.9)
      .Add("target_write_vs_tmpfs_0_5_met", ecw / tw >= 0.5)
      .Add("target_degraded_0_5_met", degr / ecr >= 0.5)
      .Add("ec_gateway_hedged_put_stripes", static_cast<int64_t>(hedges.put_stripes))
      .Add("ec_gateway_hedged_records", static_cast<int64_t>(hedges.records))
      .Add("ec_gateway_hedged_read_stripes", static_cast<int64_t>(hedges.read_stripes))
      .Add("verified", !failed);
  if (o.json) {
    std::printf("%s\n", j.ToString().c_str());
  } else {
    std::printf("cluster %d nodes k=%d m=%d, %llu MiB, median of %d (cpu: %s)\n", o.nodes, o.k, o.m,
                static_cast<unsigned long long>(o.size >> 20), o.rounds, cpu.model.c_str());
    std::printf("  EC write %.2f GB/s  read %.2f (into a fresh reply memfd %.2f)  degraded read %.2f\n", ecw, ecr,
                ecr_fresh, degr);
    std::printf("  m=0 write %.2f GB/s  read %.2f\n", stw, str);
    std::printf("  tmpfs write %.2f read %.2f   disk+fsync write %.2f read %.2f\n", tw, tr, dw, dr);
    std::printf("  EC parity made durable %.2f GB/s = %.2f x disk+fsync write\n", parity, parity / dw);
    std::printf("  EC write / (k/(k+m) x stripe write) = %.2f (target 0.9: %.2f GB/s of durable parity = %.2f x "
                "disk+fsync write)\n",
                protection_ratio, target_parity, target_parity / dw);
    std::printf("  machine CPU per GiB written: EC %.2f busy core-s (steal %.2f, idle %.2f), m=0 %.2f (steal %.2f, "
                "idle %.2f); EC / m=0 = %.2f (the target allows %.2f)\n",
                ec_busy, ec_steal, ec_idle, st_busy, st_steal, st_idle, cpu_ratio, cpu_allowed);
    std::printf("  of which (core-s per GiB, medians): gateway daemon EC %.2f m=0 %.2f; the other daemons EC %.2f "
                "m=0 %.2f; the rest (kernel threads, ec_bench) EC %.2f m=0 %.2f; softirq, wherever it ran, EC %.2f "
                "m=0 %.2f\n",
                ec_gw, st_gw, ec_peers, st_peers, ec_rest, st_rest, ec_softirq, st_softirq);
    std::printf("  EC write / tmpfs write = %.2f (target 0.5)\n", ecw / tw);
    std::printf("  EC read / tmpfs read = %.2f\n", ecr / tr);
    std::printf("  degraded / healthy read = %.2f (target 0.5)\n", degr / ecr);
    std::printf("  hedged by the EC gateway in the healthy rounds: %ld put stripes sent again, %ld records, %ld read "
                "stripes (-1: unknown)\n",
                hedges.put_stripes, hedges.records, hedges.read_stripes);
    std::printf("  every read verified: %s\n", failed ? "NO (see errors above)" : "yes");
  }
  return failed ? 1 : 0;
}

}  // namespace fern::bench
