// libfernec_preload.so under real, unmodified programs: every test starts a
// fern_fake_daemon (an in-memory daemon speaking common/client_protocol.h) on
// a socket of its own and runs /bin/sh scripts with LD_PRELOAD,
// FERN_EC_SOCKET and FERN_EC_MOUNT=/fern. Assertions are what a user checks:
// the bytes that come back (compared with the same program's output on a
// plain directory), exit codes and error messages, what the daemon was asked
// (its request log), and that nothing outside /fern is touched.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/client_protocol.h"
#include "common/subprocess.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;

struct Result {
  int code = -1;  // exit status, or 128 + signal
  std::string out;
  std::string err;
};

std::ostream& operator<<(std::ostream& os, const Result& r) {
  return os << "exit " << r.code << "\n--- stdout\n" << r.out << "--- stderr\n" << r.err;
}

// Runs argv with extra environment entries, capturing stdout and stderr.
Result RunProgram(const std::vector<std::string>& argv, const std::vector<std::string>& env_extra,
           std::chrono::seconds timeout = std::chrono::seconds(30)) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    if (kv.rfind("LD_PRELOAD=", 0) == 0 || kv.rfind("FERN_EC_", 0) == 0) continue;
    env.push_back(kv);
  }
  env.insert(env.end(), env_extra.begin(), env_extra.end());
  std::vector<char*> envp, args;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (auto& a : argv_copy) args.push_back(a.data());
  args.push_back(nullptr);

  int out[2], err[2];
  Result r;
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return r;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  close(err[1]);
  const auto until = std::chrono::steady_clock::now() + timeout;
  pollfd pfd[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_pipes = 2;
  while (rc == 0 && open_pipes > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      r.err += "\n[preload_test: timed out]\n";
      break;
    }
    if (poll(pfd, 2, static_cast<int>(left.count())) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[65536];
      const ssize_t n = read(pfd[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else {
        pfd[i].fd = -1;
        --open_pipes;
      }
    }
  }
  close(out[0]);
  close(err[0]);
  if (rc == 0) {
    int status = 0;
    waitpid(pid, &status, 0);
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return r;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteRandom(const std::string& path, size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull ^ seed;
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  std::ofstream(path, std::ios::binary) << s;
}

class PreloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = ::testing::TempDir() + "fern-preload-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    socket_ = dir_ + "/daemon.sock";
    log_ = dir_ + "/daemon.log";
    StartDaemon({});
  }

  void TearDown() override {
    daemon_.Kill(SIGTERM);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void StartDaemon(const std::vector<std::string>& extra) {
    daemon_.Kill(SIGTERM);
    std::vector<std::string> argv = {FERN_FAKE_DAEMON, "--socket", socket_, "--log", log_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ASSERT_TRUE(daemon_.Start(argv));
    ASSERT_EQ(daemon_.ReadLine(std::chrono::seconds(10)).value_or("<nothing>"), "ready");
  }

  std::vector<std::string> PreloadEnv(const std::string& socket) const {
    return {std::string("LD_PRELOAD=") + FERN_PRELOAD_LIB, "FERN_EC_SOCKET=" + socket, "FERN_EC_MOUNT=/fern"};
  }

  // A shell script run in dir_ with the shim preloaded.
  Result Sh(const std::string& script) { return RunProgram({"/bin/sh", "-c", "cd '" + dir_ + "' && " + script}, PreloadEnv(socket_)); }
  // The same without the shim (the plain-file-system baseline).
  Result Plain(const std::string& script) { return RunProgram({"/bin/sh", "-c", "cd '" + dir_ + "' && " + script}, {}); }

  Result Probe(const std::string& name, const std::string& dir, const std::vector<std::string>& env_extra = {}) {
    std::vector<std::string> env = PreloadEnv(socket_);
    env.insert(env.end(), env_extra.begin(), env_extra.end());
    return RunProgram({FERN_PRELOAD_PROBE, name, dir}, env);
  }

  // Requests the daemon logged, e.g. "PUT /a"; counted by prefix.
  int Requests(const std::string& prefix) const {
    std::istringstream in(ReadText(log_));
    int n = 0;
    for (std::string line; std::getline(in, line);) n += line.rfind(prefix + " ", 0) == 0;
    return n;
  }

  // The PUT and UPDATE lines the daemon logged for exactly `path`, in order.
  std::vector<std::string> Writes(const std::string& path) const {
    std::istringstream in(ReadText(log_));
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("PUT " + path + " ", 0) == 0 || line.rfind("UPDATE " + path + " ", 0) == 0) out.push_back(line);
    }
    return out;
  }

  std::string dir_, socket_, log_;
  fern::Subprocess daemon_;
};

// The log line of a PUT of `size` bytes.
std::string PutLine(const std::string& path, uint64_t size) {
  return "PUT " + path + " " + std::to_string(size) + " -> 0";
}

// The log line of an UPDATE of exactly `ranges` ({offset, length}) answered
// with `err`; its blob size is the protocol's layout: header, range table,
// the new bytes.
std::string UpdateLine(const std::string& path, const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
                       int err = 0) {
  uint64_t size = sizeof(fern::client::UpdateBlobHeader) + ranges.size() * sizeof(fern::client::UpdateBlobRange);
  std::string listed = " ranges";
  for (const auto& [offset, length] : ranges) {
    size += length;
    listed += " " + std::to_string(offset) + "+" + std::to_string(length);
  }
  return "UPDATE " + path + " " + std::to_string(size) + " -> " + std::to_string(err) + listed;
}

TEST_F(PreloadTest, ShellRedirectionThenCat) {
  Result r = Sh("printf 'hello\\nworld\\n' > /fern/a && cat /fern/a && printf more >> /fern/a && cat /fern/a");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "hello\nworld\nhello\nworld\nmore");
  EXPECT_EQ(Requests("PUT /a"), 2);
}

