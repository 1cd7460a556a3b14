// The libc functions libfernec_preload.so wraps, resolved once with
// dlsym(RTLD_NEXT) so a wrapper can hand an unmanaged call straight to the
// real implementation.
//
// Contract: Real() returns the table, resolving it on first use (from any
// thread, even before the library constructor ran: another library's
// constructor may call open()). A symbol libc does not export stays nullptr;
// wrappers for optional symbols check before calling. Shim code never calls
// a wrapped function by its plain name (that would re-enter the wrapper):
// it calls Real().name.
#pragma once

#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

struct statx;

namespace fern::intercept {

#define FERN_REAL_FUNCTIONS(X)                                                  \
  X(open, int, (const char*, int, ...))                                         \
  X(open64, int, (const char*, int, ...))                                       \
  X(openat, int, (int, const char*, int, ...))                                  \
  X(openat64, int, (int, const char*, int, ...))                                \
  X(__open_2, int, (const char*, int))                                          \
  X(__open64_2, int, (const char*, int))                                        \
  X(__openat_2, int, (int, const char*, int))                                   \
  X(__openat64_2, int, (int, const char*, int))                                 \
  X(creat, int, (const char*, mode_t))                                          \
  X(creat64, int, (const char*, mode_t))                                        \
  X(fopen, FILE*, (const char*, const char*))                                   \
  X(fopen64, FILE*, (const char*, const char*))                                 \
  X(freopen, FILE*, (const char*, const char*, FILE*))                          \
  X(freopen64, FILE*, (const char*, const char*, FILE*))                        \
  X(close, int, (int))                                                          \
  X(mmap, void*, (void*, size_t, int, int, int, off_t))                         \
  X(mmap64, void*, (void*, size_t, int, int, int, off64_t))                     \
  X(fclose, int, (FILE*))                                                       \
  X(fsync, int, (int))                                                          \
  X(fdatasync, int, (int))                                                      \
  X(dup, int, (int))                                                            \
  X(dup2, int, (int, int))                                                      \
  X(dup3, int, (int, int, int))                                                 \
  X(fcntl, int, (int, int, ...))                                                \
  X(fcntl64, int, (int, int, ...))                                              \
  X(stat, int, (const char*, struct stat*))                                     \
  X(stat64, int, (const char*, struct stat64*))                                 \
  X(lstat, int, (const char*, struct stat*))                                    \
  X(lstat64, int, (const char*, struct stat64*))                                \
  X(fstat, int, (int, struct stat*))                                            \
  X(fstat64, int, (int, struct stat64*))                                        \
  X(fstatat, int, (int, const char*, struct stat*, int))                        \
  X(fstatat64, int, (int, const char*, struct stat64*, int))                    \
  X(statx, int, (int, const char*, int, unsigned, struct statx*))               \
  X(__xstat, int, (int, const char*, struct stat*))                             \
  X(__xstat64, int, (int, const char*, struct stat64*))                         \
  X(__lxstat, int, (int, const char*, struct stat*))                            \
  X(__lxstat64, int, (int, const char*, struct stat64*))                        \
  X(__fxstat, int, (int, int, struct stat*))                                    \
  X(__fxstat64, int, (int, int, struct stat64*))                                \
  X(__fxstatat, int, (int, int, const char*, struct stat*, int))                \
  X(__fxstatat64, int, (int, int, const char*, struct stat64*, int))            \
  X(access, int, (const char*, int))                                            \
  X(faccessat, int, (int, const char*, int, int))                               \
  X(euidaccess, int, (const char*, int))                                        \
  X(eaccess, int, (const char*, int))                                           \
  X(unlink, int, (const char*))                                                 \
  X(unlinkat, int, (int, const char*, int))                                     \
  X(remove, int, (const char*))                                                 \
  X(rename, int, (const char*, const char*))                                    \
  X(renameat, int, (int, const char*, int, const char*))                        \
  X(renameat2, int, (int, const char*, int, const char*, unsigned))             \
  X(mkdir, int, (const char*, mode_t))                                          \
  X(mkdirat, int, (int, const char*, mode_t))                                   \
  X(rmdir, int, (const char*))                                                  \
  X(opendir, DIR*, (const char*))                                               \
  X(fdopendir, DIR*, (int))                                                     \
  X(readdir, struct dirent*, (DIR*))                                            \
  X(readdir64, struct dirent64*, (DIR*))                                        \
  X(readdir_r, int, (DIR*, struct dirent*, struct dirent**))                    \
  X(readdir64_r, int, (DIR*, struct dirent64*, struct dirent64**))              \
  X(closedir, int, (DIR*))                                                      \
  X(dirfd, int, (DIR*))                                                         \
  X(rewinddir, void, (DIR*))                                                    \
  X(telldir, long, (DIR*))                                                      \
  X(seekdir, void, (DIR*, long))                                                \
  X(scandir, int,                                                               \
    (const char*, struct dirent***, int (*)(const struct dirent*),              \
     int (*)(const struct dirent**, const struct dirent**)))                    \
  X(scandir64, int,                                                             \
    (const char*, struct dirent64***, int (*)(const struct dirent64*),          \
     int (*)(const struct dirent64**, const struct dirent64**)))                \
  X(truncate, int, (const char*, off_t))                                        \
  X(truncate64, int, (const char*, off64_t))                                    \
  X(realpath, char*, (const char*, char*))                                      \
  X(__realpath_chk, char*, (const char*, char*, size_t))                        \
  X(canonicalize_file_name, char*, (const char*))                               \
  X(chdir, int, (const char*))                                                  \
  X(fchdir, int, (int))                                                         \
  X(getcwd, char*, (char*, size_t))                                             \
  X(__getcwd_chk, char*, (char*, size_t, size_t))                               \
  X(get_current_dir_name, char*, (void))                                        \
  X(chmod, int, (const char*, mode_t))                                          \
  X(fchmodat, int, (int, const char*, mode_t, int))                             \
  X(chown, int, (const char*, uid_t, gid_t))                                    \
  X(lchown, int, (const char*, uid_t, gid_t))                                   \
  X(fchownat, int, (int, const char*, uid_t, gid_t, int))                       \
  X(utimensat, int, (int, const char*, const struct timespec*, int))            \
  X(utimes, int, (const char*, const struct timeval*))                          \
  X(lutimes, int, (const char*, const struct timeval*))                         \
  X(utime, int, (const char*, const void*))                                     \
  X(futimesat, int, (int, const char*, const struct timeval*))                  \
  X(getxattr, ssize_t, (const char*, const char*, void*, size_t))               \
  X(lgetxattr, ssize_t, (const char*, const char*, void*, size_t))              \
  X(listxattr, ssize_t, (const char*, char*, size_t))                           \
  X(llistxattr, ssize_t, (const char*, char*, size_t))                          \
  X(setxattr, int, (const char*, const char*, const void*, size_t, int))        \
  X(lsetxattr, int, (const char*, const char*, const void*, size_t, int))

#define FERN_REAL_MEMBER(name, ret, args) ret(*name) args;
struct RealLibc {
  FERN_REAL_FUNCTIONS(FERN_REAL_MEMBER)
};
#undef FERN_REAL_MEMBER

// The table, resolved on first use. Never fails; missing symbols are nullptr.
const RealLibc& Real();

}  // namespace fern::intercept
