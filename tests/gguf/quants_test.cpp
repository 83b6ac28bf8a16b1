// Half-precision conversions (exhaustive over all 65536 patterns), block layouts checked against
// values computed by hand, quantizer error bounds and stability, and error reporting of the
// type-generic entry points. Bitwise agreement with gguf.quants is in tests/python/test_quants.py.
#include "gguf/quants.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gguf/types.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace chimera {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Independent decoding of binary16 by its definition: (-1)^s * 2^(e-15) * (1 + m/1024), or
// 2^-14 * m/1024 for subnormals. Computed in double, exact in float.
double half_by_definition(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double mag = e == 0 ? std::ldexp(m / 1024.0, -14) : std::ldexp(1.0 + m / 1024.0, e - 15);
  return s ? -mag : mag;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// The CPU's own conversions (F16C), a second independent implementation when present.
__attribute__((target("f16c"))) uint16_t f16c_from_float(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, 0));  // 0 = round to nearest even
}
__attribute__((target("f16c"))) float f16c_to_float(uint16_t h) {
  return _cvtsh_ss(h);
}
// F16C is CPUID.1:ECX bit 29; it is VEX-encoded, so the OS must also enable AVX state (which
// __builtin_cpu_supports("avx") checks). clang 14 does not know the "f16c" feature string.
bool have_f16c() {
  unsigned a, b, c, d;
  return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#else
uint16_t f16c_from_float(float) {
  return 0;
}
float f16c_to_float(uint16_t) {
  return 0;
}
bool have_f16c() {
  return false;
}
#endif

TEST(Fp16, ToF32MatchesDefinitionForAll65536Patterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_f32(static_cast<uint16_t>(h));
    const int e = (h >> 10) & 31, m = h & 1023;
    const uint32_t sign = (h & 0x8000u) << 16;
    if (e == 31 && m != 0) {  // NaN: payload moved to the top of float's mantissa, kept as is
      EXPECT_EQ(bits_of(f), sign | 0x7f800000u | (static_cast<uint32_t>(m) << 13)) << h;
    } else if (e == 31) {
      EXPECT_EQ(bits_of(f), sign | 0x7f800000u) << h;
    } else {
      EXPECT_EQ(bits_of(f), bits_of(static_cast<float>(half_by_definition(h)))) << h;
    }
    if (have_f16c() && !(e == 31 && m != 0)) {
      EXPECT_EQ(bits_of(f), bits_of(f16c_to_float(h))) << h;
    }
  }
}

TEST(Fp16, RoundTripOfEveryNonNanHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    if (((h >> 10) & 31) == 31 && (h & 1023) != 0) continue;  // NaNs: checked below
    EXPECT_EQ(f32_to_fp16(fp16_to_f32(static_cast<uint16_t>(h))), h) << h;
  }
}

