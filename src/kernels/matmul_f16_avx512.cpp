// AVX-512 matmul kernels for float weights (F16, BF16, F32), bit-identical to the AVX2 kernel
// (FloatKernel in matmul_avx2.cpp).
//
// Why the bits match: AVX2 gives each output element one 8-lane accumulator; for k = 0, 8, 16, ...
// (up to the last multiple of 8) lane l does acc = fma(x[k + l], w[k + l], acc); then AVX2's one
// horizontal sum, and the ragged tail k8..n_in as scalar FMAs onto that sum. Here one 512-bit
// register holds the 8 lanes of two output columns side by side (the weights of column c in the
// low half, c + 1 in the high half, the activations broadcast to both halves), so every lane sees
// the same FMAs in the same order; both halves end in AVX2's horizontal sum (done on the pair at
// once, same adds in the same order) and the same scalar tail. Tile shape, M, row position and
// thread split never change a bit.
//
// Why it is faster: a tile of kMR rows x 2 kNP columns does 24 512-bit FMAs per 8 values of K
// from 6 activation loads and 4 weight conversions (AVX2's 4 x 3 tile: 12 256-bit FMAs from 4
// loads and 3 conversions), and 17 rows run as 5 + 6 + 6 instead of 4 x 4 + 1. The weights are read
// as stored (no packing pass: it cost more than it saved at every batch size measured), and the
// accumulators stay in registers from the first FMA to the horizontal sum, as on AVX2.
//
// Compiled with AVX-512 flags: include matmul_avx512_common.h, never matmul_avx2_tiles.h.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/matmul.h"
#include "kernels/matmul_avx512_common.h"

namespace chimera::matmul_detail {
namespace {

using namespace avx512;  // NOLINT: hsum, fp16, row_at

constexpr int kMR = 6, kNP = 4;  // register tile: 6 rows x 4 column pairs = 24 accumulators
constexpr int64_t kRowBlock = 64;
// Batches of 2 to 16 rows (speculative verification, small decode batches) run SmallBatch's
// 256-bit tiles, decode (one row) the AVX2 kernel (same bits): with the weights coming from
// memory, as in a model, AVX2's 256-bit tiles measured 4-7% faster than this kernel at 9 and 16
// rows (its 8 weight rows and the tile's activations crowd L1).
constexpr int64_t kMinRows = 17;

// Eight 16-bit weights of row a at wa (low half) and eight of row b at wb (high half).
inline __m256i load_halves(const uint16_t* wa, const uint16_t* wb) {
  return _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wa))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb)), 1);
}

// Eight weights of row a at w_a and eight of row b at w_b as 16 floats (a's in the low half).
struct LoadF16 {
  using Elem = uint16_t;
  static constexpr GgmlType kType = GgmlType::F16;
  static __m512 load_pair(const Elem* wa, const Elem* wb) {
    return _mm512_cvtph_ps(load_halves(wa, wb));
  }
  static __m256 load8(const Elem* w) { return _mm256_cvtph_ps(load128(w)); }
  static float load1(const Elem* w) { return fp16(*w); }
};
struct LoadBF16 {
  using Elem = uint16_t;
  static constexpr GgmlType kType = GgmlType::BF16;
  static __m512 load_pair(const Elem* wa, const Elem* wb) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load_halves(wa, wb)), 16));
  }
  static __m256 load8(const Elem* w) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load128(w)), 16));
  }
  static float load1(const Elem* w) {
    const uint32_t u = static_cast<uint32_t>(*w) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};
struct LoadF32 {
  using Elem = float;
  static constexpr GgmlType kType = GgmlType::F32;
  static __m512 load_pair(const Elem* wa, const Elem* wb) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(wa)), _mm256_loadu_ps(wb), 1);
  }
  static __m256 load8(const Elem* w) { return _mm256_loadu_ps(w); }
  static float load1(const Elem* w) { return *w; }
};

// The ragged tail k8..n_in of one element, in order onto its horizontal sum, as AVX2 does.
template <class L>
float ragged_tail(float sum, const float* x, const typename L::Elem* w, int64_t k8, int64_t n_in) {
  __m128 s = _mm_set_ss(sum);
  for (int64_t k = k8; k < n_in; ++k)
    s = _mm_fmadd_ss(_mm_set_ss(x[k]), _mm_set_ss(L::load1(w + k)), s);
  return _mm_cvtss_f32(s);
}

