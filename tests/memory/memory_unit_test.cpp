// Unit tests of the hybrid memory: page sharing and copy-on-write, state sharing, snapshot
// policy/budget/eviction, transactions, batch validation and planning, save/load, accounting.
// Expected states come from the fake model (fake_model.h), which derives them from token lists.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "fake_model.h"
#include "state_load_world.h"

namespace chimera {
namespace {

MemoryConfig small_hybrid(uint32_t page_size = 4) {
  MemoryConfig c;
  c.layers = {{LayerKind::kAttention, 8, 0, 0}, {LayerKind::kRecurrent, 0, 6, 10}};
  c.n_vocab = 100;
  c.max_seqs = 8;
  c.page_size = page_size;
  c.kv_type = GgmlType::F16;
  c.budget_bytes = 1 << 20;
  c.snapshot_budget_bytes = 1 << 20;
  c.snapshot_interval = 0;
  c.snapshot_prompt_end = false;
  c.snapshot_prompt_start = false;
  return c;
}

std::unique_ptr<HybridMemory> make(const MemoryConfig& c) {
  auto m = HybridMemory::create(c);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return std::move(m).value();
}

// Decodes `toks` into seq (as one batch) with the fake model; returns the status.
Status decode(HybridMemory& m, int32_t seq, const std::vector<int32_t>& toks) {
  Batch b;
  for (size_t i = 0; i < toks.size(); ++i)
    b.add(toks[i], static_cast<int32_t>(m.next_pos(seq) + i), seq);
  auto plan = m.begin_batch(b);
  if (!plan.ok()) return plan.status();
  std::string why;
  if (!fake::run_batch(m, b, **plan, nullptr, &why)) return Error(ErrorCode::kInternal, why);
  return m.commit();
}

void expect_seq(const HybridMemory& m, int32_t seq, const std::vector<int32_t>& toks,
                int64_t base = 0) {
  EXPECT_EQ(fake::check_seq(m, seq, toks, base), "");
}

std::vector<int32_t> iota(int n, int from = 1) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = (from + i) % 100;
  return v;
}

TEST(KvPages, SeqCpSharesPagesAndSlot) {
  auto m = make(small_hybrid());
  ASSERT_TRUE(decode(*m, 0, iota(6)).ok());
  const MemoryUsage before = m->usage();
  EXPECT_EQ(before.pages_in_use, 2u);
  ASSERT_TRUE(m->seq_cp(0, 1).ok());
  const MemoryUsage after = m->usage();
  EXPECT_EQ(after.pages_in_use, before.pages_in_use);  // nothing copied
  EXPECT_EQ(after.slots_in_use, before.slots_in_use);
  EXPECT_EQ(after.seqs.size(), 2u);
  EXPECT_EQ(after.seqs[1].kv_shared_bytes, after.seqs[1].kv_bytes);
  expect_seq(*m, 1, iota(6));
}

TEST(KvPages, PartialPageCopyOnWrite) {
  auto m = make(small_hybrid());
  ASSERT_TRUE(decode(*m, 0, iota(6)).ok());  // pages: [0..3], [4,5 | partial]
  ASSERT_TRUE(m->seq_cp(0, 1).ok());
  // The first writer appends in place (nobody wrote row 2 of the shared partial page).
  ASSERT_TRUE(decode(*m, 1, {50}).ok());
  EXPECT_EQ(m->usage().pages_in_use, 2u);
  // The second writer must copy the partial page, keeping seq 1's row 2 intact.
  ASSERT_TRUE(decode(*m, 0, {60, 61}).ok());
  EXPECT_EQ(m->usage().pages_in_use, 3u);
  std::vector<int32_t> a = iota(6), b = iota(6);
  a.insert(a.end(), {60, 61});
  b.push_back(50);
  expect_seq(*m, 0, a);
  expect_seq(*m, 1, b);
  // Full pages stay shared.
  EXPECT_EQ(m->usage().seqs[0].kv_shared_bytes, m->usage().seqs[0].kv_bytes / 2);
}

TEST(KvPages, SharedPartialPageBothAppendInOneBatch) {
  auto m = make(small_hybrid());
  ASSERT_TRUE(decode(*m, 0, iota(5)).ok());
  ASSERT_TRUE(m->seq_cp(0, 1).ok());
  Batch b;
  b.add(70, 5, 0);
  b.add(80, 5, 1);
  b.add(71, 6, 0);
  auto plan = m->begin_batch(b);
  ASSERT_TRUE(plan.ok());
  std::string why;
  ASSERT_TRUE(fake::run_batch(*m, b, **plan, nullptr, &why)) << why;
  ASSERT_TRUE(m->commit().ok());
  std::vector<int32_t> a = iota(5), c = iota(5);
  a.insert(a.end(), {70, 71});
  c.push_back(80);
  expect_seq(*m, 0, a);
  expect_seq(*m, 1, c);
}

TEST(KvPages, TruncatedExclusivePageIsReused) {
  auto m = make(small_hybrid());
  ASSERT_TRUE(decode(*m, 0, iota(7)).ok());
  auto rep = m->seq_rm(0, 5, -1);  // no snapshots: restore to 0 and replay 5 tokens
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->tokens, iota(5));
  EXPECT_EQ(m->n_tokens(0), 0u);
  EXPECT_EQ(m->pos_max(0), -1);
  ASSERT_TRUE(decode(*m, 0, rep->tokens).ok());
  ASSERT_TRUE(decode(*m, 0, {9, 9}).ok());
  std::vector<int32_t> want = iota(5);
  want.insert(want.end(), {9, 9});
  expect_seq(*m, 0, want);
  EXPECT_EQ(m->usage().pages_in_use, 2u);
}

