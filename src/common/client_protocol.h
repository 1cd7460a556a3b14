// The client <-> local daemon protocol (DESIGN §5): one Unix stream socket
// per client, small fixed-size versioned request and reply structs, file
// contents passed as memfds with SCM_RIGHTS, the caller's identity taken
// from SO_PEERCRED by the daemon (never from the request).
//
// Used by the fern-ec CLI today and by libfernec_preload.so later, so it
// depends on libc only. Every request gets exactly one reply.
//
//   PUT  request{path, size} + memfd holding `size` bytes -> reply{err, version}
//   GET  request{path}                                    -> reply{err, size, version} + memfd
//   PING request{}                                        -> reply{err = 0}
#pragma once

#include <cstddef>
#include <cstdint>

namespace fern::client {

inline constexpr uint32_t kMagic = 0x43524546;  // "FERC"
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kMaxPath = 4096;

enum class Op : uint16_t { kPing = 1, kPut = 2, kGet = 3 };

struct Request {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint16_t op = 0;
  uint64_t size = 0;      // PUT: bytes in the memfd
  uint32_t path_len = 0;  // bytes of path used, < kMaxPath
  uint32_t reserved = 0;
  char path[kMaxPath] = {};
};

struct Reply {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint16_t reserved = 0;
  int32_t err = 0;        // 0 or an errno value
  uint32_t reserved2 = 0;
  uint64_t size = 0;      // GET: bytes in the memfd
  uint64_t file_version = 0;
  char message[512] = {};  // human-readable error, NUL-terminated
};

// Sends/receives one struct, with an optional fd (-1: none). Return 0, or -1
// with errno set (EPROTO for a short or malformed message, ECONNRESET at EOF).
int SendWithFd(int sock, const void* msg, size_t len, int fd);
int RecvWithFd(int sock, void* msg, size_t len, int* fd);

}  // namespace fern::client
