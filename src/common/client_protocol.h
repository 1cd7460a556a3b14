// The client <-> local daemon protocol (DESIGN §5): one Unix stream socket
// per client, small fixed-size versioned request and reply structs, file
// contents passed as memfds with SCM_RIGHTS, the caller's identity taken
// from SO_PEERCRED by the daemon (never from the request).
//
// Used by the fern-ec CLI and by libfernec_preload.so, so it depends on libc
// only. Every request gets exactly one reply, in order. Paths are names in
// the fern-ec namespace: absolute, normalized ("/ckpt/rank7.bin"; no "",
// "." or ".." components, no trailing '/'); "/" is the namespace root.
//
//   PING   {}                                   -> {}
//   PUT    {path, size, mode, flags} + memfd of `size` bytes
//                                               -> {version}   new version of a file;
//          a new file gets the caller's uid/gid and `mode` & 07777; replacing
//          an existing one needs write permission and keeps its owner/mode.
//          flags & kPutAsync: answered once the daemon holds the memfd (version
//          0), committed in the background; the reply carries the failure of
//          an earlier async commit of this path, if one is unreported. The
//          daemon runs PUT/UNLINK/RENAME of one path in arrival order, and
//          GET/STAT/LIST wait for them: a reader on the same node sees the bytes.
//   WAIT   {path}                               -> {}  once every commit under path
//          queued before it finished; the unreported failure of an async
//          commit under path, if any ("/" = every path).
//   GET    {path}                               -> {size, version, attrs} + sealed memfd
//          read permission needed. flags & kGetInto, with a descriptor (a
//          regular file or memfd open for writing, not O_APPEND): the daemon
//          sizes it to the file with ftruncate and writes the bytes into it
//          with pwrite; the reply has no descriptor. Memory the caller keeps
//          and reuses skips the daemon allocating fresh reply pages (the cost
//          of a large read); the CLI's get writes straight into its output.
//          A failed write (ENOSPC, EFBIG, EPERM of a sealed memfd) fails the
//          GET with that errno and leaves the descriptor partly written.
//   STAT   {path}                               -> {size, version, attrs}
//          directories are explicit (MKDIR) or implicit (a prefix of a file).
//   ACCESS {path, flags = R_OK|W_OK|X_OK mask, 0 = F_OK}
//                                               -> {} or EACCES / ENOENT
//   LIST   {path of a directory}                -> {size} + memfd of `size` bytes:
//          entries "T<name>\0", T = 'f' (file) or 'd' (directory)
//   UNLINK {path}                               -> {}     (EISDIR for a directory)
//   RENAME {path -> path2}                      -> {}     files only (EXDEV for a
//          directory, so mv falls back to copy+delete); replaces path2.
//   MKDIR  {path, mode}                         -> {}     (EEXIST)
//   RMDIR  {path}                               -> {}     (ENOTEMPTY, ENOTDIR)
//   INSPECT {path, flags}                       -> {size} + memfd: the newest version's
//          layout and, per stripe, each shard's node, state (ok, missing, corrupt,
//          down, unreachable) and CRC, as JSON (flags & kInspectText: a table).
//          read permission needed.
//   UPDATE {path, size} + memfd of `size` bytes holding an UpdateBlob
//                                               -> {version}   in-place update of the
//          committed version named in the blob (PSW, DESIGN §2): only the
//          listed byte ranges change, each through the file's sequencer as
//          parity deltas, so concurrent writers of disjoint ranges compose to
//          their union. Write permission needed. ESTALE when the file's
//          newest version or size is not the blob's (a full PUT replaced it,
//          or the size changed): the caller falls back to PUT. EAGAIN when a
//          stripe's shards cannot all take the update now (a node is down and
//          no replacement is free); EIO when an update was refused or rolled
//          back.
//   SCRUB  {path, flags}                        -> {size} + memfd: JSON report of
//          re-encoding every stripe of path (a file, or every file under a
//          directory; "/" = all) from its data shards and comparing with the
//          stored parity; flags & kScrubRepair rewrites inconsistent parity (or a
//          data shard every parity record contradicts),
//          flags & kScrubText asks for a summary line and one line per problem.
//   STATUS {path = "/", flags}                   -> {size} + memfd: this node's status
//          as one JSON object (node, epoch, alive, data/parity usage, repair,
//          decodes, read checks, PSW); flags & kStatusText asks for a few
//          lines of text instead.
//
// Errors: Reply.err is an errno value (ENOENT, EACCES, ENOSPC, EIO, EINVAL,
// ENAMETOOLONG, ...) and Reply.message says why in words.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fern::client {

