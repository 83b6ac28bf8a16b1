#include "gguf/quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace chimera {
namespace {

// Below this a group of values is treated as all-zero by the K-quant searches.
constexpr float kGroupMaxEps = 1e-15f;

int64_t checked_blocks(int64_t n, int block, const char* what) {
  CHIMERA_CHECK(n >= 0 && n % block == 0, what, ": n = ", n, " is not a multiple of ", block);
  return n / block;
}

// Clamps a float holding an integer value to [lo, hi]; NaN becomes `nan_value`. Avoids the
// undefined behaviour of converting an out-of-range float to int.
int clamp_float_to_int(float v, int lo, int hi, int nan_value) {
  if (std::isnan(v)) return nan_value;
  if (v < static_cast<float>(lo)) return lo;
  if (v > static_cast<float>(hi)) return hi;
  return static_cast<int>(v);
}

int clamp_int(int v, int lo, int hi) {
  return std::min(hi, std::max(lo, v));
}

// The first value of largest magnitude, with its sign (0 for an empty or all-zero group).
float signed_absmax(const float* x, int n) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a > amax) {
      amax = a;
      max = x[i];
    }
  }
  return max;
}

// Nibble j (< 16: low nibble of qs[j], else high nibble of qs[j - 16]) of a 32-block.
inline int nibble(const uint8_t* qs, int j) {
  return j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4);
}
// Q5's fifth bit of element j.
inline int fifth_bit(const uint8_t* qh, int j) {
  return ((qh[j / 8] >> (j % 8)) & 1) << 4;
}

// ---- K-quant searches ----

// x ≈ scale * L + offset with integer levels L in [0, nmax] and offset <= 0.
struct AffineFit {
  float scale;
  float offset;
};

// Weighted least-squares fit of an affine grid to n <= 32 values. Starts from the grid spanning
// [min(x, 0), max(x)], then tries nstep + 1 grid densities (nmax + rmin + rdelta * k levels over
// the same span); for each it assigns levels, solves the 2x2 normal equations for (scale, offset)
// and keeps the candidate with the smallest weighted squared error. Levels of the winner go to L.
AffineFit fit_affine_grid(const float* x, const float* w, int n, int nmax, float rmin, float rdelta,
                          int nstep, uint8_t* L) {
  float lo = x[0], hi = x[0];
  float sum_w = 0, sum_x = 0;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  lo = std::min(lo, 0.0f);  // the offset never exceeds 0: a grid always reaches down to <= 0
  if (!(hi > lo)) {         // constant group (or NaN): every value is -offset
    std::fill(L, L + n, 0);
    return {0.0f, lo};
  }
  const float span = hi - lo;

  AffineFit best{span / static_cast<float>(nmax), lo};
  float best_error = 0;
  {
    const float iscale = static_cast<float>(nmax) / span;
    best.scale = 1.0f / iscale;
    for (int i = 0; i < n; ++i) {
      L[i] = static_cast<uint8_t>(clamp_int(nearest_int(iscale * (x[i] - lo)), 0, nmax));
      const float diff = best.scale * L[i] + lo - x[i];
      best_error += w[i] * diff * diff;
    }
  }

  uint8_t cand[32];
  CHIMERA_CHECK(n <= 32, "fit_affine_grid: group of ", n);
  for (int step = 0; step <= nstep; ++step) {
    const float iscale =
        (rmin + rdelta * static_cast<float>(step) + static_cast<float>(nmax)) / span;
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * (x[i] - lo)), 0, nmax);
      cand[i] = static_cast<uint8_t>(l);
      const float fl = static_cast<float>(l);
      sum_l += w[i] * fl;
      sum_l2 += w[i] * fl * fl;
      sum_xl += w[i] * fl * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0)) continue;
    float scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float offset = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (offset > 0) {  // pin the offset at 0 and refit the scale alone
      offset = 0;
      scale = sum_xl / sum_l2;
    }
    float error = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = scale * cand[i] + offset - x[i];
      error += w[i] * diff * diff;
    }
    if (error < best_error) {
      std::copy(cand, cand + n, L);
      best_error = error;
      best = {scale, offset};
    }
  }
  return best;
}

