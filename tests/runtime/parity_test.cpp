// Parity with HF transformers: tests/fixtures/models/<model>/ holds tiny random-weight models run
// in float32 by transformers (python/make_model_fixtures.py) and their GGUF conversions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "runtime/context.h"

namespace chimera {
namespace {

const std::string kFixtures = std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/models/";

struct Reference {
  nlohmann::json json;
  std::string dir;
  int64_t n_vocab = 0;
  // transformers with the matrices rounded to F16 as model-f16.gguf stores them, where the
  // fixture has it (reference-f16w.json, python/check_f16_sensitivity.py): sequence -> file
  nlohmann::json f16w;
  std::vector<float> logits(const nlohmann::json& seq, bool f16_weights = false) const {
    const std::string file = f16_weights ? f16w[seq["name"].get<std::string>()].get<std::string>()
                                         : seq["logits"].get<std::string>();
    std::ifstream f(dir + file, std::ios::binary);
    std::vector<float> v(seq["n_tokens"].get<int64_t>() * n_vocab);
    f.read(reinterpret_cast<char*>(v.data()), v.size() * sizeof(float));
    EXPECT_TRUE(f.good()) << "short logits file for " << seq["name"];
    return v;
  }
};

Reference load_reference(const std::string& name) {
  Reference r;
  r.dir = kFixtures + name + "/";
  std::ifstream f(r.dir + "reference.json");
  EXPECT_TRUE(f.good()) << "missing " << r.dir << "reference.json";
  r.json = nlohmann::json::parse(f);
  r.n_vocab = r.json["n_vocab"].get<int64_t>();
  std::ifstream f16w(r.dir + "reference-f16w.json");
  if (f16w.good()) r.f16w = nlohmann::json::parse(f16w)["sequences"];
  return r;
}

// Normalised mean squared error of `got` against `want`.
double nmse(const float* got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(got[i]) - want[i];
    num += d * d;
    den += double(want[i]) * want[i];
  }
  return num / den;
}

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

float top2_gap(const float* x, int64_t n) {
  float a = -INFINITY, b = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] > a) {
      b = a;
      a = x[i];
    } else if (x[i] > b) {
      b = x[i];
    }
  }
  return a - b;
}

struct ParityCase {
  std::string model;
  std::string weights;  // "f32" or "f16"
};
void PrintTo(const ParityCase& c, std::ostream* os) {
  *os << c.model << "_" << c.weights;
}

class Parity : public ::testing::TestWithParam<ParityCase> {
 protected:
  void SetUp() override {
    ref_ = load_reference(GetParam().model);
    auto m = load_model(ref_.dir + ref_.json["gguf"][GetParam().weights].get<std::string>());
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(*m);
    ASSERT_EQ(model_->hp.n_vocab, ref_.n_vocab);
  }
  bool f32() const { return GetParam().weights == "f32"; }
  // F16 weights are compared with transformers running the same F16-rounded matrices where the
  // fixture has those logits: the gated-DeltaNet fixtures are sensitive enough to the rounding
  // itself (qwen35 2.7e-4, qwen35moe 0.07 at one position: a top-2 expert flip) that the float32
  // reference would measure the model, not the engine.
  bool f16w() const { return !f32() && !ref_.f16w.is_null(); }
  std::vector<float> want(const nlohmann::json& seq) const { return ref_.logits(seq, f16w()); }
  // Bounds from what each path shows (the largest NMSE per case is printed after each test):
  // F32 weights and KV differ from transformers only by float32 rounding order: 1e-13..4e-12 on
  // the Mamba2/attention fixtures, up to 1.8e-10 on the gated-DeltaNet ones (qwen35, qwen3next),
  // so 1e-9. F16 weights (compared with the float32 reference) show 2e-7..5e-6, 3.2e-5 on
  // qwen3next, so 1e-4. Rounding anything to F16 on the F32 path lands above its bound: an F16 KV
  // cache on F32 weights gives 5.8e-9..4e-7 (F32BoundSeesF16Rounding).
  // Against transformers on the same F16-rounded matrices (f16w) only the F16 KV cache remains:
  // 1.1e-8..1.5e-8 on the qwen fixtures, the same as the F32 path with an F16 KV cache; so 1e-6.
  static constexpr double kF32Bound = 1e-9, kF16Bound = 1e-4, kF16wBound = 1e-6;
  double bound() const { return f32() ? kF32Bound : f16w() ? kF16wBound : kF16Bound; }

