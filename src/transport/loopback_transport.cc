#include "transport/loopback_transport.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace fern::transport {

LoopbackNetwork::LoopbackNetwork(uint64_t seed, Limits limits)
    : seed_(seed), limits_(limits), rng_(seed) {}

LoopbackNetwork::~LoopbackNetwork() {
  for (auto& [id, t] : nodes_) t->net_ = nullptr;
}

std::unique_ptr<LoopbackTransport> LoopbackNetwork::AddNode(NodeId id) {
  auto it = nodes_.find(id);
  if (it != nodes_.end()) {
    it->second->Crashed();  // replaced: the old instance is dead
    nodes_.erase(it);
  }
  std::unique_ptr<LoopbackTransport> t(new LoopbackTransport(this, id));
  nodes_[id] = t.get();
  return t;
}

void LoopbackNetwork::Remove(LoopbackTransport* t) {
  auto it = nodes_.find(t->self());
  if (it != nodes_.end() && it->second == t) nodes_.erase(it);
}

bool LoopbackNetwork::Alive(NodeId id) const {
  auto it = nodes_.find(id);
  return it != nodes_.end() && !it->second->dead_;
}

void LoopbackNetwork::Partition(NodeId a, NodeId b) {
  partitions_.insert({a, b});
  partitions_.insert({b, a});
}

void LoopbackNetwork::SetLinkDelay(NodeId from, NodeId to, Duration extra) {
  if (extra > Duration::zero()) {
    link_delays_[{from, to}] = extra;
  } else {
    link_delays_.erase({from, to});
  }
}

void LoopbackNetwork::Crash(NodeId id) {
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return;
  it->second->Crashed();
  std::erase_if(queue_, [id](const InFlight& m) { return m.from == id || m.to == id; });
  for (auto& [other, t] : nodes_) {
    if (other != id && !t->dead_) t->FailPeer(id, UnavailableError(id.ToString() + " crashed"));
  }
}

void LoopbackNetwork::Enqueue(NodeId from, NodeId to, std::string envelope,
                              std::vector<uint8_t> payload) {
  std::uniform_real_distribution<double> u(0, 1);
  if (partitions_.count({from, to}) || u(rng_) < drop_rate_) return;
  const int copies = u(rng_) < duplicate_rate_ ? 2 : 1;
  const auto link = link_delays_.find({from, to});
  for (int c = 0; c < copies; ++c) {
    Duration delay = delay_lo_ + (link != link_delays_.end() ? link->second : Duration::zero());
    if (delay_hi_ > delay_lo_) {
      delay += Duration(std::uniform_int_distribution<int64_t>(
          0, (delay_hi_ - delay_lo_).count())(rng_));
    }
    queue_.push_back(InFlight{from, to, envelope, payload, clock_.Now() + delay});
  }
  if (auto it = nodes_.find(to); it != nodes_.end()) it->second->Notify();
}

void LoopbackNetwork::InjectRaw(NodeId from, NodeId to, std::string envelope,
                                std::vector<uint8_t> payload) {
  queue_.push_back(InFlight{from, to, std::move(envelope), std::move(payload), clock_.Now()});
}

bool LoopbackNetwork::DeliverOne() {
  const TimePoint now = clock_.Now();
  std::vector<size_t> ready;
  for (size_t i = 0; i < queue_.size(); ++i) {
    if (queue_[i].ready_at <= now) ready.push_back(i);
  }
  if (ready.empty()) return false;
  const size_t pick = ready[std::uniform_int_distribution<size_t>(0, ready.size() - 1)(rng_)];
  InFlight m = std::move(queue_[pick]);
  queue_.erase(queue_.begin() + pick);
  auto it = nodes_.find(m.to);
  if (it == nodes_.end() || it->second->dead_) return true;  // lost with the node
  ++delivered_;
  it->second->Receive(m.from, m.envelope, m.payload);
  return true;
}

