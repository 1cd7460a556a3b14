#include "transport/ucx_transport.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <ucp/api/ucp.h>

namespace fern::transport {
namespace {

constexpr unsigned kAmId = 0x4645;  // every fern-ec message uses this AM id

Status FromUcs(ucs_status_t s, const std::string& what) {
  if (s == UCS_OK) return Status();
  std::string m = what + ": " + ucs_status_string(s);
  switch (s) {
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_EXCEEDS_LIMIT:
    case UCS_ERR_NO_RESOURCE: return ResourceExhaustedError(m);
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR: return InvalidArgumentError(m);
    case UCS_ERR_TIMED_OUT: return DeadlineExceededError(m);
    case UCS_ERR_CANCELED: return CancelledError(m);
    case UCS_ERR_BUSY: return UnavailableError(m);
    default: return UnavailableError(m);
  }
}

// Defaults that make a dead peer visible in seconds (UCX's keepalive default
// is 20 s) and let a restarted daemon rebind its port. The environment wins.
void SetUcxDefaults() {
  setenv("UCX_KEEPALIVE_INTERVAL", "1s", 0);
  setenv("UCX_KEEPALIVE_NUM_EPS", "inf", 0);
  setenv("UCX_TCP_KEEPIDLE", "2", 0);
  setenv("UCX_TCP_KEEPINTVL", "1", 0);
  setenv("UCX_TCP_KEEPCNT", "3", 0);
  setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
}

Status ResolveSockaddr(const std::string& host, uint16_t port, sockaddr_storage* out,
                       socklen_t* len) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return InvalidArgumentError("cannot resolve '" + host + "': " + gai_strerror(rc));
  }
  std::memcpy(out, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return Status();
}

}  // namespace

Status ParseHostPort(const std::string& text, std::string* host, uint16_t* port) {
  size_t colon;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return InvalidArgumentError("address '" + text + "' is not [host]:port");
    }
    *host = text.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      return InvalidArgumentError("address '" + text + "' is not host:port");
    }
    *host = text.substr(0, colon);
  }
  const std::string p = text.substr(colon + 1);
  char* end = nullptr;
  long v = std::strtol(p.c_str(), &end, 10);
  if (p.empty() || *end != '\0' || v < 0 || v > 65535) {
    return InvalidArgumentError("address '" + text + "' has a bad port");
  }
  *port = static_cast<uint16_t>(v);
  return Status();
}

struct UcxTransport::Impl {
  struct Ep {
    ucp_ep_h handle = nullptr;
    NodeId peer;
    bool peer_known = false;
    bool outgoing = false;
    bool failed = false;
    ucs_status_t error = UCS_OK;
    Impl* impl = nullptr;
  };
  struct SendCtx {
    std::string envelope;
    Payload payload;
    SendCallback done;
    Impl* impl;
  };
  struct RecvCtx {
    Frame frame;
    ReceiveBuffer buffer;
    ReplyRoute route;
    Impl* impl;
  };

  UcxTransport* owner = nullptr;
  UcxOptions options;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  ucp_listener_h listener = nullptr;
  uint16_t port = 0;
  int epoll_fd = -1, worker_fd = -1, timer_fd = -1, notify_fd = -1;
  bool shut_down = false;
  // Syscall economy on the hot path: no eventfd write while Progress() runs
  // (posted work runs before it returns) or while one is already pending,
  // and the timerfd is reprogrammed only when the earliest deadline moves.
  bool in_progress = false;
  bool notified = false;
  std::optional<TimePoint> timer_armed_for;

  std::unordered_map<NodeId, std::shared_ptr<Ep>> out_eps;
  std::unordered_map<ucp_ep_h, std::shared_ptr<Ep>> all_eps;  // outgoing and accepted
  std::vector<ucp_conn_request_h> conn_requests;
  std::vector<std::shared_ptr<Ep>> failed_eps;
  std::unordered_set<SendCtx*> sends_in_flight;
  std::unordered_set<RecvCtx*> recvs_in_flight;

  // ---- callbacks from UCX (run inside ucp_worker_progress) ----

  static void OnConnRequest(ucp_conn_request_h request, void* arg) {
    static_cast<Impl*>(arg)->conn_requests.push_back(request);
  }

  static void OnEpError(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* ep = static_cast<Ep*>(arg);
    if (ep->failed) return;
    ep->failed = true;
    ep->error = status;
    auto it = ep->impl->all_eps.find(ep->handle);
    if (it != ep->impl->all_eps.end()) ep->impl->failed_eps.push_back(it->second);
  }