TEST(States, FirstWriteAfterShareGetsItsOwnSlot) {
  auto m = make(small_hybrid());
  ASSERT_TRUE(decode(*m, 0, iota(3)).ok());
  ASSERT_TRUE(m->seq_cp(0, 1).ok());
  const uint32_t slots = m->usage().slots_in_use;  // zero state + shared live slot
  ASSERT_TRUE(decode(*m, 1, {42}).ok());
  EXPECT_EQ(m->usage().slots_in_use, slots + 1);
  expect_seq(*m, 0, iota(3));
  std::vector<int32_t> b = iota(3);
  b.push_back(42);
  expect_seq(*m, 1, b);
}

TEST(Snapshots, IntervalAndPromptPolicyInsideOneBatch) {
  MemoryConfig c = small_hybrid();
  c.snapshot_interval = 16;
  c.snapshot_prompt_end = true;
  c.snapshot_prompt_start = true;
  auto m = make(c);
  m->set_max_ubatch_tokens(7);  // runs are cut at 7, 14, 16, ... and the plan must not matter
  ASSERT_TRUE(decode(*m, 0, iota(40)).ok());
  std::vector<uint32_t> at;
  for (auto [id, n] : m->snapshots_of(0)) at.push_back(n);
  EXPECT_EQ(at, (std::vector<uint32_t>{16, 32, 40}));
  ASSERT_TRUE(decode(*m, 0, iota(5, 7)).ok());  // prompt start at 40 exists already; end at 45
  at.clear();
  for (auto [id, n] : m->snapshots_of(0)) at.push_back(n);
  EXPECT_EQ(at, (std::vector<uint32_t>{16, 32, 40, 45}));
  std::vector<int32_t> all = iota(40), more = iota(5, 7);
  all.insert(all.end(), more.begin(), more.end());
  expect_seq(*m, 0, all);
  // Tail removal restores the newest snapshot at or before the cut: a bounded replay.
  auto rep = m->seq_rm(0, 38, -1);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(m->n_tokens(0), 32u);
  EXPECT_EQ(rep->pos0, 32);
  EXPECT_EQ(rep->tokens, std::vector<int32_t>(all.begin() + 32, all.begin() + 38));
  const RestorePoints rp = m->restorable(0);
  EXPECT_FALSE(rp.any);
  EXPECT_EQ(rp.counts, (std::vector<uint32_t>{0, 16, 32}));
}

