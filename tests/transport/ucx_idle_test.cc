// An idle UcxTransport waits on its event fd: a daemon with nothing to do
// must use (almost) no CPU. Also checks the connection-level errors a user
// sees first: a bad listen address and a busy port.
#include <sys/resource.h>

#include <gtest/gtest.h>

#include "transport/ucx_transport.h"

namespace fern::transport {
namespace {

using namespace std::chrono_literals;

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

TEST(UcxIdle, EventDrivenTransportUsesAlmostNoCpu) {
  setenv("UCX_TLS", "tcp", 0);
  auto t = UcxTransport::Create({.self = NodeId(1), .listen_address = "127.0.0.1"});
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  const double cpu0 = CpuSeconds();
  const auto wall0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - wall0 < 2s) {
    (*t)->Progress();
    (*t)->Wait(500ms);
  }
  const double cpu = CpuSeconds() - cpu0;
  RecordProperty("idle_cpu_seconds_per_2s", std::to_string(cpu));
  EXPECT_LT(cpu, 0.1) << "an idle transport burned " << cpu << " s of CPU in 2 s";
}

TEST(UcxIdle, ClearErrorsForBadListenAddresses) {
  setenv("UCX_TLS", "tcp", 0);
  auto bad = UcxTransport::Create({.self = NodeId(1), .listen_address = "no.such.host.invalid"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("no.such.host.invalid"), std::string_view::npos);
  auto first = UcxTransport::Create({.self = NodeId(1), .listen_address = "127.0.0.1"});
  ASSERT_TRUE(first.ok());
  auto second = UcxTransport::Create(
      {.self = NodeId(2), .listen_address = "127.0.0.1", .listen_port = (*first)->listen_port()});
  EXPECT_FALSE(second.ok()) << "two listeners on one port";
  std::string host;
  uint16_t port;
  EXPECT_TRUE(ParseHostPort("[::1]:80", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_FALSE(ParseHostPort("localhost", &host, &port).ok());
  EXPECT_FALSE(ParseHostPort("h:99999", &host, &port).ok());
}

}  // namespace
}  // namespace fern::transport
