// AVX-512 (VL/BW/VNNI) decode and prefill kernels for Q4_1, Q5_0, Q5_1 and IQ4_NL, bit-identical
// to the AVX2 paired kernels (matmul_q4_1_q5_iq4_avx2.cpp). IQ4_XS is matmul_kquants_avx512.cpp's
// (VNNI prefill, AVX2 decode).
//
// Why the results match bit for bit: AVX2 builds, per pair of blocks and output element, 8 int32
// lanes (0..3 the first block, 4..7 the second), each the exact sum of 8 byte products
// (maddubs/madd never saturate here: unsigned levels <= 31, and IQ4_NL goes through the sign
// trick). vpdpbusd adds the same 4-product sums into the same lanes, so the lanes hold the same
// integers; the float step per pair (same operations, same order) and the final horizontal sum
// are AVX2's. IQ4_NL: the grid is looked up with 128 added (unsigned), and 128 x (the lane's
// activation sum) = 16 x sum8 is taken off again: exact integers, the same lanes.
// The fifth bits of Q5_0/Q5_1 are 32-bit masks (one bit per byte of a register): one masked add
// of 0x10 per register, instead of AVX2's byte shuffles and compares.
// Q5_0/Q5_1 decode puts two columns in one 512-bit register (each half one column's AVX2
// register, activations broadcast to both halves); Q4_1/IQ4_NL stay at 256 bits (faster here).
//
// Compiled with AVX-512 flags: it must not include matmul_avx2_tiles.h (its inline functions
// would be emitted with EVEX encodings and could be picked by the linker for the AVX2 files), nor
// call inline functions of other headers; it keeps its own helpers in an anonymous namespace.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
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

using avx512::hsum;
using avx512::load256;
using avx512::row_at;

inline __m128i load128(const void* p) {
  return _mm_loadu_si128(static_cast<const __m128i*>(p));
}

inline uint32_t load_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Traits as on AVX2: kMin (Q4_1, Q5_1), kOffset16 (Q5_0), kFifthBit (Q5_0, Q5_1), kGrid (IQ4_NL).
struct Q41Traits {
  using Block = BlockQ4_1;
  static constexpr bool kMin = true, kOffset16 = false, kFifthBit = false, kGrid = false;
};
struct Q51Traits {
  using Block = BlockQ5_1;
  static constexpr bool kMin = true, kOffset16 = false, kFifthBit = true, kGrid = false;
};
struct Q50Traits {
  using Block = BlockQ5_0;
  static constexpr bool kMin = false, kOffset16 = true, kFifthBit = true, kGrid = false;
};
struct IQ4NLTraits {
  using Block = BlockIQ4_NL;
  static constexpr bool kMin = false, kOffset16 = false, kFifthBit = false, kGrid = true;
};

template <class T>
struct PairVnni256 {
  using Block = typename T::Block;
  static constexpr int kNR = 4;  // weight rows per decode tile, as AVX2's kNRGemv

  struct Unpacked {
    __m256i lo, hi;  // values 0..15 / 16..31 of both blocks (IQ4_NL: grid value + 128)
    __m256 d;        // block 0's scale x4, block 1's x4
    __m256 m;        // kMin: the same for the mins
  };

