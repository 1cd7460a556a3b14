// Tests of the PSW state machines (daemon/sequencer.h).
//
// Unit tests pin each piece: ShardUpdateState (in-order apply, gap
// buffering, fencing, byte-exact rollback, idempotent duplicates),
// DecideRecovery (the rule), Sequencer (one update per stripe, commit after
// k+m acks, epochs, recovery rounds).
//
// The model test (PswModel.*) runs a whole file inside the process: k data
// and m parity ShardUpdateStates per stripe over a real Reed-Solomon coder,
// a Sequencer, several writers issuing random overlapping and disjoint
// unaligned updates, and a network that delivers messages in seeded random
// order with random duplicates. At random steps a data shard, a parity
// shard, a whole "node" (one shard index on every stripe), a writer or the
// sequencer dies; the survivors recover through the protocol. After every
// step: no shard has seen an epoch that was not made durable, and every
// committed update is still held by k live shards. At every quiescent point:
// each shard sits at its stripe's seq with no undo left, every stripe's data
// equals a reference model that applied the committed updates in the
// sequencer's order, its parity equals a fresh encode of that data byte for
// byte, and a degraded read returns the same bytes.
//
// Each model test runs 3000 seeded cases (600 in unoptimized or sanitized
// builds), each a few hundred steps. Replaying: a failing case prints its
// seed; FERN_PSW_CASE_SEED=<seed> runs just that case and prints its step
// trace, FERN_TEST_SEED=<seed> replays a whole run, FERN_PSW_CASES=<n>
// changes the number of cases per test.
//
// The PswMutant.* tests run deliberately broken variants of the host glue
// (a wrong parity coefficient, a delta not xored, a rollback that forgets
// the bytes, parity acknowledging before applying, recovery reading the
// wrong header field) and require the model to catch each with the check
// meant for it, so the model test cannot pass vacuously.
#include "daemon/sequencer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "ec/erasure_coder.h"
#include "test_util.h"

