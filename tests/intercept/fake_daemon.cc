// fern_fake_daemon: a second, in-memory implementation of the daemon side of
// common/client_protocol.h, for deterministic tests of libfernec_preload.so.
//
//   fern_fake_daemon --socket PATH [--capacity BYTES] [--log FILE]
//
// Single-threaded poll loop; every request is answered before the next is
// read. Files live in a std::map (path -> bytes + owner/mode/mtime/version);
// directories are explicit (MKDIR) or implicit (a proper prefix of a file or
// explicit directory). The caller's uid/gid come from SO_PEERCRED; permission
// checks follow POSIX owner/group/other bits with a root bypass (root needs an
// x bit only for X_OK on files), and removal (unlink, rename, rmdir) is for
// the owner or root, as in the real daemon. GET and LIST reply with sealed
// memfds (F_SEAL_WRITE|SHRINK|GROW|SEAL). --capacity makes a PUT that would
// take the stored bytes past BYTES fail with ENOSPC; --log appends one line
// per request ("PUT /a 123 -> 0") so tests can count what reached the daemon;
// an UPDATE whose blob parsed adds its ranges as offset+length
// ("UPDATE /a 72 -> 0 ranges 5+3 4094+4").
//
// UPDATE checks its blob strictly (magic, range table, sizes adding up
// exactly, ranges sorted, disjoint, non-empty and inside the file: EINVAL;
// also for a blob of no ranges, which no client needs) and answers ESTALE
// unless the file's size and version are the blob's; it changes the bytes in
// place and keeps the version, so updates of one version by several writers
// compose, while a PUT makes a new one. Versions are numbered across the
// store, so a file deleted and created again never repeats one. An UPDATE of
// a file named "unplaced" answers EAGAIN, as the real daemon does when a
// node of a stripe the update touches is down (a whole-file PUT can still
// be placed).
// Prints "ready" on stdout once it accepts connections; exits on SIGTERM.
//
// Beyond the real daemon it refuses a file or directory under a path that is
// a file (ENOTDIR); otherwise errors are those of the header comment.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/client_protocol.h"
#include "common/stop_signals.h"

namespace {

using fern::client::Op;
using fern::client::Reply;
using fern::client::Request;
using fern::client::UpdateBlobHeader;
using fern::client::UpdateBlobRange;

struct Caller {
  uint32_t uid = 0;
  uint32_t gid = 0;
};

struct Meta {
  uint32_t mode = 0;  // permission bits
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t mtime_ns = 0;
};

struct File {
  std::string bytes;
  Meta meta;
  uint64_t version = 0;
};

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

bool Permits(const Meta& m, bool is_dir, const Caller& c, int mask) {
  if (c.uid == 0) return !(mask & X_OK) || is_dir || (m.mode & 0111);
  uint32_t bits = c.uid == m.uid ? (m.mode >> 6) & 7 : c.gid == m.gid ? (m.mode >> 3) & 7 : m.mode & 7;
  const uint32_t want = ((mask & R_OK) ? 4 : 0) | ((mask & W_OK) ? 2 : 0) | ((mask & X_OK) ? 1 : 0);
  return (bits & want) == want;
}

bool MayRemove(const Meta& m, const Caller& c) { return c.uid == 0 || c.uid == m.uid; }

// An UPDATE blob, checked against the layout of client_protocol.h.
struct UpdateBlob {
  UpdateBlobHeader header;
  std::vector<UpdateBlobRange> ranges;
  const char* bytes = nullptr;  // the new bytes of every range, in range order
};

// Parses blob into *out; EINVAL for anything but exactly the documented layout.
int ParseUpdate(const std::string& blob, UpdateBlob* out) {
  if (blob.size() < sizeof out->header) return EINVAL;
  std::memcpy(&out->header, blob.data(), sizeof out->header);
  const UpdateBlobHeader& h = out->header;
  if (h.magic != fern::client::kUpdateMagic || h.ranges == 0 || h.ranges > fern::client::kMaxUpdateRanges) {
    return EINVAL;
  }
  const uint64_t table = sizeof h + uint64_t{h.ranges} * sizeof(UpdateBlobRange);
  if (blob.size() < table) return EINVAL;
  out->ranges.resize(h.ranges);
  std::memcpy(out->ranges.data(), blob.data() + sizeof h, h.ranges * sizeof(UpdateBlobRange));
  uint64_t end = 0, total = 0;
  for (const UpdateBlobRange& r : out->ranges) {
    if (r.length == 0 || r.offset < end || r.offset > h.file_size || r.length > h.file_size - r.offset) {
      return EINVAL;
    }
    end = r.offset + r.length;
    total += r.length;  // <= file_size: the ranges are disjoint and inside it
  }
  if (blob.size() - table != total) return EINVAL;
  out->bytes = blob.data() + table;
  return 0;
}

class Store {
 public:
  explicit Store(uint64_t capacity) : capacity_(capacity) {}