TEST_F(PreloadTest, ExternalCommandWritesThroughInheritedRedirection) {
  // The shell opens the file, then execs cat onto it: the exec'd program
  // adopts the staged file and commits it when it exits.
  WriteRandom(dir_ + "/src", 200000, 1);
  Result r = Sh("cat src > /fern/e && cmp src /fern/e && echo same");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "same\n");
  r = Sh("exec 3>/fern/f3; echo one >&3; /bin/echo two >&3; exec 3>&-; cat /fern/f3");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "one\ntwo\n");
}

TEST_F(PreloadTest, CpBothWays) {
  WriteRandom(dir_ + "/src", 1500000, 2);
  Result r = Sh("cp src /fern/c && cp /fern/c back && sha256sum < src && sha256sum < back");
  ASSERT_EQ(r.code, 0) << r;
  const size_t nl = r.out.find('\n');
  ASSERT_NE(nl, std::string::npos) << r;
  EXPECT_EQ(r.out.substr(0, nl + 1), r.out.substr(nl + 1)) << r;
  EXPECT_EQ(ReadText(dir_ + "/back"), ReadText(dir_ + "/src"));
  EXPECT_EQ(Requests("PUT /c"), 1);
}

TEST_F(PreloadTest, DdWithFsyncAndBack) {
  WriteRandom(dir_ + "/src", 3 * 1048576 + 12345, 3);
  Result r = Sh("dd if=src of=/fern/x bs=1M conv=fsync status=none && dd if=/fern/x of=back bs=1M status=none");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(ReadText(dir_ + "/back"), ReadText(dir_ + "/src"));
  // fsync commits; the close after it finds nothing new to commit.
  EXPECT_EQ(Requests("PUT /x"), 1);
}

TEST_F(PreloadTest, TarArchiveOnFernAndExtractIntoFern) {
  fs::create_directories(dir_ + "/tree/sub/deeper");
  WriteRandom(dir_ + "/tree/big.bin", 700000, 4);
  WriteRandom(dir_ + "/tree/sub/small", 1000, 5);
  WriteRandom(dir_ + "/tree/sub/deeper/empty", 0, 6);
  Result r = Sh("tar cf /fern/t.tar tree && mkdir out && tar xf /fern/t.tar -C out && diff -r tree out/tree");
  ASSERT_EQ(r.code, 0) << r;
  ASSERT_EQ(Plain("tar cf plain.tar tree").code, 0);
  r = Sh("mkdir /fern/ex && tar xf plain.tar -C /fern/ex && mkdir out2 && tar cf - -C /fern/ex . | tar xf - -C out2 "
         "&& diff -r tree out2/tree && cmp tree/big.bin /fern/ex/tree/big.bin && echo same");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "same\n");
}