// 2 to 16 rows: AVX2's FloatKernel::group_tile arithmetic (one 256-bit accumulator per element,
// the same FMAs in k order, hsum, the scalar tail), in tiles of up to 6 rows x 4 columns. The
// 32 registers of AVX-512 hold 24 accumulators (AVX2's 16 hold 12), and the tile keeps them in
// registers through the horizontal sums, which end in one 128-bit store per row. At K = 256 (the
// 5M model, weights in L2/L3) a tile runs only 32 steps, and AVX2's tile start and end (its sums
// spill the accumulators) took a fifth of its time. One thread, weights in L2, against AVX2's
// run_small: 8 rows 3-5% faster, 9 rows 8-10%, 3 rows 10%, 2 rows the same; 768 and 2048 wide
// from memory, 8 and 9 rows 0-15% faster.
template <class L>
struct SmallBatch {
  using Elem = typename L::Elem;
  static constexpr int kNC = 4;
  // The first row tile of a column group prefetches, into L2, the group kAhead groups on (the
  // same distance, 12 weight rows, as AVX2's run_small).
  static constexpr int64_t kAhead = 3;

  template <int MR, int NC>
  static void tile(const KernelArgs& a, int64_t i, int64_t j, bool ahead) {
    const float* x[MR];
    const Elem* w[NC];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) x[r] = row_at<float>(a.act, a.act_stride, i + r);
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) w[c] = row_at<Elem>(a.w, a.w_row_bytes, j + c);
    __m256 acc[MR][NC];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) acc[r][c] = _mm256_setzero_ps();
    const int64_t k8 = a.n_in & ~int64_t(7);
    const uint8_t* next = a.w + static_cast<size_t>(j + kAhead * kNC) * a.w_row_bytes;
    for (int64_t k = 0; k < k8; k += 8) {
      if (ahead) {
        const uint8_t* p = next + static_cast<size_t>(k / 8) * (NC * 8 * sizeof(Elem));
#pragma GCC unroll 8
        for (size_t o = 0; o < NC * 8 * sizeof(Elem); o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
      }
      __m256 wv[NC];
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) wv[c] = L::load8(w[c] + k);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        __m256 xv = _mm256_loadu_ps(x[r] + k);
        asm("" : "+v"(xv));  // one load per activation vector, not one folded into each FMA
#pragma GCC unroll 8
        for (int c = 0; c < NC; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      float* y = a.y + (i + r) * a.y_stride + j;
      if constexpr (NC == kNC) {
        _mm_storeu_ps(y, hsum_x4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
      } else {
#pragma GCC unroll 8
        for (int c = 0; c < NC; ++c) y[c] = hsum(acc[r][c]);
      }
      if (k8 < a.n_in)
        for (int c = 0; c < NC; ++c) y[c] = ragged_tail<L>(y[c], x[r], w[c], k8, a.n_in);
    }
  }

  using TileFn = void (*)(const KernelArgs&, int64_t, int64_t, bool);
  template <int MR>
  static constexpr TileFn kRow[kNC] = {tile<MR, 1>, tile<MR, 2>, tile<MR, 3>, tile<MR, 4>};
  static constexpr const TileFn* kTiles[7] = {nullptr, kRow<1>, kRow<2>, kRow<3>,
                                              kRow<4>, kRow<5>, kRow<6>};
  // kSplit[m]: the row tiles for m rows, 0-terminated (as even as 6-row tiles allow).
  static constexpr int kSplit[kMinRows][4] = {
      {0},    {1},    {2},    {3},    {4},       {5},       {6},       {4, 3},    {4, 4},
      {5, 4}, {5, 5}, {6, 5}, {6, 6}, {5, 4, 4}, {5, 5, 4}, {5, 5, 5}, {6, 5, 5},
  };

  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    const int* split = kSplit[a.m];
    for (int64_t j = j0; j < j1; j += kNC) {
      const int nc = static_cast<int>(j1 - j < kNC ? j1 - j : kNC);
      int64_t i = 0;
      for (int t = 0; split[t] != 0; ++t) {
        kTiles[split[t]][nc - 1](a, i, j, t == 0);
        i += split[t];
      }
    }
  }
};

