// Qwen3-Next (qwen3next): gated-DeltaNet layers and gated full-attention layers (every
// full_attention_interval-th), each followed by an MoE FFN with a sigmoid-gated shared expert (or
// a dense FFN where the file has no router). Value heads keep HF's grouped order (value head h
// reads key head h / (Hv/Hk)); beta and alpha come fused in ssm_ba. Spec 6.5.
#include "models/loader_util.h"

namespace chimera {

Status load_qwen3next(Model& m) {
  ArchKeys keys(*m.file, "qwen3next");
  TensorBinder tb(*m.file);
  CHIMERA_RETURN_IF_ERROR(load_common(m, keys, tb));
  ModelHParams& hp = m.hp;
  CHIMERA_RETURN_IF_ERROR(load_attention_hparams(m, keys, true, RopeMode::kNeox));
  CHIMERA_RETURN_IF_ERROR(load_delta_net_hparams(m, keys));
  hp.delta_tiled_heads = false;
  CHIMERA_ASSIGN_OR_RETURN(hp.n_expert, keys.get_or<uint32_t>("expert_count", 0));
  CHIMERA_ASSIGN_OR_RETURN(hp.n_expert_used, keys.get_or<uint32_t>("expert_used_count", 0));
  if (hp.n_expert > 0 && (hp.n_expert_used == 0 || hp.n_expert_used > hp.n_expert))
    return Error(ErrorCode::kFormat, m.file->path(), ": expert_used_count ", hp.n_expert_used,
                 " invalid for expert_count ", hp.n_expert);
  CHIMERA_RETURN_IF_ERROR(bind_qwen_layers(m, keys, tb, /*fused_ba=*/true));
  return tb.status();
}

}  // namespace chimera
