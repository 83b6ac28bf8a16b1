// Configuration of the hybrid memory: which model layers keep a KV cache, which keep a recurrent
// state, how big each is, and the byte budgets. Built by model code from its layer list; the
// memory routes every layer by kind, so model code never branches on "hybrid or not".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "gguf/types.h"

namespace chimera {

enum class LayerKind : uint8_t {
  kNone = 0,       // no per-sequence memory (e.g. a pure MLP block)
  kAttention = 1,  // K and V rows of kv_dim elements per token
  kRecurrent = 2,  // a fixed-size conv state + ssm state per sequence
};

struct MemoryLayer {
  LayerKind kind = LayerKind::kNone;
  uint32_t kv_dim = 0;       // attention: n_kv_head * head_dim (same for K and V)
  uint64_t conv_floats = 0;  // recurrent: conv-state floats
  uint64_t ssm_floats = 0;   // recurrent: ssm-state floats
};

struct MemoryConfig {
  std::vector<MemoryLayer> layers;   // one entry per model layer, in model order
  uint32_t n_vocab = 0;              // token ids must be < n_vocab
  uint32_t max_seqs = 64;            // sequence ids are 0 .. max_seqs-1
  uint32_t page_size = 32;           // tokens per KV page
  GgmlType kv_type = GgmlType::F16;  // F32, F16 or BF16
  // Hard cap on everything the memory holds: KV pages, state slots (live, scratch, snapshot-held).
  uint64_t budget_bytes = 1ull << 30;
  // Cap on bytes held only by snapshots; automatic snapshots are evicted (oldest first) past it.
  uint64_t snapshot_budget_bytes = 256ull << 20;
  // Snapshot policy (applies only to models with recurrent layers; attention alone rolls back
  // to any position for free).
  uint32_t snapshot_interval = 256;   // snapshot whenever a sequence reaches a multiple; 0 = off
  bool snapshot_prompt_end = true;    // at the end of each multi-token run of a batch (a prompt)
  bool snapshot_prompt_start = true;  // before each multi-token run (speculative verification)
  uint32_t max_ubatch_tokens = 512;   // ubatch planning limit
  // True when attention layers encode absolute positions (RoPE): shifting positions then needs a
  // replay to stay exact. False for NoPE attention.
  bool positions_matter = true;

  // Checks every field; the error names the offending layer/field.
  Status validate() const;
  // Identity of the layout (layer kinds and sizes, vocabulary, element type): state files store
  // it, and loading into a memory with another identity is refused.
  uint64_t layout_fingerprint() const;
  std::string describe() const;  // "3 layers: 2 attention (kv_dim 64), 1 recurrent (...)"
};

// A 64-bit checksum over bytes (8 bytes per step, multiply-xorshift mixing), continuing from `h`.
// Used for layout fingerprints, state-file checksums and test fingerprints; not cryptographic.
uint64_t checksum64(const void* data, size_t n, uint64_t h = 0x9e3779b97f4a7c15ull);

}  // namespace chimera
