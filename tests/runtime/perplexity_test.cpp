#include "runtime/perplexity.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

namespace chimera {
namespace {

const std::string kDir =
    std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/models/granitehybrid-dense/";

// The perplexity of the len100 sequence from the transformers logits (an independent
// implementation) equals ours: one window of 100, the second half scored.
TEST(Perplexity, MatchesTransformersLogits) {
  std::ifstream jf(kDir + "reference.json");
  auto ref = nlohmann::json::parse(jf);
  const int64_t V = ref["n_vocab"].get<int64_t>();
  nlohmann::json seq;
  for (const auto& s : ref["sequences"])
    if (s["name"] == "len100") seq = s;
  ASSERT_FALSE(seq.is_null());
  std::vector<int32_t> toks = seq["tokens"].get<std::vector<int32_t>>();
  std::vector<float> hf(toks.size() * V);
  std::ifstream lf(kDir + seq["logits"].get<std::string>(), std::ios::binary);
  lf.read(reinterpret_cast<char*>(hf.data()), hf.size() * 4);
  ASSERT_TRUE(lf.good());
  const uint32_t n_ctx = static_cast<uint32_t>(toks.size()), first = n_ctx / 2;
  double nll = 0;
  for (uint32_t i = first; i + 1 < n_ctx; ++i) {
    const float* l = hf.data() + int64_t(i) * V;
    double m = l[0], s = 0;
    for (int64_t k = 0; k < V; ++k) m = std::max<double>(m, l[k]);
    for (int64_t k = 0; k < V; ++k) s += std::exp(double(l[k]) - m);
    nll += -(double(l[toks[i + 1]]) - m - std::log(s));
  }
  const double hf_ppl = std::exp(nll / (n_ctx - 1 - first));

  auto m = load_model(kDir + "model-f32.gguf");
  ASSERT_TRUE(m.ok());
  ContextParams cp;
  cp.kv_type = GgmlType::F32;
  cp.memory_budget = 64ull << 20;
  auto ctx = Context::create(**m, cp);
  ASSERT_TRUE(ctx.ok());
  PerplexityParams pp;
  pp.n_ctx = n_ctx;
  auto r = compute_perplexity(**ctx, toks, pp);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->n_scored, n_ctx - 1 - first);
  EXPECT_EQ(r->n_windows, 1u);
  // Logits agree to NMSE < 1e-6 (parity tests); the mean NLL then agrees to ~1e-5 relative.
  EXPECT_NEAR(r->ppl, hf_ppl, 1e-4 * hf_ppl);
  EXPECT_GT(r->ppl_uncertainty, 0);
}

TEST(Perplexity, KlDivergenceOfAModelWithItselfIsZero) {
  auto m = load_model(kDir + "model-f32.gguf");
  ASSERT_TRUE(m.ok());
  auto ctx = Context::create(**m, ContextParams{});
  ASSERT_TRUE(ctx.ok());
  std::vector<int32_t> toks(96);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<int32_t>((i * 37 + 11) % 300);
  PerplexityParams pp;
  pp.n_ctx = 32;
  pp.stride = 16;
  pp.save_logprobs = ::testing::TempDir() + "/base.lp";
  auto base = compute_perplexity(**ctx, toks, pp);
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  EXPECT_EQ(base->n_windows, 5u);  // windows start at 0, 16, 32, 48, 64
  pp.save_logprobs.clear();
  pp.kl_base = ::testing::TempDir() + "/base.lp";
  auto again = compute_perplexity(**ctx, toks, pp);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ASSERT_TRUE(again->has_kl);
  EXPECT_EQ(again->ppl, base->ppl) << "exact engine: the same run gives the same numbers";
  // The base log-probs are stored as float32: each differs from the double value by at most
  // |lp| * 2^-24 (|lp| < 20 here), so the KL is below 20 * 6e-8 ~ 1.2e-6 in magnitude.
  EXPECT_LT(std::fabs(again->kl_mean), 2e-6);
  EXPECT_EQ(again->same_top1, 1.0);
  pp.n_ctx = 48;  // mismatched base: clear error
  auto bad = compute_perplexity(**ctx, toks, pp);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("same text and flags"), std::string::npos);
}

TEST(Perplexity, TextShorterThanOneWindowIsAnError) {
  auto m = load_model(kDir + "model-f32.gguf");
  ASSERT_TRUE(m.ok());
  auto ctx = Context::create(**m, ContextParams{});
  ASSERT_TRUE(ctx.ok());
  PerplexityParams pp;
  pp.n_ctx = 64;
  auto r = compute_perplexity(**ctx, std::vector<int32_t>(10, 1), pp);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("fewer than one window"), std::string::npos);
}

}  // namespace
}  // namespace chimera
