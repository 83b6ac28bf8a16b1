// AVX2 blocked online-softmax attention for one (query, kv head) group. The arithmetic of a key's
// score, of the block sum and of the accumulator is fixed by the key block and head_dim only:
// every key gets its own accumulator chain (four keys run side by side for ILP, a lone key runs
// the same chain), the exp is vectorised over the whole padded block with padding lanes = 0.
#include <algorithm>
#include <limits>

#include "kernels/attention.h"

namespace chimera::ops_internal {
namespace {

constexpr int32_t kKB = kAttentionKeyBlock;
static_assert(kKB % 8 == 0, "the block exp/sum runs on whole vectors");

// Keys [j0, j0+nb) of kv heads [g0, g0+ng) into dst[g][j][hd_pad], zero-padded: each key's row
// segment is read once, contiguously.
void gather_block_avx2(const AttentionParams& p, const void* const* pages, int32_t g0, int32_t ng,
                       int32_t j0, int32_t nb, int64_t hd_pad, float* dst) {
  const int64_t row = static_cast<int64_t>(p.n_head_kv) * p.head_dim;
  const int32_t hd = p.head_dim;
  for (int32_t j = 0; j < nb; ++j) {
    const int32_t key = j0 + j;
    const int64_t off = (key % p.page_size) * row + static_cast<int64_t>(g0) * hd;
    for (int32_t g = 0; g < ng; ++g) {
      float* d = dst + (static_cast<int64_t>(g) * kKB + j) * hd_pad;
      int32_t e = 0;
      if (p.kv_type == GgmlType::F16) {
        const uint16_t* src = static_cast<const uint16_t*>(pages[key / p.page_size]) + off +
                              static_cast<int64_t>(g) * hd;
        for (; e + 8 <= hd; e += 8)
          _mm256_storeu_ps(
              d + e, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + e))));
        for (; e < hd; ++e) d[e] = fp16_to_f32(src[e]);  // exact, same values as F16C
      } else {
        const float* src = static_cast<const float*>(pages[key / p.page_size]) + off +
                           static_cast<int64_t>(g) * hd;
        for (; e + 8 <= hd; e += 8) _mm256_storeu_ps(d + e, _mm256_loadu_ps(src + e));
        for (; e < hd; ++e) d[e] = src[e];
      }
      for (; e < hd_pad; ++e) d[e] = 0.0f;
    }
  }
}

}  // namespace