TEST_F(PreloadTest, LsStatMvRmMkdirRmdir) {
  Result r = Sh(
      "mkdir /fern/d && printf ab > /fern/d/f && mkdir /fern/d/sub && ls /fern/d && stat -c '%s %F' /fern/d/f && "
      "stat -c %F /fern/d/sub && mv /fern/d/f /fern/d/g && ls /fern/d && rm /fern/d/g && rmdir /fern/d/sub && "
      "rmdir /fern/d && ls -a /fern");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "f\nsub\n2 regular file\ndirectory\ng\nsub\n.\n..\n");
  // The error messages programs print are the right errno.
  r = Sh("cat /fern/nope");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("No such file or directory"), std::string::npos) << r;
  r = Sh("mkdir /fern/full && printf x > /fern/full/f && rmdir /fern/full");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("Directory not empty"), std::string::npos) << r;
  r = Sh("mkdir /fern/full");
  EXPECT_NE(r.err.find("File exists"), std::string::npos) << r;
}

TEST_F(PreloadTest, MvAcrossTheMountCopies) {
  WriteRandom(dir_ + "/plain", 50000, 7);
  const std::string want = ReadText(dir_ + "/plain");
  Result r = Sh("mv plain /fern/m && test ! -e plain && mv /fern/m back && test ! -e /fern/m && ls -a /fern");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, ".\n..\n");
  EXPECT_EQ(ReadText(dir_ + "/back"), want);
}

TEST_F(PreloadTest, LsLongAndFindWalkTheTree) {
  Result r = Sh("umask 022 && mkdir -p /fern/w/a/b && printf 1 > /fern/w/a/one && printf 22 > /fern/w/a/b/two && "
                "ls -l /fern/w/a | awk 'NR>1 {print $1, $5, $9}' && find /fern/w | sort && find /fern/w -type f "
                "-size -2k | sort && rm -r /fern/w && ls -a /fern");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out,
            "drwxr-xr-x 0 b\n-rw-r--r-- 1 one\n"
            "/fern/w\n/fern/w/a\n/fern/w/a/b\n/fern/w/a/b/two\n/fern/w/a/one\n"
            "/fern/w/a/b/two\n/fern/w/a/one\n"
            ".\n..\n")
      << r;
}

TEST_F(PreloadTest, MkdirParentsAndWorkingDirectory) {
  // mkdir -p walks with chdir/fchdir; an exec'd program in a managed cwd gets
  // it back from $PWD.
  Result r = Sh("mkdir -p /fern/p/q/r && cd /fern/p && pwd && printf hi > q/file && cd q && ls && /bin/pwd && "
                "cat file && cat ../q/file && cd / && pwd");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "/fern/p\nfile\nr\n/fern/p/q\nhihi/\n");
}

TEST_F(PreloadTest, RsyncIntoFern) {
  if (RunProgram({"/bin/sh", "-c", "command -v rsync"}, {}).code != 0) GTEST_SKIP() << "rsync is not installed";
  fs::create_directories(dir_ + "/tree/a/b");
  WriteRandom(dir_ + "/tree/a/one", 70000, 8);
  WriteRandom(dir_ + "/tree/a/b/two", 10, 9);
  Result r = Sh("rsync -a tree/ /fern/rs/ && diff -r tree /fern/rs && printf more >> tree/a/b/two && "
                "rsync -a tree/ /fern/rs/ && diff -r tree /fern/rs && echo same");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "same\n");
}

TEST_F(PreloadTest, DotDotLeavesTheNamespace) {
  Result r = Sh("printf x > /fern/a/../b && ls /fern && cat /fern/../etc/hostname && ls -d /fern/..");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "b\n" + ReadText("/etc/hostname") + "/fern/..\n");
}

