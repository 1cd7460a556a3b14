// Directory stream wrappers: opendir/fdopendir of a managed directory return
// a shim-owned stream (ShimDir) over a LIST snapshot; readdir & co. recognize
// it through a registry and pass every real DIR* through untouched.
// A ShimDir owns a tracked directory fd (open_files.h kDir), so dirfd() gives
// the app something it can use with openat/fstatat/unlinkat, as fts does.
// readdir returns ".", "..", then the entries, with d_type DT_DIR/DT_REG and
// d_ino = PathHash of the entry (the st_ino stat reports). scandir is wrapped
// too because glibc's calls its internal opendir.
#include <dirent.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "intercept/open_files.h"
#include "intercept/shim.h"

static_assert(sizeof(struct dirent) == sizeof(struct dirent64) &&
                  offsetof(struct dirent, d_name) == offsetof(struct dirent64, d_name),
              "64-bit layout: dirent == dirent64");

namespace fern::intercept {

namespace {

struct ShimDir {
  int fd = -1;           // tracked kDir app fd, closed by closedir
  char* ns = nullptr;    // namespace path of the directory (malloc)
  char* buf = nullptr;   // LIST snapshot: "T<name>\0"... (malloc)
  size_t len = 0;
  size_t pos = 0;        // next entry in buf
  long index = 0;        // entries returned so far, "." and ".." included
  dirent64 ent{};
};

// Registry of live ShimDirs; its own lock so readdir of real streams never
// waits behind a commit.
pthread_mutex_t g_dirs_lock = PTHREAD_MUTEX_INITIALIZER;
ShimDir** g_dirs = nullptr;
int g_ndirs = 0;
int g_dirs_cap = 0;

bool Register(ShimDir* d) {
  pthread_mutex_lock(&g_dirs_lock);
  bool ok = true;
  if (g_ndirs == g_dirs_cap) {
    const int cap = g_dirs_cap ? g_dirs_cap * 2 : 8;
    auto* grown = static_cast<ShimDir**>(std::realloc(g_dirs, sizeof(ShimDir*) * static_cast<size_t>(cap)));
    if (grown) {
      g_dirs = grown;
      g_dirs_cap = cap;
    } else {
      ok = false;
    }
  }
  if (ok) g_dirs[g_ndirs++] = d;
  __atomic_store_n(&g_ndirs, g_ndirs, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&g_dirs_lock);
  return ok;
}

ShimDir* Ours(DIR* d) {
  if (d == nullptr || __atomic_load_n(&g_ndirs, __ATOMIC_ACQUIRE) == 0) return nullptr;
  ShimDir* found = nullptr;
  pthread_mutex_lock(&g_dirs_lock);
  for (int i = 0; i < g_ndirs; ++i) {
    if (reinterpret_cast<DIR*>(g_dirs[i]) == d) found = g_dirs[i];
  }
  pthread_mutex_unlock(&g_dirs_lock);
  return found;
}

void Unregister(ShimDir* d) {
  pthread_mutex_lock(&g_dirs_lock);
  for (int i = 0; i < g_ndirs; ++i) {
    if (g_dirs[i] == d) {
      g_dirs[i] = g_dirs[--g_ndirs];
      break;
    }
  }
  __atomic_store_n(&g_ndirs, g_ndirs, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&g_dirs_lock);
}

// REQUIRES: ShimScope and lock. Reads the LIST of ns into a malloc buffer.
int LoadListing(const char* ns, char** buf, size_t* len) {
  int memfd = -1;
  uint64_t size = 0;
  if (const int err = DaemonList(ns, &memfd, &size); err != 0) return err;
  char* data = static_cast<char*>(std::malloc(size + 1));
  int err = data ? 0 : ENOMEM;
  for (uint64_t got = 0; err == 0 && got < size;) {
    const ssize_t n = pread(memfd, data + got, size - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) err = n == 0 ? EIO : errno;
    if (n > 0) got += static_cast<uint64_t>(n);
  }
  if (memfd >= 0) Real().close(memfd);
  if (err != 0) {
    std::free(data);
    return err;
  }
  data[size] = '\0';
  *buf = data;
  *len = size;
  return 0;
}

void FreeDir(ShimDir* d) {
  std::free(d->ns);
  std::free(d->buf);
  std::free(d);
}

// REQUIRES: ShimScope and lock. A stream over directory fd `fd` (a tracked
// kDir fd, owned by the stream from now on) of namespace path ns.
ShimDir* NewShimDir(int fd, const char* ns, int* err) {
  auto* d = static_cast<ShimDir*>(std::calloc(1, sizeof(ShimDir)));
  char* copy = strdup(ns);
  if (d == nullptr || copy == nullptr) {
    std::free(d);
    std::free(copy);
    *err = ENOMEM;
    return nullptr;
  }
  d->fd = fd;
  d->ns = copy;
  if ((*err = LoadListing(ns, &d->buf, &d->len)) != 0) {
    FreeDir(d);
    return nullptr;
  }
  return d;
}

void SetEntry(ShimDir* d, const char* name, size_t n, unsigned char type, uint64_t ino) {
  dirent64& e = d->ent;
  e.d_ino = ino;
  e.d_off = d->index + 1;
  e.d_reclen = sizeof(dirent64);
  e.d_type = type;
  std::memcpy(e.d_name, name, n);
  e.d_name[n] = '\0';
}

// The next entry or nullptr at the end (errno untouched).
dirent64* Next(ShimDir* d) {
  if (d->index == 0) {
    SetEntry(d, ".", 1, DT_DIR, PathHash(d->ns));
    ++d->index;
    return &d->ent;
  }
  if (d->index == 1) {
    char parent[kPathBuf];
    ParentOf(d->ns, parent, sizeof parent);
    SetEntry(d, "..", 2, DT_DIR, PathHash(parent));
    ++d->index;
    return &d->ent;
  }
  while (d->pos < d->len) {
    const char type = d->buf[d->pos];
    const char* name = d->buf + d->pos + 1;
    const size_t n = strnlen(name, d->len - d->pos - 1);
    d->pos += n + 2;
    const bool bad = n == 0 || n >= sizeof d->ent.d_name || std::memchr(name, '/', n) ||
                     std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0;
    if (bad) continue;  // a daemon bug must not let readdir name paths elsewhere
    SetEntry(d, name, n, type == 'd' ? DT_DIR : DT_REG, PathHash(d->ns, name));
    ++d->index;
    return &d->ent;
  }
  return nullptr;
}

// close(2) of the stream's directory fd, with its bookkeeping.
void CloseDirFd(int fd) {
  LockGuard lock;
  Real().close(fd);
  (void)Detach(fd);
}

DIR* OpendirManaged(const Target& t) {
  ErrnoKeeper e;
  ShimScope scope;
  LockGuard lock;
  Attr a;
  int err = DaemonStat(t.ns, &a);
  if (err == 0 && !S_ISDIR(a.mode)) err = ENOTDIR;
  if (err != 0) {
    e.Fail(err);
    return nullptr;
  }
  const int fd = NewDirAppFd(t.mount, t.ns, a, O_CLOEXEC);
  if (fd < 0) return nullptr;
  ShimDir* d = NewShimDir(fd, t.ns, &err);
  if (d == nullptr || !Register(d)) {
    if (d) FreeDir(d);
    Real().close(fd);
    (void)Detach(fd);
    e.Fail(err ? err : ENOMEM);
    return nullptr;
  }
  e.Ok(0);
  return reinterpret_cast<DIR*>(d);
}

DIR* FdopendirManaged(int fd) {
  ErrnoKeeper e;
  ShimScope scope;
  LockGuard lock;
  const Node* n = NodeAt(NodeOfFd(fd));
  if (n == nullptr) return Real().fdopendir(fd);
  if (n->kind != NodeKind::kDir) {
    e.Fail(ENOTDIR);
    return nullptr;
  }
  int err = 0;
  ShimDir* d = NewShimDir(fd, n->ns, &err);
  if (d == nullptr || !Register(d)) {
    if (d) FreeDir(d);
    e.Fail(err ? err : ENOMEM);
    return nullptr;
  }
  e.Ok(0);
  return reinterpret_cast<DIR*>(d);
}

int CloseShimDir(ShimDir* d) {
  Unregister(d);
  {
    ShimScope scope;
    CloseDirFd(d->fd);
  }
  FreeDir(d);
  return 0;
}

void Rewind(ShimDir* d, bool reload) {
  d->pos = 0;
  d->index = 0;
  if (!reload) return;
  ErrnoKeeper e;
  ShimScope scope;
  LockGuard lock;
  char* buf = nullptr;
  size_t len = 0;
  if (LoadListing(d->ns, &buf, &len) == 0) {
    std::free(d->buf);
    d->buf = buf;
    d->len = len;
  }
  e.Ok(0);
}

// scandir over our own stream; entries are malloc'd like glibc's.
template <typename Entry>
int ScandirManaged(const Target& t, Entry*** namelist, int (*filter)(const Entry*),
                   int (*compar)(const Entry**, const Entry**)) {
  DIR* dir = OpendirManaged(t);
  if (dir == nullptr) return -1;
  ShimDir* d = reinterpret_cast<ShimDir*>(dir);
  Entry** list = nullptr;
  size_t n = 0, cap = 0;
  int err = 0;
  while (dirent64* e = Next(d)) {
    auto* entry = reinterpret_cast<Entry*>(e);
    if (filter && !filter(entry)) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      auto** grown = static_cast<Entry**>(std::realloc(list, cap * sizeof(Entry*)));
      if (grown == nullptr) {
        err = ENOMEM;
        break;
      }
      list = grown;
    }
    auto* copy = static_cast<Entry*>(std::malloc(sizeof(Entry)));
    if (copy == nullptr) {
      err = ENOMEM;
      break;
    }
    std::memcpy(copy, entry, sizeof(Entry));
    list[n++] = copy;
  }
  CloseShimDir(d);
  if (err != 0) {
    for (size_t i = 0; i < n; ++i) std::free(list[i]);
    std::free(list);
    errno = err;
    return -1;
  }
  if (compar && n > 1) {
    qsort(list, n, sizeof(Entry*), reinterpret_cast<int (*)(const void*, const void*)>(compar));
  }
  *namelist = list;
  return static_cast<int>(n);
}

// scandir and scandir64 differ only in their entry type.
template <typename Dirent, typename RealScandir>
int ScandirWrap(const char* path, Dirent*** namelist, int (*filter)(const Dirent*),
                int (*compar)(const Dirent**, const Dirent**), RealScandir real) {
  Target t;
  if (!InShim()) Resolve(AT_FDCWD, path, &t);
  if (t.kind == Target::kFail) {
    errno = t.err;
    return -1;
  }
  if (t.kind == Target::kPassPath) path = t.abs;
  if (t.kind != Target::kManaged) return real(path, namelist, filter, compar);
  return ScandirManaged(t, namelist, filter, compar);
}

}  // namespace

}  // namespace fern::intercept

