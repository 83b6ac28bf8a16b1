// AVX-512 (F/BW/VL/DQ + VNNI) kernels for Q8_0 and Q4_0 weights (prefill, small batches of 2 to 8
// rows, decode), bit-identical to the AVX2 kernels (matmul_avx2.cpp), and the AVX-512 path's
// dispatch: the super-block VNNI kernels (matmul_kquants_avx512.cpp,
// matmul_q4_1_q5_iq4_avx512.cpp), the float kernels (matmul_f16_avx512.cpp), and the AVX2 kernels
// for every other type and for the other quantized batches of fewer than kMR rows.
//
// Why the results match the AVX2 path bit for bit: AVX2 computes, per weight block and output
// element, 8 int32 lanes (each the exact sum of the same 4 or 8 products, via maddubs/madd) and
// then, per lane, acc = fma(d_w * d_a, float(lanes), acc), ending in one fixed horizontal sum.
// Here vpdpbusd produces the same exact int32 lanes (its groups of 4 bytes are madd's), and one
// 512-bit register holds the 8 lanes of two output columns side by side, so every lane sees the
// same float operations in the same block order; the horizontal sum is AVX2's, per 256-bit half.
// The tile shape, M, row position and thread split therefore never change a bit, as on AVX2.
//
// This file is compiled with AVX-512 flags: it must not include matmul_avx2_tiles.h (its inline
// functions would be emitted with EVEX encodings and could be picked by the linker for the AVX2
// files); the AVX-512 files share their helpers and packed driver in matmul_avx512_common.h.
// GCC 12's _mm512_undefined_* (behind broadcasts, casts and inserts) self-initialize a variable
// and trip -Wmaybe-uninitialized (or -Wuninitialized) at every use: a known false positive,
// silenced for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"  // the same, where inlined into Q80::tile
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/act_quant.h"
#include "kernels/matmul.h"
#include "kernels/matmul_avx512_common.h"

namespace chimera::matmul_detail {
namespace {

// Rows of activations kept hot in cache while a thread walks its weight columns (as on AVX2).
constexpr int64_t kRowBlock = 64;

using namespace avx512;  // NOLINT: the shared AVX-512 helpers and driver

inline __m512 join_ps(__m256 lo, __m256 hi) {
  return _mm512_castsi512_ps(join256(_mm256_castps_si256(lo), _mm256_castps_si256(hi)));
}

// ---------------------------------------------------------------- Q8_0
// vpdpbusd multiplies unsigned by signed bytes. The activations (-127..127) are offset to a + 128
// (unsigned) once per row and block; each column's lanes start from -128 x (sum of its 4 weights),
// precomputed when packing, so the lane ends exactly at sum w a, as maddubs/madd give on AVX2.
// The tile works in 256-bit registers, one per row and column (AVX2's 8 lanes), so that the scale
// of a lane update, d_w x d_a, is one float broadcast from memory (a load, no arithmetic): the
// products come one block ahead, 4 columns per multiply, instead of one
// 512-bit multiply per row, column pair and block in the loop. That multiply competed with
// vpdpbusd and the FMA for the same pipes (a microbenchmark on Zen 4: 1.37x the multiply-and-
// accumulate rate of the 512-bit tile). The products are the same rounded values AVX2 computes.
struct Q80 {
  using Act = ActBlockQ8;
  struct alignas(64) Packed {
    __m256i w[2];     // the pair's two columns' 32 values
    __m256i corr[2];  // -128 x sums of their groups of 4 weights
    float d[2];       // their scales
  };
  // 2 column pairs x kMR rows: 16 accumulators, with the pairs' weights and corrections for a
  // block in registers too.
  static constexpr int kNP = 2;
  static constexpr int64_t kPackUnits = 24;  // blocks: 2 pairs x 24 x 192 B = 9 KB
  static constexpr bool kOwnTile = true;
  static int64_t units(const KernelArgs& a) { return a.n_in / 32; }

