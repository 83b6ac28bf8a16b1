// AVX-512 VNNI kernels for the K-quants Q4_K, Q5_K, Q6_K (prefill and decode) and for IQ4_XS
// (prefill; Q8_K activations), bit-identical to the AVX2 super-block kernels (matmul_avx2.cpp,
// SuperBlockKernel in matmul_avx2_tiles.h), which the AVX-512 path keeps for IQ4_XS's decode.
//
// Why the results match bit for bit: per weight block, AVX2 builds 8 int32 lanes per output
// element, lane m = sum over the 8 steps s of scale_s(m) x (the sum of the 4 products of step s's
// bytes 4m..4m+3), in exact integer arithmetic, then does a fixed float step per block and one
// horizontal sum at the end. Here vpdpbusd gives each step's exact 4-product sums (at most
// 4 x 63 x 127 in magnitude, so they fit int16), two steps' sums are put side by side as the two
// int16 halves of a lane, and vpdpwssd multiplies them by the two steps' scales and adds them to
// the lane: the same exact integers. One 512-bit register holds two output columns' 8 lanes, so
// the float step per block (same operations, same order) and the final horizontal sum are AVX2's,
// per 256-bit half. The tile shape, M, row position and thread split never change a bit.
//
// Compiled with AVX-512 flags: it must not include matmul_avx2_tiles.h (its inline functions
// would be emitted with EVEX encodings and could be picked by the linker for the AVX2 files), nor
// call inline functions of other headers; it keeps its own helpers in an anonymous namespace.
// GCC 12's _mm512_undefined_* (behind broadcasts, casts and inserts) self-initialize a variable
// and trip -Wmaybe-uninitialized (and -Wuninitialized) at every use: a known false positive,
// silenced for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/matmul.h"
#include "kernels/matmul_avx512_common.h"

namespace chimera::matmul_detail {
namespace {

// Rows of activations kept hot in cache while a thread walks its weight columns (as on AVX2).
constexpr int64_t kRowBlock = 128;

using namespace avx512;  // NOLINT: the shared AVX-512 helpers and driver

inline __m512 join_ps(float lo, float hi) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(lo)), _mm256_set1_ps(hi), 1);
}

inline int32_t word_pair(int lo, int hi) {
  return static_cast<int32_t>((static_cast<uint32_t>(static_cast<uint16_t>(lo))) |
                              (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16));
}

// Two steps' exact 4-product sums (each fits int16) as the low and high int16 of each lane.
inline __m512i pair_words(__m512i t0, __m512i t1) {
  return _mm512_mask_blend_epi16(0xAAAAAAAAu, t0, _mm512_slli_epi32(t1, 16));
}

// One column's super-block decoded for the packed tiles (AVX2's step values and scales).
struct ColBlock {
  __m256i
      v[8];  // step s: the 32 unsigned values (IQ4_XS: magnitudes) that meet qs[32 s, 32 s + 32)
  __m256i scp[8];  // steps 2p, 2p + 1: lane m holds their scales for lane m as two int16 (p < 4);
                   // IQ4_XS: step s's scale in every int16
  uint32_t neg[8] = {};  // IQ4_XS: step s's negative values (bit k: value k)
  __m256i tail16;        // Q4_K/Q5_K: each min twice (pairs with bsums); Q6_K: the 16 scales
  float d = 0, dmin = 0;
};

// A column pair's super-block scales for decode: ColBlock's scp, tail16, d and dmin, the first
// column's in the low 256-bit halves, the second's in the high ones.
struct PairPrep {
  __m512i scp[4];
  __m512i tail16;
  __m512 d, dmin;
};

// ---------------------------------------------------------------- Q4_K / Q5_K
template <bool kFiveBit>
struct Q45K {
  using WBlock = std::conditional_t<kFiveBit, BlockQ5_K, BlockQ4_K>;
  static constexpr bool kSigned = false;

