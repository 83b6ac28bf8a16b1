// `chimera perplexity`: perplexity of a model over a text file, defined as llama.cpp's
// llama-perplexity does (see runtime/perplexity.h), with a KL-divergence mode against saved base
// log-probabilities for measuring quantization loss.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "command.h"
#include "model_options.h"
#include "runtime/perplexity.h"

namespace chimera::cli {
namespace {

int run_perplexity(int argc, char** argv) {
  CLI::App app{"Perplexity over a text file (same definition as llama-perplexity).",
               "chimera perplexity"};
  ModelOptions mo;
  std::string file;
  PerplexityParams pp;
  bool json = false;
  mo.n_ctx = 512;
  mo.add_to(app);
  app.add_option("-f,--file", file, "text file")->required();
  app.add_option("--stride", pp.stride,
                 "start a window every N tokens and score its last N (default: context size, "
                 "scoring the second half of each window)");
  app.add_option("--chunks", pp.max_windows, "evaluate at most this many windows (0: all)");
  app.add_option("--save-logprobs", pp.save_logprobs,
                 "write the scored tokens' log-probabilities (a base run for --kl-divergence)");
  app.add_option("--kl-divergence", pp.kl_base,
                 "compare with log-probabilities saved by --save-logprobs: KL divergence and "
                 "top-1 agreement (same text and flags)");
  app.add_flag("--json", json, "print the result as one JSON object");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::ifstream in(file, std::ios::binary);
  if (!in)
    return report_error("perplexity", Error(ErrorCode::kNotFound, "cannot open '", file, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  mo.quiet = mo.quiet || json;
  const uint32_t n_ctx = mo.n_ctx;
  if (mo.ubatch < n_ctx) mo.ubatch = n_ctx;
  auto lm = load_for_inference(mo, true);
  if (!lm.ok()) return report_error("perplexity", lm.status());
  auto ids = lm->tokenizer->encode(ss.str(), {.add_special = false, .parse_special = false});
  if (!ids.ok()) return report_error("perplexity", ids.status());
  pp.n_ctx = n_ctx;
  pp.bos = lm->tokenizer->add_bos() ? lm->tokenizer->bos() : -1;
  if (!mo.quiet) std::fprintf(stderr, "%zu tokens, windows of %u tokens\n", ids->size(), n_ctx);
  auto r = compute_perplexity(*lm->ctx, *ids, pp, [&](uint32_t w, uint32_t n, double ppl) {
    if (!mo.quiet) std::fprintf(stderr, "[%u/%u] ppl %.4f\n", w, n, ppl);
  });
  if (!r.ok()) return report_error("perplexity", r.status());
  if (json) {
    nlohmann::json j;
    j["perplexity"] = r->ppl;
    j["uncertainty"] = r->ppl_uncertainty;
    j["mean_nll"] = r->mean_nll;
    j["tokens"] = ids->size();
    j["scored_tokens"] = r->n_scored;
    j["windows"] = r->n_windows;
    j["context_size"] = r->n_ctx;
    j["stride"] = r->stride;
    j["seconds"] = r->seconds;
    if (r->has_kl) {
      j["kl_divergence"] = r->kl_mean;
      j["kl_divergence_uncertainty"] = r->kl_uncertainty;
      j["kl_divergence_max"] = r->kl_max;
      j["same_top1"] = r->same_top1;
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("perplexity: %.4f +/- %.4f over %llu scored tokens (%u windows of %u, %.1f s)\n",
              r->ppl, r->ppl_uncertainty, static_cast<unsigned long long>(r->n_scored),
              r->n_windows, r->n_ctx, r->seconds);
  if (r->has_kl)
    std::printf("KL divergence: %.6f +/- %.6f (max %.6f); same top-1: %.2f%%\n", r->kl_mean,
                r->kl_uncertainty, r->kl_max, 100 * r->same_top1);
  return 0;
}

const Registrar kPerplexity({"perplexity", "perplexity over a text file (+ KL divergence mode)",
                             run_perplexity});

}  // namespace
}  // namespace chimera::cli
