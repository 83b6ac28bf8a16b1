#include "bench_kernels.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <utility>

#include "cmd_bench.h"
#include "core/threads.h"
#include "kernels/matmul.h"
#include "kernels/op_workloads.h"

namespace chimera::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU seconds used by the whole process (all threads, spinning included).
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// One timed pass: wall seconds, and CPU seconds per thread. On a shared, oversubscribed machine
// the wall time includes time our threads waited for a core; bytes / (CPU seconds per thread)
// estimates the speed the threads reach while they run.
struct Timing {
  double wall = 1e30;
  double cpu_per_thread = 1e30;
};

template <class F>
Timing time_best(int repeats, int n_threads, F&& body) {
  Timing best;
  for (int rep = 0; rep <= repeats; ++rep) {  // rep 0 warms up
    const double c0 = process_cpu_seconds();
    const auto t0 = Clock::now();
    body();
    const double wall = seconds_since(t0);
    const double cpu = (process_cpu_seconds() - c0) / n_threads;
    if (rep == 0) continue;
    best.wall = std::min(best.wall, wall);
    best.cpu_per_thread = std::min(best.cpu_per_thread, cpu);
  }
  return best;
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

Result<Buffer> allocate(uint64_t bytes) {
  const uint64_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    return Error(ErrorCode::kOutOfMemory, "bench kernels: cannot allocate ", rounded >> 20, " MiB");
  }
  std::memset(p, 0, rounded);  // fault every page in before timing
  return Buffer(static_cast<uint8_t*>(p));
}

// Returns {wall GB/s, CPU-time GB/s}.
std::pair<double, double> measure_roofline(ThreadContext& ctx, const uint8_t* buf, uint64_t bytes,
                                           Isa isa, int repeats) {
  const int nth = ctx.n_threads();
  const uint64_t per_thread = bytes / nth / 64 * 64;
  std::vector<uint64_t> sink(nth);
  const Timing t = time_best(repeats, nth, [&] {
    ctx.run([&](int ith, int) {
      sink[ith] += memory_read_probe(buf + ith * per_thread, per_thread, isa);
    });
  });
  volatile uint64_t keep = sink[0];
  (void)keep;
  const double total = static_cast<double>(per_thread) * nth;
  return {total / t.wall / 1e9, total / t.cpu_per_thread / 1e9};
}

// One type's GEMV over the weight set: n_mat matrices of the type, cycled through once per pass.
struct GemvSet {
  GgmlType type;
  WeightMatrix proto;
  uint64_t matrix_bytes;
  int64_t n_mat;
  std::vector<uint8_t> prototype;  // one matrix of valid blocks, copied over the set per round
};

GemvSet make_gemv_set(const KernelBenchOptions& o, GgmlType t) {
  GemvSet g{t, WeightMatrix{t, nullptr, o.gemv_n_in, o.gemv_n_out}, 0, 0, {}};
  g.matrix_bytes = g.proto.matrix_bytes();
  g.n_mat = std::max<int64_t>(1, static_cast<int64_t>(o.weight_set_bytes / g.matrix_bytes));
  g.prototype.resize(g.matrix_bytes);
  fill_random_weights(t, g.prototype.data(), g.matrix_bytes, g.matrix_bytes);
  return g;
}

void load_set(const GemvSet& g, uint8_t* buf) {
  for (int64_t i = 0; i < g.n_mat; ++i)
    std::memcpy(buf + i * g.matrix_bytes, g.prototype.data(), g.matrix_bytes);
}

Result<Timing> time_gemv(ThreadContext& ctx, const GemvSet& g, const uint8_t* buf, const float* x,
                         float* y, MatmulWorkspace& ws) {
  Status st = Status::Ok();
  const Timing t = time_best(1, ctx.n_threads(), [&] {
    for (int64_t i = 0; i < g.n_mat && st.ok(); ++i) {
      WeightMatrix w = g.proto;
      w.data = buf + i * g.matrix_bytes;
      st = gemv(ctx, w, x, y, ws);
    }
  });
  CHIMERA_RETURN_IF_ERROR(st);
  return t;
}

