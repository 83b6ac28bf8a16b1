// AVX2 Mamba2 conv and scan. Conv: 8 channels per vector, the K taps and the K-1 history values
// held in registers across tokens; a ragged last block runs the same vector code with masks.
// Scan: one head at a time, N in vectors with four partial sums (fixed by n, not by T).
// y = D*x + total is one fma everywhere (what the compilers made of `total + D * x` before, here
// written out, so that scalar and vector y agree whatever the contraction setting).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/ssm.h"

namespace chimera::ops_internal {

namespace {

// Tokens per tile of the conv: channel blocks run token-major within a tile, so a tile's rows of x
// and out (7-14 KB apart, a page each) are walked once per tile instead of once per channel block
// for all T tokens, which no prefetcher follows across pages.
constexpr int64_t kConvTile = 16;

// Mamba2's d_conv 4 over a full block of 8 channels: the taps (channel-major, 4 per channel) and
// the state (3 per channel) of the block are contiguous, so they are moved between memory and the
// one-vector-per-position layout with whole-vector loads, permutes and blends. Before, each value
// went through a scalar store and a vector reload (a store-forwarding stall per vector), a cost
// paid per block on every decode step. The same values land in the same lanes: bit-identical.

// w[k] = tap k of channels 0..7, from 32 floats (channel c's taps at 4c..4c+3).
inline void load_taps4(const float* src, __m256* w) {
  const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + 8);
  const __m256 r2 = _mm256_loadu_ps(src + 16), r3 = _mm256_loadu_ps(src + 24);
  // Channel c in the low lane, c + 4 in the high lane, then a 4 x 4 transpose per lane.
  const __m256 c04 = _mm256_permute2f128_ps(r0, r2, 0x20),
               c15 = _mm256_permute2f128_ps(r0, r2, 0x31);
  const __m256 c26 = _mm256_permute2f128_ps(r1, r3, 0x20),
               c37 = _mm256_permute2f128_ps(r1, r3, 0x31);
  const __m256 t0 = _mm256_unpacklo_ps(c04, c15), t1 = _mm256_unpackhi_ps(c04, c15);
  const __m256 t2 = _mm256_unpacklo_ps(c26, c37), t3 = _mm256_unpackhi_ps(c26, c37);
  w[0] = _mm256_shuffle_ps(t0, t2, 0x44);
  w[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
  w[2] = _mm256_shuffle_ps(t1, t3, 0x44);
  w[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
}

// h[k] = state value k of channels 0..7, from 24 floats (channel j's at 3j..3j+2): h[k][j] is
// float 3j + k, lane (3j + k) % 8 of load (3j + k) / 8.
inline void load_hist3(const float* src, __m256* h) {
  const __m256 v0 = _mm256_loadu_ps(src), v1 = _mm256_loadu_ps(src + 8);
  const __m256 v2 = _mm256_loadu_ps(src + 16);
  auto gather = [&](__m256i idx, auto m1, auto m2) {
    const __m256 p0 = _mm256_permutevar8x32_ps(v0, idx), p1 = _mm256_permutevar8x32_ps(v1, idx);
    const __m256 p2 = _mm256_permutevar8x32_ps(v2, idx);
    return _mm256_blend_ps(_mm256_blend_ps(p0, p1, decltype(m1)::value), p2, decltype(m2)::value);
  };
  h[0] = gather(_mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5), std::integral_constant<int, 0xF8>{},
                std::integral_constant<int, 0xC0>{});
  h[1] = gather(_mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6), std::integral_constant<int, 0xF8>{},
                std::integral_constant<int, 0xE0>{});
  h[2] = gather(_mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7), std::integral_constant<int, 0xFC>{},
                std::integral_constant<int, 0xE0>{});
}

