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
  CHIMERA_RETURN_IF_ERROR(bind_qwen_layers(m, keys, tb, /*fused_ba=*/false));
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