  // Returns errno; fills `r` with attributes of `path` (file or directory).
  int Stat(const std::string& path, Reply* r) const {
    if (auto f = files_.find(path); f != files_.end()) {
      Fill(S_IFREG, f->second.meta, f->second.bytes.size(), f->second.version, r);
      return 0;
    }
    if (auto d = dirs_.find(path); d != dirs_.end()) {
      Fill(S_IFDIR, d->second, 0, 0, r);
      return 0;
    }
    if (path == "/" || HasChildren(path)) {
      Meta implicit;
      implicit.mode = 01777;
      Fill(S_IFDIR, implicit, 0, 0, r);
      return 0;
    }
    return ENOENT;
  }

  int Access(const std::string& path, const Caller& c, int mask, Reply* r) const {
    if (int err = Stat(path, r); err != 0) return err;
    Meta m{r->mode & 07777, r->uid, r->gid, 0};
    return Permits(m, S_ISDIR(r->mode), c, mask) ? 0 : EACCES;
  }

  int Put(const std::string& path, const Caller& c, uint32_t mode, std::string bytes) {
    if (path == "/" || IsDir(path)) return EISDIR;
    if (FileAbove(path)) return ENOTDIR;
    auto it = files_.find(path);
    const uint64_t old = it == files_.end() ? 0 : it->second.bytes.size();
    if (used_ - old + bytes.size() > capacity_) return ENOSPC;
    if (it != files_.end()) {
      if (!Permits(it->second.meta, false, c, W_OK)) return EACCES;
    } else {
      File f;
      f.meta = Meta{mode & 07777, c.uid, c.gid, 0};
      it = files_.emplace(path, std::move(f)).first;
    }
    used_ = used_ - old + bytes.size();
    it->second.bytes = std::move(bytes);
    it->second.meta.mtime_ns = NowNs();
    it->second.version = ++last_version_;
    return 0;
  }

  // Applies a parsed UPDATE blob; fills r->file_version.
  int Update(const std::string& path, const Caller& c, const UpdateBlob& u, Reply* r) {
    auto it = files_.find(path);
    if (it == files_.end()) return IsDir(path) ? EISDIR : ENOENT;
    File& f = it->second;
    if (!Permits(f.meta, false, c, W_OK)) return EACCES;
    if (u.header.file_size != f.bytes.size() || u.header.base_version != f.version) return ESTALE;
    if (path.size() >= 9 && path.compare(path.size() - 9, 9, "/unplaced") == 0) return EAGAIN;
    const char* at = u.bytes;
    for (const UpdateBlobRange& range : u.ranges) {
      f.bytes.replace(range.offset, range.length, at, range.length);
      at += range.length;
    }
    f.meta.mtime_ns = NowNs();
    r->file_version = f.version;
    return 0;
  }

  int Get(const std::string& path, const Caller& c, const std::string** bytes, Reply* r) const {
    auto it = files_.find(path);
    if (it == files_.end()) return IsDir(path) ? EISDIR : ENOENT;
    if (!Permits(it->second.meta, false, c, R_OK)) return EACCES;
    Fill(S_IFREG, it->second.meta, it->second.bytes.size(), it->second.version, r);
    *bytes = &it->second.bytes;
    return 0;
  }

