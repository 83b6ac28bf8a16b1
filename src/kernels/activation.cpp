#include "kernels/activation.h"

#include <cmath>

namespace chimera {

float silu_scalar(float x) {
  return x / (1.0f + std::exp(-x));
}

float softplus(float x) {
  return x > 20.0f ? x : std::log1p(std::exp(x));
}

void silu(const float* x, float* y, int64_t n, Isa isa) {
  if (ops_internal::use_avx2(isa)) return ops_internal::silu_avx2(x, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] = silu_scalar(x[i]);
}

void swiglu(const float* gate, const float* up, float* y, int64_t n, Isa isa) {
  if (ops_internal::use_avx2(isa)) return ops_internal::swiglu_avx2(gate, up, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] = silu_scalar(gate[i]) * up[i];
}

void relu_squared(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float r = x[i] < 0.0f ? 0.0f : x[i];  // NaN stays NaN, as in torch
    y[i] = r * r;
  }
}

void geglu_tanh(const float* gate, const float* up, float* y, int64_t n, Isa isa) {
  if (ops_internal::use_avx2(isa)) return ops_internal::geglu_tanh_avx2(gate, up, y, n);
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  for (int64_t i = 0; i < n; ++i) {
    const float x = gate[i];
    y[i] = 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x))) * up[i];
  }
}

}  // namespace chimera
