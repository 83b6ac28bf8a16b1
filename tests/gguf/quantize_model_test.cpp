// Model-level quantization: the per-tensor policy, and whole files quantized to every target and
// read back (types, shapes, metadata, values close to the originals, determinism over threads).
#include "gguf/quantize_model.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"
#include "gguf/quants.h"

namespace chimera {
namespace {

QuantizeTarget target(const char* name) {
  Result<QuantizeTarget> t = parse_quantize_target(name);
  CHIMERA_CHECK(t.ok(), t.status().message());
  return *t;
}

TEST(QuantizePolicy, ParsesTargets) {
  EXPECT_EQ(target("q4_k_m").base, GgmlType::Q4_K);
  EXPECT_TRUE(target("Q4_K_M").k_mix);
  EXPECT_EQ(target("Q4_K_M").file_type, 15u);
  EXPECT_EQ(target("Q8_0").file_type, 7u);
  EXPECT_EQ(target("bf16").file_type, 32u);
  EXPECT_EQ(target("F32").file_type, 0u);
  // llama_ftype values (gguf.LlamaFileType.MOSTLY_*).
  EXPECT_EQ(target("Q4_1").file_type, 3u);
  EXPECT_EQ(target("Q5_0").file_type, 8u);
  EXPECT_EQ(target("q5_1").file_type, 9u);
  EXPECT_EQ(target("IQ4_NL").file_type, 25u);
  EXPECT_EQ(target("iq4_xs").base, GgmlType::IQ4_XS);
  EXPECT_EQ(target("IQ4_XS").file_type, 30u);
  Result<QuantizeTarget> bad = parse_quantize_target("Q3_K");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("Q3_K"), std::string::npos);
  EXPECT_NE(bad.status().message().find("Q4_K_M"), std::string::npos);  // lists what works
}

TEST(QuantizePolicy, TensorsThatStayF32) {
  EXPECT_TRUE(stays_f32("blk.0.attn_norm.weight", 1));
  EXPECT_TRUE(stays_f32("blk.0.ssm_norm.weight", 2));  // grouped RMS norm: 2-D, still a norm
  EXPECT_TRUE(stays_f32("blk.3.ffn_gate_inp.weight", 2));
  EXPECT_TRUE(stays_f32("blk.3.ffn_gate_inp_shexp.weight", 2));
  EXPECT_TRUE(stays_f32("blk.0.ssm_conv1d.weight", 2));
  EXPECT_TRUE(stays_f32("blk.0.shortconv.conv.weight", 2));
  EXPECT_TRUE(stays_f32("blk.0.ssm_a", 2));  // not a .weight
  EXPECT_TRUE(stays_f32("blk.0.attn_q.bias", 1));
  EXPECT_TRUE(stays_f32("blk.0.attn_q.weight", 1));  // 1-D whatever the name
  EXPECT_FALSE(stays_f32("blk.0.attn_q.weight", 2));
  EXPECT_FALSE(stays_f32("token_embd.weight", 2));
  EXPECT_FALSE(stays_f32("blk.1.ffn_down_exps.weight", 3));
  EXPECT_FALSE(stays_f32("blk.1.ssm_out.weight", 2));
}

TEST(QuantizePolicy, FallbacksWhenRowsDoNotFitTheBlock) {
  TensorChoice c = choose_tensor_type(target("Q4_K"), "blk.0.attn_q.weight", 2, 768, 0, 0);
  EXPECT_EQ(c.type, GgmlType::Q4_K);
  EXPECT_TRUE(c.note.empty());
  // llama.cpp's fallbacks for rows that are a multiple of 32 but not of 256.
  c = choose_tensor_type(target("Q4_K"), "blk.0.ffn_down.weight", 2, 96, 0, 0);
  EXPECT_EQ(c.type, GgmlType::Q5_0);
  EXPECT_NE(c.note.find("96"), std::string::npos) << c.note;
  EXPECT_EQ(choose_tensor_type(target("Q5_K"), "blk.0.attn_q.weight", 2, 96, 0, 0).type,
            GgmlType::Q5_1);
  EXPECT_EQ(choose_tensor_type(target("Q6_K"), "blk.0.attn_q.weight", 2, 96, 0, 0).type,
            GgmlType::Q8_0);
  EXPECT_EQ(choose_tensor_type(target("IQ4_XS"), "blk.0.attn_q.weight", 2, 96, 0, 0).type,
            GgmlType::IQ4_NL);
  EXPECT_EQ(choose_tensor_type(target("IQ4_XS"), "blk.0.attn_q.weight", 2, 512, 0, 0).type,
            GgmlType::IQ4_XS);
  // Q4_K_M: a Q6_K choice (output) falls back to Q8_0, a Q4_K one to Q5_0.
  EXPECT_EQ(choose_tensor_type(target("Q4_K_M"), "output.weight", 2, 96, 0, 0).type,
            GgmlType::Q8_0);
  EXPECT_EQ(choose_tensor_type(target("Q4_K_M"), "blk.0.attn_q.weight", 2, 96, 0, 0).type,
            GgmlType::Q5_0);
  // Not a multiple of 32 either: F16.
  c = choose_tensor_type(target("Q6_K"), "blk.0.ffn_down.weight", 2, 100, 0, 0);
  EXPECT_EQ(c.type, GgmlType::F16);
  EXPECT_EQ(choose_tensor_type(target("IQ4_XS"), "blk.0.attn_q.weight", 2, 100, 0, 0).type,
            GgmlType::F16);
  EXPECT_EQ(choose_tensor_type(target("Q5_0"), "blk.0.attn_q.weight", 2, 100, 0, 0).type,
            GgmlType::F16);
  EXPECT_EQ(choose_tensor_type(target("Q5_1"), "blk.0.attn_q.weight", 2, 96, 0, 0).type,
            GgmlType::Q5_1);
  c = choose_tensor_type(target("Q8_0"), "blk.0.ffn_down.weight", 2, 100, 0, 0);
  EXPECT_EQ(c.type, GgmlType::F16);
  EXPECT_NE(c.note.find("Q8_0"), std::string::npos) << c.note;
  c = choose_tensor_type(target("Q4_0"), "blk.0.attn_norm.weight", 1, 768, 0, 0);
  EXPECT_EQ(c.type, GgmlType::F32);
  c = choose_tensor_type(target("BF16"), "output.weight", 2, 100, 0, 0);
  EXPECT_EQ(c.type, GgmlType::BF16);
  c = choose_tensor_type(target("F32"), "output.weight", 2, 768, 0, 0);
  EXPECT_EQ(c.type, GgmlType::F32);
}

TEST(QuantizePolicy, Q4_K_MMix) {
  const QuantizeTarget m = target("Q4_K_M");
  EXPECT_EQ(choose_tensor_type(m, "output.weight", 2, 256, 0, 0).type, GgmlType::Q6_K);
  EXPECT_EQ(choose_tensor_type(m, "token_embd.weight", 2, 256, 0, 0).type, GgmlType::Q4_K);
  EXPECT_EQ(choose_tensor_type(m, "blk.5.attn_q.weight", 2, 256, 1, 8).type, GgmlType::Q4_K);
  // 8 layers of a kind: the first eighth (rank 0), the last eighth (rank 7), and every third
  // between (ranks 3 and 6) get Q6_K.
  const GgmlType expect[8] = {GgmlType::Q6_K, GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K,
                              GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q6_K};
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(choose_tensor_type(m, "blk.9.attn_v.weight", 2, 256, r, 8).type, expect[r]) << r;
    EXPECT_EQ(choose_tensor_type(m, "blk.9.ffn_down_exps.weight", 3, 256, r, 8).type, expect[r]);
  }
}

