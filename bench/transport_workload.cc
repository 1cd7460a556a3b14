// ec_bench transport: fern-ec's payload bandwidth between two processes over
// UcxTransport, next to ucx_perftest's ucp_am_bw for the same message size and
// UCX transports, measured in the same run, and the ratio.
//
// The client keeps --inflight calls of --size bytes outstanding; the server
// (this binary, re-executed as `ec_bench transport-serve`) receives each
// payload into a preallocated buffer through a PayloadSink and answers with
// an empty reply, as a shard store would acknowledge a shard.
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "common/flags.h"
#include "common/subprocess.h"
#include "fern_wire.pb.h"
#include "transport/ucx_transport.h"
#include "workloads.h"

namespace fern::bench {
namespace {

using namespace std::chrono_literals;
using transport::InMessage;
using transport::OutMessage;
using transport::Payload;
using transport::Responder;

volatile std::sig_atomic_t g_stop = 0;

std::string SelfExe() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, n) : "ec_bench";
}

// fern-ec's bandwidth in GB/s over `seconds`.
double MeasureFern(transport::UcxTransport& t, uint64_t size, int inflight, double seconds,
                   const Payload& payload, bool* failed) {
  uint64_t completed = 0;
  int outstanding = 0;
  bool stop = false;
  std::function<void()> issue = [&] {
    ++outstanding;
    OutMessage m{wire::ECHO, {}, payload};
    t.Call(NodeId(2), std::move(m), {}, [&](StatusOr<InMessage> r) {
      --outstanding;
      if (!r.ok()) {
        std::fprintf(stderr, "ec_bench transport: %s\n", r.status().ToString().c_str());
        *failed = true;
        stop = true;
        return;
      }
      ++completed;
      if (!stop) issue();
    });
  };
  for (int i = 0; i < inflight; ++i) issue();
  const auto t0 = std::chrono::steady_clock::now();
  const auto until = t0 + std::chrono::duration<double>(seconds);
  transport::ProgressUntil(t, [&] { return std::chrono::steady_clock::now() >= until || stop; },
                           std::chrono::duration_cast<Duration>(std::chrono::duration<double>(seconds + 30)));
  const uint64_t done_at_stop = completed;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  transport::ProgressUntil(t, [&] { return outstanding == 0; }, 30s);
  return done_at_stop * static_cast<double>(size) / elapsed / 1e9;
}

// ucx_perftest ucp_am_bw, GB/s; negative when it could not run.
double MeasurePerftest(uint64_t size, uint64_t iterations, int port) {
  Subprocess server;
  if (!server.Start({"ucx_perftest", "-p", std::to_string(port)})) return -1;
  std::this_thread::sleep_for(300ms);
  Subprocess client;
  if (!client.Start({"ucx_perftest", "127.0.0.1", "-p", std::to_string(port), "-t", "ucp_am_bw",
                     "-s", std::to_string(size), "-n", std::to_string(iterations), "-w",
                     std::to_string(std::max<uint64_t>(200, iterations / 5))})) {
    return -1;
  }
  while (auto line = client.ReadLine(120s)) {
    if (line->rfind("Final:", 0) == 0) {
      // Final: iters p50 avg overall bw_avg bw_overall rate_avg rate_overall (bw in MiB/s)
      std::vector<double> cols;
      char* p = line->data() + 6;
      while (*p) {
        char* end;
        double v = std::strtod(p, &end);
        if (end == p) break;
        cols.push_back(v);
        p = end;
      }
      if (cols.size() >= 6) return cols[5] * 1048576.0 / 1e9;
    }
  }
  return -1;
}

}  // namespace

