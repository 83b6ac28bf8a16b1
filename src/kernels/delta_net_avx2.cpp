// AVX2 gated-DeltaNet state update: columns j in blocks of 8 (four at a time where possible, the
// last one masked), each walked down the S rows twice (decay + k·M, then the rank-1 update +
// q·M) while it sits in L1.
// Each column's sums run in i order, whatever the block, so a column's result never depends on
// its neighbours.
#include <algorithm>

#include "kernels/delta_net.h"

namespace chimera::ops_internal {

namespace {

// Columns [j, j + 8*NB) with NB full blocks: NB independent sum chains hide the FMA latency,
// and each k[i] / q[i] broadcast serves NB blocks. A column's operations are exactly those of
// the one-block loop below, so results do not depend on which loop handled it.
template <int NB>
void update_blocks(const float* prev, float* cur, int64_t S, int64_t j, const float* q,
                   const float* k, const float* v, __m256 vdecay, __m256 vbeta, float* o) {
  __m256 kv[NB], delta[NB], acc[NB];
  for (int b = 0; b < NB; ++b) kv[b] = _mm256_setzero_ps();
  for (int64_t i = 0; i < S; ++i) {
    const __m256 ki = _mm256_set1_ps(k[i]);
    for (int b = 0; b < NB; ++b) {
      const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(prev + i * S + j + 8 * b), vdecay);
      _mm256_storeu_ps(cur + i * S + j + 8 * b, s);
      kv[b] = _mm256_fmadd_ps(ki, s, kv[b]);
    }
  }
  for (int b = 0; b < NB; ++b) {
    delta[b] = _mm256_mul_ps(vbeta, _mm256_sub_ps(_mm256_loadu_ps(v + j + 8 * b), kv[b]));
    acc[b] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < S; ++i) {
    const __m256 ki = _mm256_set1_ps(k[i]), qi = _mm256_set1_ps(q[i]);
    for (int b = 0; b < NB; ++b) {
      const __m256 s = _mm256_fmadd_ps(ki, delta[b], _mm256_loadu_ps(cur + i * S + j + 8 * b));
      _mm256_storeu_ps(cur + i * S + j + 8 * b, s);
      acc[b] = _mm256_fmadd_ps(qi, s, acc[b]);
    }
  }
  for (int b = 0; b < NB; ++b) _mm256_storeu_ps(o + j + 8 * b, acc[b]);
}

}  // namespace

void delta_net_update_avx2(const float* prev, float* cur, int64_t S, const float* q, const float* k,
                           const float* v, float decay, float beta, float* o) {
  const __m256 vdecay = _mm256_set1_ps(decay), vbeta = _mm256_set1_ps(beta);
  int64_t j = 0;
  for (; j + 32 <= S; j += 32) update_blocks<4>(prev, cur, S, j, q, k, v, vdecay, vbeta, o);
  for (; j < S; j += 8) {  // remaining blocks one at a time, the last one masked
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
