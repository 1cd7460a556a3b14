#include "common/json.h"

#include <gtest/gtest.h>

namespace fern {
namespace {

TEST(JsonString, QuotesEscapesAndKeepsUtf8) {
  EXPECT_EQ(JsonString(""), "\"\"");
  EXPECT_EQ(JsonString("/ckpt/rank7.bin"), "\"/ckpt/rank7.bin\"");
  EXPECT_EQ(JsonString("a\"b\\c"), "\"a\\\"b\\\\c\"");
  // Control characters are escaped, not dropped: a path with a newline
  // must come back as the same path.
  EXPECT_EQ(JsonString(std::string("x\ny\x01", 4)), "\"x\\u000ay\\u0001\"");
  EXPECT_EQ(JsonString(std::string("\0z", 2)), "\"\\u0000z\"");
  EXPECT_EQ(JsonString("d\xc3\xa9j\xc3\xa0"), "\"d\xc3\xa9j\xc3\xa0\"");
}

}  // namespace
}  // namespace fern
