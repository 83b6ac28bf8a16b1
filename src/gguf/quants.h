// Scalar reference (de)quantization of rows for the tensor types chimera computes with. These are
// the ground truth that SIMD kernels are compared against, so the order of every float operation
// is part of the contract (documented per function). quants.cpp is compiled with
// -ffp-contract=off: a fused multiply-add would change some quantizers' results.
//
// Dequantization is bit-identical to the gguf Python package (gguf.quants.dequantize, numpy
// float32) and to llama.cpp's C reference. Every product in it is exact in float32: significant
// bits are 11 for an fp16 scale, 6 for a Q4_K/Q5_K sub-block scale or min, 7 for a Q6_K int8 scale,
// and 7/4/4/5/5 for the quant of Q8_0/Q4_0/Q4_K/Q5_K/Q6_K, so no product needs more than 23 bits
// (Q6_K: 11 + 7 + 5), and products of fp16 subnormals stay far above float's smallest normal. The
// only rounding is the final `d1*q - m1` of Q4_K/Q5_K, so any association order of the products,
// and an FMA for that last step, give the same bits. SIMD kernels may rely on this.
//
// Q4_1/Q5_1 add `m` to the exact d*q (one rounding); Q5_0, IQ4_NL and IQ4_XS are exact products
// (IQ4_XS: 11 bits of d, 5 of the sub-block scale, 7 of the grid value).
//
// Quantization: F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 are bit-identical to
// gguf.quants.quantize for finite inputs (F16 NaNs differ: numpy keeps a signalling NaN's payload,
// chimera quiets it like F16C). gguf.quants cannot quantize K-quants or IQ4; Q4_K, Q5_K, Q6_K,
// IQ4_NL and IQ4_XS follow the semantics of llama.cpp's reference quantizers without an importance
// matrix (per-sub-block weighted least-squares searches of scales, sub-block scales relative to an
// fp16 super-block scale), written independently here; IQ4 is checked bit for bit against a numpy
// transcription in tests/python/test_quants.py.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/status.h"
#include "gguf/types.h"

namespace chimera {

// ---- type-generic entry points (bad input -> Status) ----

// F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q4_K, Q5_K, Q6_K, IQ4_XS
bool can_dequantize(GgmlType type);
bool can_quantize(GgmlType type);  // the same set

// Converts n elements (n >= 0, a multiple of the type's block size) of a row stored as `type`
// to float32. Unsupported types and bad n give kUnsupported / kInvalidArgument; dst untouched.
Status dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);
// Converts n float32 values to `type`, writing row_bytes(type, n) bytes to dst.
Status quantize_row(GgmlType type, const float* src, void* dst, int64_t n);

// ---- typed rows: n must be a multiple of the block size (CHIMERA_CHECKed) ----

void dequantize_row_f16(const uint16_t* x, float* y, int64_t n);
void dequantize_row_bf16(const uint16_t* x, float* y, int64_t n);
// y[j] = fp16(d) * float(qs[j])
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n);
// y[j] = fp16(d) * float(nibble - 8); low nibbles are elements 0..15, high nibbles 16..31
void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t n);
// y = (d * float(sc)) * float(q) - dmin * float(m): exact products, one rounding (see top).
void dequantize_row_q4_K(const BlockQ4_K* x, float* y, int64_t n);
void dequantize_row_q5_K(const BlockQ5_K* x, float* y, int64_t n);
// y = (d * float(scale)) * float(q - 32)
void dequantize_row_q6_K(const BlockQ6_K* x, float* y, int64_t n);
// y = d * float(q) + m (Q4_1, Q5_1; exact product, one rounding); y = d * float(q - 16) (Q5_0)
void dequantize_row_q4_1(const BlockQ4_1* x, float* y, int64_t n);
void dequantize_row_q5_0(const BlockQ5_0* x, float* y, int64_t n);
void dequantize_row_q5_1(const BlockQ5_1* x, float* y, int64_t n);
// y = d * float(kIQ4Values[q]); IQ4_XS: y = (d * float(ls - 32)) * float(kIQ4Values[q]), all exact
void dequantize_row_iq4_nl(const BlockIQ4_NL* x, float* y, int64_t n);
void dequantize_row_iq4_xs(const BlockIQ4_XS* x, float* y, int64_t n);

