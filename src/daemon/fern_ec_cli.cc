// fern-ec: the command-line tool.
//
//   fern-ec local start --root DIR [--nodes 6 --k 4 --m 2 --shard-size 1MiB ...]
//   fern-ec local stop --root DIR
//   fern-ec local kill NODE --root DIR
//   fern-ec put LOCAL PATH   [--root DIR [--node N] | FERN_EC_SOCKET]
//   fern-ec get PATH LOCAL   [--root DIR [--node N] | FERN_EC_SOCKET]
//   fern-ec ls [PATH] | stat PATH | rm PATH | mkdir PATH | rmdir PATH | mv FROM TO
//
// A local cluster lives under --root: ROOT/hostfile, and per node
// ROOT/node-N/{data,parity,sock,pid,log}. Put ROOT on tmpfs (/dev/shm) for
// data shards in memory.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/client_protocol.h"
#include "common/flags.h"
#include "common/json.h"
#include "common/status.h"

namespace fern::cli {
namespace {

constexpr char kUsage[] =
    "usage: fern-ec COMMAND [args] [flags]   (fern-ec COMMAND --help for flags)\n\n"
    "Commands:\n"
    "  local start --root DIR     start a local cluster of daemons on 127.0.0.1\n"
    "  local stop --root DIR      stop it (SIGTERM)\n"
    "  local kill NODE --root DIR SIGKILL one node\n"
    "  local restart NODE --root DIR [--wipe-data]\n"
    "                             restart one node (--wipe-data: with an empty tmpfs)\n"
    "  put LOCAL PATH             store a local file as PATH (a new version)\n"
    "  get PATH LOCAL             fetch the newest committed version of PATH into\n"
    "                             LOCAL (replaced atomically; '-' is standard\n"
    "                             output; a device or FIFO is written in place)\n"
    "  ls [PATH] [--json]         list a directory (default /)\n"
    "  stat PATH [--json]         size, version, owner, mode, mtime\n"
    "  rm PATH                    remove a file (all its versions)\n"
    "  mkdir PATH | rmdir PATH    create / remove an empty directory\n"
    "  mv FROM TO                 rename a file (replaces TO)\n"
    "  wait [PATH]                until every commit under PATH (default /) queued on\n"
    "                             this node finished; fails if an async one failed\n"
    "  inspect PATH [--json]      version, layout; per stripe each shard's node, state\n"
    "                             and CRC (exit 4 if a stripe has fewer than k good)\n"
    "  scrub [PATH] [--repair] [--json]\n"
    "                             re-encode every stripe under PATH (default /) and\n"
    "                             compare with its parity (exit 5 if a stripe is\n"
    "                             inconsistent or degraded; --repair rewrites bad parity)\n"
    "  status [--json]            every node: up/down, live set, usage, repair progress\n"
    "  run [--root DIR] -- CMD... run an unmodified program with libfernec_preload.so:\n"
    "                             its files under /fern (FERN_EC_MOUNT) live in fern-ec\n\n"
    "The daemon is found from --root DIR [--node N] (a local cluster) or FERN_EC_SOCKET.\n"
    "Exit codes: 0 ok, 1 error, 2 usage, 3 no such file, 4 data unavailable (EIO),\n"
    "5 scrub found inconsistent or degraded stripes.\n";

std::string SelfDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  return std::filesystem::path(std::string(buf, n)).parent_path();
}

std::string NodeDir(const std::string& root, int i) { return root + "/node-" + std::to_string(i); }

int Fail(const std::string& what) {
  std::fprintf(stderr, "fern-ec: %s\n", what.c_str());
  return 1;
}

// client::Roundtrip for a std::string socket path.
int Roundtrip(const std::string& sock, client::Request& req, int send_fd, client::Reply* reply,
              int* recv_fd, int timeout_s = 0) {
  return client::Roundtrip(sock.c_str(), req, send_fd, reply, recv_fd, timeout_s);
}

bool Ping(const std::string& sock) {
  client::Request req;
  req.op = static_cast<uint16_t>(client::Op::kPing);
  client::Reply reply;
  return Roundtrip(sock, req, -1, &reply, nullptr) == 0 && reply.err == 0;
}

// A port for a local daemon, below the kernel's ephemeral range: a port
// taken from that range (bind to 0) is free only until some connect() on
// the machine -- another local cluster's UCX connections -- is handed the
// same number before the daemon binds it. Random in [10000, low end), checked
// bindable; the ephemeral way only if nothing there is free.
uint16_t FreePort(std::set<uint16_t>* taken) {
  auto bindable = [](uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    close(fd);
    return ok ? ntohs(a.sin_port) : uint16_t{0};
  };
  unsigned low = 32768;
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range) range >> low;
  static std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(getpid()));
  if (low > 10000 + 100) {
    for (int attempt = 0; attempt < 200; ++attempt) {
      const uint16_t port = static_cast<uint16_t>(10000 + rng() % (low - 10000));
      if (!taken->count(port) && bindable(port)) return *taken->insert(port).first;
    }
  }
  return *taken->insert(bindable(0)).first;
}

struct LocalOptions {
  std::string root;
  std::string parity_root;  // empty: ROOT/node-N/parity
  int nodes = 6;
  int k = 4;
  int m = 2;
  uint64_t shard_size = 1 << 20;
  uint64_t data_capacity = uint64_t{256} << 20;
  uint64_t parity_capacity = uint64_t{256} << 20;
  double timeout_s = 30;
  int spin_us = 50;
  double replace_after_s = 60;
  int min_shards = 0;
  double orphan_sweep_s = 300;
  bool prepare_parity = true;
  bool wait_prepared = false;
};

pid_t SpawnArgs(const std::string& dir, std::vector<std::string> args);
// One daemon's status: JSON, or a few lines of text; "" when it does not answer.
std::string NodeStatus(const std::string& sock, bool as_text = false);

