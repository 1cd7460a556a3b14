// FileMetaStore: records survive reopening; a torn or corrupt tail (a crash
// mid-append) loses only that tail; the newest record of a path wins.
#include "daemon/meta_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "fern_wire.pb.h"
#include "test_util.h"

namespace fern::daemon {
namespace {

wire::FileRecord Rec(const std::string& path, uint64_t generation) {
  wire::FileRecord r;
  r.set_path(path);
  r.set_generation(generation);
  r.set_size(generation * 100);
  return r;
}

std::map<std::string, uint64_t> Load(MetaStore& s) {
  std::map<std::string, uint64_t> out;
  auto all = s.LoadAll();
  EXPECT_TRUE(all.ok());
  for (auto& r : *all) out[r.path()] = r.generation();
  return out;
}

class MetaStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/fern-meta-" + std::to_string(getpid());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(MetaStoreTest, RecordsSurviveReopen) {
  {
    auto s = OpenFileMetaStore(dir_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    for (int i = 0; i < 50; ++i) ASSERT_TRUE((*s)->Put(Rec("/f" + std::to_string(i % 10), i)).ok());
  }
  auto s = OpenFileMetaStore(dir_);
  ASSERT_TRUE(s.ok());
  auto got = Load(**s);
  ASSERT_EQ(got.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(got["/f" + std::to_string(i)], 40u + i);
  // Compacted: one frame per path.
  EXPECT_LT(std::filesystem::file_size(dir_ + "/meta.log"), 10u * 64);
}

TEST_F(MetaStoreTest, TornTailLosesOnlyTheTail) {
  {
    auto s = OpenFileMetaStore(dir_);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Put(Rec("/a", 1)).ok());
    ASSERT_TRUE((*s)->Put(Rec("/b", 2)).ok());
  }
  auto rng = fern::testing::TestRng();
  {
    // A half-written frame, then garbage.
    int fd = open((dir_ + "/meta.log").c_str(), O_WRONLY | O_APPEND);
    ASSERT_GE(fd, 0);
    const uint32_t head[2] = {1000, 12345};
    ASSERT_EQ(write(fd, head, sizeof head), static_cast<ssize_t>(sizeof head));
    uint8_t junk[37];
    fern::testing::FillRandom(rng, junk, sizeof junk);
    ASSERT_EQ(write(fd, junk, sizeof junk), static_cast<ssize_t>(sizeof junk));
    close(fd);
  }
  auto s = OpenFileMetaStore(dir_);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  auto got = Load(**s);
  EXPECT_EQ(got, (std::map<std::string, uint64_t>{{"/a", 1}, {"/b", 2}}));
  ASSERT_TRUE((*s)->Put(Rec("/c", 3)).ok());  // appends after the good prefix
  s = OpenFileMetaStore(dir_);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(Load(**s).size(), 3u);
}

TEST_F(MetaStoreTest, CorruptFrameStopsTheScan) {
  {
    auto s = OpenFileMetaStore(dir_);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Put(Rec("/a", 1)).ok());
    ASSERT_TRUE((*s)->Put(Rec("/b", 2)).ok());
  }
  // Flip a byte inside the second frame's body.
  const auto size = std::filesystem::file_size(dir_ + "/meta.log");
  int fd = open((dir_ + "/meta.log").c_str(), O_RDWR);
  uint8_t b;
  ASSERT_EQ(pread(fd, &b, 1, size - 2), 1);
  b ^= 0xff;
  ASSERT_EQ(pwrite(fd, &b, 1, size - 2), 1);
  close(fd);
  auto s = OpenFileMetaStore(dir_);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(Load(**s), (std::map<std::string, uint64_t>{{"/a", 1}}));
}

TEST_F(MetaStoreTest, UnwritableDirectoryIsAClearError) {
  auto s = OpenFileMetaStore("/proc/fern-no-such-dir/meta");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("/proc/fern-no-such-dir"), std::string_view::npos);
}

}  // namespace
}  // namespace fern::daemon