// The prefill-shaped GEMM of one type; its weights are the start of the loaded set.
Status time_gemm(ThreadContext& ctx, const KernelBenchOptions& o, GgmlType t, const uint8_t* buf,
                 const float* x, float* y, MatmulWorkspace& ws, TypeBenchResult* out) {
  Status st = Status::Ok();
  const WeightMatrix wg{t, buf, o.gemm_n_in, o.gemm_n_out};
  const Timing tg = time_best(std::max(1, o.repeats / 2), ctx.n_threads(), [&] {
    if (st.ok()) st = matmul(ctx, wg, x, o.gemm_m, y, ws);
  });
  CHIMERA_RETURN_IF_ERROR(st);
  const double flops = 2.0 * o.gemm_m * o.gemm_n_in * o.gemm_n_out;
  out->gemm_ms = tg.wall * 1e3;
  out->gemm_gflops = flops / tg.wall / 1e9;
  out->gemm_cpu_gflops = flops / tg.cpu_per_thread / 1e9;
  return Status::Ok();
}

// Seconds per call of the Mamba2 scan over T tokens (Granite 4.0-H small's layer shape).
Result<double> time_scan(ThreadContext& ctx, Isa isa, int T, int repeats) {
  const std::unique_ptr<ScanWorkload> w = make_scan_workload(T);
  Status st_run = Status::Ok();
  const int calls = T == 1 ? 200 : 2;
  const Timing t = time_best(repeats, ctx.n_threads(), [&] {
    for (int i = 0; i < calls && st_run.ok(); ++i) st_run = ssm_scan(w->args, &ctx, isa);
  });
  CHIMERA_RETURN_IF_ERROR(st_run);
  return t.wall / calls;
}

// Seconds per call of the gated-DeltaNet recurrence over T tokens (16 k / 16 v heads x 128).
Result<double> time_delta_net(ThreadContext& ctx, Isa isa, int T, int repeats) {
  const std::unique_ptr<DeltaNetWorkload> w = make_delta_net_workload(T);
  Status st_run = Status::Ok();
  const int calls = T == 1 ? 200 : 2;
  const Timing t = time_best(repeats, ctx.n_threads(), [&] {
    for (int i = 0; i < calls && st_run.ok(); ++i) st_run = delta_net(w->args, &ctx, isa);
  });
  CHIMERA_RETURN_IF_ERROR(st_run);
  return t.wall / calls;
}

// Seconds per call of paged attention: n_queries causal queries at the end of n_ctx keys.
Result<double> time_attention(ThreadContext& ctx, Isa isa, int n_ctx, int n_queries, int repeats,
                              int64_t* kv_bytes_read) {
  CHIMERA_ASSIGN_OR_RETURN(const std::unique_ptr<AttentionWorkload> w,
                           make_attention_workload(n_ctx, n_queries));
  Status st_run = Status::Ok();
  const int calls = n_queries == 1 ? 20 : 1;
  const Timing t = time_best(repeats, ctx.n_threads(), [&] {
    for (int i = 0; i < calls && st_run.ok(); ++i)
      st_run = attention_paged(w->params, w->batch, &ctx, isa);
  });
  CHIMERA_RETURN_IF_ERROR(st_run);
  *kv_bytes_read = w->kv_bytes_per_query;
  return t.wall / calls;
}

Status bench_ops(ThreadContext& ctx, const KernelBenchOptions& o, OpsBenchResult* r) {
  CHIMERA_ASSIGN_OR_RETURN(const double scan1, time_scan(ctx, o.isa, 1, o.repeats));
  CHIMERA_ASSIGN_OR_RETURN(const double scan_p, time_scan(ctx, o.isa, r->prefill_tokens, 1));
  CHIMERA_ASSIGN_OR_RETURN(const double delta1, time_delta_net(ctx, o.isa, 1, o.repeats));
  CHIMERA_ASSIGN_OR_RETURN(const double delta_p, time_delta_net(ctx, o.isa, r->prefill_tokens, 1));
  int64_t kv_bytes = 0, unused = 0;
  CHIMERA_ASSIGN_OR_RETURN(const double att1,
                           time_attention(ctx, o.isa, r->attention_ctx, 1, o.repeats, &kv_bytes));
  CHIMERA_ASSIGN_OR_RETURN(const double att_p, time_attention(ctx, o.isa, r->prefill_tokens,
                                                              r->prefill_tokens, 1, &unused));
  r->scan_decode_us = scan1 * 1e6;
  r->scan_prefill_us = scan_p * 1e6 / r->prefill_tokens;
  r->delta_net_decode_us = delta1 * 1e6;
  r->delta_net_prefill_us = delta_p * 1e6 / r->prefill_tokens;
  r->attention_decode_us = att1 * 1e6;
  r->attention_decode_kv_gbps = kv_bytes / att1 / 1e9;
  r->attention_prefill_us = att_p * 1e6 / r->prefill_tokens;
  return Status::Ok();
}

}  // namespace

