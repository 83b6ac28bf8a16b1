// Speculative decoding is exact: on every fixture architecture, with the n-gram drafter and a
// draft model (the fixture's F16 copy drafting for its F32 target), for draft lengths 1..16,
// greedy and seeded sampling, the generated tokens, text and logprobs are byte-identical to
// generation without speculation, and the target's memory ends holding the same token list
// without a single replayed token. Also in batches where some sequences speculate and others
// do not.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "models/synthetic.h"
#include "runtime/generate.h"

namespace chimera {
namespace {

const std::string kFixtures = std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/models/";

struct Loaded {
  std::unique_ptr<Model> target, draft;
  std::unique_ptr<Tokenizer> tok, draft_tok;
};

// A target and its draft model from two files, with their tokenizers.
Loaded load_pair(const std::string& target_path, const std::string& draft_path) {
  Loaded l;
  auto t = load_model(target_path);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  auto d = load_model(draft_path);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  if (!t.ok() || !d.ok()) return l;
  l.target = std::move(*t);
  l.draft = std::move(*d);
  l.tok = std::make_unique<Tokenizer>(std::move(Tokenizer::from_gguf(*l.target->file).value()));
  l.draft_tok =
      std::make_unique<Tokenizer>(std::move(Tokenizer::from_gguf(*l.draft->file).value()));
  return l;
}

// A fixture architecture: its F16 copy drafting for its F32 target.
Loaded load(const std::string& arch) {
  return load_pair(kFixtures + arch + "/model-f32.gguf", kFixtures + arch + "/model-f16.gguf");
}

// The shipped pair: the 5M default model drafted by its distilled draft model (models/). Unlike
// the random fixtures, whose greedy drafts mostly repeat the last token, its drafts follow the
// text, so a draft made from the wrong memory or the wrong logits shows.
Loaded load_shipped_pair() {
  const std::string models = std::string(CHIMERA_SOURCE_DIR) + "/models/";
  return load_pair(models + "default.gguf", models + "draft.gguf");
}

ContextParams ctx_params() {
  ContextParams p;
  p.n_threads = 1;  // tiny models: a second thread only adds synchronisation
  p.memory_budget = 64ull << 20;
  p.snapshot_interval = 16;
  p.page_size = 16;
  p.max_seqs = 4;
  return p;
}

GenerateParams gen_params(bool seeded, int n) {
  GenerateParams g;
  g.n_predict = n;
  g.ignore_eos = true;  // random weights: keep the length fixed
  g.logprobs = true;
  if (seeded) {
    g.sampling.temperature = 3.0f;  // wide enough that draws differ from greedy choices
    g.sampling.top_k = 0;
    g.sampling.top_p = 1.0f;
    g.sampling.min_p = 0.0f;
    g.sampling.repeat_penalty = 1.1f;
    g.sampling.seed = 77;
  } else {
    g.sampling.temperature = 0;
  }
  g.spec.adaptive = false;  // exactly draft_max every step: deterministic coverage
  return g;
}

struct Outcome {
  GenerateResult r;
  std::vector<int32_t> memory_tokens;
  uint64_t replayed = 0, dropped = 0;
};

Outcome run(const Loaded& l, const std::vector<TokenId>& prompt, const GenerateParams& g) {
  Outcome o;
  auto ctx = Context::create(*l.target, ctx_params());
  EXPECT_TRUE(ctx.ok());
  Sampler sampler(g.sampling);
  auto r = generate(**ctx, *l.tok, 1, prompt, g, sampler);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return o;
  o.r = std::move(*r);
  o.memory_tokens = (*ctx)->memory().tokens(1);
  o.replayed = (*ctx)->stats().tokens_replayed;
  o.dropped = (*ctx)->stats().tokens_dropped;
  return o;
}

void expect_same(const Outcome& want, const Outcome& got, const std::string& what) {
  EXPECT_EQ(want.r.tokens, got.r.tokens) << what;
  EXPECT_EQ(want.r.text, got.r.text) << what;
  ASSERT_EQ(want.r.logprobs.size(), got.r.logprobs.size()) << what;
  EXPECT_EQ(0, std::memcmp(want.r.logprobs.data(), got.r.logprobs.data(),
                           want.r.logprobs.size() * sizeof(float)))
      << what << ": logprobs differ";
  EXPECT_EQ(want.r.stop, got.r.stop) << what;
  EXPECT_EQ(want.memory_tokens, got.memory_tokens) << what << ": memory";
  EXPECT_EQ(got.replayed, 0u) << what << ": rollback replayed tokens";
}

class Speculative : public ::testing::TestWithParam<const char*> {};

TEST_P(Speculative, OutputIsByteIdenticalForEveryDraftLength) {
  const Loaded l = load(GetParam());
  ASSERT_TRUE(l.target && l.draft);
  auto prompt = l.tok->encode("And God said, Let there be light: and there was light. And God");
  ASSERT_TRUE(prompt.ok());
  auto drafter = ModelDrafter::create(*l.target, l.tok.get(), *l.draft, l.draft_tok.get(),
                                      {.p_min = 0.0f, .context = ctx_params()});
  ASSERT_TRUE(drafter.ok()) << drafter.status().ToString();
  NgramDrafter ngram({.n_max = 3, .n_min = 1});
  int64_t rejected = 0;
  for (bool seeded : {false, true}) {
    const GenerateParams base = gen_params(seeded, 40);
    const Outcome want = run(l, *prompt, base);
    ASSERT_EQ(want.r.tokens.size(), 40u);
    int64_t drafted = 0, accepted = 0, ngram_drafted = 0, ngram_accepted = 0;
    for (int32_t k = 1; k <= 16; ++k) {
      // Every length with the draft model; the n-gram drafter on every length greedily and on
      // a spread of lengths when sampling (its drafts are rarely accepted there).
      for (Drafter* d : {static_cast<Drafter*>(drafter->get()), static_cast<Drafter*>(&ngram)}) {
        if (d == &ngram && seeded && k % 5 != 1) continue;
        GenerateParams g = base;
        g.drafter = d;
        g.spec.draft_max = k;
        const Outcome got = run(l, *prompt, g);
        expect_same(want, got,
                    std::string(seeded ? "seeded" : "greedy") + ", " + d->name() + ", K " +
                        std::to_string(k));
        EXPECT_EQ(got.r.spec.drafted - got.r.spec.accepted, static_cast<int64_t>(got.dropped));
        if (d == &ngram) {
          ngram_drafted += got.r.spec.drafted;
          ngram_accepted += got.r.spec.accepted;
        } else {
          drafted += got.r.spec.drafted;
          accepted += got.r.spec.accepted;
        }
      }
    }
    // The checks above must have exercised verification: drafts were made and accepted (greedy:
    // the F16 copy of the target mostly agrees with it).
    EXPECT_GT(drafted, 100);
    EXPECT_GT(accepted, 0);
    if (!seeded) {
      EXPECT_GT(accepted, drafted / 2) << "a draft model equal to the target up to F16 rounding";
      EXPECT_GT(ngram_drafted, 0);
    }
    rejected += drafted - accepted + ngram_drafted - ngram_accepted;
  }
  EXPECT_GT(rejected, 0) << "no draft was ever rejected: the rollback went untested";
}

// Stops inside a verified run: the context bound, a stop string, the length; the output and the
// memory are those of plain generation.
TEST_P(Speculative, StopsInsideAVerifiedRunAreExact) {
  const Loaded l = load(GetParam());
  ASSERT_TRUE(l.target && l.draft);
  auto prompt = l.tok->encode("In the beginning God created");
  ASSERT_TRUE(prompt.ok());
  auto drafter = ModelDrafter::create(*l.target, l.tok.get(), *l.draft, l.draft_tok.get(),
                                      {.p_min = 0.0f, .context = ctx_params()});
  ASSERT_TRUE(drafter.ok());
  GenerateParams ctx_bound = gen_params(false, -1);
  ctx_bound.n_ctx = static_cast<uint32_t>(prompt->size()) + 21;
  GenerateParams by_length = gen_params(false, 23);
  const Outcome longer = run(l, *prompt, gen_params(false, 30));
  GenerateParams by_stop = gen_params(false, 30);
  by_stop.stop = {longer.r.text.substr(longer.r.text.size() / 2, 3)};
  for (const GenerateParams& base : {ctx_bound, by_length, by_stop}) {
    const Outcome want = run(l, *prompt, base);
    for (int32_t k : {3, 7, 16}) {
      GenerateParams g = base;
      g.drafter = drafter->get();
      g.spec.draft_max = k;
      expect_same(
          want, run(l, *prompt, g),
          std::string("stop ") + stop_reason_name(want.r.stop) + ", K " + std::to_string(k));
    }
  }
}

// The adaptive controller (the default) changes only speed, never the output.
TEST_P(Speculative, AdaptiveDraftLengthIsExact) {
  const Loaded l = load(GetParam());
  ASSERT_TRUE(l.target);
  auto prompt = l.tok->encode("And the earth was without form, and void");
  ASSERT_TRUE(prompt.ok());
  NgramDrafter ngram;
  for (bool seeded : {false, true}) {
    GenerateParams base = gen_params(seeded, 64);
    const Outcome want = run(l, *prompt, base);
    GenerateParams g = base;
    g.drafter = &ngram;
    g.spec.adaptive = true;
    expect_same(want, run(l, *prompt, g), seeded ? "seeded" : "greedy");
  }
}

// One continuous batch per step over four sequences: 0 speculates with the draft model, 2 with
// n-grams, 1 and 3 decode plainly; each sequence's tokens equal its own plain generation.
TEST_P(Speculative, MixedBatchOfSpeculatingAndPlainSequences) {
  const Loaded l = load(GetParam());
  ASSERT_TRUE(l.target && l.draft);
  const char* texts[4] = {"And God said", "In the beginning", "And the evening and the morning",
                          "Let there be light"};
  auto drafter = ModelDrafter::create(*l.target, l.tok.get(), *l.draft, l.draft_tok.get(),
                                      {.p_min = 0.0f, .context = ctx_params()});
  ASSERT_TRUE(drafter.ok());
  NgramDrafter ngram({.n_max = 3, .n_min = 1});
  Drafter* drafters[4] = {drafter->get(), nullptr, &ngram, nullptr};
  const int n = 30;
  for (bool seeded : {false, true}) {
    const GenerateParams g = gen_params(seeded, n);
    struct Seq {
      std::vector<TokenId> history, out;
      std::unique_ptr<Sampler> sampler;
      TokenId pending = kNoToken;
    };
    std::vector<Seq> seqs(4);
    std::vector<Outcome> want(4);
    auto ctx = Context::create(*l.target, ctx_params());
    ASSERT_TRUE(ctx.ok());
    Batch prompts;
    std::vector<size_t> last(4);
    for (int32_t s = 0; s < 4; ++s) {
      auto p = l.tok->encode(texts[s]);
      ASSERT_TRUE(p.ok());
      want[s] = run(l, *p, g);
      seqs[s].history = *p;
      seqs[s].sampler = std::make_unique<Sampler>(g.sampling);
      for (size_t i = 0; i < p->size(); ++i) {
        prompts.add((*p)[i], static_cast<int32_t>(i), s, i + 1 == p->size());
        seqs[s].sampler->accept((*p)[i]);
      }
      last[s] = prompts.size() - 1;
    }
    ASSERT_TRUE((*ctx)->decode(prompts).ok());
    for (int32_t s = 0; s < 4; ++s) {
      seqs[s].pending = seqs[s].sampler->sample((*ctx)->logits(last[s]), (*ctx)->n_vocab());
      seqs[s].sampler->accept(seqs[s].pending);
      seqs[s].out.push_back(seqs[s].pending);
    }
    int64_t drafted = 0;
    for (int step = 0; step < 2 * n; ++step) {
      Batch b;
      std::vector<int32_t> step_seqs;
      std::vector<std::vector<TokenId>> drafts(4);
      std::vector<size_t> first(4, SIZE_MAX);  // the sequence's first entry; MAX: not in it
      for (int32_t s = 0; s < 4; ++s) {
        Seq& q = seqs[s];
        if (q.out.size() >= static_cast<size_t>(n)) continue;
        q.history.push_back(q.pending);
        if (drafters[s]) {
          auto d = drafters[s]->draft(s, q.history, 1 + (step + s) % 9);
          ASSERT_TRUE(d.ok()) << d.status().ToString();
          drafts[s] = *d;
        }
        if (!drafts[s].empty()) step_seqs.push_back(s);
        drafted += static_cast<int64_t>(drafts[s].size());
        first[s] = b.size();
        const int32_t p0 = static_cast<int32_t>((*ctx)->memory().next_pos(s));
        b.add(q.pending, p0, s, true);
        for (size_t i = 0; i < drafts[s].size(); ++i)
          b.add(drafts[s][i], p0 + 1 + static_cast<int32_t>(i), s, true);
      }
      if (b.size() == 0) break;
      ASSERT_TRUE((*ctx)->decode_open(b, step_seqs).ok());
      std::vector<SeqKeep> keep;
      for (int32_t s = 0; s < 4; ++s) {
        Seq& q = seqs[s];
        if (first[s] == SIZE_MAX) continue;
        uint32_t i = 1;
        for (;; ++i) {
          if (q.out.size() >= static_cast<size_t>(n)) break;
          const TokenId t = q.sampler->sample((*ctx)->logits(first[s] + i - 1), (*ctx)->n_vocab());
          q.sampler->accept(t);
          q.out.push_back(t);
          if (i <= drafts[s].size() && t == drafts[s][i - 1]) {
            q.history.push_back(t);
            continue;
          }
          q.pending = t;
          break;
        }
        if (!drafts[s].empty()) keep.push_back({s, i});
      }
      ASSERT_TRUE((*ctx)->accept(keep).ok());
    }
    for (int32_t s = 0; s < 4; ++s)
      EXPECT_EQ(seqs[s].out, want[s].r.tokens) << "sequence " << s << (seeded ? " seeded" : "");
    EXPECT_GT(drafted, 0);
    EXPECT_EQ((*ctx)->stats().tokens_replayed, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Speculative,
                         ::testing::Values("llama", "granite", "mamba2", "mamba2-g2",
                                           "granitehybrid-dense", "granitehybrid-moe", "qwen35",
                                           "qwen35moe", "qwen3next", "nemotron_h", "gemma3"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// The draft model on its target's two-thread pool (ContextParams::threads, as chimera run and
// serve do): the same bytes as plain generation on two threads, greedy and seeded, and the one
// pool has done the drafter's work too (no second pool).
TEST(SpeculativeDrafters, DraftModelOnTheTargetsThreadPoolIsExact) {
  const Loaded l = load("granitehybrid-dense");
  ASSERT_TRUE(l.target && l.draft);
  auto prompt = l.tok->encode("And God said, Let there be light: and there was light. And God");
  ASSERT_TRUE(prompt.ok());
  ContextParams p = ctx_params();
  p.n_threads = 2;
  auto ctx = Context::create(*l.target, p);
  ASSERT_TRUE(ctx.ok());
  ContextParams dp = ctx_params();
  dp.n_threads = 1;  // ignored: the shared pool's count rules
  dp.threads = (*ctx)->shared_threads();
  auto drafter = ModelDrafter::create(*l.target, l.tok.get(), *l.draft, l.draft_tok.get(),
                                      {.p_min = 0.0f, .context = dp});
  ASSERT_TRUE(drafter.ok()) << drafter.status().ToString();
  EXPECT_EQ(&(*drafter)->context().threads(), &(*ctx)->threads());
  EXPECT_EQ((*drafter)->context().threads().n_threads(), 2);
  for (bool seeded : {false, true}) {
    GenerateParams g = gen_params(seeded, 40);
    (*ctx)->memory().clear();
    Sampler plain_sampler(g.sampling);
    auto want = generate(**ctx, *l.tok, 1, *prompt, g, plain_sampler);
    ASSERT_TRUE(want.ok()) << want.status().ToString();
    g.drafter = drafter->get();
    g.spec.draft_max = 4;
    (*ctx)->memory().clear();
    Sampler spec_sampler(g.sampling);
    auto got = generate(**ctx, *l.tok, 1, *prompt, g, spec_sampler);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(want->tokens, got->tokens) << (seeded ? "seeded" : "greedy");
    EXPECT_EQ(want->text, got->text);
    ASSERT_EQ(want->logprobs.size(), got->logprobs.size());
    EXPECT_EQ(0, std::memcmp(want->logprobs.data(), got->logprobs.data(),
                             want->logprobs.size() * sizeof(float)));
    EXPECT_GT(got->spec.drafted, 0);
    if (!seeded) {
      EXPECT_GT(got->spec.accepted, 0);
    }
  }
}

// Greedy-only contexts (a greedy drafter's: ModelDrafter with p_min 0) keep each entry's first
// argmax instead of its logits (lm_argmax.h): the same token as first_argmax of the logits a
// plain context gives, for every entry of a long batch and of one-token steps, on the shipped
// draft model (whose 48-wide head the int8 search takes) and on fixtures (wider heads: every
// logit).
TEST(SpeculativeDrafters, GreedyOnlyContextGivesTheLogitsFirstArgmax) {
  const std::string shipped = std::string(CHIMERA_SOURCE_DIR) + "/models/draft.gguf";
  for (const std::string& path : {shipped, kFixtures + "granitehybrid-dense/model-f16.gguf",
                                 kFixtures + "gemma3/model-f32.gguf"}) {
    auto m = load_model(path);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    const int32_t V = (*m)->hp.n_vocab;
    auto plain = Context::create(**m, ctx_params());
    auto greedy = Context::create(**m, ctx_params());
    ASSERT_TRUE(plain.ok() && greedy.ok());
    (*greedy)->set_greedy_only(true);
    Batch b;
    for (int32_t i = 0; i < 150; ++i) b.add((i * 37 + 11) % V, i, 0, i % 5 != 2);
    ASSERT_TRUE((*plain)->decode(b).ok());
    ASSERT_TRUE((*greedy)->decode(b).ok());
    for (size_t e = 0; e < b.size(); ++e) {
      const float* l = (*plain)->logits(e);
      EXPECT_EQ((*greedy)->logits(e), nullptr);
      ASSERT_EQ((*greedy)->greedy_token(e), l ? first_argmax(l, V) : -1) << path << " " << e;
    }
    for (int32_t i = 150; i < 170; ++i) {
      Batch one;
      one.add((*greedy)->greedy_token(0) >= 0 ? (*greedy)->greedy_token(0) : 1, i, 0, true);
      ASSERT_TRUE((*plain)->decode(one).ok());
      ASSERT_TRUE((*greedy)->decode(one).ok());
      ASSERT_EQ((*greedy)->greedy_token(0), first_argmax((*plain)->logits(0), V)) << path << i;
    }
  }
}

// A greedy drafter (greedy-only context) drafts what one reading every logit drafts: p_min 1e-9
// keeps the logits (a cut-off that never cuts), on the shipped pair, step after step.
TEST(SpeculativeDrafters, GreedyHeadDraftsWhatTheLogitsSay) {
  const Loaded l = load_shipped_pair();
  ASSERT_TRUE(l.target && l.draft);
  auto make = [&](float p_min) {
    auto d = ModelDrafter::create(*l.target, l.tok.get(), *l.draft, l.draft_tok.get(),
                                  {.p_min = p_min, .lookup = false, .context = ctx_params()});
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return std::move(*d);
  };
  auto greedy = make(0.0f), logits = make(1e-9f);
  auto prompt = l.tok->encode("And God said, Let there be light: and there was light. And God");
  ASSERT_TRUE(prompt.ok());
  std::vector<TokenId> history = *prompt;
  for (int32_t step = 0; step < 40; ++step) {
    auto a = greedy->draft(0, history, 6);
    auto b = logits->draft(0, history, 6);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(*a, *b) << "step " << step;
    EXPECT_EQ(greedy->last_tail_hits(), logits->last_tail_hits());
    history.insert(history.end(), a->begin(), a->begin() + 1 + step % 3);
    history.push_back(static_cast<TokenId>((step * 53 + 7) % l.draft->hp.n_vocab));
  }
}

// The draft model's rollback marks do not pile up in its memory: after a long generation it
// holds its periodic snapshots and the last step's marks, no more (each step's marks used to stay
// on the path as restore points, and the snapshot bookkeeping slowed with their number).
TEST(SpeculativeDrafters, DraftModelMarksDoNotPileUp) {
  const Loaded l = load("granitehybrid-dense");
  ASSERT_TRUE(l.target && l.draft);
  auto prompt = l.tok->encode("And God said, Let there be light: and there was light. And God");
  ASSERT_TRUE(prompt.ok());
  const ContextParams p = ctx_params();
  auto drafter = ModelDrafter::create(*l.target, l.tok.get(), *l.draft, l.draft_tok.get(),
                                      {.p_min = 0.0f, .context = p});
  ASSERT_TRUE(drafter.ok()) << drafter.status().ToString();
  GenerateParams g = gen_params(false, 120);
  const Outcome want = run(l, *prompt, g);
  g.drafter = drafter->get();
  g.spec.draft_max = 3;
  const Outcome got = run(l, *prompt, g);
  expect_same(want, got, "greedy, draft model, K 3");
  EXPECT_GT(got.r.spec.steps, 20);
  const HybridMemory& mem = (*drafter)->context().memory();
  const uint32_t held = mem.n_tokens(1);
  EXPECT_GE(held, prompt->size() + 100);
  EXPECT_LE(mem.snapshots_of(1).size(), held / p.snapshot_interval + 3)
      << "periodic snapshots plus the last step's three marks";
  EXPECT_GT(mem.usage().n_pinned_snapshots, 0u);  // the last call's marks (fewer near the end)
  EXPECT_LE(mem.usage().n_pinned_snapshots, 3u);
  (*drafter)->forget(1);
  EXPECT_EQ(mem.usage().n_pinned_snapshots, 0u);
}

// The draft model reports whether it would have predicted the tokens of the history it did not
// draft itself (SpecController learns from it where the drafter's misses fall): its own greedy
// continuation is all hits, a changed last token a miss, and in the steady state (its last draft
// and the target's next token) it judges the one token it had not drafted.
TEST(SpeculativeDrafters, DraftModelReportsItsHitsOnTokensItDidNotDraft) {
  const Loaded l = load("granitehybrid-dense");
  ASSERT_TRUE(l.target && l.draft);
  auto prompt = l.tok->encode("And God said, Let there be light: and there was light. And God");
  ASSERT_TRUE(prompt.ok());
  ASSERT_GT(prompt->size(), 6u);
  const int32_t V = l.draft->hp.n_vocab;
  auto make = [&] {
    auto d = ModelDrafter::create(*l.target, l.tok.get(), *l.draft, l.draft_tok.get(),
                                  {.p_min = 0.0f, .context = ctx_params()});
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return std::move(*d);
  };
  using Hits = std::vector<uint8_t>;
  auto changed = [V](std::vector<TokenId> h) {
    h.back() = (h.back() + 1) % V;
    return h;
  };
  // The drafter's greedy continuation of the prompt (the last draft is never run by it).
  auto a = make();
  auto greedy = a->draft(0, *prompt, 4);
  ASSERT_TRUE(greedy.ok());
  ASSERT_EQ(greedy->size(), 4u);
  EXPECT_EQ(a->last_tail_hits().size(), Drafter::kMaxTailHits);  // the prompt's last tokens
  std::vector<TokenId> own = *prompt;
  own.insert(own.end(), greedy->begin(), greedy->end());
  // Fresh drafters catch up on the whole history in one batch and judge its last four tokens.
  auto b = make();
  auto after = b->draft(0, own, 2);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), 2u);
  EXPECT_EQ(b->last_tail_hits(), (Hits{1, 1, 1, 1}));
  auto c = make();
  ASSERT_TRUE(c->draft(0, changed(own), 2).ok());
  EXPECT_EQ(c->last_tail_hits(), (Hits{1, 1, 1, 0}));
  // Steady state: drafter `a` ran the prompt and three drafts; the history now adds its fourth
  // draft (all accepted) and the target's next token, a hit or a miss.
  std::vector<TokenId> next = own;
  next.push_back((*after)[0]);
  ASSERT_TRUE(a->draft(0, next, 2).ok());
  EXPECT_EQ(a->last_tail_hits(), (Hits{1}));
  auto a2 = make();
  ASSERT_TRUE(a2->draft(0, *prompt, 4).ok());
  ASSERT_TRUE(a2->draft(0, changed(next), 2).ok());
  EXPECT_EQ(a2->last_tail_hits(), (Hits{0}));
  // After a rejection only the target's own token is new: nothing to judge (the controller
  // knows it was a miss).
  std::vector<TokenId> rejected(own.begin(), own.end() - 2);
  rejected.push_back((own[own.size() - 2] + 1) % V);
  ASSERT_TRUE(a2->draft(0, rejected, 2).ok());
  EXPECT_TRUE(a2->last_tail_hits().empty());
}

// A draft model drafter for the fixture pair, with or without lookup staging.
std::unique_ptr<ModelDrafter> lookup_drafter(const Loaded& l, bool lookup) {
  auto d = ModelDrafter::create(*l.target, l.tok.get(), *l.draft, l.draft_tok.get(),
                                {.p_min = 0.0f, .lookup = lookup, .context = ctx_params()});
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  return d.ok() ? std::move(*d) : nullptr;
}

// Drafters with and without lookup staging on one pair, and the prompt the staging tests start
// from.
struct StagingPair {
  std::unique_ptr<ModelDrafter> staged, plain;
  std::vector<TokenId> prompt;
};
StagingPair staging_pair(const Loaded& l) {
  StagingPair p;
  if (!l.target || !l.draft) return p;
  auto prompt = l.tok->encode("And God said, Let there be light: and there was light. And God");
  EXPECT_TRUE(prompt.ok());
  if (prompt.ok()) p.prompt = *prompt;
  p.staged = lookup_drafter(l, true);
  p.plain = lookup_drafter(l, false);
  return p;
}

// Lookup staging (DraftModelParams::lookup) changes what drafting costs, never the drafts: along a
// history that the draft model's own greedy text makes repetitive, with the target keeping a
// varying share of each draft and now and then a token of its own (a rejection), drafters with and
// without staging propose the same tokens at every step, for every length 1..10. Staging runs far
// fewer draft-model batches, and rollbacks into a staged span replay from the mark before it.
void staging_drafts_the_same_tokens(const Loaded& l) {
  auto [staged, plain, prompt] = staging_pair(l);
  ASSERT_TRUE(staged && plain && !prompt.empty());
  const int32_t V = l.draft->hp.n_vocab;
  std::vector<TokenId> history = prompt;
  uint64_t rng = 99;
  auto next = [&rng](uint64_t n) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (rng >> 33) % n;
  };
  int64_t long_drafts = 0;
  for (int32_t step = 0; step < 120; ++step) {
    const int32_t k = 1 + step % 10;
    auto a = staged->draft(2, history, k);
    auto b = plain->draft(2, history, k);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString() << b.status().ToString();
    ASSERT_EQ(*a, *b) << "step " << step << ", k " << k;
    ASSERT_EQ(static_cast<int32_t>(a->size()), k);
    EXPECT_EQ(staged->last_tail_hits(), plain->last_tail_hits()) << "step " << step;
    long_drafts += k >= 3;
    // The target keeps a prefix of the draft, then its own token: mostly the draft's next one
    // (the text goes on repeating), every seventh step another (a rejection there).
    const size_t keep = next(a->size() + 1);
    history.insert(history.end(), a->begin(), a->begin() + static_cast<std::ptrdiff_t>(keep));
    const bool reject = step % 7 == 6;
    history.push_back(keep < a->size() && !reject ? (*a)[keep] : static_cast<TokenId>(next(V)));
    if (step % 4 == 3) {
      // A decoy: the last four tokens, a turn the draft model may take for a token or two, two
      // random tokens, and the four again, so the next lookup proposes a continuation that
      // leaves the draft model's part way (a lookup batch kept in part).
      const std::vector<TokenId> tail(history.end() - 4, history.end());
      history.insert(history.end(), tail.begin(), tail.end());
      history.insert(history.end(), a->begin(), a->begin() + std::min<std::ptrdiff_t>(2, k));
      for (int i = 0; i < 2; ++i) history.push_back(static_cast<TokenId>(next(V)));
      history.insert(history.end(), tail.begin(), tail.end());
    }
  }
  const ContextStats& s = staged->context().stats();
  const ContextStats& p = plain->context().stats();
  EXPECT_LT(s.batches * 10, p.batches * 8)
      << "staged " << s.batches << " draft batches, token by token " << p.batches;
  EXPECT_GT(long_drafts, 80);
  const LookupStats& ls = staged->lookup_stats();
  EXPECT_GT(ls.batches, 20);
  EXPECT_GT(ls.confirmed, 0);
  EXPECT_LT(ls.confirmed, ls.proposed) << "no lookup batch was kept in part";
  // Both kinds of lookup batch ran: with the steady state's catch-up in it, and after a longer
  // catch-up (the decoys).
  EXPECT_GT(ls.with_catch_up, 0);
  EXPECT_LT(ls.with_catch_up, ls.batches);
  EXPECT_EQ(plain->lookup_stats().calls, 0);
  staged->forget(2);
  EXPECT_EQ(staged->context().memory().usage().n_pinned_snapshots, 0u);
}

TEST(SpeculativeDrafters, DraftModelLookupStagingDraftsTheSameTokens) {
  staging_drafts_the_same_tokens(load("granitehybrid-dense"));
}

// A lookup batch that runs with the catch-up pays its proposals before the draft model's own first
// token is known. Where the first proposal is not that token, the batch keeps the catch-up only
// and the drafter drafts on token by token. On the shipped pair (drafts that follow the text), a
// planted pair of tokens makes the lookup propose a continuation the draft model does not take;
// then the target keeps a random share of each draft and now and then a token of its own. Drafts
// and tail hits equal those of a drafter without staging at every step.
TEST(SpeculativeDrafters, DraftModelStagedBatchWhoseFirstProposalIsMissed) {
  const Loaded l = load_shipped_pair();
  auto [staged, plain, prompt] = staging_pair(l);
  ASSERT_TRUE(staged && plain && !prompt.empty());
  const int32_t V = l.draft->hp.n_vocab;
  // The planted pair (P, R) and two tokens after it, then the prompt again; at steps 3 and 4 the
  // target rejects the whole draft with P, then R, so the lookup proposes the planted tokens.
  const std::vector<TokenId> planted = {201, 77, 303, 159};
  std::vector<TokenId> history = prompt;
  history.insert(history.end(), planted.begin(), planted.end());
  history.insert(history.end(), prompt.begin(), prompt.end());
  uint64_t rng = 5;
  auto next = [&rng](uint64_t n) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (rng >> 33) % n;
  };
  for (int32_t step = 0; step < 80; ++step) {
    const int32_t k = step < 12 ? 6 : 1 + step % 9;
    auto a = staged->draft(0, history, k);
    auto b = plain->draft(0, history, k);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString() << b.status().ToString();
    ASSERT_EQ(*a, *b) << "step " << step;
    EXPECT_EQ(staged->last_tail_hits(), plain->last_tail_hits()) << "step " << step;
    if (step == 3 || step == 4) {
      history.push_back(planted[step - 3]);
    } else if (step < 12) {
      history.insert(history.end(), a->begin(), a->end());  // all kept
    } else {
      const size_t keep = next(a->size() + 1);
      history.insert(history.end(), a->begin(), a->begin() + static_cast<std::ptrdiff_t>(keep));
      history.push_back(keep < a->size() && step % 5 != 0 ? (*a)[keep]
                                                          : static_cast<TokenId>(next(V)));
    }
  }
  const LookupStats& ls = staged->lookup_stats();
  EXPECT_GT(ls.first_missed, 0) << ls.with_catch_up << " batches with a catch-up";
  EXPECT_GT(ls.with_catch_up, ls.first_missed);
  EXPECT_GT(ls.confirmed, 0);
  staged->forget(0);
  EXPECT_EQ(staged->context().memory().usage().n_pinned_snapshots, 0u);
}

// On a text that does not repeat, lookups propose nothing the draft model confirms: after a few
// calls the drafter makes one only every 8th call (a lookup scans the history), and runs no
// batch; the drafts are those of a drafter without staging.
TEST(SpeculativeDrafters, DraftModelLookupsBackOffWhereTheTextDoesNotRepeat) {
  const Loaded l = load("granitehybrid-dense");
  ASSERT_TRUE(l.target && l.draft);
  auto staged = lookup_drafter(l, true), plain = lookup_drafter(l, false);
  ASSERT_TRUE(staged && plain);
  const int32_t V = l.draft->hp.n_vocab;
  std::vector<TokenId> history;
  for (int32_t i = 0; i < 8; ++i) history.push_back((i * 37 + 11) % V);
  for (int32_t step = 0; step < 96; ++step) {
    auto a = staged->draft(1, history, 6);
    auto b = plain->draft(1, history, 6);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(*a, *b) << "step " << step;
    // Two fresh tokens a step, never seen before: no suffix recurs.
    history.push_back(static_cast<TokenId>((history.size() * 131 + 7) % V));
    history.push_back(static_cast<TokenId>((history.size() * 131 + 7) % V));
  }
  const LookupStats& ls = staged->lookup_stats();
  EXPECT_EQ(ls.calls, 96);
  EXPECT_EQ(ls.batches, 0);
  EXPECT_LE(ls.lookups, 8 + 96 / 8) << "lookups kept scanning a text that does not repeat";
}

TEST(SpeculativeDrafters, NgramContinuesTheLatestOccurrence) {
  NgramDrafter d({.n_max = 3, .n_min = 1});
  // "... 5 6 7 8 9 ... 5 6 7 1 2 ... 6 7" -> latest "6 7" is followed by "1 2 ..."
  const std::vector<TokenId> h = {5, 6, 7, 8, 9, 4, 5, 6, 7, 1, 2, 3, 6, 7};
  auto out = d.draft(0, h, 4);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, (std::vector<TokenId>{1, 2, 3, 6}));
  auto none = d.draft(0, {1, 2, 3}, 4);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  // The continuation runs into the end of the history: it goes on with the drafted tokens, so a
  // loop drafts to full length; with extend off it stops there.
  auto looped = d.draft(0, {1, 2, 1}, 4);
  ASSERT_TRUE(looped.ok());
  EXPECT_EQ(*looped, (std::vector<TokenId>{2, 1, 2, 1}));
  auto loop3 = d.draft(0, {9, 4, 7, 5, 4, 7, 5, 4}, 7);  // "7 5 4" last seen at 2: period 3
  ASSERT_TRUE(loop3.ok());
  EXPECT_EQ(*loop3, (std::vector<TokenId>{7, 5, 4, 7, 5, 4, 7}));
  NgramDrafter capped_drafter({.n_max = 3, .n_min = 1, .extend = false});
  auto capped = capped_drafter.draft(0, {1, 2, 1}, 4);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(*capped, (std::vector<TokenId>{2, 1}));
}

// A draft model too small to split runs on one thread unless asked otherwise; a larger one gets
// the target's count.
TEST(SpeculativeDrafters, TinyDraftModelsDefaultToOneThread) {
  auto tiny = load_model(kFixtures + "llama/model-f16.gguf");
  ASSERT_TRUE(tiny.ok());
  uint64_t bytes = 0;
  for (const GgufTensorInfo& t : (*tiny)->file->tensors()) bytes += t.nbytes;
  ASSERT_LT(bytes, kTinyDraftBytes);
  EXPECT_EQ(default_draft_threads(**tiny, 2), 1);
  EXPECT_EQ(default_draft_threads(**tiny, 8), 1);
  SyntheticSpec spec;
  spec.n_embd = 512;  // its Mamba2 in-projections alone are several MiB
  const std::string path = ::testing::TempDir() + "/spec_draft_threads.gguf";
  ASSERT_TRUE(write_synthetic_model(spec, path).ok());
  auto big = load_model(path);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(default_draft_threads(**big, 2), 2);
  EXPECT_EQ(default_draft_threads(**big, 8), 8);
  EXPECT_EQ(default_draft_threads(**big, 0), 1);
}

TEST(SpeculativeDrafters, DraftModelWithAnotherVocabularyIsRefused) {
  auto a = load_model(kFixtures + "llama/model-f32.gguf");
  ASSERT_TRUE(a.ok());
  SyntheticSpec spec;  // a random model whose vocabulary differs
  const std::string path = ::testing::TempDir() + "/spec_other_vocab.gguf";
  ASSERT_TRUE(write_synthetic_model(spec, path).ok());
  auto b = load_model(path);
  ASSERT_TRUE(b.ok());
  auto drafter = ModelDrafter::create(**a, nullptr, **b, nullptr, {});
  ASSERT_FALSE(drafter.ok());
  EXPECT_EQ(drafter.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(drafter.status().message().find("vocabulary"), std::string::npos)
      << drafter.status().message();
}

TEST(SpeculativeDrafters, ControllerPausesWhenSpeculationIsSlower) {
  SpecController c({.draft_max = 8, .draft_min = 0, .adaptive = true});
  for (int i = 0; i < 2; ++i) {  // measures two plain steps first (one may have stalled)
    EXPECT_EQ(c.draft_len(), 0);
    c.record(0, 0, 0.0, 0.010);
  }
  int32_t k = c.draft_len();
  ASSERT_GT(k, 0);
  // Every draft rejected, verification costs what it costs per token: slower than plain.
  for (int i = 0; i < 3 && !c.paused(); ++i) {
    c.record(k, 0, 0.001 * k, 0.010 * (k + 1));
    if (!c.paused()) k = c.draft_len();
  }
  EXPECT_TRUE(c.paused());
  int plain = 0;
  while (c.draft_len() == 0 && plain < 100) ++plain, c.record(0, 0, 0.0, 0.010);
  EXPECT_EQ(plain, 8);
  // The probe fails too (cheaply): the next pause is twice as long.
  c.record(2, 0, 0.0001, 0.013);
  EXPECT_TRUE(c.paused());
  plain = 0;
  while (c.draft_len() == 0 && plain < 1000) ++plain, c.record(0, 0, 0.0, 0.010);
  EXPECT_EQ(plain, 16);
  // A probe whose drafter first caught up for 3 plain steps' time.
  // The pause length follows the lower median of the last probes' costs, so one such probe (it
  // could be one that lost the CPU) only doubles the pause; two make it long enough that such a
  // probe costs at most 2% of it (0.034 s over 0.010 s steps: >= 170 steps).
  c.record(2, 0, 0.031, 0.013, 0.030);
  EXPECT_TRUE(c.paused());
  plain = 0;
  while (c.draft_len() == 0 && plain < 1000) ++plain, c.record(0, 0, 0.0, 0.010);
  EXPECT_EQ(plain, 32);
  c.record(2, 0, 0.031, 0.013, 0.030);
  EXPECT_TRUE(c.paused());
  plain = 0;
  while (c.draft_len() == 0 && plain < 1000) ++plain, c.record(0, 0, 0.0, 0.010);
  EXPECT_GE(plain, 170);
  EXPECT_LE(plain, 172);
}

// A deterministic stand-in for a target / drafter pair: every cost in units of a plain step,
// acceptance from a fixed pseudo-random sequence. run() drives a SpecController as generate()
// does, for n tokens, and returns the time taken over plain decoding's (n plain steps).
struct FakePair {
  double draft_forward = 0.1;            // one draft forward
  double catch_up_per_token = 0.02;      // each token the drafter missed (batched, cheap)
  double verify_per_token = 0.1;         // verify(n) = 1 + (n - 1) * this
  double acceptance = 0;                 // each draft token, given the ones before it
  double propose = 1;                    // share of calls that propose (the rest: none)
  bool acceptance_flips_to_all = false;  // from the middle on, every draft is accepted
  // > 0: a periodic text (a greedy loop) instead: the drafter is right everywhere except at the
  // tokens whose position is a multiple of `period` (acceptance is ignored).
  int32_t period = 0;
  std::vector<double> verify_table = {};  // else verify(n) = verify_table[n] when given
  // Timing noise of a shared host: each timed part (a plain step, a drafter call, a verification)
  // loses the CPU for `stall` plain steps with probability stall_rate, and the first drafter call
  // past the first (a first-use cost) for first_stall; from an RNG of its own, so that drafts and
  // acceptance are those of the noiseless run. `stalled` sums what they added.
  double stall = 0, stall_rate = 0, first_stall = 0;
  // Each timed part also takes up to `jitter` longer (uniform; the same noise RNG): a shared
  // host's steady unevenness rather than its rare stalls.
  double jitter = 0;
  bool adaptive = true;  // false: always draft_max (a fixed length, for comparison)
  SpecCosts costs = {};
  int64_t drafted = 0, accepted = 0;
  std::vector<int64_t> lengths = std::vector<int64_t>(17, 0);  // steps by requested length
  double stalled = 0;

  double run(int64_t n, int32_t draft_max = 8) {
    SpecController c({.draft_max = draft_max, .draft_min = 0, .adaptive = adaptive});
    uint64_t rng = 12345;
    auto uniform = [&rng] {
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      return double(rng >> 11) * 0x1.0p-53;
    };
    uint64_t tail_rng = 4242;  // the drafter's hits on tokens it did not draft (acceptance mode)
    auto tail_uniform = [&tail_rng] {
      tail_rng = tail_rng * 6364136223846793005ull + 1442695040888963407ull;
      return double(tail_rng >> 11) * 0x1.0p-53;
    };
    uint64_t noise_rng = 777;
    auto noise = [&](double extra = 0) {
      noise_rng = noise_rng * 6364136223846793005ull + 1442695040888963407ull;
      const double u = double(noise_rng >> 11) * 0x1.0p-53;
      const double s = extra + (u < stall_rate ? stall : 0.0);
      stalled += s;
      return s + jitter * u;  // u is uniform: a stall (u < stall_rate) adds little jitter
    };
    double time = 0;
    int64_t done = 0, calls = 0;
    int64_t missed = 10;  // tokens the drafter has not run (first: the prompt)
    while (done < n) {
      const int32_t k = static_cast<int32_t>(std::min<int64_t>(c.draft_len(), n - done - 1));
      ++lengths[std::clamp(k, 0, 16)];
      if (k <= 0) {
        const double plain = 1.0 + noise();
        c.record(0, 0, 0.0, plain);
        time += plain, ++done, ++missed;
        continue;
      }
      // The drafter catches up on what it missed (more than the steady two tokens: a pause),
      // from a 32-token window past 64, as ModelDrafter does; then drafts.
      ++missed;  // the pending token
      const double catch_up =
          missed > 2 ? draft_forward + catch_up_per_token * double(missed > 64 ? 32 : missed) : 0;
      const int32_t d = uniform() < propose ? k : 0;
      const double draft = (catch_up > 0 ? catch_up : draft_forward) +
                           draft_forward * std::min(d, k - 1) +
                           noise(++calls == 2 ? first_stall : 0);
      const double a = acceptance_flips_to_all && done >= n / 2 ? 1.0 : acceptance;
      // What the drafter would have drafted for the last tokens it had not seen (the pending
      // token is at position done, the drafts follow it).
      std::vector<uint8_t> tail;
      for (int64_t p = done - std::min<int64_t>(missed, Drafter::kMaxTailHits) + 1; p <= done; ++p)
        tail.push_back(period > 0 ? p % period != 0 : tail_uniform() < a);
      int32_t acc = 0;
      if (period > 0) {
        while (acc < d && (done + 1 + acc) % period != 0) ++acc;
      } else {
        while (acc < d && uniform() < a) ++acc;
      }
      const double verify =
          (static_cast<size_t>(d + 1) < verify_table.size() ? verify_table[d + 1]
                                                            : 1.0 + verify_per_token * d) +
          noise();
      c.record(d, acc, draft, verify, catch_up, &tail);
      drafted += d, accepted += acc;
      time += draft + verify;
      done += acc + 1;
      missed = 0;
    }
    costs = c.costs();
    return time / double(n);
  }
};

// The back-off (issue 12: never more than 5% slower than plain decoding when speculation does not
// pay): driven with fixed costs, the controller pauses, and what it spends on probes, the
// drafter's catch-up after each pause included, stays within a few percent.
TEST(SpeculativeDrafters, ControllerBackOffCostsAtMostAFewPercent) {
  // A draft model that never proposes (p-min at temperature 1) but costs a fifth of a step per
  // call, and a catch-up per missed token.
  FakePair silent{.draft_forward = 0.2, .catch_up_per_token = 0.02, .propose = 0};
  EXPECT_LE(silent.run(1024), 1.02);
  EXPECT_EQ(silent.drafted, 0);
  // Plain steps: pauses, and steps where the drafter's reported misses say not to ask it.
  EXPECT_GE(silent.costs.paused_steps + silent.costs.miss_steps, 990);
  EXPECT_LE(silent.costs.probes, 8);
  EXPECT_LE(silent.costs.probe_seconds, 0.01 * 1024);

  // The same with an expensive catch-up (a long pause costs the drafter up to 64 tokens): the
  // pauses lengthen so that probes stay cheap.
  FakePair dear_catch_up{.draft_forward = 0.2, .catch_up_per_token = 0.2, .propose = 0};
  EXPECT_LE(dear_catch_up.run(2048), 1.03);
  EXPECT_LE(dear_catch_up.costs.probe_seconds, 0.02 * 2048 + 16);

  // A drafter that proposes rarely (one call in ten), always accepted, at a quarter of a step per
  // forward: speculation cannot pay (each call costs more than its rare token saves).
  FakePair rare{.draft_forward = 0.25, .verify_per_token = 0.3, .acceptance = 1, .propose = 0.1};
  EXPECT_LE(rare.run(1024), 1.03);
  EXPECT_LE(rare.costs.probes, 10);

  // Drafts rejected (temperature 1 with an n-gram lookup that costs nothing): pauses too.
  FakePair rejected{.draft_forward = 1e-4, .catch_up_per_token = 0, .verify_per_token = 0.3};
  EXPECT_LE(rejected.run(1024), 1.02);

  // A pair that pays: the controller keeps speculating (time per token well under a step)...
  FakePair good{.draft_forward = 0.1, .verify_per_token = 0.1, .acceptance = 0.9};
  EXPECT_LE(good.run(1024), 0.5);
  EXPECT_LE(good.costs.paused_steps, 8);
  // ...and one that stops rejecting half-way is picked up again after its pauses.
  FakePair flips{.draft_forward = 0.1, .verify_per_token = 0.3, .acceptance_flips_to_all = true};
  EXPECT_LE(flips.run(2048), 0.8);
  EXPECT_GT(flips.accepted, 700);  // of at most ~1024 tokens in the second half
}

// Timing noise (issue 12's back-off on a shared host): steps that lose the CPU for 20 plain steps
// now and then, and a first draft forward that costs 26 plain steps (first-use costs, as measured
// on the 5M pair), must neither pause speculation that pays nor keep speculation that does not:
// leaving out what the stalls themselves added, the noisy runs stay within 5% of the noiseless
// ones and of plain decoding.
TEST(SpeculativeDrafters, ControllerDecisionsSurviveTimingNoise) {
  const std::vector<double> verify = {0, 1.0, 1.06, 1.19, 1.51, 1.64, 1.72, 1.84, 2.04, 2.63};
  for (int64_t n : {256, 1024}) {
    SCOPED_TRACE(n);
    FakePair quiet{.draft_forward = 0.325,
                   .catch_up_per_token = 0.05,
                   .acceptance = 0.9,
                   .verify_table = verify};
    FakePair noisy = quiet;
    noisy.stall = 20, noisy.stall_rate = 0.01, noisy.first_stall = 26;
    const double t_quiet = quiet.run(n), t_noisy = noisy.run(n);
    EXPECT_GT(noisy.stalled, 26);
    EXPECT_LE(t_noisy - noisy.stalled / n, 1.05 * t_quiet) << "paused " << noisy.costs.paused_steps;
    EXPECT_LE(noisy.costs.paused_steps, quiet.costs.paused_steps + 16);

    // Drafting that never pays, with the same noise: still backs off within 5% of plain decoding.
    FakePair silent{.draft_forward = 0.2, .catch_up_per_token = 0.02, .propose = 0};
    FakePair rejected{.draft_forward = 1e-4, .catch_up_per_token = 0, .verify_per_token = 0.3};
    FakePair rare{.draft_forward = 0.25, .verify_per_token = 0.3, .acceptance = 1, .propose = 0.1};
    for (FakePair* f : {&silent, &rejected, &rare}) {
      f->stall = 20, f->stall_rate = 0.01, f->first_stall = 26;
      EXPECT_LE(f->run(n) - f->stalled / n, 1.05) << "probes " << f->costs.probes;
    }
  }
}

// One step of a simulated decode: asks for a length, "runs" it with the given costs (all drafts
// accepted, or none), records it; plain steps (the controller measures them now and then) cost
// `plain`. Returns the length asked for.
int32_t simulate_step(SpecController& c, double plain, double draft_per_token,
                      double (*verify)(int32_t n), bool accept, bool propose = true) {
  const int32_t k = c.draft_len();
  if (k == 0) {
    c.record(0, 0, 0.0, plain);
  } else {
    const int32_t d = propose ? k : 0;
    c.record(d, accept ? d : 0, std::max(1e-9, draft_per_token * k), verify(d + 1));
  }
  return k;
}

TEST(SpeculativeDrafters, ControllerLengthFollowsCostAndAcceptance) {
  // Everything accepted, verification nearly free (memory-bound): the longest drafts pay.
  SpecController cheap({.draft_max = 8, .draft_min = 0, .adaptive = true});
  auto cheap_verify = [](int32_t n) { return 0.010 + 0.0002 * (n - 1); };
  std::vector<int> chosen(9, 0);
  for (int i = 0; i < 64; ++i) {
    const int32_t k = simulate_step(cheap, 0.010, 1e-6, cheap_verify, true);
    ASSERT_LE(k, 8);
    if (i >= 32) ++chosen[k];
  }
  EXPECT_FALSE(cheap.paused());
  EXPECT_GE(cheap.acceptance_estimate(), 0.95);
  EXPECT_EQ(std::max_element(chosen.begin(), chosen.end()) - chosen.begin(), 8);

  // Everything accepted, but each drafted token costs 0.35 of a step and verification turns
  // compute-bound past 2 tokens (0.4 of a step per token): E(k) / cost(k) =
  // (k + 1) / (0.35 k + max(1, 0.4 (k + 1))) peaks at k = 2 (1.58x; k = 8: 1.41x).
  SpecController dear({.draft_max = 8, .draft_min = 0, .adaptive = true});
  auto dear_verify = [](int32_t n) { return std::max(0.010, 0.004 * n); };
  std::fill(chosen.begin(), chosen.end(), 0);
  for (int i = 0; i < 64; ++i) {
    const int32_t k = simulate_step(dear, 0.010, 0.0035, dear_verify, true);
    if (i >= 32) ++chosen[k];
  }
  EXPECT_FALSE(dear.paused());
  EXPECT_EQ(std::max_element(chosen.begin(), chosen.end()) - chosen.begin(), 2);
  EXPECT_NEAR(dear.verify_estimate(3), 0.012, 1e-4);

  // The same costs with nothing accepted: speculation pauses.
  SpecController rejected({.draft_max = 8, .draft_min = 0, .adaptive = true});
  int spec_steps = 0;
  for (int i = 0; i < 200; ++i)
    spec_steps += simulate_step(rejected, 0.010, 0.0035, dear_verify, false) > 0;
  EXPECT_LE(spec_steps, 12);  // a few to learn, then rare probes

  // A drafter that proposes nothing and costs nothing is kept asking; one that costs a step
  // for nothing pauses.
  SpecController empty_free({.draft_max = 8, .draft_min = 0, .adaptive = true});
  spec_steps = 0;
  for (int i = 0; i < 40; ++i)
    spec_steps += simulate_step(empty_free, 0.010, 1e-10, cheap_verify, false, false) > 0;
  EXPECT_FALSE(empty_free.paused());
  EXPECT_GE(spec_steps, 30);
  SpecController empty_dear({.draft_max = 8, .draft_min = 0, .adaptive = true});
  spec_steps = 0;
  for (int i = 0; i < 200; ++i)
    spec_steps += simulate_step(empty_dear, 0.010, 0.004, cheap_verify, false, false) > 0;
  EXPECT_LE(spec_steps, 12);
}

// A periodic text (the 5M default model's greedy output ends in a four-token loop, ", and the
// LORD", and its small draft model misses one token of the loop): what a draft length yields
// depends on where the step starts in the loop, not on a per-token acceptance. At k = 3 every step
// after a miss drafts exactly the three tokens the drafter gets right (the target supplies the
// fourth); k = 1 can avoid the miss too. The controller learns where the misses fall from the
// drafter's reported hits on the tokens it did not draft (SpecController, "Where the misses
// fall") and locks into k = 3. With the 5M pair's costs timed apart (a draft forward 0.11 of a
// plain step), as the quiet run of 2026-12-07 measured them in the run (0.125) and dearer
// still (0.2, dearer verification), it gets within 5% / 5% / 10% of the best fixed length,
// exploration included. (Before it learnt run lengths, one acceptance rate for every token: at
// 0.17, 1.27x against the best fixed 1.39x; on the real pair 1.18x against 1.55x fixed at 3.)
TEST(SpeculativeDrafters, ControllerFindsTheLengthThatFitsAPeriodicText) {
  struct Costs {
    double draft;
    std::vector<double> verify;
    double within;
  };
  for (const Costs& c :
       {Costs{0.11, {0, 1.0, 1.29, 1.70, 1.93, 2.46, 2.80, 3.10, 3.40, 4.19}, 1.05},
        Costs{0.125, {0, 1.0, 1.42, 1.98, 2.08, 2.84, 3.16, 3.62, 3.88, 4.56}, 1.05},
        Costs{0.2, {0, 1.0, 1.38, 1.90, 2.49, 3.0, 3.5, 4.0, 4.5, 5.0}, 1.10}}) {
    double best = 0;  // the best fixed length: 3 (4 tokens a step once locked)
    for (int32_t k = 1; k <= 8; ++k) {
      double tokens = 0, cost = 0;
      for (int64_t pending = 0; pending < 4096;) {  // drafts at pending + 1.., misses at 4 n
        int32_t acc = 0;
        while (acc < k && (pending + 1 + acc) % 4 != 0) ++acc;
        tokens += acc + 1, cost += k * c.draft + c.verify[k + 1], pending += acc + 1;
      }
      best = std::max(best, tokens / cost);
    }
    EXPECT_NEAR(best, 4 / (3 * c.draft + c.verify[4]), 0.01);
    FakePair loop{.draft_forward = c.draft, .catch_up_per_token = 0.05, .verify_table = c.verify};
    loop.period = 4;
    const double time_per_token = loop.run(2048);
    EXPECT_LE(time_per_token, c.within / best)
        << "speed-up " << 1 / time_per_token << ", best " << best << ", acceptance "
        << double(loop.accepted) / double(loop.drafted);
    EXPECT_LE(loop.costs.paused_steps, 16);
  }
}

// Uneven timings (a shared host: every verification or plain step up to 60% slower at random)
// with the distilled 5M pair's in-run costs and 99% acceptance, where lengths 3-8 are within 4%
// of each other: the controller does not settle on a short length because some samples of the
// longer ones read high, and gets within 8% of the best fixed length under the same noise.
TEST(SpeculativeDrafters, ControllerLengthSurvivesUnevenTimings) {
  const std::vector<double> verify = {0, 1.0, 1.15, 1.62, 2.02, 2.42, 2.85, 3.32, 3.88, 4.21};
  FakePair pair{.draft_forward = 0.12,
                .catch_up_per_token = 0.02,
                .acceptance = 0.99,
                .verify_table = verify};
  pair.jitter = 0.6;
  double best = 0;
  for (int32_t k = 1; k <= 8; ++k) {
    FakePair fixed = pair;
    fixed.adaptive = false;
    best = std::max(best, 1 / fixed.run(2048, k));
  }
  const double speed_up = 1 / pair.run(2048);
  EXPECT_GE(speed_up, best / 1.08) << "best fixed " << best;
  int64_t short_steps = pair.lengths[1] + pair.lengths[2];
  EXPECT_LE(short_steps, pair.costs.spec_steps / 5) << "k = 1 or 2 in most steps";
}

// The draft length follows measured costs: with the costs of the 302M F16 target and its Q4_0
// self-draft (measured with `chimera bench --spec-costs`: a draft forward 0.325 of a plain step,
// verify(n) below) and every draft accepted, the best fixed length is k = 7 (8 tokens for
// 7 x 0.325 + 2.04 steps: 1.85x); the controller gets within 5% of it, exploration included.
TEST(SpeculativeDrafters, ControllerFindsTheBestLengthFromMeasuredCosts) {
  const std::vector<double> verify = {0, 1.0, 1.06, 1.19, 1.51, 1.64, 1.72, 1.84, 2.04, 2.63};
  double best = 0;
  for (int32_t k = 1; k <= 8; ++k) best = std::max(best, (k + 1) / (0.325 * k + verify[k + 1]));
  EXPECT_NEAR(best, 8 / (0.325 * 7 + 2.04), 1e-12);
  FakePair self{
      .draft_forward = 0.325, .catch_up_per_token = 0.05, .acceptance = 1, .verify_table = verify};
  const double time_per_token = self.run(2048);
  EXPECT_LE(time_per_token, 1.05 / best) << "speed-up " << 1 / time_per_token << ", best " << best;
  EXPECT_LE(self.costs.paused_steps, 8);
}

// Moderate acceptance with thin margins (issue 12: where acceptance is decent, speculation on
// the 5M default model should not lose): the default model drafted by models/draft.gguf, costs
// from `chimera bench --spec-costs` (a draft forward 0.12 of a plain step, verify(n) below) and
// 72% acceptance per draft token: k = 1 pays 1.24x, and only while the acceptance estimate stays
// above ~38%. The controller gets within 3% of the best fixed length without pausing for long,
// and at 50% acceptance (best 1.08x) still gains.
TEST(SpeculativeDrafters, ControllerKeepsThinGainsAtModerateAcceptance) {
  const std::vector<double> verify = {0, 1.0, 1.27, 1.67, 2.13, 2.47, 2.86, 3.27, 3.61, 4.18};
  auto best_fixed = [&](double a) {
    double best = 1;
    for (int32_t k = 1; k <= 8; ++k)
      best = std::max(best, (1 - std::pow(a, k + 1)) / (1 - a) / (0.12 * k + verify[k + 1]));
    return best;
  };
  FakePair decent{.draft_forward = 0.12,
                  .catch_up_per_token = 0.01,
                  .acceptance = 0.72,
                  .verify_table = verify};
  EXPECT_NEAR(best_fixed(0.72), 1.237, 0.001);
  EXPECT_GE(1 / decent.run(1024), 0.97 * best_fixed(0.72));
  EXPECT_LE(decent.costs.paused_steps, 32);
  FakePair half = decent;
  half.acceptance = 0.5;
  EXPECT_GE(1 / half.run(1024), 1.03);
}

}  // namespace
}  // namespace chimera
