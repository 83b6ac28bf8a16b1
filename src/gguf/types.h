// ggml tensor types: ids, block layouts, row sizes, half-precision conversions.
// Block layouts follow the GGUF spec (shared/spec/ARCHITECTURES.md section 1.5).
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "core/status.h"

namespace chimera {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

struct TypeTraits {
  GgmlType type;
  const char* name;
  uint32_t block_size;  // elements per block
  uint32_t type_size;   // bytes per block
  bool supported;       // chimera can dequantize and multiply with it
};

// nullptr when the id is not a ggml type at all.
const TypeTraits* type_traits(uint32_t id);
const TypeTraits& type_traits(GgmlType t);
inline const char* type_name(GgmlType t) { return type_traits(t).name; }
std::optional<GgmlType> type_from_name(std::string_view name);  // case-insensitive
// "F32, F16, BF16, Q8_0, Q4_0, Q4_1, ...": the supported types, for error messages.
const char* supported_type_names();

// Bytes of a row of n elements; n must be a multiple of the block size (checked by callers).
inline uint64_t row_bytes(GgmlType t, uint64_t n) {
  const TypeTraits& tt = type_traits(t);
  return n / tt.block_size * tt.type_size;
}

// ---- half precision ----
float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);  // round to nearest even, like F16C / numpy
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_bf16(float f);  // round to nearest even, NaN kept quiet (as ggml)

// ---- block layouts ----
constexpr int kQK4_0 = 32;
constexpr int kQK8_0 = 32;
constexpr int kQK4_1 = 32;
constexpr int kQK5_0 = 32;
constexpr int kQK5_1 = 32;
constexpr int kQK4_NL = 32;
constexpr int kQK_K = 256;
constexpr int kKScaleSize = 12;

struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK4_0 / 2];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK8_0];
};
// Q4_1, Q5_0, Q5_1: element j < 16 is the low nibble of qs[j], element j + 16 its high nibble;
// Q5's fifth bit of element j is bit j of qh (little-endian 32 bits).
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK4_1 / 2];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK5_0 / 2];
};
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK5_1 / 2];
};
// IQ4_NL / IQ4_XS: 4-bit indices into kIQ4Values (a non-uniform grid), nibbles as Q4_0.
inline constexpr int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[kQK4_NL / 2];
};
// Eight sub-blocks of 32, each with a 6-bit scale ls (stored + 32): low 4 bits in scales_l
// (sub-block 2k in the low nibble of byte k, 2k+1 in the high one), high 2 bits at bits 2ib, 2ib+1
// of scales_h. Sub-block ib's 32 values are qs[16ib .. 16ib + 15], nibbles as Q4_0.
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[kQK_K / 64];
  uint8_t qs[kQK_K / 2];
};
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qs[kQK_K / 2];
};
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
// Activation blocks for K-quant dot products (never stored in files by us).
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockIQ4_NL) == 18);
static_assert(sizeof(BlockIQ4_XS) == 136);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

}  // namespace chimera
