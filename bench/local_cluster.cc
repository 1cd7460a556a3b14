#include "local_cluster.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

namespace fern::bench {

std::string BinDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::filesystem::path(std::string(buf, n)).parent_path().string() : ".";
}

int Sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

LocalCluster::LocalCluster(LocalClusterOptions o) : o_(std::move(o)) {
  ok_ = Sh(BinDir() + "/fern-ec local start --root " + o_.root + " --parity-root " + o_.parity_root +
           " --nodes " + std::to_string(o_.nodes) + " --k " + std::to_string(o_.k) + " --m " +
           std::to_string(o_.m) + " --shard-size " + std::to_string(o_.shard_size) +
           " --data-capacity " + std::to_string(o_.data_capacity) + " --parity-capacity " +
           std::to_string(o_.parity_capacity) + " >/dev/null") == 0;
}

LocalCluster::~LocalCluster() {
  Sh(BinDir() + "/fern-ec local stop --root " + o_.root + " >/dev/null 2>&1");
  std::filesystem::remove_all(o_.root);
  std::filesystem::remove_all(o_.parity_root);
}

bool LocalCluster::Kill(int node) {
  return Sh(BinDir() + "/fern-ec local kill " + std::to_string(node) + " --root " + o_.root) == 0;
}

}  // namespace fern::bench
