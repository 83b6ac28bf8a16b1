// Activation quantization for quantized-weight matrix multiplies (spec 1.6).
//
// Each activation row is quantized on its own, by the same scalar code on every ISA path, so a
// row's quantized form never depends on the batch it arrived in. Rounding is round-to-nearest-even
// (like llama.cpp's SIMD quantizers).
#pragma once

#include <cstdint>

#include "gguf/types.h"

namespace chimera {

// Activation block for Q8_0 / Q4_0 weights: 32 int8 values and their scale. `sum8` holds, for each
// group of 4 consecutive values, 8 x their sum: the AVX2 Q4_0 kernel multiplies the unsigned
// nibbles (0..15) and subtracts these to get (nibble - 8) products exactly.
struct ActBlockQ8 {
  int8_t qs[32];
  int32_t sum8[8];
  float d;  // an fp16-representable value (as llama.cpp's Q8_0), kept in float
  float pad_;
};
static_assert(sizeof(ActBlockQ8) == 72);

// The AVX2 Q4_0 kernel's activation layout: two consecutive Q8 blocks (b0, b1) arranged so that
// one 256-bit register of unpacked nibbles from both weight blocks multiplies them directly:
// low nibbles hold values 0..15 of a block, high nibbles values 16..31. For an odd block count
// the last pair's b1 is all zero (scale 0).
struct ActPairQ8 {
  int8_t lo[32];    // b0 values 0..15, b1 values 0..15
  int8_t hi[32];    // b0 values 16..31, b1 values 16..31
  int32_t sum8[8];  // lane m < 4: 8 x sum of b0 values 4m..4m+3 and 16+4m..16+4m+3; m >= 4: b1
  float d[8];       // b0's scale in lanes 0..3, b1's in lanes 4..7
};
static_assert(sizeof(ActPairQ8) == 128);

// Rearranges n_blocks Q8 blocks into (n_blocks + 1) / 2 pairs. Values and scales are copied, so
// the pair form multiplies to the same integers as the blocks.
void pair_act_q8(const ActBlockQ8* blocks, int64_t n_blocks, ActPairQ8* out);

// x: n values (n % 32 == 0) -> n / 32 blocks. Same d and qs as quantize_row_q8_0_act
// (gguf/quants.h): d = fp16(amax / 127), q = round-to-nearest-even(x * 127 / amax).
void quantize_act_q8(const float* x, int64_t n, ActBlockQ8* out);

// x: n values (n % 256 == 0) -> n / 256 Q8_K blocks, as quantize_row_q8_K (spec 1.6: d = max / -127
// in float, q clamped to [-127, 127], bsums = sums of 16).
void quantize_act_q8k(const float* x, int64_t n, BlockQ8_K* out);

// AVX2 versions (act_quant_avx2.cpp): bit-identical output to the two above for every input,
// NaN and infinity included (tested), just faster. Callers must check isa_supported(kAvx2).
void quantize_act_q8_avx2(const float* x, int64_t n, ActBlockQ8* out);
void quantize_act_q8k_avx2(const float* x, int64_t n, BlockQ8_K* out);

}  // namespace chimera
