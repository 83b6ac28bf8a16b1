#include "models/loader_util.h"

#include <cmath>

namespace chimera {

std::string blk(uint32_t il, const char* name) {
  return StrCat("blk.", il, ".", name);
}

namespace {

// Routed experts (router + stacked gate/up/down) and an optional shared expert; Qwen's shared
// expert also has a sigmoid gate row.
void bind_moe(LayerWeights& l, uint32_t il, int64_t D, int64_t E, TensorBinder& tb,
              bool sigmoid_gated_shared_expert) {
  l.ffn_kind = FfnKind::kMoe;
  l.ffn.router = tb.require(blk(il, "ffn_gate_inp.weight"), {D, E});
  l.ffn.gate_exps = tb.require(blk(il, "ffn_gate_exps.weight"), {D, kAnyDim, E});
  const int64_t F = l.ffn.gate_exps ? l.ffn.gate_exps->ne[1] : 0;
  l.ffn.up_exps = tb.require(blk(il, "ffn_up_exps.weight"), {D, F, E});
  l.ffn.down_exps = tb.require(blk(il, "ffn_down_exps.weight"), {F, D, E});
  l.ffn.gate = tb.optional(blk(il, "ffn_gate_shexp.weight"), {D, kAnyDim});
  if (l.ffn.gate) {
    const int64_t Fs = l.ffn.gate->ne[1];
    l.ffn.up = tb.require(blk(il, "ffn_up_shexp.weight"), {D, Fs});
    l.ffn.down = tb.require(blk(il, "ffn_down_shexp.weight"), {Fs, D});
    if (sigmoid_gated_shared_expert)
      l.ffn.shexp_gate = tb.require(blk(il, "ffn_gate_inp_shexp.weight"), {D});
  }
  tb.require_f32(l.ffn.router);
}

}  // namespace

Weight TensorBinder::bind(const std::string& name, std::initializer_list<int64_t> shape,
                          bool required) {
  if (!status_.ok()) return nullptr;
  const GgufTensorInfo* t = file_.find_tensor(name);
  if (!t) {
    if (required)
      status_ = Error(ErrorCode::kNotFound, file_.path(), ": missing tensor '", name, "'");
    return nullptr;
  }
  int64_t want[4] = {1, 1, 1, 1};
  size_t i = 0;
  for (int64_t d : shape) want[i++] = d;
  bool match = true;
  for (int d = 0; d < 4; ++d)
    if (want[d] != kAnyDim && want[d] != t->ne[d]) match = false;
  if (!match) {
    std::string expect = "{";
    for (size_t d = 0; d < shape.size(); ++d) {
      expect += d ? ", " : "";
      expect += want[d] == kAnyDim ? std::string("*") : std::to_string(want[d]);
    }
    expect += "}";
    status_ = Error(ErrorCode::kFormat, file_.path(), ": tensor '", name, "' has shape ",
                    t->shape_string(), ", expected ", expect);
    return nullptr;
  }
  if (!type_traits(t->type).supported) {
    status_ = Error(ErrorCode::kUnsupported, file_.path(), ": tensor '", name, "' has type ",
                    type_name(t->type), "; supported types: ", supported_type_names());
    return nullptr;
  }
  return t;
}

Weight TensorBinder::require(const std::string& name, std::initializer_list<int64_t> shape) {
  return bind(name, shape, true);
}
Weight TensorBinder::optional(const std::string& name, std::initializer_list<int64_t> shape) {
  return bind(name, shape, false);
}

void TensorBinder::require_f32(Weight w) {
  if (w && w->type != GgmlType::F32 && status_.ok())
    status_ = Error(ErrorCode::kUnsupported, file_.path(), ": tensor '", w->name,
                    "' must be F32, found ", type_name(w->type));
}

float ModelHParams::kq_scale() const {
  return attention_scale != 0 ? attention_scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

Status load_common(Model& m, const ArchKeys& keys, TensorBinder& tb, bool eps_key_fallback,
                   const char* output_norm_name) {
  ModelHParams& hp = m.hp;
  CHIMERA_ASSIGN_OR_RETURN(hp.n_layer, keys.get<uint32_t>("block_count"));
  CHIMERA_ASSIGN_OR_RETURN(hp.n_embd, keys.get<uint32_t>("embedding_length"));
  CHIMERA_ASSIGN_OR_RETURN(hp.n_ctx_train, keys.get_or<uint32_t>("context_length", 4096));
  if (eps_key_fallback && !m.file->find(keys.key("attention.layer_norm_rms_epsilon"))) {
    CHIMERA_ASSIGN_OR_RETURN(hp.rms_eps, keys.get<float>("attention.layer_norm_epsilon"));
  } else {
    CHIMERA_ASSIGN_OR_RETURN(hp.rms_eps, keys.get<float>("attention.layer_norm_rms_epsilon"));
  }
  if (hp.n_layer == 0 || hp.n_layer > 4096)
    return Error(ErrorCode::kFormat, m.file->path(), ": block_count ", hp.n_layer, " out of range");
  if (hp.n_embd == 0 || hp.n_embd > (1u << 20))
    return Error(ErrorCode::kFormat, m.file->path(), ": embedding_length ", hp.n_embd,
                 " out of range");
  const GgufTensorInfo* embd = m.file->find_tensor("token_embd.weight");
  if (!embd)
    return Error(ErrorCode::kNotFound, m.file->path(), ": missing tensor 'token_embd.weight'");
  hp.n_vocab = static_cast<uint32_t>(embd->ne[1]);
  m.token_embd = tb.require("token_embd.weight", {hp.n_embd, hp.n_vocab});
  m.output_norm = tb.require(output_norm_name, {hp.n_embd});
  m.output = tb.optional("output.weight", {hp.n_embd, hp.n_vocab});
  if (!m.output) m.output = m.token_embd;  // tied embeddings
  m.layers.assign(hp.n_layer, LayerWeights{});
  return tb.status();
}

Status load_attention_hparams(Model& m, const ArchKeys& keys, bool rope_default_on, RopeMode mode) {
  ModelHParams& hp = m.hp;
  CHIMERA_ASSIGN_OR_RETURN(hp.n_head, keys.get<uint32_t>("attention.head_count"));
  if (hp.n_head == 0 || hp.n_embd % hp.n_head != 0)
    return Error(ErrorCode::kFormat, m.file->path(), ": attention.head_count ", hp.n_head,
                 " does not divide embedding_length ", hp.n_embd);
  CHIMERA_ASSIGN_OR_RETURN(hp.head_dim,
                           keys.get_or<uint32_t>("attention.key_length", hp.n_embd / hp.n_head));
  CHIMERA_ASSIGN_OR_RETURN(hp.attention_scale, keys.get_or<float>("attention.scale", 0.0f));
  CHIMERA_ASSIGN_OR_RETURN(bool rope_on,
                           keys.get_or<bool>("rope.scaling.finetuned", rope_default_on));
  hp.use_rope = rope_on;
  hp.rope_mode = mode;
  CHIMERA_ASSIGN_OR_RETURN(hp.n_rot, keys.get_or<uint32_t>("rope.dimension_count", hp.head_dim));
  CHIMERA_ASSIGN_OR_RETURN(hp.rope_freq_base, keys.get_or<float>("rope.freq_base", 10000.0f));
  CHIMERA_ASSIGN_OR_RETURN(float factor, keys.get_or<float>("rope.scaling.factor", 0.0f));
  hp.rope_freq_scale = factor > 0 ? 1.0f / factor : 1.0f;
  if (hp.use_rope && (hp.n_rot == 0 || hp.n_rot > hp.head_dim || hp.n_rot % 2))
    return Error(ErrorCode::kFormat, m.file->path(), ": rope.dimension_count ", hp.n_rot,
                 " invalid for head size ", hp.head_dim);
  return Status::Ok();
}

Status load_ssm_hparams(Model& m, const ArchKeys& keys) {
  ModelHParams& hp = m.hp;
  CHIMERA_ASSIGN_OR_RETURN(hp.ssm_conv_kernel, keys.get<uint32_t>("ssm.conv_kernel"));
  CHIMERA_ASSIGN_OR_RETURN(hp.ssm_inner, keys.get<uint32_t>("ssm.inner_size"));
  CHIMERA_ASSIGN_OR_RETURN(hp.ssm_state, keys.get<uint32_t>("ssm.state_size"));
  CHIMERA_ASSIGN_OR_RETURN(hp.ssm_heads, keys.get<uint32_t>("ssm.time_step_rank"));
  CHIMERA_ASSIGN_OR_RETURN(hp.ssm_groups, keys.get_or<uint32_t>("ssm.group_count", 1));
  if (hp.ssm_conv_kernel < 1 || hp.ssm_conv_kernel > 64 || hp.ssm_heads == 0 ||
      hp.ssm_groups == 0 || hp.ssm_state == 0 || hp.ssm_inner % hp.ssm_heads ||
      hp.ssm_inner % hp.ssm_groups || hp.ssm_heads % hp.ssm_groups)
    return Error(ErrorCode::kFormat, m.file->path(), ": inconsistent ssm sizes (conv_kernel ",
                 hp.ssm_conv_kernel, ", inner_size ", hp.ssm_inner, ", state_size ", hp.ssm_state,
                 ", time_step_rank ", hp.ssm_heads, ", group_count ", hp.ssm_groups, ")");
  return Status::Ok();
}

Status load_granite_multipliers(Model& m, const ArchKeys& keys) {
  ModelHParams& hp = m.hp;
  CHIMERA_ASSIGN_OR_RETURN(hp.embedding_scale, keys.get_or<float>("embedding_scale", 0.0f));
  CHIMERA_ASSIGN_OR_RETURN(hp.residual_scale, keys.get_or<float>("residual_scale", 0.0f));
  CHIMERA_ASSIGN_OR_RETURN(hp.logit_scale, keys.get_or<float>("logit_scale", 0.0f));
  return Status::Ok();
}

void bind_attention(Model& m, uint32_t il, TensorBinder& tb) {
  const ModelHParams& hp = m.hp;
  LayerWeights& l = m.layers[il];
  const int64_t D = hp.n_embd, q = int64_t(hp.n_head) * hp.head_dim,
                kv = int64_t(l.n_head_kv) * hp.head_dim;
  l.kind = MixerKind::kAttention;
  l.attn.wq = tb.require(blk(il, "attn_q.weight"), {D, q});
  l.attn.wk = tb.require(blk(il, "attn_k.weight"), {D, kv});
  l.attn.wv = tb.require(blk(il, "attn_v.weight"), {D, kv});
  l.attn.wo = tb.require(blk(il, "attn_output.weight"), {q, D});
  l.attn.bq = tb.optional(blk(il, "attn_q.bias"), {q});
  l.attn.bk = tb.optional(blk(il, "attn_k.bias"), {kv});
  l.attn.bv = tb.optional(blk(il, "attn_v.bias"), {kv});
  l.attn.bo = tb.optional(blk(il, "attn_output.bias"), {D});
}

void bind_mamba2(Model& m, uint32_t il, TensorBinder& tb, bool conv_bias_required) {
  const ModelHParams& hp = m.hp;
  LayerWeights& l = m.layers[il];
  const int64_t D = hp.n_embd, d_in = hp.ssm_inner, H = hp.ssm_heads, G = hp.ssm_groups;
  const int64_t C = hp.ssm_conv_channels(), d_proj = 2 * d_in + 2 * G * hp.ssm_state + H;
  l.kind = MixerKind::kMamba2;
  l.ssm.in = tb.require(blk(il, "ssm_in.weight"), {D, d_proj});
  l.ssm.conv = tb.require(blk(il, "ssm_conv1d.weight"), {hp.ssm_conv_kernel, C});
  l.ssm.conv_bias = conv_bias_required ? tb.require(blk(il, "ssm_conv1d.bias"), {C})
                                       : tb.optional(blk(il, "ssm_conv1d.bias"), {C});
  l.ssm.dt_bias = tb.require(blk(il, "ssm_dt.bias"), {H});
  l.ssm.a = tb.require(blk(il, "ssm_a"), {1, H});
  l.ssm.d = tb.require(blk(il, "ssm_d"), {1, H});
  l.ssm.norm = tb.optional(blk(il, "ssm_norm.weight"), {d_in / G, G});
  l.ssm.out = tb.require(blk(il, "ssm_out.weight"), {d_in, D});
  for (Weight w : {l.ssm.conv, l.ssm.conv_bias, l.ssm.dt_bias, l.ssm.a, l.ssm.d, l.ssm.norm})
    tb.require_f32(w);
}

void bind_ffn(Model& m, uint32_t il, TensorBinder& tb) {
  const ModelHParams& hp = m.hp;
  LayerWeights& l = m.layers[il];
  const int64_t D = hp.n_embd;
  l.ffn_norm = tb.require(blk(il, "ffn_norm.weight"), {D});
  if (hp.n_expert == 0) {
    l.ffn_kind = FfnKind::kDense;
    l.ffn.gate = tb.require(blk(il, "ffn_gate.weight"), {D, kAnyDim});
    const int64_t F = l.ffn.gate ? l.ffn.gate->ne[1] : 0;
    l.ffn.up = tb.require(blk(il, "ffn_up.weight"), {D, F});
    l.ffn.down = tb.require(blk(il, "ffn_down.weight"), {F, D});
    l.ffn.gate_b = tb.optional(blk(il, "ffn_gate.bias"), {F});
    l.ffn.up_b = tb.optional(blk(il, "ffn_up.bias"), {F});
    l.ffn.down_b = tb.optional(blk(il, "ffn_down.bias"), {D});
    return;
  }
  bind_moe(l, il, D, hp.n_expert, tb, /*sigmoid_gated_shared_expert=*/false);
}

Status load_delta_net_hparams(Model& m, const ArchKeys& keys) {
  ModelHParams& hp = m.hp;
  CHIMERA_RETURN_IF_ERROR(load_ssm_hparams(m, keys));
  if (hp.ssm_heads % hp.ssm_groups || hp.ssm_inner != hp.ssm_heads * hp.ssm_state)
    return Error(ErrorCode::kFormat, m.file->path(),
                 ": DeltaNet sizes inconsistent: ", "time_step_rank (value heads) ", hp.ssm_heads,
                 " must be a multiple of ", "group_count (key heads) ", hp.ssm_groups,
                 " and inner_size ", hp.ssm_inner, " must equal value heads x state_size ",
                 hp.ssm_state);
  // Multi-token-prediction (nextn) blocks, which llama.cpp's converter appends after the model's
  // own layers (block_count includes them): the model is the first block_count - nextn blocks;
  // the MTP blocks' tensors (blk.N.nextn.* and their attention/FFN) are left unused, as chimera
  // does not draft with them.
  const uint32_t n_block = hp.n_layer;
  CHIMERA_ASSIGN_OR_RETURN(uint32_t nextn, keys.get_or<uint32_t>("nextn_predict_layers", 0));
  if (nextn >= n_block)
    return Error(ErrorCode::kFormat, m.file->path(), ": nextn_predict_layers ", nextn,
                 " leaves no layer of block_count ", n_block);
  hp.n_layer = n_block - nextn;
  m.layers.resize(hp.n_layer);
  CHIMERA_ASSIGN_OR_RETURN(uint32_t interval, keys.get_or<uint32_t>("full_attention_interval", 4));
  if (interval == 0)
    return Error(ErrorCode::kFormat, m.file->path(), ": full_attention_interval is 0");
  for (uint32_t il = 0; il < hp.n_layer; ++il)
    m.layers[il].kind = (il + 1) % interval ? MixerKind::kDeltaNet : MixerKind::kAttention;
  // llama.cpp's converter also lists the kinds (recurrent_layers, MTP blocks included) when the
  // checkpoint does; it wins over the interval, as in llama.cpp's loader
  if (m.file->find(keys.key("attention.recurrent_layers"))) {
    CHIMERA_ASSIGN_OR_RETURN(auto recurrent, keys.array<bool>("attention.recurrent_layers"));
    if (recurrent.size() != n_block)
      return Error(ErrorCode::kFormat, m.file->path(), ": attention.recurrent_layers has ",
                   recurrent.size(), " entries, block_count is ", n_block);
    for (uint32_t il = 0; il < hp.n_layer; ++il)
      m.layers[il].kind = recurrent[il] ? MixerKind::kDeltaNet : MixerKind::kAttention;
  }
  return Status::Ok();
}

void bind_gated_attention(Model& m, uint32_t il, TensorBinder& tb) {
  const ModelHParams& hp = m.hp;
  LayerWeights& l = m.layers[il];
  const int64_t D = hp.n_embd, hd = hp.head_dim, q = int64_t(hp.n_head) * hd,
                kv = int64_t(l.n_head_kv) * hd;
  l.kind = MixerKind::kAttention;
  l.attn.output_gate = true;
  l.attn.wq = tb.require(blk(il, "attn_q.weight"), {D, 2 * q});
  l.attn.wk = tb.require(blk(il, "attn_k.weight"), {D, kv});
  l.attn.wv = tb.require(blk(il, "attn_v.weight"), {D, kv});
  l.attn.wo = tb.require(blk(il, "attn_output.weight"), {q, D});
  l.attn.q_norm = tb.require(blk(il, "attn_q_norm.weight"), {hd});
  l.attn.k_norm = tb.require(blk(il, "attn_k_norm.weight"), {hd});
  tb.require_f32(l.attn.q_norm);
  tb.require_f32(l.attn.k_norm);
}

void bind_delta_net(Model& m, uint32_t il, TensorBinder& tb, bool fused_ba) {
  const ModelHParams& hp = m.hp;
  LayerWeights& l = m.layers[il];
  DeltaNetWeights& w = l.delta;
  const int64_t D = hp.n_embd, d_in = hp.ssm_inner, Hv = hp.ssm_heads;
  const int64_t C = hp.ssm_conv_channels();
  l.kind = MixerKind::kDeltaNet;
  w.qkv = tb.require(blk(il, "attn_qkv.weight"), {D, C});
  w.gate = tb.require(blk(il, "attn_gate.weight"), {D, d_in});
  if (fused_ba) {
    w.ba = tb.require(blk(il, "ssm_ba.weight"), {D, 2 * Hv});
  } else {
    w.beta = tb.require(blk(il, "ssm_beta.weight"), {D, Hv});
    w.alpha = tb.require(blk(il, "ssm_alpha.weight"), {D, Hv});
  }
  w.conv = tb.require(blk(il, "ssm_conv1d.weight"), {hp.ssm_conv_kernel, C});
  w.dt_bias = tb.require(blk(il, "ssm_dt.bias"), {Hv});
  w.a = tb.require(blk(il, "ssm_a"), {Hv});
  w.norm = tb.require(blk(il, "ssm_norm.weight"), {hp.ssm_state});
  w.out = tb.require(blk(il, "ssm_out.weight"), {d_in, D});
  for (Weight x : {w.conv, w.dt_bias, w.a, w.norm}) tb.require_f32(x);
}

Status bind_qwen_layers(Model& m, const ArchKeys& keys, TensorBinder& tb, bool fused_ba) {
  const ModelHParams& hp = m.hp;
  CHIMERA_ASSIGN_OR_RETURN(auto n_head_kv, keys.per_layer("attention.head_count_kv", hp.n_layer));
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    LayerWeights& l = m.layers[il];
    l.attn_norm = tb.require(blk(il, "attn_norm.weight"), {hp.n_embd});
    if (l.kind == MixerKind::kDeltaNet) {
      bind_delta_net(m, il, tb, fused_ba);
    } else {
      l.n_head_kv = n_head_kv[il];
      if (l.n_head_kv == 0 || hp.n_head % l.n_head_kv)
        return Error(ErrorCode::kFormat, m.file->path(), ": layer ", il, " head_count_kv ",
                     l.n_head_kv, " does not divide head_count ", hp.n_head);
      bind_gated_attention(m, il, tb);
    }
    bind_qwen_ffn(m, il, tb);
  }
  return Status::Ok();
}

void bind_qwen_ffn(Model& m, uint32_t il, TensorBinder& tb) {
  const ModelHParams& hp = m.hp;
  LayerWeights& l = m.layers[il];
  const int64_t D = hp.n_embd;
  l.ffn_norm = tb.require(blk(il, "post_attention_norm.weight"), {D});
  if (hp.n_expert == 0) {
    l.ffn_kind = FfnKind::kDense;
    l.ffn.gate = tb.require(blk(il, "ffn_gate.weight"), {D, kAnyDim});
    const int64_t F = l.ffn.gate ? l.ffn.gate->ne[1] : 0;
    l.ffn.up = tb.require(blk(il, "ffn_up.weight"), {D, F});
    l.ffn.down = tb.require(blk(il, "ffn_down.weight"), {F, D});
    return;
  }
  bind_moe(l, il, D, hp.n_expert, tb, /*sigmoid_gated_shared_expert=*/true);
}

}  // namespace chimera
