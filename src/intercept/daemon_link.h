// The preload's connection to the local daemon (common/client_protocol.h).
//
// One Unix stream socket per process, connected lazily to FERN_EC_SOCKET,
// kept on a high fd with FD_CLOEXEC and marked shim-private in the fd table.
// A request whose send fails on a broken connection is retried once on a
// fresh one; a failed receive drops the connection and reports EIO (the
// request may have run). A fork child closes its copy and reconnects on first
// use. If FERN_EC_SOCKET is unset or nothing listens there, every call fails
// with EIO.
//
// REQUIRES: the caller holds g_lock (shim.h) and is inside a ShimScope.
// Every function returns 0 or an errno value (Reply.err, or EIO for
// transport failures); a received fd is owned by the caller.
#pragma once

#include <cstdint>

namespace fern::intercept {

struct Attr {
  uint32_t mode = 0;  // S_IFREG or S_IFDIR | permission bits
  uint64_t size = 0;
  uint64_t version = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t mtime_ns = 0;
};

int DaemonStat(const char* ns, Attr* attr);
// A sealed memfd of attr->size bytes, the bytes of version attr->version.
int DaemonGet(const char* ns, Attr* attr, int* memfd);
// async: answered once the daemon holds the memfd (client::kPutAsync); the
// error is then that of an earlier async commit of ns, if one is unreported.
int DaemonPut(const char* ns, int fd, uint64_t size, uint32_t mode, bool async = false);
// In-place update: blob_fd holds a client::UpdateBlob of blob_size bytes.
// Sets *version to the version committed now. ESTALE: ns was replaced or
// resized since the blob's base version (the caller falls back to a PUT).
int DaemonUpdate(const char* ns, int blob_fd, uint64_t blob_size, uint64_t* version);
int DaemonAccess(const char* ns, int mask);  // R_OK|W_OK|X_OK, 0 = F_OK
int DaemonList(const char* ns, int* memfd, uint64_t* size);
int DaemonUnlink(const char* ns);
int DaemonRename(const char* from, const char* to);
int DaemonMkdir(const char* ns, uint32_t mode);
int DaemonRmdir(const char* ns);

// The app closed (or dup2'ed over) the socket fd: forget it without closing.
void DaemonSocketGone();
// Fork child: close our copy of the parent's connection.
void DaemonForkChild();

}  // namespace fern::intercept
