// fern-ec-daemon: one node of a fern-ec cluster.
//
// Runs a Node (shard service, metadata service, gateway) over a UcxTransport
// listening on this node's hostfile address, with its data shards in
// --data-dir (tmpfs) and parity shards in --parity-dir (disk), and serves
// local clients (the fern-ec CLI; later the preload library) on a Unix
// socket. Single-threaded event loop; exits cleanly on SIGTERM or SIGINT.
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/client_protocol.h"
#include "common/flags.h"
#include "common/json.h"
#include "common/stop_signals.h"
#include "daemon/commit_queue.h"
#include "daemon/node.h"
#include "daemon/reports.h"
#include "daemon/shard_store.h"
#include "daemon/worker_thread.h"
#include "transport/ucx_transport.h"

namespace fern::daemon {
namespace {

struct Options {
  int node_id = -1;
  std::string hostfile;
  std::string data_dir = "/dev/shm/fern-ec/data";
  std::string parity_dir = "/var/lib/fern-ec/parity";
  std::string socket;
  int k = 4;
  int m = 2;
  uint64_t shard_size = 1 << 20;
  uint64_t data_capacity = uint64_t{1} << 30;
  uint64_t parity_capacity = uint64_t{1} << 30;
  uint64_t placement_seed = 0;
  double rpc_timeout_s = 10;
  double read_hedge_s = 0.05;
  double write_hedge_s = 1;
  int spin_us = 50;
  int keep_versions = 2;
  std::string coder = "auto";
  bool encode_inline = false;
  bool prepare_parity = true;
  bool check_reads = true;
  double dead_after_s = 10;
  double replace_after_s = 60;
  int min_shards = 0;
  double orphan_sweep_s = 300;
  double disk_stall_s = -1;  // < 0: 0.4 x rpc_timeout_s
  uint64_t async_limit = uint64_t{4} << 30;
  double drain_s = 60;
};

void Log(int node, const std::string& msg) {
  std::fprintf(stderr, "fern-ec-daemon[node %d]: %s\n", node, msg.c_str());
}

// True when `dir` (created if missing) lives on tmpfs.
bool OnTmpfs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  struct statfs fs {};
  return statfs(dir.c_str(), &fs) == 0 && fs.f_type == TMPFS_MAGIC;
}

struct HostEntry {
  NodeId id;
  std::string address;
  std::string domain;
};

// "ID HOST:PORT [DOMAIN]" per line; '#' starts a comment.
StatusOr<std::vector<HostEntry>> ReadHostfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot read hostfile " + path);
  std::vector<HostEntry> out;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream ls(line);
    long id;
    std::string addr, domain;
    if (!(ls >> id)) continue;  // blank
    if (!(ls >> addr) || id < 0 || id > 0xFFFFFF) {
      return InvalidArgumentError(path + ":" + std::to_string(lineno) +
                                  ": expected 'ID HOST:PORT [DOMAIN]'");
    }
    ls >> domain;
    out.push_back({NodeId(static_cast<uint32_t>(id)), addr, domain});
  }
  if (out.empty()) return InvalidArgumentError("hostfile " + path + " lists no nodes");
  return out;
}

// A client connection; requests in flight keep it (and its fd) alive.
struct Conn {
  int fd;
  Caller caller;  // from SO_PEERCRED at accept
  explicit Conn(int f) : fd(f) {}
  ~Conn() { close(fd); }
  void Send(const client::Reply& r, int pass_fd = -1) {
    (void)client::SendWithFd(fd, &r, sizeof r, pass_fd);
  }
};

client::Reply ErrorReply(const Status& s) {
  client::Reply r;
  r.err = ToErrno(s);
  std::snprintf(r.message, sizeof r.message, "%s", s.ToString().c_str());
  return r;
}

// Absolute, no empty, "." or ".." components, no NUL: the namespace a path
// names is exactly what it says.
Status CheckPath(const char* raw, uint32_t len, std::string* path) {
  if (len == 0 || len >= client::kMaxPath) {
    return InvalidArgumentError("path length " + std::to_string(len) + " out of range")
        .WithErrno(len == 0 ? ENOENT : ENAMETOOLONG);
  }
  path->assign(raw, len);
  if (*path == "/") return Status();
  if (path->find('\0') != std::string::npos) return InvalidArgumentError("path contains NUL");
  if ((*path)[0] != '/') return InvalidArgumentError("path '" + *path + "' is not absolute");
  std::istringstream parts(path->substr(1));
  std::string part;
  while (std::getline(parts, part, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return InvalidArgumentError("path '" + *path + "' is not normalized");
    }
  }
  return Status();
}

// A mapping of a client memfd (read-only for PUT and UPDATE, the GET
// reply's read-write), unmapped with it.
struct Mapping {
  void* p = nullptr;
  size_t n = 0;
  ~Mapping() { Unmap(); }
  void Unmap() {
    if (p && n) munmap(p, n);
    p = nullptr;
  }
};

// A GET reply: a memfd the daemon maps and fills, then seals and hands to
// the client. Unmapped and closed with it.
struct ReplyMemfd {
  int fd = -1;
  Mapping map;
  ~ReplyMemfd() {
    if (fd >= 0) close(fd);
  }
  // Seals the filled memfd so that nobody, the daemon included, can change
  // or resize it once the client holds it. F_SEAL_FUTURE_WRITE (Linux 5.1)
  // is accepted while our own writable mapping exists, so the reply need not
  // wait for munmap (~0.1 s a populated GiB); F_SEAL_WRITE fails with EBUSY
  // until the mapping is gone, and is the fallback on older kernels. Nothing
  // writes through the mapping kept: every fetch into it has completed.
  Status Seal() {
    constexpr int kFixed = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
    if (map.p && fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | kFixed) == 0) return Status::Ok();
    map.Unmap();
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | kFixed) != 0) return FromErrno(errno, "seal the GET memfd");
    return Status::Ok();
  }
};

// A read fills a fresh memfd for its reply, 4 KiB page by page unless the
// kernel gives shared memory huge pages where asked (the daemon asks with
// MADV_HUGEPAGE). Off by Debian's default; reads ran 2-3x faster with it
// here (docs/performance.md). Machine-wide, so the operator's choice: this
// says so once at startup, or returns "" when it is on or cannot be read.
std::string ShmemHugePagesNote() {
  const char* knob = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
  std::ifstream in(knob);
  std::string text;
  if (!std::getline(in, text)) return "";
  const size_t open = text.find('['), close = text.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return "";
  const std::string mode = text.substr(open + 1, close - open - 1);
  if (mode != "never" && mode != "deny") return "";
  return std::string("note: ") + knob + " is '" + mode +
         "': read replies are filled 4 KiB page by page; 'advise' (as root) made reads 2-3x faster "
         "in docs/performance.md";
}

class Daemon {
 public:
  Daemon(Options o) : o_(std::move(o)) {}

