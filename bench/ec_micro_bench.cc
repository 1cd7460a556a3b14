// Google Benchmark micro-benchmarks of src/ec: encode, decode, delta and CRC,
// and encode with every shard's CRC (the daemon's put path: encode_crc_fused,
// next to its two-pass baseline encode_crc_separate), per backend, warm (one
// stripe, cache-resident) and cold (cycling through a working set far larger
// than the caches). The raw-kernel and memcpy baselines, with ratios, are
// ec_bench encode's job; these track regressions.
//   build/bin/ec_micro_bench --benchmark_filter=encode
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>
#include <vector>

#include "ec/crc32c.h"
#include "ec/erasure_coder.h"

namespace fern::ec {
namespace {

constexpr size_t kColdBytes = size_t{256} << 20;

struct Stripes {
  std::vector<uint8_t> memory;
  std::vector<std::vector<uint8_t*>> shards;
  Stripes(int k, int m, size_t len, bool cold) {
    const size_t per = (k + m) * len;
    const size_t n = cold ? std::max<size_t>(2, kColdBytes / (k * len)) : 1;
    memory.assign(per * n, 0);
    for (size_t i = 0; i < memory.size(); ++i) memory[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
    for (size_t s = 0; s < n; ++s) {
      std::vector<uint8_t*> v;
      for (int j = 0; j < k + m; ++j) v.push_back(memory.data() + s * per + j * len);
      shards.push_back(v);
    }
  }
};

std::unique_ptr<ErasureCoder> Make(const std::string& backend, const std::string& technique,
                                   int k, int m, benchmark::State& state) {
  auto c = MakeErasureCoder({.backend = backend, .technique = technique, .k = k, .m = m});
  if (!c.ok()) {
    state.SkipWithError(c.status().ToString().c_str());
    return nullptr;
  }
  return std::move(c).value();
}

enum class Op { kEncode, kDecode, kDelta, kEncodeCrcSeparate, kEncodeCrcFused };

// One benchmark body for every operation: same coder, same stripes, bytes
// counted as data (encode, decode, encode + CRCs) or delta bytes (delta). A
// call that fails ends the benchmark with its error.
void BM_Coder(benchmark::State& state, Op op, std::string backend, std::string technique,
              bool cold) {
  const int k = state.range(0), m = state.range(1);
  const size_t len = state.range(2);
  auto coder = Make(backend, technique, k, m, state);
  if (!coder) return;
  Stripes s(k, m, len, cold);
  const ShardSet lost = ShardSet::FirstN(m);
  const ShardSet present(ShardSet::FirstN(k + m).bits() & ~lost.bits());
  std::vector<uint32_t> crcs(k + m);
  size_t i = 0;
  for (auto _ : state) {
    auto& v = s.shards[i++ % s.shards.size()];
    const std::span<const uint8_t* const> data(const_cast<const uint8_t**>(v.data()), size_t(k));
    Status st;
    switch (op) {
      case Op::kEncode:
        st = coder->Encode(data, std::span(v).subspan(k), len);
        break;
      case Op::kDecode:
        st = coder->Decode(v, present, lost, len);
        break;
      case Op::kDelta:
        st = coder->ApplyDelta(0, {v[1], len}, std::span(v).subspan(k));
        break;
      case Op::kEncodeCrcSeparate:
        st = coder->Encode(data, std::span(v).subspan(k), len);
        for (int j = 0; j < k + m; ++j) crcs[j] = Crc32c({v[j], len});
        break;
      case Op::kEncodeCrcFused:
        st = EncodeWithCrcs(*coder, data, std::span(v).subspan(k), len, crcs);
        break;
    }
    benchmark::DoNotOptimize(crcs.data());
    if (!st.ok()) {  // a failed call is not a fast one
      state.SkipWithError(st.ToString().c_str());
      break;
    }
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * (op == Op::kDelta ? 1 : k) * len);
}

void BM_Crc32c(benchmark::State& state, uint32_t (*fn)(std::span<const uint8_t>, uint32_t),
               bool cold) {
  const size_t len = state.range(0);
  Stripes s(1, 0, len, cold);
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(fn({s.shards[i++ % s.shards.size()][0], len}, 0));
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * len);
}

void Register() {
  struct V {
    const char* backend;
    const char* technique;
  };
  std::vector<V> variants = {
      {"jerasure", "reed_sol_van"}, {"jerasure", "cauchy_good"}, {"jerasure", "liber8tion"}};
  for (auto b : AvailableBackends()) {
    if (b == "isal") variants.push_back({"isal", "reed_sol_van"});
  }
  for (bool cold : {false, true}) {
    const char* temp = cold ? "cold" : "warm";
    for (auto v : variants) {
      // Per (k, m): one 64 KiB stripe warm, or the technique's smallest
      // legal length when that is larger (cauchy_good: 8 packets of 16 KiB).
      std::vector<std::vector<int64_t>> args;
      for (auto km : std::vector<std::pair<int, int>>{{4, 2}, {8, 2}, {10, 4}}) {
        if (std::string_view(v.technique) == "liber8tion" && km.second != 2) continue;
        int64_t len = cold ? (1 << 20) : (64 << 10);
        auto c = MakeErasureCoder(
            {.backend = v.backend, .technique = v.technique, .k = km.first, .m = km.second});
        if (c.ok()) len = std::max<int64_t>(len, int64_t((*c)->alignment()));
        args.push_back({km.first, km.second, len});
      }
      std::string suffix = std::string("/") + v.backend + "/" + v.technique + "/" + temp;
      for (auto [op, name] : {std::pair{Op::kEncode, "encode"}, std::pair{Op::kDecode, "decode"},
                              std::pair{Op::kDelta, "delta"},
                              std::pair{Op::kEncodeCrcSeparate, "encode_crc_separate"},
                              std::pair{Op::kEncodeCrcFused, "encode_crc_fused"}}) {
        auto* b = benchmark::RegisterBenchmark((std::string(name) + suffix).c_str(), BM_Coder, op,
                                               v.backend, v.technique, cold);
        b->ArgNames({"k", "m", "bytes"});
        for (const auto& a : args) b->Args(a);
      }
    }
    benchmark::RegisterBenchmark((std::string("crc32c/default/") + temp).c_str(), BM_Crc32c,
                                 &Crc32c, cold)
        ->ArgName("bytes")
        ->Arg(cold ? (1 << 20) : (64 << 10));
    benchmark::RegisterBenchmark((std::string("crc32c/sse42/") + temp).c_str(), BM_Crc32c,
                                 &Crc32cHardware, cold)
        ->ArgName("bytes")
        ->Arg(cold ? (1 << 20) : (64 << 10));
  }
}

}  // namespace
}  // namespace fern::ec

int main(int argc, char** argv) {
  fern::ec::Register();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
