// Shared helpers for the serving tests: the fixture model, requests, and event collection.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>

#include "serving/engine.h"

namespace chimera::serving::testutil {

struct ChoiceOut {
  std::string text;
  std::vector<TokenId> tokens;  // from the logprobs (requests ask for them)
  std::vector<float> logprobs;
  std::vector<std::vector<TopLogprob>> top;
  std::string finish;
};

struct Outcome {
  bool ok = false;
  Status error;
  std::vector<ChoiceOut> choices;
  Usage usage;
  Timings timings;
  CacheReport cache;
};

inline Outcome collect(RequestHandle& h) {
  Outcome out;
  for (;;) {
    auto ev = h.next(std::chrono::milliseconds(20000));
    if (!ev) {
      out.error = Error(ErrorCode::kInternal, "no event within 20 s");
      return out;
    }
    if (ev->kind == Event::Kind::kError) {
      out.error = ev->error;
      return out;
    }
    if (ev->kind == Event::Kind::kDone) {
      out.ok = true;
      out.usage = ev->usage;
      out.timings = ev->timings;
      out.cache = ev->cache;
      return out;
    }
    if (out.choices.size() <= static_cast<size_t>(ev->choice)) out.choices.resize(ev->choice + 1);
    ChoiceOut& c = out.choices[ev->choice];
    EXPECT_TRUE(c.finish.empty()) << "delta after the finish";
    c.text += ev->text;
    for (const TokenLogprob& lp : ev->logprobs) {
      c.tokens.push_back(lp.token);
      c.logprobs.push_back(lp.logprob);
      c.top.push_back(lp.top);
    }
    if (ev->finish_reason) c.finish = *ev->finish_reason;
  }
}

inline void expect_same_logprobs(const ChoiceOut& a, const ChoiceOut& b) {
  ASSERT_EQ(a.logprobs.size(), b.logprobs.size());
  EXPECT_EQ(0, std::memcmp(a.logprobs.data(), b.logprobs.data(), a.logprobs.size() * 4));
  ASSERT_EQ(a.top.size(), b.top.size());
  for (size_t i = 0; i < a.top.size(); ++i) {
    ASSERT_EQ(a.top[i].size(), b.top[i].size());
    for (size_t j = 0; j < a.top[i].size(); ++j) {
      EXPECT_EQ(a.top[i][j].token, b.top[i][j].token);
      EXPECT_EQ(0, std::memcmp(&a.top[i][j].logprob, &b.top[i][j].logprob, 4));
    }
  }
}

inline void expect_same(const Outcome& a, const Outcome& b, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_TRUE(a.ok && b.ok);
  ASSERT_EQ(a.choices.size(), b.choices.size());
  for (size_t i = 0; i < a.choices.size(); ++i) {
    EXPECT_EQ(a.choices[i].tokens, b.choices[i].tokens);
    EXPECT_EQ(a.choices[i].text, b.choices[i].text);
    EXPECT_EQ(a.choices[i].finish, b.choices[i].finish);
    expect_same_logprobs(a.choices[i], b.choices[i]);
  }
}

struct Fixture {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;

  explicit Fixture(const std::string& dir = "granitehybrid-dense") {
    const std::string path =
        std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/models/" + dir + "/model-f32.gguf";
    auto m = load_model(path);
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    model = std::move(*m);
    auto t = Tokenizer::from_gguf(*model->file);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    tok = std::make_unique<Tokenizer>(std::move(*t));
  }

  ContextParams ctx_params() const {
    ContextParams p;
    p.n_threads = 1;  // the machine is shared; thread-count invariance is tested in runtime
    p.page_size = 16;
    p.memory_budget = 128ull << 20;
    return p;
  }

  EngineConfig config() const {
    EngineConfig c;
    c.n_parallel = 4;
    c.n_ctx = 4096;
    c.cache_mem = 32ull << 20;
    c.snapshot_every = 64;
    c.step_token_budget = 64;
    return c;
  }

  std::unique_ptr<Engine> engine(const EngineConfig& cfg) const {
    auto e = Engine::create(*model, *tok, ctx_params(), cfg);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? std::move(*e) : nullptr;
  }
  std::unique_ptr<Engine> engine() const { return engine(config()); }

  std::vector<TokenId> encode(const std::string& text) const {
    auto t = tok->encode(text);
    EXPECT_TRUE(t.ok());
    return *t;
  }

  SamplingParams hot_sampling(uint64_t seed) const {
    SamplingParams s;
    s.temperature = 2.0f;
    s.top_k = 0;
    s.top_p = 1.0f;
    s.min_p = 0.0f;
    s.seed = seed;
    return s;
  }

  RequestParams request(const std::string& text, int max_tokens) const {
    RequestParams p;
    p.prompt = encode(text);
    p.max_tokens = max_tokens;
    p.sampling.temperature = 0;
    p.ignore_eos = true;  // random weights: keep lengths fixed
    p.top_logprobs = 0;
    return p;
  }

  Outcome run(Engine& e, const RequestParams& p) const {
    auto h = e.submit(p);
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    if (!h.ok()) return {};
    Outcome o = collect(**h);
    EXPECT_TRUE(o.ok) << o.error.ToString();
    return o;
  }
};

}  // namespace chimera::serving::testutil
