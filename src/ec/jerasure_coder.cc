// Jerasure + gf-complete backend: reed_sol_van and cauchy as GF(2^8) matrices
// (jerasure_matrix_encode), cauchy_good and liber8tion as bit-matrix XOR
// schedules (jerasure_schedule_encode).
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ec/matrix_coder.h"

extern "C" {
#include <gf_complete.h>
#include <jerasure.h>
#include <jerasure/cauchy.h>
#include <jerasure/liberation.h>
#include <jerasure/reed_sol.h>
}

namespace fern::ec {
namespace {

constexpr int kW = 8;
constexpr size_t kSimdAlign = 16;
constexpr size_t kBounceChunk = 64 * 1024;

bool g_simd_active = false;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Per-thread, 64-byte aligned scratch that only grows.
class Scratch {
 public:
  uint8_t* Get(size_t bytes) {
    if (bytes > size_) {
      size_t rounded = (bytes + 63) & ~size_t{63};
      buf_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, rounded)));
      size_ = rounded;
    }
    return buf_.get();
  }

 private:
  std::unique_ptr<uint8_t, FreeDeleter> buf_;
  size_t size_ = 0;
};

bool Aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kSimdAlign == 0; }

// Runs `fast` directly when every buffer is 16-byte aligned (gf-complete's
// SIMD region code requires source and destination aligned alike), and
// through aligned scratch copies otherwise or for a tail shorter than `unit`.
// `fast` REQUIRES: aligned pointers, n a positive multiple of `unit`.
template <typename Fast>
void RunAligned(int cols, int rows, const uint8_t* const* in, uint8_t* const* out, size_t len,
                bool accumulate, size_t unit, const Fast& fast) {
  bool aligned = true;
  for (int c = 0; c < cols; ++c) aligned = aligned && Aligned(in[c]);
  for (int r = 0; r < rows; ++r) aligned = aligned && Aligned(out[r]);
  const size_t head = aligned ? len - len % unit : 0;
  if (head > 0) fast(in, out, head, accumulate);
  if (head == len) return;

  thread_local Scratch scratch;
  const size_t chunk = std::max(unit, kBounceChunk - kBounceChunk % unit);
  uint8_t* base = scratch.Get(chunk * (cols + rows));
  const uint8_t* bin[kMaxShards];
  uint8_t* bout[kMaxShards];
  for (int c = 0; c < cols; ++c) bin[c] = base + c * chunk;
  for (int r = 0; r < rows; ++r) bout[r] = base + (cols + r) * chunk;
  for (size_t off = head; off < len; off += chunk) {
    const size_t n = std::min(chunk, len - off);
    const size_t padded = (n + unit - 1) / unit * unit;
    for (int c = 0; c < cols; ++c) {
      std::memcpy(const_cast<uint8_t*>(bin[c]), in[c] + off, n);
      std::memset(const_cast<uint8_t*>(bin[c]) + n, 0, padded - n);
    }
    if (accumulate) {
      for (int r = 0; r < rows; ++r) {
        std::memcpy(bout[r], out[r] + off, n);
        std::memset(bout[r] + n, 0, padded - n);
      }
    }
    fast(bin, bout, padded, accumulate);
    for (int r = 0; r < rows; ++r) std::memcpy(out[r] + off, bout[r], n);
  }
}

char** Chars(const uint8_t* const* p) {
  return const_cast<char**>(reinterpret_cast<const char* const*>(p));
}
char** Chars(uint8_t* const* p) {
  return const_cast<char**>(reinterpret_cast<char* const*>(p));
}

class JerasureMatrixKernel final : public Kernel {
 public:
  explicit JerasureMatrixKernel(const gf256::Matrix& m)
      : rows_(m.rows), cols_(m.cols), matrix_(m.cells.begin(), m.cells.end()) {}

  void Run(const uint8_t* const* in, uint8_t* const* out, size_t len,
           bool accumulate) const override {
    RunAligned(cols_, rows_, in, out, len, accumulate, kSimdAlign,
               [this](const uint8_t* const* i, uint8_t* const* o, size_t n, bool acc) {
                 Fast(i, o, n, acc);
               });
  }