int RunTransportServe(const std::vector<std::string>& args) {
  int port = 0;
  uint64_t size = 1 << 20;
  bool busy = false;
  int spin_us = -1;
  int ring_size = 64;
  FlagSet flags("usage: ec_bench transport-serve --port P --size N (internal)");
  flags.Int("recv-buffers", &ring_size, "destination buffers, used in turn");
  flags.Int("spin-us", &spin_us, "spin before sleeping, microseconds (-1: default)");
  flags.Int("port", &port, "listen port");
  flags.Bool("busy-poll", &busy, "busy-poll the worker");
  flags.Size("size", &size, "payload size to prepare buffers for");
  if (auto s = flags.Parse(args); !s.ok()) {
    std::fprintf(stderr, "ec_bench transport-serve: %s\n", s.ToString().c_str());
    return 2;
  }
  std::signal(SIGTERM, [](int) { g_stop = 1; });
  auto t = transport::UcxTransport::Create(
      {.self = NodeId(2), .listen_address = "127.0.0.1", .listen_port = static_cast<uint16_t>(port),
       .busy_poll = busy});
  if (t.ok() && spin_us >= 0) (*t)->set_spin_before_sleep(std::chrono::microseconds(spin_us));
  if (!t.ok()) {
    std::fprintf(stderr, "ec_bench transport-serve: %s\n", t.status().ToString().c_str());
    return 1;
  }
  // A ring of preallocated, pre-faulted destination buffers.
  ring_size = std::max(1, ring_size);
  auto ring = std::make_shared<std::vector<AlignedBuffer>>();
  for (int i = 0; i < ring_size; ++i) ring->push_back(AllocateTouched(size, 0));
  auto next = std::make_shared<int>(0);
  (*t)->Handle(
      wire::ECHO, [](InMessage, Responder r) { r.Reply(OutMessage{wire::ECHO, {}, {}}); },
      [ring, next, size](NodeId, transport::MessageKind, std::string_view,
                         uint64_t len) -> StatusOr<transport::ReceiveBuffer> {
        if (len > size) return transport::AllocateReceiveBuffer(len);
        uint8_t* p = (*ring)[(*next)++ % ring->size()].get();
        return transport::ReceiveBuffer{std::span<uint8_t>(p, len), ring};
      });
  std::printf("READY %u\n", (*t)->listen_port());
  std::fflush(stdout);
  while (!g_stop) {
    (*t)->Progress();
    (*t)->Wait(200ms);
  }
  return 0;
}