  static void OnSendDone(void* request, ucs_status_t status, void* user_data) {
    auto* ctx = static_cast<SendCtx*>(user_data);
    Impl* impl = ctx->impl;
    impl->sends_in_flight.erase(ctx);
    if (ctx->done) {
      Status s = FromUcs(status, "send");
      impl->owner->Post([done = std::move(ctx->done), s] { done(s); });
    }
    delete ctx;
    ucp_request_free(request);
  }

  static void OnRecvDone(void* request, ucs_status_t status, size_t, void* user_data) {
    auto* ctx = static_cast<RecvCtx*>(user_data);
    Impl* impl = ctx->impl;
    impl->recvs_in_flight.erase(ctx);
    if (status == UCS_OK) {
      impl->owner->FinishReceive(std::move(ctx->frame), std::move(ctx->buffer),
                                 std::move(ctx->route));
    } else {
      ++impl->owner->mutable_stats().rejected_malformed;
    }
    delete ctx;
    ucp_request_free(request);
  }

  static ucs_status_t OnAm(void* arg, const void* header, size_t header_length, void* data,
                           size_t length, const ucp_am_recv_param_t* param) {
    auto* impl = static_cast<Impl*>(arg);
    UcxTransport* t = impl->owner;
    const bool rndv = param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV;
    auto frame = DecodeFrame({static_cast<const uint8_t*>(header), header_length}, length,
                             t->limits());
    if (!frame.ok()) {
      t->CountRejected(frame.status());
      if (rndv) ucp_am_data_release(impl->worker, data);
      return UCS_OK;
    }
    ucp_ep_h reply_ep =
        (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ? param->reply_ep : nullptr;
    if (reply_ep) {
      auto it = impl->all_eps.find(reply_ep);
      if (it != impl->all_eps.end() && !it->second->peer_known) {
        it->second->peer = frame->src;
        it->second->peer_known = true;
      }
    }
    // Replies are sent from Progress(), never from inside this callback.
    ReplyRoute route = [impl, reply_ep](Frame reply, Payload payload) {
      impl->owner->Post([impl, reply_ep, reply = std::move(reply),
                         payload = std::move(payload)]() mutable {
        impl->SendReply(reply_ep, std::move(reply), std::move(payload));
      });
    };
    auto buffer = t->BeginReceive(*frame, route);
    if (!buffer.ok()) {
      if (rndv) ucp_am_data_release(impl->worker, data);
      return UCS_OK;
    }
    if (!rndv) {
      if (length > 0) std::memcpy(buffer->bytes.data(), data, length);
      t->FinishReceive(std::move(frame).value(), std::move(buffer).value(), std::move(route));
      return UCS_OK;
    }
    auto* ctx = new RecvCtx{std::move(frame).value(), std::move(buffer).value(),
                            std::move(route), impl};
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.recv_am = &OnRecvDone;
    p.user_data = ctx;
    ucs_status_ptr_t r =
        ucp_am_recv_data_nbx(impl->worker, data, ctx->buffer.bytes.data(), length, &p);
    if (r == nullptr) {
      t->FinishReceive(std::move(ctx->frame), std::move(ctx->buffer), std::move(ctx->route));
      delete ctx;
    } else if (UCS_PTR_IS_ERR(r)) {
      ++t->mutable_stats().rejected_malformed;
      delete ctx;
    } else {
      impl->recvs_in_flight.insert(ctx);
    }
    return UCS_OK;
  }

  // ---- owner-thread operations ----

  std::shared_ptr<Ep> Register(ucp_ep_h handle, std::shared_ptr<Ep> ep) {
    ep->handle = handle;
    all_eps[handle] = ep;
    return ep;
  }

  StatusOr<std::shared_ptr<Ep>> Connect(NodeId to) {
    auto it = out_eps.find(to);
    if (it != out_eps.end() && !it->second->failed) return it->second;
    auto addr = options.peers.find(to);
    if (addr == options.peers.end()) {
      return UnavailableError("no address known for " + to.ToString());
    }
    std::string host;
    uint16_t port_num;
    FERN_RETURN_IF_ERROR(ParseHostPort(addr->second, &host, &port_num));
    sockaddr_storage ss{};
    socklen_t len = 0;
    FERN_RETURN_IF_ERROR(ResolveSockaddr(host, port_num, &ss, &len));
    auto ep = std::make_shared<Ep>();
    ep->peer = to;
    ep->peer_known = true;
    ep->outgoing = true;
    ep->impl = this;
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                   UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    p.sockaddr.addr = reinterpret_cast<const sockaddr*>(&ss);
    p.sockaddr.addrlen = len;
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = &OnEpError;
    p.err_handler.arg = ep.get();
    ucp_ep_h handle = nullptr;
    ucs_status_t s = ucp_ep_create(worker, &p, &handle);
    if (s != UCS_OK) return FromUcs(s, "connect to " + to.ToString() + " at " + addr->second);
    out_eps[to] = Register(handle, ep);
    return ep;
  }

  void Accept(ucp_conn_request_h request) {
    auto ep = std::make_shared<Ep>();
    ep->impl = this;
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                   UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.conn_request = request;
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = &OnEpError;
    p.err_handler.arg = ep.get();
    ucp_ep_h handle = nullptr;
    if (ucp_ep_create(worker, &p, &handle) == UCS_OK) Register(handle, ep);
  }

  void SendOn(const std::shared_ptr<Ep>& ep, Frame frame, Payload payload, SendCallback done) {
    auto* ctx = new SendCtx{EncodeFrame(frame), std::move(payload), std::move(done), this};
    ucp_request_param_t p{};
    p.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send = &OnSendDone;
    p.user_data = ctx;
    p.flags = UCP_AM_SEND_FLAG_REPLY;
    ucs_status_ptr_t r =
        ucp_am_send_nbx(ep->handle, kAmId, ctx->envelope.data(), ctx->envelope.size(),
                        ctx->payload.bytes.data(), ctx->payload.bytes.size(), &p);
    if (r != nullptr && !UCS_PTR_IS_ERR(r)) {
      sends_in_flight.insert(ctx);
      return;
    }
    Status s = r == nullptr ? Status() : FromUcs(UCS_PTR_STATUS(r), "send to " + ep->peer.ToString());
    if (ctx->done) owner->Post([done = std::move(ctx->done), s] { done(s); });
    delete ctx;
  }

  void SendReply(ucp_ep_h reply_ep, Frame reply, Payload payload) {
    auto it = reply_ep ? all_eps.find(reply_ep) : all_eps.end();
    if (it == all_eps.end() || it->second->failed) return;  // requester is gone
    ++owner->mutable_stats().messages_sent;
    owner->mutable_stats().payload_bytes_sent += payload.bytes.size();
    SendOn(it->second, std::move(reply), std::move(payload), nullptr);
  }

  void Close(const std::shared_ptr<Ep>& ep) {
    all_eps.erase(ep->handle);
    auto it = out_eps.find(ep->peer);
    if (ep->outgoing && it != out_eps.end() && it->second == ep) out_eps.erase(it);
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t r = ucp_ep_close_nbx(ep->handle, &p);
    if (r != nullptr && !UCS_PTR_IS_ERR(r)) {
      // Completes during later progress; nothing depends on it.
      closing.push_back(r);
    }
    retired.push_back(ep);  // UCX may still call OnEpError with its arg
  }

  void HandleEvents() {
    for (auto* req : std::exchange(conn_requests, {})) Accept(req);
    for (auto& ep : std::exchange(failed_eps, {})) {
      if (!all_eps.count(ep->handle)) continue;
      const Status why = FromUcs(ep->error, "endpoint error");
      Close(ep);
      if (ep->outgoing) owner->FailPeer(ep->peer, why);
    }
    for (auto it = closing.begin(); it != closing.end();) {
      if (ucp_request_check_status(*it) != UCS_INPROGRESS) {
        ucp_request_free(*it);
        it = closing.erase(it);
      } else {
        ++it;
      }
    }
    // A closed endpoint's error callback may fire until its close completes.
    if (closing.empty()) retired.clear();
  }

  void ArmTimer() {
    const std::optional<TimePoint> next = owner->NextDeadline();
    if (next == timer_armed_for) return;
    timer_armed_for = next;
    itimerspec spec{};
    if (auto d = next) {
      auto delta = *d - owner->clock().Now();
      if (delta < Duration(1000)) delta = Duration(1000);
      spec.it_value.tv_sec = delta.count() / 1000000000;
      spec.it_value.tv_nsec = delta.count() % 1000000000;
    }
    timerfd_settime(timer_fd, 0, &spec, nullptr);
  }

  void Drain(int fd) {
    uint64_t v;
    while (read(fd, &v, sizeof v) == sizeof v) {
    }
  }

  std::vector<void*> closing;
  std::vector<std::shared_ptr<Ep>> retired;
};

UcxTransport::UcxTransport(const UcxOptions& options)
    : TransportCore(options.self, options.limits, *RealClock::Get()),
      impl_(std::make_unique<Impl>()) {
  impl_->owner = this;
  impl_->options = options;
}

StatusOr<std::unique_ptr<UcxTransport>> UcxTransport::Create(const UcxOptions& options) {
  SetUcxDefaults();
  std::unique_ptr<UcxTransport> t(new UcxTransport(options));
  Impl& d = *t->impl_;

  ucp_config_t* config = nullptr;
  FERN_RETURN_IF_ERROR(FromUcs(ucp_config_read(nullptr, nullptr, &config), "ucp_config_read"));
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  ucs_status_t s = ucp_init(&params, config, &d.context);
  ucp_config_release(config);
  FERN_RETURN_IF_ERROR(FromUcs(s, "ucp_init"));

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_EVENTS;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  wp.events = UCP_WAKEUP_RX | UCP_WAKEUP_TX;
  FERN_RETURN_IF_ERROR(FromUcs(ucp_worker_create(d.context, &wp, &d.worker), "ucp_worker_create"));
  FERN_RETURN_IF_ERROR(FromUcs(ucp_worker_get_efd(d.worker, &d.worker_fd), "ucp_worker_get_efd"));

  ucp_am_handler_param_t hp{};
  hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                  UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
  hp.id = kAmId;
  hp.flags = UCP_AM_FLAG_WHOLE_MSG;
  hp.cb = &Impl::OnAm;
  hp.arg = &d;
  FERN_RETURN_IF_ERROR(
      FromUcs(ucp_worker_set_am_recv_handler(d.worker, &hp), "ucp_worker_set_am_recv_handler"));

  if (options.listen) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    FERN_RETURN_IF_ERROR(ResolveSockaddr(options.listen_address, options.listen_port, &ss, &len));
    ucp_listener_params_t lp{};
    lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
    lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&ss);
    lp.sockaddr.addrlen = len;
    lp.conn_handler.cb = &Impl::OnConnRequest;
    lp.conn_handler.arg = &d;
    FERN_RETURN_IF_ERROR(FromUcs(ucp_listener_create(d.worker, &lp, &d.listener),
                                 "listen on " + options.listen_address + ":" +
                                     std::to_string(options.listen_port)));
    ucp_listener_attr_t la{};
    la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
    FERN_RETURN_IF_ERROR(FromUcs(ucp_listener_query(d.listener, &la), "ucp_listener_query"));
    d.port = ntohs(la.sockaddr.ss_family == AF_INET6
                       ? reinterpret_cast<sockaddr_in6*>(&la.sockaddr)->sin6_port
                       : reinterpret_cast<sockaddr_in*>(&la.sockaddr)->sin_port);
  }

  d.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  d.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  d.notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (d.epoll_fd < 0 || d.timer_fd < 0 || d.notify_fd < 0) {
    return FromErrno(errno, "create event fds");
  }
  for (int fd : {d.worker_fd, d.timer_fd, d.notify_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(d.epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) return FromErrno(errno, "epoll_ctl");
  }
  return t;
}