// Ready means every running node sees every running node alive (heartbeats
// exchanged), so a put right after start or restart is not degraded.
bool WaitConverged(const std::string& root, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int stable_checks = 0;
  while (true) {
    std::vector<int> up;
    std::vector<std::string> statuses;
    for (int i = 0; std::filesystem::exists(NodeDir(root, i)); ++i) {
      std::string st = NodeStatus(NodeDir(root, i) + "/sock");
      if (!st.empty()) {
        up.push_back(i);
        statuses.push_back(st);
      }
    }
    bool converged = true;
    for (const auto& st : statuses) {
      const size_t at = st.find("\"alive\": [");
      const size_t end = st.find(']', at);
      if (at == std::string::npos || end == std::string::npos) return false;
      const std::string list = "," + st.substr(at + 10, end - at - 10) + ",";
      std::string compact;
      for (char c : list) {
        if (c != ' ') compact += c;
      }
      for (int i : up) converged &= compact.find("," + std::to_string(i) + ",") != std::string::npos;
    }
    // Twice, 1.5 s apart: a connection refused by a node still starting may
    // mark it dead a moment after a first look, and its next heartbeat (1 s)
    // brings it back.
    if (converged && ++stable_checks == 2) return true;
    if (!converged) stable_checks = 0;
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(converged ? 1500 : 100));
  }
}

// Sum of the "slots_unprepared" fields of every node's status, or -1 when a
// node does not answer.
long Unprepared(const std::string& root) {
  const std::string key = "\"slots_unprepared\": ";
  long sum = 0;
  for (int i = 0; std::filesystem::exists(NodeDir(root, i)); ++i) {
    const std::string st = NodeStatus(NodeDir(root, i) + "/sock");
    if (st.empty()) return -1;
    for (size_t at = st.find(key); at != std::string::npos; at = st.find(key, at + 1)) {
      sum += std::strtol(st.c_str() + at + key.size(), nullptr, 10);
    }
  }
  return sum;
}