// Symmetric grid x ≈ scale * l, l in [-nmax, nmax - 1], weights x^2: returns the scale that
// maximises (Σ w x l)^2 / Σ w l^2 (i.e. minimises the weighted error at the optimal scale) over
// 19 grid densities around the one mapping the largest-magnitude value to -nmax.
float fit_symmetric_grid(const float* x, int n, int nmax) {
  const float max = signed_absmax(x, n);
  if (std::fabs(max) < kGroupMaxEps) return 0.0f;
  auto sums = [&](float iscale, float* sum_lx, float* sum_l2) {
    *sum_lx = 0;
    *sum_l2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      const float fl = static_cast<float>(l);
      *sum_lx += w * x[i] * fl;
      *sum_l2 += w * fl * fl;
    }
  };
  float sum_lx, sum_l2;
  sums(-static_cast<float>(nmax) / max, &sum_lx, &sum_l2);
  float scale = sum_l2 > 0 ? sum_lx / sum_l2 : 0.0f;
  float best = scale * sum_lx;
  for (int k = -9; k <= 9; ++k) {
    if (k == 0) continue;
    sums(-(static_cast<float>(nmax) + 0.1f * static_cast<float>(k)) / max, &sum_lx, &sum_l2);
    if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
      scale = sum_lx / sum_l2;
      best = scale * sum_lx;
    }
  }
  return scale;
}

// Shared by Q4_K and Q5_K: fits the 8 sub-blocks of 32, quantizes their scales and mins to 6 bits
// relative to fp16 super-block scales, then re-assigns every level against the stored values.
// Writes d, dmin, scales[12] and the 256 levels (0..nmax) to L.
void quantize_k_superblock(const float* x, int nmax, float rmin, float rdelta, int nstep,
                           uint16_t* d_out, uint16_t* dmin_out, uint8_t* packed_scales,
                           uint8_t* L) {
  float scales[8], mins[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float rms = std::sqrt(sum_x2 / 32);
    // Weight large-magnitude values more: their errors matter most in dot products.
    float w[32];
    for (int l = 0; l < 32; ++l) w[l] = rms + std::fabs(xs[l]);
    const AffineFit fit = fit_affine_grid(xs, w, 32, nmax, rmin, rdelta, nstep, L + 32 * j);
    scales[j] = fit.scale;
    mins[j] = -fit.offset;
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  std::memset(packed_scales, 0, kKScaleSize);
  for (int j = 0; j < 8; ++j) {
    const auto ls = static_cast<uint8_t>(clamp_int(nearest_int(inv_scale * scales[j]), 0, 63));
    const auto lm = static_cast<uint8_t>(clamp_int(nearest_int(inv_min * mins[j]), 0, 63));
    if (j < 4) {
      packed_scales[j] = ls;
      packed_scales[j + 4] = lm;
    } else {  // low 4 bits in bytes 8..11, high 2 bits in the top of bytes 0..7
      packed_scales[j + 4] = static_cast<uint8_t>((ls & 0x0F) | ((lm & 0x0F) << 4));
      packed_scales[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      packed_scales[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  *d_out = f32_to_fp16(max_scale / 63.0f);
  *dmin_out = f32_to_fp16(max_min / 63.0f);
  const float d = fp16_to_f32(*d_out);
  const float dmin = fp16_to_f32(*dmin_out);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    k_scale_min(packed_scales, j, &sc, &m);
    const float d1 = d * static_cast<float>(sc);
    const float m1 = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      // With a zero step every level decodes to -m1; level 0 keeps the block canonical.
      const int q = d1 != 0 ? nearest_int((x[32 * j + l] + m1) / d1) : 0;
      L[32 * j + l] = static_cast<uint8_t>(clamp_int(q, 0, nmax));
    }
  }
}

}  // namespace

// ---- dequantization ----

void dequantize_row_f16(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_f32(x[i]);
}

void dequantize_row_bf16(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(x[i]);
}

void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK8_0, "dequantize_row_q8_0");
  for (int64_t b = 0; b < nb; ++b, y += kQK8_0) {
    const float d = fp16_to_f32(x[b].d);
    for (int j = 0; j < kQK8_0; ++j) y[j] = d * static_cast<float>(x[b].qs[j]);
  }
}

