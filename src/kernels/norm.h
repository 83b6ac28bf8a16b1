// RMSNorm (llama.cpp semantics: sum of squares in double) and the Mamba2 grouped gated RMSNorm.
//
// Each row is reduced in one fixed order by one thread, so a row's output is independent of the
// number of rows, their order and the thread count.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "core/threads.h"
#include "kernels/activation.h"

namespace chimera {

// One row of n: y = (x * scale) * w with scale = 1/sqrtf(float(Σx² in double)/n + eps).
// w may be null (no weight multiply). x and y may alias.
void rms_norm_row(const float* x, const float* w, float* y, int64_t n, float eps,
                  Isa isa = active_isa());

// n_rows rows; row r is read at x + r*x_stride and written at y + r*y_stride (strides in
// floats). threads may be null (run on the caller). Errors: n < 1, strides < n, n_rows < 0.
Status rms_norm(const float* x, int64_t x_stride, const float* w, float* y, int64_t y_stride,
                int64_t n, int64_t n_rows, float eps, ThreadContext* threads,
                Isa isa = active_isa());

// Mamba2 gated norm (spec 3.4 steps 8-9) for one token: t = silu(z) * y over d_in channels, then
// each of n_group contiguous groups of d_in/n_group channels is RMS-normalised on its own and
// multiplied by w[g*group + i]. out may alias y or z. w may be null.
void gated_group_rms_norm_row(const float* y, const float* z, const float* w, float* out,
                              int64_t d_in, int64_t n_group, float eps, Isa isa = active_isa());

// n_rows tokens with strides as rms_norm. Errors: d_in % n_group != 0, bad sizes/strides.
Status gated_group_rms_norm(const float* y, int64_t y_stride, const float* z, int64_t z_stride,
                            const float* w, float* out, int64_t out_stride, int64_t d_in,
                            int64_t n_group, int64_t n_rows, float eps, ThreadContext* threads,
                            Isa isa = active_isa());

namespace ops_internal {
double sum_squares_avx2(const float* x, int64_t n);
void scale_mul_avx2(const float* x, float scale, const float* w, float* y, int64_t n);
}  // namespace ops_internal

}  // namespace chimera
