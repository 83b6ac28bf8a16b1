// AVX2 SiLU / SwiGLU: full vectors, then the tail through the same vector code with masks so an
// element's result does not depend on its index modulo 8.
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

void swiglu_avx2(const float* gate, const float* up, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = silu_avx2_vec(_mm256_loadu_ps(gate + i));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(g, _mm256_loadu_ps(up + i)));
  }
  if (i < n) {
    const __m256i m = tail_mask_avx2(n - i);
    const __m256 g = silu_avx2_vec(_mm256_maskload_ps(gate + i, m));
    _mm256_maskstore_ps(y + i, m, _mm256_mul_ps(g, _mm256_maskload_ps(up + i, m)));
  }
}

}  // namespace chimera::ops_internal
