// Wrappers for opening, closing and duplicating files: the open family,
// creat, fopen/freopen, close/fclose, fsync/fdatasync, dup/dup2/dup3,
// fcntl(F_DUPFD*) and truncate.
//
// Open for reading: GET, then a read-only reopen of the daemon's sealed memfd.
// Open for writing: the bytes are staged in a memfd the shim creates (filled
// from GET unless O_TRUNC), the app gets a reopen of it with its own access
// mode and flags; the last close, fsync/fdatasync or process exit commits it
// with PUT, or with an UPDATE of the bytes that changed for a file reopened
// without O_TRUNC whose size stayed (open_files.h). Temporary fds are moved
// to the private range before the app's fd is opened, so the app gets the
// lowest free number as open(2) promises (close(1); open(...) idioms keep
// working).
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "intercept/open_files.h"
#include "intercept/shim.h"

extern "C" {
int __open_2(const char*, int);
int __open64_2(const char*, int);
int __openat_2(int, const char*, int);
int __openat64_2(int, const char*, int);
}

namespace fern::intercept {

namespace {

// Flags a reopened memfd keeps; the rest were handled by the shim (O_CREAT,
// O_EXCL, O_TRUNC) or do not apply to memory (O_DIRECT, O_NOATIME, ...).
constexpr int kReopenFlags = O_ACCMODE | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_SYNC | O_DSYNC;

// A new app fd on memfd with the access mode and flags of `flags`.
int ReopenMemfd(int memfd, int flags) {
  char proc[64];
  std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", memfd);
  int fd = Real().open(proc, (flags & kReopenFlags) | O_LARGEFILE);
  if (fd >= 0 || errno != ENOENT) return fd;
  // No /proc: share the memfd's open file description instead.
  fd = Real().fcntl(memfd, (flags & O_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
  if (fd >= 0 && (flags & O_APPEND)) Real().fcntl(fd, F_SETFL, O_APPEND);
  return fd;
}

// Copies `size` bytes from the start of src to the start of dst.
int CopyAll(int src, int dst, uint64_t size) {
  loff_t in = 0, out = 0;
  while (static_cast<uint64_t>(in) < size) {
    const ssize_t n = copy_file_range(src, &in, dst, &out, size - static_cast<uint64_t>(in), 0);
    if (n > 0) continue;
    if (n == 0) return EIO;  // the sealed source is shorter than it said
    if (errno == EINTR) continue;
    break;  // EXDEV, EINVAL, ENOSYS...: copy by hand
  }
  char buf[64 * 1024];
  while (static_cast<uint64_t>(in) < size) {
    const ssize_t n = pread(src, buf, sizeof buf, in);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n == 0 ? EIO : errno;
    for (ssize_t done = 0; done < n;) {
      const ssize_t w = pwrite(dst, buf + done, static_cast<size_t>(n - done), out);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return w == 0 ? EIO : errno;
      done += w;
      out += w;
    }
    in += n;
  }
  return 0;
}

// A memfd for staging ns, named so a program exec'd with the fd inherited can
// adopt it (AdoptAfterExec).
int NewStagingMemfd(const char* ns, uint32_t mode) {
  char name[250];
  if (std::snprintf(name, sizeof name, "fern-ec-w:%o:%s", mode, ns) >= static_cast<int>(sizeof name)) {
    std::strcpy(name, "fern-ec-w-long");
  }
  return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
}

// REQUIRES: lock. A read fd for an already staged node (reads see the bytes
// written so far in this process, as on a real file).
int OpenStagedForRead(int staged, int mount, const char* ns, int flags) {
  Node* s = NodeAt(staged);
  struct stat st {};
  Real().fstat(s->private_fd, &st);
  const uint32_t mode = s->mode, uid = s->uid, gid = s->gid;
  const int idx = NewNode(NodeKind::kRead, mount, ns);
  if (idx < 0) return -ENOMEM;
  const int fd = ReopenMemfd(NodeAt(staged)->private_fd, O_RDONLY | (flags & (O_CLOEXEC | O_NONBLOCK)));
  if (fd < 0) {
    const int err = errno;
    DiscardNode(idx);
    return -err;
  }
  Node* n = NodeAt(idx);
  n->mode = mode;
  n->uid = uid;
  n->gid = gid;
  n->mtime_ns = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000ull + st.st_mtim.tv_nsec;
  return AttachNew(fd, idx) >= 0 ? fd : -EMFILE;
}

// REQUIRES: lock. A read fd on the sealed memfd of a GET reply (consumed).
int ReadFdFromMemfd(int memfd, const Attr& a, int mount, const char* ns, int flags) {
  const int tmp = MoveHigh(memfd, kSlotTemp);
  if (tmp < 0) {
    const int err = errno;
    Real().close(memfd);
    return -err;
  }
  const int idx = NewNode(NodeKind::kRead, mount, ns);
  if (idx < 0) {
    ClosePrivate(tmp);
    return -ENOMEM;
  }
  const int fd = ReopenMemfd(tmp, O_RDONLY | (flags & (O_CLOEXEC | O_NONBLOCK)));
  const int err = errno;
  ClosePrivate(tmp);
  if (fd < 0) {
    DiscardNode(idx);
    return -err;
  }
  Node* n = NodeAt(idx);
  n->mode = a.mode & 07777;
  n->uid = a.uid;
  n->gid = a.gid;
  n->mtime_ns = a.mtime_ns;
  return AttachNew(fd, idx) >= 0 ? fd : -EMFILE;
}

// REQUIRES: lock. Creates ns as an empty file (open O_RDONLY|O_CREAT).
int CreateEmpty(const char* ns, mode_t mode) {
  const uint32_t perm = (mode & ~CurrentUmask()) & 07777;
  const int fd = NewStagingMemfd(ns, perm);
  if (fd < 0) return errno;
  const int err = DaemonPut(ns, fd, 0, perm);
  Real().close(fd);
  return err;
}

// REQUIRES: lock. Returns the fd or -errno.
int OpenDir(const Target& t, int flags) {
  Attr a;
  if (const int err = DaemonStat(t.ns, &a); err != 0) return -err;
  if (!S_ISDIR(a.mode)) return -ENOTDIR;
  if ((flags & O_CREAT) && (flags & O_EXCL)) return -EEXIST;
  const int fd = NewDirAppFd(t.mount, t.ns, a, flags);
  return fd >= 0 ? fd : -errno;
}

// REQUIRES: lock. open(O_RDONLY or O_PATH); returns the fd or -errno.
int OpenForRead(const Target& t, int flags, mode_t mode) {
  const bool excl = (flags & O_CREAT) && (flags & O_EXCL);
  if (const int s = FindStaged(t.ns); s >= 0) {
    if (excl) return -EEXIST;
    if (flags & O_DIRECTORY) return -ENOTDIR;
    return OpenStagedForRead(s, t.mount, t.ns, flags);
  }
  if (flags & O_DIRECTORY) return OpenDir(t, flags);
  Attr a;
  int memfd = -1;
  int err = DaemonGet(t.ns, &a, &memfd);
  if (err == EISDIR) return (flags & O_CREAT) ? -EISDIR : OpenDir(t, flags);
  if (err == ENOENT && (flags & O_CREAT)) {
    if ((err = CreateEmpty(t.ns, mode)) != 0) return -err;
    err = DaemonGet(t.ns, &a, &memfd);
  } else if (err == 0 && excl) {
    Real().close(memfd);
    return -EEXIST;
  }
  if (err != 0) return -err;
  return ReadFdFromMemfd(memfd, a, t.mount, t.ns, flags);
}

// REQUIRES: lock. The checks open(2) makes before writing to ns. Sets
// *exists and fills *a when it does.
int CheckWritable(const Target& t, int flags, bool* exists, Attr* a) {
  int err = DaemonStat(t.ns, a);
  *exists = err == 0;
  if (err != 0 && err != ENOENT) return err;
  if (*exists) {
    if (S_ISDIR(a->mode)) return EISDIR;
    if (flags & O_DIRECTORY) return ENOTDIR;
    if ((flags & O_CREAT) && (flags & O_EXCL)) return EEXIST;
    const int mask = W_OK | ((flags & O_ACCMODE) == O_RDWR ? R_OK : 0);
    return DaemonAccess(t.ns, mask);
  }
  if (!(flags & O_CREAT)) return ENOENT;
  if (flags & O_DIRECTORY) return EINVAL;
  if (std::strcmp(t.ns, "/") == 0) return EISDIR;
  char parent[kPathBuf];
  ParentOf(t.ns, parent, sizeof parent);
  Attr p;
  if (std::strcmp(parent, "/") != 0 && DaemonStat(parent, &p) == 0 && !S_ISDIR(p.mode)) return ENOTDIR;
  return 0;  // directories are implicit: a missing parent comes into being
}

// REQUIRES: lock. open(O_WRONLY or O_RDWR); returns the fd or -errno.
int OpenForWrite(const Target& t, int flags, mode_t mode) {
  if (const int s = FindStaged(t.ns); s >= 0) {
    if ((flags & O_CREAT) && (flags & O_EXCL)) return -EEXIST;
    if (flags & O_DIRECTORY) return -ENOTDIR;
    if (flags & O_TRUNC) {
      if (ftruncate(NodeAt(s)->private_fd, 0) != 0) return -errno;
      NodeAt(s)->dirty = true;
    }
    const int fd = ReopenMemfd(NodeAt(s)->private_fd, flags);
    if (fd < 0) return -errno;
    return AttachNew(fd, s) >= 0 ? fd : -EMFILE;
  }
  bool exists = false;
  Attr a;
  if (const int err = CheckWritable(t, flags, &exists, &a); err != 0) return -err;
  const uint32_t perm = exists ? (a.mode & 07777) : ((mode & ~CurrentUmask()) & 07777);
  const int idx = NewNode(NodeKind::kStaged, t.mount, t.ns);
  if (idx < 0) return -ENOMEM;
  Node* n = NodeAt(idx);
  n->mode = perm;
  n->uid = exists ? a.uid : geteuid();
  n->gid = exists ? a.gid : getegid();
  int err = 0;
  const int memfd = NewStagingMemfd(t.ns, perm);
  if (memfd < 0 || (n->private_fd = MoveHigh(memfd, kSlotPrivate | static_cast<uint32_t>(idx))) < 0) {
    err = errno;
    if (memfd >= 0) Real().close(memfd);
    DiscardNode(idx);
    return -err;
  }
  if (exists && !(flags & O_TRUNC) && a.size > 0) {
    // The GET memfd stays as the node's base: while the size stays, commits
    // send only the bytes that differ from it (open_files.h).
    Attr cur;
    int src = -1;
    err = DaemonGet(t.ns, &cur, &src);
    if (err == 0 && cur.size == 0) {
      Real().close(src);
    } else if (err == 0 && (err = SetBase(idx, src, cur.version, cur.size)) == 0) {
      err = CopyAll(NodeAt(idx)->base_fd, NodeAt(idx)->private_fd, cur.size);
    }
    if (err != 0) {
      DiscardNode(idx);
      return -err;
    }
  }
  if (exists && !(flags & O_TRUNC)) {
    MarkClean(idx);  // unchanged until the app writes: close commits nothing
  } else {
    NodeAt(idx)->dirty = true;
  }
  const int fd = ReopenMemfd(NodeAt(idx)->private_fd, flags);
  if (fd < 0) {
    err = errno;
    DiscardNode(idx);
    return -err;
  }
  // The file's mode lives in the memfd (see CommitIfChanged); set only now,
  // as open(O_CREAT, 0444) must still hand out a writable fd.
  fchmod(NodeAt(idx)->private_fd, perm);
  return AttachNew(fd, idx) >= 0 ? fd : -EMFILE;
}

// Opens a managed target. Returns the fd, or -1 with errno.
int OpenManaged(const Target& t, int flags, mode_t mode) {
  ErrnoKeeper e;
  ShimScope scope;
  LockGuard lock;
  int r;
  const int acc = flags & O_ACCMODE;
  if ((flags & O_TMPFILE) == O_TMPFILE) {
    r = -EOPNOTSUPP;
  } else if ((flags & O_PATH) || acc == O_RDONLY) {
    r = OpenForRead(t, flags, mode);
  } else if (acc == O_ACCMODE) {
    r = -EINVAL;
  } else {
    r = OpenForWrite(t, flags, mode);
  }
  return r < 0 ? e.Fail(-r) : e.Ok(r);
}

// Handles an open of (dirfd, path) that is not a plain passthrough; returns
// false to let the caller pass it to its real function.
bool OpenIntercept(int dirfd, const char* path, int flags, mode_t mode, int* ret) {
  return Dispatch(
      dirfd, path, ret, [&](const char* abs) { return Real().openat(AT_FDCWD, abs, flags, mode); },
      [&](const Target& t) { return OpenManaged(t, flags, mode); });
}

bool TakesMode(int flags) { return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE; }

// fopen mode string -> open flags; -1 if malformed.
int FopenFlags(const char* mode) {
  if (mode == nullptr) return -1;
  int flags;
  switch (mode[0]) {
    case 'r': flags = O_RDONLY; break;
    case 'w': flags = O_WRONLY | O_CREAT | O_TRUNC; break;
    case 'a': flags = O_WRONLY | O_CREAT | O_APPEND; break;
    default: return -1;
  }
  for (const char* p = mode + 1; *p && *p != ','; ++p) {
    if (*p == '+') flags = (flags & ~O_ACCMODE) | O_RDWR;
    if (*p == 'x') flags |= O_EXCL;
    if (*p == 'e') flags |= O_CLOEXEC;
  }
  return flags;
}

// The part of an fopen mode fdopen understands ("r", "w+", ...).
void FdopenMode(const char* mode, char out[3]) {
  out[0] = mode[0];
  out[1] = std::strchr(mode, '+') ? '+' : '\0';
  out[2] = '\0';
}

// close(2) of an app fd the shim tracks. REQUIRES: not InShim.
int CloseTracked(int fd) {
  ErrnoKeeper e;
  ShimScope scope;
  LockGuard lock;
  const uint32_t s = SlotOf(fd);
  if (s == kSlotSocket) {
    DaemonSocketGone();
    return Real().close(fd);
  }
  if (s >= kSlotPrivate) return e.Fail(EBADF);  // shim-owned: not the app's to close
  const int r = Real().close(fd);
  const int close_err = errno;
  if (const int err = Detach(fd); err != 0) return e.Fail(err);
  return r != 0 ? e.Fail(close_err) : e.Ok(0);
}

FILE* FopenManaged(const Target& t, const char* mode) {
  const int flags = FopenFlags(mode);
  if (flags < 0) {
    errno = EINVAL;
    return nullptr;
  }
  const int fd = OpenManaged(t, flags, 0666);
  if (fd < 0) return nullptr;
  char fmode[3];
  FdopenMode(mode, fmode);
  FILE* f = fdopen(fd, fmode);
  if (f == nullptr) {
    const int err = errno;
    CloseTracked(fd);
    errno = err;
  }
  return f;
}

using FopenFn = FILE* (*)(const char*, const char*);
using FreopenFn = FILE* (*)(const char*, const char*, FILE*);

FILE* FopenImpl(const char* path, const char* mode, FopenFn real) {
  if (InShim()) return real(path, mode);
  Target t;
  Resolve(AT_FDCWD, path, &t);
  if (t.kind == Target::kFail) {
    errno = t.err;
    return nullptr;
  }
  if (t.kind == Target::kPassPath) return real(t.abs, mode);
  if (t.kind != Target::kManaged) return real(path, mode);
  return FopenManaged(t, mode);
}

// freopen closes the stream's old fd inside libc: do its close bookkeeping.
// A managed path is opened by the shim and handed to the real freopen as
// /proc/self/fd/N, so the stream ends up on a reopen of the same memfd.
FILE* FreopenImpl(const char* path, const char* mode, FILE* stream, FreopenFn real) {
  if (InShim() || stream == nullptr) return real(path, mode, stream);
  const int oldfd = fileno(stream);
  Target t;
  if (path != nullptr) Resolve(AT_FDCWD, path, &t);
  if (t.kind == Target::kFail) {
    errno = t.err;
    return nullptr;
  }
  const bool old_tracked = IsAppSlot(SlotOf(oldfd));
  if (t.kind == Target::kPassPath) path = t.abs;
  if (t.kind != Target::kManaged) {
    if (!old_tracked || path == nullptr) return real(path, mode, stream);
    fflush(stream);
    ShimScope scope;
    LockGuard lock;
    FILE* f = real(path, mode, stream);
    const int err = errno;
    (void)Detach(oldfd);
    errno = err;
    return f;
  }
  const int flags = FopenFlags(mode);
  if (flags < 0) {
    errno = EINVAL;
    return nullptr;
  }
  fflush(stream);
  const int fd = OpenManaged(t, flags & ~O_CLOEXEC, 0666);
  if (fd < 0) return nullptr;
  char proc[64];
  std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  FILE* f;
  {
    ShimScope scope;
    LockGuard lock;
    const int idx = NodeOfFd(fd);
    f = real(proc, mode, stream);
    const int err = errno;
    if (old_tracked) (void)Detach(oldfd);
    if (f != nullptr && idx >= 0) Attach(fileno(f), idx);
    errno = err;
  }
  const int err = errno;
  CloseTracked(fd);
  errno = err;
  return f;
}

int SyncImpl(int fd, int (*real)(int)) {
  if (InShim() || !IsAppSlot(SlotOf(fd)) || ForeignProcess()) return real(fd);
  ErrnoKeeper e;
  ShimScope scope;
  LockGuard lock;
  const int idx = NodeOfFd(fd);
  const Node* n = NodeAt(idx);
  if (n == nullptr || n->kind != NodeKind::kStaged) return real(fd);
  if (const int err = CommitIfChanged(idx); err != 0) return e.Fail(err);
  return e.Ok(0);
}

// dup2/dup3 (flags < 0: dup2). newfd is implicitly closed first.
int Dup2Impl(int oldfd, int newfd, int flags) {
  auto real = [&]() { return flags < 0 ? Real().dup2(oldfd, newfd) : Real().dup3(oldfd, newfd, flags); };
  if (InShim()) return real();
  const uint32_t s_old = SlotOf(oldfd);
  const uint32_t s_new = SlotOf(newfd);
  if ((s_old == 0 && s_new == 0) || oldfd == newfd || ForeignProcess()) return real();
  ErrnoKeeper e;
  ShimScope scope;
  LockGuard lock;
  if (s_new >= kSlotPrivate) {
    if (const int err = RelocatePrivate(newfd); err != 0) return e.Fail(err);
  }
  const int idx = IsAppSlot(s_old) ? NodeOfFd(oldfd) : -1;
  const int r = real();
  if (r < 0) return r;
  if (const int err = Detach(newfd); err != 0) {
    Debug("dup2 onto fd %d: implicit close failed to commit: %s", newfd, std::strerror(err));
  }
  if (idx >= 0) Attach(newfd, idx);
  return e.Ok(r);
}

void NoteMapping(int prot, int flags, int fd) {
  if (!(prot & PROT_WRITE) || (flags & MAP_TYPE) == MAP_PRIVATE || InShim() || !IsAppSlot(SlotOf(fd)) ||
      ForeignProcess()) {
    return;
  }
  ShimScope scope;
  LockGuard lock;
  if (Node* n = NodeAt(NodeOfFd(fd)); n && n->kind == NodeKind::kStaged) n->mapped = true;
}

int FcntlImpl(int fd, int cmd, void* arg, int (*real)(int, int, ...)) {
  if ((cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && !InShim() && IsAppSlot(SlotOf(fd)) &&
      !ForeignProcess()) {
    ShimScope scope;
    LockGuard lock;
    const int idx = NodeOfFd(fd);
    const int r = real(fd, cmd, arg);
    if (r >= 0 && idx >= 0) Attach(r, idx);
    return r;
  }
  return real(fd, cmd, arg);
}

// truncate(2) of a managed file: a staged one is cut in place (committed at
// its close); otherwise GET, cut, PUT.
int TruncateManaged(const Target& t, off_t length) {
  ErrnoKeeper e;
  if (length < 0) return e.Fail(EINVAL);
  ShimScope scope;
  LockGuard lock;
  if (const int s = FindStaged(t.ns); s >= 0) {
    if (ftruncate(NodeAt(s)->private_fd, length) != 0) return e.Fail(errno);
    NodeAt(s)->dirty = true;
    return e.Ok(0);
  }
  Attr a;
  if (const int err = DaemonStat(t.ns, &a); err != 0) return e.Fail(err);
  if (S_ISDIR(a.mode)) return e.Fail(EISDIR);
  if (const int err = DaemonAccess(t.ns, W_OK); err != 0) return e.Fail(err);
  const int memfd = NewStagingMemfd(t.ns, a.mode & 07777);
  if (memfd < 0) return e.Fail(errno);
  int err = 0;
  if (length > 0 && a.size > 0) {
    int src = -1;
    Attr cur;
    err = DaemonGet(t.ns, &cur, &src);
    if (err == 0) {
      const uint64_t keep = cur.size < static_cast<uint64_t>(length) ? cur.size : static_cast<uint64_t>(length);
      err = CopyAll(src, memfd, keep);
      Real().close(src);
    }
  }
  if (err == 0 && ftruncate(memfd, length) != 0) err = errno;
  if (err == 0) err = DaemonPut(t.ns, memfd, static_cast<uint64_t>(length), a.mode & 07777);
  Real().close(memfd);
  return err != 0 ? e.Fail(err) : e.Ok(0);
}

int TruncateImpl(const char* path, off_t length, int (*real)(const char*, off_t)) {
  if (InShim()) return real(path, length);
  Target t;
  Resolve(AT_FDCWD, path, &t);
  if (t.kind == Target::kFail) {
    errno = t.err;
    return -1;
  }
  if (t.kind == Target::kPassPath) return real(t.abs, length);
  if (t.kind != Target::kManaged) return real(path, length);
  return TruncateManaged(t, length);
}

}  // namespace

}  // namespace fern::intercept

using fern::intercept::OpenIntercept;
using fern::intercept::Real;

#define FERN_OPEN_MODE(flags)              \
  mode_t mode = 0;                         \
  if (fern::intercept::TakesMode(flags)) { \
    va_list ap;                            \
    va_start(ap, flags);                   \
    mode = va_arg(ap, mode_t);             \
    va_end(ap);                            \
  }

FERN_EXPORT int open(const char* path, int flags, ...) {
  FERN_OPEN_MODE(flags);
  int r;
  if (OpenIntercept(AT_FDCWD, path, flags, mode, &r)) return r;
  return Real().open(path, flags, mode);
}

FERN_EXPORT int open64(const char* path, int flags, ...) {
  FERN_OPEN_MODE(flags);
  int r;
  if (OpenIntercept(AT_FDCWD, path, flags, mode, &r)) return r;
  return Real().open64(path, flags, mode);
}

FERN_EXPORT int openat(int dirfd, const char* path, int flags, ...) {
  FERN_OPEN_MODE(flags);
  int r;
  if (OpenIntercept(dirfd, path, flags, mode, &r)) return r;
  return Real().openat(dirfd, path, flags, mode);
}

FERN_EXPORT int openat64(int dirfd, const char* path, int flags, ...) {
  FERN_OPEN_MODE(flags);
  int r;
  if (OpenIntercept(dirfd, path, flags, mode, &r)) return r;
  return Real().openat64(dirfd, path, flags, mode);
}

FERN_EXPORT int __open_2(const char* path, int flags) {
  int r;
  if (!fern::intercept::TakesMode(flags) && OpenIntercept(AT_FDCWD, path, flags, 0, &r)) return r;
  return Real().__open_2(path, flags);  // O_CREAT here is a FORTIFY abort
}

FERN_EXPORT int __open64_2(const char* path, int flags) {
  int r;
  if (!fern::intercept::TakesMode(flags) && OpenIntercept(AT_FDCWD, path, flags, 0, &r)) return r;
  return Real().__open64_2(path, flags);
}

FERN_EXPORT int __openat_2(int dirfd, const char* path, int flags) {
  int r;
  if (!fern::intercept::TakesMode(flags) && OpenIntercept(dirfd, path, flags, 0, &r)) return r;
  return Real().__openat_2(dirfd, path, flags);
}

FERN_EXPORT int __openat64_2(int dirfd, const char* path, int flags) {
  int r;
  if (!fern::intercept::TakesMode(flags) && OpenIntercept(dirfd, path, flags, 0, &r)) return r;
  return Real().__openat64_2(dirfd, path, flags);
}

FERN_EXPORT int creat(const char* path, mode_t mode) {
  int r;
  if (OpenIntercept(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, &r)) return r;
  return Real().creat(path, mode);
}

FERN_EXPORT int creat64(const char* path, mode_t mode) {
  int r;
  if (OpenIntercept(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, &r)) return r;
  return Real().creat64(path, mode);
}

FERN_EXPORT FILE* fopen(const char* path, const char* mode) {
  return fern::intercept::FopenImpl(path, mode, Real().fopen);
}

FERN_EXPORT FILE* fopen64(const char* path, const char* mode) {
  return fern::intercept::FopenImpl(path, mode, Real().fopen64);
}

FERN_EXPORT FILE* freopen(const char* path, const char* mode, FILE* stream) {
  return fern::intercept::FreopenImpl(path, mode, stream, Real().freopen);
}

FERN_EXPORT FILE* freopen64(const char* path, const char* mode, FILE* stream) {
  return fern::intercept::FreopenImpl(path, mode, stream, Real().freopen64);
}

FERN_EXPORT int close(int fd) {
  using namespace fern::intercept;
  if (InShim() || !IsTracked(fd) || ForeignProcess()) return Real().close(fd);
  return CloseTracked(fd);
}

// glibc's fclose closes the fd internally, past our close(): take the fd
// first, let the real fclose flush and close, then do the close bookkeeping
// (commit at the last reference) under the lock so the number cannot be
// reused in between.
FERN_EXPORT int fclose(FILE* stream) {
  using namespace fern::intercept;
  const int fd = (!InShim() && stream != nullptr) ? fileno(stream) : -1;
  if (!IsAppSlot(SlotOf(fd)) || ForeignProcess()) return Real().fclose(stream);
  ErrnoKeeper e;
  ShimScope scope;
  LockGuard lock;
  const int r = Real().fclose(stream);
  const int close_err = errno;
  if (const int err = Detach(fd); err != 0) return e.Fail(err);
  return r != 0 ? e.Fail(close_err) : e.Ok(0);
}

FERN_EXPORT int fsync(int fd) { return fern::intercept::SyncImpl(fd, Real().fsync); }
FERN_EXPORT int fdatasync(int fd) { return fern::intercept::SyncImpl(fd, Real().fdatasync); }

FERN_EXPORT int dup(int fd) noexcept {
  using namespace fern::intercept;
  if (InShim() || !IsAppSlot(SlotOf(fd)) || ForeignProcess()) return Real().dup(fd);
  ShimScope scope;
  LockGuard lock;
  const int idx = NodeOfFd(fd);
  const int r = Real().dup(fd);
  if (r >= 0 && idx >= 0) Attach(r, idx);
  return r;
}

FERN_EXPORT int dup2(int oldfd, int newfd) noexcept { return fern::intercept::Dup2Impl(oldfd, newfd, -1); }

FERN_EXPORT int dup3(int oldfd, int newfd, int flags) noexcept {
  if (flags < 0) {
    errno = EINVAL;
    return -1;
  }
  return fern::intercept::Dup2Impl(oldfd, newfd, flags);
}

FERN_EXPORT int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return fern::intercept::FcntlImpl(fd, cmd, arg, Real().fcntl);
}

FERN_EXPORT int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return fern::intercept::FcntlImpl(fd, cmd, arg, Real().fcntl64 ? Real().fcntl64 : Real().fcntl);
}

// Not on the data path: only notes that a staged file got a writable shared
// mapping, whose stores change no mtime (open_files.h Node::mapped).
FERN_EXPORT void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) noexcept {
  fern::intercept::NoteMapping(prot, flags, fd);
  return Real().mmap(addr, len, prot, flags, fd, off);
}

FERN_EXPORT void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off64_t off) noexcept {
  fern::intercept::NoteMapping(prot, flags, fd);
  return Real().mmap64(addr, len, prot, flags, fd, off);
}

FERN_EXPORT int truncate(const char* path, off_t length) noexcept {
  return fern::intercept::TruncateImpl(path, length, Real().truncate);
}

FERN_EXPORT int truncate64(const char* path, off64_t length) noexcept {
  return fern::intercept::TruncateImpl(path, length, Real().truncate64);
}
