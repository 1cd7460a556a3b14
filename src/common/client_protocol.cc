#include "common/client_protocol.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace fern::client {

int SendWithFd(int sock, const void* msg, size_t len, int fd) {
  iovec iov{const_cast<void*>(msg), len};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  ssize_t n;
  do {
    n = sendmsg(sock, &mh, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  if (static_cast<size_t>(n) != len) {
    errno = EPROTO;
    return -1;
  }
  return 0;
}

int RecvWithFd(int sock, void* msg, size_t len, int* fd) {
  if (fd) *fd = -1;
  iovec iov{msg, len};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  mh.msg_control = control;
  mh.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(sock, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int got;
      std::memcpy(&got, CMSG_DATA(c), sizeof(int));
      if (fd) {
        *fd = got;
      } else {
        close(got);  // not wanted: never leak a passed fd
      }
    }
  }
  if (n == 0) {
    errno = ECONNRESET;
    return -1;
  }
  if (static_cast<size_t>(n) != len || (mh.msg_flags & MSG_CTRUNC)) {
    if (fd && *fd >= 0) {
      close(*fd);
      *fd = -1;
    }
    errno = EPROTO;
    return -1;
  }
  return 0;
}

Request MakeRequest(Op op, const char* path, size_t len) {
  Request r;
  r.op = static_cast<uint16_t>(op);
  r.path_len = static_cast<uint32_t>(len);
  std::memcpy(r.path, path, len);
  return r;
}

int Roundtrip(const char* sock, Request& req, int send_fd, Reply* reply, int* recv_fd, int timeout_s) {
  if (recv_fd) *recv_fd = -1;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (std::strlen(sock) >= sizeof a.sun_path) return ENAMETOOLONG;
  std::strcpy(a.sun_path, sock);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    const int e = errno;
    close(fd);
    return e;
  }
  if (timeout_s > 0) {
    timeval tv{timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  int rc = 0;
  if (SendWithFd(fd, &req, sizeof req, send_fd) != 0 || RecvWithFd(fd, reply, sizeof *reply, recv_fd) != 0) {
    rc = errno;
  }
  close(fd);
  return rc;
}

}  // namespace fern::client