  static void pack(const KernelArgs& a, int64_t j, bool two, int64_t u0, int64_t u1, Packed* out) {
    const BlockQ8_0* w0 = row_at<BlockQ8_0>(a.w, a.w_row_bytes, j);
    const BlockQ8_0* w1 = two ? row_at<BlockQ8_0>(a.w, a.w_row_bytes, j + 1) : nullptr;
    const __m512i k128 = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int64_t b = u0; b < u1; ++b) {
      const __m256i v0 = load256(w0[b].qs);
      const __m256i v1 = two ? load256(w1[b].qs) : _mm256_setzero_si256();
      const __m512i w = join256(v0, v1);
      const __m512i corr = _mm512_sub_epi32(_mm512_setzero_si512(),
                                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), k128, w));
      Packed& p = out[b - u0];
      p.w[0] = v0;
      p.w[1] = v1;
      p.corr[0] = _mm512_castsi512_si256(corr);
      p.corr[1] = _mm512_extracti64x4_epi64(corr, 1);
      p.d[0] = fp16(w0[b].d);
      p.d[1] = two ? fp16(w1[b].d) : 0.0f;
    }
  }

  // Block u of rows x against NC columns' weights w and corrections corr, with the scale
  // products sc[r][c] made beforehand: each lane update of the tile (Q80::tile and Q80Direct).
  template <int MR, int NC>
  __attribute__((always_inline)) static void block_step(const Act* const (&x)[MR], int64_t u,
                                                        const __m256i (&w)[NC],
                                                        const __m256i (&corr)[NC],
                                                        const float (&sc)[MR][4],
                                                        __m256 (&ac)[MR][NC]) {
    const __m256i k128 = _mm256_set1_epi8(static_cast<char>(0x80));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256i au = _mm256_xor_si256(load256(x[r][u].qs), k128);
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) {
        const __m256i p = _mm256_dpbusd_epi32(corr[c], au, w[c]);
        ac[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(sc[r][c]), _mm256_cvtepi32_ps(p), ac[r][c]);
      }
    }
  }

  // Rows [i, i + 4) x columns [j, j + ncol) over blocks [u0, u1) of nu, as tile<4, NP>, in
  // 512-bit registers for cores that run them at full width (Intel's): one register holds a
  // column's 8 lanes for two rows side by side, so each lane update (the same vpdpbusd, scale
  // product, conversion and fma as tile's, on the same operands) covers two rows at once. The
  // column's weights and correction are broadcast to both halves from the packed buffer, the
  // scale products d_a x d_w come from one multiply of the row pair's activation scales by the
  // column's (the same float products, commuted). tile's accumulators (per row, column pairs)
  // are rearranged on entry and exit, exactly.
  template <int NP>
  static void tile_row_pairs(const KernelArgs& a, const Packed (*pk)[kPackUnits], int64_t i,
                             int64_t j, int ncol, int64_t u0, int64_t u1, int64_t nu,
                             __m512 (*acc)[kNP]) {
    constexpr int NC = 2 * NP;
    const Act* x[4];
    for (int r = 0; r < 4; ++r) x[r] = row_at<Act>(a.act, a.act_stride, i + r);
    // ac[q][c]: rows 2q (low half) and 2q + 1 (high half) of column c.
    __m512 ac[2][NC];
    const auto half = [&](int r, int c) {
      return c % 2 == 0 ? _mm512_castps512_ps256(acc[r][c / 2])
                        : _mm512_extractf32x8_ps(acc[r][c / 2], 1);
    };
#pragma GCC unroll 8
    for (int q = 0; q < 2; ++q)
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c)
        ac[q][c] = u0 == 0 ? _mm512_setzero_ps() : join_ps(half(2 * q, c), half(2 * q + 1, c));
    const __m512i k128 = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int64_t u = u0; u < u1; ++u) {
      __m512i au[2];
      __m512 da[2];
#pragma GCC unroll 2
      for (int q = 0; q < 2; ++q) {
        au[q] =
            _mm512_xor_si512(join256(load256(x[2 * q][u].qs), load256(x[2 * q + 1][u].qs)), k128);
        da[q] = _mm512_mask_broadcastss_ps(_mm512_set1_ps(x[2 * q][u].d), 0xFF00,
                                           _mm_load_ss(&x[2 * q + 1][u].d));
      }
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) {
        const Packed& pc = pk[c / 2][u - u0];
        const __m512i w = _mm512_broadcast_i64x4(pc.w[c % 2]);
        const __m512i corr = _mm512_broadcast_i64x4(pc.corr[c % 2]);
        const __m512 dw = _mm512_set1_ps(pc.d[c % 2]);
#pragma GCC unroll 2
        for (int q = 0; q < 2; ++q) {
          const __m512i p = _mm512_dpbusd_epi32(corr, au[q], w);
          ac[q][c] = _mm512_fmadd_ps(_mm512_mul_ps(da[q], dw), _mm512_cvtepi32_ps(p), ac[q][c]);
        }
      }
    }
    // Back to tile's layout: row r's column pair (2 k, 2 k + 1) in one register.
    __m512 joined[4][NP];
#pragma GCC unroll 8
    for (int q = 0; q < 2; ++q)
#pragma GCC unroll 8
      for (int k = 0; k < NP; ++k) {
        const __m512 c0 = ac[q][2 * k], c1 = ac[q][2 * k + 1];
        joined[2 * q][k] = join_ps(_mm512_castps512_ps256(c0), _mm512_castps512_ps256(c1));
        joined[2 * q + 1][k] =
            join_ps(_mm512_extractf32x8_ps(c0, 1), _mm512_extractf32x8_ps(c1, 1));
      }
    if (u1 == nu) {
#pragma GCC unroll 8
      for (int r = 0; r < 4; ++r)
        store_row_sums<NP>(joined[r], a.y + (i + r) * a.y_stride + j, ncol);
      return;
    }
