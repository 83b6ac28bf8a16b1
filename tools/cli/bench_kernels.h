// `chimera bench kernels [--json] [-t N]`: kernel throughput measured in one run, so ratios are
// meaningful on a noisy shared machine:
//   - streaming_read_gbps: a measured, vectorised streaming read of a buffer far larger than
//     cache, all threads (a reference point, not a bound: the GEMV kernels can beat it);
//   - per weight type, decode-shaped GEMV (1 x 4096 by 4096 x 4096) cycling through a weight set
//     larger than 512 MB (effective weight GB/s and its share of that read), and
//     prefill-shaped GEMM (512 x 4096 by 4096 x 1024) in GFLOP/s (2*M*N*K per call).
//   - the Mamba2 scan per token (decode T = 1 and prefill T = 512; 48 heads x 32 x state 128,
//     one group: the Granite 4.0-H small shape) and paged attention per token (decode at a
//     4096-token context with the KV bytes it reads per second, and a 512-token causal prefill;
//     32 query heads, 8 KV heads of 128, F16 KV in pages of 64).
// Each figure is also given per CPU second per thread ("cpu" keys): on a shared, oversubscribed
// machine wall time includes waiting for a core, CPU time does not.
// JSON: {"streaming_read_gbps": x, "streaming_read_cpu_gbps": x, "isa": ..., "threads": n,
//        "types": {"Q8_0": {"gemv_gbps": x, "gemv_pct_of_streaming_read": x, ...}, ...},
//        "ops": {"scan_decode_us_per_token": x, "scan_prefill_us_per_token": x,
//                "delta_net_decode_us_per_token": x, "delta_net_prefill_us_per_token": x,
//                "attention_decode_us_per_token": x, "attention_decode_kv_gbps": x,
//                "attention_prefill_us_per_token": x}}
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "gguf/types.h"
#include "kernels/cpu_features.h"

namespace chimera::cli {

struct KernelBenchOptions {
  int n_threads = 2;
  Isa isa = active_isa();
  std::vector<GgmlType> types;             // empty = every type matmul supports
  uint64_t weight_set_bytes = 576u << 20;  // GEMV weight set (> 512 MB: far beyond cache)
  int gemv_n_in = 4096, gemv_n_out = 4096;
  int gemm_m = 512, gemm_n_in = 4096, gemm_n_out = 1024;
  bool ops = true;  // also the scan and attention
  // Rounds: each measures the roofline and every type's GEMV set once (interleaved, so noise
  // hits all alike); the best of each is kept (noise only slows down).
  int repeats = 4;
};

struct TypeBenchResult {
  GgmlType type = GgmlType::F32;
  int64_t gemv_matrices = 0;  // matrices cycled through
  double gemv_set_mb = 0;     // their total size
  double gemv_gbps = 0;
  double gemv_roofline_pct = 0;
  double gemv_cpu_gbps = 0;  // per CPU second per thread (see bench_kernels.cpp)
  double gemv_cpu_roofline_pct = 0;
  double gemv_us_per_matrix = 0;
  double gemm_gflops = 0;
  double gemm_cpu_gflops = 0;
  double gemm_ms = 0;
};

struct OpsBenchResult {
  double scan_decode_us = 0, scan_prefill_us = 0;            // per token
  double delta_net_decode_us = 0, delta_net_prefill_us = 0;  // per token
  double attention_decode_us = 0, attention_decode_kv_gbps = 0, attention_prefill_us = 0;
  int attention_ctx = 4096, prefill_tokens = 512;
};

struct KernelBenchResult {
  std::string isa;
  int n_threads = 0;
  double roofline_gbps = 0;
  double roofline_cpu_gbps = 0;  // bytes per CPU second per thread
  std::vector<TypeBenchResult> types;
  OpsBenchResult ops;
};

Result<KernelBenchResult> run_kernel_bench(const KernelBenchOptions& options);

// The measured streaming read alone (wall-clock GB/s over a buffer far larger than cache, all
// threads), for other benchmarks to report their share of it.
Result<double> streaming_read_gbps(int n_threads, uint64_t bytes = 512ull << 20);

}  // namespace chimera::cli
