#include "models/synthetic.h"

#include <algorithm>
#include <cmath>

#include "gguf/byte_level.h"
#include "gguf/quants.h"

namespace chimera {
namespace {

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  double uniform() {  // [0, 1)
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return static_cast<double>((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0);
  }
  float symmetric(float scale) { return static_cast<float>((uniform() * 2 - 1) * scale); }

 private:
  uint64_t s_;
};

class Builder {
 public:
  Builder(const SyntheticSpec& spec, GgufWriter& w) : spec_(spec), w_(w), rng_(spec.seed) {}

  // A matrix {n_in, n_out(, n_expert)} in the spec's weight type (F32 when it cannot be blocked).
  void matrix(const std::string& name, std::vector<int64_t> ne, float scale) {
    GgmlType type = spec_.weight_type;
    if (ne[0] % type_traits(type).block_size) type = GgmlType::F32;
    int64_t rows = 1;
    for (size_t i = 1; i < ne.size(); ++i) rows *= ne[i];
    std::vector<float> row(ne[0]);
    std::vector<uint8_t> data(row_bytes(type, ne[0]) * rows);
    for (int64_t r = 0; r < rows && status_.ok(); ++r) {
      for (float& v : row) v = rng_.symmetric(scale);
      status_ = quantize_row(type, row.data(), data.data() + r * row_bytes(type, ne[0]), ne[0]);
    }
    add(name, type, ne, data);
  }
  // An F32 tensor with values in center ± spread.
  void vec(const std::string& name, std::vector<int64_t> ne, float center, float spread) {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    std::vector<float> v(n);
    for (float& x : v) x = center + rng_.symmetric(spread);
    add(name, GgmlType::F32, ne,
        {reinterpret_cast<uint8_t*>(v.data()), reinterpret_cast<uint8_t*>(v.data() + n)});
  }
  void add(const std::string& name, GgmlType type, const std::vector<int64_t>& ne,
           const std::vector<uint8_t>& data) {
    if (status_.ok()) status_ = w_.add_tensor(name, type, ne, data.data(), data.size());
  }
  Rng& rng() { return rng_; }
  const Status& status() const { return status_; }

