#include "ec/matrix_coder.h"

#include <string>

namespace fern::ec {

MatrixCoder::MatrixCoder(std::string backend, std::string technique, size_t alignment,
                         gf256::Matrix coding, KernelMaker make_kernel, int rows_per_shard)
    : backend_(std::move(backend)),
      technique_(std::move(technique)),
      alignment_(alignment),
      coding_(std::move(coding)),
      w_(rows_per_shard),
      k_(coding_.cols / w_),
      m_(coding_.rows / w_),
      make_kernel_(std::move(make_kernel)) {
  if (m_ == 0) return;
  encode_kernel_ = make_kernel_(coding_);
  // Delta of data shard i: its w columns of C.
  for (int i = 0; i < k_; ++i) {
    gf256::Matrix column(m_ * w_, w_);
    for (int r = 0; r < m_ * w_; ++r) {
      for (int c = 0; c < w_; ++c) column.at(r, c) = coding_.at(r, i * w_ + c);
    }
    delta_kernels_.push_back(make_kernel_(column));
  }
}

Status MatrixCoder::CheckLen(size_t len) const {
  if (len % alignment_ != 0) {
    return InvalidArgumentError("shard length " + std::to_string(len) +
                                " is not a multiple of " + std::to_string(alignment_) +
                                " (alignment of " + technique_ + ")");
  }
  if (len > (size_t{1} << 31)) {
    return InvalidArgumentError("shard length " + std::to_string(len) + " exceeds 2 GiB");
  }
  return Status();
}

Status MatrixCoder::Encode(std::span<const uint8_t* const> data,
                           std::span<uint8_t* const> parity, size_t len) const {
  if (data.size() != static_cast<size_t>(k_) || parity.size() != static_cast<size_t>(m_)) {
    return InvalidArgumentError("encode: expected " + std::to_string(k_) + " data and " +
                                std::to_string(m_) + " parity buffers, got " +
                                std::to_string(data.size()) + " and " +
                                std::to_string(parity.size()));
  }
  FERN_RETURN_IF_ERROR(CheckLen(len));
  for (auto* p : data) {
    if (p == nullptr) return InvalidArgumentError("encode: null data buffer");
  }
  for (auto* p : parity) {
    if (p == nullptr) return InvalidArgumentError("encode: null parity buffer");
  }
  if (len == 0 || m_ == 0) return Status();
  encode_kernel_->Run(data.data(), parity.data(), len, /*accumulate=*/false);
  return Status();
}

StatusOr<std::shared_ptr<const MatrixCoder::Plan>> MatrixCoder::GetPlan(ShardSet present,
                                                                        ShardSet want) const {
  // The first k present shards, data before parity, are the survivors.
  ShardSet survivors;
  std::vector<int> inputs;
  for (int i = 0; i < k_ + m_ && static_cast<int>(inputs.size()) < k_; ++i) {
    if (present.contains(i)) {
      inputs.push_back(i);
      survivors.insert(i);
    }
  }
  const uint64_t key = (uint64_t{survivors.bits()} << 32) | want.bits();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
  }

  // G = [I; C]; S = rows of G for the survivors; D = G[want] * S^-1. Shard
  // i owns rows i*w .. i*w+w-1 of G.
  const int kw = k_ * w_;
  auto g_at = [&](int row, int col) -> uint8_t {
    if (row < kw) return row == col ? 1 : 0;
    return coding_.at(row - kw, col);
  };
  gf256::Matrix s(kw, kw);
  for (int r = 0; r < kw; ++r) {
    for (int c = 0; c < kw; ++c) s.at(r, c) = g_at(inputs[r / w_] * w_ + r % w_, c);
  }
  gf256::Matrix s_inv;
  if (!gf256::Invert(s, &s_inv)) {
    return InternalError("decode: survivor matrix is singular (coding matrix is not MDS)");
  }
  auto plan = std::make_shared<Plan>();
  plan->inputs = std::move(inputs);
  gf256::Matrix want_rows(want.size() * w_, kw);
  int r = 0;
  for (int i = 0; i < k_ + m_; ++i) {
    if (!want.contains(i)) continue;
    plan->outputs.push_back(i);
    for (int t = 0; t < w_; ++t, ++r) {
      for (int c = 0; c < kw; ++c) want_rows.at(r, c) = g_at(i * w_ + t, c);
    }
  }
  plan->kernel = make_kernel_(gf256::Multiply(want_rows, s_inv));

