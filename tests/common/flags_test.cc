#include "common/flags.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

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
  double stall = -1;
  f.Double("stall", &stall, "seconds");
  f.SetDefaultText("stall", "0.4 x --timeout");
  EXPECT_NE(f.Help().find("seconds (default: 0.4 x --timeout)"), std::string::npos) << f.Help();
  EXPECT_EQ(f.Help().find("-1"), std::string::npos) << f.Help();
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

TEST(FlagSet, SwitchValuesGoAfterAnEqualsSign) {
  bool on = true;
  FlagSet f("usage");
  f.Bool("prepare", &on, "a switch");
  ASSERT_TRUE(f.Parse({"--prepare=0"}).ok());
  EXPECT_FALSE(on);
  ASSERT_TRUE(f.Parse({"--prepare=yes"}).ok());
  EXPECT_TRUE(on);
  // Not read as "on, plus an argument 0".
  FlagSet g("usage");
  g.Bool("prepare", &on, "a switch");
  Status s = g.Parse({"--prepare", "0"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("write --prepare=0"), std::string_view::npos) << s.ToString();
}

TEST(FlagSet, ConfigFileThenEnvironmentThenCommandLine) {
  const std::string path = ::testing::TempDir() + "/fern-flags-" + std::to_string(getpid()) + ".conf";
  {
    std::ofstream out(path);
    out << "# a comment\n\nk = 6\nshard-size 64KiB   # trailing comment\n--json\nbackend=is#al\n";
  }
  int k = 4;
  uint64_t shard = 1 << 20;
  bool json = false;
  std::string backend = "auto";
  FlagSet f("usage");
  f.Int("k", &k, "data shards");
  f.Size("shard-size", &shard, "shard size");
  f.Bool("json", &json, "json output");
  f.String("backend", &backend, "backend");
  f.ShowEnvInHelp("FERN_FLAGTEST_");
  ASSERT_TRUE(f.ParseConfigFile(path).ok());
  EXPECT_EQ(k, 6);
  EXPECT_EQ(shard, 65536u);
  EXPECT_TRUE(json);
  EXPECT_EQ(backend, "is#al");  // '#' inside a value is not a comment
  setenv("FERN_FLAGTEST_SHARD_SIZE", "2MiB", 1);
  setenv("FERN_FLAGTEST_JSON", "0", 1);
  setenv("FERN_FLAGTEST_OTHER", "x", 1);  // not a flag, but listed as ignored
  ASSERT_TRUE(f.ParseEnv("FERN_FLAGTEST_", {"FERN_FLAGTEST_OTHER"}).ok());
  EXPECT_EQ(shard, uint64_t{2} << 20);
  EXPECT_FALSE(json);
  ASSERT_TRUE(f.Parse({"--k", "8"}).ok());
  EXPECT_EQ(k, 8);
  EXPECT_NE(f.Help().find("[FERN_FLAGTEST_SHARD_SIZE]"), std::string::npos);

  // A misspelt variable or setting is an error that names it, not ignored.
  setenv("FERN_FLAGTEST_SHARD_SIZ", "1", 1);
  auto s = f.ParseEnv("FERN_FLAGTEST_", {"FERN_FLAGTEST_OTHER"});
  EXPECT_NE(s.message().find("FERN_FLAGTEST_SHARD_SIZ"), std::string_view::npos) << s.ToString();
  unsetenv("FERN_FLAGTEST_SHARD_SIZ");
  setenv("FERN_FLAGTEST_K", "many", 1);
  s = f.ParseEnv("FERN_FLAGTEST_", {"FERN_FLAGTEST_OTHER"});
  EXPECT_NE(s.message().find("FERN_FLAGTEST_K"), std::string_view::npos) << s.ToString();
  for (const char* v : {"FERN_FLAGTEST_K", "FERN_FLAGTEST_SHARD_SIZE", "FERN_FLAGTEST_JSON", "FERN_FLAGTEST_OTHER"}) {
    unsetenv(v);
  }
  std::ofstream(path) << "k = 6\nshard-siz = 1\n";
  s = f.ParseConfigFile(path);
  EXPECT_NE(s.message().find(path + ":2: unknown setting 'shard-siz'"), std::string_view::npos) << s.ToString();
  EXPECT_EQ(f.ParseConfigFile(path + ".missing").code(), StatusCode::kNotFound);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace fern