TEST(Snapshots, BudgetEvictsOldestAutomaticKeepsExplicit) {
  MemoryConfig c = small_hybrid();
  c.layers = {{LayerKind::kRecurrent, 0, 6, 10}};  // 64-byte state
  c.snapshot_interval = 2;
  c.snapshot_budget_bytes = 3 * 64 + 3 * 4 * 4;  // about 3 states plus their token pages
  auto m = make(c);
  ASSERT_TRUE(decode(*m, 0, {1, 2}).ok());
  auto pinned = m->snapshot(0);
  ASSERT_TRUE(pinned.ok());
  std::vector<int32_t> toks = {1, 2};
  for (int i = 0; i < 20; ++i) {
    toks.push_back(i % 100);
    ASSERT_TRUE(decode(*m, 0, {i % 100}).ok());
    EXPECT_LE(m->usage().snapshot_bytes, c.snapshot_budget_bytes);
  }
  std::vector<uint32_t> at;
  for (auto [id, n] : m->snapshots_of(0)) at.push_back(n);
  ASSERT_GE(at.size(), 2u);
  EXPECT_EQ(at.front(), 2u);  // the explicit one survives
  EXPECT_EQ(at.back(), 22u);  // the newest automatic ones survive
  expect_seq(*m, 0, toks);
  ASSERT_TRUE(m->restore(1, *pinned).ok());
  expect_seq(*m, 1, {1, 2});
  ASSERT_TRUE(m->release(*pinned).ok());
  // Still on seq 0's path, so it lives on as an automatic snapshot; the handle is gone.
  EXPECT_EQ(m->release(*pinned).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(m->release(987654).code(), ErrorCode::kNotFound);
}

TEST(Snapshots, PinKeepsAnAutomaticSnapshotUntilEveryHandleIsReleased) {
  MemoryConfig c = small_hybrid();
  c.snapshot_interval = 4;
  auto m = make(c);
  const std::vector<int32_t> toks = iota(10);
  ASSERT_TRUE(decode(*m, 0, toks).ok());
  auto snaps = m->snapshots_of(0);
  ASSERT_EQ(snaps.size(), 2u);  // automatic, at 4 and 8
  const uint64_t id = snaps[0].first;
  ASSERT_TRUE(m->pin(id).ok());
  ASSERT_TRUE(m->pin(id).ok());
  EXPECT_EQ(m->pin(987654).code(), ErrorCode::kNotFound);
  // A budget of zero evicts every automatic snapshot at once, but not the pinned one.
  m->set_snapshot_budget(0);
  snaps = m->snapshots_of(0);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0], std::make_pair(id, 4u));
  EXPECT_EQ(m->usage().n_pinned_snapshots, 1u);
  // Rolling back lands exactly on it (no replay), and the state is the one of its tokens.
  ASSERT_TRUE(m->seq_cp(0, 1).ok());
  auto rep = m->seq_rm(1, 6, -1);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->tokens, std::vector<int32_t>(toks.begin() + 4, toks.begin() + 6));
  ASSERT_TRUE(m->seq_rm(1, 4, -1).ok());
  expect_seq(*m, 1, std::vector<int32_t>(toks.begin(), toks.begin() + 4));
  // Off every path and released twice: gone.
  ASSERT_TRUE(m->seq_rm(0, 0, -1).ok());
  ASSERT_TRUE(m->seq_rm(1, 0, -1).ok());
  ASSERT_TRUE(m->release(id).ok());
  EXPECT_EQ(m->usage().n_snapshots, 1u);
  ASSERT_TRUE(m->release(id).ok());
  EXPECT_EQ(m->usage().n_snapshots, 0u);
  EXPECT_EQ(m->release(id).code(), ErrorCode::kNotFound);
}

// discard(): a snapshot() mark leaves every path with its last handle (a drafter's per-token
// marks must not pile up as restore points); an automatic snapshot it pinned stays listed; the
// sequences are untouched either way.
TEST(Snapshots, DiscardDropsMarksButKeepsAutomaticSnapshots) {
  MemoryConfig c = small_hybrid();
  c.snapshot_interval = 4;
  auto m = make(c);
  std::vector<int32_t> toks = iota(4);
  ASSERT_TRUE(decode(*m, 0, toks).ok());  // an automatic snapshot at 4
  auto automatic = m->snapshot(0);        // pins it
  ASSERT_TRUE(automatic.ok());
  ASSERT_TRUE(decode(*m, 0, {7}).ok());
  toks.push_back(7);
  auto mark = m->snapshot(0);  // a new one at 5
  ASSERT_TRUE(mark.ok());
  auto again = m->snapshot(0);  // a second handle on the same mark
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *mark);
  ASSERT_TRUE(m->seq_cp(0, 1).ok());  // the mark is on two paths now
  ASSERT_TRUE(decode(*m, 0, {8}).ok());
  toks.push_back(8);
  auto counts = [&](int32_t seq) {
    std::vector<uint32_t> at;
    for (auto [id, n] : m->snapshots_of(seq)) at.push_back(n);
    return at;
  };
  EXPECT_EQ(counts(0), (std::vector<uint32_t>{4, 5}));
  const uint64_t fp_before = m->fingerprint();
  ASSERT_TRUE(m->discard(*mark).ok());  // one handle left: nothing changes but the count
  EXPECT_EQ(counts(0), (std::vector<uint32_t>{4, 5}));
  EXPECT_NE(m->fingerprint(), fp_before);
  ASSERT_TRUE(m->discard(*mark).ok());  // the last one: off both paths, freed
  EXPECT_EQ(counts(0), (std::vector<uint32_t>{4}));
  EXPECT_EQ(counts(1), (std::vector<uint32_t>{4}));
  EXPECT_EQ(m->discard(*mark).code(), ErrorCode::kNotFound);
  ASSERT_TRUE(m->discard(*automatic).ok());  // the policy's own snapshot stays a restore point
  EXPECT_EQ(counts(0), (std::vector<uint32_t>{4}));
  EXPECT_EQ(m->usage().n_pinned_snapshots, 0u);
  EXPECT_EQ(m->discard(*automatic).code(), ErrorCode::kInvalidArgument);
  expect_seq(*m, 0, toks);
  expect_seq(*m, 1, std::vector<int32_t>(toks.begin(), toks.begin() + 5));
  // A rollback to where the mark was replays from the snapshot before it, exactly.
  auto rep = m->seq_rm(0, 5, -1);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->pos0, 4);
  EXPECT_EQ(rep->tokens, std::vector<int32_t>{7});
  // A mark off every path already (its sequence rolled back past it) goes like release().
  auto lone = m->snapshot(1);
  ASSERT_TRUE(lone.ok());
  ASSERT_TRUE(m->seq_rm(1, 0, -1).ok());
  const uint32_t before = m->usage().n_snapshots;
  ASSERT_TRUE(m->discard(*lone).ok());
  EXPECT_EQ(m->usage().n_snapshots, before - 1);
}

