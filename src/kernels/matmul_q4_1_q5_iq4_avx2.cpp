// AVX2 kernels for Q4_1, Q5_0, Q5_1, IQ4_NL (Q8 activation blocks of 32) and IQ4_XS (Q8_K blocks
// of 256). Same structure and promise as matmul_avx2.cpp (see matmul_avx2_tiles.h): per weight
// block the dot product is exact integer arithmetic (maddubs/madd), and each output element's
// accumulator sees the same float steps in block order whatever the tile shape.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "gguf/quants.h"
#include "kernels/act_quant.h"
#include "kernels/matmul.h"
#include "kernels/matmul_avx2_tiles.h"

namespace chimera::matmul_detail {
namespace {

using namespace avx2;  // hsum, fp16, row_ptr, prefetch_ahead, run_kernel

// The 32 nibbles of a 32-block in element order (low nibbles are elements 0..15, high nibbles
// 16..31), unsigned.
inline __m256i unpack_nibbles(const uint8_t* qs) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
}

// The IQ4 grid values of 32 nibbles (signed int8).
inline __m256i iq4_lookup(__m256i nibbles) {
  const __m256i table =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values)));
  return _mm256_shuffle_epi8(table, nibbles);
}

// ---------------------------------------------------------------- 32-blocks in pairs
// Q4_1, Q5_0, Q5_1 and IQ4_NL run as the Q4_0 kernel does (matmul_avx2.cpp): two weight blocks
// per step against paired activations (ActPairQ8). The 16 packed bytes of both blocks side by
// side give the low nibbles (values 0..15 of each block) and the high nibbles (values 16..31) in
// one register each, so each step does the integer work of one block for two and the float work
// once: lanes 0..3 of a step's products belong to the first block, lanes 4..7 to the second, and
// each lane is scaled by its own block's scale. Decode and prefill run the same dot() per output
// element and pair, in pair order.
//
// Traits T: Block; kMin (adds m * sum(a): Q4_1, Q5_1), kOffset16 (stored levels are q + 16:
// Q5_0), kFifthBit (qh: Q5_0, Q5_1), kGrid (the nibbles index kIQ4Values, signed: IQ4_NL).

// The fifth bits of a pair of blocks (qh0, qh1: each a block's 32-bit qh) as 0x10 bytes for the
// low-nibble register (bits 0..15 of each block) and the high-nibble register (bits 16..31).
inline void pair_fifth_bits(const uint8_t* qh0, const uint8_t* qh1, __m256i& lo, __m256i& hi) {
  // Dwords alternate qh0, qh1: bytes 0..3 hold qh0, 4..7 qh1 in both 128-bit halves (the byte
  // shuffles below stay within a half).
  int32_t h0, h1;
  std::memcpy(&h0, qh0, 4);
  std::memcpy(&h1, qh1, 4);
  const __m256i q = _mm256_blend_epi32(_mm256_set1_epi32(h0), _mm256_set1_epi32(h1), 0xAA);
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
  const __m256i x10 = _mm256_set1_epi8(0x10);
  const __m256i sel_lo = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 4,
                                          4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5);
  const __m256i sel_hi = _mm256_setr_epi8(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 6, 6, 6,
                                          6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7);
  const __m256i blo = _mm256_and_si256(_mm256_shuffle_epi8(q, sel_lo), bit);
  const __m256i bhi = _mm256_and_si256(_mm256_shuffle_epi8(q, sel_hi), bit);
  lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(blo, bit), x10));
  hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(bhi, bit), x10));
}

template <class T>
struct PairKernel {
  static constexpr int kMR = 4, kNR = 2, kNRGemv = 4;
  using Block = typename T::Block;
  static constexpr bool kSigned = T::kGrid;

  struct Unpacked {
    __m256i lo, hi;  // values 0..15 / 16..31 of both blocks
    __m256 d;        // block 0's scale x4, block 1's x4
    __m256 m;        // kMin: the same for the mins
  };