  Status Start() {
    FERN_ASSIGN_OR_RETURN(auto hosts, ReadHostfile(o_.hostfile));
    std::vector<placement::NodeInfo> infos;
    transport::UcxOptions uo;
    uo.self = NodeId(o_.node_id);
    bool found = false;
    for (auto& h : hosts) {
      infos.push_back({h.id, h.domain, true});
      uo.peers[h.id] = h.address;
      if (h.id == uo.self) {
        found = true;
        std::string host;
        uint16_t port;
        FERN_RETURN_IF_ERROR(transport::ParseHostPort(h.address, &host, &port));
        uo.listen_address = host;
        uo.listen_port = port;
      }
    }
    if (!found) {
      return InvalidArgumentError("node " + std::to_string(o_.node_id) + " is not in " + o_.hostfile);
    }
    FERN_ASSIGN_OR_RETURN(auto view, placement::ClusterView::Make(infos));
    FERN_ASSIGN_OR_RETURN(data_, OpenFileShardStore({.dir = o_.data_dir,
                                                     .capacity = o_.data_capacity,
                                                     .slot_capacity = o_.shard_size}));
    // Populating a disk-backed slab would read it all at startup; on tmpfs it
    // is cheap and writes into unpopulated pages run ~7x slower (NOTES-style
    // probe in docs/performance.md), so populate exactly when on tmpfs.
    FERN_ASSIGN_OR_RETURN(parity_, OpenFileShardStore({.dir = o_.parity_dir,
                                                       .capacity = o_.parity_capacity,
                                                       .slot_capacity = o_.shard_size,
                                                       .durable = true,
                                                       .prefault = OnTmpfs(o_.parity_dir),
                                                       .prepare = o_.prepare_parity}));
    uo.spin_before_sleep = std::chrono::microseconds(o_.spin_us);
    FERN_ASSIGN_OR_RETURN(meta_, OpenFileMetaStore(o_.parity_dir + "/meta"));
    FERN_ASSIGN_OR_RETURN(transport_, transport::UcxTransport::Create(uo));
    FERN_ASSIGN_OR_RETURN(
        node_, Node::Create({.id = uo.self, .k = o_.k, .m = o_.m, .shard_size = o_.shard_size,
                             .backend = o_.coder,
                             .placement_seed = o_.placement_seed,
                             .rpc_timeout = std::chrono::milliseconds(
                                 static_cast<int64_t>(o_.rpc_timeout_s * 1000)),
                             .keep_versions = o_.keep_versions,
                             .dead_after = std::chrono::milliseconds(
                                 static_cast<int64_t>(o_.dead_after_s * 1000)),
                             .batch_durable_commits = true,
                             .encode_on_worker = !o_.encode_inline,
                             .check_reads = o_.check_reads,
                             .read_hedge = std::chrono::microseconds(
                                 static_cast<int64_t>(o_.read_hedge_s * 1e6)),
                             .write_hedge = std::chrono::microseconds(
                                 static_cast<int64_t>(o_.write_hedge_s * 1e6)),
                             .replace_after = std::chrono::milliseconds(
                                 static_cast<int64_t>(o_.replace_after_s * 1000)),
                             .min_shards = o_.min_shards,
                             .orphan_sweep = std::chrono::milliseconds(
                                 static_cast<int64_t>(o_.orphan_sweep_s * 1000)),
                             .disk_stall = std::chrono::milliseconds(
                                 static_cast<int64_t>(o_.disk_stall_s * 1000))},
                            transport_.get(), data_.get(), parity_.get(), view, meta_.get()));
    node_->OnMembershipChange([this](NodeId peer, bool alive, const std::string& why) {
      Log(o_.node_id, peer.ToString() + (alive ? " is alive: " : " is dead: ") + why +
                          " (epoch " + std::to_string(node_->view().epoch()) + ")");
    });
    transport_->OnPeerFailure([this](NodeId peer, const Status& why) { node_->PeerFailed(peer, why); });
    return Listen();
  }