// A budget whose KV capacity no address space can hold (4 Gi pages of 256 F32 tokens x 4096: 18
// PB an arena) is an error from create(), not a crash (it was std::bad_alloc).
TEST(Transactions, AnUnreservableBudgetIsAnError) {
  MemoryConfig c = small_hybrid(256);
  c.layers[0].kv_dim = 4096;
  c.kv_type = GgmlType::F32;
  c.budget_bytes = uint64_t{1} << 62;
  auto m = HybridMemory::create(c);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), ErrorCode::kOutOfMemory) << m.status().ToString();
  EXPECT_NE(m.status().message().find("cannot reserve"), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find("attention layer 0"), std::string::npos)
      << m.status().message();
}

TEST(Transactions, OutOfBudgetChangesNothing) {
  MemoryConfig c = small_hybrid();
  c.budget_bytes = 4096;
  auto m = make(c);
  ASSERT_TRUE(decode(*m, 0, iota(8)).ok());
  const uint64_t fp = m->fingerprint();
  std::vector<int32_t> big(1000, 7);
  Status st = decode(*m, 1, big);
  EXPECT_EQ(st.code(), ErrorCode::kOutOfMemory) << st.ToString();
  EXPECT_NE(st.message().find("budget"), std::string::npos) << st.message();
  EXPECT_EQ(m->fingerprint(), fp);
  EXPECT_FALSE(m->in_batch());
}

TEST(Transactions, AbortAndInjectedFailuresRestoreExactly) {
  MemoryConfig c = small_hybrid();
  c.snapshot_interval = 4;
  auto m = make(c);
  ASSERT_TRUE(decode(*m, 0, iota(6)).ok());
  ASSERT_TRUE(m->seq_cp(0, 1).ok());
  const uint64_t fp = m->fingerprint();
  Batch b;
  int32_t next[2] = {6, 6};
  for (int i = 0; i < 9; ++i) b.add(i, next[i % 2]++, i % 2);
  for (int i = 0; i < 6; ++i) b.add(i, next[0]++, 0);
  for (int64_t inject = 0; inject < 6; ++inject) {
    m->inject_alloc_failure(inject);
    auto plan = m->begin_batch(b);
    m->inject_alloc_failure(-1);
    if (plan.ok()) {
      m->abort();
    } else {
      EXPECT_EQ(plan.status().code(), ErrorCode::kOutOfMemory);
    }
    EXPECT_EQ(m->fingerprint(), fp) << "inject " << inject;
  }
  m->set_max_ubatch_tokens(3);
  auto plan = m->begin_batch(b);
  ASSERT_TRUE(plan.ok());
  ASSERT_GT((*plan)->ubatches.size(), 2u);
  std::string why;
  ASSERT_TRUE(fake::run_batch(*m, b, **plan, nullptr, &why, 1));  // two ubatches written
  EXPECT_FALSE(m->seq_rm(0, 0, -1).ok());                         // no ops mid-batch
  m->abort();
  EXPECT_EQ(m->fingerprint(), fp);
  expect_seq(*m, 0, iota(6));
  expect_seq(*m, 1, iota(6));
}

TEST(Batches, ValidationNamesTheEntry) {
  auto m = make(small_hybrid());
  ASSERT_TRUE(decode(*m, 2, iota(3)).ok());
  const uint64_t fp = m->fingerprint();
  auto err = [&](const Batch& b) {
    auto p = m->begin_batch(b);
    EXPECT_FALSE(p.ok());
    EXPECT_EQ(m->fingerprint(), fp);
    return p.ok() ? std::string() : p.status().message();
  };
  Batch b;
  b.add(1, 3, 2);
  b.add(100, 4, 2);
  EXPECT_NE(err(b).find("batch entry 1: token id 100 out of range [0, 100)"), std::string::npos);
  b = Batch();
  b.add(1, 0, 8);
  EXPECT_NE(err(b).find("batch entry 0: sequence id 8 out of range"), std::string::npos);
  b = Batch();
  b.add(1, 4, 2);
  EXPECT_NE(err(b).find("continues at position 3"), std::string::npos);
  b = Batch();
  b.add(1, 3, 2);
  b.add(1, 5, 2);
  EXPECT_NE(err(b).find("batch entry 1 (sequence 2): position 5, expected 4"), std::string::npos);
  EXPECT_NE(err(Batch()).find("empty"), std::string::npos);
}