void dequantize_row_q4_0(const BlockQ4_0* x, float* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK4_0, "dequantize_row_q4_0");
  for (int64_t b = 0; b < nb; ++b, y += kQK4_0) {
    const float d = fp16_to_f32(x[b].d);
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      y[j] = d * static_cast<float>((x[b].qs[j] & 0x0F) - 8);
      y[j + kQK4_0 / 2] = d * static_cast<float>((x[b].qs[j] >> 4) - 8);
    }
  }
}

void dequantize_row_q4_1(const BlockQ4_1* x, float* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK4_1, "dequantize_row_q4_1");
  for (int64_t b = 0; b < nb; ++b, y += kQK4_1) {
    const float d = fp16_to_f32(x[b].d);
    const float m = fp16_to_f32(x[b].m);
    for (int j = 0; j < kQK4_1; ++j) y[j] = d * static_cast<float>(nibble(x[b].qs, j)) + m;
  }
}

void dequantize_row_q5_0(const BlockQ5_0* x, float* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK5_0, "dequantize_row_q5_0");
  for (int64_t b = 0; b < nb; ++b, y += kQK5_0) {
    const float d = fp16_to_f32(x[b].d);
    for (int j = 0; j < kQK5_0; ++j)
      y[j] = d * static_cast<float>((nibble(x[b].qs, j) | fifth_bit(x[b].qh, j)) - 16);
  }
}

void dequantize_row_q5_1(const BlockQ5_1* x, float* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK5_1, "dequantize_row_q5_1");
  for (int64_t b = 0; b < nb; ++b, y += kQK5_1) {
    const float d = fp16_to_f32(x[b].d);
    const float m = fp16_to_f32(x[b].m);
    for (int j = 0; j < kQK5_1; ++j)
      y[j] = d * static_cast<float>(nibble(x[b].qs, j) | fifth_bit(x[b].qh, j)) + m;
  }
}

void dequantize_row_iq4_nl(const BlockIQ4_NL* x, float* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK4_NL, "dequantize_row_iq4_nl");
  for (int64_t b = 0; b < nb; ++b, y += kQK4_NL) {
    const float d = fp16_to_f32(x[b].d);
    for (int j = 0; j < kQK4_NL; ++j) y[j] = d * static_cast<float>(kIQ4Values[nibble(x[b].qs, j)]);
  }
}

void dequantize_row_iq4_xs(const BlockIQ4_XS* x, float* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK_K, "dequantize_row_iq4_xs");
  for (int64_t b = 0; b < nb; ++b) {
    const float d = fp16_to_f32(x[b].d);
    for (int ib = 0; ib < kQK_K / 32; ++ib, y += 32) {
      const float dl = d * static_cast<float>(iq4_xs_scale(x[b], ib));
      for (int j = 0; j < 32; ++j)
        y[j] = dl * static_cast<float>(kIQ4Values[nibble(x[b].qs + 16 * ib, j)]);
    }
  }
}

void dequantize_row_q4_K(const BlockQ4_K* x, float* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK_K, "dequantize_row_q4_K");
  for (int64_t b = 0; b < nb; ++b) {
    const float d = fp16_to_f32(x[b].d);
    const float dmin = fp16_to_f32(x[b].dmin);
    const uint8_t* q = x[b].qs;
    for (int c = 0; c < 4; ++c, q += 32) {  // chunk c: sub-blocks 2c (low nibbles), 2c+1 (high)
      uint8_t sc, m;
      k_scale_min(x[b].scales, 2 * c, &sc, &m);
      const float d_lo = d * static_cast<float>(sc);
      const float m_lo = dmin * static_cast<float>(m);
      k_scale_min(x[b].scales, 2 * c + 1, &sc, &m);
      const float d_hi = d * static_cast<float>(sc);
      const float m_hi = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        const float p = d_lo * static_cast<float>(q[l] & 0x0F);
        *y++ = p - m_lo;
      }
      for (int l = 0; l < 32; ++l) {
        const float p = d_hi * static_cast<float>(q[l] >> 4);
        *y++ = p - m_hi;
      }
    }
  }
}

