// Matrix multiply Y = X · Wᵀ for every weight type chimera supports (spec 1.5), batch-invariant.
//
// W holds n_out rows of n_in elements (GGUF/ggml shape {n_in, n_out}, or {n_in, n_out, n_expert}
// for MoE expert stacks); X is m rows of n_in floats, Y m rows of n_out floats.
//
// Exactness (shared/design/MEMORY.md section 1): each y[i][j] is computed by the same sequence of
// floating-point operations for any m, any row position in X and any thread count. The kernels
// tile over rows and columns in registers, but every output element has its own accumulator that
// runs over K in one fixed order; threads split the output columns, never K. Quantized weights
// use quantized activations (Q8 blocks of 32 for the 32-blocks Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/IQ4_NL,
// Q8_K blocks of 256 for K-quants and IQ4_XS), computed from each activation row on its own. The
// guarantee holds per ISA path (scalar and AVX2 differ in rounding); one process uses one path
// (active_isa()) unless a caller picks one. The AVX-512 path (VNNI prefill kernels for the
// quantized types, 512-bit FMA kernels for the float types; the AVX2 kernels for decode and small
// batches) gives results bit-identical to the AVX2 path for every type (tested), so AVX2 and
// AVX-512 hosts agree.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/status.h"
#include "core/threads.h"
#include "gguf/types.h"
#include "kernels/cpu_features.h"

namespace chimera {

// A view of a weight matrix (or a stack of n_expert matrices) in GGUF layout. Not owning.
struct WeightMatrix {
  GgmlType type = GgmlType::F32;
  const void* data = nullptr;
  int64_t n_in = 0;      // elements per row (ggml ne[0])
  int64_t n_out = 0;     // rows per matrix (ggml ne[1])
  int64_t n_expert = 1;  // matrices (ggml ne[2]); 1 for a plain 2-D weight

  size_t row_bytes() const { return chimera::row_bytes(type, static_cast<uint64_t>(n_in)); }
  size_t matrix_bytes() const { return row_bytes() * static_cast<size_t>(n_out); }
};

// The types matmul accepts: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q4_K, Q5_K,
// Q6_K, IQ4_XS.
bool matmul_supports(GgmlType type);

// Checks type, shape (n_in a multiple of the type's block, all sizes positive) and data pointer.
Status validate_weights(const WeightMatrix& w);

// Reusable scratch memory for one caller (quantized activations), so the hot path does not
// allocate once it has grown to the largest call. It also fixes which ISA path runs: the process
// default (active_isa()) unless one is given (tests use this to check each path). Not thread-safe:
// give each concurrent caller its own workspace.
class MatmulWorkspace {
 public:
  explicit MatmulWorkspace(Isa isa = active_isa());
  ~MatmulWorkspace();
  MatmulWorkspace(const MatmulWorkspace&) = delete;
  MatmulWorkspace& operator=(const MatmulWorkspace&) = delete;

  Isa isa() const { return isa_; }
  // Where the AVX-512 path has two equivalent tiles (results identical bit for bit), the 512-bit
  // one: by default prefer_zmm_tiles(), on for Intel's cores (full-width 512-bit pipes), off
  // elsewhere (Zen 4 splits 512-bit operations, and its 256-bit tiles measured faster). Tests run
  // both.
  bool zmm_tiles() const { return zmm_tiles_; }
  void set_zmm_tiles(bool on) { zmm_tiles_ = on; }
  // A 64-byte aligned buffer of at least `bytes`; invalidates earlier pointers when it grows.
  void* reserve(size_t bytes);
  size_t capacity() const { return capacity_; }

