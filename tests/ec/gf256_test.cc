#include "ec/gf256.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace fern::ec::gf256 {
namespace {

TEST(Gf256, FieldFacts) {
  EXPECT_EQ(Mul(2, 0x80), 0x1d);  // x * x^7 = x^8 = x^4+x^3+x^2+1 mod 0x11d
  EXPECT_EQ(Mul(0, 0x53), 0);
  EXPECT_EQ(Mul(1, 0x53), 0x53);
  for (int a = 1; a < 256; ++a) {
    ASSERT_EQ(Mul(static_cast<uint8_t>(a), Inv(static_cast<uint8_t>(a))), 1) << a;
    for (int b = 0; b < 256; b += 17) ASSERT_EQ(Mul(a, b), Mul(b, a));
  }
}

TEST(Gf256, InverseTimesMatrixIsIdentity) {
  auto rng = fern::testing::TestRng();
  int inverted = 0;
  for (int t = 0; t < 200; ++t) {
    const int n = 1 + static_cast<int>(rng() % 12);
    Matrix m(n, n);
    for (auto& c : m.cells) c = static_cast<uint8_t>(rng());
    Matrix inv;
    if (!Invert(m, &inv)) continue;
    ++inverted;
    Matrix p = Multiply(m, inv);
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < n; ++c) ASSERT_EQ(p.at(r, c), r == c ? 1 : 0);
    }
  }
  EXPECT_GT(inverted, 150);  // random byte matrices are almost always invertible
  Matrix singular(2, 2);
  singular.cells = {1, 2, 1, 2};
  Matrix inv;
  EXPECT_FALSE(Invert(singular, &inv));
}

}  // namespace
}  // namespace fern::ec::gf256
