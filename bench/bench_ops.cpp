// Microbenchmarks of the non-matmul kernels. Arguments: {isa (0 scalar, 1 avx2, 2 avx512), threads,
// ...}.
// Reported as time per token (items = tokens). Shapes: attention like Granite 4.0-H small
// (32 query heads, 8 KV heads, head_dim 128, F16 KV, pages of 64); scan like its Mamba2 layers
// (d_in 1536 = 48 heads x 32, N 128, G 1).
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "core/threads.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/norm.h"
#include "kernels/op_workloads.h"
#include "kernels/ssm.h"

namespace chimera {
namespace {

bool setup_isa(benchmark::State& state, Isa* isa) {
  const int64_t i = state.range(0);
  *isa = i == 0 ? Isa::kScalar : i == 1 ? Isa::kAvx2 : Isa::kAvx512;
  if (!isa_supported(*isa)) {
    state.SkipWithError("ISA not supported here");
    return false;
  }
  state.SetLabel(isa_name(*isa));
  return true;
}

// One sequence of `ctx` keys in pages; n_queries causal queries at the end of it.
void run_attention(benchmark::State& state, int ctx, int n_queries,
                   const AttentionParams& shape = granite_small_attention()) {
  Isa isa;
  if (!setup_isa(state, &isa)) return;
  ThreadContext threads(static_cast<int>(state.range(1)));
  auto w = make_attention_workload(ctx, n_queries, shape);
  if (!w.ok()) std::abort();
  for (auto _ : state) {
    if (!attention_paged((*w)->params, (*w)->batch, &threads, isa).ok()) std::abort();
    benchmark::DoNotOptimize((*w)->out.data());
  }
  state.SetItemsProcessed(state.iterations() * n_queries);
}

void BM_AttentionDecode(benchmark::State& state) {
  run_attention(state, static_cast<int>(state.range(2)), 1);
}
BENCHMARK(BM_AttentionDecode)
    ->ArgNames({"isa", "threads", "ctx"})
    ->ArgsProduct({{0, 1, 2}, {1, 2}, {512, 4096}})
    ->Unit(benchmark::kMicrosecond);

// The draft model of speculative decoding (head_dim 12, one thread): its decode step (1 query),
// its catch-up batches (2 queries) and lookup-staged forwards (9) at the depths a long
// generation reaches.
void BM_AttentionDraftModel(benchmark::State& state) {
  run_attention(state, static_cast<int>(state.range(2)), static_cast<int>(state.range(3)),
                draft_model_attention());
}
BENCHMARK(BM_AttentionDraftModel)
    ->ArgNames({"isa", "threads", "ctx", "q"})
    ->ArgsProduct({{1, 2}, {1}, {500, 1000, 2000}, {1, 2, 9}})
    ->Unit(benchmark::kMicrosecond);

void BM_AttentionPrefill512(benchmark::State& state) {
  run_attention(state, 512, 512);
}
BENCHMARK(BM_AttentionPrefill512)
    ->ArgNames({"isa", "threads"})
    ->ArgsProduct({{1}, {1, 2}})
    ->Unit(benchmark::kMillisecond);

void BM_SsmScan(benchmark::State& state) {
  Isa isa;
  if (!setup_isa(state, &isa)) return;
  ThreadContext threads(static_cast<int>(state.range(1)));
  const int T = static_cast<int>(state.range(2));
  const std::unique_ptr<ScanWorkload> w = make_scan_workload(T);
  const SsmScanArgs& a = w->args;
  for (auto _ : state) {
    if (!ssm_scan(a, &threads, isa).ok()) std::abort();
    benchmark::DoNotOptimize(w->y.data());
  }
  state.SetItemsProcessed(state.iterations() * T);
}
BENCHMARK(BM_SsmScan)
    ->ArgNames({"isa", "threads", "T"})
    ->ArgsProduct({{0, 1}, {1, 2}, {1, 64}})
    ->Unit(benchmark::kMicrosecond);

void BM_SsmConv(benchmark::State& state) {
  Isa isa;
  if (!setup_isa(state, &isa)) return;
  ThreadContext threads(static_cast<int>(state.range(1)));
  const int T = static_cast<int>(state.range(2));
  const int C = 1536 + 2 * 128, K = 4;
  const std::vector<float> x = random_floats(static_cast<size_t>(T) * C, 8);
  const std::vector<float> w = random_floats(static_cast<size_t>(C) * K, 9);
  const std::vector<float> bias = random_floats(C, 10);
  std::vector<float> st(static_cast<size_t>(C) * (K - 1), 0.0f), out(x.size());
  const SsmConvArgs a{T, C, K, x.data(), C, w.data(), bias.data(), st.data(), out.data(), C};
  for (auto _ : state) {
    if (!ssm_conv(a, &threads, isa).ok()) std::abort();
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * T);
}
BENCHMARK(BM_SsmConv)
    ->ArgNames({"isa", "threads", "T"})
    ->ArgsProduct({{0, 1}, {1}, {1, 64}})
    ->Unit(benchmark::kMicrosecond);

void BM_RmsNorm4096(benchmark::State& state) {
  Isa isa;
  if (!setup_isa(state, &isa)) return;
  const int n = 4096;
  const std::vector<float> x = random_floats(n, 11), w = random_floats(n, 12);
  std::vector<float> y(n);
  for (auto _ : state) {
    rms_norm_row(x.data(), w.data(), y.data(), n, 1e-6f, isa);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RmsNorm4096)->ArgNames({"isa"})->Arg(0)->Arg(1);

void BM_SwiGlu8192(benchmark::State& state) {
  Isa isa;
  if (!setup_isa(state, &isa)) return;
  const int n = 8192;
  const std::vector<float> g = random_floats(n, 13, -8, 8), u = random_floats(n, 14);
  std::vector<float> y(n);
  for (auto _ : state) {
    swiglu(g.data(), u.data(), y.data(), n, isa);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SwiGlu8192)->ArgNames({"isa"})->Arg(0)->Arg(1);

}  // namespace
}  // namespace chimera