  // kPair false: the last block of an odd count alone (partner scale and min 0, activations 0).
  template <bool kPair>
  static Unpacked unpack(const Block* blk) {
    Unpacked u;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i q = kPair ? _mm256_inserti128_si256(_mm256_castsi128_si256(load128(blk[0].qs)),
                                                      load128(blk[1].qs), 1)
                            : _mm256_zextsi128_si256(load128(blk[0].qs));
    u.lo = _mm256_and_si256(q, low4);
    u.hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
    if constexpr (T::kFifthBit) {
      // Byte k of lo is value k of block 0 (k < 16) or value k - 16 of block 1; of hi, values
      // 16 + k: the qh bits of those values, in that order, are the masks.
      const uint32_t h0 = load_u32(blk[0].qh);
      const uint32_t h1 = kPair ? load_u32(blk[1].qh) : 0;
      const __mmask32 mlo = (h0 & 0xFFFFu) | (h1 << 16);
      const __mmask32 mhi = (h0 >> 16) | (h1 & 0xFFFF0000u);
      const __m256i x10 = _mm256_set1_epi8(0x10);
      u.lo = _mm256_mask_add_epi8(u.lo, mlo, u.lo, x10);
      u.hi = _mm256_mask_add_epi8(u.hi, mhi, u.hi, x10);
    }
    if constexpr (T::kGrid) {
      const __m256i table = _mm256_xor_si256(_mm256_broadcastsi128_si256(load128(kIQ4Values)),
                                             _mm256_set1_epi8(static_cast<char>(0x80)));
      u.lo = _mm256_shuffle_epi8(table, u.lo);
      u.hi = _mm256_shuffle_epi8(table, u.hi);
    }
    if constexpr (T::kMin) {
      // d and m are the block's first 4 bytes: d0 m0 d1 m1 converted at once.
      const uint32_t s0 = load_u32(&blk[0]);
      const uint32_t s1 = kPair ? load_u32(&blk[1]) : 0;
      const __m256 f = _mm256_castps128_ps256(_mm_cvtph_ps(
          _mm_insert_epi32(_mm_cvtsi32_si128(static_cast<int>(s0)), static_cast<int>(s1), 1)));
      u.d = _mm256_permutexvar_ps(_mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2), f);
      u.m = _mm256_permutexvar_ps(_mm256_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3), f);
    } else {
      const __m128i h = _mm_insert_epi16(_mm_cvtsi32_si128(blk[0].d), kPair ? blk[1].d : 0, 1);
      u.d = _mm256_permutexvar_ps(_mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
                                  _mm256_castps128_ps256(_mm_cvtph_ps(h)));
    }
    return u;
  }

  static void dot(const Unpacked& w, const ActPairQ8& ap, __m256& acc) {
    const __m256i alo = load256(ap.lo);
    const __m256i ahi = load256(ap.hi);
    __m256i p =
        _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), w.lo, alo), w.hi, ahi);
    __m256i sum8 = _mm256_setzero_si256();
    if constexpr (T::kMin || T::kOffset16 || T::kGrid) sum8 = load256(ap.sum8);
    // sum8 is 8 x the activation sum of each lane's products: 16 x sum = 2 x sum8, 128 x sum =
    // 16 x sum8.
    if constexpr (T::kOffset16) p = _mm256_sub_epi32(p, _mm256_slli_epi32(sum8, 1));
    if constexpr (T::kGrid) p = _mm256_sub_epi32(p, _mm256_slli_epi32(sum8, 4));
    const __m256 da = _mm256_loadu_ps(ap.d);
    acc = _mm256_fmadd_ps(_mm256_mul_ps(w.d, da), _mm256_cvtepi32_ps(p), acc);
    if constexpr (T::kMin) {
      acc = _mm256_fmadd_ps(_mm256_mul_ps(w.m, da), _mm256_cvtepi32_ps(_mm256_srai_epi32(sum8, 3)),
                            acc);
    }
  }

  // One activation row against NR weight rows, pair by pair; each column finished before the
  // next is unpacked (everything stays in registers).
  template <int NR>
  static void gemv_tile(const KernelArgs& a, int64_t i, int64_t j) {
    const ActPairQ8* x = row_at<ActPairQ8>(a.act, a.act_stride, i);
    const Block* w[NR];
#pragma GCC unroll 4
    for (int c = 0; c < NR; ++c) w[c] = row_at<Block>(a.w, a.w_row_bytes, j + c);
    const uint8_t* next = reinterpret_cast<const uint8_t*>(w[0]) + NR * a.w_row_bytes;
    constexpr size_t kAhead = 2 * NR * sizeof(Block);  // what AVX2 prefetches per pair
    __m256 acc[NR];
#pragma GCC unroll 4
    for (int c = 0; c < NR; ++c) acc[c] = _mm256_setzero_ps();
    const int64_t nb = a.n_in / 32;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      const uint8_t* pf = next + static_cast<size_t>(b / 2) * kAhead;
      for (size_t o = 0; o < kAhead; o += 64)
        _mm_prefetch(reinterpret_cast<const char*>(pf + o), _MM_HINT_T0);
#pragma GCC unroll 4
      for (int c = 0; c < NR; ++c) dot(unpack<true>(w[c] + b), x[b / 2], acc[c]);
    }
    if (b < nb)
#pragma GCC unroll 4
      for (int c = 0; c < NR; ++c) dot(unpack<false>(w[c] + b), x[b / 2], acc[c]);
#pragma GCC unroll 4
    for (int c = 0; c < NR; ++c) a.y[i * a.y_stride + j + c] = hsum(acc[c]);
  }
};

template <class T>
struct PairVnni512 {
  using Block = typename T::Block;
  static constexpr int kNR = 4;  // weight rows per decode tile, as AVX2's kNRGemv

