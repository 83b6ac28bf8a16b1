// Rotary position embedding (spec section 2): NORM (adjacent pairs) and NEOX (half-split pairs),
// theta computed iteratively in float as llama.cpp, optional per-pair frequency factors,
// freq_scale; YaRN off. Dims >= n_rot are left unchanged.
#pragma once

#include <cstdint>

#include "core/status.h"

namespace chimera {

enum class RopeMode : int32_t { kNorm = 0, kNeox = 2 };

struct RopeParams {
  int32_t n_rot = 0;  // rotated dims per head, even, <= head_dim
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;  // 1 / rope.scaling.factor
  RopeMode mode = RopeMode::kNorm;
  const float* freq_factors = nullptr;  // n_rot/2 values (rope_freqs.weight) or null
};

// Rotates in place the vectors of n_tokens tokens: token t's heads start at x + t*token_stride,
// head h at + h*head_dim; positions[t] is the token's position. Errors (nothing changed): odd or
// out-of-range n_rot, token_stride < n_head*head_dim, non-positive sizes, n_tokens < 0.
Status rope(float* x, int64_t token_stride, int64_t n_tokens, int32_t n_head, int32_t head_dim,
            const int32_t* positions, const RopeParams& params);

// cos/sin for one position, n_rot/2 pairs (exposed for tests and for K-shift later).
void rope_cos_sin(int32_t position, const RopeParams& params, float* cos_out, float* sin_out);

}  // namespace chimera
