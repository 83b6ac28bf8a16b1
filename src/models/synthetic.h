// Random-weight models of any supported architecture and weight type, written as GGUF. Used by
// exactness tests (no fixtures needed), by `chimera bench` (a Granite-4.0-H-shaped model) and by
// loader error tests. Weights are seeded, so the same spec always gives the same file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "gguf/gguf_writer.h"

namespace chimera {

struct SyntheticSpec {
  // granitehybrid, mamba2, llama, granite, qwen35, qwen35moe, qwen3next, lfm2, lfm2moe, nemotron_h,
  // falcon-h1, gemma3
  std::string arch = "granitehybrid";
  uint32_t n_layer = 4;
  std::vector<uint32_t> attention_layers = {1};  // granitehybrid, lfm2*: the attention layers
  uint32_t n_embd = 64;
  uint32_t n_vocab = 256;
  uint32_t n_head = 4;
  uint32_t n_head_kv = 2;
  uint32_t head_dim = 0;  // 0: n_embd / n_head (the qwen archs allow any size)
  uint32_t n_ff = 128;
  uint32_t n_expert = 0;  // > 0: MoE FFN with a shared expert of width n_ff
  uint32_t n_expert_used = 0;
  // Mamba2: N, H (inner size 2 * n_embd), G. Qwen DeltaNet: head size S, value heads Hv, key
  // heads Hk (inner size Hv * S); every 4th layer is gated attention.
  uint32_t ssm_state = 16;
  uint32_t ssm_heads = 8;
  uint32_t ssm_groups = 1;
  uint32_t conv_kernel = 4;       // also LFM2's short-conv l_cache
  uint32_t sliding_window = 512;  // gemma3: window of the local layers (5 local : 1 global)
  bool rope = false;              // granitehybrid: NoPE unless set; llama/granite always use RoPE
  // nemotron_h: one character per layer, M (Mamba2), * (NoPE attention) or - (squared-ReLU FFN);
  // n_layer is its length. falcon-h1: every layer attention + Mamba2 in parallel, then SwiGLU.
  std::string layer_pattern = "M*-M";
  uint32_t ssm_inner = 0;  // nemotron_h / falcon-h1 Mamba2 inner size (0: 2 * n_embd)
  bool tied_embeddings = true;
  GgmlType weight_type = GgmlType::F32;  // 2-D weight matrices; norms and ssm vectors stay F32
  uint64_t seed = 1;
};

// Fills a writer with the model's metadata and tensors.
Status build_synthetic_model(const SyntheticSpec& spec, GgufWriter& out);
Status write_synthetic_model(const SyntheticSpec& spec, const std::string& path);

}  // namespace chimera