void dequantize_row_q5_K(const BlockQ5_K* x, float* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK_K, "dequantize_row_q5_K");
  for (int64_t b = 0; b < nb; ++b) {
    const float d = fp16_to_f32(x[b].d);
    const float dmin = fp16_to_f32(x[b].dmin);
    const uint8_t* q = x[b].qs;
    const uint8_t* qh = x[b].qh;
    for (int c = 0; c < 4; ++c, q += 32) {
      uint8_t sc, m;
      k_scale_min(x[b].scales, 2 * c, &sc, &m);
      const float d_lo = d * static_cast<float>(sc);
      const float m_lo = dmin * static_cast<float>(m);
      k_scale_min(x[b].scales, 2 * c + 1, &sc, &m);
      const float d_hi = d * static_cast<float>(sc);
      const float m_hi = dmin * static_cast<float>(m);
      const uint8_t bit_lo = static_cast<uint8_t>(1u << (2 * c));
      const uint8_t bit_hi = static_cast<uint8_t>(1u << (2 * c + 1));
      for (int l = 0; l < 32; ++l) {
        const int v = (q[l] & 0x0F) + ((qh[l] & bit_lo) ? 16 : 0);
        const float p = d_lo * static_cast<float>(v);
        *y++ = p - m_lo;
      }
      for (int l = 0; l < 32; ++l) {
        const int v = (q[l] >> 4) + ((qh[l] & bit_hi) ? 16 : 0);
        const float p = d_hi * static_cast<float>(v);
        *y++ = p - m_hi;
      }
    }
  }
}

void dequantize_row_q6_K(const BlockQ6_K* x, float* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK_K, "dequantize_row_q6_K");
  for (int64_t b = 0; b < nb; ++b) {
    const float d = fp16_to_f32(x[b].d);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = x[b].ql + 64 * half;
      const uint8_t* qh = x[b].qh + 32 * half;
      const int8_t* sc = x[b].scales + 8 * half;
      float* out = y + 128 * half;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        out[l] = (d * static_cast<float>(sc[is + 0])) * static_cast<float>(q1);
        out[l + 32] = (d * static_cast<float>(sc[is + 2])) * static_cast<float>(q2);
        out[l + 64] = (d * static_cast<float>(sc[is + 4])) * static_cast<float>(q3);
        out[l + 96] = (d * static_cast<float>(sc[is + 6])) * static_cast<float>(q4);
      }
    }
    y += kQK_K;
  }
}

// ---- quantization ----

void quantize_row_f16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = f32_to_fp16(x[i]);
}

void quantize_row_bf16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = f32_to_bf16(x[i]);
}

void quantize_row_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK8_0, "quantize_row_q8_0");
  for (int64_t b = 0; b < nb; ++b, x += kQK8_0) {
    float amax = 0;
    for (int j = 0; j < kQK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[b].d = f32_to_fp16(d);
    for (int j = 0; j < kQK8_0; ++j)
      y[b].qs[j] = static_cast<int8_t>(clamp_float_to_int(std::round(x[j] * id), -128, 127, 0));
  }
}

void quantize_row_q8_0_act(const float* x, BlockQ8_0* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK8_0, "quantize_row_q8_0_act");
  for (int64_t b = 0; b < nb; ++b, x += kQK8_0) {
    float amax = 0;
    for (int j = 0; j < kQK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float id = amax != 0 ? 127.0f / amax : 0.0f;
    y[b].d = f32_to_fp16(amax / 127.0f);
    for (int j = 0; j < kQK8_0; ++j)
      y[b].qs[j] = static_cast<int8_t>(clamp_int(nearest_int(x[j] * id), -127, 127));
  }
}