 private:
  const SyntheticSpec& spec_;
  GgufWriter& w_;
  Rng rng_;
  Status status_;
};

std::string blk_name(uint32_t il, const char* name) {
  return StrCat("blk.", il, ".", name);
}

}  // namespace

namespace {

// A valid byte-level BPE vocabulary, so that other engines (llama.cpp) load the file too: the
// 256 byte tokens, then tokens made by merging two bytes (merge rank = order), and
// <|endoftext|> last (bos and eos) when there is room. Ids only matter to the tests.
void write_vocabulary(const SyntheticSpec& s, GgufWriter& w) {
  const auto& b2u = gpt2_byte_to_unicode();
  std::vector<std::string> tokens(s.n_vocab), merges;
  for (uint32_t i = 0; i < s.n_vocab; ++i) {
    if (i < 256) {
      tokens[i] = b2u[i];
    } else if (i + 1 == s.n_vocab) {
      tokens[i] = "<|endoftext|>";
    } else if (i - 256 < 65536) {
      const std::string& a = b2u[(i - 256) / 256];
      const std::string& c = b2u[(i - 256) % 256];
      tokens[i] = a + c;
      merges.push_back(a + " " + c);
    } else {
      tokens[i] = StrCat("<t", i, ">");
    }
  }
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "gpt-2");
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set_string_array("tokenizer.ggml.merges", merges);
  if (s.n_vocab > 256) {
    w.set_uint32("tokenizer.ggml.bos_token_id", s.n_vocab - 1);
    w.set_uint32("tokenizer.ggml.eos_token_id", s.n_vocab - 1);
  }
}

// Qwen3.5 / Qwen3-Next: gated DeltaNet layers with every 4th layer gated attention (spec 6.5).
Status build_qwen_hybrid(const SyntheticSpec& s, GgufWriter& w) {
  const std::string& a = s.arch;
  const bool moe = a != "qwen35", next = a == "qwen3next";
  const uint32_t D = s.n_embd, hd = s.head_dim ? s.head_dim : D / std::max(1u, s.n_head);
  const uint32_t S = s.ssm_state, Hk = s.ssm_groups, Hv = s.ssm_heads, d_in = Hv * S;
  const uint32_t C = 2 * Hk * S + d_in;
  if (s.n_head == 0 || s.n_head_kv == 0 || s.n_head % s.n_head_kv || hd % 4 || Hk == 0 || Hv % Hk ||
      (moe && (s.n_expert == 0 || s.n_expert_used == 0)))
    return Error(ErrorCode::kInvalidArgument, "synthetic model: inconsistent sizes for ", a);
  auto key = [&](const char* k) { return a + "." + k; };
  w.set_string("general.architecture", a);
  w.set_string("general.name", "chimera synthetic " + a);
  w.set_uint32(key("block_count"), s.n_layer);
  w.set_uint32(key("context_length"), 262144);
  w.set_uint32(key("embedding_length"), D);
  w.set_uint32(key("feed_forward_length"), s.n_ff);
  w.set_float32(key("attention.layer_norm_rms_epsilon"), 1e-6f);
  w.set_uint32(key("vocab_size"), s.n_vocab);
  w.set_uint32(key("attention.head_count"), s.n_head);
  w.set_uint32(key("attention.head_count_kv"), s.n_head_kv);
  w.set_uint32(key("attention.key_length"), hd);
  w.set_uint32(key("attention.value_length"), hd);
  w.set_uint32(key("rope.dimension_count"), hd / 4);
  w.set_float32(key("rope.freq_base"), 10000000.0f);
  if (!next) {
    const int32_t q = static_cast<int32_t>(hd / 8);  // sections of hd/4 rotated dims / 2 pairs
    w.set_array(key("rope.dimension_sections"), std::vector<int32_t>{q - q / 2, q / 2, 0, 0});
  }
  w.set_uint32(key("ssm.conv_kernel"), s.conv_kernel);
  w.set_uint32(key("ssm.state_size"), S);
  w.set_uint32(key("ssm.group_count"), Hk);
  w.set_uint32(key("ssm.time_step_rank"), Hv);
  w.set_uint32(key("ssm.inner_size"), d_in);
  w.set_uint32(key("full_attention_interval"), 4);
  if (moe) {
    w.set_uint32(key("expert_count"), s.n_expert);
    w.set_uint32(key("expert_used_count"), s.n_expert_used);
    w.set_uint32(key("expert_feed_forward_length"), s.n_ff);
    w.set_uint32(key("expert_shared_feed_forward_length"), s.n_ff);
  }
  Builder b(s, w);
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float down_scale = 1.0f / std::sqrt(static_cast<float>(s.n_ff));
  b.matrix("token_embd.weight", {D, s.n_vocab}, 1.0f);
  b.vec("output_norm.weight", {D}, 1.0f, 0.2f);
  if (!s.tied_embeddings) b.matrix("output.weight", {D, s.n_vocab}, in_scale);
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    b.vec(blk_name(il, "attn_norm.weight"), {D}, 1.0f, 0.2f);
    b.vec(blk_name(il, "post_attention_norm.weight"), {D}, 1.0f, 0.2f);
    if ((il + 1) % 4 == 0) {
      const uint32_t q = s.n_head * hd, kv = s.n_head_kv * hd;
      b.matrix(blk_name(il, "attn_q.weight"), {D, 2 * q}, in_scale);
      b.matrix(blk_name(il, "attn_k.weight"), {D, kv}, in_scale);
      b.matrix(blk_name(il, "attn_v.weight"), {D, kv}, in_scale);
      b.matrix(blk_name(il, "attn_output.weight"), {q, D}, 1.0f / std::sqrt(float(q)));
      b.vec(blk_name(il, "attn_q_norm.weight"), {hd}, 1.0f, 0.2f);
      b.vec(blk_name(il, "attn_k_norm.weight"), {hd}, 1.0f, 0.2f);
    } else {
      b.matrix(blk_name(il, "attn_qkv.weight"), {D, C}, in_scale);
      b.matrix(blk_name(il, "attn_gate.weight"), {D, d_in}, in_scale);
      if (next) {
        b.matrix(blk_name(il, "ssm_ba.weight"), {D, 2 * Hv}, in_scale);
      } else {
        b.matrix(blk_name(il, "ssm_beta.weight"), {D, Hv}, in_scale);
        b.matrix(blk_name(il, "ssm_alpha.weight"), {D, Hv}, in_scale);
      }
      b.vec(blk_name(il, "ssm_conv1d.weight"), {s.conv_kernel, C}, 0.0f, 0.5f);
      b.vec(blk_name(il, "ssm_dt.bias"), {Hv}, 0.0f, 1.0f);
      b.vec(blk_name(il, "ssm_a"), {Hv}, -0.5f, 0.45f);  // A in [0.05, 0.95]: slow decay
      b.vec(blk_name(il, "ssm_norm.weight"), {S}, 1.0f, 0.2f);
      b.matrix(blk_name(il, "ssm_out.weight"), {d_in, D}, 1.0f / std::sqrt(float(d_in)));
    }
    if (!moe) {
      b.matrix(blk_name(il, "ffn_gate.weight"), {D, s.n_ff}, in_scale);
      b.matrix(blk_name(il, "ffn_up.weight"), {D, s.n_ff}, in_scale);
      b.matrix(blk_name(il, "ffn_down.weight"), {s.n_ff, D}, down_scale);
      continue;
    }
    b.vec(blk_name(il, "ffn_gate_inp.weight"), {D, s.n_expert}, 0.0f, in_scale * 3);
    b.matrix(blk_name(il, "ffn_gate_exps.weight"), {D, s.n_ff, s.n_expert}, in_scale);
    b.matrix(blk_name(il, "ffn_up_exps.weight"), {D, s.n_ff, s.n_expert}, in_scale);
    b.matrix(blk_name(il, "ffn_down_exps.weight"), {s.n_ff, D, s.n_expert}, down_scale);
    b.matrix(blk_name(il, "ffn_gate_shexp.weight"), {D, s.n_ff}, in_scale);
    b.matrix(blk_name(il, "ffn_up_shexp.weight"), {D, s.n_ff}, in_scale);
    b.matrix(blk_name(il, "ffn_down_shexp.weight"), {s.n_ff, D}, down_scale);
    b.vec(blk_name(il, "ffn_gate_inp_shexp.weight"), {D}, 0.0f, in_scale * 3);
  }
  return b.status();
}

