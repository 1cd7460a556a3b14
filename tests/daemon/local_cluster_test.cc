// The real thing: six fern-ec-daemon processes on 127.0.0.1 talking UCX over
// TCP, driven through the fern-ec CLI exactly as a user would, nodes killed
// with SIGKILL.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <csignal>
#include <regex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "common/client_protocol.h"
#include "daemon/fiemap_probe.h"
#include "ec/crc32c.h"
#include "placement/placement.h"
#include "test_util.h"
#include "update_pattern.h"
#include "daemon/cluster_cli.h"

namespace {

using namespace fern::testing::cli;

constexpr uint64_t kShard = 64 * 1024;
constexpr uint64_t kStripe = 4 * kShard;
// `fern-ec local start` flags of the 7-node clusters (a spare node to place around a failed one).
const std::string kSevenNodes = "--nodes 7 --k 4 --m 2 --shard-size 64KiB --data-capacity 64MiB --parity-capacity 64MiB";


// From `fern-ec inspect --json`: a node holding a data shard (index < k=4)
// of the file and not among `avoid`, or "" if none.
std::string DataShardHolder(const std::string& inspect_json, std::set<int> avoid) {
  static const std::regex shard("\\{\"index\": ([0-9]+), \"node\": ([0-9]+)");
  for (auto it = std::sregex_iterator(inspect_json.begin(), inspect_json.end(), shard);
       it != std::sregex_iterator(); ++it) {
    const int index = std::stoi((*it)[1]), node = std::stoi((*it)[2]);
    if (index < 4 && !avoid.count(node)) return std::to_string(node);
  }
  return "";
}

class LocalCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = "/dev/shm/fern-lc-" + std::to_string(getpid());
    work_ = ::testing::TempDir() + "/fern-lc-work-" + std::to_string(getpid());
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(work_);
    ASSERT_EQ(Sh(Cli() + " local start --root " + root_ +
                  " --nodes 6 --k 4 --m 2 --shard-size 64KiB --data-capacity 128MiB"
                  " --parity-capacity 128MiB"),
              0);
  }
  void TearDown() override {
    Sh(Cli() + " local stop --root " + root_);
    std::filesystem::remove_all(root_);
    std::filesystem::remove_all(work_);
    if (!HasFailure()) std::filesystem::remove(ErrLog());
  }
  static std::string Cli() { return FERN_EC_CLI; }
  std::string NodeStatus(int via) {
    return Out("FERN_EC_SOCKET=" + root_ + "/node-" + std::to_string(via) + "/sock " + Cli() + " status --json");
  }
  // Node `via`'s read checks (status --json): verified, unchecked, mismatched.
  std::vector<uint64_t> ReadChecks(int via) {
    const std::string st = NodeStatus(via);
    std::smatch c;
    if (!std::regex_search(st, c, std::regex("\"read_checks\": \\{\"verified\": ([0-9]+), \"unchecked\": "
                                             "([0-9]+), \"mismatched\": ([0-9]+)"))) {
      ADD_FAILURE() << "no read_checks in " << st;
      return {0, 0, 0};
    }
    return {std::stoull(c[1]), std::stoull(c[2]), std::stoull(c[3])};
  }
  // Node `via` decoded stripes, and each decode was checked against the
  // data CRCs its parity records (fern-ec status --json: decodes).
  void ExpectEveryDecodeVerified(int via) {
    const std::string st = NodeStatus(via);
    std::smatch d;
    ASSERT_TRUE(std::regex_search(st, d, std::regex("\"decodes\": \\{\"stripes\": ([0-9]+), \"verified\": ([0-9]+), \"rejected\": ([0-9]+)")))
        << st;
    EXPECT_GT(std::stoull(d[1]), 0u) << st;
    EXPECT_EQ(d[2], d[1]) << st;
    EXPECT_EQ(d[3], "0") << st;
  }
  std::string root_, work_;
};

TEST_F(LocalCluster, FilesSurviveTwoKilledNodesAndAThirdIsEio) {
  auto rng = fern::testing::TestRng();
  const std::vector<size_t> sizes = {0,          1,           kShard - 1,          kShard + 1,
                                     kStripe - 1, kStripe + 1, 3 * kStripe + 17, 64u << 20};
  std::vector<std::vector<uint8_t>> files;
  for (size_t i = 0; i < sizes.size(); ++i) {
    files.emplace_back(sizes[i]);
    fern::testing::FillRandom(rng, files[i].data(), sizes[i]);
    const std::string local = work_ + "/in" + std::to_string(i);
    WriteFile(local, files[i]);
    ASSERT_EQ(Sh(Cli() + " put " + local + " /ck/f" + std::to_string(i) + " --root " + root_ +
                  " --node " + std::to_string(i % 6)),
              0)
        << "put size " << sizes[i];
  }
  auto check_all = [&](int via, const std::string& when) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string out = work_ + "/out" + std::to_string(i);
      std::filesystem::remove(out);
      ASSERT_EQ(Sh(Cli() + " get /ck/f" + std::to_string(i) + " " + out + " --root " + root_ +
                    " --node " + std::to_string(via)),
                0)
          << when << ": get size " << sizes[i];
      ASSERT_EQ(ReadFile(out), files[i]) << when << ": size " << sizes[i] << " differs";
    }
  };
  check_all(3, "healthy");
  {
    // Each healthy stripe's data was checked against the data CRCs a
    // parity records (one header fetched per stripe, no decode).
    const std::vector<uint64_t> c = ReadChecks(3);
    EXPECT_GT(c[0], 16u);  // the 64 MiB file alone has 256 stripes
    EXPECT_EQ(c[1], 0u);
    EXPECT_EQ(c[2], 0u);
  }

  // Any two nodes: chosen by the printed seed.
  int a = static_cast<int>(rng() % 6), b = static_cast<int>((a + 1 + rng() % 5) % 6);
  ASSERT_EQ(Sh(Cli() + " local kill " + std::to_string(a) + " --root " + root_), 0);
  ASSERT_EQ(Sh(Cli() + " local kill " + std::to_string(b) + " --root " + root_), 0);
  int via = 0;
  while (via == a || via == b) ++via;
  check_all(via, "nodes " + std::to_string(a) + "," + std::to_string(b) + " killed");
  ExpectEveryDecodeVerified(via);
  {
    // fern-ec status, for a person: a few lines per node, the killed ones
    // DOWN, exit code 1.
    const std::string text = Out(Cli() + " status --root " + root_);
    EXPECT_NE(text.find("node " + std::to_string(a) + ": DOWN"), std::string::npos) << text;
    EXPECT_NE(text.find("node " + std::to_string(via) + " (k=4 m=2"), std::string::npos) << text;
    EXPECT_NE(text.find("stripes decoded"), std::string::npos) << text;
    EXPECT_EQ(text.find("{\""), std::string::npos) << "raw JSON in the text status: " << text;
    EXPECT_EQ(Sh(Cli() + " status --root " + root_ + " >/dev/null"), 1);
    // Every stripe spans all six nodes: each is degraded now, none lost
    // (each file counted once, by its first live owner; the survivors'
    // views may take a moment to agree).
    uint64_t stripes = 0;
    for (size_t n : sizes) stripes += (n + 4 * kShard - 1) / (4 * kShard);
    const std::string want = "cluster: " + std::to_string(sizes.size()) + " files, " + std::to_string(stripes) +
                             " stripes: " + std::to_string(stripes) + " degraded, 0 lost";
    const std::string now = OutOnceItSays(Cli() + " status --root " + root_, want, 50);
    EXPECT_NE(now.find(want), std::string::npos) << now;
  }

  // A third: every stripe spans all six nodes, so reads must fail with EIO
  // (exit code 4) or find no metadata owner, and never write an output file.
  int c = 0;
  while (c == a || c == b || c == via) ++c;
  ASSERT_EQ(Sh(Cli() + " local kill " + std::to_string(c) + " --root " + root_), 0);
  const std::string out = work_ + "/after-third";
  const int rc = Sh(Cli() + " get /ck/f7 " + out + " --root " + root_ + " --node " + std::to_string(via));
  EXPECT_NE(rc, 0);
  EXPECT_FALSE(std::filesystem::exists(out)) << "a failed read left bytes behind";
}

// The daemon lets go of a client's memory: the PUT memfd it mapped (whose
// last reference it holds once the CLI exits) and the GET reply memfds.
// They are released off the event loop now; a release that never ran would
// keep every checkpoint's bytes in the daemon's memory.
TEST_F(LocalCluster, ClientMemfdsAreReleasedAfterPutsAndGets) {
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> bytes = fern::testing::RandomBytes(rng, 8u << 20);
  const std::string in = work_ + "/in", out = work_ + "/out";
  WriteFile(in, bytes);
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(Sh(Cli() + " put " + in + " /ck/r" + std::to_string(i % 2) + " --root " + root_), 0);
    std::filesystem::remove(out);
    ASSERT_EQ(Sh(Cli() + " get /ck/r" + std::to_string(i % 2) + " " + out + " --root " + root_), 0);
    ASSERT_EQ(ReadFile(out), bytes);
  }
  const int pid = NodePid(root_, 0);
  ASSERT_GT(pid, 0) << "no pid file for node 0";
  // Mappings (maps) and open files (fd links) naming the client memfds.
  auto client_memfd = [](const std::string& text) {
    return text.find("fern-ec-put") != std::string::npos || text.find("fern-ec-get") != std::string::npos;
  };
  auto held = [&] {
    std::string found;
    std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
    for (std::string line; std::getline(maps, line);) {
      if (client_memfd(line)) found += line + "\n";
    }
    for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
      std::error_code ec;
      const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
      if (client_memfd(target)) found += e.path().string() + " -> " + target + "\n";
    }
    return found;
  };
  std::string still = held();
  for (int i = 0; i < 100 && !still.empty(); ++i) {
    usleep(100 * 1000);
    still = held();
  }
  EXPECT_EQ(still, "") << "node 0 still holds client memory 10 s after the last request";
}

