// Process-wide state of libfernec_preload.so and the helpers every wrapper
// uses: configuration, the one lock, the re-entrancy guard, path resolution.
//
// Threading: g_lock (Lock/Unlock, LockGuard) serializes the daemon socket and
// the open-file table (open_files.h). The unmanaged fast paths take no lock:
// a prefix compare on the path or one atomic load of the fd's slot.
// Re-entrancy: while a thread runs shim code, InShim() is true and every
// wrapper passes straight to the real function, so libc internals and the
// shim's own calls are never intercepted. fork: pthread_atfork handlers keep
// the lock consistent and mark the child (open_files.h ForkChild). A vfork or
// clone child shares our memory without running them; it is recognized by
// getpid() != g_pid and gets pure passthrough.
// Errors are errno values; wrappers restore the caller's errno on success.
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <sys/types.h>

#include "intercept/path.h"
#include "intercept/real_libc.h"

#define FERN_EXPORT extern "C" __attribute__((visibility("default")))

namespace fern::intercept {

extern __thread int tls_depth __attribute__((tls_model("initial-exec")));
inline bool InShim() { return tls_depth != 0; }

// Marks the current thread as running shim code for its lifetime.
class ShimScope {
 public:
  ShimScope() { ++tls_depth; }
  ~ShimScope() { --tls_depth; }
  ShimScope(const ShimScope&) = delete;
  ShimScope& operator=(const ShimScope&) = delete;
};

// Keeps the caller's errno across a wrapper: Ok() restores it, Fail() sets
// the error.
class ErrnoKeeper {
 public:
  ErrnoKeeper() : saved_(errno) {}
  int Fail(int err) {
    errno = err;
    return -1;
  }
  int Ok(int r) {
    errno = saved_;
    return r;
  }

 private:
  int saved_;
};

struct Config {
  Mounts mounts;
  char socket[108] = {};  // FERN_EC_SOCKET (sun_path size); "" if unset
  bool debug = false;     // FERN_EC_DEBUG=1
  bool async_commit = false;  // FERN_EC_COMMIT=async: the last close returns once
                              // the daemon holds the bytes (open_files.h)
  int high_fd = 1000;     // lowest fd number for shim-owned fds
};
extern Config g_config;
extern pid_t g_pid;  // this process (updated in the fork child)

// Reads the environment and adopts staged files inherited across exec; runs
// once (library constructor, or the first wrapper called before it).
void EnsureInit();

void Lock();
void Unlock();
// True if this thread holds g_lock (exit() from a signal handler that
// interrupted the shim: the exit commit must not wait for itself).
bool HoldsLock();
class LockGuard {
 public:
  LockGuard() { Lock(); }
  ~LockGuard() { Unlock(); }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;
};

// True in a process that shares our memory without being us (vfork child).
bool ForeignProcess();

// Diagnostics to stderr when FERN_EC_DEBUG=1; otherwise nothing.
void Debug(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// The process umask, read without changing it.
mode_t CurrentUmask();

// The working directory. The kernel's cwd can never be a managed directory,
// so chdir into one sets a virtual cwd: the shim resolves relative paths
// against it and getcwd reports it, while the real cwd is the shim's removed
// empty directory (unwrapped relative calls find nothing there). A program
// exec'd from a virtual cwd (its real getcwd fails) takes it back from $PWD.
// SetVirtualCwd(nullptr) returns to the real cwd (after a successful real
// chdir/fchdir), forgetting the cached copy.
void SetVirtualCwd(const char* abs);
// Copies the virtual cwd into out; false if there is none.
bool GetVirtualCwd(char* out, size_t out_size);

// Where an (dirfd, path) pair of an *at call points.
struct Target {
  enum Kind {
    kPass,      // not ours: call the real function with the caller's arguments
    kPassPath,  // not ours, but reached from a managed directory fd: the real
                // function gets AT_FDCWD and `abs`
    kManaged,   // `ns` (inside `abs`) under mount `mount`
    kFail,      // fail with `err` (e.g. ENOTDIR: relative to a managed file fd)
  };
  Kind kind = kPass;
  int err = 0;
  int mount = -1;
  const char* ns = nullptr;
  char abs[kPathBuf];
};

// Classifies `path` relative to `dirfd` (AT_FDCWD, a managed directory fd or
// any other fd). An empty or null path is kPass: callers handle AT_EMPTY_PATH.
void Resolve(int dirfd, const char* path, Target* t);

// The dispatch every path wrapper shares: resolves (dirfd, path) and
// returns false for a plain passthrough (the caller calls the real function
// with its own arguments); otherwise sets *ret to pass_abs(t.abs) for a
// path that leaves a managed directory, -1 with errno for kFail, or
// managed(t) for a managed path, and returns true.
template <typename PassAbs, typename Managed>
bool Dispatch(int dirfd, const char* path, int* ret, PassAbs pass_abs, Managed managed) {
  if (InShim()) return false;
  Target t;
  Resolve(dirfd, path, &t);
  switch (t.kind) {
    case Target::kPass:
      return false;
    case Target::kPassPath:
      *ret = pass_abs(t.abs);
      return true;
    case Target::kFail:
      errno = t.err;
      *ret = -1;
      return true;
    case Target::kManaged:
      *ret = managed(t);
      return true;
  }
  return false;
}

// Writes mount prefix + namespace path ("/fern" + "/a") into out.
void MountedPath(int mount, const char* ns, char* out, size_t out_size);

}  // namespace fern::intercept
