// Falcon-H1 (falcon-h1): every layer runs NEOX-RoPE attention and a Mamba2 mixer in parallel on
// the same pre-normed input (attn_norm); their outputs are summed into the residual, then a
// SwiGLU FFN behind ffn_norm. llama.cpp's converter folds all of Falcon-H1's muP multipliers into
// the weights, so none is read here. The Mamba2 inner size is ssm.inner_size (HF mamba_d_ssm,
// not 2 x hidden); without ssm_norm (HF mamba_rms_norm false, every released model) the scan
// output is only gated, y * silu(z); with it, gated then group-RMS-normed as llama.cpp does.
#include "models/loader_util.h"

namespace chimera {

Status load_falcon_h1(Model& m) {
  ArchKeys keys(*m.file, "falcon-h1");
  TensorBinder tb(*m.file);
  CHIMERA_RETURN_IF_ERROR(load_common(m, keys, tb));
  ModelHParams& hp = m.hp;
  CHIMERA_RETURN_IF_ERROR(load_attention_hparams(m, keys, true, RopeMode::kNeox));
  if (!hp.use_rope)
    return Error(ErrorCode::kUnsupported, m.file->path(),
                 ": rope.scaling.finetuned false (falcon-h1 without RoPE) is not supported");
  CHIMERA_ASSIGN_OR_RETURN(uint32_t v_len,
                           keys.get_or<uint32_t>("attention.value_length", hp.head_dim));
  if (v_len != hp.head_dim)
    return Error(ErrorCode::kUnsupported, m.file->path(), ": attention.value_length ", v_len,
                 " differs from attention.key_length ", hp.head_dim);
  CHIMERA_RETURN_IF_ERROR(load_ssm_hparams(m, keys));
  CHIMERA_ASSIGN_OR_RETURN(auto n_head_kv, keys.per_layer("attention.head_count_kv", hp.n_layer));
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = m.layers[il];
    l.n_head_kv = n_head_kv[il];
    if (l.n_head_kv == 0 || hp.n_head % l.n_head_kv)
      return Error(ErrorCode::kFormat, m.file->path(), ": layer ", il, " head_count_kv ",
                   l.n_head_kv, " does not divide head_count ", hp.n_head);
    l.attn_norm = tb.require(blk(il, "attn_norm.weight"), {hp.n_embd});
    bind_attention(m, il, tb);
    bind_mamba2(m, il, tb, false);
    l.kind = MixerKind::kAttentionMamba2;
    l.ssm.gate_only = l.ssm.norm == nullptr;
    // llama.cpp's converter names the FFN norm "blk.N.ffn_norm" (no ".weight") for falcon-h1
    const int64_t D = hp.n_embd;
    l.ffn_norm = tb.optional(blk(il, "ffn_norm.weight"), {D});
    if (!l.ffn_norm) l.ffn_norm = tb.require(blk(il, "ffn_norm"), {D});
    l.ffn_kind = FfnKind::kDense;
    l.ffn.gate = tb.require(blk(il, "ffn_gate.weight"), {D, kAnyDim});
    const int64_t F = l.ffn.gate ? l.ffn.gate->ne[1] : 0;
    l.ffn.up = tb.require(blk(il, "ffn_up.weight"), {D, F});
    l.ffn.down = tb.require(blk(il, "ffn_down.weight"), {F, D});
    l.ffn.gate_b = tb.optional(blk(il, "ffn_gate.bias"), {F});
    l.ffn.up_b = tb.optional(blk(il, "ffn_up.bias"), {F});
    l.ffn.down_b = tb.optional(blk(il, "ffn_down.bias"), {D});
    tb.require_f32(l.ffn_norm);
  }
  return tb.status();
}

}  // namespace chimera
