// Granite 4.0-H (granitehybrid): Mamba2 layers + attention layers (NoPE unless the file enables
// RoPE), each followed by a dense SwiGLU or MoE (+ shared expert) FFN; four Granite multipliers.
// Spec: shared/spec/ARCHITECTURES.md section 4.
#include "models/loader_util.h"

namespace chimera {

Status load_granitehybrid(Model& m) {
  ArchKeys keys(*m.file, "granitehybrid");
  TensorBinder tb(*m.file);
  CHIMERA_RETURN_IF_ERROR(load_common(m, keys, tb));
  ModelHParams& hp = m.hp;
  // RoPE is on when rope.scaling.finetuned is absent (llama.cpp default), NORM mode.
  CHIMERA_RETURN_IF_ERROR(load_attention_hparams(m, keys, true, RopeMode::kNorm));
  CHIMERA_RETURN_IF_ERROR(load_ssm_hparams(m, keys));
  CHIMERA_RETURN_IF_ERROR(load_granite_multipliers(m, keys));
  CHIMERA_ASSIGN_OR_RETURN(hp.n_expert, keys.get_or<uint32_t>("expert_count", 0));
  CHIMERA_ASSIGN_OR_RETURN(hp.n_expert_used, keys.get_or<uint32_t>("expert_used_count", 0));
  if (hp.n_expert > 0 && (hp.n_expert_used == 0 || hp.n_expert_used > hp.n_expert))
    return Error(ErrorCode::kFormat, m.file->path(), ": expert_used_count ", hp.n_expert_used,
                 " invalid for expert_count ", hp.n_expert);
  CHIMERA_ASSIGN_OR_RETURN(auto n_head_kv, keys.per_layer("attention.head_count_kv", hp.n_layer));
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = m.layers[il];
    l.n_head_kv = n_head_kv[il];
    l.attn_norm = tb.require(blk(il, "attn_norm.weight"), {hp.n_embd});
    if (l.n_head_kv == 0) {  // layer kind: head_count_kv[il] == 0 means Mamba2 (spec 4.2)
      bind_mamba2(m, il, tb, false);
    } else {
      if (hp.n_head % l.n_head_kv)
        return Error(ErrorCode::kFormat, m.file->path(), ": layer ", il, " head_count_kv ",
                     l.n_head_kv, " does not divide head_count ", hp.n_head);
      bind_attention(m, il, tb);
    }
    bind_ffn(m, il, tb);
  }
  return tb.status();
}

}  // namespace chimera