  static ColBlock unpack(const WBlock& blk) {
    // The 6-bit scales and mins of the 8 sub-blocks (spec 1.5).
    uint32_t u[3];
    std::memcpy(u, blk.scales, 12);
    const uint32_t words[4] = {
        u[0] & 0x3f3f3f3f, (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4),
        u[1] & 0x3f3f3f3f, ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4)};
    uint8_t sm[16];  // scales 0..7, mins 0..7
    std::memcpy(sm, words, 16);
    ColBlock cb;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    for (int s = 0; s < 8; ++s) {
      const __m256i q = load256(blk.qs + 32 * (s / 2));
      __m256i v = _mm256_and_si256((s & 1) ? _mm256_srli_epi16(q, 4) : q, low4);
      if constexpr (kFiveBit) {
        const __m256i qh = load256(blk.qh);
        v = _mm256_or_si256(
            v, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(s)),
                                                  _mm256_set1_epi8(0x01)),
                                 4));
      }
      cb.v[s] = v;
    }
    for (int p = 0; p < 4; ++p) cb.scp[p] = _mm256_set1_epi32(word_pair(sm[2 * p], sm[2 * p + 1]));
    const __m128i dup_mins =
        _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    cb.tail16 = _mm256_cvtepu8_epi16(
        _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sm)), dup_mins));
    cb.d = fp16(blk.d);
    cb.dmin = fp16(blk.dmin);
    return cb;
  }

  // Decode (GemvVnni): what unpack() gives blocks b0 (low halves) and b1 (high halves), built in
  // registers from the blocks' first 16 bytes (d, dmin and the 12 bytes of packed scales and mins
  // u0, u1, u2, as dwords 1..3).
  static PairPrep pair_prep(const WBlock& b0, const WBlock& b1) {
    static_assert(offsetof(WBlock, scales) == 4);
    const __m256i h = _mm256_set_m128i(load128(&b1), load128(&b0));
    // unpack()'s four words: u0 & 3f, (u2 & 0f) | (u0 >> 6 & 03) << 4, u1 & 3f,
    // (u2 >> 4 & 0f) | (u1 >> 6 & 03) << 4 per byte; (u >> 6 & 03) << 4 is u >> 2 & 30.
    const __m256i lo =
        _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi32(h, _MM_SHUFFLE(3, 2, 3, 1)),
                                           _mm256_setr_epi32(0, 0, 0, 4, 0, 0, 0, 4)),
                         _mm256_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f,
                                           0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m256i hi = _mm256_and_si256(
        _mm256_srli_epi32(_mm256_shuffle_epi32(h, _MM_SHUFFLE(2, 2, 1, 1)), 2),
        _mm256_setr_epi32(0, 0x30303030, 0, 0x30303030, 0, 0x30303030, 0, 0x30303030));
    // int16 lanes: 0..7 b0's scales, 8..15 its mins, 16..23 b1's scales, 24..31 its mins.
    const __m512i z = _mm512_cvtepu8_epi16(_mm256_or_si256(lo, hi));
    PairPrep pp;
    // Steps 2p, 2p + 1 take scales 2p, 2p + 1: int16 lanes 2p, 2p + 1 are dword p of z.
    for (int p = 0; p < 4; ++p)
      pp.scp[p] =
          _mm512_permutexvar_epi32(_mm512_setr_epi32(p, p, p, p, p, p, p, p, 8 + p, 8 + p, 8 + p,
                                                     8 + p, 8 + p, 8 + p, 8 + p, 8 + p),
                                   z);
    // Each min twice: lanes 8, 8, 9, 9, ..., 15, 15, then b1's 24, 24, ..., 31, 31.
    pp.tail16 = _mm512_permutexvar_epi16(
        _mm512_set_epi16(31, 31, 30, 30, 29, 29, 28, 28, 27, 27, 26, 26, 25, 25, 24, 24, 15, 15, 14,
                         14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8),
        z);
    // d0, dmin0, d1, dmin1 (dwords 0 and 4 of h) as floats: exact conversions, as fp16().
    const __m512 f = _mm512_castps128_ps512(_mm_cvtph_ps(_mm256_castsi256_si128(
        _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0)))));
    pp.d =
        _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2), f);
    pp.dmin =
        _mm512_permutexvar_ps(_mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3), f);
    return pp;
  }
  // Step s's values (unpack()'s v[s]) of both blocks.
  static __m512i pair_values(const WBlock& b0, const WBlock& b1, int s) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i q = join256(load256(b0.qs + 32 * (s / 2)), load256(b1.qs + 32 * (s / 2)));
    __m512i v = _mm512_and_si512((s & 1) ? _mm512_srli_epi16(q, 4) : q, low4);
    if constexpr (kFiveBit) {
      const __m512i qh = join256(load256(b0.qh), load256(b1.qh));
      v = _mm512_or_si512(
          v, _mm512_slli_epi16(_mm512_and_si512(_mm512_srl_epi16(qh, _mm_cvtsi32_si128(s)),
                                                _mm512_set1_epi8(0x01)),
                               4));
    }
    return v;
  }

  // AVX2's float step: acc += (d * da) * sumi, then acc -= (dmin * da) * (mins . bsums).
  static void finish(__m512i tail16, __m512 d, __m512 dmin, __m512i bsums, __m512 da, __m512i sumi,
                     __m512& acc) {
    const __m512i msum = _mm512_madd_epi16(bsums, tail16);
    acc = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(sumi), acc);
    acc = _mm512_fnmadd_ps(_mm512_mul_ps(dmin, da), _mm512_cvtepi32_ps(msum), acc);
  }
};