TEST_F(PreloadTest, NumpySaveLoadAndMmap) {
  if (RunProgram({"/usr/bin/python3", "-c", "import numpy"}, {}).code != 0) GTEST_SKIP() << "numpy is not importable";
  const std::string script =
      "import numpy as n, sys\n"
      "d = sys.argv[1]\n"
      "a = n.arange(1 << 20, dtype=n.int64) * 3\n"
      "n.save(d + '/ck.npy', a)\n"
      "b = n.load(d + '/ck.npy')\n"
      "c = n.load(d + '/ck.npy', mmap_mode='r')\n"
      "print(int(b.sum()), int(c[::7].sum()), bool((a == b).all()), bool((a == c).all()), b.dtype)\n";
  fs::create_directories(dir_ + "/plain");
  Result plain = Plain("/usr/bin/python3 -c \"" + script + "\" " + dir_ + "/plain");
  ASSERT_EQ(plain.code, 0) << plain;
  Result r = Sh("/usr/bin/python3 -c \"" + script + "\" /fern");
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, plain.out);
  EXPECT_EQ(Requests("PUT /ck.npy"), 1);
}

TEST_F(PreloadTest, NoDaemonMeansEioAndUnmanagedStillWorks) {
  daemon_.Kill(SIGTERM);
  Result r = Sh("cat /fern/a");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << r;
  r = Sh("printf x > /fern/a");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << r;
  r = Sh("printf ok > plain && cat plain");
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "ok");
  r = RunProgram({"/bin/sh", "-c", "cat /fern/a"}, {std::string("LD_PRELOAD=") + FERN_PRELOAD_LIB});
  EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << "FERN_EC_SOCKET unset: " << r;
}

TEST_F(PreloadTest, ReconnectsAfterTheDaemonRestarts) {
  // The shell connects, its daemon dies, a new one takes the socket: the
  // shell's next managed call must reach the new one (which starts empty).
  // "Dies" means exited: the old daemon unlinks its socket before it closes
  // its connections, and a request sent in between is lost with it (EIO, as
  // it should be: nobody can tell whether it was served). So the shell waits
  // until the old process holds no descriptors (exited; a zombie has none).
  const std::string old_pid = std::to_string(daemon_.pid());
  const std::string restart = "kill " + old_pid + "; while [ -e daemon.sock ] || [ -n \"$(ls /proc/" + old_pid +
                              "/fd 2>/dev/null)\" ]; do sleep 0.01; done; env -u LD_PRELOAD " +
                              FERN_FAKE_DAEMON + " --socket daemon.sock > ready2 2>&1 & echo $! > pid2; " +
                              "while ! grep -q ready ready2 2>/dev/null; do sleep 0.01; done; ";
  Result r = Sh("printf 1 > /fern/a && cat /fern/a && " + restart +
                "printf 2 > /fern/b && cat /fern/b; cat /fern/a; kill $(cat pid2)");
  EXPECT_EQ(r.out, "12") << r;
  EXPECT_NE(r.err.find("/fern/a: No such file or directory"), std::string::npos) << r;
}

TEST_F(PreloadTest, UnmanagedPathsAreUntouched) {
  const std::string script =
      "mkdir -p t/sub && printf abc > t/sub/f && cp t/sub/f t/g && mv t/g t/h && ls -R t && cat t/h && "
      "tar cf - t | tar tf - | sort && rm -r t && ls";
  Result plain = Plain(script);
  ASSERT_EQ(plain.code, 0) << plain;
  Result r = Sh(script);
  ASSERT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, plain.out);
  EXPECT_EQ(ReadText(log_), "") << "the daemon was asked about unmanaged paths";
  Result probe = Probe("unmanaged", dir_);
  EXPECT_EQ(probe.code, 0) << probe;
  struct stat st;
  EXPECT_NE(stat("/fern", &st), 0) << "/fern appeared on the real file system";
}