// LFM2 / LFM2-MoE: gated short-conv layers, attention (QK-norm, NEOX RoPE) on the spec's
// attention_layers; lfm2moe keeps layer 0 dense and routes the rest (sigmoid + selection bias).
Status build_lfm2(const SyntheticSpec& s, GgufWriter& w) {
  const std::string& a = s.arch;
  const bool moe = a == "lfm2moe";
  const uint32_t D = s.n_embd, hd = s.n_head ? D / s.n_head : 0, K = s.conv_kernel;
  if (s.n_head == 0 || D % s.n_head || s.n_head_kv == 0 || s.n_head % s.n_head_kv || K < 2 ||
      (moe && (s.n_expert == 0 || s.n_expert_used == 0 || s.n_expert_used > s.n_expert)))
    return Error(ErrorCode::kInvalidArgument, "synthetic model: inconsistent sizes for ", a);
  std::vector<bool> is_attn(s.n_layer, false);
  for (uint32_t il : s.attention_layers)
    if (il < s.n_layer) is_attn[il] = true;
  auto key = [&](const char* k) { return a + "." + k; };
  w.set_string("general.architecture", a);
  w.set_string("general.name", "chimera synthetic " + a);
  w.set_uint32(key("block_count"), s.n_layer);
  w.set_uint32(key("context_length"), 128000);
  w.set_uint32(key("embedding_length"), D);
  w.set_uint32(key("feed_forward_length"), s.n_ff);
  w.set_uint32(key("attention.head_count"), s.n_head);
  std::vector<int32_t> kv(s.n_layer);
  for (uint32_t il = 0; il < s.n_layer; ++il) kv[il] = is_attn[il] ? s.n_head_kv : 0;
  w.set_array(key("attention.head_count_kv"), kv);
  w.set_float32(key("rope.freq_base"), 1000000.0f);
  w.set_float32(key("attention.layer_norm_rms_epsilon"), 1e-5f);
  w.set_uint32(key("vocab_size"), s.n_vocab);
  w.set_uint32(key("shortconv.l_cache"), K);
  if (moe) {
    w.set_uint32(key("expert_count"), s.n_expert);
    w.set_uint32(key("expert_used_count"), s.n_expert_used);
    w.set_uint32(key("expert_feed_forward_length"), s.n_ff);
    w.set_uint32(key("leading_dense_block_count"), 1);
    w.set_uint32(key("expert_gating_func"), 2);  // sigmoid
  }
  Builder b(s, w);
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float down_scale = 1.0f / std::sqrt(static_cast<float>(s.n_ff));
  b.matrix("token_embd.weight", {D, s.n_vocab}, 1.0f);
  b.vec("token_embd_norm.weight", {D}, 1.0f, 0.2f);
  if (!s.tied_embeddings) b.matrix("output.weight", {D, s.n_vocab}, in_scale);
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    b.vec(blk_name(il, "attn_norm.weight"), {D}, 1.0f, 0.2f);
    b.vec(blk_name(il, "ffn_norm.weight"), {D}, 1.0f, 0.2f);
    if (is_attn[il]) {
      const uint32_t kvd = s.n_head_kv * hd;
      b.matrix(blk_name(il, "attn_q.weight"), {D, D}, in_scale);
      b.matrix(blk_name(il, "attn_k.weight"), {D, kvd}, in_scale);
      b.matrix(blk_name(il, "attn_v.weight"), {D, kvd}, in_scale);
      b.matrix(blk_name(il, "attn_output.weight"), {D, D}, in_scale);
      b.vec(blk_name(il, "attn_q_norm.weight"), {hd}, 1.0f, 0.2f);
      b.vec(blk_name(il, "attn_k_norm.weight"), {hd}, 1.0f, 0.2f);
    } else {
      b.vec(blk_name(il, "shortconv.conv.weight"), {K, D}, 0.0f, 0.5f);
      b.matrix(blk_name(il, "shortconv.in_proj.weight"), {D, 3 * D}, in_scale);
      b.matrix(blk_name(il, "shortconv.out_proj.weight"), {D, D}, in_scale);
    }
    if (!moe || il == 0) {
      b.matrix(blk_name(il, "ffn_gate.weight"), {D, s.n_ff}, in_scale);
      b.matrix(blk_name(il, "ffn_up.weight"), {D, s.n_ff}, in_scale);
      b.matrix(blk_name(il, "ffn_down.weight"), {s.n_ff, D}, down_scale);
      continue;
    }
    b.vec(blk_name(il, "ffn_gate_inp.weight"), {D, s.n_expert}, 0.0f, in_scale * 3);
    b.matrix(blk_name(il, "ffn_gate_exps.weight"), {D, s.n_ff, s.n_expert}, in_scale);
    b.matrix(blk_name(il, "ffn_up_exps.weight"), {D, s.n_ff, s.n_expert}, in_scale);
    b.matrix(blk_name(il, "ffn_down_exps.weight"), {s.n_ff, D, s.n_expert}, down_scale);
    b.vec(blk_name(il, "exp_probs_b.bias"), {s.n_expert}, 0.0f, 0.5f);
  }
  return b.status();
}