namespace fern::daemon::psw {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes RandomBytes(std::mt19937_64& rng, size_t n) {
  Bytes b(n);
  fern::testing::FillRandom(rng, b.data(), n);
  return b;
}

std::unique_ptr<ec::ErasureCoder> MakeCoder(int k, int m) {
  ec::CoderOptions o;
  o.technique = "reed_sol_van";
  o.k = k;
  o.m = m;
  auto c = ec::MakeErasureCoder(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

// Parity of `data` (k shards of equal length) by a full encode.
std::vector<Bytes> Encode(const ec::ErasureCoder& coder, const std::vector<Bytes>& data) {
  const size_t len = data[0].size();
  std::vector<Bytes> parity(coder.m(), Bytes(len));
  std::vector<const uint8_t*> d;
  std::vector<uint8_t*> p;
  for (const auto& b : data) d.push_back(b.data());
  for (auto& b : parity) p.push_back(b.data());
  EXPECT_TRUE(coder.Encode(d, p, len).ok());
  return parity;
}

std::vector<uint8_t> Row(const ec::ErasureCoder& coder, int parity_index) {
  auto r = coder.coding_matrix().row(parity_index - coder.k());
  return {r.begin(), r.end()};
}

ShardUpdateState DataState(int k, int index, Bytes& shard, ShardHeader h = {}) {
  auto s = ShardUpdateState::Data(k, index, shard, h);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

ShardUpdateState ParityState(const ec::ErasureCoder& coder, int index, Bytes& shard,
                             ShardHeader h = {}) {
  auto s = ShardUpdateState::Parity(coder.k(), index, Row(coder, index), shard, h);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

DataUpdate Upd(Seq seq, Epoch epoch, uint32_t mask, uint64_t offset, const Bytes& bytes) {
  return {.seq = seq,
          .epoch = epoch,
          .data_mask = ec::ShardSet(mask),
          .offset = offset,
          .bytes = bytes};
}

ParityDelta Piece(const ShardApplied& a) {
  return {.seq = a.seq,
          .epoch = a.epoch,
          .data_index = a.data_index,
          .data_mask = a.data_mask,
          .offset = a.offset,
          .delta = a.delta};
}

// ---- SplitStripeRange ------------------------------------------------------

TEST(SplitStripeRange, CutsAtShardBoundaries) {
  auto p = SplitStripeRange(3, 10, {.offset = 7, .length = 15});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->size(), 3u);
  EXPECT_EQ((*p)[0].shard, 0);
  EXPECT_EQ((*p)[0].shard_offset, 7u);
  EXPECT_EQ((*p)[0].length, 3u);
  EXPECT_EQ((*p)[1].shard, 1);
  EXPECT_EQ((*p)[1].shard_offset, 0u);
  EXPECT_EQ((*p)[1].range_offset, 3u);
  EXPECT_EQ((*p)[1].length, 10u);
  EXPECT_EQ((*p)[2].shard, 2);
  EXPECT_EQ((*p)[2].length, 2u);
  EXPECT_EQ(DataMask(*p), ec::ShardSet(0b111));
}

TEST(SplitStripeRange, RefusesEmptyAndOutside) {
  EXPECT_EQ(SplitStripeRange(3, 10, {.offset = 0, .length = 0}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitStripeRange(3, 10, {.offset = 25, .length = 6}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitStripeRange(3, 10, {.offset = ~0ull, .length = 2}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(SplitStripeRange(3, 10, {.offset = 29, .length = 1}).ok());
}

// ---- ShardUpdateState ------------------------------------------------------

TEST(ShardUpdateState, DataAppliesAndForwardsOldXorNew) {
  auto rng = fern::testing::TestRng();
  Bytes shard = RandomBytes(rng, 64);
  const Bytes before = shard;
  ShardUpdateState s = DataState(4, 1, shard);
  const Bytes nw = RandomBytes(rng, 10);
  std::vector<ShardApplied> out;
  ASSERT_TRUE(s.ApplyData(Upd(1, 1, 0b0110, 5, nw), &out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].forward);
  EXPECT_EQ(out[0].seq, 1u);
  EXPECT_EQ(out[0].data_index, 1);
  EXPECT_EQ(out[0].offset, 5u);
  ASSERT_EQ(out[0].delta.size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(out[0].delta[i], before[5 + i] ^ nw[i]);
    EXPECT_EQ(shard[5 + i], nw[i]);
  }
  EXPECT_TRUE(std::equal(shard.begin(), shard.begin() + 5, before.begin()));
  EXPECT_TRUE(std::equal(shard.begin() + 15, shard.end(), before.begin() + 15));
  EXPECT_EQ(s.header(), (ShardHeader{1, 1, 0}));
  EXPECT_TRUE(s.report().has_undo);
  EXPECT_EQ(s.report().undo_floor_seq, 0u);

  // A shard the update does not touch still applies (and acks) its seq.
  Bytes other = RandomBytes(rng, 64);
  const Bytes other_before = other;
  ShardUpdateState o = DataState(4, 0, other);
  out.clear();
  ASSERT_TRUE(o.ApplyData(Upd(1, 1, 0b0110, 0, {}), &out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].forward);
  EXPECT_EQ(o.header().applied_seq, 1u);
  EXPECT_EQ(other, other_before);
}

TEST(ShardUpdateState, DataBuffersGapsAndAppliesInSeqOrder) {
  auto rng = fern::testing::TestRng();
  Bytes shard = RandomBytes(rng, 80);
  Bytes expect = shard;
  ShardUpdateState s = DataState(2, 0, shard);
  const Bytes u1 = RandomBytes(rng, 30), u2 = RandomBytes(rng, 30), u3 = RandomBytes(rng, 7);
  std::vector<ShardApplied> out;
  // Overlapping ranges, delivered 3, 2, 1: the result must be 1 then 2 then 3.
  ASSERT_TRUE(s.ApplyData(Upd(3, 1, 0b01, 20, u3), &out).ok());
  ASSERT_TRUE(s.ApplyData(Upd(2, 1, 0b01, 10, u2), &out).ok());
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(s.buffered(), 2u);
  EXPECT_EQ(s.header().applied_seq, 0u);
  ASSERT_TRUE(s.ApplyData(Upd(1, 1, 0b01, 0, u1), &out).ok());
  ASSERT_EQ(out.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(out[i].seq, static_cast<Seq>(i + 1));
  std::copy(u1.begin(), u1.end(), expect.begin());
  std::copy(u2.begin(), u2.end(), expect.begin() + 10);
  std::copy(u3.begin(), u3.end(), expect.begin() + 20);
  EXPECT_EQ(shard, expect);
  EXPECT_EQ(s.buffered(), 0u);
  EXPECT_EQ(s.header().applied_seq, 3u);
}

TEST(ShardUpdateState, ParityBuffersGapsAndMatchesReencode) {
  auto rng = fern::testing::TestRng();
  auto coder = MakeCoder(3, 2);
  ASSERT_NE(coder, nullptr);
  const size_t len = 67;
  std::vector<Bytes> data(3);
  for (auto& d : data) d = RandomBytes(rng, len);
  std::vector<Bytes> parity = Encode(*coder, data);
  std::vector<ShardUpdateState> ds, ps;
  for (int i = 0; i < 3; ++i) ds.push_back(DataState(3, i, data[i]));
  for (int j = 0; j < 2; ++j) ps.push_back(ParityState(*coder, 3 + j, parity[j]));
  // Two updates, each touching shards 0 and 2; the parity shards get the
  // four pieces newest first.
  std::vector<ShardApplied> pieces;
  for (Seq seq = 1; seq <= 2; ++seq) {
    for (int i = 0; i < 3; ++i) {
      std::vector<ShardApplied> out;
      const Bytes nw = i == 1 ? Bytes{} : RandomBytes(rng, 20);
      ASSERT_TRUE(ds[i].ApplyData(Upd(seq, 1, 0b101, 3 + seq * 11, nw), &out).ok());
      for (auto& a : out) {
        if (a.forward) pieces.push_back(a);
      }
    }
  }
  ASSERT_EQ(pieces.size(), 4u);
  for (auto& p : ps) {
    std::vector<ShardApplied> out;
    for (int i = 3; i >= 0; --i) {
      ASSERT_TRUE(p.ApplyParity(Piece(pieces[i]), &out).ok());
      if (i >= 2) {
        EXPECT_TRUE(out.empty()) << "seq 2 must wait for seq 1";
      }
    }
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].seq, 1u);
    EXPECT_EQ(out[1].seq, 2u);
    // Whose deltas each seq took (the node records those shards' new CRCs).
    EXPECT_EQ(out[0].data_mask.bits(), 0b101u);
    EXPECT_EQ(out[1].data_mask.bits(), 0b101u);
    EXPECT_EQ(p.header().applied_seq, 2u);
  }
  EXPECT_EQ(parity, Encode(*coder, data));
}

TEST(ShardUpdateState, StaleEpochIsRefusedAndChangesNothing) {
  auto rng = fern::testing::TestRng();
  auto coder = MakeCoder(2, 1);
  ASSERT_NE(coder, nullptr);
  Bytes shard = RandomBytes(rng, 64);
  Bytes pshard = RandomBytes(rng, 64);
  ShardUpdateState s = DataState(2, 0, shard);
  ShardUpdateState p = ParityState(*coder, 2, pshard);
  std::vector<ShardApplied> out;
  ASSERT_TRUE(s.ApplyData(Upd(1, 3, 0b01, 0, RandomBytes(rng, 8)), &out).ok());
  ASSERT_TRUE(s.Fence(5).ok());
  ASSERT_TRUE(p.Fence(5).ok());
  const Bytes before = shard;
  const ShardHeader h = s.header();
  out.clear();
  Status st = s.ApplyData(Upd(2, 4, 0b01, 0, RandomBytes(rng, 8)), &out);
  EXPECT_EQ(st.code(), StatusCode::kAborted) << st.ToString();
  EXPECT_EQ(p.ApplyParity({.seq = 1,
                           .epoch = 4,
                           .data_index = 0,
                           .data_mask = ec::ShardSet(1),
                           .offset = 0,
                           .delta = Bytes(8, 1)},
                          &out)
                .code(),
            StatusCode::kAborted);
  EXPECT_EQ(s.Fence(4).status().code(), StatusCode::kAborted);
  EXPECT_EQ(s.RollBack(4, 0).code(), StatusCode::kAborted);
  EXPECT_EQ(s.Rebuild(4, 1, Bytes(64)).code(), StatusCode::kAborted);
  // A commit from before the fence is merely late: ignored, undo kept.
  EXPECT_TRUE(s.Commit(1, 3).ok());
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(shard, before);
  EXPECT_EQ(s.header(), h);
  EXPECT_TRUE(s.report().has_undo);
  // The newer epoch goes through.
  ASSERT_TRUE(s.ApplyData(Upd(2, 5, 0b01, 0, RandomBytes(rng, 8)), &out).ok());
  EXPECT_EQ(s.header(), (ShardHeader{5, 2, 0}));
}

TEST(ShardUpdateState, FenceDropsBufferedPiecesOfOlderEpochs) {
  auto rng = fern::testing::TestRng();
  Bytes shard = RandomBytes(rng, 64);
  const Bytes before = shard;
  ShardUpdateState s = DataState(2, 1, shard);
  std::vector<ShardApplied> out;
  ASSERT_TRUE(s.ApplyData(Upd(2, 1, 0b10, 0, RandomBytes(rng, 8)), &out).ok());
  EXPECT_EQ(s.buffered(), 1u);
  ASSERT_TRUE(s.Fence(2).ok());
  EXPECT_EQ(s.buffered(), 0u);
  ASSERT_TRUE(s.ApplyData(Upd(1, 2, 0b10, 0, RandomBytes(rng, 8)), &out).ok());
  ASSERT_EQ(out.size(), 1u) << "the dropped seq 2 must not apply after seq 1";
  EXPECT_EQ(s.header().applied_seq, 1u);
  EXPECT_TRUE(std::equal(shard.begin() + 8, shard.end(), before.begin() + 8));
}

TEST(ShardUpdateState, RollbackRestoresBytesExactly) {
  auto rng = fern::testing::TestRng();
  Bytes shard = RandomBytes(rng, 101);
  const Bytes v0 = shard;
  ShardUpdateState s = DataState(3, 2, shard);
  std::vector<ShardApplied> out;
  std::vector<Bytes> versions{v0};
  for (Seq seq = 1; seq <= 4; ++seq) {
    const uint64_t off = rng() % 60;
    ASSERT_TRUE(s.ApplyData(Upd(seq, 1, 0b100, off, RandomBytes(rng, 1 + rng() % 40)), &out).ok());
    versions.push_back(shard);
  }
  ASSERT_TRUE(s.RollBack(2, 3).ok());
  EXPECT_EQ(shard, versions[3]);
  EXPECT_EQ(s.header(), (ShardHeader{2, 3, 0}));
  ASSERT_TRUE(s.RollBack(2, 1).ok());
  EXPECT_EQ(shard, versions[1]);
  ASSERT_TRUE(s.RollBack(2, 0).ok());
  EXPECT_EQ(shard, v0);
  EXPECT_FALSE(s.report().has_undo);
  EXPECT_EQ(s.RollBack(2, 1).code(), StatusCode::kFailedPrecondition) << "not applied";
}

TEST(ShardUpdateState, RollbackUndoesPartialParityPieces) {
  auto rng = fern::testing::TestRng();
  auto coder = MakeCoder(4, 2);
  ASSERT_NE(coder, nullptr);
  Bytes shard = RandomBytes(rng, 90);
  const Bytes v0 = shard;
  ShardUpdateState p = ParityState(*coder, 5, shard);
  std::vector<ShardApplied> out;
  // Seq 1 complete (one piece), seq 2 partial (2 of 3 pieces, overlapping).
  ASSERT_TRUE(p.ApplyParity({.seq = 1,
                             .epoch = 1,
                             .data_index = 3,
                             .data_mask = ec::ShardSet(8),
                             .offset = 10,
                             .delta = RandomBytes(rng, 50)},
                            &out)
                  .ok());
  const Bytes v1 = shard;
  for (int i : {0, 2}) {
    ASSERT_TRUE(p.ApplyParity({.seq = 2,
                               .epoch = 1,
                               .data_index = i,
                               .data_mask = ec::ShardSet(0b0111),
                               .offset = 20u + i,
                               .delta = RandomBytes(rng, 40)},
                              &out)
                    .ok());
  }
  EXPECT_EQ(out.size(), 1u);
  EXPECT_NE(shard, v1);
  ShardReport r = p.report();
  EXPECT_TRUE(r.partial);
  EXPECT_EQ(r.applied_seq, 1u);
  ASSERT_TRUE(p.RollBack(2, 1).ok());
  EXPECT_EQ(shard, v1);
  EXPECT_FALSE(p.report().partial);
  ASSERT_TRUE(p.RollBack(2, 0).ok());
  EXPECT_EQ(shard, v0);
}

TEST(ShardUpdateState, DuplicateDeliveryIsIdempotent) {
  auto rng = fern::testing::TestRng();
  auto coder = MakeCoder(2, 1);
  ASSERT_NE(coder, nullptr);
  std::vector<Bytes> data{RandomBytes(rng, 64), RandomBytes(rng, 64)};
  std::vector<Bytes> parity = Encode(*coder, data);
  ShardUpdateState d0 = DataState(2, 0, data[0]);
  ShardUpdateState p = ParityState(*coder, 2, parity[0]);
  const Bytes nw = RandomBytes(rng, 16);
  std::vector<ShardApplied> out;
  ASSERT_TRUE(d0.ApplyData(Upd(1, 1, 0b01, 4, nw), &out).ok());
  const Bytes after = data[0];
  ASSERT_EQ(out.size(), 1u);
  const ShardApplied first = out[0];
  out.clear();
  ASSERT_TRUE(d0.ApplyData(Upd(1, 1, 0b01, 4, nw), &out).ok());
  ASSERT_EQ(out.size(), 1u) << "a duplicate is acknowledged again";
  EXPECT_FALSE(out[0].forward) << "but its delta is not sent twice";
  EXPECT_EQ(data[0], after);
  EXPECT_EQ(d0.report().undo_floor_seq, 0u) << "and no second undo record";
  out.clear();
  ASSERT_TRUE(p.ApplyParity(Piece(first), &out).ok());
  ASSERT_TRUE(p.ApplyParity(Piece(first), &out).ok());
  EXPECT_EQ(parity, Encode(*coder, data)) << "a duplicate delta must not apply twice";
  // Duplicates of a buffered seq are buffered once.
  ASSERT_TRUE(d0.ApplyData(Upd(3, 1, 0b01, 0, nw), &out).ok());
  ASSERT_TRUE(d0.ApplyData(Upd(3, 1, 0b01, 0, nw), &out).ok());
  EXPECT_EQ(d0.buffered(), 1u);
  // Duplicates of a partial seq's piece are ignored too.
  ASSERT_TRUE(p.ApplyParity({.seq = 2,
                             .epoch = 1,
                             .data_index = 0,
                             .data_mask = ec::ShardSet(0b11),
                             .offset = 0,
                             .delta = nw},
                            &out)
                  .ok());
  const Bytes partial = parity[0];
  ASSERT_TRUE(p.ApplyParity({.seq = 2,
                             .epoch = 1,
                             .data_index = 0,
                             .data_mask = ec::ShardSet(0b11),
                             .offset = 0,
                             .delta = nw},
                            &out)
                  .ok());
  EXPECT_EQ(parity[0], partial);
}

TEST(ShardUpdateState, CommitDropsUndoAndBoundsRollback) {
  auto rng = fern::testing::TestRng();
  Bytes shard = RandomBytes(rng, 64);
  ShardUpdateState s = DataState(1, 0, shard);
  std::vector<ShardApplied> out;
  ASSERT_TRUE(s.ApplyData(Upd(1, 1, 0b1, 0, RandomBytes(rng, 9)), &out).ok());
  ASSERT_TRUE(s.ApplyData(Upd(2, 1, 0b1, 3, RandomBytes(rng, 9)), &out).ok());
  EXPECT_EQ(s.Commit(3, 1).code(), StatusCode::kFailedPrecondition) << "seq 3 was never applied";
  ASSERT_TRUE(s.Commit(1, 1).ok());
  EXPECT_EQ(s.header(), (ShardHeader{1, 2, 1}));
  EXPECT_EQ(s.report().undo_floor_seq, 1u);
  const Bytes v2 = shard;
  EXPECT_EQ(s.RollBack(2, 0).code(), StatusCode::kFailedPrecondition) << "seq 1 is committed";
  EXPECT_EQ(shard, v2);
  EXPECT_EQ(s.header().applied_seq, 2u);
  ASSERT_TRUE(s.Commit(2, 1).ok());
  EXPECT_FALSE(s.report().has_undo);
}

TEST(ShardUpdateState, RebuildOfALaggingShardKeepsUndo) {
  auto rng = fern::testing::TestRng();
  Bytes shard = RandomBytes(rng, 64);
  const Bytes v0 = shard;
  ShardUpdateState s = DataState(2, 1, shard, {.epoch = 1, .applied_seq = 4, .committed_seq = 4});
  const Bytes rebuilt = RandomBytes(rng, 64);
  EXPECT_EQ(s.Rebuild(2, 5, Bytes(63)).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(s.Rebuild(2, 5, rebuilt).ok());
  EXPECT_EQ(shard, rebuilt);
  EXPECT_EQ(s.report().undo_floor_seq, 4u);
  EXPECT_EQ(s.header(), (ShardHeader{2, 5, 4}));
  // The network delivers the rebuild twice: the second changes nothing.
  ASSERT_TRUE(s.Rebuild(2, 5, rebuilt).ok());
  EXPECT_EQ(s.report().undo_floor_seq, 4u);
  ASSERT_TRUE(s.RollBack(3, 4).ok());
  EXPECT_EQ(shard, v0);
}

TEST(ShardUpdateState, MalformedEventsAreRefused) {
  auto rng = fern::testing::TestRng();
  auto coder = MakeCoder(2, 1);
  ASSERT_NE(coder, nullptr);
  Bytes shard = RandomBytes(rng, 32), pshard = RandomBytes(rng, 32);
  ShardUpdateState s = DataState(2, 0, shard);
  ShardUpdateState p = ParityState(*coder, 2, pshard);
  std::vector<ShardApplied> out;
  const Bytes b(8, 7);
  EXPECT_EQ(s.ApplyData(Upd(0, 1, 0b01, 0, b), &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.ApplyData(Upd(1, 1, 0b01, 0, {}), &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.ApplyData(Upd(1, 1, 0b10, 0, b), &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.ApplyData(Upd(1, 1, 0b101, 0, b), &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.ApplyData(Upd(1, 1, 0b01, 25, b), &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(p.ApplyData(Upd(1, 1, 0b01, 0, b), &out).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.ApplyParity({.seq = 1,
                           .epoch = 1,
                           .data_index = 0,
                           .data_mask = ec::ShardSet(1),
                           .offset = 0,
                           .delta = b},
                          &out)
                .code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(p.ApplyParity({.seq = 1,
                           .epoch = 1,
                           .data_index = 1,
                           .data_mask = ec::ShardSet(1),
                           .offset = 0,
                           .delta = b},
                          &out)
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(s.header(), ShardHeader{});
  EXPECT_EQ(ShardUpdateState::Data(2, 2, shard, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardUpdateState::Parity(2, 1, Row(*coder, 2), pshard, {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardUpdateState::Parity(2, 2, Bytes(3), pshard, {}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(ShardUpdateState, BufferIsBounded) {
  Bytes shard(16);
  ShardUpdateState s = DataState(1, 0, shard);
  std::vector<ShardApplied> out;
  const Bytes b(1, 1);
  for (Seq seq = 2; seq < 2 + ShardUpdateState::kMaxBuffered; ++seq) {
    ASSERT_TRUE(s.ApplyData(Upd(seq, 1, 1, 0, b), &out).ok());
  }
  EXPECT_EQ(s.ApplyData(Upd(5000, 1, 1, 0, b), &out).code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE(s.ApplyData(Upd(1, 1, 1, 0, b), &out).ok());
  EXPECT_EQ(s.header().applied_seq, 1 + ShardUpdateState::kMaxBuffered);
}

// ---- DecideRecovery --------------------------------------------------------

std::optional<ShardReport> R(Seq applied, Seq floor, bool partial = false) {
  ShardReport r;
  r.epoch = 2;
  r.applied_seq = applied;
  r.committed_seq = floor;
  r.undo_floor_seq = floor;
  r.partial = partial;
  r.has_undo = floor < applied || partial;
  return r;
}
constexpr std::nullopt_t kLost = std::nullopt;

TEST(DecideRecovery, UpdateOnEveryShardRollsForward) {
  std::vector<std::optional<ShardReport>> r{R(5, 4), R(5, 4), R(5, 4), R(5, 4)};
  auto d = DecideRecovery(3, 1, r);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->seq, 5u);
  EXPECT_EQ(d->keep, ec::ShardSet(0b1111));
  EXPECT_TRUE(d->rolled_back.empty());
  EXPECT_TRUE(d->rebuild.empty());
}

TEST(DecideRecovery, UpdateOnFewerThanKShardsRollsBack) {
  // k=4 m=2: seq 5 reached shards 0, 1 and 4 (partially on 5).
  std::vector<std::optional<ShardReport>> r{R(5, 4), R(5, 4), R(4, 4),
                                            R(4, 4), R(5, 4), R(4, 4, true)};
  auto d = DecideRecovery(4, 2, r);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->seq, 4u);
  EXPECT_EQ(d->keep, ec::ShardSet(0b111111));
  EXPECT_EQ(d->rolled_back, ec::ShardSet(0b110011));
  EXPECT_TRUE(d->rebuild.empty());
}

TEST(DecideRecovery, UpdateOnKShardsRollsForwardAndRebuildsTheRest) {
  // k=4 m=2: shard 2 lost, parity 5 never got its delta.
  std::vector<std::optional<ShardReport>> r{R(5, 4), R(5, 4), kLost,
                                            R(5, 4), R(5, 4), R(4, 4, true)};
  auto d = DecideRecovery(4, 2, r);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->seq, 5u);
  EXPECT_EQ(d->keep, ec::ShardSet(0b011011));
  EXPECT_EQ(d->rebuild, ec::ShardSet(0b100100));
}

TEST(DecideRecovery, CommittedSeqIsNeverRolledBack) {
  // Seq 5 committed on shard 0 (no undo below 5): only shards at 5 count.
  std::vector<std::optional<ShardReport>> r{R(5, 5), R(5, 4), R(4, 4), R(5, 4)};
  auto d = DecideRecovery(3, 1, r);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->seq, 5u);
  EXPECT_EQ(d->rebuild, ec::ShardSet(0b0100));
  // Without enough of them it is DataLoss, not a rollback past the commit.
  std::vector<std::optional<ShardReport>> r2{R(5, 5), R(5, 5), R(4, 4), kLost};
  EXPECT_EQ(DecideRecovery(3, 1, r2).status().code(), StatusCode::kDataLoss);
}

TEST(DecideRecovery, FewerThanKSurvivorsIsDataLoss) {
  std::vector<std::optional<ShardReport>> r{R(3, 3), kLost, kLost, R(3, 3), kLost};
  auto d = DecideRecovery(3, 2, r);
  EXPECT_EQ(d.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(d.status().message().find("lost: 1 2 4"), std::string_view::npos)
      << d.status().ToString();
  EXPECT_EQ(
      DecideRecovery(3, 2, std::span<const std::optional<ShardReport>>(r).first(4)).status().code(),
      StatusCode::kInvalidArgument);
}

// ---- Sequencer -------------------------------------------------------------

template <typename T>
std::vector<T> Of(const Actions& actions) {
  std::vector<T> v;
  for (const Action& a : actions) {
    if (const T* t = std::get_if<T>(&a)) v.push_back(*t);
  }
  return v;
}

UpdateRequest Req(uint64_t writer, uint64_t request, uint64_t stripe) {
  return {.writer = WriterId(writer),
          .request = request,
          .stripe = stripe,
          .range = {.offset = 1, .length = 3}};
}

Sequencer StartSeq(int k, int m, uint64_t stripes, Actions* out) {
  auto s = Sequencer::Start({.k = k, .m = m, .stripes = stripes}, 0, out);
  EXPECT_TRUE(s.ok());
  return std::move(s).value();
}

void AckAll(Sequencer& s, uint64_t stripe, Seq seq, Epoch epoch, Actions* out) {
  for (int i = 0; i < s.config().k + s.config().m; ++i) {
    ASSERT_TRUE(s.ShardApplied(stripe, i, seq, epoch, out).ok());
  }
}

TEST(Sequencer, GrantsOneUpdatePerStripeAtATime) {
  Actions a;
  Sequencer s = StartSeq(2, 1, 2, &a);
  ASSERT_EQ(Of<PersistEpoch>(a).size(), 1u);
  EXPECT_EQ(s.epoch(), 1u);
  a.clear();
  ASSERT_TRUE(s.RequestUpdate(Req(1, 10, 0), &a).ok());
  ASSERT_TRUE(s.RequestUpdate(Req(2, 20, 0), &a).ok());
  ASSERT_TRUE(s.RequestUpdate(Req(3, 30, 1), &a).ok());
  auto g = Of<GrantUpdate>(a);
  ASSERT_EQ(g.size(), 2u) << "writer 2 waits for writer 1's update of stripe 0";
  EXPECT_EQ(g[0].writer, WriterId(1));
  EXPECT_EQ(g[0].seq, 1u);
  EXPECT_EQ(g[0].epoch, 1u);
  EXPECT_EQ(g[1].writer, WriterId(3));
  EXPECT_EQ(g[1].stripe, 1u);
  EXPECT_EQ(g[1].seq, 1u);
  a.clear();
  AckAll(s, 0, 1, 1, &a);
  ASSERT_EQ(Of<UpdateCommitted>(a).size(), 1u);
  EXPECT_EQ(Of<UpdateCommitted>(a)[0].request, 10u);
  ASSERT_EQ(Of<CommitShards>(a).size(), 1u);
  g = Of<GrantUpdate>(a);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].writer, WriterId(2));
  EXPECT_EQ(g[0].seq, 2u);
  EXPECT_FALSE(s.Idle());
}

TEST(Sequencer, DuplicateRequestIsQueuedOnce) {
  Actions a;
  Sequencer s = StartSeq(2, 1, 1, &a);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(s.RequestUpdate(Req(1, 7, 0), &a).ok());
    ASSERT_TRUE(s.RequestUpdate(Req(2, 7, 0), &a).ok());
  }
  ASSERT_EQ(Of<GrantUpdate>(a).size(), 1u);
  a.clear();
  AckAll(s, 0, 1, 1, &a);
  ASSERT_EQ(Of<GrantUpdate>(a).size(), 1u);
  EXPECT_EQ(Of<GrantUpdate>(a)[0].writer, WriterId(2));
  a.clear();
  AckAll(s, 0, 2, 1, &a);
  EXPECT_TRUE(Of<GrantUpdate>(a).empty());
  EXPECT_TRUE(s.Idle());
}

TEST(Sequencer, CommitsOnlyWhenEveryShardApplied) {
  Actions a;
  Sequencer s = StartSeq(3, 2, 1, &a);
  ASSERT_TRUE(s.RequestUpdate(Req(1, 1, 0), &a).ok());
  a.clear();
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(s.ShardApplied(0, i, 1, 1, &a).ok());
    ASSERT_TRUE(s.ShardApplied(0, i, 1, 1, &a).ok());  // duplicate
  }
  ASSERT_TRUE(s.ShardApplied(0, 4, 1, 0, &a).ok());  // stale epoch
  ASSERT_TRUE(s.ShardApplied(0, 4, 2, 1, &a).ok());  // wrong seq
  EXPECT_TRUE(a.empty());
  ASSERT_TRUE(s.ShardApplied(0, 4, 1, 1, &a).ok());
  ASSERT_EQ(Of<UpdateCommitted>(a).size(), 1u);
  EXPECT_EQ(s.stripe_seq(0), 1u);
  EXPECT_TRUE(s.Idle());
}

TEST(Sequencer, RecoverStartsAboveTheLastEpochAndFencesFirst) {
  Actions a;
  auto rs = Sequencer::Recover({.k = 2, .m = 1, .stripes = 1}, 7, {}, &a);
  ASSERT_TRUE(rs.ok());
  Sequencer s = std::move(rs).value();
  EXPECT_EQ(s.epoch(), 8u);
  ASSERT_FALSE(a.empty());
  ASSERT_TRUE(std::holds_alternative<PersistEpoch>(a[0])) << "durable before any use";
  EXPECT_EQ(std::get<PersistEpoch>(a[0]).epoch, 8u);
  auto f = Of<FenceShard>(a);
  ASSERT_EQ(f.size(), 3u);
  for (auto& x : f) EXPECT_EQ(x.epoch, 8u);
  a.clear();
  ASSERT_TRUE(s.RequestUpdate(Req(1, 1, 0), &a).ok());
  EXPECT_TRUE(Of<GrantUpdate>(a).empty()) << "no grant before the stripe is resolved";
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.ShardReported(0, i, 8, *R(3, 3), &a).ok());
  auto rb = Of<RollBackShard>(a);
  ASSERT_EQ(rb.size(), 3u);
  EXPECT_EQ(rb[0].seq, 3u);
  a.clear();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.ShardRolledBack(0, i, 8, &a).ok());
  ASSERT_EQ(Of<StripeResolved>(a).size(), 1u);
  EXPECT_EQ(Of<StripeResolved>(a)[0].seq, 3u);
  ASSERT_EQ(Of<CommitShards>(a).size(), 1u);
  auto g = Of<GrantUpdate>(a);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].seq, 4u) << "continues after the highest seq the shards hold";
  EXPECT_EQ(g[0].epoch, 9u) << "not in the round's epoch";
}

TEST(Sequencer, WriterFailureRollsBackAnUpdateThatReachedFewerThanK) {
  Actions a;
  Sequencer s = StartSeq(2, 1, 1, &a);
  ASSERT_TRUE(s.RequestUpdate(Req(1, 1, 0), &a).ok());
  ASSERT_TRUE(s.RequestUpdate(Req(1, 2, 0), &a).ok());  // dropped with its writer
  a.clear();
  ASSERT_TRUE(s.WriterFailed(WriterId(1), &a).ok());
  EXPECT_EQ(s.epoch(), 2u);
  ASSERT_EQ(Of<PersistEpoch>(a).size(), 1u);
  ASSERT_EQ(Of<FenceShard>(a).size(), 3u);
  a.clear();
  ASSERT_TRUE(s.ShardReported(0, 0, 2, *R(1, 0), &a).ok());
  ASSERT_TRUE(s.ShardReported(0, 1, 2, *R(0, 0), &a).ok());
  ASSERT_TRUE(s.ShardReported(0, 2, 2, *R(0, 0), &a).ok());
  auto rb = Of<RollBackShard>(a);
  ASSERT_EQ(rb.size(), 3u);
  for (auto& x : rb) EXPECT_EQ(x.seq, 0u);
  a.clear();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.ShardRolledBack(0, i, 2, &a).ok());
  auto res = Of<StripeResolved>(a);
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].seq, 0u);
  EXPECT_EQ(res[0].rolled_back, ec::ShardSet(1));
  auto ab = Of<UpdateAborted>(a);
  ASSERT_EQ(ab.size(), 1u);
  EXPECT_EQ(ab[0].seq, 1u);
  EXPECT_EQ(ab[0].status.code(), StatusCode::kAborted);
  EXPECT_TRUE(s.Idle());
  a.clear();
  ASSERT_TRUE(s.RequestUpdate(Req(2, 1, 0), &a).ok());
  auto g = Of<GrantUpdate>(a);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].seq, 1u) << "the rolled-back seq is reused ...";
  EXPECT_EQ(g[0].epoch, 3u) << "... under an epoch newer than the round's";
  ASSERT_EQ(Of<PersistEpoch>(a).size(), 1u);
  EXPECT_EQ(Of<PersistEpoch>(a)[0].epoch, 3u);
  ASSERT_TRUE(std::holds_alternative<PersistEpoch>(a[0])) << "persisted before the grant";
}

TEST(Sequencer, ShardFailureRollsForwardAndRebuilds) {
  Actions a;
  Sequencer s = StartSeq(2, 1, 1, &a);
  ASSERT_TRUE(s.RequestUpdate(Req(1, 1, 0), &a).ok());
  ASSERT_TRUE(s.ShardApplied(0, 0, 1, 1, &a).ok());
  ASSERT_TRUE(s.ShardApplied(0, 1, 1, 1, &a).ok());
  a.clear();
  const ShardSlot dead{0, 2};
  ASSERT_TRUE(s.ShardsFailed({&dead, 1}, &a).ok());
  ASSERT_EQ(Of<FenceShard>(a).size(), 2u) << "the lost shard is not asked";
  a.clear();
  ASSERT_TRUE(s.ShardReported(0, 0, 2, *R(1, 0), &a).ok());
  ASSERT_TRUE(s.ShardReported(0, 1, 2, *R(1, 0), &a).ok());
  ASSERT_TRUE(s.ShardRolledBack(0, 0, 2, &a).ok());
  ASSERT_TRUE(s.ShardRolledBack(0, 1, 2, &a).ok());
  auto rebuild = Of<RebuildShard>(a);
  ASSERT_EQ(rebuild.size(), 1u);
  EXPECT_EQ(rebuild[0].slot, dead);
  EXPECT_EQ(rebuild[0].seq, 1u);
  EXPECT_EQ(rebuild[0].sources, ec::ShardSet(0b011));
  EXPECT_TRUE(Of<UpdateCommitted>(a).empty()) << "not before the rebuild is in";
  a.clear();
  ASSERT_TRUE(s.ShardRebuilt(0, 2, 2, &a).ok());
  ASSERT_EQ(Of<UpdateCommitted>(a).size(), 1u);
  EXPECT_EQ(Of<StripeResolved>(a)[0].rebuilt, ec::ShardSet(0b100));
  EXPECT_EQ(s.stripe_seq(0), 1u);
}

TEST(Sequencer, SupersededRoundAnswersAreIgnored) {
  Actions a;
  Sequencer s = StartSeq(2, 1, 1, &a);
  ASSERT_TRUE(s.RequestUpdate(Req(1, 1, 0), &a).ok());
  ASSERT_TRUE(s.UpdateTimedOut(0, 1, &a).ok());
  EXPECT_EQ(s.epoch(), 2u);
  const ShardSlot dead{0, 1};
  ASSERT_TRUE(s.ShardsFailed({&dead, 1}, &a).ok());
  EXPECT_EQ(s.epoch(), 3u);
  a.clear();
  for (int i : {0, 2}) ASSERT_TRUE(s.ShardReported(0, i, 2, *R(0, 0), &a).ok());
  EXPECT_TRUE(a.empty()) << "reports of the epoch-2 round";
  for (int i : {0, 2}) ASSERT_TRUE(s.ShardReported(0, i, 3, *R(0, 0), &a).ok());
  EXPECT_EQ(Of<RollBackShard>(a).size(), 2u);
  EXPECT_TRUE(s.InRecovery(0));
}

TEST(Sequencer, StripeBeyondRepairIsDataLoss) {
  Actions a;
  Sequencer s = StartSeq(2, 1, 1, &a);
  ASSERT_TRUE(s.RequestUpdate(Req(1, 1, 0), &a).ok());
  a.clear();
  const ShardSlot dead[] = {{0, 0}, {0, 1}};
  ASSERT_TRUE(s.ShardsFailed(dead, &a).ok());
  ASSERT_TRUE(s.ShardReported(0, 2, s.epoch(), *R(0, 0), &a).ok());
  auto res = Of<StripeResolved>(a);
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].status.code(), StatusCode::kDataLoss);
  EXPECT_NE(res[0].status.message().find("stripe 0"), std::string_view::npos);
  ASSERT_EQ(Of<UpdateAborted>(a).size(), 1u);
  EXPECT_EQ(s.RequestUpdate(Req(2, 1, 0), &a).code(), StatusCode::kDataLoss);
  EXPECT_TRUE(s.Idle());
}

TEST(Sequencer, MalformedEventsChangeNothing) {
  Actions a;
  Sequencer s = StartSeq(2, 1, 1, &a);
  a.clear();
  EXPECT_EQ(s.RequestUpdate(Req(1, 1, 1), &a).code(), StatusCode::kInvalidArgument);
  UpdateRequest empty = Req(1, 1, 0);
  empty.range.length = 0;
  EXPECT_EQ(s.RequestUpdate(empty, &a).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.ShardApplied(0, 3, 1, 1, &a).code(), StatusCode::kInvalidArgument);
  const ShardSlot bad[] = {{0, 0}, {0, 9}};
  EXPECT_EQ(s.ShardsFailed(bad, &a).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(s.epoch(), 1u);
  EXPECT_FALSE(s.InRecovery(0));
  EXPECT_EQ(Sequencer::Start({.k = 0, .m = 1, .stripes = 1}, 0, &a).status().code(),
            StatusCode::kInvalidArgument);
}

// ---- One stripe end to end, in a fixed order ---------------------------------

// Writers A and B overlap, C is disjoint from both; the sequencer orders
// them A, B, C. Every shard applies them in that order whatever order the
// messages of one update arrive in, and the stripe ends as "A then B then C".
TEST(PswEndToEnd, ConcurrentWritersGetTheSequencersOrderOnEveryShard) {
  auto rng = fern::testing::TestRng();
  const int k = 3, m = 2, n = 5;
  const uint64_t len = 61;
  auto coder = MakeCoder(k, m);
  ASSERT_NE(coder, nullptr);
  std::vector<Bytes> shards(n);
  for (int i = 0; i < k; ++i) shards[i] = RandomBytes(rng, len);
  {
    std::vector<Bytes> data(shards.begin(), shards.begin() + k);
    std::vector<Bytes> parity = Encode(*coder, data);
    for (int j = 0; j < m; ++j) shards[k + j] = parity[j];
  }
  Bytes expect;
  for (int i = 0; i < k; ++i) expect.insert(expect.end(), shards[i].begin(), shards[i].end());
  std::vector<ShardUpdateState> st;
  for (int i = 0; i < k; ++i) st.push_back(DataState(k, i, shards[i]));
  for (int j = k; j < n; ++j) st.push_back(ParityState(*coder, j, shards[j]));

  Actions a;
  Sequencer seq = StartSeq(k, m, 1, &a);
  struct W {
    uint64_t id;
    UpdateRange range;
    Bytes bytes;
  };
  std::vector<W> writers{{1, {50, 40}, {}}, {2, {70, 60}, {}}, {3, {150, 20}, {}}};
  for (auto& w : writers) {
    w.bytes = RandomBytes(rng, w.range.length);
    ASSERT_TRUE(seq.RequestUpdate({WriterId(w.id), 1, 0, w.range}, &a).ok());
  }
  for (size_t turn = 0; turn < writers.size(); ++turn) {
    auto grants = Of<GrantUpdate>(a);
    ASSERT_EQ(grants.size(), 1u);
    const GrantUpdate g = grants[0];
    a.clear();
    const W& w = writers[g.writer.value - 1];
    EXPECT_EQ(g.writer.value, turn + 1) << "granted in request order";
    auto pieces = SplitStripeRange(k, len, w.range);
    ASSERT_TRUE(pieces.ok());
    std::vector<ShardApplied> forwarded;
    for (int i = k - 1; i >= 0; --i) {  // data shards in reverse order
      Bytes b;
      uint64_t off = 0;
      for (const auto& p : *pieces) {
        if (p.shard != i) continue;
        off = p.shard_offset;
        b.assign(w.bytes.begin() + p.range_offset, w.bytes.begin() + p.range_offset + p.length);
      }
      std::vector<ShardApplied> out;
      ASSERT_TRUE(
          st[i].ApplyData(Upd(g.seq, g.epoch, DataMask(*pieces).bits(), off, b), &out).ok());
      for (auto& x : out) {
        ASSERT_TRUE(seq.ShardApplied(0, i, x.seq, x.epoch, &a).ok());
        if (x.forward) forwarded.push_back(x);
      }
    }
    std::reverse(forwarded.begin(), forwarded.end());
    for (int j = k; j < n; ++j) {
      std::vector<ShardApplied> out;
      for (const auto& f : forwarded) ASSERT_TRUE(st[j].ApplyParity(Piece(f), &out).ok());
      ASSERT_EQ(out.size(), 1u);
      ASSERT_TRUE(seq.ShardApplied(0, j, out[0].seq, out[0].epoch, &a).ok());
    }
    ASSERT_EQ(Of<UpdateCommitted>(a).size(), 1u);
    const CommitShards c = Of<CommitShards>(a)[0];
    for (auto& s : st) ASSERT_TRUE(s.Commit(c.seq, c.epoch).ok());
    std::copy(w.bytes.begin(), w.bytes.end(), expect.begin() + w.range.offset);
  }
  for (int i = 0; i < k; ++i) {
    EXPECT_TRUE(std::equal(shards[i].begin(), shards[i].end(), expect.begin() + i * len))
        << "data shard " << i;
  }
  std::vector<Bytes> data(shards.begin(), shards.begin() + k);
  std::vector<Bytes> parity = Encode(*coder, data);
  for (int j = 0; j < m; ++j) EXPECT_EQ(parity[j], shards[k + j]) << "parity shard " << k + j;
  for (auto& s : st) EXPECT_FALSE(s.report().has_undo);
  EXPECT_TRUE(seq.Idle());
}

// ---- The model: a seeded in-process cluster --------------------------------

enum class Mutation {
  kNone,
  kWrongParityCoefficient,  // one parity shard multiplies one data shard's delta wrongly
  kDeltaNotXored,           // data shards forward the new bytes instead of old ^ new
  kRollbackForgetsBytes,    // rollback moves the header back but leaves the bytes
  kEarlyParityAck,          // parity shards acknowledge a delta before applying it
  kReportUndoFloor,         // recovery reads the undo floor as the applied seq
};

const char* MutationName(Mutation m) {
  switch (m) {
    case Mutation::kNone:
      return "none";
    case Mutation::kWrongParityCoefficient:
      return "wrong parity coefficient";
    case Mutation::kDeltaNotXored:
      return "delta not xored";
    case Mutation::kRollbackForgetsBytes:
      return "rollback forgets bytes";
    case Mutation::kEarlyParityAck:
      return "early parity ack";
    case Mutation::kReportUndoFloor:
      return "report undo floor as applied";
  }
  return "?";
}

struct ModelStats {
  uint64_t cases = 0, steps = 0, messages = 0, duplicates = 0, commits = 0, rounds = 0,
           rolled_back = 0, rolled_forward = 0, rebuilt = 0, fenced = 0, crashes = 0,
           sequencer_crashes = 0, quiescent_checks = 0, overlapping = 0;
  void Add(const ModelStats& o) {
    cases += o.cases, steps += o.steps, messages += o.messages, duplicates += o.duplicates;
    commits += o.commits, rounds += o.rounds, rolled_back += o.rolled_back;
    rolled_forward += o.rolled_forward, rebuilt += o.rebuilt, fenced += o.fenced;
    crashes += o.crashes, sequencer_crashes += o.sequencer_crashes;
    quiescent_checks += o.quiescent_checks, overlapping += o.overlapping;
  }
  std::string ToString() const {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "%llu cases, %llu steps, %llu messages (%llu duplicated), %llu commits, "
                  "%llu grants overlapping another writer's pending range, %llu recovery rounds: "
                  "%llu rollbacks and %llu roll-forwards, %llu shards rebuilt, %llu stale "
                  "messages fenced, %llu crashes (%llu of the sequencer), %llu quiescent checks",
                  (unsigned long long)cases, (unsigned long long)steps,
                  (unsigned long long)messages, (unsigned long long)duplicates,
                  (unsigned long long)commits, (unsigned long long)overlapping,
                  (unsigned long long)rounds, (unsigned long long)rolled_back,
                  (unsigned long long)rolled_forward, (unsigned long long)rebuilt,
                  (unsigned long long)fenced, (unsigned long long)crashes,
                  (unsigned long long)sequencer_crashes, (unsigned long long)quiescent_checks);
    return buf;
  }
};

// Messages on the simulated network. Payloads are owned copies: a message
// may be delivered long after its sender changed or died.
struct ReqMsg {
  UpdateRequest r;
};
struct GrantMsg {
  GrantUpdate g;
};
struct OutcomeMsg {
  WriterId writer;
  uint64_t request = 0;
  bool committed = false;
};
struct DataMsg {
  ShardSlot slot;
  Seq seq = 0;
  Epoch epoch = 0;
  ec::ShardSet mask;
  uint64_t offset = 0;
  Bytes bytes;
};
struct DeltaMsg {
  ShardSlot slot;
  Seq seq = 0;
  Epoch epoch = 0;
  int data_index = 0;
  ec::ShardSet mask;
  uint64_t offset = 0;
  Bytes delta;
};
struct CommitMsg {
  ShardSlot slot;
  Seq seq = 0;
  Epoch epoch = 0;
};
struct FenceMsg {
  ShardSlot slot;
  Epoch epoch = 0;
};
struct RollBackMsg {
  ShardSlot slot;
  Epoch epoch = 0;
  Seq seq = 0;
};
struct RebuildMsg {
  RebuildShard r;
};
struct AckMsg {
  ShardSlot slot;
  Seq seq = 0;
  Epoch epoch = 0;
};
struct ReportMsg {
  ShardSlot slot;
  Epoch epoch = 0;
  ShardReport report;
};
struct RolledBackMsg {
  ShardSlot slot;
  Epoch epoch = 0;
};
struct RebuiltMsg {
  ShardSlot slot;
  Epoch epoch = 0;
};
using Body = std::variant<ReqMsg, GrantMsg, OutcomeMsg, DataMsg, DeltaMsg, CommitMsg, FenceMsg,
                          RollBackMsg, RebuildMsg, AckMsg, ReportMsg, RolledBackMsg, RebuiltMsg>;

enum class Party { kSequencer, kWriter, kShard };
struct Msg {
  Party from = Party::kSequencer;
  uint64_t from_id = 0;  // sequencer incarnation, writer id, or stripe * n + shard
  Body body;
};

std::string Describe(const Body& body) {
  char buf[200];
  auto slot = [](const ShardSlot& s) {
    return std::to_string(s.stripe) + "/" + std::to_string(s.shard);
  };
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, ReqMsg>) {
          std::snprintf(buf, sizeof buf, "request w%llu#%llu stripe %llu [%llu,+%llu)",
                        (unsigned long long)m.r.writer.value, (unsigned long long)m.r.request,
                        (unsigned long long)m.r.stripe, (unsigned long long)m.r.range.offset,
                        (unsigned long long)m.r.range.length);
        } else if constexpr (std::is_same_v<T, GrantMsg>) {
          std::snprintf(buf, sizeof buf, "grant w%llu#%llu stripe %llu seq %llu e%llu",
                        (unsigned long long)m.g.writer.value, (unsigned long long)m.g.request,
                        (unsigned long long)m.g.stripe, (unsigned long long)m.g.seq,
                        (unsigned long long)m.g.epoch);
        } else if constexpr (std::is_same_v<T, OutcomeMsg>) {
          std::snprintf(buf, sizeof buf, "outcome w%llu#%llu %s",
                        (unsigned long long)m.writer.value, (unsigned long long)m.request,
                        m.committed ? "committed" : "aborted");
        } else if constexpr (std::is_same_v<T, DataMsg>) {
          std::snprintf(buf, sizeof buf, "data %s seq %llu e%llu [%llu,+%zu)", slot(m.slot).c_str(),
                        (unsigned long long)m.seq, (unsigned long long)m.epoch,
                        (unsigned long long)m.offset, m.bytes.size());
        } else if constexpr (std::is_same_v<T, DeltaMsg>) {
          std::snprintf(buf, sizeof buf, "delta %s seq %llu e%llu from %d [%llu,+%zu)",
                        slot(m.slot).c_str(), (unsigned long long)m.seq,
                        (unsigned long long)m.epoch, m.data_index, (unsigned long long)m.offset,
                        m.delta.size());
        } else if constexpr (std::is_same_v<T, CommitMsg>) {
          std::snprintf(buf, sizeof buf, "commit %s seq %llu e%llu", slot(m.slot).c_str(),
                        (unsigned long long)m.seq, (unsigned long long)m.epoch);
        } else if constexpr (std::is_same_v<T, FenceMsg>) {
          std::snprintf(buf, sizeof buf, "fence %s e%llu", slot(m.slot).c_str(),
                        (unsigned long long)m.epoch);
        } else if constexpr (std::is_same_v<T, RollBackMsg>) {
          std::snprintf(buf, sizeof buf, "rollback %s to seq %llu e%llu", slot(m.slot).c_str(),
                        (unsigned long long)m.seq, (unsigned long long)m.epoch);
        } else if constexpr (std::is_same_v<T, RebuildMsg>) {
          std::snprintf(buf, sizeof buf, "rebuild %s at seq %llu e%llu from %x",
                        slot(m.r.slot).c_str(), (unsigned long long)m.r.seq,
                        (unsigned long long)m.r.epoch, m.r.sources.bits());
        } else if constexpr (std::is_same_v<T, AckMsg>) {
          std::snprintf(buf, sizeof buf, "ack %s seq %llu e%llu", slot(m.slot).c_str(),
                        (unsigned long long)m.seq, (unsigned long long)m.epoch);
        } else if constexpr (std::is_same_v<T, ReportMsg>) {
          std::snprintf(
              buf, sizeof buf, "report %s e%llu: applied %llu floor %llu%s", slot(m.slot).c_str(),
              (unsigned long long)m.epoch, (unsigned long long)m.report.applied_seq,
              (unsigned long long)m.report.undo_floor_seq, m.report.partial ? " partial" : "");
        } else if constexpr (std::is_same_v<T, RolledBackMsg>) {
          std::snprintf(buf, sizeof buf, "rolled back %s e%llu", slot(m.slot).c_str(),
                        (unsigned long long)m.epoch);
        } else {
          std::snprintf(buf, sizeof buf, "rebuilt %s e%llu", slot(m.slot).c_str(),
                        (unsigned long long)m.epoch);
        }
      },
      body);
  return buf;
}

// One file of `stripes` stripes on k+m shard slots each, its sequencer and
// its writers; everything a real deployment would spread over nodes, driven
// by one seeded generator so a case replays exactly.
class Cluster {
 public:
  Cluster(const ec::ErasureCoder& coder, uint64_t seed, Mutation mutation, bool trace)
      : coder_(coder),
        k_(coder.k()),
        m_(coder.m()),
        n_(k_ + m_),
        rng_(seed),
        mutation_(mutation),
        trace_(trace) {
    shard_len_ = 64 + Uniform(194);  // 64..257: odd, unaligned lengths too
    stripes_ = 1 + Uniform(3);
    updates_left_ = 4 + Uniform(24);
    crashes_left_ = Uniform(4) == 0 ? 4 + Uniform(8) : Uniform(4);
    writer_target_ = 2 + Uniform(3);
  }

  bool Run() {
    Setup();
    while (failure_.empty()) {
      if (++stats_.steps > kMaxSteps) {
        Fail("no progress after " + std::to_string(kMaxSteps) + " steps");
        break;
      }
      CheckStep();
      if (!failure_.empty()) break;
      const bool quiet = Quiescent();
      if (quiet) {
        CheckQuiescent();
        if (updates_left_ == 0 || !failure_.empty()) break;
        lull_ = false;
      }
      if (!Step(quiet)) break;
    }
    stats_.cases = 1;
    return failure_.empty();
  }

  const std::string& failure() const { return failure_; }
  const std::vector<std::string>& trace() const { return trace_log_; }
  const ModelStats& stats() const { return stats_; }
  // A digest of every shard's bytes and header, for the replay check.
  uint64_t Digest() const {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    for (const auto& stripe : slots_) {
      for (const auto& s : stripe) {
        for (uint8_t b : s.bytes) mix(b);
        if (s.state) mix(s.state->header().applied_seq * 31 + s.state->header().epoch);
      }
    }
    mix(stats_.steps);
    return h;
  }

 private:
  static constexpr uint64_t kMaxSteps = 200000;

  struct Slot {
    bool alive = true;
    Bytes bytes;
    std::optional<ShardUpdateState> state;
  };
  struct Pending {
    uint64_t stripe = 0;
    UpdateRange range;
    bool granted = false;
  };
  struct Writer {
    WriterId id;
    bool alive = true;
    std::map<uint64_t, Pending> pending;
  };
  struct Grant {
    Epoch epoch = 0;
    uint64_t writer = 0;
    uint64_t request = 0;
  };

  uint64_t Uniform(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  void Trace(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    trace_log_.push_back("step " + std::to_string(stats_.steps) + ": " + buf);
  }
#define PSW_TRACE(...)              \
  do {                              \
    if (trace_) Trace(__VA_ARGS__); \
  } while (0)

  void Fail(const std::string& why) {
    if (!failure_.empty()) return;
    failure_ = "step " + std::to_string(stats_.steps) + ": " + why;
    PSW_TRACE("FAIL %s", why.c_str());
  }

  uint64_t SlotId(const ShardSlot& s) const { return s.stripe * n_ + s.shard; }
  // Every change to a stripe's shards goes through here, so the per-step
  // check need only look at the stripes a step touched.
  Slot& At(const ShardSlot& s) {
    dirty_[s.stripe] = 1;
    return slots_[s.stripe][s.shard];
  }

  ShardUpdateState MakeState(const ShardSlot& s, const ShardHeader& h) {
    std::span<uint8_t> bytes(At(s).bytes);
    if (s.shard < k_) return std::move(ShardUpdateState::Data(k_, s.shard, bytes, h)).value();
    std::vector<uint8_t> coefs = Row(coder_, s.shard);
    if (mutation_ == Mutation::kWrongParityCoefficient && s.shard == n_ - 1) coefs[k_ - 1] ^= 1;
    return std::move(ShardUpdateState::Parity(k_, s.shard, coefs, bytes, h)).value();
  }

  void Setup() {
    slots_.resize(stripes_);
    for (auto& stripe : slots_) stripe.resize(n_);
    ref_.resize(stripes_);
    ref_seq_.assign(stripes_, 0);
    down_.assign(stripes_, ec::ShardSet());
    dirty_.assign(stripes_, 1);
    for (uint64_t st = 0; st < stripes_; ++st) {
      std::vector<Bytes> data(k_);
      for (int i = 0; i < k_; ++i) data[i] = RandomBytes(rng_, shard_len_);
      std::vector<Bytes> parity = Encode(coder_, data);
      ref_[st].clear();
      for (int i = 0; i < k_; ++i) {
        ref_[st].insert(ref_[st].end(), data[i].begin(), data[i].end());
        slots_[st][i].bytes = data[i];
      }
      for (int j = 0; j < m_; ++j) slots_[st][k_ + j].bytes = parity[j];
      for (int i = 0; i < n_; ++i) {
        const ShardSlot s{st, i};
        At(s).state.emplace(MakeState(s, {}));
      }
    }
    for (int w = 0; w < writer_target_; ++w) AddWriter();
    Actions a;
    auto s = Sequencer::Start({.k = k_, .m = m_, .stripes = stripes_}, 0, &a);
    if (!s.ok()) return Fail("start sequencer: " + s.status().ToString());
    seq_.emplace(std::move(s).value());
    ++incarnation_;
    Process(a);
  }

  void AddWriter() {
    Writer w;
    w.id = WriterId(++next_writer_);
    writers_.push_back(std::move(w));
  }

  void Send(Party from, uint64_t from_id, Body body) {
    ++stats_.messages;
    network_.push_back(std::make_unique<Msg>(Msg{from, from_id, std::move(body)}));
  }

  // ---- the sequencer's actions, routed --------------------------------------

  void Process(const Actions& actions) {
    for (const Action& a : actions) {
      if (!failure_.empty()) return;
      std::visit([&](const auto& x) { Act(x); }, a);
    }
  }
  void Act(const PersistEpoch& p) {
    if (p.epoch <= durable_epoch_) {
      return Fail("epoch " + std::to_string(p.epoch) + " persisted after " +
                  std::to_string(durable_epoch_));
    }
    durable_epoch_ = p.epoch;
  }
  void Act(const GrantUpdate& g) {
    grants_[{g.stripe, g.seq}] = Grant{g.epoch, g.writer.value, g.request};
    // Did another writer's update of an overlapping range wait for this one?
    for (const Writer& w : writers_) {
      for (const auto& [id, p] : w.pending) {
        if (w.id == g.writer || p.stripe != g.stripe) continue;
        if (p.range.offset < g.range.offset + g.range.length &&
            g.range.offset < p.range.offset + p.range.length) {
          ++stats_.overlapping;
        }
      }
    }
    Send(Party::kSequencer, incarnation_, GrantMsg{g});
  }
  void Act(const UpdateCommitted& c) {
    ++stats_.commits;
    AdvanceRef(c.stripe, c.seq);
    Send(Party::kSequencer, incarnation_, OutcomeMsg{c.writer, c.request, true});
  }
  void Act(const UpdateAborted& a) {
    Send(Party::kSequencer, incarnation_, OutcomeMsg{a.writer, a.request, false});
  }
  void Act(const CommitShards& c) {
    for (int i = 0; i < n_; ++i) {
      Send(Party::kSequencer, incarnation_, CommitMsg{{c.stripe, i}, c.seq, c.epoch});
    }
  }
  void Act(const FenceShard& f) {
    Send(Party::kSequencer, incarnation_, FenceMsg{f.slot, f.epoch});
  }
  void Act(const RollBackShard& r) {
    Send(Party::kSequencer, incarnation_, RollBackMsg{r.slot, r.epoch, r.seq});
  }
  void Act(const RebuildShard& r) { Send(Party::kSequencer, incarnation_, RebuildMsg{r}); }
  void Act(const StripeResolved& r) {
    ++stats_.rounds;
    if (!r.status.ok()) {
      return Fail("stripe " + std::to_string(r.stripe) + " lost with at most m=" +
                  std::to_string(m_) + " shards down: " + r.status.ToString());
    }
    if (!r.rolled_back.empty()) ++stats_.rolled_back;
    if (r.seq > ref_seq_[r.stripe]) ++stats_.rolled_forward;
    stats_.rebuilt += r.rebuilt.size();
    for (int i = 0; i < n_; ++i) {
      if (!slots_[r.stripe][i].alive) {
        return Fail("stripe " + std::to_string(r.stripe) + " resolved while shard " +
                    std::to_string(i) + " is dead");
      }
    }
    down_[r.stripe] = ec::ShardSet();
    dirty_[r.stripe] = 1;
    AdvanceRef(r.stripe, r.seq);
  }

  // The reference model: the stripe's data after the committed updates, in
  // the sequencer's order. A resolved seq one above it is the update that
  // recovery kept: the newest grant of that seq (older grants of the same
  // seq were rolled back on every shard before it was granted again).
  void AdvanceRef(uint64_t stripe, Seq seq) {
    Seq& ref = ref_seq_[stripe];
    if (seq == ref) return;
    dirty_[stripe] = 1;
    if (seq < ref) {
      return Fail("stripe " + std::to_string(stripe) + " went back to seq " + std::to_string(seq) +
                  " though seq " + std::to_string(ref) + " was committed");
    }
    if (seq != ref + 1) {
      return Fail("stripe " + std::to_string(stripe) + " jumped from seq " + std::to_string(ref) +
                  " to " + std::to_string(seq));
    }
    auto g = grants_.find({stripe, seq});
    if (g == grants_.end()) return Fail("no grant for seq " + std::to_string(seq));
    const auto& u = updates_.at({g->second.writer, g->second.request});
    std::copy(u.bytes.begin(), u.bytes.end(), ref_[stripe].begin() + u.range.offset);
    ref = seq;
  }

  // ---- delivery --------------------------------------------------------------

  void Deliver() {
    const size_t i = Uniform(network_.size());
    std::unique_ptr<Msg> msg = std::move(network_[i]);
    network_[i] = std::move(network_.back());
    network_.pop_back();
    if (Uniform(20) == 0) {  // the network delivers this one twice
      ++stats_.duplicates;
      network_.push_back(std::make_unique<Msg>(*msg));
    }
    PSW_TRACE("deliver %s", Describe(msg->body).c_str());
    std::visit([&](const auto& b) { On(b); }, msg->body);
  }

  Writer* FindWriter(WriterId id) {
    for (Writer& w : writers_) {
      if (w.id == id) return w.alive ? &w : nullptr;
    }
    return nullptr;
  }

  // Refusals the protocol expects (fencing) are counted; any other error
  // from a state machine is a failure of the case.
  bool Check(const Status& st, const char* what) {
    if (st.ok()) return true;
    if (st.code() == StatusCode::kAborted) {
      ++stats_.fenced;
      PSW_TRACE("  refused: %s", std::string(st.message()).c_str());
      return false;
    }
    Fail(std::string(what) + ": " + st.ToString());
    return false;
  }

  template <typename F>
  void ToSequencer(F&& f) {
    if (!seq_) return;  // nobody listens: the message is lost
    Actions a;
    Status st = f(*seq_, &a);
    if (!st.ok()) return Fail("sequencer: " + st.ToString());
    Process(a);
  }

  void On(const ReqMsg& m) {
    if (!seq_) {
      // The writer's call fails (no sequencer); it gives the update up.
      if (Writer* w = FindWriter(m.r.writer)) w->pending.erase(m.r.request);
      return;
    }
    ToSequencer([&](Sequencer& s, Actions* a) { return s.RequestUpdate(m.r, a); });
  }
  void On(const GrantMsg& m) {
    Writer* w = FindWriter(m.g.writer);
    if (w == nullptr) return;
    auto p = w->pending.find(m.g.request);
    if (p == w->pending.end() || p->second.granted) return;  // given up: its deadline fires
    p->second.granted = true;
    const auto& u = updates_.at({m.g.writer.value, m.g.request});
    auto pieces = SplitStripeRange(k_, shard_len_, u.range);
    if (!pieces.ok()) return Fail("split: " + pieces.status().ToString());
    const ec::ShardSet mask = DataMask(*pieces);
    for (int i = 0; i < k_; ++i) {
      DataMsg d{{m.g.stripe, i}, m.g.seq, m.g.epoch, mask, 0, {}};
      for (const UpdatePiece& piece : *pieces) {
        if (piece.shard != i) continue;
        d.offset = piece.shard_offset;
        d.bytes.assign(u.bytes.begin() + piece.range_offset,
                       u.bytes.begin() + piece.range_offset + piece.length);
      }
      Send(Party::kWriter, w->id.value, std::move(d));
    }
  }
  void On(const OutcomeMsg& m) {
    if (Writer* w = FindWriter(m.writer)) w->pending.erase(m.request);
  }
  void AfterApplied(const ShardSlot& slot, std::vector<ShardApplied>& out, const Bytes* new_bytes) {
    for (ShardApplied& a : out) {
      if (!(mutation_ == Mutation::kEarlyParityAck && slot.shard >= k_)) {
        Send(Party::kShard, SlotId(slot), AckMsg{slot, a.seq, a.epoch});
      }
      if (!a.forward) continue;
      if (mutation_ == Mutation::kDeltaNotXored && new_bytes &&
          new_bytes->size() == a.delta.size()) {
        a.delta = *new_bytes;
      }
      for (int j = k_; j < n_; ++j) {
        Send(Party::kShard, SlotId(slot),
             DeltaMsg{
                 {slot.stripe, j}, a.seq, a.epoch, a.data_index, a.data_mask, a.offset, a.delta});
      }
    }
  }
  void On(const DataMsg& m) {
    Slot& s = At(m.slot);
    if (!s.alive) return;
    std::vector<ShardApplied> out;
    if (!Check(s.state->ApplyData({m.seq, m.epoch, m.mask, m.offset, m.bytes}, &out), "data"))
      return;
    AfterApplied(m.slot, out, &m.bytes);
  }
  void On(const DeltaMsg& m) {
    Slot& s = At(m.slot);
    if (!s.alive) return;
    if (mutation_ == Mutation::kEarlyParityAck) {
      Send(Party::kShard, SlotId(m.slot), AckMsg{m.slot, m.seq, m.epoch});
    }
    std::vector<ShardApplied> out;
    if (!Check(
            s.state->ApplyParity({m.seq, m.epoch, m.data_index, m.mask, m.offset, m.delta}, &out),
            "delta"))
      return;
    AfterApplied(m.slot, out, nullptr);
  }
  void On(const CommitMsg& m) {
    Slot& s = At(m.slot);
    if (!s.alive) return;
    Check(s.state->Commit(m.seq, m.epoch), "commit");
  }
  void On(const FenceMsg& m) {
    Slot& s = At(m.slot);
    if (!s.alive) return;
    auto r = s.state->Fence(m.epoch);
    if (!Check(r.status(), "fence")) return;
    ShardReport report = *r;
    if (mutation_ == Mutation::kReportUndoFloor) report.applied_seq = report.undo_floor_seq;
    Send(Party::kShard, SlotId(m.slot), ReportMsg{m.slot, m.epoch, report});
  }
  void On(const RollBackMsg& m) {
    Slot& s = At(m.slot);
    if (!s.alive) return;
    const Bytes before = s.bytes;
    if (!Check(s.state->RollBack(m.epoch, m.seq), "rollback")) return;
    if (mutation_ == Mutation::kRollbackForgetsBytes) {
      std::copy(before.begin(), before.end(), s.bytes.begin());
    }
    Send(Party::kShard, SlotId(m.slot), RolledBackMsg{m.slot, m.epoch});
  }
  // The recovery service: reads the sources, decodes, installs.
  void On(const RebuildMsg& m) {
    const RebuildShard& r = m.r;
    std::vector<uint8_t*> ptrs(n_, nullptr);
    for (int i = 0; i < n_; ++i) {
      if (!r.sources.contains(i)) continue;
      Slot& src = slots_[r.slot.stripe][i];
      const ShardReport rep = src.alive ? src.state->report() : ShardReport{};
      if (!src.alive || rep.epoch != r.epoch || rep.applied_seq != r.seq || rep.partial) {
        ++stats_.fenced;
        PSW_TRACE("  refused: source %d is not at seq %llu epoch %llu", i,
                  (unsigned long long)r.seq, (unsigned long long)r.epoch);
        return;
      }
      ptrs[i] = src.bytes.data();
    }
    Slot& t = At(r.slot);
    if (t.alive && t.state->header().epoch > r.epoch) {
      ++stats_.fenced;
      PSW_TRACE("  refused: target has seen a newer epoch");
      return;
    }
    Bytes rebuilt(shard_len_);
    ptrs[r.slot.shard] = rebuilt.data();
    ec::ShardSet want;
    want.insert(r.slot.shard);
    Status st = coder_.Decode(ptrs, r.sources, want, shard_len_);
    if (!st.ok()) return Fail("rebuild decode: " + st.ToString());
    if (t.alive) {
      if (!Check(t.state->Rebuild(r.epoch, r.seq, rebuilt), "rebuild")) return;
    } else {
      std::copy(rebuilt.begin(), rebuilt.end(), t.bytes.begin());
      t.alive = true;
      t.state.emplace(MakeState(r.slot, {r.epoch, r.seq, r.committed_seq}));
    }
    Send(Party::kShard, SlotId(r.slot), RebuiltMsg{r.slot, r.epoch});
  }
  void On(const AckMsg& m) {
    ToSequencer([&](Sequencer& s, Actions* a) {
      return s.ShardApplied(m.slot.stripe, m.slot.shard, m.seq, m.epoch, a);
    });
  }
  void On(const ReportMsg& m) {
    ToSequencer([&](Sequencer& s, Actions* a) {
      return s.ShardReported(m.slot.stripe, m.slot.shard, m.epoch, m.report, a);
    });
  }
  void On(const RolledBackMsg& m) {
    ToSequencer([&](Sequencer& s, Actions* a) {
      return s.ShardRolledBack(m.slot.stripe, m.slot.shard, m.epoch, a);
    });
  }
  void On(const RebuiltMsg& m) {
    ToSequencer([&](Sequencer& s, Actions* a) {
      return s.ShardRebuilt(m.slot.stripe, m.slot.shard, m.epoch, a);
    });
  }

  // ---- what happens next -------------------------------------------------------

  // A process dies: each message it has not yet handed to the network is
  // lost (modelled as: each of its undelivered messages, with odds 1/2).
  void DropSome(Party from, uint64_t id) {
    for (size_t i = 0; i < network_.size();) {
      if (network_[i]->from == from && network_[i]->from_id == id && Uniform(2) == 0) {
        network_[i] = std::move(network_.back());
        network_.pop_back();
      } else {
        ++i;
      }
    }
  }

  void CrashSlots(const std::vector<ShardSlot>& slots) {
    ++stats_.crashes;
    for (const ShardSlot& s : slots) {
      PSW_TRACE("crash shard %llu/%d", (unsigned long long)s.stripe, s.shard);
      Slot& slot = At(s);
      slot.alive = false;
      slot.state.reset();
      std::fill(slot.bytes.begin(), slot.bytes.end(), 0xEE);  // tmpfs gone
      down_[s.stripe].insert(s.shard);
      DropSome(Party::kShard, SlotId(s));
    }
    ToSequencer([&](Sequencer& q, Actions* a) { return q.ShardsFailed(slots, a); });
  }

  bool CanLose(uint64_t stripe, int shard) const {
    ec::ShardSet d = down_[stripe];
    d.insert(shard);
    return d.size() <= m_;
  }

  void Crash() {
    const uint64_t kind = Uniform(10);
    if (kind < 5) {  // one shard, data or parity (or a node: that index everywhere)
      const int shard =
          kind < 3 ? static_cast<int>(Uniform(k_)) : k_ + static_cast<int>(Uniform(m_));
      std::vector<ShardSlot> slots;
      if (Uniform(3) == 0) {
        for (uint64_t st = 0; st < stripes_; ++st) {
          if (CanLose(st, shard) && slots_[st][shard].alive) slots.push_back({st, shard});
        }
      } else {
        const uint64_t st = Uniform(stripes_);
        if (CanLose(st, shard) && slots_[st][shard].alive) slots.push_back({st, shard});
      }
      if (slots.empty()) return;
      --crashes_left_;
      CrashSlots(slots);
    } else if (kind < 8) {
      std::vector<Writer*> alive;
      for (Writer& w : writers_) {
        if (w.alive) alive.push_back(&w);
      }
      if (alive.empty()) return;
      Writer* w = alive[Uniform(alive.size())];
      --crashes_left_;
      ++stats_.crashes;
      PSW_TRACE("crash writer %llu", (unsigned long long)w->id.value);
      w->alive = false;
      w->pending.clear();
      DropSome(Party::kWriter, w->id.value);
      const WriterId id = w->id;
      ToSequencer([&](Sequencer& q, Actions* a) { return q.WriterFailed(id, a); });
    } else {
      if (!seq_) return;
      --crashes_left_;
      ++stats_.crashes;
      ++stats_.sequencer_crashes;
      PSW_TRACE("crash sequencer (epoch %llu)", (unsigned long long)seq_->epoch());
      seq_.reset();
      DropSome(Party::kSequencer, incarnation_);
      // Writers' calls to it fail: they give up what they were waiting for.
      for (Writer& w : writers_) w.pending.clear();
    }
  }

  void RestartSequencer() {
    std::vector<ShardSlot> failed;
    for (uint64_t st = 0; st < stripes_; ++st) {
      for (int i = 0; i < n_; ++i) {
        if (down_[st].contains(i)) failed.push_back({st, i});
      }
    }
    Actions a;
    auto s =
        Sequencer::Recover({.k = k_, .m = m_, .stripes = stripes_}, durable_epoch_, failed, &a);
    if (!s.ok()) return Fail("recover sequencer: " + s.status().ToString());
    seq_.emplace(std::move(s).value());
    ++incarnation_;
    PSW_TRACE("new sequencer at epoch %llu", (unsigned long long)seq_->epoch());
    Process(a);
  }

  void NewRequest() {
    std::vector<Writer*> ready;
    for (Writer& w : writers_) {
      if (w.alive && w.pending.size() < 2) ready.push_back(&w);
    }
    if (ready.empty()) return;
    Writer* w = ready[Uniform(ready.size())];
    const uint64_t stripe = Uniform(stripes_);
    const uint64_t stripe_bytes = shard_len_ * k_;
    uint64_t len = 0;
    switch (Uniform(4)) {
      case 0:
        len = 1 + Uniform(8);
        break;  // a few bytes
      case 1:
        len = 1 + Uniform(shard_len_);
        break;  // within about one shard
      case 2:
        len = shard_len_ + Uniform(shard_len_);
        break;  // across a shard boundary
      default:
        len = 1 + Uniform(stripe_bytes);
        break;
    }
    len = std::min(len, stripe_bytes);
    const uint64_t offset = Uniform(stripe_bytes - len + 1);
    const uint64_t request = ++next_request_;
    Update u{.range = {offset, len}, .bytes = RandomBytes(rng_, len)};
    w->pending[request] = Pending{stripe, u.range, false};
    updates_[{w->id.value, request}] = std::move(u);
    --updates_left_;
    lull_ = Uniform(6) == 0;  // writers pause until all is quiet: a check point
    PSW_TRACE("writer %llu asks for stripe %llu [%llu,+%llu)", (unsigned long long)w->id.value,
              (unsigned long long)stripe, (unsigned long long)offset, (unsigned long long)len);
    Send(Party::kWriter, w->id.value, ReqMsg{UpdateRequest{w->id, request, stripe, {offset, len}}});
  }

  // A deadline fires for an in-flight update (its writer gave up, died
  // unnoticed, or is just slow).
  bool TimeOutOne() {
    if (!seq_) return false;
    for (uint64_t st = 0; st < stripes_; ++st) {
      auto f = seq_->InFlight(st);
      if (!f || seq_->InRecovery(st)) continue;
      PSW_TRACE("deadline of stripe %llu seq %llu", (unsigned long long)st, (unsigned long long)*f);
      const Seq seq = *f;
      ToSequencer([&](Sequencer& q, Actions* a) { return q.UpdateTimedOut(st, seq, a); });
      return true;
    }
    return false;
  }

  bool AnyInFlight() const {
    if (!seq_) return false;
    for (uint64_t st = 0; st < stripes_; ++st) {
      if (seq_->InFlight(st) && !seq_->InRecovery(st)) return true;
    }
    return false;
  }

  // Picks and runs one step; false when nothing can happen any more.
  bool Step(bool quiet) {
    int alive_writers = 0;
    bool writer_ready = false;
    for (const Writer& w : writers_) {
      alive_writers += w.alive;
      writer_ready |= w.alive && w.pending.size() < 2;
    }
    const bool in_flight = AnyInFlight();
    const uint64_t w_deliver = network_.empty() ? 0 : 160;
    const uint64_t w_request = updates_left_ > 0 && writer_ready && !lull_ ? 30 : 0;
    const uint64_t w_crash = crashes_left_ > 0 && !quiet ? 3 : 0;
    const uint64_t w_timeout = in_flight ? (network_.empty() ? 50 : 1) : 0;
    const uint64_t w_restart = seq_ ? 0 : 20;
    const uint64_t w_writer = alive_writers < writer_target_ && updates_left_ > 0 ? 5 : 0;
    const uint64_t total = w_deliver + w_request + w_crash + w_timeout + w_restart + w_writer;
    if (total == 0) {
      Fail(std::string("stuck: nothing to deliver, sequencer ") +
           (seq_ ? (seq_->Idle() ? "idle" : "waiting") : "dead") + ", but not quiescent");
      return false;
    }
    uint64_t r = Uniform(total);
    if (r < w_deliver) return Deliver(), true;
    r -= w_deliver;
    if (r < w_request) return NewRequest(), true;
    r -= w_request;
    if (r < w_crash) return Crash(), true;
    r -= w_crash;
    if (r < w_timeout) return TimeOutOne(), true;
    r -= w_timeout;
    if (r < w_restart) return RestartSequencer(), true;
    AddWriter();
    return true;
  }

  // ---- invariants ---------------------------------------------------------------

  bool Quiescent() const {
    if (!seq_ || !seq_->Idle() || !network_.empty()) return false;
    for (const auto& d : down_) {
      if (!d.empty()) return false;
    }
    return true;
  }

  // After every step: no shard saw an epoch that was not durable first, and
  // every committed update is still held (or undoable to) by k live shards
  // not counted as down.
  void CheckStep() {
    for (uint64_t st = 0; st < stripes_; ++st) {
      if (!dirty_[st]) continue;
      dirty_[st] = 0;
      int holding = 0;
      for (int i = 0; i < n_; ++i) {
        const Slot& s = slots_[st][i];
        if (!s.alive) continue;
        const ShardReport r = s.state->report();
        if (r.epoch > durable_epoch_) {
          return Fail("shard " + std::to_string(st) + "/" + std::to_string(i) + " at epoch " +
                      std::to_string(r.epoch) + " above the durable " +
                      std::to_string(durable_epoch_));
        }
        if (!down_[st].contains(i) && r.undo_floor_seq <= ref_seq_[st] &&
            ref_seq_[st] <= r.applied_seq) {
          ++holding;
        }
      }
      if (holding < k_) {
        return Fail("stripe " + std::to_string(st) + ": committed seq " +
                    std::to_string(ref_seq_[st]) + " held by only " + std::to_string(holding) +
                    " shards, k=" + std::to_string(k_));
      }
    }
  }

  void CheckQuiescent() {
    ++stats_.quiescent_checks;
    PSW_TRACE("quiescent check");
    for (uint64_t st = 0; st < stripes_ && failure_.empty(); ++st) {
      const std::string name = "stripe " + std::to_string(st);
      std::vector<Bytes> data(k_);
      for (int i = 0; i < n_; ++i) {
        const Slot& s = slots_[st][i];
        const ShardReport r = s.state->report();
        if (r.applied_seq != ref_seq_[st] || r.committed_seq != ref_seq_[st] || r.has_undo ||
            s.state->buffered() != 0) {
          return Fail(name + " shard " + std::to_string(i) + ": applied " +
                      std::to_string(r.applied_seq) + " committed " +
                      std::to_string(r.committed_seq) + (r.has_undo ? " with undo" : "") +
                      ", stripe is at seq " + std::to_string(ref_seq_[st]));
        }
        if (i < k_) data[i] = s.bytes;
      }
      for (int i = 0; i < k_; ++i) {
        if (!std::equal(data[i].begin(), data[i].end(), ref_[st].begin() + i * shard_len_)) {
          return Fail(name + " data shard " + std::to_string(i) +
                      " differs from the committed updates applied in the sequencer's order");
        }
      }
      std::vector<Bytes> parity = Encode(coder_, data);
      for (int j = 0; j < m_; ++j) {
        if (parity[j] != slots_[st][k_ + j].bytes) {
          return Fail(name + " parity shard " + std::to_string(k_ + j) +
                      " is not the encoding of its data");
        }
      }
      // A degraded read of the same bytes: lose up to m shards, decode.
      std::vector<Bytes> shards(n_);
      std::vector<uint8_t*> ptrs(n_);
      ec::ShardSet present = ec::ShardSet::FirstN(n_), want;
      for (int i = 0; i < n_; ++i) {
        shards[i] = slots_[st][i].bytes;
        ptrs[i] = shards[i].data();
      }
      for (int e = 0; e < m_; ++e) {
        const int i = static_cast<int>(Uniform(n_));
        if (!present.contains(i)) continue;
        present.erase(i);
        want.insert(i);
        std::fill(shards[i].begin(), shards[i].end(), 0);
      }
      Status s = coder_.Decode(ptrs, present, want, shard_len_);
      if (!s.ok()) return Fail(name + " degraded read: " + s.ToString());
      for (int i = 0; i < k_; ++i) {
        if (!std::equal(shards[i].begin(), shards[i].end(), ref_[st].begin() + i * shard_len_)) {
          return Fail(name + " degraded read of data shard " + std::to_string(i) +
                      " returns wrong bytes");
        }
      }
    }
  }
#undef PSW_TRACE

  struct Update {
    UpdateRange range;
    Bytes bytes;
  };

  const ec::ErasureCoder& coder_;
  const int k_, m_, n_;
  std::mt19937_64 rng_;
  const Mutation mutation_;
  const bool trace_;
  uint64_t shard_len_ = 0;
  uint64_t stripes_ = 0;
  uint64_t updates_left_ = 0;
  uint64_t crashes_left_ = 0;
  int writer_target_ = 0;
  bool lull_ = false;

  std::vector<std::vector<Slot>> slots_;
  std::vector<ec::ShardSet> down_;  // lost, and not yet repaired by a finished round
  std::vector<char> dirty_;         // stripes changed since the last CheckStep
  std::vector<Writer> writers_;
  uint64_t next_writer_ = 0;
  uint64_t next_request_ = 0;
  std::map<std::pair<uint64_t, uint64_t>, Update> updates_;  // (writer, request)
  std::map<std::pair<uint64_t, Seq>, Grant> grants_;         // (stripe, seq): newest grant
  std::vector<Bytes> ref_;
  std::vector<Seq> ref_seq_;
  std::optional<Sequencer> seq_;
  uint64_t incarnation_ = 0;
  Epoch durable_epoch_ = 0;
  std::vector<std::unique_ptr<Msg>> network_;  // in flight, in no order
  ModelStats stats_;
  std::string failure_;
  std::vector<std::string> trace_log_;
};

// Cases per model test. An unoptimized or sanitized build runs a case some
// 40x slower, so it runs fewer by default and the binary stays well under
// 30 s there; FERN_PSW_CASES overrides either.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(__OPTIMIZE__)
constexpr uint64_t kDefaultCases = 600;
#else
constexpr uint64_t kDefaultCases = 3000;
#endif

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 0) : fallback;
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string Tail(const std::vector<std::string>& lines, size_t n) {
  std::string s;
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) {
    s += "  " + lines[i] + "\n";
  }
  return s;
}

std::string TestName() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(info->test_suite_name()) + "." + info->name();
}

