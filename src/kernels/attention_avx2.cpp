// AVX2 attention tasks: the task code of attention_task.inc with the AVX2 exp.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/attention.h"

namespace chimera::ops_internal {
namespace {
[[gnu::always_inline]] inline __m256 attn_exp(__m256 x) {
  return exp_avx2(x);
}
// s[0..kAttentionKeyBlock) = exp(s - m) in place; returns the sum of its vectors, added in order
// to a zero vector.
[[gnu::always_inline]] inline __m256 attn_exp_row(float* s, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 vsum = _mm256_setzero_ps();
  for (int32_t c = 0; c < kAttentionKeyBlock / 8; ++c) {
    const __m256 e = attn_exp(_mm256_sub_ps(_mm256_loadu_ps(s + 8 * c), vm));
    _mm256_storeu_ps(s + 8 * c, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  return vsum;
}
[[gnu::always_inline]] inline __m256i attn_tail_mask(int64_t n) {
  return tail_mask_avx2(n);
}
}  // namespace
}  // namespace chimera::ops_internal

#include "kernels/attention_task.inc"

namespace chimera::ops_internal {

void attention_task_avx2(const AttentionTask& task, float* scratch) {
  run_any(task, scratch, true);
}

void attention_task_avx2_runtime_hd(const AttentionTask& task, float* scratch) {
  run_any(task, scratch, false);
}

}  // namespace chimera::ops_internal
