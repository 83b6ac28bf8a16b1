// `chimera logits`: dump the logits of a token sequence as raw little-endian float32, so other
// engines can be compared on the same file.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "command.h"
#include "model_options.h"

namespace chimera::cli {
namespace {

Result<std::vector<int32_t>> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::out_of_range("");
      ids.push_back(static_cast<int32_t>(v));
    } catch (...) {
      return Error(ErrorCode::kInvalidArgument, "--tokens: '", item, "' is not a token id");
    }
  }
  if (ids.empty()) return Error(ErrorCode::kInvalidArgument, "--tokens: no token ids");
  return ids;
}

int run_logits(int argc, char** argv) {
  CLI::App app{
      "Write the logits of a token sequence as raw little-endian float32: the last position's "
      "n_vocab values, or with --all every position's (n_tokens x n_vocab, row-major).",
      "chimera logits"};
  ModelOptions mo;
  std::string tokens, prompt, out;
  bool all = false;
  mo.add_to(app);
  auto* t_opt = app.add_option("--tokens", tokens, "comma-separated token ids, e.g. 1,2,3");
  auto* p_opt =
      app.add_option("-p,--prompt", prompt, "text, tokenized with the model's vocabulary");
  t_opt->excludes(p_opt);
  app.add_option("-o,--output", out, "output file")->required();
  app.add_flag("--all", all, "every position's logits, not only the last");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!t_opt->count() && !p_opt->count())
    return report_error("logits", Error(ErrorCode::kInvalidArgument, "give --tokens or -p"));
  mo.quiet = true;
  auto lm = load_for_inference(mo, p_opt->count() > 0);
  if (!lm.ok()) return report_error("logits", lm.status());
  std::vector<int32_t> ids;
  if (t_opt->count()) {
    auto r = parse_ids(tokens);
    if (!r.ok()) return report_error("logits", r.status());
    ids = *r;
  } else {
    auto r = lm->tokenizer->encode(prompt, {.add_special = true, .parse_special = true});
    if (!r.ok()) return report_error("logits", r.status());
    ids = *r;
  }
  Batch b;
  for (size_t i = 0; i < ids.size(); ++i)
    b.add(ids[i], static_cast<int32_t>(i), 0, all || i + 1 == ids.size());
  Status st = lm->ctx->decode(b);
  if (!st.ok()) return report_error("logits", st);
  std::ofstream f(out, std::ios::binary);
  if (!f) return report_error("logits", Error(ErrorCode::kIo, "cannot write '", out, "'"));
  const size_t V = lm->ctx->n_vocab();
  for (size_t i = all ? 0 : ids.size() - 1; i < ids.size(); ++i)
    f.write(reinterpret_cast<const char*>(lm->ctx->logits(i)), V * sizeof(float));
  if (!f) return report_error("logits", Error(ErrorCode::kIo, "error writing '", out, "'"));
  std::fprintf(stderr, "wrote %zu x %zu logits to %s\n", all ? ids.size() : 1, V, out.c_str());
  return 0;
}

const Registrar kLogits({"logits", "dump logits of a token sequence as raw float32", run_logits});

}  // namespace
}  // namespace chimera::cli
