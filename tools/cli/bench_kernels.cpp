#include "bench_kernels.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "cmd_bench.h"
#include "core/threads.h"
#include "kernels/matmul.h"

namespace chimera::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
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

// One matrix of valid blocks of type t (random payload, fp16 scales around 0.01), copied over
// the whole buffer: the content does not matter for speed, only that it is finite and varied.
void fill_weights(GgmlType t, uint8_t* buf, uint64_t matrix_bytes, uint64_t total_bytes) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const TypeTraits& tt = type_traits(t);
  for (uint64_t off = 0; off + tt.type_size <= matrix_bytes; off += tt.type_size) {
    uint8_t* blk = buf + off;
    if (t == GgmlType::F32) {
      const float v = uni(rng);
      std::memcpy(blk, &v, 4);
      continue;
    }
    if (t == GgmlType::F16 || t == GgmlType::BF16) {
      const uint16_t h = t == GgmlType::F16 ? f32_to_fp16(uni(rng)) : f32_to_bf16(uni(rng));
      std::memcpy(blk, &h, 2);
      continue;
    }
    for (uint32_t k = 0; k < tt.type_size; ++k) blk[k] = static_cast<uint8_t>(byte(rng));
    const uint16_t d = f32_to_fp16(0.01f * (1.5f + uni(rng)));
    const size_t d_off = t == GgmlType::Q6_K ? offsetof(BlockQ6_K, d) : 0;
    std::memcpy(blk + d_off, &d, 2);
    if (t == GgmlType::Q4_K || t == GgmlType::Q5_K) std::memcpy(blk + 2, &d, 2);  // dmin
  }
  for (uint64_t off = matrix_bytes; off + matrix_bytes <= total_bytes; off += matrix_bytes) {
    std::memcpy(buf + off, buf, matrix_bytes);
  }
}

double measure_roofline(ThreadContext& ctx, const uint8_t* buf, uint64_t bytes, Isa isa,
                        int repeats) {
  const int nth = ctx.n_threads();
  const uint64_t per_thread = bytes / nth / 64 * 64;
  std::vector<uint64_t> sink(nth);
  double best = 0;
  for (int rep = 0; rep <= repeats; ++rep) {  // rep 0 warms up
    const auto t0 = Clock::now();
    ctx.run([&](int ith, int) {
      sink[ith] += memory_read_probe(buf + ith * per_thread, per_thread, isa);
    });
    const double s = seconds_since(t0);
    if (rep > 0) best = std::max(best, per_thread * nth / s / 1e9);
  }
  volatile uint64_t keep = sink[0];
  (void)keep;
  return best;
}

Status bench_type(ThreadContext& ctx, const KernelBenchOptions& o, GgmlType t, uint8_t* buf,
                  double roofline, TypeBenchResult* out) {
  out->type = t;
  MatmulWorkspace ws(o.isa);
  // GEMV: cycle through enough matrices that the set exceeds the buffer-sized budget.
  const WeightMatrix proto{t, nullptr, o.gemv_n_in, o.gemv_n_out};
  const uint64_t mbytes = proto.matrix_bytes();
  const int64_t n_mat = std::max<int64_t>(1, static_cast<int64_t>(o.weight_set_bytes / mbytes));
  fill_weights(t, buf, mbytes, n_mat * mbytes);
  std::vector<float> x(std::max(o.gemv_n_in, o.gemm_n_in) * static_cast<size_t>(o.gemm_m));
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (float& v : x) v = uni(rng);
  std::vector<float> y(std::max(o.gemv_n_out, o.gemm_n_out) * static_cast<size_t>(o.gemm_m));
  double best = 1e30;
  for (int rep = 0; rep <= o.repeats; ++rep) {
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < n_mat; ++i) {
      WeightMatrix w = proto;
      w.data = buf + i * mbytes;
      CHIMERA_RETURN_IF_ERROR(gemv(ctx, w, x.data(), y.data(), ws));
    }
    if (rep > 0) best = std::min(best, seconds_since(t0));
  }
  out->gemv_matrices = n_mat;
  out->gemv_set_mb = n_mat * mbytes / 1048576.0;
  out->gemv_gbps = n_mat * mbytes / best / 1e9;
  out->gemv_roofline_pct = roofline > 0 ? 100 * out->gemv_gbps / roofline : 0;
  out->gemv_us_per_matrix = best / n_mat * 1e6;

  // GEMM: one prefill-shaped call, weights from the (already filled) buffer.
  const WeightMatrix wg{t, buf, o.gemm_n_in, o.gemm_n_out};
  double best_gemm = 1e30;
  const int gemm_reps = std::max(1, o.repeats / 2);
  for (int rep = 0; rep <= gemm_reps; ++rep) {
    const auto t0 = Clock::now();
    CHIMERA_RETURN_IF_ERROR(matmul(ctx, wg, x.data(), o.gemm_m, y.data(), ws));
    if (rep > 0) best_gemm = std::min(best_gemm, seconds_since(t0));
  }
  out->gemm_ms = best_gemm * 1e3;
  out->gemm_gflops = 2.0 * o.gemm_m * o.gemm_n_in * o.gemm_n_out / best_gemm / 1e9;
  return Status::Ok();
}

}  // namespace

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
    types = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
             GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
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
  r.roofline_gbps = measure_roofline(ctx, buf.get(), o.weight_set_bytes, o.isa, o.repeats);
  for (GgmlType t : types) {
    TypeBenchResult tr;
    CHIMERA_RETURN_IF_ERROR(bench_type(ctx, o, t, buf.get(), r.roofline_gbps, &tr));
    r.types.push_back(tr);
  }
  return r;
}