#pragma GCC unroll 8
    for (int r = 0; r < 4; ++r)
#pragma GCC unroll 8
      for (int k = 0; k < NP; ++k) acc[r][k] = joined[r][k];
  }

  // Rows [i, i + MR) x columns [j, j + ncol) over blocks [u0, u1) of nu, as packed_tile.
  template <int MR, int NP>
  static void tile(const KernelArgs& a, const Packed (*pk)[kPackUnits], int64_t i, int64_t j,
                   int ncol, int64_t u0, int64_t u1, int64_t nu, __m512 (*acc)[kNP]) {
    constexpr int NC = 2 * NP;
    const Act* x[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) x[r] = row_at<Act>(a.act, a.act_stride, i + r);
    // sc[u % 2][r][c]: column c's scale x row r's for block u, made one block ahead of its use
    // (its activation scale loads then wait alongside a block's work, not in a loop of their own).
    alignas(32) float sc[2][MR][4];
    const auto prescale = [&](int64_t u) __attribute__((always_inline)) {
      const __m128d d01 = _mm_load_sd(reinterpret_cast<const double*>(pk[0][u - u0].d));
      const __m128d d23 =
          NP > 1 ? _mm_load_sd(reinterpret_cast<const double*>(pk[NP - 1][u - u0].d)) : d01;
      const __m128 dw = _mm_castpd_ps(_mm_unpacklo_pd(d01, d23));
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
        _mm_store_ps(sc[u % 2][r], _mm_mul_ps(dw, _mm_set1_ps(x[r][u].d)));
    };
    prescale(u0);
    __m256 ac[MR][NC];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c)
        ac[r][c] = u0 == 0      ? _mm256_setzero_ps()
                   : c % 2 == 0 ? _mm512_castps512_ps256(acc[r][c / 2])
                                : _mm512_extractf32x8_ps(acc[r][c / 2], 1);
    for (int64_t u = u0; u < u1; ++u) {
      if (u + 1 < u1) prescale(u + 1);
      __m256i w[NC], corr[NC];
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) {
        w[c] = pk[c / 2][u - u0].w[c % 2];
        corr[c] = pk[c / 2][u - u0].corr[c % 2];
      }
      block_step<MR, NC>(x, u, w, corr, sc[u % 2], ac);
    }
    __m512 joined[MR][NP];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int q = 0; q < NP; ++q) joined[r][q] = join_ps(ac[r][2 * q], ac[r][2 * q + 1]);
    if (u1 == nu) {
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
        store_row_sums<NP>(joined[r], a.y + (i + r) * a.y_stride + j, ncol);
      return;
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int q = 0; q < NP; ++q) acc[r][q] = joined[r][q];
  }
};

// The driver of the small-batch tiles (Q80Direct, Q40Direct): D::kRow<MR>[NP - 1] is the tile of
// MR rows and NP column pairs. The rows go in ceil(m / kMR) tiles of near-equal height (5 rows:
// 3 + 2, not 4 + 1: a tile's unpacking is shared by its rows); the first row tile over a group of
// columns prefetches the weights ahead.
template <class D>
void run_direct(const KernelArgs& a, int64_t j0, int64_t j1) {
  constexpr int kMR = D::kMR, kNP = D::kNP;
  static_assert(kMR == 4);
  static constexpr const typename D::Fn* kTiles[kMR] = {D::template kRow<1>, D::template kRow<2>,
                                                        D::template kRow<3>, D::template kRow<4>};
  const int64_t tiles = (a.m + kMR - 1) / kMR;
  for (int64_t j = j0; j < j1; j += 2 * kNP) {
    const int ncol = static_cast<int>(j1 - j < 2 * kNP ? j1 - j : 2 * kNP);
    for (int64_t t = 0, i = 0; t < tiles; ++t) {
      const int mr = static_cast<int>((a.m - i + (tiles - t) - 1) / (tiles - t));
      kTiles[mr - 1][(ncol + 1) / 2 - 1](a, i, j, ncol, t == 0);
      i += mr;
    }
  }
}

// ---------------------------------------------------------------- Q8_0 small batches
// As Q40Direct for Q8_0: each column's block is loaded and its correction made once, in
// registers, and applied to every row of the tile; the products of the scales are made one block
// ahead as in Q80::tile. Every element's operations are Q80::tile's (so AVX2's).
struct Q80Direct {
  // 4 rows x 4 columns: 16 accumulators and the 4 columns' weights and corrections in registers.
  // From 9 rows on the packed driver was faster (768 x 2048, one thread).
  static constexpr int kMR = 4, kNP = 2;
  static constexpr int64_t kMaxRows = 8;
  static constexpr size_t kShortTileBytes = 2048;  // as the decode tiles

