// See shim.h: configuration, the lock, fork handling, diagnostics and the
// classification of (dirfd, path) pairs.
#include "intercept/shim.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "intercept/daemon_link.h"
#include "intercept/open_files.h"

namespace fern::intercept {

__thread int tls_depth __attribute__((tls_model("initial-exec"))) = 0;
namespace {
__thread bool tls_holds_lock __attribute__((tls_model("initial-exec"))) = false;
}  // namespace
Config g_config;
pid_t g_pid = 0;

namespace {

pthread_once_t g_init_once = PTHREAD_ONCE_INIT;
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

// The working directory, cached until chdir/fchdir; guarded by its own lock
// so unmanaged relative paths never wait behind a commit holding g_lock.
pthread_mutex_t g_cwd_lock = PTHREAD_MUTEX_INITIALIZER;
bool g_cwd_valid = false;
bool g_cwd_related = true;  // cwd is inside, or an ancestor of, a mount
bool g_cwd_virtual = false;  // g_cwd is a managed directory (SetVirtualCwd)
char g_cwd[kPathBuf];

void AtforkPrepare() {
  pthread_mutex_lock(&g_cwd_lock);
  pthread_mutex_lock(&g_lock);
}

void AtforkParent() {
  pthread_mutex_unlock(&g_lock);
  pthread_mutex_unlock(&g_cwd_lock);
}

void AtforkChild() {
  tls_holds_lock = false;
  pthread_mutex_unlock(&g_lock);
  pthread_mutex_unlock(&g_cwd_lock);
  ShimScope scope;
  g_pid = getpid();
  LockGuard lock;
  DaemonForkChild();
  OpenFilesForkChild();
}

int HighFdBase() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 1000;
  const rlim_t soft = rl.rlim_cur;
  if (soft > 1100) return 1000;
  return soft > 16 ? static_cast<int>(soft * 3 / 4) : 3;
}

void AdoptVirtualCwd();

void InitOnce() {
  ShimScope scope;
  Real();
  ParseMounts(std::getenv("FERN_EC_MOUNT"), &g_config.mounts);
  if (const char* s = std::getenv("FERN_EC_SOCKET"); s && std::strlen(s) < sizeof g_config.socket) {
    std::strcpy(g_config.socket, s);
  }
  const char* debug = std::getenv("FERN_EC_DEBUG");
  g_config.debug = debug && std::strcmp(debug, "1") == 0;
  const char* commit = std::getenv("FERN_EC_COMMIT");
  g_config.async_commit = commit && std::strcmp(commit, "async") == 0;
  if (commit && !g_config.async_commit && std::strcmp(commit, "sync") != 0 && commit[0] != '\0') {
    // A typo must not silently change what close() promises: say so.
    static const char kMsg[] = "libfernec_preload: FERN_EC_COMMIT must be 'sync' or 'async'; using sync\n";
    (void)!write(2, kMsg, sizeof kMsg - 1);
  }
  g_config.high_fd = HighFdBase();
  g_pid = getpid();
  pthread_atfork(AtforkPrepare, AtforkParent, AtforkChild);
  AdoptVirtualCwd();
  AdoptAfterExec();
}

// True if cwd is inside a mount or an ancestor of one, i.e. a relative path
// without ".." could name something managed.
bool CwdRelated(const char* cwd) {
  const size_t n = std::strlen(cwd);
  for (int i = 0; i < g_config.mounts.count; ++i) {
    const char* m = g_config.mounts.prefix[i];
    const size_t mn = g_config.mounts.len[i];
    if (n == 1) return true;  // "/"
    if (std::strncmp(cwd, m, mn) == 0 && (cwd[mn] == '\0' || cwd[mn] == '/')) return true;
    if (std::strncmp(m, cwd, n) == 0 && m[n] == '/') return true;
  }
  return false;
}

bool HasDotDot(const char* path) {
  for (const char* p = std::strstr(path, ".."); p; p = std::strstr(p + 1, "..")) {
    const bool starts = p == path || p[-1] == '/';
    const bool ends = p[2] == '\0' || p[2] == '/';
    if (starts && ends) return true;
  }
  return false;
}

void ClassifyAbs(Target* t) {
  const char* ns = nullptr;
  const int m = Classify(g_config.mounts, t->abs, &ns);
  if (m < 0) return;
  t->kind = Target::kManaged;
  t->mount = m;
  t->ns = ns;
}

void ResolveAbsolute(const char* path, Target* t) {
  const char* ns = nullptr;
  if (IsPlainAbsolute(path)) {
    if (Classify(g_config.mounts, path, &ns) < 0) return;  // the fast path
    if (std::strlen(path) >= sizeof t->abs) return;
    std::strcpy(t->abs, path);
  } else if (!Normalize(nullptr, path, t->abs, sizeof t->abs)) {
    return;
  }
  ClassifyAbs(t);
  // "/fern/.." climbs out of the mount: the real call gets the normalized
  // path, since the raw one goes through a directory that exists only here.
  if (t->kind != Target::kManaged && Classify(g_config.mounts, path, &ns) >= 0) t->kind = Target::kPassPath;
}

void ResolveCwdRelative(const char* path, Target* t) {
  pthread_mutex_lock(&g_cwd_lock);
  if (!g_cwd_valid) {
    if (Real().getcwd(g_cwd, sizeof g_cwd) == nullptr || g_cwd[0] != '/') {
      pthread_mutex_unlock(&g_cwd_lock);
      return;  // no usable cwd (removed, too long): nothing relative is ours
    }
    g_cwd_related = CwdRelated(g_cwd);
    g_cwd_valid = true;
  }
  const bool virt = g_cwd_virtual;
  const bool maybe = virt || g_cwd_related || HasDotDot(path);
  const bool ok = maybe && Normalize(g_cwd, path, t->abs, sizeof t->abs);
  pthread_mutex_unlock(&g_cwd_lock);
  if (!ok) {
    if (virt) {
      t->kind = Target::kFail;
      t->err = ENAMETOOLONG;
    }
    return;
  }
  ClassifyAbs(t);
  // Out of a virtual cwd with "..": the real cwd is not where the path starts.
  if (virt && t->kind != Target::kManaged) t->kind = Target::kPassPath;
}

// A program exec'd in a virtual cwd has the removed empty directory as its
// real cwd: take the virtual one back from $PWD, which shells keep.
void AdoptVirtualCwd() {
  char buf[kPathBuf];
  if (Real().getcwd(buf, sizeof buf) != nullptr || errno != ENOENT) return;
  const char* pwd = std::getenv("PWD");
  char abs[kPathBuf];
  const char* ns = nullptr;
  if (pwd && Normalize(nullptr, pwd, abs, sizeof abs) && Classify(g_config.mounts, abs, &ns) >= 0) {
    SetVirtualCwd(abs);
  }
}

// Whether `path`, relative to some real directory, could lead into a mount:
// its first component (after "./") is ".." or a component of a mount prefix
// ("fern" for /fern). Keeps the check below off the common path.
bool MayReachMount(const char* path) {
  while (path[0] == '.' && path[1] == '/') path += 2;
  const char* end = std::strchr(path, '/');
  const size_t n = end ? static_cast<size_t>(end - path) : std::strlen(path);
  if (n == 2 && path[0] == '.' && path[1] == '.') return true;
  for (int i = 0; i < g_config.mounts.count; ++i) {
    const char* m = g_config.mounts.prefix[i];
    for (const char* c = m + 1; *c;) {
      const char* ce = std::strchr(c, '/');
      const size_t cn = ce ? static_cast<size_t>(ce - c) : std::strlen(c);
      if (cn == n && std::strncmp(c, path, n) == 0) return true;
      c += cn + (ce ? 1 : 0);
    }
  }
  return false;
}

// Relative to a real directory fd that may be an ancestor of a mount (rsync
// walks "/" -> "fern" -> ... with openat and O_NOFOLLOW): where is it?
void ResolveRealDirRelative(int dirfd, const char* path, Target* t) {
  char link[64], dir[kPathBuf];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
  const ssize_t n = readlink(link, dir, sizeof dir - 1);
  if (n <= 0 || dir[0] != '/') return;
  dir[n] = '\0';
  if (!Normalize(dir, path, t->abs, sizeof t->abs)) return;
  ClassifyAbs(t);
}

void ResolveDirRelative(int dirfd, uint32_t slot, const char* path, Target* t) {
  char base[kPathBuf];
  {
    LockGuard lock;
    const Node* n = NodeAt(static_cast<int>(slot) - 1);
    if (n == nullptr || n->kind == NodeKind::kFree) return;
    if (n->kind != NodeKind::kDir) {
      t->kind = Target::kFail;
      t->err = ENOTDIR;
      return;
    }
    MountedPath(n->mount, n->ns, base, sizeof base);
  }
  if (!Normalize(base, path, t->abs, sizeof t->abs)) {
    t->kind = Target::kFail;
    t->err = ENAMETOOLONG;
    return;
  }
  ClassifyAbs(t);
  // Climbed out of the mount with "..": the real file system, by absolute path.
  if (t->kind != Target::kManaged) t->kind = Target::kPassPath;
}

}  // namespace

