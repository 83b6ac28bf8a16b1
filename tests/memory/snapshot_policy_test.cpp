// The automatic snapshot policies (SnapshotPolicy): a one-shot run keeps none, however its prompt
// is chunked; a conversation keeps its turn boundaries and the interval points. Explicit
// snapshots work the same under either.
#include <gtest/gtest.h>

#include "fake_model.h"

namespace chimera {
namespace {

MemoryConfig config(const SnapshotPolicy& p) {
  MemoryConfig c;
  c.layers = {{LayerKind::kAttention, 8, 0, 0}, {LayerKind::kRecurrent, 0, 6, 10}};
  c.n_vocab = 100;
  c.max_seqs = 4;
  c.page_size = 4;
  c.budget_bytes = 1 << 20;
  c.snapshot_budget_bytes = 1 << 20;
  c.set_snapshot_policy(p);
  return c;
}

void decode(HybridMemory& m, int32_t seq, int n, int first_token) {
  Batch b;
  for (int i = 0; i < n; ++i)
    b.add((first_token + i) % 100, static_cast<int32_t>(m.next_pos(seq) + i), seq, i + 1 == n);
  auto plan = m.begin_batch(b);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  std::string why;
  ASSERT_TRUE(fake::run_batch(m, b, **plan, nullptr, &why)) << why;
  ASSERT_TRUE(m.commit().ok());
}

std::vector<uint32_t> snapshot_counts(const HybridMemory& m, int32_t seq) {
  std::vector<uint32_t> out;
  for (auto [id, n] : m.snapshots_of(seq)) out.push_back(n);
  return out;
}

// A 600-token prompt fed in chunks of 256, then 20 decoded tokens (the shape of `chimera run`).
void one_run(HybridMemory& m) {
  decode(m, 0, 256, 1);
  decode(m, 0, 256, 2);
  decode(m, 0, 88, 3);
  for (int i = 0; i < 20; ++i) decode(m, 0, 1, 4 + i);
}

TEST(SnapshotPolicy, OneShotKeepsNoAutomaticSnapshots) {
  auto m = HybridMemory::create(config(SnapshotPolicy::one_shot()));
  ASSERT_TRUE(m.ok());
  one_run(**m);
  EXPECT_TRUE(snapshot_counts(**m, 0).empty());
  const MemoryUsage u = (*m)->usage();
  EXPECT_EQ(u.n_snapshots, 0u);
  EXPECT_EQ(u.snapshot_bytes, 0u);
  // Explicit snapshots are the caller's, whatever the policy.
  auto id = (*m)->snapshot(0);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(snapshot_counts(**m, 0), std::vector<uint32_t>{620});
  EXPECT_TRUE((*m)->release(*id).ok());
}

TEST(SnapshotPolicy, ConversationKeepsTurnBoundariesAndIntervals) {
  auto m = HybridMemory::create(config(SnapshotPolicy::conversation()));
  ASSERT_TRUE(m.ok());
  one_run(**m);
  // Interval points (256, 512) and the chunk boundaries 256, 512 (already there) and 600.
  EXPECT_EQ(snapshot_counts(**m, 0), (std::vector<uint32_t>{256, 512, 600}));
  decode(**m, 0, 5, 9);  // the next turn starts at 620: a boundary snapshot before it
  EXPECT_EQ(snapshot_counts(**m, 0), (std::vector<uint32_t>{256, 512, 600, 620, 625}));
}

}  // namespace
}  // namespace chimera
