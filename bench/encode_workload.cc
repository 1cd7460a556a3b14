// ec_bench encode: erasure-coding throughput of fern-ec's ErasureCoder next
// to two baselines measured in the same run on the same buffers: memcpy of
// the data, and the raw library kernel (Jerasure or ISA-L called directly with
// the same matrix, no fern-ec code around it). When ISA-L is built in, its
// kernel is measured as well, as the reference the Jerasure backend is judged
// against.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"
#include "common/flags.h"
#include "ec/erasure_coder.h"
#include "workloads.h"

extern "C" {
#include <jerasure.h>
}
#ifdef FERN_HAVE_ISAL
#include <isa-l/erasure_code.h>
#endif

namespace fern::bench {
namespace {

struct Config {
  std::string backend = "auto";
  std::string technique = "reed_sol_van";
  int k = 4;
  int m = 2;
  uint64_t shard_size = 1 << 20;
  uint64_t packet_size = 0;
  int threads = 1;
  uint64_t working_set = uint64_t{256} << 20;
  double seconds = 0.5;
  int rounds = 3;
  bool json = false;
};

// One thread's stripes: k data and m parity shards each, in one allocation.
struct StripeSet {
  AlignedBuffer memory;
  std::vector<std::vector<uint8_t*>> shards;  // [stripe][k+m]
  std::vector<uint8_t*> copy_dst;             // one shard-sized target per stripe
};

StripeSet MakeStripes(const Config& c, size_t stripes, uint8_t seed) {
  StripeSet s;
  const size_t per_stripe = (c.k + c.m + 1) * c.shard_size;
  s.memory = AllocateTouched(per_stripe * stripes, 0);
  for (size_t i = 0; i < stripes; ++i) {
    uint8_t* base = s.memory.get() + i * per_stripe;
    std::vector<uint8_t*> v;
    for (int j = 0; j < c.k + c.m; ++j) v.push_back(base + j * c.shard_size);
    s.copy_dst.push_back(base + (c.k + c.m) * c.shard_size);
    // Non-trivial data: a cheap per-byte pattern that differs across shards.
    for (int j = 0; j < c.k; ++j) {
      for (size_t b = 0; b < c.shard_size; ++b) v[j][b] = static_cast<uint8_t>(b * 131 + j * 7 + i + seed);
    }
    s.shards.push_back(std::move(v));
  }
  return s;
}

// The raw library call for the backend and technique, set up once.
class RawKernel {
 public:
  // `isal_reference` selects ISA-L's ec_encode_data with the byte matrix
  // regardless of the configured backend. The gfni backend is fern-ec's own
  // kernel, so its library baseline is ISA-L's, doing the same job.
  // `isal_matrix` is the GF(2^8) matrix for ISA-L when the coder's own is a
  // bit-matrix (liber8tion); its speed does not depend on the coefficients.
  RawKernel(const ec::ErasureCoder& coder, size_t packet_size, bool isal_reference,
            const ec::gf256::Matrix& isal_matrix)
      : k_(coder.k()), m_(coder.m()), packet_size_(packet_size) {
    const auto& cm = coder.coding_matrix();
    if (isal_reference || coder.backend() == "isal" || coder.backend() == "gfni") {
#ifdef FERN_HAVE_ISAL
      kind_ = Kind::kIsal;
      tables_.resize(32 * k_ * m_);
      std::vector<uint8_t> cells = coder.coding_matrix_w() == 1 ? cm.cells : isal_matrix.cells;
      ec_init_tables(k_, m_, cells.data(), tables_.data());
#endif
    } else if (coder.technique() == "cauchy_good" || coder.technique() == "liber8tion") {
      kind_ = Kind::kJerasureSchedule;
      if (coder.coding_matrix_w() == 8) {  // already a bit-matrix
        bitmatrix_ = static_cast<int*>(std::malloc(cm.cells.size() * sizeof(int)));
        for (size_t i = 0; i < cm.cells.size(); ++i) bitmatrix_[i] = cm.cells[i];
      } else {
        matrix_.assign(cm.cells.begin(), cm.cells.end());
        bitmatrix_ = jerasure_matrix_to_bitmatrix(k_, m_, 8, matrix_.data());
      }
      schedule_ = jerasure_smart_bitmatrix_to_schedule(k_, m_, 8, bitmatrix_);
    } else if (coder.technique() == "xor") {
      kind_ = Kind::kJerasureParity;
    } else {
      kind_ = Kind::kJerasureMatrix;
      matrix_.assign(cm.cells.begin(), cm.cells.end());
    }
  }
  ~RawKernel() {
    if (schedule_) jerasure_free_schedule(schedule_);
    std::free(bitmatrix_);
  }
  RawKernel(const RawKernel&) = delete;
  RawKernel& operator=(const RawKernel&) = delete;

