// Helpers shared by the architecture loaders: keys under the "{arch}." prefix and tensor binding
// with shape and type checks. Errors name the file, the key or tensor, and the expectation.
#pragma once

#include <initializer_list>
#include <string>

#include "models/model.h"

namespace chimera {

constexpr int64_t kAnyDim = -1;

// Binds tensors by name; the first failure is kept in status() and later calls return nullptr.
class TensorBinder {
 public:
  explicit TensorBinder(const GgufFile& file) : file_(file) {}
  // Shape in ggml order (ne0 first); kAnyDim accepts any size; missing trailing dims must be 1.
  Weight require(const std::string& name, std::initializer_list<int64_t> shape);
  Weight optional(const std::string& name, std::initializer_list<int64_t> shape);
  // Kernels that read a tensor as a plain float array need it in F32 (spec 1.7).
  void require_f32(Weight w);
  const Status& status() const { return status_; }

 private:
  Weight bind(const std::string& name, std::initializer_list<int64_t> shape, bool required);
  const GgufFile& file_;
  Status status_;
};

// "{arch}.key" accessors.
class ArchKeys {
 public:
  ArchKeys(const GgufFile& file, std::string arch) : file_(file), arch_(std::move(arch)) {}
  std::string key(std::string_view k) const { return arch_ + "." + std::string(k); }
  template <typename T>
  Result<T> get(std::string_view k) const {
    return file_.get<T>(key(k));
  }
  template <typename T>
  Result<T> get_or(std::string_view k, T fallback) const {
    return file_.get_or<T>(key(k), fallback);
  }
  template <typename T>
  Result<std::vector<T>> array(std::string_view k) const {
    return file_.get_array<T>(key(k));
  }
  Result<std::vector<uint32_t>> per_layer(std::string_view k, uint32_t n_layer) const {
    return file_.get_per_layer(key(k), n_layer);
  }

 private:
  const GgufFile& file_;
  std::string arch_;
};

// block_count, embedding_length, context_length, rms eps, vocabulary size, token_embd,
// output_norm (LFM2 files name it token_embd_norm), output (tied when absent). With
// eps_key_fallback, a file without attention.layer_norm_rms_epsilon may give the (RMS) eps as
// attention.layer_norm_epsilon, as llama.cpp's converter writes nemotron_h (its loader reads
// either).
Status load_common(Model& m, const ArchKeys& keys, TensorBinder& tb, bool eps_key_fallback = false,
                   const char* output_norm_name = "output_norm.weight");
// Attention hyper-parameters (head count, head size, scale, RoPE) shared by llama/granite/hybrid.
Status load_attention_hparams(Model& m, const ArchKeys& keys, bool rope_default_on, RopeMode mode);
Status load_ssm_hparams(Model& m, const ArchKeys& keys);
Status load_granite_multipliers(Model& m, const ArchKeys& keys);

void bind_attention(Model& m, uint32_t il, TensorBinder& tb);

// Qwen3-Next / Qwen3.5 family (qwen3next.cpp, qwen35.cpp): gated DeltaNet sizes from the ssm.*
// keys and the layer kinds from full_attention_interval (every interval-th layer is attention).
Status load_delta_net_hparams(Model& m, const ArchKeys& keys);
// Gated attention: fused q+gate projection, per-head q/k RMSNorm (RoPE mode set by the caller).
void bind_gated_attention(Model& m, uint32_t il, TensorBinder& tb);
// DeltaNet mixer; `fused_ba` selects qwen3next's ssm_ba over qwen35's ssm_beta + ssm_alpha.
void bind_delta_net(Model& m, uint32_t il, TensorBinder& tb, bool fused_ba);
// Qwen FFN after post_attention_norm: dense, or MoE + sigmoid-gated shared expert.
void bind_qwen_ffn(Model& m, uint32_t il, TensorBinder& tb);
// Every layer of a gated-DeltaNet hybrid (qwen35, qwen35moe, qwen3next): its input norm, the
// DeltaNet or gated-attention mixer (head_count_kv checked per layer) and the Qwen FFN.
Status bind_qwen_layers(Model& m, const ArchKeys& keys, TensorBinder& tb, bool fused_ba);
void bind_mamba2(Model& m, uint32_t il, TensorBinder& tb, bool conv_bias_required);
// Dense SwiGLU FFN, or MoE (+ shared expert when present) when m.hp.n_expert > 0.
void bind_ffn(Model& m, uint32_t il, TensorBinder& tb);

std::string blk(uint32_t il, const char* name);  // "blk.<il>.<name>"

}  // namespace chimera