  // One pair of blocks of two columns: column c's 256-bit register in the low half, column c + 1's
  // in the high half (each as AVX2 lays out one column).
  struct Unpacked {
    __m512i lo, hi;  // values 0..15 / 16..31 of both blocks (IQ4_NL: grid value + 128)
    __m512 d;        // per half: block 0's scale x4, block 1's x4
    __m512 m;        // kMin: the same for the mins
  };

  template <bool kPair>
  static __m256i packed_nibbles(const Block* blk) {
    return kPair ? _mm256_inserti128_si256(_mm256_castsi128_si256(load128(blk[0].qs)),
                                           load128(blk[1].qs), 1)
                 : _mm256_zextsi128_si256(load128(blk[0].qs));
  }

  // The fifth-bit masks of one column's pair: byte k of lo is value k of block 0 (k < 16) or value
  // k - 16 of block 1; of hi, values 16 + k.
  template <bool kPair>
  static void fifth_masks(const Block* blk, uint32_t& mlo, uint32_t& mhi) {
    const uint32_t h0 = load_u32(blk[0].qh);
    const uint32_t h1 = kPair ? load_u32(blk[1].qh) : 0;
    mlo = (h0 & 0xFFFFu) | (h1 << 16);
    mhi = (h0 >> 16) | (h1 & 0xFFFF0000u);
  }

  // kPair false: the last block of an odd count alone (partner scale and min 0, activations 0).
  template <bool kPair>
  static Unpacked unpack(const Block* c0, const Block* c1) {
    Unpacked u;
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(packed_nibbles<kPair>(c0)),
                                         packed_nibbles<kPair>(c1), 1);
    u.lo = _mm512_and_si512(q, low4);
    u.hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
    if constexpr (T::kFifthBit) {
      uint32_t l0, h0, l1, h1;
      fifth_masks<kPair>(c0, l0, h0);
      fifth_masks<kPair>(c1, l1, h1);
      const __m512i x10 = _mm512_set1_epi8(0x10);
      u.lo = _mm512_mask_add_epi8(u.lo, l0 | (static_cast<__mmask64>(l1) << 32), u.lo, x10);
      u.hi = _mm512_mask_add_epi8(u.hi, h0 | (static_cast<__mmask64>(h1) << 32), u.hi, x10);
    }
    if constexpr (T::kGrid) {
      const __m512i table = _mm512_xor_si512(_mm512_broadcast_i32x4(load128(kIQ4Values)),
                                             _mm512_set1_epi8(static_cast<char>(0x80)));
      u.lo = _mm512_shuffle_epi8(table, u.lo);
      u.hi = _mm512_shuffle_epi8(table, u.hi);
    }
    if constexpr (T::kMin) {
      // d and m are a block's first 4 bytes: d m of the 4 blocks converted at once.
      const __m256 f = _mm256_cvtph_ps(_mm_setr_epi32(
          static_cast<int>(load_u32(&c0[0])), kPair ? static_cast<int>(load_u32(&c0[1])) : 0,
          static_cast<int>(load_u32(&c1[0])), kPair ? static_cast<int>(load_u32(&c1[1])) : 0));
      const __m512 f2 = _mm512_castps256_ps512(f);
      u.d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6),
                                  f2);
      u.m = _mm512_permutexvar_ps(_mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7),
                                  f2);
    } else {
      const __m128i h = _mm_setr_epi16(
          static_cast<short>(c0[0].d), kPair ? static_cast<short>(c0[1].d) : 0,
          static_cast<short>(c1[0].d), kPair ? static_cast<short>(c1[1].d) : 0, 0, 0, 0, 0);
      u.d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                  _mm512_castps128_ps512(_mm_cvtph_ps(h)));
    }
    return u;
  }

  // The activations of a pair in both halves.
  struct Act {
    __m512i lo, hi, sum8;
    __m512 d;
  };
  static Act act(const ActPairQ8& ap) {
    Act x;
    x.lo = _mm512_broadcast_i64x4(load256(ap.lo));
    x.hi = _mm512_broadcast_i64x4(load256(ap.hi));
    x.sum8 = _mm512_broadcast_i64x4(load256(ap.sum8));
    x.d = _mm512_castsi512_ps(_mm512_broadcast_i64x4(load256(ap.d)));
    return x;
  }

  static void dot(const Unpacked& w, const Act& x, __m512& acc) {
    __m512i p =
        _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w.lo, x.lo), w.hi, x.hi);
    // sum8 is 8 x the activation sum of each lane's products: 16 x sum = 2 x sum8, 128 x sum =
    // 16 x sum8.
    if constexpr (T::kOffset16) p = _mm512_sub_epi32(p, _mm512_slli_epi32(x.sum8, 1));
    if constexpr (T::kGrid) p = _mm512_sub_epi32(p, _mm512_slli_epi32(x.sum8, 4));
    acc = _mm512_fmadd_ps(_mm512_mul_ps(w.d, x.d), _mm512_cvtepi32_ps(p), acc);
    if constexpr (T::kMin) {
      acc = _mm512_fmadd_ps(_mm512_mul_ps(w.m, x.d),
                            _mm512_cvtepi32_ps(_mm512_srai_epi32(x.sum8, 3)), acc);
    }
  }

  // One activation row against NR weight rows, pair by pair, two columns per register (an odd
  // last column is paired with itself, its copy discarded).
  template <int NR>
  static void gemv_tile(const KernelArgs& a, int64_t i, int64_t j) {
    constexpr int NP = (NR + 1) / 2;
    const ActPairQ8* x = row_at<ActPairQ8>(a.act, a.act_stride, i);
    const Block* w[2 * NP];
#pragma GCC unroll 4
    for (int c = 0; c < 2 * NP; ++c)
      w[c] = row_at<Block>(a.w, a.w_row_bytes, j + (c < NR ? c : NR - 1));
    const uint8_t* next = reinterpret_cast<const uint8_t*>(w[0]) + NR * a.w_row_bytes;
    constexpr size_t kAhead = 2 * NR * sizeof(Block);  // what AVX2 prefetches per pair
    __m512 acc[NP];
#pragma GCC unroll 4
    for (int c = 0; c < NP; ++c) acc[c] = _mm512_setzero_ps();
    const int64_t nb = a.n_in / 32;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      const uint8_t* pf = next + static_cast<size_t>(b / 2) * kAhead;
      for (size_t o = 0; o < kAhead; o += 64)
        _mm_prefetch(reinterpret_cast<const char*>(pf + o), _MM_HINT_T0);
      const Act xa = act(x[b / 2]);
#pragma GCC unroll 4
      for (int c = 0; c < NP; ++c) dot(unpack<true>(w[2 * c] + b, w[2 * c + 1] + b), xa, acc[c]);
    }
    if (b < nb) {
      const Act xa = act(x[b / 2]);
#pragma GCC unroll 4
      for (int c = 0; c < NP; ++c) dot(unpack<false>(w[2 * c] + b, w[2 * c + 1] + b), xa, acc[c]);
    }
