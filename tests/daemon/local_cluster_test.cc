// The real thing: six fern-ec-daemon processes on 127.0.0.1 talking UCX over
// TCP, driven through the fern-ec CLI exactly as a user would, nodes killed
// with SIGKILL.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/client_protocol.h"
#include "test_util.h"

namespace {

constexpr uint64_t kShard = 64 * 1024;
constexpr uint64_t kStripe = 4 * kShard;

// The CLI's stderr for this run (kept for debugging a failure, removed after).
std::string ErrLog() {
  return ::testing::TempDir() + "/fern-cli-" + std::to_string(getpid()) + ".err";
}

// Runs a command; returns its exit code.
int Sh(const std::string& cmd) {
  int rc = std::system((cmd + " 2>>" + ErrLog()).c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// The first line a command prints.
std::string Out(const std::string& cmd) {
  std::string text;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  pclose(p);
  return text;
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
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

  // Any two nodes: chosen by the printed seed.
  int a = static_cast<int>(rng() % 6), b = static_cast<int>((a + 1 + rng() % 5) % 6);
  ASSERT_EQ(Sh(Cli() + " local kill " + std::to_string(a) + " --root " + root_), 0);
  ASSERT_EQ(Sh(Cli() + " local kill " + std::to_string(b) + " --root " + root_), 0);
  int via = 0;
  while (via == a || via == b) ++via;
  check_all(via, "nodes " + std::to_string(a) + "," + std::to_string(b) + " killed");

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
  // decode around them.
  ASSERT_EQ(Sh(Cli() + " local restart 2 --wipe-data" + at), 0);
  std::filesystem::remove(out);
  ASSERT_EQ(Sh(Cli() + " get /ck/a " + out + at + " --node 2"), 0);
  EXPECT_EQ(ReadFile(out), a);
  // It rebuilds its shards (status shows the repair pass) ...
  std::string st;
  for (int i = 0; i < 300; ++i) {
    st = Out("FERN_EC_SOCKET=" + root_ + "/node-2/sock " + Cli() + " status --json");
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
  ASSERT_EQ(Sh(Cli() + " get /ck/a " + out + at + " --node 2"), 0);
  EXPECT_EQ(ReadFile(out), a);
}

// A flipped byte in the shard slab of one node: inspect names every shard
// it spoils as corrupt (the stripes stay readable), reads decode around
// them bit-exact, and the node's repair pass after a restart rewrites them.
TEST_F(LocalCluster, FlippedShardBytesAreFoundByInspectDecodedAroundAndRepaired) {
  auto rng = fern::testing::TestRng();
  std::vector<uint8_t> a(7 * kStripe + 12345);
  fern::testing::FillRandom(rng, a.data(), a.size());
  WriteFile(work_ + "/a", a);
  const std::string at = " --root " + root_;
  ASSERT_EQ(Sh(Cli() + " put " + work_ + "/a /ck/a" + at), 0);
  const std::string healthy = Out(Cli() + " inspect /ck/a" + at);
  EXPECT_NE(healthy.find("8 stripes: 8 healthy, 0 degraded, 0 lost"), std::string::npos) << healthy;

  // One byte in every slot of node 3's data slab (4 KiB header page, then
  // the shard bytes; see shard_store.cc). Unused slots have no valid header.
  const std::string slab = root_ + "/node-3/data/shards.slab";
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
  EXPECT_NE(damaged.find("@3:corrupt"), std::string::npos) << damaged;
  EXPECT_NE(damaged.find(", 0 lost"), std::string::npos) << damaged;
  EXPECT_EQ(damaged.find("8 healthy"), std::string::npos) << "no stripe noticed the damage: " << damaged;
  EXPECT_EQ(Sh(Cli() + " inspect /ck/a" + at + " >/dev/null"), 0);  // degraded is still readable
  const std::string json = Out(Cli() + " inspect /ck/a --json" + at);
  EXPECT_NE(json.find("\"state\": \"corrupt\""), std::string::npos) << json;
  const std::string out = work_ + "/out";
  ASSERT_EQ(Sh(Cli() + " get /ck/a " + out + at), 0);
  EXPECT_EQ(ReadFile(out), a);

  // Restarted (tmpfs kept), node 3's repair pass finds the corrupt shards and rebuilds them.
  ASSERT_EQ(Sh(Cli() + " local restart 3" + at), 0);
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
  ASSERT_EQ(Sh(Cli() + " get /ck/a " + out + at + " --node 3"), 0);
  EXPECT_EQ(ReadFile(out), a);
  // A lost stripe is exit code 4.
  ASSERT_EQ(Sh(Cli() + " local kill 1" + at), 0);
  EXPECT_EQ(Sh(Cli() + " inspect /ck/a" + at + " --node 3 >/dev/null"), 4);
}

// Shard space is reserved before anything is acknowledged: a put that does
// not fit is ENOSPC for the writer, and what was committed stays readable.
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
    std::vector<uint8_t> junk(10000);
    fern::testing::FillRandom(rng, junk.data(), junk.size());
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

}  // namespace