UcxTransport::~UcxTransport() {
  Shutdown();
  Retire();
  Impl& d = *impl_;
  for (int fd : {d.epoll_fd, d.timer_fd, d.notify_fd}) {
    if (fd >= 0) close(fd);
  }
  if (d.worker) ucp_worker_destroy(d.worker);
  if (d.context) ucp_cleanup(d.context);
}

uint16_t UcxTransport::listen_port() const { return impl_->port; }

void UcxTransport::set_spin_before_sleep(Duration d) { impl_->options.spin_before_sleep = d; }

void UcxTransport::SetPeerAddress(NodeId peer, std::string host_port) {
  impl_->options.peers[peer] = std::move(host_port);
}

int UcxTransport::event_fd() const { return impl_->epoll_fd; }

void UcxTransport::Notify() {
  Impl& d = *impl_;
  if (d.in_progress || d.notified) return;
  d.notified = true;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(d.notify_fd, &one, sizeof one);
}

void UcxTransport::SendFrame(NodeId to, Frame frame, Payload payload, SendCallback done) {
  Impl& d = *impl_;
  if (d.shut_down) {
    if (done) Post([done = std::move(done)] { done(CancelledError("transport shut down")); });
    return;
  }
  if (to == self()) {
    // The gateway's own shards (1/(k+m) of a put) skipped nothing before:
    // out through TCP loopback and back in, both copies on this process.
    Post([this, frame = std::move(frame), payload = std::move(payload),
          done = std::move(done)]() mutable {
      Status s = DeliverLocal(std::move(frame), std::move(payload));
      if (done) done(s);
    });
    return;
  }
  auto ep = d.Connect(to);
  if (!ep.ok()) {
    if (done) Post([done = std::move(done), s = ep.status()] { done(s); });
    return;
  }
  d.SendOn(*ep, std::move(frame), std::move(payload), std::move(done));
}

