// fern-ec scrub (Node::Scrub): re-encode each stripe from its data shards
// and compare with the parity stored, a few stripes at a time.
#include <algorithm>
#include <cstring>

#include "daemon/node.h"
#include "daemon/node_internal.h"
#include "ec/crc32c.h"
#include "fern_wire.pb.h"

namespace fern::daemon {
namespace {

using transport::InMessage;
using transport::OutMessage;
using transport::Payload;
using internal::SetId;

constexpr int kScrubWindow = 4;  // stripes checked at once

}  // namespace

struct Node::ScrubOp {
  Caller caller;
  bool repair = false;
  std::vector<RecordPtr> files;
  size_t file = 0;
  uint64_t stripe = 0;
  int in_flight = 0;
  bool finished = false;
  ScrubReport report;
  std::function<void(StatusOr<ScrubReport>)> done;
};

void Node::Scrub(const std::string& path, const Caller& caller, bool repair,
                 std::function<void(StatusOr<ScrubReport>)> done) {
  auto op = std::make_shared<ScrubOp>();
  op->caller = caller;
  op->repair = repair;
  op->done = std::move(done);
  LookupRecord(path, [this, op, path](StatusOr<RecordPtr> rec) {
    if (rec.ok() && internal::Live(**rec) && !(*rec)->is_dir()) {
      if (Status s = internal::CheckReadableFile(**rec, path, op->caller, "scrub"); !s.ok()) return op->done(s);
      op->files.push_back(*rec);
      return ScrubNext(op);
    }
    if (!rec.ok() && rec.status().code() != StatusCode::kNotFound) return op->done(rec.status());
    // A directory (explicit or implicit) or "/": every readable file under it.
    ListRecords([this, op, path](StatusOr<std::vector<RecordPtr>> all) {
      if (!all.ok()) return op->done(all.status().WithContext("scrub " + path));
      const std::string prefix = path == "/" ? "/" : path + "/";
      for (auto& r : *all) {
        if (r->path().compare(0, prefix.size(), prefix) != 0) continue;
        if (!internal::Permits(*r, op->caller, R_OK)) {
          op->report.problems.push_back(r->path() + ": skipped, uid " + std::to_string(op->caller.uid) +
                                        " may not read it");
          continue;
        }
        op->files.push_back(r);
      }
      if (op->files.empty() && !op->report.problems.empty()) {
        return op->done(PermissionDeniedError("scrub " + path + ": no file there may be read by uid " +
                                              std::to_string(op->caller.uid)));
      }
      if (op->files.empty()) return op->done(NotFoundError("scrub " + path + ": no such file or directory"));
      ScrubNext(op);
    });
  });
}

void Node::ScrubNext(const std::shared_ptr<ScrubOp>& op) {
  while (op->in_flight < kScrubWindow && op->file < op->files.size()) {
    const wire::FileRecord& rec = *op->files[op->file];
    const uint64_t stripes = geometry_.StripeCount(rec.size());
    if (op->stripe == 0) ++op->report.files;
    if (op->stripe >= stripes) {
      ++op->file;
      op->stripe = 0;
      continue;
    }
    ++op->in_flight;
    ScrubStripe(op, op->files[op->file], op->stripe++);
  }
  if (op->in_flight > 0 || op->finished || op->file < op->files.size()) return;
  op->finished = true;
  op->done(op->report);
}

void Node::ScrubStripe(const std::shared_ptr<ScrubOp>& op, const RecordPtr& rec, uint64_t stripe) {
  const int k = options_.k, n = k + options_.m;
  struct Fetch {
    std::vector<std::shared_ptr<void>> owners;
    std::vector<std::span<uint8_t>> shards;
    std::vector<uint64_t> seq, epoch;
    internal::ShardChecks checks;
    std::vector<std::string> errors;
    int pending = 1;
  };
  auto f = std::make_shared<Fetch>();
  f->owners.resize(n);
  f->shards.resize(n);
  f->seq.resize(n);
  f->epoch.resize(n);
  f->errors.resize(n);
  f->checks = internal::ShardChecks(n);
  const std::vector<NodeId> nodes = StripeNodes(*rec, stripe);
  const uint64_t len = geometry_.StripeShardLen(rec->size(), stripe);
  const std::string where = rec->path() + " stripe " + std::to_string(stripe);
  auto finish = [this, op, rec, f, nodes, len, stripe, where]() {
    const int k = options_.k, n = k + options_.m;
    ++op->report.stripes;
    auto done = [this, op]() {
      --op->in_flight;
      ScrubNext(op);
    };
    std::string missing;
    for (int i = 0; i < n; ++i) {
      if (!f->errors[i].empty()) missing += " shard " + std::to_string(i) + ": " + f->errors[i] + ";";
    }
    if (!missing.empty()) {
      ++op->report.degraded;
      op->report.problems.push_back(where + ": degraded:" + missing);
      return done();
    }
    if (std::any_of(f->seq.begin(), f->seq.end(), [&](uint64_t s) { return s != f->seq[0]; })) {
      std::string seqs;
      for (int i = 0; i < n; ++i) seqs += (i ? "," : "") + std::to_string(f->seq[i]);
      ++op->report.inconsistent;
      op->report.problems.push_back(where + ": shards at different update seqs (" + seqs + ")");
      return done();
    }
    auto parity = std::make_shared<std::vector<uint8_t>>(options_.m * len);
    std::vector<const uint8_t*> data(k);
    std::vector<uint8_t*> out(options_.m);
    for (int i = 0; i < k; ++i) data[i] = f->shards[i].data();
    for (int j = 0; j < options_.m; ++j) out[j] = parity->data() + j * len;
    if (Status s = coder_->Encode(data, out, len); !s.ok()) {
      op->report.problems.push_back(where + ": encode: " + s.ToString());
      ++op->report.inconsistent;
      return done();
    }
    // A parity is bad if its bytes are not the encoding of the data, or if
    // the data CRCs it records (which degraded reads check decodes against)
    // are not the data's.
    const std::vector<uint32_t> data_crcs(f->checks.crcs.begin(), f->checks.crcs.begin() + k);
    const auto& stripe_crcs = f->checks.stripe_crcs;
    std::vector<int> bad;
    std::string differs, miscounts;
    int differing = 0;
    for (int j = 0; j < options_.m; ++j) {
      if (std::memcmp(out[j], f->shards[k + j].data(), len) != 0) {
        ++differing;
        bad.push_back(k + j);
        differs += (differs.empty() ? "" : ",") + std::to_string(k + j);
      } else if (!stripe_crcs[k + j].empty() && stripe_crcs[k + j] != data_crcs) {
        bad.push_back(k + j);
        miscounts += (miscounts.empty() ? "" : ",") + std::to_string(k + j);
      }
    }
    if (bad.empty()) {
      ++op->report.consistent;
      return done();
    }
    ++op->report.inconsistent;
    // Rewrites shards `which` of the stripe with `bytes` (one len-long
    // buffer each, owned by `owner`), each only if it is still stored as
    // scrub read it (ShardPut.replace_if_unchanged: an update that slipped
    // in since is never overwritten); then counts the stripe repaired.
    auto rewrite = [this, op, rec, f, nodes, len, stripe, where, done](
                       std::vector<int> which, std::vector<const uint8_t*> bytes, std::shared_ptr<void> owner,
                       const std::vector<uint32_t>& data_crcs) {
      const int k = options_.k;
      if (which.empty()) return done();
      auto left = std::make_shared<int>(static_cast<int>(which.size()));
      auto ok = std::make_shared<bool>(true);
      for (size_t w = 0; w < which.size(); ++w) {
        const int j = which[w];
        wire::ShardPut put = internal::ReplaceIfUnchanged(*rec, stripe, j, len, ec::Crc32c({bytes[w], len}), f->seq[j],
                                                          f->epoch[j], f->checks.crcs[j]);
        put.set_durable(j >= k);
        if (j >= k) {
          for (uint32_t c : data_crcs) put.add_stripe_crc32c(c);
        }
        const std::string what = (j >= k ? "parity shard " : "data shard ") + std::to_string(j);
        transport_->Call(nodes[j], OutMessage{wire::SHARD_PUT, put.SerializeAsString(), Payload::View({bytes[w], len}, owner)},
                         {options_.rpc_timeout, nullptr}, [op, left, ok, done, where, what](StatusOr<InMessage> r) {
                           if (!r.ok()) {
                             *ok = false;
                             op->report.problems.push_back(where + ": rewrite " + what + ": " + r.status().ToString());
                           }
                           if (--*left > 0) return;
                           if (*ok) ++op->report.repaired;
                           done();
                         });
      }
    };
    // Every parity differs, and the data CRCs two or more of them record
    // agree with each other but not with data shard d: d is what is wrong (a
    // wrong data shard changes every parity's encoding). Re-encoding the
    // parity from it would make its wrong bytes permanent: with --repair, d
    // is decoded from the other shards instead, kept only if the records
    // vouch for the result, and rewritten; the parity stays.
    if (differing == options_.m) {
      std::string suspects;
      ec::ShardSet wrong;
      for (int d = 0; d < k; ++d) {
        std::vector<uint32_t> recorded;
        for (int j = k; j < n; ++j) {
          if (static_cast<int>(stripe_crcs[j].size()) == k) recorded.push_back(stripe_crcs[j][d]);
        }
        // Two records at least: a lone one may itself be what is wrong.
        const bool one_voice = recorded.size() >= 2 && std::all_of(recorded.begin(), recorded.end(),
                                                                   [&](uint32_t c) { return c == recorded[0]; });
        if (one_voice && recorded[0] != data_crcs[d]) {
          suspects += (suspects.empty() ? "" : ",") + std::to_string(d);
          wrong.insert(d);
        }
      }
      if (!suspects.empty()) {
        const std::string problem = where + ": data shard " + suspects +
                                    " disagrees with the data CRCs every parity records (seq " +
                                    std::to_string(f->seq[0]) + ")";
        if (!op->repair || wrong.size() > options_.m) {
          op->report.problems.push_back(problem + ": parity not rewritten");
          return done();
        }
        auto fixed = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(wrong.size()) * len);
        std::vector<uint8_t*> ptrs(n);
        std::vector<int> which;
        std::vector<const uint8_t*> bytes;
        for (int i = 0; i < n; ++i) {
          if (!wrong.contains(i)) {
            ptrs[i] = f->shards[i].data();
            continue;
          }
          ptrs[i] = fixed->data() + which.size() * len;
          which.push_back(i);
          bytes.push_back(ptrs[i]);
        }
        const ec::ShardSet have(ec::ShardSet::FirstN(n).bits() & ~wrong.bits());
        std::vector<uint32_t> vouched;  // filled only when the records vouch for the result
        Status s = CheckedDecode(ptrs, have, wrong, len, f->checks, &vouched);
        if (s.ok() && vouched.empty()) s = DataLossError("no parity record vouched for the decoded bytes");
        if (!s.ok()) {
          op->report.problems.push_back(problem + ": not rewritten: " + s.ToString());
          return done();
        }
        op->report.problems.push_back(problem + ": rewritten from the other shards");
        return rewrite(std::move(which), std::move(bytes), fixed, {});
      }
    }
    if (!differs.empty()) {
      op->report.problems.push_back(where + ": parity shard " + differs +
                                    " differs from the encoding of the data (seq " + std::to_string(f->seq[0]) + ")");
    }
    if (!miscounts.empty()) {
      op->report.problems.push_back(where + ": parity shard " + miscounts +
                                    " records data CRCs that are not the data's (seq " + std::to_string(f->seq[0]) + ")");
    }
    if (!op->repair) return done();
    std::vector<const uint8_t*> bytes;
    for (int j : bad) bytes.push_back(out[j - k]);
    rewrite(bad, std::move(bytes), parity, data_crcs);
  };
  if (static_cast<int>(nodes.size()) != n) {
    for (int i = 0; i < n; ++i) f->errors[i] = "no placement";
    return finish();
  }
  for (int i = 0; i < n; ++i) {
    if (!view_.IsAlive(nodes[i])) {
      f->errors[i] = nodes[i].ToString() + " is down";
      continue;
    }
    wire::ShardGet get;
    SetId(get.mutable_id(), rec->file_id(), rec->version(), stripe, i);
    ++f->pending;
    transport_->Call(nodes[i], OutMessage{wire::SHARD_GET, get.SerializeAsString(), {}},
                     {options_.rpc_timeout, nullptr}, [f, i, len, finish](StatusOr<InMessage> r) {
                       wire::ShardGetReply rep;
                       if (!r.ok()) {
                         f->errors[i] = std::string(r.status().message());
                       } else if (!rep.ParseFromString(r->header) || r->payload.size() != len ||
                                  ec::Crc32c(r->payload) != rep.crc32c()) {
                         f->errors[i] = "torn or corrupt";
                       } else {
                         f->shards[i] = r->payload;
                         f->owners[i] = r->payload_owner;
                         f->seq[i] = rep.seq();
                         f->epoch[i] = rep.epoch();
                         f->checks.Take(i, rep);
                       }
                       if (--f->pending == 0) finish();
                     });
  }
  if (--f->pending == 0) finish();
}

}  // namespace fern::daemon