// ---- whole files ----

std::string temp_path(const std::string& name) {
  return StrCat(::testing::TempDir(), "/quantize_model_test_", ::getpid(), "_", name);
}

struct SourceTensor {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;
  std::vector<float> values;  // what the tensor holds (after its own type's rounding)
  std::vector<uint8_t> bytes;
};

SourceTensor make_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne,
                         std::mt19937& rng) {
  SourceTensor t{name, type, ne, {}, {}};
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  std::normal_distribution<float> nd(0.0f, 0.05f);  // the scale of real weights
  t.values.resize(static_cast<size_t>(n));
  for (float& v : t.values) v = nd(rng);
  t.bytes.resize(row_bytes(type, static_cast<uint64_t>(ne[0])) * static_cast<uint64_t>(n / ne[0]));
  CHIMERA_CHECK(quantize_row(type, t.values.data(), t.bytes.data(), n).ok(), name);
  CHIMERA_CHECK(dequantize_row(type, t.bytes.data(), t.values.data(), n).ok(), name);
  return t;
}

// A small hybrid-shaped model: every kind of tensor the policy distinguishes.
struct SourceModel {
  std::string path;
  std::vector<SourceTensor> tensors;
};

SourceModel write_source_model(const std::string& path) {
  std::mt19937 rng(5);
  SourceModel m{path, {}};
  m.tensors.push_back(make_tensor("token_embd.weight", GgmlType::F32, {256, 64}, rng));
  for (int l = 0; l < 4; ++l) {
    const std::string p = StrCat("blk.", l, ".");
    m.tensors.push_back(make_tensor(p + "attn_norm.weight", GgmlType::F32, {256}, rng));
    if (l % 2 == 0) {
      m.tensors.push_back(make_tensor(p + "ssm_in.weight", GgmlType::F16, {256, 576}, rng));
      m.tensors.push_back(make_tensor(p + "ssm_conv1d.weight", GgmlType::F32, {4, 320}, rng));
      m.tensors.push_back(make_tensor(p + "ssm_a", GgmlType::F32, {8}, rng));
      m.tensors.push_back(make_tensor(p + "ssm_norm.weight", GgmlType::F32, {256, 1}, rng));
    } else {
      m.tensors.push_back(make_tensor(p + "attn_v.weight", GgmlType::BF16, {256, 64}, rng));
    }
    m.tensors.push_back(make_tensor(p + "ffn_down.weight", GgmlType::F32, {96, 256}, rng));
  }
  m.tensors.push_back(make_tensor("blk.0.odd.weight", GgmlType::F32, {100, 3}, rng));
  m.tensors.push_back(make_tensor("blk.0.pre_quantized.weight", GgmlType::Q8_0, {256, 4}, rng));
  m.tensors.push_back(make_tensor("output.weight", GgmlType::F32, {256, 64}, rng));
  SourceTensor q81{"blk.0.legacy.weight", GgmlType::Q8_1, {32, 2}, {}, {}};
  q81.bytes.resize(2 * 40);
  for (size_t i = 0; i < q81.bytes.size(); ++i) q81.bytes[i] = static_cast<uint8_t>(i * 7);
  m.tensors.push_back(q81);

  GgufWriter w;
  w.set_string("general.architecture", "granitehybrid");
  w.set_uint32("granitehybrid.block_count", 4);
  w.set_float32("granitehybrid.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_array("granitehybrid.attention.head_count_kv", std::vector<int32_t>{0, 4, 0, 4});
  w.set_string_array("tokenizer.ggml.tokens", {"<s>", "a", "b", "hello"});
  w.set_uint32("general.file_type", 0);
  CHIMERA_CHECK(w.set_alignment(64).ok(), "alignment");
  for (const SourceTensor& t : m.tensors)
    CHIMERA_CHECK(w.add_tensor(t.name, t.type, t.ne, t.bytes.data(), t.bytes.size()).ok(), t.name);
  CHIMERA_CHECK(w.write_file(path).ok(), path);
  return m;
}

// The type the policy must give each source tensor (spelled out here, independently of the
// policy code, from spec 1.7 and the fallback rules).
GgmlType expected_type(const std::string& target_name, const std::string& name, GgmlType base) {
  if (name == "blk.0.legacy.weight") return GgmlType::Q8_1;  // unreadable type: kept as is
  if (target_name == "F32") return GgmlType::F32;
  const bool keep_f32 = name.find("norm") != std::string::npos ||
                        name.find("ssm_conv1d") != std::string::npos || name == "blk.0.ssm_a" ||
                        name == "blk.2.ssm_a";
  if (keep_f32) return GgmlType::F32;
  if (name == "blk.0.odd.weight") return base == GgmlType::BF16 ? base : GgmlType::F16;
  if (name.find("ffn_down") != std::string::npos) {  // ne0 = 96: llama.cpp's fallbacks
    if (target_name == "Q4_K_M")  // ranks 2 and 3 of 4 want Q6_K (see below), 0 and 1 Q4_K
      return name == "blk.2.ffn_down.weight" || name == "blk.3.ffn_down.weight" ? GgmlType::Q8_0
                                                                                : GgmlType::Q5_0;
    if (base == GgmlType::Q4_K) return GgmlType::Q5_0;
    if (base == GgmlType::Q5_K) return GgmlType::Q5_1;
    if (base == GgmlType::Q6_K) return GgmlType::Q8_0;
    if (base == GgmlType::IQ4_XS) return GgmlType::IQ4_NL;
  }
  if (target_name == "Q4_K_M") {
    if (name == "output.weight") return GgmlType::Q6_K;
    // attn_v exists in layers 1 and 3: ranks 0 and 1 of 2; 2/8 = 0 so only rank >= 7*2/8 = 1
    // and (rank - 0) % 3 == 2 count: rank 1.
    if (name == "blk.3.attn_v.weight") return GgmlType::Q6_K;
  }
  return base;
}

// Relative RMS error allowed per stored type, for Gaussian data (sigma = 0.05), as the error of a
// uniform quantizer, step / sqrt(12), with the step set by a block's range (about +-2.1 sigma for
// 32 Gaussian samples, +-2.6 sigma for 256), then doubled for the scale roundings and the spread
// of block ranges:
//   Q8_0: amax/127 step  -> 2 * 4.2/2/127/3.46 ~ 0.01;   Q4_0: amax/8 step -> ~0.16
//   Q4_K: range/15 (32)  -> 2 * 4.2/15/3.46 ~ 0.16;      Q5_K: range/31 -> ~0.08
//   Q6_K: amax/32 (16)   -> 2 * 2.0/32/3.46 ~ 0.04;      F16: 2^-11 / sqrt(3) * 2 ~ 6e-4
//   BF16: 2^-8 / sqrt(3) * 2 ~ 5e-3 (2^-8: bf16's half-ulp relative).
//   Q4_1: range/15 (32) as Q4_K ~ 0.16;                  Q5_0: amax/16 -> ~0.08;  Q5_1 ~ 0.08
//   IQ4_NL/XS: amax/127 times a mean grid gap of 16 -> 2 * 2.1*16/127/3.46 ~ 0.15, plus the 6-bit
//   sub-block scales of IQ4_XS -> 0.16 for both.
double allowed_rel_rms(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0:
      return 0.01;
    case GgmlType::Q4_0:
      return 0.16;
    case GgmlType::Q4_K:
    case GgmlType::Q4_1:
    case GgmlType::IQ4_NL:
    case GgmlType::IQ4_XS:
      return 0.16;
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
      return 0.08;
    case GgmlType::Q5_K:
      return 0.08;
    case GgmlType::Q6_K:
      return 0.04;
    case GgmlType::F16:
      return 6e-4;
    case GgmlType::BF16:
      return 5e-3;
    default:
      return 0.0;  // F32: exact
  }
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

class QuantizeModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new SourceModel(write_source_model(temp_path("in.gguf")));
  }
  static void TearDownTestSuite() {
    std::remove(model_->path.c_str());
    delete model_;
  }
  static SourceModel* model_;
};
SourceModel* QuantizeModelTest::model_ = nullptr;