void quantize_row_q4_0(const float* x, BlockQ4_0* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK4_0, "quantize_row_q4_0");
  for (int64_t b = 0; b < nb; ++b, x += kQK4_0) {
    const float max = signed_absmax(x, kQK4_0);
    const float d = max / -8.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[b].d = f32_to_fp16(d);
    uint8_t q[kQK4_0];
    for (int j = 0; j < kQK4_0; ++j) {
      const float scaled = x[j] * id;  // rounded on its own, as numpy does: no FMA
      const float shifted = scaled + 8.5f;
      q[j] = static_cast<uint8_t>(clamp_float_to_int(std::trunc(shifted), 0, 15, 8));
    }
    for (int j = 0; j < kQK4_0 / 2; ++j)
      y[b].qs[j] = static_cast<uint8_t>(q[j] | (q[j + kQK4_0 / 2] << 4));
  }
}

namespace {

// Q4_1 / Q5_1: d = (max - min) / nmax, id = 1 / d (0 when d is 0), q = min(nmax, trunc((x - min)
// * id + 0.5)); d and min stored as fp16 (the levels use the unrounded float values).
void quantize_affine_block(const float* x, int nmax, uint16_t* d_out, uint16_t* m_out, uint8_t* q) {
  float min = std::numeric_limits<float>::max(), max = -std::numeric_limits<float>::max();
  for (int j = 0; j < 32; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / static_cast<float>(nmax);
  const float id = d != 0 ? 1.0f / d : 0.0f;
  *d_out = f32_to_fp16(d);
  *m_out = f32_to_fp16(min);
  for (int j = 0; j < 32; ++j) {
    const float scaled = (x[j] - min) * id;  // rounded on its own, as numpy does: no FMA
    q[j] = static_cast<uint8_t>(clamp_float_to_int(std::trunc(scaled + 0.5f), 0, nmax, 0));
  }
}

// Packs 32 levels (0..31) into Q5 low nibbles and fifth bits.
void pack_q5(const uint8_t* q, uint8_t* qs, uint8_t* qh) {
  std::memset(qh, 0, 4);
  for (int j = 0; j < 16; ++j)
    qs[j] = static_cast<uint8_t>((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
  for (int j = 0; j < 32; ++j) qh[j / 8] |= static_cast<uint8_t>((q[j] >> 4) << (j % 8));
}

// ---- IQ4 (non-linear grid) searches ----

// The grid index whose value is nearest to v (ties to the upper index; values beyond the ends go
// to the end indices). The comparison `v - lo < hi - v` is done in float, as the reference does.
int nearest_iq4_index(float v) {
  if (v <= kIQ4Values[0]) return 0;
  if (v >= kIQ4Values[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (v < kIQ4Values[mid]) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  return v - static_cast<float>(kIQ4Values[lo]) < static_cast<float>(kIQ4Values[hi]) - v ? lo : hi;
}

// Scale of one group of 32 values on the IQ4 grid, weights x^2: starts from the scale mapping
// the largest-magnitude value onto -127, takes its least-squares scale (Σ w q x / Σ w q^2), then
// tries 15 grid densities (iscale = (k - 127) / max, k = -7..7) and keeps the one maximising
// (Σ w q x)^2 / Σ w q^2. Returns 0 for an all-(near-)zero group.
float fit_iq4_group(const float* x) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j) {
    const float a = std::fabs(x[j]);
    if (a > amax) {
      amax = a;
      max = x[j];
    }
  }
  if (amax < kGroupMaxEps) return 0.0f;
  auto sums = [&](float iscale, float* sum_qx, float* sum_q2) {
    *sum_qx = 0;
    *sum_q2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = kIQ4Values[nearest_iq4_index(iscale * x[j])];
      const float w = x[j] * x[j];
      *sum_qx += w * q * x[j];
      *sum_q2 += w * q * q;
    }
  };
  const float d0 = -max / static_cast<float>(kIQ4Values[0]);
  float sum_qx, sum_q2;
  sums(1.0f / d0, &sum_qx, &sum_q2);
  float d = sum_qx / sum_q2;
  float best = d * sum_qx;
  for (int k = -7; k <= 7; ++k) {
    sums(static_cast<float>(k + kIQ4Values[0]) / max, &sum_qx, &sum_q2);
    if (sum_q2 > 0 && sum_qx * sum_qx > best * sum_q2) {
      d = sum_qx / sum_q2;
      best = d * sum_qx;
    }
  }
  return d;
}

// 32 grid indices for x at step `scale` (0 maps everything to the index nearest 0), packed.
void pack_iq4_group(const float* x, float scale, uint8_t* qs) {
  const float id = scale != 0 ? 1.0f / scale : 0.0f;
  uint8_t L[32];
  for (int j = 0; j < 32; ++j) L[j] = static_cast<uint8_t>(nearest_iq4_index(id * x[j]));
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
}

}  // namespace

void quantize_row_q4_1(const float* x, BlockQ4_1* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK4_1, "quantize_row_q4_1");
  for (int64_t b = 0; b < nb; ++b, x += kQK4_1) {
    uint8_t q[32];
    quantize_affine_block(x, 15, &y[b].d, &y[b].m, q);
    for (int j = 0; j < 16; ++j) y[b].qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
  }
}

void quantize_row_q5_0(const float* x, BlockQ5_0* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK5_0, "quantize_row_q5_0");
  for (int64_t b = 0; b < nb; ++b, x += kQK5_0) {
    const float max = signed_absmax(x, kQK5_0);
    const float d = max / -16.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[b].d = f32_to_fp16(d);
    uint8_t q[32];
    for (int j = 0; j < 32; ++j) {
      const float scaled = x[j] * id;  // no FMA, as numpy
      q[j] = static_cast<uint8_t>(clamp_float_to_int(std::trunc(scaled + 16.5f), 0, 31, 16));
    }
    pack_q5(q, y[b].qs, y[b].qh);
  }
}

