// Greedy argmax over an LM head without computing all of its logits: for each activation row,
// the first index of the largest of matmul()'s outputs, bit for bit what computing every logit
// and taking first_argmax would give (a greedy drafter needs no more).
//
// How (AVX-512 VNNI): an int8 copy of the weights (per-row scale) and an int8 copy of each
// activation row give every logit's approximation A_v with a rigorous bound B_v on its distance
// from the float logit matmul() computes (quantization error, plus a margin far above every
// rounding error of either computation). A logit whose upper end A_v + B_v is below the largest
// lower end max_u (A_u - B_u) is below some float logit, so neither the maximum nor tied with it;
// the others (a few per row) are computed exactly with matmul()'s own per-element arithmetic and
// the first largest wins. The int8 pass costs a quarter of the float FMAs of the full logits.
// Rows with non-finite or extreme activations, other ISA paths and unpacked heads compute the
// full logits and take first_argmax, so the answer never depends on the path.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"
#include "core/threads.h"
#include "kernels/matmul.h"

namespace chimera {

// The first index of the largest value (x > y comparisons; with NaNs, the first entry equal to
// the maximum of a lane-wise pass, or 0 when none is).
int32_t first_argmax(const float* v, int32_t n);

// The int8 copy of an F16, BF16 or F32 head and its per-row bounds.
class ArgmaxHead {
 public:
  // nullptr where the search cannot run on this matrix (non-finite weights, more than 64
  // elements per row, another type) or this host (no AVX-512): matmul_argmax then computes
  // every logit.
  static std::unique_ptr<ArgmaxHead> pack(const WeightMatrix& w);

  int64_t n_in = 0, n_out = 0, n_kg = 0;  // n_kg: groups of 4 elements, zero-padded
  // Groups of 16 rows: [group][kg][16 rows][4 bytes] of q_v + 128 (unsigned, w_v ~ s_v q_v);
  // per row (n_groups * 16, zeros past n_out) s_v, and bounds rounded up: qmax >= s_v max|q_v|,
  // dmax >= max_i |w_vi - s_v q_vi|, l1 >= sum_i |w_vi|.
  std::vector<uint8_t> q;
  std::vector<float> scale, qmax, dmax, l1;
};

// out[i] = first_argmax of row i of matmul(w, x) (m rows, x rows n_in floats apart). head may be
// null (every logit computed). scratch: reused buffers.
Status matmul_argmax(ThreadContext& ctx, const WeightMatrix& w, const ArgmaxHead* head,
                     const float* x, int64_t m, int32_t* out, MatmulWorkspace& ws,
                     std::vector<float>& scratch);

namespace ops_internal {
// The AVX-512 search for m rows (x rows x_stride floats apart): out[i] is row i's answer, or -1
// where the row must take the full path (non-finite or extreme values). scratch: at least
// min(m, 16) * (n_out rounded up to 16) floats. Returns the number of rows left at -1.
int64_t argmax_rows_avx512(const ArgmaxHead& head, const WeightMatrix& w, const float* x,
                           int64_t x_stride, int64_t m, int32_t* out, float* scratch);
// The packing's AVX-512 half: whether this build and host can run it.
bool argmax_avx512_available();
// matmul()'s arithmetic for element (x . w_v) alone (tests: every v against matmul).
float argmax_exact_dot_avx512(const WeightMatrix& w, const float* x, int64_t v);
}  // namespace ops_internal

}  // namespace chimera