Status UcxTransport::DeliverLocal(Frame frame, Payload payload) {
  if (impl_->shut_down) return CancelledError("transport shut down");
  ReplyRoute route = [this](Frame reply, Payload p) {
    Post([this, reply = std::move(reply), p = std::move(p)]() mutable {
      (void)DeliverLocal(std::move(reply), std::move(p));
    });
  };
  auto buffer = BeginReceive(frame, route);
  // Refused: answered (a request) or dropped, as from a peer; the send itself
  // went through.
  if (!buffer.ok()) return Status();
  if (!payload.bytes.empty()) {
    std::memcpy(buffer->bytes.data(), payload.bytes.data(), payload.bytes.size());
  }
  FinishReceive(std::move(frame), std::move(buffer).value(), std::move(route));
  return Status();
}

void UcxTransport::Progress() {
  Impl& d = *impl_;
  if (d.shut_down || d.worker == nullptr) return;
  d.in_progress = true;
  if (d.notified) {
    d.Drain(d.notify_fd);
    d.notified = false;
  }
  if (d.timer_armed_for && *d.timer_armed_for <= clock().Now()) {
    d.Drain(d.timer_fd);
    d.timer_armed_for.reset();  // forces ArmTimer to reprogram
  }
  while (true) {
    while (ucp_worker_progress(d.worker) != 0) {
    }
    d.HandleEvents();
    RunPosted();
    if (!d.failed_eps.empty() || !d.conn_requests.empty() || HasPosted()) continue;
    if (d.options.busy_poll) break;
    // While traffic flows, a short spin is far cheaper than arming the worker
    // and sleeping in epoll for every TCP segment; idle, it costs nothing.
    if (d.options.spin_before_sleep.count() > 0) {
      const TimePoint until = clock().Now() + d.options.spin_before_sleep;
      bool got = false;
      while (clock().Now() < until) {
        if (ucp_worker_progress(d.worker) != 0) {
          got = true;
          break;
        }
      }
      if (got) continue;
    }
    // Arm only when UCX has nothing pending; BUSY means progress again.
    if (ucp_worker_arm(d.worker) == UCS_ERR_BUSY) continue;
    break;
  }
  d.in_progress = false;
  d.ArmTimer();
}

