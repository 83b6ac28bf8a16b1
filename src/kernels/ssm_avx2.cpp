// AVX2 Mamba2 conv and scan. Conv: 8 channels per vector, the K taps and the K-1 history values
// held in registers across tokens; a ragged last block runs the same vector code with masks.
// Scan: one head at a time, N in vectors with four partial sums (fixed by n, not by T).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/ssm.h"

namespace chimera::ops_internal {

void ssm_conv_avx2(const SsmConvArgs& a, int32_t c_begin, int32_t c_end) {
  const int32_t K = a.kernel_size;
  for (int32_t c0 = c_begin; c0 < c_end; c0 += 8) {
    const int32_t nc = std::min(8, c_end - c0);
    const __m256i mask = tail_mask_avx2(nc);
    __m256 w[kSsmMaxConvKernel];
    __m256 hist[kSsmMaxConvKernel];  // hist[i] = X(t + i) for the next token t, i < K-1
    alignas(32) float lane[8];
    for (int32_t k = 0; k < K; ++k) {
      for (int32_t i = 0; i < 8; ++i)
        lane[i] = i < nc ? a.weight[static_cast<int64_t>(c0 + i) * K + k] : 0.0f;
      w[k] = _mm256_load_ps(lane);
    }
    const float* in = a.conv_state_in ? a.conv_state_in : a.conv_state;
    for (int32_t k = 0; k < K - 1; ++k) {
      for (int32_t i = 0; i < 8; ++i)
        lane[i] = i < nc ? in[static_cast<int64_t>(c0 + i) * (K - 1) + k] : 0.0f;
      hist[k] = _mm256_load_ps(lane);
    }
    const __m256 bias = a.bias ? _mm256_maskload_ps(a.bias + c0, mask) : _mm256_setzero_ps();
    for (int64_t t = 0; t < a.n_tokens; ++t) {
      const __m256 xv = _mm256_maskload_ps(a.x + t * a.x_stride + c0, mask);
      __m256 acc = _mm256_setzero_ps();
      for (int32_t k = 0; k < K - 1; ++k) acc = _mm256_fmadd_ps(w[k], hist[k], acc);
      acc = _mm256_fmadd_ps(w[K - 1], xv, acc);
      for (int32_t k = 0; k + 1 < K - 1; ++k) hist[k] = hist[k + 1];
      if (K > 1) hist[K - 2] = xv;
      const __m256 pre = _mm256_add_ps(acc, bias);
      _mm256_maskstore_ps(a.out + t * a.out_stride + c0, mask, a.silu ? silu_avx2_vec(pre) : pre);
      if (a.conv_state_steps && t + 1 < a.n_tokens) {  // the state after token t
        float* step = a.conv_state_steps[t];
        for (int32_t k = 0; k < K - 1; ++k) {
          _mm256_store_ps(lane, hist[k]);
          for (int32_t i = 0; i < nc; ++i)
            step[static_cast<int64_t>(c0 + i) * (K - 1) + k] = lane[i];
        }
      }
    }
    for (int32_t k = 0; k < K - 1; ++k) {
      _mm256_store_ps(lane, hist[k]);
      for (int32_t i = 0; i < nc; ++i)
        a.conv_state[static_cast<int64_t>(c0 + i) * (K - 1) + k] = lane[i];
    }
  }
}

void ssm_scan_head_avx2(const SsmScanArgs& a, int32_t h) {
  const int64_t P = a.head_dim, N = a.state_size;
  const int64_t n_full = N / 8;
  const bool ragged = N % 8 != 0;
  const __m256i tail = tail_mask_avx2(N % 8);
  const int32_t g = h / (a.n_head / a.n_group);
  float* S_last = a.state + static_cast<int64_t>(h) * P * N;
  const float* S_in = a.state_in ? a.state_in + static_cast<int64_t>(h) * P * N : S_last;
  if (a.n_tokens == 0 && S_in != S_last) std::copy(S_in, S_in + P * N, S_last);
  const float* prev = S_in;  // token 0 reads the incoming state
  bool streamed = false;
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    // Where the state after token t goes: its step buffer, or `state` for the last token.
    float* S = a.state_steps && t + 1 < a.n_tokens
                   ? a.state_steps[t] + static_cast<int64_t>(h) * P * N
                   : S_last;
    // The last token's state is not read again before the next step has streamed the weights
    // through the caches: non-temporal stores skip reading its lines first (a third of the
    // state traffic of a decode step). Same values, only the store instruction differs.
    const bool stream =
        t + 1 == a.n_tokens && !ragged && S != prev && reinterpret_cast<uintptr_t>(S) % 32 == 0;
    streamed = streamed || stream;
    auto store = [stream](float* dst, __m256 v) {
      if (stream) {
        _mm256_stream_ps(dst, v);
      } else {
        _mm256_storeu_ps(dst, v);
      }
    };
    // delta and dA in scalar libm arithmetic, identical to the scalar path.
    const float delta = softplus(a.dt[t * a.dt_stride + h] + (a.dt_bias ? a.dt_bias[h] : 0.0f));
    const float dA = std::exp(delta * a.A[h]);
    const __m256 vdA = _mm256_set1_ps(dA);
    const float* B = a.B + t * a.B_stride + g * N;
    const float* C = a.C + t * a.C_stride + g * N;
    const float* x = a.x + t * a.x_stride + h * P;
    float* y = a.y + t * a.y_stride + h * P;
    // Rows p run in pairs sharing the loads of B and C; each row keeps its own state and four
    // partial sums (sum index = vector index mod 4), so a row's arithmetic is the same paired
    // or alone.
    int64_t p = 0;
    for (; p + 2 <= P; p += 2) {
      const float xv0 = x[p], xv1 = x[p + 1];
      // both x values are read before y is written: y may alias x
      const __m256 xdt0 = _mm256_set1_ps(xv0 * delta), xdt1 = _mm256_set1_ps(xv1 * delta);
      float* s0 = S + p * N;
      float* s1 = s0 + N;
      const float* r0 = prev + p * N;
      const float* r1 = r0 + N;
      __m256 u[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
      __m256 v[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
      int64_t c = 0;
      for (; c < n_full; ++c) {
        const __m256 b = _mm256_loadu_ps(B + 8 * c), cc = _mm256_loadu_ps(C + 8 * c);
        const __m256 n0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + 8 * c), vdA, _mm256_mul_ps(b, xdt0));
        const __m256 n1 = _mm256_fmadd_ps(_mm256_loadu_ps(r1 + 8 * c), vdA, _mm256_mul_ps(b, xdt1));
        store(s0 + 8 * c, n0);
        store(s1 + 8 * c, n1);
        u[c & 3] = _mm256_fmadd_ps(n0, cc, u[c & 3]);
        v[c & 3] = _mm256_fmadd_ps(n1, cc, v[c & 3]);
      }
      if (ragged) {  // masked lanes: state 0, B 0, C 0 -> contribute exactly 0
        const __m256 b = _mm256_maskload_ps(B + 8 * c, tail),
                     cc = _mm256_maskload_ps(C + 8 * c, tail);
        const __m256 n0 =
            _mm256_fmadd_ps(_mm256_maskload_ps(r0 + 8 * c, tail), vdA, _mm256_mul_ps(b, xdt0));
        const __m256 n1 =
            _mm256_fmadd_ps(_mm256_maskload_ps(r1 + 8 * c, tail), vdA, _mm256_mul_ps(b, xdt1));
        _mm256_maskstore_ps(s0 + 8 * c, tail, n0);
        _mm256_maskstore_ps(s1 + 8 * c, tail, n1);
        u[c & 3] = _mm256_fmadd_ps(n0, cc, u[c & 3]);
        v[c & 3] = _mm256_fmadd_ps(n1, cc, v[c & 3]);
      }
      const float t0 =
          hsum_avx2(_mm256_add_ps(_mm256_add_ps(u[0], u[1]), _mm256_add_ps(u[2], u[3])));
      const float t1 =
          hsum_avx2(_mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3])));
      y[p] = a.D ? t0 + a.D[h] * xv0 : t0;
      y[p + 1] = a.D ? t1 + a.D[h] * xv1 : t1;
    }
    for (; p < P; ++p) {
      const float xv = x[p];
      const __m256 x_dt = _mm256_set1_ps(xv * delta);
      float* s = S + p * N;
      const float* r = prev + p * N;
      __m256 sum[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                       _mm256_setzero_ps()};
      int64_t c = 0;
      for (; c < n_full; ++c) {
        const __m256 sn = _mm256_fmadd_ps(_mm256_loadu_ps(r + 8 * c), vdA,
                                          _mm256_mul_ps(_mm256_loadu_ps(B + 8 * c), x_dt));
        store(s + 8 * c, sn);
        sum[c & 3] = _mm256_fmadd_ps(sn, _mm256_loadu_ps(C + 8 * c), sum[c & 3]);
      }
      if (ragged) {
        const __m256 sn = _mm256_fmadd_ps(_mm256_maskload_ps(r + 8 * c, tail), vdA,
                                          _mm256_mul_ps(_mm256_maskload_ps(B + 8 * c, tail), x_dt));
        _mm256_maskstore_ps(s + 8 * c, tail, sn);
        sum[c & 3] = _mm256_fmadd_ps(sn, _mm256_maskload_ps(C + 8 * c, tail), sum[c & 3]);
      }
      const float total =
          hsum_avx2(_mm256_add_ps(_mm256_add_ps(sum[0], sum[1]), _mm256_add_ps(sum[2], sum[3])));
      y[p] = a.D ? total + a.D[h] * xv : total;
    }
    prev = S;
  }
  if (streamed) _mm_sfence();  // order the streamed state before the caller's hand-off
}

}  // namespace chimera::ops_internal