inline constexpr uint32_t kMagic = 0x43524546;  // "FERC"
inline constexpr uint16_t kVersion = 2;  // WAIT, kPutAsync, UPDATE, SCRUB are additions: same layout
inline constexpr size_t kMaxPath = 4096;

enum class Op : uint16_t {
  kPing = 1,
  kPut = 2,
  kGet = 3,
  kStat = 4,
  kAccess = 5,
  kList = 6,
  kUnlink = 7,
  kRename = 8,
  kMkdir = 9,
  kRmdir = 10,
  kStatus = 11,
  kWait = 12,
  kInspect = 13,
  kUpdate = 14,
  kScrub = 15,
};

// Request.flags of PUT.
inline constexpr uint32_t kPutAsync = 1;
// GET flags.
inline constexpr uint32_t kGetInto = 1;
// Request.flags of INSPECT.
inline constexpr uint32_t kInspectText = 1;
// Request.flags of SCRUB.
inline constexpr uint32_t kScrubRepair = 1;
inline constexpr uint32_t kScrubText = 2;
// Request.flags of STATUS.
inline constexpr uint32_t kStatusText = 1;

// The memfd of an UPDATE: this header, then `ranges` UpdateBlobRange entries
// (sorted by offset, non-overlapping, non-empty, inside file_size), then the
// new bytes of every range, concatenated in range order. Nothing else: the
// blob's size is exactly the sum of those parts.
inline constexpr uint32_t kUpdateMagic = 0x55524546;  // "FERU"
inline constexpr uint32_t kMaxUpdateRanges = 1u << 20;
struct UpdateBlobHeader {
  uint32_t magic = kUpdateMagic;
  uint32_t ranges = 0;
  uint64_t file_size = 0;     // the file's size, unchanged by an update
  uint64_t base_version = 0;  // the committed version the ranges change
};
struct UpdateBlobRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct Request {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint16_t op = 0;
  uint64_t size = 0;      // PUT: bytes in the memfd
  uint32_t flags = 0;     // ACCESS: R_OK|W_OK|X_OK mask; PUT: kPutAsync; GET: kGetInto
  uint32_t mode = 0;      // PUT (new file), MKDIR: permission bits
  uint32_t path_len = 0;  // bytes of path used, < kMaxPath
  uint32_t path2_len = 0; // RENAME: bytes of path2 used
  char path[kMaxPath] = {};
  char path2[kMaxPath] = {};
};

struct Reply {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint16_t reserved = 0;
  int32_t err = 0;        // 0 or an errno value
  uint32_t mode = 0;      // STAT/GET: S_IFREG or S_IFDIR | permission bits
  uint64_t size = 0;      // GET/LIST: bytes in the memfd; STAT: file size
  uint64_t file_version = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t mtime_ns = 0;  // nanoseconds since the Unix epoch
  char message[512] = {};  // human-readable error, NUL-terminated
};

// Sends/receives one struct, with an optional fd (-1: none). Return 0, or -1
// with errno set (EPROTO for a short or malformed message, ECONNRESET at EOF).
int SendWithFd(int sock, const void* msg, size_t len, int fd);
int RecvWithFd(int sock, void* msg, size_t len, int* fd);

// For tools (the CLI, ec_bench): a request for `path` (REQUIRES len <
// kMaxPath), and one request/reply on a fresh connection to the daemon at
// `sock`. Roundtrip returns 0 or an errno value for the connection (the
// reply's own error is reply->err); timeout_s > 0 gives up with EAGAIN when
// no reply comes within that long. A received fd is the caller's.
Request MakeRequest(Op op, const char* path, size_t len);
int Roundtrip(const char* sock, Request& req, int send_fd, Reply* reply, int* recv_fd, int timeout_s = 0);

}  // namespace fern::client
