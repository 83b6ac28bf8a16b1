// Nemotron-H (nemotron_h): every layer is exactly one of a Mamba2 mixer, a NoPE attention mixer or
// a non-gated squared-ReLU FFN, each behind its own pre-RMSNorm (attn_norm) and residual. The
// kind comes from two per-layer arrays: head_count_kv > 0 is attention, feed_forward_length > 0
// is an FFN-only layer, both 0 is Mamba2 (llama.cpp's rule). Mamba2 uses the per-group gated
// RMSNorm (ssm_norm {d_inner/G, G}). Spec: shared/spec/ARCHITECTURES.md.
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

}  // namespace

Status load_nemotron_h(Model& m) {
  ArchKeys keys(*m.file, "nemotron_h");
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
  CHIMERA_ASSIGN_OR_RETURN(auto n_head_kv, keys.per_layer("attention.head_count_kv", hp.n_layer));
  CHIMERA_ASSIGN_OR_RETURN(auto n_ff, keys.per_layer("feed_forward_length", hp.n_layer));
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = m.layers[il];
    l.attn_norm = tb.require(blk(il, "attn_norm.weight"), {hp.n_embd});
    if (n_head_kv[il] > 0 && n_ff[il] > 0)
      return Error(ErrorCode::kFormat, m.file->path(), ": layer ", il, " has both head_count_kv ",
                   n_head_kv[il], " and feed_forward_length ", n_ff[il],
                   "; a nemotron_h layer is attention or FFN, not both");
    if (n_ff[il] > 0) {
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

}  // namespace chimera