  // kPair false: the last block of an odd count alone (partner values, scale and min 0; its
  // activations are 0 too).
  template <bool kPair>
  static Unpacked unpack(const Block* blk) {
    Unpacked u;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[0].qs));
    const __m128i q1 =
        kPair ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[1].qs)) : _mm_setzero_si128();
    const __m256i q = _mm256_set_m128i(q1, q0);
    u.lo = _mm256_and_si256(q, low4);
    u.hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
    if constexpr (T::kFifthBit) {
      static constexpr uint8_t kNoBits[4] = {};
      pair_fifth_bits(blk[0].qh, kPair ? blk[1].qh : kNoBits, u.lo, u.hi);
    }
    if constexpr (kSigned) {
      u.lo = iq4_lookup(u.lo);
      u.hi = iq4_lookup(u.hi);
    }
    if constexpr (T::kMin) {
      // d and m are the block's first 4 bytes: d0 m0 d1 m1 converted at once.
      uint32_t s0, s1 = 0;
      std::memcpy(&s0, &blk[0], 4);
      if constexpr (kPair) std::memcpy(&s1, &blk[1], 4);
      const __m256 f = _mm256_castps128_ps256(_mm_cvtph_ps(
          _mm_insert_epi32(_mm_cvtsi32_si128(static_cast<int>(s0)), static_cast<int>(s1), 1)));
      u.d = _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2));
      u.m = _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3));
    } else {
      const __m128i h = _mm_insert_epi16(_mm_cvtsi32_si128(blk[0].d), kPair ? blk[1].d : 0, 1);
      u.d = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_cvtph_ps(h)),
                                     _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
    }
    return u;
  }

  static void dot(const Unpacked& w, const ActPairQ8& ap, __m256& acc) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    const __m256i alo = load256(ap.lo);
    const __m256i ahi = load256(ap.hi);
    __m256i p;
    if constexpr (kSigned) {
      // |a| x (w with a's sign): |a| is the same for every column of a tile, so it is computed
      // once. Each pair sum reaches 2 x 127 x 127, so the two halves are widened before they are
      // added.
      p = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(alo, alo),
                                                                  _mm256_sign_epi8(w.lo, alo)),
                                             ones16),
                           _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(ahi, ahi),
                                                                  _mm256_sign_epi8(w.hi, ahi)),
                                             ones16));
    } else {
      // Unsigned levels (at most 31): the two halves sum to at most 4 x 31 x 127 in 16 bits.
      p = _mm256_madd_epi16(
          _mm256_add_epi16(_mm256_maddubs_epi16(w.lo, alo), _mm256_maddubs_epi16(w.hi, ahi)),
          ones16);
    }
    __m256i sum8 = _mm256_setzero_si256();
    if constexpr (T::kMin || T::kOffset16) sum8 = load256(ap.sum8);
    // sum8 is 8 x the sums of the activations of each lane's products: 16 x sum = 2 x sum8.
    if constexpr (T::kOffset16) p = _mm256_sub_epi32(p, _mm256_slli_epi32(sum8, 1));
    const __m256 da = _mm256_loadu_ps(ap.d);
    acc = _mm256_fmadd_ps(_mm256_mul_ps(w.d, da), _mm256_cvtepi32_ps(p), acc);
    if constexpr (T::kMin) {
      acc = _mm256_fmadd_ps(_mm256_mul_ps(w.m, da), _mm256_cvtepi32_ps(_mm256_srai_epi32(sum8, 3)),
                            acc);
    }
  }

  // One step (two blocks) of every element of the tile. Decode (MR == 1) finishes one column
  // before unpacking the next, which keeps everything in registers; both orders apply the same
  // operations to each element.
  template <int MR, int NR, bool kPair>
  static void step(const ActPairQ8* const (&x)[MR], const Block* const (&w)[NR], int64_t b,
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
    const TileRows<ActPairQ8, Block, MR, NR> t(a, i, j);
    __m256 acc[MR][NR];
    zero_tile(acc);
    const int64_t nb = a.n_in / 32;
    const uint8_t* next = t.next(a);
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      if (MR == 1 || a.m <= kPrefetchMaxRows) prefetch_ahead<2 * NR * sizeof(Block)>(next, b / 2);
      step<MR, NR, true>(t.x, t.w, b, acc);
    }
    if (b < nb) step<MR, NR, false>(t.x, t.w, b, acc);
    store_tile(a, i, j, acc);
  }

  // Prefill (run_packed): each weight pair unpacked once per column tile and row block.
  using Packed = Unpacked;
  static constexpr int64_t kPackBlocks = 16384 / (2 * sizeof(Unpacked));  // pairs, ~16 KB
  static int64_t pack_units(const KernelArgs& a) { return (a.n_in / 32 + 1) / 2; }
  static void pack_column(const KernelArgs& a, int64_t j, int64_t p0, int64_t p1, Packed* out) {
    const Block* w = row_ptr<Block>(a.w, a.w_row_bytes, j);
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
    if (a.m < kMR) return run_kernel<PairKernel>(a, j0, j1);  // decode and tiny batches
    run_packed<PairKernel>(a, j0, j1);
  }
};

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