// Between every pair of adjacent halves: the exact midpoint goes to the even one, the floats just
// below and above it go to the nearer one. Covers subnormals, the normal/subnormal border and every
// exponent; checked against F16C too when present.
TEST(Fp16, RoundsToNearestEvenAtEveryMidpoint) {
  for (uint32_t h = 0; h < 0x7bff; ++h) {  // h and h+1 both finite, positive
    const float a = fp16_to_f32(static_cast<uint16_t>(h));
    const float b = fp16_to_f32(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((static_cast<double>(a) + b) / 2);  // exact: 12 bits
    ASSERT_EQ(static_cast<double>(mid), (static_cast<double>(a) + b) / 2);
    const uint16_t even = (h & 1) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
    const float below = std::nextafter(mid, 0.0f), above = std::nextafter(mid, 1e9f);
    for (float sign : {1.0f, -1.0f}) {
      const uint16_t s = sign < 0 ? 0x8000 : 0;
      EXPECT_EQ(f32_to_fp16(sign * mid), s | even) << h;
      EXPECT_EQ(f32_to_fp16(sign * below), s | h) << h;
      EXPECT_EQ(f32_to_fp16(sign * above), s | (h + 1)) << h;
      if (have_f16c()) {
        EXPECT_EQ(f32_to_fp16(sign * mid), f16c_from_float(sign * mid)) << h;
        EXPECT_EQ(f32_to_fp16(sign * below), f16c_from_float(sign * below)) << h;
        EXPECT_EQ(f32_to_fp16(sign * above), f16c_from_float(sign * above)) << h;
      }
    }
  }
}

TEST(Fp16, OverflowUnderflowAndSpecials) {
  // 65504 is the largest half; halfway to the next binade step (65520) rounds to infinity.
  EXPECT_EQ(f32_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_fp16(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(f32_to_fp16(65520.0f), 0x7c00);
  EXPECT_EQ(f32_to_fp16(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_fp16(std::numeric_limits<float>::infinity()), 0x7c00);
  // The smallest subnormal is 2^-24; half of it is a tie that goes to (even) zero.
  EXPECT_EQ(f32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(f32_to_fp16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(f32_to_fp16(-std::ldexp(1.0f, -26)), 0x8000);
  EXPECT_EQ(f32_to_fp16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(f32_to_fp16(-0.0f), 0x8000);
  // NaNs stay NaN (never infinity), quiet, sign kept.
  for (uint32_t nan_bits : {0x7f800001u, 0x7fc00000u, 0xffa00000u, 0x7fffffffu}) {
    const uint16_t h = f32_to_fp16(float_of(nan_bits));
    EXPECT_EQ(h & 0x7c00, 0x7c00) << nan_bits;
    EXPECT_NE(h & 0x03ff, 0) << nan_bits;
    EXPECT_NE(h & 0x0200, 0) << nan_bits;
    EXPECT_EQ(h >> 15, nan_bits >> 31) << nan_bits;
  }
}

TEST(Fp16, RandomFloatsMatchF16c) {
  if (!have_f16c()) GTEST_SKIP() << "CPU without F16C: covered by the midpoint test";
  std::mt19937 rng(7);
  for (int i = 0; i < 1000000; ++i) {
    const float f = float_of(rng());
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_fp16(f), f16c_from_float(f)) << bits_of(f);
  }
}

TEST(Bf16, ConversionsForAll65536Patterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    EXPECT_EQ(bits_of(f), h << 16);
    if ((h & 0x7fff) > 0x7f80) {  // NaN: stays NaN, forced quiet
      EXPECT_EQ(f32_to_bf16(f), h | 0x40) << h;
    } else {
      EXPECT_EQ(f32_to_bf16(f), h) << h;
    }
  }
}

TEST(Bf16, RoundsToNearestEven) {
  // Between 1.0 (0x3f80) and the next bf16 (0x3f81) the midpoint is 0x3f808000 -> even 0x3f80.
  EXPECT_EQ(f32_to_bf16(float_of(0x3f808000u)), 0x3f80);
  EXPECT_EQ(f32_to_bf16(float_of(0x3f808001u)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(float_of(0x3f818000u)), 0x3f82);  // tie from odd goes up to even
  EXPECT_EQ(f32_to_bf16(float_of(0x3f817fffu)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(float_of(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to infinity
  EXPECT_EQ(f32_to_bf16(float_of(0x7f800001u)), 0x7fc0);  // signalling NaN made quiet
}

// ---- block layouts, by hand ----

TEST(Layout, Q8_0ByHand) {
  BlockQ8_0 b{};
  b.d = 0x3800;  // 0.5
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j - 16);
  b.qs[31] = -128;
  float y[32];
  dequantize_row_q8_0(&b, y, 32);
  for (int j = 0; j < 31; ++j) EXPECT_EQ(y[j], 0.5f * (j - 16)) << j;
  EXPECT_EQ(y[31], -64.0f);
}

TEST(Layout, Q4_0LowNibblesFirstHalfHighNibblesSecondHalf) {
  BlockQ4_0 b{};
  b.d = 0x4000;                                 // 2.0
  for (int j = 0; j < 16; ++j) b.qs[j] = 0x88;  // both nibbles 8 -> 0
  b.qs[0] = 0x1F;                               // element 0: 15-8 = 7; element 16: 1-8 = -7
  b.qs[15] = 0x80;                              // element 15: 0-8 = -8; element 31: 0
  float y[32];
  dequantize_row_q4_0(&b, y, 32);
  EXPECT_EQ(y[0], 14.0f);
  EXPECT_EQ(y[16], -14.0f);
  EXPECT_EQ(y[15], -16.0f);
  EXPECT_EQ(y[31], 0.0f);
  for (int j : {1, 2, 14, 17, 30}) EXPECT_EQ(y[j], 0.0f) << j;
}

// Q4_K / Q5_K scales: sub-block 0 gets sc=3, m=2 (bytes 0 and 4); sub-block 5 gets sc=37
// (0b10'0101), m=50 (0b11'0010): low nibbles in byte 9, high bits in the top of bytes 1 and 5.
void fill_k_scales(uint8_t* s) {
  std::memset(s, 0, 12);
  s[0] = 3;
  s[4] = 2;
  s[9] = 0x25;      // sc low 4 bits 0101, m low 4 bits 0010
  s[1] |= 2u << 6;  // sc high bits 10
  s[5] |= 3u << 6;  // m high bits 11
}

TEST(Layout, Q4_1AndQ5_1AddTheMin) {
  BlockQ4_1 a{};
  a.d = 0x4000;    // 2.0
  a.m = 0xbc00;    // -1.0
  a.qs[0] = 0xF3;  // element 0: 3, element 16: 15
  float y[32];
  dequantize_row_q4_1(&a, y, 32);
  EXPECT_EQ(y[0], 5.0f);
  EXPECT_EQ(y[16], 29.0f);
  EXPECT_EQ(y[1], -1.0f);
  BlockQ5_1 b{};
  b.d = 0x3c00;    // 1.0
  b.m = 0x3800;    // 0.5
  b.qs[2] = 0x41;  // element 2: 1, element 18: 4
  b.qh[0] = 0x04;  // bit 2: element 2 gets +16
  b.qh[2] = 0x04;  // bit 18: element 18 gets +16
  b.qh[3] = 0x80;  // bit 31: element 31 = 16
  dequantize_row_q5_1(&b, y, 32);
  EXPECT_EQ(y[2], 17.5f);
  EXPECT_EQ(y[18], 20.5f);
  EXPECT_EQ(y[31], 16.5f);
  EXPECT_EQ(y[3], 0.5f);
}

TEST(Layout, Q5_0IsSignedAroundSixteen) {
  BlockQ5_0 b{};
  b.d = 0x3800;  // 0.5
  for (int j = 0; j < 16; ++j) b.qs[j] = 0x00;
  b.qh[0] = 0x01;  // element 0: 16 -> 0
  b.qs[5] = 0xF0;  // element 5: 0 -> -16; element 21: 15 -> -1
  b.qh[2] = 0x20;  // bit 21: element 21: 31 -> 15
  float y[32];
  dequantize_row_q5_0(&b, y, 32);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[5], -8.0f);
  EXPECT_EQ(y[21], 7.5f);
  EXPECT_EQ(y[1], -8.0f);
}

TEST(Layout, IQ4GridAndSubBlockScales) {
  BlockIQ4_NL n{};
  n.d = 0x3c00;    // 1.0
  n.qs[0] = 0xF0;  // element 0: index 0 (-127), element 16: index 15 (113)
  n.qs[1] = 0x78;  // element 1: index 8 (1), element 17: index 7 (-10)
  float y[256];
  dequantize_row_iq4_nl(&n, y, 32);
  EXPECT_EQ(y[0], -127.0f);
  EXPECT_EQ(y[16], 113.0f);
  EXPECT_EQ(y[1], 1.0f);
  EXPECT_EQ(y[17], -10.0f);
  EXPECT_EQ(y[2], -127.0f);
  BlockIQ4_XS x{};
  x.d = 0x3800;  // 0.5
  // Sub-block 0: ls 33 (-> 1): low 4 bits 1, high bits 2. Sub-block 1: ls 0 (-> -32).
  // Sub-block 7: ls 63 (-> 31): low 15 in the high nibble of scales_l[3], high 3 at bits 14-15.
  x.scales_l[0] = 0x01;
  x.scales_l[3] = 0xF0;
  x.scales_h = static_cast<uint16_t>((2 << 0) | (3 << 14));
  for (auto& q : x.qs) q = 0x88;  // index 8: value 1
  x.qs[16 * 7 + 3] = 0x0F;        // sub-block 7: element 3 -> 113, element 19 -> -127
  dequantize_row_iq4_xs(&x, y, 256);
  EXPECT_EQ(iq4_xs_scale(x, 0), 1);
  EXPECT_EQ(iq4_xs_scale(x, 1), -32);
  EXPECT_EQ(iq4_xs_scale(x, 7), 31);
  EXPECT_EQ(y[0], 0.5f);
  EXPECT_EQ(y[32], -16.0f);
  EXPECT_EQ(y[224 + 3], 0.5f * 31 * 113);
  EXPECT_EQ(y[224 + 19], 0.5f * 31 * -127);
  EXPECT_EQ(y[224], 15.5f);
  EXPECT_EQ(y[64], 0.5f * (0 - 32));  // sub-block 2: ls 0
}

TEST(Layout, KScaleMinUnpacking) {
  uint8_t s[12];
  fill_k_scales(s);
  uint8_t sc, m;
  k_scale_min(s, 0, &sc, &m);
  EXPECT_EQ(sc, 3);
  EXPECT_EQ(m, 2);
  k_scale_min(s, 5, &sc, &m);
  EXPECT_EQ(sc, 37);
  EXPECT_EQ(m, 50);
  k_scale_min(s, 1, &sc, &m);  // the high bits stored in bytes 1 and 5 do not leak into j = 1
  EXPECT_EQ(sc, 0);
  EXPECT_EQ(m, 0);
}

TEST(Layout, Q4_KByHand) {
  BlockQ4_K b{};
  b.d = 0x3400;     // 0.25
  b.dmin = 0x3C00;  // 1.0
  fill_k_scales(b.scales);
  b.qs[7] = 0x09;       // chunk 0 low nibble -> element 7 of sub-block 0: q = 9
  b.qs[64 + 3] = 0xA0;  // chunk 2 high nibble -> element 128+32+3 = 163 (sub-block 5): q = 10
  std::vector<float> y(256);
  dequantize_row_q4_K(&b, y.data(), 256);
  EXPECT_EQ(y[7], 0.25f * 3 * 9 - 2.0f);    // 4.75
  EXPECT_EQ(y[0], -2.0f);                   // q = 0 in sub-block 0: just -dmin*m
  EXPECT_EQ(y[163], 0.25f * 37 * 10 - 50);  // 42.5
  EXPECT_EQ(y[160], -50.0f);
  EXPECT_EQ(y[39], 0.0f);   // sub-block 1 has sc = m = 0
  EXPECT_EQ(y[131], 0.0f);  // sub-block 4 (low nibble of the same byte as 163) has sc = m = 0
}

TEST(Layout, Q5_KFifthBitFromQh) {
  BlockQ5_K b{};
  b.d = 0x3400;
  b.dmin = 0x3C00;
  fill_k_scales(b.scales);
  b.qs[7] = 0x09;
  b.qs[64 + 3] = 0xA0;
  b.qh[3] = 1u << 5;  // bit 2c+1 for chunk c = 2: high-nibble element 163 gets +16
  b.qh[7] = 1u << 0;  // bit 2c for c = 0: low-nibble element 7 gets +16
  std::vector<float> y(256);
  dequantize_row_q5_K(&b, y.data(), 256);
  EXPECT_EQ(y[7], 0.25f * 3 * 25 - 2.0f);
  EXPECT_EQ(y[163], 0.25f * 37 * 26 - 50);  // 190.5
  EXPECT_EQ(y[131], 0.0f);                  // bit 4 of qh[3] not set and sub-block 4 is zero
  EXPECT_EQ(y[3], -2.0f);                   // qh[3] bit 0 clear: q = 0
}

TEST(Layout, Q6_KByHand) {
  BlockQ6_K b{};
  b.d = 0x3800;  // 0.5, stored last
  b.scales[13] = -3;
  // Element 212 = half 1, l = 20, third group (l + 64): low 4 bits from the high nibble of
  // ql[64 + 20], high 2 bits from bits 4..5 of qh[32 + 20]; scale index 8 + 20/16 + 4 = 13.
  b.ql[64 + 20] = 0x70;
  b.qh[32 + 20] = 0x20;
  std::vector<float> y(256);
  dequantize_row_q6_K(&b, y.data(), 256);
  EXPECT_EQ(y[212], 0.5f * -3 * ((7 | (2 << 4)) - 32));  // -10.5
  EXPECT_EQ(y[208], 0.5f * -3 * -32);                    // all-zero bits: q = -32 -> 48
  EXPECT_EQ(y[148], 0.0f);  // low nibble of ql[84] belongs to element 148, whose scale is 0
  EXPECT_EQ(std::memcmp(&b.d, reinterpret_cast<const uint8_t*>(&b) + 208, 2), 0);
}

// ---- generic entry points: errors name the type, leave dst untouched ----

TEST(Generic, UnsupportedTypesAreNamed) {
  uint8_t src[64] = {};
  float dst[32];
  std::fill(dst, dst + 32, 123.0f);
  Status st = dequantize_row(GgmlType::Q8_1, src, dst, 32);
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_NE(st.message().find("Q8_1"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("Q6_K"), std::string::npos) << st.message();  // lists supported
  st = quantize_row(GgmlType::IQ2_XXS, dst, src, 256);
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_NE(st.message().find("IQ2_XXS"), std::string::npos) << st.message();
  st = dequantize_row(static_cast<GgmlType>(4), src, dst, 32);  // id 4 is not a ggml type
  EXPECT_EQ(st.code(), ErrorCode::kUnsupported);
  EXPECT_NE(st.message().find("4"), std::string::npos) << st.message();
  for (float v : dst) EXPECT_EQ(v, 123.0f);
  EXPECT_FALSE(can_dequantize(GgmlType::Q8_K));
  EXPECT_TRUE(can_quantize(GgmlType::Q5_K));
}

TEST(Generic, RowLengthMustBeWholeBlocks) {
  uint8_t src[256] = {};
  float dst[64];
  std::fill(dst, dst + 64, 5.0f);
  Status st = dequantize_row(GgmlType::Q8_0, src, dst, 33);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.message().find("33"), std::string::npos) << st.message();
  EXPECT_EQ(quantize_row(GgmlType::Q4_K, dst, src, 64).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(dequantize_row(GgmlType::F16, src, dst, -1).code(), ErrorCode::kInvalidArgument);
  for (float v : dst) EXPECT_EQ(v, 5.0f);
  EXPECT_TRUE(dequantize_row(GgmlType::Q8_0, src, dst, 0).ok());  // empty row is fine
}

TEST(Generic, DispatchMatchesTypedFunctions) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> x(512);
  for (float& v : x) v = nd(rng);
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,
                     GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    std::vector<uint8_t> q(row_bytes(t, 512));
    ASSERT_TRUE(quantize_row(t, x.data(), q.data(), 512).ok()) << type_name(t);
    std::vector<float> y(512);
    ASSERT_TRUE(dequantize_row(t, q.data(), y.data(), 512).ok()) << type_name(t);
    if (t == GgmlType::F32) {
      EXPECT_EQ(std::memcmp(x.data(), y.data(), 512 * 4), 0);
    } else if (t == GgmlType::F16) {
      for (int i = 0; i < 512; ++i) EXPECT_EQ(y[i], fp16_to_f32(f32_to_fp16(x[i])));
    } else if (t == GgmlType::BF16) {
      for (int i = 0; i < 512; ++i) EXPECT_EQ(y[i], bf16_to_f32(f32_to_bf16(x[i])));
    }
  }
}

// ---- quantizers ----

// Rows that exercise the quantizers: Gaussian blocks whose scale varies over 6 orders of
// magnitude, blocks with one large outlier, all-positive and all-negative blocks, heavy tails.
std::vector<float> test_row(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < n; b += 32) {
    const float scale = std::exp(nd(rng) * 2.0f);
    const int kind = static_cast<int>(rng() % 5);
    for (int64_t i = b; i < b + 32 && i < n; ++i) {
      float v = nd(rng) * scale;
      if (kind == 1) v = std::fabs(v) + 0.5f * scale;                // all positive, away from 0
      if (kind == 2) v = -std::fabs(v) - 0.5f * scale;               // all negative
      if (kind == 3) v = scale * std::tan(3.0f * (ud(rng) - 0.5f));  // heavy tails
      x[static_cast<size_t>(i)] = v;
    }
    if (kind == 4) x[static_cast<size_t>(b + rng() % 32)] *= 20.0f;  // outlier
  }
  return x;
}

template <typename Block>
std::vector<float> round_trip(void (*quant)(const float*, Block*, int64_t),
                              void (*dequant)(const Block*, float*, int64_t),
                              const std::vector<float>& x, int block_size) {
  std::vector<Block> q(x.size() / static_cast<size_t>(block_size));
  quant(x.data(), q.data(), static_cast<int64_t>(x.size()));
  std::vector<float> y(x.size());
  dequant(q.data(), y.data(), static_cast<int64_t>(x.size()));
  return y;
}

TEST(Quantize, Q8_0ErrorBoundAndRange) {
  const std::vector<float> x = test_row(32 * 4096, 11);
  std::vector<BlockQ8_0> q(4096);
  quantize_row_q8_0(x.data(), q.data(), static_cast<int64_t>(x.size()));
  for (size_t b = 0; b < q.size(); ++b) {
    const float* xb = x.data() + 32 * b;
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const double d = amax / 127.0f, dh = fp16_to_f32(q[b].d);
    EXPECT_EQ(q[b].d, f32_to_fp16(amax / 127.0f));
    // 0.5 d from rounding to an integer; 127 |d - dh| because q was chosen with the float d but
    // decodes with its fp16 rounding; 1e-6 amax covers the float rounding of x * (1/d).
    const double bound = 0.5 * d + 127 * std::fabs(d - dh) + 1e-6 * amax;
    int max_q = 0;
    for (int j = 0; j < 32; ++j) {
      EXPECT_LE(std::fabs(xb[j] - dh * q[b].qs[j]), bound) << b << " " << j;
      max_q = std::max(max_q, std::abs(static_cast<int>(q[b].qs[j])));
    }
    EXPECT_EQ(max_q, 127) << b;  // the largest magnitude always maps to +-127
  }
}

TEST(Quantize, Q4_0ErrorBound) {
  const std::vector<float> x = test_row(32 * 4096, 12);
  std::vector<BlockQ4_0> q(4096);
  quantize_row_q4_0(x.data(), q.data(), static_cast<int64_t>(x.size()));
  std::vector<float> y(x.size());
  dequantize_row_q4_0(q.data(), y.data(), static_cast<int64_t>(x.size()));
  for (size_t b = 0; b < q.size(); ++b) {
    float max = 0;
    for (int j = 0; j < 32; ++j)
      if (std::fabs(x[32 * b + j]) > std::fabs(max)) max = x[32 * b + j];
    const double d = std::fabs(max / -8.0f), dh = std::fabs(fp16_to_f32(q[b].d));
    // Levels are -8..7 times d with max itself at -8: values in [-8d, 7.5d) round to within d/2,
    // values in [7.5d, 8d] clip to 7d (error <= d). 8 |d - dh| for the fp16 rounding of d at the
    // largest level, 1e-6 |max| for float rounding of x * (1/d) + 8.5.
    const double bound = d + 8 * std::fabs(d - dh) + 1e-6 * std::fabs(max);
    for (int j = 0; j < 32; ++j) EXPECT_LE(std::fabs(x[32 * b + j] - y[32 * b + j]), bound);
  }
}

// Re-quantizing what Q8_0 / Q4_0 decode to reproduces the same bytes: the largest value decodes
// to exactly 127 (or -8) times the fp16 scale, so the scale is found again exactly.
TEST(Quantize, Q8_0AndQ4_0AreIdempotent) {
  const std::vector<float> x = test_row(32 * 2048, 13);
  const int64_t n = static_cast<int64_t>(x.size());
  {
    std::vector<BlockQ8_0> q1(2048), q2(2048);
    quantize_row_q8_0(x.data(), q1.data(), n);
    std::vector<float> y(x.size());
    dequantize_row_q8_0(q1.data(), y.data(), n);
    quantize_row_q8_0(y.data(), q2.data(), n);
    EXPECT_EQ(std::memcmp(q1.data(), q2.data(), q1.size() * sizeof(BlockQ8_0)), 0);
  }
  {
    std::vector<BlockQ4_0> q1(2048), q2(2048);
    quantize_row_q4_0(x.data(), q1.data(), n);
    std::vector<float> y(x.size());
    dequantize_row_q4_0(q1.data(), y.data(), n);
    quantize_row_q4_0(y.data(), q2.data(), n);
    EXPECT_EQ(std::memcmp(q1.data(), q2.data(), q1.size() * sizeof(BlockQ4_0)), 0);
  }
}

TEST(Quantize, Q8_0ActivationVariant) {
  const std::vector<float> x = test_row(32 * 2048, 14);
  std::vector<BlockQ8_0> ref(2048), act(2048);
  quantize_row_q8_0(x.data(), ref.data(), static_cast<int64_t>(x.size()));
  quantize_row_q8_0_act(x.data(), act.data(), static_cast<int64_t>(x.size()));
  int differing = 0;
  for (size_t b = 0; b < ref.size(); ++b) {
    EXPECT_EQ(ref[b].d, act[b].d);  // same stored scale
    for (int j = 0; j < 32; ++j) {
      const int diff = std::abs(ref[b].qs[j] - act[b].qs[j]);
      EXPECT_LE(diff, 1);  // only tie rounding and 127/amax vs 1/(amax/127) can differ
      differing += diff;
      // The definition, computed independently in double where it is exact: x * (127/amax) in
      // float, then rounded half to even.
      float amax = 0;
      for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[32 * b + k]));
      const float scaled = x[32 * b + j] * (127.0f / amax);
      EXPECT_EQ(act[b].qs[j], static_cast<int8_t>(std::nearbyint(scaled)));
    }
  }
  EXPECT_LT(differing, 32 * 2048 / 100);  // differences are rare (ties and last-ulp cases)
}

TEST(Quantize, Q8_KScalesSumsAndBound) {
  std::vector<float> x = test_row(256 * 512, 15);
  std::fill(x.begin() + 256 * 7, x.begin() + 256 * 8, 0.0f);  // an all-zero block
  std::vector<BlockQ8_K> q(512);
  quantize_row_q8_K(x.data(), q.data(), static_cast<int64_t>(x.size()));
  for (size_t b = 0; b < q.size(); ++b) {
    const float* xb = x.data() + 256 * b;
    if (b == 7) {
      EXPECT_EQ(q[b].d, 0.0f);
      for (int j = 0; j < 256; ++j) EXPECT_EQ(q[b].qs[j], 0);
      for (int k = 0; k < 16; ++k) EXPECT_EQ(q[b].bsums[k], 0);
      continue;
    }
    float max = 0;
    for (int j = 0; j < 256; ++j)
      if (std::fabs(xb[j]) > std::fabs(max)) max = xb[j];
    EXPECT_EQ(q[b].d, 1.0f / (-127.0f / max));  // kept as float32, negative for positive max
    // 0.5 |d| from rounding to an integer, 1e-6 |max| for float rounding of iscale * x.
    const double bound = 0.5 * std::fabs(q[b].d) + 1e-6 * std::fabs(max);
    for (int j = 0; j < 256; ++j)
      EXPECT_LE(std::fabs(xb[j] - static_cast<double>(q[b].d) * q[b].qs[j]), bound) << b << j;
    for (int k = 0; k < 16; ++k) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += q[b].qs[16 * k + j];
      EXPECT_EQ(q[b].bsums[k], sum);
    }
  }
}

// Every stored level is the nearest representable one given the block's stored scales: catches
// packing mistakes and a re-assignment that disagrees with what dequantization decodes.
// `level_value(b, i, l)` decodes level l of element i; nmin..nmax is the level range.
template <typename Block, typename LevelValue>
void expect_nearest_levels(const std::vector<float>& x, const std::vector<Block>& q,
                           const std::vector<float>& y, int nmax, LevelValue level_value,
                           const char* what) {
  int failures = 0;
  for (size_t i = 0; i < x.size() && failures < 10; ++i) {
    const size_t b = i / 256;
    const double err = std::fabs(static_cast<double>(x[i]) - y[i]);
    for (int l = 0; l <= nmax; ++l) {
      const double alt = std::fabs(static_cast<double>(x[i]) - level_value(q[b], i % 256, l));
      // 1e-5 relative slack: the level was chosen by rounding (x + m) / d in float.
      if (err > alt + 1e-5 * (std::fabs(x[i]) + std::fabs(alt)) + 1e-30) {
        ADD_FAILURE() << what << ": element " << i << " = " << x[i] << " decodes to " << y[i]
                      << " but level " << l << " gives " << level_value(q[b], i % 256, l);
        ++failures;
        break;
      }
    }
  }
}

double level_q4_K(const BlockQ4_K& b, int i, int l) {
  uint8_t sc, m;
  k_scale_min(b.scales, i / 32, &sc, &m);
  return static_cast<double>(fp16_to_f32(b.d)) * sc * l -
         static_cast<double>(fp16_to_f32(b.dmin)) * m;
}
double level_q6_K(const BlockQ6_K& b, int i, int l) {
  return static_cast<double>(fp16_to_f32(b.d)) * b.scales[i / 16] * (l - 32);
}

TEST(Quantize, KQuantLevelsAreNearest) {
  const std::vector<float> x = test_row(256 * 1024, 16);
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> y(x.size());
  {
    std::vector<BlockQ4_K> q(1024);
    quantize_row_q4_K(x.data(), q.data(), n);
    dequantize_row_q4_K(q.data(), y.data(), n);
    expect_nearest_levels(x, q, y, 15, level_q4_K, "Q4_K");
  }
  {
    std::vector<BlockQ5_K> q(1024);
    quantize_row_q5_K(x.data(), q.data(), n);
    dequantize_row_q5_K(q.data(), y.data(), n);
    auto level = [](const BlockQ5_K& b, int i, int l) {
      uint8_t sc, m;
      k_scale_min(b.scales, i / 32, &sc, &m);
      return static_cast<double>(fp16_to_f32(b.d)) * sc * l -
             static_cast<double>(fp16_to_f32(b.dmin)) * m;
    };
    expect_nearest_levels(x, q, y, 31, level, "Q5_K");
  }
  {
    std::vector<BlockQ6_K> q(1024);
    quantize_row_q6_K(x.data(), q.data(), n);
    dequantize_row_q6_K(q.data(), y.data(), n);
    expect_nearest_levels(x, q, y, 63, level_q6_K, "Q6_K");
  }
}

// Independent baselines for the K-quant error: per sub-block, an unconstrained min/max affine grid
// (asymmetric types) or the symmetric grid through the largest magnitude (Q6_K), with exact float
// scales. The K-quants search for better scales but then round them to 6 or 8 bits.
double rms(const std::vector<double>& e) {
  double s = 0;
  for (double v : e) s += v * v;
  return std::sqrt(s / static_cast<double>(e.size()));
}

std::vector<double> naive_affine_error(const std::vector<float>& x, int group, int nmax) {
  std::vector<double> e(x.size());
  for (size_t g = 0; g < x.size(); g += static_cast<size_t>(group)) {
    double lo = x[g], hi = x[g];
    for (int i = 0; i < group; ++i) {
      lo = std::min(lo, static_cast<double>(x[g + i]));
      hi = std::max(hi, static_cast<double>(x[g + i]));
    }
    const double step = (hi - lo) / nmax;
    for (int i = 0; i < group; ++i) {
      const double l = step > 0 ? std::round((x[g + i] - lo) / step) : 0;
      e[g + i] = x[g + i] - (lo + step * l);
    }
  }
  return e;
}

std::vector<double> naive_symmetric_error(const std::vector<float>& x, int group, int nmax) {
  std::vector<double> e(x.size());
  for (size_t g = 0; g < x.size(); g += static_cast<size_t>(group)) {
    double max = 0;
    for (int i = 0; i < group; ++i)
      if (std::fabs(x[g + i]) > std::fabs(max)) max = x[g + i];
    const double d = max / -nmax;
    for (int i = 0; i < group; ++i) {
      const double l = d != 0 ? std::clamp(std::round(x[g + i] / d), -double(nmax), nmax - 1.0) : 0;
      e[g + i] = x[g + i] - d * l;
    }
  }
  return e;
}

struct KQuantCase {
  GgmlType type;
  int group, nmax;
  bool symmetric;
  double max_ratio;  // allowed RMS error relative to the naive baseline (see the test)
};

// Gaussian rows, one scale per super-block (the shape of real weight rows). The K-quants search
// for better sub-block scales than the naive baseline but then round them to 6 bits (Q4_K/Q5_K)
// or 8 bits (Q6_K) and the super-block scales to fp16, which the float-scale baseline does not pay;
// the search must more than make up for that: RMS error at most the baseline's. Measured ratios
// on this data: Q4_K 0.916, Q5_K 0.954, Q6_K 0.947 (a broken search or scale packing gives > 1).
TEST(Quantize, KQuantErrorWithinFactorOfNaiveBaseline) {
  std::mt19937 rng(17);
  std::normal_distribution<float> nd;
  std::vector<float> x(256 * 2048);
  for (size_t b = 0; b < x.size(); b += 256) {
    const float scale = std::exp(nd(rng));
    for (size_t i = b; i < b + 256; ++i) x[i] = nd(rng) * scale;
  }
  const KQuantCase cases[] = {{GgmlType::Q4_K, 32, 15, false, 1.0},
                              {GgmlType::Q5_K, 32, 31, false, 1.0},
                              {GgmlType::Q6_K, 16, 32, true, 1.0}};  // see above
  for (const KQuantCase& c : cases) {
    std::vector<uint8_t> q(row_bytes(c.type, x.size()));
    std::vector<float> y(x.size());
    ASSERT_TRUE(quantize_row(c.type, x.data(), q.data(), static_cast<int64_t>(x.size())).ok());
    ASSERT_TRUE(dequantize_row(c.type, q.data(), y.data(), static_cast<int64_t>(x.size())).ok());
    std::vector<double> e(x.size());
    for (size_t i = 0; i < x.size(); ++i) e[i] = static_cast<double>(x[i]) - y[i];
    const std::vector<double> base = c.symmetric ? naive_symmetric_error(x, c.group, c.nmax)
                                                 : naive_affine_error(x, c.group, c.nmax);
    const double ratio = rms(e) / rms(base);
    std::printf("%s: rms error %.6g, naive %.6g, ratio %.4f\n", type_name(c.type), rms(e),
                rms(base), ratio);
    EXPECT_LE(ratio, c.max_ratio) << type_name(c.type);
  }
}

// Quantizing what a K-quant decodes to lands (almost) on the same values: the decoded grid is
// found again, up to the fp16 / 6-bit rounding of re-derived scales. Measured: the second round
// trip moves values by 4.4-6.7% of the first one's RMS error and leaves 93-96% of them bit-equal;
// the bound of 10% fails if re-quantization drifts as far as a fresh quantization would (100%).
TEST(Quantize, KQuantRequantizationIsStable) {
  const std::vector<float> x = test_row(256 * 1024, 18);
  const int64_t n = static_cast<int64_t>(x.size());
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    std::vector<uint8_t> q(row_bytes(t, x.size()));
    std::vector<float> y1(x.size()), y2(x.size());
    ASSERT_TRUE(quantize_row(t, x.data(), q.data(), n).ok());
    ASSERT_TRUE(dequantize_row(t, q.data(), y1.data(), n).ok());
    ASSERT_TRUE(quantize_row(t, y1.data(), q.data(), n).ok());
    ASSERT_TRUE(dequantize_row(t, q.data(), y2.data(), n).ok());
    std::vector<double> e1(x.size()), e2(x.size());
    size_t same = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      e1[i] = static_cast<double>(x[i]) - y1[i];
      e2[i] = static_cast<double>(y1[i]) - y2[i];
      same += y1[i] == y2[i];
    }
    std::printf("%s: first rms %.6g, second rms %.6g, unchanged %.4f\n", type_name(t), rms(e1),
                rms(e2), static_cast<double>(same) / x.size());
    EXPECT_LE(rms(e2), 0.1 * rms(e1)) << type_name(t);
  }
}

TEST(Quantize, KQuantZeroAndConstantBlocks) {
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    std::vector<float> x(256 * 4);
    std::fill(x.begin() + 256, x.begin() + 512, 3.0f);
    std::fill(x.begin() + 512, x.begin() + 768, -0.75f);
    // Kept well above 1e-2: below, Q4_K/Q5_K's d = range / 945 becomes an fp16 subnormal and
    // loses relative precision (a property of the format, as in llama.cpp).
    for (int i = 768; i < 1024; ++i) x[i] = (i % 2) ? 0.25f : -0.25f;
    std::vector<uint8_t> q(row_bytes(t, x.size()));
    std::vector<float> y(x.size(), 99.0f);
    ASSERT_TRUE(quantize_row(t, x.data(), q.data(), 1024).ok());
    ASSERT_TRUE(dequantize_row(t, q.data(), y.data(), 1024).ok());
    for (int i = 0; i < 256; ++i) ASSERT_EQ(y[i], 0.0f) << type_name(t) << " " << i;
    // The fp16 rounding of d and dmin (2^-11 relative each) is the only loss on these grids: a
    // value d*sc*q - dmin*m with d*sc*q = 2|x| and dmin*m = |x| (the +-c block) errs by at most
    // 3 * 2^-11 |x|; constants by 2^-11 |x|.
    for (int i = 256; i < 1024; ++i)
      ASSERT_NEAR(y[i], x[i], std::fabs(x[i]) * 3 * std::ldexp(1.0, -11)) << type_name(t) << i;
  }
}

