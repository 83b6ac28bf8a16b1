// AVX2 + FMA + F16C matmul kernels.
//
// Every kernel is a register tile of MR activation rows x NR weight rows. Each output element owns
// one accumulator that sees the same instructions in the same order (weight blocks in order, one
// fixed horizontal sum at the end) whatever MR and NR are, so the tile shape, and with it M, the
// row position and the thread split, never changes a bit of the result. Quantized types do their
// block dot products in exact integer arithmetic (maddubs/madd) and only the per-block scaling is
// floating point.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/act_quant.h"
#include "kernels/matmul.h"
#include "kernels/matmul_avx2_tiles.h"

namespace chimera::matmul_detail {
namespace {

using namespace avx2;  // hsum, fp16, row_ptr, prefetch_ahead, run_kernel

// ---------------------------------------------------------------- F32 / F16 / BF16 weights
struct LoadF32 {
  using Elem = float;
  static __m256 load8(const Elem* w) { return _mm256_loadu_ps(w); }
  static float load1(const Elem* w) { return *w; }
};
struct LoadF16 {
  using Elem = uint16_t;
  static __m256 load8(const Elem* w) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
  }
  static float load1(const Elem* w) { return fp16(*w); }
};
struct LoadBF16 {
  using Elem = uint16_t;
  static __m256 load8(const Elem* w) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
  static float load1(const Elem* w) {
    const uint32_t u = static_cast<uint32_t>(*w) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

template <class L>
struct FloatKernel {
  using Elem = typename L::Elem;
  static constexpr int kMR = 4, kNR = 3, kNRGemv = 4;
  static constexpr size_t kShortTileBytes = 8192, kFarBytes = 12288;

  // Decode and prefill (run_kernel); decode prefetches the next tile's weights into L1.
  template <int MR, int NR>
  static void tile(const KernelArgs& a, int64_t i, int64_t j) {
    const TileRows<float, Elem, MR, NR> t(a, i, j);
    const auto& x = t.x;
    const auto& w = t.w;
    __m256 acc[MR][NR];
    zero_tile(acc);
    const int64_t k8 = a.n_in & ~int64_t(7);
    // Decode tiles shorter than kShortTileBytes (n_in 768: 6 KB of F16) prefetch the tile ~12 KB
    // on, into L2: the next tile was too close to hide the memory's latency (one thread,
    // interleaved kernel A/B from memory: 768-wide F16 GEMV 10-15% faster), as for Q4_0 and the
    // K-quants on the AVX-512 path.
    const size_t tile_bytes = NR * a.w_row_bytes;
    const bool far = MR == 1 && tile_bytes < kShortTileBytes;
    const uint8_t* next =
        far ? t.next(a) + ((kFarBytes + tile_bytes / 2) / tile_bytes - 1) * tile_bytes : t.next(a);
    const bool to_l2 = far || tile_bytes > kL1PrefetchMaxTileBytes;
    for (int64_t k = 0; k < k8; k += 8) {
      if (MR == 1 || a.m <= kPrefetchMaxRows)
        prefetch_next_tile<NR * 8 * sizeof(Elem)>(next, k / 8, to_l2);
      __m256 wv[NR];
      for (int c = 0; c < NR; ++c) wv[c] = L::load8(w[c] + k);
      for (int r = 0; r < MR; ++r) {
        const __m256 xv = _mm256_loadu_ps(x[r] + k);
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
      }
    }
    store_with_tail<MR, NR>(a, i, j, t, k8, acc);
  }

  // The horizontal sum and the ragged tail k8..n_in as scalar FMAs, the same order for every
  // element.
  template <int MR, int NR>
  static void store_with_tail(const KernelArgs& a, int64_t i, int64_t j,
                              const TileRows<float, Elem, MR, NR>& t, int64_t k8,
                              const __m256 (&acc)[MR][NR]) {
    if (k8 == a.n_in) return store_tile(a, i, j, acc);  // no ragged tail: the sums alone
    for (int r = 0; r < MR; ++r) {
      for (int c = 0; c < NR; ++c) {
        __m128 s = _mm_set_ss(hsum(acc[r][c]));
        for (int64_t k = k8; k < a.n_in; ++k)
          s = _mm_fmadd_ss(_mm_set_ss(t.x[r][k]), _mm_set_ss(L::load1(t.w[c] + k)), s);
        a.y[(i + r) * a.y_stride + j + c] = _mm_cvtss_f32(s);
      }
    }
  }

  // ---- 2 to 16 rows (speculative verification, small decode batches)
  // The weights stream from memory once while the FMAs are about as many as the bytes: the
  // FMAs must overlap the stream. Two things did that (measured with weights from a 256 MiB set,
  // one thread, against run_kernel's 4 x 3 tiles and L1 prefetch one tile ahead):
  // - Tile shapes with 8 to 12 accumulators for every row count (5 rows as one 5 x 2 tile, not
  //   4 x 3 plus a 1 x 3 tile that waits on FMA latency): every tile at the 4 x 3 tile's FMA
  //   rate.
  // - The weights prefetched into L2 a group of kGroup rows ahead: a core's L1 miss buffers
  //   capped the stream while it computed (L1 prefetch: 4-8 rows took ~memory + compute time).
  // The columns go in groups of kGroup weight rows (a multiple of every tile width; 18 KB of
  // F16 at n_in 768, which stay in L1/L2 while each row tile runs over them), the first row tile
  // of a group prefetching the next group.
  static constexpr int64_t kSmallMaxRows = 16;
  static constexpr int64_t kGroup = 12;

  // tile() with the L2 prefetch of the next group (when `ahead`), and one load per activation
  // vector: left alone, the compiler folds the load into each of the NR FMAs (NR loads), and the
  // 5- and 6-row tiles ran at 60% of their FMA rate.
  template <int MR, int NR>
  static void group_tile(const KernelArgs& a, int64_t i, int64_t j, bool ahead) {
    const TileRows<float, Elem, MR, NR> t(a, i, j);
    const auto& x = t.x;
    const auto& w = t.w;
    __m256 acc[MR][NR];
    zero_tile(acc);
    const int64_t k8 = a.n_in & ~int64_t(7);
    const uint8_t* next = a.w + static_cast<size_t>(j + kGroup) * a.w_row_bytes;
    for (int64_t k = 0; k < k8; k += 8) {
      if (ahead) prefetch_ahead<NR * 8 * sizeof(Elem), 2>(next, k / 8);
      __m256 wv[NR];
      for (int c = 0; c < NR; ++c) wv[c] = L::load8(w[c] + k);
      for (int r = 0; r < MR; ++r) {
        __m256 xv = _mm256_loadu_ps(x[r] + k);
        if constexpr (NR > 1) asm("" : "+x"(xv));
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
      }
    }
    store_with_tail<MR, NR>(a, i, j, t, k8, acc);
  }

  using GroupTileFn = void (*)(const KernelArgs&, int64_t, int64_t, bool);
  // kShape[mr]: the tile width for mr rows (8 to 12 accumulators, at most 16 registers), and
  // kTiles[mr][nr - 1] the tile for a narrower last group.
  static constexpr int kShape[7] = {0, 4, 4, 3, 3, 2, 2};
  static constexpr GroupTileFn kTiles[7][4] = {
      {},
      {group_tile<1, 1>, group_tile<1, 2>, group_tile<1, 3>, group_tile<1, 4>},
      {group_tile<2, 1>, group_tile<2, 2>, group_tile<2, 3>, group_tile<2, 4>},
      {group_tile<3, 1>, group_tile<3, 2>, group_tile<3, 3>},
      {group_tile<4, 1>, group_tile<4, 2>, group_tile<4, 3>},
      {group_tile<5, 1>, group_tile<5, 2>},
      {group_tile<6, 1>, group_tile<6, 2>},
  };
  // kSplit[m]: the row tiles for m rows, 0-terminated.
  static constexpr int kSplit[kSmallMaxRows + 1][5] = {
      {0},       {1},       {2},       {3},          {4},          {5},
      {6},       {4, 3},    {4, 4},    {5, 4},       {6, 4},       {4, 4, 3},
      {4, 4, 4}, {5, 4, 4}, {6, 4, 4}, {4, 4, 4, 3}, {4, 4, 4, 4},
  };

  static void run_small(const KernelArgs& a, int64_t j0, int64_t j1) {
    const int* split = kSplit[a.m];
    for (int64_t j = j0; j < j1; j += kGroup) {
      const int64_t je = std::min(j1, j + kGroup);
      int64_t i = 0;
      for (int t = 0; split[t] != 0; ++t) {
        const int mr = split[t], nr = kShape[mr];
        for (int64_t c = j; c < je; c += nr) {
          const int64_t w = std::min<int64_t>(nr, je - c);
          kTiles[mr][w - 1](a, i, c, t == 0);
        }
        i += mr;
      }
    }
  }

  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    if (a.m >= 2 && a.m <= kSmallMaxRows) return run_small(a, j0, j1);
    run_kernel<FloatKernel>(a, j0, j1);
  }
};

// ---------------------------------------------------------------- Q8_0 weights
struct Q80Traits {
  using Block = BlockQ8_0;
  static constexpr bool kMin = false, kOffset16 = false, kSigned = true;
  static __m256i values(const Block& b) { return load256(b.qs); }
};

// ---------------------------------------------------------------- Q4_0 weights
// Two weight blocks per step: their 16 packed bytes side by side in one register give the low
// nibbles (values 0..15 of each block) and the high nibbles (values 16..31), which multiply the
// paired activations (ActPairQ8) directly. The two unsigned products are summed in 16 bits (at most
// 4 x 15 x 127), widened, the 8 x sums of the activations subtracted (exactly sum (n - 8) a), and
// each half scaled by its own block's scales: half the float work of one block per step.
struct Q40Kernel {
  static constexpr int kMR = 4, kNR = 2, kNRGemv = 4;