void UcxTransport::Wait(Duration max) {
  Impl& d = *impl_;
  if (d.shut_down || d.options.busy_poll) return;
  epoll_event ev[4];
  const int ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(max).count());
  [[maybe_unused]] int n = epoll_wait(d.epoll_fd, ev, 4, std::max(ms, 0));
}

void UcxTransport::Shutdown() {
  Impl& d = *impl_;
  if (d.shut_down || d.worker == nullptr) return;
  FailAll(CancelledError(self().ToString() + " transport shut down"));
  RunPosted();
  std::vector<std::shared_ptr<Impl::Ep>> eps;
  for (auto& [h, ep] : d.all_eps) eps.push_back(ep);
  for (auto& ep : eps) d.Close(ep);
  if (d.listener) {
    ucp_listener_destroy(d.listener);
    d.listener = nullptr;
  }
  // Let closes, cancelled sends and receives finish, for at most a second.
  const TimePoint until = clock().Now() + std::chrono::seconds(1);
  while ((!d.closing.empty() || !d.sends_in_flight.empty() || !d.recvs_in_flight.empty()) &&
         clock().Now() < until) {
    ucp_worker_progress(d.worker);
    d.HandleEvents();
  }
  RunPosted();
  d.shut_down = true;
}

}  // namespace fern::transport
