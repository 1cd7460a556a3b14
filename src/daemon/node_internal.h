// Helpers shared by node.cc (data path) and node_namespace.cc (namespace
// operations). Internal to src/daemon.
#pragma once

#include <cstdint>
#include <span>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "daemon/node.h"
#include "ec/erasure_coder.h"
#include "fern_wire.pb.h"

namespace fern::daemon::internal {

// Records of one path are ordered by (generation, file_id): every owner and
// every reader agrees which is newest, even for two puts racing on one path.
// The same version with a newer sequencer epoch (psw_epoch) is newer too,
// so a restarted owner's stale copy never hands an old epoch to a sequencer.
inline bool Newer(const wire::FileRecord& a, const wire::FileRecord& b) {
  if (a.generation() != b.generation()) return a.generation() > b.generation();
  if (a.file_id() != b.file_id()) return a.file_id() > b.file_id();
  if (a.psw_epoch() != b.psw_epoch()) return a.psw_epoch() > b.psw_epoch();
  return a.amended() > b.amended();  // shard moves applied (META_AMEND)
}

inline bool Live(const wire::FileRecord& r) { return !r.deleted(); }

// POSIX permission check of `mask` (R_OK|W_OK|X_OK) on a record's owner and
// mode. uid 0 passes read and write, and execute when any x bit is set.
bool Permits(const wire::FileRecord& r, const Caller& caller, int mask);

// A record a caller may read as a file: NotFound (deleted), EISDIR, or
// PermissionDenied naming `verb` ("read", "inspect"), else OK.
inline Status CheckReadableFile(const wire::FileRecord& r, const std::string& path, const Caller& caller,
                                const char* verb) {
  if (!Live(r)) return NotFoundError(path + ": no such file");
  if (r.is_dir()) return InvalidArgumentError(path + ": is a directory").WithErrno(EISDIR);
  if (!Permits(r, caller, R_OK)) {
    return PermissionDeniedError(std::string(verb) + " " + path + ": uid " + std::to_string(caller.uid) +
                                 " may not read it");
  }
  return Status();
}

// Only the owner or root may remove or rename (sticky-directory rule).
inline bool MayRemove(const wire::FileRecord& r, const Caller& caller) {
  return caller.uid == 0 || caller.uid == r.uid();
}

uint64_t NowNs();

// The shards of `present` at the newest update seq that at least k of them
// share (decode sources must all hold the same update); fewer than k when
// no seq is shared by k.
inline ec::ShardSet SameSeqShards(ec::ShardSet present, const std::vector<uint64_t>& seqs, int k) {
  ec::ShardSet best;
  uint64_t best_seq = 0;
  for (int i = 0; i < static_cast<int>(seqs.size()); ++i) {
    if (!present.contains(i)) continue;
    ec::ShardSet same;
    for (int j = 0; j < static_cast<int>(seqs.size()); ++j) {
      if (present.contains(j) && seqs[j] == seqs[i]) same.insert(j);
    }
    if (same.size() >= k && (best.size() < k || seqs[i] > best_seq)) {
      best = same;
      best_seq = seqs[i];
    }
  }
  return best.size() >= k ? best : ec::ShardSet();
}

// What a decode knows of each fetched shard besides its bytes, by shard
// index: its CRC32C and, for a parity shard, the data CRCs it records
// (ShardMeta::stripe_crcs; empty where none).
struct ShardChecks {
  std::vector<uint32_t> crcs;
  std::vector<std::vector<uint32_t>> stripe_crcs;
  explicit ShardChecks(int n = 0) : crcs(n, 0), stripe_crcs(n) {}
  void Take(int i, const wire::ShardGetReply& reply) {
    crcs[i] = reply.crc32c();
    stripe_crcs[i].assign(reply.stripe_crc32c().begin(), reply.stripe_crc32c().end());
  }
};

// Decodes `want` from k of the shards in `have` (all at one update seq)
// and checks the result end to end. Each present shard's own CRC only says
// its bytes are as stored; a shard that is wrong but self-consistent (a
// coder bug, a stale rewrite) would decode into wrong bytes no CRC catches.
// So a parity shard in `have` that records the stripe's data CRCs
// (ShardMeta::stripe_crcs) must vouch for the data as it comes out (the
// present data shards' CRCs `checks.crcs[i]` and the decoded ones), and no parity
// among the k sources may contradict it. Otherwise, with more than k shards
// present, the decode is tried again leaving out one shard at a time; a
// present data shard left out by the try that is accepted is replaced by
// its decoded bytes in place. A wanted parity is encoded from the k data
// shards (decoded first where missing), never decoded through another
// parity.
//   shards: k+m pointers; entries in `have` are read (a present data shard
//           may be overwritten as above), entries in `want` written.
//   data_crcs (optional): the k data shards' CRCs as they came out, when
//           all are known and either vouched for or all present; else
//           empty (a rebuilt parity must not record an unchecked decode).
// OK with *verified false when no parity in `have` records data CRCs
// (nothing to check against: written by an older daemon, or updated in
// place since); DataLoss naming the shards when no try is vouched for; a
// decode error as is. REQUIRES: have.size() >= k; want and have disjoint.
Status DecodeChecked(const ec::ErasureCoder& coder, std::span<uint8_t* const> shards, ec::ShardSet have,
                     ec::ShardSet want, size_t len, const ShardChecks& checks, bool* verified,
                     std::vector<uint32_t>* data_crcs = nullptr);

inline void SetId(wire::ShardId* id, uint64_t file_id, uint64_t version, uint64_t stripe, int index) {
  id->set_file_id(file_id);
  id->set_version(version);
  id->set_stripe(stripe);
  id->set_index(static_cast<uint32_t>(index));
}

// The layout of version (file_id, version) in `record`: the record itself
// or one of its kept versions; null when it holds no such version.
inline const wire::FileRecord* FindVersion(const wire::FileRecord& record, uint64_t file_id, uint64_t version) {
  if (record.file_id() == file_id && record.version() == version) return &record;
  for (const auto& h : record.history()) {
    if (h.file_id() == file_id && h.version() == version) return &h;
  }
  return nullptr;
}
inline wire::FileRecord* FindVersion(wire::FileRecord* record, uint64_t file_id, uint64_t version) {
  return const_cast<wire::FileRecord*>(FindVersion(std::as_const(*record), file_id, version));
}

// The newest version of `record` and each kept one, each as its own layout
// with the record's path (history entries carry none).
inline std::vector<std::shared_ptr<wire::FileRecord>> Versions(const std::shared_ptr<wire::FileRecord>& record) {
  std::vector<std::shared_ptr<wire::FileRecord>> out{record};
  for (const auto& h : record->history()) {
    out.push_back(std::make_shared<wire::FileRecord>(h));
    out.back()->set_path(record->path());
  }
  return out;
}

// Shard moves (or fills) to record, one META_AMEND per version they
// belong to. Add appends a move of shard `index` of `stripe` of `layout`
// (a version with its path set) from node `from` to `to`.
class AmendsByVersion {
 public:
  wire::ShardMove* Add(const wire::FileRecord& layout, uint64_t stripe, int index, NodeId from, NodeId to) {
    wire::MetaAmend& a = by_version_[{layout.path(), layout.file_id(), layout.version()}];
    if (a.path().empty()) {
      a.set_path(layout.path());
      a.set_file_id(layout.file_id());
      a.set_version(layout.version());
    }
    wire::ShardMove* mv = a.add_moves();
    mv->set_stripe(stripe);
    mv->set_index(static_cast<uint32_t>(index));
    mv->set_from_node(from.value);
    mv->set_to_node(to.value);
    return mv;
  }
  std::vector<wire::MetaAmend> Take() {
    std::vector<wire::MetaAmend> out;
    for (auto& [key, a] : by_version_) out.push_back(std::move(a));
    by_version_.clear();
    return out;
  }

 private:
  std::map<std::tuple<std::string, uint64_t, uint64_t>, wire::MetaAmend> by_version_;
};

// A SHARD_PUT that rewrites shard `index` of a stripe with `len` bytes of
// CRC `crc`, only if it is still stored at (seq, epoch) with CRC `expect`
// (ShardPut.replace_if_unchanged: a shard found wrong, healed by a read or
// by scrub, never over an update that came since).
inline wire::ShardPut ReplaceIfUnchanged(const wire::FileRecord& record, uint64_t stripe, int index, uint64_t len,
                                         uint32_t crc, uint64_t seq, uint64_t epoch, uint32_t expect) {
  wire::ShardPut put;
  SetId(put.mutable_id(), record.file_id(), record.version(), stripe, index);
  put.set_length(len);
  put.set_crc32c(crc);
  put.set_seq(seq);
  put.set_epoch(epoch);
  put.set_replace_if_unchanged(true);
  put.set_expect_crc32c(expect);
  return put;
}

}  // namespace fern::daemon::internal
