// The exactness promise on real (synthetic random-weight) models: a sequence's next-token logits
// are bit-identical however it was computed. No tolerance anywhere in this file: memcmp.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <random>

#include "kernels/cpu_features.h"
#include "models/synthetic.h"
#include "runtime/context.h"

namespace chimera {
namespace {

struct Case {
  const char* name;
  SyntheticSpec spec;
  const char* fixture = nullptr;  // a tests/fixtures/models GGUF instead of a synthetic model
  GgmlType kv = GgmlType::F16;    // the KV cache's type
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  SyntheticSpec hybrid;  // Mamba2 + one attention layer (NoPE), dense FFN
  hybrid.n_layer = 3;
  out.push_back({"granitehybrid_f32", hybrid});
  SyntheticSpec moe = hybrid;
  moe.n_expert = 4;
  moe.n_expert_used = 2;
  moe.rope = true;
  moe.weight_type = GgmlType::Q8_0;
  out.push_back({"granitehybrid_moe_rope_q8_0", moe});
  SyntheticSpec mamba;
  mamba.arch = "mamba2";
  mamba.n_layer = 2;
  mamba.ssm_groups = 2;
  mamba.weight_type = GgmlType::Q4_0;
  out.push_back({"mamba2_q4_0", mamba});
  SyntheticSpec llama;
  llama.arch = "llama";
  llama.n_layer = 2;
  llama.n_embd = 256;
  llama.weight_type = GgmlType::Q4_K;
  out.push_back({"llama_q4_k", llama});
  SyntheticSpec granite;
  granite.arch = "granite";
  granite.n_layer = 2;
  granite.weight_type = GgmlType::F16;
  out.push_back({"granite_f16", granite});
  // The other weight and KV types, each through a model with attention.
  SyntheticSpec hybrid_bf16 = hybrid;
  hybrid_bf16.weight_type = GgmlType::BF16;
  out.push_back({"granitehybrid_bf16_kv_bf16", hybrid_bf16, nullptr, GgmlType::BF16});
  SyntheticSpec llama_q5k = llama;
  llama_q5k.weight_type = GgmlType::Q5_K;
  out.push_back({"llama_q5_k_kv_f32", llama_q5k, nullptr, GgmlType::F32});
  SyntheticSpec granite_q6k = granite;
  granite_q6k.n_embd = 256;
  granite_q6k.weight_type = GgmlType::Q6_K;
  out.push_back({"granite_q6_k_kv_bf16", granite_q6k, nullptr, GgmlType::BF16});
  SyntheticSpec qwen;  // gated DeltaNet + gated attention, MoE, quantized weights
  qwen.arch = "qwen35moe";
  qwen.n_head = 4;
  qwen.n_head_kv = 2;
  qwen.head_dim = 32;
  qwen.n_ff = 64;
  qwen.n_expert = 4;
  qwen.n_expert_used = 2;
  qwen.ssm_state = 16;
  qwen.ssm_groups = 2;
  qwen.ssm_heads = 8;  // 4 value heads per key head
  qwen.weight_type = GgmlType::Q8_0;
  out.push_back({"qwen35moe_q8_0", qwen});
  // Gated-DeltaNet hybrids: the transformers-made fixtures (3 DeltaNet + 1 gated attention layer;
  // qwen35moe is covered by the synthetic Q8_0 case above)
  out.push_back({"qwen35_f16", {}, "qwen35/model-f16.gguf"});
  out.push_back({"qwen3next_f16", {}, "qwen3next/model-f16.gguf"});
  // Nemotron-H: Mamba2, NoPE attention and FFN-only (squared-ReLU) layers
  out.push_back({"nemotron_h_f32", {}, "nemotron_h/model-f32.gguf"});
  out.push_back({"nemotron_h_f16", {}, "nemotron_h/model-f16.gguf"});
  // Nemotron-H MoE: squared-ReLU experts, sigmoid + selection-bias routing, shared expert
  out.push_back({"nemotron_h_moe_f32", {}, "nemotron_h_moe/model-f32.gguf"});
  out.push_back({"nemotron_h_moe_f16", {}, "nemotron_h_moe/model-f16.gguf"});
  // LFM2: short-conv and QK-norm attention layers; LFM2-MoE adds sigmoid + bias routing
  out.push_back({"lfm2_f32", {}, "lfm2/model-f32.gguf"});
  out.push_back({"lfm2_f16", {}, "lfm2/model-f16.gguf"});
  out.push_back({"lfm2moe_f32", {}, "lfm2moe/model-f32.gguf"});
  out.push_back({"lfm2moe_f16", {}, "lfm2moe/model-f16.gguf"});
  // Falcon-H1: attention and Mamba2 in parallel in every layer (two memory layers each)
  out.push_back({"falcon_h1_f32", {}, "falcon-h1/model-f32.gguf"});
  out.push_back({"falcon_h1_f16", {}, "falcon-h1/model-f16.gguf"});
  // Gemma 3: sliding-window layers (window 8) beside a global one; sequences here outgrow it
  out.push_back({"gemma3_f32", {}, "gemma3/model-f32.gguf"});
  out.push_back({"gemma3_f16", {}, "gemma3/model-f16.gguf"});
  return out;
}

class Exactness : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const Case& c = GetParam();
    if (c.fixture) {
      path_ = std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/models/" + c.fixture;
    } else {
      path_ = ::testing::TempDir() + "/exact_" + c.name + ".gguf";
      Status st = write_synthetic_model(c.spec, path_);
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
    auto m = load_model(path_);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(*m);
  }

