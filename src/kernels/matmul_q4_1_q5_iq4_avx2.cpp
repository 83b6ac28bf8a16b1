// AVX2 kernels for Q4_1, Q5_0, Q5_1, IQ4_NL (Q8 activation blocks of 32) and IQ4_XS (Q8_K blocks
// of 256). Same structure and promise as matmul_avx2.cpp (see matmul_avx2_tiles.h): per weight
// block the dot product is exact integer arithmetic (maddubs/madd), and each output element's
// accumulator sees the same float steps in block order whatever the tile shape.
#include <immintrin.h>

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

// Byte j is 0x10 when bit j of the block's 32-bit qh is set (element j's fifth bit), else 0.
inline __m256i fifth_bits(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  // Byte j takes qh byte j / 8 (shuffles stay within 128-bit halves; both hold all four bytes).
  const __m256i spread =
      _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)),
                          _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                           2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

// The IQ4 grid values of 32 nibbles (signed int8).
inline __m256i iq4_lookup(__m256i nibbles) {
  const __m256i table =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values)));
  return _mm256_shuffle_epi8(table, nibbles);
}

// ---------------------------------------------------------------- 32-blocks with Q8 activations
// Traits for Block32Kernel (matmul_avx2_tiles.h).
struct Q41Traits {
  using Block = BlockQ4_1;
  static constexpr bool kMin = true, kOffset16 = false, kSigned = false;
  static __m256i values(const Block& b) { return unpack_nibbles(b.qs); }
};
struct Q51Traits {
  using Block = BlockQ5_1;
  static constexpr bool kMin = true, kOffset16 = false, kSigned = false;
  static __m256i values(const Block& b) {
    return _mm256_or_si256(unpack_nibbles(b.qs), fifth_bits(b.qh));
  }
};
struct Q50Traits {
  using Block = BlockQ5_0;
  static constexpr bool kMin = false, kOffset16 = true, kSigned = false;
  static __m256i values(const Block& b) {
    return _mm256_or_si256(unpack_nibbles(b.qs), fifth_bits(b.qh));
  }
};
struct IQ4NLTraits {
  using Block = BlockIQ4_NL;
  static constexpr bool kMin = false, kOffset16 = false, kSigned = true;
  static __m256i values(const Block& b) { return iq4_lookup(unpack_nibbles(b.qs)); }
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

}  // namespace

KernelFn avx2_kernel_q4_1_q5_iq4(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_1:
      return Block32Kernel<Q41Traits>::run;
    case GgmlType::Q5_0:
      return Block32Kernel<Q50Traits>::run;
    case GgmlType::Q5_1:
      return Block32Kernel<Q51Traits>::run;
    case GgmlType::IQ4_NL:
      return Block32Kernel<IQ4NLTraits>::run;
    case GgmlType::IQ4_XS:
      return SuperBlockKernel<IQ4XSOps>::run;
    default:
      return nullptr;
  }
}

}  // namespace chimera::matmul_detail
