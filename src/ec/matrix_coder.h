// Internal to src/ec: the machinery every matrix-based backend shares.
//
// A backend only supplies a Kernel: something that applies a GF(2^8) matrix M
// (rows x cols) to `cols` input regions, producing `rows` output regions. The
// MatrixCoder turns encode, decode and delta into kernel runs:
//   encode   M = C (m x k), inputs = data, outputs = parity
//   decode   M = G[want] * inverse(G[survivors]), G = [I; C]; inputs = the
//            first k present shards; one kernel per (survivors, want) pattern,
//            cached, so no matrix is inverted per stripe
//   delta    M = column i of C (m x 1), accumulated into parity
//
// Bit-matrix codes (liber8tion) have no GF(2^8) matrix: their C is a GF(2)
// matrix of w x w blocks, (m*w) x (k*w), each shard being w packets. With
// rows_per_shard = w the same algebra holds block-wise; a matrix of 0s and 1s
// multiplies and inverts over GF(2^8) exactly as over GF(2) (0 and 1 are the
// prime subfield), so no second field is needed. The kernel then receives
// (outputs*w) x (inputs*w) bit-matrices.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "ec/erasure_coder.h"

namespace fern::ec {

class Kernel {
 public:
  virtual ~Kernel() = default;
  // out[r] = sum_c M[r][c] * in[c]    (or ^= when accumulate)
  // REQUIRES: len > 0 and a multiple of the coder's alignment().
  virtual void Run(const uint8_t* const* in, uint8_t* const* out, size_t len,
                   bool accumulate) const = 0;
};

using KernelMaker = std::function<std::unique_ptr<Kernel>(const gf256::Matrix&)>;

class MatrixCoder final : public ErasureCoder {
 public:
  // REQUIRES: coding is (m*w) x (k*w) with w = rows_per_shard, and every
  // (k*w) x (k*w) choice of k shards' rows of [I; coding] is invertible (true
  // for the Vandermonde, Cauchy and liber8tion constructions used here).
  MatrixCoder(std::string backend, std::string technique, size_t alignment,
              gf256::Matrix coding, KernelMaker make_kernel, int rows_per_shard = 1);

  int k() const override { return k_; }
  int m() const override { return m_; }
  std::string_view backend() const override { return backend_; }
  std::string_view technique() const override { return technique_; }
  size_t alignment() const override { return alignment_; }
  const gf256::Matrix& coding_matrix() const override { return coding_; }
  int coding_matrix_w() const override { return w_; }

  Status Encode(std::span<const uint8_t* const> data, std::span<uint8_t* const> parity,
                size_t len) const override;
  Status Decode(std::span<uint8_t* const> shards, ShardSet present, ShardSet want,
                size_t len) const override;
  Status ApplyDelta(int data_index, std::span<const uint8_t> delta,
                    std::span<uint8_t* const> parity) const override;

  // Number of cached decode plans (for tests of the cache).
  size_t cached_plans() const;

 private:
  struct Plan {
    std::vector<int> inputs;   // k shard indices read
    std::vector<int> outputs;  // shard indices written, ascending
    std::unique_ptr<Kernel> kernel;
  };
  StatusOr<std::shared_ptr<const Plan>> GetPlan(ShardSet present, ShardSet want) const;
  Status CheckLen(size_t len) const;

  const std::string backend_;
  const std::string technique_;
  const size_t alignment_;
  const gf256::Matrix coding_;
  const int w_;
  const int k_;
  const int m_;
  const KernelMaker make_kernel_;
  std::unique_ptr<Kernel> encode_kernel_;
  std::vector<std::unique_ptr<Kernel>> delta_kernels_;  // one per data index

  static constexpr size_t kMaxCachedPlans = 4096;
  mutable std::mutex mu_;
  mutable std::unordered_map<uint64_t, std::shared_ptr<const Plan>> plans_;  // guarded by mu_
};

// The coding matrices of the techniques (Jerasure's constructions, w=8):
// m x k over GF(2^8), or (8m) x (8k) over GF(2) for liber8tion.
StatusOr<gf256::Matrix> MakeCodingMatrix(std::string_view technique, int k, int m);

// A backend that runs the byte-matrix techniques (reed_sol_van, cauchy, xor)
// with `make_kernel`: refuses the bit-matrix ones (Jerasure's own), builds
// the technique's coding matrix.
StatusOr<std::unique_ptr<ErasureCoder>> MakeByteMatrixCoder(std::string backend, const CoderOptions& options,
                                                             KernelMaker make_kernel);

// Backend constructors (defined in each backend's file).
StatusOr<std::unique_ptr<ErasureCoder>> MakeJerasureCoder(const CoderOptions& options);
StatusOr<std::unique_ptr<ErasureCoder>> MakeIsalCoder(const CoderOptions& options);
StatusOr<std::unique_ptr<ErasureCoder>> MakeXorCoder(const CoderOptions& options);
StatusOr<std::unique_ptr<ErasureCoder>> MakeGfniCoder(const CoderOptions& options);
// True when this build has the gfni backend and this CPU can run it.
bool GfniAvailable();

// Makes gf-complete's w=8 field with the SIMD split-table region multiply and
// installs it into Jerasure, once per process. Must run before any Jerasure
// call. Returns whether SIMD is active.
bool InitJerasureField();

}  // namespace fern::ec