using fern::intercept::Ours;
using fern::intercept::Real;
using fern::intercept::ShimDir;

FERN_EXPORT DIR* opendir(const char* path) {
  using namespace fern::intercept;
  if (InShim()) return Real().opendir(path);
  Target t;
  Resolve(AT_FDCWD, path, &t);
  if (t.kind == Target::kFail) {
    errno = t.err;
    return nullptr;
  }
  if (t.kind != Target::kManaged) return Real().opendir(t.kind == Target::kPassPath ? t.abs : path);
  return OpendirManaged(t);
}

FERN_EXPORT DIR* fdopendir(int fd) {
  using namespace fern::intercept;
  if (InShim() || !IsAppSlot(SlotOf(fd)) || ForeignProcess()) return Real().fdopendir(fd);
  return FdopendirManaged(fd);
}

FERN_EXPORT struct dirent64* readdir64(DIR* dir) {
  if (ShimDir* d = Ours(dir)) return fern::intercept::Next(d);
  return Real().readdir64(dir);
}

FERN_EXPORT struct dirent* readdir(DIR* dir) {
  if (ShimDir* d = Ours(dir)) return reinterpret_cast<struct dirent*>(fern::intercept::Next(d));
  return Real().readdir(dir);
}

FERN_EXPORT int readdir64_r(DIR* dir, struct dirent64* entry, struct dirent64** result) {
  if (ShimDir* d = Ours(dir)) {
    dirent64* e = fern::intercept::Next(d);
    if (e) std::memcpy(entry, e, sizeof *entry);
    *result = e ? entry : nullptr;
    return 0;
  }
  return Real().readdir64_r(dir, entry, result);
}

