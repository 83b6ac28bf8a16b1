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
  // attention: kv heads (divides kv_dim). Pages store each head's rows contiguously
  // (KvPageLayout); state files store token rows, so this never changes what a file holds.
  uint32_t kv_heads = 1;
  // attention: a sliding window (the layer's query at token index i reads keys (i - window, i]
  // only); 0 = global. Window layers keep their rows in a pool of their own, whose pages behind
  // every reader's window are released (MemoryConfig::window_reserve).
  uint32_t window = 0;
};

// Where the memory places automatic recurrent-state snapshots (models with recurrent layers
// only). The caller picks it for its use; explicit snapshot()/restore()/release() are independent
// of it. A snapshot at the end of the live state costs nothing until the sequence moves on, then
// one whole recurrent state (tens of MB on real models), so periodic ones only pay off when
// something may roll back into the middle of a long run.
struct SnapshotPolicy {
  uint32_t interval = 256;   // whenever a sequence reaches a multiple of it; 0 = off
  bool prompt_end = true;    // at the end of each multi-token run of a batch (a prompt, a turn)
  bool prompt_start = true;  // before each multi-token run (a turn boundary; speculative verify)
  // Conversations (chat, serving): turn boundaries plus every 256 tokens, so regenerating,
  // editing a turn or rolling back replays a bounded number of tokens.
  static SnapshotPolicy conversation() { return {}; }
  // One prompt, one generation, nothing rolled back (chimera run, bench): none. (Even a snapshot
  // at the prompt's end would cost a whole state once decoding moves on, and callers feeding a
  // long prompt in chunks would get one per chunk.)
  static SnapshotPolicy one_shot() { return {0, false, false}; }
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
  // Snapshot policy (SnapshotPolicy's fields; applies only to models with recurrent or
  // sliding-window layers: global attention alone rolls back to any position for free. For
  // window layers a snapshot holds the window rows ending at its point, no state).
  uint32_t snapshot_interval = 256;   // snapshot whenever a sequence reaches a multiple; 0 = off
  bool snapshot_prompt_end = true;    // at the end of each multi-token run of a batch (a prompt)
  bool snapshot_prompt_start = true;  // before each multi-token run (speculative verification)
  uint32_t max_ubatch_tokens = 512;   // ubatch planning limit
  // Sliding-window layers: rows this far behind the window are kept as well, so that rolling
  // back up to that many tokens (speculative rejections, a regenerated reply) needs no replay.
  // Pages wholly before n + 1 - window - window_reserve lose their window rows; a rollback past
  // them restores a snapshot (or the empty state) and replays. UINT32_MAX: nothing is released.
  uint32_t window_reserve = 32;
  void set_snapshot_policy(const SnapshotPolicy& p) {
    snapshot_interval = p.interval;
    snapshot_prompt_end = p.prompt_end;
    snapshot_prompt_start = p.prompt_start;
  }
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
