// `chimera tokenize`: the token ids of a text under a model's vocabulary, like llama.cpp's
// llama-tokenize. Works on vocabulary-only GGUF files (no tensors needed).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "command.h"
#include "gguf/gguf_file.h"
#include "runtime/tokenizer.h"

namespace chimera::cli {
namespace {

Result<std::string> read_text(const std::string& path) {
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(ErrorCode::kNotFound, "cannot open text file '", path, "'");
  ss << in.rdbuf();
  if (in.bad()) return Error(ErrorCode::kIo, "error reading text file '", path, "'");
  return ss.str();
}

int fail(const Status& st) {
  std::fprintf(stderr, "chimera tokenize: %s\n", st.ToString().c_str());
  return 1;
}

int run_tokenize(int argc, char** argv) {
  CLI::App app{
      "Print the token ids of a text under the vocabulary of a GGUF file (a model or a "
      "vocabulary-only file), like llama.cpp's llama-tokenize.",
      "chimera tokenize"};
  std::string model_path, prompt, text_file;
  bool no_bos = false, pieces = false, parse_special = true, show_count = false;
  app.add_option("-m,--model", model_path, "GGUF file with tokenizer.ggml.* metadata")->required();
  auto* p_opt = app.add_option("-p,--prompt", prompt, "the text to tokenize");
  auto* f_opt = app.add_option("-f,--file", text_file, "read the text from FILE ('-': stdin)");
  p_opt->excludes(f_opt);
  app.add_flag("--no-bos", no_bos,
               "do not add BOS/EOS even where the vocabulary asks for them "
               "(tokenizer.ggml.add_bos_token / add_eos_token)");
  app.add_flag("--pieces", pieces, "print one token per line: id and the text it stands for");
  app.add_flag("--parse-special,!--no-parse-special", parse_special,
               "recognise control tokens written in the text, e.g. <|im_start|> (default: on)");
  app.add_flag("--show-count", show_count, "also print the number of tokens");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (p_opt->count() == 0 && f_opt->count() == 0)
    return fail(Error(ErrorCode::kInvalidArgument, "give the text with -p TEXT or -f FILE"));

  std::string text = prompt;
  if (f_opt->count() > 0) {
    auto t = read_text(text_file);
    if (!t.ok()) return fail(t.status());
    text = std::move(t).value();
  }
  auto file = GgufFile::open(model_path);
  if (!file.ok()) return fail(file.status());
  auto tok = Tokenizer::from_gguf(**file);
  if (!tok.ok()) return fail(tok.status());

  auto ids = tok->encode(text, {.add_special = !no_bos, .parse_special = parse_special});
  if (!ids.ok()) return fail(ids.status());

  std::string out;
  if (pieces) {
    for (TokenId id : *ids) {
      char head[32];
      std::snprintf(head, sizeof(head), "%6d -> '", id);
      out += head;
      out += tok->piece(id, /*special=*/true);
      out += "'\n";
    }
  } else {
    for (size_t i = 0; i < ids->size(); ++i) {
      if (i) out += ' ';
      out += std::to_string((*ids)[i]);
    }
    out += '\n';
  }
  if (show_count) out += "Total number of tokens: " + std::to_string(ids->size()) + "\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

const Registrar kRegisterTokenize(Command{
    "tokenize", "print the token ids of a text (-m MODEL_OR_VOCAB.gguf -p TEXT | -f FILE)",
    run_tokenize});

}  // namespace
}  // namespace chimera::cli
