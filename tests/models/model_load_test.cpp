#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <iterator>

#include "models/forward.h"
#include "models/model.h"
#include "models/synthetic.h"

namespace chimera {
namespace {

std::vector<uint8_t> synthetic_bytes(const SyntheticSpec& spec) {
  GgufWriter w;
  Status st = build_synthetic_model(spec, w);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return w.to_bytes();
}

// Copies a GGUF, letting `edit` drop or change tensors (return false to drop).
using TensorEdit = std::function<bool(const GgufTensorInfo&, std::vector<int64_t>& ne, GgmlType&)>;
std::vector<uint8_t> rewrite(const std::vector<uint8_t>& bytes, const TensorEdit& edit,
                             const std::function<void(GgufWriter&)>& edit_kv = nullptr) {
  auto f = GgufFile::from_buffer(bytes.data(), bytes.size());
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  GgufWriter w;
  for (const GgufKV& kv : (*f)->kvs()) {
    const GgufValue& v = kv.value;
    switch (v.type) {
      case GgufValueType::STRING:
        w.set_string(kv.key, v.str);
        break;
      case GgufValueType::UINT32:
        w.set_uint32(kv.key, static_cast<uint32_t>(v.u));
        break;
      case GgufValueType::FLOAT32:
        w.set_float32(kv.key, static_cast<float>(v.f));
        break;
      case GgufValueType::BOOL:
        w.set_bool(kv.key, v.b);
        break;
      case GgufValueType::ARRAY:
        if (v.elem_type == GgufValueType::STRING) {
          std::vector<std::string> s(v.strs.begin(), v.strs.end());
          w.set_string_array(kv.key, s);
        } else {
          EXPECT_TRUE(w.set_raw_array(kv.key, v.elem_type, v.array_data, v.count).ok());
        }
        break;
      default:
        ADD_FAILURE() << "unexpected type for " << kv.key;
    }
  }
  if (edit_kv) edit_kv(w);
  for (const GgufTensorInfo& t : (*f)->tensors()) {
    std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
    GgmlType type = t.type;
    if (!edit(t, ne, type)) continue;
    uint64_t n = 1;
    for (int64_t d : ne) n *= d;
    std::vector<uint8_t> data(n / type_traits(type).block_size * type_traits(type).type_size);
    std::copy_n(t.data, std::min<uint64_t>(data.size(), t.nbytes), data.begin());
    EXPECT_TRUE(w.add_tensor(t.name, type, ne, data.data(), data.size()).ok());
  }
  return w.to_bytes();
}

Result<std::unique_ptr<Model>> load_bytes(const std::vector<uint8_t>& bytes) {
  CHIMERA_ASSIGN_OR_RETURN(auto f, GgufFile::from_buffer(bytes.data(), bytes.size(), "m.gguf"));
  return load_model(std::move(f));
}

TEST(ModelLoad, EveryArchitectureLoads) {
  for (const char* arch : {"granitehybrid", "mamba2", "llama", "granite"}) {
    SyntheticSpec spec;
    spec.arch = arch;
    spec.n_layer = 3;
    auto bytes = synthetic_bytes(spec);
    auto m = load_bytes(bytes);
    ASSERT_TRUE(m.ok()) << arch << ": " << m.status().ToString();
    const Model& model = **m;
    EXPECT_EQ(model.hp.arch, arch);
    EXPECT_EQ(model.hp.n_layer, 3u);
    EXPECT_EQ(model.hp.n_vocab, spec.n_vocab);
    EXPECT_EQ(model.output, model.token_embd) << "tied embeddings";
    const uint32_t attn = model.n_attention_layers();
    if (std::string(arch) == "granitehybrid") {
      EXPECT_EQ(attn, 1u);
      EXPECT_EQ(model.layers[1].kind, MixerKind::kAttention);
      EXPECT_FALSE(model.hp.use_rope) << "NoPE as written";
      EXPECT_FLOAT_EQ(model.hp.embedding_scale, 3.0f);
      EXPECT_EQ(model.hp.ssm_head_dim(), 2 * spec.n_embd / spec.ssm_heads);
    } else if (std::string(arch) == "mamba2") {
      EXPECT_EQ(attn, 0u);
      EXPECT_EQ(model.layers[0].ffn_kind, FfnKind::kNone);
    } else {
      EXPECT_EQ(attn, 3u);
      EXPECT_TRUE(model.hp.use_rope);
    }
  }
}

TEST(ModelLoad, MoeWithSharedExpert) {
  SyntheticSpec spec;
  spec.n_expert = 4;
  spec.n_expert_used = 2;
  auto m = load_bytes(synthetic_bytes(spec));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->layers[0].ffn_kind, FfnKind::kMoe);
  EXPECT_NE((*m)->layers[0].ffn.gate, nullptr) << "shared expert";
  EXPECT_EQ((*m)->layers[0].ffn.gate_exps->ne[2], 4);
}

TEST(ModelLoad, MissingTensorIsNamed) {
  auto bytes = rewrite(synthetic_bytes({}), [](const GgufTensorInfo& t, auto&, auto&) {
    return t.name != "blk.2.ssm_out.weight";
  });
  auto m = load_bytes(bytes);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(m.status().message().find("blk.2.ssm_out.weight"), std::string::npos)
      << m.status().message();
}

TEST(ModelLoad, WrongShapeIsReported) {
  auto bytes = rewrite(synthetic_bytes({}), [](const GgufTensorInfo& t, auto& ne, auto&) {
    if (t.name == "blk.1.attn_k.weight") ne[1] += 16;
    return true;
  });
  auto m = load_bytes(bytes);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("blk.1.attn_k.weight"), std::string::npos);
  EXPECT_NE(m.status().message().find("expected"), std::string::npos) << m.status().message();
}

