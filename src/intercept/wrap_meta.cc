// Wrappers for metadata calls on managed paths: the stat family (including
// the pre-2.33 __xstat entry points and statx), fstat of tracked fds,
// access, unlink/remove/rmdir, rename, mkdir, realpath, chdir/fchdir/getcwd
// (a virtual working directory, shim.h), and the attribute setters the
// protocol has no op for: chmod reaches a file still open for writing here
// (its mode goes with the commit); otherwise chmod/chown/utime* are accepted
// and ignored on existing managed paths; xattrs are ENOTSUP.
//
// stat of a managed path asks the daemon (STAT), except for a file this
// process has open for writing, which reports its staged bytes. Identity is
// synthetic and stable: st_dev a fixed fake device, st_ino a hash of the
// namespace path, so stat(path) and fstat(fd) agree (cp and fts compare them).
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <utime.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "intercept/open_files.h"
#include "intercept/shim.h"

extern "C" {
int __xstat(int, const char*, struct stat*);
int __xstat64(int, const char*, struct stat64*);
int __lxstat(int, const char*, struct stat*);
int __lxstat64(int, const char*, struct stat64*);
int __fxstat(int, int, struct stat*);
int __fxstat64(int, int, struct stat64*);
int __fxstatat(int, int, const char*, struct stat*, int);
int __fxstatat64(int, int, const char*, struct stat64*, int);
char* __realpath_chk(const char*, char*, size_t);
char* __getcwd_chk(char*, size_t, size_t);
}

static_assert(sizeof(struct stat) == sizeof(struct stat64), "x86-64/aarch64 layout: stat == stat64");