// Runs `cases` seeded cases (or the one FERN_PSW_CASE_SEED names); on a
// failure replays the case with tracing and reports how to replay it.
ModelStats RunModel(int k, int m, uint64_t cases) {
  ModelStats total;
  auto coder = MakeCoder(k, m);
  if (coder == nullptr) return total;
  auto rng = fern::testing::TestRng();
  const char* one = std::getenv("FERN_PSW_CASE_SEED");
  if (one != nullptr) cases = 1;
  for (uint64_t c = 0; c < cases; ++c) {
    const uint64_t seed = one ? std::strtoull(one, nullptr, 0) : rng();
    Cluster cluster(*coder, seed, Mutation::kNone, one != nullptr);
    if (!cluster.Run()) {
      Cluster replay(*coder, seed, Mutation::kNone, /*trace=*/true);
      replay.Run();
      ADD_FAILURE() << "k=" << k << " m=" << m << " case " << c << " seed " << Hex(seed) << ": "
                    << cluster.failure() << "\nreplay with: FERN_PSW_CASE_SEED=" << Hex(seed)
                    << " build/bin/sequencer_test --gtest_filter=" << TestName() << "\nthe replay "
                    << (replay.failure() == cluster.failure() ? "fails the same way"
                                                              : "DIFFERS: " + replay.failure())
                    << "; its last steps:\n"
                    << Tail(replay.trace(), 80);
      return total;
    }
    if (one != nullptr) std::printf("%s", Tail(cluster.trace(), 1u << 20).c_str());
    total.Add(cluster.stats());
  }
  return total;
}

