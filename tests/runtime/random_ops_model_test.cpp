// MEMORY.md section 7, item 2: random operation sequences on real (synthetic, random-weight)
// models. After every operation, a sequence's next-token logits must be bit-identical to a cold
// run over its token list, which the test tracks on its own (the oracle never asks the memory).
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>

#include "models/synthetic.h"
#include "runtime/context.h"

namespace chimera {
namespace {

constexpr int kSeqs = 8;

struct RunSpec {
  const char* arch;
  uint32_t seed;
  int steps;
};
void PrintTo(const RunSpec& r, std::ostream* os) {
  *os << r.arch << " seed " << r.seed << " steps " << r.steps;
}

class RandomOpsOnModel : public ::testing::TestWithParam<RunSpec> {
 protected:
  void SetUp() override {
    const std::string param = GetParam().arch;
    if (param.rfind("fixture:", 0) == 0) {  // a transformers-made model fixture
      path_ = std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/models/" + param.substr(8);
    } else {
      SyntheticSpec s;
      s.arch = param;
      s.n_layer = 3;
      s.rope = true;  // granitehybrid with RoPE: shifting positions must replay
      path_ = ::testing::TempDir() + "/random_ops_" + s.arch + ".gguf";
      ASSERT_TRUE(write_synthetic_model(s, path_).ok());
    }
    auto m = load_model(path_);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(*m);
  }

  ContextParams params(int threads, uint32_t ubatch) const {
    ContextParams p;
    p.n_threads = threads;
    p.max_ubatch = ubatch;
    p.max_seqs = kSeqs;
    p.page_size = 8;
    p.snapshot_interval = 12;
    p.memory_budget = 128ull << 20;
    p.snapshot_budget = 1ull << 20;  // small: eviction happens
    p.window_reserve = 3;            // window layers: rows behind the window are released
    return p;
  }

  std::vector<float> cold(const std::vector<int32_t>& toks) {
    auto ctx = Context::create(*model_, params(1, 512));
    EXPECT_TRUE(ctx.ok());
    Batch b;
    for (size_t i = 0; i < toks.size(); ++i)
      b.add(toks[i], static_cast<int32_t>(i), 0, i + 1 == toks.size());
    EXPECT_TRUE((*ctx)->decode(b).ok());
    const float* l = (*ctx)->logits(toks.size() - 1);
    return std::vector<float>(l, l + model_->hp.n_vocab);
  }

  // Every non-empty sequence's next-token logits (one probe token each, all in one batch) equal
  // a cold run's; the probes are then removed again (an exact rollback).
  void expect_all_match_cold(Context& ctx, const std::vector<std::vector<int32_t>>& shadow) {
    Batch b;
    std::vector<std::pair<int, size_t>> entries;
    const int32_t probe = 5;
    for (int q = 0; q < kSeqs; ++q) {
      if (shadow[q].empty()) continue;
      entries.push_back({q, b.size()});
      b.add(probe, static_cast<int32_t>(shadow[q].size()), q, true);
    }
    if (entries.empty()) return;
    ASSERT_TRUE(ctx.decode(b).ok());
    for (auto [q, e] : entries) {
      auto toks = shadow[q];
      toks.push_back(probe);
      const std::vector<float> want = cold(toks);
      ASSERT_EQ(std::memcmp(ctx.logits(e), want.data(), want.size() * 4), 0) << "seq " << q;
    }
    for (auto [q, e] : entries)
      ASSERT_TRUE(ctx.seq_rm(q, static_cast<int64_t>(shadow[q].size()), -1).ok());
  }

  void run_random_ops();

