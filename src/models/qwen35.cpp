// Qwen3.5 (qwen35: dense FFN) and Qwen3.5-MoE (qwen35moe: MoE + sigmoid-gated shared expert):
// three gated-DeltaNet layers per gated full-attention layer (full_attention_interval). The
// converter reorders value heads to the tiled order (value head h reads key head h % Hk) and
// splits beta/alpha into ssm_beta and ssm_alpha. Text-only input, so the multi-section RoPE is
// plain NEOX RoPE on the first rope.dimension_count dims of each head. Spec 6.5.
#include "models/loader_util.h"

namespace chimera {

namespace {

Status load_qwen35_like(Model& m, const char* arch, bool moe) {
  ArchKeys keys(*m.file, arch);
  TensorBinder tb(*m.file);
  CHIMERA_RETURN_IF_ERROR(load_common(m, keys, tb));
  ModelHParams& hp = m.hp;
  CHIMERA_RETURN_IF_ERROR(load_attention_hparams(m, keys, true, RopeMode::kNeox));
  CHIMERA_RETURN_IF_ERROR(load_delta_net_hparams(m, keys));
  hp.delta_tiled_heads = true;
  if (moe) {
    CHIMERA_ASSIGN_OR_RETURN(hp.n_expert, keys.get<uint32_t>("expert_count"));
    CHIMERA_ASSIGN_OR_RETURN(hp.n_expert_used, keys.get<uint32_t>("expert_used_count"));
    if (hp.n_expert == 0 || hp.n_expert_used == 0 || hp.n_expert_used > hp.n_expert)
      return Error(ErrorCode::kFormat, m.file->path(), ": expert_used_count ", hp.n_expert_used,
                   " invalid for expert_count ", hp.n_expert);
  }
  CHIMERA_ASSIGN_OR_RETURN(auto n_head_kv, keys.per_layer("attention.head_count_kv", hp.n_layer));
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = m.layers[il];
    l.attn_norm = tb.require(blk(il, "attn_norm.weight"), {hp.n_embd});
    if (l.kind == MixerKind::kDeltaNet) {
      bind_delta_net(m, il, tb, false);
    } else {
      l.n_head_kv = n_head_kv[il];
      if (l.n_head_kv == 0 || hp.n_head % l.n_head_kv)
        return Error(ErrorCode::kFormat, m.file->path(), ": layer ", il, " head_count_kv ",
                     l.n_head_kv, " does not divide head_count ", hp.n_head);
      bind_gated_attention(m, il, tb);
    }
    bind_qwen_ffn(m, il, tb);
  }
  return tb.status();
}

}  // namespace

Status load_qwen35(Model& m) {
  return load_qwen35_like(m, "qwen35", false);
}

Status load_qwen35moe(Model& m) {
  return load_qwen35_like(m, "qwen35moe", true);
}

}  // namespace chimera