  struct Unpacked {
    __m256i lo, hi;  // nibbles 0..15 / 16..31 of both blocks, unsigned
    __m256 d;        // block 0's scale x4, block 1's x4
  };

  // kPair false: the last block of an odd count alone (partner nibbles and scale 0).
  template <bool kPair>
  static Unpacked unpack(const BlockQ4_0* blk) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[0].qs));
    const __m128i q1 =
        kPair ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[1].qs)) : _mm_setzero_si128();
    const __m256i q = _mm256_set_m128i(q1, q0);
    const __m128i h = _mm_insert_epi16(_mm_cvtsi32_si128(blk[0].d), kPair ? blk[1].d : 0, 1);
    const __m256i halves = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    return {_mm256_and_si256(q, low4), _mm256_and_si256(_mm256_srli_epi16(q, 4), low4),
            _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_cvtph_ps(h)), halves)};
  }

  static void dot(const Unpacked& w, const ActPairQ8& ap, __m256& acc) {
    const __m256i alo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap.lo));
    const __m256i ahi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap.hi));
    const __m256i p16 =
        _mm256_add_epi16(_mm256_maddubs_epi16(w.lo, alo), _mm256_maddubs_epi16(w.hi, ahi));
    const __m256i p =
        _mm256_sub_epi32(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)),
                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap.sum8)));
    acc = _mm256_fmadd_ps(_mm256_mul_ps(w.d, _mm256_loadu_ps(ap.d)), _mm256_cvtepi32_ps(p), acc);
  }

  // One step (two blocks) of every element of the tile. Decode (MR == 1) finishes one column
  // before unpacking the next, which keeps the accumulators in registers; both orders apply the
  // same operations to each element.
  template <int MR, int NR, bool kPair>
  static void step(const ActPairQ8* const (&x)[MR], const BlockQ4_0* const (&w)[NR], int64_t b,
                   __m256 (&acc)[MR][NR]) {
    if constexpr (MR == 1) {
      for (int c = 0; c < NR; ++c) dot(unpack<kPair>(w[c] + b), x[0][b / 2], acc[0][c]);
    } else {
      Unpacked u[NR];
      for (int c = 0; c < NR; ++c) u[c] = unpack<kPair>(w[c] + b);
      for (int r = 0; r < MR; ++r)
        for (int c = 0; c < NR; ++c) dot(u[c], x[r][b / 2], acc[r][c]);
    }
  }

  template <int MR, int NR>
  static void tile(const KernelArgs& a, int64_t i, int64_t j) {
    const TileRows<ActPairQ8, BlockQ4_0, MR, NR> t(a, i, j);
    const auto& x = t.x;
    const auto& w = t.w;
    __m256 acc[MR][NR];
    zero_tile(acc);
    const int64_t nb = a.n_in / 32;
    const uint8_t* next = t.next(a);
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      if (MR == 1 || a.m <= kPrefetchMaxRows)
        prefetch_ahead<2 * NR * sizeof(BlockQ4_0)>(next, b / 2);
      step<MR, NR, true>(x, w, b, acc);
    }
    if (b < nb) step<MR, NR, false>(x, w, b, acc);
    store_tile(a, i, j, acc);
  }

  // Prefill (run_packed): each weight pair unpacked once per column tile and row block instead
  // of once per row tile; the same dot() per element and pair.
  using Packed = Unpacked;
  static constexpr int64_t kPackBlocks = 80;  // pairs: 2 columns x 80 x 96 B = 15 KB
  static int64_t pack_units(const KernelArgs& a) { return (a.n_in / 32 + 1) / 2; }
  static void pack_column(const KernelArgs& a, int64_t j, int64_t p0, int64_t p1, Packed* out) {
    const BlockQ4_0* w = row_ptr<BlockQ4_0>(a.w, a.w_row_bytes, j);
    const int64_t nb = a.n_in / 32;
    for (int64_t p = p0; p < p1; ++p)
      out[p - p0] = 2 * p + 2 <= nb ? unpack<true>(w + 2 * p) : unpack<false>(w + 2 * p);
  }
  template <int MR, int NR>
  static void packed_tile(const KernelArgs& a, const Packed (*pk)[kPackBlocks], int64_t i,
                          int64_t p0, int64_t p1, __m256 (*acc)[kNR]) {
    PackedTileState<ActPairQ8, MR, NR, kNR> t(a, i, acc);
    for (int64_t p = p0; p < p1; ++p)
      for (int r = 0; r < MR; ++r)
        for (int c = 0; c < NR; ++c) dot(pk[c][p - p0], t.x[r][p], t.ac[r][c]);
    t.store();
  }

  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    if (a.m < kMR) return run_kernel<Q40Kernel>(a, j0, j1);  // decode and tiny batches
    run_packed<Q40Kernel>(a, j0, j1);
  }
};