TEST(Batches, RaggedPlanAndPlanInvariance) {
  Batch b;
  for (int i = 0; i < 10; ++i) b.add(i, i, 0);
  b.add(5, 0, 3);
  for (int i = 0; i < 3; ++i) b.add(i, 7 + i, 1);
  std::vector<uint32_t> lens(4, 0);
  lens[1] = 7;
  std::vector<int64_t> next = {0, 7, 0, 0};
  const BatchPlan p = plan_ubatches(b, 8, lens, next, 0);
  ASSERT_EQ(p.ubatches.size(), 2u);
  ASSERT_EQ(p.ubatches[0].runs.size(), 1u);  // seq 0's 8 tokens fill the first ubatch
  EXPECT_EQ(p.ubatches[0].runs[0].n_tokens, 8u);
  ASSERT_EQ(p.ubatches[1].runs.size(), 3u);  // ragged: 2 + 1 + 3 tokens
  EXPECT_EQ(p.ubatches[1].runs[0].n_tokens, 2u);
  EXPECT_EQ(p.ubatches[1].runs[0].first, 8u);
  EXPECT_EQ(p.ubatches[1].runs[2].seq, 1);
  EXPECT_EQ(p.ubatches[1].runs[2].pos0, 7);
  EXPECT_EQ(p.ubatches[1].runs[2].first, 7u);
  // Every ubatch size gives bit-identical memory.
  uint64_t fp0 = 0;
  for (uint32_t ub : {1u, 3u, 8u, 512u}) {
    MemoryConfig c = small_hybrid();
    c.snapshot_interval = 5;
    auto m = make(c);
    m->set_max_ubatch_tokens(ub);
    Batch x;
    for (int i = 0; i < 23; ++i) x.add(i, i / 2, (i % 2) * 3);
    auto plan = m->begin_batch(x);
    ASSERT_TRUE(plan.ok());
    std::string why;
    ASSERT_TRUE(fake::run_batch(*m, x, **plan, nullptr, &why)) << why;
    ASSERT_TRUE(m->commit().ok());
    if (ub == 1) fp0 = m->fingerprint();
    EXPECT_EQ(m->fingerprint(), fp0) << "ubatch " << ub;
  }
}

TEST(SequenceOps, MiddleAndPrefixRemovalAreExact) {
  auto m = make(small_hybrid());
  ASSERT_TRUE(decode(*m, 0, iota(10)).ok());
  auto rep = m->seq_rm(0, 3, 6);
  ASSERT_TRUE(rep.ok());
  std::vector<int32_t> kept = {1, 2, 3, 7, 8, 9, 10};
  EXPECT_EQ(m->n_tokens(0) + rep->tokens.size(), kept.size());
  ASSERT_TRUE(decode(*m, 0, rep->tokens).ok());
  expect_seq(*m, 0, kept);
  rep = m->seq_rm(0, -1, 2);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->pos0, 0);
  ASSERT_TRUE(decode(*m, 0, rep->tokens).ok());
  expect_seq(*m, 0, {3, 7, 8, 9, 10});
  EXPECT_FALSE(m->seq_rm(0, 4, 2).ok());
  EXPECT_EQ(m->seq_rm(9, 0, -1).status().code(), ErrorCode::kInvalidArgument);
}

TEST(SequenceOps, ShiftAndDivideSayWhatTheyDo) {
  auto m = make(small_hybrid());
  ASSERT_TRUE(decode(*m, 0, iota(5)).ok());
  EXPECT_FALSE(m->seq_add(0, 2, -1, 3).ok());  // a sub-range would leave a gap
  auto out = m->seq_add(0, -1, -1, 10);
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->exact);
  EXPECT_TRUE(out->needs_replay);  // RoPE attention: recompute at the new positions
  EXPECT_EQ(out->replay.pos0, 10);
  ASSERT_TRUE(decode(*m, 0, out->replay.tokens).ok());
  expect_seq(*m, 0, iota(5), 10);
  EXPECT_EQ(m->pos_min(0), 10);
  EXPECT_EQ(m->seq_div(0, -1, -1, 2).code(), ErrorCode::kUnsupported);
  MemoryConfig c = small_hybrid();
  c.positions_matter = false;  // NoPE: positions are book-keeping only
  auto n = make(c);
  ASSERT_TRUE(decode(*n, 0, iota(5)).ok());
  out = n->seq_add(0, -1, -1, 7);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE(out->needs_replay);
  expect_seq(*n, 0, iota(5), 7);
}

