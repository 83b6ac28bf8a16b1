// Flags shared by the commands that run a model (run, chat, logits, perplexity, bench), in the
// spirit of llama.cpp's: -m, -t, -c, --mem, --kv-type, --ubatch, --snapshot-every.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "runtime/context.h"
#include "runtime/drafter.h"
#include "runtime/generate.h"
#include "runtime/tokenizer.h"

namespace chimera::cli {

struct ModelOptions {
  std::string model_path;
  int n_threads = 2;
  uint32_t n_ctx = 4096;
  std::string mem = "2G";
  std::string kv_type = "f16";
  uint32_t ubatch = 512;
  // Automatic snapshots: the command picks the policy for its use (run and bench: one_shot;
  // chat and the rest: conversation); --snapshot-every overrides its interval.
  SnapshotPolicy snapshots = SnapshotPolicy::conversation();
  int64_t snapshot_every = -1;  // -1: the policy's interval
  bool quiet = false;
  bool mmap = false, no_mmap = false;  // how the model files load (GgufLoad; default kAuto)

  GgufLoad load_mode() const {
    return mmap ? GgufLoad::kMap : no_mmap ? GgufLoad::kCopy : GgufLoad::kAuto;
  }

  void add_to(CLI::App& app);
  Result<ContextParams> context_params() const;
};

struct SamplingOptions {
  SamplingParams p;
  int32_t n_predict = 128;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  void add_to(CLI::App& app);
  GenerateParams generate_params(uint32_t n_ctx) const;
};

// Speculative decoding: --draft MODEL or --spec ngram, --draft-max/--draft-min/--draft-p-min.
struct SpecOptions {
  std::string draft_path;
  std::string spec;  // "ngram" or empty
  int32_t draft_max = 8;
  int32_t draft_min = 0;
  float draft_p_min = 0.0f;
  int32_t threads_draft = 0;  // threads of the draft model (0: default_draft_threads)
  bool fixed = false;         // no adaptation of the draft length
  bool no_lookup = false;     // DraftModelParams::lookup off
  void add_to(CLI::App& app);
  bool enabled() const { return !draft_path.empty() || !spec.empty(); }
  SpecParams params() const;
};

struct LoadedModel;

// The drafter the options ask for (null when none): a draft model is loaded and its vocabulary
// checked against the target's. A draft model with the target's thread count runs on the
// target's pool: target_threads, else target.ctx's (decode with both from one thread only).
struct LoadedDrafter {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Drafter> drafter;
  std::string describe() const;
};
Result<LoadedDrafter> load_drafter(const SpecOptions& so, const ModelOptions& mo,
                                   const LoadedModel& target, uint32_t max_seqs = 16,
                                   std::shared_ptr<ThreadContext> target_threads = nullptr);

struct LoadedModel {
  std::string path;  // the file loaded: -m, or the default model
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the file has no vocabulary
  std::unique_ptr<Context> ctx;
};

// Opens the model (printing a progress line unless quiet), its tokenizer and (unless
// `create_context` is false: the server's engine makes its own) a context. With no -m, the
// default model (default_model_path()).
Result<LoadedModel> load_for_inference(const ModelOptions& opts, bool need_tokenizer,
                                       bool create_context = true);

// The model used when no -m is given, first found of: $CHIMERA_MODEL; <bin>/../share/chimera/
// models/default.gguf next to the running binary (what `cmake --install` lays out); the source
// tree's models/default.gguf (a binary run from its build folder). kNotFound lists the places.
Result<std::string> default_model_path();

// "512M", "2G", "1048576" -> bytes.
Result<uint64_t> parse_bytes(const std::string& s);
std::string human_bytes(uint64_t bytes);
int report_error(const char* command, const Status& st);

}  // namespace chimera::cli
