// Helpers and the packed prefill driver shared by the AVX-512 matmul files (*_avx512.cpp).
//
// Include this only from files compiled with the AVX-512 flags: its inline functions carry EVEX
// encodings, and matmul_avx2_tiles.h must not be included there for the same reason (the linker
// may keep either copy of an inline function). Every avx512 file has the same flags, so sharing
// these among them is safe.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/matmul.h"

namespace chimera::matmul_detail::avx512 {

#include "kernels/hsum_avx.inc"  // hsum, hsum_x4, hsum_x8: AVX2's sums, the same operations

inline float fp16(uint16_t h) {
  return _cvtsh_ss(h);
}

template <class T>
inline const T* row_at(const uint8_t* base, size_t stride, int64_t index) {
  return reinterpret_cast<const T*>(base + static_cast<size_t>(index) * stride);
}

inline __m128i load128(const void* p) {
  return _mm_loadu_si128(static_cast<const __m128i*>(p));
}

inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// 32 bytes at p in both 256-bit halves.
inline __m512i bcast256(const void* p) {
  return _mm512_broadcast_i64x4(load256(p));
}

// Two columns' 256-bit halves side by side.
inline __m512i join256(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
}

// ---------------------------------------------------------------- packed prefill driver
// Register tile: kMR activation rows x K::kNP column pairs (one 512-bit accumulator holds the 8
// lanes of two output columns). The tile's loops are unrolled by pragma, so that its integer and
// float accumulators stay in registers. For each kRowBlock-row block and group of 2 K::kNP
// columns, up to K::kPackUnits units of K (blocks, block pairs or super-blocks) are packed into an
// L1-sized buffer and every row tile runs over them; accumulators live in `acc` between chunks
// (stored and reloaded exactly). A group with an odd column count packs a zero partner column
// whose lanes are discarded. K provides Act, Packed, kNP (at most 4), kPackUnits, units(a), pack()
// and step(). The tile shape only decides which elements share a loop: each element's operations
// are the same for every shape, so kNP is chosen per kernel for speed alone.
constexpr int kMR = 4;

// The horizontal sums of the 2 NP output columns of one row, y[0..ncol), each exactly hsum of
// its 8 lanes (and so AVX2's hsum): the same three rounds of adds with the same operands in the
// same order (lo + hi halves, then lanes 0 + 2 and 1 + 3, then their sum), done for 8 columns at
// once instead of one at a time (a tenth of a K-quant GEMM went to the one-at-a-time sums).
template <int NP>
inline void store_row_sums(const __m512 (&ac)[NP], float* y, int ncol) {
  __m512 v[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                 _mm512_setzero_ps()};
#pragma GCC unroll 4
  for (int c = 0; c < NP; ++c) v[c] = ac[c];
  // Round 1, per column: its lanes 0..3 + lanes 4..7. Column 2c + h (h = 0, 1) sits in v[c]'s
  // 128-bit chunks 2h (lanes 0..3) and 2h + 1 (lanes 4..7).
  const __m512 lo01 = _mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0));
  const __m512 hi01 = _mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1));
  const __m512 s01 = _mm512_add_ps(lo01, hi01);  // chunk k: column k's 4 partial sums
  __m512 s23 = _mm512_setzero_ps();
  if constexpr (NP > 2) {
    const __m512 lo23 = _mm512_shuffle_f32x4(v[2], v[3], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 hi23 = _mm512_shuffle_f32x4(v[2], v[3], _MM_SHUFFLE(3, 1, 3, 1));
    s23 = _mm512_add_ps(lo23, hi23);  // chunk k: column 4 + k's
  }
  // Round 2: s0 + s2 and s1 + s3 of column k (lanes 0, 1 of chunk k) and of column 4 + k (2, 3).
  const __m512 w = _mm512_add_ps(_mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(3, 2, 3, 2)));
  // Round 3: their sum; chunk k lane 0 is column k, lane 1 column 4 + k.
  const __m512 z = _mm512_add_ps(_mm512_shuffle_ps(w, w, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(w, w, _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256 out = _mm512_castps512_ps256(_mm512_permutexvar_ps(order, z));
  _mm256_mask_storeu_ps(y, static_cast<__mmask8>((1u << ncol) - 1), out);
}

// The tile of a kernel that provides step() (packed_tile's contract): the loop over the units.
template <class K, int MR, int NP>
void packed_tile_steps(const KernelArgs& a, const typename K::Packed (*pk)[K::kPackUnits],
                       int64_t i, int64_t j, int ncol, int64_t u0, int64_t u1, int64_t nu,
                       __m512 (*acc)[K::kNP]) {
  using Act = typename K::Act;
  const Act* x[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) x[r] = row_at<Act>(a.act, a.act_stride, i + r);
  __m512 ac[MR][NP];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < NP; ++c) ac[r][c] = u0 == 0 ? _mm512_setzero_ps() : acc[r][c];
  for (int64_t u = u0; u < u1; ++u) {
    const typename K::Packed* p[NP];
#pragma GCC unroll 8
    for (int c = 0; c < NP; ++c) p[c] = &pk[c][u - u0];
    K::template step<MR, NP>(x, p, u, ac);
  }
  if (u1 == nu) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) store_row_sums<NP>(ac[r], a.y + (i + r) * a.y_stride + j, ncol);
    return;
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < NP; ++c) acc[r][c] = ac[r][c];
}

