// UcxTransport: Transport over UCX (ucp) active messages.
//
// One UCP context and one worker per transport, owned by the caller's event
// loop thread (UCS_THREAD_MODE_SINGLE). Connections use the sockaddr
// connection manager: a listener on `listen_address:listen_port`, and one
// client endpoint per peer created on first use from the peer's "host:port".
// Replies travel back on the endpoint the request arrived on (UCX reply_ep),
// so a client that does not listen (the CLI, ec_bench) can still make calls.
//
// Every endpoint uses UCP_ERR_HANDLING_MODE_PEER; its error callback marks it
// failed and the next Progress() completes every outstanding call to that
// peer with Unavailable, reports the peer failure, and closes the endpoint; the
// next message to that peer reconnects (a restarted peer on the same port is
// reachable again). Unless the environment says otherwise, UCX keepalive and
// TCP keepalive are lowered so a silently dead peer shows in seconds, and
// UCX_TCP_CM_REUSEADDR=y lets a restarted daemon rebind its port.
//
// Payloads: the AM header carries the Envelope; the payload is the AM data.
// A rendezvous payload is received with ucp_am_recv_data_nbx straight into the
// buffer the kind's PayloadSink returns; an eager one is copied from UCX's
// buffer (small by definition).
//
// Progress is event-driven by default: event_fd() is an epoll fd joining the
// worker's wakeup fd, a timerfd for deadlines and an eventfd for posted work,
// so an idle transport uses no CPU. busy_poll = true never arms the worker.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "transport/transport_core.h"

namespace fern::transport {

struct UcxOptions {
  NodeId self;
  bool listen = true;
  std::string listen_address = "0.0.0.0";
  uint16_t listen_port = 0;  // 0: an ephemeral port, see listen_port()
  std::map<NodeId, std::string> peers;  // node -> "host:port"
  bool busy_poll = false;
  // Event-driven mode: after the last event, keep polling this long before
  // arming the worker and sleeping (see docs/performance.md for the choice).
  Duration spin_before_sleep = std::chrono::microseconds(50);
  Limits limits;
};

class UcxTransport final : public TransportCore {
 public:
  static StatusOr<std::unique_ptr<UcxTransport>> Create(const UcxOptions& options);
  ~UcxTransport() override;

  // The port the listener is bound to (0 when not listening).
  uint16_t listen_port() const;
  void set_spin_before_sleep(Duration d);
  // Adds or changes a peer's address; takes effect at the next connection.
  void SetPeerAddress(NodeId peer, std::string host_port);

  int event_fd() const override;
  void Progress() override;
  void Wait(Duration max) override;
  void Shutdown() override;

  struct Impl;  // UCX handles and callbacks; public for the C callbacks only

 private:
  explicit UcxTransport(const UcxOptions& options);
  void SendFrame(NodeId to, Frame frame, Payload payload, SendCallback done) override;
  // A frame to this node: delivered in process (one copy into the
  // receiver's buffer), replies included; no endpoint, no address needed.
  Status DeliverLocal(Frame frame, Payload payload);
  void Notify() override;

  std::unique_ptr<Impl> impl_;
};

// Parses "host:port" or "[v6-host]:port" (numeric port).
Status ParseHostPort(const std::string& text, std::string* host, uint16_t* port);

}  // namespace fern::transport