  int List(const std::string& dir, std::string* out) const {
    if (files_.count(dir)) return ENOTDIR;
    if (!IsDir(dir)) return ENOENT;
    const std::string prefix = dir == "/" ? "/" : dir + "/";
    std::map<std::string, bool> entries;  // name -> is_dir
    auto add = [&](const std::string& path, bool is_dir) {
      if (path.compare(0, prefix.size(), prefix) != 0 || path.size() == prefix.size()) return;
      const std::string rest = path.substr(prefix.size());
      const size_t slash = rest.find('/');
      entries[rest.substr(0, slash)] |= is_dir || slash != std::string::npos;
    };
    for (const auto& [p, f] : files_) add(p, false);
    for (const auto& [p, m] : dirs_) add(p, true);
    for (const auto& [name, is_dir] : entries) {
      out->push_back(is_dir ? 'd' : 'f');
      *out += name;
      out->push_back('\0');
    }
    return 0;
  }

  int Unlink(const std::string& path, const Caller& c) {
    auto it = files_.find(path);
    if (it == files_.end()) return IsDir(path) ? EISDIR : ENOENT;
    if (!MayRemove(it->second.meta, c)) return EACCES;
    used_ -= it->second.bytes.size();
    files_.erase(it);
    return 0;
  }

  int Rename(const std::string& from, const std::string& to, const Caller& c) {
    if (from == "/" || to == "/") return EBUSY;
    if (to.compare(0, from.size() + 1, from + "/") == 0) return EINVAL;
    auto src = files_.find(from);
    if (src == files_.end()) return IsDir(from) ? EXDEV : ENOENT;
    if (!MayRemove(src->second.meta, c)) return EACCES;
    if (from == to) return 0;
    if (IsDir(to)) return EISDIR;
    if (FileAbove(to)) return ENOTDIR;
    if (auto dst = files_.find(to); dst != files_.end()) {
      if (!MayRemove(dst->second.meta, c)) return EACCES;
      used_ -= dst->second.bytes.size();
      files_.erase(dst);
    }
    File moved = std::move(src->second);
    files_.erase(src);
    files_.emplace(to, std::move(moved));
    return 0;
  }

  int Mkdir(const std::string& path, const Caller& c, uint32_t mode) {
    if (path == "/" || files_.count(path) || IsDir(path)) return EEXIST;
    if (FileAbove(path)) return ENOTDIR;
    dirs_[path] = Meta{mode & 07777, c.uid, c.gid, NowNs()};
    return 0;
  }

  int Rmdir(const std::string& path, const Caller& c) {
    if (path == "/") return EBUSY;
    if (files_.count(path)) return ENOTDIR;
    if (HasChildren(path)) return ENOTEMPTY;
    auto it = dirs_.find(path);
    if (it == dirs_.end()) return ENOENT;
    if (!MayRemove(it->second, c)) return EACCES;
    dirs_.erase(it);
    return 0;
  }

 private:
  static void Fill(uint32_t type, const Meta& m, uint64_t size, uint64_t version, Reply* r) {
    r->mode = type | (m.mode & 07777);
    r->uid = m.uid;
    r->gid = m.gid;
    r->mtime_ns = m.mtime_ns;
    r->size = size;
    r->file_version = version;
  }

  bool HasChildren(const std::string& dir) const {
    const std::string prefix = dir == "/" ? "/" : dir + "/";
    auto under = [&](const auto& map) {
      auto it = map.lower_bound(prefix);
      return it != map.end() && it->first.compare(0, prefix.size(), prefix) == 0;
    };
    return under(files_) || under(dirs_);
  }

  bool IsDir(const std::string& path) const { return path == "/" || dirs_.count(path) || HasChildren(path); }

  // A proper prefix of path that is a file.
  bool FileAbove(const std::string& path) const {
    for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
      if (files_.count(path.substr(0, slash))) return true;
    }
    return false;
  }

  uint64_t capacity_;
  uint64_t used_ = 0;
  uint64_t last_version_ = 0;
  std::map<std::string, File> files_;
  std::map<std::string, Meta> dirs_;
};

