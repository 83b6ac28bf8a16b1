// A loaded model: hyper-parameters and views of its weights inside the memory-mapped GGUF.
// Architectures fill one uniform description (layers of attention, Mamba2 or gated-DeltaNet
// mixers, or no mixer at all, each followed by an optional dense or MoE FFN); one forward pass
// (forward*.cpp) runs them all.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "gguf/gguf_file.h"
#include "kernels/rope.h"

namespace chimera {

// kNone: the layer has no mixer and keeps no per-sequence memory (Nemotron-H's FFN-only layers).
// kShortConv: LFM2's gated short convolution (forward_short_conv.cpp).
// kAttentionMamba2: attention and Mamba2 side by side on the same normed input, outputs summed
// (Falcon-H1); such a layer has a KV cache and a recurrent state.
enum class MixerKind { kAttention, kMamba2, kDeltaNet, kNone, kShortConv, kAttentionMamba2 };
// Whether a layer of this kind keeps a recurrent state (a memory layer of LayerKind::kRecurrent).
constexpr bool keeps_recurrent_state(MixerKind k) {
  return k == MixerKind::kMamba2 || k == MixerKind::kAttentionMamba2 || k == MixerKind::kDeltaNet ||
         k == MixerKind::kShortConv;
}
enum class FfnKind { kNone, kDense, kMoe };
// kSwiGlu: down(silu(gate x) * up x). kReluSquared: down(relu(up x)^2), no gate (Nemotron-H;
// for MoE layers it applies to the routed experts and the shared expert alike).
// kGeGluTanh: down(gelu_tanh(gate x) * up x) (Gemma).
enum class FfnActivation { kSwiGlu, kReluSquared, kGeGluTanh };

// A weight tensor inside the mapping (never copied). null when the optional tensor is absent.
using Weight = const GgufTensorInfo*;

struct AttentionWeights {
  Weight wq = nullptr, wk = nullptr, wv = nullptr, wo = nullptr;
  Weight bq = nullptr, bk = nullptr, bv = nullptr, bo = nullptr;
  Weight q_norm = nullptr, k_norm = nullptr;  // {head_dim}: per-head RMSNorm before RoPE
  // Qwen3-Next/3.5: wq yields per head [q (head_dim) | gate (head_dim)]; the attention output is
  // multiplied by sigmoid(gate) before wo.
  bool output_gate = false;
};

// Gated DeltaNet (spec 6.5). S = ssm_state, Hk = ssm_groups, Hv = ssm_heads, d_in = Hv*S.
struct DeltaNetWeights {
  Weight qkv = nullptr;      // {D, 2*Hk*S + d_in}: [q all heads | k | v]
  Weight gate = nullptr;     // {D, d_in}: z
  Weight beta = nullptr;     // {D, Hv} (qwen35)
  Weight alpha = nullptr;    // {D, Hv} (qwen35)
  Weight ba = nullptr;       // {D, 2*Hv} (qwen3next): per key head [b x Hv/Hk | a x Hv/Hk]
  Weight conv = nullptr;     // {K, 2*Hk*S + d_in} F32
  Weight dt_bias = nullptr;  // {Hv}
  Weight a = nullptr;        // {Hv}: already -exp(A_log)
  Weight norm = nullptr;     // {S}
  Weight out = nullptr;      // {d_in, D}
};

struct Mamba2Weights {
  Weight in = nullptr;         // {D, d_proj}
  Weight conv = nullptr;       // {K, C_conv} F32
  Weight conv_bias = nullptr;  // {C_conv} optional
  Weight dt_bias = nullptr;    // {H}
  Weight a = nullptr;          // {1, H}: already -exp(A_log)
  Weight d = nullptr;          // {1, H}
  Weight norm = nullptr;       // {d_in/G, G} optional
  Weight out = nullptr;        // {d_in, D}
  bool gate_only = false;      // y * silu(z) with no norm at all (Falcon-H1 without ssm_norm)
};

// LFM2 gated short conv: in {D, 3D} -> [B | C | x]; y = out(C * conv(B * x)), conv {L, D} F32.
struct ShortConvWeights {
  Weight in = nullptr, conv = nullptr, out = nullptr;
};

struct FfnWeights {
  // dense (gate absent for kReluSquared), or the MoE shared expert
  Weight gate = nullptr, up = nullptr, down = nullptr;
  Weight gate_b = nullptr, up_b = nullptr, down_b = nullptr;
  Weight router = nullptr;       // {D, E}
  Weight router_bias = nullptr;  // {E} F32: added to the sigmoid scores for selection only
  Weight gate_exps = nullptr, up_exps = nullptr, down_exps = nullptr;  // {D, F, E}, {F, D, E}
  Weight shexp_gate = nullptr;  // {D}: the shared expert is scaled by sigmoid(shexp_gate . v)
};

struct LayerWeights {
  MixerKind kind = MixerKind::kAttention;
  uint32_t n_head_kv = 0;  // attention layers
  Weight attn_norm = nullptr;
  AttentionWeights attn;
  Mamba2Weights ssm;
  DeltaNetWeights delta;
  ShortConvWeights short_conv;
  FfnKind ffn_kind = FfnKind::kNone;
  FfnActivation ffn_act = FfnActivation::kSwiGlu;
  Weight ffn_norm = nullptr;
  FfnWeights ffn;
  // Gemma: RMSNorms of the attention and FFN branch outputs before they join the residual.
  Weight attn_post_norm = nullptr, ffn_post_norm = nullptr;
  // Sliding-window attention: the layer reads only the last n_swa positions (keys at
  // pos - key_pos < n_swa, the current token included); 0 = global. RoPE of the layer: 0 = the
  // model's rope_freq_base / rope_freq_scale.
  uint32_t n_swa = 0;
  float rope_freq_base = 0, rope_freq_scale = 0;
};

struct ModelHParams {
  std::string arch;
  uint32_t n_layer = 0;
  uint32_t n_embd = 0;
  uint32_t n_vocab = 0;
  uint32_t n_ctx_train = 0;
  float rms_eps = 1e-5f;
  // attention
  uint32_t n_head = 0;
  uint32_t head_dim = 0;
  bool use_rope = false;
  RopeMode rope_mode = RopeMode::kNorm;
  uint32_t n_rot = 0;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;
  // Granite multipliers; 0 means "not applied" (llama.cpp semantics, spec 8.8).
  float embedding_scale = 0, residual_scale = 0, logit_scale = 0;
  float attention_scale = 0;      // 0: 1/sqrt(head_dim)
  float final_logit_softcap = 0;  // logits = c * tanh(logits / c) when > 0 (Gemma)
  // Mamba2
  uint32_t ssm_conv_kernel = 0, ssm_inner = 0, ssm_state = 0, ssm_heads = 0, ssm_groups = 0;
  // Gated DeltaNet: value head h reads key head h % Hk (qwen35 files) instead of h / (Hv/Hk).
  bool delta_tiled_heads = false;
  // MoE
  uint32_t n_expert = 0, n_expert_used = 0;
  bool moe_sigmoid = false;     // sigmoid router scores instead of softmax (Nemotron-H MoE)
  bool moe_renormalize = true;  // divide the k weights by their sum
  float moe_weight_scale = 0;   // routed_scaling_factor; 0 or 1: none
  // LFM2 short conv: kernel length (l_cache); its state is the last l_cache - 1 inputs per channel
  uint32_t shortconv_l_cache = 0;