// Until no slot is left to prepare; false when a node stops answering or
// `stall_s` pass without the count going down.
bool WaitPrepared(const std::string& root, double stall_s) {
  const auto stall = std::chrono::duration<double>(stall_s);
  auto progress = std::chrono::steady_clock::now();
  long last = -1;
  while (true) {
    const long left = Unprepared(root);
    if (left <= 0) return left == 0;
    if (last < 0) std::fprintf(stderr, "fern-ec: waiting for the daemons to prepare %ld parity slots\n", left);
    if (last < 0 || left < last) progress = std::chrono::steady_clock::now();
    if (std::chrono::steady_clock::now() - progress > stall) return false;
    last = left;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

// Why a daemon `local start` waited for never answered: its exit status
// (reaped), or the wait that ran out.
std::string HowItEnded(bool exited, int wstatus, double timeout_s) {
  char buf[256];
  if (!exited) {
    std::snprintf(buf, sizeof buf,
                  " did not come up within %g s (--timeout; a daemon first reserves and populates "
                  "its --data-capacity and --parity-capacity, which takes longer when they are large)",
                  timeout_s);
  } else if (WIFSIGNALED(wstatus)) {
    const int sig = WTERMSIG(wstatus);
    std::snprintf(buf, sizeof buf, " was killed by signal %d (%s)%s", sig, strsignal(sig),
                  sig == SIGKILL ? "; if nobody sent it, the kernel's OOM killer did (dmesg): "
                                   "the capacities may not fit in memory"
                                 : "");
  } else {
    std::snprintf(buf, sizeof buf, " exited with status %d", WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1);
  }
  return buf;
}

pid_t SpawnDaemon(const LocalOptions& o, int i) {
  const std::string dir = NodeDir(o.root, i);
  std::vector<std::string> args = {
      SelfDir() + "/fern-ec-daemon", "--node-id", std::to_string(i), "--hostfile",
      o.root + "/hostfile", "--socket", dir + "/sock", "--data-dir", dir + "/data",
      "--parity-dir", o.parity_root.empty() ? dir + "/parity" : o.parity_root + "/node-" + std::to_string(i),
      "--k", std::to_string(o.k), "--m", std::to_string(o.m),
      "--shard-size", std::to_string(o.shard_size), "--data-capacity",
      std::to_string(o.data_capacity), "--parity-capacity", std::to_string(o.parity_capacity),
      "--rpc-timeout", "5", "--spin-us", std::to_string(o.spin_us),
      "--replace-after", std::to_string(o.replace_after_s), "--min-shards", std::to_string(o.min_shards),
      "--orphan-sweep", std::to_string(o.orphan_sweep_s),
      std::string("--prepare-parity=") + (o.prepare_parity ? "1" : "0")};
  {
    std::ofstream cmdline(dir + "/cmdline");  // what `local restart` runs again
    for (const auto& a : args) cmdline << a << "\n";
  }
  return SpawnArgs(dir, args);
}

pid_t SpawnArgs(const std::string& dir, std::vector<std::string> args) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  setsid();  // outlives the CLI; not killed with its terminal
  int log = open((dir + "/log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int devnull = open("/dev/null", O_RDONLY);
  dup2(devnull, 0);
  dup2(log, 1);
  dup2(log, 2);
  setenv("UCX_TLS", "tcp", 0);  // shared memory does not report a killed peer
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  execv(argv[0], argv.data());
  std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
  _exit(127);
}

int LocalStart(const std::vector<std::string>& args) {
  LocalOptions o;
  FlagSet f("usage: fern-ec local start --root DIR [flags]\n\n"
            "Starts --nodes daemons on 127.0.0.1 with their own ports and directories\n"
            "under --root; returns when every one answers on its socket.");
  f.String("root", &o.root, "cluster directory (on tmpfs for in-memory data)");
  f.String("parity-root", &o.parity_root, "parity shards and metadata under DIR/node-N (a disk); default ROOT/node-N/parity");
  f.Int("nodes", &o.nodes, "number of daemons");
  f.Int("k", &o.k, "data shards per stripe");
  f.Int("m", &o.m, "parity shards per stripe");
  f.Size("shard-size", &o.shard_size, "bytes per shard");
  f.Size("data-capacity", &o.data_capacity, "data shard space per node");
  f.Size("parity-capacity", &o.parity_capacity, "parity shard space per node");
  f.Double("timeout", &o.timeout_s, "seconds to wait for the daemons");
  f.Int("spin-us", &o.spin_us, "daemons poll this long after an event before sleeping");
  f.Double("replace-after", &o.replace_after_s,
           "seconds a killed node stays dead before the others rebuild its shards on live nodes "
           "outside their stripes (needs more than k+m nodes; 0: never; fern-ec-daemon --help)");
  f.Int("min-shards", &o.min_shards,
        "a put commits with at least this many shards per stripe on live nodes (k..k+m; 0: k+m; "
        "fern-ec-daemon --help)");
  f.Double("orphan-sweep", &o.orphan_sweep_s,
           "seconds between the daemons' sweeps for shards no record places on their node "
           "(0: never; fern-ec-daemon --help)");
  f.Bool("prepare-parity", &o.prepare_parity,
         "daemons write their fresh parity slabs once in the background (fern-ec-daemon --help)");
  f.Bool("wait-prepared", &o.wait_prepared,
         "return only when no daemon has parity slots left to prepare (fails after --timeout "
         "seconds without progress)");
  if (auto s = f.Parse(args); !s.ok()) return Fail(s.ToString());
  if (f.help_requested()) return std::printf("%s", f.Help().c_str()), 0;
  if (o.root.empty()) return Fail("local start: --root is required");
  if (o.nodes < o.k + o.m) {
    return Fail("local start: " + std::to_string(o.nodes) + " nodes cannot hold k+m=" +
                std::to_string(o.k + o.m) + " shards per stripe");
  }
  std::filesystem::create_directories(o.root);
  if (std::filesystem::exists(o.root + "/hostfile")) {
    for (int i = 0; i < o.nodes; ++i) {
      if (Ping(NodeDir(o.root, i) + "/sock")) {
        return Fail("local start: a cluster is already running in " + o.root);
      }
    }
  }
  // A restarted cluster keeps its addresses (and so its shards' placement).
  int listed = 0;
  {
    std::ifstream in(o.root + "/hostfile");
    std::string line;
    while (std::getline(in, line)) listed += !line.empty();
  }
  // A fresh cluster's ports are checked free, but another cluster starting
  // at the same moment may bind one first: a node that exits for that is
  // retried with new ports for all (at most kPortAttempts times).
  const bool fresh = listed != o.nodes;
  constexpr int kPortAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    if (fresh) {
      std::set<uint16_t> taken;
      std::ofstream hf(o.root + "/hostfile");
      for (int i = 0; i < o.nodes; ++i) hf << i << " 127.0.0.1:" << FreePort(&taken) << "\n";
    }
    std::vector<pid_t> pids;
    for (int i = 0; i < o.nodes; ++i) {
      std::filesystem::create_directories(NodeDir(o.root, i));
      if (attempt > 1) std::filesystem::remove(NodeDir(o.root, i) + "/log");  // the failed try's
      pids.push_back(SpawnDaemon(o, i));
      std::ofstream(NodeDir(o.root, i) + "/pid") << pids.back() << "\n";
    }
    std::string failure;
    bool port_race = false;
    std::vector<bool> reaped(pids.size(), false);
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.timeout_s);
    for (int i = 0; i < o.nodes && failure.empty(); ++i) {
      while (!Ping(NodeDir(o.root, i) + "/sock")) {
        int wstatus = 0;
        const bool exited = waitpid(pids[i], &wstatus, WNOHANG) == pids[i];
        reaped[i] = exited;
        if (exited || std::chrono::steady_clock::now() > until) {
          // Its log's end, so a failure says why even if the directory goes.
          std::string tail, text;
          if (std::ifstream log(NodeDir(o.root, i) + "/log"); log) {
            std::string line;
            std::vector<std::string> lines;
            while (std::getline(log, line)) lines.push_back(line), text += line + "\n";
            for (size_t l = lines.size() > 5 ? lines.size() - 5 : 0; l < lines.size(); ++l) tail += "\n  " + lines[l];
          }
          port_race = exited && (text.find("Address already in use") != std::string::npos ||
                                 text.find("cannot start: UNAVAILABLE: listen on") != std::string::npos);
          failure = "local start: node " + std::to_string(i) + HowItEnded(exited, wstatus, o.timeout_s) +
                    "; see " + NodeDir(o.root, i) + "/log" + tail;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    if (failure.empty()) break;
    for (size_t i = 0; i < pids.size(); ++i) {
      if (reaped[i]) continue;  // its pid may belong to another process by now
      kill(pids[i], SIGKILL);
      waitpid(pids[i], nullptr, 0);
    }
    if (!(fresh && port_race && attempt < kPortAttempts)) return Fail(failure);
    std::fprintf(stderr, "fern-ec: local start: a port was taken meanwhile; again with new ports\n");
  }
  if (!WaitConverged(o.root, o.timeout_s)) {
    return Fail("local start: the nodes did not all see each other alive; see " + o.root + "/node-*/log");
  }
  if (o.wait_prepared && !WaitPrepared(o.root, o.timeout_s)) {
    return Fail("local start: the daemons stopped preparing their parity slabs; see " + o.root + "/node-*/log");
  }
  std::printf("fern-ec: %d nodes up in %s (k=%d m=%d shard %s)\n", o.nodes, o.root.c_str(), o.k,
              o.m, FormatSize(o.shard_size).c_str());
  return 0;
}

pid_t ReadPid(const std::string& root, int i) {
  std::ifstream in(NodeDir(root, i) + "/pid");
  long pid = 0;
  in >> pid;
  return static_cast<pid_t>(pid);
}

int LocalSignal(const std::vector<std::string>& args, bool kill_one) {
  std::string root;
  FlagSet f(kill_one ? "usage: fern-ec local kill NODE --root DIR   (SIGKILL)"
                     : "usage: fern-ec local stop --root DIR   (SIGTERM to every node)");
  f.String("root", &root, "cluster directory");
  if (auto s = f.Parse(args); !s.ok()) return Fail(s.ToString());
  if (f.help_requested()) return std::printf("%s", f.Help().c_str()), 0;
  if (root.empty()) return Fail("--root is required");
  if (kill_one) {
    if (f.positional().size() != 1) return Fail("local kill: give exactly one node number");
    const int node = std::atoi(f.positional()[0].c_str());
    pid_t pid = ReadPid(root, node);
    if (pid <= 0 || kill(pid, SIGKILL) != 0) {
      return Fail("local kill: node " + f.positional()[0] + " is not running in " + root);
    }
    return 0;
  }
  // Every node finishes its queued (async) commits while all its peers are
  // still up; a daemon's own drain at SIGTERM could not, once they are gone.
  for (int i = 0; std::filesystem::exists(NodeDir(root, i)); ++i) {
    if (ReadPid(root, i) <= 0) continue;
    client::Request req;
    req.op = static_cast<uint16_t>(client::Op::kWait);
    req.path[0] = '/';
    req.path_len = 1;
    client::Reply reply;
    // Bounded: a stopped (SIGSTOP) or wedged node must not hang the stop.
    const int rc = Roundtrip(NodeDir(root, i) + "/sock", req, -1, &reply, nullptr, 120);
    if (rc == EAGAIN || rc == EWOULDBLOCK) {
      std::fprintf(stderr, "fern-ec: local stop: node %d did not finish its commits within 120 s\n", i);
    } else if (rc == 0 && reply.err != 0) {
      std::fprintf(stderr, "fern-ec: local stop: node %d: %s\n", i, reply.message);
    }
  }
  std::vector<pid_t> pids;
  for (int i = 0; std::filesystem::exists(NodeDir(root, i)); ++i) {
    pid_t pid = ReadPid(root, i);
    if (pid > 0 && kill(pid, SIGTERM) == 0) pids.push_back(pid);
  }
  // Return only when they are gone; SIGKILL stragglers after 10 s.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (pid_t pid : pids) {
    while (kill(pid, 0) == 0 && std::chrono::steady_clock::now() < until) {
      waitpid(pid, nullptr, WNOHANG);  // reaps it if it is our child
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (kill(pid, 0) == 0) kill(pid, SIGKILL);
  }
  return 0;
}

bool WaitUp(const std::string& sock, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!Ping(sock)) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

int LocalRestart(const std::vector<std::string>& args) {
  std::string root;
  bool wipe = false;
  FlagSet f("usage: fern-ec local restart NODE --root DIR [--wipe-data]\n\n"
            "SIGKILLs the node if it runs, then starts it again with the same address and\n"
            "flags. --wipe-data empties its data directory first: a rebooted node whose\n"
            "tmpfs is gone (its parity and metadata on disk survive).");
  f.String("root", &root, "cluster directory");
  f.Bool("wipe-data", &wipe, "start with an empty data (tmpfs) directory");
  if (auto s = f.Parse(args); !s.ok()) return Fail(s.ToString());
  if (f.help_requested()) return std::printf("%s", f.Help().c_str()), 0;
  if (root.empty()) return Fail("--root is required");
  if (f.positional().size() != 1) return Fail("local restart: give exactly one node number");
  const int node = std::atoi(f.positional()[0].c_str());
  const std::string dir = NodeDir(root, node);
  std::vector<std::string> cmd;
  {
    std::ifstream in(dir + "/cmdline");
    std::string line;
    while (std::getline(in, line)) cmd.push_back(line);
  }
  if (cmd.empty()) return Fail("local restart: node " + f.positional()[0] + " was never started in " + root);
  if (pid_t old = ReadPid(root, node); old > 0 && kill(old, SIGKILL) == 0) {
    while (kill(old, 0) == 0) {
      waitpid(old, nullptr, WNOHANG);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (wipe) {
    std::error_code ec;
    std::filesystem::remove_all(dir + "/data", ec);
    if (ec) return Fail("local restart: wipe " + dir + "/data: " + ec.message());
  }
  pid_t pid = SpawnArgs(dir, cmd);
  std::ofstream(dir + "/pid") << pid << "\n";
  if (!WaitUp(dir + "/sock", 30)) {
    return Fail("local restart: node " + f.positional()[0] + " did not come up; see " + dir + "/log");
  }
  if (!WaitConverged(root, 30)) {
    return Fail("local restart: the running nodes did not all see node " + f.positional()[0] + " alive");
  }
  return 0;
}

std::string SocketFor(const std::string& root, int node) {
  if (!root.empty()) return NodeDir(root, node) + "/sock";
  const char* env = std::getenv("FERN_EC_SOCKET");
  return env ? env : "";
}

// What the client commands share: --root/--node or FERN_EC_SOCKET, operands.
struct ClientCall {
  std::string sock;
  std::string first, second;
  bool json = false;
};

// Returns -1 to go on with `call` filled in, or the exit code to return now.
// `min`..`max` operands; a missing first operand defaults to "/".
int ParseClientCall(const std::vector<std::string>& args, const std::string& cmd,
                    const std::string& operands, ClientCall* call, size_t min = 2,
                    size_t max = 2, bool json_flag = false) {
  std::string root;
  int node = 0;
  FlagSet f("usage: fern-ec " + cmd + " " + operands +
            " [--root DIR [--node N]]   (or FERN_EC_SOCKET)");
  f.String("root", &root, "local cluster directory");
  f.Int("node", &node, "which node's daemon to talk to");
  if (json_flag) f.Bool("json", &call->json, "print JSON");
  if (auto s = f.Parse(args); !s.ok()) return Fail(s.ToString());
  if (f.help_requested()) return std::printf("%s", f.Help().c_str()), 0;
  const auto& pos = f.positional();
  if (pos.size() < min || pos.size() > max) return Fail(cmd + ": give " + operands), 2;
  call->sock = SocketFor(root, node);
  if (call->sock.empty()) return Fail(cmd + ": no daemon: give --root or set FERN_EC_SOCKET");
  call->first = pos.size() > 0 ? pos[0] : "/";
  call->second = pos.size() > 1 ? pos[1] : "";
  for (const std::string* p : {&call->first, &call->second}) {
    if (p->size() >= client::kMaxPath) return Fail(cmd + ": path too long");
  }
  return -1;
}

// REQUIRES: path.size() < client::kMaxPath
client::Request MakeRequest(client::Op op, const std::string& path) {
  return client::MakeRequest(op, path.data(), path.size());
}

// The `size` bytes of a reply's memfd, which is closed here; false when the
// daemon sent fewer (or no memfd).
bool ReadReply(int mfd, uint64_t size, std::string* out) {
  out->assign(size, '\0');
  const bool ok = size == 0 || (mfd >= 0 && pread(mfd, out->data(), size, 0) == static_cast<ssize_t>(size));
  if (mfd >= 0) close(mfd);
  return ok;
}

// Exit code for a daemon's error reply: 3 no such file, 4 data unavailable.
int ReplyFailed(const std::string& what, const client::Reply& reply) {
  std::fprintf(stderr, "fern-ec: %s: %s (%s)\n", what.c_str(), std::strerror(reply.err), reply.message);
  return reply.err == ENOENT ? 3 : reply.err == EIO ? 4 : 1;
}

// rm, mkdir, rmdir, mv, wait: one request, no output.
int Simple(const std::vector<std::string>& args, const std::string& cmd, client::Op op) {
  ClientCall call;
  const bool two = op == client::Op::kRename;
  const bool optional = op == client::Op::kWait;  // default "/": every path
  if (int rc = ParseClientCall(args, cmd, two ? "FROM TO" : optional ? "[PATH]" : "PATH", &call,
                               two ? 2 : optional ? 0 : 1, two ? 2 : 1);
      rc >= 0) {
    return rc;
  }
  client::Request req = MakeRequest(op, call.first);
  if (two) {
    req.path2_len = call.second.size();
    std::memcpy(req.path2, call.second.data(), call.second.size());
  }
  if (op == client::Op::kMkdir) req.mode = 0755;
  client::Reply reply;
  if (int rc = Roundtrip(call.sock, req, -1, &reply, nullptr); rc != 0) {
    return Fail(cmd + ": daemon at " + call.sock + ": " + std::strerror(rc));
  }
  if (reply.err != 0) return ReplyFailed(cmd + " " + call.first, reply);
  return 0;
}

int StatCmd(const std::vector<std::string>& args) {
  ClientCall call;
  if (int rc = ParseClientCall(args, "stat", "PATH", &call, 1, 1, true); rc >= 0) return rc;
  client::Request req = MakeRequest(client::Op::kStat, call.first);
  client::Reply r;
  if (int rc = Roundtrip(call.sock, req, -1, &r, nullptr); rc != 0) {
    return Fail("stat: daemon at " + call.sock + ": " + std::strerror(rc));
  }
  if (r.err != 0) return ReplyFailed("stat " + call.first, r);
  const bool dir = S_ISDIR(r.mode);
  if (call.json) {
    std::printf("{\"path\": %s, \"type\": \"%s\", \"size\": %llu, \"version\": %llu, "
                "\"uid\": %u, \"gid\": %u, \"mode\": \"%04o\", \"mtime_ns\": %llu}\n",
                JsonString(call.first).c_str(), dir ? "dir" : "file",
                static_cast<unsigned long long>(r.size), static_cast<unsigned long long>(r.file_version),
                r.uid, r.gid, r.mode & 07777, static_cast<unsigned long long>(r.mtime_ns));
  } else {
    std::printf("%s: %s, %llu bytes, version %llu, uid %u gid %u mode %04o, mtime %llu.%09llu\n",
                call.first.c_str(), dir ? "directory" : "file", static_cast<unsigned long long>(r.size),
                static_cast<unsigned long long>(r.file_version), r.uid, r.gid, r.mode & 07777,
                static_cast<unsigned long long>(r.mtime_ns / 1000000000),
                static_cast<unsigned long long>(r.mtime_ns % 1000000000));
  }
  return 0;
}

int Ls(const std::vector<std::string>& args) {
  ClientCall call;
  if (int rc = ParseClientCall(args, "ls", "[PATH]", &call, 0, 1, true); rc >= 0) return rc;
  client::Request req = MakeRequest(client::Op::kList, call.first);
  client::Reply r;
  int mfd = -1;
  if (int rc = Roundtrip(call.sock, req, -1, &r, &mfd); rc != 0) {
    return Fail("ls: daemon at " + call.sock + ": " + std::strerror(rc));
  }
  if (r.err != 0) return ReplyFailed("ls " + call.first, r);
  std::string buf;
  if (!ReadReply(mfd, r.size, &buf)) return Fail("ls: short listing from the daemon");
  if (call.json) std::printf("[");
  size_t at = 0;
  bool first = true;
  while (at < buf.size()) {
    size_t end = buf.find('\0', at);
    if (end == std::string::npos || end == at) return Fail("ls: malformed listing from the daemon");
    const bool dir = buf[at] == 'd';
    const std::string name = buf.substr(at + 1, end - at - 1);
    if (call.json) {
      std::printf("%s{\"name\": %s, \"type\": \"%s\"}", first ? "" : ", ", JsonString(name).c_str(),
                  dir ? "dir" : "file");
    } else {
      std::printf("%s%s\n", name.c_str(), dir ? "/" : "");
    }
    first = false;
    at = end + 1;
  }
  if (call.json) std::printf("]\n");
  return 0;
}

// inspect: the daemon renders JSON or the table; exit 4 if a stripe is lost.
int InspectCmd(const std::vector<std::string>& args) {
  ClientCall call;
  if (int rc = ParseClientCall(args, "inspect", "PATH", &call, 1, 1, true); rc >= 0) return rc;
  client::Request req = MakeRequest(client::Op::kInspect, call.first);
  if (!call.json) req.flags = client::kInspectText;
  client::Reply r;
  int mfd = -1;
  if (int rc = Roundtrip(call.sock, req, -1, &r, &mfd); rc != 0) {
    return Fail("inspect: daemon at " + call.sock + ": " + std::strerror(rc));
  }
  if (r.err != 0) return ReplyFailed("inspect " + call.first, r);
  std::string buf;
  if (!ReadReply(mfd, r.size, &buf)) return Fail("inspect: short reply from the daemon");
  std::fwrite(buf.data(), 1, buf.size(), stdout);
  if (call.json) std::printf("\n");
  const bool lost = call.json ? buf.find("\"health\": \"lost\"") != std::string::npos
                              : buf.find(", 0 lost\n") == std::string::npos;
  return lost ? 4 : 0;
}

// scrub: the daemon re-encodes and renders the report. Exit 5 when a stripe
// is still inconsistent (not repaired) or degraded.
int ScrubCmd(const std::vector<std::string>& args) {
  std::string root;
  int node = 0;
  bool json = false, repair = false;
  FlagSet f("usage: fern-ec scrub [PATH] [--repair] [--json] [--root DIR [--node N]]   (or FERN_EC_SOCKET)\n\n"
            "Fetches every shard of every stripe of PATH (a file, or all files under a\n"
            "directory; default /), re-encodes the data shards and compares with the\n"
            "stored parity and with the data CRCs each parity records. Reports stripes\n"
            "whose parity differs, whose data shard disagrees with what every parity\n"
            "records, whose shards carry different update seqs, or which miss shards\n"
            "(degraded). Exit 0 when all are consistent, 5 while one is inconsistent\n"
            "(not repaired) or degraded.");
  f.String("root", &root, "local cluster directory");
  f.Int("node", &node, "which node's daemon to talk to");
  f.Bool("json", &json, "print JSON");
  f.Bool("repair", &repair,
         "rewrite parity that differs from the encoding of the data, and a data shard that "
         "every parity's record contradicts (decoded from the other shards and checked); a shard "
         "is rewritten only if unchanged since it was read");
  if (auto s = f.Parse(args); !s.ok()) return Fail(s.ToString());
  if (f.help_requested()) return std::printf("%s", f.Help().c_str()), 0;
  if (f.positional().size() > 1) return Fail("scrub: give at most one PATH"), 2;
  const std::string path = f.positional().empty() ? "/" : f.positional()[0];
  if (path.size() >= client::kMaxPath) return Fail("scrub: path too long");
  const std::string sock = SocketFor(root, node);
  if (sock.empty()) return Fail("scrub: no daemon: give --root or set FERN_EC_SOCKET");
  client::Request req = MakeRequest(client::Op::kScrub, path);
  req.flags = (repair ? client::kScrubRepair : 0) | (json ? 0 : client::kScrubText);
  client::Reply r;
  int mfd = -1;
  if (int rc = Roundtrip(sock, req, -1, &r, &mfd); rc != 0) {
    return Fail("scrub: daemon at " + sock + ": " + std::strerror(rc));
  }
  if (r.err != 0) return ReplyFailed("scrub " + path, r);
  std::string buf;
  if (!ReadReply(mfd, r.size, &buf)) return Fail("scrub: short reply from the daemon");
  std::fwrite(buf.data(), 1, buf.size(), stdout);
  auto count = [&](const std::string& key) -> uint64_t {
    const std::string pat = json ? "\"" + key + "\": " : " " + key;
    size_t at = buf.find(pat);
    if (at == std::string::npos) return 0;
    if (json) return std::strtoull(buf.c_str() + at + pat.size(), nullptr, 10);
    size_t start = buf.rfind(' ', at - 1);  // "N inconsistent": the number before the word
    return std::strtoull(buf.c_str() + start + 1, nullptr, 10);
  };
  const uint64_t bad = count("inconsistent") - std::min(count("inconsistent"), count("repaired"));
  return bad > 0 || count("degraded") > 0 ? 5 : 0;
}

// One node's status JSON, or "" when it does not answer within
// kStatusTimeoutS (a stopped or hung daemon still accepts the connection).
constexpr int kStatusTimeoutS = 5;
std::string NodeStatus(const std::string& sock, bool as_text) {
  client::Request req = MakeRequest(client::Op::kStatus, "/");
  req.flags = as_text ? client::kStatusText : 0;
  client::Reply r;
  int mfd = -1;
  if (Roundtrip(sock, req, -1, &r, &mfd, kStatusTimeoutS) != 0 || r.err != 0 || mfd < 0) {
    if (mfd >= 0) close(mfd);
    return "";
  }
  std::string text;
  return ReadReply(mfd, r.size, &text) ? text : "";
}

int StatusCmd(const std::vector<std::string>& args) {
  std::string root;
  bool json = false;
  FlagSet f("usage: fern-ec status [--root DIR | FERN_EC_SOCKET] [--json]\n\n"
            "Asks every node of a local cluster (or the one daemon at FERN_EC_SOCKET) for\n"
            "its status: the nodes it sees alive, shard space used, and the progress of\n"
            "its repair pass (shards rebuilt after a restart with an empty tmpfs), and its\n"
            "decodes (degraded stripes; how many the parity's data CRCs confirmed or refused),\n"
            "and its read checks (healthy stripes whose data a parity's recorded CRCs confirmed,\n"
            "could not check, or contradicted: those were decoded around the wrong shard),\n"
            "its in-place update counters, and the stripes of the files it is the first live\n"
            "metadata owner of (degraded: a shard's node is down; lost: more than m are):\n"
            "a few lines per node and a cluster total, or with --json one JSON object per\n"
            "node. A node that does not answer within 5 s counts as down (a stopped\n"
            "daemon still accepts the connection). Exit code 1 if any node is down.");
  f.String("root", &root, "local cluster directory");
  f.Bool("json", &json, "print a JSON array");
  if (auto s = f.Parse(args); !s.ok()) return Fail(s.ToString());
  if (f.help_requested()) return std::printf("%s", f.Help().c_str()), 0;
  std::vector<std::pair<std::string, std::string>> nodes;  // name, socket
  if (!root.empty()) {
    for (int i = 0; std::filesystem::exists(NodeDir(root, i)); ++i) {
      nodes.push_back({std::to_string(i), NodeDir(root, i) + "/sock"});
    }
  } else if (const char* env = std::getenv("FERN_EC_SOCKET")) {
    nodes.push_back({"?", env});
  }
  if (nodes.empty()) return Fail("status: no daemon: give --root or set FERN_EC_SOCKET");
  bool all_up = true;
  // Text: the cluster's stripe health, the sum of each node's "stripes:"
  // line (each counts the files it is the first live owner of).
  unsigned long long files = 0, stripes = 0, degraded = 0, lost = 0;
  if (json) std::printf("[");
  for (size_t i = 0; i < nodes.size(); ++i) {
    const std::string st = NodeStatus(nodes[i].second, !json);
    if (const size_t at = json ? std::string::npos : st.find("\n  stripes: "); at != std::string::npos) {
      unsigned long long s = 0, f = 0, d = 0, l = 0;
      if (std::sscanf(st.c_str() + at, "\n  stripes: %llu in the %llu files this node is first owner of; %llu "
                                       "degraded (a shard's node down), %llu lost",
                      &s, &f, &d, &l) == 4) {
        stripes += s, files += f, degraded += d, lost += l;
      }
    }
    all_up &= !st.empty();
    if (json) {
      std::printf("%s%s", i ? ", " : "",
                  st.empty() ? ("{\"node\": " + nodes[i].first + ", \"down\": true}").c_str() : st.c_str());
    } else if (st.empty()) {
      std::printf("node %s: DOWN (no answer at %s within %d s)\n", nodes[i].first.c_str(), nodes[i].second.c_str(),
                  kStatusTimeoutS);
    } else {
      std::printf("%s", st.c_str());
    }
  }
  if (json) std::printf("]\n");
  if (!json) {
    std::printf("cluster: %llu files, %llu stripes: %llu degraded, %llu lost%s\n", files, stripes, degraded, lost,
                all_up ? "" : " (as the nodes that answered see it)");
  }
  return all_up ? 0 : 1;
}

int Run(const std::vector<std::string>& all) {
  // Flags before "--" are ours; everything after is the command, untouched.
  std::vector<std::string> args, cmd;
  bool in_cmd = false;
  for (const auto& a : all) {
    if (!in_cmd && a == "--") {
      in_cmd = true;
    } else {
      (in_cmd ? cmd : args).push_back(a);
    }
  }
  std::string root, mount, preload = SelfDir() + "/../lib/libfernec_preload.so";
  int node = 0;
  FlagSet f("usage: fern-ec run [--root DIR [--node N] | FERN_EC_SOCKET] [--mount /fern] -- CMD ARGS...\n\n"
            "Runs CMD with LD_PRELOAD=libfernec_preload.so and the environment that points\n"
            "it at a daemon: files under the mount prefixes (FERN_EC_MOUNT, colon-separated,\n"
            "default /fern) are stored in fern-ec, everything else is untouched. A file\n"
            "written there is committed (erasure-coded over the cluster) at its last close,\n"
            "fclose or fsync; a failed commit makes that call fail with errno set.");
  f.String("root", &root, "local cluster directory");
  f.Int("node", &node, "which node's daemon to use");
  f.String("mount", &mount, "managed path prefixes (default: $FERN_EC_MOUNT or /fern)");
  f.String("preload", &preload, "the preload library");
  if (auto s = f.Parse(args); !s.ok()) return Fail(s.ToString());
  if (f.help_requested()) return std::printf("%s", f.Help().c_str()), 0;
  if (!f.positional().empty()) return Fail("run: put the command after --");
  if (cmd.empty()) return Fail("run: give a command after --"), 2;
  const std::string sock = SocketFor(root, node);
  if (sock.empty()) return Fail("run: no daemon: give --root or set FERN_EC_SOCKET");
  if (access(preload.c_str(), R_OK) != 0) return Fail("run: " + preload + ": " + std::strerror(errno));
  if (!Ping(sock)) return Fail("run: no daemon answers at " + sock);
  char resolved[PATH_MAX];
  if (realpath(preload.c_str(), resolved) != nullptr) preload = resolved;
  std::string ld = preload;
  if (const char* old = std::getenv("LD_PRELOAD"); old && *old) ld += std::string(":") + old;
  setenv("LD_PRELOAD", ld.c_str(), 1);
  setenv("FERN_EC_SOCKET", sock.c_str(), 1);
  if (!mount.empty()) setenv("FERN_EC_MOUNT", mount.c_str(), 1);
  std::vector<char*> argv;
  for (auto& a : cmd) argv.push_back(a.data());
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  return Fail("run: " + cmd[0] + ": " + std::strerror(errno)), 127;
}

// Copies the first `size` bytes of the file `from` to `to`: sendfile, or
// plain reads and writes where `to` refuses it. Returns 0 or an errno.
int CopyOut(int from, int to, uint64_t size) {
  off_t off = 0;
  while (off < static_cast<off_t>(size)) {
    ssize_t n = sendfile(to, from, &off, size - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EINVAL || errno == ENOSYS) && off == 0) break;
    if (n < 0) return errno;
    if (n == 0) return EIO;  // `from` is shorter than it said
  }
  std::vector<char> buf;
  while (off < static_cast<off_t>(size)) {
    if (buf.empty()) buf.resize(1 << 20);
    ssize_t r = pread(from, buf.data(), std::min<uint64_t>(buf.size(), size - off), off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r < 0 ? errno : EIO;
    for (ssize_t done = 0; done < r;) {
      ssize_t w = write(to, buf.data() + done, r - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return w < 0 ? errno : EIO;
      done += w;
    }
    off += r;
  }
  return 0;
}

int Put(const std::vector<std::string>& args) {
  ClientCall call;
  if (int rc = ParseClientCall(args, "put", "LOCAL PATH", &call); rc >= 0) return rc;
  const std::string& local = call.first;
  const std::string& path = call.second;
  if (path.size() >= client::kMaxPath) return Fail("put: path too long");
  int in = open(local.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return Fail("put: " + local + ": " + std::strerror(errno));
  int mfd = memfd_create("fern-ec-put", MFD_CLOEXEC);
  if (mfd < 0) return Fail(std::string("put: memfd_create: ") + std::strerror(errno));
  struct stat st {};
  fstat(in, &st);
  // Copy into a memfd the daemon can map (a regular file could change under it).
  if (int err = CopyOut(in, mfd, st.st_size); err != 0) {
    return Fail("put: copy " + local + ": " + std::strerror(err));
  }
  close(in);
  client::Request req = MakeRequest(client::Op::kPut, path);
  req.size = st.st_size;
  req.mode = st.st_mode & 0777;
  client::Reply reply;
  int rc = Roundtrip(call.sock, req, mfd, &reply, nullptr);
  close(mfd);
  if (rc != 0) return Fail("put: daemon at " + call.sock + ": " + std::strerror(rc));
  if (reply.err != 0) return Fail("put " + path + ": " + std::strerror(reply.err) + " (" + reply.message + ")");
  return 0;
}

int Get(const std::vector<std::string>& args) {
  ClientCall call;
  if (int rc = ParseClientCall(args, "get", "PATH LOCAL", &call); rc >= 0) return rc;
  const std::string& path = call.first;
  const std::string& local = call.second;
  if (path.size() >= client::kMaxPath) return Fail("get: path too long");
  // "-", a device (/dev/null) or a FIFO is written as it is; a regular file
  // is replaced atomically (temporary + fsync + rename), so a failed get
  // never leaves a partial file and never turns a device into a file.
  struct stat st {};
  const bool to_stdout = local == "-";
  const bool exists = !to_stdout && stat(local.c_str(), &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) return Fail("get: " + local + " is a directory");
  client::Request req = MakeRequest(client::Op::kGet, path);
  client::Reply reply;
  if (to_stdout || (exists && !S_ISREG(st.st_mode))) {
    int mfd = -1;
    int rc = Roundtrip(call.sock, req, -1, &reply, &mfd);
    if (rc != 0) return Fail("get: daemon at " + call.sock + ": " + std::strerror(rc));
    if (reply.err != 0) return ReplyFailed("get " + path, reply);
    if (mfd < 0) return Fail("get: the daemon sent no data");
    const int out = to_stdout ? STDOUT_FILENO : open(local.c_str(), O_WRONLY | O_CLOEXEC);
    int err = out < 0 ? errno : CopyOut(mfd, out, reply.size);
    close(mfd);
    if (out >= 0 && out != STDOUT_FILENO && close(out) != 0 && err == 0) err = errno;
    return err ? Fail("get: write " + local + ": " + std::strerror(err)) : 0;
  }
  // The daemon writes the bytes straight into the temporary (GET with
  // kGetInto): no reply memfd to fill and copy out of.
  const std::string tmp = local + ".fern-ec-tmp";
  const int out = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) return Fail("get: " + tmp + ": " + std::strerror(errno));
  req.flags = client::kGetInto;
  int rc = Roundtrip(call.sock, req, out, &reply, nullptr);
  if (rc != 0 || reply.err != 0) {
    close(out);
    unlink(tmp.c_str());
    if (rc != 0) return Fail("get: daemon at " + call.sock + ": " + std::strerror(rc));
    return ReplyFailed("get " + path, reply);
  }
  struct stat got {};
  int err = fstat(out, &got) != 0 ? errno : static_cast<uint64_t>(got.st_size) != reply.size ? EIO : 0;
  if (err == 0 && fsync(out) != 0) err = errno;
  if (close(out) != 0 && err == 0) err = errno;
  if (err == 0 && rename(tmp.c_str(), local.c_str()) != 0) err = errno;
  if (err != 0) {
    unlink(tmp.c_str());
    return Fail("get: write " + local + ": " + std::strerror(err));
  }
  return 0;
}

}  // namespace
}  // namespace fern::cli

int main(int argc, char** argv) {
  using namespace fern::cli;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::printf("%s", kUsage);
    return args.empty() ? 2 : 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  if (cmd == "local") {
    if (args.empty()) return Fail("local: give start, stop or kill");
    const std::string sub = args[0];
    args.erase(args.begin());
    if (sub == "start") return LocalStart(args);
    if (sub == "stop") return LocalSignal(args, false);
    if (sub == "kill") return LocalSignal(args, true);
    if (sub == "restart") return LocalRestart(args);
    return Fail("local: unknown subcommand '" + sub + "'");
  }
  if (cmd == "put") return Put(args);
  if (cmd == "get") return Get(args);
  if (cmd == "ls") return Ls(args);
  if (cmd == "status") return StatusCmd(args);
  if (cmd == "inspect") return InspectCmd(args);
  if (cmd == "scrub") return ScrubCmd(args);
  if (cmd == "run") return Run(args);
  if (cmd == "stat") return StatCmd(args);
  if (cmd == "rm") return Simple(args, "rm", fern::client::Op::kUnlink);
  if (cmd == "mkdir") return Simple(args, "mkdir", fern::client::Op::kMkdir);
  if (cmd == "rmdir") return Simple(args, "rmdir", fern::client::Op::kRmdir);
  if (cmd == "mv") return Simple(args, "mv", fern::client::Op::kRename);
  if (cmd == "wait") return Simple(args, "wait", fern::client::Op::kWait);
  std::fprintf(stderr, "fern-ec: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
  return 2;
}
