// Nemotron-H (nemotron_h): every layer is exactly one of a Mamba2 mixer, a NoPE attention mixer or
// a non-gated squared-ReLU FFN, each behind its own pre-RMSNorm (attn_norm) and residual. The
// kind comes from two per-layer arrays: head_count_kv > 0 is attention, feed_forward_length > 0
// is an FFN-only layer, both 0 is Mamba2 (llama.cpp's rule). Mamba2 uses the per-group gated
// RMSNorm (ssm_norm {d_inner/G, G}). Spec: shared/spec/ARCHITECTURES.md.
//
// Nemotron-H MoE (nemotron_h_moe, Nemotron-3-Nano): the same three kinds, but every FFN layer is
// a MoE of squared-ReLU experts (no gate) plus one squared-ReLU shared expert. Routing is
// sigmoid(router logits); exp_probs_b is added to the scores only to choose the top k; the chosen
// unbiased scores are renormalised when expert_weights_norm says so, then multiplied by
// expert_weights_scale (HF routed_scaling_factor), as llama.cpp does.
#include "models/loader_util.h"

namespace chimera {

namespace {

// The FFN-only layer: no mixer, the layer's one norm in front of up -> relu^2 -> down.
void bind_relu_squared_ffn_layer(Model& m, uint32_t il, TensorBinder& tb, int64_t F) {
  const int64_t D = m.hp.n_embd;
  LayerWeights& l = m.layers[il];
  l.kind = MixerKind::kNone;
  l.ffn_kind = FfnKind::kDense;
  l.ffn_act = FfnActivation::kReluSquared;
  l.ffn_norm = l.attn_norm;
  l.attn_norm = nullptr;
  l.ffn.up = tb.require(blk(il, "ffn_up.weight"), {D, F});
  l.ffn.down = tb.require(blk(il, "ffn_down.weight"), {F, D});
  l.ffn.up_b = tb.optional(blk(il, "ffn_up.bias"), {F});
  l.ffn.down_b = tb.optional(blk(il, "ffn_down.bias"), {D});
}

// The MoE FFN-only layer: router (+ selection bias), up/down experts, up/down shared expert.
void bind_relu_squared_moe_layer(Model& m, uint32_t il, TensorBinder& tb) {
  const int64_t D = m.hp.n_embd, E = m.hp.n_expert;
  LayerWeights& l = m.layers[il];
  l.kind = MixerKind::kNone;
  l.ffn_kind = FfnKind::kMoe;
  l.ffn_act = FfnActivation::kReluSquared;
  l.ffn_norm = l.attn_norm;
  l.attn_norm = nullptr;
  FfnWeights& f = l.ffn;
  f.router = tb.require(blk(il, "ffn_gate_inp.weight"), {D, E});
  f.router_bias = tb.require(blk(il, "exp_probs_b.bias"), {E});
  f.up_exps = tb.require(blk(il, "ffn_up_exps.weight"), {D, kAnyDim, E});
  const int64_t F = f.up_exps ? f.up_exps->ne[1] : 0;
  f.down_exps = tb.require(blk(il, "ffn_down_exps.weight"), {F, D, E});
  f.up = tb.require(blk(il, "ffn_up_shexp.weight"), {D, kAnyDim});
  const int64_t Fs = f.up ? f.up->ne[1] : 0;
  f.down = tb.require(blk(il, "ffn_down_shexp.weight"), {Fs, D});
  tb.require_f32(f.router);
  tb.require_f32(f.router_bias);
}

// What this loader cannot run is refused by name: latent MoE projections (Nemotron 3 Super),
// appended MTP blocks, grouped expert selection, per-layer expert counts, several shared experts.
Status load_moe_hparams(Model& m, const ArchKeys& keys) {
  ModelHParams& hp = m.hp;
  const std::string& path = m.file->path();
  CHIMERA_ASSIGN_OR_RETURN(hp.n_expert, keys.get<uint32_t>("expert_count"));
  CHIMERA_ASSIGN_OR_RETURN(hp.n_expert_used, keys.get<uint32_t>("expert_used_count"));
  if (hp.n_expert == 0 || hp.n_expert_used == 0 || hp.n_expert_used > hp.n_expert)
    return Error(ErrorCode::kFormat, path, ": expert_used_count ", hp.n_expert_used,
                 " invalid for expert_count ", hp.n_expert);
  CHIMERA_ASSIGN_OR_RETURN(uint32_t latent, keys.get_or<uint32_t>("moe_latent_size", 0));
  CHIMERA_ASSIGN_OR_RETURN(uint32_t nextn, keys.get_or<uint32_t>("nextn_predict_layers", 0));
  CHIMERA_ASSIGN_OR_RETURN(uint32_t groups, keys.get_or<uint32_t>("expert_group_count", 1));
  CHIMERA_ASSIGN_OR_RETURN(uint32_t shared, keys.get_or<uint32_t>("expert_shared_count", 1));
  if (latent > 0)
    return Error(ErrorCode::kUnsupported, path, ": moe_latent_size ", latent,
                 " (latent MoE projections) is not supported");
  if (nextn > 0)
    return Error(ErrorCode::kUnsupported, path, ": nextn_predict_layers ", nextn,
                 " (appended MTP blocks) is not supported");
  if (groups > 1)
    return Error(ErrorCode::kUnsupported, path, ": expert_group_count ", groups,
                 " (group-limited expert selection) is not supported");
  if (shared != 1)
    return Error(ErrorCode::kUnsupported, path, ": expert_shared_count ", shared,
                 " (only one shared expert is supported)");
  CHIMERA_ASSIGN_OR_RETURN(hp.moe_renormalize, keys.get_or<bool>("expert_weights_norm", false));
  CHIMERA_ASSIGN_OR_RETURN(hp.moe_weight_scale, keys.get_or<float>("expert_weights_scale", 0.0f));
  hp.moe_sigmoid = true;
  return Status::Ok();
}

Status load_nemotron_h_family(Model& m, const char* arch, bool moe) {
  ArchKeys keys(*m.file, arch);
  TensorBinder tb(*m.file);
  CHIMERA_RETURN_IF_ERROR(load_common(m, keys, tb, /*eps_key_fallback=*/true));
  ModelHParams& hp = m.hp;
  CHIMERA_RETURN_IF_ERROR(load_attention_hparams(m, keys, false, RopeMode::kNorm));
  hp.use_rope = false;  // llama.cpp never rotates nemotron_h attention, whatever the keys say
  CHIMERA_ASSIGN_OR_RETURN(uint32_t v_len,
                           keys.get_or<uint32_t>("attention.value_length", hp.head_dim));
  if (v_len != hp.head_dim)
    return Error(ErrorCode::kUnsupported, m.file->path(), ": attention.value_length ", v_len,
                 " differs from attention.key_length ", hp.head_dim);
  CHIMERA_RETURN_IF_ERROR(load_ssm_hparams(m, keys));
  if (moe) CHIMERA_RETURN_IF_ERROR(load_moe_hparams(m, keys));
  CHIMERA_ASSIGN_OR_RETURN(auto n_head_kv, keys.per_layer("attention.head_count_kv", hp.n_layer));
  CHIMERA_ASSIGN_OR_RETURN(auto n_ff, keys.per_layer("feed_forward_length", hp.n_layer));
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = m.layers[il];
    l.attn_norm = tb.require(blk(il, "attn_norm.weight"), {hp.n_embd});
    if (n_head_kv[il] > 0 && n_ff[il] > 0)
      return Error(ErrorCode::kFormat, m.file->path(), ": layer ", il, " has both head_count_kv ",
                   n_head_kv[il], " and feed_forward_length ", n_ff[il], "; a ", arch,
                   " layer is attention or FFN, not both");
    if (n_ff[il] > 0 && moe) {
      bind_relu_squared_moe_layer(m, il, tb);
    } else if (n_ff[il] > 0) {
      bind_relu_squared_ffn_layer(m, il, tb, n_ff[il]);
    } else if (n_head_kv[il] > 0) {
      l.n_head_kv = n_head_kv[il];
      if (hp.n_head % l.n_head_kv)
        return Error(ErrorCode::kFormat, m.file->path(), ": layer ", il, " head_count_kv ",
                     l.n_head_kv, " does not divide head_count ", hp.n_head);
      bind_attention(m, il, tb);
    } else {
      bind_mamba2(m, il, tb, false);
    }
  }
  return tb.status();
}

}  // namespace

Status load_nemotron_h(Model& m) {
  return load_nemotron_h_family(m, "nemotron_h", false);
}
Status load_nemotron_h_moe(Model& m) {
  return load_nemotron_h_family(m, "nemotron_h_moe", true);
}

}  // namespace chimera
