// Scalar reference kernels for the types real GGUF files mix in: Q4_1, Q5_0, Q5_1 (ggml's first
// 32-blocks) and the non-linear-grid IQ4_NL (32-blocks) and IQ4_XS (256-blocks of 8 sub-blocks).
//
// The 32-block types multiply Q8 activation blocks (act_quant.h), IQ4_XS Q8_K blocks, as llama.cpp
// does. Per weight block the integer dot product is exact; the float steps, in this order, are
//   Q5_0, IQ4_NL:  acc += (d_w * d_a) * sumi
//   Q4_1, Q5_1:    acc += (d_w * d_a) * sumi;  acc += (m_w * d_a) * sum(a)
//   IQ4_XS:        acc += (d_w * d_a) * sum over sub-blocks of (ls - 32) * sumi
// one accumulator per output element, blocks in order.
#include <type_traits>

#include "gguf/quants.h"
#include "kernels/act_quant.h"
#include "kernels/matmul.h"

namespace chimera::matmul_detail {
namespace {

inline int low_nibble_value(const uint8_t* qs, int j) {
  return j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4);
}
inline int fifth_bit(const uint8_t* qh, int j) {
  return ((qh[j / 8] >> (j % 8)) & 1) << 4;
}

// Sum of a Q8 activation block's values (sum8 holds 8 x the sums of groups of 4).
inline int32_t act_block_sum(const ActBlockQ8& a) {
  int32_t s = 0;
  for (int g = 0; g < 8; ++g) s += a.sum8[g];
  return s / 8;
}

// Q4_1 / Q5_1: unsigned levels plus a min.
template <class Block>
float dot_affine(const uint8_t* w, const uint8_t* a, int64_t n) {
  constexpr bool kFiveBit = std::is_same_v<Block, BlockQ5_1>;
  const Block* wb = reinterpret_cast<const Block*>(w);
  const ActBlockQ8* ab = reinterpret_cast<const ActBlockQ8*>(a);
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < 32; ++j) {
      int q = low_nibble_value(wb[b].qs, j);
      if constexpr (kFiveBit) q |= fifth_bit(wb[b].qh, j);
      sumi += q * ab[b].qs[j];
    }
    acc += (fp16_to_f32(wb[b].d) * ab[b].d) * static_cast<float>(sumi);
    acc += (fp16_to_f32(wb[b].m) * ab[b].d) * static_cast<float>(act_block_sum(ab[b]));
  }
  return acc;
}

float dot_q5_0(const uint8_t* w, const uint8_t* a, int64_t n) {
  const BlockQ5_0* wb = reinterpret_cast<const BlockQ5_0*>(w);
  const ActBlockQ8* ab = reinterpret_cast<const ActBlockQ8*>(a);
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < 32; ++j) {
      const int q = (low_nibble_value(wb[b].qs, j) | fifth_bit(wb[b].qh, j)) - 16;
      sumi += q * ab[b].qs[j];
    }
    acc += (fp16_to_f32(wb[b].d) * ab[b].d) * static_cast<float>(sumi);
  }
  return acc;
}

float dot_iq4_nl(const uint8_t* w, const uint8_t* a, int64_t n) {
  const BlockIQ4_NL* wb = reinterpret_cast<const BlockIQ4_NL*>(w);
  const ActBlockQ8* ab = reinterpret_cast<const ActBlockQ8*>(a);
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += kIQ4Values[low_nibble_value(wb[b].qs, j)] * ab[b].qs[j];
    acc += (fp16_to_f32(wb[b].d) * ab[b].d) * static_cast<float>(sumi);
  }
  return acc;
}

float dot_iq4_xs(const uint8_t* w, const uint8_t* a, int64_t n) {
  const BlockIQ4_XS* wb = reinterpret_cast<const BlockIQ4_XS*>(w);
  const BlockQ8_K* ab = reinterpret_cast<const BlockQ8_K*>(a);
  float acc = 0;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    int32_t sumi = 0;
    for (int ib = 0; ib < kQK_K / 32; ++ib) {
      const uint8_t* qs = wb[b].qs + 16 * ib;
      const int8_t* q8 = ab[b].qs + 32 * ib;
      int32_t s = 0;
      for (int j = 0; j < 32; ++j) s += kIQ4Values[low_nibble_value(qs, j)] * q8[j];
      sumi += iq4_xs_scale(wb[b], ib) * s;
    }
    acc += (fp16_to_f32(wb[b].d) * ab[b].d) * static_cast<float>(sumi);
  }
  return acc;
}

}  // namespace

KernelFn scalar_kernel_q4_1_q5_iq4(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_1:
      return scalar_tile<dot_affine<BlockQ4_1>>;
    case GgmlType::Q5_0:
      return scalar_tile<dot_q5_0>;
    case GgmlType::Q5_1:
      return scalar_tile<dot_affine<BlockQ5_1>>;
    case GgmlType::IQ4_NL:
      return scalar_tile<dot_iq4_nl>;
    case GgmlType::IQ4_XS:
      return scalar_tile<dot_iq4_xs>;
    default:
      return nullptr;
  }
}

}  // namespace chimera::matmul_detail