  std::unique_ptr<Context> make(std::optional<GgmlType> kv = std::nullopt) {
    ContextParams p;
    p.n_threads = 2;
    p.max_seqs = 16;
    p.kv_type = f32() ? GgmlType::F32 : GgmlType::F16;  // HF keeps K/V in float32
    if (kv) p.kv_type = *kv;
    p.memory_budget = 64ull << 20;
    auto ctx = Context::create(*model_, p);
    EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
    return std::move(*ctx);
  }

  void TearDown() override {
    // The largest NMSE seen, for the record (the bounds above come from these printouts).
    std::printf("[ parity   ] %s: max NMSE %.3g (bound %.0e)\n",
                ::testing::UnitTest::GetInstance()->current_test_info()->name(), max_nmse_,
                bound());
  }

  void check_rows(const std::string& what, const std::vector<const float*>& got,
                  const std::vector<float>& want) {
    const int64_t V = ref_.n_vocab;
    for (size_t t = 0; t < got.size(); ++t) {
      ASSERT_NE(got[t], nullptr);
      const float* w = want.data() + t * V;
      const double e = nmse(got[t], w, V);
      max_nmse_ = std::max(max_nmse_, e);
      EXPECT_LT(e, bound()) << what << " position " << t;
      // Top-1 must agree (same weights as the reference) unless HF's own top two are closer
      // than the comparison noise.
      if ((f32() || f16w()) && top2_gap(w, V) > (f32() ? 1e-4f : 1e-3f)) {
        EXPECT_EQ(argmax(got[t], V), argmax(w, V)) << what << " position " << t;
      }
    }
  }

  Reference ref_;
  std::unique_ptr<Model> model_;
  double max_nmse_ = 0;
};

TEST_P(Parity, EverySequenceAlone) {
  for (const auto& seq : ref_.json["sequences"]) {
    auto ctx = make();
    std::vector<int32_t> toks = seq["tokens"].get<std::vector<int32_t>>();
    Batch b;
    for (size_t i = 0; i < toks.size(); ++i) b.add(toks[i], static_cast<int32_t>(i), 0, true);
    Status st = ctx->decode(b);
    ASSERT_TRUE(st.ok()) << st.ToString();
    std::vector<const float*> rows;
    for (size_t i = 0; i < toks.size(); ++i) rows.push_back(ctx->logits(i));
    check_rows(seq["name"].get<std::string>(), rows, want(seq));
  }
}

TEST_P(Parity, MultiSequenceBatch) {
  auto ctx = make();
  Batch b;
  std::vector<std::vector<size_t>> entries;
  std::vector<nlohmann::json> seqs;
  for (const auto& name : ref_.json["batch"]) {
    for (const auto& seq : ref_.json["sequences"])
      if (seq["name"] == name) seqs.push_back(seq);
  }
  entries.resize(seqs.size());
  // Interleave the sequences token by token, so every ubatch mixes them.
  for (size_t i = 0;; ++i) {
    bool any = false;
    for (size_t k = 0; k < seqs.size(); ++k) {
      const auto& toks = seqs[k]["tokens"];
      if (i >= toks.size()) continue;
      any = true;
      entries[k].push_back(b.size());
      b.add(toks[i].get<int32_t>(), static_cast<int32_t>(i), static_cast<int32_t>(k), true);
    }
    if (!any) break;
  }
  Status st = ctx->decode(b);
  ASSERT_TRUE(st.ok()) << st.ToString();
  for (size_t k = 0; k < seqs.size(); ++k) {
    std::vector<const float*> rows;
    for (size_t e : entries[k]) rows.push_back(ctx->logits(e));
    check_rows("batched " + seqs[k]["name"].get<std::string>(), rows, want(seqs[k]));
  }
}

