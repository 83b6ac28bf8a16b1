// AVX2 SiLU / SwiGLU / GeGLU: full vectors, then the tail through the same vector code with masks
// so an element's result does not depend on its index modulo 8.
#include "kernels/activation.h"

namespace chimera::ops_internal {

void silu_avx2(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, silu_avx2_vec(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i m = tail_mask_avx2(n - i);
    _mm256_maskstore_ps(y + i, m, silu_avx2_vec(_mm256_maskload_ps(x + i, m)));
  }
}

namespace {
// y = act(gate) * up, 8 lanes at a time and a masked tail: every element gets the same operations
// wherever it sits in the array.
template <__m256 (*kAct)(__m256)>
void gated_avx2(const float* gate, const float* up, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = kAct(_mm256_loadu_ps(gate + i));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(g, _mm256_loadu_ps(up + i)));
  }
  if (i < n) {
    const __m256i m = tail_mask_avx2(n - i);
    const __m256 g = kAct(_mm256_maskload_ps(gate + i, m));
    _mm256_maskstore_ps(y + i, m, _mm256_mul_ps(g, _mm256_maskload_ps(up + i, m)));
  }
}

// gelu_tanh(x) = x / (1 + exp(-2 sqrt(2/pi) (x + 0.044715 x^3))), the exponent formed as
// x (a + b x^2) with a = -2 sqrt(2/pi), b = a * 0.044715. Large |x| saturate cleanly: exp gives
// +inf (result -0) or 0 (result x); NaN propagates.
inline __m256 gelu_tanh_avx2_vec(__m256 x) {
  const __m256 a = _mm256_set1_ps(-1.5957691216057308f);
  const __m256 b = _mm256_set1_ps(-0.07135481627260025f);
  const __m256 arg = _mm256_mul_ps(x, _mm256_fmadd_ps(b, _mm256_mul_ps(x, x), a));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), exp_avx2(arg)));
}
}  // namespace

void swiglu_avx2(const float* gate, const float* up, float* y, int64_t n) {
  gated_avx2<silu_avx2_vec>(gate, up, y, n);
}

void geglu_tanh_avx2(const float* gate, const float* up, float* y, int64_t n) {
  gated_avx2<gelu_tanh_avx2_vec>(gate, up, y, n);
}

}  // namespace chimera::ops_internal