  ContextParams params(int threads = 1, uint32_t ubatch = 512, uint32_t snap_every = 16) const {
    ContextParams p;
    p.n_threads = threads;
    p.max_ubatch = ubatch;
    p.snapshot_interval = snap_every;
    p.max_seqs = 20;
    p.page_size = 16;
    p.memory_budget = 256ull << 20;
    p.kv_type = GetParam().kv;
    p.window_reserve = 2;  // window layers: rows behind the window are released
    return p;
  }

  std::unique_ptr<Context> make(const ContextParams& p) {
    auto ctx = Context::create(*model_, p);
    EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
    return ctx.ok() ? std::move(*ctx) : nullptr;
  }

  std::vector<int32_t> tokens(size_t n, uint32_t seed) const {
    std::mt19937 rng(seed);
    std::vector<int32_t> t(n);
    for (auto& x : t) x = static_cast<int32_t>(rng() % model_->hp.n_vocab);
    return t;
  }

  std::vector<float> copy_logits(const Context& ctx, size_t entry) const {
    const float* l = ctx.logits(entry);
    EXPECT_NE(l, nullptr);
    return l ? std::vector<float>(l, l + model_->hp.n_vocab) : std::vector<float>{};
  }

  // Decodes toks onto seq (continuing it) in one batch; logits of the last token.
  std::vector<float> feed(Context& ctx, int32_t seq, const std::vector<int32_t>& toks) {
    Batch b;
    const int64_t p0 = ctx.memory().next_pos(seq);
    for (size_t i = 0; i < toks.size(); ++i)
      b.add(toks[i], static_cast<int32_t>(p0 + i), seq, i + 1 == toks.size());
    Status st = ctx.decode(b);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return st.ok() ? copy_logits(ctx, toks.size() - 1) : std::vector<float>{};
  }

  // The oracle: a fresh context, the whole token list in one batch, one thread.
  std::vector<float> cold(const std::vector<int32_t>& toks) {
    auto ctx = make(params());
    return feed(*ctx, 0, toks);
  }

  static bool same(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && !a.empty() &&
           std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  }

