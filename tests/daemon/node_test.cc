// A whole k=4 m=2 cluster of six Nodes in one process on the seeded loopback
// network: files round-trip bit-exact, survive any two node losses, fail
// with DataLoss (never wrong bytes) after a third, and a failed write leaves
// the previous version readable.
#include "daemon/node.h"

#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <set>

#include <gtest/gtest.h>

#include "daemon/node_internal.h"
#include "ec/crc32c.h"
#include "fern_wire.pb.h"
#include "test_util.h"
#include "transport/loopback_transport.h"

namespace fern::daemon {
namespace {

using namespace std::chrono_literals;

constexpr int kNodes = 6;  // default cluster size: every stripe spans every node
constexpr uint64_t kShard = 4096;
constexpr uint64_t kStripe = 4 * kShard;

// Fault injection by wrapping: serves data shards with one byte flipped but
// the original CRC, like bit rot the store itself did not catch.
class CorruptingStore final : public ShardStore {
 public:
  explicit CorruptingStore(std::unique_ptr<ShardStore> inner) : inner_(std::move(inner)) {}
  StatusOr<std::unique_ptr<Reservation>> Reserve(const ShardKey& k, uint64_t n) override {
    return inner_->Reserve(k, n);
  }
  Status Commit(std::unique_ptr<Reservation> r, const ShardMeta& m) override {
    return inner_->Commit(std::move(r), m);
  }
  StatusOr<View> Read(const ShardKey& key, Check check) const override {
    auto v = inner_->Read(key, check);
    if (!v.ok() || v->data.empty()) return v;
    auto copy = std::make_shared<std::vector<uint8_t>>(v->data.begin(), v->data.end());
    (*copy)[copy->size() / 2] ^= 0x40;
    ++flipped;
    return View{v->meta, *copy, copy};
  }
  StatusOr<MutableView> OpenForUpdate(const ShardKey& k, Check check) override {
    return inner_->OpenForUpdate(k, check);
  }
  Status Reseal(const ShardKey& k, uint64_t seq, uint64_t epoch, bool sync, std::optional<uint32_t> crc,
                std::optional<std::vector<uint32_t>> stripe_crcs) override {
    return inner_->Reseal(k, seq, epoch, sync, crc, std::move(stripe_crcs));
  }
  Status Sync() override { return inner_->Sync(); }
  Status Remove(const ShardKey& k) override { return inner_->Remove(k); }
  std::vector<ShardMeta> List() const override { return inner_->List(); }
  StoreUsage Usage() const override { return inner_->Usage(); }
  mutable int flipped = 0;

 private:
  std::unique_ptr<ShardStore> inner_;
};

class Cluster {
 public:
  // replace_after: NodeOptions::replace_after (0: off, so that no test's
  // stripes move unless it asks).
  explicit Cluster(uint64_t slots_per_store = 512, int nodes = kNodes, int corrupt_node = -1,
                   uint64_t seed = fern::testing::RunSeed(), Duration replace_after = Duration::zero(),
                   int min_shards = 0, Duration read_hedge = NodeOptions{}.read_hedge,
                   Duration write_hedge = NodeOptions{}.write_hedge)
      : net_(seed),
        replace_after_(replace_after),
        min_shards_(min_shards),
        read_hedge_(read_hedge),
        write_hedge_(write_hedge) {
    std::vector<placement::NodeInfo> infos;
    for (int i = 0; i < nodes; ++i) infos.push_back({NodeId(i), "", true});
    view_ = *placement::ClusterView::Make(infos);
    for (int i = 0; i < nodes; ++i) {
      transports_.push_back(net_.AddNode(NodeId(i)));
      if (i == corrupt_node) {
        auto store = std::make_unique<CorruptingStore>(NewMemoryShardStore(slots_per_store, kShard));
        corrupting = store.get();
        data_.push_back(std::move(store));
      } else {
        data_.push_back(NewMemoryShardStore(slots_per_store, kShard));
      }
      parity_.push_back(NewMemoryShardStore(slots_per_store, kShard));
      metas_.push_back(NewMemoryMetaStore());
      nodes_.push_back(MakeNode(i));
    }
  }

  Status Put(int via, const std::string& path, const std::vector<uint8_t>& bytes) {
    auto owned = std::make_shared<std::vector<uint8_t>>(bytes);
    std::optional<Status> result;
    nodes_[via]->Put(path, *owned, owned, [&](Status s) { result = s; });
    Run([&] { return result.has_value(); });
    return result ? *result : InternalError("put never completed");
  }

  StatusOr<FileData> Get(int via, const std::string& path) {
    std::optional<StatusOr<FileData>> result;
    nodes_[via]->Get(path, [&](StatusOr<FileData> r) { result = std::move(r); });
    Run([&] { return result.has_value(); });
    return result ? std::move(*result) : StatusOr<FileData>(InternalError("get never completed"));
  }

  Status Put(int via, const std::string& path, const std::vector<uint8_t>& bytes,
             const Caller& who, uint32_t mode) {
    auto owned = std::make_shared<std::vector<uint8_t>>(bytes);
    return Await<Status>([&](auto done) { nodes_[via]->Put(path, *owned, owned, who, mode, done); });
  }

  StatusOr<std::vector<uint8_t>> Get(int via, const std::string& path, const Caller& who) {
    auto out = std::make_shared<std::vector<uint8_t>>();
    auto got = Await<StatusOr<Node::FileInfo>>([&](auto done) {
      nodes_[via]->GetInto(
          path, who,
          [out](uint64_t n) -> StatusOr<std::span<uint8_t>> {
            out->resize(n);
            return std::span<uint8_t>(*out);
          },
          done);
    });
    if (!got.ok()) return got.status();
    return *out;
  }

  // GetToFile into a memfd that starts longer than the file and full of
  // other bytes; what the memfd holds afterwards.
  StatusOr<std::vector<uint8_t>> GetToFile(int via, const std::string& path) {
    const int fd = memfd_create("node-test-get", MFD_CLOEXEC);
    if (fd < 0) return InternalError("memfd_create failed");
    auto file = std::shared_ptr<const int>(new int(fd), [](const int* f) {
      close(*f);
      delete f;
    });
    const std::vector<uint8_t> junk(5 * kStripe, 0x5a);
    if (pwrite(fd, junk.data(), junk.size(), 0) != static_cast<ssize_t>(junk.size())) {
      return InternalError("pwrite failed");
    }
    auto got = Await<StatusOr<Node::FileInfo>>([&](auto done) {
      nodes_[via]->GetToFile(
          path, Caller{},
          [file](uint64_t n) -> StatusOr<std::shared_ptr<const int>> {
            if (ftruncate(*file, static_cast<off_t>(n)) != 0) return InternalError("ftruncate failed");
            return file;
          },
          done);
    });
    if (!got.ok()) return got.status();
    std::vector<uint8_t> out(got->size);
    if (pread(fd, out.data(), out.size(), 0) != static_cast<ssize_t>(out.size())) {
      return InternalError("pread failed");
    }
    return out;
  }

  // Runs one asynchronous Node call to completion.
  template <typename T, typename F>
  T Await(F&& start) {
    std::optional<T> result;
    start([&](T r) { result = std::move(r); });
    Run([&] { return result.has_value(); });
    return result ? std::move(*result) : T(InternalError("never completed"));
  }

  Node& node(int i) { return *nodes_[i]; }

  // `seconds` rounds of: every live node ticks, the clock moves 1 s, the
  // network delivers.
  void TickAll(int seconds) {
    for (int t = 0; t < seconds; ++t) {
      for (int i = 0; i < size(); ++i) {
        if (!crashed_.count(i) && !killed_.count(i)) nodes_[i]->Tick(net_.clock().Now());
      }
      transport::ProgressUntil(*transports_[FirstLive()], [] { return false; }, 1s, net_.clock());
    }
  }

  // A reboot that lost the tmpfs: every data shard of node i is gone.
  void WipeData(int i) {
    for (const auto& meta : data_[i]->List()) ASSERT_TRUE(data_[i]->Remove(meta.key).ok());
  }

  // Shards held by every store; waits (bounded) for fire-and-forget deletes
  // to reach `expect`.
  size_t TotalShards(size_t expect = SIZE_MAX) {
    auto count = [&] {
      size_t n = 0;
      for (auto& s : data_) n += s->List().size();
      for (auto& s : parity_) n += s->List().size();
      return n;
    };
    if (expect != SIZE_MAX) transport::ProgressUntil(*transports_[FirstLive()], [&] { return count() == expect; }, 5s, net_.clock());
    return count();
  }

  // Crashes a node: its transport stops and every survivor's view marks it dead.
  void Kill(int i) {
    net_.Crash(NodeId(i));
    killed_.insert(i);
    view_ = view_.WithAlive(NodeId(i), false);
    for (auto& n : nodes_) n->SetView(view_);
  }

  // Two nodes other than `a` and `b` die; `path` then still reads as
  // `bytes` through `via`.
  void KillTwoMoreAndExpect(int a, int b, int via, const std::string& path, const std::vector<uint8_t>& bytes) {
    std::vector<int> gone;
    for (int i = 1; i < size() && gone.size() < 2; ++i) {
      const int n = (a + i) % size();
      if (n != a && n != b && n != via && !killed_.count(n) && !crashed_.count(n)) gone.push_back(n);
    }
    ASSERT_EQ(gone.size(), 2u);
    for (int n : gone) Kill(n);
    auto got = Get(via, path);
    ASSERT_TRUE(got.ok()) << path << ", nodes " << gone[0] << " and " << gone[1] << " down: " << got.status().ToString();
    EXPECT_TRUE(got->bytes == bytes) << path;
  }

  ShardStore& data(int i) { return *data_[i]; }
  ShardStore& parity(int i) { return *parity_[i]; }
  int size() const { return static_cast<int>(nodes_.size()); }

  // A process crash: the node's transport stops and the survivors are told
  // (as a transport peer failure), so PSW recovery runs. Its stores and
  // metadata stay, as tmpfs and disk do.
  void Crash(int i) {
    net_.Crash(NodeId(i));
    crashed_.insert(i);
    for (int j = 0; j < size(); ++j) {
      if (!crashed_.count(j)) nodes_[j]->PeerFailed(NodeId(i), UnavailableError("crashed"));
    }
  }
  // The crashed node's process starts again over the same stores; the
  // others learn it is back from its heartbeats.
  void Restart(int i) {
    nodes_[i].reset();
    transports_[i] = net_.AddNode(NodeId(i));
    nodes_[i] = MakeNode(i);
    crashed_.erase(i);
    TickAll(2);
  }
  bool crashed(int i) const { return crashed_.count(i) > 0; }
  void RunUntil(const std::function<bool()>& done) { Run(done); }
  // Delivers until `done` or nothing is left to deliver (no assertion).
  void RunUntilOrIdle(const std::function<bool()>& done) {
    transport::ProgressUntil(*transports_[FirstLive()], done, 1s, net_.clock());
  }
  // The transport that pumps the network and moves the simulated clock
  // (a dead one would not move it, and deadlines would never run out).
  int FirstLive() const {
    for (int i = 0; i < size(); ++i) {
      if (!crashed_.count(i) && !killed_.count(i)) return i;
    }
    return 0;
  }

  // Starts an in-place update through node `via`; *result is set when done.
  void StartUpdate(int via, const std::string& path, uint64_t version, uint64_t size,
                   std::vector<Node::ByteRange> ranges, const std::vector<uint8_t>& bytes,
                   std::optional<StatusOr<uint64_t>>* result, const Caller& who = {}) {
    auto owned = std::make_shared<std::vector<uint8_t>>(bytes);
    nodes_[via]->Update(path, version, size, std::move(ranges), *owned, owned, who,
                        [result](StatusOr<uint64_t> r) { *result = std::move(r); });
  }
  StatusOr<Node::ScrubReport> Scrub(int via, const std::string& path, bool repair = false) {
    return Await<StatusOr<Node::ScrubReport>>(
        [&](auto done) { nodes_[via]->Scrub(path, Caller{}, repair, done); });
  }
  CorruptingStore* corrupting = nullptr;
  transport::LoopbackNetwork& net() { return net_; }

 private:
  void Run(const std::function<bool()>& done) {
    ASSERT_TRUE(transport::ProgressUntil(*transports_[FirstLive()], done, 60s, net_.clock()));
  }

  std::unique_ptr<Node> MakeNode(int i) {
    auto n = Node::Create({.id = NodeId(i), .k = 4, .m = 2, .shard_size = kShard, .rpc_timeout = 2s,
                           .id_seed = net_.seed() | 1, .read_hedge = read_hedge_,
                           .write_hedge = write_hedge_, .replace_after = replace_after_,
                           .min_shards = min_shards_, .orphan_sweep = Duration::zero()},
                          transports_[i].get(), data_[i].get(), parity_[i].get(), view_, metas_[i].get());
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    return n.ok() ? std::move(n).value() : nullptr;
  }

  transport::LoopbackNetwork net_;
  const Duration replace_after_;
  const int min_shards_;
  const Duration read_hedge_;
  const Duration write_hedge_;
  placement::ClusterView view_;
  std::vector<std::unique_ptr<MetaStore>> metas_;
  std::set<int> crashed_;  // Crash: may Restart
  std::set<int> killed_;   // Kill: gone for good
  std::vector<std::unique_ptr<transport::LoopbackTransport>> transports_;
  std::vector<std::unique_ptr<ShardStore>> data_, parity_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

std::vector<uint8_t> Bytes(std::mt19937_64& rng, size_t n) { return fern::testing::RandomBytes(rng, n); }

const std::vector<size_t>& Sizes() {
  static const std::vector<size_t> sizes = {0, 1, kShard - 1, kShard + 1, kStripe - 1,
                                            kStripe + 1, 3 * kStripe + 17, 1 << 20};
  return sizes;
}

TEST(NodeCluster, FilesRoundTripBitExact) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  for (size_t n : Sizes()) {
    const std::string path = "/fern/ck/f" + std::to_string(n);
    auto bytes = Bytes(rng, n);
    ASSERT_TRUE(c.Put(static_cast<int>(n % kNodes), path, bytes).ok()) << path;
    auto got = c.Get(static_cast<int>((n + 1) % kNodes), path);
    ASSERT_TRUE(got.ok()) << path << ": " << got.status().ToString();
    EXPECT_EQ(got->version, 1u);
    EXPECT_EQ(ec::Crc32c(got->bytes), ec::Crc32c(bytes)) << path;
    ASSERT_EQ(got->bytes, bytes) << path;
  }
  EXPECT_EQ(c.Get(0, "/fern/ck/missing").status().code(), StatusCode::kNotFound);
}

TEST(NodeCluster, NewVersionReplacesOld) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  auto v1 = Bytes(rng, 3 * kStripe), v2 = Bytes(rng, kStripe + 5);
  ASSERT_TRUE(c.Put(0, "/fern/x", v1).ok());
  ASSERT_TRUE(c.Put(3, "/fern/x", v2).ok());
  auto got = c.Get(5, "/fern/x");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->version, 2u);
  EXPECT_EQ(got->bytes, v2);
}

TEST(NodeCluster, AnyTwoNodesLostStillReadsBitExact) {
  auto rng = fern::testing::TestRng();
  for (int a = 0; a < kNodes; ++a) {
    for (int b = a + 1; b < kNodes; ++b) {
      Cluster c;
      std::vector<std::vector<uint8_t>> files;
      for (size_t n : Sizes()) {
        files.push_back(Bytes(rng, n));
        ASSERT_TRUE(c.Put(0, "/f" + std::to_string(n), files.back()).ok());
      }
      c.Kill(a);
      c.Kill(b);
      const int via = (b + 1) % kNodes == a ? (b + 2) % kNodes : (b + 1) % kNodes;
      for (size_t i = 0; i < Sizes().size(); ++i) {
        auto got = c.Get(via, "/f" + std::to_string(Sizes()[i]));
        ASSERT_TRUE(got.ok()) << "lost " << a << "," << b << " size " << Sizes()[i] << ": "
                              << got.status().ToString();
        ASSERT_EQ(got->bytes, files[i]) << "lost " << a << "," << b << " size " << Sizes()[i];
      }
    }
  }
}

TEST(NodeCluster, ThreeNodesLostIsDataLossNeverWrongBytes) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  auto bytes = Bytes(rng, 8 * kStripe);
  ASSERT_TRUE(c.Put(0, "/f", bytes).ok());
  c.Kill(1);
  c.Kill(2);
  c.Kill(3);
  // Six nodes: every stripe lost three shards (or every metadata owner is gone).
  auto got = c.Get(0, "/f");
  ASSERT_FALSE(got.ok()) << "read returned bytes with 3 of 6 nodes lost";
  EXPECT_TRUE(got.status().code() == StatusCode::kDataLoss ||
              got.status().code() == StatusCode::kUnavailable)
      << got.status().ToString();
  EXPECT_EQ(ToErrno(got.status()), EIO);
}

// Status's stripe health: each file counted once, by its first live
// metadata owner; every stripe spans all six nodes here, so one node down
// degrades every stripe and three lose them.
TEST(NodeCluster, StripeHealthCountsEachFileOnceAndSeesDeadNodes) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  uint64_t want = 0;
  for (size_t n : {size_t{1}, kStripe, 3 * kStripe + 17}) {
    ASSERT_TRUE(c.Put(0, "/h/f" + std::to_string(n), Bytes(rng, n)).ok());
    want += (n + kStripe - 1) / kStripe;
  }
  ASSERT_TRUE(c.Put(0, "/h/gone", Bytes(rng, kStripe)).ok());
  ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(1).Unlink("/h/gone", Caller{}, done); }).ok());
  auto total = [&](std::set<int> dead) {
    Node::StripeHealth sum;
    for (int i = 0; i < kNodes; ++i) {
      if (dead.count(i)) continue;
      const Node::StripeHealth h = c.node(i).stripe_health();
      sum.files += h.files;
      sum.stripes += h.stripes;
      sum.degraded += h.degraded;
      sum.lost += h.lost;
    }
    return sum;
  };
  Node::StripeHealth h = total({});
  EXPECT_EQ(h.files, 3u);
  EXPECT_EQ(h.stripes, want);
  EXPECT_EQ(h.degraded + h.lost, 0u);
  c.Kill(2);
  h = total({2});
  EXPECT_EQ(h.files, 3u);  // node 2's files are counted by their next owner
  EXPECT_EQ(h.stripes, want);
  EXPECT_EQ(h.degraded, want);
  EXPECT_EQ(h.lost, 0u);
  c.Kill(3);
  c.Kill(4);
  h = total({2, 3, 4});
  EXPECT_EQ(h.files, 3u);
  EXPECT_EQ(h.degraded, 0u);
  EXPECT_EQ(h.lost, want);
}