namespace fern::intercept {

namespace {

// REQUIRES: ShimScope and lock.
int StatLocked(const char* ns, struct stat* st) {
  if (const int s = FindStaged(ns); s >= 0) return StatStaged(s, st);
  Attr a;
  if (const int err = DaemonStat(ns, &a); err != 0) return err;
  FillStat(ns, a, st);
  return 0;
}

int StatManaged(const Target& t, struct stat* st) {
  ShimScope scope;
  LockGuard lock;
  return StatLocked(t.ns, st);
}

// fstat of a tracked app fd. Returns -1 with errno, or 0.
int FstatTracked(int fd, struct stat* st) {
  ErrnoKeeper e;
  ShimScope scope;
  LockGuard lock;
  const int idx = NodeOfFd(fd);
  if (idx < 0) return Real().fstat(fd, st);
  const int err = StatNodeFd(idx, fd, st);
  return err != 0 ? e.Fail(err) : e.Ok(0);
}

bool WantsFd(const char* path, int flags) {
  return (path == nullptr || path[0] == '\0') && (flags & AT_EMPTY_PATH);
}

// Handles a stat-like call on (dirfd, path); false means "pass through".
bool StatIntercept(int dirfd, const char* path, int flags, struct stat* st, int* ret) {
  if (InShim()) return false;
  if (WantsFd(path, flags)) {
    if (!IsAppSlot(SlotOf(dirfd)) || ForeignProcess()) return false;
    *ret = FstatTracked(dirfd, st);
    return true;
  }
  return Dispatch(
      dirfd, path, ret, [&](const char* abs) { return Real().fstatat(AT_FDCWD, abs, st, flags); },
      [&](const Target& t) {
        ErrnoKeeper e;
        const int err = StatManaged(t, st);
        return err != 0 ? e.Fail(err) : e.Ok(0);
      });
}

bool FstatIntercept(int fd, struct stat* st, int* ret) {
  if (InShim() || !IsAppSlot(SlotOf(fd)) || ForeignProcess()) return false;
  *ret = FstatTracked(fd, st);
  return true;
}

void ToStatx(const struct stat& st, struct statx* sx) {
  std::memset(sx, 0, sizeof *sx);
  sx->stx_mask = STATX_BASIC_STATS;
  sx->stx_blksize = static_cast<uint32_t>(st.st_blksize);
  sx->stx_nlink = static_cast<uint32_t>(st.st_nlink);
  sx->stx_uid = st.st_uid;
  sx->stx_gid = st.st_gid;
  sx->stx_mode = static_cast<uint16_t>(st.st_mode);
  sx->stx_ino = st.st_ino;
  sx->stx_size = static_cast<uint64_t>(st.st_size);
  sx->stx_blocks = static_cast<uint64_t>(st.st_blocks);
  sx->stx_atime = {st.st_atim.tv_sec, static_cast<uint32_t>(st.st_atim.tv_nsec), 0};
  sx->stx_mtime = {st.st_mtim.tv_sec, static_cast<uint32_t>(st.st_mtim.tv_nsec), 0};
  sx->stx_ctime = {st.st_ctim.tv_sec, static_cast<uint32_t>(st.st_ctim.tv_nsec), 0};
  sx->stx_dev_major = major(st.st_dev);
  sx->stx_dev_minor = minor(st.st_dev);
}

// A managed call that only needs (target) -> errno, run under the lock.
// Returns false for passthrough; kPassPath calls `pass_abs` with t.abs.
template <typename Managed, typename PassAbs>
bool PathIntercept(int dirfd, const char* path, int* ret, Managed managed, PassAbs pass_abs) {
  return Dispatch(dirfd, path, ret, pass_abs, [&](const Target& t) {
    ErrnoKeeper e;
    int err;
    {
      ShimScope scope;
      LockGuard lock;
      err = managed(t);
    }
    return err != 0 ? e.Fail(err) : e.Ok(0);
  });
}

// REQUIRES: lock.
int AccessLocked(const Target& t, int mode) {
  if (FindStaged(t.ns) >= 0) return 0;  // open for writing here: ours
  return DaemonAccess(t.ns, mode & (R_OK | W_OK | X_OK));
}

// REQUIRES: lock. A file open for writing here that was never committed
// exists only in this process: unlinking it just stops its commit.
int UnlinkLocked(const Target& t) {
  const int s = FindStaged(t.ns);
  int err = DaemonUnlink(t.ns);
  if (s >= 0) {
    if (err == ENOENT) err = 0;
    if (err == 0) {
      NodeAt(s)->unlinked = true;
      DropBase(s);  // never committed now: no update to diff
    }
  }
  return err;
}

int RmdirLocked(const Target& t) { return DaemonRmdir(t.ns); }

int RemoveLocked(const Target& t) {
  const int err = UnlinkLocked(t);
  return err == EISDIR ? RmdirLocked(t) : err;
}

int MkdirLocked(const Target& t, mode_t mode) {
  if (FindStaged(t.ns) >= 0) return EEXIST;
  return DaemonMkdir(t.ns, (mode & ~CurrentUmask()) & 07777);
}

// Managed paths have no settable attributes: succeed if the path exists.
int ExistsLocked(const Target& t) {
  struct stat st;
  const int err = StatLocked(t.ns, &st);
  if (err == 0) Debug("attribute change on %s accepted and ignored", t.ns);
  return err;
}

// chmod of a file this process still writes reaches the daemon with its
// commit (the mode of a new file); otherwise as ExistsLocked.
int ChmodLocked(const Target& t, mode_t mode) {
  if (const int s = FindStaged(t.ns); s >= 0) {
    return fchmod(NodeAt(s)->private_fd, mode & 07777) == 0 ? 0 : errno;
  }
  return ExistsLocked(t);
}

// REQUIRES: lock. Both paths managed.
int RenameLocked(const Target& from, const Target& to, unsigned flags) {
  if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE)) return EINVAL;
  if (flags & RENAME_NOREPLACE) {
    if (FindStaged(to.ns) >= 0) return EEXIST;
    Attr a;
    const int err = DaemonStat(to.ns, &a);
    if (err == 0) return EEXIST;
    if (err != ENOENT) return err;
  }
  const int s = FindStaged(from.ns);
  if (s >= 0) {
    // The daemon must know the file before it can rename it.
    if (const int err = CommitIfChanged(s); err != 0) return err;
  }
  if (const int err = DaemonRename(from.ns, to.ns); err != 0) return err;
  if (std::strcmp(from.ns, to.ns) == 0) return 0;
  if (const int d = FindStaged(to.ns); d >= 0 && d != s) {  // replaced: never committed
    NodeAt(d)->unlinked = true;
    DropBase(d);
  }
  if (s >= 0) {
    Node* n = NodeAt(s);
    if (char* copy = strdup(to.ns)) {
      std::free(n->ns);
      n->ns = copy;
      n->mount = to.mount;
    }
  }
  return 0;
}