// ---------------------------------------------------------------- Q4_K / Q5_K weights
// The 6-bit scales and mins of the 8 sub-blocks (spec 1.5), from the 12 packed bytes, as one
// vector: bytes 0..7 the scales, bytes 8..15 the mins. The unpacking runs in scalar registers
// (free integer ports while the vector units multiply) and never goes through memory, so no load
// waits on a partial store.
inline __m128i unpack_k_scales(const uint8_t* packed) {
  uint32_t u[3];
  std::memcpy(u, packed, 12);
  const uint32_t sc_lo = u[0] & 0x3f3f3f3f;
  const uint32_t mn_lo = u[1] & 0x3f3f3f3f;
  const uint32_t sc_hi = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
  const uint32_t mn_hi = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
  return _mm_set_epi32(static_cast<int>(mn_hi), static_cast<int>(mn_lo), static_cast<int>(sc_hi),
                       static_cast<int>(sc_lo));
}

// vpshufb masks that broadcast 16-bit lane s of a register to all 16 lanes (per 128-bit half).
alignas(32) constexpr uint8_t kBroadcast16[8][32] = {
#define CHIMERA_B16(s)                                                                            \
  {                                                                                               \
    2 * s, 2 * s + 1, 2 * s, 2 * s + 1, 2 * s, 2 * s + 1, 2 * s, 2 * s + 1, 2 * s, 2 * s + 1,     \
        2 * s, 2 * s + 1, 2 * s, 2 * s + 1, 2 * s, 2 * s + 1, 2 * s, 2 * s + 1, 2 * s, 2 * s + 1, \
        2 * s, 2 * s + 1, 2 * s, 2 * s + 1, 2 * s, 2 * s + 1, 2 * s, 2 * s + 1, 2 * s, 2 * s + 1, \
        2 * s, 2 * s + 1                                                                          \
  }
    CHIMERA_B16(0), CHIMERA_B16(1), CHIMERA_B16(2), CHIMERA_B16(3),
    CHIMERA_B16(4), CHIMERA_B16(5), CHIMERA_B16(6), CHIMERA_B16(7),
#undef CHIMERA_B16
};