  std::string name() const {
    switch (kind_) {
      case Kind::kIsal: return "isal ec_encode_data";
      case Kind::kJerasureMatrix: return "jerasure_matrix_encode";
      case Kind::kJerasureSchedule: return "jerasure_schedule_encode";
      case Kind::kJerasureParity: return "jerasure_do_parity";
      case Kind::kNone: break;
    }
    return "none";
  }
  bool available() const { return kind_ != Kind::kNone; }

  void Encode(uint8_t* const* shards, size_t len) {
    char** data = reinterpret_cast<char**>(const_cast<uint8_t**>(shards));
    char** coding = data + k_;
    switch (kind_) {
      case Kind::kIsal:
#ifdef FERN_HAVE_ISAL
        ec_encode_data(static_cast<int>(len), k_, m_, tables_.data(),
                       const_cast<unsigned char**>(shards), const_cast<unsigned char**>(shards) + k_);
#endif
        break;
      case Kind::kJerasureMatrix:
        jerasure_matrix_encode(k_, m_, 8, matrix_.data(), data, coding, static_cast<int>(len));
        break;
      case Kind::kJerasureSchedule:
        jerasure_schedule_encode(k_, m_, 8, schedule_, data, coding, static_cast<int>(len),
                                 static_cast<int>(packet_size_));
        break;
      case Kind::kJerasureParity:
        jerasure_do_parity(k_, data, coding[0], static_cast<int>(len));
        break;
      case Kind::kNone:
        break;
    }
  }

