// transport_peer: a UcxTransport node with the conformance suite's handlers,
// run as a separate process so tests can SIGKILL it mid-transfer.
//   transport_peer --node N --port P [--busy-poll]
// Prints "READY <port>" on stdout once listening; exits on SIGTERM.
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "common/flags.h"
#include "peer_handlers.h"
#include "transport/ucx_transport.h"

namespace {
volatile std::sig_atomic_t g_stop = 0;
}

int main(int argc, char** argv) {
  int node = 2;
  int port = 0;
  bool busy = false;
  fern::FlagSet flags("usage: transport_peer --node N --port P");
  flags.Int("node", &node, "this node's id");
  flags.Int("port", &port, "listen port on 127.0.0.1 (0: ephemeral)");
  flags.Bool("busy-poll", &busy, "busy-poll instead of waiting on the event fd");
  if (auto s = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); !s.ok()) {
    std::fprintf(stderr, "transport_peer: %s\n", s.ToString().c_str());
    return 2;
  }
  std::signal(SIGTERM, [](int) { g_stop = 1; });
  fern::transport::UcxOptions o;
  o.self = fern::NodeId(node);
  o.listen_address = "127.0.0.1";
  o.listen_port = static_cast<uint16_t>(port);
  o.busy_poll = busy;
  auto t = fern::transport::UcxTransport::Create(o);
  if (!t.ok()) {
    std::fprintf(stderr, "transport_peer: %s\n", t.status().ToString().c_str());
    return 1;
  }
  auto state = std::make_shared<fern::transport::testing::PeerState>();
  fern::transport::testing::InstallPeerHandlers(**t, state);
  std::printf("READY %u\n", (*t)->listen_port());
  std::fflush(stdout);
  while (!g_stop) {
    (*t)->Progress();
    (*t)->Wait(std::chrono::milliseconds(200));
  }
  (*t)->Shutdown();
  return 0;
}
