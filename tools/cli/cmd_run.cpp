// `chimera run`: generate text from a prompt, streamed. `chimera chat`: an interactive
// multi-turn chat through the model's chat template that reuses the conversation's memory, so
// each turn processes only its new tokens.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "command.h"
#include "model_options.h"

namespace chimera::cli {
namespace {

void progress_bar(int64_t done, int64_t total) {
  if (total < 64) return;  // short prompts finish before a bar helps
  const int width = 30, filled = static_cast<int>(width * done / std::max<int64_t>(1, total));
  std::fprintf(stderr, "\rprompt [%.*s%*s] %lld/%lld", filled,
               "==============================", width - filled, "", static_cast<long long>(done),
               static_cast<long long>(total));
  if (done == total) std::fprintf(stderr, "\r%*s\r", width + 40, "");
}

// The prompt of `run -f FILE` ("-": stdin). One trailing newline, which editors add, is dropped.
Result<std::string> read_prompt_file(const std::string& path) {
  std::ostringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec))
      return Error(ErrorCode::kInvalidArgument, "prompt file '", path, "' is a directory");
    std::ifstream in(path, std::ios::binary);
    if (!in)
      return Error(ErrorCode::kIo, "cannot read prompt file '", path, "': ", std::strerror(errno));
    ss << in.rdbuf();
    if (in.bad())
      return Error(ErrorCode::kIo, "error reading prompt file '", path,
                   "': ", std::strerror(errno));
  }
  std::string text = ss.str();
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  if (text.empty()) return Error(ErrorCode::kInvalidArgument, "prompt file '", path, "' is empty");
  return text;
}

// One line on speculative decoding's drafts (nothing when none were made).
void print_spec(const SpecStats& s) {
  if (s.drafted == 0) return;
  std::fprintf(stderr, "speculative: %lld drafted, %lld accepted (%.1f%%) in %lld verifications\n",
               static_cast<long long>(s.drafted), static_cast<long long>(s.accepted),
               100.0 * s.acceptance(), static_cast<long long>(s.steps));
}

void print_summary(const Context& ctx, const GenerateResult& r) {
  const MemoryUsage u = ctx.memory().usage();
  std::fprintf(
      stderr,
      "\n\nprompt: %lld tokens processed (%lld reused) in %.2f s (%.1f tok/s)\n"
      "generation: %zu tokens in %.2f s (%.1f tok/s), stopped by %s\n"
      "memory: KV pages %s%s, recurrent states %s, snapshots %s (budget %s)\n",
      static_cast<long long>(r.n_prompt_processed), static_cast<long long>(r.n_prompt_reused),
      r.prompt_seconds, r.prompt_seconds > 0 ? r.n_prompt_processed / r.prompt_seconds : 0.0,
      r.tokens.size(), r.gen_seconds, r.gen_seconds > 0 ? r.tokens.size() / r.gen_seconds : 0.0,
      stop_reason_name(r.stop), human_bytes(u.live_kv_bytes).c_str(),
      // Sliding-window layers hold their window (+ reserve), whatever the length.
      u.window_pages_in_use > 0
          ? (" (sliding-window layers " + human_bytes(u.window_kv_bytes) + ")").c_str()
          : "",
      human_bytes(u.live_state_bytes).c_str(), human_bytes(u.snapshot_bytes).c_str(),
      human_bytes(u.budget_bytes).c_str());
}