// The path checks the real daemon makes (CheckPath in daemon_main.cc).
int CheckPath(const char* raw, uint32_t len, std::string* path) {
  if (len == 0) return ENOENT;
  if (len >= fern::client::kMaxPath) return ENAMETOOLONG;
  path->assign(raw, len);
  if (*path == "/") return 0;
  if (path->find('\0') != std::string::npos || (*path)[0] != '/') return EINVAL;
  size_t start = 1;
  while (start <= path->size()) {
    size_t end = path->find('/', start);
    if (end == std::string::npos) end = path->size();
    const std::string part = path->substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return EINVAL;
    if (part.size() > 255) return ENAMETOOLONG;
    start = end + 1;
  }
  return 0;
}

// A sealed memfd holding `bytes`, or -1.
int SealedMemfd(const char* name, const std::string& bytes) {
  const int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t w = write(fd, bytes.data() + at, bytes.size() - at);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      close(fd);
      return -1;
    }
    at += static_cast<size_t>(w);
  }
  fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  return fd;
}

// Reads exactly `size` bytes of a PUT memfd; errno value or 0.
int ReadMemfd(int fd, uint64_t size, std::string* out) {
  struct stat st {};
  if (fd < 0) return EINVAL;
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != size) return EINVAL;
  out->resize(size);
  uint64_t got = 0;
  while (got < size) {
    const ssize_t n = pread(fd, out->data() + got, size - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return EIO;
    got += static_cast<uint64_t>(n);
  }
  return 0;
}

const char* OpName(uint16_t op) {
  static const char* names[] = {"?",      "PING",  "PUT",  "GET",  "STAT",    "ACCESS", "LIST",  "UNLINK",
                                "RENAME", "MKDIR", "RMDIR", "STATUS", "WAIT", "INSPECT", "UPDATE", "SCRUB"};
  return op < sizeof names / sizeof names[0] ? names[op] : "?";
}

class Server {
 public:
  Server(uint64_t capacity, FILE* log) : store_(capacity), log_(log) {}

  // One request from fd; false when the connection should close.
  bool Serve(int fd, const Caller& caller) {
    Request req;
    int passed = -1;
    if (fern::client::RecvWithFd(fd, &req, sizeof req, &passed) != 0) return false;
    Reply reply;
    int reply_fd = -1;
    bool keep = true;
    std::string path, path2, note;
    if (req.magic != fern::client::kMagic || req.version != fern::client::kVersion) {
      reply.err = EINVAL;
      keep = false;
    } else if (req.op == static_cast<uint16_t>(Op::kPing)) {
      // nothing
    } else if (int err = CheckPath(req.path, req.path_len, &path); err != 0) {
      reply.err = err;
    } else {
      reply.err = Dispatch(req, path, &path2, &note, caller, passed, &reply, &reply_fd);
    }
    if (reply.err != 0) {
      std::snprintf(reply.message, sizeof reply.message, "%s %s: %s", OpName(req.op), path.c_str(),
                    std::strerror(reply.err));
    }
    if (log_) {
      std::fprintf(log_, "%s %s%s%s %llu -> %d%s\n", OpName(req.op), path.c_str(), path2.empty() ? "" : " ",
                   path2.c_str(), static_cast<unsigned long long>(req.size), reply.err, note.c_str());
      std::fflush(log_);
    }
    if (passed >= 0) close(passed);
    const bool sent = fern::client::SendWithFd(fd, &reply, sizeof reply, reply_fd) == 0;
    if (reply_fd >= 0) close(reply_fd);
    return sent && keep;
  }