int RenameImpl(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, unsigned flags,
               int (*pass)(int, const char*, int, const char*, unsigned)) {
  if (InShim()) return pass(olddirfd, oldpath, newdirfd, newpath, flags);
  Target from, to;
  Resolve(olddirfd, oldpath, &from);
  Resolve(newdirfd, newpath, &to);
  if (from.kind == Target::kFail || to.kind == Target::kFail) {
    errno = from.kind == Target::kFail ? from.err : to.err;
    return -1;
  }
  const bool from_managed = from.kind == Target::kManaged;
  const bool to_managed = to.kind == Target::kManaged;
  if (from_managed != to_managed) {
    errno = EXDEV;  // across file systems: mv copies and deletes
    return -1;
  }
  if (!from_managed) {
    const bool a = from.kind == Target::kPassPath, b = to.kind == Target::kPassPath;
    return pass(a ? AT_FDCWD : olddirfd, a ? from.abs : oldpath, b ? AT_FDCWD : newdirfd, b ? to.abs : newpath,
                flags);
  }
  ErrnoKeeper e;
  int err;
  {
    ShimScope scope;
    LockGuard lock;
    err = RenameLocked(from, to, flags);
  }
  return err != 0 ? e.Fail(err) : e.Ok(0);
}

int PassRenameat2(int a, const char* p, int b, const char* q, unsigned flags) {
  if (flags == 0) return Real().renameat(a, p, b, q);
  return Real().renameat2(a, p, b, q, flags);
}

// realpath of a managed path: the lexical normalization, if it exists.
char* RealpathManaged(const Target& t, char* resolved, size_t resolved_len) {
  ErrnoKeeper e;
  int err;
  {
    ShimScope scope;
    LockGuard lock;
    struct stat st;
    err = StatLocked(t.ns, &st);
  }
  if (err != 0) {
    errno = err;
    return nullptr;
  }
  char full[kPathBuf];
  MountedPath(t.mount, t.ns, full, sizeof full);
  const size_t n = std::strlen(full);
  if (resolved == nullptr) {
    resolved = static_cast<char*>(std::malloc(n + 1));
    if (resolved == nullptr) return nullptr;
  } else if (n + 1 > resolved_len) {
    errno = ENAMETOOLONG;
    return nullptr;
  }
  std::memcpy(resolved, full, n + 1);
  e.Ok(0);
  return resolved;
}

// handled=false: the caller passes `*path` (replaced by its normalized form
// when that climbed out of a mount) to the real function.
char* RealpathImpl(const char** path, Target* t, char* resolved, size_t resolved_len, bool* handled) {
  *handled = false;
  if (InShim() || *path == nullptr) return nullptr;
  Resolve(AT_FDCWD, *path, t);
  switch (t->kind) {
    case Target::kPass:
      return nullptr;
    case Target::kPassPath:
      *path = t->abs;
      return nullptr;
    case Target::kFail:
      *handled = true;
      errno = t->err;
      return nullptr;
    case Target::kManaged:
      *handled = true;
      return RealpathManaged(*t, resolved, resolved_len);
  }
  return nullptr;
}

// chdir/fchdir into a managed directory: the real cwd becomes the removed
// empty directory, the virtual one the directory's path (shim.h).
int EnterManagedDir(int mount, const char* ns, bool check) {
  char abs[kPathBuf];
  {
    ShimScope scope;
    LockGuard lock;
    if (check) {
      struct stat st;
      if (const int err = StatLocked(ns, &st); err != 0) return err;
      if (!S_ISDIR(st.st_mode)) return ENOTDIR;
    }
    const int empty = EmptyDirFd();
    if (empty < 0) return EIO;
    if (Real().fchdir(empty) != 0) return errno;
    MountedPath(mount, ns, abs, sizeof abs);
  }
  SetVirtualCwd(abs);
  return 0;
}

// getcwd semantics for the virtual cwd.
char* CopyCwd(const char* virt, char* buf, size_t size) {
  const size_t n = std::strlen(virt) + 1;
  if (buf == nullptr) {
    if (size != 0 && size < n) {
      errno = ERANGE;
      return nullptr;
    }
    buf = static_cast<char*>(std::malloc(size != 0 ? size : n));
    if (buf == nullptr) return nullptr;
  } else if (size == 0) {
    errno = EINVAL;
    return nullptr;
  } else if (size < n) {
    errno = ERANGE;
    return nullptr;
  }
  std::memcpy(buf, virt, n);
  return buf;
}