// One probe case per test: see preload_probe.cc for what each checks.
class PreloadProbe : public PreloadTest {
 protected:
  // The "update" probe case (preload_probe.cc) reopens existing files without
  // O_TRUNC; each file must have caused exactly these requests (the probe
  // checks the bytes read back).
  void ExpectUpdateRequests(const std::string& dir) const {
    const uint64_t n = 3 * 4096 + 1000, big = (uint64_t{1} << 21) + 2;
    using Lines = std::vector<std::string>;
    const std::string d = "/" + dir;
    EXPECT_EQ(Writes(d + "/a"), (Lines{PutLine(d + "/a", n), UpdateLine(d + "/a", {{5, 3}, {4094, 4}, {n - 3, 3}})}));
    EXPECT_EQ(Writes(d + "/gap"), (Lines{PutLine(d + "/gap", n), UpdateLine(d + "/gap", {{100, 2}, {103, 2}})}))
        << "runs merged across an unchanged byte";
    EXPECT_EQ(Writes(d + "/none"), (Lines{PutLine(d + "/none", n)})) << "committed without a write";
    EXPECT_EQ(Writes(d + "/grow"), (Lines{PutLine(d + "/grow", n), PutLine(d + "/grow", n + 100)}));
    EXPECT_EQ(Writes(d + "/stale"), (Lines{PutLine(d + "/stale", n), PutLine(d + "/stale", n),
                                             UpdateLine(d + "/stale", {{20, 4}}, ESTALE), PutLine(d + "/stale", n)}));
    EXPECT_EQ(Writes(d + "/gone"), (Lines{PutLine(d + "/gone", n), UpdateLine(d + "/gone", {{60, 2}}, ENOENT),
                                          PutLine(d + "/gone", n)}));
    EXPECT_EQ(Writes(d + "/unplaced"), (Lines{PutLine(d + "/unplaced", n),
                                              UpdateLine(d + "/unplaced", {{70, 3}}, EAGAIN),
                                              PutLine(d + "/unplaced", n)}));
    EXPECT_EQ(Writes(d + "/fsync"), (Lines{PutLine(d + "/fsync", n), UpdateLine(d + "/fsync", {{30, 2}}),
                                           UpdateLine(d + "/fsync", {{5000, 3}})}));
    EXPECT_EQ(Writes(d + "/same"), (Lines{PutLine(d + "/same", n)})) << "committed bytes equal to the old ones";
    EXPECT_EQ(Writes(d + "/half"), (Lines{PutLine(d + "/half", n), PutLine(d + "/half", n)}));
    EXPECT_EQ(Writes(d + "/moved"), (Lines{PutLine(d + "/moved", n), UpdateLine(d + "/moved", {{50, 1}})}))
        << "the shim lost its copy of the old bytes when its fds were moved";
    EXPECT_EQ(Writes(d + "/many"), (Lines{PutLine(d + "/many", big), PutLine(d + "/many", big)}));
    EXPECT_EQ(Writes(d + "/fork"), (Lines{PutLine(d + "/fork", n), UpdateLine(d + "/fork", {{100, 4}}),
                                          UpdateLine(d + "/fork", {{8000, 4}})}))
        << "two writers of disjoint ranges";
  }
};

#define FERN_PROBE_TEST(Name, probe_case)          \
  TEST_F(PreloadProbe, Name) {                     \
    Result r = Probe(probe_case, "/fern/" probe_case); \
    EXPECT_EQ(r.code, 0) << r;                     \
    EXPECT_EQ(r.out, "ok " probe_case "\n") << r;  \
  }

FERN_PROBE_TEST(OpenErrorsAndErrno, "errors")
FERN_PROBE_TEST(StdioFopenFwriteFclose, "stdio")
FERN_PROBE_TEST(CxxOfstream, "ofstream")
FERN_PROBE_TEST(DupDup2LastCloseCommits, "dup")
FERN_PROBE_TEST(ReaddirTypesAndDirFds, "readdir")
FERN_PROBE_TEST(ReadOnlyMappings, "mmap")
FERN_PROBE_TEST(ForkChildNeverCommits, "fork")
FERN_PROBE_TEST(StatIdentity, "stat")
FERN_PROBE_TEST(ConcurrentThreads, "threads")
FERN_PROBE_TEST(SurvivesClosingAllFds, "closeall")

TEST_F(PreloadProbe, FsyncAndCloseReturnTheDaemonsError) {
  StartDaemon({"--capacity", "1500000"});
  Result r = Probe("fsync_error", "/fern/fsync_error");
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "ok fsync_error\n") << r;
  EXPECT_EQ(Requests("PUT /fsync_error/small"), 1) << "the close after fsync committed again";
}