void EnsureInit() { pthread_once(&g_init_once, InitOnce); }

void Lock() {
  pthread_mutex_lock(&g_lock);
  tls_holds_lock = true;
}

void Unlock() {
  tls_holds_lock = false;
  pthread_mutex_unlock(&g_lock);
}

bool HoldsLock() { return tls_holds_lock; }

bool ForeignProcess() { return getpid() != g_pid; }

void Debug(const char* fmt, ...) {
  if (!g_config.debug) return;
  char buf[1024];
  int n = std::snprintf(buf, sizeof buf, "fern-ec-preload[%d]: ", static_cast<int>(getpid()));
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(buf + n, sizeof buf - static_cast<size_t>(n) - 1, fmt, ap);
  va_end(ap);
  size_t len = static_cast<size_t>(n) + (m < 0 ? 0 : static_cast<size_t>(m));
  if (len > sizeof buf - 2) len = sizeof buf - 2;
  buf[len++] = '\n';
  const int saved = errno;
  ssize_t w = write(2, buf, len);
  (void)w;
  errno = saved;
}

mode_t CurrentUmask() {
  const int fd = Real().open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[2048];
    const ssize_t n = read(fd, buf, sizeof buf - 1);
    Real().close(fd);
    if (n > 0) {
      buf[n] = '\0';
      if (const char* u = std::strstr(buf, "\nUmask:")) {
        return static_cast<mode_t>(std::strtoul(u + 7, nullptr, 8) & 0777);
      }
    }
  }
  const mode_t m = umask(022);  // racy with other threads; only without /proc
  umask(m);
  return m;
}