  // Rows [i, i + MR) x columns [j, j + ncol), 2 NP - 1 <= ncol <= 2 NP (an odd count repeats its
  // last column, whose lanes are dropped); `prefetch` as Q40Direct.
  template <int MR, int NP>
  static void tile(const KernelArgs& a, int64_t i, int64_t j, int ncol, bool prefetch) {
    constexpr int NC = 2 * NP;
    const ActBlockQ8* x[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) x[r] = row_at<ActBlockQ8>(a.act, a.act_stride, i + r);
    const BlockQ8_0* w[4];
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c)
      w[c] = row_at<BlockQ8_0>(a.w, a.w_row_bytes, j + (c < ncol ? c : ncol - 1));
    const TileAhead ahead = tile_ahead(w[0], NC * a.w_row_bytes, kShortTileBytes);
    // sc[u % 2][r][c]: column c's scale x row r's for block u (Q80::tile's prescale).
    alignas(32) float sc[2][MR][4];
    const auto prescale = [&](int64_t u) __attribute__((always_inline)) {
      const __m128i h = _mm_setr_epi16(
          static_cast<int16_t>(w[0][u].d), static_cast<int16_t>(w[1][u].d),
          static_cast<int16_t>(w[2][u].d), static_cast<int16_t>(w[3][u].d), 0, 0, 0, 0);
      const __m128 dw = _mm_cvtph_ps(h);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
        _mm_store_ps(sc[u % 2][r], _mm_mul_ps(dw, _mm_set1_ps(x[r][u].d)));
    };
    __m256 ac[MR][NC];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int c = 0; c < NC; ++c) ac[r][c] = _mm256_setzero_ps();
    const __m256i k128 = _mm256_set1_epi8(static_cast<char>(0x80));
    const int64_t nb = a.n_in / 32;
    if (nb > 0) prescale(0);
    for (int64_t u = 0; u < nb; ++u) {
      constexpr size_t kStepBytes = NC * sizeof(BlockQ8_0);
      if (prefetch)
        prefetch_span<kStepBytes>(ahead.next + static_cast<size_t>(u) * kStepBytes, ahead.far);
      if (u + 1 < nb) prescale(u + 1);
      __m256i wv[NC], corr[NC];
#pragma GCC unroll 4
      for (int c = 0; c < NC; ++c) {
        wv[c] = load256(w[c][u].qs);
        corr[c] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                   _mm256_dpbusd_epi32(_mm256_setzero_si256(), k128, wv[c]));
      }
      Q80::block_step<MR, NC>(x, u, wv, corr, sc[u % 2], ac);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      __m512 joined[NP];
#pragma GCC unroll 2
      for (int q = 0; q < NP; ++q) joined[q] = join_ps(ac[r][2 * q], ac[r][2 * q + 1]);
      store_row_sums<NP>(joined, a.y + (i + r) * a.y_stride + j, ncol);
    }
  }

  using Fn = void (*)(const KernelArgs&, int64_t, int64_t, int, bool);
  template <int MR>
  static constexpr Fn kRow[kNP] = {tile<MR, 1>, tile<MR, 2>};

  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    run_direct<Q80Direct>(a, j0, j1);
  }
};

