// Soak (opt-in: `FERN_SOAK=1 scripts/test.sh`, or `ctest -L soak`): seven
// real daemons, k=4 m=2, with re-placement, orphan sweeps and degraded
// writes on short clocks (--replace-after 6, --orphan-sweep 2,
// --min-shards 5), under a seeded random mix for FERN_SOAK_SECONDS (default
// 240): new versions and new files put through random live nodes, renames,
// removes, SIGKILLs and restarts (half with an empty tmpfs), and SIGSTOPs
// (a node that stops answering without failing, resumed a few steps later).
// At most m=2 nodes are down or stopped, and one is killed or stopped only
// while the cluster is whole (no stripe
// degraded, no repair or re-placement running). After every few steps each
// file reads back as one of the contents it may have (a failed put may or
// may not have become visible; a failed remove may or may not have
// happened) from a random live node, and never with EIO. At the end every
// file is removed and, once the sweeps ran, no node holds a shard: nothing
// leaked, nothing named was swept.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/cluster_cli.h"
#include "test_util.h"

namespace {

using namespace fern::testing::cli;
using Clock = std::chrono::steady_clock;

constexpr int kNodes = 7;
constexpr uint64_t kShard = 64 * 1024;

// What a path may read as: byte strings, and whether "no such file" may be
// the answer.
struct Expect {
  std::vector<std::vector<uint8_t>> contents;
  bool may_be_absent = true;
};

// "field": N inside the object "block" of one node's status --json, summed
// over the live nodes; -1 when one does not answer.
long SumStatus(const TestCluster& tc, const std::set<int>& live, const std::string& block, const std::string& field) {
  long total = 0;
  for (int i : live) {
    const std::string st = Out("FERN_EC_SOCKET=" + tc.root + "/node-" + std::to_string(i) + "/sock " + tc.cli +
                               " status --json 2>/dev/null");
    const std::string b = JsonBlock(st, block);
    std::smatch m;
    if (!std::regex_search(b, m, std::regex("\"" + field + "\": ([a-z0-9]+)"))) return -1;
    total += m[1] == "true" ? 1 : m[1] == "false" ? 0 : std::stol(m[1]);
  }
  return total;
}

// No stripe degraded, no repair or re-placement running anywhere.
bool Whole(const TestCluster& tc, const std::set<int>& live) {
  return SumStatus(tc, live, "stripes", "degraded") == 0 && SumStatus(tc, live, "repair", "running") == 0 &&
         SumStatus(tc, live, "replace", "running") == 0;
}

TEST(Soak, RandomPutsRenamesRemovesKillsAndWipesLoseNothingAndLeakNothing) {
  auto rng = fern::testing::TestRng();
  const char* env = std::getenv("FERN_SOAK_SECONDS");
  const int seconds = env ? std::atoi(env) : 240;
  TestCluster tc("soak");
  ASSERT_EQ(tc.Start("--nodes 7 --k 4 --m 2 --shard-size 64KiB --data-capacity 96MiB --parity-capacity 96MiB"
                     " --replace-after 6 --orphan-sweep 2 --min-shards 5"),
            0);
  std::set<int> live, down;
  std::map<int, int> stopped;  // SIGSTOPped node -> steps until SIGCONT
  struct ResumeAll {           // however the test ends
    std::map<int, int>& stopped;
    const std::string& root;
    ~ResumeAll() {
      for (const auto& [n, steps] : stopped) kill(NodePid(root, n), SIGCONT);
    }
  } resume_all{stopped, tc.root};
  for (int i = 0; i < kNodes; ++i) live.insert(i);
  auto pick = [&](const std::set<int>& s) { return *std::next(s.begin(), static_cast<long>(rng() % s.size())); };
  std::map<std::string, Expect> files;
  for (int i = 0; i < 12; ++i) files["/soak/f" + std::to_string(i)] = Expect{{}, true};
  const std::string local = tc.work + "/buf", back = tc.work + "/back";
  std::map<std::string, int> counts;

  auto verify = [&](const char* when) {
    for (auto& [path, e] : files) {
      std::filesystem::remove(back);
      const int via = pick(live);
      const int rc = Sh(tc.cli + " get " + path + " " + back + tc.at + " --node " + std::to_string(via));
      if (rc == 3) {
        EXPECT_TRUE(e.may_be_absent) << when << ": " << path << " is gone (via node " << via << ")";
        continue;
      }
      ASSERT_EQ(rc, 0) << when << ": get " << path << " via node " << via << " (down: " << down.size() << ")";
      const auto got = ReadFile(back);
      bool known = false;
      for (const auto& c : e.contents) known = known || c == got;
      EXPECT_TRUE(known) << when << ": " << path << " read " << got.size() << " bytes no put wrote";
    }
    ++counts["verify"];
  };

  const auto until = Clock::now() + std::chrono::seconds(seconds);
  int step = 0;
  while (Clock::now() < until && !::testing::Test::HasFailure()) {
    ++step;
    const int dice = static_cast<int>(rng() % 100);
    if (dice < 40) {
      auto it = std::next(files.begin(), static_cast<long>(rng() % files.size()));
      static const uint64_t sizes[] = {0, 1, kShard - 1, kShard + 1, 4 * kShard + 17, 9 * kShard, 2 << 20};
      std::vector<uint8_t> bytes(sizes[rng() % std::size(sizes)] + rng() % 3);
      fern::testing::FillRandom(rng, bytes.data(), bytes.size());
      WriteFile(local, bytes);
      const int rc = Sh(tc.cli + " put " + local + " " + it->first + tc.at + " --node " + std::to_string(pick(live)));
      if (rc == 0) {
        it->second = Expect{{bytes}, false};
        ++counts["put"];
      } else {
        it->second.contents.push_back(bytes);  // it may have become visible
        ++counts["put failed"];
      }
    } else if (dice < 50) {
      auto it = std::next(files.begin(), static_cast<long>(rng() % files.size()));
      const int rc = Sh(tc.cli + " rm " + it->first + tc.at + " --node " + std::to_string(pick(live)));
      if (rc == 0 || rc == 3) {
        EXPECT_TRUE(rc == 0 || it->second.may_be_absent) << "rm " << it->first << ": no such file";
        it->second = Expect{{}, true};
        ++counts["rm"];
      } else {
        it->second.may_be_absent = true;
        ++counts["rm failed"];
      }
    } else if (dice < 56) {
      auto a = std::next(files.begin(), static_cast<long>(rng() % files.size()));
      auto b = std::next(files.begin(), static_cast<long>(rng() % files.size()));
      if (a == b) continue;
      const int rc = Sh(tc.cli + " mv " + a->first + " " + b->first + tc.at + " --node " + std::to_string(pick(live)));
      if (rc == 0) {
        b->second = Expect{a->second.contents, false};
        a->second = Expect{{}, true};
        ++counts["mv"];
      } else if (rc == 3) {
        EXPECT_TRUE(a->second.may_be_absent) << "mv " << a->first << ": no such file";
        a->second = Expect{{}, true};
        ++counts["mv of nothing"];
      } else {
        // Done, not done, or cut short (both names): either content.
        for (const auto& c : a->second.contents) b->second.contents.push_back(c);
        a->second.may_be_absent = true;
        ++counts["mv failed"];
      }
    } else if (dice < 62) {
      if (down.size() + stopped.size() < 2 && live.size() > 1 && Whole(tc, live)) {
        const int n = pick(live);
        live.erase(n);
        if (rng() % 3 == 0) {
          // Stopped, not killed: its connections stay open, and it is alive
          // to the others until --dead-after of silence.
          ASSERT_EQ(kill(NodePid(tc.root, n), SIGSTOP), 0);
          stopped[n] = 2 + static_cast<int>(rng() % 6);
          ++counts["stop"];
        } else {
          ASSERT_EQ(Sh(tc.cli + " local kill " + std::to_string(n) + tc.at), 0);
          down.insert(n);
          ++counts["kill"];
        }
      }
    } else if (dice < 77) {
      if (!down.empty()) {
        const int n = pick(down);
        const bool wipe = rng() % 2;
        ASSERT_EQ(Sh(tc.cli + " local restart " + std::to_string(n) + tc.at + (wipe ? " --wipe-data" : "")), 0);
        down.erase(n);
        live.insert(n);
        ++counts[wipe ? "restart wiped" : "restart"];
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(500 + rng() % 1500));  // sweeps, moves, repairs run
      ++counts["wait"];
    }
    for (auto it = stopped.begin(); it != stopped.end();) {
      if (--it->second > 0) {
        ++it;
        continue;
      }
      ASSERT_EQ(kill(NodePid(tc.root, it->first), SIGCONT), 0);
      live.insert(it->first);
      it = stopped.erase(it);
    }
    if (step % 3 == 0) verify(("step " + std::to_string(step)).c_str());
  }
  for (const auto& [n, steps] : stopped) {
    ASSERT_EQ(kill(NodePid(tc.root, n), SIGCONT), 0);
    live.insert(n);
  }
  stopped.clear();
  // Everyone back, whole again, every file as expected; then all removed.
  for (int n : std::set<int>(down)) {
    ASSERT_EQ(Sh(tc.cli + " local restart " + std::to_string(n) + tc.at), 0);
    live.insert(n);
  }
  down.clear();
  for (int i = 0; i < 300 && !Whole(tc, live); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_TRUE(Whole(tc, live)) << "not whole 60 s after every node was back";
  verify("the end");
  for (auto& [path, e] : files) {
    const int rc = Sh(tc.cli + " rm " + path + tc.at);
    EXPECT_TRUE(rc == 0 || (rc == 3 && e.may_be_absent)) << "rm " << path << ": exit " << rc;
  }
  long used = SlotsUsed(tc, kNodes);
  for (int i = 0; i < 150 && used != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    used = SlotsUsed(tc, kNodes);
  }
  EXPECT_EQ(used, 0) << "shard slots still used 30 s after every file was removed:\n"
                     << Out(tc.cli + " status" + tc.at);
  std::string summary;
  for (const auto& [what, n] : counts) summary += " " + what + "=" + std::to_string(n);
  std::printf("[soak] %d steps in %d s:%s\n", step, seconds, summary.c_str());
}

}  // namespace