  std::string path_;
  std::unique_ptr<Model> model_;
};

void RandomOpsOnModel::run_random_ops() {
  const uint32_t seed = GetParam().seed;
  const int steps = GetParam().steps;
  SCOPED_TRACE(::testing::Message() << "seed " << seed << ", model " << GetParam().arch);
  std::mt19937 rng(seed);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto created = Context::create(*model_, params(2, 16));
  ASSERT_TRUE(created.ok());
  std::unique_ptr<Context> ctx = std::move(created).value();
  std::vector<std::vector<int32_t>> shadow(kSeqs);
  std::vector<std::pair<uint64_t, std::vector<int32_t>>> snaps;  // explicit snapshots
  std::map<std::string, int> counts;
  const int V = static_cast<int>(model_->hp.n_vocab);

  for (int step = 0; step < steps; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    const int op = uni(0, 9);
    const int s = uni(0, kSeqs - 1);
    if (op <= 3) {  // decode a batch over several sequences, checking one of them
      Batch b;
      std::vector<std::vector<int32_t>> next = shadow;
      int check = -1;
      size_t check_entry = 0;
      for (int q = 0; q < kSeqs; ++q) {
        if (uni(0, 2) == 0) continue;
        const int n = uni(1, 14);
        for (int i = 0; i < n; ++i) {
          const int32_t t = uni(0, V - 1);
          if (i + 1 == n && (check < 0 || uni(0, 1))) {
            check = q;
            check_entry = b.size();
          }
          b.add(t, static_cast<int32_t>(next[q].size()), q, i + 1 == n);
          next[q].push_back(t);
        }
      }
      if (b.size() == 0) continue;
      if (uni(0, 5) == 0) {  // a failed batch changes nothing
        ctx->inject_compute_failure(uni(0, 2));
        const uint64_t before = ctx->memory().fingerprint();
        if (!ctx->decode(b).ok()) {
          ctx->inject_compute_failure(-1);
          ASSERT_EQ(ctx->memory().fingerprint(), before) << "failed batch changed the memory";
          expect_all_match_cold(*ctx, shadow);
          if (HasFatalFailure()) return;
          ++counts["failed batch"];
          continue;
        }
        ctx->inject_compute_failure(-1);
      } else {
        ASSERT_TRUE(ctx->decode(b).ok());
      }
      shadow = next;
      const float* l = ctx->logits(check_entry);
      ASSERT_NE(l, nullptr);
      auto want = cold(shadow[check]);
      ASSERT_EQ(std::memcmp(l, want.data(), want.size() * 4), 0) << "seq " << check;
      ++counts["decode"];
    } else if (op == 4 && !shadow[s].empty()) {  // tail removal
      const int p = uni(0, static_cast<int>(shadow[s].size()) - 1);
      ASSERT_TRUE(ctx->seq_rm(s, p, -1).ok());
      shadow[s].resize(p);
      ++counts["rm tail"];
    } else if (op == 5 && shadow[s].size() > 2) {  // prefix or middle removal
      const int n = static_cast<int>(shadow[s].size());
      const int p0 = uni(0, n - 2), p1 = uni(p0 + 1, n - 1);
      ASSERT_TRUE(ctx->seq_rm(s, p0, p1).ok());
      shadow[s].erase(shadow[s].begin() + p0, shadow[s].begin() + p1);
      ++counts["rm range"];
    } else if (op == 6) {  // fork
      const int d = uni(0, kSeqs - 1);
      if (d == s) continue;
      ASSERT_TRUE(ctx->memory().seq_cp(s, d).ok());
      shadow[d] = shadow[s];
      ++counts["seq_cp"];
    } else if (op == 7 && !shadow[s].empty()) {  // explicit snapshot
      auto id = ctx->memory().snapshot(s);
      ASSERT_TRUE(id.ok()) << id.status().ToString();
      snaps.push_back({*id, shadow[s]});
      ++counts["snapshot"];
    } else if (op == 8 && !snaps.empty()) {  // restore one onto a random sequence
      const size_t k = uni(0, static_cast<int>(snaps.size()) - 1);
      ASSERT_TRUE(ctx->memory().restore(s, snaps[k].first).ok());
      shadow[s] = snaps[k].second;
      if (uni(0, 1)) {
        ASSERT_TRUE(ctx->memory().release(snaps[k].first).ok());
        snaps.erase(snaps.begin() + k);
      }
      ++counts["restore"];
    } else if (op == 9 && uni(0, 9) == 0) {
      ASSERT_TRUE(ctx->memory().seq_keep(s).ok());
      for (int q = 0; q < kSeqs; ++q)
        if (q != s) shadow[q].clear();
      ++counts["seq_keep"];
    }
    // Every sequence the memory holds has the token list the oracle expects.
    for (int q = 0; q < kSeqs; ++q) ASSERT_EQ(ctx->memory().tokens(q), shadow[q]) << "seq " << q;
  }
  expect_all_match_cold(*ctx, shadow);
  EXPECT_GE(counts["decode"], steps / 6);
  EXPECT_GE(counts["rm tail"] + counts["rm range"], steps / 24);
  EXPECT_GE(counts["failed batch"], 1);
}

TEST_P(RandomOpsOnModel, EveryStepMatchesAColdRun) {
  run_random_ops();
}

// The slow suite runs the same operations longer, with other seeds (excluded from the sanitizer
// run by its name).
class RandomOpsOnModel_Slow : public RandomOpsOnModel {};
TEST_P(RandomOpsOnModel_Slow, EveryStepMatchesAColdRun) {
  run_random_ops();
}

std::string run_name(const ::testing::TestParamInfo<RunSpec>& info) {
  std::string arch = info.param.arch;
  if (arch.rfind("fixture:", 0) == 0) arch = arch.substr(8, arch.find('/') - 8) + "_fixture";
  for (char& c : arch)
    if (c == '-') c = '_';  // falcon-h1
  return arch + "_seed" + std::to_string(info.param.seed);
}

INSTANTIATE_TEST_SUITE_P(
    Models, RandomOpsOnModel,
    ::testing::Values(RunSpec{"granitehybrid", 20261127, 120}, RunSpec{"granitehybrid", 7, 120},
                      RunSpec{"mamba2", 20261127, 120}, RunSpec{"mamba2", 8, 120},
                      RunSpec{"llama", 20261127, 120}, RunSpec{"llama", 9, 120},
                      RunSpec{"granite", 20261127, 120}, RunSpec{"granite", 10, 120},
                      // gated-DeltaNet hybrids (qwen35: tiled value heads, qwen3next: grouped
                      // heads + MoE)
                      RunSpec{"fixture:qwen35/model-f16.gguf", 20261127, 120},
                      RunSpec{"fixture:qwen3next/model-f16.gguf", 20261127, 120},
                      // Mamba2 + NoPE attention + FFN-only layers
                      RunSpec{"fixture:nemotron_h/model-f16.gguf", 20261127, 120},
                      RunSpec{"fixture:nemotron_h_moe/model-f16.gguf", 20261127, 120},
                      // short-conv + QK-norm attention, sigmoid-routed MoE
                      RunSpec{"fixture:lfm2moe/model-f16.gguf", 20261127, 120},

                      RunSpec{"fixture:falcon-h1/model-f16.gguf", 20261127, 120},

                      // sliding-window attention (window 8) + global attention
                      RunSpec{"fixture:gemma3/model-f16.gguf", 20261127, 120}),
    run_name);
INSTANTIATE_TEST_SUITE_P(Long, RandomOpsOnModel_Slow,
                         ::testing::Values(RunSpec{"granitehybrid", 31, 600},
                                           RunSpec{"mamba2", 32, 600}, RunSpec{"llama", 33, 600},
                                           RunSpec{"granite", 34, 600}),
                         run_name);

}  // namespace
}  // namespace chimera