TEST(NodeCluster, WriteWithADeadNodeGoesToTheNextAndReads) {
  auto rng = fern::testing::TestRng();
  Cluster c(512, /*nodes=*/8);
  c.Kill(4);
  auto bytes = Bytes(rng, 5 * kStripe + 3);
  ASSERT_TRUE(c.Put(0, "/f", bytes).ok());
  auto got = c.Get(1, "/f");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->bytes, bytes);
  // Node 4 held nothing of this version; two more losses are survivable.
  c.Kill(5);
  c.Kill(6);
  got = c.Get(1, "/f");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->bytes, bytes);
}

TEST(NodeCluster, WriteRefusedWithFewerThanKPlusMLiveNodes) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  auto v1 = Bytes(rng, kStripe);
  ASSERT_TRUE(c.Put(0, "/f", v1).ok());
  c.Kill(4);
  Status s = c.Put(0, "/f", Bytes(rng, kStripe));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("5 of 6 are alive"), std::string_view::npos) << s.ToString();
  auto got = c.Get(1, "/f");  // the committed version is still there, degraded
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->bytes, v1);
}

TEST(NodeCluster, CorruptShardIsCaughtByCrcAndDecodedAround) {
  auto rng = fern::testing::TestRng();
  Cluster c(512, kNodes, /*corrupt_node=*/2);
  // 25 stripes: node 2 holds only parity in each with odds 1/3, so in all
  // of them once in ~10^12 seeds (7 stripes: once in ~2200; seed 2540979006).
  auto bytes = Bytes(rng, 24 * kStripe + 99);
  ASSERT_TRUE(c.Put(0, "/f", bytes).ok());
  auto got = c.Get(1, "/f");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_GT(c.corrupting->flipped, 0) << "node 2 served no data shard: the test proved nothing";
  EXPECT_EQ(got->bytes, bytes);
}

// GetToFile (GET with kGetInto) takes its own path through the gateway:
// shards land in pooled buffers and reach the file by pwrite. Every size,
// with node 2 serving corrupt data shards, then also node 4 lost (two
// bad shards per stripe); one more loss is an error, never wrong bytes.
TEST(NodeCluster, GetToFileWritesTheBytesHealthyCorruptAndDegraded) {
  auto rng = fern::testing::TestRng();
  Cluster c(512, kNodes, /*corrupt_node=*/2);
  std::vector<std::vector<uint8_t>> files;
  for (size_t n : Sizes()) {
    files.push_back(Bytes(rng, n));
    ASSERT_TRUE(c.Put(0, "/f" + std::to_string(n), files.back()).ok());
  }
  auto check_all = [&](int via, const char* when) {
    for (size_t i = 0; i < Sizes().size(); ++i) {
      auto got = c.GetToFile(via, "/f" + std::to_string(Sizes()[i]));
      ASSERT_TRUE(got.ok()) << when << ", size " << Sizes()[i] << ": " << got.status().ToString();
      ASSERT_EQ(*got, files[i]) << when << ", size " << Sizes()[i];
    }
  };
  check_all(1, "node 2 corrupting");
  EXPECT_GT(c.corrupting->flipped, 0) << "node 2 served no data shard: the decode path went untested";
  c.Kill(4);
  check_all(0, "node 2 corrupting, node 4 lost");
  c.Kill(5);
  auto got = c.GetToFile(0, "/f" + std::to_string(1 << 20));
  ASSERT_FALSE(got.ok()) << "read returned bytes with 3 of 6 nodes lost";
  EXPECT_EQ(ToErrno(got.status()), EIO) << got.status().ToString();
}

TEST(NodeCluster, FailedWriteLeavesThePreviousVersion) {
  auto rng = fern::testing::TestRng();
  // Two slots per store: the second, larger version cannot fit.
  Cluster c(/*slots_per_store=*/6);
  auto v1 = Bytes(rng, kStripe);
  ASSERT_TRUE(c.Put(0, "/f", v1).ok());
  auto v2 = Bytes(rng, 40 * kStripe);
  Status s = c.Put(0, "/f", v2);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_EQ(ToErrno(s), ENOSPC);
  auto got = c.Get(2, "/f");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->version, 1u);
  EXPECT_EQ(got->bytes, v1);
  // The shards of the failed version that did land are freed again.
  EXPECT_EQ(c.TotalShards(6), 6u);
}

// A put through `gateway`, partitioned from every other node, times out and
// does not commit: the previous version still reads.
void ExpectPartitionedWriteTimesOut(Cluster& c, int gateway) {
  auto rng = fern::testing::TestRng();
  auto v1 = Bytes(rng, 2 * kStripe);
  ASSERT_TRUE(c.Put(gateway, "/f", v1).ok());
  for (int i = 0; i < c.size(); ++i) {
    if (i != gateway) c.net().Partition(NodeId(gateway), NodeId(i));
  }
  Status s = c.Put(gateway, "/f", Bytes(rng, 2 * kStripe));
  EXPECT_FALSE(s.ok());
  c.net().Heal();
  auto got = c.Get(3, "/f");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->bytes, v1);
}

TEST(NodeCluster, PartitionedWriteTimesOutAndDoesNotCommit) {
  Cluster c;
  ExpectPartitionedWriteTimesOut(c, 0);
}

// The same with node 0 killed first: the timeout still runs out (the test
// cluster moves its clock through a live node's transport, not node 0's).
TEST(NodeCluster, PartitionedWriteTimesOutWithNodeZeroDown) {
  Cluster c(512, kNodes + 1);
  c.Kill(0);
  ExpectPartitionedWriteTimesOut(c, 1);
}

// ---- namespace: stat, list, unlink, rename, mkdir, rmdir ----

int Errno(const Status& s) { return ToErrno(s); }

TEST(NodeNamespace, ListStatRenameUnlink) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  auto a = Bytes(rng, kStripe + 5);
  ASSERT_TRUE(c.Put(0, "/d/a", a).ok());
  ASSERT_TRUE(c.Put(1, "/d/sub/b", Bytes(rng, 10)).ok());
  auto ls = [&](const std::string& dir) {
    return c.Await<StatusOr<std::vector<DirEntry>>>([&](auto done) { c.node(2).List(dir, done); });
  };
  auto stat = [&](const std::string& p) {
    return c.Await<StatusOr<Attr>>([&](auto done) { c.node(3).Stat(p, done); });
  };
  auto root = ls("/");
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  ASSERT_EQ(root->size(), 1u);
  EXPECT_EQ((*root)[0].name, "d");
  EXPECT_TRUE((*root)[0].is_dir);
  auto d = ls("/d");
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->size(), 2u);
  EXPECT_EQ((*d)[0].name, "a");
  EXPECT_FALSE((*d)[0].is_dir);
  EXPECT_EQ((*d)[1].name, "sub");
  EXPECT_TRUE((*d)[1].is_dir);
  EXPECT_EQ(Errno(ls("/d/a").status()), ENOTDIR);
  EXPECT_EQ(Errno(ls("/nope").status()), ENOENT);

  auto st = stat("/d/a");
  ASSERT_TRUE(st.ok());
  EXPECT_FALSE(st->is_dir);
  EXPECT_EQ(st->size, a.size());
  EXPECT_EQ(st->version, 1u);
  EXPECT_EQ(st->mode, 0644u);
  EXPECT_GT(st->mtime_ns, 0u);
  auto sd = stat("/d");
  ASSERT_TRUE(sd.ok());
  EXPECT_TRUE(sd->is_dir);
  EXPECT_EQ(Errno(stat("/d/none").status()), ENOENT);

  const Caller root_user{};
  auto run = [&](auto op) { return c.Await<Status>(op); };
  EXPECT_EQ(Errno(run([&](auto done) { c.node(0).Unlink("/d", root_user, done); })), EISDIR);
  EXPECT_EQ(Errno(run([&](auto done) { c.node(0).Rename("/d", "/x", root_user, done); })), EXDEV);
  ASSERT_TRUE(run([&](auto done) { c.node(4).Rename("/d/a", "/d/c", root_user, done); }).ok());
  EXPECT_EQ(c.Get(5, "/d/a").status().code(), StatusCode::kNotFound);
  auto moved = c.Get(5, "/d/c");
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_EQ(moved->bytes, a);
  // A new file under the old name is a different file.
  auto a2 = Bytes(rng, 3);
  ASSERT_TRUE(c.Put(0, "/d/a", a2).ok());
  EXPECT_EQ(c.Get(1, "/d/a")->bytes, a2);
  EXPECT_EQ(c.Get(1, "/d/c")->bytes, a);
  // Rename onto an existing file replaces it.
  ASSERT_TRUE(run([&](auto done) { c.node(2).Rename("/d/a", "/d/c", root_user, done); }).ok());
  EXPECT_EQ(c.Get(3, "/d/c")->bytes, a2);
  ASSERT_TRUE(run([&](auto done) { c.node(1).Unlink("/d/c", root_user, done); }).ok());
  EXPECT_EQ(c.Get(0, "/d/c").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Errno(run([&](auto done) { c.node(1).Unlink("/d/c", root_user, done); })), ENOENT);
  // Only /d/sub/b is left: 6 shards.
  EXPECT_EQ(c.TotalShards(6), 6u);
}

TEST(NodeNamespace, MkdirRmdir) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  const Caller root_user{};
  auto run = [&](auto op) { return c.Await<Status>(op); };
  ASSERT_TRUE(c.Put(0, "/d/f", Bytes(rng, 7)).ok());
  EXPECT_EQ(Errno(run([&](auto done) { c.node(0).Mkdir("/d", root_user, 0755, done); })), EEXIST);
  EXPECT_EQ(Errno(run([&](auto done) { c.node(0).Mkdir("/d/f", root_user, 0755, done); })), EEXIST);
  ASSERT_TRUE(run([&](auto done) { c.node(1).Mkdir("/e", Caller{1000, 100}, 0750, done); }).ok());
  auto st = c.Await<StatusOr<Attr>>([&](auto done) { c.node(2).Stat("/e", done); });
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st->is_dir);
  EXPECT_EQ(st->mode, 0750u);
  EXPECT_EQ(st->uid, 1000u);
  auto e = c.Await<StatusOr<std::vector<DirEntry>>>([&](auto done) { c.node(3).List("/e", done); });
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->empty());
  EXPECT_EQ(Errno(c.Put(0, "/e", Bytes(rng, 1))), EISDIR);
  EXPECT_EQ(Errno(run([&](auto done) { c.node(0).Rmdir("/d", root_user, done); })), ENOTEMPTY);
  EXPECT_EQ(Errno(run([&](auto done) { c.node(0).Rmdir("/d/f", root_user, done); })), ENOTDIR);
  EXPECT_EQ(Errno(run([&](auto done) { c.node(0).Rmdir("/e", Caller{1001, 100}, done); })), EACCES);
  ASSERT_TRUE(run([&](auto done) { c.node(0).Rmdir("/e", Caller{1000, 100}, done); }).ok());
  EXPECT_EQ(Errno(c.Await<StatusOr<Attr>>([&](auto done) { c.node(2).Stat("/e", done); }).status()),
            ENOENT);
  EXPECT_EQ(Errno(run([&](auto done) { c.node(0).Rmdir("/", root_user, done); })), EBUSY);
}

TEST(NodeNamespace, OwnerAndModeAreEnforced) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  const Caller alice{1000, 100}, bob{1001, 101}, carol{1002, 100}, root_user{};
  auto secret = Bytes(rng, kStripe);
  ASSERT_TRUE(c.Put(0, "/alice/secret", secret, alice, 0600).ok());
  ASSERT_TRUE(c.Put(0, "/alice/shared", secret, alice, 0640).ok());
  EXPECT_EQ(Errno(c.Get(1, "/alice/secret", bob).status()), EACCES);
  EXPECT_EQ(Errno(c.Get(1, "/alice/secret", carol).status()), EACCES);
  EXPECT_EQ(*c.Get(1, "/alice/secret", alice), secret);
  EXPECT_EQ(*c.Get(1, "/alice/secret", root_user), secret);
  EXPECT_EQ(*c.Get(1, "/alice/shared", carol), secret);  // group read
  EXPECT_EQ(Errno(c.Put(2, "/alice/secret", Bytes(rng, 1), bob, 0666)), EACCES);
  EXPECT_EQ(Errno(c.Put(2, "/alice/shared", Bytes(rng, 1), carol, 0666)), EACCES);
  auto run = [&](auto op) { return c.Await<Status>(op); };
  EXPECT_EQ(Errno(run([&](auto done) { c.node(3).Unlink("/alice/secret", bob, done); })), EACCES);
  EXPECT_EQ(Errno(run([&](auto done) { c.node(3).Rename("/alice/secret", "/bob/x", bob, done); })), EACCES);
  EXPECT_EQ(Errno(run([&](auto done) { c.node(3).Access("/alice/secret", bob, R_OK, done); })), EACCES);
  EXPECT_TRUE(run([&](auto done) { c.node(3).Access("/alice/secret", bob, 0, done); }).ok());
  EXPECT_TRUE(run([&](auto done) { c.node(3).Access("/alice/secret", alice, R_OK | W_OK, done); }).ok());
  // A replacement by the owner keeps owner and mode.
  ASSERT_TRUE(c.Put(4, "/alice/secret", Bytes(rng, 9), alice, 0666).ok());
  auto st = c.Await<StatusOr<Attr>>([&](auto done) { c.node(5).Stat("/alice/secret", done); });
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->mode, 0600u);
  EXPECT_EQ(st->uid, 1000u);
  EXPECT_EQ(st->version, 2u);
  EXPECT_EQ(Errno(c.Get(1, "/alice/secret", bob).status()), EACCES);
}

TEST(NodeNamespace, OlderVersionsBeyondKeepAreCollected) {
  auto rng = fern::testing::TestRng();
  Cluster c;  // keep_versions = 2
  const size_t stripes = 3;
  std::vector<uint8_t> last;
  for (int v = 1; v <= 5; ++v) {
    last = Bytes(rng, stripes * kStripe);
    ASSERT_TRUE(c.Put(v % kNodes, "/ck", last).ok());
    const size_t kept = std::min(v, 2) * stripes * 6;
    EXPECT_EQ(c.TotalShards(kept), kept) << "after version " << v;
  }
  auto got = c.Get(0, "/ck");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->version, 5u);
  EXPECT_EQ(got->bytes, last);
  ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(2).Unlink("/ck", Caller{}, done); }).ok());
  EXPECT_EQ(c.TotalShards(0), 0u);
}

TEST(NodeRepair, WipedNodeIsRebuiltThenAnyTwoMayFail) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  std::vector<std::vector<uint8_t>> files;
  for (size_t size : {size_t{1}, 5 * kStripe + 3, 20 * kStripe}) {
    files.push_back(Bytes(rng, size));
    ASSERT_TRUE(c.Put(0, "/r/" + std::to_string(size), files.back()).ok());
  }
  // A second version of one file: kept versions are repaired too.
  files[1] = Bytes(rng, 2 * kStripe);
  ASSERT_TRUE(c.Put(1, "/r/" + std::to_string(5 * kStripe + 3), files[1]).ok());
  const size_t total = c.TotalShards();
  const int wiped = static_cast<int>(rng() % kNodes);
  c.WipeData(wiped);
  ASSERT_LT(c.TotalShards(), total);
  Status s = c.Await<Status>([&](auto done) { c.node(wiped).Repair(done); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  const auto& p = c.node(wiped).repair_progress();
  EXPECT_GT(p.shards_restored, 0u);
  EXPECT_EQ(p.shards_restored, p.shards_missing);
  EXPECT_EQ(p.shards_failed, 0u);
  EXPECT_EQ(c.TotalShards(), total);
  // Every rebuilt data shard was checked against the data CRCs its parity records.
  EXPECT_GT(c.node(wiped).decode_stats().stripes, 0u);
  EXPECT_EQ(c.node(wiped).decode_stats().verified, c.node(wiped).decode_stats().stripes);
  // A second pass finds nothing to do.
  ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(wiped).Repair(done); }).ok());
  EXPECT_EQ(c.node(wiped).repair_progress().shards_restored, p.shards_missing);
  // Now two other nodes fail: everything still reads, from the rebuilt shards.
  const int a = (wiped + 1) % kNodes, b = (wiped + 3) % kNodes;
  c.Kill(a);
  c.Kill(b);
  const std::vector<std::string> names = {"1", std::to_string(5 * kStripe + 3),
                                          std::to_string(20 * kStripe)};
  for (size_t i = 0; i < names.size(); ++i) {
    auto got = c.Get(wiped, "/r/" + names[i]);
    ASSERT_TRUE(got.ok()) << names[i] << ": " << got.status().ToString();
    EXPECT_EQ(got->bytes, files[i]) << names[i];
  }
}

// Nodes holding a shard of some stripe of `path`'s newest version, as the
// records say (Inspect through node `via`).
// Nodes holding a shard of `path` (only data shards: data_only).
std::set<int> HoldersOf(Cluster& c, int via, const std::string& path, bool data_only = false) {
  auto ins = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(via).Inspect(path, Caller{}, done); });
  EXPECT_TRUE(ins.ok()) << path << ": " << ins.status().ToString();
  std::set<int> holders;
  if (!ins.ok()) return holders;
  for (const auto& st : ins->stripes) {
    for (const auto& sh : st.shards) {
      if (!data_only || sh.index < static_cast<uint32_t>(ins->k)) holders.insert(static_cast<int>(sh.node.value));
    }
  }
  return holders;
}

// The m+1 metadata owners of `path` in a Cluster of `nodes` (placement seed
// 0, k=4 m=2, as MakeNode configures them).
std::vector<NodeId> OwnersOf(const std::string& path, int nodes) {
  std::vector<placement::NodeInfo> infos;
  for (int i = 0; i < nodes; ++i) infos.push_back({NodeId(i), "", true});
  return placement::Placement::Make(0, 4, 2)->MetadataOwners(path, *placement::ClusterView::Make(infos));
}

// Every node's re-placement pass has finished.
bool ReplaceIdle(Cluster& c) {
  for (int i = 0; i < c.size(); ++i) {
    if (!c.crashed(i) && c.node(i).replace_progress().running) return false;
  }
  return true;
}

