// Mamba2: every layer is a Mamba2 mixer with a pre-RMSNorm, no FFN, no positions.
// Spec: shared/spec/ARCHITECTURES.md sections 3 and 5.2.
#include "models/loader_util.h"

namespace chimera {

Status load_mamba2(Model& m) {
  ArchKeys keys(*m.file, "mamba2");
  TensorBinder tb(*m.file);
  CHIMERA_RETURN_IF_ERROR(load_common(m, keys, tb));
  CHIMERA_RETURN_IF_ERROR(load_ssm_hparams(m, keys));
  for (uint32_t il = 0; il < m.hp.n_layer; ++il) {
    m.layers[il].attn_norm = tb.require(blk(il, "attn_norm.weight"), {m.hp.n_embd});
    bind_mamba2(m, il, tb, true);
    m.layers[il].ffn_kind = FfnKind::kNone;
  }
  return tb.status();
}

}  // namespace chimera
