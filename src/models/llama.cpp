// Llama: pre-norm attention (RoPE NORM mode, GQA) + SwiGLU FFN. Spec: section 5.1.
#include "models/loader_util.h"

namespace chimera {

namespace {

Status load_llama_like(Model& m, const char* arch, bool granite) {
  ArchKeys keys(*m.file, arch);
  TensorBinder tb(*m.file);
  CHIMERA_RETURN_IF_ERROR(load_common(m, keys, tb));
  ModelHParams& hp = m.hp;
  CHIMERA_RETURN_IF_ERROR(load_attention_hparams(m, keys, true, RopeMode::kNorm));
  if (granite) CHIMERA_RETURN_IF_ERROR(load_granite_multipliers(m, keys));
  CHIMERA_ASSIGN_OR_RETURN(hp.n_expert, keys.get_or<uint32_t>("expert_count", 0));
  CHIMERA_ASSIGN_OR_RETURN(hp.n_expert_used, keys.get_or<uint32_t>("expert_used_count", 0));
  if (hp.n_expert > 0 && (hp.n_expert_used == 0 || hp.n_expert_used > hp.n_expert))
    return Error(ErrorCode::kFormat, m.file->path(), ": expert_used_count ", hp.n_expert_used,
                 " invalid for expert_count ", hp.n_expert);
  // head_count_kv: a scalar (or per-layer array); defaults to head_count.
  std::vector<uint32_t> n_head_kv(hp.n_layer, hp.n_head);
  if (m.file->find(keys.key("attention.head_count_kv"))) {
    CHIMERA_ASSIGN_OR_RETURN(n_head_kv, keys.per_layer("attention.head_count_kv", hp.n_layer));
  }
  if (hp.use_rope && hp.n_rot != hp.head_dim)
    return Error(ErrorCode::kUnsupported, m.file->path(), ": rope.dimension_count ", hp.n_rot,
                 " must equal the head size ", hp.head_dim);
  m.rope_freqs = tb.optional("rope_freqs.weight", {hp.n_rot / 2});
  tb.require_f32(m.rope_freqs);
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = m.layers[il];
    l.n_head_kv = n_head_kv[il];
    if (l.n_head_kv == 0 || hp.n_head % l.n_head_kv)
      return Error(ErrorCode::kFormat, m.file->path(), ": layer ", il, " head_count_kv ",
                   l.n_head_kv, " does not divide head_count ", hp.n_head);
    l.attn_norm = tb.require(blk(il, "attn_norm.weight"), {hp.n_embd});
    bind_attention(m, il, tb);
    bind_ffn(m, il, tb);
  }
  return tb.status();
}

}  // namespace

Status load_llama(Model& m) {
  return load_llama_like(m, "llama", false);
}

// Dense Granite 3.x: llama + the four Granite multipliers (spec 5.1, "granite").
Status load_granite(Model& m) {
  return load_llama_like(m, "granite", true);
}

}  // namespace chimera