// A node that stays dead past replace_after no longer holds any stripe: its
// shards (of newest and kept versions) are rebuilt on live nodes outside
// their stripes and the records moved, so two more nodes may then fail
// without loss, and in-place updates of its former stripes go through.
TEST(NodeReplace, ADeadNodesShardsMoveToLiveNodesThenAnyTwoMoreMayFail) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = 8;
  Cluster c(512, kN, -1, fern::testing::RunSeed(), 3s);
  std::map<std::string, std::vector<uint8_t>> files;
  for (size_t size : {size_t{1}, kShard + 1, 5 * kStripe + 3, 20 * kStripe}) {
    const std::string path = "/m/" + std::to_string(size);
    files[path] = Bytes(rng, size);
    ASSERT_TRUE(c.Put(static_cast<int>(size % kN), path, files[path]).ok()) << path;
  }
  // A kept older version moves too.
  const std::string twice = "/m/" + std::to_string(5 * kStripe + 3);
  auto first_ins = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(0).Inspect(twice, Caller{}, done); });
  ASSERT_TRUE(first_ins.ok());
  const uint64_t kept_id = first_ins->file_id, kept_stripes = first_ins->stripes.size();
  files[twice] = Bytes(rng, 3 * kStripe);
  ASSERT_TRUE(c.Put(1, twice, files[twice]).ok());
  // Shards of the kept version on live nodes (the dead node's store stays
  // in memory here: it is not counted).
  auto kept_shards_alive = [&](int dead_node) {
    size_t n = 0;
    for (int i = 0; i < kN; ++i) {
      if (i == dead_node) continue;
      for (auto* store : {&c.data(i), &c.parity(i)}) {
        for (const auto& meta : store->List()) n += meta.key.file_id == kept_id ? 1 : 0;
      }
    }
    return n;
  };

  const int dead = static_cast<int>(rng() % kN);
  std::set<std::string> held;  // files with a stripe on the dead node
  for (const auto& [path, bytes] : files) {
    if (HoldersOf(c, (dead + 1) % kN, path).count(dead)) held.insert(path);
  }
  ASSERT_FALSE(held.empty()) << "node " << dead << " held no shard";
  const size_t kept_before = kept_shards_alive(dead);
  c.Kill(dead);
  c.TickAll(2);  // dead for less than replace_after: nothing moves yet
  uint64_t passes = 0;
  for (int i = 0; i < kN; ++i) passes += i == dead ? 0 : c.node(i).replace_progress().passes;
  EXPECT_EQ(passes, 0u);
  c.TickAll(3);
  c.RunUntil([&] { return ReplaceIdle(c); });
  uint64_t moved = 0, failed = 0;
  for (int i = 0; i < kN; ++i) {
    if (i == dead) continue;
    moved += c.node(i).replace_progress().shards_moved;
    failed += c.node(i).replace_progress().shards_failed;
    EXPECT_EQ(c.node(i).stripe_health().degraded, 0u) << "node " << i;
  }
  EXPECT_GT(moved, 0u);
  EXPECT_EQ(failed, 0u);
  const int via = (dead + 1) % kN;
  for (const auto& [path, bytes] : files) {
    EXPECT_EQ(HoldersOf(c, via, path).count(dead), 0u) << path << " still has a shard on node " << dead;
  }
  EXPECT_EQ(kept_shards_alive(dead), kept_stripes * 6) << "the kept version was " << kept_before << " shards before";
  // The follow-up pass (5 s later) finds nothing left to move.
  c.TickAll(7);
  c.RunUntil([&] { return ReplaceIdle(c); });
  for (int i = 0; i < kN; ++i) {
    if (i != dead && c.node(i).replace_progress().passes > 1) {
      EXPECT_EQ(c.node(i).replace_progress().shards_planned, 0u) << "node " << i;
    }
  }
  // Updates of a stripe the dead node held are taken again.
  const std::string upd = *held.rbegin();
  auto ins = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(via).Inspect(upd, Caller{}, done); });
  ASSERT_TRUE(ins.ok());
  uint64_t moved_stripe = UINT64_MAX;
  {
    // Which stripe held a shard on the dead node: the kept inspection from before is gone,
    // so ask the dead node's stores (still in memory) for the newest version's keys.
    for (auto* store : {&c.data(dead), &c.parity(dead)}) {
      for (const auto& meta : store->List()) {
        if (meta.key.file_id == ins->file_id) moved_stripe = std::min(moved_stripe, meta.key.stripe);
      }
    }
  }
  ASSERT_NE(moved_stripe, UINT64_MAX) << upd;
  {
    const uint64_t off = moved_stripe * kStripe;
    auto patch = Bytes(rng, std::min<size_t>(7, files[upd].size() - off));
    std::optional<StatusOr<uint64_t>> r;
    c.StartUpdate(via, upd, ins->info.version, files[upd].size(), {{off, patch.size()}}, patch, &r);
    c.RunUntil([&] { return r.has_value(); });
    ASSERT_TRUE(r->ok()) << upd << " stripe " << moved_stripe << ": " << r->status().ToString();
    std::copy(patch.begin(), patch.end(), files[upd].begin() + static_cast<long>(off));
  }
  // Two more nodes fail: every file (and the kept version's shards) still reads bit-exact.
  const int a = (dead + 2) % kN, b = (dead + 5) % kN;
  c.Kill(a);
  c.Kill(b);
  const int reader = (dead + 3) % kN;
  for (const auto& [path, bytes] : files) {
    auto got = c.Get(reader, path);
    ASSERT_TRUE(got.ok()) << path << ": " << got.status().ToString();
    EXPECT_TRUE(got->bytes == bytes) << path;
  }
}

// A sequencer already hosting the file (an update ran before the node
// died, so it keeps its own copy of the record): after the move the next
// update of the stripe lands on the shard's new node, and the bytes it
// wrote read back with two more nodes down. (The gateway sends pieces by
// its own, amended, record: this passes even if the host's copy missed
// the move; what that copy steers, recovery rounds, is not reached here.)
TEST(NodeReplace, ASequencerHostingTheFileSendsLaterUpdatesToTheMovedShard) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = 8;
  Cluster c(512, kN, -1, fern::testing::RunSeed(), 3s);
  const std::string path = "/s/f";
  auto bytes = Bytes(rng, 5 * kStripe + 9);
  ASSERT_TRUE(c.Put(0, path, bytes).ok());
  const int host = static_cast<int>(OwnersOf(path, kN)[0].value);
  auto update = [&](int via, uint64_t off, size_t n) {
    auto ins = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(via).Inspect(path, Caller{}, done); });
    ASSERT_TRUE(ins.ok()) << ins.status().ToString();
    auto patch = Bytes(rng, n);
    std::optional<StatusOr<uint64_t>> r;
    c.StartUpdate(via, path, ins->info.version, bytes.size(), {{off, n}}, patch, &r);
    c.RunUntil([&] { return r.has_value(); });
    ASSERT_TRUE(r->ok()) << "update at " << off << ": " << r->status().ToString();
    std::copy(patch.begin(), patch.end(), bytes.begin() + static_cast<long>(off));
  };
  int via = 0;  // the updates' gateway, not the sequencer's host
  while (via == host) ++via;
  ASSERT_NO_FATAL_FAILURE(update(via, 1, 6));  // the host now holds the file's sequencer
  auto ins = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(via).Inspect(path, Caller{}, done); });
  ASSERT_TRUE(ins.ok());
  // A node holding data shard `idx` of stripe 0 (file bytes from
  // idx*kShard), neither the host nor the gateway, dies.
  int dead = -1;
  uint32_t idx = 0;
  for (const auto& sh : ins->stripes[0].shards) {
    const int n = static_cast<int>(sh.node.value);
    if (sh.index < 4 && n != host && n != via) {
      dead = n;
      idx = sh.index;
      break;
    }
  }
  ASSERT_GE(dead, 0) << "no data shard of stripe 0 outside the host and the gateway";
  c.Kill(dead);
  c.TickAll(5);
  c.RunUntil([&] { return ReplaceIdle(c); });
  ASSERT_EQ(HoldersOf(c, via, path).count(dead), 0u) << "its shards did not move";
  // An update inside the moved shard, through the same host's sequencer.
  ASSERT_NO_FATAL_FAILURE(update(via, idx * kShard + 5, 9));
  c.KillTwoMoreAndExpect(dead, host, via, path, bytes);
}

// The file's first owner was down while its newest version was written, so
// its own copy of the record is old; when a node holding the new version's
// shards then stays dead, it re-places them all the same (a pass plans from
// the newest record any live node has), and takes that record for itself.
TEST(NodeReplace, AnOwnerThatMissedTheNewestVersionStillMovesItsShards) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = 8;
  Cluster c(512, kN, -1, fern::testing::RunSeed(), 3s);
  const std::string path = "/o/f";
  const auto owners = OwnersOf(path, kN);
  const int first = static_cast<int>(owners[0].value);
  ASSERT_TRUE(c.Put((first + 1) % kN, path, Bytes(rng, 3 * kStripe)).ok());
  c.Crash(first);
  const auto newest = Bytes(rng, 9 * kStripe + 5);
  ASSERT_TRUE(c.Put((first + 2) % kN, path, newest).ok());
  c.Restart(first);
  // A node holding shards of the newest version, other than the first owner.
  std::set<int> held = HoldersOf(c, first, path);
  held.erase(first);
  ASSERT_FALSE(held.empty());
  const int dead = *std::next(held.begin(), static_cast<long>(rng() % held.size()));
  c.Kill(dead);
  c.TickAll(5);
  c.RunUntil([&] { return ReplaceIdle(c); });
  EXPECT_GT(c.node(first).replace_progress().shards_moved, 0u);
  EXPECT_EQ(c.node(first).replace_progress().shards_failed, 0u);
  EXPECT_EQ(HoldersOf(c, first, path).count(dead), 0u);
  // Two more fail (the first owner stays, so the record does too).
  int a = (dead + 1) % kN;
  while (a == first) a = (a + 1) % kN;
  int b = (a + 1) % kN;
  while (b == first || b == dead) b = (b + 1) % kN;
  c.Kill(a);
  c.Kill(b);
  auto got = c.Get(first, path);
  ASSERT_TRUE(got.ok()) << "nodes " << dead << ", " << a << ", " << b << " down: " << got.status().ToString();
  EXPECT_TRUE(got->bytes == newest);
}

// A file whose metadata owners all die one after another, with a pass in
// between: the record lives on at the stand-in re-placement copied it to,
// so the file still reads; a write needs an owner (a record only stand-ins
// held would be lost when the owners return), so it is refused and the
// file keeps its bytes.
TEST(NodeReplace, AllOwnersDownReadsFromTheStandInAndRefusesWrites) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = 9;
  Cluster c(512, kN, -1, fern::testing::RunSeed(), 2s);
  const std::string path = "/s/f";
  const auto owners = OwnersOf(path, kN);
  int gw = 0;
  while (std::count(owners.begin(), owners.end(), NodeId(gw))) ++gw;
  const auto bytes = Bytes(rng, 4 * kStripe + 1);
  ASSERT_TRUE(c.Put(gw, path, bytes).ok());
  c.Kill(static_cast<int>(owners[0].value));
  c.TickAll(4);
  c.RunUntil([&] { return ReplaceIdle(c); });
  EXPECT_GT(c.node(static_cast<int>(owners[1].value)).replace_progress().records_copied, 0u);
  c.Kill(static_cast<int>(owners[1].value));
  c.Kill(static_cast<int>(owners[2].value));
  auto got = c.Get(gw, path);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == bytes);
  Status put = c.Put(gw, path, Bytes(rng, 100));
  EXPECT_EQ(put.code(), StatusCode::kUnavailable) << put.ToString();
  EXPECT_NE(put.message().find("metadata owners of /s/f are down"), std::string_view::npos) << put.ToString();
  got = c.Get(gw, path);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == bytes);
}

// A node that comes back after its shards moved (its tmpfs intact) still
// holds the old copies: the node that moved them deletes them there, once
// the record says they live elsewhere. The file reads bit-exact throughout.
TEST(NodeReplace, ANodeBackAfterItsShardsMovedLosesItsOldCopies) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = 8;
  Cluster c(512, kN, -1, fern::testing::RunSeed(), 3s);
  const std::string path = "/b/f";
  const auto bytes = Bytes(rng, 12 * kStripe + 3);
  ASSERT_TRUE(c.Put(0, path, bytes).ok());
  auto ins = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(0).Inspect(path, Caller{}, done); });
  ASSERT_TRUE(ins.ok());
  const uint64_t file_id = ins->file_id;
  std::set<int> holders = HoldersOf(c, 0, path);
  holders.erase(0);
  const int back = *std::next(holders.begin(), static_cast<long>(rng() % holders.size()));
  auto held_by = [&](int node) {
    size_t n = 0;
    for (auto* store : {&c.data(node), &c.parity(node)}) {
      for (const auto& meta : store->List()) n += meta.key.file_id == file_id ? 1 : 0;
    }
    return n;
  };
  const size_t before = held_by(back);
  ASSERT_GT(before, 0u);
  c.Crash(back);
  c.TickAll(5);
  c.RunUntil([&] { return ReplaceIdle(c); });
  EXPECT_EQ(HoldersOf(c, 0, path).count(back), 0u);
  EXPECT_EQ(held_by(back), before) << "a crashed node's stores stay as they were";
  c.Restart(back);  // heard from again: the old copies go
  c.TickAll(2);
  c.RunUntilOrIdle([&] { return held_by(back) == 0; });
  EXPECT_EQ(held_by(back), 0u);
  uint64_t deleted = 0;
  for (int i = 0; i < kN; ++i) deleted += c.node(i).replace_progress().orphans_deleted;
  EXPECT_EQ(deleted, before);
  // Nothing the records name was deleted: with two other nodes down every
  // stripe still has k shards.
  c.KillTwoMoreAndExpect(back, 0, back, path, bytes);
}

// With k+m nodes every live node already holds a shard of each stripe: the
// pass finds no place to move a shard to, says so, and changes nothing;
// reads stay degraded and correct.
TEST(NodeReplace, WithNoSpareNodeStripesStayDegradedAndSaySo) {
  auto rng = fern::testing::TestRng();
  Cluster c(512, kNodes, -1, fern::testing::RunSeed(), 2s);
  auto bytes = Bytes(rng, 6 * kStripe + 9);
  ASSERT_TRUE(c.Put(0, "/n/f", bytes).ok());
  const int dead = static_cast<int>(rng() % kNodes);
  c.Kill(dead);
  c.TickAll(4);
  c.RunUntil([&] { return ReplaceIdle(c); });
  uint64_t no_spare = 0, moved = 0, degraded = 0;
  for (int i = 0; i < kNodes; ++i) {
    if (i == dead) continue;
    no_spare += c.node(i).replace_progress().no_spare;
    moved += c.node(i).replace_progress().shards_moved;
    degraded += c.node(i).stripe_health().degraded;
  }
  EXPECT_EQ(moved, 0u);
  EXPECT_EQ(no_spare, 7u);  // every stripe, counted by the file's one first owner
  EXPECT_EQ(degraded, 7u);
  auto got = c.Get((dead + 1) % kNodes, "/n/f");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == bytes);
}

// META_AMEND from a raw peer: a move off a live node, or whose shard is not
// where it says, or onto a node already in the stripe changes nothing; a
// move outside the layout or to an unknown node is refused; an unknown
// version is NotFound; an applied one is what readers then follow (here the
// shard is not on its new node, so reads decode around it and stay right).
TEST(NodeReplace, AmendIsValidatedAndAppliedOnlyWhereTheShardIs) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = 7;
  Cluster c(512, kN);
  auto bytes = Bytes(rng, 2 * kStripe);
  ASSERT_TRUE(c.Put(0, "/a/f", bytes).ok());
  auto ins = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(0).Inspect("/a/f", Caller{}, done); });
  ASSERT_TRUE(ins.ok());
  const auto& shards = ins->stripes[1].shards;
  std::set<uint32_t> in_stripe;
  for (const auto& sh : shards) in_stripe.insert(sh.node.value);
  uint32_t spare = 0;
  while (in_stripe.count(spare)) ++spare;
  auto raw = c.net().AddNode(NodeId(99));
  std::set<int> down;
  // Each live node's answer, by node.
  auto amend = [&](uint64_t version, uint32_t index, uint32_t from, uint32_t to) {
    wire::MetaAmend a;
    a.set_path("/a/f");
    a.set_file_id(ins->file_id);
    a.set_version(version);
    auto* mv = a.add_moves();
    mv->set_stripe(1);
    mv->set_index(index);
    mv->set_from_node(from);
    mv->set_to_node(to);
    std::map<int, Status> out;
    for (int i = 0; i < kN; ++i) {
      if (down.count(i)) continue;
      std::optional<Status> st;
      raw->Call(NodeId(i), {wire::META_AMEND, a.SerializeAsString(), {}}, {5s, nullptr},
                [&](StatusOr<transport::InMessage> r) { st = r.status(); });
      c.RunUntil([&] { return st.has_value(); });
      out[i] = *st;
    }
    return out;  // NotFound from nodes that hold no record of the path
  };
  auto count = [](const std::map<int, Status>& v, StatusCode code) {
    return std::count_if(v.begin(), v.end(), [&](const auto& e) { return e.second.code() == code; });
  };
  const uint32_t holder = shards[2].node.value;
  int via = 0;
  while (via == static_cast<int>(holder)) ++via;
  auto holder_of_2 = [&] {
    auto now = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(via).Inspect("/a/f", Caller{}, done); });
    EXPECT_TRUE(now.ok());
    return now.ok() ? now->stripes[1].shards[2].node : NodeId();
  };
  // Its holder alive: the shard stays there (owners answer OK, move nothing).
  auto first = amend(1, 2, holder, spare);
  std::set<int> owners;
  for (const auto& [i, st] : first) {
    if (st.ok()) owners.insert(i);
  }
  ASSERT_EQ(owners.size(), 3u);
  EXPECT_EQ(holder_of_2(), NodeId(holder));
  c.Kill(static_cast<int>(holder));
  down.insert(static_cast<int>(holder));
  const long live_owners = static_cast<long>(owners.size() - owners.count(static_cast<int>(holder)));
  EXPECT_EQ(count(amend(1, 6, holder, spare), StatusCode::kInvalidArgument), live_owners);  // index past k+m
  EXPECT_EQ(count(amend(1, 2, holder, 1000), StatusCode::kInvalidArgument), live_owners);   // no such node
  EXPECT_EQ(count(amend(2, 2, holder, spare), StatusCode::kNotFound), kN - 1);              // no version 2
  const uint32_t other = shards[3].node.value;
  EXPECT_EQ(count(amend(1, 2, other, spare), StatusCode::kOk), live_owners);   // from is not the holder
  EXPECT_EQ(count(amend(1, 2, holder, other), StatusCode::kOk), live_owners);  // onto the stripe's own node
  EXPECT_EQ(holder_of_2(), NodeId(holder));
  // Applied: the record now sends readers to the spare, which has no such
  // shard: reads decode around it.
  EXPECT_EQ(count(amend(1, 2, holder, spare), StatusCode::kOk), live_owners);
  EXPECT_EQ(holder_of_2(), NodeId(spare));
  auto got = c.Get(via, "/a/f");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == bytes);
}