FERN_EXPORT int readdir_r(DIR* dir, struct dirent* entry, struct dirent** result) {
  if (ShimDir* d = Ours(dir)) {
    dirent64* e = fern::intercept::Next(d);
    if (e) std::memcpy(entry, e, sizeof *entry);
    *result = e ? entry : nullptr;
    return 0;
  }
  return Real().readdir_r(dir, entry, result);
}

FERN_EXPORT int closedir(DIR* dir) {
  if (ShimDir* d = Ours(dir)) return fern::intercept::CloseShimDir(d);
  return Real().closedir(dir);
}

FERN_EXPORT int dirfd(DIR* dir) noexcept {
  if (ShimDir* d = Ours(dir)) return d->fd;
  return Real().dirfd(dir);
}

FERN_EXPORT void rewinddir(DIR* dir) {
  if (ShimDir* d = Ours(dir)) return fern::intercept::Rewind(d, true);
  Real().rewinddir(dir);
}

FERN_EXPORT long telldir(DIR* dir) noexcept {
  if (ShimDir* d = Ours(dir)) return d->index;
  return Real().telldir(dir);
}

FERN_EXPORT void seekdir(DIR* dir, long loc) noexcept {
  if (ShimDir* d = Ours(dir)) {
    fern::intercept::Rewind(d, false);
    while (d->index < loc && fern::intercept::Next(d)) {
    }
    return;
  }
  Real().seekdir(dir, loc);
}

FERN_EXPORT int scandir(const char* path, struct dirent*** namelist, int (*filter)(const struct dirent*),
                        int (*compar)(const struct dirent**, const struct dirent**)) {
  return fern::intercept::ScandirWrap(path, namelist, filter, compar, Real().scandir);
}

FERN_EXPORT int scandir64(const char* path, struct dirent64*** namelist, int (*filter)(const struct dirent64*),
                          int (*compar)(const struct dirent64**, const struct dirent64**)) {
  return fern::intercept::ScandirWrap(path, namelist, filter, compar, Real().scandir64);
}
