// ec_bench: fern-ec's throughput tool. `ec_bench WORKLOAD [flags]`; every
// workload prints its same-run baselines and the ratios against them.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "workloads.h"

namespace {

constexpr char kUsage[] =
    "usage: ec_bench WORKLOAD [flags]   (ec_bench WORKLOAD --help for its flags)\n\n"
    "Workloads:\n"
    "  encode   erasure-coding encode/decode/delta throughput vs memcpy and the raw\n"
    "           library kernel (Jerasure or ISA-L), same run, same buffers\n"
    "  transport  UcxTransport payload bandwidth between two processes vs\n"
    "           ucx_perftest ucp_am_bw, same run\n"
    "  cluster  write/read/degraded read through a local daemon cluster vs a fresh\n"
    "           tmpfs file, disk + fsync, and the same cluster with m=0, same run\n"
    "  preload  an unmodified program checkpointing through LD_PRELOAD (sync and\n"
    "           async commit) vs the same program on tmpfs and disk + fsync\n"
    "  update   in-place updates through the PSW delta path vs a full rewrite of\n"
    "           the same stripes, same run, same cluster\n"
    "  replace  a node killed for good: its shards rebuilt on live nodes outside\n"
    "           their stripes vs the same run's PUT and degraded read of the file\n"
    "  stuck    a node stopped (SIGSTOP): get and put through gateways that do not\n"
    "           know yet vs healthy, and vs the same cluster without hedging\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::printf("%s", kUsage);
    return argc < 2 ? 2 : 0;
  }
  const std::string workload = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (workload == "encode") return fern::bench::RunEncode(args);
  if (workload == "transport") return fern::bench::RunTransport(args);
  if (workload == "cluster") return fern::bench::RunCluster(args);
  if (workload == "preload") return fern::bench::RunPreload(args);
  if (workload == "update") return fern::bench::RunUpdate(args);
  if (workload == "replace") return fern::bench::RunReplace(args);
  if (workload == "stuck") return fern::bench::RunStuck(args);
  if (workload == "transport-serve") return fern::bench::RunTransportServe(args);
  std::fprintf(stderr, "ec_bench: unknown workload '%s'\n\n%s", workload.c_str(), kUsage);
  return 2;
}