// Rows [i, i + MR) x columns [j, j + ncol) (2 NP - 1 <= ncol <= 2 NP) over units [u0, u1) of
// nu. The accumulators start from zero at the first unit and, after the last, end in their
// horizontal sums in y; in between (K in several chunks) they wait in `acc` (row r at acc[r]).
// A kernel with K::kOwnTile runs the whole tile itself (K::tile, same contract).
template <class K, int MR, int NP>
void packed_tile(const KernelArgs& a, const typename K::Packed (*pk)[K::kPackUnits], int64_t i,
                 int64_t j, int ncol, int64_t u0, int64_t u1, int64_t nu, __m512 (*acc)[K::kNP]) {
  if constexpr (requires { K::kOwnTile; }) {
    K::template tile<MR, NP>(a, pk, i, j, ncol, u0, u1, nu, acc);
  } else {
    packed_tile_steps<K, MR, NP>(a, pk, i, j, ncol, u0, u1, nu, acc);
  }
}

// packed_tile<K, MR, NP> by [MR - 1][NP - 1] (entries past K::kNP are never called).
template <class K>
struct PackedTiles {
  using Fn = void (*)(const KernelArgs&, const typename K::Packed (*)[K::kPackUnits], int64_t,
                      int64_t, int, int64_t, int64_t, int64_t, __m512 (*)[K::kNP]);
  template <int MR, int NP>
  static constexpr Fn entry() {
    if constexpr (NP <= K::kNP) {
      return packed_tile<K, MR, NP>;
    } else {
      return nullptr;
    }
  }
  template <int MR>
  static constexpr Fn kRow[4] = {entry<MR, 1>(), entry<MR, 2>(), entry<MR, 3>(), entry<MR, 4>()};
  static constexpr const Fn* kTable[kMR] = {kRow<1>, kRow<2>, kRow<3>, kRow<4>};
};

// Batches of up to this many rows (a few sequences decoding together, speculative verification)
// are not compute-bound enough to hide the weight reads: the driver prefetches, into L2, the
// weights of the column group kPrefetchGroups ahead while it packs and multiplies this one. The
// rows are a few hundred bytes, too short a stream for the hardware prefetcher; without this the
// packing waits on every weight line (distances of 2 to 8 groups did alike). Larger batches
// prefetch the next group's weights: packing a group waited on its weight lines for about a
// tenth of a Q8_0 prefill GEMM (a profile), although a group's tiles take long enough to hide
// the read.
constexpr int64_t kPrefetchMaxRows = 16;
constexpr int64_t kPrefetchGroups = 4;

// Prefetches bytes [b0, b1) of weight rows [j, j_end) into L2.
inline void prefetch_rows(const KernelArgs& a, int64_t j, int64_t j_end, size_t b0, size_t b1) {
  for (int64_t r = j; r < j_end; ++r) {
    const char* row = reinterpret_cast<const char*>(a.w) + static_cast<size_t>(r) * a.w_row_bytes;
    for (size_t o = b0; o < b1; o += 64) _mm_prefetch(row + o, _MM_HINT_T1);
  }
}