// ---------------------------------------------------------------- Q8_0 decode
// One activation row: AVX2's Q8_0 GEMV tile (Block32Kernel<Q80Traits>::tile<1, NR>) step for step,
// except for where a block's 8 int32 lanes come from. AVX2 takes |w| x sign(a, w) in maddubs and
// pairs the int16 sums in madd (no pair saturates: at most 2 x 128 x 127); here one 256-bit
// vpdpbusd multiplies the weights offset to unsigned (w + 128, an xor) by the signed activations,
// starting each lane from -128 x the sum of its 4 activations (-16 x the block's sum8, exact), so
// every lane is the same exact sum of the same 4 products. The scale products d_w x d_a are the
// same float multiplies, made for the tile's columns at once and broadcast from memory; the
// float steps and the horizontal sums are AVX2's. Fewer instructions per weight byte: 4 vector
// operations a block and column (xor, vpdpbusd, conversion, fma; the scale is a broadcast load)
// against AVX2's 9 (two signs, maddubs, madd, the scale's conversion, broadcast and multiply,
// conversion, fma), which bound Q8_0 decode below the memory's rate.
struct Q80Decode {
  static constexpr int kNR = 4;
  static constexpr size_t kShortTileBytes = 2048;  // as Q40Decode
  template <int NR>
  static void tile(const KernelArgs& a, int64_t j) {
    const ActBlockQ8* x = reinterpret_cast<const ActBlockQ8*>(a.act);
    const BlockQ8_0* w[NR];
    for (int c = 0; c < NR; ++c) w[c] = row_at<BlockQ8_0>(a.w, a.w_row_bytes, j + c);
    // Prefetch as Q40Decode's tile: the next tile for long rows, ~12 KB on for short ones.
    const TileAhead ahead = tile_ahead(w[0], NR * a.w_row_bytes, kShortTileBytes);
    const __m256i k128 = _mm256_set1_epi8(static_cast<char>(0x80));
    __m256 acc[NR];
    for (int c = 0; c < NR; ++c) acc[c] = _mm256_setzero_ps();
    const int64_t nb = a.n_in / 32;
    alignas(16) float sc[4];
    for (int64_t b = 0; b < nb; ++b) {
      constexpr size_t kStepBytes = NR * sizeof(BlockQ8_0);
      prefetch_span<kStepBytes>(ahead.next + static_cast<size_t>(b) * kStepBytes, ahead.far);
      const ActBlockQ8& ab = x[b];
      const __m256i av = load256(ab.qs);
      const __m256i neg =
          _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(load256(ab.sum8), 4));
      // The NR columns' scales converted together (each exactly as alone) and multiplied by the
      // activation's scale: AVX2's per-lane products, one broadcast load each below.
      // (Built in a register: four 16-bit stores read back as one vector would stall the load.)
      __m128i h = _mm_cvtsi32_si128(w[0][b].d);
      if constexpr (NR > 1) h = _mm_insert_epi16(h, w[NR > 1 ? 1 : 0][b].d, 1);
      if constexpr (NR > 2) h = _mm_insert_epi16(h, w[NR > 2 ? 2 : 0][b].d, 2);
      if constexpr (NR > 3) h = _mm_insert_epi16(h, w[NR > 3 ? 3 : 0][b].d, 3);
      _mm_store_ps(sc, _mm_mul_ps(_mm_cvtph_ps(h), _mm_set1_ps(ab.d)));
      for (int c = 0; c < NR; ++c) {
        const __m256i wu = _mm256_xor_si256(load256(w[c][b].qs), k128);
        const __m256i p = _mm256_dpbusd_epi32(neg, wu, av);
        acc[c] = _mm256_fmadd_ps(_mm256_broadcast_ss(&sc[c]), _mm256_cvtepi32_ps(p), acc[c]);
      }
    }
    for (int c = 0; c < NR; ++c) a.y[j + c] = hsum(acc[c]);
  }
  static constexpr void (*kTiles[kNR])(const KernelArgs&, int64_t) = {tile<1>, tile<2>, tile<3>,
                                                                      tile<4>};
  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; j += kNR) kTiles[(j1 - j < kNR ? j1 - j : kNR) - 1](a, j);
  }
};

// Q80 whose 4-row tiles run in 512-bit registers (MatmulWorkspace::zmm_tiles): on the Xeon host,
// 2 threads, the 302M Q8_0 model's pp512 went 228-237 -> 268-289 tokens/s (interleaved), the
// 512 x 4096 . 4096 x 1024 GEMM 67 -> 104 GFLOP/s on one thread.
struct Q80Zmm : Q80 {
  template <int MR, int NP>
  static void tile(const KernelArgs& a, const Packed (*pk)[kPackUnits], int64_t i, int64_t j,
                   int ncol, int64_t u0, int64_t u1, int64_t nu, __m512 (*acc)[kNP]) {
    if constexpr (MR == 4) {
      tile_row_pairs<NP>(a, pk, i, j, ncol, u0, u1, nu, acc);
    } else {
      Q80::tile<MR, NP>(a, pk, i, j, ncol, u0, u1, nu, acc);
    }
  }
};

template <bool kZmm>
void run_q8_0(const KernelArgs& a, int64_t j0, int64_t j1) {
  if (a.m == 1) return Q80Decode::run(a, j0, j1);
  if (a.m <= Q80Direct::kMaxRows) return Q80Direct::run(a, j0, j1);
  if constexpr (kZmm) {
    run_packed<Q80Zmm, kRowBlock>(a, j0, j1);
  } else {
    run_packed<Q80, kRowBlock>(a, j0, j1);
  }
}

// ---------------------------------------------------------------- Q4_0
// As the AVX2 Q4_0 kernel: two weight blocks per step against the paired activations
// (ActPairQ8); the unsigned nibbles meet the signed activations in vpdpbusd directly, the lanes
// start from -(8 x activation sums), and each half of a column's 8 lanes has its block's scales.
struct Q40 {
  using Act = ActPairQ8;
  struct alignas(64) Packed {
    __m512i lo, hi;  // per column: nibbles 0..15 / 16..31 of blocks 2u and 2u + 1
    __m512 d;        // per column: block 2u's scale x4, block 2u + 1's x4
  };
  // 4 column pairs, as Q80 (measured 1.5x as fast as 4 x 2 at n_in 768).
  static constexpr int kNP = 4;
  static constexpr int64_t kPackUnits = 24;  // block pairs: 4 pairs x 24 x 192 B = 18 KB
  static int64_t units(const KernelArgs& a) { return (a.n_in / 32 + 1) / 2; }

