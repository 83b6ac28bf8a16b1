#include "kernels/softmax.h"

#include <cmath>
#include <limits>

namespace chimera {

void softmax_row(const float* x, float* y, int64_t n) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) max = std::fmax(max, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(x[i] - max);
    y[i] = e;
    sum += static_cast<double>(e);
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) y[i] *= inv;
}

Status softmax(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t n,
               int64_t n_rows) {
  if (n < 1) return Error(ErrorCode::kInvalidArgument, "softmax: row length ", n, " < 1");
  if (n_rows < 0) return Error(ErrorCode::kInvalidArgument, "softmax: n_rows ", n_rows, " < 0");
  if (x_stride < n || y_stride < n)
    return Error(ErrorCode::kInvalidArgument, "softmax: stride (", x_stride, ", ", y_stride,
                 ") < row length ", n);
  for (int64_t r = 0; r < n_rows; ++r) softmax_row(x + r * x_stride, y + r * y_stride, n);
  return Status::Ok();
}

}  // namespace chimera