// ---------------------------------------------------------------- Q6_K
struct Q6K {
  using WBlock = BlockQ6_K;
  static constexpr bool kSigned = false;

  // Bits 2g, 2g + 1 of each qh byte moved to bits 4, 5.
  static __m256i high_bits(__m256i qh, int g) {
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

  static ColBlock unpack(const BlockQ6_K& blk) {
    ColBlock cb;
    for (int s = 0; s < 8; ++s) {
      // Group g = s % 4 of half s / 4, stored as q + 32 (0..63).
      const int half = s / 4, g = s % 4;
      const __m256i qh = load256(blk.qh + 32 * half);
      __m256i ql = load256(blk.ql + 64 * half + 32 * (g & 1));
      if (g >= 2) ql = _mm256_srli_epi16(ql, 4);
      cb.v[s] = _mm256_or_si256(_mm256_and_si256(ql, _mm256_set1_epi8(0x0F)), high_bits(qh, g));
    }
    // Step s's lanes 0..3 (values 0..15) take scale 8 half + 2 g, lanes 4..7 the next one.
    for (int p = 0; p < 4; ++p) {
      const int base = 8 * (p / 2) + 4 * (p % 2);
      const int32_t lo = word_pair(blk.scales[base], blk.scales[base + 2]);
      const int32_t hi = word_pair(blk.scales[base + 1], blk.scales[base + 3]);
      cb.scp[p] = _mm256_setr_epi32(lo, lo, lo, lo, hi, hi, hi, hi);
    }
    cb.tail16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales)));
    cb.d = fp16(blk.d);
    return cb;
  }

  // Decode (GemvVnni): unpack()'s scales of blocks b0 (low halves) and b1 (high halves).
  static PairPrep pair_prep(const BlockQ6_K& b0, const BlockQ6_K& b1) {
    // int16 lanes 0..15: b0's 16 scales, 16..31: b1's (tail16 as unpack() has it).
    const __m512i z =
        _mm512_cvtepi8_epi16(_mm256_set_m128i(load128(b1.scales), load128(b0.scales)));
    PairPrep pp;
    pp.tail16 = z;
    // Pair p: dwords 0..3 hold scales (base, base + 2), dwords 4..7 (base + 1, base + 3).
    for (int p = 0; p < 4; ++p) {
      const int b = 8 * (p / 2) + 4 * (p % 2);
      const short lo0 = static_cast<short>(b), lo1 = static_cast<short>(b + 2);
      const short hi0 = static_cast<short>(b + 1), hi1 = static_cast<short>(b + 3);
      const short o = 16;
      pp.scp[p] = _mm512_permutexvar_epi16(
          _mm512_set_epi16(hi1 + o, hi0 + o, hi1 + o, hi0 + o, hi1 + o, hi0 + o, hi1 + o, hi0 + o,
                           lo1 + o, lo0 + o, lo1 + o, lo0 + o, lo1 + o, lo0 + o, lo1 + o, lo0 + o,
                           hi1, hi0, hi1, hi0, hi1, hi0, hi1, hi0, lo1, lo0, lo1, lo0, lo1, lo0,
                           lo1, lo0),
          z);
    }
    pp.d = join_ps(fp16(b0.d), fp16(b1.d));
    pp.dmin = _mm512_setzero_ps();
    return pp;
  }
  // Step s's values (unpack()'s v[s]) of both blocks.
  static __m512i pair_values(const BlockQ6_K& b0, const BlockQ6_K& b1, int s) {
    const int half = s / 4, g = s % 4;
    const __m512i qh = join256(load256(b0.qh + 32 * half), load256(b1.qh + 32 * half));
    __m512i ql = join256(load256(b0.ql + 64 * half + 32 * (g & 1)),
                         load256(b1.ql + 64 * half + 32 * (g & 1)));
    if (g >= 2) ql = _mm512_srli_epi16(ql, 4);
    const __m512i m = _mm512_set1_epi8(0x30);
    __m512i hb;
    switch (g) {
      case 0:
        hb = _mm512_and_si512(_mm512_slli_epi16(qh, 4), m);
        break;
      case 1:
        hb = _mm512_and_si512(_mm512_slli_epi16(qh, 2), m);
        break;
      case 2:
        hb = _mm512_and_si512(qh, m);
        break;
      default:
        hb = _mm512_and_si512(_mm512_srli_epi16(qh, 2), m);
        break;
    }
    return _mm512_or_si512(_mm512_and_si512(ql, _mm512_set1_epi8(0x0F)), hb);
  }

  // AVX2's float step: the stored values are q + 32, so 32 x (scales . bsums) comes off first.
  static void finish(__m512i tail16, __m512 d, __m512, __m512i bsums, __m512 da, __m512i sumi,
                     __m512& acc) {
    const __m512i corr = _mm512_slli_epi32(_mm512_madd_epi16(bsums, tail16), 5);
    acc = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(_mm512_sub_epi32(sumi, corr)),
                          acc);
  }
};