// Decode tiles (one activation row) prefetch the weights of the tile far_tiles_ahead() on while
// they read their own: the next tile for long rows, ~kFarPrefetchBytes on (into L2) for a tile of
// short rows, whose next tile is too close to hide the memory's latency (n_in 768: ~1.7 KB of
// Q4_0 or Q4_K a tile). Shared by the Q4_0 and K-quant decode tiles.
constexpr size_t kFarPrefetchBytes = 12288;
inline size_t far_tiles_ahead(bool far, size_t tile_bytes) {
  return far ? (kFarPrefetchBytes + tile_bytes / 2) / tile_bytes : 1;
}
// Where a tile of weight rows (tile_bytes in all, the first at first_row) prefetches: the tile
// far_tiles_ahead() on, into L2 (far) when the tile is shorter than short_bytes, else the next
// one into L1.
struct TileAhead {
  const uint8_t* next;
  bool far;
};
inline TileAhead tile_ahead(const void* first_row, size_t tile_bytes, size_t short_bytes) {
  const bool far = tile_bytes < short_bytes;
  return {static_cast<const uint8_t*>(first_row) + far_tiles_ahead(far, tile_bytes) * tile_bytes,
          far};
}
// Prefetches [p, p + kBytes) into L2 (to_l2) or L1.
template <size_t kBytes>
inline void prefetch_span(const uint8_t* p, bool to_l2) {
  if (to_l2) {
#pragma GCC unroll 16
    for (size_t o = 0; o < kBytes; o += 64)
      _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T1);
  } else {
#pragma GCC unroll 16
    for (size_t o = 0; o < kBytes; o += 64)
      _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
  }
}

template <class K, int64_t kRowBlock>
void run_packed(const KernelArgs& a, int64_t j0, int64_t j1) {
  using Packed = typename K::Packed;
  constexpr int64_t kPU = K::kPackUnits;
  constexpr int kNP = K::kNP;
  static_assert(kMR == 4 && kNP >= 1 && kNP <= 4);
  const auto& fn = PackedTiles<K>::kTable;
  alignas(64) Packed pk[kNP][kPU];
  alignas(64) __m512 acc[kRowBlock][kNP];
  const int64_t nu = K::units(a);
  for (int64_t ib = 0; ib < a.m; ib += kRowBlock) {
    const int64_t ie = ib + kRowBlock < a.m ? ib + kRowBlock : a.m;
    for (int64_t j = j0; j < j1; j += 2 * kNP) {
      const int64_t ncol = j1 - j < 2 * kNP ? j1 - j : 2 * kNP;
      const int np = static_cast<int>((ncol + 1) / 2);
      for (int64_t u0 = 0; u0 < nu; u0 += kPU) {
        const int64_t u1 = u0 + kPU < nu ? u0 + kPU : nu;
        {  // the same units of a later group's rows
          const int64_t jn = j + (a.m <= kPrefetchMaxRows ? kPrefetchGroups : 1) * 2 * kNP;
          const int64_t jn_end = jn + 2 * kNP < j1 ? jn + 2 * kNP : j1;
          prefetch_rows(a, jn, jn_end, static_cast<size_t>(u0) * a.w_row_bytes / nu,
                        static_cast<size_t>(u1) * a.w_row_bytes / nu);
        }
        for (int c = 0; c < np; ++c) K::pack(a, j + 2 * c, 2 * c + 1 < ncol, u0, u1, pk[c]);
        for (int64_t i = ib; i < ie; i += kMR) {
          const int mr = static_cast<int>(ie - i < kMR ? ie - i : kMR);
          fn[mr - 1][np - 1](a, pk, i, j, static_cast<int>(ncol), u0, u1, nu, acc + (i - ib));
        }
      }
    }
  }
}

// The AVX-512 kernel for a type: the packed driver for batches of kMR rows or more, the
// (bit-identical) AVX2 kernel for decode and tiny batches.
template <class K, GgmlType kType, int64_t kRowBlock>
void run(const KernelArgs& a, int64_t j0, int64_t j1) {
  if (a.m < kMR) return avx2_kernel(kType)(a, j0, j1);
  run_packed<K, kRowBlock>(a, j0, j1);
}

}  // namespace chimera::matmul_detail::avx512