#pragma GCC unroll 4
    for (int c = 0; c < NR; ++c) {
      // The lane index must be a constant for clang (GCC folds it after unrolling).
      const __m512 v = acc[c / 2];
      a.y[i * a.y_stride + j + c] =
          hsum(c % 2 == 0 ? _mm512_extractf32x8_ps(v, 0) : _mm512_extractf32x8_ps(v, 1));
    }
  }
};

// Prefill: weight pairs of two columns unpacked once per row block into an L1-sized buffer, and
// every 4-row tile of the block run over them; each element sees the same dot() per pair in pair
// order as in decode, so the results are those of AVX2 whatever the tile.
constexpr int kMR = 4, kNP = 2;  // rows x column pairs per tile
constexpr int64_t kRowBlock = 64;
constexpr int64_t kPackPairs = 32;  // 2 column pairs x 32 x 256 B = 16 KB

template <class T, int MR, int NP>
void packed_tile(const KernelArgs& a, const typename PairVnni512<T>::Unpacked (*pk)[kPackPairs],
                 int64_t i, int64_t p0, int64_t p1, __m512 (*acc)[kNP]) {
  using K = PairVnni512<T>;
  const ActPairQ8* x[MR];
  for (int r = 0; r < MR; ++r) x[r] = row_at<ActPairQ8>(a.act, a.act_stride, i + r);
  __m512 ac[MR][NP];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NP; ++c) ac[r][c] = acc[r][c];
  for (int64_t p = p0; p < p1; ++p) {
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const typename K::Act xa = K::act(x[r][p]);
#pragma GCC unroll 2
      for (int c = 0; c < NP; ++c) K::dot(pk[c][p - p0], xa, ac[r][c]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NP; ++c) acc[r][c] = ac[r][c];
}

