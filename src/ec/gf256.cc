#include "ec/gf256.h"

#include <array>
#include <cassert>

namespace fern::ec::gf256 {
namespace {

struct Tables {
  std::array<uint8_t, 512> exp{};
  std::array<uint8_t, 256> log{};
  Tables() {
    unsigned x = 1;
    for (int i = 0; i < 255; ++i) {
      exp[i] = static_cast<uint8_t>(x);
      log[x] = static_cast<uint8_t>(i);
      x <<= 1;
      if (x & 0x100) x ^= 0x11d;
    }
    for (int i = 255; i < 512; ++i) exp[i] = exp[i - 255];
  }
};

const Tables& T() {
  static const Tables tables;
  return tables;
}

}  // namespace

uint8_t Mul(uint8_t a, uint8_t b) {
  if (a == 0 || b == 0) return 0;
  const Tables& t = T();
  return t.exp[t.log[a] + t.log[b]];
}

uint8_t Inv(uint8_t a) {
  assert(a != 0);
  const Tables& t = T();
  return t.exp[255 - t.log[a]];
}

Matrix Multiply(const Matrix& a, const Matrix& b) {
  assert(a.cols == b.rows);
  Matrix out(a.rows, b.cols);
  for (int r = 0; r < a.rows; ++r) {
    for (int c = 0; c < b.cols; ++c) {
      uint8_t acc = 0;
      for (int i = 0; i < a.cols; ++i) acc ^= Mul(a.at(r, i), b.at(i, c));
      out.at(r, c) = acc;
    }
  }
  return out;
}

bool Invert(const Matrix& m, Matrix* inverse) {
  assert(m.rows == m.cols);
  const int n = m.rows;
  Matrix a = m;
  Matrix inv(n, n);
  for (int i = 0; i < n; ++i) inv.at(i, i) = 1;
  for (int col = 0; col < n; ++col) {
    int pivot = col;
    while (pivot < n && a.at(pivot, col) == 0) ++pivot;
    if (pivot == n) return false;
    if (pivot != col) {
      for (int c = 0; c < n; ++c) {
        std::swap(a.at(pivot, c), a.at(col, c));
        std::swap(inv.at(pivot, c), inv.at(col, c));
      }
    }
    const uint8_t scale = Inv(a.at(col, col));
    for (int c = 0; c < n; ++c) {
      a.at(col, c) = Mul(a.at(col, c), scale);
      inv.at(col, c) = Mul(inv.at(col, c), scale);
    }
    for (int r = 0; r < n; ++r) {
      const uint8_t f = a.at(r, col);
      if (r == col || f == 0) continue;
      for (int c = 0; c < n; ++c) {
        a.at(r, c) ^= Mul(f, a.at(col, c));
        inv.at(r, c) ^= Mul(f, inv.at(col, c));
      }
    }
  }
  *inverse = std::move(inv);
  return true;
}

void MulAddRegion(uint8_t c, std::span<const uint8_t> in, std::span<uint8_t> out) {
  assert(in.size() == out.size());
  if (c == 0) return;
  for (size_t i = 0; i < in.size(); ++i) out[i] ^= Mul(c, in[i]);
}

}  // namespace fern::ec::gf256
