#include "kernels/norm.h"

#include <cmath>
#include <vector>

namespace chimera {
namespace {

double sum_squares(const float* x, int64_t n, Isa isa) {
  if (ops_internal::use_avx2(isa)) return ops_internal::sum_squares_avx2(x, n);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);  // as llama.cpp
  return sum;
}

// y = (x * scale) * w: two roundings, as llama.cpp's rms_norm followed by a separate mul.
void scale_mul(const float* x, float scale, const float* w, float* y, int64_t n, Isa isa) {
  if (ops_internal::use_avx2(isa)) return ops_internal::scale_mul_avx2(x, scale, w, y, n);
  if (w) {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * scale) * w[i];
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale;
  }
}

float rms_scale(double sum, int64_t n, float eps) {
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  return 1.0f / std::sqrt(mean + eps);
}

Status check_rows(const char* op, int64_t n, int64_t n_rows,
                  std::initializer_list<int64_t> strides) {
  if (n < 1) return Error(ErrorCode::kInvalidArgument, op, ": row length ", n, " must be >= 1");
  if (n_rows < 0) return Error(ErrorCode::kInvalidArgument, op, ": n_rows ", n_rows, " < 0");
  for (int64_t s : strides)
    if (s < n)
      return Error(ErrorCode::kInvalidArgument, op, ": row stride ", s, " < row length ", n);
  return Status::Ok();
}

void for_rows(ThreadContext* threads, int64_t n_rows, FnRef<void(int64_t, int64_t)> fn) {
  if (threads) {
    threads->parallel_for(n_rows, 1, fn);
  } else if (n_rows > 0) {
    fn(0, n_rows);
  }
}

}  // namespace

void rms_norm_row(const float* x, const float* w, float* y, int64_t n, float eps, Isa isa) {
  const float scale = rms_scale(sum_squares(x, n, isa), n, eps);
  scale_mul(x, scale, w, y, n, isa);
}

Status rms_norm(const float* x, int64_t x_stride, const float* w, float* y, int64_t y_stride,
                int64_t n, int64_t n_rows, float eps, ThreadContext* threads, Isa isa) {
  CHIMERA_RETURN_IF_ERROR(check_rows("rms_norm", n, n_rows, {x_stride, y_stride}));
  for_rows(threads, n_rows, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      rms_norm_row(x + r * x_stride, w, y + r * y_stride, n, eps, isa);
  });
  return Status::Ok();
}

void gated_group_rms_norm_row(const float* y, const float* z, const float* w, float* out,
                              int64_t d_in, int64_t n_group, float eps, Isa isa) {
  swiglu(z, y, out, d_in, isa);  // silu(z) * y
  const int64_t group = d_in / n_group;
  for (int64_t g = 0; g < n_group; ++g) {
    float* o = out + g * group;
    const float scale = rms_scale(sum_squares(o, group, isa), group, eps);
    scale_mul(o, scale, w ? w + g * group : nullptr, o, group, isa);
  }
}

Status gated_group_rms_norm(const float* y, int64_t y_stride, const float* z, int64_t z_stride,
                            const float* w, float* out, int64_t out_stride, int64_t d_in,
                            int64_t n_group, int64_t n_rows, float eps, ThreadContext* threads,
                            Isa isa) {
  CHIMERA_RETURN_IF_ERROR(
      check_rows("gated_group_rms_norm", d_in, n_rows, {y_stride, z_stride, out_stride}));
  if (n_group < 1 || d_in % n_group != 0)
    return Error(ErrorCode::kInvalidArgument, "gated_group_rms_norm: d_in ", d_in,
                 " is not a multiple of n_group ", n_group);
  for_rows(threads, n_rows, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      gated_group_rms_norm_row(y + r * y_stride, z + r * z_stride, w, out + r * out_stride, d_in,
                               n_group, eps, isa);
  });
  return Status::Ok();
}

}  // namespace chimera