// The inverse of load_hist3: float 8r + p = h[(8r + p) % 3][(8r + p) / 3].
inline void store_hist3(float* dst, const __m256* h) {
  auto scatter = [&](__m256i idx, auto m1, auto m2) {
    const __m256 p0 = _mm256_permutevar8x32_ps(h[0], idx), p1 = _mm256_permutevar8x32_ps(h[1], idx);
    const __m256 p2 = _mm256_permutevar8x32_ps(h[2], idx);
    return _mm256_blend_ps(_mm256_blend_ps(p0, p1, decltype(m1)::value), p2, decltype(m2)::value);
  };
  // Lanes of value 1 and of value 2 (the rest take value 0): the masks pick them.
  _mm256_storeu_ps(
      dst, scatter(_mm256_setr_epi32(0, 0, 0, 1, 1, 1, 2, 2), std::integral_constant<int, 0x92>{},
                   std::integral_constant<int, 0x24>{}));
  _mm256_storeu_ps(
      dst + 8, scatter(_mm256_setr_epi32(2, 3, 3, 3, 4, 4, 4, 5),
                       std::integral_constant<int, 0x24>{}, std::integral_constant<int, 0x49>{}));
  _mm256_storeu_ps(
      dst + 16, scatter(_mm256_setr_epi32(5, 5, 6, 6, 6, 7, 7, 7),
                        std::integral_constant<int, 0x49>{}, std::integral_constant<int, 0x92>{}));
}

// Tokens [t0, t1) of channels [c0, c0 + 8) (kFull) or the first nc of them (a ragged last block,
// through masked loads and stores). The K-1 history values come from the incoming state or from x
// itself, the same raw values whatever the tiling, so every output has the same arithmetic.
// kK > 0 fixes the kernel size at compile time (kK == a.kernel_size), so the taps and the history
// live in registers; kK == 0 reads it at run time (the arrays then live on the stack).
template <bool kFull, int32_t kK>
void conv_block(const SsmConvArgs& a, int32_t c0, int32_t nc, int64_t t0, int64_t t1) {
  const int32_t K = kK > 0 ? kK : a.kernel_size;
  const __m256i mask = tail_mask_avx2(nc);
  auto load = [&](const float* p) {
    if constexpr (kFull) {
      return _mm256_loadu_ps(p);
    } else {
      return _mm256_maskload_ps(p, mask);
    }
  };
  __m256 w[kSsmMaxConvKernel];
  __m256 hist[kSsmMaxConvKernel];  // hist[i] = X(t + i) for the next token t, i < K-1
  alignas(32) float lane[8];
  constexpr bool kD4 = kFull && kK == 4;  // Mamba2's d_conv over a full block
  if constexpr (kD4) {
    load_taps4(a.weight + static_cast<int64_t>(c0) * 4, w);
  } else {
    for (int32_t k = 0; k < K; ++k) {
      for (int32_t i = 0; i < 8; ++i)
        lane[i] = i < nc ? a.weight[static_cast<int64_t>(c0 + i) * K + k] : 0.0f;
      w[k] = _mm256_load_ps(lane);
    }
  }
  const float* in = a.conv_state_in ? a.conv_state_in : a.conv_state;
  if (kD4 && t0 == 0) load_hist3(in + static_cast<int64_t>(c0) * 3, hist);  // all from the state
  for (int32_t k = 0; k < K - 1 && !(kD4 && t0 == 0); ++k) {
    const int64_t i = t0 + k;  // X(i): the incoming state for i < K-1, else token i - (K-1)
    if (i >= K - 1) {
      hist[k] = load(a.x + (i - (K - 1)) * a.x_stride + c0);
    } else {
      for (int32_t j = 0; j < 8; ++j)
        lane[j] = j < nc ? in[static_cast<int64_t>(c0 + j) * (K - 1) + i] : 0.0f;
      hist[k] = _mm256_load_ps(lane);
    }
  }
  const __m256 bias = a.bias ? load(a.bias + c0) : _mm256_setzero_ps();
  for (int64_t t = t0; t < t1; ++t) {
    const __m256 xv = load(a.x + t * a.x_stride + c0);
    __m256 acc = _mm256_setzero_ps();
    for (int32_t k = 0; k < K - 1; ++k) acc = _mm256_fmadd_ps(w[k], hist[k], acc);
    acc = _mm256_fmadd_ps(w[K - 1], xv, acc);
    for (int32_t k = 0; k + 1 < K - 1; ++k) hist[k] = hist[k + 1];
    if (K > 1) hist[K - 2] = xv;
    const __m256 pre = _mm256_add_ps(acc, bias);
    const __m256 out = a.silu ? silu_avx2_vec(pre) : pre;
    if constexpr (kFull) {
      _mm256_storeu_ps(a.out + t * a.out_stride + c0, out);
    } else {
      _mm256_maskstore_ps(a.out + t * a.out_stride + c0, mask, out);
    }
    if (a.conv_state_steps && t + 1 < a.n_tokens) {  // the state after token t
      float* step = a.conv_state_steps[t];
      if constexpr (kD4) {  // the state's layout: whole-vector stores, not 24 scalar ones
        store_hist3(step + static_cast<int64_t>(c0) * 3, hist);
      } else {
        for (int32_t k = 0; k < K - 1; ++k) {
          _mm256_store_ps(lane, hist[k]);
          for (int32_t i = 0; i < nc; ++i)
            step[static_cast<int64_t>(c0 + i) * (K - 1) + k] = lane[i];
        }
      }
    }
  }
  if (t1 < a.n_tokens) return;
  // The new state, written after the last tile read the incoming one (they may be the same).
  if constexpr (kD4) {
    store_hist3(a.conv_state + static_cast<int64_t>(c0) * 3, hist);
    return;
  }
  for (int32_t k = 0; k < K - 1; ++k) {
    _mm256_store_ps(lane, hist[k]);
    for (int32_t i = 0; i < nc; ++i)
      a.conv_state[static_cast<int64_t>(c0 + i) * (K - 1) + k] = lane[i];
  }
}

}  // namespace