 private:
  enum class Kind { kNone, kIsal, kJerasureMatrix, kJerasureSchedule, kJerasureParity };
  Kind kind_ = Kind::kNone;
  int k_, m_;
  size_t packet_size_;
  std::vector<uint8_t> tables_;
  std::vector<int> matrix_;
  int* bitmatrix_ = nullptr;
  int** schedule_ = nullptr;
};

}  // namespace

int RunEncode(const std::vector<std::string>& args) {
  Config c;
  FlagSet flags(
      "usage: ec_bench encode [flags]\n\n"
      "Encode, decode (m lost data shards) and parity-delta throughput of one\n"
      "ErasureCoder, in GB/s of data per core, next to memcpy and the raw library\n"
      "kernel measured in the same run on the same buffers. Each figure is the\n"
      "median of --rounds rounds; the working set is larger than the CPU caches.");
  flags.String("backend", &c.backend, "jerasure, isal, gfni (where the CPU has GFNI and AVX-512BW), xor or auto");
  flags.String("technique", &c.technique,
               "reed_sol_van, cauchy, cauchy_good, liber8tion (m=2) or xor");
  flags.Int("k", &c.k, "data shards per stripe");
  flags.Int("m", &c.m, "parity shards per stripe");
  flags.Size("shard-size", &c.shard_size, "bytes per shard");
  flags.Size("packet-size", &c.packet_size, "cauchy_good/liber8tion packet size (0: default)");
  flags.Int("threads", &c.threads, "encoding threads (each with its own stripes)");
  flags.Size("working-set", &c.working_set, "data bytes cycled through, all threads together");
  flags.Double("seconds", &c.seconds, "duration of each measurement");
  flags.Int("rounds", &c.rounds, "rounds per measurement; the median is reported");
  flags.Bool("json", &c.json, "print one JSON object instead of a table");
  if (Status s = flags.Parse(args); !s.ok()) {
    std::fprintf(stderr, "ec_bench encode: %s\n", s.ToString().c_str());
    return 2;
  }
  if (flags.help_requested()) {
    std::printf("%s", flags.Help().c_str());
    return 0;
  }
  if (c.threads < 1 || c.rounds < 1 || c.seconds <= 0 || c.shard_size == 0 || c.m < 1 ||
      c.shard_size > (uint64_t{1} << 30)) {
    std::fprintf(stderr,
                 "ec_bench encode: --threads, --rounds, --seconds, --m must be positive and "
                 "--shard-size in 1B..1GiB\n");
    return 2;
  }

  ec::CoderOptions o{.backend = c.backend, .technique = c.technique, .k = c.k, .m = c.m,
                     .packet_size = c.packet_size};
  auto coder_or = ec::MakeErasureCoder(o);
  if (!coder_or.ok()) {
    std::fprintf(stderr, "ec_bench encode: %s\n", coder_or.status().ToString().c_str());
    return 2;
  }
  const ec::ErasureCoder& coder = **coder_or;
  if (c.shard_size % coder.alignment() != 0) {
    std::fprintf(stderr, "ec_bench encode: --shard-size must be a multiple of %zu for %s\n",
                 coder.alignment(), c.technique.c_str());
    return 2;
  }
  const size_t packet =
      c.technique == "cauchy_good" || c.technique == "liber8tion" ? coder.alignment() / 8 : 0;
  const size_t data_per_stripe = c.k * c.shard_size;
  const size_t stripes_per_thread =
      std::max<size_t>(2, c.working_set / c.threads / data_per_stripe);
  std::vector<StripeSet> sets;
  for (int t = 0; t < c.threads; ++t) sets.push_back(MakeStripes(c, stripes_per_thread, t));

  // ISA-L's reference needs a GF(2^8) matrix of the same shape.
  auto rs = ec::MakeErasureCoder({.backend = "jerasure", .technique = "reed_sol_van", .k = c.k,
                                  .m = c.m});
  const ec::gf256::Matrix rs_matrix = rs.ok() ? (*rs)->coding_matrix() : ec::gf256::Matrix();
  RawKernel kernel(coder, packet, false, rs_matrix);
  const bool have_isal_reference = coder.backend() != "isal" && coder.backend() != "gfni" && c.technique != "xor" &&
                                   c.m > 0
#ifdef FERN_HAVE_ISAL
      ;
#else
      && false;
#endif
  std::unique_ptr<RawKernel> isal_ref;
  if (have_isal_reference) isal_ref = std::make_unique<RawKernel>(coder, packet, true, rs_matrix);

  ec::ShardSet lost = ec::ShardSet::FirstN(std::min(c.m, c.k));
  ec::ShardSet present(ec::ShardSet::FirstN(c.k + c.m).bits() & ~lost.bits());
  bool failed = false;

  std::vector<double> memcpy_r, kernel_r, encode_r, decode_r, delta_r, isal_r;
  for (int r = 0; r < c.rounds; ++r) {
    memcpy_r.push_back(MeasureGbps(c.threads, stripes_per_thread, data_per_stripe, c.seconds,
                                   [&](int t, size_t i) {
                                     auto& v = sets[t].shards[i];
                                     for (int j = 0; j < c.k; ++j) {
                                       std::memcpy(sets[t].copy_dst[i], v[j], c.shard_size);
                                     }
                                   }));
    kernel_r.push_back(MeasureGbps(c.threads, stripes_per_thread, data_per_stripe, c.seconds,
                                   [&](int t, size_t i) {
                                     kernel.Encode(sets[t].shards[i].data(), c.shard_size);
                                   }));
    encode_r.push_back(MeasureGbps(
        c.threads, stripes_per_thread, data_per_stripe, c.seconds, [&](int t, size_t i) {
          auto& v = sets[t].shards[i];
          std::span<const uint8_t* const> data(const_cast<const uint8_t**>(v.data()), c.k);
          if (!coder.Encode(data, std::span(v).subspan(c.k), c.shard_size).ok()) failed = true;
        }));
    decode_r.push_back(MeasureGbps(
        c.threads, stripes_per_thread, data_per_stripe, c.seconds, [&](int t, size_t i) {
          if (!coder.Decode(sets[t].shards[i], present, lost, c.shard_size).ok()) failed = true;
        }));
    // Delta of a whole data shard: what an in-place update of one shard costs.
    delta_r.push_back(MeasureGbps(
        c.threads, stripes_per_thread, c.shard_size, c.seconds, [&](int t, size_t i) {
          auto& v = sets[t].shards[i];
          if (!coder.ApplyDelta(0, {v[1], c.shard_size}, std::span(v).subspan(c.k)).ok()) {
            failed = true;
          }
        }));
    if (isal_ref) {
      isal_r.push_back(MeasureGbps(c.threads, stripes_per_thread, data_per_stripe, c.seconds,
                                   [&](int t, size_t i) {
                                     isal_ref->Encode(sets[t].shards[i].data(), c.shard_size);
                                   }));
    }
  }
  if (failed) {
    std::fprintf(stderr, "ec_bench encode: a coder call failed\n");
    return 1;
  }

  const double per_core = 1.0 / c.threads;
  const double memcpy_g = Median(memcpy_r) * per_core;
  const double kernel_g = Median(kernel_r) * per_core;
  const double encode_g = Median(encode_r) * per_core;
  const double decode_g = Median(decode_r) * per_core;
  const double delta_g = Median(delta_r) * per_core;
  const double isal_g = Median(isal_r) * per_core;

  const CpuInfo cpu = DescribeCpu();
  Json j;
  j.Add("workload", "encode")
      .Add("cpu", cpu.model)
      .Add("cpu_avx512", cpu.avx512)
      .Add("cpu_gfni", cpu.gfni)
      .Add("backend", std::string(coder.backend()))
      .Add("technique", std::string(coder.technique()))
      .Add("k", c.k)
      .Add("m", c.m)
      .Add("shard_size", c.shard_size)
      .Add("packet_size", static_cast<uint64_t>(packet))
      .Add("threads", c.threads)
      .Add("working_set_bytes", static_cast<uint64_t>(stripes_per_thread * data_per_stripe * c.threads))
      .Add("rounds", c.rounds)
      .Add("jerasure_simd", ec::JerasureSimdActive())
      .Add("kernel", kernel.name())
      .Add("encode_gbps", encode_g)
      .Add("decode_gbps", decode_g)
      .Add("delta_gbps", delta_g)
      .Add("memcpy_gbps", memcpy_g)
      .Add("kernel_gbps", kernel_g)
      .Add("encode_vs_kernel", encode_g / kernel_g)
      .Add("encode_vs_memcpy", encode_g / memcpy_g)
      .Add("decode_vs_encode", decode_g / encode_g);
  if (isal_ref) {
    j.Add("isal_kernel_gbps", isal_g).Add("encode_vs_isal", encode_g / isal_g);
  }
  if (c.json) {
    std::printf("%s\n", j.ToString().c_str());
    return 0;
  }
  std::printf("ec_bench encode: backend=%s technique=%s k=%d m=%d shard=%s threads=%d "
              "working set=%s jerasure_simd=%s (GB/s of data per core, median of %d)\n",
              std::string(coder.backend()).c_str(), std::string(coder.technique()).c_str(), c.k,
              c.m, FormatSize(c.shard_size).c_str(), c.threads,
              FormatSize(stripes_per_thread * data_per_stripe * c.threads).c_str(),
              ec::JerasureSimdActive() ? "yes" : "NO", c.rounds);
  std::printf("  cpu: %s, avx512 %s, gfni %s\n", cpu.model.c_str(), cpu.avx512 ? "yes" : "no",
              cpu.gfni ? "yes" : "no");
  std::printf("  %-28s %8.2f\n", "memcpy (baseline)", memcpy_g);
  std::printf("  %-28s %8.2f\n", (kernel.name() + " (baseline)").c_str(), kernel_g);
  if (isal_ref) std::printf("  %-28s %8.2f\n", "isal ec_encode_data (ref)", isal_g);
  std::printf("  %-28s %8.2f   %.2fx kernel, %.2fx memcpy\n", "fern encode", encode_g,
              encode_g / kernel_g, encode_g / memcpy_g);
  std::printf("  %-28s %8.2f   %.2fx encode (%d data shards lost)\n", "fern decode", decode_g,
              decode_g / encode_g, lost.size());
  std::printf("  %-28s %8.2f   (one shard's delta into %d parity)\n", "fern delta", delta_g, c.m);
  if (isal_ref) std::printf("  encode vs isal kernel: %.2fx\n", encode_g / isal_g);
  return 0;
}

}  // namespace fern::bench
