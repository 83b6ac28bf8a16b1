// Row softmax: subtract the row max, exp, sum in double (llama.cpp soft_max), scale by 1/sum.
// Scalar only: it serves the MoE router and sampling, where rows are short or once per token;
// attention has its own online softmax (attention.h).
#pragma once

#include <cstdint>

#include "core/status.h"

namespace chimera {

// One row; x and y may alias. n >= 1.
void softmax_row(const float* x, float* y, int64_t n);

// n_rows rows of n with strides (in floats). Errors: n < 1, n_rows < 0, stride < n.
Status softmax(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t n,
               int64_t n_rows);

}  // namespace chimera