// ---------------------------------------------------------------- IQ4_XS
// Signed grid values up to 127 in magnitude: a step's 4-product sums need not fit int16, so each
// step runs as on AVX2 (magnitudes times the activations carrying the values' signs, in int16
// pairs that cannot saturate) and vpdpwssd applies the step's scale to the pairs.
struct IQ4XS {
  using WBlock = BlockIQ4_XS;
  static constexpr bool kSigned = true;

  static ColBlock unpack(const BlockIQ4_XS& blk) {
    ColBlock cb;
    const __m256i table =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values)));
    for (int s = 0; s < 8; ++s) {
      // Low nibbles are values 0..15 of the sub-block, high nibbles 16..31.
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.qs + 16 * s));
      const __m256i idx =
          _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
      const __m256i v = _mm256_shuffle_epi8(table, idx);
      cb.v[s] = _mm256_abs_epi8(v);
      cb.neg[s] = static_cast<uint32_t>(_mm256_movemask_epi8(v));
      const int lo = (blk.scales_l[s / 2] >> (4 * (s % 2))) & 0x0F;
      const int hi = (blk.scales_h >> (2 * s)) & 3;
      cb.scp[s] = _mm256_set1_epi16(static_cast<int16_t>((lo | (hi << 4)) - 32));
    }
    cb.tail16 = _mm256_setzero_si256();
    cb.d = fp16(blk.d);
    return cb;
  }

  // AVX2's float step.
  static void finish(__m512i, __m512 d, __m512, __m512i, __m512 da, __m512i sumi, __m512& acc) {
    acc = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(sumi), acc);
  }
};

