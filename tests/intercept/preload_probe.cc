// preload_probe: an ordinary program that preload_test runs with
// libfernec_preload.so preloaded. Each case exercises what a real program
// does with POSIX and stdio calls on a managed directory and checks the
// results a user would: bytes, sizes, listings, errno values.
//
//   preload_probe CASE DIR
//
// Prints one line per failed check ("FAIL case: what (got ..., errno ...)")
// and "ok CASE" at the end; exits with the number of failed checks. It knows
// nothing of fern-ec: "committed" is observed as a file appearing in a
// directory listing, which the shim serves from the daemon only.
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

int g_failures = 0;
const char* g_case = "";

#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      ++g_failures;                                                           \
      std::printf("FAIL %s:%d %s: %s", g_case, __LINE__, #cond, "");          \
      std::printf(__VA_ARGS__);                                               \
      std::printf(" (errno %d %s)\n", errno, std::strerror(errno));           \
    }                                                                         \
  } while (0)

// Expects `call` to fail with `err`.
#define EXPECT_ERRNO(call, err)                                               \
  do {                                                                        \
    errno = 0;                                                                \
    const long rc_ = static_cast<long>(call);                                 \
    CHECK(rc_ == -1 && errno == (err), "%s -> %ld, want errno %s", #call, rc_, #err); \
  } while (0)

std::string Join(const std::string& dir, const std::string& name) { return dir + "/" + name; }

bool WriteAll(int fd, const std::string& s) {
  size_t at = 0;
  while (at < s.size()) {
    const ssize_t n = write(fd, s.data() + at, s.size() - at);
    if (n <= 0) return false;
    at += static_cast<size_t>(n);
  }
  return true;
}

// The whole file through open/read, or "<errno N>".
std::string Slurp(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return "<errno " + std::to_string(errno) + ">";
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

// "name:type" of every entry, "." and ".." included, sorted.
std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return {"<errno " + std::to_string(errno) + ">"};
  while (dirent* e = readdir(d)) {
    out.push_back(std::string(e->d_name) + ":" + (e->d_type == DT_DIR ? "d" : e->d_type == DT_REG ? "f" : "?"));
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

bool Listed(const std::string& dir, const std::string& name) {
  for (const auto& e : List(dir)) {
    if (e == name + ":f") return true;
  }
  return false;
}

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  uint32_t x = 2166136261u ^ static_cast<uint32_t>(seed);
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

std::string Joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += e + " ";
  return s;
}

// open/O_EXCL/ENOENT/EISDIR/ENOTDIR/EXDEV/... and errno preservation.
void Errors(const std::string& dir) {
  const std::string f = Join(dir, "f");
  EXPECT_ERRNO(open(Join(dir, "missing").c_str(), O_RDONLY), ENOENT);
  EXPECT_ERRNO(open(Join(dir, "missing").c_str(), O_WRONLY), ENOENT);
  EXPECT_ERRNO(access(Join(dir, "missing").c_str(), F_OK), ENOENT);
  int fd = open(f.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0640);
  CHECK(fd >= 0, "create %s", f.c_str());
  CHECK(WriteAll(fd, "abc"), "write");
  CHECK(close(fd) == 0, "close");
  EXPECT_ERRNO(open(f.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0640), EEXIST);
  errno = 0;
  CHECK(fopen(f.c_str(), "wx") == nullptr && errno == EEXIST, "fopen wx");
  EXPECT_ERRNO(open(dir.c_str(), O_WRONLY), EISDIR);
  EXPECT_ERRNO(open(Join(f, "x").c_str(), O_CREAT | O_WRONLY, 0644), ENOTDIR);
  EXPECT_ERRNO(open(f.c_str(), O_RDONLY | O_DIRECTORY), ENOTDIR);
  EXPECT_ERRNO(mkdir(f.c_str(), 0755), EEXIST);
  EXPECT_ERRNO(unlink(dir.c_str()), EISDIR);
  EXPECT_ERRNO(rmdir(dir.c_str()), ENOTEMPTY);
  EXPECT_ERRNO(rmdir(f.c_str()), ENOTDIR);
  EXPECT_ERRNO(chdir(f.c_str()), ENOTDIR);
  EXPECT_ERRNO(rename(f.c_str(), "/tmp/fern-preload-probe-exdev"), EXDEV);
  CHECK(access(f.c_str(), R_OK | W_OK) == 0, "access rw");

  // A read-only fd refuses writes; reads see the committed bytes.
  fd = open(f.c_str(), O_RDONLY);
  CHECK(fd >= 0, "open for read");
  EXPECT_ERRNO(write(fd, "x", 1), EBADF);
  char buf[8] = {};
  CHECK(read(fd, buf, sizeof buf) == 3 && std::memcmp(buf, "abc", 3) == 0, "read back '%s'", buf);
  close(fd);

  // errno is the caller's after a successful managed call.
  errno = EDOM;
  fd = open(f.c_str(), O_RDONLY);
  CHECK(fd >= 0 && errno == EDOM, "open keeps errno");
  struct stat st {};
  errno = EDOM;
  CHECK(stat(f.c_str(), &st) == 0 && errno == EDOM, "stat keeps errno");
  errno = EDOM;
  CHECK(close(fd) == 0 && errno == EDOM, "close keeps errno");

  // rename with and without RENAME_NOREPLACE, and flags the namespace lacks.
  const std::string g = Join(dir, "g");
  fd = open(g.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fd >= 0 && close(fd) == 0, "create g");
  EXPECT_ERRNO(renameat2(AT_FDCWD, f.c_str(), AT_FDCWD, g.c_str(), RENAME_NOREPLACE), EEXIST);
  EXPECT_ERRNO(renameat2(AT_FDCWD, f.c_str(), AT_FDCWD, g.c_str(), RENAME_EXCHANGE), EINVAL);
  CHECK(rename(f.c_str(), g.c_str()) == 0, "rename over g");
  CHECK(Slurp(g) == "abc", "renamed content '%s'", Slurp(g).c_str());
  EXPECT_ERRNO(stat(f.c_str(), &st), ENOENT);

  // truncate, realpath with "." and "..".
  CHECK(truncate(g.c_str(), 1) == 0, "truncate");
  CHECK(Slurp(g) == "a", "truncated '%s'", Slurp(g).c_str());
  char resolved[PATH_MAX];
  const std::string messy = dir + "/./sub/../g";
  CHECK(realpath(messy.c_str(), resolved) && resolved == g, "realpath -> %s", resolved);
  EXPECT_ERRNO(realpath(Join(dir, "nope").c_str(), resolved) == nullptr ? -1 : 0, ENOENT);
  CHECK(unlink(g.c_str()) == 0, "unlink");
  EXPECT_ERRNO(unlink(g.c_str()), ENOENT);

  // A managed working directory: relative paths and getcwd follow it.
  CHECK(mkdir(dir.c_str(), 0755) == 0, "mkdir %s (empty: it vanished with its last file)", dir.c_str());
  char before[PATH_MAX], now[PATH_MAX];
  CHECK(getcwd(before, sizeof before) != nullptr, "getcwd");
  CHECK(chdir(dir.c_str()) == 0, "chdir into %s", dir.c_str());
  CHECK(getcwd(now, sizeof now) && now == dir, "getcwd -> %s", now);
  fd = open("rel", O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fd >= 0 && WriteAll(fd, "relative") && close(fd) == 0, "relative create");
  CHECK(Slurp(Join(dir, "rel")) == "relative" && Slurp("./rel") == "relative", "relative content");
  CHECK(chdir("..") == 0 && getcwd(now, sizeof now) && std::string(now) == dir.substr(0, dir.rfind('/')),
        "chdir .. -> %s", now);
  CHECK(chdir(before) == 0 && getcwd(now, sizeof now) && std::strcmp(now, before) == 0, "chdir back");
  CHECK(unlink(Join(dir, "rel").c_str()) == 0, "unlink rel");
}

// fopen/fwrite/fclose, append, freopen, fdopen(dup(fd)) as numpy does.
void Stdio(const std::string& dir) {
  const std::string f = Join(dir, "s");
  const std::string data = Pattern(300000, 1);
  FILE* w = fopen(f.c_str(), "w");
  CHECK(w != nullptr, "fopen w");
  CHECK(fwrite(data.data(), 1, data.size(), w) == data.size(), "fwrite");
  CHECK(fclose(w) == 0, "fclose");
  CHECK(Slurp(f) == data, "read back %zu bytes", Slurp(f).size());

  FILE* a = fopen(f.c_str(), "a");
  CHECK(a != nullptr && fputs("tail", a) >= 0 && fclose(a) == 0, "append");
  CHECK(Slurp(f) == data + "tail", "after append");

  FILE* r = fopen(f.c_str(), "r");
  char head[4] = {};
  CHECK(r != nullptr && fread(head, 1, 4, r) == 4 && std::memcmp(head, data.data(), 4) == 0, "fopen r");
  CHECK(fclose(r) == 0, "fclose r");

  // numpy: open, fdopen(dup(fd)), fwrite, fclose, then close(fd).
  const std::string np = Join(dir, "np");
  const int fd = open(np.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
  CHECK(fd >= 0 && WriteAll(fd, "HDR"), "open np");
  FILE* dupf = fdopen(dup(fd), "ab");
  CHECK(dupf && fwrite("BODY", 1, 4, dupf) == 4 && fclose(dupf) == 0, "fdopen(dup)");
  CHECK(!Listed(dir, "np"), "committed before the last close");
  CHECK(close(fd) == 0, "close np");
  CHECK(Slurp(np) == "HDRBODY", "np content '%s'", Slurp(np).c_str());

  // freopen a managed path onto stdout's FILE-like stream.
  const std::string re = Join(dir, "re");
  FILE* tmp = fopen("/dev/null", "w");
  FILE* moved = freopen(re.c_str(), "w", tmp);
  CHECK(moved != nullptr && fputs("reopened", moved) >= 0 && fclose(moved) == 0, "freopen");
  CHECK(Slurp(re) == "reopened", "freopen content '%s'", Slurp(re).c_str());
}

// std::ofstream (fopen64 + write on fileno) and ifstream.
void Ofstream(const std::string& dir) {
  const std::string f = Join(dir, "o");
  const std::string data = Pattern(123457, 2);
  {
    std::ofstream out(f, std::ios::binary);
    CHECK(out.good(), "ofstream open");
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out << "end";
  }  // the destructor closes
  std::ifstream in(f, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  CHECK(ss.str() == data + "end", "ifstream read %zu bytes", ss.str().size());
}

// dup/dup2/F_DUPFD keep the file open; the last close commits.
void Dup(const std::string& dir) {
  const std::string f = Join(dir, "d");
  const int fd = open(f.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fd >= 0, "open");
  const int d1 = dup(fd);
  const int d2 = dup2(fd, 50);
  const int d3 = fcntl(fd, F_DUPFD_CLOEXEC, 60);
  CHECK(d1 >= 0 && d2 == 50 && d3 >= 60, "dups %d %d %d", d1, d2, d3);
  CHECK(WriteAll(fd, "0") && WriteAll(d1, "1") && WriteAll(d2, "2") && WriteAll(d3, "3"), "writes");
  CHECK(close(fd) == 0 && close(d1) == 0 && close(d2) == 0, "closes");
  CHECK(!Listed(dir, "d"), "committed while an fd is still open");
  CHECK(close(d3) == 0, "last close");
  CHECK(Listed(dir, "d"), "not committed at the last close");
  CHECK(Slurp(f) == "0123", "content '%s'", Slurp(f).c_str());

  // dup2 onto a tracked fd closes it: its file commits.
  const std::string g = Join(dir, "implicit");
  const int gfd = open(g.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(gfd >= 0 && WriteAll(gfd, "gone"), "open implicit");
  const int devnull = open("/dev/null", O_RDONLY);
  CHECK(dup2(devnull, gfd) == gfd, "dup2 over");
  CHECK(Listed(dir, "implicit") && Slurp(g) == "gone", "dup2 over a tracked fd did not commit");
  close(gfd);
  close(devnull);

  // close(1); open(...) gets fd 1, as POSIX promises the lowest free fd.
  const int saved = dup(1);
  close(1);
  const int one = open(Join(dir, "lowest").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  const int got = one;
  if (one >= 0) close(one);
  dup2(saved, 1);
  close(saved);
  CHECK(got == 1, "open after close(1) returned fd %d", got);
}

// fsync/close report the daemon's error (the daemon has a small capacity).
void FsyncError(const std::string& dir) {
  const std::string small = Join(dir, "small");
  int fd = open(small.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fd >= 0 && WriteAll(fd, "fits"), "small");
  CHECK(fsync(fd) == 0, "fsync small");
  CHECK(close(fd) == 0, "close small");

  const std::string big = Join(dir, "big");
  fd = open(big.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fd >= 0 && WriteAll(fd, Pattern(2 << 20, 3)), "big");
  EXPECT_ERRNO(fsync(fd), ENOSPC);
  EXPECT_ERRNO(fdatasync(fd), ENOSPC);
  EXPECT_ERRNO(close(fd), ENOSPC);
  CHECK(!Listed(dir, "big"), "a failed commit is listed");

  FILE* f = fopen(big.c_str(), "w");
  CHECK(f && fwrite(Pattern(2 << 20, 4).data(), 1, 2 << 20, f) == (2u << 20), "fwrite big");
  errno = 0;
  CHECK(f && fclose(f) == EOF && errno == ENOSPC, "fclose reports ENOSPC");
  CHECK(Slurp(small) == "fits", "the committed file changed");
}

// readdir types, fdopendir on an O_DIRECTORY fd, *at calls relative to it.
void Readdir(const std::string& dir) {
  CHECK(mkdir(dir.c_str(), 0755) == 0, "mkdir %s", dir.c_str());
  CHECK(mkdir(Join(dir, "sub").c_str(), 0755) == 0, "mkdir sub");
  for (const char* name : {"file", "sub/inner"}) {
    const int fd = open(Join(dir, name).c_str(), O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0 && WriteAll(fd, name) && close(fd) == 0, "create %s", name);
  }
  const std::vector<std::string> want = {"..:d", ".:d", "file:f", "sub:d"};  // sorted
  CHECK(List(dir) == want, "listing %s", Joined(List(dir)).c_str());

  DIR* d = opendir(dir.c_str());
  CHECK(d != nullptr, "opendir");
  int n = 0;
  while (dirent* e = readdir(d)) {
    CHECK(e->d_ino != 0, "d_ino of %s", e->d_name);
    ++n;
  }
  rewinddir(d);
  CHECK(readdir(d) != nullptr && n == 4, "rewinddir (%d entries)", n);
  closedir(d);

  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  CHECK(dfd >= 0, "open O_DIRECTORY");
  struct stat by_fd {}, by_path {};
  CHECK(fstat(dfd, &by_fd) == 0 && stat(dir.c_str(), &by_path) == 0, "stats");
  CHECK(S_ISDIR(by_fd.st_mode) && by_fd.st_ino == by_path.st_ino && by_fd.st_dev == by_path.st_dev,
        "fstat of a dir fd disagrees with stat");
  struct stat sub {};
  CHECK(fstatat(dfd, "sub", &sub, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(sub.st_mode), "fstatat sub");
  const int ffd = openat(dfd, "file", O_RDONLY);
  char buf[8] = {};
  CHECK(ffd >= 0 && read(ffd, buf, sizeof buf) == 4 && std::string(buf) == "file", "openat file");
  close(ffd);
  const int nfd = openat(dfd, "sub/new", O_CREAT | O_WRONLY | O_EXCL, 0600);
  CHECK(nfd >= 0 && WriteAll(nfd, "new") && close(nfd) == 0, "openat create");
  CHECK(Slurp(Join(dir, "sub/new")) == "new", "created through dirfd");
  CHECK(unlinkat(dfd, "sub/new", 0) == 0 && unlinkat(dfd, "sub/inner", 0) == 0, "unlinkat");
  CHECK(unlinkat(dfd, "sub", AT_REMOVEDIR) == 0, "unlinkat AT_REMOVEDIR");
  const int here = open(".", O_RDONLY | O_DIRECTORY);
  char now[PATH_MAX];
  CHECK(fchdir(dfd) == 0 && getcwd(now, sizeof now) && now == dir, "fchdir -> %s", now);
  struct stat via_cwd {};
  CHECK(stat("file", &via_cwd) == 0 && via_cwd.st_size == 4, "stat relative to a managed cwd");
  CHECK(fchdir(here) == 0 && getcwd(now, sizeof now) && now != dir, "fchdir back");
  close(here);
  DIR* fd_dir = fdopendir(dfd);
  CHECK(fd_dir != nullptr && dirfd(fd_dir) == dfd, "fdopendir");
  std::set<std::string> names;
  while (dirent* e = fd_dir ? readdir(fd_dir) : nullptr) names.insert(e->d_name);
  CHECK(names == std::set<std::string>({".", "..", "file"}), "fdopendir listing after unlinkat");
  if (fd_dir) closedir(fd_dir);

  dirent** list = nullptr;
  const int count = scandir(dir.c_str(), &list, nullptr, alphasort);
  CHECK(count == 3 && std::string(list[2]->d_name) == "file", "scandir -> %d", count);
  for (int i = 0; i < count; ++i) free(list[i]);
  free(list);
  // telldir/seekdir/readdir_r on a managed stream.
  DIR* again = opendir(dir.c_str());
  dirent* first = again ? readdir(again) : nullptr;
  const long mark = again ? telldir(again) : -1;
  dirent* second = again ? readdir(again) : nullptr;
  const std::string second_name = second ? second->d_name : "";
  if (again) seekdir(again, mark);
  dirent entry {}, *res = nullptr;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // old programs still call it
  const int rr = again ? readdir_r(again, &entry, &res) : -1;
#pragma GCC diagnostic pop
  CHECK(first && rr == 0 && res == &entry && second_name == entry.d_name,
        "seekdir back to '%s' gave '%s'", second_name.c_str(), entry.d_name);
  if (again) closedir(again);

  // ".." out of a managed directory fd reaches the real file system.
  const int top = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  std::string up = "..";
  for (size_t i = 1; i < dir.size(); ++i) up += dir[i] == '/' ? "/.." : "";
  const int host = openat(top, (up + "/etc/hostname").c_str(), O_RDONLY);
  char hbuf[256] = {};
  const ssize_t hn = host >= 0 ? read(host, hbuf, sizeof hbuf - 1) : -1;
  CHECK(hn > 0 && Slurp("/etc/hostname") == std::string(hbuf, static_cast<size_t>(hn)), "openat %s/etc/hostname",
        up.c_str());
  if (host >= 0) close(host);
  close(top);

  const int cfd = creat(Join(dir, "created").c_str(), 0600);
  CHECK(cfd >= 0 && WriteAll(cfd, "c") && close(cfd) == 0 && Slurp(Join(dir, "created")) == "c", "creat");
  EXPECT_ERRNO(opendir(Join(dir, "file").c_str()) == nullptr ? -1 : 0, ENOTDIR);
  EXPECT_ERRNO(opendir(Join(dir, "nope").c_str()) == nullptr ? -1 : 0, ENOENT);
}

// Read-only mappings of a restored file (numpy mmap_mode="r").
void Mmap(const std::string& dir) {
  const std::string f = Join(dir, "m");
  const std::string data = Pattern(1 << 20, 5);
  int fd = open(f.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fd >= 0 && WriteAll(fd, data) && close(fd) == 0, "write");
  fd = open(f.c_str(), O_RDONLY);
  CHECK(fd >= 0, "open");
  void* shared = mmap(nullptr, data.size(), PROT_READ, MAP_SHARED, fd, 0);
  CHECK(shared != MAP_FAILED && std::memcmp(shared, data.data(), data.size()) == 0, "MAP_SHARED");
  auto* priv = static_cast<char*>(mmap(nullptr, data.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0));
  CHECK(priv != MAP_FAILED, "MAP_PRIVATE");
  if (priv != MAP_FAILED) {
    priv[0] = static_cast<char>(~data[0]);  // copy-on-write, never reaches the file
    munmap(priv, data.size());
  }
  CHECK(mmap(nullptr, data.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED,
        "a writable shared mapping of a read-only fd");
  if (shared != MAP_FAILED) munmap(shared, data.size());
  close(fd);
  CHECK(Slurp(f) == data, "file changed");

  // An in-place update through a writable shared mapping of an existing
  // file, unmapped before the close: stores leave no mtime, still committed.
  fd = open(f.c_str(), O_RDWR);
  auto* w = static_cast<char*>(mmap(nullptr, data.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  CHECK(fd >= 0 && w != MAP_FAILED, "writable mapping");
  if (w != MAP_FAILED) {
    std::memcpy(w + 100, "MAPPED", 6);
    munmap(w, data.size());
  }
  CHECK(close(fd) == 0, "close");
  std::string want = data;
  want.replace(100, 6, "MAPPED");
  CHECK(Slurp(f) == want, "the mapped update was lost");
}

// A fork child's close and exit never commit; the parent's last close does.
void Fork(const std::string& dir) {
  const std::string f = Join(dir, "forked");
  const int fd = open(f.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fd >= 0 && WriteAll(fd, "parent1,"), "open");
  const pid_t pid = fork();
  if (pid == 0) {
    WriteAll(fd, "child,");
    struct stat st {};
    const bool seen = stat(f.c_str(), &st) == 0 && st.st_size == 14;  // its inherited file
    close(fd);
    std::exit(seen ? 0 : 3);  // exit handlers run: still no commit
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
  CHECK(!Listed(dir, "forked"), "the child committed the parent's file");
  CHECK(WriteAll(fd, "parent2") && close(fd) == 0, "parent close");
  CHECK(Slurp(f) == "parent1,child,parent2", "content '%s'", Slurp(f).c_str());
}

// Exit without closing: the bytes are there, like a real file's.
void ExitWithoutClose(const std::string& dir) {
  const int fd = open(Join(dir, "raw").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fd >= 0 && WriteAll(fd, "raw bytes"), "raw");
  FILE* f = fopen(Join(dir, "buffered").c_str(), "w");
  CHECK(f && fputs("buffered bytes", f) >= 0, "buffered");  // still in the stdio buffer
  std::printf("ok exit\n");
  std::fflush(stdout);
  std::exit(g_failures);
}

// stat/statx/fstat report consistent, synthetic identities.
void Stat(const std::string& dir) {
  const std::string f = Join(dir, "five");
  int fd = open(f.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0640);
  CHECK(fd >= 0 && WriteAll(fd, std::string(5000, 'x')), "write");
  struct stat staged {};
  CHECK(stat(f.c_str(), &staged) == 0 && staged.st_size == 5000, "stat of a file open for writing");
  CHECK(close(fd) == 0, "close");
  struct stat st {}, lst {}, fst {};
  CHECK(stat(f.c_str(), &st) == 0 && lstat(f.c_str(), &lst) == 0, "stat");
  const mode_t mask = umask(0);
  umask(mask);
  CHECK(S_ISREG(st.st_mode) && (st.st_mode & 07777) == (0640 & ~mask), "mode %o", st.st_mode);
  CHECK(st.st_size == 5000 && st.st_blocks == 10 && st.st_nlink == 1 && st.st_blksize == 4096, "sizes");
  CHECK(st.st_ino != 0 && st.st_ino == lst.st_ino && st.st_uid == geteuid(), "identity");
  CHECK(st.st_mtim.tv_sec > 1600000000, "mtime %ld", static_cast<long>(st.st_mtim.tv_sec));
  fd = open(f.c_str(), O_RDONLY);
  CHECK(fd >= 0 && fstat(fd, &fst) == 0, "fstat");
  CHECK(fst.st_ino == st.st_ino && fst.st_dev == st.st_dev && fst.st_size == 5000, "fstat identity");
  close(fd);
  struct statx sx {};
  CHECK(statx(AT_FDCWD, f.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx) == 0, "statx");
  CHECK(sx.stx_size == 5000 && sx.stx_ino == st.st_ino && S_ISREG(sx.stx_mode) &&
            (sx.stx_mask & STATX_BASIC_STATS) == STATX_BASIC_STATS,
        "statx fields");
  struct stat d {};
  CHECK(stat(dir.c_str(), &d) == 0 && S_ISDIR(d.st_mode) && d.st_nlink == 2, "dir stat");
  CHECK(stat((dir + "/.").c_str(), &d) == 0 && S_ISDIR(d.st_mode), "dir/. stat");

  // Binaries built against glibc < 2.33 call the __xstat family; bind them
  // as the dynamic linker would for such a binary.
  using XStat = int (*)(int, const char*, struct stat*);
  using FxStat = int (*)(int, int, struct stat*);
  using FxStatAt = int (*)(int, int, const char*, struct stat*, int);
  auto xstat = reinterpret_cast<XStat>(dlsym(RTLD_DEFAULT, "__xstat"));
  auto lxstat = reinterpret_cast<XStat>(dlsym(RTLD_DEFAULT, "__lxstat64"));
  auto fxstat = reinterpret_cast<FxStat>(dlsym(RTLD_DEFAULT, "__fxstat"));
  auto fxstatat = reinterpret_cast<FxStatAt>(dlsym(RTLD_DEFAULT, "__fxstatat"));
  CHECK(xstat && lxstat && fxstat && fxstatat, "the __xstat family is exported");
  if (xstat && lxstat && fxstat && fxstatat) {
    struct stat x {};
    CHECK(xstat(1, f.c_str(), &x) == 0 && x.st_ino == st.st_ino && x.st_size == 5000, "__xstat");
    CHECK(lxstat(1, f.c_str(), &x) == 0 && x.st_ino == st.st_ino, "__lxstat64");
    fd = open(f.c_str(), O_RDONLY);
    CHECK(fxstat(1, fd, &x) == 0 && x.st_ino == st.st_ino && x.st_dev == st.st_dev, "__fxstat");
    close(fd);
    CHECK(fxstatat(1, AT_FDCWD, f.c_str(), &x, 0) == 0 && x.st_ino == st.st_ino, "__fxstatat");
    errno = 0;
    CHECK(xstat(1, Join(dir, "missing").c_str(), &x) == -1 && errno == ENOENT, "__xstat ENOENT");
  }
  char* canon = canonicalize_file_name((dir + "//five").c_str());
  CHECK(canon && canon == f, "canonicalize_file_name -> %s", canon ? canon : "(null)");
  free(canon);
  CHECK(euidaccess(f.c_str(), R_OK) == 0 && faccessat(AT_FDCWD, f.c_str(), W_OK, 0) == 0, "euidaccess/faccessat");
}

// Calls on real files pass through with errno intact.
void Unmanaged(const std::string& dir) {
  const std::string f = Join(dir, "plain");
  errno = EDOM;
  int fd = open(f.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fd >= 0 && errno == EDOM, "open keeps errno");
  CHECK(WriteAll(fd, "plain") && close(fd) == 0 && errno == EDOM, "close keeps errno");
  struct stat st {};
  EXPECT_ERRNO(stat(Join(dir, "missing").c_str(), &st), ENOENT);
  CHECK(stat(f.c_str(), &st) == 0 && st.st_size == 5, "stat");
  CHECK(Slurp(f) == "plain", "content");
  const int d = dup(STDERR_FILENO);
  CHECK(d >= 0 && close(d) == 0, "dup/close");
  EXPECT_ERRNO(close(12345), EBADF);
}

// Programs that close every fd (daemonizing, closefrom loops) or dup2 over
// high fds must not break the shim: its own fds survive or come back.
void CloseAll(const std::string& dir) {
  struct stat st {};
  EXPECT_ERRNO(stat(Join(dir, "none").c_str(), &st), ENOENT);  // connected now
  const std::string a = Join(dir, "a"), b = Join(dir, "b");
  const int fa = open(a.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  const int fb = open(b.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  CHECK(fa >= 0 && fb >= 0 && WriteAll(fa, "a1") && WriteAll(fb, "b1"), "open");
  for (int fd = 3; fd < 4096; ++fd) {
    if (fd != fa && fd != fb) close(fd);
  }
  const int devnull = open("/dev/null", O_RDONLY);
  for (int fd = 900; fd < 1200; ++fd) {
    if (fd != fa && fd != fb && fd != devnull) dup2(devnull, fd);
  }
  for (int fd = 900; fd < 1200; ++fd) {
    if (fd != fa && fd != fb && fd != devnull) close(fd);
  }
  close(devnull);
  CHECK(WriteAll(fa, "a2") && close(fa) == 0, "close a after the purge");
  CHECK(WriteAll(fb, "b2") && fsync(fb) == 0 && close(fb) == 0, "fsync/close b after the purge");
  CHECK(Slurp(a) == "a1a2" && Slurp(b) == "b1b2", "content '%s' '%s'", Slurp(a).c_str(), Slurp(b).c_str());
}

// Creates path (truncating) with `bytes`; false on any failure.
bool Create(const std::string& path, const std::string& bytes) {
  const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  if (fd < 0) return false;
  const bool ok = WriteAll(fd, bytes);
  return close(fd) == 0 && ok;
}

// Flips every bit of (*s)[off, off + len); returns the new bytes.
std::string FlipBytes(std::string* s, size_t off, size_t len) {
  for (size_t i = off; i < off + len; ++i) (*s)[i] = static_cast<char>(~(*s)[i]);
  return s->substr(off, len);
}

// Flips [off, off + len) of the file open as fd, whose bytes are *now (kept
// up to date): every byte written differs from the one it replaces.
bool Flip(int fd, std::string* now, size_t off, size_t len) {
  const std::string b = FlipBytes(now, off, len);
  return pwrite(fd, b.data(), b.size(), static_cast<off_t>(off)) == static_cast<ssize_t>(len);
}

// Reopening existing files for writing without O_TRUNC. Each file is one
// scenario; preload_test checks which requests each one caused (UPDATE of
// exactly the flipped ranges, a PUT, or nothing); here the bytes read back.
void Update(const std::string& dir) {
  const size_t n = 3 * 4096 + 1000;
  const std::string data = Pattern(n, 10);
  for (const char* name :
       {"a", "gap", "none", "grow", "stale", "gone", "unplaced", "fsync", "same", "half", "moved", "fork"}) {
    CHECK(Create(Join(dir, name), data), "create %s", name);
  }
  // Three disjoint, unaligned ranges: one spans a 4 KiB boundary, one ends the file.
  std::string want = data;
  int fd = open(Join(dir, "a").c_str(), O_RDWR);
  CHECK(fd >= 0 && Flip(fd, &want, 5, 3) && Flip(fd, &want, 4094, 4) && Flip(fd, &want, n - 3, 3), "a");
  CHECK(close(fd) == 0 && Slurp(Join(dir, "a")) == want, "a content");

  // One unchanged byte between two writes keeps them apart.
  want = data;
  fd = open(Join(dir, "gap").c_str(), O_WRONLY);
  CHECK(fd >= 0 && Flip(fd, &want, 100, 2) && Flip(fd, &want, 103, 2), "gap");
  CHECK(close(fd) == 0 && Slurp(Join(dir, "gap")) == want, "gap content");

  // Opened for writing, only read.
  fd = open(Join(dir, "none").c_str(), O_RDWR);
  char buf[16];
  CHECK(fd >= 0 && read(fd, buf, sizeof buf) == sizeof buf, "none");
  CHECK(close(fd) == 0 && Slurp(Join(dir, "none")) == data, "none content");

  // A write, then a bigger size.
  want = data;
  fd = open(Join(dir, "grow").c_str(), O_RDWR);
  CHECK(fd >= 0 && Flip(fd, &want, 10, 5) && ftruncate(fd, static_cast<off_t>(n + 100)) == 0, "grow");
  want.append(100, '\0');
  CHECK(close(fd) == 0 && Slurp(Join(dir, "grow")) == want, "grow content");

  // Another program replaces the file (same size) while it is open here:
  // this close's update is refused as stale and the whole file is sent.
  want = data;
  fd = open(Join(dir, "stale").c_str(), O_RDWR | O_CLOEXEC);
  CHECK(fd >= 0 && Flip(fd, &want, 20, 4), "stale");
  const std::string other = "printf '%0" + std::to_string(n) + "d' 0 > " + Join(dir, "stale");
  CHECK(std::system(other.c_str()) == 0, "%s", other.c_str());  // (reads here see this process's bytes)
  CHECK(close(fd) == 0 && Slurp(Join(dir, "stale")) == want, "stale content");

  // Another program removes it: this close writes it again, as a whole.
  want = data;
  fd = open(Join(dir, "gone").c_str(), O_RDWR | O_CLOEXEC);
  CHECK(fd >= 0 && Flip(fd, &want, 60, 2), "gone");
  CHECK(std::system(("rm " + Join(dir, "gone")).c_str()) == 0, "rm");
  CHECK(close(fd) == 0 && Slurp(Join(dir, "gone")) == want, "gone content");

  // A node of the stripe is down, so the update cannot reach all k+m
  // shards (EAGAIN): this close writes the whole file instead, which the
  // daemon places on live nodes.
  want = data;
  fd = open(Join(dir, "unplaced").c_str(), O_RDWR | O_CLOEXEC);
  CHECK(fd >= 0 && Flip(fd, &want, 70, 3), "unplaced");
  CHECK(close(fd) == 0 && Slurp(Join(dir, "unplaced")) == want, "unplaced content");

  // fsync commits the first write; the close only the second.
  want = data;
  fd = open(Join(dir, "fsync").c_str(), O_RDWR);
  CHECK(fd >= 0 && Flip(fd, &want, 30, 2) && fsync(fd) == 0, "fsync");
  CHECK(Slurp(Join(dir, "fsync")) == want, "fsync content");
  CHECK(Flip(fd, &want, 5000, 3) && close(fd) == 0 && Slurp(Join(dir, "fsync")) == want, "fsync then close");

  // Bytes written over with what they were.
  fd = open(Join(dir, "same").c_str(), O_RDWR);
  CHECK(fd >= 0 && pwrite(fd, data.data() + 40, 10, 40) == 10, "same");
  CHECK(close(fd) == 0 && Slurp(Join(dir, "same")) == data, "same content");

  // More than half the file changed.
  want = data;
  fd = open(Join(dir, "half").c_str(), O_RDWR);
  CHECK(fd >= 0 && Flip(fd, &want, 0, n / 2 + 1), "half");
  CHECK(close(fd) == 0 && Slurp(Join(dir, "half")) == want, "half content");

  // The program dup2s over the shim's own high fds (its copy of the old
  // bytes among them): they move, and the update still works.
  want = data;
  fd = open(Join(dir, "moved").c_str(), O_RDWR);
  const int devnull = open("/dev/null", O_RDONLY);
  for (int high = 1000; high < 1064; ++high) {
    if (high != fd && high != devnull) dup2(devnull, high);
  }
  for (int high = 1000; high < 1064; ++high) {
    if (high != fd && high != devnull) close(high);
  }
  close(devnull);
  CHECK(fd >= 0 && Flip(fd, &want, 50, 1), "moved");
  CHECK(close(fd) == 0 && Slurp(Join(dir, "moved")) == want, "moved content");

  // More runs than one update may carry (every other byte of 2^21 + 2).
  const size_t big = (size_t{1} << 21) + 2;
  std::string many = Pattern(big, 11);
  CHECK(Create(Join(dir, "many"), many), "create many");
  fd = open(Join(dir, "many").c_str(), O_RDWR);
  for (size_t i = 0; i < big; i += 2) FlipBytes(&many, i, 1);
  CHECK(fd >= 0 && pwrite(fd, many.data(), big, 0) == static_cast<ssize_t>(big), "many");
  CHECK(close(fd) == 0 && Slurp(Join(dir, "many")) == many, "many content");

  // Two processes update disjoint ranges of one file, both open at once:
  // the file ends up with both.
  want = data;
  int ready[2], go[2];
  CHECK(pipe(ready) == 0 && pipe(go) == 0, "pipes");
  const pid_t pid = fork();
  if (pid == 0) {
    std::string mine = data;
    const int cfd = open(Join(dir, "fork").c_str(), O_RDWR);
    bool ok = cfd >= 0 && Flip(cfd, &mine, 100, 4) && write(ready[1], "r", 1) == 1;
    char c;
    ok = ok && read(go[0], &c, 1) == 1 && close(cfd) == 0;
    _exit(ok ? 0 : 1);
  }
  char c = 0;
  CHECK(read(ready[0], &c, 1) == 1, "child opened");
  fd = open(Join(dir, "fork").c_str(), O_RDWR);
  CHECK(fd >= 0 && Flip(fd, &want, 8000, 4), "parent write");
  CHECK(write(go[1], "g", 1) == 1, "go");
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
  CHECK(close(fd) == 0, "parent close");
  FlipBytes(&want, 100, 4);  // the child's
  CHECK(Slurp(Join(dir, "fork")) == want, "fork content: one writer's update is lost");
  for (int p : {ready[0], ready[1], go[0], go[1]}) close(p);
}

// Threads open, write and close files concurrently.
void Threads(const std::string& dir) {
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const std::string f = Join(dir, "t" + std::to_string(t) + "-" + std::to_string(i));
        const int fd = open(f.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0 || !WriteAll(fd, f) || close(fd) != 0 || Slurp(f) != f) ++bad[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) CHECK(bad[t] == 0, "thread %d: %d bad files", t, bad[t]);
  CHECK(List(dir).size() == 102, "listed %zu", List(dir).size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: preload_probe CASE DIR\n");
    return 100;
  }
  g_case = argv[1];
  const std::string c = argv[1], dir = argv[2];
  const std::map<std::string, void (*)(const std::string&)> cases = {
      {"errors", Errors},   {"stdio", Stdio}, {"ofstream", Ofstream},       {"dup", Dup},
      {"fsync_error", FsyncError}, {"readdir", Readdir}, {"mmap", Mmap}, {"fork", Fork},
      {"exit", ExitWithoutClose}, {"stat", Stat}, {"unmanaged", Unmanaged}, {"threads", Threads},
      {"closeall", CloseAll}, {"update", Update}};
  auto it = cases.find(c);
  if (it == cases.end()) {
    std::fprintf(stderr, "preload_probe: unknown case %s\n", c.c_str());
    return 100;
  }
  it->second(dir);
  std::printf("%s %s\n", g_failures ? "FAILED" : "ok", c.c_str());
  return g_failures;
}