  // One column's two blocks as AVX2's Q40Kernel::unpack lays them out (a missing partner block:
  // zero nibbles and scale).
  static void unpack(const BlockQ4_0* blk, bool pair, __m256i* lo, __m256i* hi, __m256* d) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[0].qs));
    const __m128i q1 =
        pair ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[1].qs)) : _mm_setzero_si128();
    const __m256i q = _mm256_set_m128i(q1, q0);
    *lo = _mm256_and_si256(q, low4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
    const float d0 = fp16(blk[0].d), d1 = pair ? fp16(blk[1].d) : 0.0f;
    *d = _mm256_setr_ps(d0, d0, d0, d0, d1, d1, d1, d1);
  }

  static void pack(const KernelArgs& a, int64_t j, bool two, int64_t u0, int64_t u1, Packed* out) {
    const int64_t nb = a.n_in / 32;
    const BlockQ4_0* w0 = row_at<BlockQ4_0>(a.w, a.w_row_bytes, j);
    const BlockQ4_0* w1 = two ? row_at<BlockQ4_0>(a.w, a.w_row_bytes, j + 1) : nullptr;
    for (int64_t u = u0; u < u1; ++u) {
      const bool pair = 2 * u + 2 <= nb;
      if (pair && two) {
        out[u - u0] = full_pair(w0 + 2 * u, w1 + 2 * u);
        continue;
      }
      out[u - u0] = partial_pair(w0 + 2 * u, two ? w1 + 2 * u : nullptr, pair);
    }
  }

  // Columns b0 and b1's block pairs (both blocks present) as packed: the four blocks' nibbles in
  // one vector, the four scales converted together (exactly as one at a time) and spread to their
  // 4 lanes each.
  __attribute__((always_inline)) static Packed full_pair(const BlockQ4_0* b0, const BlockQ4_0* b1) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i quads = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m512i q = _mm512_castsi128_si512(load128(b0[0].qs));
    q = _mm512_inserti32x4(q, load128(b0[1].qs), 1);
    q = _mm512_inserti32x4(q, load128(b1[0].qs), 2);
    q = _mm512_inserti32x4(q, load128(b1[1].qs), 3);
    const __m128i h =
        _mm_setr_epi16(static_cast<int16_t>(b0[0].d), static_cast<int16_t>(b0[1].d),
                       static_cast<int16_t>(b1[0].d), static_cast<int16_t>(b1[1].d), 0, 0, 0, 0);
    return {_mm512_and_si512(q, low4), _mm512_and_si512(_mm512_srli_epi16(q, 4), low4),
            _mm512_permutexvar_ps(quads, _mm512_castps128_ps512(_mm_cvtph_ps(h)))};
  }
  // The rare pairs: a last block without its partner (!pair) or no second column (b1 null).
  static Packed partial_pair(const BlockQ4_0* b0, const BlockQ4_0* b1, bool pair) {
    __m256i lo0, hi0, lo1 = _mm256_setzero_si256(), hi1 = _mm256_setzero_si256();
    __m256 d0, d1 = _mm256_setzero_ps();
    unpack(b0, pair, &lo0, &hi0, &d0);
    if (b1 != nullptr) unpack(b1, pair, &lo1, &hi1, &d1);
    return {join256(lo0, lo1), join256(hi0, hi1), join_ps(d0, d1)};
  }

  template <int MR, int NP>
  static void step(const Act* const (&x)[MR], const Packed* const (&pk)[NP], int64_t u,
                   __m512 (&acc)[MR][NP]) {
    for (int r = 0; r < MR; ++r) {
      const Act& ap = x[r][u];
      const __m512i alo = bcast256(ap.lo);
      const __m512i ahi = bcast256(ap.hi);
      const __m512i neg = _mm512_sub_epi32(_mm512_setzero_si512(), bcast256(ap.sum8));
      const __m512 da = _mm512_castsi512_ps(bcast256(ap.d));
      for (int c = 0; c < NP; ++c) {
        const __m512i p =
            _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(neg, pk[c]->lo, alo), pk[c]->hi, ahi);
        acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(pk[c]->d, da), _mm512_cvtepi32_ps(p), acc[r][c]);
      }
    }
  }
};