// --min-shards 5 on six nodes, one down: a put still commits, with the
// dead node's shard of every stripe absent (reads decode around it, the
// stripes count as degraded). When the node is back, the gateway tells it
// (REPAIR_HINT), its repair pass writes the missing shards, and then any
// two other nodes may fail. Two down is below min_shards: refused, and the
// previous version stays.
TEST(NodeDegradedWrite, MinShardsCommitsWithANodeDownAndItsRepairFillsTheGaps) {
  auto rng = fern::testing::TestRng();
  Cluster c(512, kNodes, -1, fern::testing::RunSeed(), Duration::zero(), /*min_shards=*/5);
  const int down = 1 + static_cast<int>(rng() % (kNodes - 1));
  c.Crash(down);
  const auto bytes = Bytes(rng, 6 * kStripe + 11);
  ASSERT_TRUE(c.Put(0, "/d/f", bytes).ok());
  EXPECT_EQ(c.node(0).degraded_stripes_written(), 7u);
  uint64_t degraded = 0;
  for (int i = 0; i < kNodes; ++i) degraded += i == down ? 0 : c.node(i).stripe_health().degraded;
  EXPECT_EQ(degraded, 7u);
  auto got = c.Get(0, "/d/f");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == bytes);
  // A second node down: 4 live nodes, fewer than 5 shards a stripe.
  const int other = down == 1 ? 2 : 1;
  c.Crash(other);
  Status refused = c.Put(0, "/d/f", Bytes(rng, 100));
  EXPECT_EQ(refused.code(), StatusCode::kUnavailable) << refused.ToString();
  EXPECT_NE(refused.message().find("placement needs 5 live nodes"), std::string_view::npos) << refused.ToString();
  c.Restart(other);
  EXPECT_FALSE(c.node(other).TakeRepairHint()) << "nothing was written without it";
  c.Restart(down);
  EXPECT_TRUE(c.node(down).TakeRepairHint());
  // Back but not yet repaired: the record says its shards are absent, so
  // the stripes still count as degraded and take no in-place update. (The
  // file's first owner counts them; if that is the node just back, it has
  // no record of the file until its repair pass takes the newest.)
  if (OwnersOf("/d/f", kNodes)[0] != NodeId(down)) {
    degraded = 0;
    for (int i = 0; i < kNodes; ++i) degraded += c.node(i).stripe_health().degraded;
    EXPECT_EQ(degraded, 7u);
  }
  // inspect tells a shard never written from one lost.
  auto states = [&] {
    std::map<Node::ShardReport::State, int> n;
    auto ins = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(0).Inspect("/d/f", Caller{}, done); });
    EXPECT_TRUE(ins.ok()) << ins.status().ToString();
    if (ins.ok()) {
      for (const auto& st : ins->stripes) {
        for (const auto& sh : st.shards) ++n[sh.state];
      }
    }
    return n;
  };
  auto before_repair = states();
  EXPECT_EQ(before_repair[Node::ShardReport::State::kAbsent], 7);
  EXPECT_EQ(before_repair[Node::ShardReport::State::kMissing], 0);
  EXPECT_EQ(before_repair[Node::ShardReport::State::kOk], 7 * 5);
  std::optional<StatusOr<uint64_t>> upd;
  auto patch = Bytes(rng, 5);
  c.StartUpdate(0, "/d/f", got->version, bytes.size(), {{3, patch.size()}}, patch, &upd);
  c.RunUntil([&] { return upd.has_value(); });
  EXPECT_EQ(upd->status().errno_hint(), EAGAIN) << upd->status().ToString();
  Status s = c.Await<Status>([&](auto done) { c.node(down).Repair(done); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c.node(down).repair_progress().shards_restored, 7u);
  degraded = 0;
  for (int i = 0; i < kNodes; ++i) degraded += c.node(i).stripe_health().degraded;
  EXPECT_EQ(degraded, 0u) << "the records still call shards absent";
  EXPECT_EQ(states()[Node::ShardReport::State::kOk], 7 * 6);
  // Repaired: updates go through again.
  upd.reset();
  c.StartUpdate(0, "/d/f", got->version, bytes.size(), {{3, patch.size()}}, patch, &upd);
  c.RunUntil([&] { return upd.has_value(); });
  ASSERT_TRUE(upd->ok()) << upd->status().ToString();
  auto expect = bytes;
  std::copy(patch.begin(), patch.end(), expect.begin() + 3);
  const int a = (down + 1) % kNodes, b = (down + 2) % kNodes;
  c.Kill(a);
  c.Kill(b);
  got = c.Get(down, "/d/f");
  ASSERT_TRUE(got.ok()) << "nodes " << a << ", " << b << " down: " << got.status().ToString();
  EXPECT_TRUE(got->bytes == expect);
}

TEST(NodeDegradedWrite, MinShardsOutsideKToKPlusMIsRefused) {
  transport::LoopbackNetwork net(fern::testing::RunSeed());
  auto t = net.AddNode(NodeId(0));
  auto data = NewMemoryShardStore(4, kShard), parity = NewMemoryShardStore(4, kShard);
  std::vector<placement::NodeInfo> infos;
  for (int i = 0; i < 6; ++i) infos.push_back({NodeId(i), "", true});
  for (int bad : {3, 7, -1}) {
    auto n = Node::Create({.id = NodeId(0), .k = 4, .m = 2, .shard_size = kShard, .min_shards = bad}, t.get(),
                          data.get(), parity.get(), *placement::ClusterView::Make(infos));
    ASSERT_FALSE(n.ok()) << bad;
    EXPECT_EQ(n.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(n.status().message().find("min_shards must be between k=4 and k+m=6"), std::string_view::npos)
        << n.status().ToString();
  }
}

// Shards a node held of versions removed while it was down (collected by
// --keep-versions, unlinked) are deleted there once it is back: nothing of
// them is left in its stores, and what the records still name stays.
TEST(NodeDeferredDelete, ANodeBackLosesTheShardsOfVersionsRemovedWhileItWasDown) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = 7;
  Cluster c(512, kN);
  const auto v1 = Bytes(rng, 5 * kStripe);
  ASSERT_TRUE(c.Put(0, "/g/f", v1).ok());
  ASSERT_TRUE(c.Put(0, "/g/gone", Bytes(rng, 3 * kStripe)).ok());
  auto id_of = [&](const std::string& path) {
    auto ins = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(0).Inspect(path, Caller{}, done); });
    EXPECT_TRUE(ins.ok());
    return ins.ok() ? ins->file_id : 0;
  };
  const uint64_t v1_id = id_of("/g/f"), gone_id = id_of("/g/gone");
  // A node holding shards of both.
  auto held_by = [&](int node, uint64_t file_id) {
    size_t n = 0;
    for (auto* store : {&c.data(node), &c.parity(node)}) {
      for (const auto& meta : store->List()) n += meta.key.file_id == file_id ? 1 : 0;
    }
    return n;
  };
  int x = 1;
  while (x < kN && (held_by(x, v1_id) == 0 || held_by(x, gone_id) == 0)) ++x;
  ASSERT_LT(x, kN) << "no node holds shards of both files";
  c.Crash(x);
  // v2 and v3: with --keep-versions 2, v1 is collected; /g/gone is removed.
  const auto v3 = Bytes(rng, 2 * kStripe + 1);
  ASSERT_TRUE(c.Put(0, "/g/f", Bytes(rng, kStripe)).ok());
  ASSERT_TRUE(c.Put(0, "/g/f", v3).ok());
  ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(0).Unlink("/g/gone", Caller{}, done); }).ok());
  EXPECT_GT(c.node(0).deferred_deletes_waiting(), 0u);
  EXPECT_GT(held_by(x, v1_id), 0u);
  c.Restart(x);
  c.TickAll(2);
  c.RunUntilOrIdle([&] { return held_by(x, v1_id) + held_by(x, gone_id) == 0; });
  EXPECT_EQ(held_by(x, v1_id), 0u);
  EXPECT_EQ(held_by(x, gone_id), 0u);
  EXPECT_EQ(c.node(0).deferred_deletes_waiting(), 0u);
  EXPECT_GT(c.node(0).deferred_deletes_sent(), 0u);
  auto got = c.Get(x, "/g/f");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == v3);
}

// ---- orphan sweep (Node::SweepOrphans) ----

// Commits `bytes` as shard `key` in `store`, as a put's SHARD_PUT would.
void StoreShard(ShardStore& store, const ShardKey& key, const std::vector<uint8_t>& bytes) {
  auto r = store.Reserve(key, bytes.size());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::copy(bytes.begin(), bytes.end(), (*r)->data().begin());
  ASSERT_TRUE(store.Commit(std::move(r).value(), ShardMeta{key, bytes.size(), 0, 0, ec::Crc32c(bytes)}).ok());
}

size_t ShardsOf(Cluster& c, int node, uint64_t file_id) {
  size_t n = 0;
  for (auto* store : {&c.data(node), &c.parity(node)}) {
    for (const auto& meta : store->List()) n += meta.key.file_id == file_id ? 1 : 0;
  }
  return n;
}

Status Sweep(Cluster& c, int node) {
  return c.Await<Status>([&](auto done) { c.node(node).SweepOrphans(done); });
}

uint64_t FileIdOf(Cluster& c, const std::string& path) {
  auto ins = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(0).Inspect(path, Caller{}, done); });
  EXPECT_TRUE(ins.ok()) << path << ": " << ins.status().ToString();
  return ins.ok() ? ins->file_id : 0;
}

// A node that fails while a put is being sent does not fail the put: the
// stripes it was to hold are placed again without it and sent again (with
// a spare node, whole; with k+m nodes and --min-shards 5, with its shard
// absent), and the file reads back bit-exact, then with two more nodes down
// once it is back.
TEST(NodePut, ANodeFailingMidPutSendsItsStripesElsewhere) {
  for (const int nodes : {7, 6}) {
    SCOPED_TRACE(std::to_string(nodes) + " nodes");
    auto rng = fern::testing::TestRng();
    Cluster c(512, nodes, -1, fern::testing::RunSeed(), Duration::zero(), /*min_shards=*/nodes == 6 ? 5 : 0);
    const auto bytes = Bytes(rng, 48 * kStripe + 5);
    const size_t before = c.TotalShards();
    c.net().SetDelay(1ms, 2ms);  // so that the put is seen halfway
    auto owned = std::make_shared<std::vector<uint8_t>>(bytes);
    auto result = std::make_shared<std::optional<Status>>();
    c.node(0).Put("/p/f", *owned, owned, [result](Status s) { *result = s; });
    c.RunUntilOrIdle([&] { return c.TotalShards() > before + 40; });
    ASSERT_FALSE(result->has_value()) << "the put ended before a node could fail";
    const int x = 1 + static_cast<int>(rng() % (nodes - 1));
    c.Crash(x);
    c.RunUntil([&] { return result->has_value(); });
    ASSERT_TRUE(result->value().ok()) << "node " << x << " failed mid-put: " << result->value().ToString();
    c.net().SetDelay(0ms, 0ms);
    if (nodes == 6) {
      EXPECT_GT(c.node(0).degraded_stripes_written(), 0u);
    }
    auto got = c.Get((x + 1) % nodes, "/p/f");
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(got->bytes == bytes);
    c.Restart(x);
    if (nodes == 6) {
      ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(x).Repair(done); }).ok());
    }
    // What the failed tries left on x went when it was back (deferred
    // deletes): its orphan sweep finds nothing to free.
    c.TickAll(2);
    c.RunUntilOrIdle([] { return false; });
    ASSERT_TRUE(Sweep(c, x).ok());
    ASSERT_TRUE(Sweep(c, x).ok());
    EXPECT_EQ(c.node(x).orphan_progress().deleted, 0u);
    EXPECT_EQ(c.node(x).orphan_progress().candidates, 0u);
    c.KillTwoMoreAndExpect(x, 0, x, "/p/f", bytes);
  }
}

// A node that stops answering without failing (a stopped process, a loop
// blocked on a hung disk: no connection error, not yet declared dead): the
// put's requests to it time out, its stripes are placed again without it,
// and the record goes to a stand-in where it owns the path. Both puts
// commit and read back bit-exact, with no shard on it; once it answers
// again, each file also survives two other nodes' loss.
TEST(NodePut, ANodeThatStopsAnsweringDoesNotFailThePut) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = kNodes + 1;  // room to place a stripe without it
  Cluster c(512, kN);
  const int stuck = 1 + static_cast<int>(rng() % (kN - 1));
  // A path whose record the stuck node owns, and two it does not.
  std::string owned_path;
  std::vector<std::string> other_paths;
  for (int i = 0; owned_path.empty() || other_paths.size() < 2; ++i) {
    const std::string p = "/stuck/f" + std::to_string(i);
    const auto owners = OwnersOf(p, kN);
    if (std::count(owners.begin(), owners.end(), NodeId(stuck)) == 0) {
      if (other_paths.size() < 2) other_paths.push_back(p);
    } else if (owned_path.empty()) {
      owned_path = p;
    }
  }
  const std::string other_path = other_paths[0];
  c.net().Partition(NodeId(0), NodeId(stuck));
  std::map<std::string, std::vector<uint8_t>> files;
  int put = 0;
  for (const std::string& path : {owned_path, other_path, other_paths[1], owned_path}) {
    files[path] = Bytes(rng, 6 * kStripe + 7);
    const auto start = c.net().clock().Now();
    Status s = c.Put(0, path, files[path]);
    ASSERT_TRUE(s.ok()) << path << " with node " << stuck << " not answering: " << s.ToString();
    EXPECT_EQ(HoldersOf(c, 0, path).count(stuck), 0u) << path;
    if (++put >= 3) {
      // The gateway remembers the node stuck: nothing of these puts waits
      // on it, not even the lookup of a record it owns (its stand-in is asked).
      EXPECT_LT(c.net().clock().Now() - start, 2s) << path << ": a put waited on a node its gateway knew stuck";
    }
  }
  c.net().Heal();
  for (const auto& [path, bytes] : files) {
    auto got = c.Get((stuck + 1) % kN, path);
    ASSERT_TRUE(got.ok()) << path << ": " << got.status().ToString();
    EXPECT_TRUE(got->bytes == bytes) << path;
  }
  c.KillTwoMoreAndExpect(stuck, 0, stuck, owned_path, files[owned_path]);
  auto got = c.Get(stuck, other_path);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == files[other_path]);
}

// The first of PREFIX0, PREFIX1, ... whose record `node` owns (`owns`) or
// does not own, in a cluster of `nodes`.
std::string PathWhoseRecord(int node, bool owns, int nodes, const std::string& prefix) {
  for (int i = 0;; ++i) {
    const std::string p = prefix + std::to_string(i);
    const auto owners = OwnersOf(p, nodes);
    if ((std::count(owners.begin(), owners.end(), NodeId(node)) != 0) == owns) return p;
  }
}

// A holder of a data shard of `path` other than `via` (a read asks it)
// that owns none of its records.
int HolderNotOwning(Cluster& c, int via, const std::string& path, std::mt19937_64& rng) {
  std::vector<int> candidates;
  const auto owners = OwnersOf(path, c.size());
  for (int h : HoldersOf(c, via, path, /*data_only=*/true)) {
    if (h != via && std::count(owners.begin(), owners.end(), NodeId(h)) == 0) candidates.push_back(h);
  }
  EXPECT_FALSE(candidates.empty());
  return candidates.empty() ? -1 : candidates[rng() % candidates.size()];
}

// A node that stops answering: with hedged reads a read goes around it
// within milliseconds; without, the first read waits rpc_timeout once and
// the next not at all (the gateway remembers the node as slow).
TEST(NodeGet, ANodeThatStopsAnsweringIsReadAround) {
  for (const Duration hedge : {Duration(50ms), Duration::zero()}) {
    SCOPED_TRACE(hedge == Duration::zero() ? "hedging off" : "hedging after 50 ms");
    auto rng = fern::testing::TestRng();
    constexpr int kN = kNodes + 1;
    Cluster c(512, kN, -1, fern::testing::RunSeed(), Duration::zero(), 0, hedge);
    const auto bytes = Bytes(rng, 150 * kStripe + 3);  // 3+ windows of fetches
    ASSERT_TRUE(c.Put(0, "/g/f", bytes).ok());
    // Healthy, with jitter: nothing lags three times behind its stripe.
    c.net().SetDelay(1ms, 3ms);
    auto healthy = c.Get(0, "/g/f");
    ASSERT_TRUE(healthy.ok()) << healthy.status().ToString();
    EXPECT_TRUE(healthy->bytes == bytes);
    EXPECT_EQ(c.node(0).hedge_stats().hedged, 0u) << "a healthy read hedged";
    const int stuck = HolderNotOwning(c, 0, "/g/f", rng);
    ASSERT_GE(stuck, 0);
    c.net().Partition(NodeId(0), NodeId(stuck));
    for (int read = 0; read < 2; ++read) {
      const auto start = c.net().clock().Now();
      auto got = c.Get(0, "/g/f");
      ASSERT_TRUE(got.ok()) << "read " << read << ": " << got.status().ToString();
      EXPECT_TRUE(got->bytes == bytes) << "read " << read;
      // rpc_timeout is 2 s.
      const Duration bound = hedge > Duration::zero() ? Duration(1s) : read == 0 ? Duration(4s) : Duration(2s);
      EXPECT_LT(c.net().clock().Now() - start, bound) << "read " << read << " waited on node " << stuck;
    }
    if (hedge > Duration::zero()) {
      EXPECT_GT(c.node(0).hedge_stats().served_early, 0u);
    }
    c.net().Heal();
  }
}

// A node stops answering, not known yet: with hedged writes a put sends
// the stripes that wait on it elsewhere, and a record it owns goes to its
// stand-in, after the write hedge (not rpc_timeout, 2 s here); every file
// is then whole on the other nodes (two more may fail).
TEST(NodePut, AStuckNodeCostsAPutTheWriteHedge) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = kNodes + 1;
  Cluster c(512, kN, -1, fern::testing::RunSeed(), Duration::zero(), 0, NodeOptions{}.read_hedge, 200ms);
  const int stuck = 1 + static_cast<int>(rng() % (kN - 1));
  c.net().SetDelay(1ms, 2ms);
  const std::string owned = PathWhoseRecord(stuck, true, kN, "/h/owned");
  const std::string other = PathWhoseRecord(stuck, false, kN, "/h/other");
  c.net().Partition(NodeId(0), NodeId(stuck));
  std::map<std::string, std::vector<uint8_t>> files;
  for (const std::string& path : {other, owned}) {
    files[path] = Bytes(rng, 8 * kStripe + 3);
    const auto start = c.net().clock().Now();
    Status s = c.Put(0, path, files[path]);
    ASSERT_TRUE(s.ok()) << path << ": " << s.ToString();
    EXPECT_LT(c.net().clock().Now() - start, 1500ms) << path << " waited on node " << stuck;
    EXPECT_EQ(HoldersOf(c, 0, path).count(stuck), 0u) << path;
  }
  EXPECT_GT(c.node(0).hedge_stats().put_stripes, 0u);
  EXPECT_GT(c.node(0).hedge_stats().records, 0u);
  c.net().Heal();
  c.net().SetDelay(0ms, 0ms);
  for (const auto& [path, bytes] : files) {
    auto got = c.Get(stuck, path);
    ASSERT_TRUE(got.ok()) << path << ": " << got.status().ToString();
    EXPECT_TRUE(got->bytes == bytes) << path;
  }
  c.KillTwoMoreAndExpect(stuck, 0, stuck, owned, files[owned]);
}