 private:
  // `note` gets what the log line adds (the ranges of an UPDATE).
  int Dispatch(const Request& req, const std::string& path, std::string* path2, std::string* note,
               const Caller& caller, int passed, Reply* reply, int* reply_fd) {
    switch (static_cast<Op>(req.op)) {
      case Op::kPut: {
        std::string bytes;
        if (int err = ReadMemfd(passed, req.size, &bytes); err != 0) return err;
        return store_.Put(path, caller, req.mode, std::move(bytes));
      }
      case Op::kUpdate: {
        std::string blob;
        UpdateBlob u;
        if (int err = ReadMemfd(passed, req.size, &blob); err != 0) return err;
        if (int err = ParseUpdate(blob, &u); err != 0) return err;
        *note = " ranges";
        for (const UpdateBlobRange& r : u.ranges) {
          *note += " " + std::to_string(r.offset) + "+" + std::to_string(r.length);
        }
        return store_.Update(path, caller, u, reply);
      }
      case Op::kGet: {
        const std::string* bytes = nullptr;
        if (int err = store_.Get(path, caller, &bytes, reply); err != 0) return err;
        *reply_fd = SealedMemfd("fern-fake-get", *bytes);
        return *reply_fd < 0 ? EIO : 0;
      }
      case Op::kStat:
        return store_.Stat(path, reply);
      case Op::kAccess: {
        Reply scratch;
        return store_.Access(path, caller, static_cast<int>(req.flags & 7), &scratch);
      }
      case Op::kList: {
        std::string out;
        if (int err = store_.List(path, &out); err != 0) return err;
        *reply_fd = SealedMemfd("fern-fake-list", out);
        reply->size = out.size();
        return *reply_fd < 0 ? EIO : 0;
      }
      case Op::kUnlink:
        return store_.Unlink(path, caller);
      case Op::kRename:
        if (int err = CheckPath(req.path2, req.path2_len, path2); err != 0) return err;
        return store_.Rename(path, *path2, caller);
      case Op::kMkdir:
        return store_.Mkdir(path, caller, req.mode);
      case Op::kRmdir:
        return store_.Rmdir(path, caller);
      default:
        return EINVAL;
    }
  }

  Store store_;
  FILE* log_;
};

int Usage() {
  std::fprintf(stderr, "usage: fern_fake_daemon --socket PATH [--capacity BYTES] [--log FILE]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path, log_path;
  uint64_t capacity = UINT64_MAX;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return Usage();
    if (arg == "--socket") {
      socket_path = argv[++i];
    } else if (arg == "--capacity") {
      capacity = std::strtoull(argv[++i], nullptr, 0);
    } else if (arg == "--log") {
      log_path = argv[++i];
    } else {
      return Usage();
    }
  }
  if (socket_path.empty()) return Usage();
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof addr.sun_path) {
    std::fprintf(stderr, "fern_fake_daemon: socket path too long: %s\n", socket_path.c_str());
    return 1;
  }
  FILE* log = nullptr;
  if (!log_path.empty() && (log = std::fopen(log_path.c_str(), "a")) == nullptr) {
    std::perror(log_path.c_str());
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  // SIGTERM and SIGINT are read from a signalfd in the poll set, as the real
  // daemon does. (A handler setting a flag was lost now and then under
  // ThreadSanitizer, which defers signals: the daemon never stopped and a
  // test waiting for it hung.)
  auto stop = fern::StopSignalFd();
  if (!stop.ok()) {
    std::fprintf(stderr, "fern_fake_daemon: %s\n", stop.status().ToString().c_str());
    return 1;
  }
  const int stop_fd = *stop;

  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, socket_path.c_str());
  unlink(socket_path.c_str());
  const int listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd < 0 || bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listen_fd, 64) != 0) {
    std::perror("fern_fake_daemon: listen");
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);

  Server server(capacity, log);
  std::map<int, Caller> conns;
  for (;;) {
    std::vector<pollfd> fds{{listen_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    for (const auto& [fd, caller] : conns) fds.push_back({fd, POLLIN, 0});
    if (poll(fds.data(), fds.size(), -1) < 0) continue;
    if (fds[1].revents & POLLIN) break;
    if (fds[0].revents & POLLIN) {
      const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      ucred cred{};
      socklen_t len = sizeof cred;
      if (fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        conns[fd] = Caller{cred.uid, cred.gid};
      } else if (fd >= 0) {
        close(fd);
      }
    }
    for (size_t i = 2; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const int fd = fds[i].fd;
      if (!server.Serve(fd, conns[fd])) {
        close(fd);
        conns.erase(fd);
      }
    }
  }
  unlink(socket_path.c_str());
  return 0;
}