TEST(ModelLoad, UnsupportedTensorTypeIsNamed) {
  auto bytes = rewrite(synthetic_bytes({}), [](const GgufTensorInfo& t, auto&, GgmlType& type) {
    if (t.name == "blk.0.ssm_in.weight") type = GgmlType::Q8_1;
    return true;
  });
  auto m = load_bytes(bytes);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), ErrorCode::kUnsupported);
  EXPECT_NE(m.status().message().find("Q8_1"), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find("Q4_K"), std::string::npos) << "lists supported types";
}

TEST(ModelLoad, UnsupportedArchitectureListsSupported) {
  auto bytes = rewrite(
      synthetic_bytes({}), [](auto&, auto&, auto&) { return true; },
      [](GgufWriter& w) { w.set_string("general.architecture", "rwkv7"); });
  auto m = load_bytes(bytes);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), ErrorCode::kUnsupported);
  EXPECT_NE(m.status().message().find("rwkv7"), std::string::npos);
  EXPECT_NE(m.status().message().find("granitehybrid"), std::string::npos);
}

TEST(ModelLoad, InconsistentSsmSizesAreRejected) {
  auto bytes = rewrite(
      synthetic_bytes({}), [](auto&, auto&, auto&) { return true; },
      [](GgufWriter& w) { w.set_uint32("granitehybrid.ssm.time_step_rank", 7); });
  auto m = load_bytes(bytes);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("time_step_rank 7"), std::string::npos)
      << m.status().message();
}