  uint32_t ssm_head_dim() const { return ssm_heads ? ssm_inner / ssm_heads : 0; }
  uint32_t ssm_conv_channels() const { return ssm_inner + 2 * ssm_groups * ssm_state; }
  // Recurrent state floats per layer (spec 2, "recurrent-state bookkeeping").
  uint64_t conv_state_floats() const {
    return uint64_t(ssm_conv_kernel ? ssm_conv_kernel - 1 : 0) * ssm_conv_channels();
  }
  uint64_t ssm_state_floats() const { return uint64_t(ssm_state) * ssm_inner; }
  float kq_scale() const;
};

struct Model {
  std::unique_ptr<GgufFile> file;
  ModelHParams hp;
  Weight token_embd = nullptr;
  Weight output_norm = nullptr;
  Weight output = nullptr;  // == token_embd when tied
  Weight rope_freqs = nullptr;
  std::vector<LayerWeights> layers;

  uint32_t n_attention_layers() const;
  uint32_t n_recurrent_layers() const;
  std::string describe() const;  // one line: arch, layers, sizes
};

// Opens and validates a model file. Errors name the file, the key or tensor, and what was expected.
// `how`: by default the weights are copied into huge-page memory when the machine allows it
// (GgufLoad::kAuto); the bytes, and so every result, are the same either way.
Result<std::unique_ptr<Model>> load_model(const std::string& path, GgufLoad how = GgufLoad::kAuto);
Result<std::unique_ptr<Model>> load_model(std::unique_ptr<GgufFile> file);

}  // namespace chimera
