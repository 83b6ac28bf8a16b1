// AVX2 activation quantizers, bit-identical to the scalar ones in act_quant.cpp: the scale comes
// from the same scalar expressions, each value goes through the same IEEE multiply, NaN -> 0,
// clamp to [-127, 127] and round-to-nearest-even, and max/min/compare are exact.
#include <immintrin.h>

#include "kernels/act_quant.h"

namespace chimera {
namespace {

const __m256 kAbsMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));

// max over lanes of |v| ignoring NaN: max_ps returns its second operand when either is NaN.
inline __m256 abs_max_acc(__m256 v, __m256 acc) {
  return _mm256_max_ps(_mm256_and_ps(v, kAbsMask), acc);
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// x * scale -> NaN to 0, clamp to [-127, 127], round to nearest even, as int32 lanes.
inline __m256i quantize8(__m256 x, __m256 scale) {
  __m256 v = _mm256_mul_ps(x, scale);
  v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
  return _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// Four vectors of int32 lanes (values 0..31 in order) -> 32 int8 in order.
inline __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b);  // a0-3 b0-3 | a4-7 b4-7
  const __m256i cd = _mm256_packs_epi32(c, d);
  const __m256i q = _mm256_packs_epi16(ab, cd);  // a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
  return _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

}  // namespace

void quantize_act_q8_avx2(const float* x, int64_t n, ActBlockQ8* out) {
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m256i eight16 = _mm256_set1_epi16(8);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    const __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
    const __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
    __m256 acc = _mm256_setzero_ps();
    acc = abs_max_acc(v0, acc);
    acc = abs_max_acc(v1, acc);
    acc = abs_max_acc(v2, acc);
    acc = abs_max_acc(v3, acc);
    const float amax = hmax(acc);
    const float d = amax / 127.0f;
    const float id = amax != 0 ? 127.0f / amax : 0.0f;
    ActBlockQ8& blk = out[b];
    blk.d = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
    blk.pad_ = 0;
    const __m256 s = _mm256_set1_ps(id);
    const __m256i q =
        pack32(quantize8(v0, s), quantize8(v1, s), quantize8(v2, s), quantize8(v3, s));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(blk.qs), q);
    // 8 x (sum of 4 consecutive values), in 32-bit lanes.
    const __m256i sum8 = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), eight16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(blk.sum8), sum8);
  }
}

void quantize_act_q8k_avx2(const float* x, int64_t n, BlockQ8_K* out) {
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const float* xb = x + b * kQK_K;
    BlockQ8_K& blk = out[b];
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < kQK_K; k += 8) acc = abs_max_acc(_mm256_loadu_ps(xb + k), acc);
    const float amax = hmax(acc);
    if (amax == 0) {
      blk.d = 0;
      for (int j = 0; j < kQK_K; ++j) blk.qs[j] = 0;
      for (int g = 0; g < kQK_K / 16; ++g) blk.bsums[g] = 0;
      continue;
    }
    // The first value of largest magnitude, with its sign (as the scalar loop's strict '>').
    float max = 0;
    const __m256 target = _mm256_set1_ps(amax);
    for (int k = 0; k < kQK_K; k += 8) {
      const __m256 a = _mm256_and_ps(_mm256_loadu_ps(xb + k), kAbsMask);
      const int mask = _mm256_movemask_ps(_mm256_cmp_ps(a, target, _CMP_EQ_OQ));
      if (mask != 0) {
        max = xb[k + __builtin_ctz(static_cast<unsigned>(mask))];
        break;
      }
    }
    const float iscale = -127.0f / max;
    const __m256 s = _mm256_set1_ps(iscale);
    for (int k = 0; k < kQK_K; k += 32) {
      const float* xk = xb + k;
      const __m256i q =
          pack32(quantize8(_mm256_loadu_ps(xk), s), quantize8(_mm256_loadu_ps(xk + 8), s),
                 quantize8(_mm256_loadu_ps(xk + 16), s), quantize8(_mm256_loadu_ps(xk + 24), s));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(blk.qs + k), q);
      // Sums of 16: sums of 4 in 32-bit lanes, then two horizontal adds within each 128-bit half.
      __m256i s4 = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16);
      s4 = _mm256_hadd_epi32(s4, s4);
      s4 = _mm256_hadd_epi32(s4, s4);
      blk.bsums[k / 16] = static_cast<int16_t>(_mm256_extract_epi32(s4, 0));
      blk.bsums[k / 16 + 1] = static_cast<int16_t>(_mm256_extract_epi32(s4, 4));
    }
    blk.d = 1.0f / iscale;
  }
}

}  // namespace chimera