TEST(ModelLoad, QwenDeltaNetHybridsLoad) {
  for (const char* arch : {"qwen35", "qwen35moe", "qwen3next"}) {
    SCOPED_TRACE(arch);
    SyntheticSpec spec;
    spec.arch = arch;
    spec.n_layer = 8;
    spec.head_dim = 32;
    spec.ssm_state = 16;
    spec.ssm_groups = 2;
    spec.ssm_heads = 6;
    if (std::string(arch) != "qwen35") {
      spec.n_expert = 4;
      spec.n_expert_used = 2;
    }
    auto m = load_bytes(synthetic_bytes(spec));
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    const Model& model = **m;
    // every 4th layer is gated attention
    for (uint32_t il = 0; il < 8; ++il) {
      const LayerWeights& l = model.layers[il];
      EXPECT_EQ(l.kind, (il + 1) % 4 ? MixerKind::kDeltaNet : MixerKind::kAttention) << il;
      EXPECT_EQ(l.ffn_kind, spec.n_expert ? FfnKind::kMoe : FfnKind::kDense);
      if (l.kind == MixerKind::kAttention) {
        EXPECT_TRUE(l.attn.output_gate);
        EXPECT_NE(l.attn.q_norm, nullptr);
      } else {
        EXPECT_EQ(l.delta.ba != nullptr, std::string(arch) == "qwen3next");
      }
      if (spec.n_expert) {
        EXPECT_NE(l.ffn.shexp_gate, nullptr);
      }
    }
    EXPECT_EQ(model.hp.delta_tiled_heads, std::string(arch) != "qwen3next");
    EXPECT_EQ(model.hp.rope_mode, RopeMode::kNeox);
    EXPECT_EQ(model.hp.n_rot, 8u) << "a quarter of the head";
    EXPECT_EQ(model.hp.head_dim, 32u);
    const MemoryConfig mc = memory_config_for(model);
    EXPECT_EQ(mc.layers[0].kind, LayerKind::kRecurrent);
    EXPECT_EQ(mc.layers[0].conv_floats, 3u * (2 * 2 * 16 + 6 * 16));
    EXPECT_EQ(mc.layers[0].ssm_floats, 6u * 16 * 16);
    EXPECT_EQ(mc.layers[3].kind, LayerKind::kAttention);
    EXPECT_EQ(mc.layers[3].kv_dim, spec.n_head_kv * 32u);
  }
}

TEST(ModelLoad, QwenBadDeltaNetInputsAreClearErrors) {
  SyntheticSpec spec;
  spec.arch = "qwen35";
  const std::vector<uint8_t> good = synthetic_bytes(spec);
  // value heads not a multiple of key heads
  auto m = load_bytes(rewrite(
      good, [](auto&, auto&, auto&) { return true; },
      [](GgufWriter& w) { w.set_uint32("qwen35.ssm.group_count", 3); }));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("group_count"), std::string::npos) << m.status().message();
  // a missing DeltaNet tensor is named
  m = load_bytes(rewrite(
      good,
      [](const GgufTensorInfo& t, auto&, auto&) { return t.name != "blk.1.ssm_alpha.weight"; },
      nullptr));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("blk.1.ssm_alpha.weight"), std::string::npos)
      << m.status().message();
  // ssm_a must be F32 (the kernel reads it as floats)
  m = load_bytes(rewrite(
      good,
      [](const GgufTensorInfo& t, auto&, GgmlType& type) {
        if (t.name == "blk.0.ssm_a") type = GgmlType::F16;
        return true;
      },
      nullptr));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("blk.0.ssm_a"), std::string::npos) << m.status().message();
}