// ---------------------------------------------------------------- the VNNI super-block kernel
template <class Ops>
struct SuperBlockVnni {
  using WBlock = typename Ops::WBlock;
  struct alignas(64) Packed {  // one super-block of a column pair
    __m512i v[8];
    __m512i scp[Ops::kSigned ? 8 : 4];
    __mmask64 neg[Ops::kSigned ? 8 : 1];
    __m512i tail16;
    __m512 d, dmin;
  };
  using Act = BlockQ8_K;
  static constexpr int kNP = 2;             // column pairs per register tile
  static constexpr int64_t kPackUnits = 8;  // 2 pairs x 8 x 960 B = 15 KB
  static int64_t units(const KernelArgs& a) { return a.n_in / kQK_K; }

  static void pack(const KernelArgs& a, int64_t j, bool two, int64_t b0, int64_t b1, Packed* out) {
    const WBlock* w0 = row_at<WBlock>(a.w, a.w_row_bytes, j);
    const WBlock* w1 = two ? row_at<WBlock>(a.w, a.w_row_bytes, j + 1) : nullptr;
    for (int64_t b = b0; b < b1; ++b) {
      const ColBlock c0 = Ops::unpack(w0[b]);
      ColBlock c1;
      if (two) {
        c1 = Ops::unpack(w1[b]);
      } else {
        for (auto& v : c1.v) v = _mm256_setzero_si256();
        for (auto& v : c1.scp) v = _mm256_setzero_si256();
        c1.tail16 = _mm256_setzero_si256();
      }
      Packed& p = out[b - b0];
      for (int s = 0; s < 8; ++s) p.v[s] = join256(c0.v[s], c1.v[s]);
      for (int q = 0; q < (Ops::kSigned ? 8 : 4); ++q) p.scp[q] = join256(c0.scp[q], c1.scp[q]);
      if constexpr (Ops::kSigned) {
        for (int q = 0; q < 8; ++q) p.neg[q] = c0.neg[q] | (static_cast<uint64_t>(c1.neg[q]) << 32);
      }
      p.tail16 = join256(c0.tail16, c1.tail16);
      p.d = join_ps(c0.d, c1.d);
      p.dmin = join_ps(c0.dmin, c1.dmin);
    }
  }

  // Super-block b of rows x[0..MR) against NP packed column pairs.
  template <int MR, int NP>
  static void step(const BlockQ8_K* const (&x)[MR], const Packed* const (&pk)[NP], int64_t b,
                   __m512 (&acc)[MR][NP]) {
    __m512i sumi[MR][NP];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < NP; ++c) sumi[r][c] = _mm512_setzero_si512();
    if constexpr (Ops::kSigned) {
#pragma GCC unroll 8
      for (int s = 0; s < 8; ++s) {
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const __m512i a = bcast256(x[r][b].qs + 32 * s);
#pragma GCC unroll 8
          for (int c = 0; c < NP; ++c) {
            // The activations negated where the values are negative: |w| x that = w x a.
            const __m512i as = _mm512_mask_sub_epi8(a, pk[c]->neg[s], _mm512_setzero_si512(), a);
            sumi[r][c] = _mm512_dpwssd_epi32(sumi[r][c], _mm512_maddubs_epi16(pk[c]->v[s], as),
                                             pk[c]->scp[s]);
          }
        }
      }
    } else {
#pragma GCC unroll 8
      for (int p = 0; p < 4; ++p) {
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const __m512i a0 = bcast256(x[r][b].qs + 64 * p);
          const __m512i a1 = bcast256(x[r][b].qs + 64 * p + 32);
#pragma GCC unroll 8
          for (int c = 0; c < NP; ++c) {
            const __m512i t0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), pk[c]->v[2 * p], a0);
            const __m512i t1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), pk[c]->v[2 * p + 1], a1);
            sumi[r][c] = _mm512_dpwssd_epi32(sumi[r][c], pair_words(t0, t1), pk[c]->scp[p]);
          }
        }
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512i bsums = bcast256(x[r][b].bsums);
      const __m512 da = _mm512_set1_ps(x[r][b].d);