TEST_F(QuantizeModelTest, EveryTargetGivesTheRightTypesAndCloseValues) {
  ThreadContext threads(2);
  for (const char* name : {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "Q4_K", "Q5_K", "Q6_K",
                           "IQ4_XS", "Q4_K_M", "F16", "BF16", "F32"}) {
    SCOPED_TRACE(name);
    const QuantizeTarget tgt = target(name);
    const std::string out = temp_path(StrCat("out_", name, ".gguf"));
    std::vector<std::string> lines;
    Result<QuantizeSummary> sum = quantize_model(model_->path, out, tgt, threads,
                                                 [&](const std::string& l) { lines.push_back(l); });
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(sum->tensors, model_->tensors.size());
    EXPECT_EQ(lines.size(), model_->tensors.size());
    Result<std::unique_ptr<GgufFile>> f = GgufFile::open(out);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    const GgufFile& g = **f;
    // Metadata: everything copied, file type set.
    EXPECT_EQ(*g.get<std::string>("general.architecture"), "granitehybrid");
    EXPECT_EQ(*g.get<uint32_t>("granitehybrid.block_count"), 4u);
    EXPECT_EQ(*g.get<float>("granitehybrid.attention.layer_norm_rms_epsilon"), 1e-5f);
    EXPECT_TRUE(*g.get<bool>("tokenizer.ggml.add_bos_token"));
    EXPECT_EQ(*g.get_array<int32_t>("granitehybrid.attention.head_count_kv"),
              (std::vector<int32_t>{0, 4, 0, 4}));
    EXPECT_EQ(g.get_string_array("tokenizer.ggml.tokens")->at(3), "hello");
    EXPECT_EQ(*g.get<uint32_t>("general.file_type"), tgt.file_type);
    EXPECT_EQ(g.alignment(), 64u);
    const bool quantized =
        tgt.base != GgmlType::F32 && tgt.base != GgmlType::F16 && tgt.base != GgmlType::BF16;
    EXPECT_EQ(g.find("general.quantization_version") != nullptr, quantized);

    ASSERT_EQ(g.tensors().size(), model_->tensors.size());
    for (size_t i = 0; i < model_->tensors.size(); ++i) {
      const SourceTensor& src = model_->tensors[i];
      const GgufTensorInfo& t = g.tensors()[i];
      SCOPED_TRACE(src.name);
      EXPECT_EQ(t.name, src.name);
      EXPECT_EQ(t.type, expected_type(name, src.name, tgt.base)) << type_name(t.type);
      EXPECT_EQ(t.n_dims, src.ne.size());
      for (size_t d = 0; d < src.ne.size(); ++d) EXPECT_EQ(t.ne[d], src.ne[d]);
      if (src.type == GgmlType::Q8_1 || t.type == src.type) {  // untouched bytes
        ASSERT_EQ(t.nbytes, src.bytes.size());
        EXPECT_EQ(std::memcmp(t.data, src.bytes.data(), t.nbytes), 0);
        continue;
      }
      std::vector<float> y(src.values.size());
      ASSERT_TRUE(dequantize_row(t.type, t.data, y.data(), static_cast<int64_t>(y.size())).ok());
      double err = 0, ref = 0;
      for (size_t j = 0; j < y.size(); ++j) {
        err += (static_cast<double>(y[j]) - src.values[j]) *
               (static_cast<double>(y[j]) - src.values[j]);
        ref += static_cast<double>(src.values[j]) * src.values[j];
      }
      const double rel = std::sqrt(err / ref);
      // A conversion to a wider float type is exact.
      const double allowed =
          (t.type == GgmlType::F32 || (t.type == GgmlType::F16 && src.type == GgmlType::F16))
              ? 0.0
              : allowed_rel_rms(t.type);
      EXPECT_LE(rel, allowed) << type_name(src.type) << " -> " << type_name(t.type);
    }
    std::remove(out.c_str());
  }
}