// Nemotron-H (layer_pattern) and Falcon-H1 (attention + Mamba2 in parallel in every layer, then a
// SwiGLU FFN; no SSM norm, as in the released models): keys as llama.cpp's converter writes them.
Status build_nemotron_h_or_falcon_h1(const SyntheticSpec& s, GgufWriter& w) {
  const std::string& a = s.arch;
  const bool falcon = a == "falcon-h1";
  const std::string pattern = falcon ? std::string(s.n_layer, 'P') : s.layer_pattern;
  const uint32_t L = static_cast<uint32_t>(pattern.size()), D = s.n_embd;
  const uint32_t hd = s.head_dim ? s.head_dim : D / std::max(1u, s.n_head);
  const uint32_t d_in = s.ssm_inner ? s.ssm_inner : 2 * D, N = s.ssm_state, H = s.ssm_heads,
                 G = s.ssm_groups;
  if (L == 0 || pattern.find_first_not_of(falcon ? "P" : "M*-") != std::string::npos ||
      s.n_head == 0 || s.n_head_kv == 0 || s.n_head % s.n_head_kv || hd == 0 || H == 0 || G == 0 ||
      d_in % H || H % G)
    return Error(ErrorCode::kInvalidArgument, "synthetic model: inconsistent sizes for ", a);
  auto key = [&](const char* k) { return a + "." + k; };
  w.set_string("general.architecture", a);
  w.set_string("general.name", "chimera synthetic " + a);
  w.set_uint32(key("block_count"), L);
  w.set_uint32(key("context_length"), falcon ? 16384 : 1u << 20);
  w.set_uint32(key("embedding_length"), D);
  w.set_uint32(key("attention.head_count"), s.n_head);
  w.set_uint32(key("attention.key_length"), hd);
  w.set_uint32(key("attention.value_length"), hd);
  if (falcon) {
    w.set_uint32(key("feed_forward_length"), s.n_ff);
    w.set_uint32(key("attention.head_count_kv"), s.n_head_kv);
    w.set_float32(key("attention.layer_norm_rms_epsilon"), 1e-5f);
    w.set_float32(key("rope.freq_base"), 1e11f);
  } else {
    std::vector<int32_t> ff(L), kv(L);
    for (uint32_t il = 0; il < L; ++il) {
      ff[il] = pattern[il] == '-' ? static_cast<int32_t>(s.n_ff) : 0;
      kv[il] = pattern[il] == '*' ? static_cast<int32_t>(s.n_head_kv) : 0;
    }
    w.set_array(key("feed_forward_length"), ff);
    w.set_array(key("attention.head_count_kv"), kv);
    w.set_float32(key("attention.layer_norm_epsilon"), 1e-5f);
    w.set_uint32(key("rope.dimension_count"), hd);
    w.set_bool(key("rope.scaling.finetuned"), false);
  }
  w.set_uint32(key("ssm.conv_kernel"), s.conv_kernel);
  w.set_uint32(key("ssm.inner_size"), d_in);
  w.set_uint32(key("ssm.state_size"), N);
  w.set_uint32(key("ssm.time_step_rank"), H);
  w.set_uint32(key("ssm.group_count"), G);
  write_vocabulary(s, w);

  Builder b(s, w);
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float down_scale = 1.0f / std::sqrt(static_cast<float>(s.n_ff));
  b.matrix("token_embd.weight", {D, s.n_vocab}, 1.0f);
  b.vec("output_norm.weight", {D}, 1.0f, 0.2f);
  if (!s.tied_embeddings) b.matrix("output.weight", {D, s.n_vocab}, in_scale);
  const uint32_t q = s.n_head * hd, kv = s.n_head_kv * hd;
  const uint32_t C = d_in + 2 * G * N, d_proj = 2 * d_in + 2 * G * N + H;
  for (uint32_t il = 0; il < L; ++il) {
    const char kind = pattern[il];
    b.vec(blk_name(il, "attn_norm.weight"), {D}, 1.0f, 0.2f);
    if (kind == '*' || kind == 'P') {
      b.matrix(blk_name(il, "attn_q.weight"), {D, q}, in_scale);
      b.matrix(blk_name(il, "attn_k.weight"), {D, kv}, in_scale);
      b.matrix(blk_name(il, "attn_v.weight"), {D, kv}, in_scale);
      b.matrix(blk_name(il, "attn_output.weight"), {q, D}, 1.0f / std::sqrt(float(q)));
    }
    if (kind == 'M' || kind == 'P') {
      b.matrix(blk_name(il, "ssm_in.weight"), {D, d_proj}, in_scale);
      b.vec(blk_name(il, "ssm_conv1d.weight"), {s.conv_kernel, C}, 0.0f, 0.5f);
      b.vec(blk_name(il, "ssm_conv1d.bias"), {C}, 0.0f, 0.1f);
      b.vec(blk_name(il, "ssm_dt.bias"), {H}, -4.5f, 2.5f);
      b.vec(blk_name(il, "ssm_a"), {1, H}, -8.0f, 7.0f);
      b.vec(blk_name(il, "ssm_d"), {1, H}, 1.0f, 0.5f);
      if (!falcon) b.vec(blk_name(il, "ssm_norm.weight"), {d_in / G, G}, 1.0f, 0.2f);
      b.matrix(blk_name(il, "ssm_out.weight"), {d_in, D}, 1.0f / std::sqrt(float(d_in)));
    }
    if (kind == '-') {
      b.matrix(blk_name(il, "ffn_up.weight"), {D, s.n_ff}, in_scale);
      b.matrix(blk_name(il, "ffn_down.weight"), {s.n_ff, D}, down_scale);
    }
    if (falcon) {
      b.vec(blk_name(il, "ffn_norm"), {D}, 1.0f, 0.2f);  // llama.cpp's falcon-h1 name
      b.matrix(blk_name(il, "ffn_gate.weight"), {D, s.n_ff}, in_scale);
      b.matrix(blk_name(il, "ffn_up.weight"), {D, s.n_ff}, in_scale);
      b.matrix(blk_name(il, "ffn_down.weight"), {s.n_ff, D}, down_scale);
    }
  }
  return b.status();
}

