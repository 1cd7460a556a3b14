// ShardStore conformance, for the file-backed store (data tier on tmpfs,
// durable tier on disk) and the in-memory fake, plus what only files do:
// recovery after a crash, bit rot, a tmpfs too small to reserve.
#include "daemon/shard_store.h"

#include <fcntl.h>
#include <poll.h>

#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>
#include <tuple>

#include <gtest/gtest.h>

#include "daemon/durable_flusher.h"
#include "ec/crc32c.h"
#include "ec/erasure_coder.h"
#include "daemon/fiemap_probe.h"
#include "test_util.h"

namespace fern::daemon {
namespace {

constexpr uint64_t kSlot = 64 * 1024;

std::string TempDir(const std::string& base) {
  // Parameterized names contain '/': flatten, or the parent would be left behind.
  std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  std::replace(name.begin(), name.end(), '/', '_');
  std::string d = base + "/fern-store-test-" + std::to_string(getpid()) + "-" + name;
  std::filesystem::remove_all(d);
  return d;
}

StatusOr<std::unique_ptr<ShardStore>> Open(const std::string& kind, const std::string& dir,
                                           uint64_t slots) {
  if (kind == "memory") return NewMemoryShardStore(slots, kSlot);
  // "disk_staged" is what the daemon opens on a disk: not populated, so
  // writes are staged and written with write(2) (shard_store.cc);
  // "disk_prepared" also prepares its fresh slots in the background, as the
  // daemon's parity tier does.
  const bool staged = kind == "disk_staged" || kind == "disk_prepared";
  return OpenFileShardStore({.dir = dir, .capacity = slots * kSlot, .slot_capacity = kSlot,
                             .durable = kind != "tmpfs", .prefault = !staged,
                             .prepare = kind == "disk_prepared"});
}

Status Put(ShardStore& s, ShardKey k, const std::vector<uint8_t>& bytes, uint64_t seq = 0) {
  FERN_ASSIGN_OR_RETURN(auto r, s.Reserve(k, bytes.size()));
  std::copy(bytes.begin(), bytes.end(), r->data().begin());
  return s.Commit(std::move(r), ShardMeta{k, bytes.size(), seq, 1, ec::Crc32c(bytes)});
}

std::vector<uint8_t> Bytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> v(n);
  fern::testing::FillRandom(rng, v.data(), n);
  return v;
}

class ShardStoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = TempDir(GetParam() == "tmpfs" || GetParam() == "memory" ? "/dev/shm" : "/var/tmp");
    auto s = Open(GetParam(), dir_, 8);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string dir_;
  std::unique_ptr<ShardStore> store_;
};

TEST_P(ShardStoreTest, RoundTripsAtTheEdges) {
  auto rng = fern::testing::TestRng();
  for (size_t n : {size_t{0}, size_t{1}, size_t{4097}, size_t{kSlot}}) {
    ShardKey k{7, 1, n, 3};
    auto bytes = Bytes(rng, n);
    ASSERT_TRUE(Put(*store_, k, bytes).ok());
    auto v = store_->Read(k);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(std::vector<uint8_t>(v->data.begin(), v->data.end()), bytes);
    EXPECT_EQ(v->meta.length, n);
  }
  EXPECT_EQ(store_->List().size(), 4u);
  EXPECT_EQ(store_->Read({7, 1, 999, 3}).status().code(), StatusCode::kNotFound);
}

TEST_P(ShardStoreTest, FullIsResourceExhaustedAndFreesOnRemove) {
  auto rng = fern::testing::TestRng();
  for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(Put(*store_, {1, 1, i, 0}, Bytes(rng, 100)).ok());
  auto full = store_->Reserve({1, 1, 8, 0}, 100);
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(ToErrno(full.status()), ENOSPC);
  EXPECT_NE(full.status().message().find("full"), std::string_view::npos);
  ASSERT_TRUE(store_->Remove({1, 1, 3, 0}).ok());
  EXPECT_TRUE(Put(*store_, {1, 1, 8, 0}, Bytes(rng, 100)).ok());
  // Nothing committed was touched.
  for (uint64_t i : {0, 1, 2, 4, 5, 6, 7, 8}) EXPECT_TRUE(store_->Read({1, 1, i, 0}).ok()) << i;
}