void ssm_conv_avx2(const SsmConvArgs& a, int32_t c_begin, int32_t c_end) {
  // One pass even for T = 0: the state is still copied from conv_state_in.
  for (int64_t t0 = 0; t0 == 0 || t0 < a.n_tokens; t0 += kConvTile) {
    const int64_t t1 = std::min<int64_t>(a.n_tokens, t0 + kConvTile);
    for (int32_t c0 = c_begin; c0 < c_end; c0 += 8) {
      const int32_t nc = std::min(8, c_end - c0);
      if (nc == 8 && a.kernel_size == 4) {  // Mamba2's d_conv
        conv_block<true, 4>(a, c0, nc, t0, t1);
      } else if (nc == 8) {
        conv_block<true, 0>(a, c0, nc, t0, t1);
      } else {
        conv_block<false, 0>(a, c0, nc, t0, t1);
      }
    }
  }
}

namespace {

// Four partial sums of a row's y, sum k taking the chunks c with c % 4 == k in ascending c. Named
// registers, not an array indexed by c % 4: an indexed array lives on the stack, and every
// accumulation then waits on a store-to-load round trip.
struct Sum4 {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
         s3 = _mm256_setzero_ps();
  // s[k] += n * c; k is a constant wherever the loop is unrolled by four.
  __attribute__((always_inline)) void add(int64_t k, __m256 n, __m256 c) {
    switch (k & 3) {
      case 0:
        s0 = _mm256_fmadd_ps(n, c, s0);
        break;
      case 1:
        s1 = _mm256_fmadd_ps(n, c, s1);
        break;
      case 2:
        s2 = _mm256_fmadd_ps(n, c, s2);
        break;
      default:
        s3 = _mm256_fmadd_ps(n, c, s3);
        break;
    }
  }
  // The four sums folded into one vector, whose hsum is the total.
  __m256 folded() const { return _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)); }
  float total() const { return hsum(folded()); }
};

template <bool kStream>
inline void store8(float* dst, __m256 v) {
  if constexpr (kStream) {
    _mm256_stream_ps(dst, v);
  } else {
    _mm256_storeu_ps(dst, v);
  }
}

// How many state rows ahead a one-token scan prefetches (rows of N floats).
constexpr int64_t kScanAheadRows = 6;

// Calls chunk(c) for the n_full full chunks of 8 state entries, unrolled by four so that Sum4's
// index is a constant.
template <typename Chunk>
__attribute__((always_inline)) inline void for_chunks(int64_t n_full, Chunk&& chunk) {
  int64_t c = 0;
  for (; c + 4 <= n_full; c += 4) {
    chunk(c);
    chunk(c + 1);
    chunk(c + 2);
    chunk(c + 3);
  }
  for (; c < n_full; ++c) chunk(c);
}

