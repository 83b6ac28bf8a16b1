// A model whose weight matrices mix Q4_1, Q5_0, Q5_1, IQ4_NL and IQ4_XS, as real "Q4_K_M" and IQ4
// files do: it loads, its logits follow the same model with the weights dequantized to F32, and
// they are bit-identical however the sequence is batched, split into ubatches or threaded.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "gguf/quantize_model.h"
#include "gguf/quants.h"
#include "models/synthetic.h"
#include "runtime/context.h"

namespace chimera {
namespace {

constexpr GgmlType kMix[] = {GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL,
                             GgmlType::IQ4_XS};

// Copies a GGUF with each tensor converted to the type `pick` gives it.
std::vector<uint8_t> convert_copy(const GgufFile& f,
                                  const std::function<GgmlType(const GgufTensorInfo&)>& pick) {
  GgufWriter w;
  EXPECT_TRUE(copy_metadata(f, w).ok());
  ThreadContext threads(2);
  for (const GgufTensorInfo& t : f.tensors()) {
    std::vector<uint8_t> data;
    const Status st = convert_tensor(t, pick(t), threads, &data);
    EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_TRUE(w.add_tensor(t.name, pick(t), std::vector<int64_t>(t.ne, t.ne + t.n_dims),
                             data.data(), data.size())
                    .ok());
  }
  return w.to_bytes();
}

class MixedQuants : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Granite-4.0-H-like: Mamba2 + attention (RoPE), MoE with a shared expert. n_embd = 256 so
    // IQ4_XS fits the input-side matrices; n_ff = 96 makes ffn_down rows 96 long, where IQ4_XS
    // falls back to IQ4_NL (as llama.cpp's quantizer does).
    SyntheticSpec spec;
    spec.n_layer = 3;
    spec.n_embd = 256;
    spec.n_ff = 96;
    spec.n_expert = 4;
    spec.n_expert_used = 2;
    spec.rope = true;
    spec.ssm_heads = 8;
    GgufWriter w;
    ASSERT_TRUE(build_synthetic_model(spec, w).ok());
    f32_bytes_ = new std::vector<uint8_t>(w.to_bytes());
    auto f32 = GgufFile::from_buffer(f32_bytes_->data(), f32_bytes_->size(), "f32.gguf");
    ASSERT_TRUE(f32.ok()) << f32.status().ToString();

    // Round-robin over the five types for every matrix llama.cpp would quantize.
    types_ = new std::map<std::string, GgmlType>();
    int next = 0;
    for (const GgufTensorInfo& t : (*f32)->tensors()) {
      uint32_t dims = 1;
      for (uint32_t d = 1; d < t.n_dims; ++d)
        if (t.ne[d] > 1) dims = d + 1;
      GgmlType type = GgmlType::F32;
      if (!stays_f32(t.name, dims)) {
        type = kMix[next++ % 5];
        if (t.ne[0] % type_traits(type).block_size != 0) type = GgmlType::IQ4_NL;
      }
      (*types_)[t.name] = type;
    }
    mixed_bytes_ = new std::vector<uint8_t>(
        convert_copy(**f32, [](const GgufTensorInfo& t) { return types_->at(t.name); }));
    auto mixed = GgufFile::from_buffer(mixed_bytes_->data(), mixed_bytes_->size(), "mixed.gguf");
    ASSERT_TRUE(mixed.ok()) << mixed.status().ToString();
    // The reference: the mixed model's weights, dequantized to F32.
    deq_bytes_ = new std::vector<uint8_t>(
        convert_copy(**mixed, [](const GgufTensorInfo&) { return GgmlType::F32; }));
  }
  static void TearDownTestSuite() {
    delete f32_bytes_;
    delete mixed_bytes_;
    delete deq_bytes_;
    delete types_;
  }

  static std::unique_ptr<Model> load(const std::vector<uint8_t>& bytes) {
    auto f = GgufFile::from_buffer(bytes.data(), bytes.size(), "m.gguf");
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    auto m = load_model(std::move(*f));
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    return m.ok() ? std::move(*m) : nullptr;
  }

  static ContextParams params(int threads, uint32_t ubatch) {
    ContextParams p;
    p.n_threads = threads;
    p.max_ubatch = ubatch;
    p.max_seqs = 8;
    p.page_size = 16;
    p.memory_budget = 256ull << 20;
    return p;
  }

  // Logits after the last token of `toks`, fed as one batch.
  static std::vector<float> logits(const Model& m, const std::vector<int32_t>& toks,
                                   int threads = 1, uint32_t ubatch = 512) {
    auto ctx = Context::create(m, params(threads, ubatch));
    EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
    Batch b;
    for (size_t i = 0; i < toks.size(); ++i)
      b.add(toks[i], static_cast<int32_t>(i), 0, i + 1 == toks.size());
    EXPECT_TRUE((*ctx)->decode(b).ok());
    const float* l = (*ctx)->logits(toks.size() - 1);
    return std::vector<float>(l, l + m.hp.n_vocab);
  }

  static std::vector<int32_t> tokens(size_t n, uint32_t seed, uint32_t n_vocab) {
    std::mt19937 rng(seed);
    std::vector<int32_t> t(n);
    for (auto& x : t) x = static_cast<int32_t>(rng() % n_vocab);
    return t;
  }