// ---------------------------------------------------------------- Q4_0 small batches
// A few rows (sequences decoding together, speculative verification): each column pair's block
// pair is unpacked once, in registers, as Q40::pack lays it out, and applied to every row of the
// tile; nothing goes through memory. At 4 rows the packed driver spent more time packing (each
// packed unit is read back by a single row tile) than multiplying. Every element's operations are
// Q40::step's (and so the decode tile's and AVX2's): the same lanes, block-pair steps, float
// operations and horizontal sum. The weights are prefetched as the decode tile does.
struct Q40Direct {
  // Rows of batches up to kMaxRows run in ceil(m / kMR) tiles over 2 kNP columns: 4 x 4 was
  // faster than 8 x 2 and 6 x 2 at every m up to 8 (768 x 2048, one thread). From 9 rows on the
  // packed driver was as fast or faster (its packing is shared by more row tiles).
  static constexpr int kMR = 4, kNP = 4;
  static constexpr int64_t kMaxRows = 8;
  static constexpr size_t kShortTileBytes = 2048;  // as Q40Decode

  // Rows [i, i + MR) x columns [j, j + ncol), 2 NP - 1 <= ncol <= 2 NP (an odd count repeats its
  // last column as the partner, whose lanes are dropped). `prefetch`: the first row tile over
  // these columns prefetches the weights ahead.
  template <int MR, int NP>
  static void tile(const KernelArgs& a, int64_t i, int64_t j, int ncol, bool prefetch) {
    const ActPairQ8* x[MR];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) x[r] = row_at<ActPairQ8>(a.act, a.act_stride, i + r);
    const BlockQ4_0* w[2 * NP];
#pragma GCC unroll 8
    for (int c = 0; c < 2 * NP; ++c)
      w[c] = row_at<BlockQ4_0>(a.w, a.w_row_bytes, j + (c < ncol ? c : ncol - 1));
    const TileAhead ahead = tile_ahead(w[0], 2 * NP * a.w_row_bytes, kShortTileBytes);
    __m512 acc[MR][NP];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < NP; ++c) acc[r][c] = _mm512_setzero_ps();
    // Q40::step on weights in registers.
    const auto apply = [&](const Q40::Packed(&wp)[NP], int64_t u) __attribute__((always_inline)) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const ActPairQ8& ap = x[r][u];
        const __m512i alo = bcast256(ap.lo);
        const __m512i ahi = bcast256(ap.hi);
        const __m512i neg = _mm512_sub_epi32(_mm512_setzero_si512(), bcast256(ap.sum8));
        const __m512 da = _mm512_castsi512_ps(bcast256(ap.d));
#pragma GCC unroll 8
        for (int c = 0; c < NP; ++c) {
          const __m512i p =
              _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(neg, wp[c].lo, alo), wp[c].hi, ahi);
          acc[r][c] = _mm512_fmadd_ps(_mm512_mul_ps(wp[c].d, da), _mm512_cvtepi32_ps(p), acc[r][c]);
        }
      }
    };
    const int64_t nb = a.n_in / 32;
    int64_t u = 0;
    for (; 2 * u + 2 <= nb; ++u) {
      constexpr size_t kStepBytes = 4 * NP * sizeof(BlockQ4_0);
      if (prefetch)
        prefetch_span<kStepBytes>(ahead.next + static_cast<size_t>(u) * kStepBytes, ahead.far);
      Q40::Packed wp[NP];
#pragma GCC unroll 8
      for (int c = 0; c < NP; ++c) wp[c] = Q40::full_pair(w[2 * c] + 2 * u, w[2 * c + 1] + 2 * u);
      apply(wp, u);
    }
    if (2 * u < nb) {  // the last block alone
      Q40::Packed wp[NP];
      for (int c = 0; c < NP; ++c)
        wp[c] = Q40::partial_pair(w[2 * c] + 2 * u, w[2 * c + 1] + 2 * u, false);
      apply(wp, u);
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) store_row_sums<NP>(acc[r], a.y + (i + r) * a.y_stride + j, ncol);
  }

  using Fn = void (*)(const KernelArgs&, int64_t, int64_t, int, bool);
  template <int MR>
  static constexpr Fn kRow[kNP] = {tile<MR, 1>, tile<MR, 2>, tile<MR, 3>, tile<MR, 4>};

  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    run_direct<Q40Direct>(a, j0, j1);
  }
};