// A node slow to acknowledge (not stuck): the stripes that waited on it
// went elsewhere; the shards it took late are deleted, so the stores hold
// exactly the shards the record names.
TEST(NodePut, ShardsASlowNodeTookAfterAHedgeAreDeleted) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = kNodes + 1;
  Cluster c(512, kN, -1, fern::testing::RunSeed(), Duration::zero(), 0, NodeOptions{}.read_hedge, 200ms);
  const int slow = 1 + static_cast<int>(rng() % (kN - 1));
  const std::string path = PathWhoseRecord(slow, false, kN, "/h/slow");
  c.net().SetLinkDelay(NodeId(slow), NodeId(0), 1s);  // acknowledgements late; rpc_timeout 2 s
  const auto bytes = Bytes(rng, 10 * kStripe);  // 10 stripes
  ASSERT_TRUE(c.Put(0, path, bytes).ok());
  EXPECT_GT(c.node(0).hedge_stats().put_stripes, 0u);
  c.net().Heal();
  c.TickAll(3);  // late acknowledgements arrive, deletes go out
  EXPECT_EQ(HoldersOf(c, 0, path).count(slow), 0u);
  EXPECT_EQ(c.TotalShards(10 * kNodes), 10u * kNodes) << "shards left behind on node " << slow;
  auto got = c.Get(slow, path);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == bytes);
}

// A node owning a file's record stops answering: a lookup asks its
// stand-in once it lags, so neither a read nor the lookup of a put waits
// for rpc_timeout (the put's record store still does, once), and a read
// through another gateway that does not know finds the new version.
TEST(NodeGet, ARecordOwnerThatStopsAnsweringIsReadAround) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = kNodes + 1;
  Cluster c(512, kN);
  std::string path;
  int stuck = -1;
  for (int i = 0; stuck < 0; ++i) {
    path = "/o/f" + std::to_string(i);
    const auto owners = OwnersOf(path, kN);
    if (std::count(owners.begin(), owners.end(), NodeId(0)) == 0) {
      stuck = static_cast<int>(owners[rng() % owners.size()].value);
    }
  }
  const int other = (stuck + 1) % kN == 0 ? (stuck + 2) % kN : (stuck + 1) % kN;
  const auto v1 = Bytes(rng, 3 * kStripe + 5);
  ASSERT_TRUE(c.Put(0, path, v1).ok());
  c.net().Partition(NodeId(0), NodeId(stuck));
  c.net().Partition(NodeId(other), NodeId(stuck));
  auto start = c.net().clock().Now();
  auto got = c.Get(0, path);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == v1);
  EXPECT_LT(c.net().clock().Now() - start, 1s) << "the read waited on record owner " << stuck;  // rpc_timeout 2 s
  EXPECT_GT(c.node(0).hedge_stats().lookups, 0u);
  const auto v2 = Bytes(rng, 2 * kStripe + 1);
  ASSERT_TRUE(c.Put(0, path, v2).ok());
  start = c.net().clock().Now();
  got = c.Get(other, path);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == v2) << "read version " << got->version << " through node " << other;
  EXPECT_LT(c.net().clock().Now() - start, 1s) << "the read through node " << other << " waited on " << stuck;
  c.net().Heal();
}

// Two of a path's record owners were stuck while a new version was put:
// its record went to the third owner and two stand-ins. They are back;
// now the third stops answering. The newest record is then on no owner
// that answers: the lookup asks the stuck owner's stand-in and finds it,
// hedged at once, or after the owner timed out (before, the old version
// was read).
TEST(NodeGet, ARecordOnlyAStandInAndAStuckOwnerHoldIsFound) {
  for (const Duration hedge : {Duration(50ms), Duration::zero()}) {
    SCOPED_TRACE(hedge == Duration::zero() ? "hedging off" : "hedging after 50 ms");
    auto rng = fern::testing::TestRng();
    constexpr int kN = kNodes + 2;  // room for stripes without two nodes
    Cluster c(512, kN, -1, fern::testing::RunSeed(), Duration::zero(), 0, hedge);
    std::string path;
    std::vector<NodeId> owners;
    for (int i = 0; owners.empty(); ++i) {
      path = "/o/s" + std::to_string(i);
      owners = OwnersOf(path, kN);
      if (std::count(owners.begin(), owners.end(), NodeId(0)) != 0 ||
          std::count(owners.begin(), owners.end(), NodeId(1)) != 0) {
        owners.clear();
      }
    }
    ASSERT_TRUE(c.Put(0, path, Bytes(rng, kStripe + 3)).ok());
    c.net().Partition(NodeId(0), owners[1]);
    c.net().Partition(NodeId(0), owners[2]);
    const auto v2 = Bytes(rng, 2 * kStripe + 9);
    Status put = c.Put(0, path, v2);
    ASSERT_TRUE(put.ok()) << put.ToString();
    c.net().Heal();
    c.net().Partition(NodeId(1), owners[0]);
    auto got = c.Get(1, path);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(got->bytes == v2) << "read version " << got->version << ": owners " << owners[0].ToString()
                                  << " (stuck), " << owners[1].ToString() << ", " << owners[2].ToString();
    c.net().Heal();
  }
}

// A node slow to answer (not stuck): the read hedges around it and is
// done; the shards it sends afterwards, within their deadline, are refused
// and never written into the bytes the reader now owns.
TEST(NodeGet, AReplyLeftBehindByAHedgeNeverLandsInTheOutput) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = kNodes + 1;
  Cluster c(512, kN);
  const auto bytes = Bytes(rng, 20 * kStripe);
  ASSERT_TRUE(c.Put(0, "/g/slow", bytes).ok());
  const int slow = HolderNotOwning(c, 0, "/g/slow", rng);
  ASSERT_GE(slow, 0);
  c.net().SetLinkDelay(NodeId(slow), NodeId(0), 1s);  // rpc_timeout is 2 s
  const auto start = c.net().clock().Now();
  auto got = c.Get(0, "/g/slow");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == bytes);
  EXPECT_LT(c.net().clock().Now() - start, 500ms) << "the read waited for node " << slow;
  EXPECT_GT(c.node(0).hedge_stats().served_early, 0u);
  std::fill(got->bytes.begin(), got->bytes.end(), uint8_t{0xee});
  const uint64_t late_before = c.net().delivered();
  c.TickAll(3);  // the slow node's replies arrive
  EXPECT_GT(c.net().delivered(), late_before);
  EXPECT_EQ(std::count(got->bytes.begin(), got->bytes.end(), uint8_t{0xee}),
            static_cast<std::ptrdiff_t>(got->bytes.size()))
      << "a reply left behind wrote into the output after the read finished";
  c.net().Heal();
  auto again = c.Get(0, "/g/slow");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->bytes == bytes);
}

// Puts `bytes` at *from through a node owning neither name's record and
// renames it to *to there; the gateway crashes once the new name is on all
// its owners, before the old name's tombstone goes out. Returns the gateway.
int CutShortRename(Cluster& c, const std::vector<uint8_t>& bytes, std::string* from, std::string* to) {
  int gw = -1;
  for (int i = 0; gw < 0; ++i) {
    *from = "/r/tmp" + std::to_string(i);
    *to = "/r/final" + std::to_string(i);
    std::set<int> owners;
    for (NodeId o : OwnersOf(*from, kNodes)) owners.insert(static_cast<int>(o.value));
    for (NodeId o : OwnersOf(*to, kNodes)) owners.insert(static_cast<int>(o.value));
    for (int n = 0; n < kNodes && gw < 0; ++n) gw = owners.count(n) ? -1 : n;
  }
  std::set<int> to_owners;
  for (NodeId o : OwnersOf(*to, kNodes)) to_owners.insert(static_cast<int>(o.value));
  EXPECT_TRUE(c.Put(gw, *from, bytes).ok());
  std::map<int, size_t> owned;
  for (int o : to_owners) owned[o] = c.node(o).records_owned();
  c.net().SetDelay(1ms, 2ms);
  std::optional<Status> renamed;
  c.node(gw).Rename(*from, *to, Caller{}, [&](Status s) { renamed = s; });
  c.RunUntilOrIdle([&] {
    for (int o : to_owners) {
      if (c.node(o).records_owned() == owned[o]) return false;
    }
    return true;
  });
  EXPECT_FALSE(renamed.has_value()) << "the rename finished first";
  c.Crash(gw);
  c.net().SetDelay(0ms, 0ms);
  return gw;
}

// A gateway that dies in the middle of a rename leaves two names for the
// file (the new one written, the old one not yet removed). Removing either
// name then keeps the shards the other still names: the file stays
// readable under it. A rename that finished leaves nothing of the sort:
// removing the new name frees every shard, and renaming onto a file frees
// the shards of the file replaced.
TEST(NodeNamespace, ARenameCutShortKeepsTheFileUnderTheNameLeft) {
  for (const bool remove_old : {true, false}) {
    SCOPED_TRACE(remove_old ? "the old name removed" : "the new name removed");
    auto rng = fern::testing::TestRng();
    Cluster c;
    std::string from, to;
    const auto bytes = Bytes(rng, 3 * kStripe + 5);
    const int gw = CutShortRename(c, bytes, &from, &to);
    const int via = (gw + 1) % kNodes;
    auto before = c.Get(via, from);
    ASSERT_TRUE(before.ok()) << "the old name is gone: " << before.status().ToString();
    ASSERT_TRUE(c.Get(via, to).ok());
    const std::string removed = remove_old ? from : to, left = remove_old ? to : from;
    ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(via).Unlink(removed, Caller{}, done); }).ok());
    c.RunUntilOrIdle([] { return false; });  // deletes, if any, land
    EXPECT_EQ(c.Get(via, removed).status().code(), StatusCode::kNotFound);
    auto got = c.Get(via, left);
    ASSERT_TRUE(got.ok()) << left << ": " << got.status().ToString();
    EXPECT_TRUE(got->bytes == bytes);
  }
  // A rename that finished: its markers cost nothing later.
  auto rng = fern::testing::TestRng();
  Cluster c;
  const size_t empty = c.TotalShards();
  ASSERT_TRUE(c.Put(0, "/r/a", Bytes(rng, 2 * kStripe)).ok());
  const size_t one = c.TotalShards();
  const auto b = Bytes(rng, kStripe + 1);
  ASSERT_TRUE(c.Put(1, "/r/b", b).ok());
  const size_t of_b = c.TotalShards() - one;
  ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(2).Rename("/r/b", "/r/c", Caller{}, done); }).ok());
  ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(3).Rename("/r/c", "/r/a", Caller{}, done); }).ok());
  EXPECT_EQ(c.TotalShards(empty + of_b), empty + of_b) << "the replaced file's shards stayed";
  auto got = c.Get(4, "/r/a");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == b);
  ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(5).Unlink("/r/a", Caller{}, done); }).ok());
  EXPECT_EQ(c.TotalShards(empty), empty) << "shards left after the renamed file was removed";
}

// The orphan sweep finishes a rename cut short: the second pass that finds
// it so (the first might have seen a rename in progress) writes the old
// name's tombstone on its first live owner. The new name reads bit-exact,
// the old one is gone, and removing the new one frees every shard.
TEST(NodeNamespace, ARenameCutShortIsFinishedByTheOrphanSweep) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  const size_t empty = c.TotalShards();
  std::string from, to;
  const auto bytes = Bytes(rng, 3 * kStripe + 5);
  const int gw = CutShortRename(c, bytes, &from, &to);
  c.Restart(gw);
  const int first = static_cast<int>(OwnersOf(from, kNodes)[0].value);
  for (int pass = 0; pass < 2; ++pass) {
    EXPECT_TRUE(c.Get(first, from).ok()) << "pass " << pass << ": the old name went before its time";
    for (int i = 0; i < kNodes; ++i) ASSERT_TRUE(Sweep(c, i).ok()) << "node " << i << ", pass " << pass;
  }
  c.RunUntilOrIdle([] { return false; });
  EXPECT_EQ(c.node(first).orphan_progress().renames_finished, 1u);
  EXPECT_EQ(c.Get(gw, from).status().code(), StatusCode::kNotFound);
  auto got = c.Get(gw, to);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == bytes);
  ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(gw).Unlink(to, Caller{}, done); }).ok());
  EXPECT_EQ(c.TotalShards(empty), empty) << "shards left after the renamed file was removed";
}

// Shards no record names (a version nobody wrote a record for, and a copy
// of a committed shard on a node its record does not place it on) go at
// the second pass that finds them; every shard the records name stays and
// every file reads back bit-exact, then with two nodes down.
TEST(NodeOrphans, UnnamedShardsGoAtTheSecondPassNamedOnesStay) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  std::map<std::string, std::vector<uint8_t>> files;
  for (int i = 0; i < 4; ++i) {
    const std::string path = "/o/f" + std::to_string(i);
    files[path] = Bytes(rng, (i + 1) * kStripe + 7 * i);
    ASSERT_TRUE(c.Put(i, path, files[path]).ok()) << path;
  }
  const size_t named = c.TotalShards();
  // A version with no record: a data and a parity shard on node 2.
  const uint64_t lost_id = rng() | 1;
  StoreShard(c.data(2), ShardKey{lost_id, 1, 0, 1}, Bytes(rng, kShard));
  StoreShard(c.parity(2), ShardKey{lost_id, 1, 0, 5}, Bytes(rng, kShard));
  // A copy of a committed shard on another node than its record's.
  const ShardMeta real = c.data(0).List().front();
  const int other = 1;
  {
    auto v = c.data(0).Read(real.key);
    ASSERT_TRUE(v.ok());
    StoreShard(c.data(other), real.key, std::vector<uint8_t>(v->data.begin(), v->data.end()));
  }
  ASSERT_EQ(c.TotalShards(), named + 3);

  for (int i = 0; i < kNodes; ++i) ASSERT_TRUE(Sweep(c, i).ok()) << "node " << i;
  EXPECT_EQ(c.TotalShards(), named + 3) << "the first pass only remembers what it found";
  EXPECT_EQ(c.node(2).orphan_progress().candidates, 2u);
  EXPECT_EQ(c.node(other).orphan_progress().candidates, 1u);
  for (int i = 0; i < kNodes; ++i) ASSERT_TRUE(Sweep(c, i).ok()) << "node " << i;
  EXPECT_EQ(c.TotalShards(), named);
  EXPECT_EQ(ShardsOf(c, 2, lost_id), 0u);
  EXPECT_TRUE(c.data(0).Read(real.key).ok()) << "the copy its record names stays";
  EXPECT_FALSE(c.data(other).Read(real.key).ok());
  uint64_t deleted = 0, freed = 0;
  for (int i = 0; i < kNodes; ++i) {
    deleted += c.node(i).orphan_progress().deleted;
    freed += c.node(i).orphan_progress().bytes_freed;
    EXPECT_EQ(c.node(i).orphan_progress().candidates, 0u);
    EXPECT_EQ(c.node(i).orphan_progress().passes, 2u);
  }
  EXPECT_EQ(deleted, 3u);
  EXPECT_EQ(freed, 2 * kShard + real.length);
  auto file = files.begin();
  c.KillTwoMoreAndExpect(4, 4, 4, file->first, file->second);
  for (++file; file != files.end(); ++file) {
    auto got = c.Get(4, file->first);
    ASSERT_TRUE(got.ok()) << file->first << ": " << got.status().ToString();
    EXPECT_TRUE(got->bytes == file->second) << file->first;
  }
}

// A shard rewritten between two passes is not the one the first pass saw:
// it waits for another pass.
TEST(NodeOrphans, AShardChangedBetweenPassesWaitsForAnotherPass) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  const ShardKey key{rng() | 1, 3, 0, 0};
  StoreShard(c.data(4), key, Bytes(rng, kShard));
  ASSERT_TRUE(Sweep(c, 4).ok());
  StoreShard(c.data(4), key, Bytes(rng, kShard));  // a new slot, another CRC
  ASSERT_TRUE(Sweep(c, 4).ok());
  EXPECT_TRUE(c.data(4).Read(key).ok());
  EXPECT_EQ(c.node(4).orphan_progress().candidates, 1u);
  ASSERT_TRUE(Sweep(c, 4).ok());
  EXPECT_FALSE(c.data(4).Read(key).ok());
  EXPECT_EQ(c.node(4).orphan_progress().deleted, 1u);
}

// The shards of a put still being written have no record yet; its gateway
// says so and they stay, however many passes run meanwhile.
TEST(NodeOrphans, APutStillBeingWrittenKeepsItsShards) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  const std::string path = "/o/slow";
  std::set<int> owners;
  for (NodeId o : OwnersOf(path, kNodes)) owners.insert(static_cast<int>(o.value));
  int gw = 0;
  while (owners.count(gw)) ++gw;
  int x = gw + 1;
  while (owners.count(x)) ++x;
  ASSERT_LT(x, kNodes);
  const size_t before = c.TotalShards();
  auto owned = std::make_shared<std::vector<uint8_t>>(Bytes(rng, 64 * kStripe));
  auto result = std::make_shared<std::optional<Status>>();
  c.net().SetDelay(1ms, 2ms);  // so that the put is seen halfway
  c.node(gw).Put(path, *owned, owned, [result](Status s) { *result = s; });
  // Shards are landing; the commit cannot reach the owners.
  c.RunUntilOrIdle([&] { return c.TotalShards() > before + 12; });
  ASSERT_FALSE(result->has_value());
  for (int o : owners) c.net().Partition(NodeId(gw), NodeId(o));
  const size_t landed = c.TotalShards();
  for (int pass = 0; pass < 3; ++pass) {
    ASSERT_TRUE(Sweep(c, x).ok());
    ASSERT_FALSE(result->has_value()) << "the put ended while the passes ran: nothing shown";
    EXPECT_EQ(c.node(x).orphan_progress().candidates, 0u);
  }
  EXPECT_EQ(c.node(x).orphan_progress().deleted, 0u);
  EXPECT_GE(c.TotalShards(), landed);
  c.net().Heal();
}

// A gateway that crashes mid-put leaves shards no record will ever name:
// the other nodes' sweeps delete them (one node dead is at most m), the
// restarted gateway's own sweep its local ones, and the files committed
// before stay whole.
TEST(NodeOrphans, ShardsOfAPutWhoseGatewayCrashedAreSwept) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  const auto kept = Bytes(rng, 5 * kStripe + 3);
  ASSERT_TRUE(c.Put(1, "/o/kept", kept).ok());
  const size_t before = c.TotalShards();
  auto owned = std::make_shared<std::vector<uint8_t>>(Bytes(rng, 64 * kStripe));
  auto result = std::make_shared<std::optional<Status>>();
  c.net().SetDelay(1ms, 2ms);  // so that the put is seen halfway
  c.node(0).Put("/o/torn", *owned, owned, [result](Status s) { *result = s; });
  c.RunUntilOrIdle([&] { return c.TotalShards() > before + 30; });
  ASSERT_FALSE(result->has_value());
  c.Crash(0);
  c.RunUntilOrIdle([] { return false; });
  ASSERT_GT(c.TotalShards(), before) << "the torn put left shards behind";
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 1; i < kNodes; ++i) ASSERT_TRUE(Sweep(c, i).ok()) << "node " << i;
  }
  c.Restart(0);
  for (int pass = 0; pass < 2; ++pass) ASSERT_TRUE(Sweep(c, 0).ok());
  EXPECT_EQ(c.TotalShards(), before);
  EXPECT_EQ(c.Get(2, "/o/torn").status().code(), StatusCode::kNotFound);
  c.KillTwoMoreAndExpect(0, 1, 4, "/o/kept", kept);
}

