#include "kernels/rope.h"

#include <cmath>
#include <vector>

namespace chimera {

void rope_cos_sin(int32_t position, const RopeParams& params, float* cos_out, float* sin_out) {
  const float theta_scale = std::pow(params.freq_base, -2.0f / static_cast<float>(params.n_rot));
  float theta = static_cast<float>(position);
  for (int32_t i = 0; i < params.n_rot / 2; ++i) {
    const float ff = params.freq_factors ? params.freq_factors[i] : 1.0f;
    const float t = params.freq_scale * (theta / ff);
    cos_out[i] = std::cos(t);
    sin_out[i] = std::sin(t);
    theta *= theta_scale;
  }
}

Status rope(float* x, int64_t token_stride, int64_t n_tokens, int32_t n_head, int32_t head_dim,
            const int32_t* positions, const RopeParams& params) {
  if (n_head < 1 || head_dim < 1)
    return Error(ErrorCode::kInvalidArgument, "rope: n_head ", n_head, " and head_dim ", head_dim,
                 " must be >= 1");
  if (params.n_rot < 2 || params.n_rot % 2 != 0 || params.n_rot > head_dim)
    return Error(ErrorCode::kInvalidArgument, "rope: n_rot ", params.n_rot,
                 " must be even and in [2, head_dim = ", head_dim, "]");
  if (params.mode != RopeMode::kNorm && params.mode != RopeMode::kNeox)
    return Error(ErrorCode::kUnsupported, "rope: mode ", static_cast<int32_t>(params.mode),
                 " (supported: 0 = NORM, 2 = NEOX)");
  if (token_stride < static_cast<int64_t>(n_head) * head_dim)
    return Error(ErrorCode::kInvalidArgument, "rope: token stride ", token_stride,
                 " < n_head*head_dim ", static_cast<int64_t>(n_head) * head_dim);
  if (n_tokens < 0) return Error(ErrorCode::kInvalidArgument, "rope: n_tokens < 0");

  const int32_t half = params.n_rot / 2;
  std::vector<float> cs(static_cast<size_t>(2 * half));
  float* cos_t = cs.data();
  float* sin_t = cs.data() + half;
  // NORM pairs (2i, 2i+1); NEOX pairs (i, i + n_rot/2).
  const int32_t stride_i = params.mode == RopeMode::kNorm ? 2 : 1;
  const int32_t offset_1 = params.mode == RopeMode::kNorm ? 1 : half;
  for (int64_t t = 0; t < n_tokens; ++t) {
    rope_cos_sin(positions[t], params, cos_t, sin_t);
    for (int32_t h = 0; h < n_head; ++h) {
      float* v = x + t * token_stride + static_cast<int64_t>(h) * head_dim;
      for (int32_t i = 0; i < half; ++i) {
        float* a = v + i * stride_i;
        float* b = a + offset_1;
        const float x0 = *a, x1 = *b;
        *a = x0 * cos_t[i] - x1 * sin_t[i];
        *b = x0 * sin_t[i] + x1 * cos_t[i];
      }
    }
  }
  return Status::Ok();
}

}  // namespace chimera