// One token of rows [p, p + kRows) of a head: new state n = prev * dA + B * (x * delta) per
// chunk of 8 state entries (stored to S), y partial sums += n * C. B and C loads are shared by
// the rows; each row's arithmetic is the same whatever kRows is.
template <int kRows, bool kStream>
inline void scan_rows(const float* prev, float* S, int64_t N, const float* B, const float* C,
                      __m256 vdA, const __m256* xdt, Sum4* sum, __m256i tail) {
  const int64_t n_full = N / 8;
  for_chunks(
      n_full, [&](int64_t c) __attribute__((always_inline)) {
        const __m256 b = _mm256_loadu_ps(B + 8 * c), cc = _mm256_loadu_ps(C + 8 * c);
        for (int r = 0; r < kRows; ++r) {
          const __m256 n =
              _mm256_fmadd_ps(_mm256_loadu_ps(prev + r * N + 8 * c), vdA, _mm256_mul_ps(b, xdt[r]));
          store8<kStream>(S + r * N + 8 * c, n);
          sum[r].add(c, n, cc);
        }
      });
  if (N % 8 != 0) {  // masked lanes: state 0, B 0, C 0 -> contribute exactly 0
    const int64_t c = n_full;
    const __m256 b = _mm256_maskload_ps(B + 8 * c, tail), cc = _mm256_maskload_ps(C + 8 * c, tail);
    for (int r = 0; r < kRows; ++r) {
      const __m256 n = _mm256_fmadd_ps(_mm256_maskload_ps(prev + r * N + 8 * c, tail), vdA,
                                       _mm256_mul_ps(b, xdt[r]));
      _mm256_maskstore_ps(S + r * N + 8 * c, tail, n);
      sum[r].add(c, n, cc);
    }
  }
}

// Two consecutive tokens (0 and 1) of one row, N a multiple of 8: each chunk of the state is
// loaded once, advanced by token 0 then by token 1, and stored once (plus the state after token 0
// where a step buffer wants it), halving the state traffic of one token per pass. Each token's
// operations are those of scan_rows.
template <bool kStream, bool kStep>
inline void scan_row_two_tokens(const float* prev, float* S0, float* S1, int64_t N, const float* B0,
                                const float* C0, const float* B1, const float* C1, __m256 dA0,
                                __m256 dA1, __m256 xdt0, __m256 xdt1, Sum4& sum0, Sum4& sum1) {
  for_chunks(
      N / 8, [&](int64_t c) __attribute__((always_inline)) {
        const __m256 n0 = _mm256_fmadd_ps(_mm256_loadu_ps(prev + 8 * c), dA0,
                                          _mm256_mul_ps(_mm256_loadu_ps(B0 + 8 * c), xdt0));
        if constexpr (kStep) _mm256_storeu_ps(S0 + 8 * c, n0);
        sum0.add(c, n0, _mm256_loadu_ps(C0 + 8 * c));
        const __m256 n1 =
            _mm256_fmadd_ps(n0, dA1, _mm256_mul_ps(_mm256_loadu_ps(B1 + 8 * c), xdt1));
        store8<kStream>(S1 + 8 * c, n1);
        sum1.add(c, n1, _mm256_loadu_ps(C1 + 8 * c));
      });
}

// Tokens per tile of the multi-token scan: a tile's B and C rows (2 * 16 * N floats) and the
// row block's partial totals (16 * 8 vectors) stay in L1.
constexpr int64_t kRowTile = 16;