int run_run(int argc, char** argv) {
  CLI::App app{"Generate text from a prompt, streamed to stdout.", "chimera run"};
  ModelOptions mo;
  SamplingOptions so;
  SpecOptions spec;
  std::string prompt, prompt_file;
  bool no_special = false;
  mo.snapshots = SnapshotPolicy::one_shot();  // nothing rolls back: no periodic snapshots
  mo.add_to(app);
  so.add_to(app);
  spec.add_to(app);
  auto* p_opt = app.add_option("-p,--prompt", prompt, "the prompt text");
  auto* f_opt = app.add_option("-f,--file", prompt_file,
                               "read the prompt from a file (- for stdin); instead of -p");
  p_opt->excludes(f_opt);
  app.add_flag("--no-parse-special", no_special,
               "treat control-token text in the prompt (<|...|>) as plain text");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (p_opt->count() == 0 && f_opt->count() == 0) {
    std::fprintf(stderr, "chimera run: give a prompt with -p TEXT or -f FILE (see --help)\n");
    return 2;
  }
  if (f_opt->count()) {
    auto text = read_prompt_file(prompt_file);
    if (!text.ok()) return report_error("run", text.status());
    prompt = std::move(text).value();
  }
  auto lm = load_for_inference(mo, true);
  if (!lm.ok()) return report_error("run", lm.status());
  auto dr = load_drafter(spec, mo, *lm);
  if (!dr.ok()) return report_error("run", dr.status());
  auto ids = lm->tokenizer->encode(prompt, {.add_special = true, .parse_special = !no_special});
  if (!ids.ok()) return report_error("run", ids.status());
  Sampler sampler(so.p);
  std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  GenerateCallbacks cb;
  if (!mo.quiet) cb.on_prompt_progress = progress_bar;
  cb.on_text = [](const std::string& s) {
    std::fputs(s.c_str(), stdout);
    std::fflush(stdout);
    return true;
  };
  GenerateParams gp = so.generate_params(mo.n_ctx);
  gp.drafter = dr->drafter.get();
  gp.spec = spec.params();
  auto r = generate(*lm->ctx, *lm->tokenizer, 0, *ids, gp, sampler, cb);
  if (!r.ok()) return report_error("run", r.status());
  std::fputs("\n", stdout);
  std::fflush(stdout);  // before the summary on stderr
  if (!mo.quiet) print_summary(*lm->ctx, *r);
  if (!mo.quiet) print_spec(r->spec);
  return 0;
}

int run_chat(int argc, char** argv) {
  CLI::App app{
      "Interactive chat through the model's chat template. Each line on stdin is one user turn "
      "(/exit or end of input quits). Only the new tokens of each turn are processed: the "
      "conversation stays in memory between turns.",
      "chimera chat"};
  ModelOptions mo;
  SamplingOptions so;
  SpecOptions spec;
  std::string system;
  mo.add_to(app);
  so.add_to(app);
  spec.add_to(app);
  so.n_predict = 256;
  app.add_option("--system", system, "a system message opening the conversation");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  auto lm = load_for_inference(mo, true);
  if (!lm.ok()) return report_error("chat", lm.status());
  auto dr = load_drafter(spec, mo, *lm);
  if (!dr.ok()) return report_error("chat", dr.status());
  ChatSession chat(*lm->ctx, *lm->tokenizer, chat_template_of(*lm->model->file));
  if (!system.empty()) chat.add_system(system);
  Sampler sampler(so.p);
  const bool tty = isatty(STDIN_FILENO);
  std::string line;
  for (int turn = 1;; ++turn) {
    if (tty) std::fputs("\n> ", stdout), std::fflush(stdout);
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line.empty()) continue;
    GenerateCallbacks cb;
    cb.on_text = [](const std::string& s) {
      std::fputs(s.c_str(), stdout);
      std::fflush(stdout);
      return true;
    };
    GenerateParams gp = so.generate_params(mo.n_ctx);
    gp.drafter = dr->drafter.get();
    gp.spec = spec.params();
    auto r = chat.turn(line, gp, sampler, cb);
    if (!r.ok()) {
      report_error("chat", r.status());
      continue;  // the conversation is unchanged; the user may try again
    }
    std::fputs("\n", stdout);
    std::fflush(stdout);  // before the summary on stderr
    if (!mo.quiet)
      std::fprintf(stderr,
                   "[turn %d: %lld new prompt tokens processed, %lld reused from memory; %zu "
                   "generated, %.1f tok/s]\n",
                   turn, static_cast<long long>(r->n_prompt_processed),
                   static_cast<long long>(r->n_prompt_reused), r->tokens.size(),
                   r->gen_seconds > 0 ? r->tokens.size() / r->gen_seconds : 0.0);
    if (!mo.quiet) print_spec(r->spec);
  }
  return 0;
}

const Registrar kRun({"run", "generate text from a prompt (streamed)", run_run});
const Registrar kChat({"chat", "interactive multi-turn chat with the model's template", run_chat});

}  // namespace
}  // namespace chimera::cli
