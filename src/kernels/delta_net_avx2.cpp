// AVX2 gated-DeltaNet state update: columns j in blocks of 8 (the last one masked), each block
// walked down the S rows twice (decay + k·M, then the rank-1 update + q·M) while it sits in L1.
// Each column's sums run in i order, whatever the block, so a column's result never depends on
// its neighbours.
#include <algorithm>

#include "kernels/delta_net.h"

namespace chimera::ops_internal {

void delta_net_update_avx2(const float* prev, float* cur, int64_t S, const float* q, const float* k,
                           const float* v, float decay, float beta, float* o) {
  const __m256 vdecay = _mm256_set1_ps(decay), vbeta = _mm256_set1_ps(beta);
  for (int64_t j = 0; j < S; j += 8) {
    const __m256i mask = tail_mask_avx2(std::min<int64_t>(8, S - j));
    __m256 kv = _mm256_setzero_ps();
    for (int64_t i = 0; i < S; ++i) {
      const __m256 s = _mm256_mul_ps(_mm256_maskload_ps(prev + i * S + j, mask), vdecay);
      _mm256_maskstore_ps(cur + i * S + j, mask, s);
      kv = _mm256_fmadd_ps(_mm256_set1_ps(k[i]), s, kv);
    }
    const __m256 delta = _mm256_mul_ps(vbeta, _mm256_sub_ps(_mm256_maskload_ps(v + j, mask), kv));
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < S; ++i) {
      const __m256 s =
          _mm256_fmadd_ps(_mm256_set1_ps(k[i]), delta, _mm256_maskload_ps(cur + i * S + j, mask));
      _mm256_maskstore_ps(cur + i * S + j, mask, s);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(q[i]), s, acc);
    }
    _mm256_maskstore_ps(o + j, mask, acc);
  }
}

}  // namespace chimera::ops_internal