#pragma GCC unroll 8
      for (int c = 0; c < NP; ++c)
        Ops::finish(pk[c]->tail16, pk[c]->d, pk[c]->dmin, bsums, da, sumi[r][c], acc[r][c]);
    }
  }
};

// ---------------------------------------------------------------- decode
// Decode and small batches (up to kSmallMaxRows rows): up to kSmallMR rows against kGemvNP column
// pairs at a time, straight from the weights (no packing), with the same exact integer sums per
// lane (vpdpbusd + vpdpwssd, as step()), the same float step per block and the same horizontal
// sums as AVX2's gemv_tile. In decode the weights of a pair are decoded once and used once, so
// decoding them in 512-bit registers (two columns per instruction) and summing with VNNI halves
// the instructions per weight byte: AVX2's decode kernel ran near its compute rate while reading
// from memory, which held the model's decode below the memory's streaming rate. A small batch
// decodes them once per tile of rows (the packed driver once per kRowBlock rows).
template <class Ops>
struct GemvVnni {
  using WBlock = typename Ops::WBlock;
  static constexpr int kGemvNP = 2;  // 4 columns per tile, as AVX2's kNRGemv
  // Batches of up to kSmallMaxRows rows (a few sequences decoding together, speculative
  // verification) run tiles of up to kSmallMR rows x 4 columns, each pair's weights decoded once
  // for the tile's rows; from 7 rows on the packed driver was as fast or faster (Q4_K and Q6_K,
  // 768 x 2048, one thread).
  static constexpr int kSmallMR = 4;
  static constexpr int64_t kSmallMaxRows = 6;
  // Tiles shorter than this prefetch far (see tile()); by measurement per type (one thread,
  // interleaved, weights from memory): Q4_K at n_in 1536 and 2048 (3.5 and 4.6 KB tiles) ran
  // 5-15% slower with the far prefetch, Q6_K at n_in 2048 (6.7 KB) ~30% faster.
  static constexpr size_t kShortTileBytes = std::is_same_v<WBlock, BlockQ6_K> ? 8192 : 2048;