 private:
  void Fast(const uint8_t* const* in, uint8_t* const* out, size_t n, bool accumulate) const {
    if (!accumulate) {
      jerasure_matrix_encode(cols_, rows_, kW, const_cast<int*>(matrix_.data()), Chars(in),
                             Chars(out), static_cast<int>(n));
      // jerasure leaves an all-zero row's output untouched; it must read as 0.
      for (int r = 0; r < rows_; ++r) {
        bool zero = true;
        for (int c = 0; c < cols_; ++c) zero = zero && matrix_[r * cols_ + c] == 0;
        if (zero) std::memset(out[r], 0, n);
      }
      return;
    }
    for (int r = 0; r < rows_; ++r) {
      for (int c = 0; c < cols_; ++c) {
        const int coef = matrix_[r * cols_ + c];
        if (coef == 0) continue;
        galois_w08_region_multiply(const_cast<char*>(reinterpret_cast<const char*>(in[c])), coef,
                                   static_cast<int>(n), reinterpret_cast<char*>(out[r]), 1);
      }
    }
  }

  const int rows_;
  const int cols_;
  const std::vector<int> matrix_;
};

class JerasureScheduleKernel final : public Kernel {
 public:
  // `m` is a GF(2^8) matrix expanded here (cauchy_good), or already a GF(2)
  // bit-matrix of (rows*w) x (cols*w) when `is_bitmatrix` (liber8tion).
  JerasureScheduleKernel(const gf256::Matrix& m, size_t packet_size, bool is_bitmatrix)
      : rows_(is_bitmatrix ? m.rows / kW : m.rows),
        cols_(is_bitmatrix ? m.cols / kW : m.cols),
        packet_size_(packet_size) {
    std::vector<int> cells(m.cells.begin(), m.cells.end());
    if (!is_bitmatrix) {
      std::unique_ptr<int, FreeDeleter> bits(jerasure_matrix_to_bitmatrix(cols_, rows_, kW, cells.data()));
      cells.assign(bits.get(), bits.get() + rows_ * kW * cols_ * kW);
    }
    schedule_ = jerasure_smart_bitmatrix_to_schedule(cols_, rows_, kW, cells.data());
  }
  ~JerasureScheduleKernel() override { jerasure_free_schedule(schedule_); }
  JerasureScheduleKernel(const JerasureScheduleKernel&) = delete;
  JerasureScheduleKernel& operator=(const JerasureScheduleKernel&) = delete;

  void Run(const uint8_t* const* in, uint8_t* const* out, size_t len,
           bool accumulate) const override {
    RunAligned(cols_, rows_, in, out, len, accumulate, kW * packet_size_,
               [this](const uint8_t* const* i, uint8_t* const* o, size_t n, bool acc) {
                 Fast(i, o, n, acc);
               });
  }

 private:
  void Fast(const uint8_t* const* in, uint8_t* const* out, size_t n, bool accumulate) const {
    if (!accumulate) {
      jerasure_schedule_encode(cols_, rows_, kW, schedule_, Chars(in), Chars(out),
                               static_cast<int>(n), static_cast<int>(packet_size_));
      return;
    }
    // A schedule overwrites its outputs: compute into scratch, then XOR in.
    thread_local Scratch scratch;
    uint8_t* base = scratch.Get(n * rows_);
    uint8_t* tmp[kMaxShards];
    for (int r = 0; r < rows_; ++r) tmp[r] = base + r * n;
    jerasure_schedule_encode(cols_, rows_, kW, schedule_, Chars(in), Chars(tmp),
                             static_cast<int>(n), static_cast<int>(packet_size_));
    for (int r = 0; r < rows_; ++r) {
      galois_region_xor(reinterpret_cast<char*>(tmp[r]), reinterpret_cast<char*>(out[r]),
                        static_cast<int>(n));
    }
  }

