// What every AVX2 matmul kernel file shares: small helpers and the tiling driver that walks the
// output in register tiles. Include only from *_avx2.cpp files (they are compiled with AVX2 flags).
//
// A kernel K provides kMR, kNR (GEMM tile) and kNRGemv (decode tile), each at most 4, and
// `template <int MR, int NR> static void tile(const KernelArgs&, int64_t i, int64_t j)`, which
// computes rows [i, i + MR) x columns [j, j + NR) with one accumulator per output element that sees
// the same instructions in the same order whatever MR and NR are. The driver only chooses which
// tiles run, so a row's result never depends on the batch, its position or the thread split.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/matmul.h"

namespace chimera::matmul_detail::avx2 {

// Rows of activations kept hot in cache while a thread walks its weight columns (prefill).
constexpr int64_t kRowBlock = 64;

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float fp16(uint16_t h) {
  return _cvtsh_ss(h);
}

template <class T>
inline const T* row_ptr(const uint8_t* base, size_t stride, int64_t index) {
  return reinterpret_cast<const T*>(base + static_cast<size_t>(index) * stride);
}

// Decode reads each weight row once, and a row is only a few KB: too short a stream for the
// hardware prefetcher to ramp up. A GEMV tile therefore prefetches the next tile's rows (they
// follow this tile's in memory) at the same relative position, one tile ahead. `next` is the
// start of the next tile; step k of the loop covers bytes [k * kBytes, (k + 1) * kBytes).
template <size_t kBytes>
inline void prefetch_ahead(const uint8_t* next, int64_t k) {
  const uint8_t* p = next + static_cast<size_t>(k) * kBytes;
  for (size_t o = 0; o < kBytes; o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
}

using TileFn = void (*)(const KernelArgs&, int64_t, int64_t);

template <class K, int MR, int NR>
void tile_entry(const KernelArgs& a, int64_t i, int64_t j) {
  if constexpr (MR <= K::kMR && NR <= std::max(K::kNR, K::kNRGemv)) {
    K::template tile<MR, NR>(a, i, j);
  }
}

template <class K>
struct TileTable {
  // fn[mr - 1][nr - 1]
  static constexpr TileFn fn[4][4] = {
      {tile_entry<K, 1, 1>, tile_entry<K, 1, 2>, tile_entry<K, 1, 3>, tile_entry<K, 1, 4>},
      {tile_entry<K, 2, 1>, tile_entry<K, 2, 2>, tile_entry<K, 2, 3>, tile_entry<K, 2, 4>},
      {tile_entry<K, 3, 1>, tile_entry<K, 3, 2>, tile_entry<K, 3, 3>, tile_entry<K, 3, 4>},
      {tile_entry<K, 4, 1>, tile_entry<K, 4, 2>, tile_entry<K, 4, 3>, tile_entry<K, 4, 4>},
  };
};

template <class K>
void run_kernel(const KernelArgs& a, int64_t j0, int64_t j1) {
  static_assert(K::kMR <= 4 && K::kNR <= 4 && K::kNRGemv <= 4);
  const auto& fn = TileTable<K>::fn;
  if (a.m == 1) {  // decode: one activation row against many weight rows
    for (int64_t j = j0; j < j1; j += K::kNRGemv) {
      const int nr = static_cast<int>(std::min<int64_t>(K::kNRGemv, j1 - j));
      fn[0][nr - 1](a, 0, j);
    }
    return;
  }
  for (int64_t ib = 0; ib < a.m; ib += kRowBlock) {
    const int64_t ie = std::min(a.m, ib + kRowBlock);
    for (int64_t j = j0; j < j1; j += K::kNR) {
      const int nr = static_cast<int>(std::min<int64_t>(K::kNR, j1 - j));
      for (int64_t i = ib; i < ie; i += K::kMR) {
        const int mr = static_cast<int>(std::min<int64_t>(K::kMR, ie - i));
        fn[mr - 1][nr - 1](a, i, j);
      }
    }
  }
}

}  // namespace chimera::matmul_detail::avx2
