// Managed-path classification for libfernec_preload.so (DESIGN §2).
//
// A path is managed when its absolute, lexically normalized form lies under
// one of the mount prefixes of FERN_EC_MOUNT (colon-separated, default
// "/fern"). Its namespace path, the name sent to the daemon, is that form
// with the prefix stripped: "/fern" -> "/", "/fern/a/b" -> "/a/b".
// Normalization is lexical only: "." and empty components vanish, ".." drops
// the previous component (never above "/"), so "/fern/../etc/x" is the
// unmanaged "/etc/x" and ".." can never name anything outside the namespace.
// Symlinks are not followed (the namespace has none).
//
// Pure functions on caller-provided fixed buffers: no allocation, no errno,
// no libc calls that the shim wraps, safe from any thread and in a forked
// child. Compiled into the preload and into its unit test.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fern::intercept {

inline constexpr size_t kPathBuf = 4096;  // PATH_MAX, terminating NUL included
inline constexpr int kMaxMounts = 8;
inline constexpr const char* kDefaultMount = "/fern";

struct Mounts {
  int count = 0;
  size_t len[kMaxMounts] = {};
  char prefix[kMaxMounts][kPathBuf] = {};  // normalized, no trailing '/', never "/"
};

// Parses a FERN_EC_MOUNT value ("/fern:/scratch/ck"). Entries that are empty,
// relative, "/" (which would capture the whole file system) or too long are
// skipped; at most kMaxMounts are kept. nullptr or "" means kDefaultMount.
void ParseMounts(const char* spec, Mounts* out);

// Writes the lexically normalized absolute form of `path` into `out`
// (`out_size` bytes). A relative `path` is taken relative to `base`, which
// must be absolute (it is normalized too). Returns false if `path` is empty,
// a relative path has no base, or the result does not fit.
bool Normalize(const char* base, const char* path, char* out, size_t out_size);

// If the normalized absolute path `abs` lies under a mount, returns the mount
// index and points `*ns` into `abs` at the namespace path ("/" for the mount
// itself: then `*ns` is a static "/"). Otherwise returns -1.
int Classify(const Mounts& mounts, const char* abs, const char** ns);

// True when an absolute `path` can be classified without normalizing it
// first: it has no empty, "." or ".." component and no trailing '/'.
bool IsPlainAbsolute(const char* path);

// A nonzero 64-bit hash of a namespace path (FNV-1a, then a 64-bit finalizer),
// used as st_ino / d_ino. Stable across processes and runs.
uint64_t PathHash(const char* ns);
uint64_t PathHash(const char* dir_ns, const char* name);  // of dir_ns + "/" + name

// Writes the parent of namespace path `ns` ("/" for "/" and "/a").
void ParentOf(const char* ns, char* out, size_t out_size);

}  // namespace fern::intercept
