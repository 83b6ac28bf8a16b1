// `chimera bench -m MODEL -p 512 -n 128 [-t N] [-r R] [--json]`: prompt processing and decode
// speed like llama.cpp's llama-bench (pp512 = a 512-token prompt in one batch on an empty
// sequence; tg128 = 128 tokens decoded one at a time from an empty sequence), plus decode GB/s
// (weight bytes read per token x tokens/s) and its share of a streaming-read roofline measured
// in the same run. Random token ids: speed does not depend on them.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "bench_kernels.h"
#include "cmd_bench.h"
#include "model_options.h"

namespace chimera::cli {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Bytes of weights one decoded token reads: every tensor but the embedding table (one row is
// read), the LM head, and for MoE only the used share of each expert stack.
uint64_t bytes_per_token(const Model& m) {
  uint64_t total = 0;
  for (const GgufTensorInfo& t : m.file->tensors()) {
    if (&t == m.token_embd && m.output != m.token_embd) continue;
    uint64_t b = t.nbytes;
    if (m.hp.n_expert > 0 && t.n_dims == 3) b = b / m.hp.n_expert * m.hp.n_expert_used;
    total += b;
  }
  return total;
}

struct Stat {
  double mean = 0, sd = 0;
};
Stat stat(const std::vector<double>& v) {
  Stat s;
  for (double x : v) s.mean += x;
  s.mean /= v.size();
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / (v.size() - 1)) : 0;
  return s;
}

// Speculative decoding against plain decoding, interleaved per repetition (r == 0 warms up):
// greedy generation of n_gen tokens from a text prompt, timed from the first generated token.
struct SpecBench {
  std::vector<double> plain, spec;  // tokens/s
  SpecStats stats;
  bool identical = true;
  std::string drafter;
};

Result<SpecBench> bench_speculative(LoadedModel& lm, const ModelOptions& mo, const SpecOptions& so,
                                    const std::string& text, int n_gen, int reps) {
  if (!lm.tokenizer)
    return Error(ErrorCode::kInvalidArgument,
                 "speculative benchmark: the model has no vocabulary to encode the prompt with");
  CHIMERA_ASSIGN_OR_RETURN(LoadedDrafter dr, load_drafter(so, mo, lm));
  CHIMERA_ASSIGN_OR_RETURN(std::vector<TokenId> prompt, lm.tokenizer->encode(text));
  SpecBench out;
  out.drafter = dr.describe();
  GenerateParams g;
  g.sampling.temperature = 0;
  g.n_predict = n_gen;
  g.ignore_eos = true;
  g.n_ctx = mo.n_ctx;
  Context& ctx = *lm.ctx;
  for (int r = 0; r <= reps; ++r) {
    ctx.memory().clear();
    Sampler s1(g.sampling);
    CHIMERA_ASSIGN_OR_RETURN(GenerateResult plain, generate(ctx, *lm.tokenizer, 0, prompt, g, s1));
    ctx.memory().clear();
    dr.drafter->forget(0);
    GenerateParams gs = g;
    gs.drafter = dr.drafter.get();
    gs.spec = so.params();
    Sampler s2(g.sampling);
    CHIMERA_ASSIGN_OR_RETURN(GenerateResult spec, generate(ctx, *lm.tokenizer, 0, prompt, gs, s2));
    out.identical = out.identical && plain.tokens == spec.tokens;
    if (r == 0) continue;
    out.plain.push_back(plain.tokens.size() / plain.gen_seconds);
    out.spec.push_back(spec.tokens.size() / spec.gen_seconds);
    const SpecStats& st = spec.spec;
    out.stats.steps += st.steps;
    out.stats.drafted += st.drafted;
    out.stats.accepted += st.accepted;
    if (out.stats.drafted_at.size() < st.drafted_at.size()) {
      out.stats.drafted_at.resize(st.drafted_at.size(), 0);
      out.stats.accepted_at.resize(st.drafted_at.size(), 0);
    }
    for (size_t i = 0; i < st.drafted_at.size(); ++i) {
      out.stats.drafted_at[i] += st.drafted_at[i];
      out.stats.accepted_at[i] += st.accepted_at[i];
    }
  }
  return out;
}

int bench_model_main(int argc, char** argv) {
  CLI::App app{"Prompt processing (pp) and decode (tg) speed of a model, like llama-bench.",
               "chimera bench"};
  ModelOptions mo;
  int n_prompt = 512, n_gen = 128, reps = 3;
  bool json = false;
  mo.add_to(app);
  app.add_option("-p,--n-prompt", n_prompt, "prompt tokens for pp (default 512; 0 = skip)");
  app.add_option("-n,--n-gen", n_gen, "generated tokens for tg (default 128; 0 = skip)");
  app.add_option("-r,--repetitions", reps, "repetitions of each test (default 3)")
      ->check(CLI::Range(1, 100));
  app.add_flag("--json", json, "print one JSON object");
  SpecOptions spec_opts;
  std::string spec_prompt = "And God said";
  spec_opts.add_to(app);
  app.add_option("--spec-prompt", spec_prompt,
                 "with --draft/--spec: the prompt of the speculative test (greedy, -n tokens)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  mo.quiet = true;
  if (mo.ubatch < static_cast<uint32_t>(n_prompt)) mo.ubatch = std::max(n_prompt, 1);
  const auto t_load = Clock::now();
  auto lm = load_for_inference(mo, false);
  if (!lm.ok()) return report_error("bench", lm.status());
  const double load_s = since(t_load);
  Context& ctx = *lm->ctx;
  std::mt19937 rng(1);
  auto random_token = [&] { return static_cast<int32_t>(rng() % ctx.n_vocab()); };

  std::vector<double> pp, tg;
  for (int r = 0; r <= reps; ++r) {  // r == 0 warms up
    if (n_prompt > 0) {
      ctx.memory().clear();
      Batch b;
      for (int i = 0; i < n_prompt; ++i) b.add(random_token(), i, 0, i + 1 == n_prompt);
      const auto t0 = Clock::now();
      Status st = ctx.decode(b);
      if (!st.ok()) return report_error("bench", st);
      if (r > 0) pp.push_back(n_prompt / since(t0));
    }
    if (n_gen > 0) {
      ctx.memory().clear();
      const auto t0 = Clock::now();
      for (int i = 0; i < n_gen; ++i) {
        Batch b;
        b.add(random_token(), i, 0, true);
        Status st = ctx.decode(b);
        if (!st.ok()) return report_error("bench", st);
      }
      if (r > 0) tg.push_back(n_gen / since(t0));
    }
  }
  SpecBench sb;
  if (spec_opts.enabled() && n_gen > 0) {
    auto r = bench_speculative(*lm, mo, spec_opts, spec_prompt, n_gen, reps);
    if (!r.ok()) return report_error("bench", r.status());
    sb = std::move(*r);
  }
  auto roofline_r = streaming_read_gbps(mo.n_threads);
  if (!roofline_r.ok()) return report_error("bench", roofline_r.status());
  const double roofline = *roofline_r;
  const uint64_t bpt = bytes_per_token(*lm->model);
  const Stat pps = pp.empty() ? Stat{} : stat(pp), tgs = tg.empty() ? Stat{} : stat(tg);
  const double gbps = tgs.mean * bpt / 1e9;
  if (json) {
    nlohmann::json j;
    j["model"] = lm->path;
    j["description"] = lm->model->describe();
    j["file_bytes"] = lm->model->file->file_size();
    j["threads"] = mo.n_threads;
    j["isa"] = isa_name(active_isa());
    j["load_seconds"] = load_s;
    j["n_prompt"] = n_prompt;
    j["n_gen"] = n_gen;
    j["repetitions"] = reps;
    j["pp_tokens_per_s"] = pps.mean;
    j["pp_tokens_per_s_sd"] = pps.sd;
    j["tg_tokens_per_s"] = tgs.mean;
    j["tg_tokens_per_s_sd"] = tgs.sd;
    j["weight_bytes_per_token"] = bpt;
    j["tg_gbps"] = gbps;
    j["roofline_gbps"] = roofline;
    j["tg_roofline_pct"] = roofline > 0 ? 100 * gbps / roofline : 0;
    if (!sb.plain.empty()) {
      nlohmann::json sj;
      sj["drafter"] = sb.drafter;
      sj["draft_max"] = spec_opts.draft_max;
      sj["adaptive"] = !spec_opts.fixed;
      sj["prompt"] = spec_prompt;
      sj["plain_tokens_per_s"] = stat(sb.plain).mean;
      sj["plain_tokens_per_s_sd"] = stat(sb.plain).sd;
      sj["spec_tokens_per_s"] = stat(sb.spec).mean;
      sj["spec_tokens_per_s_sd"] = stat(sb.spec).sd;
      sj["speedup"] = stat(sb.spec).mean / stat(sb.plain).mean;
      sj["drafted"] = sb.stats.drafted;
      sj["accepted"] = sb.stats.accepted;
      sj["acceptance"] = sb.stats.acceptance();
      sj["verifications"] = sb.stats.steps;
      sj["drafted_by_position"] = sb.stats.drafted_at;
      sj["accepted_by_position"] = sb.stats.accepted_at;
      sj["output_identical"] = sb.identical;
      j["speculative"] = sj;
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model: %s (%s), loaded in %.0f ms\n", lm->path.c_str(),
              lm->model->describe().c_str(), load_s * 1e3);
  std::printf("threads %d, isa %s, %d repetitions\n\n", mo.n_threads, isa_name(active_isa()), reps);
  std::printf("| %-8s | %16s |\n|----------|------------------|\n", "test", "tokens/s");
  if (n_prompt > 0) std::printf("| pp%-6d | %8.2f ± %5.2f |\n", n_prompt, pps.mean, pps.sd);
  if (n_gen > 0) std::printf("| tg%-6d | %8.2f ± %5.2f |\n", n_gen, tgs.mean, tgs.sd);
  if (!sb.plain.empty()) {
    const Stat p = stat(sb.plain), q = stat(sb.spec);
    std::printf("\nspeculative decoding (%s, draft-max %d%s), greedy, prompt \"%s\":\n",
                sb.drafter.c_str(), spec_opts.draft_max, spec_opts.fixed ? ", fixed" : ", adaptive",
                spec_prompt.c_str());
    std::printf("| %-8s | %16s |\n|----------|------------------|\n", "test", "tokens/s");
    std::printf("| plain    | %8.2f ± %5.2f |\n| spec     | %8.2f ± %5.2f |\n", p.mean, p.sd,
                q.mean, q.sd);
    std::printf("speed-up %.2fx; acceptance %.1f%% (%lld of %lld drafted, %lld verifications)%s\n",
                q.mean / p.mean, 100 * sb.stats.acceptance(),
                static_cast<long long>(sb.stats.accepted), static_cast<long long>(sb.stats.drafted),
                static_cast<long long>(sb.stats.steps),
                sb.identical ? "; output identical" : "; OUTPUT DIFFERS (bug)");
    std::printf("acceptance by draft position:");
    for (size_t i = 0; i < sb.stats.drafted_at.size(); ++i)
      std::printf(" %.0f%%",
                  100.0 * sb.stats.accepted_at[i] / std::max<int64_t>(1, sb.stats.drafted_at[i]));
    std::printf("\n");
  }
  if (n_gen > 0)
    std::printf(
        "\ndecode reads %s of weights per token: %.1f GB/s = %.0f%% of the %.1f GB/s "
        "streaming-read roofline\n",
        human_bytes(bpt).c_str(), gbps, roofline > 0 ? 100 * gbps / roofline : 0, roofline);
  return 0;
}

const BenchModeRegistrar kModel({"",
                                 "-m MODEL: prompt (pp) and decode (tg) tokens/s, like "
                                 "llama-bench",
                                 bench_model_main});

}  // namespace
}  // namespace chimera::cli
