// The inspect and scrub renderings the CLI prints (and scripts parse).
#include "daemon/reports.h"

#include <gtest/gtest.h>

namespace fern::daemon {
namespace {

using State = Node::ShardReport::State;

Node::ShardReport Shard(uint32_t index, uint32_t node, State state, uint32_t crc = 0, std::string error = "") {
  Node::ShardReport s;
  s.index = index;
  s.node = NodeId(node);
  s.state = state;
  s.length = 4096;
  s.crc32c = crc;
  s.seq = 7;
  s.error = std::move(error);
  return s;
}

Node::Inspection TwoStripes() {
  Node::Inspection in;
  in.path = "/ckpt/a\"b\nc";
  in.info.version = 3;
  in.info.size = 12345;
  in.file_id = 0xabc;
  in.k = 2;
  in.m = 1;
  in.shard_size = 4096;
  in.technique = "reed_sol_van";
  in.sequencer = NodeId(2);
  in.stripes.push_back({0, 3, {Shard(0, 1, State::kOk, 0xabcd), Shard(1, 2, State::kOk, 0x1),
                               Shard(2, 3, State::kOk, 0x2)}});
  in.stripes.push_back({1, 2, {Shard(0, 4, State::kOk, 0x3), Shard(1, 5, State::kCorrupt, 0, "CRC mismatch"),
                               Shard(2, 3, State::kUnreachable, 0, "node 3 is down")}});
  return in;
}

TEST(Reports, InspectJsonEscapesAndNamesEveryState) {
  const std::string j = InspectJson(TwoStripes());
  EXPECT_NE(j.find("\"path\": \"/ckpt/a\\\"b\\u000ac\""), std::string::npos) << j;
  EXPECT_NE(j.find("{\"stripe\": 0, \"health\": \"healthy\""), std::string::npos) << j;
  // Two of three good with k=2: still readable.
  EXPECT_NE(j.find("{\"stripe\": 1, \"health\": \"degraded\""), std::string::npos) << j;
  EXPECT_NE(j.find("\"crc32c\": \"0000abcd\""), std::string::npos) << j;
  EXPECT_NE(j.find("\"state\": \"corrupt\", \"error\": \"CRC mismatch\""), std::string::npos) << j;
  EXPECT_NE(j.find("\"state\": \"down\""), std::string::npos) << j;
  EXPECT_EQ(j.front(), '{');
  EXPECT_EQ(j.back(), '}');
}

TEST(Reports, InspectTextSummarisesAndListsShards) {
  Node::Inspection in = TwoStripes();
  in.stripes[1].good = 1;  // below k: lost
  const std::string t = InspectText(in);
  EXPECT_NE(t.find("2 stripes: 1 healthy, 0 degraded, 1 lost"), std::string::npos) << t;
  EXPECT_NE(t.find("D0@1:0000abcd"), std::string::npos) << t;
  EXPECT_NE(t.find("D1@5:corrupt"), std::string::npos) << t;
  EXPECT_NE(t.find("P0@3:down"), std::string::npos) << t;
}

TEST(Reports, ScrubCountsAndProblems) {
  Node::ScrubReport r;
  r.files = 2;
  r.stripes = 5;
  r.consistent = 4;
  r.inconsistent = 1;
  r.problems = {"/x \"y\" stripe 3: parity 1 differs"};
  EXPECT_EQ(ScrubJson(r),
            "{\"files\": 2, \"stripes\": 5, \"consistent\": 4, \"inconsistent\": 1, \"repaired\": 0, "
            "\"degraded\": 0, \"problems\": [\"/x \\\"y\\\" stripe 3: parity 1 differs\"]}\n");
  EXPECT_EQ(ScrubText(r),
            "scrubbed 2 files, 5 stripes: 4 consistent, 1 inconsistent, 0 repaired, 0 degraded\n"
            "  /x \"y\" stripe 3: parity 1 differs\n");
}

}  // namespace
}  // namespace fern::daemon
