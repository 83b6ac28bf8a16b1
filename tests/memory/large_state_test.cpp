// Snapshot accounting and budgets with the recurrent states of a gated-DeltaNet hybrid: a
// Qwen3.5-0.8B-like layout (18 DeltaNet layers with a 16 x 128 x 128 delta state and a
// 3 x 6144 conv state, ~1.1 MiB per layer and ~19 MiB per sequence, plus 6 attention layers).
// States this large make every snapshot and every fork cost MiB: the byte counts must add up
// exactly, automatic snapshots must stay inside their budget, and a batch that does not fit the
// overall budget must fail without changing anything.
#include <gtest/gtest.h>

#include "fake_model.h"

namespace chimera {
namespace {

constexpr uint64_t kConv = 3 * (2 * 16 * 128 + 16 * 128), kDelta = 16 * 128 * 128;
constexpr uint64_t kSeqStateBytes = 18 * (kConv + kDelta) * 4;

MemoryConfig qwen35_like() {
  MemoryConfig c;
  for (int il = 0; il < 24; ++il) {
    if ((il + 1) % 4)
      c.layers.push_back({LayerKind::kRecurrent, 0, kConv, kDelta});
    else
      c.layers.push_back({LayerKind::kAttention, 2 * 256, 0, 0});
  }
  c.n_vocab = 100;
  c.max_seqs = 8;
  c.page_size = 16;
  c.kv_type = GgmlType::F16;
  c.budget_bytes = 256ull << 20;
  c.snapshot_budget_bytes = 64ull << 20;
  c.snapshot_interval = 4;
  c.snapshot_prompt_end = false;
  c.snapshot_prompt_start = false;
  return c;
}

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

TEST(LargeRecurrentStates, SnapshotsStayInsideTheirBudgetAndBytesAddUp) {
  const MemoryConfig c = qwen35_like();
  auto made = HybridMemory::create(c);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  HybridMemory& m = **made;
  std::vector<int32_t> toks;
  for (int i = 0; i < 40; ++i) {
    toks.push_back((7 * i + 3) % 100);
    ASSERT_TRUE(decode(m, 0, {toks.back()}).ok()) << "token " << i;
    const MemoryUsage u = m.usage();
    EXPECT_LE(u.snapshot_bytes, c.snapshot_budget_bytes) << "token " << i;
    EXPECT_LE(u.total_bytes(), c.budget_bytes) << "token " << i;
    // every slot is a whole per-sequence state: zero state + live state + snapshot states
    EXPECT_EQ(u.state_bytes % kSeqStateBytes, 0u) << "token " << i;
  }
  const MemoryUsage u = m.usage();
  // 64 MiB hold three ~19 MiB states owned only by snapshots (plus their few KV pages), never
  // four; the snapshot at 40 shares the live state and costs nothing extra
  EXPECT_EQ(u.n_snapshots, 4u) << u.summary();
  EXPECT_LT(u.snapshot_bytes - 3 * kSeqStateBytes, 1u << 20) << u.summary();
  EXPECT_EQ(u.state_bytes, (2 + 3) * kSeqStateBytes) << u.summary();
  ASSERT_EQ(u.seqs.size(), 1u);
  EXPECT_EQ(u.seqs[0].state_bytes, kSeqStateBytes);
  std::vector<uint32_t> at;
  for (auto [id, n] : m.snapshots_of(0)) at.push_back(n);
  EXPECT_EQ(at, (std::vector<uint32_t>{28, 32, 36, 40}));  // the newest automatic ones
  EXPECT_EQ(fake::check_seq(m, 0, toks, 0), "");
  // Rolling back to a snapshot and forking share states instead of copying them.
  ASSERT_TRUE(m.seq_rm(0, 32, -1).ok());  // back to the snapshot at 32, no replay
  toks.resize(32);
  EXPECT_EQ(fake::check_seq(m, 0, toks, 0), "");
  const uint64_t before = m.usage().state_bytes;
  ASSERT_TRUE(m.seq_cp(0, 1).ok());
  EXPECT_EQ(m.usage().state_bytes, before);  // the fork shares seq 0's live state
  ASSERT_TRUE(decode(m, 1, {5}).ok());
  EXPECT_EQ(m.usage().seqs.size(), 2u);
  EXPECT_EQ(m.usage().seqs[1].state_bytes, kSeqStateBytes);
}

TEST(LargeRecurrentStates, BatchPastTheBudgetFailsWithoutATrace) {
  MemoryConfig c = qwen35_like();
  c.snapshot_interval = 0;
  c.budget_bytes = 4 * kSeqStateBytes + (1 << 20);  // zero state + 3 live states + KV pages
  auto made = HybridMemory::create(c);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  HybridMemory& m = **made;
  for (int32_t s = 0; s < 3; ++s) ASSERT_TRUE(decode(m, s, {1, 2, 3}).ok()) << "seq " << s;
  const uint64_t fp = m.fingerprint();
  const MemoryUsage u = m.usage();
  Status st = decode(m, 3, {4, 5});  // a fourth live state does not fit
  EXPECT_EQ(st.code(), ErrorCode::kOutOfMemory) << st.ToString();
  EXPECT_NE(st.message().find("budget"), std::string::npos) << st.message();
  EXPECT_EQ(m.fingerprint(), fp);
  EXPECT_EQ(m.usage().state_bytes, u.state_bytes);
  EXPECT_FALSE(m.in_batch());
  ASSERT_TRUE(m.seq_rm(2, 0, -1).ok());  // freeing one makes room
  EXPECT_TRUE(decode(m, 3, {4, 5}).ok());
}

}  // namespace
}  // namespace chimera