TEST_F(PreloadProbe, ReopenedFilesSendOnlyTheChangedBytes) {
  Result r = Probe("update", "/fern/update");
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "ok update\n") << r;
  ExpectUpdateRequests("update");
}

TEST_F(PreloadProbe, UpdatesStaySynchronousInAsyncMode) {
  Result r = Probe("update", "/fern/async", {"FERN_EC_COMMIT=async"});
  EXPECT_EQ(r.code, 0) << r;
  EXPECT_EQ(r.out, "ok update\n") << r;
  ExpectUpdateRequests("async");
}

TEST_F(PreloadProbe, ExitCommitsFilesStillOpen) {
  Result r = Probe("exit", "/fern/exit");
  ASSERT_EQ(r.code, 0) << r;
  r = Sh("cat /fern/exit/raw; echo; cat /fern/exit/buffered");
  EXPECT_EQ(r.out, "raw bytes\nbuffered bytes") << r;
}

TEST_F(PreloadProbe, KilledWriterCommitsNothing) {
  Result r = Sh("printf old > /fern/k && sh -c 'exec 3>/fern/k; printf new >&3; kill -9 $$'; cat /fern/k");
  EXPECT_EQ(r.out, "old") << r;
}

std::set<std::string> Lines(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.insert(line);
  return out;
}

TEST(PreloadLibrary, LoadsOnlyLibc) {
  Result r = RunProgram({"/usr/bin/ldd", FERN_PRELOAD_LIB}, {});
  ASSERT_EQ(r.code, 0) << r;
  const std::set<std::string> allowed = {"linux-vdso.so.1", "libc.so.6", "libstdc++.so.6", "libgcc_s.so.1",
                                         "libm.so.6"};
  for (const auto& line : Lines(r.out)) {
    std::istringstream words(line);
    std::string lib;
    words >> lib;
    EXPECT_TRUE(allowed.count(lib) || lib.find("/ld-linux") != std::string::npos) << "depends on " << line;
  }
}

TEST(PreloadLibrary, ExportsOnlyWrappedNames) {
  Result r = RunProgram({"/bin/sh", "-c", std::string("nm -D --defined-only ") + FERN_PRELOAD_LIB + " | awk '{print $3}'"},
                 {});
  ASSERT_EQ(r.code, 0) << r;
  const std::set<std::string> wrapped = {
      "open", "open64", "openat", "openat64", "__open_2", "__open64_2", "__openat_2", "__openat64_2", "creat",
      "creat64", "fopen", "fopen64", "freopen", "freopen64", "close", "fclose", "fsync", "fdatasync", "dup",
      "dup2", "dup3", "fcntl", "fcntl64", "stat", "stat64", "lstat", "lstat64", "fstat", "fstat64", "fstatat",
      "fstatat64", "statx", "__xstat", "__xstat64", "__lxstat", "__lxstat64", "__fxstat", "__fxstat64",
      "__fxstatat", "__fxstatat64", "access", "faccessat", "euidaccess", "eaccess", "unlink", "unlinkat",
      "remove", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "opendir", "fdopendir",
      "readdir", "readdir64", "readdir_r", "readdir64_r", "closedir", "dirfd", "rewinddir", "telldir",
      "seekdir", "scandir", "scandir64", "truncate", "truncate64", "realpath", "__realpath_chk",
      "canonicalize_file_name", "chdir", "fchdir", "chmod", "fchmodat", "chown", "lchown", "fchownat",
      "utimensat", "utimes", "lutimes", "utime", "futimesat", "getxattr", "lgetxattr", "listxattr",
      "llistxattr", "setxattr", "lsetxattr", "getcwd", "__getcwd_chk", "get_current_dir_name", "mmap",
      "mmap64"};
  const std::set<std::string> exported = Lines(r.out);
  for (const auto& name : exported) EXPECT_TRUE(wrapped.count(name)) << "unexpected export " << name;
  for (const char* must : {"open", "__open_2", "__openat_2", "fopen64", "fclose", "close", "statx", "__xstat"}) {
    EXPECT_TRUE(exported.count(must)) << must << " is not exported";
  }
}

}  // namespace