  // Row i against columns [j, j + ncol), 1 <= ncol <= 2 NP; a missing partner column repeats the
  // previous one (its lanes are discarded). Prefetches the next tile's rows (they follow this
  // tile's in memory) at the same relative position, one super-block step at a time, as AVX2
  // (into L2 for a tile too large for L1).
  template <int MR, int NP, bool kFar>
  static void tile(const KernelArgs& a, int64_t i, int64_t j, int ncol) {
    const BlockQ8_K* x[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) x[r] = row_at<BlockQ8_K>(a.act, a.act_stride, i + r);
    const WBlock* w[2 * NP];
#pragma GCC unroll 8
    for (int c = 0; c < 2 * NP; ++c)
      w[c] = row_at<WBlock>(a.w, a.w_row_bytes, j + (c < ncol ? c : ncol - 1));
    // A tile of short rows is too close a distance to hide the memory's latency (n_in 768: 1.7 KB
    // of Q4_K): those prefetch the tile ~12 KB on into L2 (as the AVX-512 Q4_0 decode does).
    const size_t tile_bytes = 2 * NP * a.w_row_bytes;
    const uint8_t* next = a.w + static_cast<size_t>(j) * a.w_row_bytes +
                          far_tiles_ahead(kFar, tile_bytes) * tile_bytes;
    const bool to_l2 = kFar || tile_bytes > kL1PrefetchMaxTileBytes;
    __m512 acc[MR][NP];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < NP; ++c) acc[r][c] = _mm512_setzero_ps();
    const int64_t nb = a.n_in / kQK_K;
    for (int64_t b = 0; b < nb; ++b) {
      constexpr size_t kStepBytes = 2 * NP * sizeof(WBlock);
      prefetch_span<kStepBytes>(next + static_cast<size_t>(b) * kStepBytes, to_l2);
#pragma GCC unroll 8
      for (int c = 0; c < NP; ++c) {
        const WBlock& b0 = w[2 * c][b];
        const WBlock& b1 = w[2 * c + 1][b];
        const PairPrep pp = Ops::pair_prep(b0, b1);
        __m512i sumi[MR];
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) sumi[r] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
          // The pair's values decoded once for all the tile's rows.
          const __m512i v0 = Ops::pair_values(b0, b1, 2 * p);
          const __m512i v1 = Ops::pair_values(b0, b1, 2 * p + 1);
#pragma GCC unroll 8
          for (int r = 0; r < MR; ++r) {
            const __m512i t0 =
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), v0, bcast256(x[r][b].qs + 64 * p));
            const __m512i t1 =
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), v1, bcast256(x[r][b].qs + 64 * p + 32));
            sumi[r] = _mm512_dpwssd_epi32(sumi[r], pair_words(t0, t1), pp.scp[p]);
          }
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r)
          Ops::finish(pp.tail16, pp.d, pp.dmin, bcast256(x[r][b].bsums), _mm512_set1_ps(x[r][b].d),
                      sumi[r], acc[r][c]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) store_row_sums<NP>(acc[r], a.y + (i + r) * a.y_stride + j, ncol);
  }

  template <int MR, int NP, bool kFar>
  static void tile_entry(const KernelArgs& a, int64_t i, int64_t j, int ncol) {
    if constexpr (NP <= kGemvNP) tile<MR, NP, kFar>(a, i, j, ncol);
  }
  using TileFn = void (*)(const KernelArgs&, int64_t, int64_t, int);
  template <int MR, bool kFar>
  static constexpr TileFn kRow[4] = {tile_entry<MR, 1, kFar>, tile_entry<MR, 2, kFar>,
                                     tile_entry<MR, 3, kFar>, tile_entry<MR, 4, kFar>};
  // [rows - 1][column pairs - 1]
  template <bool kFar>
  static constexpr const TileFn* kTiles[kSmallMR] = {kRow<1, kFar>, kRow<2, kFar>, kRow<3, kFar>,
                                                     kRow<4, kFar>};
  static_assert(kGemvNP >= 1 && kGemvNP <= 4 && kSmallMR == 4);

  // K: the packed prefill kernel for batches of more than kSmallMaxRows rows.
  template <class K>
  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    if (a.m > kSmallMaxRows) return run_packed<K, kRowBlock>(a, j0, j1);
    const bool far = 2 * kGemvNP * a.w_row_bytes < kShortTileBytes;
    const TileFn* const* tiles = far ? kTiles<true> : kTiles<false>;
    // The rows in ceil(m / kSmallMR) tiles of near-equal height, the rows of a tile sharing its
    // decoded weights; every column group's tiles one after the other (the weights in cache).
    const int64_t row_tiles = (a.m + kSmallMR - 1) / kSmallMR;
    for (int64_t j = j0; j < j1; j += 2 * kGemvNP) {
      const int ncol = static_cast<int>(j1 - j < 2 * kGemvNP ? j1 - j : 2 * kGemvNP);
      for (int64_t t = 0, i = 0; t < row_tiles; ++t) {
        const int mr = static_cast<int>((a.m - i + (row_tiles - t) - 1) / (row_tiles - t));
        tiles[mr - 1][(ncol + 1) / 2 - 1](a, i, j, ncol);
        i += mr;
      }
    }
  }
};

}  // namespace

KernelFn avx512_kernel_kquants(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_K:
      return GemvVnni<Q45K<false>>::run<SuperBlockVnni<Q45K<false>>>;
    case GgmlType::Q5_K:
      return GemvVnni<Q45K<true>>::run<SuperBlockVnni<Q45K<true>>>;
    case GgmlType::Q6_K:
      return GemvVnni<Q6K>::run<SuperBlockVnni<Q6K>>;
    case GgmlType::IQ4_XS:
      return run<SuperBlockVnni<IQ4XS>, GgmlType::IQ4_XS, kRowBlock>;
    default:
      return nullptr;
  }
}

}  // namespace chimera::matmul_detail