// Gemma 3: every layer attention (5 sliding-window : 1 global), q/k norms, post-norms, GeGLU.
Status build_gemma3(const SyntheticSpec& s, GgufWriter& w) {
  const uint32_t D = s.n_embd, hd = s.head_dim ? s.head_dim : D / std::max(1u, s.n_head);
  if (s.n_head == 0 || s.n_head_kv == 0 || s.n_head % s.n_head_kv || hd % 2)
    return Error(ErrorCode::kInvalidArgument, "synthetic model: inconsistent sizes for gemma3");
  auto key = [](const char* k) { return std::string("gemma3.") + k; };
  w.set_string("general.architecture", "gemma3");
  w.set_string("general.name", "chimera synthetic gemma3");
  w.set_uint32(key("block_count"), s.n_layer);
  w.set_uint32(key("context_length"), 32768);
  w.set_uint32(key("embedding_length"), D);
  w.set_uint32(key("feed_forward_length"), s.n_ff);
  w.set_float32(key("attention.layer_norm_rms_epsilon"), 1e-6f);
  w.set_uint32(key("attention.head_count"), s.n_head);
  w.set_uint32(key("attention.head_count_kv"), s.n_head_kv);
  w.set_uint32(key("attention.key_length"), hd);
  w.set_uint32(key("attention.value_length"), hd);
  w.set_uint32(key("attention.sliding_window"), s.sliding_window);
  w.set_float32(key("rope.freq_base"), 1000000.0f);
  w.set_float32(key("rope.freq_base_swa"), 10000.0f);
  write_vocabulary(s, w);
  Builder b(s, w);
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(D));
  b.matrix("token_embd.weight", {D, s.n_vocab}, 1.0f / std::sqrt(static_cast<float>(D)));
  b.vec("output_norm.weight", {D}, 1.0f, 0.2f);
  const uint32_t q = s.n_head * hd, kv = s.n_head_kv * hd;
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    b.vec(blk_name(il, "attn_norm.weight"), {D}, 1.0f, 0.2f);
    b.matrix(blk_name(il, "attn_q.weight"), {D, q}, in_scale);
    b.matrix(blk_name(il, "attn_k.weight"), {D, kv}, in_scale);
    b.matrix(blk_name(il, "attn_v.weight"), {D, kv}, in_scale);
    b.matrix(blk_name(il, "attn_output.weight"), {q, D}, 1.0f / std::sqrt(static_cast<float>(q)));
    b.vec(blk_name(il, "attn_q_norm.weight"), {hd}, 1.0f, 0.2f);
    b.vec(blk_name(il, "attn_k_norm.weight"), {hd}, 1.0f, 0.2f);
    b.vec(blk_name(il, "post_attention_norm.weight"), {D}, 1.0f, 0.2f);
    b.vec(blk_name(il, "ffn_norm.weight"), {D}, 1.0f, 0.2f);
    b.matrix(blk_name(il, "ffn_gate.weight"), {D, s.n_ff}, in_scale);
    b.matrix(blk_name(il, "ffn_up.weight"), {D, s.n_ff}, in_scale);
    b.matrix(blk_name(il, "ffn_down.weight"), {s.n_ff, D}, 1.0f / std::sqrt(float(s.n_ff)));
    b.vec(blk_name(il, "post_ffw_norm.weight"), {D}, 1.0f, 0.2f);
  }
  return b.status();
}

}  // namespace