template <class L>
struct FloatKernel {
  using Elem = typename L::Elem;
  // Rows [i, i + MR) x the NP column pairs of the group starting at column j, over all of K:
  // `w[c]` are the group's weight rows (a missing partner column repeats its first; its lanes are
  // discarded), ncol its real column count. `next`: where to prefetch the next group's weights
  // from (nullptr: no prefetch). The first row tile of each group prefetches: the weights come
  // from memory once per row block, and the hardware prefetcher alone left 10% on the table.
  template <int MR, int NP>
  static void tile(const KernelArgs& a, int64_t i, int64_t j, int ncol,
                   const Elem* const (&w)[2 * kNP], const uint8_t* next) {
    const float* x[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) x[r] = row_at<float>(a.act, a.act_stride, i + r);
    const Elem* wp[2 * NP];
#pragma GCC unroll 8
    for (int c = 0; c < 2 * NP; ++c) wp[c] = w[c];
    __m512 ac[MR][NP];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < NP; ++c) ac[r][c] = _mm512_setzero_ps();
    const int64_t k8 = a.n_in & ~int64_t(7);
    for (int64_t k = 0; k < k8; k += 8) {
      if (next != nullptr) {
        // The next group's 2 kNP rows follow this group's in memory: step k / 8 prefetches
        // bytes [k / 8, k / 8 + 1) x (2 kNP x 8 elements) of them.
        const uint8_t* p = next + static_cast<size_t>(k / 8) * (2 * kNP * 8 * sizeof(Elem));
#pragma GCC unroll 8
        for (size_t o = 0; o < 2 * kNP * 8 * sizeof(Elem); o += 64)
          _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
      }
      __m512 wv[NP];
#pragma GCC unroll 8
      for (int c = 0; c < NP; ++c) wv[c] = L::load_pair(wp[2 * c] + k, wp[2 * c + 1] + k);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m512 xv = _mm512_broadcast_f32x8(_mm256_loadu_ps(x[r] + k));
#pragma GCC unroll 8
        for (int c = 0; c < NP; ++c) ac[r][c] = _mm512_fmadd_ps(xv, wv[c], ac[r][c]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      float* y = a.y + (i + r) * a.y_stride + j;
#pragma GCC unroll 8
      for (int c = 0; c < NP; ++c) {
        const __m512 h = hsum_pair(ac[r][c]);
        float s0 = _mm512_cvtss_f32(h), s1 = _mm_cvtss_f32(_mm512_extractf32x4_ps(h, 2));
        if (k8 < a.n_in) {
          s0 = ragged_tail<L>(s0, x[r], wp[2 * c], k8, a.n_in);
          s1 = ragged_tail<L>(s1, x[r], wp[2 * c + 1], k8, a.n_in);
        }
        y[2 * c] = s0;
        if (2 * c + 1 < ncol) y[2 * c + 1] = s1;
      }
    }
  }

  using TileFn = void (*)(const KernelArgs&, int64_t, int64_t, int, const Elem* const (&)[2 * kNP],
                          const uint8_t*);
  template <int MR>
  static constexpr TileFn kRow[kNP] = {tile<MR, 1>, tile<MR, 2>, tile<MR, 3>, tile<MR, 4>};
  static constexpr const TileFn* kTiles[kMR] = {kRow<1>, kRow<2>, kRow<3>,
                                                kRow<4>, kRow<5>, kRow<6>};
  static_assert(kMR == 6 && kNP == 4);

  // AVX2's horizontal sum (hsum) of both columns of a pair at once, operation for operation:
  // per 256-bit half, its low 128 bits plus its high 128 bits, then lanes 0, 1 plus lanes 2, 3,
  // then lane 0 plus lane 1. Lane 0 ends with column 2c's sum, lane 8 with column 2c + 1's.
  static __m512 hsum_pair(__m512 v) {
    const __m512 s = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
    const __m512 t = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(t, _mm512_movehdup_ps(t));
  }

  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    if (a.m < 2) return avx2_kernel(L::kType)(a, j0, j1);
    if (a.m < kMinRows) return SmallBatch<L>::run(a, j0, j1);
    for (int64_t ib = 0; ib < a.m; ib += kRowBlock) {
      const int64_t rows = a.m - ib < kRowBlock ? a.m - ib : kRowBlock;
      const int64_t tiles = (rows + kMR - 1) / kMR;  // split evenly: 17 rows run as 5 + 6 + 6
      for (int64_t j = j0; j < j1; j += 2 * kNP) {
        const int ncol = static_cast<int>(j1 - j < 2 * kNP ? j1 - j : 2 * kNP);
        const int np = (ncol + 1) / 2;
        const Elem* w[2 * kNP];
        for (int c = 0; c < 2 * kNP; ++c)
          w[c] = row_at<Elem>(a.w, a.w_row_bytes, j + (c < ncol ? c : ncol - 1));
        const uint8_t* next = reinterpret_cast<const uint8_t*>(w[0]) + 2 * kNP * a.w_row_bytes;
        for (int64_t t = 0; t < tiles; ++t) {
          const int64_t r0 = t * rows / tiles, r1 = (t + 1) * rows / tiles;
          kTiles[r1 - r0 - 1][np - 1](a, ib + r0, j, ncol, w, t == 0 ? next : nullptr);
        }
      }
    }
  }
};

}  // namespace

KernelFn avx512_kernel_float(GgmlType type) {
  switch (type) {
    case GgmlType::F16:
      return FloatKernel<LoadF16>::run;
    case GgmlType::BF16:
      return FloatKernel<LoadBF16>::run;
    case GgmlType::F32:
      return FloatKernel<LoadF32>::run;
    default:
      return nullptr;
  }
}

}  // namespace chimera::matmul_detail