// Any int64 delta is refused or applied without overflow (pos_base + delta once could wrap), and
// the bounds are exact: positions 0 and 2^31 - 1 are reachable, one more is not.
TEST(SequenceOps, ShiftRangeIsCheckedWithoutOverflow) {
  MemoryConfig c = small_hybrid();
  c.positions_matter = false;  // no replay: the shift is the whole operation
  auto m = make(c);
  ASSERT_TRUE(decode(*m, 0, iota(5)).ok());
  ASSERT_TRUE(m->seq_add(0, -1, -1, 3).ok());
  const uint64_t fp = m->fingerprint();
  for (int64_t delta :
       {INT64_MAX, INT64_MIN, INT64_MAX - 2, INT64_MIN + 3, int64_t{-4}, int64_t{INT32_MAX} - 7}) {
    auto out = m->seq_add(0, -1, -1, delta);
    EXPECT_EQ(out.status().code(), ErrorCode::kInvalidArgument) << delta;
    EXPECT_EQ(m->fingerprint(), fp) << delta;
  }
  ASSERT_TRUE(m->seq_add(0, -1, -1, -3).ok());  // back to 0
  EXPECT_EQ(m->pos_min(0), 0);
  ASSERT_TRUE(m->seq_add(0, -1, -1, int64_t{INT32_MAX} - 5).ok());  // last position 2^31 - 2
  EXPECT_EQ(m->pos_max(0), int64_t{INT32_MAX} - 1);
  expect_seq(*m, 0, iota(5), int64_t{INT32_MAX} - 5);
  // Empty sequences shift too (their next position moves).
  EXPECT_EQ(m->seq_add(1, -1, -1, INT64_MAX).status().code(), ErrorCode::kInvalidArgument);
  ASSERT_TRUE(m->seq_add(1, -1, -1, int64_t{INT32_MAX}).ok());
  EXPECT_EQ(m->next_pos(1), int64_t{INT32_MAX});
}

TEST(SequenceOps, AttentionOnlyRollsBackAnywhere) {
  MemoryConfig c = small_hybrid();
  c.layers = {{LayerKind::kAttention, 8, 0, 0}};
  auto m = make(c);
  ASSERT_TRUE(decode(*m, 0, iota(9)).ok());
  EXPECT_TRUE(m->restorable(0).any);
  auto rep = m->seq_rm(0, 5, -1);
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->empty());
  expect_seq(*m, 0, iota(5));
  ASSERT_TRUE(m->seq_keep(0).ok());
  m->clear();
  EXPECT_EQ(m->usage().pages_in_use, 0u);
}

// Sliding-window layers: rows behind the window (+ reserve) are released after each commit; a
// rollback within the held rows is free, one behind them restores a snapshot and replays.
MemoryConfig small_window() {
  MemoryConfig c = small_hybrid(2);
  c.layers = {{LayerKind::kAttention, 8, 0, 0, 2, 5}, {LayerKind::kAttention, 4, 0, 0, 1, 0}};
  c.window_reserve = 1;
  c.snapshot_interval = 8;
  return c;
}

TEST(SequenceOps, WindowRowsAreReleasedAndRollbackRestoresASnapshot) {
  auto m = make(small_window());
  ASSERT_TRUE(decode(*m, 0, iota(20)).ok());
  // n = 20: the next token reads from 16 on; with the reserve, pages before 15 -> before 14.
  EXPECT_EQ(m->window_from(0), 14u);
  // Its 3 window pages (rows 14..19), 2 more of snapshot 16 (rows 10..13), 3 of snapshot 8
  // (rows 2..7); 10 pages of token ids and global rows.
  EXPECT_EQ(m->usage().window_pages_in_use, 3u + 2u + 3u);
  EXPECT_EQ(m->usage().pages_in_use, 10u);
  expect_seq(*m, 0, iota(20));
  const RestorePoints rp = m->restorable(0);
  EXPECT_TRUE(rp.any);
  EXPECT_EQ(rp.any_from, 18u);  // 18 + 1 - 5 = 14
  EXPECT_EQ(rp.counts, (std::vector<uint32_t>{0, 8, 16}));
  auto free_rm = m->seq_rm(0, 18, -1);
  ASSERT_TRUE(free_rm.ok());
  EXPECT_TRUE(free_rm->empty());
  auto rm = m->seq_rm(0, 10, -1);  // behind the held rows: snapshot 8 + 2 tokens
  ASSERT_TRUE(rm.ok());
  EXPECT_EQ(m->n_tokens(0), 8u);
  EXPECT_EQ(rm->tokens, (std::vector<int32_t>{9, 10}));
  expect_seq(*m, 0, iota(8));
}

