// Gemma 3 (gemma3): attention layers only, five sliding-window ("local") layers for every global
// one. Per layer: attn_norm -> attention with per-head q/k RMSNorm and NEOX RoPE -> post-attention
// norm -> residual; ffn_norm -> GeGLU (gelu tanh) FFN -> post-FFN norm -> residual. The embedding
// is scaled by sqrt(n_embd); logits are soft-capped when final_logit_softcapping is present.
// Norm weights are stored as (1 + w) by the converter (HF normalises with 1 + w), so every norm
// is a plain RMSNorm here. Keys and conventions as llama.cpp reads them:
//   - attention.sliding_window: the window n_swa (absent or 0: every layer global);
//   - attention.sliding_window_pattern: a per-layer bool array (true = window) or a period n
//     (layer il is local iff il % n < n - 1); default period 6;
//   - local layers use rope.freq_base_swa (default 10000) and no frequency scaling, global layers
//     rope.freq_base and rope.scaling.factor;
//   - the query scale is 1/sqrt(head_dim), or 1/sqrt(n_embd / n_head) for the 62-layer (27B)
//     model (query_pre_attn_scalar is not in the file; llama.cpp's rule).
//
// Memory: window layers are MemoryLayer::window layers of the hybrid memory (memory_config_for):
// their rows live in a page pool of their own, and after each commit a sequence releases the
// window rows of pages wholly before n + 1 - n_swa - window_reserve, so a long sequence holds
// about n_swa + reserve rows per window layer (global layers keep every row). The forward pass
// limits what each query reads (AttentionBatch::first_visible), so released pages are never
// read. Snapshots keep the window rows ending at their point; seq_rm past the reserve restores
// one and replays (hybrid_memory.h).
#include <cmath>

#include "models/loader_util.h"

namespace chimera {

Status load_gemma3(Model& m) {
  ArchKeys keys(*m.file, "gemma3");
  TensorBinder tb(*m.file);
  CHIMERA_RETURN_IF_ERROR(load_common(m, keys, tb));
  ModelHParams& hp = m.hp;
  CHIMERA_RETURN_IF_ERROR(load_attention_hparams(m, keys, true, RopeMode::kNeox));
  if (hp.n_rot != hp.head_dim)
    return Error(ErrorCode::kUnsupported, m.file->path(), ": rope.dimension_count ", hp.n_rot,
                 " must equal the head size ", hp.head_dim);
  hp.embedding_scale = std::sqrt(static_cast<float>(hp.n_embd));
  hp.attention_scale = hp.n_layer == 62
                           ? 1.0f / std::sqrt(static_cast<float>(hp.n_embd / hp.n_head))
                           : 1.0f / std::sqrt(static_cast<float>(hp.head_dim));
  CHIMERA_ASSIGN_OR_RETURN(hp.final_logit_softcap,
                           keys.get_or<float>("final_logit_softcapping", 0.0f));
  if (!(hp.final_logit_softcap >= 0) || std::isinf(hp.final_logit_softcap))
    return Error(ErrorCode::kFormat, m.file->path(), ": final_logit_softcapping ",
                 hp.final_logit_softcap, " must be finite and >= 0");
  CHIMERA_ASSIGN_OR_RETURN(uint32_t n_swa, keys.get_or<uint32_t>("attention.sliding_window", 0));
  CHIMERA_ASSIGN_OR_RETURN(float base_swa, keys.get_or<float>("rope.freq_base_swa", 10000.0f));
  if (!(base_swa > 0) || std::isinf(base_swa))
    return Error(ErrorCode::kFormat, m.file->path(), ": rope.freq_base_swa ", base_swa,
                 " must be finite and > 0");
  std::vector<bool> is_swa(hp.n_layer, false);
  if (n_swa > 0) {
    const std::string pattern_key = keys.key("attention.sliding_window_pattern");
    const GgufKV* kv = m.file->find(pattern_key);
    if (kv && kv->value.type == GgufValueType::ARRAY) {
      CHIMERA_ASSIGN_OR_RETURN(std::vector<bool> flags, m.file->get_array<bool>(pattern_key));
      if (flags.size() != hp.n_layer)
        return Error(ErrorCode::kFormat, m.file->path(), ": ", pattern_key, " has ", flags.size(),
                     " entries for ", hp.n_layer, " layers");
      is_swa = flags;
    } else {
      CHIMERA_ASSIGN_OR_RETURN(uint32_t period,
                               keys.get_or<uint32_t>("attention.sliding_window_pattern", 6));
      for (uint32_t il = 0; il < hp.n_layer; ++il)
        is_swa[il] = period == 0 || il % period < period - 1;
    }
  }
  CHIMERA_ASSIGN_OR_RETURN(auto n_head_kv, keys.per_layer("attention.head_count_kv", hp.n_layer));
  const int64_t D = hp.n_embd, hd = hp.head_dim;
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = m.layers[il];
    l.n_head_kv = n_head_kv[il];
    if (l.n_head_kv == 0 || hp.n_head % l.n_head_kv)
      return Error(ErrorCode::kFormat, m.file->path(), ": layer ", il, " head_count_kv ",
                   l.n_head_kv, " does not divide head_count ", hp.n_head);
    if (is_swa[il]) {
      l.n_swa = n_swa;
      l.rope_freq_base = base_swa;
      l.rope_freq_scale = 1.0f;
    }
    l.attn_norm = tb.require(blk(il, "attn_norm.weight"), {D});
    bind_attention(m, il, tb);
    l.attn.q_norm = tb.require(blk(il, "attn_q_norm.weight"), {hd});
    l.attn.k_norm = tb.require(blk(il, "attn_k_norm.weight"), {hd});
    l.attn_post_norm = tb.require(blk(il, "post_attention_norm.weight"), {D});
    bind_ffn(m, il, tb);  // ffn_norm + gate/up/down
    l.ffn_act = FfnActivation::kGeGluTanh;
    l.ffn_post_norm = tb.require(blk(il, "post_ffw_norm.weight"), {D});
    for (Weight w : {l.attn.q_norm, l.attn.k_norm, l.attn_post_norm, l.ffn_post_norm})
      tb.require_f32(w);
  }
  return tb.status();
}

}  // namespace chimera