// With more than m nodes dead a record may live only on them, and a node
// that does not answer may be writing: the pass deletes nothing and says
// why.
TEST(NodeOrphans, NothingIsDeletedWithMoreThanMDeadOrANodeSilent) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  const ShardKey key{rng() | 1, 1, 0, 2};
  StoreShard(c.data(0), key, Bytes(rng, kShard));
  c.net().Partition(NodeId(0), NodeId(4));
  for (int pass = 0; pass < 2; ++pass) {
    Status s = Sweep(c, 0);
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  }
  EXPECT_NE(c.node(0).orphan_progress().last_error.find("did not answer"), std::string::npos)
      << c.node(0).orphan_progress().last_error;
  c.net().Heal();
  ASSERT_TRUE(Sweep(c, 0).ok());  // found: the next pass would delete it
  c.Kill(3);
  c.Kill(4);
  c.Kill(5);
  Status s = Sweep(c, 0);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.ToString().find("3 nodes dead"), std::string::npos) << s.ToString();
  EXPECT_TRUE(c.data(0).Read(key).ok());
  EXPECT_EQ(c.node(0).orphan_progress().skipped, 3u);
  EXPECT_EQ(c.node(0).orphan_progress().passes, 4u);
  EXPECT_EQ(c.node(0).orphan_progress().deleted, 0u);
}

// A node back after its shards moved, where every node that moved them has
// restarted since (forgetting what it moved): the old copies are no
// record's, and the node's sweep deletes them.
TEST(NodeOrphans, OldCopiesOnANodeBackAreSweptWhenTheMoversForgot) {
  auto rng = fern::testing::TestRng();
  constexpr int kN = 8;
  Cluster c(512, kN, -1, fern::testing::RunSeed(), 3s);
  const std::string path = "/o/moved";
  const auto bytes = Bytes(rng, 12 * kStripe + 3);
  ASSERT_TRUE(c.Put(0, path, bytes).ok());
  const uint64_t file_id = FileIdOf(c, path);
  std::set<int> holders = HoldersOf(c, 0, path);
  holders.erase(0);
  const int back = *std::next(holders.begin(), static_cast<long>(rng() % holders.size()));
  const size_t old_copies = ShardsOf(c, back, file_id);
  ASSERT_GT(old_copies, 0u);
  c.Crash(back);
  c.TickAll(5);
  c.RunUntil([&] { return ReplaceIdle(c); });
  ASSERT_EQ(HoldersOf(c, 0, path).count(back), 0u);
  for (int i = 0; i < kN; ++i) {
    if (i == back) continue;
    c.Crash(i);  // forgets what it moved off `back`
    c.Restart(i);
  }
  c.Restart(back);
  c.TickAll(2);
  c.RunUntilOrIdle([] { return false; });
  ASSERT_EQ(ShardsOf(c, back, file_id), old_copies) << "no one remembered them";
  ASSERT_TRUE(Sweep(c, back).ok());
  ASSERT_TRUE(Sweep(c, back).ok());
  EXPECT_EQ(ShardsOf(c, back, file_id), 0u);
  EXPECT_EQ(c.node(back).orphan_progress().deleted, old_copies);
  c.KillTwoMoreAndExpect(back, 0, back, path, bytes);
}

// The node holding shard `index` of the (one-stripe) files in c.
int HolderOf(Cluster& c, uint32_t index, ShardKey* key = nullptr) {
  for (int i = 0; i < c.size(); ++i) {
    for (const auto& meta : (index < 4 ? c.data(i) : c.parity(i)).List()) {
      if (meta.key.index != index) continue;
      if (key) *key = meta.key;
      return i;
    }
  }
  return -1;
}

// Changes a byte of a stored shard and reseals it: wrong, yet matching its
// own CRC (as a coder bug or a stale rewrite would leave it).
void CorruptConsistently(ShardStore& store, const ShardKey& key) {
  {
    auto w = store.OpenForUpdate(key);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    w->data[w->data.size() / 3] ^= 0x10;
  }
  ASSERT_TRUE(store.Reseal(key, 0, 1).ok());
}

// The same, but as a coder bug would leave it: rewritten whole, keeping the
// data CRCs it records.
void CorruptKeepingRecord(ShardStore& store, const ShardKey& key) {
  std::vector<uint8_t> bytes;
  ShardMeta meta;
  {
    auto v = store.Read(key);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    bytes.assign(v->data.begin(), v->data.end());
    meta = v->meta;
  }
  bytes[bytes.size() / 3] ^= 0x10;
  meta.crc32c = ec::Crc32c(bytes);
  auto r = store.Reserve(key, bytes.size());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::copy(bytes.begin(), bytes.end(), (*r)->data().begin());
  ASSERT_TRUE(store.Commit(std::move(r).value(), meta).ok());
}

// A parity shard that is wrong yet matches its own CRC (a coder bug, a
// stale rewrite: here changed and resealed) must never decode into bytes a
// read returns: with a spare shard the read decodes around it, without one
// it fails with DataLoss (EIO), and a repair does not copy it into data.
// One single-stripe file; who holds data shards 0 and 1 and parity shard 4,
// and a node holding none of them to read through.
class NodeDecode : public ::testing::Test {
 protected:
  void SetUp() override {
    auto rng = fern::testing::TestRng();
    bytes = Bytes(rng, kStripe);
    ASSERT_TRUE(c.Put(0, "/v/f", bytes).ok());
    d0 = HolderOf(c, 0);
    d1 = HolderOf(c, 1);
    p4 = HolderOf(c, 4, &p4_key);
    ASSERT_TRUE(d0 >= 0 && d1 >= 0 && p4 >= 0);
    while (via == d0 || via == d1 || via == p4) ++via;
  }
  Cluster c;
  std::vector<uint8_t> bytes;
  ShardKey p4_key;
  int d0 = -1, d1 = -1, p4 = -1, via = 0;
};

TEST_F(NodeDecode, AWrongParityMatchingItsOwnCrcNeverBecomesData) {
  CorruptConsistently(c.parity(p4), p4_key);

  // Data shard 0's node is reborn empty and rebuilds it: from shards that
  // agree with the data CRCs parity 5 records, not through parity 4.
  c.WipeData(d0);
  ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(d0).Repair(done); }).ok());
  EXPECT_EQ(c.node(d0).decode_stats().verified, 1u);
  c.Kill(d1);
  c.Kill(p4);  // the read now decodes from the repaired shard 0
  auto repaired = c.Get(via, "/v/f");
  ASSERT_TRUE(repaired.ok()) << repaired.status().ToString();
  EXPECT_TRUE(repaired->bytes == bytes) << "the repaired data shard holds wrong bytes";
}

// A lost parity is rebuilt by encoding the data, not by decoding through
// the other parity, whose bytes are wrong here (its record right); the
// rebuilt one records the data CRCs too.
TEST_F(NodeDecode, ALostParityIsRebuiltFromTheDataNotThroughAWrongParity) {
  ShardKey p5_key;
  const int p5 = HolderOf(c, 5, &p5_key);
  ASSERT_GE(p5, 0);
  std::vector<uint8_t> p5_bytes;
  {
    auto v = c.parity(p5).Read(p5_key);
    ASSERT_TRUE(v.ok());
    p5_bytes.assign(v->data.begin(), v->data.end());
  }
  CorruptKeepingRecord(c.parity(p4), p4_key);
  ASSERT_TRUE(c.parity(p5).Remove(p5_key).ok());
  ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(p5).Repair(done); }).ok());
  EXPECT_EQ(c.node(p5).repair_progress().shards_restored, 1u);
  auto v = c.parity(p5).Read(p5_key);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_TRUE(std::equal(v->data.begin(), v->data.end(), p5_bytes.begin(), p5_bytes.end()))
      << "parity 5 was rebuilt through the wrong parity 4";
  EXPECT_EQ(v->meta.stripe_crcs.size(), 4u);
}

// A read past a parity whose bytes are wrong but whose record is right.
TEST_F(NodeDecode, AReadIsNotFooledByAWrongParityThatKeptItsRecord) {
  CorruptKeepingRecord(c.parity(p4), p4_key);
  c.Kill(d0);
  auto around = c.Get(via, "/v/f");
  ASSERT_TRUE(around.ok()) << around.status().ToString();
  EXPECT_TRUE(around->bytes == bytes) << "decoded through the wrong parity";
  c.Kill(d1);
  EXPECT_EQ(c.Get(via, "/v/f").status().code(), StatusCode::kDataLoss);
}

// A data shard that is wrong but matches its own CRC: scrub names it and
// does not re-encode the parity from it (that would make it permanent);
// scrub --repair decodes it from the other shards, checked against the
// parity's records, and rewrites it (only as it was read), leaving the
// parity as it was. (A read heals it too: the healthy-read test.)
TEST_F(NodeDecode, AWrongDataShardIsNamedByScrubAndRewrittenByScrubRepair) {
  ShardKey d0_key;
  ASSERT_EQ(HolderOf(c, 0, &d0_key), d0);
  std::vector<uint8_t> p4_bytes, d0_bytes;
  {
    auto v = c.parity(p4).Read(p4_key);
    ASSERT_TRUE(v.ok());
    p4_bytes.assign(v->data.begin(), v->data.end());
    auto d = c.data(d0).Read(d0_key);
    ASSERT_TRUE(d.ok());
    d0_bytes.assign(d->data.begin(), d->data.end());
  }
  CorruptConsistently(c.data(d0), d0_key);
  auto found = c.Scrub(via, "/v");
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->inconsistent, 1u);
  EXPECT_EQ(found->repaired, 0u);
  ASSERT_EQ(found->problems.size(), 1u);
  EXPECT_NE(found->problems[0].find("data shard 0 disagrees"), std::string::npos) << found->problems[0];
  EXPECT_NE(found->problems[0].find("parity not rewritten"), std::string::npos) << found->problems[0];
  auto fixed = c.Scrub(via, "/v", /*repair=*/true);
  ASSERT_TRUE(fixed.ok()) << fixed.status().ToString();
  EXPECT_EQ(fixed->inconsistent, 1u);
  EXPECT_EQ(fixed->repaired, 1u);
  ASSERT_EQ(fixed->problems.size(), 1u);
  EXPECT_NE(fixed->problems[0].find("rewritten from the other shards"), std::string::npos) << fixed->problems[0];
  {
    auto d = c.data(d0).Read(d0_key);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_TRUE(std::equal(d->data.begin(), d->data.end(), d0_bytes.begin(), d0_bytes.end()))
        << "data shard 0 is not its original bytes";
    auto v = c.parity(p4).Read(p4_key);
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE(std::equal(v->data.begin(), v->data.end(), p4_bytes.begin(), p4_bytes.end()))
        << "scrub re-encoded parity from the wrong data shard";
  }
  auto after = c.Scrub(via, "/v");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->consistent, 1u);
  EXPECT_EQ(after->inconsistent, 0u);
}

// A healthy read (every data shard there and matching its own CRC) checks
// the data against the CRCs a parity records: a data shard wrong but
// self-consistent is decoded around, never returned, and rewritten on its
// node with the checked decoded bytes.
// The same with a hedge in between: data shard 1 lags, so the stripe asks
// for its parity; shard 1 and parity 4's header (its recorded data CRCs)
// come before the parity shards do. The data fails the check against the
// record: the stripe waits for the parity and decodes around shard 0
// instead of returning what it has.
TEST_F(NodeDecode, AHedgedReadStillDecodesAroundADataShardWrongButMatchingItsOwnCrc) {
  ShardKey d0_key;
  ASSERT_EQ(HolderOf(c, 0, &d0_key), d0);
  const int p5 = HolderOf(c, 5);
  ASSERT_GE(p5, 0);
  CorruptConsistently(c.data(d0), d0_key);
  c.net().SetLinkDelay(NodeId(d1), NodeId(via), 200ms);  // past the 50 ms hedge
  c.net().SetLinkDelay(NodeId(p4), NodeId(via), 300ms);  // the header, then the parity
  c.net().SetLinkDelay(NodeId(p5), NodeId(via), 300ms);
  auto got = c.Get(via, "/v/f");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == bytes) << "the wrong data shard reached the reader";
  EXPECT_EQ(c.node(via).hedge_stats().hedged, 1u);
  EXPECT_EQ(c.node(via).read_check_stats().mismatched, 1u);
  EXPECT_EQ(c.node(via).decode_stats().verified, 1u);
  c.net().Heal();
}

TEST_F(NodeDecode, AHealthyReadDecodesAroundADataShardWrongButMatchingItsOwnCrc) {
  auto healthy = c.Get(via, "/v/f");
  ASSERT_TRUE(healthy.ok()) << healthy.status().ToString();
  EXPECT_TRUE(healthy->bytes == bytes);
  EXPECT_EQ(c.node(via).read_check_stats().verified, 1u);
  EXPECT_EQ(c.node(via).read_check_stats().mismatched, 0u);
  EXPECT_EQ(c.node(via).decode_stats().stripes, 0u);  // nothing decoded
  ShardKey d0_key;
  ASSERT_EQ(HolderOf(c, 0, &d0_key), d0);
  std::vector<uint8_t> d0_bytes;
  {
    auto d = c.data(d0).Read(d0_key);
    ASSERT_TRUE(d.ok());
    d0_bytes.assign(d->data.begin(), d->data.end());
  }
  CorruptConsistently(c.data(d0), d0_key);
  auto got = c.Get(via, "/v/f");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == bytes) << "the wrong data shard reached the reader";
  EXPECT_EQ(c.node(via).read_check_stats().mismatched, 1u);
  EXPECT_EQ(c.node(via).decode_stats().verified, 1u);
  c.RunUntil([&] { return c.node(via).read_check_stats().rewritten == 1; });
  {
    auto d = c.data(d0).Read(d0_key);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_TRUE(std::equal(d->data.begin(), d->data.end(), d0_bytes.begin(), d0_bytes.end()))
        << "data shard 0 was not rewritten with its decoded bytes";
  }
  // Healed: the next read finds nothing wrong.
  ASSERT_TRUE(c.Get(via, "/v/f").ok());
  EXPECT_EQ(c.node(via).read_check_stats().mismatched, 1u);
  CorruptConsistently(c.data(d0), d0_key);
  // Into a file too (fern-ec get), and with the other parity gone.
  auto to_file = c.GetToFile(via, "/v/f");
  ASSERT_TRUE(to_file.ok()) << to_file.status().ToString();
  EXPECT_TRUE(*to_file == bytes);
  const int p5 = HolderOf(c, 5);
  c.Kill(p5 == via ? p4 : p5);
  auto one_parity = c.Get(via, "/v/f");
  ASSERT_TRUE(one_parity.ok()) << one_parity.status().ToString();
  EXPECT_TRUE(one_parity->bytes == bytes);
}

TEST_F(NodeDecode, AReadDecodesAroundAWrongParityOrFailsWithEio) {
  // A plain degraded read is checked.
  c.Kill(d0);
  auto healthy = c.Get(via, "/v/f");
  ASSERT_TRUE(healthy.ok()) << healthy.status().ToString();
  EXPECT_TRUE(healthy->bytes == bytes);
  EXPECT_EQ(c.node(via).decode_stats().verified, 1u);
  CorruptConsistently(c.parity(p4), p4_key);
  auto around = c.Get(via, "/v/f");
  ASSERT_TRUE(around.ok()) << around.status().ToString();
  EXPECT_TRUE(around->bytes == bytes) << "decoded through the wrong parity";
  EXPECT_EQ(c.node(via).decode_stats().verified, 2u);
  c.Kill(d1);
  auto refused = c.Get(via, "/v/f");
  EXPECT_EQ(refused.status().code(), StatusCode::kDataLoss) << refused.status().ToString();
  EXPECT_EQ(c.node(via).decode_stats().rejected, 1u);
}

TEST(NodeMembership, SilentPeerIsDeclaredDeadAndRejoinsWhenHeardAgain) {
  Cluster c;
  std::vector<std::string> events;
  c.node(0).OnMembershipChange([&](NodeId peer, bool alive, const std::string& why) {
    events.push_back(peer.ToString() + (alive ? " up" : " down"));
  });
  c.TickAll(3);
  EXPECT_TRUE(c.node(0).view().IsAlive(NodeId(2)));
  EXPECT_TRUE(events.empty());
  // Node 2 goes silent (a paused process, a cut cable): no message either way.
  for (int i = 0; i < kNodes; ++i) {
    if (i != 2) c.net().Partition(NodeId(2), NodeId(i));
  }
  const uint64_t epoch = c.node(0).view().epoch();
  c.TickAll(13);
  EXPECT_FALSE(c.node(0).view().IsAlive(NodeId(2)));
  EXPECT_FALSE(c.node(2).view().IsAlive(NodeId(0)));
  EXPECT_GT(c.node(0).view().epoch(), epoch);
  c.net().Heal();
  c.TickAll(2);
  EXPECT_TRUE(c.node(0).view().IsAlive(NodeId(2)));
  EXPECT_TRUE(c.node(2).view().IsAlive(NodeId(0)));
  EXPECT_EQ(events, (std::vector<std::string>{"node 2 down", "node 2 up"}));
}

TEST(NodeRepair, TooManyPeersDownIsUnavailableNotWrong) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  ASSERT_TRUE(c.Put(0, "/f", Bytes(rng, 4 * kStripe)).ok());
  // The wiped node must have held a data shard: with some seeds node 5 held
  // only parity of the 4 stripes (chance (1/3)^4) and had nothing to rebuild.
  int wiped = -1;
  for (int i = kNodes - 1; i >= 0 && wiped < 0; --i) {
    if (!c.data(i).List().empty()) wiped = i;
  }
  ASSERT_GE(wiped, 0);
  c.WipeData(wiped);
  // Three others die: 2 shards per stripe left besides the wiped node's,
  // fewer than k.
  for (int i = 0, killed = 0; i < kNodes && killed < 3; ++i) {
    if (i == wiped) continue;
    c.Kill(i);
    ++killed;
  }
  Status s = c.Await<Status>([&](auto done) { c.node(wiped).Repair(done); });
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_GT(c.node(wiped).repair_progress().shards_failed, 0u);
}

}  // namespace
}  // namespace fern::daemon