int RunTransport(const std::vector<std::string>& args) {
  uint64_t size = 1 << 20;
  double seconds = 2;
  int inflight = 16;
  int rounds = 3;
  std::string tls = "tcp";
  bool json = false;
  bool perftest = true;
  bool busy = false;
  int spin_us = -1;
  // Like for like with the baseline: ucx_perftest receives every message
  // into one buffer.
  int recv_buffers = 1;
  FlagSet flags(
      "usage: ec_bench transport [flags]\n\n"
      "Payload bandwidth of UcxTransport between two processes on this machine,\n"
      "next to ucx_perftest -t ucp_am_bw with the same size and UCX_TLS, measured\n"
      "in the same run, alternating round by round; medians of --rounds rounds, and\n"
      "the median of the per-round ratios.");
  flags.Size("size", &size, "payload bytes per message");
  flags.Double("seconds", &seconds, "duration of each fern-ec measurement");
  flags.Int("inflight", &inflight, "calls kept outstanding");
  flags.Int("rounds", &rounds, "rounds; the median is reported");
  flags.String("tls", &tls, "UCX_TLS for both fern-ec and ucx_perftest");
  flags.Bool("busy-poll", &busy, "busy-poll both sides instead of waiting on event fds");
  flags.Int("spin-us", &spin_us, "both sides: poll this long after the last event before sleeping (-1: default)");
  flags.Int("recv-buffers", &recv_buffers,
            "server: distinct destination buffers, used in turn (1, as ucx_perftest receives; "
            "a daemon's shards land in distinct slots, as with 64)");
  flags.Bool("perftest", &perftest, "also run ucx_perftest (the baseline)");
  flags.Bool("json", &json, "print one JSON object");
  if (auto s = flags.Parse(args); !s.ok()) {
    std::fprintf(stderr, "ec_bench transport: %s\n", s.ToString().c_str());
    return 2;
  }
  if (flags.help_requested()) {
    std::printf("%s", flags.Help().c_str());
    return 0;
  }
  if (size == 0 || size > (uint64_t{1} << 30) || inflight < 1 || rounds < 1 || seconds <= 0) {
    std::fprintf(stderr, "ec_bench transport: need 0 < --size <= 1GiB, --inflight, --rounds, --seconds > 0\n");
    return 2;
  }
  setenv("UCX_TLS", tls.c_str(), 1);

  Subprocess server;
  if (!server.Start({SelfExe(), "transport-serve", "--port", "0", "--size", std::to_string(size),
                     busy ? "--busy-poll" : "--busy-poll=false", "--spin-us",
                     std::to_string(spin_us), "--recv-buffers", std::to_string(recv_buffers)})) {
    std::fprintf(stderr, "ec_bench transport: cannot start the server process\n");
    return 1;
  }
  auto ready = server.ReadLine(20s);
  if (!ready || ready->rfind("READY ", 0) != 0) {
    std::fprintf(stderr, "ec_bench transport: server did not start\n");
    return 1;
  }
  auto client = transport::UcxTransport::Create(
      {.self = NodeId(1), .listen = false, .peers = {{NodeId(2), "127.0.0.1:" + ready->substr(6)}},
       .busy_poll = busy});
  if (!client.ok()) {
    std::fprintf(stderr, "ec_bench transport: %s\n", client.status().ToString().c_str());
    return 1;
  }
  if (spin_us >= 0) (*client)->set_spin_before_sleep(std::chrono::microseconds(spin_us));
  AlignedBuffer src = AllocateTouched(size, 0x5a);
  Payload payload = Payload::View({src.get(), size}, nullptr);  // outlives every call
  bool failed = false;
  MeasureFern(**client, size, inflight, 0.3, payload, &failed);  // connect and warm up
  std::vector<double> fern_r, perf_r;
  for (int r = 0; r < rounds && !failed; ++r) {
    const double f = MeasureFern(**client, size, inflight, seconds, payload, &failed);
    fern_r.push_back(f);
    if (perftest) {
      // As long as the fern-ec measurement, at perftest's own (higher) rate.
      const uint64_t iters =
          std::max<uint64_t>(1000, static_cast<uint64_t>(1.5 * f * 1e9 * seconds / size));
      // The fern-ec server must not compete for the 2 cores (it spins when busy-polling).
      kill(server.pid(), SIGSTOP);
      perf_r.push_back(MeasurePerftest(size, iters, 20000 + (getpid() % 10000)));
      kill(server.pid(), SIGCONT);
    }
  }
  if (failed) return 1;
  const double fern_g = Median(fern_r);
  const double perf_g = perftest ? Median(perf_r) : -1;
  const bool have_perf = perf_g > 0;
  // The machine drifts between rounds: the ratio is taken within each round.
  std::vector<double> ratios;
  for (size_t i = 0; i < perf_r.size(); ++i) {
    if (perf_r[i] > 0) ratios.push_back(fern_r[i] / perf_r[i]);
  }
  const double ratio = Median(ratios);
  Json j;
  j.Add("workload", "transport")
      .Add("size", size)
      .Add("inflight", inflight)
      .Add("tls", tls)
      .Add("busy_poll", busy)
      .Add("spin_us", spin_us)
      .Add("recv_buffers", recv_buffers)
      .Add("rounds", rounds)
      .Add("fern_gbps", fern_g)
      .Add("ucx_perftest_gbps", have_perf ? perf_g : std::nan(""))
      .Add("fern_vs_perftest", have_perf ? ratio : std::nan(""));
  if (json) {
    std::printf("%s\n", j.ToString().c_str());
  } else {
    std::printf("ec_bench transport: size=%s inflight=%d recv-buffers=%d UCX_TLS=%s (GB/s, median of %d)\n",
                FormatSize(size).c_str(), inflight, recv_buffers, tls.c_str(), rounds);
    if (have_perf) {
      std::printf("  %-34s %8.2f\n", "ucx_perftest ucp_am_bw (baseline)", perf_g);
    } else if (perftest) {
      std::printf("  ucx_perftest did not run (is ucx-utils installed?)\n");
    }
    std::printf("  %-34s %8.2f", "fern-ec UcxTransport", fern_g);
    if (have_perf) std::printf("   %.2fx ucx_perftest (median of per-round ratios)", ratio);
    std::printf("\n");
  }
  if (perftest && !have_perf) return 1;
  return 0;
}

}  // namespace fern::bench