int AccessImpl(int dirfd, const char* path, int mode, int* ret) {
  return PathIntercept(
      dirfd, path, ret, [mode](const Target& t) { return AccessLocked(t, mode); },
      [mode](const char* abs) { return Real().faccessat(AT_FDCWD, abs, mode, 0); });
}

}  // namespace

}  // namespace fern::intercept

using fern::intercept::PathIntercept;
using fern::intercept::Real;
using fern::intercept::StatIntercept;
using fern::intercept::Target;

#define FERN_STAT64(st) reinterpret_cast<struct stat*>(st)

FERN_EXPORT int stat(const char* path, struct stat* st) noexcept {
  int r;
  if (StatIntercept(AT_FDCWD, path, 0, st, &r)) return r;
  return Real().stat(path, st);
}

FERN_EXPORT int stat64(const char* path, struct stat64* st) noexcept {
  int r;
  if (StatIntercept(AT_FDCWD, path, 0, FERN_STAT64(st), &r)) return r;
  return Real().stat64(path, st);
}

FERN_EXPORT int lstat(const char* path, struct stat* st) noexcept {
  int r;
  if (StatIntercept(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, st, &r)) return r;
  return Real().lstat(path, st);
}

FERN_EXPORT int lstat64(const char* path, struct stat64* st) noexcept {
  int r;
  if (StatIntercept(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, FERN_STAT64(st), &r)) return r;
  return Real().lstat64(path, st);
}

FERN_EXPORT int fstatat(int dirfd, const char* path, struct stat* st, int flags) noexcept {
  int r;
  if (StatIntercept(dirfd, path, flags, st, &r)) return r;
  return Real().fstatat(dirfd, path, st, flags);
}

FERN_EXPORT int fstatat64(int dirfd, const char* path, struct stat64* st, int flags) noexcept {
  int r;
  if (StatIntercept(dirfd, path, flags, FERN_STAT64(st), &r)) return r;
  return Real().fstatat64(dirfd, path, st, flags);
}

FERN_EXPORT int fstat(int fd, struct stat* st) noexcept {
  int r;
  if (fern::intercept::FstatIntercept(fd, st, &r)) return r;
  return Real().fstat(fd, st);
}

FERN_EXPORT int fstat64(int fd, struct stat64* st) noexcept {
  int r;
  if (fern::intercept::FstatIntercept(fd, FERN_STAT64(st), &r)) return r;
  return Real().fstat64(fd, st);
}

FERN_EXPORT int __xstat(int ver, const char* path, struct stat* st) {
  int r;
  if (StatIntercept(AT_FDCWD, path, 0, st, &r)) return r;
  return Real().__xstat(ver, path, st);
}

FERN_EXPORT int __xstat64(int ver, const char* path, struct stat64* st) {
  int r;
  if (StatIntercept(AT_FDCWD, path, 0, FERN_STAT64(st), &r)) return r;
  return Real().__xstat64(ver, path, st);
}

FERN_EXPORT int __lxstat(int ver, const char* path, struct stat* st) {
  int r;
  if (StatIntercept(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, st, &r)) return r;
  return Real().__lxstat(ver, path, st);
}

FERN_EXPORT int __lxstat64(int ver, const char* path, struct stat64* st) {
  int r;
  if (StatIntercept(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, FERN_STAT64(st), &r)) return r;
  return Real().__lxstat64(ver, path, st);
}

FERN_EXPORT int __fxstat(int ver, int fd, struct stat* st) {
  int r;
  if (fern::intercept::FstatIntercept(fd, st, &r)) return r;
  return Real().__fxstat(ver, fd, st);
}

FERN_EXPORT int __fxstat64(int ver, int fd, struct stat64* st) {
  int r;
  if (fern::intercept::FstatIntercept(fd, FERN_STAT64(st), &r)) return r;
  return Real().__fxstat64(ver, fd, st);
}

FERN_EXPORT int __fxstatat(int ver, int dirfd, const char* path, struct stat* st, int flags) {
  int r;
  if (StatIntercept(dirfd, path, flags, st, &r)) return r;
  return Real().__fxstatat(ver, dirfd, path, st, flags);
}

FERN_EXPORT int __fxstatat64(int ver, int dirfd, const char* path, struct stat64* st, int flags) {
  int r;
  if (StatIntercept(dirfd, path, flags, FERN_STAT64(st), &r)) return r;
  return Real().__fxstatat64(ver, dirfd, path, st, flags);
}

