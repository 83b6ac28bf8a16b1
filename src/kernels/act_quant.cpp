#include "kernels/act_quant.h"

#include <cmath>

namespace chimera {
namespace {

// Clamps to [-127, 127] (NaN -> 0, so bad input cannot reach an undefined float->int cast), then
// rounds to nearest, ties to even, without a libm call: adding 1.5 * 2^23 pushes the fraction bits
// out in the default rounding mode.
inline int8_t quantize_value(float v) {
  if (!(v > -127.0f)) v = (v != v) ? 0.0f : -127.0f;
  if (v > 127.0f) v = 127.0f;
  const float magic = 12582912.0f;
  return static_cast<int8_t>(static_cast<int32_t>((v + magic) - magic));
}

}  // namespace

void quantize_act_q8(const float* x, int64_t n, ActBlockQ8* out) {
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = amax != 0 ? 127.0f / amax : 0.0f;  // as gguf/quants.h quantize_row_q8_0_act
    ActBlockQ8& blk = out[b];
    blk.d = fp16_to_f32(f32_to_fp16(d));
    blk.pad_ = 0;
    for (int j = 0; j < 32; ++j) {
      blk.qs[j] = quantize_value(xb[j] * id);
    }
    for (int g = 0; g < 8; ++g) {
      blk.sum8[g] = 8 * (blk.qs[4 * g] + blk.qs[4 * g + 1] + blk.qs[4 * g + 2] + blk.qs[4 * g + 3]);
    }
  }
}

void pair_act_q8(const ActBlockQ8* blocks, int64_t n_blocks, ActPairQ8* out) {
  for (int64_t p = 0; p < (n_blocks + 1) / 2; ++p) {
    ActPairQ8& pair = out[p];
    for (int h = 0; h < 2; ++h) {
      const int64_t b = 2 * p + h;
      const bool present = b < n_blocks;
      for (int k = 0; k < 16; ++k) {
        pair.lo[16 * h + k] = present ? blocks[b].qs[k] : 0;
        pair.hi[16 * h + k] = present ? blocks[b].qs[16 + k] : 0;
      }
      for (int m = 0; m < 4; ++m) {
        // sum8[g] is 8 x the sum of values 4g..4g+3.
        pair.sum8[4 * h + m] = present ? blocks[b].sum8[m] + blocks[b].sum8[4 + m] : 0;
        pair.d[4 * h + m] = present ? blocks[b].d : 0.0f;
      }
    }
  }
}

void quantize_act_q8k(const float* x, int64_t n, BlockQ8_K* out) {
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const float* xb = x + b * kQK_K;
    BlockQ8_K& blk = out[b];
    float max = 0, amax = 0;
    for (int j = 0; j < kQK_K; ++j) {
      const float ax = std::fabs(xb[j]);
      if (ax > amax) {
        amax = ax;
        max = xb[j];
      }
    }
    if (amax == 0) {
      blk.d = 0;
      for (int j = 0; j < kQK_K; ++j) blk.qs[j] = 0;
      for (int g = 0; g < kQK_K / 16; ++g) blk.bsums[g] = 0;
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQK_K; ++j) {
      blk.qs[j] = quantize_value(iscale * xb[j]);
    }
    for (int g = 0; g < kQK_K / 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += blk.qs[16 * g + j];
      blk.bsums[g] = static_cast<int16_t>(sum);
    }
    blk.d = 1.0f / iscale;
  }
}

}  // namespace chimera