  const int rows_;
  const int cols_;
  const size_t packet_size_;
  int** schedule_ = nullptr;  // the bit-matrix is needed only to build it
};

}  // namespace

bool InitJerasureField() {
  static std::once_flag once;
  std::call_once(once, [] {
    // gf_init_hard with GF_REGION_SIMD fails (returns 0) when SSSE3 is not
    // detected, instead of silently taking the ~4x slower table path.
    auto* gf = static_cast<gf_t*>(std::malloc(sizeof(gf_t)));  // owned by Jerasure afterwards
    if (gf != nullptr && gf_init_hard(gf, kW, GF_MULT_SPLIT_TABLE, GF_REGION_SIMD,
                                      GF_DIVIDE_DEFAULT, 0, 8, 4, nullptr, nullptr) == 1) {
      galois_change_technique(gf, kW);
      g_simd_active = true;
    } else {
      std::free(gf);
      galois_init_default_field(kW);
      g_simd_active = false;
    }
  });
  return g_simd_active;
}

bool JerasureSimdActive() { return InitJerasureField(); }

StatusOr<gf256::Matrix> MakeCodingMatrix(std::string_view technique, int k, int m) {
  InitJerasureField();
  gf256::Matrix coding(m, k);
  if (m == 0) return coding;
  if (technique == "xor") {
    if (m != 1) return InvalidArgumentError("technique xor needs m=1, got m=" + std::to_string(m));
    for (int c = 0; c < k; ++c) coding.at(0, c) = 1;
    return coding;
  }
  if (technique == "liber8tion") {
    if (m != 2 || k > kW) {
      return InvalidArgumentError("technique liber8tion needs m=2 and k<=8, got k=" +
                                  std::to_string(k) + " m=" + std::to_string(m));
    }
    std::unique_ptr<int, FreeDeleter> bits(liber8tion_coding_bitmatrix(k));
    if (!bits) return InternalError("jerasure: cannot build the liber8tion bit-matrix");
    gf256::Matrix bitmatrix(m * kW, k * kW);
    for (size_t i = 0; i < bitmatrix.cells.size(); ++i) {
      bitmatrix.cells[i] = static_cast<uint8_t>(bits.get()[i]);
    }
    return bitmatrix;
  }
  std::unique_ptr<int, FreeDeleter> matrix;
  if (technique == "reed_sol_van") {
    matrix.reset(reed_sol_vandermonde_coding_matrix(k, m, kW));
  } else if (technique == "cauchy" || technique == "cauchy_good") {
    matrix.reset(cauchy_good_general_coding_matrix(k, m, kW));
  } else {
    return InvalidArgumentError("unknown technique '" + std::string(technique) +
                                "' (reed_sol_van, cauchy, cauchy_good, liber8tion, xor)");
  }
  if (!matrix) return InternalError("jerasure: cannot build the coding matrix");
  for (int r = 0; r < m; ++r) {
    for (int c = 0; c < k; ++c) coding.at(r, c) = static_cast<uint8_t>(matrix.get()[r * k + c]);
  }
  return coding;
}

StatusOr<std::unique_ptr<ErasureCoder>> MakeJerasureCoder(const CoderOptions& options) {
  FERN_ASSIGN_OR_RETURN(gf256::Matrix coding,
                        MakeCodingMatrix(options.technique, options.k, options.m));
  if (options.technique == "cauchy_good" || options.technique == "liber8tion") {
    const size_t ps = options.packet_size;
    const bool bits = options.technique == "liber8tion";
    return std::unique_ptr<ErasureCoder>(new MatrixCoder(
        "jerasure", options.technique, kW * ps, std::move(coding),
        [ps, bits](const gf256::Matrix& m) {
          return std::make_unique<JerasureScheduleKernel>(m, ps, bits);
        },
        bits ? kW : 1));
  }
  return std::unique_ptr<ErasureCoder>(new MatrixCoder(
      "jerasure", options.technique, 1, std::move(coding),
      [](const gf256::Matrix& m) { return std::make_unique<JerasureMatrixKernel>(m); }));
}

}  // namespace fern::ec