void quantize_row_q5_1(const float* x, BlockQ5_1* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK5_1, "quantize_row_q5_1");
  for (int64_t b = 0; b < nb; ++b, x += kQK5_1) {
    uint8_t q[32];
    quantize_affine_block(x, 31, &y[b].d, &y[b].m, q);
    pack_q5(q, y[b].qs, y[b].qh);
  }
}

void quantize_row_iq4_nl(const float* x, BlockIQ4_NL* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK4_NL, "quantize_row_iq4_nl");
  for (int64_t b = 0; b < nb; ++b, x += kQK4_NL) {
    const float scale = fit_iq4_group(x);
    y[b].d = f32_to_fp16(scale);
    pack_iq4_group(x, scale, y[b].qs);  // levels against the unrounded scale
  }
}

void quantize_row_iq4_xs(const float* x, BlockIQ4_XS* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK_K, "quantize_row_iq4_xs");
  for (int64_t b = 0; b < nb; ++b, x += kQK_K) {
    float scales[8];
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
      scales[ib] = fit_iq4_group(x + 32 * ib);
      if (std::fabs(scales[ib]) > amax_scale) {
        amax_scale = std::fabs(scales[ib]);
        max_scale = scales[ib];
      }
    }
    // Sub-block scales as 6-bit multiples (-32..31) of d, the largest-magnitude one at -32.
    const float d = -max_scale / 32.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[b].d = f32_to_fp16(d);
    y[b].scales_h = 0;
    std::memset(y[b].scales_l, 0, sizeof(y[b].scales_l));
    for (int ib = 0; ib < 8; ++ib) {
      const int l = clamp_int(nearest_int(id * scales[ib]), -32, 31);
      pack_iq4_group(x + 32 * ib, d * static_cast<float>(l), y[b].qs + 16 * ib);
      const int stored = l + 32;
      y[b].scales_l[ib / 2] |= static_cast<uint8_t>((stored & 0x0F) << (4 * (ib % 2)));
      y[b].scales_h |= static_cast<uint16_t>((stored >> 4) << (2 * ib));
    }
  }
}

void quantize_row_q4_K(const float* x, BlockQ4_K* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK_K, "quantize_row_q4_K");
  uint8_t L[kQK_K];
  for (int64_t b = 0; b < nb; ++b, x += kQK_K) {
    quantize_k_superblock(x, 15, -1.0f, 0.1f, 20, &y[b].d, &y[b].dmin, y[b].scales, L);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        y[b].qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
  }
}

void quantize_row_q5_K(const float* x, BlockQ5_K* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK_K, "quantize_row_q5_K");
  uint8_t L[kQK_K];
  for (int64_t b = 0; b < nb; ++b, x += kQK_K) {
    quantize_k_superblock(x, 31, -0.5f, 0.1f, 15, &y[b].d, &y[b].dmin, y[b].scales, L);
    std::memset(y[b].qh, 0, sizeof(y[b].qh));
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
        y[b].qs[32 * c + l] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
        y[b].qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
  }
}