// ---------------------------------------------------------------- IQ4_XS with Q8_K activations
struct IQ4XSOps {
  using WBlock = BlockIQ4_XS;
  static constexpr bool kSigned = true;

  // The 8 sub-block scales (ls - 32) as int16, in both 128-bit halves.
  static __m256i scales_of(const BlockIQ4_XS& b) {
    uint32_t sl;
    std::memcpy(&sl, b.scales_l, 4);
    // 16-bit lanes b0, b0, b1, b1, b2, b2, b3, b3 (bytes of scales_l); even lanes keep the low
    // nibble (x16, >> 4, mask), odd lanes the high nibble (>> 4).
    __m128i lo =
        _mm_shuffle_epi8(_mm_cvtsi32_si128(static_cast<int>(sl)),
                         _mm_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1));
    lo = _mm_and_si128(
        _mm_srli_epi16(_mm_mullo_epi16(lo, _mm_setr_epi16(16, 1, 16, 1, 16, 1, 16, 1)), 4),
        _mm_set1_epi16(0x0F));
    // Lane ib: bits 2ib, 2ib + 1 of scales_h shifted to the top of the lane, then down to 0..3.
    __m128i hi = _mm_mullo_epi16(
        _mm_set1_epi16(static_cast<short>(b.scales_h)),
        _mm_setr_epi16(1 << 14, 1 << 12, 1 << 10, 1 << 8, 1 << 6, 1 << 4, 1 << 2, 1));
    hi = _mm_srli_epi16(hi, 14);
    const __m128i ls = _mm_sub_epi16(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi16(32));
    return _mm256_broadcastsi128_si256(ls);
  }

  struct Col {
    __m256i sc;
  };
  static Col prep(const BlockIQ4_XS& b) { return {scales_of(b)}; }
  // Step s: sub-block s's grid values.
  static __m256i values(const BlockIQ4_XS& b, int s) {
    return iq4_lookup(unpack_nibbles(b.qs + 16 * s));
  }
  static __m256i scale(const Col& col, int s) {
    return _mm256_shuffle_epi8(col.sc,
                               _mm256_set1_epi16(static_cast<short>(((2 * s + 1) << 8) | (2 * s))));
  }

  struct Tail {
    float d;
  };
  static Tail tail(const BlockIQ4_XS& b, const Col&) { return {fp16(b.d)}; }
  static void finish(const Tail& t, const BlockQ8_K& ab, __m256i sumi, __m256& acc) {
    acc = _mm256_fmadd_ps(_mm256_set1_ps(t.d * ab.d), _mm256_cvtepi32_ps(sumi), acc);
  }
};