// Several tokens of one head without per-token states, N = 8 * kNC <= 64. Per tile of tokens and
// block of 8 rows:
// - each state row is loaded into registers once, advanced through all the tile's tokens there and
//   stored once, instead of once per token pair; kRows rows side by side share the loads of B, C;
// - x * delta of the block's rows is one vector multiply per token, broadcast from memory;
// - each (token, row)'s folded partial sums wait in a buffer, and the block's eight totals of a
//   token come from one hsum_x8, its eight y from one vector fma.
// Per (token, row) the arithmetic is that of scan_rows: the same states, sums and y, bit for bit.
template <int kNC, int kRows>
void scan_head_rows(const SsmScanArgs& a, int32_t h, const float* prev, float* dst) {
  constexpr int64_t N = 8 * kNC;
  const int64_t P = a.head_dim;
  const int32_t g = h / (a.n_head / a.n_group);
  const int64_t xs = a.x_stride, ys = a.y_stride, bs = a.B_stride, cs = a.C_stride;
  const float D = a.D ? a.D[h] : 0.0f;
  bool streamed = false;
  for (int64_t t0 = 0; t0 < a.n_tokens; t0 += kRowTile) {
    const int64_t nt = std::min<int64_t>(kRowTile, a.n_tokens - t0);
    float delta[kRowTile], dA[kRowTile];  // the scalar path's expressions
    for (int64_t j = 0; j < nt; ++j) {
      const int64_t t = t0 + j;
      delta[j] = softplus(a.dt[t * a.dt_stride + h] + (a.dt_bias ? a.dt_bias[h] : 0.0f));
      dA[j] = std::exp(delta[j] * a.A[h]);
    }
    // As the token-pair path: the run's last state streams when it does not overwrite its source.
    const bool stream =
        t0 + nt == a.n_tokens && dst != prev && reinterpret_cast<uintptr_t>(dst) % 32 == 0;
    streamed = streamed || stream;
    const float* B0 = a.B + t0 * bs + g * N;
    const float* C0 = a.C + t0 * cs + g * N;
    const float* x0 = a.x + t0 * xs + h * P;
    float* y0 = a.y + t0 * ys + h * P;
    for (int64_t p0 = 0; p0 < P; p0 += 8) {
      const int64_t nr = std::min<int64_t>(8, P - p0);
      alignas(32) float xd[kRowTile][8];     // x * delta per token and row of the block
      alignas(32) __m256 part[kRowTile][8];  // folded partial sums per token and row
      for (int64_t j = 0; j < nt; ++j) {
        const float* x = x0 + j * xs + p0;
        if (nr == 8) {
          _mm256_store_ps(xd[j], _mm256_mul_ps(_mm256_loadu_ps(x), _mm256_set1_ps(delta[j])));
        } else {
          for (int64_t r = 0; r < nr; ++r) xd[j][r] = x[r] * delta[j];
        }
      }
      // Rows [r0, r0 + R) of the block through all the tile's tokens.
      auto rows = [&](int64_t r0, auto rows_c) __attribute__((always_inline)) {
        constexpr int R = decltype(rows_c)::value;
        const int64_t p = p0 + r0;
        __m256 s[R][kNC];
        for (int r = 0; r < R; ++r)
          for (int c = 0; c < kNC; ++c) s[r][c] = _mm256_loadu_ps(prev + (p + r) * N + 8 * c);
        for (int64_t j = 0; j < nt; ++j) {
          const __m256 vdA = _mm256_broadcast_ss(&dA[j]);
          const float* B = B0 + j * bs;
          const float* C = C0 + j * cs;
          __m256 xdt[R];
          for (int r = 0; r < R; ++r) xdt[r] = _mm256_broadcast_ss(&xd[j][r0 + r]);
          Sum4 sum[R];
          for (int c = 0; c < kNC; ++c) {
            const __m256 b = _mm256_loadu_ps(B + 8 * c), cc = _mm256_loadu_ps(C + 8 * c);
            for (int r = 0; r < R; ++r) {
              s[r][c] = _mm256_fmadd_ps(s[r][c], vdA, _mm256_mul_ps(b, xdt[r]));
              sum[r].add(c, s[r][c], cc);
            }
          }
          for (int r = 0; r < R; ++r) part[j][r0 + r] = sum[r].folded();
        }
        for (int r = 0; r < R; ++r)
          for (int c = 0; c < kNC; ++c) {
            if (stream) {
              _mm256_stream_ps(dst + (p + r) * N + 8 * c, s[r][c]);
            } else {
              _mm256_storeu_ps(dst + (p + r) * N + 8 * c, s[r][c]);
            }
          }
      };
      int64_t r0 = 0;
      for (; r0 + kRows <= nr; r0 += kRows) rows(r0, std::integral_constant<int, kRows>{});
      for (; r0 < nr; ++r0) rows(r0, std::integral_constant<int, 1>{});
      // y, token by token; x is read again before y is written: y may alias x.
      for (int64_t j = 0; j < nt; ++j) {
        const float* x = x0 + j * xs + p0;
        float* y = y0 + j * ys + p0;
        if (nr == 8) {
          const __m256 tot = hsum_x8(part[j]);
          _mm256_storeu_ps(y,
                           a.D ? _mm256_fmadd_ps(_mm256_set1_ps(D), _mm256_loadu_ps(x), tot) : tot);
        } else {
          for (int64_t r = 0; r < nr; ++r) {
            const float total = hsum(part[j][r]);
            y[r] = a.D ? std::fma(D, x[r], total) : total;
          }
        }
      }
    }
    prev = dst;
  }
  if (streamed) _mm_sfence();
}

}  // namespace

