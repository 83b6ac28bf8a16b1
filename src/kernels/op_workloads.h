// Benchmark workloads for the non-matmul kernels, shaped like Granite 4.0-H small's layers, so
// `chimera bench kernels` and the Google Benchmark binaries (bench/bench_ops.cpp) measure the
// same thing. Each workload owns its buffers and the argument structs that point into them.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"
#include "kernels/attention.h"
#include "kernels/delta_net.h"
#include "kernels/ssm.h"

namespace chimera {

// n uniform floats in [lo, hi) from a seeded generator: benchmark inputs.
std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f);

// Weight matrices of type t for matmul benchmarks: one matrix of valid blocks (random payload,
// finite fp16 scales around 0.01) in buf[0, matrix_bytes), copied over the rest of total_bytes.
// The content does not matter for speed, only that it is finite and varied.
void fill_random_weights(GgmlType t, uint8_t* buf, uint64_t matrix_bytes, uint64_t total_bytes);

// The Mamba2 scan over T tokens: 48 heads x 32, state 128, one group; random inputs, zero state.
struct ScanWorkload {
  std::vector<float> x, dt, bc, A, D, y, state;
  SsmScanArgs args;
};
std::unique_ptr<ScanWorkload> make_scan_workload(int n_tokens);

// The gated-DeltaNet recurrence over T tokens (delta_net, after the conv): 16 key and 16 value
// heads of 128 (a small Qwen3.5's linear-attention layer); random inputs, zero state.
struct DeltaNetWorkload {
  std::vector<float> qkv, ab, z, dt_bias, A, norm, out, state;
  DeltaNetArgs args;
};
std::unique_ptr<DeltaNetWorkload> make_delta_net_workload(int n_tokens);

// Attention shapes: Granite 4.0-H small's (32 query heads, 8 KV heads of 128, F16 KV in pages of
// 64), and the small draft model's of speculative decoding (4 query heads, 2 KV heads of 12, F16
// KV in pages of 32: models/draft.gguf).
AttentionParams granite_small_attention();
AttentionParams draft_model_attention();

// One sequence of n_ctx keys of the given shape and n_queries causal queries at its end.
struct AttentionWorkload {
  AttentionParams params;
  std::vector<std::vector<uint8_t>> pages;
  std::vector<const void*> k_pages, v_pages;
  KvPageTable table;
  std::vector<float> q, out;
  std::vector<int32_t> n_visible, seq;
  AttentionBatch batch;
  int64_t kv_bytes_per_query = 0;  // K and V bytes the last query reads
};
Result<std::unique_ptr<AttentionWorkload>> make_attention_workload(
    int n_ctx, int n_queries, const AttentionParams& shape = granite_small_attention());

}  // namespace chimera