// Decode for IQ4_XS: one activation row, NR weight rows, step by step across the columns so that
// each 32 activations are loaded and made absolute once for all NR columns. The sign trick goes
// on the weights' side (|a| x (w with a's sign) = a w), which gives every 16-bit pair sum, and so
// every lane of sumi, the same integers as SuperBlockKernel's steps (|w| x (a with w's sign)):
// the float steps (finish) and hence the results are those of the prefill path.
template <int NR>
void iq4_xs_gemv_tile(const KernelArgs& a, int64_t i, int64_t j) {
  const TileRows<BlockQ8_K, BlockIQ4_XS, 1, NR> t(a, i, j);
  __m256 acc[1][NR];
  zero_tile(acc);
  const int64_t nb = a.n_in / kQK_K;
  const uint8_t* next = t.next(a);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i table =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values)));
  for (int64_t b = 0; b < nb; ++b) {
    prefetch_ahead<NR * sizeof(BlockIQ4_XS)>(next, b);
    const BlockQ8_K& ab = t.x[0][b];
    IQ4XSOps::Col col[NR];
    __m256i sumi[NR];
    for (int c = 0; c < NR; ++c) {
      col[c] = IQ4XSOps::prep(t.w[c][b]);
      sumi[c] = _mm256_setzero_si256();
    }
#pragma GCC unroll 4
    for (int s = 0; s < 8; s += 2) {  // sub-blocks s and s + 1: one 32-byte load of nibbles
      const __m256i a0 = load256(ab.qs + 32 * s);
      const __m256i a1 = load256(ab.qs + 32 * s + 32);
      const __m256i abs0 = _mm256_sign_epi8(a0, a0);
      const __m256i abs1 = _mm256_sign_epi8(a1, a1);
      for (int c = 0; c < NR; ++c) {
        const __m256i q = load256(t.w[c][b].qs + 16 * s);
        const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(q, low4));
        const __m256i hi =
            _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(q, 4), low4));
        // Sub-block s in element order is (low nibbles, high nibbles) of its 16 bytes.
        const __m256i v0 = _mm256_permute2x128_si256(lo, hi, 0x20);
        const __m256i v1 = _mm256_permute2x128_si256(lo, hi, 0x31);
        const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(abs0, _mm256_sign_epi8(v0, a0)),
                                             IQ4XSOps::scale(col[c], s));
        const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(abs1, _mm256_sign_epi8(v1, a1)),
                                             IQ4XSOps::scale(col[c], s + 1));
        sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(p0, p1));
        keep_in_register(sumi[c]);
      }
    }
    for (int c = 0; c < NR; ++c)
      IQ4XSOps::finish(IQ4XSOps::tail(t.w[c][b], col[c]), ab, sumi[c], acc[0][c]);
  }
  store_tile(a, i, j, acc);
}

struct IQ4XSKernel {
  using Prefill = SuperBlockKernel<IQ4XSOps>;
  static constexpr int kNRGemv = 4;
  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    using GemvFn = void (*)(const KernelArgs&, int64_t, int64_t);
    static constexpr GemvFn gemv[4] = {iq4_xs_gemv_tile<1>, iq4_xs_gemv_tile<2>,
                                       iq4_xs_gemv_tile<3>, iq4_xs_gemv_tile<4>};
    if (a.m < Prefill::kMR) {  // decode and tiny batches, as SuperBlockKernel::run
      for (int64_t i = 0; i < a.m; ++i)
        for (int64_t j = j0; j < j1; j += kNRGemv)
          gemv[std::min<int64_t>(kNRGemv, j1 - j) - 1](a, i, j);
      return;
    }
    run_packed<Prefill>(a, j0, j1);
  }
};

}  // namespace

KernelFn avx2_kernel_q4_1_q5_iq4(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_1:
      return PairKernel<Q41Traits>::run;
    case GgmlType::Q5_0:
      return PairKernel<Q50Traits>::run;
    case GgmlType::Q5_1:
      return PairKernel<Q51Traits>::run;
    case GgmlType::IQ4_NL:
      return PairKernel<IQ4NLTraits>::run;
    case GgmlType::IQ4_XS:
      return IQ4XSKernel::run;
    default:
      return nullptr;
  }
}

}  // namespace chimera::matmul_detail
