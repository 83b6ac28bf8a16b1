#include "model_options.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "kernels/cpu_features.h"

namespace chimera::cli {

void ModelOptions::add_to(CLI::App& app) {
  app.add_option(
      "-m,--model", model_path,
      "model file (GGUF); default: the bundled default model ($CHIMERA_MODEL overrides)");
  app.add_option("-t,--threads", n_threads, "CPU threads (default 2)")->check(CLI::Range(1, 256));
  app.add_option("-c,--ctx-size", n_ctx,
                 "max tokens per sequence: prompt + generated (default 4096)")
      ->check(CLI::Range(1u, 1u << 24));
  app.add_option("--mem", mem,
                 "memory budget for KV pages, recurrent states and snapshots, e.g. 512M, 2G "
                 "(default 2G)");
  app.add_option("--kv-type", kv_type, "KV cache element type: f16 (default), bf16 or f32");
  app.add_option("--ubatch", ubatch, "max tokens per compute step (never changes results)")
      ->check(CLI::Range(1u, 1u << 16));
  app.add_option("--snapshot-every", snapshot_every,
                 "keep a recurrent-state snapshot every N tokens, bounding replays (0: off; "
                 "default " +
                     std::to_string(snapshots.interval) + " for this command)")
      ->check(CLI::Range(int64_t{0}, int64_t{UINT32_MAX}));
  app.add_flag("-q,--quiet", quiet, "no progress or summary on stderr");
  CLI::Option* map = app.add_flag(
      "--mmap", mmap,
      "map the model files instead of reading them into memory (default: read them into "
      "2 MiB pages, which decode streams faster, when the kernel has transparent huge pages and "
      "a file takes at most half of the available memory; else map them)");
  app.add_flag("--no-mmap", no_mmap, "always read the model files into memory")->excludes(map);
}

Result<ContextParams> ModelOptions::context_params() const {
  ContextParams p;
  p.n_threads = n_threads;
  CHIMERA_ASSIGN_OR_RETURN(p.memory_budget, parse_bytes(mem));
  p.snapshot_budget = p.memory_budget / 4;
  if (kv_type == "f16")
    p.kv_type = GgmlType::F16;
  else if (kv_type == "bf16")
    p.kv_type = GgmlType::BF16;
  else if (kv_type == "f32")
    p.kv_type = GgmlType::F32;
  else
    return Error(ErrorCode::kInvalidArgument, "--kv-type '", kv_type, "': use f16, bf16 or f32");
  p.max_ubatch = ubatch;
  SnapshotPolicy sp = snapshots;
  if (snapshot_every >= 0) sp.interval = static_cast<uint32_t>(snapshot_every);
  p.set_snapshot_policy(sp);
  return p;
}

void SamplingOptions::add_to(CLI::App& app) {
  app.add_option("-n,--n-predict", n_predict, "max tokens to generate (-1: until end of text)");
  app.add_option("--temp", p.temperature, "temperature; 0 = greedy (default 0.8)");
  app.add_option("--top-k", p.top_k, "keep the k most likely tokens; 0 = off (default 40)");
  app.add_option("--top-p", p.top_p, "nucleus sampling; 1 = off (default 0.95)");
  app.add_option("--min-p", p.min_p, "drop tokens below min-p x the best; 0 = off (default 0.05)");
  app.add_option("--repeat-penalty", p.repeat_penalty, "penalise repeated tokens; 1 = off");
  app.add_option("--repeat-last-n", p.repeat_last_n, "tokens the penalties look back (64)");
  app.add_option("--presence-penalty", p.presence_penalty, "subtract from seen tokens (0)");
  app.add_option("--frequency-penalty", p.frequency_penalty, "subtract per occurrence (0)");
  app.add_option("-s,--seed", p.seed, "random seed: same seed, same output");
  app.add_option("--stop", stop, "stop when this text appears (repeatable)");
  app.add_flag("--ignore-eos", ignore_eos, "keep generating after end-of-text tokens");
}

GenerateParams SamplingOptions::generate_params(uint32_t n_ctx) const {
  GenerateParams g;
  g.sampling = p;
  g.n_predict = n_predict;
  g.stop = stop;
  g.ignore_eos = ignore_eos;
  g.n_ctx = n_ctx;
  return g;
}

void SpecOptions::add_to(CLI::App& app) {
  app.add_option("--draft", draft_path,
                 "speculative decoding with this draft model (same vocabulary); the output is "
                 "identical, only faster");
  app.add_option("--spec", spec, "speculative decoding without a draft model: ngram")
      ->check(CLI::IsMember({"ngram"}));
  app.add_option("--draft-max", draft_max, "most tokens drafted per step (default 8)")
      ->check(CLI::Range(1, 64));
  app.add_option("--draft-min", draft_min,
                 "decode without verification when fewer are drafted (default 0)")
      ->check(CLI::Range(0, 64));
  app.add_option("--draft-p-min", draft_p_min,
                 "stop drafting when the draft model's top probability is below (default 0: the "
                 "adaptive draft length decides)")
      ->check(CLI::Range(0.0f, 1.0f));
  app.add_option("--threads-draft", threads_draft,
                 "threads of the draft model (default: as many as -t, or one for a draft model "
                 "of under 1 MiB of weights)")
      ->check(CLI::Range(1, 1024));
  app.add_flag("--no-draft-lookup", no_lookup,
               "a draft model drafts token by token only (default: it first checks, in one "
               "batch, the continuation a lookup of the sequence's own tokens proposes)");
  app.add_flag("--draft-fixed", fixed,
               "always draft --draft-max tokens (default: adapt the length, pause when slower)");
}

SpecParams SpecOptions::params() const {
  SpecParams p;
  p.draft_max = draft_max;
  p.draft_min = draft_min;
  p.adaptive = !fixed;
  return p;
}

std::string LoadedDrafter::describe() const {
  if (!drafter) return "off";
  return model ? "draft model " + model->describe() : drafter->name();
}

Result<LoadedDrafter> load_drafter(const SpecOptions& so, const ModelOptions& mo,
                                   const LoadedModel& target, uint32_t max_seqs,
                                   std::shared_ptr<ThreadContext> target_threads) {
  LoadedDrafter d;
  if (!so.draft_path.empty() && !so.spec.empty())
    return Error(ErrorCode::kInvalidArgument, "--draft and --spec ", so.spec,
                 " exclude each other: pick one drafter");
  if (so.spec == "ngram") {
    d.drafter = std::make_unique<NgramDrafter>();
    return d;
  }
  if (so.draft_path.empty()) return d;
  CHIMERA_ASSIGN_OR_RETURN(d.model, load_model(so.draft_path, mo.load_mode()));
  if (d.model->file->find("tokenizer.ggml.tokens")) {
    CHIMERA_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::from_gguf(*d.model->file));
    d.tokenizer = std::make_unique<Tokenizer>(std::move(tok));
  }
  DraftModelParams dp;
  dp.p_min = so.draft_p_min;
  dp.lookup = !so.no_lookup;
  CHIMERA_ASSIGN_OR_RETURN(dp.context, mo.context_params());
  dp.context.max_seqs = max_seqs;
  dp.context.n_threads = so.threads_draft > 0
                             ? so.threads_draft
                             : default_draft_threads(*d.model, dp.context.n_threads);
  // The same thread count: the target's pool (ContextParams::threads: two pools' spinning
  // workers fight over the cores).
  if (!target_threads && target.ctx) target_threads = target.ctx->shared_threads();
  if (target_threads && target_threads->n_threads() == dp.context.n_threads)
    dp.context.threads = target_threads;
  auto md =
      ModelDrafter::create(*target.model, target.tokenizer.get(), *d.model, d.tokenizer.get(), dp);
  if (!md.ok()) return Error(md.status().code(), so.draft_path, ": ", md.status().message());
  d.drafter = std::move(*md);
  return d;
}

