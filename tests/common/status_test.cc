#include "common/status.h"

#include <cerrno>

#include <gtest/gtest.h>

namespace fern {
namespace {

TEST(Status, OkAndErrors) {
  Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.ToString(), "OK");
  Status e = DataLossError("decode stripe 42 of /ckpt/r7: 3 shards missing, m=2");
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.code(), StatusCode::kDataLoss);
  EXPECT_EQ(e.ToString(), "DATA_LOSS: decode stripe 42 of /ckpt/r7: 3 shards missing, m=2");
  EXPECT_EQ(e.WithContext("read").message(),
            "read: decode stripe 42 of /ckpt/r7: 3 shards missing, m=2");
  EXPECT_EQ(Status(StatusCode::kOk, "ignored"), Status());
}

TEST(Status, ErrnoRoundTripsForTheErrorsUsersSee) {
  for (int err : {ENOENT, EACCES, ENOSPC, EIO, EEXIST, EINVAL, ETIMEDOUT}) {
    Status s = FromErrno(err, "open /fern/x");
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(ToErrno(s), err) << s.ToString();
    EXPECT_NE(s.message().find("open /fern/x"), std::string_view::npos);
  }
  EXPECT_TRUE(FromErrno(0, "x").ok());
  EXPECT_EQ(ToErrno(Status()), 0);
}

StatusOr<int> Half(int x) {
  if (x % 2) return InvalidArgumentError("odd");
  return x / 2;
}

Status UseHalf(int x, int* out) {
  FERN_ASSIGN_OR_RETURN(*out, Half(x));
  return Status();
}

TEST(StatusOr, ValueOrError) {
  int v = 0;
  EXPECT_TRUE(UseHalf(8, &v).ok());
  EXPECT_EQ(v, 4);
  Status s = UseHalf(7, &v);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(v, 4);
}

}  // namespace
}  // namespace fern

namespace fern {
namespace {

TEST(StatusErrno, ExactErrnoSurvivesContext) {
  for (int e : {ENOTDIR, EISDIR, ENOTEMPTY, EXDEV, ENAMETOOLONG, ENOSPC, EACCES}) {
    Status s = FromErrno(e, "op").WithContext("outer");
    EXPECT_EQ(ToErrno(s), e) << s.ToString();
  }
  // Without a hint the code's table entry is used.
  EXPECT_EQ(ToErrno(InvalidArgumentError("x")), EINVAL);
  EXPECT_EQ(ToErrno(InvalidArgumentError("x").WithErrno(EISDIR)), EISDIR);
  EXPECT_TRUE(Status().WithErrno(EIO).ok());
}

}  // namespace
}  // namespace fern
