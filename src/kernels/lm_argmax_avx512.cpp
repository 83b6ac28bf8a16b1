// AVX-512 VNNI half of matmul_argmax (lm_argmax.h): the int8 pass with its bounds, and the exact
// evaluation of the candidates with matmul()'s per-element arithmetic.
//
// The bound, for activation row h and weight row e (both finite): with e = s_e q_e + de and
// h = s_h q_h + dh (q integers, |q| <= 127),
//   h . e = s_h s_e (q_h . q_e) + s_e (dh . q_e) + h . de,
//   |s_e (dh . q_e)| <= |dh|_1 * s_e max|q_e| (qmax),  |h . de| <= |h|_1 * max|de| (dmax).
// q_h . q_e is exact (int32 sums). matmul's float result differs from h . e by at most
// ~10 u sum|h_i e_i| <= 10 u max|h| |e|_1 (its FMA chains and sum tree, u = 2^-24); the int8
// side's own roundings (the product of the scales, A +- B) are of the same order. The margin
// 2^-12 max|h| |e|_1 is 2^7 times all of them together, and 2^-100 more covers underflow (the
// ranges checked at packing and per row keep every scale product normal).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu_features.h"
#include "kernels/lm_argmax.h"
#include "kernels/matmul_avx512_common.h"

namespace chimera::ops_internal {
namespace {

using chimera::matmul_detail::avx512::hsum;

constexpr float kMargin = 1.0f / 4096;  // 2^-12
constexpr float kTiny = 0x1p-100f;
constexpr float kMaxAbs = 0x1p30f, kMinAbs = 0x1p-30f;  // activation range the search takes

inline __m256 load8(const uint16_t* p, GgmlType t) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (t == GgmlType::F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));  // BF16
}

inline float load1(const void* w, int64_t k, GgmlType t) {
  if (t == GgmlType::F32) return static_cast<const float*>(w)[k];
  const uint16_t b = static_cast<const uint16_t*>(w)[k];
  if (t == GgmlType::F16) return _cvtsh_ss(b);
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// matmul's element: one 8-lane accumulator, FMAs in k order, hsum, then the ragged tail as
// scalar FMAs onto the sum (FloatKernel in matmul_avx2.cpp and matmul_f16_avx512.cpp).
float exact_dot(const float* x, const void* wrow, int64_t n, GgmlType t) {
  __m256 acc = _mm256_setzero_ps();
  const int64_t k8 = n & ~int64_t(7);
  for (int64_t k = 0; k < k8; k += 8) {
    const __m256 wv = t == GgmlType::F32 ? _mm256_loadu_ps(static_cast<const float*>(wrow) + k)
                                         : load8(static_cast<const uint16_t*>(wrow) + k, t);
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), wv, acc);
  }
  __m128 s = _mm_set_ss(hsum(acc));
  for (int64_t k = k8; k < n; ++k)
    s = _mm_fmadd_ss(_mm_set_ss(x[k]), _mm_set_ss(load1(wrow, k, t)), s);
  return _mm_cvtss_f32(s);
}

struct RowQ {
  alignas(64) int8_t q[64];  // q_h, zero-padded to n_kg * 4
  int32_t offset;            // 128 * sum(q_h): the unsigned weights' bias
  float s, dh1, h1, margin;  // s_h, |dh|_1, |h|_1, kMargin * max|h|
};

// Quantizes activation row x (n <= 64); false when it is out of the search's range.
bool quantize_row(const float* x, int64_t n, RowQ& r) {
  float hmax = 0, h1 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (!(a <= kMaxAbs)) return false;  // NaN, inf or too large
    hmax = a > hmax ? a : hmax;
    h1 += a;
  }
  if (hmax < kMinAbs) return false;
  const float s = hmax / 127.0f, inv = 127.0f / hmax;
  float dh1 = 0;
  int32_t sum = 0;
  std::memset(r.q, 0, sizeof(r.q));
  for (int64_t i = 0; i < n; ++i) {
    float qf = std::nearbyint(x[i] * inv);
    qf = qf > 127.0f ? 127.0f : qf < -127.0f ? -127.0f : qf;
    r.q[i] = static_cast<int8_t>(qf);
    sum += r.q[i];
    dh1 += std::fabs(std::fma(-s, qf, x[i]));
  }
  r.offset = 128 * sum;
  r.s = s;
  r.dh1 = dh1;
  r.h1 = h1;
  r.margin = kMargin * hmax;
  return true;
}

