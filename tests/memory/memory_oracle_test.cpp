// The model-free oracle test (MEMORY.md section 7 item 1): random operation sequences on
// attention-only, recurrent-only and hybrid memories, every sequence checked bit for bit against
// the state its token list implies after every operation. CHIMERA_MEMORY_OPS=<n> sets the number
// of operations of the _Slow run (default 100,000 across the configurations; the 1,000,000-op
// acceptance run is CHIMERA_MEMORY_OPS=1000000), CHIMERA_MEMORY_SEED its first seed.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "random_ops.h"

namespace chimera {
namespace {

MemoryConfig hybrid_config(GgmlType type, uint32_t page_size, uint64_t budget) {
  MemoryConfig c;
  c.layers = {{LayerKind::kRecurrent, 0, 8, 12},
              {LayerKind::kAttention, 8, 0, 0, 2},  // 2 kv heads: head-major pages
              {LayerKind::kNone, 0, 0, 0},
              {LayerKind::kRecurrent, 0, 6, 20},
              {LayerKind::kAttention, 4, 0, 0, 4}};
  c.n_vocab = 1000;
  c.max_seqs = 64;
  c.page_size = page_size;
  c.kv_type = type;
  c.budget_bytes = budget;
  c.snapshot_budget_bytes = budget / 4;
  c.snapshot_interval = 16;
  return c;
}

MemoryConfig attention_config() {
  MemoryConfig c = hybrid_config(GgmlType::F32, 8, 4 << 20);
  c.layers = {{LayerKind::kAttention, 8, 0, 0}, {LayerKind::kAttention, 16, 0, 0, 4}};
  return c;
}

MemoryConfig recurrent_config() {
  MemoryConfig c = hybrid_config(GgmlType::F16, 5, 4 << 20);
  c.layers = {{LayerKind::kRecurrent, 0, 4, 9}, {LayerKind::kRecurrent, 0, 7, 3}};
  c.snapshot_interval = 7;
  return c;
}

// Sliding-window layers (two windows, a global layer beside them), rows behind the window
// released: sequences grow to many windows, so pages are released, restored and replayed.
MemoryConfig window_config(GgmlType type, uint32_t page_size, uint32_t reserve) {
  MemoryConfig c = hybrid_config(type, page_size, 8 << 20);
  c.layers = {{LayerKind::kAttention, 8, 0, 0, 2, 6},
              {LayerKind::kAttention, 4, 0, 0, 1, 0},
              {LayerKind::kAttention, 4, 0, 0, 2, 11}};
  c.window_reserve = reserve;
  c.snapshot_interval = 24;
  return c;
}

struct Case {
  const char* name;
  MemoryConfig cfg;
  uint32_t active_seqs, max_len;
};

std::vector<Case> cases() {
  return {
      {"hybrid F16, page 4", hybrid_config(GgmlType::F16, 4, 8 << 20), 64, 200},
      {"hybrid BF16, page 16, tight budget", hybrid_config(GgmlType::BF16, 16, 96 << 10), 12, 120},
      {"hybrid F32, page 1, no interval",
       [] {
         MemoryConfig c = hybrid_config(GgmlType::F32, 1, 8 << 20);
         c.snapshot_interval = 0;
         c.snapshot_prompt_start = false;
         return c;
       }(),
       8, 100},
      {"attention only F32", attention_config(), 64, 200},
      {"windowed F16, page 4, reserve 3", window_config(GgmlType::F16, 4, 3), 16, 200},
      {"windowed F32, page 1, reserve 0, no snapshots",
       [] {
         MemoryConfig c = window_config(GgmlType::F32, 1, 0);
         c.snapshot_interval = 0;
         c.snapshot_prompt_end = c.snapshot_prompt_start = false;
         return c;
       }(),
       8, 120},
      {"windowed only BF16, page 5, reserve 7, tight budget",
       [] {
         MemoryConfig c = window_config(GgmlType::BF16, 5, 7);
         c.layers = {{LayerKind::kAttention, 8, 0, 0, 2, 9}};
         c.budget_bytes = 48 << 10;
         c.snapshot_budget_bytes = 8 << 10;
         return c;
       }(),
       12, 200},
      {"windowed hybrid F16, page 3, reserve 2",
       [] {
         MemoryConfig c = hybrid_config(GgmlType::F16, 3, 8 << 20);
         c.layers[1].window = 7;  // the recurrent layers' snapshots hold the window rows too
         c.window_reserve = 2;
         return c;
       }(),
       16, 150},
      {"recurrent only", recurrent_config(), 64, 200},
  };
}

// Returns the number of seq_rm cuts behind released window rows.
uint64_t run_case(const Case& c, uint64_t seed, uint64_t n_ops, uint64_t full_every) {
  auto mem = HybridMemory::create(c.cfg);
  EXPECT_TRUE(mem.ok()) << mem.status().ToString();
  if (!mem.ok()) return 0;
  fake::RandomOps ops(**mem, seed, c.active_seqs, c.max_len);
  const std::string err = ops.run(n_ops, full_every);
  EXPECT_EQ(err, "") << c.name << ", seed " << seed << " (rerun with this seed to reproduce)";
  EXPECT_EQ(ops.check_all(), "") << c.name << ", seed " << seed;
  const MemoryUsage u = (*mem)->usage();
  std::printf(
      "%-40s seed %3llu: %llu ops, %llu batches, %llu tokens; end: %u pages (%u window), %u "
      "slots, %u snapshots; %llu cuts behind released window rows\n",
      c.name, static_cast<unsigned long long>(seed), static_cast<unsigned long long>(ops.ops()),
      static_cast<unsigned long long>(ops.batches()),
      static_cast<unsigned long long>(ops.tokens_decoded()), u.pages_in_use, u.window_pages_in_use,
      u.slots_in_use, u.n_snapshots, static_cast<unsigned long long>(ops.window_restores()));
  return ops.window_restores();
}

TEST(MemoryOracle, RandomOperationsBounded) {
  for (const Case& c : cases()) {
    uint64_t window_restores = 0;
    for (uint64_t seed : {1, 2, 3}) window_restores += run_case(c, seed, 600, 1);
    // The windowed cases do reach the release / restore + replay paths.
    if (std::string(c.name).find("windowed") != std::string::npos) {
      EXPECT_GT(window_restores, 0u) << c.name;
    }
  }
}

TEST(MemoryOracle, RandomOperations_Slow) {
  const char* env = std::getenv("CHIMERA_MEMORY_OPS");
  const uint64_t total = env ? std::strtoull(env, nullptr, 10) : 100000;
  const std::vector<Case> cs = cases();
  const uint64_t per_case = total / cs.size();
  const uint64_t seed = std::getenv("CHIMERA_MEMORY_SEED")
                            ? std::strtoull(std::getenv("CHIMERA_MEMORY_SEED"), nullptr, 10)
                            : 12345;
  for (const Case& c : cs) {
    // Chunks with their own seeds, so a failure names a short reproducible run.
    for (uint64_t done = 0, k = 0; done < per_case; done += 20000, ++k)
      run_case(c, seed + k, std::min<uint64_t>(20000, per_case - done), 64);
  }
}

}  // namespace
}  // namespace chimera