namespace fern::daemon {
namespace {

// Parity group commit (NodeOptions::batch_durable_commits): a shard is
// acknowledged only once the flusher committed it, and a SHARD_DELETE that
// arrives while the shard still waits for its batch (a put that timed out
// and cleans up) is not lost: the shard is gone once its commit lands.
// Node 0 of a two-node k=1 m=1 cluster over memory stores, and node 1's
// bare transport (tb) to send it raw requests.
struct OneNode {
  explicit OneNode(bool batch_durable_commits = false)
      : node(Node::Create({.id = NodeId(0), .k = 1, .m = 1, .shard_size = kShard, .rpc_timeout = 2s,
                           .batch_durable_commits = batch_durable_commits},
                          ta.get(), data.get(), parity.get(),
                          *placement::ClusterView::Make({{NodeId(0), "", true}, {NodeId(1), "", true}}))) {}
  transport::LoopbackNetwork net{fern::testing::RunSeed()};
  std::unique_ptr<transport::LoopbackTransport> ta = net.AddNode(NodeId(0));
  std::unique_ptr<transport::LoopbackTransport> tb = net.AddNode(NodeId(1));
  std::unique_ptr<ShardStore> data = NewMemoryShardStore(16, kShard);
  std::unique_ptr<ShardStore> parity = NewMemoryShardStore(16, kShard);
  StatusOr<std::unique_ptr<Node>> node;
};

TEST(NodeDurableBatch, DeleteThatOvertakesItsParityShardStillRemovesIt) {
  OneNode one(/*batch_durable_commits=*/true);
  ASSERT_TRUE(one.node.ok()) << one.node.status().ToString();
  auto& tb = one.tb;
  auto& parity = one.parity;
  auto& node = one.node;

  auto send_put = [&](uint64_t file_id, std::optional<Status>* acked) {
    auto bytes = std::make_shared<std::vector<uint8_t>>(kShard, static_cast<uint8_t>(file_id));
    wire::ShardPut put;
    put.mutable_id()->set_file_id(file_id);
    put.mutable_id()->set_version(1);
    put.mutable_id()->set_stripe(0);
    put.mutable_id()->set_index(1);  // k=1: index 1 is parity
    put.set_length(bytes->size());
    put.set_crc32c(ec::Crc32c(*bytes));
    put.set_durable(true);
    tb->Call(NodeId(0), {wire::SHARD_PUT, put.SerializeAsString(), transport::Payload::View(*bytes, bytes)},
             {1h, nullptr}, [acked](StatusOr<transport::InMessage> r) { *acked = r.status(); });
  };
  std::optional<Status> kept_ack, deleted_ack, delete_reply;
  send_put(7, &kept_ack);
  send_put(8, &deleted_ack);
  // Both shards reached node 0 and wait for FlushDurable: neither is acked
  // yet. (Deadlines run on the network's simulated clock, which Wait moves
  // on: deliver with Progress alone, and give the calls an hour.)
  for (int i = 0; i < 100; ++i) tb->Progress();
  EXPECT_FALSE(kept_ack.has_value());
  EXPECT_EQ(parity->List().size(), 0u);
  wire::ShardDelete del;
  del.mutable_id()->set_file_id(8);
  del.mutable_id()->set_version(1);
  del.mutable_id()->set_stripe(0);
  del.mutable_id()->set_index(1);
  tb->Call(NodeId(0), {wire::SHARD_DELETE, del.SerializeAsString(), {}}, {1h, nullptr},
           [&](StatusOr<transport::InMessage> r) { delete_reply = r.status(); });
  ASSERT_TRUE(transport::ProgressUntil(*tb, [&] { return delete_reply.has_value(); }, 5s));
  EXPECT_TRUE(delete_reply->ok()) << delete_reply->ToString();
  // Now the batch commits (flusher thread) and is acknowledged (this thread).
  ASSERT_TRUE(transport::ProgressUntil(
      *tb,
      [&] {
        (*node)->FlushDurable();
        return kept_ack.has_value() && deleted_ack.has_value();
      },
      10s));
  EXPECT_TRUE(kept_ack->ok()) << kept_ack->ToString();
  EXPECT_TRUE(deleted_ack->ok()) << deleted_ack->ToString();
  auto left = parity->List();
  ASSERT_EQ(left.size(), 1u) << "the deleted shard came back after its commit";
  EXPECT_EQ(left[0].key.file_id, 7u);
  EXPECT_EQ((*node)->durable_shards(), 2u);
}

// Stripe data CRCs on the wire: exactly k of them, on a parity shard only;
// anything else is refused with a clear error and stores nothing. Accepted
// ones come back with the shard.
TEST(NodeShardService, StripeCrcsAreKOnAParityShardOrRefused) {
  OneNode one;
  ASSERT_TRUE(one.node.ok()) << one.node.status().ToString();
  auto& tb = one.tb;
  auto& data = one.data;
  auto& parity = one.parity;
  auto call = [&](transport::MessageKind kind, const std::string& header, std::shared_ptr<std::vector<uint8_t>> bytes) {
    std::optional<StatusOr<transport::InMessage>> reply;
    transport::Payload payload;
    if (bytes) payload = transport::Payload::View(*bytes, bytes);
    tb->Call(NodeId(0), {kind, header, std::move(payload)}, {1h, nullptr},
             [&](StatusOr<transport::InMessage> r) { reply = std::move(r); });
    EXPECT_TRUE(transport::ProgressUntil(*tb, [&] { return reply.has_value(); }, 5s));
    return reply ? std::move(*reply) : StatusOr<transport::InMessage>(InternalError("no reply"));
  };
  auto put = [&](uint32_t index, std::vector<uint32_t> crcs) {
    auto bytes = std::make_shared<std::vector<uint8_t>>(kShard, static_cast<uint8_t>(index + 1));
    wire::ShardPut p;
    internal::SetId(p.mutable_id(), 9, 1, 0, static_cast<int>(index));
    p.set_length(bytes->size());
    p.set_crc32c(ec::Crc32c(*bytes));
    for (uint32_t c : crcs) p.add_stripe_crc32c(c);
    return call(wire::SHARD_PUT, p.SerializeAsString(), bytes).status();
  };
  Status s = put(1, {1, 2});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("carries 2 stripe data CRCs"), std::string::npos) << s.ToString();
  s = put(0, {1});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_EQ(data->List().size() + parity->List().size(), 0u);
  ASSERT_TRUE(put(1, {0xabcdef01}).ok());
  wire::ShardGet get;
  internal::SetId(get.mutable_id(), 9, 1, 0, 1);
  auto got = call(wire::SHARD_GET, get.SerializeAsString(), nullptr);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  wire::ShardGetReply reply;
  ASSERT_TRUE(reply.ParseFromString(got->header));
  ASSERT_EQ(reply.stripe_crc32c_size(), 1);
  EXPECT_EQ(reply.stripe_crc32c(0), 0xabcdef01u);
  // A shard a PSW recovery round installs follows the same rule, and a
  // parity installed with its data CRCs records them.
  auto install = [&](uint32_t index, std::vector<uint32_t> crcs) {
    auto bytes = std::make_shared<std::vector<uint8_t>>(kShard, static_cast<uint8_t>(index + 7));
    wire::SeqInstall ins;
    internal::SetId(ins.mutable_id(), 9, 2, 0, static_cast<int>(index));
    ins.set_epoch(1);
    ins.set_seq(3);
    ins.set_length(bytes->size());
    ins.set_crc32c(ec::Crc32c(*bytes));
    for (uint32_t c : crcs) ins.add_stripe_crc32c(c);
    return call(wire::SEQ_INSTALL, ins.SerializeAsString(), bytes).status();
  };
  s = install(0, {5});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  s = install(1, {5, 6});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_EQ(data->List().size() + parity->List().size(), 1u);
  ASSERT_TRUE(install(1, {0x12345678}).ok());
  auto installed = parity->Read({9, 2, 0, 1});
  ASSERT_TRUE(installed.ok()) << installed.status().ToString();
  EXPECT_EQ(installed->meta.seq, 3u);
  EXPECT_EQ(installed->meta.stripe_crcs, std::vector<uint32_t>{0x12345678});
}

// Scrub's rewrite of a shard it found wrong replaces it only as it was read:
// a different CRC, seq or epoch (an update slipped in) is refused and the
// stored shard stays.
TEST(NodeShardService, AConditionalReplaceRefusesAShardThatChanged) {
  OneNode one;
  ASSERT_TRUE(one.node.ok()) << one.node.status().ToString();
  auto& tb = one.tb;
  auto put = [&](uint8_t fill, bool conditional, uint32_t expect_crc, uint64_t seq) {
    auto bytes = std::make_shared<std::vector<uint8_t>>(kShard, fill);
    wire::ShardPut p;
    internal::SetId(p.mutable_id(), 9, 1, 0, 0);
    p.set_length(bytes->size());
    p.set_crc32c(ec::Crc32c(*bytes));
    p.set_seq(seq);
    p.set_replace_if_unchanged(conditional);
    p.set_expect_crc32c(expect_crc);
    std::optional<StatusOr<transport::InMessage>> reply;
    tb->Call(NodeId(0), {wire::SHARD_PUT, p.SerializeAsString(), transport::Payload::View(*bytes, bytes)}, {1h, nullptr},
             [&](StatusOr<transport::InMessage> r) { reply = std::move(r); });
    EXPECT_TRUE(transport::ProgressUntil(*tb, [&] { return reply.has_value(); }, 5s));
    return reply ? reply->status() : InternalError("no reply");
  };
  auto stored = [&] {
    auto v = one.data->Read({9, 1, 0, 0});
    return v.ok() ? v->meta.crc32c : 0u;
  };
  // Nothing stored yet: nothing to replace.
  EXPECT_EQ(put(1, true, 0, 0).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(one.data->List().empty());
  ASSERT_TRUE(put(1, false, 0, 2).ok());
  const uint32_t first = stored();
  EXPECT_EQ(put(2, true, first ^ 1, 2).code(), StatusCode::kFailedPrecondition);  // other bytes
  EXPECT_EQ(put(2, true, first, 3).code(), StatusCode::kFailedPrecondition);      // other seq
  EXPECT_EQ(stored(), first);
  ASSERT_TRUE(put(2, true, first, 2).ok());
  EXPECT_EQ(stored(), ec::Crc32c(std::vector<uint8_t>(kShard, 2)));
  EXPECT_EQ(one.data->List().size(), 1u);
}


// ---- in-place updates (PSW) ----

// Ranges [offset, offset+len) of `file` replaced by fresh random bytes, as
// an update's (ranges, bytes); `expect` gets them applied.
struct Edit {
  std::vector<Node::ByteRange> ranges;
  std::vector<uint8_t> bytes;
};
Edit MakeEdit(std::mt19937_64& rng, const std::vector<std::pair<uint64_t, uint64_t>>& spans,
              std::vector<uint8_t>* expect) {
  Edit e;
  for (auto [off, len] : spans) {
    e.ranges.push_back({off, len});
    auto b = Bytes(rng, len);
    std::copy(b.begin(), b.end(), expect->begin() + static_cast<long>(off));
    e.bytes.insert(e.bytes.end(), b.begin(), b.end());
  }
  return e;
}

// Four gateways update disjoint, unaligned ranges of one file at once
// (crossing shard and stripe edges): the file is exactly their union, every
// stripe's parity is the encoding of its data, and the version is unchanged.
TEST(NodeUpdate, DisjointUnalignedWritersFromFourGatewaysComposeToTheirUnion) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  const uint64_t size = 3 * kStripe + 17;
  auto expect = Bytes(rng, size);
  ASSERT_TRUE(c.Put(0, "/u/f", expect).ok());
  std::vector<Edit> edits;
  // Writer w owns the bytes whose (offset / 1000) % 4 == w, in pieces.
  for (int w = 0; w < 4; ++w) {
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    for (uint64_t block = w; block * 1000 < size; block += 4) {
      const uint64_t off = block * 1000 + rng() % 300, len = std::min<uint64_t>(1 + rng() % 700, size - off);
      if (off < size) spans.push_back({off, len});
    }
    edits.push_back(MakeEdit(rng, spans, &expect));
  }
  std::vector<std::optional<StatusOr<uint64_t>>> results(4);
  for (int w = 0; w < 4; ++w) c.StartUpdate(w + 1, "/u/f", 1, size, edits[w].ranges, edits[w].bytes, &results[w]);
  c.RunUntil([&] { return std::all_of(results.begin(), results.end(), [](auto& r) { return r.has_value(); }); });
  for (int w = 0; w < 4; ++w) {
    ASSERT_TRUE(results[w]->ok()) << "writer " << w << ": " << results[w]->status().ToString();
    EXPECT_EQ(**results[w], 1u);
  }
  for (int via = 0; via < kNodes; via += 5) {
    auto got = c.Get(via, "/u/f");
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(got->bytes == expect) << "via node " << via;
    EXPECT_EQ(got->version, 1u);
  }
  auto scrub = c.Scrub(2, "/u/f");
  ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
  EXPECT_EQ(scrub->stripes, 4u);
  EXPECT_EQ(scrub->consistent, 4u);
  EXPECT_EQ(scrub->inconsistent, 0u) << (scrub->problems.empty() ? "" : scrub->problems[0]);
  // Parity was updated too: reads decode bit-exact with two nodes gone.
  c.Kill(0);
  c.Kill(3);
  auto degraded = c.Get(1, "/u/f");
  ASSERT_TRUE(degraded.ok()) << degraded.status().ToString();
  EXPECT_TRUE(degraded->bytes == expect);
}

// Parity keeps recording its data's CRCs through in-place updates (each
// delta brings its data shard's new CRC): after single, cross-shard and
// concurrent updates every parity shard records exactly the CRCs its data
// shards now have, and a degraded read with two nodes gone is checked
// against them, stripe by stripe.
TEST(NodeUpdate, ParityRecordsFollowTheDataSoDegradedReadsAreChecked) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  const uint64_t size = 2 * kStripe + 5;
  auto expect = Bytes(rng, size);
  ASSERT_TRUE(c.Put(0, "/u/r", expect).ok());
  const std::vector<std::vector<std::vector<std::pair<uint64_t, uint64_t>>>> rounds = {
      {{{100, 10}}},                                                   // one data shard
      {{{kShard - 7, 2 * kShard + 20}, {kStripe + 3, 1}}},             // across shards and stripes
      {{{5, 300}, {kStripe - 2, 9}}, {{3 * kShard, 50}, {size - 4, 4}}}  // two writers at once
  };
  for (size_t round = 0; round < rounds.size(); ++round) {
    std::vector<std::optional<StatusOr<uint64_t>>> results(rounds[round].size());
    for (size_t w = 0; w < rounds[round].size(); ++w) {
      Edit e = MakeEdit(rng, rounds[round][w], &expect);
      c.StartUpdate(static_cast<int>(1 + w), "/u/r", 1, size, e.ranges, e.bytes, &results[w]);
    }
    c.RunUntil([&] { return std::all_of(results.begin(), results.end(), [](auto& r) { return r.has_value(); }); });
    for (auto& r : results) ASSERT_TRUE(r->ok()) << "round " << round << ": " << r->status().ToString();
  }
  std::map<std::pair<uint64_t, uint32_t>, uint32_t> data_crc;  // (stripe, index)
  for (int i = 0; i < kNodes; ++i) {
    for (const auto& meta : c.data(i).List()) data_crc[{meta.key.stripe, meta.key.index}] = meta.crc32c;
  }
  ASSERT_EQ(data_crc.size(), 3u * 4);
  int parities = 0;
  for (int i = 0; i < kNodes; ++i) {
    for (const auto& meta : c.parity(i).List()) {
      SCOPED_TRACE(meta.key.ToString());
      ++parities;
      EXPECT_GT(meta.seq, 0u);  // every stripe was updated in place
      ASSERT_EQ(meta.stripe_crcs.size(), 4u);
      for (uint32_t d = 0; d < 4; ++d) EXPECT_EQ(meta.stripe_crcs[d], (data_crc[{meta.key.stripe, d}])) << d;
    }
  }
  EXPECT_EQ(parities, 3 * 2);
  c.Kill(0);
  c.Kill(3);
  const Node::DecodeStats before = c.node(1).decode_stats();
  auto got = c.Get(1, "/u/r");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == expect);
  const Node::DecodeStats after = c.node(1).decode_stats();
  EXPECT_GT(after.stripes, before.stripes);
  EXPECT_EQ(after.verified - before.verified, after.stripes - before.stripes);
  EXPECT_EQ(after.rejected, before.rejected);
}

// A parity shard lost while an update is in flight (its node crashes and
// comes back with its parity store emptied: a replaced disk) is rebuilt by
// the recovery round from a checked decode and installed with the data
// CRCs it encodes; the update is retried, as a writer does, until it
// commits. Swept over how far the update got before the crash.
TEST(NodeUpdate, ParityRebuiltByARecoveryRoundRecordsItsDataCrcs) {
  auto rng = fern::testing::TestRng();
  int installs_seen = 0;
  for (int steps = 0; steps < 24; ++steps) {
    SCOPED_TRACE("crash after " + std::to_string(steps) + " half milliseconds");
    Cluster c(512, kNodes, -1, rng());
    auto expect = Bytes(rng, kStripe);
    ASSERT_TRUE(c.Put(0, "/u/i", expect).ok());
    int holder = -1;
    for (int i = 0; i < kNodes; ++i) {
      for (const auto& meta : c.parity(i).List()) {
        if (meta.key.index == 4) holder = i;
      }
    }
    ASSERT_GE(holder, 0);
    const int via = (holder + 1) % kNodes;
    Edit e = MakeEdit(rng, {{kShard + 10, 2 * kShard}}, &expect);
    std::optional<StatusOr<uint64_t>> r;
    c.net().SetDelay(1ms, 1ms);  // one hop per simulated millisecond
    c.StartUpdate(via, "/u/i", 1, kStripe, e.ranges, e.bytes, &r);
    for (int i = 0; i < steps; ++i) {
      c.net().clock().Advance(500us);
      c.net().Pump();
    }
    c.Crash(holder);
    for (const auto& meta : c.parity(holder).List()) ASSERT_TRUE(c.parity(holder).Remove(meta.key).ok());
    c.RunUntilOrIdle([&] { return r.has_value(); });
    c.Restart(holder);
    // The round that lost the parity rebuilt it once its node was back.
    if (!c.parity(holder).List().empty()) ++installs_seen;
    // As fern-ec-daemon does when it starts: rebuild what it should hold.
    EXPECT_TRUE(c.Await<Status>([&](auto done) { c.node(holder).Repair(done); }).ok());
    for (int attempt = 0; !(r && r->ok()); ++attempt) {
      ASSERT_LT(attempt, 30) << (r ? r->status().ToString() : "no answer");
      r.reset();
      c.TickAll(1);
      c.StartUpdate(via, "/u/i", 1, kStripe, e.ranges, e.bytes, &r);
      c.RunUntilOrIdle([&] { return r.has_value(); });
    }
    std::map<uint32_t, uint32_t> data_crc;
    for (int i = 0; i < kNodes; ++i) {
      for (const auto& meta : c.data(i).List()) data_crc[meta.key.index] = meta.crc32c;
    }
    for (int i = 0; i < kNodes; ++i) {
      for (const auto& meta : c.parity(i).List()) {
        SCOPED_TRACE(meta.key.ToString());
        ASSERT_EQ(meta.stripe_crcs.size(), 4u);
        for (uint32_t d = 0; d < 4; ++d) EXPECT_EQ(meta.stripe_crcs[d], data_crc[d]) << d;
      }
    }
    auto scrub = c.Scrub(via, "/u/i");
    ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
    EXPECT_EQ(scrub->consistent, 1u) << (scrub->problems.empty() ? "" : scrub->problems[0]);
    auto got = c.Get(via, "/u/i");
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(got->bytes == expect);
  }
  std::printf("[fern-test] parity rebuilt by a recovery round in %d of 24 sweep steps\n", installs_seen);
  EXPECT_GT(installs_seen, 0) << "no sweep step lost the parity to a recovery round";
}