inline __m256i broadcast16(__m256i v, int s) {
  return _mm256_shuffle_epi8(v,
                             _mm256_load_si256(reinterpret_cast<const __m256i*>(kBroadcast16[s])));
}

template <bool kFiveBit>
struct Q45KOps {
  using WBlock = std::conditional_t<kFiveBit, BlockQ5_K, BlockQ4_K>;
  static constexpr bool kSigned = false;

  struct Col {
    __m256i sc;  // the 8 scales as int16, in both 128-bit halves
    __m128i sm;  // bytes 0..7 the scales, 8..15 the mins
  };
  static Col prep(const WBlock& blk) {
    const __m128i sm = unpack_k_scales(blk.scales);
    return {_mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm)), sm};
  }

  // Step s: sub-block s, the low (even s) or high (odd s) nibbles of chunk s / 2, plus the fifth
  // bit s of qh for Q5_K.
  static __m256i values(const WBlock& blk, int s) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i q = load256(blk.qs + 32 * (s / 2));
    __m256i v = _mm256_and_si256((s & 1) ? _mm256_srli_epi16(q, 4) : q, low4);
    if constexpr (kFiveBit) {
      const __m256i qh = load256(blk.qh);
      v = _mm256_or_si256(
          v, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(s)),
                                                _mm256_set1_epi8(0x01)),
                               4));
    }
    return v;
  }
  static __m256i scale(const Col& col, int s) { return broadcast16(col.sc, s); }

  struct Tail {
    __m256i mins16;  // each min twice, next to each other: pairs with the sums of 16 (bsums)
    float d, dmin;
  };
  static Tail tail(const WBlock& blk, const Col& col) {
    const __m128i dup_mins =
        _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    return {_mm256_cvtepu8_epi16(_mm_shuffle_epi8(col.sm, dup_mins)), fp16(blk.d), fp16(blk.dmin)};
  }
  // The block's float contribution: d * sum - dmin * (mins . activation sums).
  static void finish(const Tail& t, const BlockQ8_K& ab, __m256i sumi, __m256& acc) {
    const __m256i msum = _mm256_madd_epi16(load256(ab.bsums), t.mins16);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(t.d * ab.d), _mm256_cvtepi32_ps(sumi), acc);
    acc = _mm256_fnmadd_ps(_mm256_set1_ps(t.dmin * ab.d), _mm256_cvtepi32_ps(msum), acc);
  }
};

