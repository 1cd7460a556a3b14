// Arithmetic in GF(2^8) with the polynomial x^8+x^4+x^3+x^2+1 (0x11d), the
// field both Jerasure (w=8) and ISA-L use, so a coefficient matrix means the
// same bytes to both. Only for small matrices (building and inverting coding
// and decoding matrices); bulk region work belongs to the backends.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace fern::ec::gf256 {

uint8_t Mul(uint8_t a, uint8_t b);
// REQUIRES: a != 0
uint8_t Inv(uint8_t a);

// Row-major matrix of bytes.
struct Matrix {
  int rows = 0;
  int cols = 0;
  std::vector<uint8_t> cells;  // rows * cols

  Matrix() = default;
  Matrix(int r, int c) : rows(r), cols(c), cells(static_cast<size_t>(r) * c) {}
  uint8_t& at(int r, int c) { return cells[static_cast<size_t>(r) * cols + c]; }
  uint8_t at(int r, int c) const { return cells[static_cast<size_t>(r) * cols + c]; }
  std::span<const uint8_t> row(int r) const {
    return {cells.data() + static_cast<size_t>(r) * cols, static_cast<size_t>(cols)};
  }
};

Matrix Multiply(const Matrix& a, const Matrix& b);  // REQUIRES: a.cols == b.rows
// Gauss-Jordan inverse of a square matrix; false when singular.
bool Invert(const Matrix& m, Matrix* inverse);

// Scalar reference: out[i] ^= c * in[i]. Used by tests and the XOR oracle.
void MulAddRegion(uint8_t c, std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace fern::ec::gf256
