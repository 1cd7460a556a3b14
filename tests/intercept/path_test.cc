// Unit tests of the preload's managed-path classification (intercept/path.h):
// lexical normalization, mount prefixes, namespace paths, hashes.
#include "intercept/path.h"

#include <gtest/gtest.h>

#include <string>

namespace fern::intercept {
namespace {

std::string Norm(const char* base, const char* path) {
  char out[kPathBuf];
  if (!Normalize(base, path, out, sizeof out)) return "<fail>";
  return out;
}

// The namespace path of `path` (relative to base "/work"), or "-" if unmanaged.
std::string Ns(const Mounts& m, const char* path) {
  char abs[kPathBuf];
  if (!Normalize("/work", path, abs, sizeof abs)) return "<fail>";
  const char* ns = nullptr;
  return Classify(m, abs, &ns) < 0 ? "-" : ns;
}

TEST(PreloadPath, NormalizesLexically) {
  EXPECT_EQ(Norm(nullptr, "/"), "/");
  EXPECT_EQ(Norm(nullptr, "//a//b/"), "/a/b");
  EXPECT_EQ(Norm(nullptr, "/a/./b/."), "/a/b");
  EXPECT_EQ(Norm(nullptr, "/a/b/../c"), "/a/c");
  EXPECT_EQ(Norm(nullptr, "/../../a"), "/a");
  EXPECT_EQ(Norm(nullptr, "/a/.."), "/");
  EXPECT_EQ(Norm(nullptr, "/a/...b/..."), "/a/...b/...");
  EXPECT_EQ(Norm("/x/y", "z"), "/x/y/z");
  EXPECT_EQ(Norm("/x/y", "../z"), "/x/z");
  EXPECT_EQ(Norm("/x/y", "."), "/x/y");
  EXPECT_EQ(Norm("/", "a"), "/a");
  EXPECT_EQ(Norm(nullptr, "relative"), "<fail>");
  EXPECT_EQ(Norm("/", ""), "<fail>");
}

TEST(PreloadPath, RejectsResultsThatDoNotFit) {
  std::string longpath = "/" + std::string(kPathBuf, 'a');
  char out[kPathBuf];
  EXPECT_FALSE(Normalize(nullptr, longpath.c_str(), out, sizeof out));
  char tiny[4];
  EXPECT_FALSE(Normalize(nullptr, "/abcd", tiny, sizeof tiny));
  EXPECT_TRUE(Normalize(nullptr, "/ab", tiny, sizeof tiny));
}

TEST(PreloadPath, ParsesMounts) {
  Mounts m;
  ParseMounts(nullptr, &m);
  ASSERT_EQ(m.count, 1);
  EXPECT_STREQ(m.prefix[0], "/fern");
  ParseMounts("/fern/:relative::/:/scratch//ck/", &m);
  ASSERT_EQ(m.count, 2);
  EXPECT_STREQ(m.prefix[0], "/fern");
  EXPECT_STREQ(m.prefix[1], "/scratch/ck");
  EXPECT_EQ(m.len[1], 11u);
}

TEST(PreloadPath, ClassifiesUnderMountsOnly) {
  Mounts m;
  ParseMounts("/fern:/scratch/ck", &m);
  EXPECT_EQ(Ns(m, "/fern"), "/");
  EXPECT_EQ(Ns(m, "/fern/"), "/");
  EXPECT_EQ(Ns(m, "/fern/a/b"), "/a/b");
  EXPECT_EQ(Ns(m, "/fern//a/./b/"), "/a/b");
  EXPECT_EQ(Ns(m, "/scratch/ck/x"), "/x");
  EXPECT_EQ(Ns(m, "/fernx/a"), "-");
  EXPECT_EQ(Ns(m, "/fer"), "-");
  EXPECT_EQ(Ns(m, "/etc/passwd"), "-");
  // ".." can never name anything outside the namespace from inside it...
  EXPECT_EQ(Ns(m, "/fern/../etc/passwd"), "-");
  EXPECT_EQ(Ns(m, "/fern/a/../../etc"), "-");
  EXPECT_EQ(Ns(m, "/fern/a/../b"), "/b");
  // ...and relative paths are resolved before classification.
  EXPECT_EQ(Ns(m, "../fern/r"), "/r");
  EXPECT_EQ(Ns(m, "fern/r"), "-");
}

TEST(PreloadPath, PlainAbsolutePaths) {
  EXPECT_TRUE(IsPlainAbsolute("/"));
  EXPECT_TRUE(IsPlainAbsolute("/fern/a.b/..c/c.."));
  EXPECT_FALSE(IsPlainAbsolute("fern"));
  EXPECT_FALSE(IsPlainAbsolute("/fern/"));
  EXPECT_FALSE(IsPlainAbsolute("/fern//a"));
  EXPECT_FALSE(IsPlainAbsolute("/fern/./a"));
  EXPECT_FALSE(IsPlainAbsolute("/fern/.."));
  EXPECT_FALSE(IsPlainAbsolute("/fern/../x"));
}

TEST(PreloadPath, HashesAreStableNonzeroAndAgree) {
  EXPECT_NE(PathHash("/"), 0u);
  EXPECT_NE(PathHash("/a"), PathHash("/b"));
  EXPECT_EQ(PathHash("/a/b"), PathHash("/a", "b"));
  EXPECT_EQ(PathHash("/b"), PathHash("/", "b"));
  // Pinned: st_ino must not change between releases (tar/rsync caches).
  EXPECT_EQ(PathHash("/ckpt/rank7.bin"), 4712643556449926935ull);
  EXPECT_EQ(PathHash("/"), 10062542009728058627ull);
}

TEST(PreloadPath, ParentOf) {
  char out[kPathBuf];
  ParentOf("/", out, sizeof out);
  EXPECT_STREQ(out, "/");
  ParentOf("/a", out, sizeof out);
  EXPECT_STREQ(out, "/");
  ParentOf("/a/b/c", out, sizeof out);
  EXPECT_STREQ(out, "/a/b");
}

}  // namespace
}  // namespace fern::intercept