void ExpectNotVacuous(const ModelStats& s, uint64_t cases) {
  if (std::getenv("FERN_PSW_CASE_SEED") != nullptr || cases < 200 ||
      ::testing::Test::HasFailure()) {
    return;
  }
  // The runs must have exercised what they claim to test.
  EXPECT_GT(s.commits, cases * 5);
  EXPECT_GT(s.overlapping, cases / 4);
  EXPECT_GT(s.rolled_back, cases / 50);
  EXPECT_GT(s.rolled_forward, cases / 50);
  EXPECT_GT(s.rebuilt, cases / 10);
  EXPECT_GT(s.fenced, cases / 20);
  EXPECT_GT(s.sequencer_crashes, cases / 10);
  EXPECT_GT(s.duplicates, cases);
  EXPECT_GT(s.quiescent_checks, cases * 2);
}

TEST(PswModel, RandomInterleavingsK4M2) {
  const uint64_t cases = EnvU64("FERN_PSW_CASES", kDefaultCases);
  const auto t0 = std::chrono::steady_clock::now();
  ModelStats s = RunModel(4, 2, cases);
  std::printf("[psw-model] k=4 m=2: %s in %.2f s\n", s.ToString().c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  ExpectNotVacuous(s, cases);
}

TEST(PswModel, RandomInterleavingsK3M1) {
  const uint64_t cases = EnvU64("FERN_PSW_CASES", kDefaultCases);
  const auto t0 = std::chrono::steady_clock::now();
  ModelStats s = RunModel(3, 1, cases);
  std::printf("[psw-model] k=3 m=1: %s in %.2f s\n", s.ToString().c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  ExpectNotVacuous(s, cases);
}

TEST(PswModel, ACaseReplaysExactly) {
  auto coder = MakeCoder(4, 2);
  ASSERT_NE(coder, nullptr);
  auto rng = fern::testing::TestRng();
  for (int c = 0; c < 20; ++c) {
    const uint64_t seed = rng();
    Cluster a(*coder, seed, Mutation::kNone, true), b(*coder, seed, Mutation::kNone, true);
    ASSERT_TRUE(a.Run()) << Hex(seed) << ": " << a.failure();
    ASSERT_TRUE(b.Run());
    EXPECT_EQ(a.trace(), b.trace()) << Hex(seed);
    EXPECT_EQ(a.Digest(), b.Digest()) << Hex(seed);
  }
}

// Each mutant must be caught, by one of the checks named in `by` (parts of
// their failure messages): the model's invariants have teeth.
void ExpectCaught(Mutation mutation, int k, int m, uint64_t max_cases,
                  const std::vector<std::string>& by) {
  auto coder = MakeCoder(k, m);
  ASSERT_NE(coder, nullptr);
  auto rng = fern::testing::TestRng();
  uint64_t other = 0;
  for (uint64_t c = 0; c < max_cases; ++c) {
    const uint64_t seed = rng();
    Cluster cluster(*coder, seed, mutation, false);
    if (cluster.Run()) continue;
    if (std::none_of(by.begin(), by.end(), [&](const std::string& b) {
          return cluster.failure().find(b) != std::string::npos;
        })) {
      if (std::getenv("FERN_PSW_VERBOSE")) std::printf("  other: %s\n", cluster.failure().c_str());
      ++other;  // caught, but by another check: keep looking for the named one
      continue;
    }
    std::printf(
        "[psw-model] mutant \"%s\" caught in case %llu (seed %s; %llu earlier cases "
        "caught by other checks): %s\n",
        MutationName(mutation), static_cast<unsigned long long>(c), Hex(seed).c_str(),
        static_cast<unsigned long long>(other), cluster.failure().c_str());
    return;
  }
  ADD_FAILURE() << "mutant \"" << MutationName(mutation) << "\" was not caught by \"" << by[0]
                << "\" in " << max_cases << " cases (" << other << " caught otherwise)";
}

TEST(PswMutant, WrongParityCoefficientIsCaught) {
  ExpectCaught(Mutation::kWrongParityCoefficient, 4, 2, 200, {"is not the encoding of its data"});
}
TEST(PswMutant, DeltaNotXoredIsCaught) {
  ExpectCaught(Mutation::kDeltaNotXored, 3, 1, 200, {"is not the encoding of its data"});
}
TEST(PswMutant, RollbackThatForgetsTheBytesIsCaught) {
  ExpectCaught(Mutation::kRollbackForgetsBytes, 4, 2, 2000,
               {"differs from the committed updates applied in the sequencer's order"});
}
TEST(PswMutant, ParityAckBeforeApplyIsCaught) {
  ExpectCaught(Mutation::kEarlyParityAck, 3, 1, 2000, {"only seq"});
}
TEST(PswMutant, RecoveryThatIgnoresNewestSeqLosesCommittedUpdatesAndIsCaught) {
  ExpectCaught(Mutation::kReportUndoFloor, 4, 2, 2000, {"was committed", "held by only"});
}

}  // namespace
}  // namespace fern::daemon::psw
