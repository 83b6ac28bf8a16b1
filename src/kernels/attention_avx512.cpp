// AVX-512 attention tasks: the task code of attention_task.inc, still on 256-bit vectors (a
// 12-wide head fills 16 lanes no better than 8 + 8), compiled with AVX-512VL for its 32 vector
// registers (the AVX2 copy spills the softmax's constants and accumulators) and exps that run 16
// lanes at a time and scale by 2^n in one instruction. Every result is the AVX2 path's, bit for
// bit. GCC 12's _mm512_undefined_ps (behind the 512-bit min/max/round/scalef) trips
// -Wuninitialized: a known false positive, silenced for this file as in the other AVX-512 files.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/attention.h"

namespace chimera::ops_internal {
namespace {

// exp_avx2 (activation.h) on 16 lanes: the same operations up to the polynomial p ~ exp(r) and
// the integer n = fx (vroundps is vrndscaleps with scale 0, the and with a compare's mask a
// zero-masking move, blendv a masked blend); exp_avx2 then forms (p * 2^(n>>1)) * 2^(n - (n>>1)),
// vscalefps p * 2^n in one rounding. Equal: p is in [0.7, 1.42] and |n>>1| <= 64, so the first
// product of exp_avx2 is exact and both round the same exact p * 2^n once (to a subnormal, +inf or
// a normal float alike); a NaN p gives p's quiet NaN in both. Ops of activation.h itself are not
// used here, so no EVEX copy of an inline AVX2 function can stand in for the AVX2 one at link time.
[[gnu::always_inline]] inline __m512 attn_exp16(__m512 x) {
  const __m512 hi = _mm512_set1_ps(88.3762626647949f);
  const __m512 lo = _mm512_set1_ps(-88.3762626647949f);
  const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ);
  const __mmask16 over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
  x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
  const __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512 e = _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, fx));
  return _mm512_mask_blend_ps(over, e, _mm512_set1_ps(__builtin_inff()));
}
// 8 lanes (the task code's rare rescale of running sums): the low half of the 16-lane exp.
[[gnu::always_inline]] inline __m256 attn_exp(__m256 x) {
  return _mm512_castps512_ps256(attn_exp16(_mm512_zextps256_ps512(x)));
}
// attn_exp_row of attention_avx2.cpp with the exps 16 lanes at a time (half the instructions of
// the softmax's longest chains); the sum takes the same 8-lane vectors in the same order.
[[gnu::always_inline]] inline __m256 attn_exp_row(float* s, float m) {
  static_assert(kAttentionKeyBlock % 16 == 0);
  const __m512 vm = _mm512_set1_ps(m);
  __m256 vsum = _mm256_setzero_ps();
  for (int32_t c = 0; c < kAttentionKeyBlock / 16; ++c) {
    const __m512 e = attn_exp16(_mm512_sub_ps(_mm512_loadu_ps(s + 16 * c), vm));
    _mm512_storeu_ps(s + 16 * c, e);
    vsum = _mm256_add_ps(vsum, _mm512_castps512_ps256(e));
    vsum = _mm256_add_ps(vsum, _mm512_extractf32x8_ps(e, 1));
  }
  return vsum;
}
[[gnu::always_inline]] inline __m256i attn_tail_mask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx);
}

}  // namespace
}  // namespace chimera::ops_internal

#include "kernels/attention_task.inc"

namespace chimera::ops_internal {

void attention_task_avx512(const AttentionTask& task, float* scratch) {
  run_any(task, scratch, true);
}

void attention_task_avx512_runtime_hd(const AttentionTask& task, float* scratch) {
  run_any(task, scratch, false);
}

}  // namespace chimera::ops_internal
