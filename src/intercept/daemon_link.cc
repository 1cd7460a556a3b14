// See daemon_link.h. One request at a time (the caller holds g_lock), into
// static request/reply buffers: the structs are 8 KiB and wrappers may run on
// small thread stacks.
#include "intercept/daemon_link.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/client_protocol.h"
#include "intercept/open_files.h"
#include "intercept/shim.h"

namespace fern::intercept {

namespace {

using client::Op;

int g_sock = -1;
ino_t g_sock_ino = 0;
client::Request g_req;
client::Reply g_rep;

void ClearSlot(int fd) {
  if (fd >= 0 && fd < kMaxTrackedFd) __atomic_store_n(&g_slot[fd], 0u, __ATOMIC_RELEASE);
}

void CloseSocket() {
  if (g_sock < 0) return;
  ClearSlot(g_sock);
  Real().close(g_sock);
  g_sock = -1;
}

// The app may have closed our fd behind our back (close_range) and reused
// the number: talk only to the socket we connected.
bool SocketStillOurs() {
  struct stat st {};
  return Real().fstat(g_sock, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == g_sock_ino;
}

int Connect() {
  if (g_sock >= 0) {
    if (SocketStillOurs()) return 0;
    ClearSlot(g_sock);
    g_sock = -1;
  }
  if (g_config.socket[0] == '\0') {
    Debug("FERN_EC_SOCKET is not set: managed paths fail with EIO");
    return EIO;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return EIO;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, g_config.socket);
  int rc;
  do {
    rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    Debug("connect %s: %s", g_config.socket, std::strerror(errno));
    Real().close(fd);
    return EIO;
  }
  fd = MoveHigh(fd, kSlotSocket);
  if (fd < 0) return EIO;
  struct stat st {};
  Real().fstat(fd, &st);
  g_sock = fd;
  g_sock_ino = st.st_ino;
  return 0;
}

bool CopyPath(const char* src, char* dst, uint32_t* len) {
  if (src == nullptr) return true;
  const size_t n = std::strlen(src);
  if (n >= client::kMaxPath) return false;
  std::memcpy(dst, src, n);
  *len = static_cast<uint32_t>(n);
  return true;
}

bool Retryable(int err) {
  return err == EPIPE || err == ECONNRESET || err == ENOTCONN || err == EBADF || err == ENOTSOCK;
}

int Call(Op op, const char* ns, const char* ns2, uint64_t size, uint32_t flags, uint32_t mode,
         int send_fd, Attr* attr, int* recv_fd) {
  if (recv_fd) *recv_fd = -1;
  g_req = client::Request{};
  g_req.op = static_cast<uint16_t>(op);
  g_req.size = size;
  g_req.flags = flags;
  g_req.mode = mode;
  if (!CopyPath(ns, g_req.path, &g_req.path_len) || !CopyPath(ns2, g_req.path2, &g_req.path2_len)) {
    return ENAMETOOLONG;
  }
  for (int attempt = 0;; ++attempt) {
    if (Connect() != 0) return EIO;
    if (client::SendWithFd(g_sock, &g_req, sizeof g_req, send_fd) != 0) {
      const int err = errno;
      CloseSocket();
      if (attempt == 0 && Retryable(err)) continue;  // nothing was delivered
      Debug("send to %s: %s", g_config.socket, std::strerror(err));
      return EIO;
    }
    break;
  }
  int got = -1;
  if (client::RecvWithFd(g_sock, &g_rep, sizeof g_rep, &got) != 0) {
    Debug("reply from %s: %s", g_config.socket, std::strerror(errno));
    CloseSocket();
    return EIO;
  }
  if (g_rep.magic != client::kMagic || g_rep.version != client::kVersion) {
    if (got >= 0) Real().close(got);
    Debug("reply from %s: bad magic or version", g_config.socket);
    CloseSocket();
    return EIO;
  }
  if (g_rep.err != 0) {
    if (got >= 0) Real().close(got);
    g_rep.message[sizeof g_rep.message - 1] = '\0';
    Debug("op %d %s: errno %d: %s", static_cast<int>(op), ns ? ns : "", g_rep.err, g_rep.message);
    return g_rep.err > 0 ? g_rep.err : EIO;
  }
  if (attr) {
    attr->mode = g_rep.mode;
    attr->size = g_rep.size;
    attr->version = g_rep.file_version;
    attr->uid = g_rep.uid;
    attr->gid = g_rep.gid;
    attr->mtime_ns = g_rep.mtime_ns;
  }
  if (recv_fd) {
    *recv_fd = got;
  } else if (got >= 0) {
    Real().close(got);
  }
  return 0;
}

}  // namespace

int DaemonStat(const char* ns, Attr* attr) { return Call(Op::kStat, ns, nullptr, 0, 0, 0, -1, attr, nullptr); }

int DaemonGet(const char* ns, Attr* attr, int* memfd) {
  const int err = Call(Op::kGet, ns, nullptr, 0, 0, 0, -1, attr, memfd);
  if (err == 0 && *memfd < 0) return EIO;  // a GET reply without its memfd
  return err;
}

int DaemonPut(const char* ns, int fd, uint64_t size, uint32_t mode, bool async) {
  return Call(Op::kPut, ns, nullptr, size, async ? client::kPutAsync : 0, mode, fd, nullptr, nullptr);
}

int DaemonUpdate(const char* ns, int blob_fd, uint64_t blob_size, uint64_t* version) {
  Attr a;
  const int err = Call(Op::kUpdate, ns, nullptr, blob_size, 0, 0, blob_fd, &a, nullptr);
  if (err == 0) *version = a.version;
  return err;
}

int DaemonAccess(const char* ns, int mask) {
  return Call(Op::kAccess, ns, nullptr, 0, static_cast<uint32_t>(mask), 0, -1, nullptr, nullptr);
}

int DaemonList(const char* ns, int* memfd, uint64_t* size) {
  Attr a;
  const int err = Call(Op::kList, ns, nullptr, 0, 0, 0, -1, &a, memfd);
  if (err != 0) return err;
  *size = a.size;
  if (*memfd < 0 && a.size != 0) return EIO;
  return 0;
}

int DaemonUnlink(const char* ns) { return Call(Op::kUnlink, ns, nullptr, 0, 0, 0, -1, nullptr, nullptr); }
int DaemonRename(const char* from, const char* to) {
  return Call(Op::kRename, from, to, 0, 0, 0, -1, nullptr, nullptr);
}
int DaemonMkdir(const char* ns, uint32_t mode) {
  return Call(Op::kMkdir, ns, nullptr, 0, 0, mode, -1, nullptr, nullptr);
}
int DaemonRmdir(const char* ns) { return Call(Op::kRmdir, ns, nullptr, 0, 0, 0, -1, nullptr, nullptr); }

void DaemonSocketGone() {
  ClearSlot(g_sock);
  g_sock = -1;
}

void DaemonForkChild() { CloseSocket(); }

}  // namespace fern::intercept