Status build_synthetic_model(const SyntheticSpec& s, GgufWriter& w) {
  const std::string& a = s.arch;
  const bool qwen = a == "qwen35" || a == "qwen35moe" || a == "qwen3next";
  const bool hybrid = a == "granitehybrid", mamba = a == "mamba2";
  const bool llama_like = a == "llama" || a == "granite";
  if (a == "nemotron_h" || a == "falcon-h1") return build_nemotron_h_or_falcon_h1(s, w);
  if (a == "gemma3") return build_gemma3(s, w);
  if (!hybrid && !mamba && !llama_like && !qwen && a != "lfm2" && a != "lfm2moe")
    return Error(ErrorCode::kUnsupported, "synthetic model: unknown architecture '", a, "'");
  if (qwen) {
    write_vocabulary(s, w);
    return build_qwen_hybrid(s, w);
  }
  if (a == "lfm2" || a == "lfm2moe") {
    write_vocabulary(s, w);
    return build_lfm2(s, w);
  }
  if (s.n_embd % s.n_head || s.n_head % std::max(1u, s.n_head_kv) || s.ssm_heads == 0 ||
      (2 * s.n_embd) % s.ssm_heads || s.ssm_heads % s.ssm_groups)
    return Error(ErrorCode::kInvalidArgument, "synthetic model: inconsistent sizes");
  auto key = [&](const char* k) { return a + "." + k; };
  const uint32_t D = s.n_embd, d_in = 2 * D, N = s.ssm_state, H = s.ssm_heads, G = s.ssm_groups;
  const uint32_t head_dim = D / s.n_head;

  w.set_string("general.architecture", a);
  w.set_string("general.name", "chimera synthetic " + a);
  w.set_uint32(key("block_count"), s.n_layer);
  w.set_uint32(key("context_length"), 4096);
  w.set_uint32(key("embedding_length"), D);
  w.set_uint32(key("feed_forward_length"), s.n_ff);
  w.set_float32(key("attention.layer_norm_rms_epsilon"), 1e-5f);
  w.set_uint32(key("vocab_size"), s.n_vocab);
  std::vector<bool> is_attn(s.n_layer, llama_like);
  if (hybrid)
    for (uint32_t il : s.attention_layers)
      if (il < s.n_layer) is_attn[il] = true;
  if (!mamba) {
    w.set_uint32(key("attention.head_count"), s.n_head);
    if (hybrid) {
      std::vector<int32_t> kv(s.n_layer);
      for (uint32_t il = 0; il < s.n_layer; ++il) kv[il] = is_attn[il] ? s.n_head_kv : 0;
      w.set_array(key("attention.head_count_kv"), kv);
      w.set_bool(key("rope.scaling.finetuned"), s.rope);
    } else {
      w.set_uint32(key("attention.head_count_kv"), s.n_head_kv);
    }
    w.set_uint32(key("rope.dimension_count"), head_dim);
    w.set_float32(key("rope.freq_base"), 10000.0f);
  }
  if (hybrid || mamba) {
    w.set_uint32(key("ssm.conv_kernel"), s.conv_kernel);
    w.set_uint32(key("ssm.state_size"), N);
    w.set_uint32(key("ssm.group_count"), G);
    w.set_uint32(key("ssm.inner_size"), d_in);
    w.set_uint32(key("ssm.time_step_rank"), H);
  }
  if (hybrid || a == "granite") {  // Granite multipliers, not 1 so that each one is exercised
    w.set_float32(key("embedding_scale"), 3.0f);
    w.set_float32(key("residual_scale"), 0.5f);
    w.set_float32(key("logit_scale"), 2.0f);
    w.set_float32(key("attention.scale"), 1.0f / head_dim);
  }
  if (s.n_expert) {
    w.set_uint32(key("expert_count"), s.n_expert);
    w.set_uint32(key("expert_used_count"), s.n_expert_used);
    w.set_uint32(key("expert_shared_feed_forward_length"), s.n_ff);
  }
  write_vocabulary(s, w);

  Builder b(s, w);
  const float in_scale = 1.0f / std::sqrt(static_cast<float>(D));
  b.matrix("token_embd.weight", {D, s.n_vocab}, 1.0f);
  b.vec("output_norm.weight", {D}, 1.0f, 0.2f);
  if (!s.tied_embeddings) b.matrix("output.weight", {D, s.n_vocab}, in_scale);
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    b.vec(blk_name(il, "attn_norm.weight"), {D}, 1.0f, 0.2f);
    if (is_attn[il]) {
      const uint32_t kv = s.n_head_kv * head_dim;
      b.matrix(blk_name(il, "attn_q.weight"), {D, D}, in_scale);
      b.matrix(blk_name(il, "attn_k.weight"), {D, kv}, in_scale);
      b.matrix(blk_name(il, "attn_v.weight"), {D, kv}, in_scale);
      b.matrix(blk_name(il, "attn_output.weight"), {D, D}, in_scale);
    } else {
      const uint32_t C = d_in + 2 * G * N, d_proj = 2 * d_in + 2 * G * N + H;
      b.matrix(blk_name(il, "ssm_in.weight"), {D, d_proj}, in_scale);
      b.vec(blk_name(il, "ssm_conv1d.weight"), {s.conv_kernel, C}, 0.0f, 0.5f);
      b.vec(blk_name(il, "ssm_conv1d.bias"), {C}, 0.0f, 0.1f);
      // dt bias around inverse-softplus of dt in [0.001, 0.1] (about -7 .. -2).
      b.vec(blk_name(il, "ssm_dt.bias"), {H}, -4.5f, 2.5f);
      std::vector<float> A(H);
      for (float& v : A) v = -std::exp(static_cast<float>(b.rng().uniform() * std::log(16.0)));
      b.add(blk_name(il, "ssm_a"), GgmlType::F32, {1, H},
            {reinterpret_cast<uint8_t*>(A.data()), reinterpret_cast<uint8_t*>(A.data() + H)});
      b.vec(blk_name(il, "ssm_d"), {1, H}, 1.0f, 0.5f);
      b.vec(blk_name(il, "ssm_norm.weight"), {d_in / G, G}, 1.0f, 0.2f);
      b.matrix(blk_name(il, "ssm_out.weight"), {d_in, D}, 1.0f / std::sqrt(float(d_in)));
    }
    if (mamba) continue;
    b.vec(blk_name(il, "ffn_norm.weight"), {D}, 1.0f, 0.2f);
    const float down_scale = 1.0f / std::sqrt(static_cast<float>(s.n_ff));
    if (s.n_expert == 0) {
      b.matrix(blk_name(il, "ffn_gate.weight"), {D, s.n_ff}, in_scale);
      b.matrix(blk_name(il, "ffn_up.weight"), {D, s.n_ff}, in_scale);
      b.matrix(blk_name(il, "ffn_down.weight"), {s.n_ff, D}, down_scale);
    } else {
      b.vec(blk_name(il, "ffn_gate_inp.weight"), {D, s.n_expert}, 0.0f, in_scale * 3);
      b.matrix(blk_name(il, "ffn_gate_exps.weight"), {D, s.n_ff, s.n_expert}, in_scale);
      b.matrix(blk_name(il, "ffn_up_exps.weight"), {D, s.n_ff, s.n_expert}, in_scale);
      b.matrix(blk_name(il, "ffn_down_exps.weight"), {s.n_ff, D, s.n_expert}, down_scale);
      b.matrix(blk_name(il, "ffn_gate_shexp.weight"), {D, s.n_ff}, in_scale);
      b.matrix(blk_name(il, "ffn_up_shexp.weight"), {D, s.n_ff}, in_scale);
      b.matrix(blk_name(il, "ffn_down_shexp.weight"), {s.n_ff, D}, down_scale);
    }
  }
  return b.status();
}

Status write_synthetic_model(const SyntheticSpec& spec, const std::string& path) {
  GgufWriter w;
  CHIMERA_RETURN_IF_ERROR(build_synthetic_model(spec, w));
  return w.write_file(path);
}

}  // namespace chimera