// ---------------------------------------------------------------- Q6_K weights
// vpshufb masks for group g of a Q6_K half: the low 128 bits (values 0..15 of the group) take
// int16 scale 2g, the high 128 bits (values 16..31) scale 2g + 1.
alignas(32) constexpr uint8_t kQ6Scale[4][32] = {
#define CHIMERA_Q6S(g)                                                                          \
  {                                                                                             \
    4 * g, 4 * g + 1, 4 * g, 4 * g + 1, 4 * g, 4 * g + 1, 4 * g, 4 * g + 1, 4 * g, 4 * g + 1,   \
        4 * g, 4 * g + 1, 4 * g, 4 * g + 1, 4 * g, 4 * g + 1, 4 * g + 2, 4 * g + 3, 4 * g + 2,  \
        4 * g + 3, 4 * g + 2, 4 * g + 3, 4 * g + 2, 4 * g + 3, 4 * g + 2, 4 * g + 3, 4 * g + 2, \
        4 * g + 3, 4 * g + 2, 4 * g + 3, 4 * g + 2, 4 * g + 3                                   \
  }
    CHIMERA_Q6S(0),
    CHIMERA_Q6S(1),
    CHIMERA_Q6S(2),
    CHIMERA_Q6S(3),
#undef CHIMERA_Q6S
};