  std::string path_;
  std::unique_ptr<Model> model_;
};

TEST_P(Exactness, LogitsAreFiniteAndNotFlat) {
  auto l = cold(tokens(20, 1));
  ASSERT_FALSE(l.empty());
  float lo = l[0], hi = l[0];
  for (float v : l) {
    ASSERT_TRUE(std::isfinite(v));
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  EXPECT_GT(hi - lo, 1e-3f) << "a model whose logits do not vary tests nothing";
}

TEST_P(Exactness, UbatchSizesAndThreadsDoNotMatter) {
  const auto toks = tokens(150, 2);
  const auto ref = cold(toks);
  // 3 and 4 threads (more than this machine's cores is fine): splits that do not divide the
  // model's widths evenly.
  for (int threads : {1, 2, 3, 4}) {
    for (uint32_t ub : {1u, 7u, 64u, 512u}) {
      if (threads > 2 && (ub == 1 || ub == 64)) continue;  // 3 and 4: two shapes suffice
      auto ctx = make(params(threads, ub));
      EXPECT_TRUE(same(feed(*ctx, 0, toks), ref)) << "threads " << threads << " ubatch " << ub;
    }
  }
}

TEST_P(Exactness, TokenByTokenEqualsPrefill) {
  const auto toks = tokens(40, 3);
  const auto ref = cold(toks);
  auto ctx = make(params(2));
  std::vector<float> last;
  for (int32_t t : toks) last = feed(*ctx, 0, {t});
  EXPECT_TRUE(same(last, ref));
}

TEST_P(Exactness, BatchWithFifteenOtherSequences) {
  const auto target = tokens(70, 4);
  const auto ref = cold(target);
  for (int threads : {1, 2, 3}) {
    auto ctx = make(params(threads, 64));
    // 16 sequences of different lengths, interleaved in one batch; the target is seq 7.
    Batch b;
    std::map<int32_t, std::vector<int32_t>> seqs;
    for (int32_t s = 0; s < 16; ++s) seqs[s] = s == 7 ? target : tokens(5 + 9 * s, 100 + s);
    size_t target_last = 0;
    for (size_t i = 0; i < 160; ++i) {
      for (auto& [s, toks] : seqs) {
        if (i >= toks.size()) continue;
        if (s == 7 && i + 1 == toks.size()) target_last = b.size();
        b.add(toks[i], static_cast<int32_t>(i), s, i + 1 == toks.size());
      }
    }
    ASSERT_TRUE(ctx->decode(b).ok());
    EXPECT_TRUE(same(copy_logits(*ctx, target_last), ref)) << "threads " << threads;
    // And the next decode step, batched across all sequences, still matches a cold run.
    Batch step;
    size_t target_entry = 0;
    for (auto& [s, toks] : seqs) {
      if (s == 7) target_entry = step.size();
      step.add(static_cast<int32_t>(s + 1), static_cast<int32_t>(toks.size()), s, true);
    }
    ASSERT_TRUE(ctx->decode(step).ok());
    auto extended = target;
    extended.push_back(8);
    EXPECT_TRUE(same(copy_logits(*ctx, target_entry), cold(extended)));
  }
}

TEST_P(Exactness, TailRemovalReplaysExactly) {
  const auto toks = tokens(100, 5);
  auto ctx = make(params(2, 32, 16));
  feed(*ctx, 0, toks);
  for (int64_t cut : {99, 64, 37, 1}) {
    ASSERT_TRUE(ctx->seq_rm(0, cut, -1).ok());
    ASSERT_EQ(ctx->memory().n_tokens(0), static_cast<uint32_t>(cut));
    const int32_t next = 11;
    auto got = feed(*ctx, 0, {next});
    std::vector<int32_t> expect(toks.begin(), toks.begin() + cut);
    expect.push_back(next);
    EXPECT_TRUE(same(got, cold(expect))) << "cut at " << cut;
    ASSERT_TRUE(ctx->seq_rm(0, cut, -1).ok());
  }
  // Global attention alone rolls back for free; a recurrent state, or window rows released
  // behind the window (cuts at 64 and 37), are rebuilt from a snapshot.
  if (model_->n_recurrent_layers() > 0 || ctx->memory().has_window())
    EXPECT_GT(ctx->stats().tokens_replayed, 0u);
  else
    EXPECT_EQ(ctx->stats().tokens_replayed, 0u);
}

TEST_P(Exactness, PrefixAndMiddleRemovalEqualTheRemainingTokens) {
  const auto toks = tokens(60, 6);
  auto ctx = make(params(1, 512, 16));
  feed(*ctx, 0, toks);
  ASSERT_TRUE(ctx->seq_rm(0, 10, 25).ok());  // middle
  std::vector<int32_t> expect(toks.begin(), toks.begin() + 10);
  expect.insert(expect.end(), toks.begin() + 25, toks.end());
  expect.push_back(3);
  EXPECT_TRUE(same(feed(*ctx, 0, {3}), cold(expect)));
  ASSERT_TRUE(ctx->seq_rm(0, 0, 20).ok());  // prefix
  expect.erase(expect.begin(), expect.begin() + 20);
  expect.push_back(4);
  EXPECT_TRUE(same(feed(*ctx, 0, {4}), cold(expect)));
}

TEST_P(Exactness, SnapshotRestore) {
  const auto a = tokens(45, 7), b = tokens(30, 8);
  auto ctx = make(params(2, 16, 0));
  feed(*ctx, 0, a);
  auto snap = ctx->memory().snapshot(0);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  feed(*ctx, 0, b);
  ASSERT_TRUE(ctx->memory().restore(0, *snap).ok());
  auto expect = a;
  expect.push_back(9);
  EXPECT_TRUE(same(feed(*ctx, 0, {9}), cold(expect)));
  EXPECT_TRUE(ctx->memory().release(*snap).ok());
}

TEST_P(Exactness, ForkedSequencesDivergeExactly) {
  const auto prompt = tokens(50, 9), c1 = tokens(12, 10), c2 = tokens(17, 11);
  auto ctx = make(params(2, 64));
  feed(*ctx, 0, prompt);
  ASSERT_TRUE(ctx->memory().seq_cp(0, 1).ok());
  ASSERT_TRUE(ctx->memory().seq_cp(0, 2).ok());
  auto l1 = feed(*ctx, 1, c1);
  auto l2 = feed(*ctx, 2, c2);
  auto l0 = feed(*ctx, 0, {5});
  auto e1 = prompt, e2 = prompt, e0 = prompt;
  e1.insert(e1.end(), c1.begin(), c1.end());
  e2.insert(e2.end(), c2.begin(), c2.end());
  e0.push_back(5);
  EXPECT_TRUE(same(l1, cold(e1)));
  EXPECT_TRUE(same(l2, cold(e2)));
  EXPECT_TRUE(same(l0, cold(e0)));
}

TEST_P(Exactness, FailedBatchLeavesNoTrace) {
  const auto a = tokens(30, 12), b = tokens(40, 13);
  auto ctx = make(params(1, 8));
  feed(*ctx, 0, a);
  const uint64_t before = ctx->memory().fingerprint();
  ctx->inject_compute_failure(3);  // fails in the middle of the 5-ubatch batch below
  Batch bad;
  for (size_t i = 0; i < b.size(); ++i) bad.add(b[i], static_cast<int32_t>(a.size() + i), 0, true);
  Status st = ctx->decode(bad);
  EXPECT_EQ(st.code(), ErrorCode::kInternal);
  EXPECT_EQ(ctx->memory().fingerprint(), before);
  auto expect = a;
  expect.push_back(6);
  EXPECT_TRUE(same(feed(*ctx, 0, {6}), cold(expect)));
}

// Speculative verification ("commit up to token j of this run"): a batch where two sequences
// verify runs of drafted tokens with per-token states and a third decodes normally; keeping a
// prefix of each run leaves every sequence bit for bit where a cold run over its kept token list
// would, with no replay. Every verified position's logits equal a cold run's too.
TEST_P(Exactness, SpeculativeCommitKeepsAPrefixExactly) {
  const auto a = tokens(30, 20), b = tokens(21, 21), c = tokens(25, 22);
  const auto da = tokens(17, 23), db = tokens(6, 24), dc = tokens(4, 25);
  struct Keep {
    uint32_t ub, a, b;
  };
  for (Keep k : {Keep{5, 1, 6}, Keep{512, 9, 3}, Keep{3, 17, 1}, Keep{512, 4, 0}}) {
    const uint32_t ub = k.ub;
    {
      SCOPED_TRACE(::testing::Message() << "ubatch " << ub << " keep " << k.a << ", " << k.b);
      auto ctx = make(params(1, ub, 8));
      feed(*ctx, 0, a);
      feed(*ctx, 1, b);
      feed(*ctx, 2, c);
      Batch v;  // interleaved: seq 0 and 1 verify, seq 2 decodes a chunk
      for (size_t i = 0; i < da.size(); ++i) {
        v.add(da[i], static_cast<int32_t>(a.size() + i), 0, true);
        if (i < db.size()) v.add(db[i], static_cast<int32_t>(b.size() + i), 1, true);
        if (i < dc.size()) v.add(dc[i], static_cast<int32_t>(c.size() + i), 2, i + 1 == dc.size());
      }
      ASSERT_TRUE(ctx->decode_open(v, {0, 1}).ok());
      // Logits of seq 0's verified positions: those of cold runs over each prefix.
      for (size_t i : {size_t{0}, size_t{k.a + 1u}, da.size() - 1}) {
        if (i >= da.size() || (ub != 512 && i != 0)) continue;
        size_t entry = 0, seen = 0;
        for (; entry < v.size(); ++entry)
          if (v.seq[entry] == 0 && seen++ == i) break;
        auto expect = a;
        expect.insert(expect.end(), da.begin(), da.begin() + i + 1);
        const float* l = ctx->logits(entry);
        ASSERT_NE(l, nullptr);
        EXPECT_TRUE(same(std::vector<float>(l, l + model_->hp.n_vocab), cold(expect)))
            << "verified position " << i;
      }
      // A partial keep of the sequence without per-token states is refused on recurrent models.
      if (model_->n_recurrent_layers() > 0) {
        EXPECT_FALSE(ctx->accept({{2, 2}}).ok());
      }
      ASSERT_TRUE(ctx->accept({{0, k.a}, {1, k.b}}).ok());
      EXPECT_EQ(ctx->stats().tokens_replayed, 0u);
      auto ea = a, eb = b, ec = c;
      ea.insert(ea.end(), da.begin(), da.begin() + k.a);
      eb.insert(eb.end(), db.begin(), db.begin() + k.b);
      ec.insert(ec.end(), dc.begin(), dc.end());
      EXPECT_EQ(ctx->memory().tokens(0), ea);
      EXPECT_EQ(ctx->memory().tokens(1), eb);
      EXPECT_EQ(ctx->memory().tokens(2), ec);
      for (auto [seq, expect] : {std::pair{0, ea}, std::pair{1, eb}, std::pair{2, ec}}) {
        expect.push_back(13);
        EXPECT_TRUE(same(feed(*ctx, seq, {13}), cold(expect))) << "seq " << seq;
      }
    }
  }
}

// Verification by prefix recompute (the default): the verify pass keeps only each recurrent
// layer's per-token conv/scan inputs and accept() re-runs conv and scan over the kept prefix from
// the pre-verify state. For every kept count j of a 6-token verify, with a second sequence
// verifying 3 tokens and a third decoding plainly in the same batch, every recurrent state of
// every sequence is byte-identical to decoding the kept tokens plainly one at a time, and so are
// the next logits; the per-token-state path gives the same bytes.
TEST_P(Exactness, SpeculativeRecomputeEqualsPlainDecodeForEveryPrefix) {
  // Lengths keep each verify run clear of the snapshot interval (16): one run per sequence.
  const auto a = tokens(18, 40), b = tokens(9, 41), c = tokens(5, 42);
  const auto da = tokens(6, 43), db = tokens(3, 44), dc = tokens(2, 45);
  const int32_t next = 7;
  // The reference: prompts in one batch each, then the drafted tokens plainly, one at a time;
  // the state bytes after every count, and forks (seq 3 + j for seq 0's count j) that decode
  // `next` for the logits.
  auto ref = make(params());
  const MemoryConfig& cfg = ref->memory().config();
  using States = std::vector<std::vector<float>>;
  auto states = [&](const Context& ctx, int32_t seq) {
    States out;
    for (uint32_t il = 0; il < cfg.layers.size(); ++il) {
      const MemoryLayer& l = cfg.layers[il];
      if (l.kind != LayerKind::kRecurrent) continue;
      const float* cs = ctx.memory().conv_state(il, seq);
      const float* ss = ctx.memory().ssm_state(il, seq);
      out.emplace_back(cs, cs + l.conv_floats);
      out.emplace_back(ss, ss + l.ssm_floats);
    }
    return out;
  };
  auto bytes_equal = [](const States& x, const States& y) {
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (x[i].size() != y[i].size() ||
          (!x[i].empty() &&  // a short conv has no scan state: memcmp(nullptr, ...) is UB
           std::memcmp(x[i].data(), y[i].data(), x[i].size() * sizeof(float)) != 0))
        return false;
    return true;
  };
  feed(*ref, 0, a);
  feed(*ref, 1, b);
  feed(*ref, 2, c);
  std::vector<States> ref_a, ref_b;
  for (size_t j = 0; j <= da.size(); ++j) {
    ref_a.push_back(states(*ref, 0));
    ASSERT_TRUE(ref->memory().seq_cp(0, static_cast<int32_t>(3 + j)).ok());
    if (j < da.size()) feed(*ref, 0, {da[j]});
  }
  for (size_t j = 0; j <= db.size(); ++j) {
    ref_b.push_back(states(*ref, 1));
    if (j < db.size()) feed(*ref, 1, {db[j]});
  }
  for (int32_t t : dc) feed(*ref, 2, {t});
  const States ref_c = states(*ref, 2);
  std::vector<std::vector<float>> ref_next;
  for (size_t j = 0; j <= da.size(); ++j)
    ref_next.push_back(feed(*ref, static_cast<int32_t>(3 + j), {next}));

  for (bool recompute : {true, false}) {
    for (uint32_t ja = 0; ja <= da.size(); ++ja) {
      if (!recompute && ja != 1 && ja != 4) continue;  // the per-token path: two counts suffice
      const uint32_t jb = ja % (db.size() + 1);
      SCOPED_TRACE(::testing::Message() << (recompute ? "recompute" : "per-token states")
                                        << " keep " << ja << ", " << jb);
      ContextParams p = params(ja == 3 ? 2 : 1);
      p.verify_by_recompute = recompute;
      auto ctx = make(p);
      feed(*ctx, 0, a);
      feed(*ctx, 1, b);
      feed(*ctx, 2, c);
      Batch v;
      for (size_t i = 0; i < da.size(); ++i) {
        v.add(da[i], static_cast<int32_t>(a.size() + i), 0, true);
        if (i < db.size()) v.add(db[i], static_cast<int32_t>(b.size() + i), 1, true);
        if (i < dc.size()) v.add(dc[i], static_cast<int32_t>(c.size() + i), 2, i + 1 == dc.size());
      }
      ASSERT_TRUE(ctx->decode_open(v, {0, 1}).ok());
      if (model_->n_recurrent_layers() > 0) {
        EXPECT_EQ(ctx->memory().replays_prefix(0), recompute);  // the path under test is taken
        EXPECT_FALSE(ctx->memory().replays_prefix(2));
      }
      ASSERT_TRUE(ctx->accept({{0, ja}, {1, jb}}).ok());
      auto ea = a, eb = b, ec = c;
      ea.insert(ea.end(), da.begin(), da.begin() + ja);
      eb.insert(eb.end(), db.begin(), db.begin() + jb);
      ec.insert(ec.end(), dc.begin(), dc.end());
      EXPECT_EQ(ctx->memory().tokens(0), ea);
      EXPECT_EQ(ctx->memory().tokens(1), eb);
      EXPECT_EQ(ctx->memory().tokens(2), ec);
      EXPECT_TRUE(bytes_equal(states(*ctx, 0), ref_a[ja])) << "seq 0's recurrent states";
      EXPECT_TRUE(bytes_equal(states(*ctx, 1), ref_b[jb])) << "seq 1's recurrent states";
      EXPECT_TRUE(bytes_equal(states(*ctx, 2), ref_c)) << "seq 2's recurrent states";
      EXPECT_TRUE(same(feed(*ctx, 0, {next}), ref_next[ja]));
    }
  }
}

// The recompute contract: a partial keep needs the prefix recomputed for exactly that count
// first; the memory refuses a commit that would make an unwritten or other prefix's state live.
TEST_P(Exactness, SpeculativeRecomputeContractIsChecked) {
  const auto a = tokens(18, 46), d = tokens(5, 47);
  auto ctx = make(params());
  feed(*ctx, 0, a);
  HybridMemory& mem = ctx->memory();
  Batch v;
  for (size_t i = 0; i < d.size(); ++i) v.add(d[i], static_cast<int32_t>(a.size() + i), 0, true);
  ASSERT_TRUE(mem.begin_batch(v, {}, {0}).ok());
  if (model_->n_recurrent_layers() == 0) {  // nothing to recompute: a partial keep commits as is
    EXPECT_FALSE(mem.replays_prefix(0));
    ASSERT_TRUE(mem.commit({{0, 2}}).ok());
    EXPECT_FALSE(mem.in_batch());
    auto expect = a;
    expect.insert(expect.end(), d.begin(), d.begin() + 2);
    EXPECT_EQ(mem.tokens(0), expect);
    return;
  }
  ASSERT_TRUE(mem.replays_prefix(0));
  EXPECT_FALSE(mem.commit({{0, 2}}).ok());  // nothing recomputed
  uint32_t rec = 0;
  while (mem.config().layers[rec].kind != LayerKind::kRecurrent) ++rec;
  EXPECT_FALSE(mem.recurrent_prefix(rec, 0, 0).ok());
  EXPECT_FALSE(mem.recurrent_prefix(rec, 0, 5).ok());
  EXPECT_FALSE(mem.recurrent_prefix(rec, 1, 2).ok());
  ASSERT_TRUE(mem.recurrent_prefix(rec, 0, 3).ok());
  EXPECT_FALSE(mem.commit({{0, 2}}).ok());  // recomputed for 3, not 2
  EXPECT_FALSE(mem.commit({}).ok());        // the final state was overwritten: not all 5
  EXPECT_TRUE(mem.in_batch());
  mem.abort();
  EXPECT_FALSE(mem.begin_batch(v, {0}, {0}).ok());  // both modes at once
  EXPECT_FALSE(mem.begin_batch(v, {}, {3}).ok());   // not in the batch
}

// A verification batch that is rejected, or fails in a ubatch, leaves the memory as it was.
TEST_P(Exactness, SpeculativeRejectAndFailureLeaveNoTrace) {
  const auto a = tokens(33, 26), d = tokens(12, 27);
  auto ctx = make(params(1, 4, 8));
  feed(*ctx, 0, a);
  const uint64_t before = ctx->memory().fingerprint();
  Batch v;
  for (size_t i = 0; i < d.size(); ++i) v.add(d[i], static_cast<int32_t>(a.size() + i), 0, true);
  ASSERT_TRUE(ctx->decode_open(v, {0}).ok());
  ctx->reject();
  EXPECT_EQ(ctx->memory().fingerprint(), before);
  ctx->inject_compute_failure(2);
  EXPECT_EQ(ctx->decode_open(v, {0}).code(), ErrorCode::kInternal);
  EXPECT_FALSE(ctx->batch_open());
  EXPECT_EQ(ctx->memory().fingerprint(), before);
  ASSERT_TRUE(ctx->decode_open(v, {0}).ok());
  ASSERT_TRUE(ctx->accept({{0, 0}}).ok());  // nothing kept: the pre-batch state
  EXPECT_EQ(ctx->memory().fingerprint(), before);
  auto expect = a;
  expect.push_back(6);
  EXPECT_TRUE(same(feed(*ctx, 0, {6}), cold(expect)));
}

// seq_add shifts a whole sequence: its logits must equal a cold run that started at the shifted
// position (an empty sequence shifted first). Without RoPE (NoPE, Mamba2) they must also equal
// the unshifted run's. (With RoPE a uniform shift changes scores only by rounding, which the
// activation quantization of quantized weights can erase, so no inequality is asserted.)
TEST_P(Exactness, ShiftedSequenceEqualsAColdRunAtTheShiftedPosition) {
  const auto toks = tokens(45, 14);
  const int32_t next = 21;
  auto cold_at = [&](int64_t base, const std::vector<int32_t>& t) {
    auto ctx = make(params(1));
    EXPECT_TRUE(ctx->memory().seq_add(0, -1, -1, base).ok());
    return feed(*ctx, 0, t);
  };
  auto with_next = toks;
  with_next.push_back(next);
  const auto unshifted = cold(with_next);
  auto ctx = make(params(2, 16, 16));
  feed(*ctx, 0, toks);
  int64_t base = 0;
  for (int64_t delta : {int64_t{37}, int64_t{-20}}) {
    auto out = ctx->memory().seq_add(0, -1, -1, delta);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    ASSERT_TRUE(ctx->replay(out->replay).ok());
    base += delta;
    ASSERT_EQ(ctx->memory().pos_min(0), base);
    const auto got = feed(*ctx, 0, {next});
    EXPECT_TRUE(same(got, cold_at(base, with_next))) << "shifted by " << delta;
    if (!ctx->memory().config().positions_matter) {
      EXPECT_TRUE(same(got, unshifted)) << "position-free model whose logits depend on a shift";
    }
    ASSERT_TRUE(ctx->seq_rm(0, base + static_cast<int64_t>(toks.size()), -1).ok());
  }
}

// CI runs this file a second time with CHIMERA_ISA=scalar (tests/CMakeLists.txt): the forced path
// must really be the one in use, or that run would test the default path twice.
TEST(IsaSelection, ForcedIsaIsInEffect) {
  const char* forced = std::getenv("CHIMERA_ISA");
  if (forced != nullptr && *forced != '\0') {
    auto want = parse_isa(forced);
    ASSERT_TRUE(want.ok()) << want.status().ToString();
    ASSERT_TRUE(isa_supported(*want)) << forced;
    EXPECT_EQ(active_isa(), *want);
  } else {
    EXPECT_EQ(active_isa(), best_isa());
  }
}

INSTANTIATE_TEST_SUITE_P(Models, Exactness, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace chimera