void LoopbackNetwork::Pump() {
  if (pumping_) return;  // a callback called Progress(): the outer pump continues
  pumping_ = true;
  bool busy = true;
  while (busy) {
    busy = false;
    for (auto& [id, t] : std::map<NodeId, LoopbackTransport*>(nodes_)) {
      if (nodes_.count(id) && nodes_[id] == t && !t->dead_ && t->HasPosted()) {
        t->RunPosted();
        busy = true;
      }
    }
    // Deadlines fire even without posted work.
    for (auto& [id, t] : std::map<NodeId, LoopbackTransport*>(nodes_)) {
      if (nodes_.count(id) && nodes_[id] == t && !t->dead_) {
        auto d = t->NextDeadline();
        if (d && *d <= clock_.Now()) {
          t->RunPosted();
          busy = busy || t->HasPosted();
        }
      }
    }
    if (DeliverOne()) busy = true;
  }
  pumping_ = false;
}

std::optional<TimePoint> LoopbackNetwork::NextEvent() const {
  std::optional<TimePoint> next;
  for (const auto& m : queue_) {
    if (!next || m.ready_at < *next) next = m.ready_at;
  }
  for (const auto& [id, t] : nodes_) {
    if (t->dead_) continue;
    auto d = t->NextDeadline();
    if (d && (!next || *d < *next)) next = d;
  }
  return next;
}

LoopbackTransport::LoopbackTransport(LoopbackNetwork* net, NodeId id)
    : TransportCore(id, net->limits_, net->clock_), net_(net) {
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

LoopbackTransport::~LoopbackTransport() {
  Retire();
  if (net_) net_->Remove(this);
  if (event_fd_ >= 0) close(event_fd_);
}

void LoopbackTransport::Notify() {
  if (event_fd_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(event_fd_, &one, sizeof one);
  }
}

void LoopbackTransport::Crashed() {
  dead_ = true;
  FailAll(UnavailableError(self().ToString() + " crashed"));
}

void LoopbackTransport::SendFrame(NodeId to, Frame frame, Payload payload, SendCallback done) {
  Status status;
  if (dead_ || net_ == nullptr) {
    status = UnavailableError(self().ToString() + " is shut down");
  } else if (!net_->Alive(to)) {
    status = UnavailableError(to.ToString() + " is unreachable");
  } else {
    net_->Enqueue(self(), to, EncodeFrame(frame),
                  std::vector<uint8_t>(payload.bytes.begin(), payload.bytes.end()));
  }
  if (done) Post([done = std::move(done), status] { done(status); });
}

void LoopbackTransport::Receive(NodeId from, const std::string& envelope,
                                const std::vector<uint8_t>& payload) {
  auto frame = DecodeFrame({reinterpret_cast<const uint8_t*>(envelope.data()), envelope.size()},
                           payload.size(), limits());
  if (!frame.ok()) {
    CountRejected(frame.status());
    return;
  }
  ReplyRoute route = [this, to = from](Frame reply, Payload p) {
    SendFrame(to, std::move(reply), std::move(p), nullptr);
  };
  auto buffer = BeginReceive(*frame, route);
  if (!buffer.ok()) return;
  if (!payload.empty()) std::memcpy(buffer->bytes.data(), payload.data(), payload.size());
  FinishReceive(std::move(frame).value(), std::move(buffer).value(), std::move(route));
}

void LoopbackTransport::Progress() {
  if (net_) net_->Pump();
  uint64_t drained;
  [[maybe_unused]] ssize_t n = read(event_fd_, &drained, sizeof drained);
}

void LoopbackTransport::Wait(Duration max) {
  if (net_ == nullptr || dead_) return;
  // Nothing ready: jump the fake clock to the next event, at most `max`.
  auto next = net_->NextEvent();
  const TimePoint now = net_->clock_.Now();
  const TimePoint target = next ? std::min(*next, now + max) : now + max;
  if (target > now) net_->clock_.Advance(target - now);
}

void LoopbackTransport::Shutdown() {
  if (dead_) return;
  dead_ = true;
  FailAll(CancelledError(self().ToString() + " shut down"));
  RunPosted();
}

}  // namespace fern::transport
