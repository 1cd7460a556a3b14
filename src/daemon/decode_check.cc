// internal::DecodeChecked (see node_internal.h): a decode whose result is
// checked against the data CRCs the stripe's parity shards record.
#include <algorithm>
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
                     ec::ShardSet want, size_t len, std::span<const uint32_t> crcs,
                     std::span<const std::vector<uint32_t>> stripe_crcs, bool* verified) {
  const int k = coder.k(), n = static_cast<int>(shards.size());
  *verified = false;
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
  // Sources with a parity that can vouch for the result first: a decode
  // nothing checks is taken only when no source could have checked one.
  auto recorded = [&](ec::ShardSet use) {
    for (int p = k; p < n; ++p) {
      if (use.contains(p) && static_cast<int>(stripe_crcs[p].size()) == k) return true;
    }
    return false;
  };
  std::stable_partition(tries.begin(), tries.end(), recorded);
  std::vector<uint32_t> decoded(k, 0);
  std::string disagree;
  for (const ec::ShardSet use : tries) {
    if (!recorded(use) && !disagree.empty()) break;  // a checked decode disagreed: trust none unchecked
    FERN_RETURN_IF_ERROR(coder.Decode(shards, use, want, len));
    for (int d = 0; d < k; ++d) {
      if (want.contains(d)) decoded[d] = ec::Crc32c({shards[d], len});
    }
    bool checked = false, agree = true;
    for (int p = k; p < n && agree; ++p) {
      if (!use.contains(p) || static_cast<int>(stripe_crcs[p].size()) != k) continue;
      checked = true;
      for (int d = 0; d < k && agree; ++d) {
        if (use.contains(d) && crcs[d] != stripe_crcs[p][d]) agree = false;
        if (want.contains(d) && decoded[d] != stripe_crcs[p][d]) agree = false;
      }
    }
    if (!checked) return Status();  // nothing recorded to check against
    if (agree) {
      *verified = true;
      return Status();
    }
    disagree += (disagree.empty() ? "{" : ", {") + Indices(use, n) + "}";
  }
  return DataLossError("shards " + Indices(want, n) + " decoded from " + disagree +
                       " disagree with the data CRCs the parity records (a shard is wrong but matches its own CRC)");
}

std::vector<uint32_t> StripeCrcsOf(ec::ShardSet have, int k, int n, std::span<const uint32_t> crcs,
                                   std::span<const std::vector<uint32_t>> stripe_crcs) {
  if ((have.bits() & ec::ShardSet::FirstN(k).bits()) == ec::ShardSet::FirstN(k).bits()) {
    return {crcs.begin(), crcs.begin() + k};
  }
  for (int p = k; p < n; ++p) {
    if (!have.contains(p) || static_cast<int>(stripe_crcs[p].size()) != k) continue;
    bool agree = true;
    for (int d = 0; d < k; ++d) {
      if (have.contains(d) && crcs[d] != stripe_crcs[p][d]) agree = false;
    }
    if (agree) return stripe_crcs[p];
  }
  return {};
}

}  // namespace fern::daemon::internal