void SetVirtualCwd(const char* abs) {
  pthread_mutex_lock(&g_cwd_lock);
  if (abs != nullptr && std::strlen(abs) < sizeof g_cwd) {
    std::strcpy(g_cwd, abs);
    g_cwd_virtual = true;
    g_cwd_valid = true;
  } else {
    g_cwd_virtual = false;
    g_cwd_valid = false;
  }
  pthread_mutex_unlock(&g_cwd_lock);
}

bool GetVirtualCwd(char* out, size_t out_size) {
  pthread_mutex_lock(&g_cwd_lock);
  const bool virt = g_cwd_virtual;
  if (virt) std::snprintf(out, out_size, "%s", g_cwd);
  pthread_mutex_unlock(&g_cwd_lock);
  return virt;
}

void MountedPath(int mount, const char* ns, char* out, size_t out_size) {
  const char* prefix = (mount >= 0 && mount < g_config.mounts.count) ? g_config.mounts.prefix[mount] : "";
  std::snprintf(out, out_size, "%s%s", prefix, std::strcmp(ns, "/") == 0 ? "" : ns);
}

void Resolve(int dirfd, const char* path, Target* t) {
  t->kind = Target::kPass;
  if (path == nullptr || path[0] == '\0') return;
  EnsureInit();
  if (g_config.mounts.count == 0) return;
  if (path[0] == '/') {
    ResolveAbsolute(path, t);
  } else if (dirfd == AT_FDCWD) {
    ResolveCwdRelative(path, t);
  } else if (const uint32_t slot = SlotOf(dirfd); IsAppSlot(slot)) {
    ResolveDirRelative(dirfd, slot, path, t);
  } else if (slot == 0 && MayReachMount(path)) {
    ResolveRealDirRelative(dirfd, path, t);
  }
  if (t->kind == Target::kManaged && ForeignProcess()) {
    // A vfork child shares our memory and our daemon connection: keep out.
    t->kind = Target::kFail;
    t->err = EIO;
  }
}

namespace {

__attribute__((constructor)) void PreloadInit() { EnsureInit(); }

__attribute__((destructor)) void PreloadFini() {
  if (ForeignProcess()) return;
  CommitAllAtExit();
}

}  // namespace

}  // namespace fern::intercept