TEST(SaveLoad, WindowRowsFormatIsCheckedAndVersion1IsRefused) {
  MemoryConfig c = small_window();
  auto m = make(c);
  ASSERT_TRUE(decode(*m, 0, iota(20)).ok());
  auto one = m->save_seq(0);
  ASSERT_TRUE(one.ok());
  // Only the held window rows are stored: smaller than a memory that keeps them all.
  MemoryConfig keep_all = c;
  keep_all.window_reserve = UINT32_MAX;
  auto k = make(keep_all);
  ASSERT_TRUE(decode(*k, 0, iota(20)).ok());
  auto full = k->save_seq(0);
  ASSERT_TRUE(full.ok());
  EXPECT_LT(one->size(), full->size());
  auto m2 = make(c);
  ASSERT_TRUE(m2->load_seq(one->data(), one->size(), 1).ok());
  expect_seq(*m2, 1, iota(20));
  EXPECT_EQ(m2->window_from(1), 14u);
  // A file of a memory that kept everything loads too (and releases what this one would).
  ASSERT_TRUE(m2->load_seq(full->data(), full->size(), 2).ok());
  expect_seq(*m2, 2, iota(20));
  EXPECT_EQ(m2->window_from(2), 14u);
  const uint64_t fp = m2->fingerprint();
  // The window start: after the header, seq id, count, position base and 20 tokens.
  const size_t wf_at = fake::kStateHeaderBytes + 4 + 4 + 8 + 20 * 4;
  for (uint32_t bad_wf : {15u, 18u}) {  // not a page multiple; past what the next token reads
    std::vector<uint8_t> v = *one;
    std::memcpy(v.data() + wf_at, &bad_wf, 4);
    fake::repair_state_checksums(v);
    Status st = m2->load_seq(v.data(), v.size(), 3);
    EXPECT_EQ(st.code(), ErrorCode::kFormat) << st.ToString();
    EXPECT_NE(st.message().find("window rows from token"), std::string::npos) << st.message();
  }
  std::vector<uint8_t> v1 = *one;
  const uint32_t version1 = 1;
  std::memcpy(v1.data() + 8, &version1, 4);
  fake::repair_state_checksums(v1);
  Status st = m2->load_seq(v1.data(), v1.size(), 3);
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_NE(st.message().find("version 1"), std::string::npos) << st.message();
  EXPECT_EQ(m2->fingerprint(), fp);
}

TEST(SaveLoad, RoundTripAndErrors) {
  MemoryConfig c = small_hybrid();
  c.snapshot_interval = 4;
  auto m = make(c);
  ASSERT_TRUE(decode(*m, 0, iota(11)).ok());
  ASSERT_TRUE(decode(*m, 3, iota(2, 50)).ok());
  auto all = m->save();
  ASSERT_TRUE(all.ok());
  auto one = m->save_seq(0);
  ASSERT_TRUE(one.ok());
  auto m2 = make(c);
  ASSERT_TRUE(m2->load(all->data(), all->size()).ok());
  expect_seq(*m2, 0, iota(11));
  expect_seq(*m2, 3, iota(2, 50));
  EXPECT_EQ(m2->snapshots_of(0).size(), m->snapshots_of(0).size());
  ASSERT_TRUE(m2->load_seq(one->data(), one->size(), 5).ok());
  expect_seq(*m2, 5, iota(11));
  // Wrong scope, wrong model, corrupted bytes: clear errors, nothing changed.
  const uint64_t fp = m2->fingerprint();
  EXPECT_NE(m2->load(one->data(), one->size()).message().find("load_seq"), std::string::npos);
  MemoryConfig other = c;
  other.layers[0].kv_dim = 16;
  auto m3 = make(other);
  Status st = m3->load(all->data(), all->size());
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.message().find("another model or shape"), std::string::npos) << st.message();
  std::vector<uint8_t> bad = *all;
  bad[bad.size() / 2] ^= 1;
  EXPECT_NE(m2->load(bad.data(), bad.size()).message().find("checksum"), std::string::npos);
  EXPECT_EQ(m2->fingerprint(), fp);
}