// Two writers overwrite the same bytes at once: every byte of the range is
// one writer's (the sequencer's order), the same on data and parity.
// A node restarted with an empty tmpfs has not rebuilt its data shard yet
// when an update of that shard's bytes comes: the sequencer's recovery
// round rolls the update back and rebuilds the shard, and the gateway sends
// the piece again, which commits: the writer sees success, not EIO.
TEST(NodeUpdate, AnUpdateRolledBackForAShardLostInAWipeIsSentAgainAndCommits) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  auto bytes = Bytes(rng, 2 * kStripe + 3);
  ASSERT_TRUE(c.Put(0, "/w/f", bytes).ok());
  auto ins = c.Await<StatusOr<Node::Inspection>>([&](auto done) { c.node(0).Inspect("/w/f", Caller{}, done); });
  ASSERT_TRUE(ins.ok());
  const int holder = static_cast<int>(ins->stripes[0].shards[1].node.value);  // data shard 1 of stripe 0
  c.WipeData(holder);
  c.Crash(holder);
  c.Restart(holder);  // no repair pass run yet
  const int via = (holder + 1) % kNodes;
  const uint64_t off = kShard + 3;  // inside the lost shard
  auto patch = Bytes(rng, 5);
  std::optional<StatusOr<uint64_t>> r;
  c.StartUpdate(via, "/w/f", ins->info.version, bytes.size(), {{off, patch.size()}}, patch, &r);
  for (int t = 0; t < 100 && !r.has_value(); ++t) {
    c.RunUntilOrIdle([&] { return r.has_value(); });
    if (!r.has_value()) c.TickAll(1);  // the sequencer's deadlines start its recovery round
  }
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r->ok()) << r->status().ToString();
  std::copy(patch.begin(), patch.end(), bytes.begin() + static_cast<long>(off));
  EXPECT_GE(c.node(via).psw_stats().pieces_retried, 1u);
  EXPECT_EQ(c.data(holder).List().size(), 1u) << "the recovery round rebuilt the shard it updated";
  // Its repair pass brings back the rest; then two more nodes may fail.
  ASSERT_TRUE(c.Await<Status>([&](auto done) { c.node(holder).Repair(done); }).ok());
  c.KillTwoMoreAndExpect(holder, holder, via, "/w/f", bytes);
}

TEST(NodeUpdate, OverlappingWritersGetTheSequencersOrder) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  const uint64_t size = 2 * kStripe;
  auto base = Bytes(rng, size);
  ASSERT_TRUE(c.Put(0, "/u/o", base).ok());
  for (int round = 0; round < 5; ++round) {
    auto a = Bytes(rng, 5000), b = Bytes(rng, 5000);
    std::optional<StatusOr<uint64_t>> ra, rb;
    c.StartUpdate(1, "/u/o", 1, size, {{3000, 5000}}, a, &ra);
    c.StartUpdate(2, "/u/o", 1, size, {{3000, 5000}}, b, &rb);
    c.RunUntil([&] { return ra.has_value() && rb.has_value(); });
    ASSERT_TRUE(ra->ok() && rb->ok()) << ra->status().ToString() << " / " << rb->status().ToString();
    auto got = c.Get(3, "/u/o");
    ASSERT_TRUE(got.ok());
    std::vector<uint8_t> mid(got->bytes.begin() + 3000, got->bytes.begin() + 8000);
    EXPECT_TRUE(mid == a || mid == b) << "round " << round << ": a mix of both writers";
    EXPECT_TRUE(std::equal(got->bytes.begin(), got->bytes.begin() + 3000, base.begin()));
    auto scrub = c.Scrub(4, "/u/o");
    ASSERT_TRUE(scrub.ok());
    EXPECT_EQ(scrub->inconsistent, 0u) << (scrub->problems.empty() ? "" : scrub->problems[0]);
  }
}

TEST(NodeUpdate, StaleVersionPermissionAndDeadNodeAreRefusedAndChangeNothing) {
  auto rng = fern::testing::TestRng();
  Cluster c(512, kNodes + 1);  // a spare node: puts still succeed with one down
  const uint64_t size = kStripe + 5;
  auto base = Bytes(rng, size);
  ASSERT_TRUE(c.Put(0, "/u/s", base, Caller{1000, 1000}, 0644).ok());
  auto patch = Bytes(rng, 10);
  std::optional<StatusOr<uint64_t>> r;
  c.StartUpdate(1, "/u/s", 2, size, {{0, 10}}, patch, &r);  // version 2 does not exist
  c.RunUntil([&] { return r.has_value(); });
  EXPECT_EQ(r->status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(r->status().errno_hint(), ESTALE);
  r.reset();
  c.StartUpdate(1, "/u/s", 1, size + 1, {{0, 10}}, patch, &r);  // wrong size
  c.RunUntil([&] { return r.has_value(); });
  EXPECT_EQ(r->status().errno_hint(), ESTALE);
  r.reset();
  c.StartUpdate(1, "/u/s", 1, size, {{0, 10}}, patch, &r, Caller{2000, 2000});
  c.RunUntil([&] { return r.has_value(); });
  EXPECT_EQ(r->status().code(), StatusCode::kPermissionDenied);
  r.reset();
  c.StartUpdate(1, "/u/s", 1, size, {{size - 5, 10}}, patch, &r);  // past the end
  c.RunUntil([&] { return r.has_value(); });
  EXPECT_EQ(r->status().code(), StatusCode::kInvalidArgument);
  // Every node holds a shard of some stripe of this file but one; kill a holder.
  c.Kill(2);
  r.reset();
  c.StartUpdate(1, "/u/s", 1, size, {{0, 10}}, patch, &r);
  c.RunUntil([&] { return r.has_value(); });
  if (!r->ok()) {
    EXPECT_EQ(r->status().errno_hint(), EAGAIN) << r->status().ToString();
  }
  auto got = c.Get(3, "/u/s");
  ASSERT_TRUE(got.ok());
  if (r->ok()) std::copy(patch.begin(), patch.end(), base.begin());  // node 2 held none of it
  EXPECT_TRUE(got->bytes == base);
}

// An in-place update through a gateway that knows a holder of the stripe
// is stuck (a request to it timed out) fails with EAGAIN at once, so the
// writer sends the whole file (placed around the node) instead of waiting
// rpc_timeout for the piece.
TEST(NodeUpdate, ANodeKnownStuckSendsTheUpdateBackAtOnce) {
  auto rng = fern::testing::TestRng();
  Cluster c(512, kNodes + 1);
  const uint64_t size = 3 * kStripe;
  const auto base = Bytes(rng, size);
  ASSERT_TRUE(c.Put(0, "/u/k", base).ok());
  const int stuck = HolderNotOwning(c, 0, "/u/k", rng);
  ASSERT_GE(stuck, 0);
  c.net().Partition(NodeId(0), NodeId(stuck));
  ASSERT_TRUE(c.Get(0, "/u/k").ok());
  c.TickAll(3);  // what the read left behind times out (rpc_timeout 2 s): node 0 knows
  std::optional<StatusOr<uint64_t>> r;
  const auto start = c.net().clock().Now();
  c.StartUpdate(0, "/u/k", 1, size, {{0, size}}, Bytes(rng, size), &r);
  c.RunUntil([&] { return r.has_value(); });
  ASSERT_FALSE(r->ok()) << "an update reached every shard with node " << stuck << " stuck";
  EXPECT_EQ(r->status().errno_hint(), EAGAIN) << r->status().ToString();
  EXPECT_LT(c.net().clock().Now() - start, 1s) << r->status().ToString();
  c.net().Heal();
  auto got = c.Get(0, "/u/k");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == base);
}

// A degraded read never decodes across update seqs: with data shard 0
// resealed at seq 1 (an update that reached only it) and data shard 1's node
// gone, the stripe decodes from the four shards still at seq 0 and returns
// the bytes before the update, not a mix of both.
TEST(NodeUpdate, DegradedReadDecodesOnlyFromShardsOfOneSeq) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  auto bytes = Bytes(rng, kStripe);
  ASSERT_TRUE(c.Put(0, "/u/d", bytes).ok());
  int holder0 = -1, holder1 = -1;
  ShardKey key0;
  for (int i = 0; i < kNodes; ++i) {
    for (const auto& meta : c.data(i).List()) {
      if (meta.key.index == 0) holder0 = i, key0 = meta.key;
      if (meta.key.index == 1) holder1 = i;
    }
  }
  ASSERT_GE(holder0, 0);
  ASSERT_GE(holder1, 0);
  auto w = c.data(holder0).OpenForUpdate(key0);
  ASSERT_TRUE(w.ok());
  for (size_t i = 0; i < 100; ++i) w->data[i] ^= 0xff;
  ASSERT_TRUE(c.data(holder0).Reseal(key0, 1, 1).ok());
  c.Kill(holder1);
  auto got = c.Get((holder1 + 1) % kNodes, "/u/d");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->bytes == bytes);
}

// The real gateway, sequencer and shard code over the seeded loopback
// network, many cases: each case writes a file, then runs rounds of
// concurrent updates of disjoint random ranges from random gateways while
// the network reorders and duplicates messages, and in some rounds crashes
// a random node (gateway, sequencer or shard holder alike) mid-round and
// restarts it; failed updates are retried until they commit, as the
// preload's callers do. At every quiescent point the file equals a model
// that applied every update, scrub finds every stripe consistent, and with
// two nodes gone the bytes decode the same. A failing case prints its seed:
// FERN_PSW_NODE_CASE_SEED=<seed> replays it; FERN_PSW_NODE_CASES=<n> sets
// how many run (default 150; 30 in sanitized builds).
TEST(NodePswModel, RandomConcurrentUpdatesWithCrashesStayConsistent) {
  const char* one = std::getenv("FERN_PSW_NODE_CASE_SEED");
  const char* cases_env = std::getenv("FERN_PSW_NODE_CASES");
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(__OPTIMIZE__)
  constexpr int kDefaultCases = 30;  // a sanitized case runs ~10-40x slower
#else
  constexpr int kDefaultCases = 150;
#endif
  const int cases = one ? 1 : cases_env ? std::atoi(cases_env) : kDefaultCases;
  const uint64_t base = fern::testing::RunSeed();
  int parity_shards = 0, recording = 0;
  uint64_t decoded = 0, verified = 0;
  for (int c = 0; c < cases; ++c) {
    const uint64_t seed = one ? std::strtoull(one, nullptr, 10) : placement::Mix64(base + c);
    SCOPED_TRACE("case seed " + std::to_string(seed) + " (FERN_PSW_NODE_CASE_SEED=" + std::to_string(seed) + ")");
    std::mt19937_64 rng(seed);
    Cluster cl(512, 7, -1, seed);
    cl.net().SetDuplicateRate(0.05);
    cl.net().SetDelay(0ms, 3ms);
    const uint64_t size = kStripe + rng() % (2 * kStripe);
    std::vector<uint8_t> model = Bytes(rng, size);
    ASSERT_TRUE(cl.Put(0, "/m/f", model).ok());
    auto settle = [&](const std::function<bool()>& done) {
      for (int t = 0; t < 200 && !done(); ++t) {
        cl.RunUntilOrIdle(done);
        cl.TickAll(1);
      }
      return done();
    };
    for (int round = 0; round < 4; ++round) {
      const int writers = 1 + static_cast<int>(rng() % 4);
      struct W {
        int via;
        Edit edit;
        std::optional<StatusOr<uint64_t>> result;
      };
      std::vector<W> ws(writers);
      std::vector<uint8_t> next = model;
      const uint64_t slice = size / writers;
      for (int w = 0; w < writers; ++w) {
        std::vector<std::pair<uint64_t, uint64_t>> spans;
        uint64_t at = w * slice;
        const uint64_t end = (w + 1) * slice;
        for (int r = 0; r < 3 && at + 2 < end; ++r) {
          const uint64_t off = at + rng() % std::min<uint64_t>(end - at - 1, 5000);
          const uint64_t len = 1 + rng() % std::min<uint64_t>(end - off - 1, 3 * kShard);
          spans.push_back({off, len});
          at = off + len + 1;
          if (at >= end) break;
        }
        if (spans.empty()) spans.push_back({w * slice, 1});
        ws[w].edit = MakeEdit(rng, spans, &next);
        do {
          ws[w].via = static_cast<int>(rng() % cl.size());
        } while (cl.crashed(ws[w].via));
      }
      for (auto& w : ws) cl.StartUpdate(w.via, "/m/f", 1, size, w.edit.ranges, w.edit.bytes, &w.result);
      int victim = -1;
      if (rng() % 2) {
        victim = static_cast<int>(rng() % cl.size());
        const int steps = static_cast<int>(rng() % 40);
        for (int i = 0; i < steps; ++i) cl.net().Pump();
        cl.Crash(victim);
      }
      // Updates through a crashed gateway never answer: they are retried.
      auto all_answered = [&] {
        return std::all_of(ws.begin(), ws.end(), [&](W& w) { return w.result.has_value() || cl.crashed(w.via); });
      };
      ASSERT_TRUE(settle(all_answered)) << "round " << round << ": updates never answered";
      if (victim >= 0) cl.Restart(victim);
      for (auto& w : ws) {
        for (int attempt = 0; !(w.result && w.result->ok()); ++attempt) {
          ASSERT_LT(attempt, 30) << "round " << round << ": an update never committed: "
                                 << (w.result ? w.result->status().ToString() : "no answer");
          w.result.reset();
          if (attempt > 0) cl.TickAll(1);
          cl.StartUpdate(w.via, "/m/f", 1, size, w.edit.ranges, w.edit.bytes, &w.result);
          ASSERT_TRUE(settle([&] { return w.result.has_value(); }));
        }
      }
      model = next;
      auto got = cl.Get((victim + 1 + cl.size()) % cl.size(), "/m/f");
      ASSERT_TRUE(got.ok()) << "round " << round << ": " << got.status().ToString();
      ASSERT_TRUE(got->bytes == model) << "round " << round << ": the file differs from the model";
      auto scrub = cl.Scrub(static_cast<int>(rng() % cl.size()), "/m/f");
      ASSERT_TRUE(scrub.ok()) << scrub.status().ToString();
      ASSERT_EQ(scrub->inconsistent + scrub->degraded, 0u)
          << "round " << round << ": " << (scrub->problems.empty() ? "" : scrub->problems[0]);
    }
    for (int i = 0; i < cl.size(); ++i) {
      for (const auto& meta : cl.parity(i).List()) {
        ++parity_shards;
        if (!meta.stripe_crcs.empty()) ++recording;
      }
    }
    const int a = static_cast<int>(rng() % cl.size()), b = (a + 1) % cl.size();
    cl.Crash(a);
    cl.Crash(b);
    const int via = (b + 1) % cl.size();
    const Node::DecodeStats before = cl.node(via).decode_stats();
    auto degraded = cl.Get(via, "/m/f");
    ASSERT_TRUE(degraded.ok()) << degraded.status().ToString();
    ASSERT_TRUE(degraded->bytes == model) << "degraded read differs from the model";
    decoded += cl.node(via).decode_stats().stripes - before.stripes;
    verified += cl.node(via).decode_stats().verified - before.verified;
  }
  // Scrub above checked every record kept against the data. Records are
  // kept through updates, crashes and recovery rounds (dropping one is
  // allowed, e.g. a parity rolled back below its seq, and was seen in none
  // of 3000 cases): most parity shards must still have theirs.
  std::printf("[fern-test] parity shards recording their data CRCs at the end: %d of %d; degraded decodes "
              "verified: %llu of %llu\n",
              recording, parity_shards, static_cast<unsigned long long>(verified),
              static_cast<unsigned long long>(decoded));
  EXPECT_GE(recording * 10, parity_shards * 9);
  EXPECT_GE(verified * 10, decoded * 9);
}

// Parity that silently disagrees with its data (bit rot its CRC cannot
// catch: resealed) is found by scrub and rewritten with --repair.
TEST(NodeScrub, FindsAndRepairsParityThatDisagreesWithData) {
  auto rng = fern::testing::TestRng();
  Cluster c;
  ASSERT_TRUE(c.Put(0, "/s/a", Bytes(rng, 2 * kStripe)).ok());
  ASSERT_TRUE(c.Put(0, "/s/b", Bytes(rng, kStripe + 1)).ok());
  auto clean = c.Scrub(1, "/s");
  ASSERT_TRUE(clean.ok()) << clean.status().ToString();
  EXPECT_EQ(clean->files, 2u);
  EXPECT_EQ(clean->stripes, 4u);
  EXPECT_EQ(clean->consistent, 4u);
  int flipped = 0;
  for (int i = 0; i < kNodes && flipped == 0; ++i) {
    for (const auto& meta : c.parity(i).List()) {
      auto w = c.parity(i).OpenForUpdate(meta.key);
      ASSERT_TRUE(w.ok());
      w->data[w->data.size() / 2] ^= 1;
      ASSERT_TRUE(c.parity(i).Reseal(meta.key, meta.seq, meta.epoch).ok());
      ++flipped;
      break;
    }
  }
  ASSERT_EQ(flipped, 1);
  auto found = c.Scrub(1, "/");
  ASSERT_TRUE(found.ok());

  EXPECT_EQ(found->inconsistent, 1u);
  EXPECT_EQ(found->repaired, 0u);
  auto fixed = c.Scrub(2, "/", /*repair=*/true);
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(fixed->inconsistent, 1u);
  EXPECT_EQ(fixed->repaired, 1u);
  auto after = c.Scrub(3, "/s");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->inconsistent, 0u);
  EXPECT_EQ(after->consistent, 4u);
  EXPECT_EQ(c.Scrub(3, "/nothing").status().code(), StatusCode::kNotFound);
}
}  // namespace
}  // namespace fern::daemon
