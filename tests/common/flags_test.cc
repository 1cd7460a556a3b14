#include "common/flags.h"

#include <gtest/gtest.h>

namespace fern {
namespace {

TEST(ParseSize, SuffixesAndErrors) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("64KiB"), 65536u);
  EXPECT_EQ(*ParseSize("1MiB"), 1u << 20);
  EXPECT_EQ(*ParseSize("1M"), 1u << 20);
  EXPECT_EQ(*ParseSize("2GiB"), uint64_t{2} << 30);
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("MiB").ok());
  EXPECT_FALSE(ParseSize("1XB").ok());
  EXPECT_FALSE(ParseSize("99999999999999999999").ok());
  EXPECT_EQ(ParseSize("20000000000TiB").status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(FormatSize(1 << 20), "1MiB");
  EXPECT_EQ(FormatSize(4097), "4097B");
}

TEST(FlagSet, ParsesAllForms) {
  int k = 4;
  uint64_t shard = 1 << 20;
  bool json = false;
  std::string backend = "auto";
  FlagSet f("usage");
  f.Int("k", &k, "data shards");
  f.Size("shard-size", &shard, "shard size");
  f.Bool("json", &json, "json output");
  f.String("backend", &backend, "backend");
  ASSERT_TRUE(f.Parse({"encode", "--k", "6", "--shard-size=64KiB", "--json", "--backend", "isal",
                       "--", "--not-a-flag"})
                  .ok());
  EXPECT_EQ(k, 6);
  EXPECT_EQ(shard, 65536u);
  EXPECT_TRUE(json);
  EXPECT_EQ(backend, "isal");
  EXPECT_EQ(f.positional(), (std::vector<std::string>{"encode", "--not-a-flag"}));
  EXPECT_NE(f.Help().find("--shard-size VALUE"), std::string::npos);
  EXPECT_NE(f.Help().find("(default: 1MiB)"), std::string::npos);
}

TEST(FlagSet, ErrorsNameTheFlag) {
  int k = 4;
  FlagSet f("usage");
  f.Int("k", &k, "data shards");
  auto s = f.Parse({"--k", "four"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--k"), std::string_view::npos);
  FlagSet g("usage");
  g.Int("k", &k, "data shards");
  EXPECT_NE(g.Parse({"--bogus"}).message().find("unknown flag --bogus"), std::string_view::npos);
  FlagSet h("usage");
  h.Int("k", &k, "data shards");
  EXPECT_NE(h.Parse({"--k"}).message().find("needs a value"), std::string_view::npos);
}

}  // namespace
}  // namespace fern
