// internal::DecodeChecked (see node_internal.h): a decode whose result is
// checked against the data CRCs the stripe's parity shards record.
#include <algorithm>
#include <cstring>
#include <string>

#include "daemon/node_internal.h"
#include "ec/crc32c.h"

namespace fern::daemon::internal {
namespace {

std::string Indices(ec::ShardSet s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    if (s.contains(i)) out += (out.empty() ? "" : ",") + std::to_string(i);
  }
  return out;
}

// The first k shards of `have`.
ec::ShardSet FirstK(ec::ShardSet have, int k, int n) {
  ec::ShardSet use;
  for (int i = 0; i < n && use.size() < k; ++i) {
    if (have.contains(i)) use.insert(i);
  }
  return use;
}

}  // namespace

Status DecodeChecked(const ec::ErasureCoder& coder, std::span<uint8_t* const> shards, ec::ShardSet have,
                     ec::ShardSet want, size_t len, const ShardChecks& checks, bool* verified,
                     std::vector<uint32_t>* data_crcs) {
  const auto& crcs = checks.crcs;
  const auto& stripe_crcs = checks.stripe_crcs;
  const int k = coder.k(), n = static_cast<int>(shards.size());
  const ec::ShardSet data = ec::ShardSet::FirstN(k);
  *verified = false;
  if (data_crcs) data_crcs->clear();
  // A wanted parity is encoded from the k data shards, never decoded
  // through another parity: so every data shard not present is needed too.
  const bool want_parity = (want.bits() & ~data.bits()) != 0;
  ec::ShardSet need(want.bits() & data.bits());
  if (want_parity) need = ec::ShardSet(need.bits() | (data.bits() & ~have.bits()));
  ec::ShardSet recorders;  // present parity shards that record the data CRCs
  for (int p = k; p < n; ++p) {
    if (have.contains(p) && static_cast<int>(stripe_crcs[p].size()) == k) recorders.insert(p);
  }
  std::vector<std::vector<uint8_t>> scratch(n);
  auto scratch_of = [&](int i) {
    if (scratch[i].empty()) scratch[i].resize(len);
    return scratch[i].data();
  };
  // The sources to try: the first k, then (more than k present) the first
  // k without each present shard in turn.
  std::vector<ec::ShardSet> tries{FirstK(have, k, n)};
  if (have.size() > k) {
    for (int x = 0; x < n; ++x) {
      if (!have.contains(x)) continue;
      ec::ShardSet without = have;
      without.erase(x);
      const ec::ShardSet use = FirstK(without, k, n);
      if (std::find(tries.begin(), tries.end(), use) == tries.end()) tries.push_back(use);
    }
  }
  std::vector<uint8_t*> work(n);
  std::vector<uint32_t> final_crc(k);
  std::vector<bool> known(k);
  std::string disagree;
  for (const ec::ShardSet use : tries) {
    // A present data shard a try leaves out may be the wrong one: it is
    // decoded too (into scratch), and replaces the present bytes only if
    // this try is accepted.
    const ec::ShardSet left_out(have.bits() & data.bits() & ~use.bits());
    const ec::ShardSet targets(need.bits() | left_out.bits());
    for (int i = 0; i < n; ++i) {
      work[i] = use.contains(i) ? shards[i]
                : targets.contains(i) ? (want.contains(i) ? shards[i] : scratch_of(i))
                                      : nullptr;
    }
    if (!targets.empty()) FERN_RETURN_IF_ERROR(coder.Decode(work, use, targets, len));
    for (int d = 0; d < k; ++d) {
      known[d] = targets.contains(d) || have.contains(d);
      if (targets.contains(d)) {
        final_crc[d] = ec::Crc32c({work[d], len});
      } else if (have.contains(d)) {
        final_crc[d] = crcs[d];
      }
    }
    // Accepted when some parity's record vouches for the data as it comes
    // out, and no parity used as a source contradicts it.
    bool vouched = recorders.empty(), contradicted = false;
    for (int p = k; p < n; ++p) {
      if (!recorders.contains(p)) continue;
      bool agrees = true;
      for (int d = 0; d < k && agrees; ++d) {
        if (known[d] && final_crc[d] != stripe_crcs[p][d]) agrees = false;
      }
      if (agrees) vouched = true;
      if (!agrees && use.contains(p)) contradicted = true;
    }
    if (!vouched || contradicted) {
      disagree += (disagree.empty() ? "{" : ", {") + Indices(use, n) + "}";
      continue;
    }
    *verified = !recorders.empty();
    for (int d = 0; d < k; ++d) {
      if (left_out.contains(d)) std::memcpy(shards[d], work[d], len);
    }
    if (want_parity) {
      std::vector<const uint8_t*> in(k);
      std::vector<uint8_t*> out(n - k);
      for (int d = 0; d < k; ++d) in[d] = need.contains(d) ? work[d] : shards[d];
      for (int p = k; p < n; ++p) out[p - k] = want.contains(p) ? shards[p] : scratch_of(p);
      FERN_RETURN_IF_ERROR(coder.Encode(in, out, len));
    }
    // Worth recording (a rebuilt parity's record) only when vouched for, or
    // when every data shard was present: never a decode nothing checked.
    const bool all_known = std::all_of(known.begin(), known.end(), [](bool b) { return b; });
    if (data_crcs && all_known && (*verified || targets.empty())) *data_crcs = final_crc;
    return Status();
  }
  return DataLossError("shards " + Indices(want, n) + " decoded from " + disagree + " disagree with the data CRCs parity " +
                       Indices(recorders, n) + " records (a shard is wrong but matches its own CRC)");
}

}  // namespace fern::daemon::internal
