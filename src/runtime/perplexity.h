// Perplexity over a token stream, with the same definition as llama.cpp's llama-perplexity so
// numbers are comparable: the text is cut into windows of n_ctx tokens (one window starts every
// `stride` tokens; stride = n_ctx by default); the first token of a window becomes BOS when the
// vocabulary adds one; within a window only the tokens after `first` are scored (first =
// n_ctx/2 by default, n_ctx - stride for strided windows), each predicted from the logits of
// the token before it. PPL = exp(mean NLL); its uncertainty is PPL x the standard error of the
// mean NLL. Optionally the log-probabilities of the scored tokens are saved (base run) or
// compared with saved ones (KL divergence, for quantization loss).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/context.h"

namespace chimera {

struct PerplexityParams {
  uint32_t n_ctx = 512;
  uint32_t stride = 0;        // 0: n_ctx (non-overlapping windows)
  int32_t bos = -1;           // BOS id to put first in each window, or -1
  uint32_t max_windows = 0;   // 0: all
  std::string save_logprobs;  // write the scored tokens' log-probabilities here
  std::string kl_base;        // compare with a file written by save_logprobs
};

struct PerplexityResult {
  double ppl = 0, ppl_uncertainty = 0;
  double mean_nll = 0;
  uint64_t n_scored = 0;
  uint32_t n_windows = 0;
  uint32_t n_ctx = 0, stride = 0, first = 0;
  // KL-divergence mode
  bool has_kl = false;
  double kl_mean = 0, kl_uncertainty = 0, kl_max = 0;
  double same_top1 = 0;  // fraction of scored tokens whose argmax agrees with the base
  double seconds = 0;
};

Result<PerplexityResult> compute_perplexity(
    Context& ctx, const std::vector<int32_t>& tokens, const PerplexityParams& params,
    const std::function<void(uint32_t window, uint32_t n_windows, double ppl)>& progress = {});

}  // namespace chimera
