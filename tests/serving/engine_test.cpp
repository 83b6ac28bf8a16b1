// The serving engine on a fixture model: exactness of tokens and logprobs (alone vs among
// concurrent requests, n choices vs separate seeded runs), limits, cancellation, metrics.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "runtime/generate.h"
#include "serving/engine.h"
#include "serving/engine_testing.h"
#include "serving_test_util.h"

namespace chimera::serving {
namespace {

using testutil::collect;
using testutil::Fixture;
using testutil::Outcome;

TEST(Engine, GreedyMatchesGenerate) {
  Fixture f;
  auto engine = f.engine();
  RequestParams p = f.request("And God said", 12);
  auto h = engine->submit(p);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  Outcome out = collect(**h);
  ASSERT_TRUE(out.ok) << out.error.ToString();
  ASSERT_EQ(out.choices.size(), 1u);
  EXPECT_EQ(out.choices[0].finish, "length");
  EXPECT_EQ(out.choices[0].tokens.size(), 12u);
  EXPECT_EQ(out.usage.prompt_tokens, static_cast<int64_t>(p.prompt.size()));
  EXPECT_EQ(out.usage.completion_tokens, 12);

  // The one-user runtime path on its own Context: same tokens, same text.
  ContextParams cp;
  cp.n_threads = 1;
  cp.memory_budget = 64ull << 20;
  auto ctx = Context::create(*f.model, cp);
  ASSERT_TRUE(ctx.ok());
  GenerateParams g;
  g.sampling = p.sampling;
  g.n_predict = 12;
  g.ignore_eos = true;
  Sampler s(g.sampling);
  auto r = generate(**ctx, *f.tok, 0, p.prompt, g, s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tokens, out.choices[0].tokens);
  EXPECT_EQ(r->text, out.choices[0].text);
}

TEST(Engine, AloneEqualsAmongFifteenConcurrent) {
  Fixture f;
  std::vector<RequestParams> reqs;
  const char* texts[] = {"In the beginning", "And the earth was", "Let there be light",
                         "The LORD is my shepherd", "Blessed are the meek"};
  for (int i = 0; i < 16; ++i) {
    RequestParams p = f.request(texts[i % 5], 10 + i % 4);
    p.prompt.insert(p.prompt.end(), p.prompt.begin(), p.prompt.begin() + i % 7);
    p.sampling = f.hot_sampling(100 + i);
    p.top_logprobs = 3;
    reqs.push_back(p);
  }
  std::vector<Outcome> alone;
  {
    auto engine = f.engine();
    for (const auto& p : reqs) alone.push_back(f.run(*engine, p));
  }
  EngineConfig cfg = f.config();
  cfg.n_parallel = 16;
  cfg.step_token_budget = 24;  // prompts split into chunks across steps
  auto engine = f.engine(cfg);
  std::vector<std::shared_ptr<RequestHandle>> hs;
  for (const auto& p : reqs) {
    auto h = engine->submit(p);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    hs.push_back(*h);
  }
  for (size_t i = 0; i < hs.size(); ++i) {
    Outcome o = collect(*hs[i]);
    ASSERT_TRUE(o.ok);
    testutil::expect_same(alone[i], o, "request " + std::to_string(i));
  }
}

TEST(Engine, NChoicesEqualSeparateSeededRuns) {
  Fixture f;
  auto engine = f.engine();
  RequestParams p = f.request("And God saw the light", 14);
  p.sampling = f.hot_sampling(77);
  p.top_logprobs = 2;
  p.n = 2;
  Outcome both = f.run(*engine, p);
  ASSERT_EQ(both.choices.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    RequestParams q = p;
    q.n = 1;
    q.sampling.seed = choice_seed(77, i);
    Outcome one = f.run(*engine, q);
    ASSERT_EQ(one.choices.size(), 1u);
    EXPECT_EQ(one.choices[0].tokens, both.choices[i].tokens) << "choice " << i;
    EXPECT_EQ(one.choices[0].text, both.choices[i].text);
    testutil::expect_same_logprobs(one.choices[0], both.choices[i]);
  }
  EXPECT_NE(both.choices[0].tokens, both.choices[1].tokens);  // distinct seeds show
  EXPECT_EQ(choice_seed(77, 0), 77u);  // the documented rule: choice i samples with seed + i
  EXPECT_EQ(choice_seed(77, 1), 78u);
  EXPECT_EQ(both.usage.completion_tokens, 28);
}

TEST(Engine, StopStringsEndTheChoice) {
  Fixture f;
  auto engine = f.engine();
  RequestParams p = f.request("And God said", 16);
  Outcome free_run = f.run(*engine, p);
  const std::string& text = free_run.choices[0].text;
  ASSERT_GE(text.size(), 6u);
  p.stop = {text.substr(3, 2)};
  Outcome stopped = f.run(*engine, p);
  EXPECT_EQ(stopped.choices[0].finish, "stop");
  EXPECT_EQ(stopped.choices[0].text, text.substr(0, text.find(p.stop[0])));
}

TEST(Engine, RejectsWhatCannotFit) {
  Fixture f;
  EngineConfig cfg = f.config();
  cfg.n_ctx = 64;
  auto engine = f.engine(cfg);
  RequestParams p = f.request("And God said", 60);
  auto h = engine->submit(p);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(h.status().message().find(std::to_string(p.prompt.size())), std::string::npos);
  EXPECT_NE(h.status().message().find("64"), std::string::npos);
  RequestParams empty = p;
  empty.prompt.clear();
  EXPECT_EQ(engine->submit(empty).status().code(), ErrorCode::kInvalidArgument);
  RequestParams bad = f.request("x", 4);
  bad.prompt.push_back(100000);
  EXPECT_EQ(engine->submit(bad).status().code(), ErrorCode::kInvalidArgument);
}

TEST(Engine, FullQueueIsUnavailable) {
  Fixture f;
  EngineConfig cfg = f.config();
  cfg.n_parallel = 1;
  cfg.queue_capacity = 2;
  auto engine = f.engine(cfg);
  test_hooks::set_step_delay(*engine, std::chrono::milliseconds(2));
  std::vector<std::shared_ptr<RequestHandle>> hs;
  int unavailable = 0;
  for (int i = 0; i < 12; ++i) {
    auto h = engine->submit(f.request("In the beginning God created", 40));
    if (h.ok())
      hs.push_back(*h);
    else
      unavailable += h.status().code() == ErrorCode::kUnavailable;
  }
  EXPECT_GT(unavailable, 0);
  for (auto& h : hs) h->cancel();
  for (auto& h : hs) EXPECT_TRUE(collect(*h).ok);
}

TEST(Engine, CancelFreesTheSequence) {
  Fixture f;
  EngineConfig cfg = f.config();
  cfg.cache_mem = 0;  // nothing kept: memory must return to the baseline
  auto engine = f.engine(cfg);
  const uint64_t baseline = engine->metrics().memory_bytes;
  test_hooks::set_step_delay(*engine, std::chrono::milliseconds(2));  // 4096 tokens: 8 s
  RequestParams p = f.request("And God said", -1);
  auto h = engine->submit(p);
  ASSERT_TRUE(h.ok());
  // Wait for some tokens, then cancel.
  int deltas = 0;
  while (deltas < 3) {
    auto ev = (*h)->next(std::chrono::milliseconds(2000));
    ASSERT_TRUE(ev.has_value());
    deltas += ev->kind == Event::Kind::kDelta;
  }
  EXPECT_GT(engine->metrics().memory_bytes, baseline);
  (*h)->cancel();
  Outcome out = collect(**h);
  ASSERT_TRUE(out.ok);
  EXPECT_EQ(out.choices[0].finish, "cancelled");
  for (int i = 0; i < 100 && engine->metrics().requests_running > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  MetricsSnapshot m = engine->metrics();
  EXPECT_EQ(m.requests_running, 0u);
  EXPECT_EQ(m.requests_cancelled, 1u);
  EXPECT_EQ(m.memory_bytes, baseline);
}

TEST(Engine, MetricsCountTokensAndLatencies) {
  Fixture f;
  auto engine = f.engine();
  RequestParams p = f.request("And God said", 8);
  Outcome out = f.run(*engine, p);
  MetricsSnapshot m = engine->metrics();
  EXPECT_EQ(m.requests_total, 1u);
  EXPECT_EQ(m.generated_tokens, 8u);
  EXPECT_EQ(m.prompt_tokens_processed + m.prompt_tokens_replayed + m.prompt_tokens_cached,
            p.prompt.size());
  EXPECT_EQ(m.time_to_first_token.count, 1u);
  EXPECT_EQ(m.inter_token_latency.count, 7u);
  EXPECT_EQ(m.time_to_first_token.buckets.back(), 1u);
  EXPECT_EQ(out.timings.predicted_n, 8);
  EXPECT_EQ(out.timings.prompt_processed + out.timings.prompt_replayed + out.timings.prompt_reused,
            static_cast<int64_t>(p.prompt.size()));
}

TEST(Engine, StopCancelsEverything) {
  Fixture f;
  auto engine = f.engine();
  test_hooks::set_step_delay(*engine, std::chrono::milliseconds(2));
  auto h = engine->submit(f.request("And God said", -1));
  ASSERT_TRUE(h.ok());
  engine->stop();
  Outcome out = collect(**h);
  ASSERT_TRUE(out.ok);
  EXPECT_EQ(out.choices[0].finish, "cancelled");
  EXPECT_EQ(engine->submit(f.request("x", 2)).status().code(), ErrorCode::kCancelled);
  engine->stop();  // idempotent
}

}  // namespace
}  // namespace chimera::serving

namespace chimera::serving {
namespace {

using testutil::collect;
using testutil::Fixture;
using testutil::Outcome;

TEST(Engine, FailedDecodeFailsOnlyTheRequestsInItsBatch) {
  Fixture f;
  EngineConfig cfg = f.config();
  cfg.n_parallel = 1;  // the second request waits outside the failing batch
  auto engine = f.engine(cfg);
  const uint64_t baseline = engine->metrics().memory_bytes;
  test_hooks::set_step_delay(*engine, std::chrono::milliseconds(2));
  auto a = engine->submit(f.request("And God said", -1));
  ASSERT_TRUE(a.ok());
  for (int deltas = 0; deltas < 2;) {
    auto ev = (*a)->next(std::chrono::milliseconds(5000));
    ASSERT_TRUE(ev.has_value());
    deltas += ev->kind == Event::Kind::kDelta;
  }
  test_hooks::inject_decode_failure(*engine, 0);
  RequestParams pb = f.request("Let there be light", 10);
  pb.sampling = f.hot_sampling(3);
  auto b = engine->submit(pb);
  ASSERT_TRUE(b.ok());
  Outcome oa = collect(**a);
  EXPECT_FALSE(oa.ok);
  EXPECT_EQ(oa.error.code(), ErrorCode::kInternal) << oa.error.ToString();
  Outcome ob = collect(**b);
  ASSERT_TRUE(ob.ok) << ob.error.ToString();
  auto cold = f.engine();
  testutil::expect_same(f.run(*cold, pb), ob, "the request outside the failed batch");
  const MetricsSnapshot m = engine->metrics();
  EXPECT_EQ(m.requests_failed, 1u);
  EXPECT_EQ(m.memory_bytes, baseline + m.cache_bytes);
}

TEST(Engine, LongPromptDoesNotStallDecoding) {
  Fixture f;
  EngineConfig cfg = f.config();
  cfg.step_token_budget = 8;
  auto engine = f.engine(cfg);
  RequestParams longp = f.request("In the beginning God created the heaven and the earth.", 4);
  while (longp.prompt.size() < 600)
    longp.prompt.insert(longp.prompt.end(), longp.prompt.begin(), longp.prompt.begin() + 13);
  RequestParams shortp = f.request("And God said", 20);
  auto hl = engine->submit(longp);
  auto hs = engine->submit(shortp);
  ASSERT_TRUE(hl.ok() && hs.ok());
  Outcome os = collect(**hs);
  Outcome ol = collect(**hl);
  ASSERT_TRUE(os.ok && ol.ok);
  // Both were admitted in the same step; the short one decoded all its tokens while the long
  // prompt was still being processed a few tokens per step.
  EXPECT_LT(os.timings.prompt_ms + os.timings.predicted_ms, ol.timings.prompt_ms);
  EXPECT_EQ(ol.timings.prompt_processed, static_cast<int64_t>(longp.prompt.size()));
}

// Attention-only and recurrent-only models take the same paths: cache hits stay exact.
TEST(Engine, CacheHitsAreExactOnAttentionAndRecurrentModels) {
  for (const char* dir : {"llama", "mamba2", "granitehybrid-moe"}) {
    SCOPED_TRACE(dir);
    Fixture f(dir);
    EngineConfig keep = f.config(), none = f.config();
    keep.snapshot_every = 8;
    none.cache_mem = 0;
    auto engine = f.engine(keep);
    auto cold = f.engine(none);
    RequestParams p1 = f.request("In the beginning God created the heaven", 6);
    p1.sampling = f.hot_sampling(11);
    p1.top_logprobs = 3;
    Outcome o1 = f.run(*engine, p1);
    RequestParams p2 = p1;  // append
    p2.prompt.insert(p2.prompt.end(), o1.choices[0].tokens.begin(), o1.choices[0].tokens.end());
    const std::vector<TokenId> more = f.encode(" and the earth");
    p2.prompt.insert(p2.prompt.end(), more.begin(), more.end());
    RequestParams p3 = p1;  // an edit near the end
    p3.prompt.back() = p3.prompt.back() == 7 ? 8 : 7;
    for (const RequestParams* p : {&p2, &p3, &p1}) {
      Outcome hit = f.run(*engine, *p);
      EXPECT_GT(hit.usage.cached_tokens, 0);
      testutil::expect_same(f.run(*cold, *p), hit, "hit vs cold");
    }
  }
}

}  // namespace
}  // namespace chimera::serving