// A GET reply is sealed before the client sees it: its bytes can no longer
// change or be resized, through write, a shared writable mapping, or
// ftruncate, while a private (copy-on-write) mapping still works. The daemon
// seals before it lets go of its own mapping (F_SEAL_FUTURE_WRITE), so this
// holds even while that mapping is still being released.
TEST_F(LocalCluster, GetReplyMemfdIsSealedAgainstChange) {
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> bytes = fern::testing::RandomBytes(rng, 3 * kStripe + 17);
  WriteFile(work_ + "/in", bytes);
  ASSERT_EQ(Sh(Cli() + " put " + work_ + "/in /ck/sealed --root " + root_), 0);
  const std::string sock = root_ + "/node-2/sock";
  fern::client::Request req = fern::client::MakeRequest(fern::client::Op::kGet, "/ck/sealed", 10);
  fern::client::Reply reply;
  int fd = -1;
  ASSERT_EQ(fern::client::Roundtrip(sock.c_str(), req, -1, &reply, &fd, 30), 0);
  ASSERT_EQ(reply.err, 0) << reply.message;
  ASSERT_GE(fd, 0);
  ASSERT_EQ(reply.size, bytes.size());
  const int seals = fcntl(fd, F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  EXPECT_NE(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE), 0) << "seals " << seals;
  errno = 0;
  EXPECT_EQ(pwrite(fd, "x", 1, 0), -1);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_EQ(mmap(nullptr, bytes.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), MAP_FAILED);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_EQ(ftruncate(fd, 1), -1);
  EXPECT_EQ(errno, EPERM);
  void* cow = mmap(nullptr, bytes.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ASSERT_NE(cow, MAP_FAILED) << std::strerror(errno);
  auto* c = static_cast<uint8_t*>(cow);
  EXPECT_EQ(std::vector<uint8_t>(c, c + bytes.size()), bytes);
  c[0] ^= 0xff;  // the client's own copy; the memfd keeps the file's bytes
  munmap(cow, bytes.size());
  std::vector<uint8_t> got(bytes.size());
  ASSERT_EQ(pread(fd, got.data(), got.size(), 0), static_cast<ssize_t>(got.size()));
  EXPECT_EQ(got, bytes);
  close(fd);
}

// GET with kGetInto: the daemon writes the file into the caller's own
// descriptor (sized with ftruncate, no reply memfd); a descriptor it cannot
// write as asked is refused with the errno a user would expect, and the
// daemon keeps serving.
TEST_F(LocalCluster, GetIntoCallersFileWritesTheBytesOrSaysWhyNot) {
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> bytes = fern::testing::RandomBytes(rng, 3 * kStripe + 17);
  WriteFile(work_ + "/in", bytes);
  ASSERT_EQ(Sh(Cli() + " put " + work_ + "/in /ck/into --root " + root_), 0);
  const std::string sock = root_ + "/node-1/sock";
  auto get_into = [&](int into, fern::client::Reply* reply) {
    fern::client::Request req = fern::client::MakeRequest(fern::client::Op::kGet, "/ck/into", 8);
    req.flags = fern::client::kGetInto;
    int fd = -1;
    const int rc = fern::client::Roundtrip(sock.c_str(), req, into, reply, &fd, 30);
    EXPECT_EQ(fd, -1) << "a GET into a file must not send a memfd back";
    if (fd >= 0) close(fd);
    return rc;
  };
  auto contents = [](int fd) {
    struct stat st {};
    fstat(fd, &st);
    std::vector<uint8_t> got(st.st_size);
    if (pread(fd, got.data(), got.size(), 0) != static_cast<ssize_t>(got.size())) got.clear();
    return got;
  };
  // A memfd longer than the file and full of other bytes, reused twice.
  const int mem = memfd_create("into", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(mem, 0);
  std::vector<uint8_t> junk(5 * kStripe, 0xa5);
  ASSERT_EQ(pwrite(mem, junk.data(), junk.size(), 0), static_cast<ssize_t>(junk.size()));
  for (int round = 0; round < 2; ++round) {
    fern::client::Reply reply;
    ASSERT_EQ(get_into(mem, &reply), 0);
    ASSERT_EQ(reply.err, 0) << reply.message;
    EXPECT_EQ(reply.size, bytes.size());
    EXPECT_EQ(contents(mem), bytes) << "round " << round;
  }
  // A regular file opened for writing works the same.
  const int file = open((work_ + "/out").c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(file, 0);
  {
    fern::client::Reply reply;
    ASSERT_EQ(get_into(file, &reply), 0);
    ASSERT_EQ(reply.err, 0) << reply.message;
    EXPECT_EQ(contents(file), bytes);
  }
  // What cannot be written as asked.
  struct Case {
    const char* what;
    int fd;
    int err;
  };
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  const int read_only = open((work_ + "/out").c_str(), O_RDONLY | O_CLOEXEC);
  const int append = open((work_ + "/out").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  const int no_grow = memfd_create("no-grow", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(fcntl(no_grow, F_ADD_SEALS, F_SEAL_GROW), 0);
  // The right size already, but sealed against writes: ftruncate passes and
  // the first pwrite fails, which must fail the read.
  const int no_write = memfd_create("no-write", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(ftruncate(no_write, static_cast<off_t>(bytes.size())), 0);
  ASSERT_EQ(fcntl(no_write, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW), 0);
  for (const Case& c : {Case{"no descriptor", -1, EINVAL}, Case{"a pipe", pipe_fds[1], EINVAL},
                        Case{"read-only", read_only, EBADF}, Case{"O_APPEND", append, EINVAL},
                        Case{"sealed against growing", no_grow, EPERM},
                        Case{"sealed against writes", no_write, EPERM}}) {
    fern::client::Reply reply;
    ASSERT_EQ(get_into(c.fd, &reply), 0) << c.what;
    EXPECT_EQ(reply.err, c.err) << c.what << ": " << reply.message;
    EXPECT_NE(std::string(reply.message), "") << c.what;
  }
  EXPECT_EQ(contents(no_grow).size(), 0u);
  for (int fd : {pipe_fds[0], pipe_fds[1], read_only, append, no_grow, no_write, file}) close(fd);
  // A file limit on the daemon (here set from outside, as `ulimit -f` would
  // be inherited): the read fails with EFBIG, and the node lives on.
  const int pid = NodePid(root_, 1);
  ASSERT_GT(pid, 0);
  rlimit old{};
  ASSERT_EQ(prlimit(pid, RLIMIT_FSIZE, nullptr, &old), 0) << std::strerror(errno);
  rlimit small{4096, old.rlim_max};  // the soft limit only: raising it back needs no privilege
  ASSERT_EQ(prlimit(pid, RLIMIT_FSIZE, &small, nullptr), 0) << std::strerror(errno);
  {
    const int fresh = memfd_create("fresh", MFD_CLOEXEC);
    fern::client::Reply reply;
    ASSERT_EQ(get_into(fresh, &reply), 0) << "node 1 died of a file size limit";
    EXPECT_EQ(reply.err, EFBIG) << reply.message;
    close(fresh);
  }
  ASSERT_EQ(prlimit(pid, RLIMIT_FSIZE, &old, nullptr), 0) << std::strerror(errno);
  // Still serving, and the memfd still fills after the failures.
  fern::client::Reply reply;
  ASSERT_EQ(ftruncate(mem, 0), 0);
  ASSERT_EQ(get_into(mem, &reply), 0);
  ASSERT_EQ(reply.err, 0) << reply.message;
  EXPECT_EQ(contents(mem), bytes);
  close(mem);
}

TEST_F(LocalCluster, ClearErrorsForBadRequests) {
  const std::string out = work_ + "/x";
  EXPECT_EQ(Sh(Cli() + " get /ck/never-written " + out + " --root " + root_), 3);  // ENOENT
  WriteFile(work_ + "/small", {1, 2, 3});
  EXPECT_NE(Sh(Cli() + " put " + work_ + "/small relative --root " + root_), 0);
  EXPECT_NE(Sh(Cli() + " put " + work_ + "/small /a/../b --root " + root_), 0);
  EXPECT_NE(Sh(Cli() + " put " + work_ + "/no-such-file /a --root " + root_), 0);
  EXPECT_NE(Sh(Cli() + " put " + work_ + "/small /a --root /nonexistent"), 0);
  // The daemon still serves after all that.
  ASSERT_EQ(Sh(Cli() + " put " + work_ + "/small /ok --root " + root_), 0);
  ASSERT_EQ(Sh(Cli() + " get /ok " + out + " --root " + root_ + " --node 5"), 0);
  EXPECT_EQ(ReadFile(out), (std::vector<uint8_t>{1, 2, 3}));
  // Outputs that are not regular files are written in place, never replaced:
  // a get into /dev/null once turned it into a regular file. A null device
  // of the test's own stands in for it (mknod needs root; /dev/null if not).
  std::string null_dev = work_ + "/null";
  if (mknod(null_dev.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0) null_dev = "/dev/null";
  ASSERT_EQ(Sh(Cli() + " get /ok " + null_dev + " --root " + root_), 0);
  struct stat st {};
  ASSERT_EQ(stat(null_dev.c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode)) << null_dev << " is no longer a device";
  EXPECT_FALSE(std::filesystem::exists(null_dev + ".fern-ec-tmp"));
  EXPECT_EQ(Out(Cli() + " get /ok - --root " + root_ + " | od -An -tu1 | tr -s ' '"), " 1 2 3\n");
  const std::string fifo = work_ + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(Out("(" + Cli() + " get /ok " + fifo + " --root " + root_ + " &) ; od -An -tu1 " + fifo +
                " | tr -s ' '"),
            " 1 2 3\n");
  EXPECT_NE(Sh(Cli() + " get /ok " + work_ + " --root " + root_), 0) << "a directory as output";
}

TEST_F(LocalCluster, NamespaceSurvivesRestartAndWipedTmpfs) {
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> a(5 * kStripe + 3), b(100);
  fern::testing::FillRandom(rng, a.data(), a.size());
  fern::testing::FillRandom(rng, b.data(), b.size());
  WriteFile(work_ + "/a", a);
  WriteFile(work_ + "/b", b);
  const std::string at = " --root " + root_;
  ASSERT_EQ(Sh(Cli() + " put " + work_ + "/a /ck/a" + at), 0);
  ASSERT_EQ(Sh(Cli() + " put " + work_ + "/b /ck/b" + at + " --node 3"), 0);
  EXPECT_EQ(Out(Cli() + " ls /ck --json" + at),
            "[{\"name\": \"a\", \"type\": \"file\"}, {\"name\": \"b\", \"type\": \"file\"}]\n");
  EXPECT_NE(Out(Cli() + " stat /ck/a --json" + at).find("\"size\": " + std::to_string(a.size())),
            std::string::npos);
  ASSERT_EQ(Sh(Cli() + " rm /ck/b" + at + " --node 4"), 0);
  EXPECT_EQ(Sh(Cli() + " stat /ck/b" + at), 3);

  // Every daemon stopped and started again: metadata comes back from disk.
  ASSERT_EQ(Sh(Cli() + " local stop" + at), 0);
  ASSERT_EQ(Sh(Cli() + " local start" + at + " --nodes 6 --k 4 --m 2 --shard-size 64KiB"
                " --data-capacity 128MiB --parity-capacity 128MiB"),
            0);
  const std::string out = work_ + "/out";
  ASSERT_EQ(Sh(Cli() + " get /ck/a " + out + at + " --node 5"), 0);
  EXPECT_EQ(ReadFile(out), a);
  EXPECT_EQ(Sh(Cli() + " get /ck/b " + out + at), 3) << "a removed file came back";

  // A node rebooted with an empty tmpfs: its data shards are gone, reads
  // decode around them. Which node holds data shards depends on the file's
  // id: the wiped one is one that does (placement may make a node parity
  // in every stripe), and not 0 or 4, killed below.
  const std::string wiped = DataShardHolder(Out(Cli() + " inspect /ck/a --json" + at), {0, 4});
  ASSERT_NE(wiped, "") << "no data shard of /ck/a outside nodes 0 and 4";
  ASSERT_EQ(Sh(Cli() + " local restart " + wiped + " --wipe-data" + at), 0);
  std::filesystem::remove(out);
  ASSERT_EQ(Sh(Cli() + " get /ck/a " + out + at + " --node " + wiped), 0);
  EXPECT_EQ(ReadFile(out), a);
  // It rebuilds its shards (status shows the repair pass) ...
  std::string st;
  for (int i = 0; i < 300; ++i) {
    st = JsonBlock(Out("FERN_EC_SOCKET=" + root_ + "/node-" + wiped + "/sock " + Cli() + " status --json"), "repair");
    if (st.find("\"running\": false") != std::string::npos &&
        st.find("\"passes\": 0") == std::string::npos && st.find("\"failed\": 0") != std::string::npos &&
        st.find("\"missing\": 0") == std::string::npos) {
      break;
    }
    usleep(100 * 1000);
  }
  EXPECT_EQ(st.find("\"missing\": 0,"), std::string::npos) << "the wiped node found nothing to rebuild: " << st;
  EXPECT_NE(st.find("\"failed\": 0"), std::string::npos) << st;
  // ... and then any two other nodes may fail.
  ASSERT_EQ(Sh(Cli() + " local kill 0" + at), 0);
  ASSERT_EQ(Sh(Cli() + " local kill 4" + at), 0);
  std::filesystem::remove(out);
  ASSERT_EQ(Sh(Cli() + " get /ck/a " + out + at + " --node " + wiped), 0);
  EXPECT_EQ(ReadFile(out), a);
}

// A node SIGKILLed and left dead: after --replace-after the other daemons
// have rebuilt its shards on nodes outside their stripes and moved them in
// the records (7 nodes, so every stripe has a spare). It comes back and its
// old copies are deleted; then any two other nodes may fail: every file
// still reads bit-exact.
TEST(LocalReplace, AKilledNodesShardsAreRebuiltElsewhereThenTwoMoreMayFail) {
  auto rng = fern::testing::TestRng();
  TestCluster tc("lr");
  const std::string &cli = tc.cli, &work = tc.work, &at = tc.at;
  constexpr int kN = 7;
  ASSERT_EQ(tc.Start(kSevenNodes + " --replace-after 2"), 0);
  const std::vector<size_t> sizes = {0, 1, kStripe + 1, 3 * kStripe + 17, 8u << 20};
  std::vector<std::vector<uint8_t>> files;
  for (size_t i = 0; i < sizes.size(); ++i) {
    files.emplace_back(sizes[i]);
    fern::testing::FillRandom(rng, files[i].data(), sizes[i]);
    WriteFile(work + "/in" + std::to_string(i), files[i]);
    ASSERT_EQ(Sh(cli + " put " + work + "/in" + std::to_string(i) + " /lr/f" + std::to_string(i) + at +
                 " --node " + std::to_string(i % kN)),
              0);
  }
  auto holders = [&](size_t i) {
    static const std::regex shard("\\{\"index\": ([0-9]+), \"node\": ([0-9]+)");
    const std::string json = Out(cli + " inspect /lr/f" + std::to_string(i) + " --json" + at);
    std::set<int> nodes;
    for (auto it = std::sregex_iterator(json.begin(), json.end(), shard); it != std::sregex_iterator(); ++it) {
      nodes.insert(std::stoi((*it)[2]));
    }
    return nodes;
  };
  const int dead = static_cast<int>(rng() % kN);
  ASSERT_TRUE(holders(4).count(dead)) << "the 8 MiB file has no shard on node " << dead;
  ASSERT_EQ(Sh(cli + " local kill " + std::to_string(dead) + at), 0);
  // Degraded at first, whole again once the shards moved.
  const std::regex moved_re("([0-9]+) shards of dead nodes moved to live ones, ([0-9]+) failed");
  auto moved_and_failed = [&](const std::string& text) {
    uint64_t moved = 0, failed = 0;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), moved_re); it != std::sregex_iterator(); ++it) {
      moved += std::stoull((*it)[1]);
      failed += std::stoull((*it)[2]);
    }
    return std::make_pair(moved, failed);
  };
  std::string status;
  for (int i = 0; i < 300; ++i) {
    status = Out(cli + " status" + at);
    if (status.find(" stripes: 0 degraded, 0 lost") != std::string::npos && moved_and_failed(status).first > 0 &&
        status.find("re-placement: running") == std::string::npos) {
      break;
    }
    usleep(100 * 1000);
  }
  EXPECT_NE(status.find(" stripes: 0 degraded, 0 lost"), std::string::npos) << status;
  EXPECT_NE(status.find("re-placement: idle (after 2 s down"), std::string::npos) << status;
  EXPECT_GT(moved_and_failed(status).first, 0u) << status;
  EXPECT_EQ(moved_and_failed(status).second, 0u) << status;
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(holders(i).count(dead), 0u) << "/lr/f" << i << " still has a shard on node " << dead;
  }
  // The node comes back with its tmpfs: the copies it still holds of the
  // moved shards are deleted there (status counts them).
  ASSERT_EQ(Sh(cli + " local restart " + std::to_string(dead) + at), 0);
  std::smatch gone;
  const std::regex gone_re("([0-9]+) old copies deleted on nodes back");
  uint64_t deleted = 0;
  for (int i = 0; i < 100 && deleted == 0; ++i) {
    if (i > 0) usleep(100 * 1000);
    status = Out(cli + " status" + at);
    for (auto it = std::sregex_iterator(status.begin(), status.end(), gone_re); it != std::sregex_iterator(); ++it) {
      deleted += std::stoull((*it)[1]);
    }
  }
  EXPECT_GT(deleted, 0u) << status;
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(holders(i).count(dead), 0u) << "/lr/f" << i << " went back to node " << dead;
  }
  const int a = (dead + 1 + static_cast<int>(rng() % 3)) % kN, b = (dead + 4 + static_cast<int>(rng() % 3)) % kN;
  ASSERT_EQ(Sh(cli + " local kill " + std::to_string(a) + at), 0);
  ASSERT_EQ(Sh(cli + " local kill " + std::to_string(b) + at), 0);
  int via = 0;
  while (via == a || via == b) ++via;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string out = work + "/out" + std::to_string(i);
    ASSERT_EQ(Sh(cli + " get /lr/f" + std::to_string(i) + " " + out + at + " --node " + std::to_string(via)), 0)
        << "nodes " << dead << ", " << a << ", " << b << " down: get size " << sizes[i];
    EXPECT_EQ(ReadFile(out), files[i]) << "size " << sizes[i];
  }
}

// Six daemons with --min-shards 5: with one stopped (SIGSTOP) long enough
// to be declared dead, a put still commits (status reports the stripes
// written without it); the node resumes without restarting, the gateway's
// REPAIR_HINT makes it run a repair pass that writes the shards it missed,
// and then any two other nodes may fail: the file reads back bit-exact.
TEST(LocalDegradedWrite, APutWithANodeDownIsRepairedWhenItIsBack) {
  auto rng = fern::testing::TestRng();
  TestCluster tc("ldw");
  const std::string &cli = tc.cli, &root = tc.root, &work = tc.work, &at = tc.at;
  ASSERT_EQ(tc.Start("--nodes 6 --k 4 --m 2 --shard-size 64KiB --data-capacity 64MiB --parity-capacity 64MiB"
                     " --min-shards 5"),
            0);
  const int down = 1 + static_cast<int>(rng() % 5);
  const int pid = NodePid(root, down);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  tc.stopped_pid = pid;
  // The gateway declares it dead after --dead-after of silence (a stopped
  // process keeps its connections).
  const std::string seen = "nodes alive, down: " + std::to_string(down);
  const std::string st0 = OutOnceItSays("FERN_EC_SOCKET=" + root + "/node-0/sock " + cli + " status", seen, 300);
  ASSERT_NE(st0.find(seen), std::string::npos) << st0;
  std::vector<uint8_t> bytes = fern::testing::RandomBytes(rng, 5 * kStripe + 7);
  WriteFile(work + "/in", bytes);
  const int put_rc = Sh(cli + " put " + work + "/in /dw/f" + at + " --node 0");
  const std::string status = Out("FERN_EC_SOCKET=" + root + "/node-0/sock " + cli + " status");
  kill(pid, SIGCONT);
  tc.stopped_pid = 0;
  ASSERT_EQ(put_rc, 0);
  EXPECT_NE(status.find("degraded writes: allowed down to 5 of 6 shards per stripe; 6 stripes written so"),
            std::string::npos)
      << status;
  // Resumed: told by the gateway, it rebuilds the 6 shards it missed.
  std::string repair;
  for (int i = 0; i < 200; ++i) {
    repair = JsonBlock(Out("FERN_EC_SOCKET=" + root + "/node-" + std::to_string(down) + "/sock " + cli +
                           " status --json"),
                       "repair");
    if (repair.find("\"rebuilt\": 6,") != std::string::npos && repair.find("\"running\": false") != std::string::npos) {
      break;
    }
    usleep(100 * 1000);
  }
  EXPECT_NE(repair.find("\"rebuilt\": 6,"), std::string::npos) << repair;
  std::ifstream log(root + "/node-" + std::to_string(down) + "/log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("told that stripes were written without its shards"), std::string::npos) << text;
  // The records no longer call its shards absent: the cluster is whole.
  const std::string whole = OutOnceItSays(cli + " status" + at, " stripes: 0 degraded, 0 lost", 50);
  EXPECT_NE(whole.find(" stripes: 0 degraded, 0 lost"), std::string::npos) << whole;
  const int a = (down + 1) % 6, b = (down + 3) % 6;
  ASSERT_EQ(Sh(cli + " local kill " + std::to_string(a) + at), 0);
  ASSERT_EQ(Sh(cli + " local kill " + std::to_string(b) + at), 0);
  std::filesystem::remove(work + "/out");
  ASSERT_EQ(Sh(cli + " get /dw/f " + work + "/out" + at + " --node " + std::to_string(down)), 0)
      << "nodes " << a << ", " << b << " down";
  EXPECT_EQ(ReadFile(work + "/out"), bytes);
}


// A gateway SIGKILLed mid-put leaves shards on the other nodes (and its
// own) that no record will ever name and nobody remembers: the orphan
// sweeps (here every second) free them, the torn file never appears, and
// a file committed before still reads bit-exact with two nodes down.
TEST(LocalOrphans, AGatewayKilledMidPutLeavesNoShardsBehind) {
  auto rng = fern::testing::TestRng();
  TestCluster tc("lor");
  const std::string &cli = tc.cli, &root = tc.root, &work = tc.work, &at = tc.at;
  ASSERT_EQ(tc.Start("--nodes 6 --k 4 --m 2 --shard-size 64KiB --data-capacity 64MiB --parity-capacity 64MiB"
                     " --orphan-sweep 1"),
            0);
  std::vector<uint8_t> kept = fern::testing::RandomBytes(rng, 9 * kStripe + 5);
  WriteFile(work + "/kept", kept);
  ASSERT_EQ(Sh(cli + " put " + work + "/kept /o/kept" + at + " --node 0"), 0);
  const long baseline = SlotsUsed(tc);
  ASSERT_GT(baseline, 0);
  const long baseline5 = SlotsUsed(tc, 5);  // node 5 answers no one while stopped
  std::vector<uint8_t> big = fern::testing::RandomBytes(rng, 64 * kStripe);
  WriteFile(work + "/big", big);
  // Node 5 stopped: the put's window of stripes lands on the others and
  // waits for node 5's acknowledgements; meanwhile its gateway dies.
  const int stopped = NodePid(root, 5);
  ASSERT_GT(stopped, 0);
  ASSERT_EQ(kill(stopped, SIGSTOP), 0);
  tc.stopped_pid = stopped;
  FILE* put = popen((cli + " put " + work + "/big /o/torn" + at + " --node 0 2>&1").c_str(), "r");
  ASSERT_NE(put, nullptr);
  long landed = 0;
  for (int i = 0; i < 100 && landed < baseline5 + 40; ++i) {
    usleep(50 * 1000);
    landed = SlotsUsed(tc, 5);
  }
  ASSERT_EQ(Sh(cli + " local kill 0" + at), 0);
  const int put_status = pclose(put);
  // status names the stopped daemon down instead of waiting for it.
  const std::string while_stopped = Out(cli + " status" + at + " 2>&1");
  EXPECT_NE(while_stopped.find("node 5: DOWN (no answer"), std::string::npos) << while_stopped;
  kill(stopped, SIGCONT);
  tc.stopped_pid = 0;
  ASSERT_GE(landed, baseline5 + 40) << "the put's shards never landed";
  EXPECT_NE(put_status, 0) << "the put finished before its gateway died: nothing to show";
  ASSERT_EQ(Sh(cli + " local restart 0" + at), 0);
  long now = SlotsUsed(tc);
  for (int i = 0; i < 300 && now != baseline; ++i) {
    usleep(100 * 1000);
    now = SlotsUsed(tc);
  }
  EXPECT_EQ(now, baseline) << "slots still used by the torn put";
  uint64_t deleted = 0;
  const std::string st = Out(cli + " status --json" + at);
  static const std::regex swept("\"orphans\": \\{[^}]*\"deleted\": ([0-9]+)");
  for (auto it = std::sregex_iterator(st.begin(), st.end(), swept); it != std::sregex_iterator(); ++it) {
    deleted += std::stoull((*it)[1]);
  }
  EXPECT_GT(deleted, 0u) << st;  // (a transfer the kill cut short freed its slot by itself)
  EXPECT_NE(Sh(cli + " get /o/torn " + work + "/torn" + at), 0);
  const std::string text = Out(cli + " status" + at);
  EXPECT_NE(text.find("orphan sweep: "), std::string::npos) << text;
  ASSERT_EQ(Sh(cli + " local kill 2" + at), 0);
  ASSERT_EQ(Sh(cli + " local kill 4" + at), 0);
  ASSERT_EQ(Sh(cli + " get /o/kept " + work + "/out" + at + " --node 1"), 0);
  EXPECT_EQ(ReadFile(work + "/out"), kept);
}

// A node SIGKILLed while a put is being sent to it: the gateway places its
// stripes again without it and the put succeeds; the file reads back
// bit-exact, and with two other nodes down once it is back.
TEST(LocalPut, ANodeKilledMidPutDoesNotFailThePut) {
  auto rng = fern::testing::TestRng();
  TestCluster tc("lmp");
  const std::string &cli = tc.cli, &root = tc.root, &work = tc.work, &at = tc.at;
  ASSERT_EQ(tc.Start(kSevenNodes), 0);
  std::vector<uint8_t> big = fern::testing::RandomBytes(rng, 64 * kStripe + 11);
  WriteFile(work + "/big", big);
  // Node 5 stopped: the put's first window lands on the others and waits
  // for it; then it dies (its connections reset).
  const int victim = NodePid(root, 5);
  ASSERT_GT(victim, 0);
  const long before = SlotsUsed(tc, 7, 5);
  ASSERT_EQ(kill(victim, SIGSTOP), 0);
  tc.stopped_pid = victim;
  FILE* put = popen((cli + " put " + work + "/big /p/big" + at + " --node 0 2>&1").c_str(), "r");
  ASSERT_NE(put, nullptr);
  long landed = 0;
  for (int i = 0; i < 100 && landed < before + 40; ++i) {
    usleep(50 * 1000);
    landed = SlotsUsed(tc, 7, 5);
  }
  ASSERT_EQ(Sh(cli + " local kill 5" + at), 0);
  tc.stopped_pid = 0;
  char out[4096] = {};
  const size_t n = fread(out, 1, sizeof out - 1, put);
  const int put_rc = pclose(put);
  ASSERT_GE(landed, before + 40) << "the put's shards never landed";
  ASSERT_EQ(put_rc, 0) << std::string(out, n);
  ASSERT_EQ(Sh(cli + " get /p/big " + work + "/out" + at + " --node 1"), 0);
  EXPECT_EQ(ReadFile(work + "/out"), big);
  ASSERT_EQ(Sh(cli + " local restart 5" + at), 0);
  ASSERT_EQ(Sh(cli + " local kill 2" + at), 0);
  ASSERT_EQ(Sh(cli + " local kill 3" + at), 0);
  std::filesystem::remove(work + "/out");
  ASSERT_EQ(Sh(cli + " get /p/big " + work + "/out" + at + " --node 5"), 0);
  EXPECT_EQ(ReadFile(work + "/out"), big);
}

// A node stopped (SIGSTOP: its connections stay open, and it is not
// declared dead for --dead-after): a file written before reads back
// bit-exact around it; puts' requests to it time out after --rpc-timeout
// and their stripes and records go to other nodes; every put succeeds and
// reads back bit-exact, and once it runs again each survives two other
// nodes' loss.
// The first of PREFIX0, PREFIX1, ... whose record node `node` of a 7-node
// local cluster owns (`owns`) or does not own: local clusters place with
// seed 0, k=4, m=2.
std::string PathWhoseRecord(uint32_t node, bool owns, const std::string& prefix) {
  std::vector<fern::placement::NodeInfo> infos;
  for (uint32_t i = 0; i < 7; ++i) infos.push_back({fern::NodeId(i), "", true});
  const auto view = *fern::placement::ClusterView::Make(infos);
  const auto placement = *fern::placement::Placement::Make(0, 4, 2);
  for (int i = 0;; ++i) {
    const std::string p = prefix + std::to_string(i);
    const auto owners = placement.MetadataOwners(p, view);
    if ((std::find(owners.begin(), owners.end(), fern::NodeId(node)) != owners.end()) == owns) return p;
  }
}

TEST(LocalPut, ANodeThatStopsAnsweringDoesNotFailPuts) {
  auto rng = fern::testing::TestRng();
  TestCluster tc("lsp");
  const std::string &cli = tc.cli, &root = tc.root, &work = tc.work, &at = tc.at;
  ASSERT_EQ(tc.Start(kSevenNodes), 0);
  std::vector<uint8_t> before = fern::testing::RandomBytes(rng, 30 * kStripe + 9);
  WriteFile(work + "/before", before);
  // One whose record node 4 does not own, one whose record it does.
  const std::string first = PathWhoseRecord(4, false, "/s/before");
  const std::string owned = PathWhoseRecord(4, true, "/s/owned");
  ASSERT_EQ(Sh(cli + " put " + work + "/before " + first + at + " --node 0"), 0);
  ASSERT_EQ(Sh(cli + " put " + work + "/before " + owned + at + " --node 0"), 0);
  const int stuck = NodePid(root, 4);
  ASSERT_GT(stuck, 0);
  ASSERT_EQ(kill(stuck, SIGSTOP), 0);
  tc.stopped_pid = stuck;
  // Read around it: the stripes it holds shards of decode from the others.
  ASSERT_EQ(Sh(cli + " get " + first + " " + work + "/out" + at + " --node 0"), 0) << "node 4 stopped";
  EXPECT_EQ(ReadFile(work + "/out"), before);
  // Hedged: node 0 did not know yet; the stripes waiting on node 4 fetched
  // their parity and were served without it, not after --rpc-timeout.
  const std::string hedged =
      JsonBlock(Out("FERN_EC_SOCKET=" + root + "/node-0/sock " + cli + " status --json"), "hedged_reads");
  std::smatch h;
  ASSERT_TRUE(std::regex_search(hedged, h, std::regex("\"served_early\": ([0-9]+)"))) << hedged;
  EXPECT_GT(std::stoull(h[1]), 0u) << hedged;
  const std::string text = Out("FERN_EC_SOCKET=" + root + "/node-0/sock " + cli + " status");
  EXPECT_NE(text.find("hedged around lagging nodes"), std::string::npos) << text;
  // Through node 1, which did not know either: the lookup left node 4
  // behind and asked its stand-in.
  std::filesystem::remove(work + "/out");
  ASSERT_EQ(Sh(cli + " get " + owned + " " + work + "/out" + at + " --node 1"), 0) << "node 4 stopped";
  EXPECT_EQ(ReadFile(work + "/out"), before);
  const std::string hedged1 =
      JsonBlock(Out("FERN_EC_SOCKET=" + root + "/node-1/sock " + cli + " status --json"), "hedged_reads");
  ASSERT_TRUE(std::regex_search(hedged1, h, std::regex("\"lookups\": ([0-9]+)"))) << hedged1;
  EXPECT_GT(std::stoull(h[1]), 0u) << hedged1;
  std::vector<std::vector<uint8_t>> files;
  for (int i = 0; i < 3; ++i) {
    files.push_back(fern::testing::RandomBytes(rng, 20 * kStripe + static_cast<size_t>(i)));
    WriteFile(work + "/in", files.back());
    ASSERT_EQ(Sh(cli + " put " + work + "/in /s/f" + std::to_string(i) + at + " --node " + std::to_string(i)), 0)
        << "put " << i << " with node 4 stopped";
  }
  kill(stuck, SIGCONT);
  tc.stopped_pid = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    std::filesystem::remove(work + "/out");
    ASSERT_EQ(Sh(cli + " get /s/f" + std::to_string(i) + " " + work + "/out" + at + " --node 5"), 0);
    EXPECT_EQ(ReadFile(work + "/out"), files[i]);
  }
  ASSERT_EQ(Sh(cli + " local kill 1" + at), 0);
  ASSERT_EQ(Sh(cli + " local kill 6" + at), 0);
  for (size_t i = 0; i < files.size(); ++i) {
    std::filesystem::remove(work + "/out");
    ASSERT_EQ(Sh(cli + " get /s/f" + std::to_string(i) + " " + work + "/out" + at + " --node 4"), 0)
        << "nodes 1, 6 down";
    EXPECT_EQ(ReadFile(work + "/out"), files[i]);
  }
}

// `ROOT/parity/node-N`, one node's parity directory, on a file system of
// its own (ext4 in ROOT/disk.img, on a loop device) that the test freezes
// (fsfreeze): writes to it then block, as on a hung NVMe. Needs root and
// loop devices; `error` says what was missing. When the test ends it is
// thawed and unmounted and ROOT removed (the other nodes' parity too):
// declare it before the cluster, whose daemons must be gone by then.
struct LoopDisk {
  LoopDisk(const std::string& root, int node)
      : root(root), dir(root + "/parity/node-" + std::to_string(node)), image(root + "/disk.img") {
    std::filesystem::remove_all(root);
    std::filesystem::create_directories(dir);
    if (Sh("truncate -s 256M " + image + " && mkfs.ext4 -q -F " + image + " >/dev/null 2>&1") != 0) {
      error = "mkfs.ext4 failed on " + image;
    } else if (Sh("mount -o loop " + image + " " + dir + " 2>/dev/null") != 0) {
      error = "cannot loop-mount a file system (not root, or no loop devices)";
    } else {
      mounted = true;
    }
  }
  ~LoopDisk() {
    Thaw();
    if (mounted && Sh("umount " + dir) != 0) return;  // busy: left for a person to see
    std::filesystem::remove_all(root);
  }
  bool Freeze() { return frozen = Sh("fsfreeze -f " + dir) == 0; }
  void Thaw() {
    if (frozen) Sh("fsfreeze -u " + dir);
    frozen = false;
  }
  const std::string root, dir, image;
  std::string error;
  bool mounted = false, frozen = false;
};

// Node 3's disk hangs (frozen): its record log and parity writes never
// finish. After --disk-stall it takes itself out: its peers count it dead
// and puts go around it — the first, a record only of a path node 3 owns,
// waits one --rpc-timeout for the record (node 3's loop stays up: the log
// is written off it, and its status says why); the others, through node 3
// itself too, do not wait. When the disk moves again it is back in every view,
// holds no shard the records do not name (the parity that reached it late
// is deleted there), and each file survives two other nodes' loss.
TEST(LocalDisk, ANodeWhoseParityDiskHangsIsWrittenAroundAndComesBack) {
  auto rng = fern::testing::TestRng();
  // Before the cluster: unmounted after its daemons are gone.
  const std::string disk_root = "/var/tmp/fern-lds-" + std::to_string(getpid());
  LoopDisk disk(disk_root, 3);
  if (!disk.error.empty()) GTEST_SKIP() << disk.error;
  TestCluster tc("lds");
  const std::string &cli = tc.cli, &root = tc.root, &work = tc.work, &at = tc.at;
  ASSERT_EQ(tc.Start(kSevenNodes + " --parity-root " + disk_root + "/parity"), 0);
  std::map<std::string, std::vector<uint8_t>> files;
  files["/d/before"] = fern::testing::RandomBytes(rng, 5 * kStripe + 3);
  WriteFile(work + "/before", files["/d/before"]);
  ASSERT_EQ(Sh(cli + " put " + work + "/before /d/before" + at + " --node 0"), 0);
  ASSERT_TRUE(disk.Freeze()) << "fsfreeze " << disk.dir;
  const std::string owned = PathWhoseRecord(3, true, "/d/empty");
  // (path, size, gateway): the first, a record only, waits on node 3's
  // record log (--write-hedge, or --rpc-timeout without); the others go
  // once node 0 sees node 3 out (the big one may still have placed shards
  // on it: the slot count below covers those).
  const std::vector<std::tuple<std::string, size_t, int>> puts = {{owned, 0, 0},
                                                                   {"/d/big", 40 * kStripe + 11, 0},
                                                                   {"/d/via3", 3 * kStripe + 1, 3},
                                                                   {"/d/small", 17, 2}};
  for (const auto& [path, size, via] : puts) {
    files[path] = fern::testing::RandomBytes(rng, size);
    WriteFile(work + "/in", files[path]);
    ASSERT_EQ(Sh(cli + " put " + work + "/in " + path + at + " --node " + std::to_string(via)), 0)
        << path << " through node " << via << " with node 3's disk frozen";
    if (path != "/d/big" && path != owned) {
      const std::string ins = Out(cli + " inspect " + path + at);
      EXPECT_EQ(ins.find("@3:"), std::string::npos) << path << " put with node 3 out has a shard there: " << ins;
    }
    if (path == owned) {
      // Node 3 says its disk stalled (--disk-stall, 2 s here) in its next
      // heartbeats: bounded wait.
      const std::string seen_by_0 =
          OutOnceItSays("FERN_EC_SOCKET=" + root + "/node-0/sock " + cli + " status", "down: 3", 100);
      ASSERT_NE(seen_by_0.find("down: 3"), std::string::npos) << seen_by_0;
    }
  }
  // Bounded: a loop blocked on the disk would never answer.
  const std::string own = Out("FERN_EC_SOCKET=" + root + "/node-3/sock timeout 10 " + cli + " status");
  EXPECT_NE(own.find("PARITY DISK STALLED"), std::string::npos) << own;
  disk.Thaw();
  const std::string whole =
      OutOnceItSays("FERN_EC_SOCKET=" + root + "/node-0/sock " + cli + " status", "7 of 7 nodes alive", 150);
  ASSERT_NE(whole.find("7 of 7 nodes alive"), std::string::npos) << whole;
  const std::string after = Out("FERN_EC_SOCKET=" + root + "/node-3/sock " + cli + " status");
  EXPECT_NE(after.find("parity disk: stalled 1 times"), std::string::npos) << after;
  // Node 3 holds exactly the shards the records name there: the parity the
  // first put sent it landed when the disk moved, and the gateway's held
  // deletes freed it.
  long named = 0;
  for (const auto& [path, bytes] : files) {
    const std::string ins = Out(cli + " inspect " + path + at);
    for (size_t at3 = ins.find("@3:"); at3 != std::string::npos; at3 = ins.find("@3:", at3 + 1)) ++named;
  }
  auto slots3 = [&] {
    static const std::regex used("\"slots_used\": ([0-9]+)");
    const std::string st = Out("FERN_EC_SOCKET=" + root + "/node-3/sock " + cli + " status --json 2>/dev/null");
    long total = 0;
    for (auto it = std::sregex_iterator(st.begin(), st.end(), used); it != std::sregex_iterator(); ++it) {
      total += std::stol((*it)[1]);
    }
    return total;
  };
  long held = slots3();
  for (int i = 0; i < 100 && held != named; ++i) {
    usleep(100 * 1000);
    held = slots3();
  }
  EXPECT_EQ(held, named) << "node 3 holds shards no record names there";
  ASSERT_EQ(Sh(cli + " local kill 1" + at), 0);
  ASSERT_EQ(Sh(cli + " local kill 5" + at), 0);
  for (const auto& [path, bytes] : files) {
    std::filesystem::remove(work + "/out");
    ASSERT_EQ(Sh(cli + " get " + path + " " + work + "/out" + at + " --node 3"), 0) << path << ", nodes 1, 5 down";
    EXPECT_EQ(ReadFile(work + "/out"), bytes) << path;
  }
}

// A flipped byte in the shard slab of one node: inspect names every shard
// it spoils as corrupt (the stripes stay readable), reads decode around
// them bit-exact, and the node's repair pass after a restart rewrites them.
TEST_F(LocalCluster, FlippedShardBytesAreFoundByInspectDecodedAroundAndRepaired) {
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> a = fern::testing::RandomBytes(rng, 7 * kStripe + 12345);
  WriteFile(work_ + "/a", a);
  const std::string at = " --root " + root_;
  ASSERT_EQ(Sh(Cli() + " put " + work_ + "/a /ck/a" + at), 0);
  const std::string healthy = Out(Cli() + " inspect /ck/a" + at);
  EXPECT_NE(healthy.find("8 stripes: 8 healthy, 0 degraded, 0 lost"), std::string::npos) << healthy;

  // One byte in every slot of one node's data slab (4 KiB header page,
  // then the shard bytes; see shard_store.cc). Unused slots have no valid
  // header. The node is one holding data shards of the file (placement may
  // make a node parity in every stripe), and not 0, 1 or 5, killed below.
  const std::string victim = DataShardHolder(Out(Cli() + " inspect /ck/a --json" + at), {0, 1, 5});
  ASSERT_NE(victim, "") << "no data shard of /ck/a outside nodes 0, 1 and 5";
  const std::string slab = root_ + "/node-" + victim + "/data/shards.slab";
  const uint64_t stride = 4096 + kShard;
  int fd = open(slab.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << slab;
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  for (uint64_t slot = 0; (slot + 1) * stride <= static_cast<uint64_t>(st.st_size); ++slot) {
    uint8_t b = 0;
    const off_t off = static_cast<off_t>(slot * stride + 4096 + 777);
    ASSERT_EQ(pread(fd, &b, 1, off), 1);
    b ^= 0x5a;
    ASSERT_EQ(pwrite(fd, &b, 1, off), 1);
  }
  close(fd);

  const std::string damaged = Out(Cli() + " inspect /ck/a" + at);
  EXPECT_NE(damaged.find("@" + victim + ":corrupt"), std::string::npos) << damaged;
  EXPECT_NE(damaged.find(", 0 lost"), std::string::npos) << damaged;
  EXPECT_EQ(damaged.find("8 healthy"), std::string::npos) << "no stripe noticed the damage: " << damaged;
  EXPECT_EQ(Sh(Cli() + " inspect /ck/a" + at + " >/dev/null"), 0);  // degraded is still readable
  const std::string json = Out(Cli() + " inspect /ck/a --json" + at);
  EXPECT_NE(json.find("\"state\": \"corrupt\""), std::string::npos) << json;
  const std::string out = work_ + "/out";
  ASSERT_EQ(Sh(Cli() + " get /ck/a " + out + at), 0);
  EXPECT_EQ(ReadFile(out), a);

  // Restarted (tmpfs kept), its repair pass finds the corrupt shards and rebuilds them.
  ASSERT_EQ(Sh(Cli() + " local restart " + victim + at), 0);
  std::string now;
  for (int i = 0; i < 300; ++i) {
    now = Out(Cli() + " inspect /ck/a" + at);
    if (now.find("8 stripes: 8 healthy") != std::string::npos) break;
    usleep(100 * 1000);
  }
  EXPECT_NE(now.find("8 stripes: 8 healthy, 0 degraded, 0 lost"), std::string::npos) << now;
  // And the repaired shards are real: two other nodes may now fail.
  ASSERT_EQ(Sh(Cli() + " local kill 0" + at), 0);
  ASSERT_EQ(Sh(Cli() + " local kill 5" + at), 0);
  std::filesystem::remove(out);
  ASSERT_EQ(Sh(Cli() + " get /ck/a " + out + at + " --node " + victim), 0);
  EXPECT_EQ(ReadFile(out), a);
  // A lost stripe is exit code 4.
  ASSERT_EQ(Sh(Cli() + " local kill 1" + at), 0);
  EXPECT_EQ(Sh(Cli() + " inspect /ck/a" + at + " --node " + victim + " >/dev/null"), 4);
}

// Shard space is reserved before anything is acknowledged: a put that does
// not fit is ENOSPC for the writer, and what was committed stays readable.
// A data shard wrong but matching its own CRC (bytes and header rewritten
// together, as a bug or a stale rewrite would leave them) on a real daemon:
// a read returns the right bytes (checked against a parity's record of the
// data CRCs, decoded around), writes the checked bytes back over the wrong
// shard, and the file is then consistent again.
TEST_F(LocalCluster, AReadHealsADataShardWrongButMatchingItsOwnCrc) {
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> a(4 * kShard);  // one stripe
  fern::testing::FillRandom(rng, a.data(), a.size());
  WriteFile(work_ + "/a", a);
  const std::string at = " --root " + root_;
  ASSERT_EQ(Sh(Cli() + " put " + work_ + "/a /ck/h" + at), 0);
  const std::string victim = DataShardHolder(Out(Cli() + " inspect /ck/h --json" + at), {});
  ASSERT_NE(victim, "");
  ASSERT_EQ(Sh(Cli() + " local kill " + victim + at), 0);
  {
    // The victim's only shard sits in slot 0 of its data slab: a 4 KiB
    // header page (shard_store.cc SlotHeader, format 1 for a data shard:
    // the header CRC covers the 72 bytes before it), then the bytes.
    const std::string slab = root_ + "/node-" + victim + "/data/shards.slab";
    const int fd = open(slab.c_str(), O_RDWR);
    ASSERT_GE(fd, 0) << slab;
    uint8_t header[80];
    ASSERT_EQ(pread(fd, header, sizeof header, 0), static_cast<ssize_t>(sizeof header));
    uint32_t format = 0;
    uint64_t length = 0;
    std::memcpy(&format, header + 8, 4);
    std::memcpy(&length, header + 48, 8);
    ASSERT_EQ(format, 1u);
    ASSERT_EQ(length, kShard);
    std::vector<uint8_t> shard(length);
    ASSERT_EQ(pread(fd, shard.data(), length, 4096), static_cast<ssize_t>(length));
    shard[1234] ^= 0x42;
    const uint32_t data_crc = fern::ec::Crc32c(shard);
    std::memcpy(header + 12, &data_crc, 4);
    const uint32_t header_crc = fern::ec::Crc32c({header, 72});
    std::memcpy(header + 72, &header_crc, 4);
    ASSERT_EQ(pwrite(fd, shard.data(), length, 4096), static_cast<ssize_t>(length));
    ASSERT_EQ(pwrite(fd, header, sizeof header, 0), static_cast<ssize_t>(sizeof header));
    close(fd);
  }
  ASSERT_EQ(Sh(Cli() + " local restart " + victim + at), 0);
  // Its own CRC vouches for it: inspect (which checks each shard where it
  // lives) sees nothing wrong, scrub does.
  EXPECT_NE(Out(Cli() + " inspect /ck/h" + at).find("1 stripes: 1 healthy"), std::string::npos);
  EXPECT_EQ(Sh(Cli() + " scrub /ck" + at + " >/dev/null"), 5);
  const int via = (std::stoi(victim) + 1) % 6;
  const std::string out = work_ + "/out";
  ASSERT_EQ(Sh(Cli() + " get /ck/h " + out + at + " --node " + std::to_string(via)), 0);
  EXPECT_EQ(ReadFile(out), a) << "the wrong data shard reached the reader";
  std::string st;
  for (int i = 0; i < 50; ++i) {
    st = NodeStatus(via);
    if (st.find("\"mismatched\": 1, \"rewritten\": 1") != std::string::npos) break;
    usleep(100 * 1000);
  }
  EXPECT_NE(st.find("\"mismatched\": 1, \"rewritten\": 1"), std::string::npos) << st;
  // Healed: scrub finds the stripe consistent, the next read nothing wrong.
  EXPECT_EQ(Sh(Cli() + " scrub /ck" + at + " >/dev/null"), 0);
  std::filesystem::remove(out);
  ASSERT_EQ(Sh(Cli() + " get /ck/h " + out + at + " --node " + std::to_string(via)), 0);
  EXPECT_EQ(ReadFile(out), a);
  EXPECT_NE(NodeStatus(via).find("\"mismatched\": 1, \"rewritten\": 1"), std::string::npos);
}

TEST_F(LocalCluster, FullStoresAreEnospcAndCommittedFilesStay) {
  const std::string small_root = root_ + "-small";
  const std::string at = " --root " + small_root;
  ASSERT_EQ(Sh(Cli() + " local start" + at + " --nodes 6 --k 4 --m 2 --shard-size 64KiB"
                " --data-capacity 1MiB --parity-capacity 1MiB"),
            0);
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> a(kStripe + 5), big(40 * kStripe);
  fern::testing::FillRandom(rng, a.data(), a.size());
  fern::testing::FillRandom(rng, big.data(), big.size());
  WriteFile(work_ + "/a", a);
  WriteFile(work_ + "/big", big);
  ASSERT_EQ(Sh(Cli() + " put " + work_ + "/a /a" + at), 0);
  const std::string err = Out(Cli() + " put " + work_ + "/big /big" + at + " 2>&1; echo rc=$?");
  EXPECT_NE(err.find("No space left on device"), std::string::npos) << err;
  EXPECT_EQ(err.find("rc=0"), std::string::npos) << err;
  EXPECT_EQ(Sh(Cli() + " stat /big" + at), 3);  // never became visible
  const std::string out = work_ + "/out";
  ASSERT_EQ(Sh(Cli() + " get /a " + out + at), 0);
  EXPECT_EQ(ReadFile(out), a);
  // The failed put's reservations were released: a file that fits still does.
  ASSERT_EQ(Sh(Cli() + " put " + work_ + "/a /a2" + at), 0);
  Sh(Cli() + " local stop" + at);
  std::filesystem::remove_all(small_root);
}

// Raw bytes on the client socket, as a buggy or hostile local program would
// send them: each is refused and the daemon keeps serving.
TEST_F(LocalCluster, MalformedClientRequestsAreRefused) {
  auto rng = fern::testing::TestRng();
  const std::string sock = root_ + "/node-1/sock";
  auto connect_to = [&] {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock.c_str());
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return fd;
  };
  auto reply_to = [&](const fern::client::Request& req) {
    int fd = connect_to();
    fern::client::Reply reply;
    reply.err = -1;
    EXPECT_EQ(fern::client::SendWithFd(fd, &req, sizeof req, -1), 0);
    EXPECT_EQ(fern::client::RecvWithFd(fd, &reply, sizeof reply, nullptr), 0);
    close(fd);
    return reply;
  };
  {
    std::vector<uint8_t> junk = fern::testing::RandomBytes(rng, 10000);
    int fd = connect_to();
    (void)!write(fd, junk.data(), junk.size());
    close(fd);
  }
  {
    int fd = connect_to();  // half a request, then hang up
    (void)!write(fd, "FERC", 4);
    close(fd);
  }
  fern::client::Request req;
  req.op = static_cast<uint16_t>(fern::client::Op::kStat);
  req.path_len = 1u << 30;
  EXPECT_EQ(reply_to(req).err, ENAMETOOLONG);
  req.path_len = 5;
  std::memcpy(req.path, "/a\0b", 5);
  EXPECT_EQ(reply_to(req).err, EINVAL);
  std::memcpy(req.path, "/a/..", 5);
  EXPECT_EQ(reply_to(req).err, EINVAL);
  req.op = 999;
  std::memcpy(req.path, "/a/bb", 5);
  EXPECT_EQ(reply_to(req).err, EINVAL);
  req.op = static_cast<uint16_t>(fern::client::Op::kPut);  // PUT without a memfd
  EXPECT_EQ(reply_to(req).err, EINVAL);
  req.op = static_cast<uint16_t>(fern::client::Op::kRename);
  req.path2_len = 0;
  EXPECT_EQ(reply_to(req).err, ENOENT);
  req.magic = 0x12345678;
  EXPECT_EQ(reply_to(req).err, EINVAL);
  // Still serving.
  WriteFile(work_ + "/small", {9, 8, 7});
  ASSERT_EQ(Sh(Cli() + " put " + work_ + "/small /ok --root " + root_ + " --node 1"), 0);
  ASSERT_EQ(Sh(Cli() + " get /ok " + work_ + "/small.out --root " + root_ + " --node 1"), 0);
  EXPECT_EQ(ReadFile(work_ + "/small.out"), (std::vector<uint8_t>{9, 8, 7}));
}

// The last backend a node's log says it codes with.
std::string CoderInLog(const std::string& root, int node) {
  std::ifstream log(root + "/node-" + std::to_string(node) + "/log");
  std::string line, coder;
  static const std::regex re("erasure coding: ([a-z]+)\\)");
  for (std::smatch m; std::getline(log, line);) {
    if (std::regex_search(line, m, re)) coder = m[1];
  }
  return coder;
}

// Nodes of one cluster may code with different backends (CPUs with and
// without GFNI pick different ones under `auto`): every backend writes the
// same parity, so a stripe encoded by one decodes on another. Node 0 is
// restarted from Jerasure onto the machine's own pick; two other nodes die,
// and each file is read degraded through a node of the other backend.
TEST(LocalStart, NodesWithDifferentCodersReadEachOthersStripes) {
  const std::string root = "/dev/shm/fern-lx-" + std::to_string(getpid());
  const std::string work = ::testing::TempDir() + "/fern-lx-work-" + std::to_string(getpid());
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(work);
  const std::string cli = FERN_EC_CLI, at = " --root " + root;
  struct Cleanup {  // every exit, the failed ASSERTs' too
    std::string stop, root, work;
    ~Cleanup() {
      Sh(stop);
      std::filesystem::remove_all(root);
      std::filesystem::remove_all(work);
    }
  } cleanup{cli + " local stop" + at, root, work};
  ASSERT_EQ(Sh("FERN_EC_CODER=jerasure " + cli + " local start" + at +
               " --nodes 6 --k 4 --m 2 --shard-size 64KiB --data-capacity 64MiB --parity-capacity 64MiB"),
            0);
  ASSERT_EQ(CoderInLog(root, 0), "jerasure");
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> a(4u << 20), b(3u << 20);
  fern::testing::FillRandom(rng, a.data(), a.size());
  fern::testing::FillRandom(rng, b.data(), b.size());
  WriteFile(work + "/a", a);
  WriteFile(work + "/b", b);
  ASSERT_EQ(Sh(cli + " put " + work + "/a /mix/a" + at + " --node 0"), 0);  // Jerasure's parity
  ASSERT_EQ(Sh("FERN_EC_CODER=auto " + cli + " local restart 0" + at), 0);
  const std::string mine = CoderInLog(root, 0);
  ASSERT_FALSE(mine.empty()) << "node 0 logged no backend after its restart";
  if (mine == "jerasure") GTEST_SKIP() << "auto is Jerasure in this build (no ISA-L, no GFNI): nothing to mix";
  ASSERT_EQ(Sh(cli + " put " + work + "/b /mix/b" + at + " --node 0"), 0);  // the node's own pick
  const int x = 2 + static_cast<int>(rng() % 4), y = 2 + static_cast<int>((x - 2 + 1 + rng() % 3) % 4);
  ASSERT_EQ(Sh(cli + " local kill " + std::to_string(x) + at), 0);
  ASSERT_EQ(Sh(cli + " local kill " + std::to_string(y) + at), 0);
  SCOPED_TRACE("nodes " + std::to_string(x) + " and " + std::to_string(y) + " killed; node 0 codes with " + mine);
  std::filesystem::remove(work + "/out");
  ASSERT_EQ(Sh(cli + " get /mix/a " + work + "/out" + at + " --node 0"), 0);
  EXPECT_EQ(ReadFile(work + "/out"), a) << mine << " decoding Jerasure's parity";
  std::filesystem::remove(work + "/out");
  ASSERT_EQ(Sh(cli + " get /mix/b " + work + "/out" + at + " --node 1"), 0);
  EXPECT_EQ(ReadFile(work + "/out"), b) << "Jerasure decoding " << mine << "'s parity";
}

// A start that runs out of --timeout says so and what takes the time,
// fails, and leaves no daemon behind. (No daemon answers within 1 ms of
// being forked: UCX alone takes longer to come up.)
TEST(LocalStart, TimeoutSaysWhyAndLeavesNoDaemon) {
  const std::string root = "/dev/shm/fern-lt-" + std::to_string(getpid());
  std::filesystem::remove_all(root);
  const std::string out = Out(std::string(FERN_EC_CLI) + " local start --root " + root +
                              " --nodes 3 --k 2 --m 1 --timeout 0.001 2>&1; echo rc=$?");
  EXPECT_NE(out.find("node 0 did not come up within 0.001 s (--timeout"), std::string::npos) << out;
  EXPECT_NE(out.find("populates its --data-capacity"), std::string::npos) << out;
  EXPECT_NE(out.find("rc=1"), std::string::npos) << out;
  for (int i = 0; i < 3; ++i) {
    const int pid = NodePid(root, i);
    ASSERT_GT(pid, 0) << "no pid file for node " << i;
    std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline");
    const std::string argv{std::istreambuf_iterator<char>(cmdline), {}};
    EXPECT_EQ(argv.find("fern-ec-daemon"), std::string::npos) << "node " << i << " (pid " << pid << ") still runs";
  }
  std::filesystem::remove_all(root);
}

// Parity on a disk: `local start --wait-prepared` returns only when every
// daemon has written its fresh parity slab once (256 MiB each: longer to
// prepare on this machine's disk than the start itself), and files
// round-trip.
TEST(LocalStart, WaitPreparedReturnsWithParitySlabsWritten) {
  const std::string root = "/dev/shm/fern-lp-" + std::to_string(getpid());
  const std::string disk = "/var/tmp/fern-lp-" + std::to_string(getpid());
  std::filesystem::remove_all(root);
  std::filesystem::remove_all(disk);
  {
    // Only a file system with unwritten extents has anything to prepare.
    std::filesystem::create_directories(disk);
    const std::string probe = disk + "/probe";
    int fd = open(probe.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(posix_fallocate(fd, 0, 1 << 20), 0);
    close(fd);
    const int64_t unwritten = fern::testing::UnwrittenBytes(probe);
    std::filesystem::remove(probe);
    if (unwritten <= 0) GTEST_SKIP() << disk << ": no unwritten extents (FIEMAP: " << unwritten << ")";
  }
  const std::string cli = FERN_EC_CLI, at = " --root " + root;
  ASSERT_EQ(Sh(cli + " local start" + at + " --parity-root " + disk +
               " --nodes 6 --k 4 --m 2 --shard-size 64KiB --data-capacity 32MiB --parity-capacity 256MiB"
               " --wait-prepared"),
            0);
  const std::string st = Out(cli + " status --json" + at);
  size_t parities = 0;
  for (size_t p = st.find("\"parity\": {"); p != std::string::npos; p = st.find("\"parity\": {", p + 1)) {
    const std::string tier = st.substr(p, st.find('}', p) - p);
    EXPECT_NE(tier.find("\"slots_unprepared\": 0,"), std::string::npos) << tier;
    EXPECT_EQ(tier.find("\"slots_zeroed\": 0,"), std::string::npos) << "nothing was prepared: " << tier;
    ++parities;
  }
  EXPECT_EQ(parities, 6u) << st;
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> a = fern::testing::RandomBytes(rng, 3 * kStripe + 17);
  WriteFile(disk + "/a", a);
  ASSERT_EQ(Sh(cli + " put " + disk + "/a /a" + at), 0);
  ASSERT_EQ(Sh(cli + " local kill 1" + at), 0);
  ASSERT_EQ(Sh(cli + " local kill 4" + at), 0);
  ASSERT_EQ(Sh(cli + " get /a " + disk + "/a.out" + at), 0);
  EXPECT_EQ(ReadFile(disk + "/a.out"), a);
  Sh(cli + " local stop" + at);
  std::filesystem::remove_all(root);
  std::filesystem::remove_all(disk);
}

// A node restarting on its parity slab reads each slot's header, not the
// shard data around it: readahead (and MADV_HUGEPAGE on ext4, which
// overrides MADV_RANDOM) used to read the whole slab at every restart.
TEST(LocalStart, RestartReadsParityHeadersNotTheWholeSlab) {
  const std::string root = "/dev/shm/fern-lr-" + std::to_string(getpid());
  const std::string disk = "/var/tmp/fern-lr-" + std::to_string(getpid());
  std::filesystem::remove_all(root);
  std::filesystem::remove_all(disk);
  std::filesystem::create_directories(disk);
  const std::string cli = FERN_EC_CLI, at = " --root " + root;
  ASSERT_EQ(Sh(cli + " local start" + at + " --parity-root " + disk +
               " --nodes 6 --k 4 --m 2 --shard-size 64KiB --data-capacity 32MiB --parity-capacity 256MiB"
               " --wait-prepared"),
            0);
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> a = fern::testing::RandomBytes(rng, 3 * kStripe + 17);
  WriteFile(disk + "/a", a);
  ASSERT_EQ(Sh(cli + " put " + disk + "/a /a" + at), 0);
  ASSERT_EQ(Sh(cli + " local kill 2" + at), 0);
  // Whatever of the slab is cached goes, so the restart's reads reach the disk.
  const std::string slab = disk + "/node-2/shards.slab";
  const int fd = open(slab.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << slab << ": " << std::strerror(errno);
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  ASSERT_EQ(fdatasync(fd), 0);
  ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  close(fd);
  ASSERT_EQ(Sh(cli + " local restart 2" + at), 0);
  const int pid = NodePid(root, 2);
  ASSERT_GT(pid, 0);
  uint64_t read_bytes = UINT64_MAX;
  {
    std::ifstream io("/proc/" + std::to_string(pid) + "/io");
    for (std::string key; io >> key;) {
      if (key == "read_bytes:") io >> read_bytes;
    }
  }
  // Headers are one 4 KiB page per 64 KiB slot: 1/16 of the slab.
  EXPECT_LT(read_bytes, static_cast<uint64_t>(st.st_size) / 4)
      << "node 2 read " << read_bytes << " bytes of its " << st.st_size << "-byte slab at restart";
  ASSERT_EQ(Sh(cli + " get /a " + disk + "/a.out" + at + " --node 2"), 0);
  EXPECT_EQ(ReadFile(disk + "/a.out"), a);
  Sh(cli + " local stop" + at);
  std::filesystem::remove_all(root);
  std::filesystem::remove_all(disk);
}

}  // namespace

// ---- in-place updates (PSW) through real daemons and the preload ----------

// Writers run update_writer under `fern-ec run`, one process each, through
// the node given; they retry a failed close until it commits.
class PswCluster : public LocalCluster {
 protected:
  static constexpr uint64_t kFile = 1 << 20;  // 4 stripes of 4 x 64 KiB

  // Puts the initial file: random bytes, 0xff in the overlap range.
  void PutInitial() {
    auto rng = fern::testing::TestRng();
    expect_.resize(kFile);
    fern::testing::FillRandom(rng, expect_.data(), kFile);
    std::fill(expect_.begin() + 70000, expect_.begin() + 90000, 0xff);
    WriteFile(work_ + "/init", expect_);
    ASSERT_EQ(Sh(Cli() + " put " + work_ + "/init /u/f --root " + root_), 0);
  }
  pid_t StartWriter(int node, int w, int n, int iters, bool overlap) {
    const std::string cmd = Cli() + " run --root " + root_ + " --node " + std::to_string(node) + " -- " +
                            FERN_UPDATE_WRITER + " /fern/u/f " + std::to_string(w) + " " + std::to_string(n) + " " +
                            std::to_string(iters) + (overlap ? " overlap" : "") + " >" + work_ + "/w" +
                            std::to_string(w) + ".log 2>&1";
    pid_t pid = fork();
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    return pid;
  }
  // Waits for every writer; true when all exited 0.
  bool Join(const std::vector<pid_t>& pids) {
    bool ok = true;
    for (pid_t p : pids) {
      int status = 0;
      if (waitpid(p, &status, 0) != p || !WIFEXITED(status) || WEXITSTATUS(status) != 0) ok = false;
    }
    return ok;
  }
  std::string Log(int w) {
    auto b = ReadFile(work_ + "/w" + std::to_string(w) + ".log");
    return std::string(b.begin(), b.end());
  }
  // expect_ with writer w's iteration `iter` applied.
  void Apply(int w, int n, int iter, bool overlap) {
    for (auto [s, e] : fern::testing::UpdateOwned(w, n, kFile, overlap)) {
      for (uint64_t off = s; off < e; ++off) expect_[off] = fern::testing::UpdatePattern(w, iter, off, overlap);
    }
  }
  std::vector<uint8_t> Get(int node) {
    const std::string out = work_ + "/got";
    std::filesystem::remove(out);
    EXPECT_EQ(Sh(Cli() + " get /u/f " + out + " --root " + root_ + " --node " + std::to_string(node)), 0);
    return ReadFile(out);
  }
  std::string Json(const std::string& args) { return Out(Cli() + " " + args + " --json --root " + root_); }
  // A number after "key": in a JSON text (first occurrence), or -1.
  static long long Field(const std::string& json, const std::string& key, size_t from = 0) {
    const size_t at = json.find("\"" + key + "\": ", from);
    return at == std::string::npos ? -1 : std::atoll(json.c_str() + at + key.size() + 4);
  }
  // The node holding shard `index` of stripe 0, from inspect --json.
  int HolderOfStripe0(int index) {
    const std::string j = Json("inspect /u/f");
    const size_t at = j.find("{\"index\": " + std::to_string(index) + ",");
    return at == std::string::npos ? -1 : static_cast<int>(Field(j, "node", at));
  }
  void ExpectScrubClean(int node) {
    const std::string cmd = Cli() + " scrub /u --root " + root_ + " --node " + std::to_string(node);
    const std::string out = Out(cmd);
    EXPECT_NE(out.find("4 stripes: 4 consistent, 0 inconsistent, 0 repaired, 0 degraded"), std::string::npos)
        << out;
    EXPECT_EQ(Sh(cmd + " >/dev/null"), 0);
  }
  std::vector<uint8_t> expect_;
};

// Four processes update disjoint, unaligned ranges of one file at once, each
// through its own node: the file is exactly the union of their last
// iterations, still version 1 (the delta path, not whole-file rewrites), and
// scrub finds every stripe's parity equal to the encoding of its data.
TEST_F(PswCluster, FourWritersOfDisjointUnalignedRangesComposeToTheirUnion) {
  PutInitial();
  constexpr int kIters = 6;
  std::vector<pid_t> pids;
  for (int w = 0; w < 4; ++w) pids.push_back(StartWriter(w, w, 4, kIters, false));
  ASSERT_TRUE(Join(pids)) << Log(0) << Log(1) << Log(2) << Log(3);
  for (int w = 0; w < 4; ++w) Apply(w, 4, kIters, false);
  EXPECT_TRUE(Get(5) == expect_);
  EXPECT_EQ(Field(Json("stat /u/f"), "version"), 1);
  // Every iteration went through the gateways' delta path.
  const std::string status = Json("status");
  long long committed = 0;
  for (size_t at = 0; (at = status.find("\"updates_committed\": ", at)) != std::string::npos; ++at) {
    committed += Field(status, "updates_committed", at);
  }
  EXPECT_GE(committed, 4 * kIters) << status;
  ExpectScrubClean(4);
  // The parity was updated too: two nodes gone, the bytes decode the same,
  // checked against the data CRCs the parity kept recording through the
  // updates.
  ASSERT_EQ(Sh(Cli() + " local kill 1 --root " + root_), 0);
  ASSERT_EQ(Sh(Cli() + " local kill 2 --root " + root_), 0);
  EXPECT_TRUE(Get(0) == expect_);
  ExpectEveryDecodeVerified(0);
}

// Two processes overwrite the same bytes again and again: the range ends as
// exactly one writer's last iteration, never a mix, on data and parity alike.
TEST_F(PswCluster, OverlappingWritersEndWithOneWritersBytes) {
  PutInitial();
  constexpr int kIters = 8;
  std::vector<pid_t> pids = {StartWriter(1, 0, 2, kIters, true), StartWriter(3, 1, 2, kIters, true)};
  ASSERT_TRUE(Join(pids)) << Log(0) << Log(1);
  const auto got = Get(0);
  ASSERT_EQ(got.size(), kFile);
  auto a = expect_, b = expect_;
  std::swap(expect_, a);
  Apply(0, 2, kIters, true);
  std::swap(expect_, a);
  std::swap(expect_, b);
  Apply(1, 2, kIters, true);
  std::swap(expect_, b);
  EXPECT_TRUE(got == a || got == b) << "the overlapped range is neither writer's last bytes";
  ExpectScrubClean(2);
}

// SIGKILL mid-stream of the node holding a parity shard, a data shard, the
// file's sequencer, or a writer's own gateway; the node restarts (tmpfs
// kept) and the writers' retries go through. Afterwards every byte is the writers' last, and scrub
// finds 0 inconsistent stripes.
class PswKill : public PswCluster, public ::testing::WithParamInterface<std::string> {};

TEST_P(PswKill, KilledMidStreamRecoversToTheWritersBytes) {
  PutInitial();
  int victim = -1;
  if (GetParam() == "parity") victim = HolderOfStripe0(4);
  if (GetParam() == "data") victim = HolderOfStripe0(1);
  if (GetParam() == "sequencer") victim = static_cast<int>(Field(Json("inspect /u/f"), "sequencer"));
  if (GetParam() == "gateway") victim = 0;  // writer 0's own daemon: its closes fail until it is back
  ASSERT_GE(victim, 0);
  ASSERT_LT(victim, 6);
  constexpr int kIters = 30;  // still writing while the victim is down
  std::vector<pid_t> pids;
  for (int w = 0, node = 0; w < 3; ++w, ++node) {
    if (node == victim && GetParam() != "gateway") ++node;
    pids.push_back(StartWriter(node, w, 3, kIters, false));
  }
  // Mid-stream: once every writer committed something.
  for (int i = 0; i < 300; ++i) {
    if (Log(0).find("ok 2") != std::string::npos && Log(1).find("ok 2") != std::string::npos &&
        Log(2).find("ok 2") != std::string::npos) {
      break;
    }
    usleep(50 * 1000);
  }
  ASSERT_EQ(Sh(Cli() + " local kill " + std::to_string(victim) + " --root " + root_), 0);
  sleep(2);
  ASSERT_EQ(Sh(Cli() + " local restart " + std::to_string(victim) + " --root " + root_), 0);
  ASSERT_TRUE(Join(pids)) << Log(0) << Log(1) << Log(2);
  // The kill was mid-stream: writers saw closes fail while the node was down.
  const std::string logs = Log(0) + Log(1) + Log(2);
  EXPECT_NE(logs.find("retry"), std::string::npos) << logs;
  const std::string status = Json("status");
  long long resolved = 0;
  for (size_t at = 0; (at = status.find("\"stripes_resolved\": ", at)) != std::string::npos; ++at) {
    resolved += Field(status, "stripes_resolved", at);
  }
  std::printf("[ psw ] %s killed: %lld stripes resolved by recovery rounds\n", GetParam().c_str(), resolved);
  for (int w = 0; w < 3; ++w) Apply(w, 3, kIters, false);
  EXPECT_TRUE(Get((victim + 1) % 6) == expect_);
  {
    // The parity records kept through the updates and the recovery never
    // contradict the data (a record may be missing: unchecked).
    const std::vector<uint64_t> c = ReadChecks((victim + 1) % 6);
    std::printf("[ psw ] read checks after recovery: %llu verified, %llu unchecked\n",
                static_cast<unsigned long long>(c[0]), static_cast<unsigned long long>(c[1]));
    EXPECT_EQ(c[2], 0u);
  }
  EXPECT_TRUE(Get(victim) == expect_);
  ExpectScrubClean((victim + 2) % 6);
  EXPECT_EQ(Field(Json("stat /u/f"), "version"), 1);
}

INSTANTIATE_TEST_SUITE_P(Nodes, PswKill, ::testing::Values("parity", "data", "sequencer", "gateway"));