TEST_F(QuantizeModelTest, OutputDoesNotDependOnThreadCount) {
  const std::string a = temp_path("t1.gguf"), b = temp_path("t2.gguf");
  ThreadContext one(1), two(2);
  ASSERT_TRUE(quantize_model(model_->path, a, target("Q4_K_M"), one, nullptr).ok());
  ASSERT_TRUE(quantize_model(model_->path, b, target("Q4_K_M"), two, nullptr).ok());
  const std::vector<uint8_t> ba = read_bytes(a), bb = read_bytes(b);
  EXPECT_FALSE(ba.empty());
  EXPECT_TRUE(ba == bb);
  std::remove(a.c_str());
  std::remove(b.c_str());
}

TEST(QuantizeModel, NonFiniteWeightsAreReportedAndNothingIsWritten) {
  const std::string in = temp_path("nan_in.gguf"), out = temp_path("nan_out.gguf");
  std::vector<float> w(64 * 4, 0.5f);
  w[2 * 64 + 17] = std::nanf("");
  GgufWriter gw;
  gw.set_string("general.architecture", "llama");
  ASSERT_TRUE(
      gw.add_tensor("blk.0.attn_q.weight", GgmlType::F32, {64, 4}, w.data(), w.size() * 4).ok());
  ASSERT_TRUE(gw.write_file(in).ok());
  std::remove(out.c_str());
  ThreadContext threads(2);
  Result<QuantizeSummary> r = quantize_model(in, out, target("Q8_0"), threads, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  const std::string& msg = r.status().message();
  EXPECT_NE(msg.find("blk.0.attn_q.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("row 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("column 17"), std::string::npos) << msg;
  EXPECT_FALSE(std::ifstream(out).good());
  // Values too large for Q8_0's fp16 scale (amax / 127 > 65504) are an error too, not infinities.
  w[2 * 64 + 17] = 1e7f;
  GgufWriter gw2;
  ASSERT_TRUE(
      gw2.add_tensor("blk.0.attn_q.weight", GgmlType::F32, {64, 4}, w.data(), w.size() * 4).ok());
  ASSERT_TRUE(gw2.write_file(in).ok());
  r = quantize_model(in, out, target("Q8_0"), threads, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("overflow"), std::string::npos) << r.status().message();
  // The same file converts fine to F32 and BF16 (which has float's range).
  EXPECT_TRUE(quantize_model(in, out, target("BF16"), threads, nullptr).ok());
  std::remove(in.c_str());
  std::remove(out.c_str());
}

TEST(QuantizeModel, MissingInputIsAnError) {
  ThreadContext threads(1);
  Result<QuantizeSummary> r = quantize_model(temp_path("does_not_exist.gguf"), temp_path("x.gguf"),
                                             target("Q8_0"), threads, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("does_not_exist"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace chimera
