// LFM2 (lfm2, Liquid): gated short-conv layers (head_count_kv[il] == 0) and GQA attention layers
// with per-head q/k RMSNorm and NEOX RoPE, each layer followed by a dense SwiGLU FFN. The final
// norm is stored as token_embd_norm (llama.cpp's name for it). LFM2-MoE (lfm2moe.cpp) shares
// this loader: its layers from leading_dense_block_count on have a sigmoid-routed MoE FFN with a
// selection-only expert bias instead.
#include "kernels/ssm.h"
#include "models/loader_util.h"

namespace chimera {

namespace {

void bind_short_conv(Model& m, uint32_t il, TensorBinder& tb) {
  const int64_t D = m.hp.n_embd;
  LayerWeights& l = m.layers[il];
  l.kind = MixerKind::kShortConv;
  l.short_conv.in = tb.require(blk(il, "shortconv.in_proj.weight"), {D, 3 * D});
  l.short_conv.conv = tb.require(blk(il, "shortconv.conv.weight"), {m.hp.shortconv_l_cache, D});
  l.short_conv.out = tb.require(blk(il, "shortconv.out_proj.weight"), {D, D});
  tb.require_f32(l.short_conv.conv);
}

void bind_qk_norm_attention(Model& m, uint32_t il, TensorBinder& tb) {
  LayerWeights& l = m.layers[il];
  bind_attention(m, il, tb);
  l.attn.q_norm = tb.require(blk(il, "attn_q_norm.weight"), {m.hp.head_dim});
  l.attn.k_norm = tb.require(blk(il, "attn_k_norm.weight"), {m.hp.head_dim});
  tb.require_f32(l.attn.q_norm);
  tb.require_f32(l.attn.k_norm);
}

void bind_lfm2_ffn(Model& m, uint32_t il, TensorBinder& tb, bool moe) {
  const int64_t D = m.hp.n_embd, E = m.hp.n_expert;
  LayerWeights& l = m.layers[il];
  FfnWeights& f = l.ffn;
  l.ffn_norm = tb.require(blk(il, "ffn_norm.weight"), {D});
  if (!moe) {
    l.ffn_kind = FfnKind::kDense;
    f.gate = tb.require(blk(il, "ffn_gate.weight"), {D, kAnyDim});
    const int64_t F = f.gate ? f.gate->ne[1] : 0;
    f.up = tb.require(blk(il, "ffn_up.weight"), {D, F});
    f.down = tb.require(blk(il, "ffn_down.weight"), {F, D});
    return;
  }
  l.ffn_kind = FfnKind::kMoe;
  f.router = tb.require(blk(il, "ffn_gate_inp.weight"), {D, E});
  f.gate_exps = tb.require(blk(il, "ffn_gate_exps.weight"), {D, kAnyDim, E});
  const int64_t F = f.gate_exps ? f.gate_exps->ne[1] : 0;
  f.up_exps = tb.require(blk(il, "ffn_up_exps.weight"), {D, F, E});
  f.down_exps = tb.require(blk(il, "ffn_down_exps.weight"), {F, D, E});
  f.router_bias = tb.require(blk(il, "exp_probs_b.bias"), {E});
  tb.require_f32(f.router);
  tb.require_f32(f.router_bias);
}

}  // namespace

// Shared by lfm2 and lfm2moe (moe: routed experts from leading_dense_block_count on).
Status load_lfm2_family(Model& m, const char* arch, bool moe) {
  ArchKeys keys(*m.file, arch);
  TensorBinder tb(*m.file);
  CHIMERA_RETURN_IF_ERROR(load_common(m, keys, tb, false, "token_embd_norm.weight"));
  ModelHParams& hp = m.hp;
  CHIMERA_RETURN_IF_ERROR(load_attention_hparams(m, keys, true, RopeMode::kNeox));
  CHIMERA_ASSIGN_OR_RETURN(uint32_t v_len,
                           keys.get_or<uint32_t>("attention.value_length", hp.head_dim));
  if (v_len != hp.head_dim)
    return Error(ErrorCode::kUnsupported, m.file->path(), ": attention.value_length ", v_len,
                 " differs from attention.key_length ", hp.head_dim);
  CHIMERA_ASSIGN_OR_RETURN(uint32_t n_swa, keys.get_or<uint32_t>("attention.sliding_window", 0));
  if (n_swa > 0)
    return Error(ErrorCode::kUnsupported, m.file->path(), ": ",
                 keys.key("attention.sliding_window"), " = ", n_swa,
                 ": sliding-window LFM2 attention is not supported");
  CHIMERA_ASSIGN_OR_RETURN(hp.shortconv_l_cache, keys.get<uint32_t>("shortconv.l_cache"));
  if (hp.shortconv_l_cache < 2 || hp.shortconv_l_cache > uint32_t(kSsmMaxConvKernel))
    return Error(ErrorCode::kFormat, m.file->path(), ": ", keys.key("shortconv.l_cache"), " ",
                 hp.shortconv_l_cache, " outside [2, ", kSsmMaxConvKernel, "]");
  uint32_t n_dense_lead = hp.n_layer;
  if (moe) {
    CHIMERA_ASSIGN_OR_RETURN(hp.n_expert, keys.get<uint32_t>("expert_count"));
    CHIMERA_ASSIGN_OR_RETURN(hp.n_expert_used, keys.get<uint32_t>("expert_used_count"));
    if (hp.n_expert == 0 || hp.n_expert_used == 0 || hp.n_expert_used > hp.n_expert)
      return Error(ErrorCode::kFormat, m.file->path(), ": expert_used_count ", hp.n_expert_used,
                   " invalid for expert_count ", hp.n_expert);
    CHIMERA_ASSIGN_OR_RETURN(n_dense_lead, keys.get_or<uint32_t>("leading_dense_block_count", 0));
    // llama.cpp's gating-function enum: 1 softmax, 2 sigmoid (what LFM2-MoE files carry)
    CHIMERA_ASSIGN_OR_RETURN(uint32_t gating, keys.get<uint32_t>("expert_gating_func"));
    if (gating != 1 && gating != 2)
      return Error(ErrorCode::kUnsupported, m.file->path(), ": ", keys.key("expert_gating_func"),
                   " ", gating, " (supported: 1 softmax, 2 sigmoid)");
    hp.moe_sigmoid = gating == 2;  // weights always renormalised, never scaled (llama.cpp)
  }
  CHIMERA_ASSIGN_OR_RETURN(auto n_head_kv, keys.per_layer("attention.head_count_kv", hp.n_layer));
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = m.layers[il];
    l.attn_norm = tb.require(blk(il, "attn_norm.weight"), {hp.n_embd});
    if (n_head_kv[il] == 0) {
      bind_short_conv(m, il, tb);
    } else {
      l.n_head_kv = n_head_kv[il];
      if (hp.n_head % l.n_head_kv)
        return Error(ErrorCode::kFormat, m.file->path(), ": layer ", il, " head_count_kv ",
                     l.n_head_kv, " does not divide head_count ", hp.n_head);
      bind_qk_norm_attention(m, il, tb);
    }
    bind_lfm2_ffn(m, il, tb, moe && il >= n_dense_lead);
  }
  return tb.status();
}

Status load_lfm2(Model& m) {
  return load_lfm2_family(m, "lfm2", false);
}

}  // namespace chimera
