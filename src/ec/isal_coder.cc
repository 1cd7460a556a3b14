// ISA-L backend: the same coding matrices as the Jerasure backend, expanded
// into ISA-L's multiplication tables, so parity bytes are identical.
#include <isa-l/erasure_code.h>

#include <memory>
#include <string>
#include <vector>

#include "ec/matrix_coder.h"

namespace fern::ec {
namespace {

class IsalKernel final : public Kernel {
 public:
  explicit IsalKernel(const gf256::Matrix& m)
      : rows_(m.rows), cols_(m.cols), tables_(32 * static_cast<size_t>(m.rows) * m.cols) {
    std::vector<uint8_t> cells = m.cells;
    ec_init_tables(cols_, rows_, cells.data(), tables_.data());
  }

  void Run(const uint8_t* const* in, uint8_t* const* out, size_t len,
           bool accumulate) const override {
    auto** src = const_cast<unsigned char**>(in);
    auto** dst = const_cast<unsigned char**>(out);
    auto* tbl = const_cast<unsigned char*>(tables_.data());
    if (!accumulate) {
      ec_encode_data(static_cast<int>(len), cols_, rows_, tbl, src, dst);
      return;
    }
    for (int c = 0; c < cols_; ++c) {
      ec_encode_data_update(static_cast<int>(len), cols_, rows_, c, tbl, src[c], dst);
    }
  }

 private:
  const int rows_;
  const int cols_;
  std::vector<uint8_t> tables_;  // written once, in the constructor
};

}  // namespace

StatusOr<std::unique_ptr<ErasureCoder>> MakeIsalCoder(const CoderOptions& options) {
  return MakeByteMatrixCoder("isal", options,
                             [](const gf256::Matrix& m) { return std::make_unique<IsalKernel>(m); });
}

}  // namespace fern::ec