FERN_EXPORT int statx(int dirfd, const char* path, int flags, unsigned mask, struct statx* sx) noexcept {
  struct stat st;
  int r;
  if (StatIntercept(dirfd, path, flags, &st, &r)) {
    if (r == 0) fern::intercept::ToStatx(st, sx);
    return r;
  }
  return Real().statx(dirfd, path, flags, mask, sx);
}

FERN_EXPORT int access(const char* path, int mode) noexcept {
  int r;
  if (fern::intercept::AccessImpl(AT_FDCWD, path, mode, &r)) return r;
  return Real().access(path, mode);
}

FERN_EXPORT int faccessat(int dirfd, const char* path, int mode, int flags) noexcept {
  int r;
  if (fern::intercept::AccessImpl(dirfd, path, mode, &r)) return r;
  return Real().faccessat(dirfd, path, mode, flags);
}

FERN_EXPORT int euidaccess(const char* path, int mode) noexcept {
  int r;
  if (fern::intercept::AccessImpl(AT_FDCWD, path, mode, &r)) return r;
  return Real().euidaccess(path, mode);
}

FERN_EXPORT int eaccess(const char* path, int mode) noexcept {
  int r;
  if (fern::intercept::AccessImpl(AT_FDCWD, path, mode, &r)) return r;
  return Real().eaccess(path, mode);
}

FERN_EXPORT int unlink(const char* path) noexcept {
  int r;
  if (PathIntercept(AT_FDCWD, path, &r, fern::intercept::UnlinkLocked,
                    [](const char* abs) { return Real().unlink(abs); })) {
    return r;
  }
  return Real().unlink(path);
}

FERN_EXPORT int unlinkat(int dirfd, const char* path, int flags) noexcept {
  int r;
  if (PathIntercept(
          dirfd, path, &r,
          [flags](const Target& t) {
            if (flags & ~AT_REMOVEDIR) return EINVAL;
            return (flags & AT_REMOVEDIR) ? fern::intercept::RmdirLocked(t) : fern::intercept::UnlinkLocked(t);
          },
          [flags](const char* abs) { return Real().unlinkat(AT_FDCWD, abs, flags); })) {
    return r;
  }
  return Real().unlinkat(dirfd, path, flags);
}

FERN_EXPORT int remove(const char* path) noexcept {
  int r;
  if (PathIntercept(AT_FDCWD, path, &r, fern::intercept::RemoveLocked,
                    [](const char* abs) { return Real().remove(abs); })) {
    return r;
  }
  return Real().remove(path);
}

FERN_EXPORT int rmdir(const char* path) noexcept {
  int r;
  if (PathIntercept(AT_FDCWD, path, &r, fern::intercept::RmdirLocked,
                    [](const char* abs) { return Real().rmdir(abs); })) {
    return r;
  }
  return Real().rmdir(path);
}

FERN_EXPORT int mkdir(const char* path, mode_t mode) noexcept {
  int r;
  if (PathIntercept(
          AT_FDCWD, path, &r, [mode](const Target& t) { return fern::intercept::MkdirLocked(t, mode); },
          [mode](const char* abs) { return Real().mkdir(abs, mode); })) {
    return r;
  }
  return Real().mkdir(path, mode);
}

FERN_EXPORT int mkdirat(int dirfd, const char* path, mode_t mode) noexcept {
  int r;
  if (PathIntercept(
          dirfd, path, &r, [mode](const Target& t) { return fern::intercept::MkdirLocked(t, mode); },
          [mode](const char* abs) { return Real().mkdir(abs, mode); })) {
    return r;
  }
  return Real().mkdirat(dirfd, path, mode);
}

FERN_EXPORT int rename(const char* from, const char* to) noexcept {
  return fern::intercept::RenameImpl(AT_FDCWD, from, AT_FDCWD, to, 0, fern::intercept::PassRenameat2);
}

FERN_EXPORT int renameat(int olddirfd, const char* from, int newdirfd, const char* to) noexcept {
  return fern::intercept::RenameImpl(olddirfd, from, newdirfd, to, 0, fern::intercept::PassRenameat2);
}

FERN_EXPORT int renameat2(int olddirfd, const char* from, int newdirfd, const char* to, unsigned flags) noexcept {
  return fern::intercept::RenameImpl(olddirfd, from, newdirfd, to, flags, fern::intercept::PassRenameat2);
}

