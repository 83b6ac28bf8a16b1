// Elementwise activations (SiLU, SwiGLU, squared ReLU, softplus) and the choice between the
// scalar reference path and the AVX2 path that every op in this folder shares.
//
// Exactness: every element is computed by the same instructions wherever it sits in the array
// (the AVX2 path handles the ragged tail with masked loads through the same vector code), so a
// token's activations never depend on how many tokens were processed together.
#pragma once

#include <cstdint>

#include "kernels/cpu_features.h"

namespace chimera {

// Which implementation an op runs: every op takes an Isa (kernels/cpu_features.h), default
// active_isa(). These ops have a scalar reference and an AVX2 path; kAvx512 runs the AVX2 path.
// The paths round differently (a polynomial exp and FMA on AVX2), so a process must use one ISA
// for all its tokens (active_isa() is fixed per process); tests pass each ISA explicitly.

// y[i] = x[i] / (1 + exp(-x[i])). x and y may alias.
void silu(const float* x, float* y, int64_t n, Isa isa = active_isa());

// y[i] = silu(gate[i]) * up[i] (llama.cpp swiglu_split). Any of the arrays may alias.
void swiglu(const float* gate, const float* up, float* y, int64_t n, Isa isa = active_isa());

// y[i] = max(x[i], 0)^2 (squared ReLU, Nemotron-H's FFN). One rounding, so it is the same on
// every ISA and needs no AVX2 path. x and y may alias.
void relu_squared(const float* x, float* y, int64_t n);

// y = gelu_tanh(gate) * up, gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GeGLU,
// the "gelu_pytorch_tanh" of Gemma). Element-local; y may alias gate or up. The scalar path uses
// libm tanh; the AVX2 path the identity 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)) with the
// polynomial exp (no cancellation for u << 0, where the result is tiny).
void geglu_tanh(const float* gate, const float* up, float* y, int64_t n, Isa isa = active_isa());

// softplus(x) = x > 20 ? x : log1p(exp(x)) — log1p for HF parity (spec 3.4 step 5). Scalar in
// every path: it runs once per (token, head), so both paths share it bit for bit.
float softplus(float x);

// Scalar SiLU with libm expf, shared by the scalar paths of several ops.
float silu_scalar(float x);

namespace ops_internal {
// The ops run their AVX2 code for kAvx2 and kAvx512, when the CPU has AVX2 + FMA + F16C.
inline bool use_avx2(Isa isa) {
  return isa != Isa::kScalar && isa_supported(Isa::kAvx2);
}
// AVX2 entry points (activation_avx2.cpp); callers go through the dispatching functions above.
void silu_avx2(const float* x, float* y, int64_t n);
void swiglu_avx2(const float* gate, const float* up, float* y, int64_t n);
void geglu_tanh_avx2(const float* gate, const float* up, float* y, int64_t n);
}  // namespace ops_internal

}  // namespace chimera

// ---- AVX2 helpers, visible only to translation units compiled with AVX2+FMA (*_avx2.cpp) ----
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace chimera::ops_internal {

// exp for 8 floats: Cody-Waite range reduction to r in [-ln2/2, ln2/2] and a degree-6 polynomial
// (relative error ~2 ulp). Inputs above 88.376 give +inf (true overflow starts at 88.72, so the
// band in between loses its huge finite values), inputs below -88.376 give exactly 0 (so
// exp(-inf) = 0); NaN propagates (max/min return their second operand for NaN).
inline __m256 exp_avx2(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f);
  const __m256 lo = _mm256_set1_ps(-88.3762626647949f);
  const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_NLT_UQ);  // false only for x < lo (not NaN)
  const __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);   // x > hi (not NaN): +inf
  x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^fx; fx in [-127, 128]: split it in two halves so neither exponent field overflows.
  const __m256i n = _mm256_cvtps_epi32(fx);
  const __m256i n1 = _mm256_srai_epi32(n, 1);
  const __m256i n2 = _mm256_sub_epi32(n, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  const __m256 e = _mm256_and_ps(_mm256_mul_ps(_mm256_mul_ps(p, s1), s2), keep);  // x < lo: 0
  return _mm256_blendv_ps(e, _mm256_set1_ps(__builtin_inff()), over);
}

inline __m256 silu_avx2_vec(__m256 x) {
  const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

// Lane mask for the first `rem` (1..8) lanes, for maskload/maskstore of a ragged tail.
inline __m256i tail_mask_avx2(int64_t rem) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rem)), idx);
}

#include "kernels/hsum_avx.inc"  // hsum, hsum_x4, hsum_x8

}  // namespace chimera::ops_internal
#endif