std::vector<uint8_t> fixture_bytes(const std::string& rel) {
  std::ifstream in(std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/models/" + rel,
                   std::ios::binary);
  EXPECT_TRUE(in.good()) << rel;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Nemotron-H: the per-layer kind arrays become Mamba2 / NoPE attention / FFN-only layers, and an
// FFN-only layer keeps no per-sequence memory.
TEST(ModelLoad, NemotronHLayerKinds) {
  auto m = load_bytes(fixture_bytes("nemotron_h/model-f32.gguf"));  // pattern M*-M-*M-
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const Model& model = **m;
  const MixerKind M = MixerKind::kMamba2, A = MixerKind::kAttention, N = MixerKind::kNone;
  const std::vector<MixerKind> want = {M, A, N, M, N, A, M, N};
  ASSERT_EQ(model.layers.size(), want.size());
  const MemoryConfig cfg = memory_config_for(model);
  for (size_t i = 0; i < want.size(); ++i) {
    const LayerWeights& l = model.layers[i];
    EXPECT_EQ(l.kind, want[i]) << i;
    if (want[i] == N) {
      EXPECT_EQ(l.ffn_kind, FfnKind::kDense) << i;
      EXPECT_EQ(l.ffn_act, FfnActivation::kReluSquared) << i;
      EXPECT_EQ(l.ffn.gate, nullptr) << i;
      ASSERT_NE(l.ffn_norm, nullptr) << i;
      EXPECT_EQ(std::string(l.ffn_norm->name), "blk." + std::to_string(i) + ".attn_norm.weight");
      EXPECT_EQ(cfg.layers[i].kind, LayerKind::kNone) << i;
    } else {
      EXPECT_EQ(l.ffn_kind, FfnKind::kNone) << i;
      EXPECT_EQ(cfg.layers[i].kind, want[i] == A ? LayerKind::kAttention : LayerKind::kRecurrent);
    }
  }
  EXPECT_FALSE(model.hp.use_rope);
  EXPECT_FALSE(cfg.positions_matter);
  EXPECT_EQ(model.hp.head_dim, 32u);  // key_length, not 64 / 4 heads
  EXPECT_EQ(cfg.layers[1].kv_dim, 2u * 32u);
  EXPECT_EQ(model.n_attention_layers(), 2u);
  EXPECT_EQ(model.n_recurrent_layers(), 3u);
  EXPECT_NE(model.describe().find("3 FFN-only"), std::string::npos) << model.describe();
}

TEST(ModelLoad, NemotronHLayerWithAttentionAndFfnIsRejected) {
  auto bytes = rewrite(
      fixture_bytes("nemotron_h/model-f32.gguf"), [](auto&, auto&, auto&) { return true; },
      [](GgufWriter& w) {
        const int32_t ff[8] = {0, 96, 96, 0, 96, 0, 0, 96};  // layer 1 is also attention
        ASSERT_TRUE(
            w.set_raw_array("nemotron_h.feed_forward_length", GgufValueType::INT32, ff, 8).ok());
      });
  auto m = load_bytes(bytes);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), ErrorCode::kFormat);
  EXPECT_NE(m.status().message().find("layer 1 has both"), std::string::npos)
      << m.status().message();
}

// LFM2 / LFM2-MoE: head_count_kv 0 is a short-conv layer whose recurrent state is the last
// l_cache - 1 inputs of each of the D channels; lfm2moe's first leading_dense_block_count layers
// keep a dense FFN, the rest route with sigmoid scores and a selection bias.
TEST(ModelLoad, Lfm2LayerKindsAndState) {
  for (const char* name : {"lfm2", "lfm2moe"}) {
    SCOPED_TRACE(name);
    const bool moe = std::string(name) == "lfm2moe";
    auto m = load_bytes(fixture_bytes(std::string(name) + "/model-f32.gguf"));
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    const Model& model = **m;
    const MixerKind S = MixerKind::kShortConv, A = MixerKind::kAttention;
    std::vector<MixerKind> want = {S, S, A, S, A};
    if (!moe) want.push_back(S);
    ASSERT_EQ(model.layers.size(), want.size());
    const uint32_t l_cache = moe ? 4 : 3;
    EXPECT_EQ(model.hp.shortconv_l_cache, l_cache);
    EXPECT_EQ(model.hp.rope_mode, RopeMode::kNeox);
    EXPECT_TRUE(model.hp.use_rope);
    EXPECT_EQ(std::string(model.output_norm->name), "token_embd_norm.weight");
    EXPECT_EQ(model.output == model.token_embd, !moe);  // lfm2 tied, lfm2moe not
    const MemoryConfig cfg = memory_config_for(model);
    for (size_t i = 0; i < want.size(); ++i) {
      const LayerWeights& l = model.layers[i];
      EXPECT_EQ(l.kind, want[i]) << i;
      if (want[i] == S) {
        EXPECT_EQ(cfg.layers[i].kind, LayerKind::kRecurrent) << i;
        EXPECT_EQ(cfg.layers[i].conv_floats, uint64_t(l_cache - 1) * model.hp.n_embd) << i;
        EXPECT_EQ(cfg.layers[i].ssm_floats, 0u) << i;
      } else {
        EXPECT_NE(l.attn.q_norm, nullptr) << i;
        EXPECT_NE(l.attn.k_norm, nullptr) << i;
        EXPECT_EQ(cfg.layers[i].kind, LayerKind::kAttention) << i;
      }
      const bool routed = moe && i >= 1;
      EXPECT_EQ(l.ffn_kind, routed ? FfnKind::kMoe : FfnKind::kDense) << i;
      EXPECT_EQ(l.ffn.router_bias != nullptr, routed) << i;
    }
    EXPECT_EQ(model.hp.moe_sigmoid, moe);
    EXPECT_TRUE(model.hp.moe_renormalize);
    EXPECT_EQ(model.n_recurrent_layers(), moe ? 3u : 4u);
  }
}

