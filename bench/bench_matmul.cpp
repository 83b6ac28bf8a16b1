// Matmul microbenchmarks. Arguments: weight type id, threads. Run a subset with
// --benchmark_filter, e.g. `bench_matmul --benchmark_filter='Gemv/8/'` for Q8_0.
//   Roofline       a measured streaming read of 512 MiB (GB/s; a reference, not a bound)
//   GemvCached     1 x 4096 by 4096 x 256: weights in cache, the kernel's compute speed (GB/s)
//   GemvLarge      1 x 4096 by 4096 x 4096, cycling through 576 MiB of matrices (GB/s)
//   Gemm           512 x 4096 by 4096 x 1024 (FLOP/s counter)
//   SmallBatch     m x 768 by 768 x 2048 for m = 1..16 (speculative verification, small decode
//                  batches), cycling through 576 MiB of matrices as a model's weights do; args:
//                  type, m, threads. Compare a row count's time with m = 1's.
//   ActQuant       activation quantization of 512 rows of 4096 (Q8 and Q8_K)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "core/threads.h"
#include "kernels/act_quant.h"
#include "kernels/matmul.h"
#include "kernels/op_workloads.h"

namespace chimera {
namespace {

constexpr uint64_t kLargeSet = 576ull << 20;

struct Aligned {
  explicit Aligned(uint64_t bytes)
      : p(static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64))), n(bytes) {
    std::memset(p, 0, (bytes + 63) / 64 * 64);
  }
  ~Aligned() { std::free(p); }
  uint8_t* p;
  uint64_t n;
};

std::vector<float> activations(int64_t n) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = uni(rng);
  return x;
}

void BM_Roofline(benchmark::State& state) {
  static Aligned buf(512ull << 20);
  ThreadContext ctx(static_cast<int>(state.range(0)));
  const uint64_t per = buf.n / ctx.n_threads() / 64 * 64;
  std::vector<uint64_t> sink(ctx.n_threads());
  for (auto _ : state) {
    ctx.run([&](int ith, int) {
      sink[ith] += memory_read_probe(buf.p + ith * per, per, active_isa());
    });
  }
  benchmark::DoNotOptimize(sink.data());
  state.SetBytesProcessed(state.iterations() * per * ctx.n_threads());
}

void gemv_bench(benchmark::State& state, int64_t n_out, uint64_t set_bytes) {
  const GgmlType t = static_cast<GgmlType>(state.range(0));
  ThreadContext ctx(static_cast<int>(state.range(1)));
  const WeightMatrix proto{t, nullptr, 4096, n_out};
  const uint64_t mb = proto.matrix_bytes();
  const int64_t n_mat = std::max<int64_t>(1, set_bytes / mb);
  Aligned buf(n_mat * mb);
  fill_random_weights(t, buf.p, mb, n_mat * mb);
  const auto x = activations(4096);
  std::vector<float> y(n_out);
  MatmulWorkspace ws;
  int64_t i = 0;
  for (auto _ : state) {
    WeightMatrix w = proto;
    w.data = buf.p + (i++ % n_mat) * mb;
    if (!gemv(ctx, w, x.data(), y.data(), ws).ok()) state.SkipWithError("gemv failed");
  }
  state.SetBytesProcessed(state.iterations() * mb);
}

void BM_GemvCached(benchmark::State& state) {
  gemv_bench(state, 256, 0);
}
void BM_GemvLarge(benchmark::State& state) {
  gemv_bench(state, 4096, kLargeSet);
}

void BM_Gemm(benchmark::State& state) {
  const GgmlType t = static_cast<GgmlType>(state.range(0));
  ThreadContext ctx(static_cast<int>(state.range(1)));
  const int64_t m = 512, k = 4096, n = 1024;
  const WeightMatrix proto{t, nullptr, k, n};
  Aligned buf(proto.matrix_bytes());
  fill_random_weights(t, buf.p, buf.n, buf.n);
  WeightMatrix w = proto;
  w.data = buf.p;
  const auto x = activations(m * k);
  std::vector<float> y(m * n);
  MatmulWorkspace ws;
  for (auto _ : state) {
    if (!matmul(ctx, w, x.data(), m, y.data(), ws).ok()) state.SkipWithError("matmul failed");
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_SmallBatch(benchmark::State& state) {
  const GgmlType t = static_cast<GgmlType>(state.range(0));
  const int64_t m = state.range(1), n_in = 768, n_out = 2048;
  ThreadContext ctx(static_cast<int>(state.range(2)));
  const WeightMatrix proto{t, nullptr, n_in, n_out};
  const uint64_t mb = proto.matrix_bytes();
  const int64_t n_mat = std::max<int64_t>(1, kLargeSet / mb);
  static Aligned* buf = nullptr;  // one weight set per type, shared by the row counts
  static GgmlType buf_type = GgmlType::F32;
  if (buf == nullptr || buf_type != t) {
    delete buf;
    buf = new Aligned(n_mat * mb);
    buf_type = t;
    fill_random_weights(t, buf->p, mb, n_mat * mb);
  }
  const auto x = activations(m * n_in);
  std::vector<float> y(m * n_out);
  MatmulWorkspace ws;
  int64_t i = 0;
  for (auto _ : state) {
    WeightMatrix w = proto;
    w.data = buf->p + (i++ % n_mat) * mb;
    if (!matmul(ctx, w, x.data(), m, y.data(), ws).ok()) state.SkipWithError("matmul failed");
  }
  state.SetBytesProcessed(state.iterations() * mb);
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * m * n_in * n_out * state.iterations(), benchmark::Counter::kIsRate);
}

void small_batch_args(benchmark::internal::Benchmark* b) {
  for (GgmlType t : {GgmlType::F16, GgmlType::BF16, GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_0,
                     GgmlType::Q4_K, GgmlType::Q6_K})
    for (int threads : {1, 2})
      for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 24})
        b->Args({static_cast<int64_t>(t), m, threads});
}

void BM_ActQuant(benchmark::State& state) {
  const bool k_quant = state.range(0) != 0;
  const int64_t rows = 512, n = 4096;
  const auto x = activations(rows * n);
  std::vector<ActBlockQ8> q8(n / 32);
  std::vector<BlockQ8_K> q8k(n / kQK_K);
  for (auto _ : state) {
    for (int64_t r = 0; r < rows; ++r) {
      if (k_quant) {
        quantize_act_q8k(x.data() + r * n, n, q8k.data());
      } else {
        quantize_act_q8(x.data() + r * n, n, q8.data());
      }
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * rows * n);
}

void type_thread_args(benchmark::internal::Benchmark* b) {
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,
                     GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    for (int threads : {1, 2}) b->Args({static_cast<int64_t>(t), threads});
  }
}

BENCHMARK(BM_Roofline)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GemvCached)->Apply(type_thread_args)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_GemvLarge)->Apply(type_thread_args)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Gemm)->Apply(type_thread_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SmallBatch)->Apply(small_batch_args)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ActQuant)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace chimera