namespace {

int bench_kernels_main(int argc, char** argv) {
  CLI::App app{"Measure the memory roofline and matmul kernels (GEMV GB/s, GEMM GFLOP/s)"};
  app.name("chimera bench kernels");
  KernelBenchOptions o;
  o.n_threads = std::max(1u, std::thread::hardware_concurrency());
  bool json_out = false;
  std::string isa_str, types_str;
  app.add_flag("--json", json_out, "print JSON instead of a table");
  app.add_option("-t,--threads", o.n_threads, "threads (default: all hardware threads)");
  app.add_option("--isa", isa_str, "kernel path: scalar | avx2 (default: the active one)");
  app.add_option("--types", types_str, "comma-separated weight types (default: all)");
  app.add_option("--repeats", o.repeats, "timed passes per measurement (best is kept)")
      ->check(CLI::Range(1, 100));
  app.add_option("--set-mb", o.weight_set_bytes, "GEMV weight set size in MiB (default 576)")
      ->transform([](std::string s) { return std::to_string(std::stoull(s) << 20); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
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
    j["roofline_gbps"] = r->roofline_gbps;
    j["gemv_shape"] = {o.gemv_n_in, o.gemv_n_out};
    j["gemm_shape"] = {o.gemm_m, o.gemm_n_in, o.gemm_n_out};
    for (const auto& t : r->types) {
      j["types"][type_name(t.type)] = {{"gemv_gbps", t.gemv_gbps},
                                       {"gemv_roofline_pct", t.gemv_roofline_pct},
                                       {"gemv_us_per_matrix", t.gemv_us_per_matrix},
                                       {"gemv_matrices", t.gemv_matrices},
                                       {"gemv_set_mb", t.gemv_set_mb},
                                       {"gemm_gflops", t.gemm_gflops},
                                       {"gemm_ms", t.gemm_ms}};
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("isa %s, %d threads; roofline (streaming read): %.1f GB/s\n", r->isa.c_str(),
              r->n_threads, r->roofline_gbps);
  std::printf("GEMV 1x%d . %dx%d (set of %.0f MiB);  GEMM %dx%d . %dx%d\n", o.gemv_n_in,
              o.gemv_n_in, o.gemv_n_out, r->types.empty() ? 0.0 : r->types[0].gemv_set_mb, o.gemm_m,
              o.gemm_n_in, o.gemm_n_in, o.gemm_n_out);
  std::printf("%-6s %10s %10s %12s %12s\n", "type", "GEMV GB/s", "% roofline", "us/matrix",
              "GEMM GFLOP/s");
  for (const auto& t : r->types) {
    std::printf("%-6s %10.2f %9.1f%% %12.1f %12.1f\n", type_name(t.type), t.gemv_gbps,
                t.gemv_roofline_pct, t.gemv_us_per_matrix, t.gemm_gflops);
  }
  return 0;
}

const BenchModeRegistrar kKernels({"kernels",
                                   "roofline, GEMV GB/s and GEMM GFLOP/s per weight type",
                                   bench_kernels_main});

}  // namespace
}  // namespace chimera::cli
