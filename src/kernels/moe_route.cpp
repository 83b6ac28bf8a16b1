#include "kernels/moe_route.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/softmax.h"

namespace chimera {

Status moe_route(const MoeRouteParams& params, const float* logits, int64_t logits_stride,
                 int64_t n_tokens, int32_t* expert_ids, float* weights) {
  const int32_t n = params.n_expert;
  const int32_t k = params.n_expert_used;
  if (n < 1) return Error(ErrorCode::kInvalidArgument, "moe_route: n_expert ", n, " < 1");
  if (k < 1 || k > n)
    return Error(ErrorCode::kInvalidArgument, "moe_route: n_expert_used ", k,
                 " outside [1, n_expert = ", n, "]");
  if (logits_stride < n)
    return Error(ErrorCode::kInvalidArgument, "moe_route: logits stride ", logits_stride,
                 " < n_expert ", n);
  if (n_tokens < 0) return Error(ErrorCode::kInvalidArgument, "moe_route: n_tokens < 0");

  std::vector<float> probs(static_cast<size_t>(n)), rank(static_cast<size_t>(n));
  std::vector<int32_t> order(static_cast<size_t>(n));
  const auto key = [](float p) { return std::isnan(p) ? -INFINITY : p; };
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* row = logits + t * logits_stride;
    if (params.sigmoid) {
      for (int32_t e = 0; e < n; ++e)
        probs[static_cast<size_t>(e)] = 1.0f / (1.0f + std::exp(-row[e]));
    } else {
      softmax_row(row, probs.data(), n);
    }
    for (int32_t e = 0; e < n; ++e) {
      order[static_cast<size_t>(e)] = e;
      rank[static_cast<size_t>(e)] =
          probs[static_cast<size_t>(e)] + (params.selection_bias ? params.selection_bias[e] : 0.0f);
    }
    // Larger score first; equal scores keep the lower id first (deterministic).
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      // NaN ranks last so the comparator stays a strict weak order whatever the logits hold.
      const float pa = key(rank[static_cast<size_t>(a)]), pb = key(rank[static_cast<size_t>(b)]);
      return pa > pb || (pa == pb && a < b);
    });
    int32_t* ids = expert_ids + t * k;
    float* w = weights + t * k;
    float sum = 0.0f;
    for (int32_t j = 0; j < k; ++j) {
      ids[j] = order[static_cast<size_t>(j)];
      w[j] = probs[static_cast<size_t>(ids[j])];
      sum += w[j];
    }
    if (params.renormalize) {
      const float denom = std::max(sum, 6.103515625e-5f);
      for (int32_t j = 0; j < k; ++j) w[j] /= denom;
    }
    if (params.weight_scale != 0.0f && params.weight_scale != 1.0f)
      for (int32_t j = 0; j < k; ++j) w[j] *= params.weight_scale;
  }
  return Status::Ok();
}

}  // namespace chimera