Result<uint64_t> parse_bytes(const std::string& s) {
  if (s.empty()) return Error(ErrorCode::kInvalidArgument, "empty size");
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (...) {
    return Error(ErrorCode::kInvalidArgument, "size '", s, "' is not a number (e.g. 512M, 2G)");
  }
  std::string unit = s.substr(used);
  double mul = 1;
  if (unit == "K" || unit == "k" || unit == "KiB")
    mul = 1024.0;
  else if (unit == "M" || unit == "MiB")
    mul = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB")
    mul = 1024.0 * 1024 * 1024;
  else if (!unit.empty())
    return Error(ErrorCode::kInvalidArgument, "size '", s, "': unknown unit");
  if (v <= 0) return Error(ErrorCode::kInvalidArgument, "size '", s, "' must be positive");
  return static_cast<uint64_t>(v * mul);
}

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / double(1ull << 30));
  else if (b >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.2f MiB", b / double(1ull << 20));
  else if (b >= 1024)
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  return buf;
}

int report_error(const char* command, const Status& st) {
  std::fprintf(stderr, "chimera %s: %s\n", command, st.ToString().c_str());
  return 1;
}

Result<std::string> default_model_path() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("CHIMERA_MODEL"); env && *env) {
    std::error_code ec;
    if (!fs::is_regular_file(env, ec))
      return Error(ErrorCode::kNotFound, "CHIMERA_MODEL='", env, "': no such model file");
    return std::string(env);
  }
  std::vector<fs::path> candidates;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path() / CHIMERA_INSTALL_DATA_REL / "models" / "default.gguf");
  }
  candidates.push_back(fs::path(CHIMERA_SOURCE_DIR) / "models" / "default.gguf");
  std::string tried;
  for (const fs::path& c : candidates) {
    const fs::path p = c.lexically_normal();
    if (fs::is_regular_file(p, ec)) return p.string();
    tried += (tried.empty() ? "" : ", ") + p.string();
  }
  return Error(ErrorCode::kNotFound, "no model given (-m) and no default model at ", tried,
               "; pass -m MODEL.gguf or set CHIMERA_MODEL");
}