void quantize_row_f16(const float* x, uint16_t* y, int64_t n);   // round to nearest even
void quantize_row_bf16(const float* x, uint16_t* y, int64_t n);  // RNE, NaN forced quiet
// Weight / reference quantizer: d = amax / 127, q = roundf(x * (1/d)) (half away from zero),
// d stored as fp16 (the quantization itself uses the unrounded float 1/d).
void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n);
// max = the signed value of largest magnitude (first one), d = max / -8,
// q = min(15, trunc(x * (1/d) + 8.5)).
void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n);
// Q4_1 / Q5_1: min and max of the block, d = (max - min) / nmax, q = min(nmax, trunc((x - min) *
// (1/d) + 0.5)); Q5_0: as Q4_0 with d = max / -16, q = min(31, trunc(x * (1/d) + 16.5)).
void quantize_row_q4_1(const float* x, BlockQ4_1* y, int64_t n);
void quantize_row_q5_0(const float* x, BlockQ5_0* y, int64_t n);
void quantize_row_q5_1(const float* x, BlockQ5_1* y, int64_t n);
// Per group of 32: a weighted (x^2) least-squares scale on the IQ4 grid, searched over 15 grid
// densities; IQ4_XS then stores the 8 group scales as 6-bit multiples of an fp16 super-block
// scale and re-picks the indices against them.
void quantize_row_iq4_nl(const float* x, BlockIQ4_NL* y, int64_t n);
void quantize_row_iq4_xs(const float* x, BlockIQ4_XS* y, int64_t n);
void quantize_row_q4_K(const float* x, BlockQ4_K* y, int64_t n);
void quantize_row_q5_K(const float* x, BlockQ5_K* y, int64_t n);
void quantize_row_q6_K(const float* x, BlockQ6_K* y, int64_t n);

// ---- activation quantizers (what kernels convert activations to before integer dot products) ----

// Q8_0 for activations, in the form SIMD code computes cheaply and exactly: amax = max|x|,
// d = amax / 127 (stored as fp16), id = amax != 0 ? 127 / amax : 0, q = round-to-nearest-even(x*id)
// (as llama.cpp's AVX2 quantize_row_q8_0). Differs from quantize_row_q8_0 in the last bit of some
// q (tie rounding and 127/amax vs 1/d), so kernels must pick one and use it everywhere.
void quantize_row_q8_0_act(const float* x, BlockQ8_0* y, int64_t n);
// Q8_K (per 256 values): max = the signed value of largest magnitude (first one);
// iscale = -127 / max; q = min(127, round-to-nearest-even(iscale * x)); d = 1 / iscale (float32);
// bsums[k] = sum of q over elements 16k..16k+15. An all-zero block gives d = 0, q = 0.
void quantize_row_q8_K(const float* x, BlockQ8_K* y, int64_t n);

// ---- helpers shared with kernels ----

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block (spec 1.5).
inline void k_scale_min(const uint8_t* scales, int j, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// Sub-block ib's (0..7) signed scale (ls - 32, in [-32, 31]) of an IQ4_XS block.
inline int iq4_xs_scale(const BlockIQ4_XS& b, int ib) {
  const int lo = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F;
  const int hi = (b.scales_h >> (2 * ib)) & 3;
  return (lo | (hi << 4)) - 32;
}

// Round to nearest, ties to even, for |v| < 2^22 (the range every quantizer here needs); larger
// magnitudes and NaN give some int in [-2^22, 2^22) rather than undefined behaviour, and callers
// clamp. Same result as the SIMD round instruction in that range.
inline int nearest_int(float v) {
  float shifted = v + 12582912.0f;  // 1.5 * 2^23: the float's low mantissa bits hold round(v)
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return (bits & 0x007fffff) - 0x00400000;
}

}  // namespace chimera