TEST_P(ShardStoreTest, RejectsOversizeAndTornTransfers) {
  EXPECT_EQ(store_->Reserve({1, 1, 0, 0}, kSlot + 1).status().code(), StatusCode::kInvalidArgument);
  auto r = store_->Reserve({1, 1, 0, 0}, 10);
  ASSERT_TRUE(r.ok());
  std::fill((*r)->data().begin(), (*r)->data().end(), 7);
  Status s = store_->Commit(std::move(r).value(), ShardMeta{{1, 1, 0, 0}, 10, 0, 1, 12345});
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  EXPECT_EQ(store_->Read({1, 1, 0, 0}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Usage().slots_used, 0u);
}

TEST_P(ShardStoreTest, AbandonedReservationFreesItsSlot) {
  {
    auto r = store_->Reserve({2, 1, 0, 0}, 100);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(store_->Usage().slots_used, 1u);
  }
  EXPECT_EQ(store_->Usage().slots_used, 0u);
  EXPECT_EQ(store_->Read({2, 1, 0, 0}).status().code(), StatusCode::kNotFound);
}

TEST_P(ShardStoreTest, RewriteGoesToANewSlotAndFreesTheOld) {
  auto rng = fern::testing::TestRng();
  ShardKey k{3, 1, 0, 5};
  ASSERT_TRUE(Put(*store_, k, Bytes(rng, 1000), 1).ok());
  auto newer = Bytes(rng, 2000);
  ASSERT_TRUE(Put(*store_, k, newer, 2).ok());
  auto v = store_->Read(k);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(std::vector<uint8_t>(v->data.begin(), v->data.end()), newer);
  EXPECT_EQ(v->meta.seq, 2u);
  v = Status(StatusCode::kCancelled, "drop the view");
  EXPECT_EQ(store_->Usage().slots_used, 1u);
}

TEST_P(ShardStoreTest, AReaderPinsItsSlot) {
  auto rng = fern::testing::TestRng();
  for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(Put(*store_, {4, 1, i, 0}, Bytes(rng, 64)).ok());
  auto bytes = std::vector<uint8_t>();
  {
    auto v = store_->Read({4, 1, 0, 0});
    ASSERT_TRUE(v.ok());
    bytes.assign(v->data.begin(), v->data.end());
    ASSERT_TRUE(store_->Remove({4, 1, 0, 0}).ok());
    // The slot is not reused while the view lives...
    EXPECT_EQ(store_->Reserve({4, 1, 9, 0}, 64).status().code(), StatusCode::kResourceExhausted);
    EXPECT_EQ(std::vector<uint8_t>(v->data.begin(), v->data.end()), bytes);
  }
  // ...and is free once it is gone.
  EXPECT_TRUE(store_->Reserve({4, 1, 9, 0}, 64).ok());
}

TEST_P(ShardStoreTest, ConcurrentWritersAndReaders) {
  auto s = Open(GetParam(), dir_ + "-c", 64);
  ASSERT_TRUE(s.ok());
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(fern::testing::RunSeed() + t);
      for (int round = 0; round < 50; ++round) {
        ShardKey k{uint64_t(t), 1, uint64_t(round % 8), 0};
        auto b = Bytes(rng, 1 + rng() % kSlot);
        if (!Put(**s, k, b, round).ok()) ++errors;
        auto v = (*s)->Read(k);
        if (!v.ok() || std::vector<uint8_t>(v->data.begin(), v->data.end()) != b) ++errors;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors, 0);
  EXPECT_EQ((*s)->Usage().slots_used, 32u);
  s = Status(StatusCode::kCancelled, "close");
  std::filesystem::remove_all(dir_ + "-c");
}

// A batch commits its good shards and refuses the torn one; what it
// committed is durable (found again after reopening, for the file stores).
TEST_P(ShardStoreTest, CommitBatchCommitsEachShardOnItsOwn) {
  auto rng = fern::testing::TestRng();
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<ShardStore::PendingCommit> batch;
  for (uint64_t i = 0; i < 4; ++i) {
    bytes.push_back(Bytes(rng, 1000 + i * 7000));
    ShardKey k{21, 1, i, 4};
    auto r = store_->Reserve(k, bytes.back().size());
    ASSERT_TRUE(r.ok());
    std::copy(bytes.back().begin(), bytes.back().end(), (*r)->data().begin());
    uint32_t crc = ec::Crc32c(bytes.back());
    if (i == 2) crc ^= 1;  // torn in transit
    batch.push_back({std::move(r).value(), ShardMeta{k, bytes.back().size(), 5, 1, crc}});
  }
  auto results = store_->CommitBatch(std::move(batch));
  ASSERT_EQ(results.size(), 4u);
  for (uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(results[i].ok(), i != 2) << i << ": " << results[i].ToString();
  }
  EXPECT_EQ(results[2].code(), StatusCode::kDataLoss);
  EXPECT_EQ(store_->Usage().slots_used, 3u);  // the torn one's slot is free again
  if (GetParam() != "memory") {
    store_.reset();
    auto s = Open(GetParam(), dir_, 8);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  for (uint64_t i = 0; i < 4; ++i) {
    auto v = store_->Read({21, 1, i, 4});
    if (i == 2) {
      EXPECT_EQ(v.status().code(), StatusCode::kNotFound);
      continue;
    }
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(std::vector<uint8_t>(v->data.begin(), v->data.end()), bytes[i]);
    EXPECT_EQ(v->meta.seq, 5u);
  }
}

// PSW's in-place path: bytes changed through OpenForUpdate and resealed are
// what a reader (and, for the file stores, a reopened store) gets, with the
// new seq and epoch; a change never resealed reads as corrupt, not as valid.
TEST_P(ShardStoreTest, InPlaceUpdateIsReadableOnlyOnceResealed) {
  auto rng = fern::testing::TestRng();
  auto bytes = Bytes(rng, 10000);
  const ShardKey k{31, 1, 0, 2};
  ASSERT_TRUE(Put(*store_, k, bytes).ok());
  {
    auto w = store_->OpenForUpdate(k);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    for (size_t i = 4093; i < 4200; ++i) w->data[i] ^= 0x5a;  // across a page edge
    for (size_t i = 4093; i < 4200; ++i) bytes[i] ^= 0x5a;
  }
  EXPECT_EQ(store_->Read(k).status().code(), StatusCode::kDataLoss);  // not resealed yet
  ASSERT_TRUE(store_->Reseal(k, 3, 2).ok());
  if (GetParam() != "memory") {
    store_.reset();
    auto s = Open(GetParam(), dir_, 8);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  auto v = store_->Read(k);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(std::vector<uint8_t>(v->data.begin(), v->data.end()), bytes);
  EXPECT_EQ(v->meta.seq, 3u);
  EXPECT_EQ(v->meta.epoch, 2u);
  EXPECT_EQ(store_->Reseal({31, 1, 9, 2}, 1, 1).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->OpenForUpdate({31, 1, 9, 2}).status().code(), StatusCode::kNotFound);
}

// Shards submitted from the owner's thread are committed on the flusher's
// and completed back on the owner's in Drain, each exactly once.
TEST_P(ShardStoreTest, DurableFlusherCompletesEverySubmittedShard) {
  auto rng = fern::testing::TestRng();
  DurableFlusher flusher(store_.get());
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<int> completed(6, 0);
  std::vector<Status> status(6);
  for (int i = 0; i < 6; ++i) {
    bytes.push_back(Bytes(rng, 3000 + i));
    ShardKey k{33, 1, static_cast<uint64_t>(i), 5};
    auto r = store_->Reserve(k, bytes.back().size());
    ASSERT_TRUE(r.ok());
    std::copy(bytes.back().begin(), bytes.back().end(), (*r)->data().begin());
    flusher.Submit({std::move(r).value(), ShardMeta{k, bytes.back().size(), 0, 1, ec::Crc32c(bytes.back())}},
                   [&, i](Status s) {
                     ++completed[i];
                     status[i] = s;
                   });
  }
  EXPECT_EQ(flusher.in_flight(), 6u);
  for (int spins = 0; flusher.in_flight() > 0 && spins < 5000; ++spins) {
    pollfd p{flusher.event_fd(), POLLIN, 0};
    poll(&p, 1, 10);
    flusher.Drain();
  }
  EXPECT_EQ(flusher.in_flight(), 0u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(completed[i], 1) << i;
    EXPECT_TRUE(status[i].ok()) << status[i].ToString();
    auto v = store_->Read({33, 1, static_cast<uint64_t>(i), 5});
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(std::vector<uint8_t>(v->data.begin(), v->data.end()), bytes[i]);
  }
  EXPECT_EQ(flusher.shards(), 6u);
  EXPECT_GE(flusher.batches(), 1u);
}

// A parity shard records its stripe's data CRCs (degraded reads check what
// they decode against them) until it is changed in place: the store cannot
// know the new data's CRCs, so Reseal drops them rather than keep stale ones,
// unless the caller says what they became.
TEST_P(ShardStoreTest, ParityKeepsItsStripeCrcsUntilUpdatedInPlace) {
  auto rng = fern::testing::TestRng();
  const auto bytes = Bytes(rng, 3000);
  const ShardKey k{12, 1, 0, 4};
  auto r = store_->Reserve(k, bytes.size());
  ASSERT_TRUE(r.ok());
  std::copy(bytes.begin(), bytes.end(), (*r)->data().begin());
  ShardMeta meta{k, bytes.size(), 0, 1, ec::Crc32c(bytes)};
  meta.stripe_crcs = {0x11111111, 0x22222222, 0x33333333, 0xdeadbeef};
  ASSERT_TRUE(store_->Commit(std::move(r).value(), meta).ok());
  ASSERT_TRUE(Put(*store_, {12, 1, 0, 0}, bytes).ok());
  {
    auto v = store_->Read(k);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(v->meta.stripe_crcs, meta.stripe_crcs);
    auto d = store_->Read({12, 1, 0, 0});
    ASSERT_TRUE(d.ok());
    EXPECT_TRUE(d->meta.stripe_crcs.empty());
    auto listed = store_->List();
    auto it = std::find_if(listed.begin(), listed.end(), [&](const ShardMeta& m) { return m.key == k; });
    ASSERT_NE(it, listed.end());
    EXPECT_EQ(it->stripe_crcs, meta.stripe_crcs);
  }
  // A fence moves only the epoch: same seq, same bytes, the record stays.
  ASSERT_TRUE(store_->Reseal(k, 0, 2).ok());
  {
    auto v = store_->Read(k);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->meta.stripe_crcs, meta.stripe_crcs);
    EXPECT_EQ(v->meta.epoch, 2u);
  }
  {
    auto w = store_->OpenForUpdate(k);
    ASSERT_TRUE(w.ok());
    w->data[7] ^= 0x40;
  }
  ASSERT_TRUE(store_->Reseal(k, 1, 2).ok());
  {
    auto v = store_->Read(k);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_TRUE(v->meta.stripe_crcs.empty());
    EXPECT_EQ(v->meta.seq, 1u);
  }
  // The PSW parity tracks the data CRCs through its deltas and says them.
  const std::vector<uint32_t> updated = {0x11111111, 0x44444444, 0x33333333, 0xdeadbeef};
  {
    auto w = store_->OpenForUpdate(k);
    ASSERT_TRUE(w.ok());
    w->data[9] ^= 0x01;
  }
  ASSERT_TRUE(store_->Reseal(k, 2, 2, true, std::nullopt, updated).ok());
  {
    auto v = store_->Read(k);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(v->meta.stripe_crcs, updated);
    EXPECT_EQ(v->meta.seq, 2u);
  }
  // An empty record drops them even where seq and bytes stay.
  ASSERT_TRUE(store_->Reseal(k, 2, 3, true, std::nullopt, std::vector<uint32_t>{}).ok());
  EXPECT_TRUE(store_->Read(k)->meta.stripe_crcs.empty());
  EXPECT_EQ(store_->Reseal(k, 2, 3, true, std::nullopt, std::vector<uint32_t>(ec::kMaxShards + 1, 1)).code(),
            StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Stores, ShardStoreTest,
                         ::testing::Values("memory", "tmpfs", "disk", "disk_staged", "disk_prepared"),
                         [](const auto& info) { return info.param; });

TEST(FileShardStore, ReopenRecoversCommittedShardsOnly) {
  auto rng = fern::testing::TestRng();
  const std::string dir = TempDir("/var/tmp");
  auto a = Bytes(rng, 5000), b = Bytes(rng, kSlot);
  {
    auto s = Open("disk", dir, 8);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE(Put(**s, {9, 1, 0, 0}, a).ok());
    ASSERT_TRUE(Put(**s, {9, 1, 1, 4}, b, 3).ok());
    // A write that never commits (the writer dies): its bytes reach the slab
    // but no header is ever written. Dropping the reservation frees the slot
    // in memory only, so the file is left exactly as a crash would leave it.
    auto torn = (*s)->Reserve({9, 1, 2, 0}, 100);
    ASSERT_TRUE(torn.ok());
    std::fill((*torn)->data().begin(), (*torn)->data().end(), 1);
  }
  auto s = Open("disk", dir, 8);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->List().size(), 2u);
  {
    auto va = (*s)->Read({9, 1, 0, 0});
    auto vb = (*s)->Read({9, 1, 1, 4});
    ASSERT_TRUE(va.ok() && vb.ok());
    EXPECT_EQ(std::vector<uint8_t>(va->data.begin(), va->data.end()), a);
    EXPECT_EQ(std::vector<uint8_t>(vb->data.begin(), vb->data.end()), b);
    EXPECT_EQ(vb->meta.seq, 3u);
  }  // views end before the store closes
  EXPECT_EQ((*s)->Read({9, 1, 2, 0}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ((*s)->Usage().slots_used, 2u);
  s = Status(StatusCode::kCancelled, "close");
  std::filesystem::remove_all(dir);
}

// The slot header as format 1 wrote it (before stripe data CRCs), pinned
// here: slabs written by an older daemon must still open.
struct FormatOneHeader {
  uint64_t magic;
  uint32_t format;
  uint32_t data_crc;
  uint64_t file_id, version, stripe;
  uint32_t index, reserved;
  uint64_t length, seq, epoch;
  uint32_t header_crc;  // CRC32C of every byte before it
  uint32_t pad;
};

// Stripe data CRCs (up to k = 32 of them) survive a reopen, on tmpfs and on
// disk; a parity shard whose header is format 1 opens with none.
TEST(FileShardStore, StripeCrcsSurviveReopenAndFormatOneHeadersStillOpen) {
  auto rng = fern::testing::TestRng();
  for (const std::string kind : {"tmpfs", "disk_staged"}) {
    SCOPED_TRACE(kind);
    const std::string dir = TempDir(kind == "tmpfs" ? "/dev/shm" : "/var/tmp");
    const auto a = Bytes(rng, 4000), b = Bytes(rng, kSlot);
    std::vector<uint32_t> many(32);
    for (auto& c : many) c = static_cast<uint32_t>(rng());
    {
      auto s = Open(kind, dir, 8);
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      for (const auto& [key, bytes, crcs] : {std::tuple{ShardKey{3, 1, 0, 4}, a, std::vector<uint32_t>{}},
                                            std::tuple{ShardKey{3, 1, 1, 33}, b, many}}) {
        auto r = (*s)->Reserve(key, bytes.size());
        ASSERT_TRUE(r.ok());
        std::copy(bytes.begin(), bytes.end(), (*r)->data().begin());
        ShardMeta meta{key, bytes.size(), 2, 1, ec::Crc32c(bytes)};
        meta.stripe_crcs = crcs.empty() ? std::vector<uint32_t>{7, 8, 9, 10} : crcs;
        ASSERT_TRUE((*s)->Commit(std::move(r).value(), meta).ok());
      }
    }
    {
      // A shard with no data CRCs is written as format 1 (an older daemon
      // reads it): pinned here. It lands in slot 2, the lowest free one.
      auto s = Open(kind, dir, 8);
      ASSERT_TRUE(s.ok());
      ASSERT_TRUE(Put(**s, {3, 1, 2, 0}, a).ok());
    }
    {
      std::fstream f(dir + "/shards.slab", std::ios::in | std::ios::out | std::ios::binary);
      FormatOneHeader h{};
      f.seekg(2 * (4096 + kSlot));
      f.read(reinterpret_cast<char*>(&h), sizeof h);
      EXPECT_EQ(h.format, 1u);
      EXPECT_EQ(h.index, 0u);
      EXPECT_EQ(h.header_crc,
                ec::Crc32c({reinterpret_cast<const uint8_t*>(&h), offsetof(FormatOneHeader, header_crc)}));
    }
    {
      // Rewrite slot 0's header (the first shard: the free list hands out
      // slot 0 first) as format 1 wrote it.
      std::fstream f(dir + "/shards.slab", std::ios::in | std::ios::out | std::ios::binary);
      FormatOneHeader h{};
      f.read(reinterpret_cast<char*>(&h), sizeof h);
      ASSERT_EQ(h.format, 2u);
      ASSERT_EQ(h.index, 4u);
      h.format = 1;
      h.reserved = 0;
      h.header_crc = ec::Crc32c({reinterpret_cast<const uint8_t*>(&h), offsetof(FormatOneHeader, header_crc)});
      h.pad = 0;
      std::vector<char> page(4096, 0);
      std::memcpy(page.data(), &h, sizeof h);
      f.seekp(0);
      f.write(page.data(), static_cast<std::streamsize>(page.size()));
    }
    auto s = Open(kind, dir, 8);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    {
      auto va = (*s)->Read({3, 1, 0, 4});
      ASSERT_TRUE(va.ok()) << va.status().ToString();
      EXPECT_EQ(std::vector<uint8_t>(va->data.begin(), va->data.end()), a);
      EXPECT_EQ(va->meta.seq, 2u);
      EXPECT_TRUE(va->meta.stripe_crcs.empty());
      auto vb = (*s)->Read({3, 1, 1, 33});
      ASSERT_TRUE(vb.ok()) << vb.status().ToString();
      EXPECT_EQ(std::vector<uint8_t>(vb->data.begin(), vb->data.end()), b);
      EXPECT_EQ(vb->meta.stripe_crcs, many);
    }
    s = Status(StatusCode::kCancelled, "close");
    std::filesystem::remove_all(dir);
  }
}

// A staged store on disk writes shard data with O_DIRECT and reads it back
// through its mapping: a slot reused after its old bytes were read (so they
// sit in the page cache) must show the new bytes, now and after a reopen.
TEST(FileShardStore, StagedWritesReadBackThroughTheMappingAndAfterReopen) {
  auto rng = fern::testing::TestRng();
  const std::string dir = TempDir("/var/tmp");
  std::vector<std::pair<ShardKey, std::vector<uint8_t>>> want;
  {
    auto s = Open("disk_staged", dir, 2);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    for (int round = 0; round < 6; ++round) {
      // Two slots: every put after the second reuses a freed slot.
      for (uint32_t i = 0; i < 2; ++i) {
        const ShardKey k{11, 1, i, 0};
        const size_t n = round % 3 == 0 ? kSlot : 1 + rng() % (kSlot - 1);
        auto bytes = Bytes(rng, n);
        ASSERT_TRUE((*s)->Remove(k).ok() || round == 0);
        ASSERT_TRUE(Put(**s, k, bytes, round).ok());
        auto v = (*s)->Read(k);
        ASSERT_TRUE(v.ok()) << v.status().ToString();
        ASSERT_EQ(std::vector<uint8_t>(v->data.begin(), v->data.end()), bytes)
            << "round " << round << " shard " << i << " length " << n;
        if (round == 5) want.emplace_back(k, bytes);
      }
    }
  }
  auto s = Open("disk_staged", dir, 2);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  for (auto& [k, bytes] : want) {
    auto v = (*s)->Read(k);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(std::vector<uint8_t>(v->data.begin(), v->data.end()), bytes) << k.ToString();
  }
  s = Status(StatusCode::kCancelled, "close");
  std::filesystem::remove_all(dir);
}

TEST(FileShardStore, FlippedByteIsDataLoss) {
  auto rng = fern::testing::TestRng();
  const std::string dir = TempDir("/dev/shm");
  {
    auto s = Open("tmpfs", dir, 4);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE(Put(**s, {5, 1, 0, 0}, Bytes(rng, 3000)).ok());
  }
  {
    // Flip one byte of the shard data (slot 0's data starts after its 4 KiB header page).
    std::fstream f(dir + "/shards.slab", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(4096 + 1234);
    char c;
    f.read(&c, 1);
    c ^= 0x20;
    f.seekp(4096 + 1234);
    f.write(&c, 1);
  }
  auto s = Open("tmpfs", dir, 4);
  ASSERT_TRUE(s.ok());
  {
    auto v = (*s)->Read({5, 1, 0, 0});
    EXPECT_EQ(v.status().code(), StatusCode::kDataLoss) << v.status().ToString();
    EXPECT_EQ(ToErrno(v.status()), EIO);
  }
  {
    // A caller that checks end to end gets the bytes and the stored CRC, and
    // the mismatch is there for it to see.
    auto v = (*s)->Read({5, 1, 0, 0}, ShardStore::Check::kTrustCaller);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_NE(ec::Crc32c(v->data), v->meta.crc32c);
  }
  s = Status(StatusCode::kCancelled, "close");
  std::filesystem::remove_all(dir);
}

TEST(FileShardStore, TooSmallTmpfsFailsAtOpenWithENOSPC) {
  const std::string mnt = TempDir("/tmp");
  std::filesystem::create_directories(mnt);
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=2m") != 0) {
    GTEST_SKIP() << "cannot mount a small tmpfs here (needs root): " << std::strerror(errno);
  }
  auto s = OpenFileShardStore({.dir = mnt + "/d", .capacity = 8 << 20, .slot_capacity = kSlot});
  EXPECT_EQ(s.status().code(), StatusCode::kResourceExhausted) << s.status().ToString();
  EXPECT_NE(s.status().message().find("No space left"), std::string_view::npos);
  // A store that fits works on the same mount.
  auto ok = OpenFileShardStore({.dir = mnt + "/e", .capacity = 1 << 20, .slot_capacity = kSlot});
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
  ok = Status(StatusCode::kCancelled, "close");
  umount2(mnt.c_str(), MNT_DETACH);
  std::filesystem::remove_all(mnt);
}

}  // namespace
}  // namespace fern::daemon

namespace fern::daemon {
namespace {

// Polls until no free slot is left to prepare; false after `seconds`.
bool WaitPrepared(const ShardStore& s, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (s.Usage().slots_unprepared > 0) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A fresh slab on disk is fallocate'd (unwritten extents). Preparing writes
// zeros only where nothing is written, so no byte of the file changes: not
// the committed shards, not leftovers in free slots (a torn write, a header
// from another layout). Afterwards no extent is unwritten, every slot can
// be filled, and a reopen finds nothing to prepare and writes nothing.
TEST(FileShardStore, PreparingChangesNoByteAndHappensOnce) {
  auto rng = fern::testing::TestRng();
  const std::string dir = TempDir("/var/tmp");
  const std::string slab = dir + "/shards.slab";
  constexpr uint64_t kSlots = 12;
  std::vector<std::pair<ShardKey, std::vector<uint8_t>>> want;
  ASSERT_TRUE(Open("disk_staged", dir, kSlots).ok());  // creates the slab, not preparing
  const int64_t fresh = fern::testing::UnwrittenBytes(slab);
  if (fresh <= 0) GTEST_SKIP() << dir << ": no unwritten extents to prepare (FIEMAP: " << fresh << ")";
  {
    // Leftovers at random places of the slab.
    std::fstream f(slab, std::ios::in | std::ios::out | std::ios::binary);
    const uint64_t size = std::filesystem::file_size(slab);
    for (int i = 0; i < 5; ++i) {
      const auto junk = Bytes(rng, 1 + rng() % 6000);
      f.seekp(static_cast<std::streamoff>(rng() % (size - junk.size())));
      f.write(reinterpret_cast<const char*>(junk.data()), static_cast<std::streamsize>(junk.size()));
    }
  }
  {
    auto s = Open("disk_staged", dir, kSlots);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    for (uint64_t i = 0; i < 3; ++i) {
      want.emplace_back(ShardKey{21, 1, i, 0}, Bytes(rng, kSlot));
      ASSERT_TRUE(Put(**s, want.back().first, want.back().second).ok());
    }
    // A short shard, removed: its slot is free and written only in part.
    ASSERT_TRUE(Put(**s, {21, 1, 99, 0}, Bytes(rng, 5000)).ok());
    ASSERT_TRUE((*s)->Remove({21, 1, 99, 0}).ok());
  }
  const std::string before = FileBytes(slab);
  {
    auto s = Open("disk_prepared", dir, kSlots);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    ASSERT_TRUE(WaitPrepared(**s, 60)) << (*s)->Usage().slots_unprepared << " slots left";
    EXPECT_GT((*s)->Usage().slots_zeroed, 0u);
  }
  EXPECT_EQ(fern::testing::UnwrittenBytes(slab), 0);
  EXPECT_TRUE(FileBytes(slab) == before) << "preparing changed bytes of the slab";
  {
    auto s = Open("disk_prepared", dir, kSlots);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ((*s)->Usage().slots_unprepared, 0u);
    for (auto& [k, bytes] : want) {
      auto v = (*s)->Read(k);
      ASSERT_TRUE(v.ok()) << v.status().ToString();
      EXPECT_EQ(std::vector<uint8_t>(v->data.begin(), v->data.end()), bytes) << k.ToString();
    }
    // Every slot is usable: fill the store, then it is full.
    for (uint64_t i = want.size(); i < kSlots; ++i) {
      ASSERT_TRUE(Put(**s, {21, 1, i, 0}, Bytes(rng, 1 + rng() % kSlot)).ok()) << i;
    }
    EXPECT_EQ((*s)->Reserve({21, 1, kSlots, 0}, 1).status().code(), StatusCode::kResourceExhausted);
    EXPECT_EQ((*s)->Usage().slots_zeroed, 0u);  // nothing was written twice
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fern::daemon