TEST(ModelLoad, Lfm2BadInputsAreClearErrors) {
  const auto bytes = fixture_bytes("lfm2/model-f32.gguf");
  auto keep = [](auto&, auto&, auto&) { return true; };
  {
    auto m = load_bytes(rewrite(
        bytes, keep, [](GgufWriter& w) { w.set_uint32("lfm2.attention.sliding_window", 512); }));
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), ErrorCode::kUnsupported);
    EXPECT_NE(m.status().message().find("sliding_window"), std::string::npos);
  }
  {
    auto m = load_bytes(
        rewrite(bytes, keep, [](GgufWriter& w) { w.set_uint32("lfm2.shortconv.l_cache", 1); }));
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find("l_cache"), std::string::npos) << m.status().message();
  }
  {
    auto m = load_bytes(rewrite(bytes, [](const GgufTensorInfo& t, auto&, auto&) {
      return std::string(t.name) != "blk.0.shortconv.in_proj.weight";
    }));
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find("blk.0.shortconv.in_proj.weight"), std::string::npos);
  }
  {
    auto m = load_bytes(
        rewrite(fixture_bytes("lfm2moe/model-f32.gguf"), [](const GgufTensorInfo& t, auto&, auto&) {
          return std::string(t.name) != "blk.3.exp_probs_b.bias";
        }));
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find("blk.3.exp_probs_b.bias"), std::string::npos);
  }
}

// Gemma 3: the default period-6 pattern (layer 5 global), local RoPE base and window on the
// others, the 1/sqrt(head_dim) query scale, GeGLU and the post-norms; a per-layer pattern array
// overrides the period, and a wrong-length array is refused.
TEST(ModelLoad, Gemma3Layers) {
  auto m = load_bytes(fixture_bytes("gemma3/model-f32.gguf"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const Model& model = **m;
  ASSERT_EQ(model.layers.size(), 7u);
  for (uint32_t i = 0; i < 7; ++i) {
    const LayerWeights& l = model.layers[i];
    EXPECT_EQ(l.kind, MixerKind::kAttention);
    EXPECT_EQ(l.n_swa, i == 5 ? 0u : 8u) << i;
    EXPECT_EQ(l.rope_freq_base, i == 5 ? 0.0f : 10000.0f) << i;
    EXPECT_EQ(l.ffn_act, FfnActivation::kGeGluTanh);
    EXPECT_NE(l.attn_post_norm, nullptr);
    EXPECT_NE(l.ffn_post_norm, nullptr);
    EXPECT_NE(l.attn.q_norm, nullptr);
  }
  EXPECT_EQ(model.hp.rope_freq_base, 1e6f);
  EXPECT_EQ(model.hp.rope_mode, RopeMode::kNeox);
  EXPECT_EQ(model.hp.embedding_scale, 8.0f);
  EXPECT_EQ(model.hp.kq_scale(), 1.0f / std::sqrt(32.0f));
  EXPECT_EQ(model.hp.final_logit_softcap, 15.0f);

  auto with_pattern = [](std::vector<uint8_t> flags) {
    return rewrite(
        fixture_bytes("gemma3/model-f32.gguf"), [](auto&, auto&, auto&) { return true; },
        [&](GgufWriter& w) {
          ASSERT_TRUE(w.set_raw_array("gemma3.attention.sliding_window_pattern",
                                      GgufValueType::BOOL, flags.data(), flags.size())
                          .ok());
        });
  };
  auto p = load_bytes(with_pattern({0, 1, 0, 1, 0, 1, 0}));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  for (uint32_t i = 0; i < 7; ++i) EXPECT_EQ((*p)->layers[i].n_swa, i % 2 ? 8u : 0u) << i;
  auto bad = load_bytes(with_pattern({1, 1, 0}));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kFormat);
  EXPECT_NE(bad.status().message().find("sliding_window_pattern"), std::string::npos)
      << bad.status().message();
}

}  // namespace
}  // namespace chimera