// Non-finite or huge values in one block never touch the next block (and never crash: the
// sanitizer build runs this), for every quantizer.
TEST(Quantize, BadValuesStayInTheirBlock) {
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(), -3e38f, 1e-42f};
  const std::vector<float> good = test_row(256, 19);
  for (GgmlType t :
       {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    const uint64_t bytes = row_bytes(t, 256);
    std::vector<uint8_t> alone(bytes);
    ASSERT_TRUE(quantize_row(t, good.data(), alone.data(), 256).ok());
    for (float special : specials) {
      std::vector<float> x(512);
      for (int i = 0; i < 256; ++i) x[i] = good[i] * 1000.0f;
      x[5] = special;
      std::copy(good.begin(), good.end(), x.begin() + 256);
      std::vector<uint8_t> q(2 * bytes);
      ASSERT_TRUE(quantize_row(t, x.data(), q.data(), 512).ok());
      EXPECT_EQ(std::memcmp(q.data() + bytes, alone.data(), bytes), 0) << type_name(t);
      std::vector<float> y(512);
      ASSERT_TRUE(dequantize_row(t, q.data(), y.data(), 512).ok());
    }
  }
  std::vector<BlockQ8_K> q8k(2);
  std::vector<float> x(512, std::numeric_limits<float>::quiet_NaN());
  quantize_row_q8_K(x.data(), q8k.data(), 512);  // defined behaviour only: no crash under UBSan
}

}  // namespace
}  // namespace chimera