// Rows rq[0, R) against every group: upper bounds into up (rows n_pad apart), the largest lower
// bound per row into lmax.
template <int R>
void bounds(const ArgmaxHead& h, const RowQ* rq, float* up, int64_t n_pad, float* lmax) {
  const int64_t n_groups = n_pad / 16, kg = h.n_kg;
  __m512 lm[R];
  for (int r = 0; r < R; ++r) lm[r] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __mmask16 last = static_cast<__mmask16>(
      h.n_out % 16 == 0 ? 0xFFFF : (1u << static_cast<unsigned>(h.n_out % 16)) - 1);
  for (int64_t g = 0; g < n_groups; ++g) {
    const uint8_t* wq = h.q.data() + g * kg * 64;
    __m512i acc[R];
    // Each starts at -128 sum(q_h): the unsigned weights' bias, so it ends at q_h . q_w.
    for (int r = 0; r < R; ++r) acc[r] = _mm512_set1_epi32(-rq[r].offset);
    for (int64_t k = 0; k < kg; ++k) {
      const __m512i w = _mm512_loadu_si512(wq + k * 64);
      for (int r = 0; r < R; ++r) {
        int32_t a;
        std::memcpy(&a, rq[r].q + 4 * k, 4);
        acc[r] = _mm512_dpbusd_epi32(acc[r], w, _mm512_set1_epi32(a));
      }
    }
    const __m512 sc = _mm512_loadu_ps(h.scale.data() + g * 16);
    const __m512 qm = _mm512_loadu_ps(h.qmax.data() + g * 16);
    const __m512 dm = _mm512_loadu_ps(h.dmax.data() + g * 16);
    const __m512 l1 = _mm512_loadu_ps(h.l1.data() + g * 16);
    const __mmask16 valid = g + 1 == n_groups ? last : __mmask16(0xFFFF);
    const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (int r = 0; r < R; ++r) {
      const __m512 a =
          _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r]), _mm512_mul_ps(sc, _mm512_set1_ps(rq[r].s)));
      __m512 b = _mm512_mul_ps(l1, _mm512_set1_ps(rq[r].margin));
      b = _mm512_fmadd_ps(dm, _mm512_set1_ps(rq[r].h1), b);
      b = _mm512_fmadd_ps(qm, _mm512_set1_ps(rq[r].dh1), b);
      b = _mm512_add_ps(b, _mm512_set1_ps(kTiny));
      _mm512_storeu_ps(up + r * n_pad + g * 16,
                       _mm512_mask_blend_ps(valid, ninf, _mm512_add_ps(a, b)));
      lm[r] = _mm512_mask_max_ps(lm[r], valid, lm[r], _mm512_sub_ps(a, b));
    }
  }
  for (int r = 0; r < R; ++r) lmax[r] = _mm512_reduce_max_ps(lm[r]);
}

}  // namespace

float argmax_exact_dot_avx512(const WeightMatrix& w, const float* x, int64_t v) {
  return exact_dot(x, static_cast<const uint8_t*>(w.data) + v * w.row_bytes(), w.n_in, w.type);
}

int64_t argmax_rows_avx512(const ArgmaxHead& h, const WeightMatrix& w, const float* x,
                           int64_t x_stride, int64_t m, int32_t* out, float* scratch) {
  const int64_t n_pad = (h.n_out + 15) / 16 * 16;
  RowQ rq[16];
  int64_t rows[16];
  float lmax[16];
  int64_t failed = 0;
  for (int64_t i0 = 0; i0 < m;) {
    // Up to sixteen rows, in passes of up to eight as even as they split (ten as five and five,
    // not eight and a latency-bound two): each weight vector is loaded once for a pass's rows,
    // and their accumulators are independent chains.
    int n = 0;
    for (; i0 < m && n < 16; ++i0) {
      if (quantize_row(x + i0 * x_stride, h.n_in, rq[n])) {
        rows[n++] = i0;
      } else {
        out[i0] = -1;
        ++failed;
      }
    }
    if (n == 0) break;
    const int passes = (n + 7) / 8;
    for (int p = 0; p < passes; ++p) {
      const int r0 = n * p / passes, r1 = n * (p + 1) / passes;
      switch (r1 - r0) {
#define CHIMERA_BOUNDS_CASE(R)                                     \
  case R:                                                          \
    bounds<R>(h, rq + r0, scratch + r0 * n_pad, n_pad, lmax + r0); \
    break;
        CHIMERA_BOUNDS_CASE(1)
        CHIMERA_BOUNDS_CASE(2)
        CHIMERA_BOUNDS_CASE(3)
        CHIMERA_BOUNDS_CASE(4)
        CHIMERA_BOUNDS_CASE(5)
        CHIMERA_BOUNDS_CASE(6)
        CHIMERA_BOUNDS_CASE(7)
        default:
          bounds<8>(h, rq + r0, scratch + r0 * n_pad, n_pad, lmax + r0);
#undef CHIMERA_BOUNDS_CASE
      }
    }
    // Candidates in index order, exactly; the first largest wins (no NaN: finite inputs).
    const uint8_t* wd = static_cast<const uint8_t*>(w.data);
    const size_t rb = w.row_bytes();
    for (int r = 0; r < n; ++r) {
      const float* xr = x + rows[r] * x_stride;
      const __m512 thr = _mm512_set1_ps(lmax[r]);
      int32_t best = -1;
      float best_v = 0;
      for (int64_t g = 0; g < n_pad; g += 16) {
        uint32_t mask =
            _mm512_cmp_ps_mask(_mm512_loadu_ps(scratch + r * n_pad + g), thr, _CMP_GE_OQ);
        while (mask) {
          const int64_t v = g + __builtin_ctz(mask);
          mask &= mask - 1;
          const float y = exact_dot(xr, wd + v * rb, h.n_in, w.type);
          if (best < 0 || y > best_v) best = static_cast<int32_t>(v), best_v = y;
        }
      }
      out[rows[r]] = best;
      failed += best < 0;  // cannot happen (the row of the largest lower bound is a candidate)
    }
  }
  return failed;
}

}  // namespace chimera::ops_internal