// Bits 2g, 2g+1 of each qh byte moved to bits 4, 5 (the value's high bits). 16-bit shifts are
// fine: the mask drops whatever crossed from the neighbouring byte. g is a constant once the
// caller's loop is unrolled, so the switch folds away.
inline __m256i q6_high_bits(__m256i qh, int g) {
  const __m256i m = _mm256_set1_epi8(0x30);
  switch (g) {
    case 0:
      return _mm256_and_si256(_mm256_slli_epi16(qh, 4), m);
    case 1:
      return _mm256_and_si256(_mm256_slli_epi16(qh, 2), m);
    case 2:
      return _mm256_and_si256(qh, m);
    default:
      return _mm256_and_si256(_mm256_srli_epi16(qh, 2), m);
  }
}

struct Q6KOps {
  using WBlock = BlockQ6_K;
  static constexpr bool kSigned = false;

  struct Col {
    __m256i sc[2];  // half h's 8 sub-block scales as int16, in both 128-bit halves
  };
  static Col prep(const BlockQ6_K& blk) {
    Col col;
    for (int half = 0; half < 2; ++half)
      col.sc[half] = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk.scales + 8 * half))));
    return col;
  }
  // Step s: group g = s % 4 of half s / 4, values 32 s + [0, 32), stored as q + 32 (0..63).
  static __m256i values(const BlockQ6_K& blk, int s) {
    const int half = s / 4, g = s % 4;
    const __m256i qh = load256(blk.qh + 32 * half);
    __m256i ql = load256(blk.ql + 64 * half + 32 * (g & 1));
    if (g >= 2) ql = _mm256_srli_epi16(ql, 4);
    return _mm256_or_si256(_mm256_and_si256(ql, _mm256_set1_epi8(0x0F)), q6_high_bits(qh, g));
  }
  static __m256i scale(const Col& col, int s) {
    return _mm256_shuffle_epi8(
        col.sc[s / 4], _mm256_load_si256(reinterpret_cast<const __m256i*>(kQ6Scale[s % 4])));
  }

  struct Tail {
    __m256i sc16;  // the 16 scales as int16
    float d;
  };
  static Tail tail(const BlockQ6_K& blk, const Col&) {
    return {_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales))),
            fp16(blk.d)};
  }
  static void finish(const Tail& t, const BlockQ8_K& ab, __m256i sumi, __m256& acc) {
    // The stored values are q + 32: subtract 32 * sum(scale * sum of 16 activations).
    const __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(load256(ab.bsums), t.sc16), 5);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(t.d * ab.d),
                          _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi, corr)), acc);
  }
};

}  // namespace

KernelFn avx2_kernel(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
      return FloatKernel<LoadF32>::run;
    case GgmlType::F16:
      return FloatKernel<LoadF16>::run;
    case GgmlType::BF16:
      return FloatKernel<LoadBF16>::run;
    case GgmlType::Q8_0:
      return Block32Kernel<Q80Traits>::run;
    case GgmlType::Q4_0:
      return Q40Kernel::run;
    case GgmlType::Q4_K:
      return SuperBlockKernel<Q45KOps<false>>::run;
    case GgmlType::Q5_K:
      return SuperBlockKernel<Q45KOps<true>>::run;
    case GgmlType::Q6_K:
      return SuperBlockKernel<Q6KOps>::run;
    default:
      return avx2_kernel_q4_1_q5_iq4(type);
  }
}

uint64_t memory_read_probe_avx2(const void* data, size_t bytes) {
  // 8 independent 256-bit accumulators and a software prefetch 2 KB ahead (as the GEMV kernels
  // do; it measured 5-15% faster than the hardware prefetcher alone here): the best streaming
  // read we know how to do, so that GEMV is not measured against an easy bar.
  const __m256i* p = static_cast<const __m256i*>(data);
  const size_t n = bytes / 32;
  __m256i acc[8];
  for (auto& a : acc) a = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const char* ahead = reinterpret_cast<const char*>(p + i) + 2048;
    for (int l = 0; l < 4; ++l) _mm_prefetch(ahead + 64 * l, _MM_HINT_T0);
    for (int k = 0; k < 8; ++k) acc[k] = _mm256_add_epi64(acc[k], _mm256_load_si256(p + i + k));
  }
  for (; i < n; ++i) acc[0] = _mm256_add_epi64(acc[0], _mm256_loadu_si256(p + i));
  for (int k = 1; k < 8; ++k) acc[0] = _mm256_add_epi64(acc[0], acc[k]);
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[0]);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

}  // namespace chimera::matmul_detail