 private:
  Isa isa_;
  bool zmm_tiles_;
  void* buf_ = nullptr;
  size_t capacity_ = 0;
};

// Memory the caller reads soon after a matmul: e.g. the recurrent states of the next layer's
// scan, which is bound by memory, while a matmul over a few rows is bound by compute and leaves
// the memory bus idle. A matmul given one prefetches (into L2, whence lines fall to L3) bytes
// [begin, end) of the concatenated ranges while it computes: each thread, after each block of
// its output columns, the share that matches those columns. A hint only: results never depend
// on it.
struct ReadAhead {
  struct Range {
    const void* data = nullptr;
    uint64_t bytes = 0;
  };
  const Range* ranges = nullptr;
  int64_t n_ranges = 0;
  uint64_t begin = 0, end = 0;
};

// Y[i][j] = sum_k X[i][k] * W[j][k] for i < m, j < n_out. x rows are x_stride floats apart
// (0 = n_in), y rows y_stride floats apart (0 = n_out). W must be 2-D (n_expert == 1). m == 0 is
// a no-op. X and Y must not overlap. Errors (bad type/shape/stride, unsupported ISA) change
// nothing. `ahead`: optional memory to prefetch meanwhile (see ReadAhead).
Status matmul(ThreadContext& ctx, const WeightMatrix& w, const float* x, int64_t m, float* y,
              MatmulWorkspace& ws, int64_t x_stride = 0, int64_t y_stride = 0,
              const ReadAhead* ahead = nullptr);

// Several matrices with the same n_in applied to the same X in one parallel region: threads meet
// once instead of once per matrix, and X is quantized once per distinct activation format (e.g.
// an attention layer's Q, K and V). Each part's y is bit-identical to matmul() of that part
// alone. `after`, when not empty, is called as after(part, j0, j1) on the thread that computed
// columns [j0, j1) of a part, once they are final for all m rows: work that needs only those
// columns (a convolution over them, an activation) joins the same region. j0 is a multiple of
// kMatmulColumnGrain, j1 one too or the part's n_out. Up to kMaxMatmulParts parts, each W 2-D.
struct MatmulPart {
  WeightMatrix w;
  float* y = nullptr;
  int64_t y_stride = 0;  // floats; 0 = w.n_out
};
constexpr int64_t kMatmulColumnGrain = 16;
constexpr int kMaxMatmulParts = 8;
Status matmul_parts(ThreadContext& ctx, const MatmulPart* parts, int n_parts, const float* x,
                    int64_t m, MatmulWorkspace& ws, int64_t x_stride = 0,
                    const ReadAhead* ahead = nullptr,
                    FnRef<void(int part, int64_t j0, int64_t j1)> after = {});

// Work fused into matmul_fused's parallel region (each member optional).
struct MatmulFusion {
  // As matmul_parts' `after` (with lockstep: after(0, j0, j1) once every part's columns
  // [j0, j1) are final).
  FnRef<void(int part, int64_t j0, int64_t j1)> after;
  // input(ith) returns the m rows (x_stride apart) that share ith reads instead of x: row-wise
  // work on the previous op's output (a norm) runs on every thread at once, each writing its own
  // copy, instead of on one thread before the region. Share 0 calls it before its first columns;
  // another share that gets columns calls it before its first ones unless share 0's rows are
  // ready by then (it was late, or the caller runs it): it reads those. At most one call per
  // share. The copies must hold the same values (results are then those of matmul_parts on any
  // one of them). Only when every part reads its activations in place (matmul_reads_input); x
  // must still name m rows of its own (the overlap check uses it).
  FnRef<const float*(int ith)> input;
  // All parts have one n_out and advance together: each chunk of columns is computed for every
  // part, then `after` runs on it (e.g. an activation over gate and up columns j0..j1).
  bool lockstep = false;
};
Status matmul_fused(ThreadContext& ctx, const MatmulPart* parts, int n_parts, const float* x,
                    int64_t m, MatmulWorkspace& ws, int64_t x_stride, const ReadAhead* ahead,
                    const MatmulFusion& fusion);
// Whether weights of `type` are multiplied by the float activation rows themselves (no
// quantized copy): the types MatmulFusion::input works with.
bool matmul_reads_input(GgmlType type);

// The same for one activation row (decode). Shares matmul's kernels: y is bit-identical to the
// corresponding row of a batched call.
Status gemv(ThreadContext& ctx, const WeightMatrix& w, const float* x, float* y,
            MatmulWorkspace& ws);

// MoE: multiplies X by expert `expert` of a 3-D weight stack {n_in, n_out, n_expert}; only that
// expert's bytes are read. Bit-identical to matmul() on the expert's 2-D slice.
Status matmul_expert(ThreadContext& ctx, const WeightMatrix& w, int64_t expert, const float* x,
                     int64_t m, float* y, MatmulWorkspace& ws, int64_t x_stride = 0,
                     int64_t y_stride = 0);

// Benchmark support (`chimera bench kernels`): reads `bytes` of `data` (64-byte aligned) with the
// widest loads of `isa` into several independent accumulators: a measured streaming read that
// GEMV is compared with (not a ceiling: the GEMV kernels can beat it). Returns a value that
// depends on every byte, so the read stays.
uint64_t memory_read_probe(const void* data, size_t bytes, Isa isa);

// ---- internal: the per-ISA kernel tables (matmul.cpp, matmul_avx2.cpp) ----
namespace matmul_detail {

// How activations are prepared for a weight type.
enum class ActFormat { kF32, kQ8, kQ8K };
ActFormat act_format(GgmlType type);
// Bytes of one prepared activation row of n_in elements (0 for kF32: the rows are used in place).
size_t act_row_bytes(GgmlType type, int64_t n_in);
// Whether a path's kernel for `type` wants its Q8 activation blocks rearranged in pairs
// (ActPairQ8): the AVX2 kernels of the 4-bit and 5-bit 32-blocks (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL),
// and the AVX-512 path (which runs or mirrors them). The quantized values are the same either way.
bool act_paired(GgmlType type, Isa isa);
size_t prepared_row_bytes(GgmlType type, Isa isa, int64_t n_in);

// Computes y[i][j] for all i < m and j in [j0, j1). `act` points to the prepared activation rows
// (act_stride bytes apart; for kF32 these are the caller's float rows). `w` points to row 0 of
// the matrix, w_row_bytes apart.
struct KernelArgs {
  const uint8_t* w;
  size_t w_row_bytes;
  const uint8_t* act;
  size_t act_stride;
  int64_t m;
  int64_t n_in;
  float* y;
  int64_t y_stride;  // floats
};
using KernelFn = void (*)(const KernelArgs& args, int64_t j0, int64_t j1);

// Decode tiles prefetch the next tile's weight rows while they read their own, and both must stay
// in L1 (32 KB per core here) until read: a tile of more than this many bytes prefetches into L2
// instead (prefetcht1). With the weights in L3, F16 GEMV 2048 and 4096 wide (16 and 32 KB tiles)
// ran faster with L2 prefetch, 768 wide (6 KB) and Q8_0 2048 wide (9 KB) with L1 prefetch.
constexpr size_t kL1PrefetchMaxTileBytes = 12 * 1024;

// Kernel for a type on a path; nullptr when the type is not supported.
KernelFn scalar_kernel(GgmlType type);
KernelFn avx2_kernel(GgmlType type);
// The AVX-512 path (matmul_avx512.cpp): its VNNI kernels for Q8_0 and Q4_0, those of
// avx512_kernel_kquants, avx512_kernel_q4_1_q5_iq4 and avx512_kernel_float, all bit-identical
// to the AVX2 ones, and the AVX2 kernel for every other type.
// zmm_tiles: MatmulWorkspace::zmm_tiles (the same results either way).
KernelFn avx512_kernel(GgmlType type, bool zmm_tiles);
// The same for Q4_1, Q5_0, Q5_1, IQ4_NL and IQ4_XS (matmul_q4_1_q5_iq4*.cpp); nullptr otherwise.
KernelFn scalar_kernel_q4_1_q5_iq4(GgmlType type);
KernelFn avx2_kernel_q4_1_q5_iq4(GgmlType type);
// The AVX-512 VNNI prefill kernels for Q4_K, Q5_K, Q6_K, IQ4_XS (matmul_kquants_avx512.cpp),
// bit-identical to the AVX2 ones (whose decode they use); nullptr for other types.
KernelFn avx512_kernel_kquants(GgmlType type);
// The AVX-512 VNNI kernels for Q4_1, Q5_0, Q5_1 and IQ4_NL (matmul_q4_1_q5_iq4_avx512.cpp),
// bit-identical to the AVX2 ones; IQ4_XS as avx512_kernel_kquants.
KernelFn avx512_kernel_q4_1_q5_iq4(GgmlType type);
// The AVX-512 kernels for F16, BF16 and F32 weights (matmul_f16_avx512.cpp), bit-identical to the
// AVX2 ones; nullptr for other types.
KernelFn avx512_kernel_float(GgmlType type);

// The scalar path: each output element is one sequential loop over K (`kDot` of a weight row and
// a prepared activation row), trivially independent of the batch.
using DotFn = float (*)(const uint8_t* w_row, const uint8_t* act_row, int64_t n_in);
template <DotFn kDot>
void scalar_tile(const KernelArgs& a, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j) {
    const uint8_t* wrow = a.w + static_cast<size_t>(j) * a.w_row_bytes;
    for (int64_t i = 0; i < a.m; ++i) {
      a.y[i * a.y_stride + j] = kDot(wrow, a.act + static_cast<size_t>(i) * a.act_stride, a.n_in);
    }
  }
}
uint64_t memory_read_probe_avx2(const void* data, size_t bytes);

}  // namespace matmul_detail
}  // namespace chimera
