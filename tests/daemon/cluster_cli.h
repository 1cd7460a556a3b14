// Driving a local fern-ec cluster through the CLI, as a user would, from
// tests: commands, their output, files, status JSON, and a per-test cluster
// that is stopped and removed however the test ends. FERN_EC_CLI is the
// fern-ec binary (a compile definition of the test target).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace fern::testing::cli {

// The CLI's stderr for this run (kept for debugging a failure, removed after).
inline std::string ErrLog() {
  return ::testing::TempDir() + "/fern-cli-" + std::to_string(getpid()) + ".err";
}

// Runs a command; returns its exit code.
inline int Sh(const std::string& cmd) {
  int rc = std::system((cmd + " 2>>" + ErrLog()).c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// What a command prints on stdout.
inline std::string Out(const std::string& cmd) {
  std::string text;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  pclose(p);
  return text;
}

inline std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Runs `cmd` every 100 ms, at most `tries` times, until its output says
// `want`; the last output (the caller asserts on it).
inline std::string OutOnceItSays(const std::string& cmd, const std::string& want, int tries) {
  std::string out;
  for (int i = 0; i < tries && out.find(want) == std::string::npos; ++i) {
    if (i > 0) usleep(100 * 1000);
    out = Out(cmd);
  }
  return out;
}

inline void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// The object `"key": {...}` of a status --json document (no nested objects
// inside), or "".
inline std::string JsonBlock(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\": {");
  if (at == std::string::npos) return "";
  const size_t end = json.find('}', at);
  return end == std::string::npos ? "" : json.substr(at, end - at + 1);
}

// A local cluster's directories for one test (ROOT on tmpfs, WORK for
// local files; both fresh), and `fern-ec local start --root ROOT FLAGS`.
// When the test ends, an assertion's early return included, the cluster is
// stopped and both removed (its daemons would otherwise outlive the test).
struct TestCluster {
  explicit TestCluster(const std::string& name)
      : root("/dev/shm/fern-" + name + "-" + std::to_string(getpid())),
        work(::testing::TempDir() + "/fern-" + name + "-work-" + std::to_string(getpid())),
        at(" --root " + root) {
    std::filesystem::remove_all(root);
    std::filesystem::create_directories(work);
  }
  ~TestCluster() {
    if (stopped_pid > 0) kill(stopped_pid, SIGCONT);
    if (!::testing::Test::HasFailure()) std::filesystem::remove(ErrLog());
    std::system((cli + " local stop" + at + " >/dev/null 2>&1").c_str());
    std::filesystem::remove_all(root);
    std::filesystem::remove_all(work);
  }
  int Start(const std::string& flags) const { return Sh(cli + " local start" + at + " " + flags); }
  const std::string cli = FERN_EC_CLI;
  const std::string root, work, at;
  int stopped_pid = 0;  // a daemon the test SIGSTOPped: resumed first
};

// The pid `fern-ec local start` recorded for node i under root, or 0.
inline int NodePid(const std::string& root, int i) {
  std::ifstream pidfile(root + "/node-" + std::to_string(i) + "/pid");
  int pid = 0;
  pidfile >> pid;
  return pid;
}

// Shard slots in use on nodes [0, nodes) but `skip` (status --json of
// each: data and parity slots_used), or -1 when one does not answer.
inline long SlotsUsed(const TestCluster& tc, int nodes = 6, int skip = -1) {
  static const std::regex used("\"slots_used\": ([0-9]+)");
  long total = 0;
  for (int i = 0; i < nodes; ++i) {
    if (i == skip) continue;
    const std::string st = Out("FERN_EC_SOCKET=" + tc.root + "/node-" + std::to_string(i) + "/sock " + tc.cli +
                               " status --json 2>/dev/null");
    int tiers = 0;
    for (auto it = std::sregex_iterator(st.begin(), st.end(), used); it != std::sregex_iterator(); ++it, ++tiers) {
      total += std::stol((*it)[1]);
    }
    if (tiers != 2) return -1;
  }
  return total;
}

}  // namespace fern::testing::cli