  std::lock_guard<std::mutex> lock(mu_);
  if (plans_.size() >= kMaxCachedPlans) plans_.clear();
  auto [it, inserted] = plans_.emplace(key, std::move(plan));
  return it->second;
}

Status MatrixCoder::Decode(std::span<uint8_t* const> shards, ShardSet present, ShardSet want,
                           size_t len) const {
  const int n = k_ + m_;
  if (shards.size() != static_cast<size_t>(n)) {
    return InvalidArgumentError("decode: expected " + std::to_string(n) + " shard buffers, got " +
                                std::to_string(shards.size()));
  }
  if ((present.bits() | want.bits()) & ~ShardSet::FirstN(n).bits()) {
    return InvalidArgumentError("decode: shard index out of range for k+m=" + std::to_string(n));
  }
  if (!ShardSet(present.bits() & want.bits()).empty()) {
    return InvalidArgumentError("decode: a shard is both present and wanted");
  }
  FERN_RETURN_IF_ERROR(CheckLen(len));
  if (want.empty()) return Status();
  if (present.size() < k_) {
    return DataLossError("decode: " + std::to_string(n - present.size()) +
                         " shards missing, m=" + std::to_string(m_));
  }
  for (int i = 0; i < n; ++i) {
    if ((present.contains(i) || want.contains(i)) && shards[i] == nullptr) {
      return InvalidArgumentError("decode: null buffer for shard " + std::to_string(i));
    }
  }
  if (len == 0) return Status();
  FERN_ASSIGN_OR_RETURN(auto plan, GetPlan(present, want));
  const uint8_t* in[kMaxShards];
  uint8_t* out[kMaxShards];
  for (size_t i = 0; i < plan->inputs.size(); ++i) in[i] = shards[plan->inputs[i]];
  for (size_t i = 0; i < plan->outputs.size(); ++i) out[i] = shards[plan->outputs[i]];
  plan->kernel->Run(in, out, len, /*accumulate=*/false);
  return Status();
}

Status MatrixCoder::ApplyDelta(int data_index, std::span<const uint8_t> delta,
                               std::span<uint8_t* const> parity) const {
  if (data_index < 0 || data_index >= k_) {
    return InvalidArgumentError("delta: data index " + std::to_string(data_index) +
                                " out of range for k=" + std::to_string(k_));
  }
  if (parity.size() != static_cast<size_t>(m_)) {
    return InvalidArgumentError("delta: expected " + std::to_string(m_) + " parity buffers");
  }
  FERN_RETURN_IF_ERROR(CheckLen(delta.size()));
  for (auto* p : parity) {
    if (p == nullptr) return InvalidArgumentError("delta: null parity buffer");
  }
  if (delta.empty() || m_ == 0) return Status();
  const uint8_t* in = delta.data();
  delta_kernels_[data_index]->Run(&in, parity.data(), delta.size(), /*accumulate=*/true);
  return Status();
}

size_t MatrixCoder::cached_plans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return plans_.size();
}

StatusOr<std::unique_ptr<ErasureCoder>> MakeByteMatrixCoder(std::string backend, const CoderOptions& options,
                                                             KernelMaker make_kernel) {
  if (options.technique == "cauchy_good" || options.technique == "liber8tion") {
    return InvalidArgumentError("technique " + options.technique + " (bit-matrix schedule) is Jerasure only; " +
                                backend + " offers reed_sol_van, cauchy and xor with identical parity");
  }
  FERN_ASSIGN_OR_RETURN(gf256::Matrix coding, MakeCodingMatrix(options.technique, options.k, options.m));
  return std::unique_ptr<ErasureCoder>(
      new MatrixCoder(std::move(backend), options.technique, 1, std::move(coding), std::move(make_kernel)));
}

}  // namespace fern::ec