Result<double> streaming_read_gbps(int n_threads, uint64_t bytes) {
  if (n_threads < 1 || n_threads > 256)
    return Error(ErrorCode::kInvalidArgument, "streaming read: thread count ", n_threads,
                 " out of range");
  CHIMERA_ASSIGN_OR_RETURN(Buffer buf, allocate(bytes));
  ThreadContext ctx(n_threads);
  return measure_roofline(ctx, buf.get(), bytes, active_isa(), 3).first;
}

Result<KernelBenchResult> run_kernel_bench(const KernelBenchOptions& o) {
  if (o.n_threads < 1 || o.n_threads > 256) {
    return Error(ErrorCode::kInvalidArgument, "bench kernels: thread count ", o.n_threads,
                 " is outside [1, 256]");
  }
  if (!isa_supported(o.isa)) {
    return Error(ErrorCode::kUnsupported, "bench kernels: this CPU cannot run ", isa_name(o.isa));
  }
  std::vector<GgmlType> types = o.types;
  if (types.empty()) {
    types = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16,  GgmlType::Q8_0,   GgmlType::Q4_0,
             GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,  GgmlType::IQ4_NL, GgmlType::Q4_K,
             GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS};
  }
  // Room for the largest weight set (a whole number of matrices) and the GEMM weights.
  uint64_t buf_bytes = o.weight_set_bytes;
  for (GgmlType t : types) {
    const WeightMatrix a{t, nullptr, o.gemv_n_in, o.gemv_n_out};
    const WeightMatrix b{t, nullptr, o.gemm_n_in, o.gemm_n_out};
    buf_bytes = std::max<uint64_t>(buf_bytes, std::max(a.matrix_bytes(), b.matrix_bytes()));
  }
  CHIMERA_ASSIGN_OR_RETURN(Buffer buf, allocate(buf_bytes));
  ThreadContext ctx(o.n_threads);
  KernelBenchResult r;
  r.isa = isa_name(o.isa);
  r.n_threads = o.n_threads;
  // Interleaved rounds: each round reads the roofline once and every type's GEMV set once, and
  // the best of the rounds is kept for each, so a noisy spell on this shared machine hits all
  // of them alike instead of whichever ran at that moment.
  std::vector<GemvSet> sets;
  for (GgmlType t : types) sets.push_back(make_gemv_set(o, t));
  std::vector<float> x(std::max(o.gemv_n_in, o.gemm_n_in) * static_cast<size_t>(o.gemm_m));
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (float& v : x) v = uni(rng);
  std::vector<float> y(std::max(o.gemv_n_out, o.gemm_n_out) * static_cast<size_t>(o.gemm_m));
  MatmulWorkspace ws(o.isa);
  std::pair<double, double> roofline{0, 0};
  std::vector<Timing> best(sets.size());
  for (int round = 0; round < o.repeats; ++round) {
    const auto rf = measure_roofline(ctx, buf.get(), o.weight_set_bytes, o.isa, 1);
    roofline = {std::max(roofline.first, rf.first), std::max(roofline.second, rf.second)};
    for (size_t k = 0; k < sets.size(); ++k) {
      load_set(sets[k], buf.get());
      CHIMERA_ASSIGN_OR_RETURN(const Timing t,
                               time_gemv(ctx, sets[k], buf.get(), x.data(), y.data(), ws));
      best[k].wall = std::min(best[k].wall, t.wall);
      best[k].cpu_per_thread = std::min(best[k].cpu_per_thread, t.cpu_per_thread);
    }
  }
  for (size_t k = 0; k < sets.size(); ++k) {
    const GemvSet& g = sets[k];
    TypeBenchResult tr;
    tr.type = g.type;
    const double set_bytes = static_cast<double>(g.n_mat) * g.matrix_bytes;
    tr.gemv_matrices = g.n_mat;
    tr.gemv_set_mb = set_bytes / 1048576.0;
    tr.gemv_gbps = set_bytes / best[k].wall / 1e9;
    tr.gemv_cpu_gbps = set_bytes / best[k].cpu_per_thread / 1e9;
    tr.gemv_us_per_matrix = best[k].wall / g.n_mat * 1e6;
    tr.gemv_roofline_pct = 100 * tr.gemv_gbps / roofline.first;
    tr.gemv_cpu_roofline_pct = 100 * tr.gemv_cpu_gbps / roofline.second;
    // GEMM weights: the first rows of the type's prototype (same row length).
    CHIMERA_CHECK(o.gemm_n_in == o.gemv_n_in && o.gemm_n_out <= o.gemv_n_out,
                  "GEMM shape must fit in the GEMV prototype");
    load_set(g, buf.get());
    CHIMERA_RETURN_IF_ERROR(time_gemm(ctx, o, g.type, buf.get(), x.data(), y.data(), ws, &tr));
    r.types.push_back(tr);
  }
  if (o.ops) CHIMERA_RETURN_IF_ERROR(bench_ops(ctx, o, &r.ops));
  r.roofline_gbps = roofline.first;
  r.roofline_cpu_gbps = roofline.second;
  return r;
}