Result<LoadedModel> load_for_inference(const ModelOptions& opts, bool need_tokenizer,
                                       bool create_context) {
  const auto t0 = std::chrono::steady_clock::now();
  std::string path = opts.model_path;
  if (path.empty()) {
    CHIMERA_ASSIGN_OR_RETURN(path, default_model_path());
  }
  if (!opts.quiet) std::fprintf(stderr, "loading %s ...", path.c_str());
  LoadedModel lm;
  lm.path = path;
  CHIMERA_ASSIGN_OR_RETURN(lm.model, load_model(path, opts.load_mode()));
  if (lm.model->file->find("tokenizer.ggml.tokens")) {
    auto tok = Tokenizer::from_gguf(*lm.model->file);
    if (!tok.ok() && need_tokenizer) return tok.status();
    if (tok.ok()) lm.tokenizer = std::make_unique<Tokenizer>(std::move(tok).value());
  } else if (need_tokenizer) {
    return Error(ErrorCode::kNotFound, path,
                 ": no vocabulary (tokenizer.ggml.tokens); use token ids instead");
  }
  CHIMERA_ASSIGN_OR_RETURN(ContextParams cp, opts.context_params());
  if (create_context) {
    CHIMERA_ASSIGN_OR_RETURN(lm.ctx, Context::create(*lm.model, cp));
  }
  if (!opts.quiet) {
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "\rloaded %s in %.0f ms: %s, %s, %d threads, %s\n", path.c_str(), ms,
                 lm.model->describe().c_str(), human_bytes(lm.model->file->file_size()).c_str(),
                 opts.n_threads, isa_name(active_isa()));
  }
  return lm;
}

}  // namespace chimera::cli