  // Root mean square of (a - b) relative to the root mean square of b.
  static double rel_rms(const std::vector<float>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
      den += static_cast<double>(b[i]) * b[i];
    }
    return std::sqrt(num / den);
  }

  static std::vector<uint8_t>* f32_bytes_;
  static std::vector<uint8_t>* mixed_bytes_;
  static std::vector<uint8_t>* deq_bytes_;
  static std::map<std::string, GgmlType>* types_;
};
std::vector<uint8_t>* MixedQuants::f32_bytes_ = nullptr;
std::vector<uint8_t>* MixedQuants::mixed_bytes_ = nullptr;
std::vector<uint8_t>* MixedQuants::deq_bytes_ = nullptr;
std::map<std::string, GgmlType>* MixedQuants::types_ = nullptr;

TEST_F(MixedQuants, EveryTypeIsUsedForMatmulWeights) {
  std::map<GgmlType, int> count;
  for (const auto& [name, type] : *types_)
    if (name.find("_norm") == std::string::npos && name != "token_embd.weight") ++count[type];
  for (GgmlType t : kMix) EXPECT_GE(count[t], 2) << type_name(t);
  // Expert stacks (3-D) and the tied embedding / output matrix are among them.
  EXPECT_NE(types_->at("blk.0.ffn_down_exps.weight"), GgmlType::F32);
  EXPECT_NE(types_->at("blk.2.ffn_gate_exps.weight"), GgmlType::F32);
  EXPECT_NE(types_->at("token_embd.weight"), GgmlType::F32);
}

// The quantized model multiplies Q8 / Q8_K-quantized activations (act_quant.h) with the stored
// weights; the reference multiplies unquantized activations with the same weights, dequantized.
// So the logits differ by the activation quantization alone: a relative step of 1/127 of a
// block's largest value, i.e. an RMS error of about (2.5/127)/sqrt(12) ~ 0.6% of an activation,
// per matrix input, through 3 layers of ~4 matmuls each (0.4% measured), bounded here by 2%.
// Weight decoding errors are larger: the same model's F32 original (before quantization) is shown
// to be more than 4x further away (6-7% measured), so a kernel that decoded any type wrongly could
// not pass.
TEST_F(MixedQuants, LogitsFollowTheDequantizedModel) {
  auto mixed = load(*mixed_bytes_);
  auto deq = load(*deq_bytes_);
  auto orig = load(*f32_bytes_);
  ASSERT_TRUE(mixed && deq && orig);
  for (uint32_t seed : {1u, 2u, 3u}) {
    const auto toks = tokens(24, seed, mixed->hp.n_vocab);
    const auto lm = logits(*mixed, toks), ld = logits(*deq, toks), lo = logits(*orig, toks);
    const double err = rel_rms(lm, ld), weight_err = rel_rms(lo, ld);
    EXPECT_LT(err, 0.02) << "seed " << seed;
    EXPECT_GT(weight_err, 4 * err) << "seed " << seed;
  }
}

TEST_F(MixedQuants, LogitsAreBitIdenticalHoweverBatched) {
  auto m = load(*mixed_bytes_);
  ASSERT_TRUE(m);
  const auto toks = tokens(70, 9, m->hp.n_vocab);
  const auto ref = logits(*m, toks);
  // Small ubatches on one thread, thread splits on large ones (more threads than this machine's
  // cores make every small step slow; matmul_invariance_test covers small shapes on 1-4 threads).
  const std::pair<int, uint32_t> configs[] = {{1, 1}, {1, 5}, {1, 64}, {2, 64}, {3, 16}, {4, 64}};
  for (const auto& [threads, ub] : configs) {
    const auto got = logits(*m, toks, threads, ub);
    ASSERT_EQ(0, std::memcmp(got.data(), ref.data(), ref.size() * sizeof(float)))
        << "threads " << threads << " ubatch " << ub;
  }
  // Token by token (decode-sized GEMVs), then inside a batch with three other sequences.
  {
    auto ctx = Context::create(*m, params(1, 512));
    ASSERT_TRUE(ctx.ok());
    for (size_t i = 0; i < toks.size(); ++i) {
      Batch b;
      b.add(toks[i], static_cast<int32_t>(i), 0, true);
      ASSERT_TRUE((*ctx)->decode(b).ok());
    }
    ASSERT_EQ(0, std::memcmp((*ctx)->logits(0), ref.data(), ref.size() * sizeof(float)));
  }
  {
    auto ctx = Context::create(*m, params(2, 96));
    ASSERT_TRUE(ctx.ok());
    Batch b;
    size_t target = 0;
    for (size_t i = 0; i < toks.size(); ++i) {
      for (int32_t s = 0; s < 4; ++s) {
        const bool last = i + 1 == toks.size();
        if (s == 2 && last) target = b.size();
        b.add(s == 2 ? toks[i] : static_cast<int32_t>((i * 7 + s) % m->hp.n_vocab),
              static_cast<int32_t>(i), s, last);
      }
    }
    ASSERT_TRUE((*ctx)->decode(b).ok());
    ASSERT_EQ(0, std::memcmp((*ctx)->logits(target), ref.data(), ref.size() * sizeof(float)));
  }
}

}  // namespace
}  // namespace chimera