// The F32 bound can tell an F32 path from one that rounds to F16: F16 weights (their own test
// case) and, on F32 weights, an F16 KV cache both exceed it on every fixture with attention.
TEST_P(Parity, F32BoundSeesF16Rounding) {
  double worst = 0;
  auto worst_of = [&](GgmlType kv) {
    double w = 0;
    for (const auto& seq : ref_.json["sequences"]) {
      auto ctx = make(kv);
      std::vector<int32_t> toks = seq["tokens"].get<std::vector<int32_t>>();
      Batch b;
      for (size_t i = 0; i < toks.size(); ++i) b.add(toks[i], static_cast<int32_t>(i), 0, true);
      EXPECT_TRUE(ctx->decode(b).ok());
      const std::vector<float> want = ref_.logits(seq);
      for (size_t i = 0; i < toks.size(); ++i)
        w = std::max(w, nmse(ctx->logits(i), want.data() + i * ref_.n_vocab, ref_.n_vocab));
    }
    return w;
  };
  if (!f32()) {
    worst = worst_of(GgmlType::F16);
    EXPECT_GT(worst, kF32Bound) << "F16 weights pass the F32 bound";
  } else if (model_->n_attention_layers() > 0) {
    worst = worst_of(GgmlType::F16);
    EXPECT_GT(worst, kF32Bound) << "an F16 KV cache passes the F32 bound";
  } else {
    worst = worst_of(GgmlType::F32);  // no KV cache: the F32 path itself, within its bound
    EXPECT_LT(worst, kF32Bound);
  }
  max_nmse_ = worst;
}

// Greedy tokens are compared on F32 weights (issue 6: the first 32 tokens of the reference).
class GreedyParity : public Parity {};

TEST_P(GreedyParity, ContinuationMatchesTransformers) {
  const auto& g = ref_.json["greedy"];
  std::vector<int32_t> prompt = g["prompt"].get<std::vector<int32_t>>();
  std::vector<int32_t> want = g["tokens"].get<std::vector<int32_t>>();
  std::vector<float> gaps = g["top2_gaps"].get<std::vector<float>>();
  auto ctx = make();
  Batch b;
  for (size_t i = 0; i < prompt.size(); ++i)
    b.add(prompt[i], static_cast<int32_t>(i), 0, i + 1 == prompt.size());
  ASSERT_TRUE(ctx->decode(b).ok());
  int32_t pos = static_cast<int32_t>(prompt.size());
  size_t entry = prompt.size() - 1;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NE(ctx->logits(entry), nullptr);
    const int32_t tok = static_cast<int32_t>(argmax(ctx->logits(entry), ref_.n_vocab));
    entry = 0;
    if (tok != want[i]) {
      // A near-tie in HF's own logits is the only acceptable reason to differ; then stop.
      EXPECT_LT(gaps[i], 1e-4f) << "step " << i << ": chimera " << tok << ", HF " << want[i];
      return;
    }
    Batch step;
    step.add(tok, pos++, 0, true);
    ASSERT_TRUE(ctx->decode(step).ok());
  }
}

std::vector<ParityCase> parity_cases(std::vector<const char*> weights) {
  std::vector<ParityCase> out;
  for (const char* m : {"granitehybrid-dense", "granitehybrid-moe", "mamba2", "mamba2-g2", "llama",
                        "granite", "qwen35", "qwen35moe", "qwen3next", "nemotron_h",
                        "nemotron_h_moe", "lfm2", "lfm2moe", "lfm2moe-tied", "falcon-h1", "gemma3"})
    for (const char* w : weights) {
      out.push_back({m, w});
    }
  return out;
}

std::string case_name(const ::testing::TestParamInfo<ParityCase>& info) {
  std::string n = info.param.model + "_" + info.param.weights;
  for (char& c : n)
    if (c == '-') c = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Parity, ::testing::ValuesIn(parity_cases({"f32", "f16"})),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Fixtures, GreedyParity, ::testing::ValuesIn(parity_cases({"f32"})),
                         case_name);

}  // namespace
}  // namespace chimera
