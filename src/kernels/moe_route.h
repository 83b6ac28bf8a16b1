// MoE routing (spec section 2, pitfall 12): probs = softmax(router logits), or sigmoid(logits)
// (Nemotron-H MoE), select the k largest of probs + selection_bias when given (the bias only
// ranks, it never enters a weight; descending, ties go to the lower expert id), optionally
// renormalise the k weights by max(Σw, 6.103515625e-5) (Granite; Jamba does not), optionally scale
// them.
#pragma once

#include <cstdint>

#include "core/status.h"

namespace chimera {

struct MoeRouteParams {
  int32_t n_expert = 0;       // logits per token
  int32_t n_expert_used = 0;  // k, 1..n_expert
  bool renormalize = true;    // w /= max(Σw, 6.103515625e-5)
  float weight_scale = 0.0f;  // applied when not 0 or 1 (llama.cpp expert_weights_scale)
  bool sigmoid = false;       // probs = sigmoid(logits) instead of softmax
  const float* selection_bias = nullptr;  // [n_expert], added to probs for ranking only
};

// logits [n_tokens][n_expert] (row stride logits_stride floats). Writes expert_ids and weights,
// each [n_tokens][n_expert_used], ids in ranking order. Errors (nothing written): bad k or
// n_expert, stride < n_expert, n_tokens < 0.
Status moe_route(const MoeRouteParams& params, const float* logits, int64_t logits_stride,
                 int64_t n_tokens, int32_t* expert_ids, float* weights);

}  // namespace chimera