FERN_EXPORT char* realpath(const char* path, char* resolved) noexcept {
  bool handled;
  Target t;
  char* r = fern::intercept::RealpathImpl(&path, &t, resolved, PATH_MAX, &handled);
  return handled ? r : Real().realpath(path, resolved);
}

FERN_EXPORT char* __realpath_chk(const char* path, char* resolved, size_t resolved_len) {
  bool handled;
  Target t;
  char* r = fern::intercept::RealpathImpl(&path, &t, resolved, resolved_len, &handled);
  return handled ? r : Real().__realpath_chk(path, resolved, resolved_len);
}

FERN_EXPORT char* canonicalize_file_name(const char* path) noexcept {
  bool handled;
  Target t;
  char* r = fern::intercept::RealpathImpl(&path, &t, nullptr, 0, &handled);
  return handled ? r : Real().canonicalize_file_name(path);
}

FERN_EXPORT int chdir(const char* path) noexcept {
  using namespace fern::intercept;
  if (InShim()) return Real().chdir(path);
  Target t;
  Resolve(AT_FDCWD, path, &t);
  switch (t.kind) {
    case Target::kPass:
    case Target::kPassPath: {
      const int r = Real().chdir(t.kind == Target::kPassPath ? t.abs : path);
      if (r == 0) SetVirtualCwd(nullptr);
      return r;
    }
    case Target::kFail:
      errno = t.err;
      return -1;
    case Target::kManaged:
      break;
  }
  ErrnoKeeper e;
  const int err = EnterManagedDir(t.mount, t.ns, true);
  return err != 0 ? e.Fail(err) : e.Ok(0);
}

FERN_EXPORT int fchdir(int fd) noexcept {
  using namespace fern::intercept;
  if (InShim() || !IsAppSlot(SlotOf(fd)) || ForeignProcess()) {
    const int r = Real().fchdir(fd);
    if (r == 0 && !InShim()) SetVirtualCwd(nullptr);
    return r;
  }
  ErrnoKeeper e;
  int mount = 0;
  char ns[kPathBuf];
  {
    ShimScope scope;
    LockGuard lock;
    const Node* n = NodeAt(NodeOfFd(fd));
    if (n == nullptr || n->kind != NodeKind::kDir) return e.Fail(ENOTDIR);
    mount = n->mount;
    std::snprintf(ns, sizeof ns, "%s", n->ns);
  }
  const int err = EnterManagedDir(mount, ns, false);
  return err != 0 ? e.Fail(err) : e.Ok(0);
}

FERN_EXPORT char* getcwd(char* buf, size_t size) noexcept {
  using namespace fern::intercept;
  char virt[kPathBuf];
  if (InShim() || !GetVirtualCwd(virt, sizeof virt)) return Real().getcwd(buf, size);
  return CopyCwd(virt, buf, size);
}

FERN_EXPORT char* __getcwd_chk(char* buf, size_t size, size_t buflen) {
  using namespace fern::intercept;
  char virt[kPathBuf];
  if (InShim() || size > buflen || !GetVirtualCwd(virt, sizeof virt)) return Real().__getcwd_chk(buf, size, buflen);
  return CopyCwd(virt, buf, size);
}

FERN_EXPORT char* get_current_dir_name() noexcept {
  using namespace fern::intercept;
  char virt[kPathBuf];
  if (InShim() || !GetVirtualCwd(virt, sizeof virt)) return Real().get_current_dir_name();
  return strdup(virt);
}

#define FERN_ATTR_NOOP(dirfd, path, pass_abs)                                                  \
  int r;                                                                                         \
  if (PathIntercept(dirfd, path, &r, fern::intercept::ExistsLocked, pass_abs)) return r;

FERN_EXPORT int chmod(const char* path, mode_t mode) noexcept {
  int r;
  if (PathIntercept(
          AT_FDCWD, path, &r, [mode](const Target& t) { return fern::intercept::ChmodLocked(t, mode); },
          [mode](const char* abs) { return Real().chmod(abs, mode); })) {
    return r;
  }
  return Real().chmod(path, mode);
}

FERN_EXPORT int fchmodat(int dirfd, const char* path, mode_t mode, int flags) noexcept {
  int r;
  if (PathIntercept(
          dirfd, path, &r, [mode](const Target& t) { return fern::intercept::ChmodLocked(t, mode); },
          [=](const char* abs) { return Real().fchmodat(AT_FDCWD, abs, mode, flags); })) {
    return r;
  }
  return Real().fchmodat(dirfd, path, mode, flags);
}