// ---------------------------------------------------------------- Q4_0 decode
// One activation row (decode, a speculative drafter's steps): AVX2's Q4_0 decode tile
// (Q40Kernel::tile<1, NR> in matmul_avx2.cpp) step for step, except that each block pair's int32
// lanes come from two 256-bit vpdpbusd (AVX-512 VL + VNNI) started from minus the activation sums,
// where AVX2 runs two maddubs, an add, a madd and a subtraction. Every lane is the exact sum of
// the same products minus the same 8 x sum (no term saturates: at most 4 x 15 x 127 in AVX2's 16
// bits), so the floats, their steps and the horizontal sum are AVX2's, bit for bit. Fewer
// instructions per weight: decode of the 4-bit drafts is bound by them as much as by memory.
struct Q40Decode {
  static constexpr int kNR = 4;
  static constexpr size_t kShortTileBytes = 2048;
  struct Unpacked {
    __m256i lo, hi;  // nibbles 0..15 / 16..31 of both blocks, unsigned
    __m256 d;        // block 0's scale x4, block 1's x4
  };
  // As AVX2's Q40Kernel::unpack (kPair false: the last block of an odd count alone).
  template <bool kPair>
  static Unpacked unpack(const BlockQ4_0* blk) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m128i q0 = load128(blk[0].qs);
    const __m128i q1 = kPair ? load128(blk[1].qs) : _mm_setzero_si128();
    const __m256i q = _mm256_set_m128i(q1, q0);
    const __m128i h = _mm_insert_epi16(_mm_cvtsi32_si128(blk[0].d), kPair ? blk[1].d : 0, 1);
    const __m256i halves = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    return {_mm256_and_si256(q, low4), _mm256_and_si256(_mm256_srli_epi16(q, 4), low4),
            _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_cvtph_ps(h)), halves)};
  }
  template <int NR>
  static void tile(const KernelArgs& a, int64_t j) {
    const ActPairQ8* x = reinterpret_cast<const ActPairQ8*>(a.act);
    const BlockQ4_0* w[NR];
    for (int c = 0; c < NR; ++c) w[c] = row_at<BlockQ4_0>(a.w, a.w_row_bytes, j + c);
    // The tiles ahead follow this tile's rows in memory: pair step b / 2 prefetches its share of
    // the tile `ahead` tiles on. A tile of long rows (as AVX2: the next one, into L1) is far enough
    // ahead to hide the memory's latency; one of short rows is not (n_in 768: 1.7 KB ahead), so
    // those prefetch ~12 KB ahead into L2. One thread, interleaved A/B: 768-wide Q4_0 GEMVs 25%
    // faster (17 -> 21-23 GB/s), the 302M Q4_0 model's decode 12-33%; at n_in 1536 the far
    // prefetch cost 12-15%, hence only short tiles.
    const TileAhead ahead = tile_ahead(w[0], NR * a.w_row_bytes, kShortTileBytes);
    __m256 acc[NR];
    for (int c = 0; c < NR; ++c) acc[c] = _mm256_setzero_ps();
    const int64_t nb = a.n_in / 32;
    auto step = [&](int64_t b, auto pair) __attribute__((always_inline)) {
      const ActPairQ8& ap = x[b / 2];
      const __m256i alo = load256(ap.lo), ahi = load256(ap.hi);
      const __m256i neg = _mm256_sub_epi32(_mm256_setzero_si256(), load256(ap.sum8));
      const __m256 da = _mm256_loadu_ps(ap.d);
      for (int c = 0; c < NR; ++c) {
        const Unpacked u = unpack<decltype(pair)::value>(w[c] + b);
        const __m256i p = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(neg, u.lo, alo), u.hi, ahi);
        acc[c] = _mm256_fmadd_ps(_mm256_mul_ps(u.d, da), _mm256_cvtepi32_ps(p), acc[c]);
      }
    };
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      constexpr size_t kStepBytes = 2 * NR * sizeof(BlockQ4_0);
      prefetch_span<kStepBytes>(ahead.next + static_cast<size_t>(b / 2) * kStepBytes, ahead.far);
      step(b, std::true_type{});
    }
    if (b < nb) step(b, std::false_type{});
    for (int c = 0; c < NR; ++c) a.y[j + c] = hsum(acc[c]);
  }
  static constexpr void (*kTiles[kNR])(const KernelArgs&, int64_t) = {tile<1>, tile<2>, tile<3>,
                                                                      tile<4>};
  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    if (a.m > 1 && a.m <= Q40Direct::kMaxRows) return Q40Direct::run(a, j0, j1);
    if (a.m != 1) return run_packed<Q40, kRowBlock>(a, j0, j1);
    for (int64_t j = j0; j < j1; j += kNR) kTiles[(j1 - j < kNR ? j1 - j : kNR) - 1](a, j);
  }
};

}  // namespace

KernelFn avx512_kernel(GgmlType type, bool zmm_tiles) {
  switch (type) {
    case GgmlType::Q8_0:
      return zmm_tiles ? run_q8_0<true> : run_q8_0<false>;
    case GgmlType::Q4_0:
      return Q40Decode::run;
    default:
      // The super-block VNNI kernels (matmul_kquants_avx512.cpp) where they exist, else AVX2's.
      if (KernelFn k = avx512_kernel_kquants(type)) return k;
      if (KernelFn k = avx512_kernel_q4_1_q5_iq4(type)) return k;  // Q4_1, Q5_0, Q5_1, IQ4_NL
      if (KernelFn k = avx512_kernel_float(type)) return k;        // F16, BF16, F32
      return avx2_kernel(type);
  }
}

}  // namespace chimera::matmul_detail