  Status Run() {
    // A write past RLIMIT_FSIZE (a `ulimit -f` the daemon was started under,
    // or a GET into a caller's file) and a write to a closed pipe or socket
    // must fail that write (EFBIG, EPIPE), not kill the node with a signal.
    signal(SIGXFSZ, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    FERN_ASSIGN_OR_RETURN(const int sfd, StopSignalFd());
    const int ep = epoll_create1(EPOLL_CLOEXEC);
    Add(ep, transport_->event_fd());
    // Parity commits, encoded stripes, GET stripes written: the loop round
    // that wakes runs FlushDurable.
    for (int fd : node_->event_fds()) Add(ep, fd);
    Add(ep, listen_fd_);
    Add(ep, sfd);
    Log(o_.node_id, "serving on " + o_.socket + " (erasure coding: " + std::string(node_->coder_backend()) + ")");
    if (std::string note = ShmemHugePagesNote(); !note.empty()) Log(o_.node_id, note);
    // A repair pass shortly after start (peers may still be starting): a
    // node back with an empty tmpfs rebuilds its shards. Retried with
    // backoff while some shard cannot be rebuilt.
    auto next_repair = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    auto backoff = std::chrono::seconds(5);
    bool repair_wanted = true;
    bool hint_pending = false;
    auto next_tick = std::chrono::steady_clock::now();
    auto stop_deadline = std::chrono::steady_clock::time_point::max();
    while (true) {
      transport_->Progress();
      node_->FlushDurable();  // parity that arrived in this round: one group commit
      if (stopping_ && (commits_.queued() == 0 || std::chrono::steady_clock::now() >= stop_deadline)) {
        if (commits_.queued() > 0) {
          Log(o_.node_id, "stopping with " + std::to_string(commits_.queued()) +
                              " commits unfinished after --drain " + std::to_string(o_.drain_s) + " s");
        }
        Log(o_.node_id, "shutting down");
        transport_->Shutdown();
        return Status();
      }
      if (std::chrono::steady_clock::now() >= next_tick) {
        node_->Tick(std::chrono::steady_clock::now());
        next_tick = std::chrono::steady_clock::now() + std::chrono::seconds(1);
      }
      // Shards were written without this node while others took it for
      // dead (--min-shards): a pass that starts after the hint rebuilds
      // them (one already running may have listed the records before).
      hint_pending |= node_->TakeRepairHint();
      if (hint_pending && !node_->repair_progress().running) {
        Log(o_.node_id, "told that stripes were written without its shards: repair pass");
        hint_pending = false;
        repair_wanted = true;
        next_repair = std::chrono::steady_clock::now();
        backoff = std::chrono::seconds(5);
      }
      if (repair_wanted && !node_->repair_progress().running &&
          std::chrono::steady_clock::now() >= next_repair) {
        const auto started = std::chrono::steady_clock::now();
        node_->Repair([this, &repair_wanted, &next_repair, &backoff, started](Status s) {
          const auto& p = node_->repair_progress();
          const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
          char line[256];
          std::snprintf(line, sizeof line,
                        "repair pass %llu: %llu shards checked, %llu missing, %llu rebuilt, "
                        "%llu failed in %.2f s",
                        (unsigned long long)p.passes, (unsigned long long)p.shards_checked,
                        (unsigned long long)p.shards_missing, (unsigned long long)p.shards_restored,
                        (unsigned long long)p.shards_failed, secs);
          Log(o_.node_id, std::string(line) + (s.ok() ? "" : ": " + s.ToString()));
          if (s.ok()) {
            repair_wanted = false;
          } else {
            next_repair = std::chrono::steady_clock::now() + backoff;
            backoff = std::min<std::chrono::seconds>(backoff * 2, std::chrono::seconds(60));
          }
        });
      }
      epoll_event ev[16];
      int n = epoll_wait(ep, ev, 16, 100);
      for (int i = 0; i < n; ++i) {
        const int fd = ev[i].data.fd;
        if (fd == sfd) {
          // Stop taking requests; commits already accepted (async ones were
          // answered before they finished) complete first: nothing acknowledged
          // is dropped by an orderly stop.
          signalfd_siginfo si;
          (void)read(sfd, &si, sizeof si);
          if (stopping_) {
            stop_deadline = std::chrono::steady_clock::now();  // asked twice: stop now
          } else {
            stopping_ = true;
            stop_deadline = std::chrono::steady_clock::now() +
                            std::chrono::milliseconds(static_cast<int64_t>(o_.drain_s * 1000));
            epoll_ctl(ep, EPOLL_CTL_DEL, listen_fd_, nullptr);
            unlink(o_.socket.c_str());
            if (commits_.queued() > 0) {
              Log(o_.node_id, "stopping: finishing " + std::to_string(commits_.queued()) +
                                  " queued commits first");
            }
          }
          continue;
        }
        if (fd == listen_fd_) {
          Accept(ep);
        } else {
          Serve(ep, fd);  // ignores what is not a client connection
        }
      }
    }
  }

 private:
  static void Add(int ep, int fd) {
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
  }

  Status Listen() {
    sockaddr_un addr{};
    if (o_.socket.size() >= sizeof addr.sun_path) {
      return InvalidArgumentError("socket path too long: " + o_.socket);
    }
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, o_.socket.c_str());
    unlink(o_.socket.c_str());
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) return FromErrno(errno, "socket");
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return FromErrno(errno, "bind " + o_.socket);
    }
    chmod(o_.socket.c_str(), 0666);  // every local user may ask; the daemon checks permissions
    if (listen(listen_fd_, 64) != 0) return FromErrno(errno, "listen " + o_.socket);
    return Status();
  }

  void Accept(int ep) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    timeval tv{5, 0};  // a client that stalls mid-request cannot stall the daemon for long
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto conn = std::make_shared<Conn>(fd);
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return;  // conn closes fd
    conn->caller = Caller{cred.uid, cred.gid};
    conns_[fd] = conn;
    Add(ep, fd);
  }

  void Drop(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    conns_.erase(fd);  // closed once no request holds it
  }

  void Serve(int ep, int fd) {
    auto it = conns_.find(fd);
    if (it == conns_.end()) return;
    std::shared_ptr<Conn> conn = it->second;
    client::Request req;
    int passed = -1;
    if (client::RecvWithFd(fd, &req, sizeof req, &passed) != 0) {
      Drop(ep, fd);
      return;
    }
    if (req.magic != client::kMagic || req.version != client::kVersion) {
      conn->Send(ErrorReply(InvalidArgumentError("bad request magic or version")));
      if (passed >= 0) close(passed);
      Drop(ep, fd);
      return;
    }
    const auto op = static_cast<client::Op>(req.op);
    if (op == client::Op::kPing) {
      if (passed >= 0) close(passed);
      conn->Send(client::Reply{});
      return;
    }
    std::string path;
    if (Status s = CheckPath(req.path, req.path_len, &path); !s.ok()) {
      if (passed >= 0) close(passed);
      conn->Send(ErrorReply(s));
      return;
    }
    if (op == client::Op::kPut) {
      return Put(conn, path, req.size, req.mode, (req.flags & client::kPutAsync) != 0, passed);
    }
    if (op == client::Op::kUpdate) return Update(conn, path, req.size, passed);
    if (op == client::Op::kGet && (req.flags & client::kGetInto) != 0) {
      if (passed < 0) {
        return conn->Send(ErrorReply(InvalidArgumentError("GET into a file needs the file's descriptor")));
      }
      // Closed when the read is answered, or dropped unanswered.
      auto into = std::shared_ptr<int>(new int(passed), [](int* f) {
        close(*f);
        delete f;
      });
      return commits_.After(path, [this, conn, path, into] { GetInto(conn, path, into); });
    }
    if (passed >= 0) close(passed);
    auto reply_status = [conn](Status s) { conn->Send(s.ok() ? client::Reply{} : ErrorReply(s)); };
    const Caller& who = conn->caller;
    switch (op) {
      case client::Op::kGet:
        return commits_.After(path, [this, conn, path] { Get(conn, path); });
      case client::Op::kStat:
        return commits_.After(path, [this, conn, path] {
          node_->Stat(path, [conn](StatusOr<Attr> a) {
            if (!a.ok()) return conn->Send(ErrorReply(a.status()));
            conn->Send(AttrReply(*a));
          });
        });
      case client::Op::kWait:
        return commits_.After(path, [this, path, reply_status] { reply_status(commits_.TakeFailure(path)); });
      case client::Op::kAccess: {
        const int mask = static_cast<int>(req.flags & 7);
        return commits_.After(path, [this, path, who, mask, reply_status] {
          node_->Access(path, who, mask, reply_status);
        });
      }
      case client::Op::kList:
        return commits_.After(path, [this, conn, path] { List(conn, path); });
      case client::Op::kUnlink:
        return commits_.Run(path, [this, path, who, reply_status](CommitQueue::Finished finished) {
          node_->Unlink(path, who, [reply_status, finished](Status s) {
            reply_status(s);
            finished();
          });
        });
      case client::Op::kRename: {
        std::string to;
        if (Status s = CheckPath(req.path2, req.path2_len, &to); !s.ok()) return reply_status(s);
        // After what is queued on the target, in order with the source's queue.
        return commits_.After(to, [this, path, to, who, reply_status] {
          commits_.Run(path, [this, path, to, who, reply_status](CommitQueue::Finished finished) {
            node_->Rename(path, to, who, [reply_status, finished](Status s) {
              reply_status(s);
              finished();
            });
          });
        });
      }
      case client::Op::kMkdir:
        return node_->Mkdir(path, who, req.mode, reply_status);
      case client::Op::kRmdir:
        return node_->Rmdir(path, who, reply_status);
      case client::Op::kStatus:
        return SendText(conn, (req.flags & client::kStatusText) != 0 ? StatusText() : StatusJson());
      case client::Op::kScrub: {
        const bool repair = (req.flags & client::kScrubRepair) != 0;
        const bool text = (req.flags & client::kScrubText) != 0;
        return commits_.After(path, [this, conn, path, who, repair, text] {
          node_->Scrub(path, who, repair, [conn, text](StatusOr<Node::ScrubReport> r) {
            if (!r.ok()) return conn->Send(ErrorReply(r.status()));
            SendText(conn, text ? ScrubText(*r) : ScrubJson(*r));
          });
        });
      }
      case client::Op::kInspect: {
        const bool text = (req.flags & client::kInspectText) != 0;
        return commits_.After(path, [this, conn, path, who, text] {
          node_->Inspect(path, who, [conn, text](StatusOr<Node::Inspection> in) {
            if (!in.ok()) return conn->Send(ErrorReply(in.status()));
            SendText(conn, text ? InspectText(*in) : InspectJson(*in));
          });
        });
      }
      default:
        return conn->Send(ErrorReply(InvalidArgumentError("unknown op " + std::to_string(req.op))));
    }
  }

  std::string StatusJson() const {
    const auto& v = node_->view();
    std::string alive;
    for (const auto& n : v.nodes()) {
      if (v.IsAlive(n.id)) alive += (alive.empty() ? "" : ", ") + std::to_string(n.id.value);
    }
    auto usage = [](const ShardStore& s) {
      StoreUsage u = s.Usage();
      return "{\"slots_used\": " + std::to_string(u.slots_used) +
             ", \"slots_total\": " + std::to_string(u.slots_total) +
             ", \"slots_unprepared\": " + std::to_string(u.slots_unprepared) +
             ", \"slots_zeroed\": " + std::to_string(u.slots_zeroed) +
             ", \"slot_bytes\": " + std::to_string(u.slot_capacity) + "}";
    };
    const auto& r = node_->repair_progress();
    const auto& rp = node_->replace_progress();
    const auto& op = node_->orphan_progress();
    const auto& d = node_->decode_stats();
    const auto& c = node_->read_check_stats();
    const Node::DiskWatch dw = node_->disk_watch();
    const Node::StripeHealth h = node_->stripe_health();
    return "{\"node\": " + std::to_string(o_.node_id) + ", \"epoch\": " + std::to_string(v.epoch()) +
           ", \"alive\": [" + alive + "], \"k\": " + std::to_string(o_.k) +
           ", \"m\": " + std::to_string(o_.m) + ", \"records\": " +
           std::to_string(node_->records_owned()) + ", \"data\": " + usage(*data_) +
           ", \"commits\": {\"queued\": " + std::to_string(commits_.queued()) +
           ", \"async_pending\": " + std::to_string(commits_.async_pending()) +
           ", \"async_pending_bytes\": " + std::to_string(commits_.async_pending_bytes()) +
           ", \"async_failed\": " + std::to_string(commits_.async_failed_total()) +
           ", \"parity_batches\": " + std::to_string(node_->durable_batches()) +
           ", \"parity_batched_shards\": " + std::to_string(node_->durable_shards()) +
           ", \"last_async_error\": " + JsonString(commits_.last_async_error()) + "}" +
           ", \"parity\": " + usage(*parity_) + ", \"repair\": {\"running\": " +
           (r.running ? "true" : "false") + ", \"passes\": " + std::to_string(r.passes) +
           ", \"checked\": " + std::to_string(r.shards_checked) +
           ", \"missing\": " + std::to_string(r.shards_missing) +
           ", \"rebuilt\": " + std::to_string(r.shards_restored) +
           ", \"failed\": " + std::to_string(r.shards_failed) + ", \"last_error\": " + JsonString(r.last_error) + "}" +
           ", \"replace\": {\"running\": " + (rp.running ? "true" : "false") + ", \"passes\": " + std::to_string(rp.passes) +
           ", \"planned\": " + std::to_string(rp.shards_planned) + ", \"sent\": " + std::to_string(rp.shards_sent) +
           ", \"bytes_sent\": " + std::to_string(rp.bytes_sent) + ", \"last_pass_s\": " + std::to_string(rp.last_pass_s) +
           ", \"moved\": " + std::to_string(rp.shards_moved) +
           ", \"failed\": " + std::to_string(rp.shards_failed) + ", \"skipped\": " + std::to_string(rp.skipped) +
           ", \"no_spare\": " + std::to_string(rp.no_spare) +
           ", \"lost\": " + std::to_string(rp.lost) + ", \"records_copied\": " + std::to_string(rp.records_copied) +
           ", \"orphans_deleted\": " + std::to_string(rp.orphans_deleted) +
           ", \"after_s\": " + std::to_string(o_.replace_after_s) +
           ", \"last_error\": " + JsonString(rp.last_error) + "}" +
           ", \"orphans\": {\"running\": " + (op.running ? "true" : "false") +
           ", \"passes\": " + std::to_string(op.passes) + ", \"skipped\": " + std::to_string(op.skipped) +
           ", \"candidates\": " + std::to_string(op.candidates) + ", \"deleted\": " + std::to_string(op.deleted) +
           ", \"bytes_freed\": " + std::to_string(op.bytes_freed) +
           ", \"renames_finished\": " + std::to_string(op.renames_finished) +
           ", \"every_s\": " + std::to_string(o_.orphan_sweep_s) + ", \"last_error\": " + JsonString(op.last_error) + "}" +
           ", \"disk\": {\"stalled\": " + (dw.stalled ? "true" : "false") +
           ", \"stalled_s\": " + std::to_string(std::chrono::duration<double>(dw.stalled_for).count()) +
           ", \"stalls\": " + std::to_string(dw.stalls) + ", \"refused\": " + std::to_string(dw.refused) +
           ", \"stall_after_s\": " + std::to_string(o_.disk_stall_s) + "}" +
           ", \"deferred_deletes\": {\"waiting\": " + std::to_string(node_->deferred_deletes_waiting()) +
           ", \"sent\": " + std::to_string(node_->deferred_deletes_sent()) + "}" +
           ", \"degraded_writes\": {\"min_shards\": " + std::to_string(o_.min_shards ? o_.min_shards : o_.k + o_.m) +
           ", \"stripes\": " + std::to_string(node_->degraded_stripes_written()) + "}" +
           ", \"decodes\": {\"stripes\": " + std::to_string(d.stripes) +
           ", \"verified\": " + std::to_string(d.verified) + ", \"rejected\": " + std::to_string(d.rejected) + "}" +
           ", \"read_checks\": {\"verified\": " + std::to_string(c.verified) +
           ", \"unchecked\": " + std::to_string(c.unchecked) + ", \"mismatched\": " + std::to_string(c.mismatched) +
           ", \"rewritten\": " + std::to_string(c.rewritten) + "}" +
           ", \"hedged_reads\": {\"stripes\": " + std::to_string(node_->hedge_stats().hedged) +
           ", \"served_early\": " + std::to_string(node_->hedge_stats().served_early) +
           ", \"lookups\": " + std::to_string(node_->hedge_stats().lookups) +
           ", \"put_stripes\": " + std::to_string(node_->hedge_stats().put_stripes) +
           ", \"records\": " + std::to_string(node_->hedge_stats().records) +
           ", \"after_s\": " + std::to_string(o_.read_hedge_s) +
           ", \"write_after_s\": " + std::to_string(o_.write_hedge_s) + "}" + ", \"stripes\": {\"files\": " +
           std::to_string(h.files) + ", \"total\": " + std::to_string(h.stripes) +
           ", \"degraded\": " + std::to_string(h.degraded) + ", \"lost\": " + std::to_string(h.lost) + "}" +
           PswJson(node_->psw_stats()) + "}";
  }

  // The same as StatusJson, for a person: a line per concern.
  std::string StatusText() const {
    const auto& v = node_->view();
    std::string dead;
    int alive = 0;
    for (const auto& n : v.nodes()) {
      if (v.IsAlive(n.id)) {
        ++alive;
      } else {
        dead += (dead.empty() ? "" : ",") + std::to_string(n.id.value);
      }
    }
    auto n = [](uint64_t x) { return std::to_string(x); };
    const StoreUsage du = data_->Usage(), pu = parity_->Usage();
    const auto& r = node_->repair_progress();
    const auto& d = node_->decode_stats();
    const auto& c = node_->read_check_stats();
    const auto p = node_->psw_stats();
    std::string out = "node " + std::to_string(o_.node_id) + " (k=" + std::to_string(o_.k) + " m=" +
                      std::to_string(o_.m) + ", view epoch " + n(v.epoch()) + "): " + std::to_string(alive) +
                      " of " + std::to_string(v.nodes().size()) + " nodes alive" +
                      (dead.empty() ? "" : ", down: " + dead) + "\n";
    out += "  space: data " + n(du.slots_used) + " of " + n(du.slots_total) + " slots, parity " + n(pu.slots_used) +
           " of " + n(pu.slots_total) + " (" + FormatSize(du.slot_capacity) + " each" +
           (pu.slots_unprepared ? ", " + n(pu.slots_unprepared) + " parity slots not yet prepared" : "") + "); " +
           n(node_->records_owned()) + " file records owned\n";
    // fern-ec status sums this line over the nodes: keep its shape.
    const Node::StripeHealth h = node_->stripe_health();
    out += "  stripes: " + n(h.stripes) + " in the " + n(h.files) + " files this node is first owner of; " +
           n(h.degraded) + " degraded (a shard's node down), " + n(h.lost) + " lost (more than m=" +
           std::to_string(o_.m) + " down)\n";
    out += "  commits: " + n(commits_.queued()) + " queued, " + n(commits_.async_pending()) + " async pending (" +
           FormatSize(commits_.async_pending_bytes()) + "), " + n(commits_.async_failed_total()) + " async failed" +
           (commits_.last_async_error().empty() ? "" : " (last: " + commits_.last_async_error() + ")") + "\n";
    out += "  repair: " + std::string(r.running ? "running" : "idle") + " (passes run: " + n(r.passes) + "): " +
           n(r.shards_checked) + " shards checked, " + n(r.shards_missing) + " missing, " + n(r.shards_restored) +
           " rebuilt, " + n(r.shards_failed) + " failed" +
           (r.last_error.empty() ? "" : " (last error: " + r.last_error + ")") + "\n";
    const auto& rp = node_->replace_progress();
    char after[32];
    std::snprintf(after, sizeof after, "%g s", o_.replace_after_s);
    out += "  re-placement: " +
           (o_.replace_after_s > 0 ? std::string(rp.running ? "running" : "idle") + " (after " + after +
                                         " down; passes run: " + n(rp.passes) + "): " + n(rp.shards_moved) +
                                         " shards of dead nodes moved to live ones, " + n(rp.shards_failed) +
                                         " failed, " + n(rp.skipped) + " skipped (node back), " + n(rp.records_copied) +
                                         " file records copied to stand-in owners, " + n(rp.orphans_deleted) +
                                         " old copies deleted on nodes back; last pass: " + n(rp.shards_planned) + " planned, " +
                                         n(rp.shards_sent) + " rebuilt, " +
                                         n(rp.no_spare) + " stripes with no live node to take a shard, " +
                                         n(rp.lost) + " lost" +
                                         (rp.last_error.empty() ? "" : " (last error: " + rp.last_error + ")")
                                   : std::string("off (--replace-after 0)")) +
           "\n";
    const auto& op = node_->orphan_progress();
    char every[32];
    std::snprintf(every, sizeof every, "%g s", o_.orphan_sweep_s);
    out += "  orphan sweep: " +
           (o_.orphan_sweep_s > 0
                ? std::string(op.running ? "running" : "idle") + " (every " + every + "; passes run: " + n(op.passes) +
                      ", " + n(op.skipped) + " deleted nothing): " + n(op.deleted) +
                      " shards no record places here deleted (" + n(op.bytes_freed >> 20) + " MiB), " +
                      n(op.candidates) + " found by the last pass, deleted at the next if still so" +
                      (op.renames_finished ? "; " + n(op.renames_finished) + " renames cut short finished" : "") +
                      (op.last_error.empty() ? "" : " (last: " + op.last_error + ")")
                : std::string("off (--orphan-sweep 0)")) +
           "\n";
    const Node::DiskWatch dw = node_->disk_watch();
    if (dw.stalled) {
      out += "  PARITY DISK STALLED: no write finished for " +
             n(std::chrono::duration_cast<std::chrono::seconds>(dw.stalled_for).count()) +
             " s; peers count this node dead, " + n(dw.refused) + " parity shards and records refused\n";
    } else if (dw.stalls > 0) {
      out += "  parity disk: stalled " + n(dw.stalls) + " times (" + n(dw.refused) +
             " parity shards and records refused meanwhile); writing now\n";
    }
    if (node_->deferred_deletes_waiting() + node_->deferred_deletes_sent() > 0) {
      out += "  deletes held for nodes that were down: " + n(node_->deferred_deletes_waiting()) + " waiting, " +
             n(node_->deferred_deletes_sent()) + " sent once they were back\n";
    }
    if (o_.min_shards != 0 && o_.min_shards < o_.k + o_.m) {
      out += "  degraded writes: allowed down to " + std::to_string(o_.min_shards) + " of " +
             std::to_string(o_.k + o_.m) + " shards per stripe; " + n(node_->degraded_stripes_written()) +
             " stripes written so by this node\n";
    }
    out += "  reads: " + n(c.verified) + " healthy stripes checked against parity records, " + n(c.unchecked) +
           " unchecked, " + n(c.mismatched) + " mismatched (" + n(c.rewritten) + " data shards rewritten); " +
           n(d.stripes) + " stripes decoded, " +
           n(d.verified) + " verified, " + n(d.rejected) + " rejected\n";
    if (const Node::HedgeStats& hs = node_->hedge_stats();
        hs.hedged + hs.lookups + hs.put_stripes + hs.records > 0) {
      // A lagging node (stuck, overloaded) this gateway went around.
      out += "  hedged around lagging nodes: " + n(hs.hedged) + " read stripes (" + n(hs.served_early) +
             " served without them), " + n(hs.lookups) + " record lookups, " + n(hs.put_stripes) +
             " put stripes sent again, " + n(hs.records) + " records stored on stand-ins\n";
    }
    out += "  in-place updates: " + n(p.updates_committed) + " committed, " + n(p.updates_failed) + " failed, " +
           n(p.pieces_applied) + " pieces applied here, " + n(p.pieces_retried) + " sent again after a rollback, " +
           n(p.sequencers) + " sequencers hosted, " +
           n(p.stripes_resolved) + " stripes resolved by recovery, " + n(p.stripes_lost) + " lost\n";
    return out;
  }

  static std::string PswJson(const Node::PswStats& p) {
    return ", \"psw\": {\"updates_committed\": " + std::to_string(p.updates_committed) +
           ", \"updates_failed\": " + std::to_string(p.updates_failed) +
           ", \"pieces_applied\": " + std::to_string(p.pieces_applied) +
           ", \"pieces_retried\": " + std::to_string(p.pieces_retried) +
           ", \"sequencers\": " + std::to_string(p.sequencers) +
           ", \"stripes_resolved\": " + std::to_string(p.stripes_resolved) +
           ", \"stripes_lost\": " + std::to_string(p.stripes_lost) + "}";
  }

  // Text in a sealed memfd, Reply.size its length.
  static void SendText(const std::shared_ptr<Conn>& conn, const std::string& out) {
    int fd = memfd_create("fern-ec-reply", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return conn->Send(ErrorReply(FromErrno(errno, "memfd_create")));
    size_t at = 0;
    while (at < out.size()) {
      ssize_t w = write(fd, out.data() + at, out.size() - at);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        Status s = FromErrno(errno, "write the reply memfd");
        close(fd);
        return conn->Send(ErrorReply(s));
      }
      at += static_cast<size_t>(w);
    }
    fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    client::Reply r;
    r.size = out.size();
    conn->Send(r, fd);
    close(fd);
  }

  static client::Reply AttrReply(const Attr& a) {
    client::Reply r;
    r.mode = (a.is_dir ? S_IFDIR : S_IFREG) | (a.mode & 07777);
    r.size = a.size;
    r.file_version = a.version;
    r.uid = a.uid;
    r.gid = a.gid;
    r.mtime_ns = a.mtime_ns;
    return r;
  }

  // The reply to a GET: the file's size, version and attributes.
  static client::Reply InfoReply(const Node::FileInfo& f) {
    return AttrReply(Attr{false, f.size, f.version, f.uid, f.gid, f.mode, f.mtime_ns});
  }

  // Entries "T<name>\0" in a sealed memfd (a directory can outgrow any
  // fixed reply).
  void List(std::shared_ptr<Conn> conn, const std::string& dir) {
    node_->List(dir, [conn, dir](StatusOr<std::vector<DirEntry>> entries) {
      if (!entries.ok()) return conn->Send(ErrorReply(entries.status()));
      std::string out;
      for (const auto& e : *entries) {
        out += e.is_dir ? 'd' : 'f';
        out += e.name;
        out += '\0';
      }
      SendText(conn, out);
    });
  }

  // Sync: answered when the version committed. Async: answered once queued
  // (with an earlier unreported async failure of the path, if any), unless
  // more than --async-limit bytes are in flight already: then it waits like a
  // sync commit, so a fast writer cannot pin unbounded memory in the daemon.
  void Put(std::shared_ptr<Conn> conn, const std::string& path, uint64_t size, uint32_t mode,
           bool async, int fd) {
    if (fd < 0) return conn->Send(ErrorReply(InvalidArgumentError("PUT without a memfd")));
    struct stat st {};
    if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != size) {
      close(fd);
      return conn->Send(ErrorReply(InvalidArgumentError("PUT memfd size does not match the request")));
    }
    auto map = ReleasedOffLoop(new Mapping);
    if (size > 0) {
      map->p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
      if (map->p == MAP_FAILED) {
        map->p = nullptr;
        Status s = FromErrno(errno, "map the PUT memfd");
        close(fd);
        return conn->Send(ErrorReply(s));
      }
      map->n = size;
    }
    close(fd);  // the mapping keeps the pages
    std::span<const uint8_t> bytes(static_cast<const uint8_t*>(map->p), size);
    const Caller who = conn->caller;
    // Stopping: a commit answered now could be cut off by the drain deadline
    // and its failure reported to no one, so every PUT is answered when done.
    const bool answer_now = async && !stopping_ &&
        (commits_.async_pending() == 0 || commits_.async_pending_bytes() + size <= o_.async_limit);
    if (answer_now) {
      Status earlier = commits_.TakeFailure(path);
      conn->Send(earlier.ok() ? client::Reply{} : ErrorReply(earlier));
      commits_.AsyncStarted(size);
    }
    commits_.Run(path, [this, conn, path, bytes, map, who, mode, size, answer_now](CommitQueue::Finished finished) {
      node_->Put(path, bytes, map, who, mode, [this, conn, path, size, answer_now, finished](Status s) {
        if (answer_now) {
          if (!s.ok()) Log(o_.node_id, "async commit of " + path + " failed: " + s.ToString());
          commits_.AsyncFinished(path, size, s);
        } else {
          if (s.ok()) commits_.Committed(path);
          conn->Send(s.ok() ? client::Reply{} : ErrorReply(s));
        }
        finished();
      });
    });
  }

  // UPDATE: the blob (client_protocol.h) is checked whole before anything
  // is sent; Node::Update checks the ranges against the file.
  void Update(std::shared_ptr<Conn> conn, const std::string& path, uint64_t size, int fd) {
    if (fd < 0) return conn->Send(ErrorReply(InvalidArgumentError("UPDATE without a memfd")));
    struct stat st {};
    if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != size ||
        size < sizeof(client::UpdateBlobHeader)) {
      close(fd);
      return conn->Send(ErrorReply(InvalidArgumentError("UPDATE memfd size does not match the request")));
    }
    void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return conn->Send(ErrorReply(FromErrno(errno, "map the UPDATE memfd")));
    auto map = ReleasedOffLoop(new Mapping{p, size});
    const auto* base = static_cast<const uint8_t*>(p);
    client::UpdateBlobHeader h;
    std::memcpy(&h, base, sizeof h);
    const uint64_t table = uint64_t{h.ranges} * sizeof(client::UpdateBlobRange);
    if (h.magic != client::kUpdateMagic || h.ranges == 0 || h.ranges > client::kMaxUpdateRanges ||
        table > size - sizeof h) {
      return conn->Send(ErrorReply(InvalidArgumentError("UPDATE blob: bad magic or range count")));
    }
    std::vector<Node::ByteRange> ranges(h.ranges);
    uint64_t total = 0;
    for (uint32_t i = 0; i < h.ranges; ++i) {
      client::UpdateBlobRange r;
      std::memcpy(&r, base + sizeof h + i * sizeof r, sizeof r);
      ranges[i] = {r.offset, r.length};
      if (r.length > size) return conn->Send(ErrorReply(InvalidArgumentError("UPDATE blob: oversized range")));
      total += r.length;
    }
    if (total != size - sizeof h - table) {
      return conn->Send(ErrorReply(InvalidArgumentError("UPDATE blob: the ranges do not add up to its bytes")));
    }
    std::span<const uint8_t> bytes(base + sizeof h + table, total);
    const Caller who = conn->caller;
    commits_.Run(path, [this, conn, path, h, ranges = std::move(ranges), bytes, map,
                        who](CommitQueue::Finished finished) mutable {
      node_->Update(path, h.base_version, h.file_size, std::move(ranges), bytes, map, who,
                    [this, conn, path, finished](StatusOr<uint64_t> v) {
                      if (!v.ok()) {
                        conn->Send(ErrorReply(v.status()));
                      } else {
                        commits_.Committed(path);
                        client::Reply r;
                        r.file_version = *v;
                        conn->Send(r);
                      }
                      finished();
                    });
    });
  }

  void Get(std::shared_ptr<Conn> conn, const std::string& path) {
    // The reply memfd is mapped and filled in place: whole shards are
    // received straight into it.
    auto out = ReleasedOffLoop(new ReplyMemfd);
    out->fd = memfd_create("fern-ec-get", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (out->fd < 0) return conn->Send(ErrorReply(FromErrno(errno, "memfd_create")));
    node_->GetInto(
        path, conn->caller,
        [out](uint64_t size) -> StatusOr<std::span<uint8_t>> {
          if (size == 0) return std::span<uint8_t>();
          if (ftruncate(out->fd, size) != 0) return FromErrno(errno, "size the GET memfd");
          void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, out->fd, 0);
          if (p == MAP_FAILED) return FromErrno(errno, "map the GET memfd");
          // Huge pages when the system allows them for shmem
          // (/sys/kernel/mm/transparent_hugepage/shmem_enabled = advise); the
          // node allocates the pages before shards land (Node::PrefaultOutput).
          madvise(p, size, MADV_HUGEPAGE);
          out->map.p = p;
          out->map.n = size;
          return std::span<uint8_t>(static_cast<uint8_t*>(p), size);
        },
        [conn, out](StatusOr<Node::FileInfo> got) {
          if (!got.ok()) return conn->Send(ErrorReply(got.status()));
          if (Status s = out->Seal(); !s.ok()) return conn->Send(ErrorReply(s));
          conn->Send(InfoReply(*got), out->fd);
          // Our mapping goes when the last reference to `out` does, on the
          // releaser: unmapping a populated GiB takes ~0.1 s.
        });
  }

  // GET with kGetInto: the file's bytes go into the caller's descriptor
  // with pwrite (the node's writer thread), sized with ftruncate; the reply
  // carries no descriptor. Whatever the caller opened for writing, as long
  // as pwrite means offsets: a regular file or a memfd, not O_APPEND.
  void GetInto(std::shared_ptr<Conn> conn, const std::string& path, std::shared_ptr<int> file) {
    const int into = *file;
    struct stat st {};
    if (fstat(into, &st) != 0) return conn->Send(ErrorReply(FromErrno(errno, "GET into: fstat")));
    if (!S_ISREG(st.st_mode)) {
      return conn->Send(ErrorReply(InvalidArgumentError("GET into: the descriptor is not a regular file or memfd")));
    }
    const int fl = fcntl(into, F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) == O_RDONLY) {
      return conn->Send(ErrorReply(FromErrno(EBADF, "GET into: the descriptor is not open for writing")));
    }
    if (fl & O_APPEND) {
      return conn->Send(ErrorReply(InvalidArgumentError("GET into: the descriptor is O_APPEND (writes need offsets)")));
    }
    node_->GetToFile(
        path, conn->caller,
        [file](uint64_t size) -> StatusOr<std::shared_ptr<const int>> {
          if (ftruncate(*file, static_cast<off_t>(size)) != 0) return FromErrno(errno, "GET into: size the file");
          return std::shared_ptr<const int>(file);
        },
        [conn](StatusOr<Node::FileInfo> got) {
          if (!got.ok()) return conn->Send(ErrorReply(got.status()));
          conn->Send(InfoReply(*got));
        });
  }

  // Client memory (PUT and UPDATE mappings, GET reply memfds) is let go on
  // this thread: when the daemon holds the last reference, munmap or close
  // frees every page of it (~0.25 s a GiB here, docs/performance.md), which
  // on the loop would stall every client and peer meanwhile. Declared
  // first, so it is destroyed last, after everything that may post to it.
  WorkerThread releaser_{"fern-release"};
  template <class T>
  std::shared_ptr<T> ReleasedOffLoop(T* p) {
    return std::shared_ptr<T>(p, [this](T* q) { releaser_.Post([q] { delete q; }); });
  }

  Options o_;
  std::unique_ptr<ShardStore> data_, parity_;
  std::unique_ptr<MetaStore> meta_;
  std::unique_ptr<transport::UcxTransport> transport_;
  std::unique_ptr<Node> node_;
  CommitQueue commits_;
  bool stopping_ = false;  // SIGTERM seen: draining queued commits
  int listen_fd_ = -1;
  std::map<int, std::shared_ptr<Conn>> conns_;
};

}  // namespace
}  // namespace fern::daemon