// A position base near INT64_MAX once wrapped the range check's sum (signed overflow) and let a
// crafted file through. Both sides of the boundary, on a repaired (checksum-valid) file.
TEST(SaveLoad, PositionBaseRangeIsCheckedWithoutOverflow) {
  MemoryConfig c = small_hybrid();
  auto m = make(c);
  ASSERT_TRUE(decode(*m, 0, iota(5)).ok());
  auto one = m->save_seq(0);
  ASSERT_TRUE(one.ok());
  constexpr size_t kPosBaseAt = fake::kStateHeaderBytes + 8;  // after i32 seq, u32 n_tokens
  auto with_base = [&](int64_t base) {
    std::vector<uint8_t> v = *one;
    std::memcpy(v.data() + kPosBaseAt, &base, 8);
    fake::repair_state_checksums(v);
    return v;
  };
  const uint64_t fp = m->fingerprint();
  for (int64_t base : {INT64_MAX, INT64_MAX - 4, int64_t{INT32_MAX} - 4, int64_t{-1}, INT64_MIN}) {
    const std::vector<uint8_t> v = with_base(base);
    Status st = m->load_seq(v.data(), v.size(), 1);
    EXPECT_EQ(st.code(), ErrorCode::kFormat) << base << ": " << st.ToString();
    EXPECT_NE(st.message().find("out of range"), std::string::npos) << st.message();
    EXPECT_EQ(m->fingerprint(), fp);
  }
  // The last representable position is INT32_MAX - 1: 5 tokens from INT32_MAX - 5 fit.
  const std::vector<uint8_t> v = with_base(int64_t{INT32_MAX} - 5);
  ASSERT_TRUE(m->load_seq(v.data(), v.size(), 1).ok());
  expect_seq(*m, 1, iota(5), int64_t{INT32_MAX} - 5);
}

// The input with which fuzz_state_load found that overflow (tests/fuzz/corpus/state_load), read
// as the fuzzer reads it: byte 0 = flags (bit 0 repair checksums, bit 1 one sequence, bits 2-4
// destination), then the state file.
TEST(SaveLoad, FuzzFindingPositionBaseOverflowIsRefused) {
  std::ifstream in(
      std::string(CHIMERA_SOURCE_DIR) + "/tests/fuzz/corpus/state_load/regress_pos_base_overflow",
      std::ios::binary);
  ASSERT_TRUE(in) << "regression input missing";
  const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
  ASSERT_GT(data.size(), 1u);
  const uint8_t flags = data[0];
  ASSERT_EQ(flags & 3, 3) << "the finding loads one repaired sequence";
  std::vector<uint8_t> v(data.begin() + 1, data.end());
  fake::repair_state_checksums(v);
  auto m = make(fake::state_load_config());
  const uint64_t fp = m->fingerprint();
  Status st = m->load_seq(v.data(), v.size(), (flags >> 2) & 7);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("positions"), std::string::npos) << st.ToString();
  EXPECT_EQ(m->fingerprint(), fp);
}

TEST(Accounting, BytesAddUp) {
  MemoryConfig c = small_hybrid();
  auto m = make(c);
  ASSERT_TRUE(decode(*m, 0, iota(6)).ok());
  ASSERT_TRUE(m->seq_cp(0, 1).ok());
  const MemoryUsage u = m->usage();
  // page = 4 tokens * (4-byte id + K and V of 8 F16 elements); state = 16 floats.
  const uint64_t page = 4 * (4 + 2 * 8 * 2), state = 16 * 4;
  EXPECT_EQ(u.kv_bytes, 2 * page);
  EXPECT_EQ(u.state_bytes, 2 * state);  // the zero state + one shared live state
  EXPECT_EQ(u.live_kv_bytes, 2 * page);
  EXPECT_EQ(u.snapshot_bytes, 0u);
  ASSERT_EQ(u.seqs.size(), 2u);
  EXPECT_EQ(u.seqs[0].kv_bytes, 2 * page);
  EXPECT_EQ(u.seqs[0].state_bytes, state);
  const std::string s = u.summary();
  EXPECT_NE(s.find("seq 1: 6 tokens, 2 pages"), std::string::npos) << s;
  // Truncating leaves the old pages held only by... nobody: they are freed.
  ASSERT_TRUE(m->seq_rm(0, 0, -1).ok());
  ASSERT_TRUE(m->seq_rm(1, 0, -1).ok());
  EXPECT_EQ(m->usage().kv_bytes, 0u);
  EXPECT_EQ(m->usage().state_bytes, state);
}

TEST(Config, RejectsBadLayouts) {
  MemoryConfig c = small_hybrid();
  c.layers[0].kv_dim = 0;
  auto m = HybridMemory::create(c);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("layer 0"), std::string::npos);
  c = small_hybrid();
  c.kv_type = GgmlType::Q8_0;
  EXPECT_EQ(HybridMemory::create(c).status().code(), ErrorCode::kUnsupported);
  c = small_hybrid();
  c.budget_bytes = 10;
  EXPECT_EQ(HybridMemory::create(c).status().code(), ErrorCode::kOutOfMemory);
}

}  // namespace
}  // namespace chimera