void quantize_row_q6_K(const float* x, BlockQ6_K* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK_K, "quantize_row_q6_K");
  for (int64_t b = 0; b < nb; ++b, x += kQK_K) {
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int s = 0; s < 16; ++s) {
      scales[s] = fit_symmetric_grid(x + 16 * s, 16, 32);
      if (std::fabs(scales[s]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[s]);
        max_scale = scales[s];
      }
    }
    uint8_t L[kQK_K];
    if (max_abs_scale < kGroupMaxEps) {  // all (near) zero: d = 0, every value decodes to 0
      std::memset(&y[b], 0, sizeof(y[b]));
      continue;
    }
    const float iscale = -128.0f / max_scale;
    y[b].d = f32_to_fp16(1.0f / iscale);
    for (int s = 0; s < 16; ++s)
      y[b].scales[s] = static_cast<int8_t>(clamp_int(nearest_int(iscale * scales[s]), -128, 127));
    const float d = fp16_to_f32(y[b].d);
    for (int s = 0; s < 16; ++s) {
      const float d1 = d * static_cast<float>(y[b].scales[s]);
      for (int l = 0; l < 16; ++l) {
        const int q = d1 != 0 ? nearest_int(x[16 * s + l] / d1) : 0;
        L[16 * s + l] = static_cast<uint8_t>(clamp_int(q, -32, 31) + 32);
      }
    }
    // Layout (spec 1.5): per half of 128, ql holds low nibbles of elements l, l+32 (low) and
    // l+64, l+96 (high); qh holds the 2 high bits of all four.
    for (int half = 0; half < 2; ++half) {
      const uint8_t* Lh = L + 128 * half;
      uint8_t* ql = y[b].ql + 64 * half;
      uint8_t* qh = y[b].qh + 32 * half;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((Lh[l] & 0x0F) | ((Lh[l + 64] & 0x0F) << 4));
        ql[l + 32] = static_cast<uint8_t>((Lh[l + 32] & 0x0F) | ((Lh[l + 96] & 0x0F) << 4));
        qh[l] = static_cast<uint8_t>((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                     ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
      }
    }
  }
}

void quantize_row_q8_K(const float* x, BlockQ8_K* y, int64_t n) {
  const int64_t nb = checked_blocks(n, kQK_K, "quantize_row_q8_K");
  for (int64_t b = 0; b < nb; ++b, x += kQK_K) {
    const float max = signed_absmax(x, kQK_K);
    if (max == 0) {
      std::memset(&y[b], 0, sizeof(y[b]));
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQK_K; ++j)
      y[b].qs[j] = static_cast<int8_t>(clamp_int(nearest_int(iscale * x[j]), -128, 127));
    for (int k = 0; k < kQK_K / 16; ++k) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += y[b].qs[16 * k + j];
      y[b].bsums[k] = static_cast<int16_t>(sum);
    }
    y[b].d = 1.0f / iscale;
  }
}

// ---- type-generic entry points ----

bool can_dequantize(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::IQ4_NL:
    case GgmlType::IQ4_XS:
      return true;
    default:
      return false;
  }
}

bool can_quantize(GgmlType type) {
  return can_dequantize(type);
}

namespace {

Status check_row(GgmlType type, int64_t n, const char* op) {
  const TypeTraits* tt = type_traits(static_cast<uint32_t>(type));
  if (tt == nullptr)
    return Error(ErrorCode::kUnsupported, op, ": unknown tensor type id ",
                 static_cast<uint32_t>(type), " (supported: ", supported_type_names(), ")");
  if (!can_dequantize(type))
    return Error(ErrorCode::kUnsupported, op, ": tensor type ", tt->name,
                 " is not supported (supported: ", supported_type_names(), ")");
  if (n < 0 || n % tt->block_size != 0)
    return Error(ErrorCode::kInvalidArgument, op, ": row of ", n, " elements is not a multiple of ",
                 tt->name, "'s block size ", tt->block_size);
  return Status::Ok();
}

}  // namespace