int main(int argc, char** argv) {
  using fern::daemon::Options;
  Options o;
  fern::FlagSet flags(
      "usage: fern-ec-daemon --node-id N --hostfile FILE --socket PATH [flags]\n\n"
      "One node of a fern-ec cluster: stores data shards in --data-dir (tmpfs),\n"
      "parity shards in --parity-dir (disk), talks to the other nodes of the\n"
      "hostfile over UCX and serves local clients on --socket. Runs in the\n"
      "foreground; SIGTERM stops it. Hostfile lines: 'ID HOST:PORT [DOMAIN]'.\n"
      "Every node must be started with the same hostfile, --k, --m, --shard-size\n"
      "and --placement-seed.\n\n"
      "Settings come from --config FILE (or FERN_EC_CONFIG): 'name = value' lines\n"
      "with the flag names below; then from FERN_EC_* variables (shown in brackets);\n"
      "then from the command line, each overriding the one before.");
  flags.ShowEnvInHelp("FERN_EC_");
  std::string config;
  if (const char* c = std::getenv("FERN_EC_CONFIG")) config = c;
  flags.String("config", &config, "config file read before the environment and the flags");
  flags.Int("node-id", &o.node_id, "this node's id in the hostfile");
  flags.String("hostfile", &o.hostfile, "the cluster's node list");
  flags.String("socket", &o.socket, "Unix socket for local clients");
  flags.String("data-dir", &o.data_dir, "data shards (tmpfs)");
  flags.String("parity-dir", &o.parity_dir, "parity shards (disk; flushed before acknowledging)");
  flags.Int("k", &o.k, "data shards per stripe");
  flags.Int("m", &o.m, "parity shards per stripe");
  flags.Size("shard-size", &o.shard_size, "bytes per shard");
  flags.Size("data-capacity", &o.data_capacity, "space reserved in --data-dir at startup");
  flags.Size("parity-capacity", &o.parity_capacity, "space reserved in --parity-dir at startup");
  flags.Size("placement-seed", &o.placement_seed, "seed of the placement function");
  flags.Double("rpc-timeout", &o.rpc_timeout_s, "seconds before a request to another node fails");
  flags.Double("read-hedge", &o.read_hedge_s,
               "a read's stripe still waiting for a shard three times as long as its first shard "
               "took, and at least this many seconds, fetches its parity too and is served by the "
               "first shards that decode: a stuck or overloaded node costs a read milliseconds, not "
               "--rpc-timeout; 0: never");
  flags.Double("write-hedge", &o.write_hedge_s,
               "a put's stripe whose shards' nodes lag three times as long as its first "
               "acknowledgement took, and at least this many seconds, is sent again to other nodes, "
               "and a file record goes to the stand-ins of owners that lag so: a stuck node costs a "
               "put about this long, not --rpc-timeout; 0: never");
  flags.Double("dead-after", &o.dead_after_s,
               "seconds without a heartbeat before a peer is declared dead (a killed peer is "
               "seen at once through its connection)");
  flags.Double("replace-after", &o.replace_after_s,
               "seconds a node stays dead before its shards are rebuilt on other live nodes and "
               "moved there in the records, so its stripes are whole again (each file's first live "
               "metadata owner does it; needs a live node outside the stripe: more than k+m nodes); "
               "0: never, stripes stay degraded until the node is back");
  flags.Int("min-shards", &o.min_shards,
            "with fewer than k+m live nodes, a put still commits if each stripe lands at least this "
            "many shards (k..k+m) on live nodes; the missing ones are rebuilt by their nodes' repair "
            "when they are back, and the stripes show as degraded until then (0: k+m: a put needs "
            "k+m live nodes)");
  flags.Double("orphan-sweep", &o.orphan_sweep_s,
               "seconds between orphan sweeps: shards held here that no file record places on this "
               "node (a put whose gateway died, deletes a restarted gateway forgot, old copies of "
               "moved shards) are deleted once two sweeps in a row found them so; a sweep deletes "
               "nothing while more than m nodes are dead; 0: never");
  flags.Double("disk-stall", &o.disk_stall_s,
               "seconds a parity write may go unfinished (a hung disk) before this node takes "
               "itself out: its heartbeats say so, peers count it dead (puts go around it, reads "
               "decode around it) until the disk moves again, and it refuses parity shards and file "
               "records meanwhile; keep it below --rpc-timeout so a put waiting on it sends the "
               "stripe elsewhere; 0: never; negative: the default");
  flags.SetDefaultText("disk-stall", "0.4 x --rpc-timeout");
  flags.Int("keep-versions", &o.keep_versions, "committed versions kept per file (older ones are deleted)");
  flags.String("coder", &o.coder,
               "erasure-coding backend: auto (gfni where the CPU has GFNI and AVX-512BW, else isal), "
               "gfni, isal or jerasure; all write the same parity bytes");
  flags.Bool("encode-inline", &o.encode_inline,
             "encode and checksum put stripes, and allocate get buffers, in the event loop "
             "instead of on a worker thread");
  flags.Bool("prepare-parity", &o.prepare_parity,
             "write every never-written slot of the parity slab once, in the background "
             "while idle, so later shard writes skip the file system's unwritten-extent "
             "conversion (0: leave them)");
  flags.Bool("check-reads", &o.check_reads,
             "a healthy read also fetches one parity shard's header and checks the data shards "
             "against the data CRCs it records, decoding around one that disagrees "
             "(0: trust each data shard's own CRC)");
  flags.Int("spin-us", &o.spin_us, "poll this long after the last event before sleeping (0: never spin)");
  flags.Size("async-limit", &o.async_limit,
             "bytes of asynchronous commits in flight before an async PUT waits like a sync one");
  flags.Double("drain", &o.drain_s, "seconds SIGTERM waits for queued commits before exiting");
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {  // --config is needed before the rest is parsed
    if (args[i] == "--config" && i + 1 < args.size()) config = args[i + 1];
    if (args[i].rfind("--config=", 0) == 0) config = args[i].substr(9);
  }
  fern::Status parsed = config.empty() ? fern::Status() : flags.ParseConfigFile(config);
  // The preload's and the CLI's own variables are not daemon settings.
  if (parsed.ok()) {
    parsed = flags.ParseEnv("FERN_EC_", {"FERN_EC_MOUNT", "FERN_EC_COMMIT", "FERN_EC_DEBUG", "FERN_EC_CONFIG"});
  }
  if (parsed.ok()) parsed = flags.Parse(args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "fern-ec-daemon: %s\n", parsed.ToString().c_str());
    return 2;
  }
  if (flags.help_requested()) {
    std::printf("%s", flags.Help().c_str());
    return 0;
  }
  if (!flags.positional().empty()) {
    std::fprintf(stderr, "fern-ec-daemon: unexpected argument '%s' (see --help)\n", flags.positional()[0].c_str());
    return 2;
  }
  if (o.node_id < 0 || o.hostfile.empty() || o.socket.empty()) {
    std::fprintf(stderr, "fern-ec-daemon: --node-id, --hostfile and --socket are required (see --help)\n");
    return 2;
  }
  if (o.replace_after_s < 0 || o.orphan_sweep_s < 0 || o.read_hedge_s < 0 || o.write_hedge_s < 0 ||
      o.dead_after_s <= 0 || o.rpc_timeout_s <= 0) {
    std::fprintf(stderr,
                 "fern-ec-daemon: --replace-after, --orphan-sweep, --read-hedge and --write-hedge must be >= 0, "
                 "--dead-after and --rpc-timeout > 0\n");
    return 2;
  }
  if (o.disk_stall_s < 0) o.disk_stall_s = 0.4 * o.rpc_timeout_s;
  if (o.disk_stall_s >= o.rpc_timeout_s) {
    std::fprintf(stderr,
                 "fern-ec-daemon: warning: --disk-stall %g s is not below --rpc-timeout %g s: a put waiting on a "
                 "node whose disk hangs fails before the node takes itself out\n",
                 o.disk_stall_s, o.rpc_timeout_s);
  }
  fern::daemon::Daemon d(o);
  if (auto s = d.Start(); !s.ok()) {
    std::fprintf(stderr, "fern-ec-daemon[node %d]: cannot start: %s\n", o.node_id, s.ToString().c_str());
    return 1;
  }
  auto s = d.Run();
  return s.ok() ? 0 : 1;
}
