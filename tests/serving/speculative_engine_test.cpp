// Speculative decoding inside the engine's continuous batch: concurrent requests, some drafting
// (n-grams or a draft model) and some not (draft_max 0), n choices, stops and the context bound;
// every request's tokens, text, finish reason and logprobs equal those of an engine without a
// drafter, and the drafted/accepted counts reach the timings and the metrics.
#include <gtest/gtest.h>

#include "serving/engine.h"
#include "serving_test_util.h"

namespace chimera::serving {
namespace {

using testutil::collect;
using testutil::Fixture;
using testutil::Outcome;

std::vector<RequestParams> requests(const Fixture& f) {
  std::vector<RequestParams> reqs;
  const char* texts[] = {"In the beginning", "And God said", "Let there be light",
                         "And the evening and the morning"};
  for (int i = 0; i < 8; ++i) {
    RequestParams p = f.request(texts[i % 4], 20 + 3 * (i % 3));
    if (i % 2 == 1) p.sampling = f.hot_sampling(40 + i);
    if (i == 3) p.n = 2;
    if (i == 5) p.draft_max = 0;  // this one decodes plainly among speculating ones
    if (i == 6) p.draft_max = 2;
    if (i == 7) p.stop = {"e"};
    reqs.push_back(p);
  }
  return reqs;
}

// out: the engine's metrics at the end (when not null).
void run_against_plain(const Fixture& f, Drafter& drafter, MetricsSnapshot* out = nullptr) {
  const std::vector<RequestParams> reqs = requests(f);
  std::vector<Outcome> want;
  {
    auto plain = f.engine();
    for (const auto& p : reqs) want.push_back(f.run(*plain, p));
  }
  EngineConfig cfg = f.config();
  cfg.drafter = &drafter;
  cfg.spec.draft_max = 6;
  cfg.spec.adaptive = false;  // draft every step
  cfg.step_token_budget = 24;
  auto engine = f.engine(cfg);
  std::vector<std::shared_ptr<RequestHandle>> hs;
  for (const auto& p : reqs) {
    auto h = engine->submit(p);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    hs.push_back(*h);
  }
  int64_t drafted = 0;
  for (size_t i = 0; i < hs.size(); ++i) {
    Outcome o = collect(*hs[i]);
    testutil::expect_same(want[i], o, "request " + std::to_string(i) + " with " + drafter.name());
    EXPECT_LE(o.timings.draft_n_accepted, o.timings.draft_n);
    if (reqs[i].draft_max == 0) {
      EXPECT_EQ(o.timings.draft_n, 0);
    }
    drafted += o.timings.draft_n;
  }
  EXPECT_GT(drafted, 0);
  const MetricsSnapshot m = engine->metrics();
  EXPECT_EQ(static_cast<int64_t>(m.draft_tokens), drafted);
  ASSERT_FALSE(m.draft_tokens_by_position.empty());
  uint64_t by_pos = 0, ok_pos = 0;
  for (size_t i = 0; i < m.draft_tokens_by_position.size(); ++i) {
    by_pos += m.draft_tokens_by_position[i];
    ok_pos += m.draft_accepted_by_position[i];
  }
  EXPECT_EQ(by_pos, m.draft_tokens);
  EXPECT_EQ(ok_pos, m.draft_tokens_accepted);
  EXPECT_GT(m.draft_tokens_accepted, 0u);
  if (out) *out = m;
}

TEST(SpeculativeEngine, NgramDraftsAreExactInTheContinuousBatch) {
  for (const char* arch : {"granitehybrid-dense", "llama", "mamba2"}) {
    SCOPED_TRACE(arch);
    Fixture f(arch);
    NgramDrafter ngram({.n_max = 3, .n_min = 1});
    run_against_plain(f, ngram);
  }
}

TEST(SpeculativeEngine, DraftModelIsExactInTheContinuousBatch) {
  for (const char* arch : {"granitehybrid-moe", "mamba2-g2"}) {
    SCOPED_TRACE(arch);
    Fixture f(arch);
    auto draft = load_model(std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/models/" + arch +
                            "/model-f16.gguf");
    ASSERT_TRUE(draft.ok());
    DraftModelParams dp;
    dp.p_min = 0.0f;
    dp.context = f.ctx_params();
    dp.context.max_seqs = f.config().n_parallel * 16 + 64;
    auto drafter = ModelDrafter::create(*f.model, f.tok.get(), **draft, f.tok.get(), dp);
    ASSERT_TRUE(drafter.ok()) << drafter.status().ToString();
    MetricsSnapshot m;
    run_against_plain(f, **drafter, &m);
    // The engine reports the draft model's lookup staging as it stands.
    const LookupStats& l = (*drafter)->lookup_stats();
    EXPECT_EQ(m.draft_lookup_batches, static_cast<uint64_t>(l.batches));
    EXPECT_EQ(m.draft_lookup_proposed, static_cast<uint64_t>(l.proposed));
    EXPECT_EQ(m.draft_lookup_confirmed, static_cast<uint64_t>(l.confirmed));
    EXPECT_LE(m.draft_lookup_confirmed, m.draft_lookup_proposed);
  }
}

}  // namespace
}  // namespace chimera::serving