Status dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  CHIMERA_RETURN_IF_ERROR(check_row(type, n, "dequantize"));
  switch (type) {
    case GgmlType::F32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      break;
    case GgmlType::F16:
      dequantize_row_f16(static_cast<const uint16_t*>(src), dst, n);
      break;
    case GgmlType::BF16:
      dequantize_row_bf16(static_cast<const uint16_t*>(src), dst, n);
      break;
    case GgmlType::Q8_0:
      dequantize_row_q8_0(static_cast<const BlockQ8_0*>(src), dst, n);
      break;
    case GgmlType::Q4_0:
      dequantize_row_q4_0(static_cast<const BlockQ4_0*>(src), dst, n);
      break;
    case GgmlType::Q4_K:
      dequantize_row_q4_K(static_cast<const BlockQ4_K*>(src), dst, n);
      break;
    case GgmlType::Q5_K:
      dequantize_row_q5_K(static_cast<const BlockQ5_K*>(src), dst, n);
      break;
    case GgmlType::Q6_K:
      dequantize_row_q6_K(static_cast<const BlockQ6_K*>(src), dst, n);
      break;
    case GgmlType::Q4_1:
      dequantize_row_q4_1(static_cast<const BlockQ4_1*>(src), dst, n);
      break;
    case GgmlType::Q5_0:
      dequantize_row_q5_0(static_cast<const BlockQ5_0*>(src), dst, n);
      break;
    case GgmlType::Q5_1:
      dequantize_row_q5_1(static_cast<const BlockQ5_1*>(src), dst, n);
      break;
    case GgmlType::IQ4_NL:
      dequantize_row_iq4_nl(static_cast<const BlockIQ4_NL*>(src), dst, n);
      break;
    case GgmlType::IQ4_XS:
      dequantize_row_iq4_xs(static_cast<const BlockIQ4_XS*>(src), dst, n);
      break;
    default:
      CHIMERA_CHECK(false, "dequantize_row: type ", type_name(type), " passed check_row");
  }
  return Status::Ok();
}

Status quantize_row(GgmlType type, const float* src, void* dst, int64_t n) {
  CHIMERA_RETURN_IF_ERROR(check_row(type, n, "quantize"));
  switch (type) {
    case GgmlType::F32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      break;
    case GgmlType::F16:
      quantize_row_f16(src, static_cast<uint16_t*>(dst), n);
      break;
    case GgmlType::BF16:
      quantize_row_bf16(src, static_cast<uint16_t*>(dst), n);
      break;
    case GgmlType::Q8_0:
      quantize_row_q8_0(src, static_cast<BlockQ8_0*>(dst), n);
      break;
    case GgmlType::Q4_0:
      quantize_row_q4_0(src, static_cast<BlockQ4_0*>(dst), n);
      break;
    case GgmlType::Q4_K:
      quantize_row_q4_K(src, static_cast<BlockQ4_K*>(dst), n);
      break;
    case GgmlType::Q5_K:
      quantize_row_q5_K(src, static_cast<BlockQ5_K*>(dst), n);
      break;
    case GgmlType::Q6_K:
      quantize_row_q6_K(src, static_cast<BlockQ6_K*>(dst), n);
      break;
    case GgmlType::Q4_1:
      quantize_row_q4_1(src, static_cast<BlockQ4_1*>(dst), n);
      break;
    case GgmlType::Q5_0:
      quantize_row_q5_0(src, static_cast<BlockQ5_0*>(dst), n);
      break;
    case GgmlType::Q5_1:
      quantize_row_q5_1(src, static_cast<BlockQ5_1*>(dst), n);
      break;
    case GgmlType::IQ4_NL:
      quantize_row_iq4_nl(src, static_cast<BlockIQ4_NL*>(dst), n);
      break;
    case GgmlType::IQ4_XS:
      quantize_row_iq4_xs(src, static_cast<BlockIQ4_XS*>(dst), n);
      break;
    default:
      CHIMERA_CHECK(false, "quantize_row: type ", type_name(type), " passed check_row");
  }
  return Status::Ok();
}

}  // namespace chimera