namespace {

int bench_kernels_main(int argc, char** argv) {
  CLI::App app{
      "Measure a streaming read of memory and the matmul kernels (GEMV GB/s, GEMM GFLOP/s)"};
  app.name("chimera bench kernels");
  KernelBenchOptions o;
  o.n_threads = std::max(1u, std::thread::hardware_concurrency());
  bool json_out = false;
  std::string isa_str, types_str;
  app.add_flag("--json", json_out, "print JSON instead of a table");
  bool no_ops = false;
  app.add_flag("--no-ops", no_ops, "skip the scan and attention measurements");
  app.add_option("-t,--threads", o.n_threads, "threads (default: all hardware threads)");
  app.add_option("--isa", isa_str, "kernel path: scalar | avx2 | avx512 (default: the active one)");
  app.add_option("--types", types_str, "comma-separated weight types (default: all)");
  app.add_option(
         "--repeats", o.repeats,
         "rounds; each runs the streaming read and every GEMV weight set once, the best round is "
         "kept")
      ->check(CLI::Range(1, 100));
  std::vector<int> gemv_shape;
  app.add_option("--gemv-shape", gemv_shape,
                 "GEMV matrix n_in,n_out (default 4096,4096; a model's decode shapes are smaller, "
                 "e.g. 768,3376); GEMM keeps its m and n_out, capped at n_out, with this n_in")
      ->expected(2)
      ->delimiter(',')
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--set-mb", o.weight_set_bytes, "GEMV weight set size in MiB (default 576)")
      ->transform([](std::string s) { return std::to_string(std::stoull(s) << 20); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (gemv_shape.size() == 2) {
    o.gemv_n_in = o.gemm_n_in = gemv_shape[0];
    o.gemv_n_out = gemv_shape[1];
    o.gemm_n_out = std::min(o.gemm_n_out, o.gemv_n_out);
  }
  if (!isa_str.empty()) {
    auto isa = parse_isa(isa_str);
    if (!isa.ok()) {
      std::fprintf(stderr, "chimera bench kernels: %s\n", isa.status().message().c_str());
      return 2;
    }
    o.isa = *isa;
  }
  if (!types_str.empty()) {
    std::stringstream ss(types_str);
    std::string name;
    while (std::getline(ss, name, ',')) {
      auto t = type_from_name(name);
      if (!t || !matmul_supports(*t)) {
        std::fprintf(stderr, "chimera bench kernels: '%s' is not a matmul weight type (%s)\n",
                     name.c_str(), supported_type_names());
        return 2;
      }
      o.types.push_back(*t);
    }
  }
  o.ops = !no_ops;
  auto r = run_kernel_bench(o);
  if (!r.ok()) {
    std::fprintf(stderr, "chimera bench kernels: %s\n", r.status().ToString().c_str());
    return 1;
  }
  if (json_out) {
    nlohmann::json j;
    j["isa"] = r->isa;
    j["threads"] = r->n_threads;
    j["cpu_features"] = cpu_features().ToString();
    j["streaming_read_gbps"] = r->roofline_gbps;
    j["streaming_read_cpu_gbps"] = r->roofline_cpu_gbps;
    j["gemv_shape"] = {o.gemv_n_in, o.gemv_n_out};
    j["gemm_shape"] = {o.gemm_m, o.gemm_n_in, o.gemm_n_out};
    for (const auto& t : r->types) {
      j["types"][type_name(t.type)] = {{"gemv_gbps", t.gemv_gbps},
                                       {"gemv_pct_of_streaming_read", t.gemv_roofline_pct},
                                       {"gemv_cpu_gbps", t.gemv_cpu_gbps},
                                       {"gemv_cpu_pct_of_streaming_read", t.gemv_cpu_roofline_pct},
                                       {"gemm_cpu_gflops", t.gemm_cpu_gflops},
                                       {"gemv_us_per_matrix", t.gemv_us_per_matrix},
                                       {"gemv_matrices", t.gemv_matrices},
                                       {"gemv_set_mb", t.gemv_set_mb},
                                       {"gemm_gflops", t.gemm_gflops},
                                       {"gemm_ms", t.gemm_ms}};
    }
    if (o.ops) {
      j["ops"] = {{"scan_decode_us_per_token", r->ops.scan_decode_us},
                  {"scan_prefill_us_per_token", r->ops.scan_prefill_us},
                  {"delta_net_decode_us_per_token", r->ops.delta_net_decode_us},
                  {"delta_net_prefill_us_per_token", r->ops.delta_net_prefill_us},
                  {"attention_ctx", r->ops.attention_ctx},
                  {"attention_decode_us_per_token", r->ops.attention_decode_us},
                  {"attention_decode_kv_gbps", r->ops.attention_decode_kv_gbps},
                  {"attention_prefill_us_per_token", r->ops.attention_prefill_us}};
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf(
      "isa %s, %d threads; measured streaming read (not a ceiling: GEMV can beat it): %.1f GB/s "
      "wall, %.1f GB/s per CPU time\n",
      r->isa.c_str(), r->n_threads, r->roofline_gbps, r->roofline_cpu_gbps);
  std::printf("GEMV 1x%d . %dx%d (set of %.0f MiB);  GEMM %dx%d . %dx%d\n", o.gemv_n_in,
              o.gemv_n_in, o.gemv_n_out, r->types.empty() ? 0.0 : r->types[0].gemv_set_mb, o.gemm_m,
              o.gemm_n_in, o.gemm_n_in, o.gemm_n_out);
  std::printf(
      "(cpu columns: bytes or FLOPs per CPU second per thread, robust to a busy machine)\n");
  std::printf("%-6s %10s %8s %10s %8s %10s %10s %10s\n", "type", "GEMV GB/s", "% read", "cpu GB/s",
              "% read", "us/matrix", "GEMM GF/s", "cpu GF/s");
  for (const auto& t : r->types) {
    std::printf("%-6s %10.2f %7.1f%% %10.2f %7.1f%% %10.1f %10.1f %10.1f\n", type_name(t.type),
                t.gemv_gbps, t.gemv_roofline_pct, t.gemv_cpu_gbps, t.gemv_cpu_roofline_pct,
                t.gemv_us_per_matrix, t.gemm_gflops, t.gemm_cpu_gflops);
  }
  if (o.ops) {
    const OpsBenchResult& p = r->ops;
    std::printf(
        "Mamba2 scan (48 heads x 32 x state 128): %.1f us/token decode, %.1f us/token prefill "
        "%d\n",
        p.scan_decode_us, p.scan_prefill_us, p.prefill_tokens);
    std::printf(
        "gated DeltaNet (16 k / 16 v heads x 128): %.1f us/token decode, %.1f us/token prefill "
        "%d\n",
        p.delta_net_decode_us, p.delta_net_prefill_us, p.prefill_tokens);
    std::printf(
        "attention (32 q / 8 kv heads x 128, F16 KV): decode at ctx %d %.1f us/token (KV read "
        "%.1f GB/s), prefill %d %.1f us/token\n",
        p.attention_ctx, p.attention_decode_us, p.attention_decode_kv_gbps, p.prefill_tokens,
        p.attention_prefill_us);
  }
  return 0;
}

const BenchModeRegistrar kKernels({"kernels",
                                   "streaming read, GEMV GB/s and GEMM GFLOP/s per weight type",
                                   bench_kernels_main});

}  // namespace
}  // namespace chimera::cli