void attention_task_avx2(const AttentionTask& task, float* scratch) {
  const AttentionParams& p = *task.params;
  const int64_t hd = p.head_dim;
  const int64_t hd_pad = (hd + 7) / 8 * 8;
  const int64_t nvec = hd_pad / 8;
  const int32_t rep = p.n_head / p.n_head_kv;
  const int32_t ng = task.kv_end - task.kv_begin;
  const int32_t nh = ng * rep;  // query heads of this task, from head kv_begin*rep on
  float* kblk = scratch;
  float* vblk = kblk + ng * kKB * hd_pad;
  float* qpad = vblk + ng * kKB * hd_pad;
  float* acc = qpad + nh * hd_pad;
  float* s = acc + nh * hd_pad;
  float* m = s + kKB;
  float* l = m + nh;
  const float* q_task = task.q + static_cast<int64_t>(task.kv_begin) * rep * hd;
  float* out_task = task.out + static_cast<int64_t>(task.kv_begin) * rep * hd;
  for (int32_t r = 0; r < nh; ++r) {
    std::copy(q_task + r * hd, q_task + (r + 1) * hd, qpad + r * hd_pad);
    std::fill(qpad + r * hd_pad + hd, qpad + (r + 1) * hd_pad, 0.0f);
    std::fill(acc + r * hd_pad, acc + (r + 1) * hd_pad, 0.0f);
    m[r] = -std::numeric_limits<float>::infinity();
    l[r] = 0.0f;
  }
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int32_t j0 = 0; j0 < task.n_visible; j0 += kKB) {
    const int32_t nb = std::min(kKB, task.n_visible - j0);
    gather_block_avx2(p, task.table->k_pages, task.kv_begin, ng, j0, nb, hd_pad, kblk);
    gather_block_avx2(p, task.table->v_pages, task.kv_begin, ng, j0, nb, hd_pad, vblk);
    for (int32_t r = 0; r < nh; ++r) {
      const float* q = qpad + r * hd_pad;
      const float* kg = kblk + (r / rep) * kKB * hd_pad;  // this head's kv head
      const float* vg = vblk + (r / rep) * kKB * hd_pad;
      int32_t j = 0;
      for (; j + 4 <= nb; j += 4) {
        const float* k0 = kg + j * hd_pad;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t c = 0; c < nvec; ++c) {
          const __m256 qv = _mm256_loadu_ps(q + 8 * c);
          a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 8 * c), a0);
          a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + hd_pad + 8 * c), a1);
          a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 2 * hd_pad + 8 * c), a2);
          a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 3 * hd_pad + 8 * c), a3);
        }
        s[j] = hsum_avx2(a0) * p.scale;
        s[j + 1] = hsum_avx2(a1) * p.scale;
        s[j + 2] = hsum_avx2(a2) * p.scale;
        s[j + 3] = hsum_avx2(a3) * p.scale;
      }
      for (; j < nb; ++j) {
        const float* k0 = kg + j * hd_pad;
        __m256 a0 = _mm256_setzero_ps();
        for (int64_t c = 0; c < nvec; ++c)
          a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), _mm256_loadu_ps(k0 + 8 * c), a0);
        s[j] = hsum_avx2(a0) * p.scale;
      }
      for (; j < kKB; ++j) s[j] = -std::numeric_limits<float>::infinity();

      __m256 vmax = neg_inf;
      for (int32_t c = 0; c < kKB / 8; ++c) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + 8 * c));
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, vmax);
      float block_max = lanes[0];
      for (int i = 1; i < 8; ++i) block_max = std::max(block_max, lanes[i]);
      const float new_max = std::max(m[r], block_max);
      const float alpha = _mm256_cvtss_f32(exp_avx2(_mm256_set1_ps(m[r] - new_max)));
      const __m256 vnew_max = _mm256_set1_ps(new_max);
      __m256 vsum = _mm256_setzero_ps();
      for (int32_t c = 0; c < kKB / 8; ++c) {  // padding scores are -inf: exp gives exactly 0
        const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + 8 * c), vnew_max));
        _mm256_storeu_ps(s + 8 * c, e);
        vsum = _mm256_add_ps(vsum, e);
      }
      l[r] = l[r] * alpha + hsum_avx2(vsum);
      const __m256 valpha = _mm256_set1_ps(alpha);
      float* a = acc + r * hd_pad;
      // Four independent accumulator chains over head_dim; per element the same ops in the
      // same order (scale by alpha, then p_j·v_j for j in key order) however they are grouped.
      int64_t c = 0;
      for (; c + 4 <= nvec; c += 4) {
        __m256 v0 = _mm256_mul_ps(_mm256_loadu_ps(a + 8 * c), valpha);
        __m256 v1 = _mm256_mul_ps(_mm256_loadu_ps(a + 8 * c + 8), valpha);
        __m256 v2 = _mm256_mul_ps(_mm256_loadu_ps(a + 8 * c + 16), valpha);
        __m256 v3 = _mm256_mul_ps(_mm256_loadu_ps(a + 8 * c + 24), valpha);
        for (int32_t jj = 0; jj < nb; ++jj) {
          const __m256 w = _mm256_set1_ps(s[jj]);
          const float* vr = vg + jj * hd_pad + 8 * c;
          v0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr), v0);
          v1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 8), v1);
          v2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 16), v2);
          v3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 24), v3);
        }
        _mm256_storeu_ps(a + 8 * c, v0);
        _mm256_storeu_ps(a + 8 * c + 8, v1);
        _mm256_storeu_ps(a + 8 * c + 16, v2);
        _mm256_storeu_ps(a + 8 * c + 24, v3);
      }
      for (; c < nvec; ++c) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(a + 8 * c), valpha);
        for (int32_t jj = 0; jj < nb; ++jj)
          v = _mm256_fmadd_ps(_mm256_set1_ps(s[jj]), _mm256_loadu_ps(vg + jj * hd_pad + 8 * c), v);
        _mm256_storeu_ps(a + 8 * c, v);
      }
      m[r] = new_max;
    }
  }
  for (int32_t r = 0; r < nh; ++r) {
    const __m256 vl = _mm256_set1_ps(l[r]);
    float* o = out_task + r * hd;
    const float* a = acc + r * hd_pad;
    int64_t e = 0;
    for (; e + 8 <= hd; e += 8) _mm256_storeu_ps(o + e, _mm256_div_ps(_mm256_loadu_ps(a + e), vl));
    for (; e < hd; ++e) o[e] = a[e] / l[r];  // IEEE division: same as the vector lanes
  }
}

}  // namespace chimera::ops_internal
