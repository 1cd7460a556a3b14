#include "daemon/reports.h"

#include <cstdio>

#include "common/json.h"

namespace fern::daemon {
namespace {

const char* StateName(const Node::ShardReport& s) {
  using State = Node::ShardReport::State;
  switch (s.state) {
    case State::kOk: return "ok";
    case State::kMissing: return "missing";
    case State::kAbsent: return "absent";
    case State::kCorrupt: return "corrupt";
    case State::kUnreachable: return s.error.find("is down") != std::string::npos ? "down" : "unreachable";
  }
  return "unknown";
}
const char* Health(const Node::Inspection& in, const Node::StripeReport& s) {
  return s.good == in.k + in.m ? "healthy" : s.good >= in.k ? "degraded" : "lost";
}

}  // namespace

std::string InspectJson(const Node::Inspection& in) {
  std::string out = "{\"path\": " + JsonString(in.path) + ", \"version\": " +
                    std::to_string(in.info.version) + ", \"size\": " + std::to_string(in.info.size) +
                    ", \"file_id\": " + std::to_string(in.file_id) + ", \"k\": " + std::to_string(in.k) +
                    ", \"m\": " + std::to_string(in.m) + ", \"shard_size\": " + std::to_string(in.shard_size) +
                    ", \"technique\": " + JsonString(in.technique) + ", \"sequencer\": " +
                    std::to_string(in.sequencer.value) + ", \"psw_epoch\": " + std::to_string(in.psw_epoch) +
                    ", \"stripes\": [";
  for (size_t i = 0; i < in.stripes.size(); ++i) {
    const auto& s = in.stripes[i];
    out += std::string(i ? ", " : "") + "{\"stripe\": " + std::to_string(s.stripe) + ", \"health\": \"" +
           Health(in, s) + "\", \"shards\": [";
    for (size_t j = 0; j < s.shards.size(); ++j) {
      const auto& sh = s.shards[j];
      char crc[16];
      std::snprintf(crc, sizeof crc, "%08x", sh.crc32c);
      out += std::string(j ? ", " : "") + "{\"index\": " + std::to_string(sh.index) +
             ", \"node\": " + std::to_string(sh.node.value) + ", \"state\": \"" + StateName(sh) + "\"" +
             (sh.state == Node::ShardReport::State::kOk
                  ? ", \"length\": " + std::to_string(sh.length) + ", \"crc32c\": \"" + crc + "\"" +
                        ", \"seq\": " + std::to_string(sh.seq)
                  : ", \"error\": " + JsonString(sh.error)) +
             "}";
    }
    out += "]}";
  }
  return out + "]}";
}

std::string InspectText(const Node::Inspection& in) {
  size_t healthy = 0, degraded = 0, lost = 0;
  for (const auto& s : in.stripes) {
    const std::string h = Health(in, s);
    (h == "healthy" ? healthy : h == "degraded" ? degraded : lost)++;
  }
  char line[512];
  std::snprintf(line, sizeof line,
                ": version %llu, %llu bytes, k=%d m=%d, shard %llu bytes, %s, file id %016llx\n"
                "%zu stripes: %zu healthy, %zu degraded, %zu lost\n",
                (unsigned long long)in.info.version, (unsigned long long)in.info.size, in.k, in.m,
                (unsigned long long)in.shard_size, in.technique.c_str(), (unsigned long long)in.file_id,
                in.stripes.size(), healthy, degraded, lost);
  std::string out = in.path + line;  // a path of any length keeps the summary whole
  for (const auto& s : in.stripes) {
    std::snprintf(line, sizeof line, "stripe %4llu %-9s", (unsigned long long)s.stripe, Health(in, s));
    out += line;
    for (const auto& sh : s.shards) {
      const bool parity = static_cast<int>(sh.index) >= in.k;
      const int i = parity ? static_cast<int>(sh.index) - in.k : static_cast<int>(sh.index);
      if (sh.state == Node::ShardReport::State::kOk) {
        std::snprintf(line, sizeof line, " %c%d@%u:%08x", parity ? 'P' : 'D', i, sh.node.value, sh.crc32c);
      } else {
        std::snprintf(line, sizeof line, " %c%d@%u:%s", parity ? 'P' : 'D', i, sh.node.value, StateName(sh));
      }
      out += line;
    }
    out += "\n";
  }
  return out;
}

std::string ScrubText(const Node::ScrubReport& r) {
  std::string out = "scrubbed " + std::to_string(r.files) + " files, " + std::to_string(r.stripes) +
                    " stripes: " + std::to_string(r.consistent) + " consistent, " +
                    std::to_string(r.inconsistent) + " inconsistent, " + std::to_string(r.repaired) +
                    " repaired, " + std::to_string(r.degraded) + " degraded\n";
  for (const auto& p : r.problems) out += "  " + p + "\n";
  return out;
}

std::string ScrubJson(const Node::ScrubReport& r) {
  std::string problems;
  for (const auto& p : r.problems) problems += (problems.empty() ? "" : ", ") + JsonString(p);
  return "{\"files\": " + std::to_string(r.files) + ", \"stripes\": " + std::to_string(r.stripes) +
         ", \"consistent\": " + std::to_string(r.consistent) +
         ", \"inconsistent\": " + std::to_string(r.inconsistent) +
         ", \"repaired\": " + std::to_string(r.repaired) + ", \"degraded\": " + std::to_string(r.degraded) +
         ", \"problems\": [" + problems + "]}\n";
}

}  // namespace fern::daemon