void ssm_scan_head_avx2(const SsmScanArgs& a, int32_t h) {
  const int64_t P = a.head_dim, N = a.state_size;
  const bool ragged = N % 8 != 0;
  const __m256i tail = tail_mask_avx2(N % 8);
  const int32_t g = h / (a.n_head / a.n_group);
  float* S_last = a.state + static_cast<int64_t>(h) * P * N;
  const float* S_in = a.state_in ? a.state_in + static_cast<int64_t>(h) * P * N : S_last;
  if (a.n_tokens == 0 && S_in != S_last) std::copy(S_in, S_in + P * N, S_last);
  // Runs of three or more tokens without per-token states (speculative verification by prefix
  // recompute, prefill), for a head whose state rows fit in registers. Measured: two tokens, and
  // runs with per-token states, are as fast or faster through the token pairs below.
  if (!ragged && N <= 64 && a.n_tokens >= 3 && !a.state_steps) {
    using RowsFn = void (*)(const SsmScanArgs&, int32_t, const float*, float*);
    // Two rows side by side only where that measured faster (N = 8).
    static constexpr RowsFn kByN[8] = {
        scan_head_rows<1, 2>, scan_head_rows<2, 1>, scan_head_rows<3, 1>, scan_head_rows<4, 1>,
        scan_head_rows<5, 1>, scan_head_rows<6, 1>, scan_head_rows<7, 1>, scan_head_rows<8, 1>};
    return kByN[N / 8 - 1](a, h, S_in, S_last);
  }
  const float* prev = S_in;  // token 0 reads the incoming state
  bool streamed = false;
  // Where the state after token t goes: its step buffer, or `state` for the last token.
  auto state_after = [&](int64_t t) {
    return a.state_steps && t + 1 < a.n_tokens ? a.state_steps[t] + static_cast<int64_t>(h) * P * N
                                               : S_last;
  };
  // The last token's state is not read again before the next step has streamed the weights
  // through the caches: non-temporal stores skip reading its lines first (a third of the state
  // traffic of a decode step). Same values, only the store instruction differs.
  auto streams = [&](int64_t t, const float* S, const float* from) {
    return t + 1 == a.n_tokens && !ragged && S != from && reinterpret_cast<uintptr_t>(S) % 32 == 0;
  };
  // delta and dA in scalar libm arithmetic, identical to the scalar path.
  auto delta_of = [&](int64_t t) {
    return softplus(a.dt[t * a.dt_stride + h] + (a.dt_bias ? a.dt_bias[h] : 0.0f));
  };
  int64_t t = 0;
  // Token pairs, one row at a time (for N a multiple of 8).
  for (; !ragged && t + 2 <= a.n_tokens; t += 2) {
    float* S0 = state_after(t);
    float* S1 = state_after(t + 1);
    const bool step = S0 != S1;  // the state after token t is kept (a step buffer)
    const bool stream = streams(t + 1, S1, prev);
    streamed = streamed || stream;
    const float delta0 = delta_of(t), delta1 = delta_of(t + 1);
    const __m256 dA0 = _mm256_set1_ps(std::exp(delta0 * a.A[h]));
    const __m256 dA1 = _mm256_set1_ps(std::exp(delta1 * a.A[h]));
    const float* B0 = a.B + t * a.B_stride + g * N;
    const float* C0 = a.C + t * a.C_stride + g * N;
    const float* B1 = B0 + a.B_stride;
    const float* C1 = C0 + a.C_stride;
    const float* x0 = a.x + t * a.x_stride + h * P;
    const float* x1 = x0 + a.x_stride;
    float* y0 = a.y + t * a.y_stride + h * P;
    float* y1 = y0 + a.y_stride;
    for (int64_t p = 0; p < P; ++p) {
      // both x values are read before y is written: y may alias x
      const float xv0 = x0[p], xv1 = x1[p];
      const __m256 xdt0 = _mm256_set1_ps(xv0 * delta0), xdt1 = _mm256_set1_ps(xv1 * delta1);
      Sum4 sum0, sum1;
      const float* r = prev + p * N;
      float* s0 = S0 + p * N;
      float* s1 = S1 + p * N;
      if (step && stream) {
        scan_row_two_tokens<true, true>(r, s0, s1, N, B0, C0, B1, C1, dA0, dA1, xdt0, xdt1, sum0,
                                        sum1);
      } else if (step) {
        scan_row_two_tokens<false, true>(r, s0, s1, N, B0, C0, B1, C1, dA0, dA1, xdt0, xdt1, sum0,
                                         sum1);
      } else if (stream) {
        scan_row_two_tokens<true, false>(r, s0, s1, N, B0, C0, B1, C1, dA0, dA1, xdt0, xdt1, sum0,
                                         sum1);
      } else {
        scan_row_two_tokens<false, false>(r, s0, s1, N, B0, C0, B1, C1, dA0, dA1, xdt0, xdt1, sum0,
                                          sum1);
      }
      const float total0 = sum0.total(), total1 = sum1.total();
      y0[p] = a.D ? std::fma(a.D[h], xv0, total0) : total0;
      y1[p] = a.D ? std::fma(a.D[h], xv1, total1) : total1;
    }
    prev = S1;
  }
  // The remaining token (odd T, decode) or every token when N is ragged: one token per pass.
  for (; t < a.n_tokens; ++t) {
    float* S = state_after(t);
    const bool stream = streams(t, S, prev);
    streamed = streamed || stream;
    const float delta = delta_of(t);
    const float dA = std::exp(delta * a.A[h]);
    const __m256 vdA = _mm256_set1_ps(dA);
    const float* B = a.B + t * a.B_stride + g * N;
    const float* C = a.C + t * a.C_stride + g * N;
    const float* x = a.x + t * a.x_stride + h * P;
    float* y = a.y + t * a.y_stride + h * P;
    // Rows p run in pairs sharing the loads of B and C; each row keeps its own state and four
    // partial sums (sum index = chunk index mod 4), so a row's arithmetic is the same paired or
    // alone.
    int64_t p = 0;
    for (; p + 2 <= P; p += 2) {
      // The state rows kScanAheadRows on (past the head's end: the next head's, which follow),
      // into L1: a decode step reads each state once, a short stream per head.
      {
        const char* ahead = reinterpret_cast<const char*>(prev + (p + kScanAheadRows) * N);
        for (int64_t o = 0; o < 2 * N * int64_t(sizeof(float)); o += 64)
          _mm_prefetch(ahead + o, _MM_HINT_T0);
      }
      const float xv0 = x[p], xv1 = x[p + 1];
      // both x values are read before y is written: y may alias x
      const __m256 xdt[2] = {_mm256_set1_ps(xv0 * delta), _mm256_set1_ps(xv1 * delta)};
      Sum4 sum[2];
      if (stream) {
        scan_rows<2, true>(prev + p * N, S + p * N, N, B, C, vdA, xdt, sum, tail);
      } else {
        scan_rows<2, false>(prev + p * N, S + p * N, N, B, C, vdA, xdt, sum, tail);
      }
      const float t0 = sum[0].total(), t1 = sum[1].total();
      y[p] = a.D ? std::fma(a.D[h], xv0, t0) : t0;
      y[p + 1] = a.D ? std::fma(a.D[h], xv1, t1) : t1;
    }
    for (; p < P; ++p) {
      const float xv = x[p];
      const __m256 xdt[1] = {_mm256_set1_ps(xv * delta)};
      Sum4 sum[1];
      if (stream) {
        scan_rows<1, true>(prev + p * N, S + p * N, N, B, C, vdA, xdt, sum, tail);
      } else {
        scan_rows<1, false>(prev + p * N, S + p * N, N, B, C, vdA, xdt, sum, tail);
      }
      const float total = sum[0].total();
      y[p] = a.D ? std::fma(a.D[h], xv, total) : total;
    }
    prev = S;
  }
  if (streamed) _mm_sfence();  // order the streamed state before the caller's hand-off
}

}  // namespace chimera::ops_internal
