// See open_files.h. Change detection for staged files: MarkClean sets the
// memfd's mtime to a value the kernel will never write itself (its current
// mtime minus 1 ns) and records it with the size. Any later write(2) stamps
// the current time and so differs; a write racing with MarkClean is seen by
// re-reading the mtime. Whether stores through a shared mapping update the
// mtime depends on the kernel (6.x does, older tmpfs did not), so a staged
// file mapped shared and writable is treated as changed at every close/fsync
// (Node::mapped, set by the mmap wrapper).
//
// In-place updates: a commit of a file with a base (open_files.h) maps the
// base and the staged memfd, compares them 4 KiB at a time and byte by byte
// inside blocks that differ, and sends the runs of differing bytes exactly:
// runs are never merged across equal bytes, since another process may be
// updating those bytes of the same file (DESIGN §2, PSW). The new base is
// the old one patched with the bytes sent, not a copy of the staged memfd,
// which another thread of the app may be writing meanwhile.
#include "intercept/open_files.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/client_protocol.h"
#include "intercept/shim.h"

namespace fern::intercept {

uint32_t g_slot[kMaxTrackedFd];

namespace {

Node* g_nodes = nullptr;
int g_capacity = 0;
int g_empty_dir = -1;  // private fd of a removed empty directory (kSlotEmptyDir)

void SetSlot(int fd, uint32_t value) {
  if (fd >= 0 && fd < kMaxTrackedFd) __atomic_store_n(&g_slot[fd], value, __ATOMIC_RELEASE);
}

void FreeNode(int idx) {
  Node& n = g_nodes[idx];
  if (n.private_fd >= 0) {
    SetSlot(n.private_fd, 0);
    Real().close(n.private_fd);
  }
  if (n.base_fd >= 0) {
    SetSlot(n.base_fd, 0);
    Real().close(n.base_fd);
  }
  std::free(n.ns);
  n = Node();
}

// One reference fewer; the last commits a staged node and frees it.
int Unref(int idx) {
  Node& n = g_nodes[idx];
  if (--n.refs > 0) return 0;
  int err = 0;
  if (n.kind == NodeKind::kStaged && !n.inherited && !n.unlinked) err = CommitIfChanged(idx, /*last=*/true);
  FreeNode(idx);
  return err;
}

// Something of ours occupied fd and it was closed behind our back (close_range,
// a libc-internal close): forget it before the number is reused.
void ForgetStale(int fd) {
  const uint32_t s = SlotOf(fd);
  if (s == 0) return;
  Debug("fd %d was closed behind the shim's back", fd);
  SetSlot(fd, 0);
  if (IsAppSlot(s)) {
    (void)Unref(static_cast<int>(s) - 1);
  } else if (s == kSlotSocket) {
    DaemonSocketGone();
  } else if (s == kSlotEmptyDir) {
    g_empty_dir = -1;
  } else {
    Node* n = NodeAt(static_cast<int>(s & ~kSlotPrivate));
    if (n && n->private_fd == fd) n->private_fd = -1;
    if (n && n->base_fd == fd) n->base_fd = -1;  // next commit: a PUT
  }
}

bool Changed(const Node& n) {
  if (n.dirty || n.mapped) return true;
  struct stat st {};
  if (Real().fstat(n.private_fd, &st) != 0) return true;
  return st.st_size != n.clean_size || st.st_mtim.tv_sec != n.clean_mtime_sec ||
         st.st_mtim.tv_nsec != n.clean_mtime_nsec;
}

uint64_t FakeDev() { return makedev(0xfe, 0xec); }

// Identity fields every managed object reports, whatever backs its fd.
void SetIdentity(const char* ns, uint32_t mode, uint32_t uid, uint32_t gid, struct stat* st) {
  st->st_dev = FakeDev();
  st->st_ino = PathHash(ns);
  st->st_mode = mode;
  st->st_nlink = S_ISDIR(mode) ? 2 : 1;
  st->st_uid = uid;
  st->st_gid = gid;
  st->st_rdev = 0;
  st->st_blksize = 4096;
  st->st_blocks = (st->st_size + 511) / 512;
}

timespec FromNs(uint64_t ns) {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1000000000ull);
  ts.tv_nsec = static_cast<long>(ns % 1000000000ull);
  return ts;
}

constexpr const char kStagePrefix[] = "/memfd:fern-ec-w:";

// A shared mapping of the first `size` (> 0) bytes of fd, unmapped when it
// goes out of scope; data() is nullptr if mmap failed.
class Mapping {
 public:
  Mapping(int fd, uint64_t size, int prot) : size_(size) {
    void* p = Real().mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
    data_ = p == MAP_FAILED ? nullptr : static_cast<unsigned char*>(p);
  }
  ~Mapping() {
    if (data_ != nullptr) munmap(data_, size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  unsigned char* data() const { return data_; }

 private:
  unsigned char* data_;
  uint64_t size_;
};

// The byte runs where a staged memfd differs from its base (malloc: the
// preload has no libstdc++).
struct Runs {
  client::UpdateBlobRange* v = nullptr;
  uint32_t count = 0;
  uint32_t cap = 0;
  uint64_t bytes = 0;
  Runs() = default;
  Runs(const Runs&) = delete;
  Runs& operator=(const Runs&) = delete;
  ~Runs() { std::free(v); }
};

// Appends a run of a `size`-byte file. False past the limits where a full
// PUT is cheaper (kMaxUpdateRanges runs, more than half the file), or out of
// memory.
bool AddRun(Runs* r, uint64_t offset, uint64_t length, uint64_t size) {
  r->bytes += length;
  if (r->count == client::kMaxUpdateRanges || r->bytes > size / 2) return false;
  if (r->count == r->cap) {
    const uint32_t cap = r->cap == 0                                ? 64
                         : r->cap >= client::kMaxUpdateRanges / 2 ? client::kMaxUpdateRanges
                                                                  : r->cap * 2;
    auto* grown = static_cast<client::UpdateBlobRange*>(std::realloc(r->v, sizeof *r->v * cap));
    if (grown == nullptr) return false;
    r->v = grown;
    r->cap = cap;
  }
  r->v[r->count].offset = offset;
  r->v[r->count].length = length;
  ++r->count;
  return true;
}

// Fills r with the exact runs of bytes where `now` differs from `base`.
// False as AddRun.
bool FindRuns(const unsigned char* base, const unsigned char* now, uint64_t size, Runs* r) {
  constexpr uint64_t kBlock = 4096;
  uint64_t start = 0;
  bool in_run = false;
  for (uint64_t off = 0; off < size; off += kBlock) {
    const uint64_t end = size - off > kBlock ? off + kBlock : size;
    if (std::memcmp(base + off, now + off, end - off) == 0) {
      if (in_run && !AddRun(r, start, off - start, size)) return false;
      in_run = false;
      continue;
    }
    for (uint64_t i = off; i < end; ++i) {
      if (base[i] != now[i]) {
        if (!in_run) start = i;
        in_run = true;
      } else if (in_run) {
        if (!AddRun(r, start, i - start, size)) return false;
        in_run = false;
      }
    }
  }
  return !in_run || AddRun(r, start, size - start, size);
}

// After a successful UPDATE to `version`: the base becomes `old` (the old
// base's bytes) with the runs' new bytes (`bytes`, concatenated) written
// over it. If that copy cannot be made the base is dropped instead.
void RefreshBase(int idx, const unsigned char* old, const Runs& runs, const unsigned char* bytes,
                 uint64_t version) {
  const uint64_t size = g_nodes[idx].base_size;
  const int fd = memfd_create("fern-ec-base", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  bool ok = fd >= 0 && ftruncate(fd, static_cast<off_t>(size)) == 0;
  if (ok) {
    Mapping m(fd, size, PROT_READ | PROT_WRITE);  // unmapped before sealing
    ok = m.data() != nullptr;
    if (ok) {
      std::memcpy(m.data(), old, size);
      for (uint32_t i = 0; i < runs.count; ++i) {
        std::memcpy(m.data() + runs.v[i].offset, bytes, runs.v[i].length);
        bytes += runs.v[i].length;
      }
    }
  }
  ok = ok && Real().fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0;
  int err = ok ? 0 : errno;
  if (ok) {
    err = SetBase(idx, fd, version, size);  // consumes fd
  } else if (fd >= 0) {
    Real().close(fd);
  }
  if (err == 0) return;
  DropBase(idx);
  Debug("update %s: no copy of the committed bytes kept (%s): later commits send the whole file",
        g_nodes[idx].ns, std::strerror(err));
}

constexpr int kPutInstead = -1;

// The in-place update of CommitIfChanged. REQUIRES: node idx has a base of
// `size` bytes, the staged memfd's size. Returns 0 (committed, or no byte
// differs), an errno, or kPutInstead.
int CommitUpdate(int idx, uint64_t size) {
  Node& n = g_nodes[idx];
  const Mapping base(n.base_fd, size, PROT_READ);
  const Mapping now(n.private_fd, size, PROT_READ);
  if (base.data() == nullptr || now.data() == nullptr) return kPutInstead;
  Runs runs;
  if (!FindRuns(base.data(), now.data(), size, &runs)) return kPutInstead;
  if (runs.count == 0) return 0;  // written to, but every byte is what it was
  const uint64_t table = sizeof(client::UpdateBlobHeader) + sizeof(client::UpdateBlobRange) * runs.count;
  const uint64_t blob_size = table + runs.bytes;
  const int blob = memfd_create("fern-ec-update", MFD_CLOEXEC);
  if (blob < 0) return kPutInstead;
  int err = kPutInstead;
  if (ftruncate(blob, static_cast<off_t>(blob_size)) == 0) {
    const Mapping out(blob, blob_size, PROT_READ | PROT_WRITE);
    if (out.data() != nullptr) {
      client::UpdateBlobHeader h;
      h.ranges = runs.count;
      h.file_size = size;
      h.base_version = n.base_version;
      std::memcpy(out.data(), &h, sizeof h);
      std::memcpy(out.data() + sizeof h, runs.v, sizeof(client::UpdateBlobRange) * runs.count);
      unsigned char* at = out.data() + table;
      for (uint32_t i = 0; i < runs.count; ++i) {
        std::memcpy(at, now.data() + runs.v[i].offset, runs.v[i].length);
        at += runs.v[i].length;
      }
      uint64_t version = 0;
      err = DaemonUpdate(n.ns, blob, blob_size, &version);
      if (err == 0) {
        RefreshBase(idx, base.data(), runs, out.data() + table, version);
      } else if (err == ESTALE || err == ENOENT || err == EINVAL || err == EAGAIN) {
        // Replaced, resized or removed behind us, a daemon without UPDATE,
        // or a node of a stripe it touches down (EAGAIN: an update needs
        // all k+m shards; a PUT's shards go to live nodes): the whole file
        // is always right (and recreates a removed one, as a PUT did
        // before updates existed).
        Debug("update %s (%u ranges, %llu bytes): %s: sending the whole file", n.ns, runs.count,
              static_cast<unsigned long long>(runs.bytes), std::strerror(err));
        err = kPutInstead;
      }
    }
  }
  Real().close(blob);
  return err;
}

}  // namespace

Node* NodeAt(int idx) { return (idx >= 0 && idx < g_capacity) ? &g_nodes[idx] : nullptr; }

int NodeOfFd(int fd) {
  const uint32_t s = SlotOf(fd);
  return IsAppSlot(s) ? static_cast<int>(s) - 1 : -1;
}

int NewNode(NodeKind kind, int mount, const char* ns) {
  int idx = -1;
  for (int i = 0; i < g_capacity; ++i) {
    if (g_nodes[i].kind == NodeKind::kFree) {
      idx = i;
      break;
    }
  }
  if (idx < 0) {
    const int cap = g_capacity ? g_capacity * 2 : 16;
    if (cap >= static_cast<int>(kSlotPrivate)) return -1;
    auto* grown = static_cast<Node*>(std::realloc(g_nodes, sizeof(Node) * static_cast<size_t>(cap)));
    if (grown == nullptr) return -1;
    for (int i = g_capacity; i < cap; ++i) grown[i] = Node();
    idx = g_capacity;
    g_nodes = grown;
    g_capacity = cap;
  }
  char* copy = strdup(ns);
  if (copy == nullptr) return -1;
  Node& n = g_nodes[idx];
  n = Node();
  n.kind = kind;
  n.mount = mount;
  n.ns = copy;
  return idx;
}

void DiscardNode(int idx) { FreeNode(idx); }

void ClosePrivate(int fd) {
  if (fd < 0) return;
  SetSlot(fd, 0);
  Real().close(fd);
}

// A directory that exists only as our fd: created, opened and removed at
// once, so getdents on it is empty and any unwrapped *at call relative to it
// fails with ENOENT instead of touching a real directory.
int EmptyDirFd() {
  if (g_empty_dir >= 0) return g_empty_dir;
  const char* bases[] = {std::getenv("TMPDIR"), "/tmp", "/dev/shm", "/var/tmp"};
  for (const char* base : bases) {
    if (base == nullptr || base[0] != '/') continue;
    char path[kPathBuf];
    if (std::snprintf(path, sizeof path, "%s/fern-ec-dir-XXXXXX", base) >= static_cast<int>(sizeof path)) continue;
    if (mkdtemp(path) == nullptr) continue;
    const int fd = Real().open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    Real().rmdir(path);
    if (fd < 0) continue;
    g_empty_dir = MoveHigh(fd, kSlotEmptyDir);
    return g_empty_dir;
  }
  return -1;
}

int NewDirAppFd(int mount, const char* ns, const Attr& a, int flags) {
  const int empty = EmptyDirFd();
  if (empty < 0) {
    errno = EIO;
    return -1;
  }
  const int idx = NewNode(NodeKind::kDir, mount, ns);
  if (idx < 0) {
    errno = ENOMEM;
    return -1;
  }
  Node& n = g_nodes[idx];
  n.mode = a.mode & 07777;
  n.uid = a.uid;
  n.gid = a.gid;
  n.mtime_ns = a.mtime_ns;
  const int fd = Real().fcntl(empty, (flags & O_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
  if (fd < 0) {
    const int err = errno;
    FreeNode(idx);
    errno = err;
    return -1;
  }
  return AttachNew(fd, idx);
}

void Attach(int fd, int idx) {
  if (fd < 0 || fd >= kMaxTrackedFd) {
    Debug("fd %d is beyond the tracked range; its node is not counted", fd);
    return;
  }
  ForgetStale(fd);
  SetSlot(fd, static_cast<uint32_t>(idx) + 1);
  ++g_nodes[idx].refs;
}

int AttachNew(int fd, int idx) {
  if (fd >= 0 && fd < kMaxTrackedFd) {
    Attach(fd, idx);
    return fd;
  }
  Real().close(fd);
  if (g_nodes[idx].refs == 0) FreeNode(idx);
  errno = EMFILE;
  return -1;
}

int Detach(int fd) {
  const int idx = NodeOfFd(fd);
  if (idx < 0) return 0;
  SetSlot(fd, 0);
  return Unref(idx);
}

int FindStaged(const char* ns) {
  for (int i = 0; i < g_capacity; ++i) {
    const Node& n = g_nodes[i];
    if (n.kind == NodeKind::kStaged && !n.unlinked && std::strcmp(n.ns, ns) == 0) return i;
  }
  return -1;
}

void MarkClean(int idx) {
  Node& n = g_nodes[idx];
  n.dirty = true;
  struct stat st {};
  if (n.private_fd < 0 || Real().fstat(n.private_fd, &st) != 0) return;
  timespec ts[2];
  ts[0].tv_sec = 0;
  ts[0].tv_nsec = UTIME_OMIT;
  ts[1] = st.st_mtim;
  if (ts[1].tv_nsec > 0) {
    --ts[1].tv_nsec;
  } else {
    --ts[1].tv_sec;
    ts[1].tv_nsec = 999999999;
  }
  if (futimens(n.private_fd, ts) != 0 || Real().fstat(n.private_fd, &st) != 0) return;
  if (st.st_mtim.tv_sec != ts[1].tv_sec || st.st_mtim.tv_nsec != ts[1].tv_nsec) return;  // raced a write
  n.clean_size = st.st_size;
  n.clean_mtime_sec = ts[1].tv_sec;
  n.clean_mtime_nsec = ts[1].tv_nsec;
  n.dirty = false;
}

int CommitIfChanged(int idx, bool last) {
  Node& n = g_nodes[idx];
  if (n.kind != NodeKind::kStaged || n.unlinked) return 0;
  if (n.private_fd < 0) return EIO;  // our copy was closed behind our back
  if (!Changed(n)) return 0;
  MarkClean(idx);  // from here on any write counts as a change again
  struct stat st {};
  if (Real().fstat(n.private_fd, &st) != 0) return EIO;
  // The memfd's permission bits: fchmod on the app's fd lands there (tar
  // creates files 0600 and fchmods them). The daemon applies them to new files.
  n.mode = st.st_mode & 07777;
  if (n.base_fd >= 0 && static_cast<uint64_t>(st.st_size) == n.base_size) {
    // Synchronous even in async mode: the new base needs the version the
    // reply names, and ESTALE must still be able to fall back to a PUT.
    const int err = CommitUpdate(idx, n.base_size);
    if (err != kPutInstead) {
      if (err != 0) {
        n.dirty = true;
        Debug("update %s: %s", n.ns, std::strerror(err));
      }
      return err;
    }
  }
  DropBase(idx);  // stale once the whole file is replaced
  const bool async = last && g_config.async_commit &&
                     Real().fcntl(n.private_fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW) == 0;
  const int err = DaemonPut(n.ns, n.private_fd, static_cast<uint64_t>(st.st_size), n.mode, async);
  if (err != 0) {
    n.dirty = true;
    Debug("commit %s (%lld bytes): %s", n.ns, static_cast<long long>(st.st_size), std::strerror(err));
  }
  return err;
}

int SetBase(int idx, int fd, uint64_t version, uint64_t size) {
  DropBase(idx);
  const int moved = MoveHigh(fd, kSlotPrivate | static_cast<uint32_t>(idx));
  if (moved < 0) {
    const int err = errno;
    Real().close(fd);
    return err;
  }
  Node& n = g_nodes[idx];
  n.base_fd = moved;
  n.base_version = version;
  n.base_size = size;
  return 0;
}

void DropBase(int idx) {
  Node* n = NodeAt(idx);
  if (n == nullptr || n->base_fd < 0) return;
  ClosePrivate(n->base_fd);
  n->base_fd = -1;
  n->base_version = 0;
  n->base_size = 0;
}

int MoveHigh(int fd, uint32_t slot) {
  int moved = Real().fcntl(fd, F_DUPFD_CLOEXEC, g_config.high_fd);
  if (moved < 0) {
    // The high range is full or beyond the limit: keep the fd where it is.
    if (Real().fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) return -1;
    moved = fd;
  } else {
    Real().close(fd);
  }
  ForgetStale(moved);
  SetSlot(moved, slot);
  return moved;
}

int RelocatePrivate(int from) {
  const uint32_t s = SlotOf(from);
  if (s == 0 || IsAppSlot(s)) return 0;
  if (s == kSlotSocket) {
    SetSlot(from, 0);
    DaemonSocketGone();  // the app's dup2 closes it; reconnect on next use
    return 0;
  }
  const int moved = Real().fcntl(from, F_DUPFD_CLOEXEC, g_config.high_fd);
  if (moved < 0) return errno;
  ForgetStale(moved);
  SetSlot(moved, s);
  SetSlot(from, 0);
  if (s == kSlotEmptyDir) g_empty_dir = moved;
  if (Node* n = NodeAt(static_cast<int>(s & ~kSlotPrivate))) {
    if (n->private_fd == from) n->private_fd = moved;
    if (n->base_fd == from) n->base_fd = moved;
  }
  return 0;
}

void FillStat(const char* ns, const Attr& a, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_size = static_cast<off_t>(a.size);
  st->st_mtim = st->st_atim = st->st_ctim = FromNs(a.mtime_ns);
  SetIdentity(ns, a.mode, a.uid, a.gid, st);
}

int StatNodeFd(int idx, int fd, struct stat* st) {
  const Node& n = g_nodes[idx];
  if (n.kind == NodeKind::kDir) {
    Attr a;
    a.mode = S_IFDIR | n.mode;
    a.uid = n.uid;
    a.gid = n.gid;
    a.mtime_ns = n.mtime_ns;
    FillStat(n.ns, a, st);
    return 0;
  }
  if (Real().fstat(fd, st) != 0) return errno;
  if (n.kind == NodeKind::kRead) st->st_mtim = st->st_atim = st->st_ctim = FromNs(n.mtime_ns);
  const uint32_t perm = n.kind == NodeKind::kStaged ? (st->st_mode & 07777) : n.mode;
  SetIdentity(n.ns, S_IFREG | perm, n.uid, n.gid, st);
  return 0;
}

int StatStaged(int idx, struct stat* st) {
  const Node& n = g_nodes[idx];
  if (n.private_fd < 0 || Real().fstat(n.private_fd, st) != 0) return EIO;
  SetIdentity(n.ns, S_IFREG | (st->st_mode & 07777), n.uid, n.gid, st);
  return 0;
}

void OpenFilesForkChild() {
  for (int i = 0; i < g_capacity; ++i) {
    if (g_nodes[i].kind == NodeKind::kStaged) g_nodes[i].inherited = true;
  }
}

void CommitAllAtExit() {
  if (HoldsLock()) {
    Debug("exit while inside the shim: staged files are not committed");
    return;
  }
  ShimScope scope;
  bool any = false;
  {
    LockGuard lock;
    for (int i = 0; i < g_capacity && !any; ++i) {
      const Node& n = g_nodes[i];
      any = n.kind == NodeKind::kStaged && !n.inherited && !n.unlinked;
    }
  }
  if (!any) return;
  // stdio buffers are flushed after library destructors run: flush now so a
  // FILE the program never closed has its bytes in the memfd.
  fflush(nullptr);
  LockGuard lock;
  for (int i = 0; i < g_capacity; ++i) {
    const Node& n = g_nodes[i];
    if (n.kind != NodeKind::kStaged || n.inherited || n.unlinked) continue;
    if (const int err = CommitIfChanged(i, /*last=*/true); err != 0) {
      Debug("at exit: commit %s failed: %s", n.ns, std::strerror(err));
    }
  }
}

void AdoptAfterExec() {
  ShimScope scope;
  LockGuard lock;
  DIR* d = Real().opendir("/proc/self/fd");
  if (d == nullptr) return;
  struct Seen {
    ino_t ino;
    int idx;
  } seen[64];
  int nseen = 0;
  const int own = Real().dirfd(d);
  while (dirent64* e = Real().readdir64(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const int fd = std::atoi(e->d_name);
    if (fd == own || fd >= kMaxTrackedFd) continue;
    char link[64];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    char target[kPathBuf];
    const ssize_t len = readlink(link, target, sizeof target - 1);
    if (len <= 0) continue;
    target[len] = '\0';
    const size_t plen = sizeof kStagePrefix - 1;
    if (std::strncmp(target, kStagePrefix, plen) != 0) continue;
    char* end = nullptr;
    const unsigned long mode = std::strtoul(target + plen, &end, 8);
    if (end == nullptr || *end != ':' || end[1] != '/') continue;
    char* ns = end + 1;
    if (char* del = std::strstr(ns, " (deleted)"); del && del[10] == '\0') *del = '\0';
    struct stat st {};
    if (Real().fstat(fd, &st) != 0) continue;
    int idx = -1;
    for (int i = 0; i < nseen; ++i) {
      if (seen[i].ino == st.st_ino) idx = seen[i].idx;
    }
    if (idx < 0) {
      if (nseen == 64) continue;
      idx = NewNode(NodeKind::kStaged, 0, ns);
      if (idx < 0) continue;
      // Our own open file description, readable (the daemon reads it at
      // PUT) and if possible writable (truncate): the inherited fd may be
      // O_WRONLY.
      int priv = Real().open(link, O_RDWR | O_CLOEXEC);
      if (priv < 0) priv = Real().open(link, O_RDONLY | O_CLOEXEC);
      if (priv >= 0) priv = MoveHigh(priv, kSlotPrivate | static_cast<uint32_t>(idx));
      if (priv < 0) {
        FreeNode(idx);
        continue;
      }
      Node& n = g_nodes[idx];
      n.private_fd = priv;
      n.mode = static_cast<uint32_t>(mode & 07777);
      n.uid = geteuid();
      n.gid = getegid();
      MarkClean(idx);  // committed at the end only if this program writes to it
      seen[nseen++] = {st.st_ino, idx};
      Debug("adopted staged %s from before exec (fd %d)", ns, fd);
    }
    Attach(fd, idx);
  }
  Real().closedir(d);
}

}  // namespace fern::intercept
