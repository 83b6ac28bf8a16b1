#include "runtime/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>

namespace chimera {
namespace {

constexpr char kMagic[8] = {'C', 'H', 'M', 'L', 'P', 'R', 'B', '1'};

struct LogprobHeader {
  char magic[8];
  uint32_t n_vocab;
  uint32_t n_ctx;
  uint32_t stride;
  uint32_t reserved;
  uint64_t n_scored;
};

// log-softmax of one row, in double.
void log_softmax(const float* x, int64_t n, std::vector<double>& out) {
  out.resize(n);
  double max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::max<double>(max, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(x[i]) - max);
  const double lse = max + std::log(sum);
  for (int64_t i = 0; i < n; ++i) out[i] = double(x[i]) - lse;
}

}  // namespace

Result<PerplexityResult> compute_perplexity(
    Context& ctx, const std::vector<int32_t>& tokens, const PerplexityParams& params,
    const std::function<void(uint32_t, uint32_t, double)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  PerplexityResult res;
  res.n_ctx = params.n_ctx;
  res.stride = params.stride ? params.stride : params.n_ctx;
  if (res.n_ctx < 2 || res.stride > res.n_ctx)
    return Error(ErrorCode::kInvalidArgument, "perplexity: context ", res.n_ctx, " and stride ",
                 res.stride, " need 2 <= context and stride <= context");
  res.first = res.stride == res.n_ctx ? res.n_ctx / 2 : res.n_ctx - res.stride;
  if (tokens.size() < res.n_ctx)
    return Error(ErrorCode::kInvalidArgument, "perplexity: the text has ", tokens.size(),
                 " tokens, fewer than one window of ", res.n_ctx, " (use a smaller -c)");
  uint32_t n_windows = static_cast<uint32_t>((tokens.size() - res.n_ctx) / res.stride + 1);
  if (params.max_windows) n_windows = std::min(n_windows, params.max_windows);
  const int64_t V = ctx.n_vocab();

  std::ofstream save;
  std::ifstream base;
  LogprobHeader hdr{};
  std::memcpy(hdr.magic, kMagic, 8);
  hdr.n_vocab = static_cast<uint32_t>(V);
  hdr.n_ctx = res.n_ctx;
  hdr.stride = res.stride;
  hdr.n_scored = uint64_t(n_windows) * (res.n_ctx - 1 - res.first);
  if (!params.save_logprobs.empty()) {
    save.open(params.save_logprobs, std::ios::binary);
    if (!save) return Error(ErrorCode::kIo, "cannot write '", params.save_logprobs, "'");
    save.write(reinterpret_cast<const char*>(&hdr), sizeof hdr);
  }
  if (!params.kl_base.empty()) {
    base.open(params.kl_base, std::ios::binary);
    if (!base) return Error(ErrorCode::kNotFound, "cannot open '", params.kl_base, "'");
    LogprobHeader b{};
    base.read(reinterpret_cast<char*>(&b), sizeof b);
    if (!base || std::memcmp(b.magic, kMagic, 8))
      return Error(ErrorCode::kFormat, params.kl_base, ": not a chimera log-probability file");
    if (b.n_vocab != hdr.n_vocab || b.n_ctx != hdr.n_ctx || b.stride != hdr.stride ||
        b.n_scored != hdr.n_scored)
      return Error(ErrorCode::kInvalidArgument, params.kl_base, ": base run used vocabulary ",
                   b.n_vocab, ", context ", b.n_ctx, ", stride ", b.stride, ", ", b.n_scored,
                   " scored tokens; this run has ", hdr.n_vocab, ", ", hdr.n_ctx, ", ", hdr.stride,
                   ", ", hdr.n_scored, " (use the same text and flags)");
    res.has_kl = true;
  }

  double nll = 0, nll2 = 0, kl = 0, kl2 = 0;
  uint64_t top1 = 0;
  std::vector<double> lp;
  std::vector<float> lp_f(V), base_lp(V);
  const int32_t seq = 0;
  for (uint32_t w = 0; w < n_windows; ++w) {
    ctx.memory().clear();
    const size_t start = size_t(w) * res.stride;
    Batch b;
    for (uint32_t i = 0; i < res.n_ctx; ++i) {
      int32_t t = tokens[start + i];
      if (i == 0 && params.bos >= 0) t = params.bos;
      b.add(t, static_cast<int32_t>(i), seq, i >= res.first && i + 1 < res.n_ctx);
    }
    CHIMERA_RETURN_IF_ERROR(ctx.decode(b));
    for (uint32_t i = res.first; i + 1 < res.n_ctx; ++i) {
      const float* logits = ctx.logits(i);
      log_softmax(logits, V, lp);
      const double l = -lp[tokens[start + i + 1]];
      nll += l;
      nll2 += l * l;
      ++res.n_scored;
      if (save.is_open()) {
        for (int64_t k = 0; k < V; ++k) lp_f[k] = static_cast<float>(lp[k]);
        save.write(reinterpret_cast<const char*>(lp_f.data()), V * sizeof(float));
      }
      if (res.has_kl) {
        base.read(reinterpret_cast<char*>(base_lp.data()), V * sizeof(float));
        if (!base) return Error(ErrorCode::kFormat, params.kl_base, ": truncated");
        double d = 0;
        int64_t a_best = 0, b_best = 0;
        for (int64_t k = 0; k < V; ++k) {
          d += std::exp(double(base_lp[k])) * (double(base_lp[k]) - lp[k]);
          if (lp[k] > lp[a_best]) a_best = k;
          if (base_lp[k] > base_lp[b_best]) b_best = k;
        }
        kl += d;
        kl2 += d * d;
        res.kl_max = std::max(res.kl_max, d);
        top1 += a_best == b_best;
      }
    }
    res.n_windows = w + 1;
    if (progress) progress(w + 1, n_windows, std::exp(nll / res.n_scored));
  }
  const double n = static_cast<double>(res.n_scored);
  res.mean_nll = nll / n;
  res.ppl = std::exp(res.mean_nll);
  const double var = n > 1 ? std::max(0.0, (nll2 / n - res.mean_nll * res.mean_nll) / (n - 1)) : 0;
  res.ppl_uncertainty = res.ppl * std::sqrt(var);
  if (res.has_kl) {
    res.kl_mean = kl / n;
    res.kl_uncertainty =
        n > 1 ? std::sqrt(std::max(0.0, (kl2 / n - res.kl_mean * res.kl_mean) / (n - 1))) : 0;
    res.same_top1 = top1 / n;
  }
  if (save.is_open() && !save)
    return Error(ErrorCode::kIo, "error writing '", params.save_logprobs, "'");
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace chimera