FERN_EXPORT int chown(const char* path, uid_t uid, gid_t gid) noexcept {
  FERN_ATTR_NOOP(AT_FDCWD, path, [=](const char* abs) { return Real().chown(abs, uid, gid); });
  return Real().chown(path, uid, gid);
}

FERN_EXPORT int lchown(const char* path, uid_t uid, gid_t gid) noexcept {
  FERN_ATTR_NOOP(AT_FDCWD, path, [=](const char* abs) { return Real().lchown(abs, uid, gid); });
  return Real().lchown(path, uid, gid);
}

FERN_EXPORT int fchownat(int dirfd, const char* path, uid_t uid, gid_t gid, int flags) noexcept {
  FERN_ATTR_NOOP(dirfd, path, [=](const char* abs) { return Real().fchownat(AT_FDCWD, abs, uid, gid, flags); });
  return Real().fchownat(dirfd, path, uid, gid, flags);
}

FERN_EXPORT int utimensat(int dirfd, const char* path, const struct timespec times[2], int flags) noexcept {
  FERN_ATTR_NOOP(dirfd, path, [=](const char* abs) { return Real().utimensat(AT_FDCWD, abs, times, flags); });
  return Real().utimensat(dirfd, path, times, flags);
}

FERN_EXPORT int utimes(const char* path, const struct timeval times[2]) noexcept {
  FERN_ATTR_NOOP(AT_FDCWD, path, [=](const char* abs) { return Real().utimes(abs, times); });
  return Real().utimes(path, times);
}

FERN_EXPORT int lutimes(const char* path, const struct timeval times[2]) noexcept {
  FERN_ATTR_NOOP(AT_FDCWD, path, [=](const char* abs) { return Real().lutimes(abs, times); });
  return Real().lutimes(path, times);
}

FERN_EXPORT int utime(const char* path, const struct utimbuf* times) noexcept {
  FERN_ATTR_NOOP(AT_FDCWD, path, [=](const char* abs) { return Real().utime(abs, times); });
  return Real().utime(path, times);
}

FERN_EXPORT int futimesat(int dirfd, const char* path, const struct timeval times[2]) noexcept {
  FERN_ATTR_NOOP(dirfd, path, [=](const char* abs) { return Real().futimesat(AT_FDCWD, abs, times); });
  return Real().futimesat(dirfd, path, times);
}

// Extended attributes: the namespace has none.
#define FERN_XATTR_NOTSUP(path, call)                                          \
  {                                                                            \
    using namespace fern::intercept;                                           \
    Target t;                                                                  \
    if (!InShim()) Resolve(AT_FDCWD, path, &t);                                \
    if (t.kind == Target::kManaged || t.kind == Target::kFail) {               \
      errno = t.kind == Target::kFail ? t.err : ENOTSUP;                       \
      return -1;                                                               \
    }                                                                          \
    if (t.kind == Target::kPassPath) path = t.abs;                             \
    return call;                                                               \
  }

FERN_EXPORT ssize_t getxattr(const char* path, const char* name, void* value, size_t size) noexcept
    FERN_XATTR_NOTSUP(path, Real().getxattr(path, name, value, size))

FERN_EXPORT ssize_t lgetxattr(const char* path, const char* name, void* value, size_t size) noexcept
    FERN_XATTR_NOTSUP(path, Real().lgetxattr(path, name, value, size))

FERN_EXPORT ssize_t listxattr(const char* path, char* list, size_t size) noexcept
    FERN_XATTR_NOTSUP(path, Real().listxattr(path, list, size))

FERN_EXPORT ssize_t llistxattr(const char* path, char* list, size_t size) noexcept
    FERN_XATTR_NOTSUP(path, Real().llistxattr(path, list, size))

FERN_EXPORT int setxattr(const char* path, const char* name, const void* value, size_t size, int flags) noexcept
    FERN_XATTR_NOTSUP(path, Real().setxattr(path, name, value, size, flags))

FERN_EXPORT int lsetxattr(const char* path, const char* name, const void* value, size_t size, int flags) noexcept
    FERN_XATTR_NOTSUP(path, Real().lsetxattr(path, name, value, size, flags))