template <class T>
void run_packed(const KernelArgs& a, int64_t j0, int64_t j1) {
  using K = PairVnni512<T>;
  using Block = typename T::Block;
  using Packed = typename K::Unpacked;
  using Fn = void (*)(const KernelArgs&, const Packed(*)[kPackPairs], int64_t, int64_t, int64_t,
                      __m512(*)[kNP]);
  static_assert(kMR == 4 && kNP == 2);
  static constexpr Fn fn[kMR][kNP] = {
      {packed_tile<T, 1, 1>, packed_tile<T, 1, 2>},
      {packed_tile<T, 2, 1>, packed_tile<T, 2, 2>},
      {packed_tile<T, 3, 1>, packed_tile<T, 3, 2>},
      {packed_tile<T, 4, 1>, packed_tile<T, 4, 2>},
  };
  alignas(64) Packed pk[kNP][kPackPairs];
  alignas(64) __m512 acc[kRowBlock][kNP];
  const int64_t nb = a.n_in / 32;
  const int64_t np_all = (nb + 1) / 2;
  for (int64_t ib = 0; ib < a.m; ib += kRowBlock) {
    const int64_t ie = ib + kRowBlock < a.m ? ib + kRowBlock : a.m;
    for (int64_t j = j0; j < j1; j += 2 * kNP) {
      const int64_t ncol = j1 - j < 2 * kNP ? j1 - j : 2 * kNP;
      const int npair = static_cast<int>((ncol + 1) / 2);
      for (int64_t r = 0; r < ie - ib; ++r)
        for (int c = 0; c < kNP; ++c) acc[r][c] = _mm512_setzero_ps();
      for (int64_t p0 = 0; p0 < np_all; p0 += kPackPairs) {
        const int64_t p1 = p0 + kPackPairs < np_all ? p0 + kPackPairs : np_all;
        for (int c = 0; c < npair; ++c) {
          // An odd last column is paired with itself; its copy is discarded.
          const Block* w0 = row_at<Block>(a.w, a.w_row_bytes, j + 2 * c);
          const Block* w1 =
              2 * c + 1 < ncol ? row_at<Block>(a.w, a.w_row_bytes, j + 2 * c + 1) : w0;
          for (int64_t p = p0; p < p1; ++p)
            pk[c][p - p0] = 2 * p + 2 <= nb ? K::template unpack<true>(w0 + 2 * p, w1 + 2 * p)
                                            : K::template unpack<false>(w0 + 2 * p, w1 + 2 * p);
        }
        for (int64_t i = ib; i < ie; i += kMR) {
          const int mr = static_cast<int>(ie - i < kMR ? ie - i : kMR);
          fn[mr - 1][npair - 1](a, pk, i, p0, p1, acc + (i - ib));
        }
      }
      for (int64_t r = 0; r < ie - ib; ++r) {
        float* y = a.y + (ib + r) * a.y_stride + j;
        for (int64_t c = 0; c < ncol; ++c) {
          const __m512 v = acc[r][c / 2];
          y[c] = hsum(c % 2 == 0 ? _mm512_extractf32x8_ps(v, 0) : _mm512_extractf32x8_ps(v, 1));
        }
      }
    }
  }
}

// Decode: Q5_0 and Q5_1 (the heavier unpack) run two columns per 512-bit register; Q4_1 and
// IQ4_NL stay at 256 bits, which was faster for them (interleaved A/B on this Zen 4).
template <class T, GgmlType kType>
void run(const KernelArgs& a, int64_t j0, int64_t j1) {
  if (a.m >= kMR) {
    return run_packed<T>(a, j0, j1);
  }
  using K = std::conditional_t<T::kFifthBit, PairVnni512<T>, PairVnni256<T>>;
  using Fn = void (*)(const KernelArgs&, int64_t, int64_t);
  static constexpr int kNR = K::kNR;
  static constexpr Fn fn[kNR] = {K::template gemv_tile<1>, K::template gemv_tile<2>,
                                 K::template gemv_tile<3>, K::template gemv_tile<4>};
  for (int64_t i = 0; i < a.m; ++i)
    for (int64_t j = j0; j < j1; j += kNR) fn[(j1 - j < kNR ? j1 - j : kNR) - 1](a, i, j);
}

}  // namespace

KernelFn avx512_kernel_q4_1_q5_iq4(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_1:
      return run<Q41Traits, GgmlType::Q4_1>;
    case GgmlType::Q5_0:
      return run<Q50Traits, GgmlType::Q5_0>;
    case GgmlType::Q5_1:
      return run<Q51Traits, GgmlType::Q5_1>;
    case GgmlType::IQ4_NL:
      return run<IQ4NLTraits, GgmlType::IQ4_NL>;
    case GgmlType::IQ4_XS:
      return avx512_kernel_kquants(type);  // the super-block VNNI prefill (AVX2 decode)
    default:
      return nullptr;
  }
}

}  // namespace chimera::matmul_detail
