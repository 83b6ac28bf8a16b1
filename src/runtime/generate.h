// Text generation on a Context: prompt processing, sampling loop, stop conditions, streaming.
// ChatSession keeps one conversation in one sequence and, each turn, processes only the tokens
// that differ from what the memory already holds (exact: the hybrid memory rolls back to the
// common prefix with a snapshot and a bounded replay).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/chat_template.h"
#include "runtime/context.h"
#include "runtime/drafter.h"
#include "runtime/sampling.h"
#include "runtime/tokenizer.h"

namespace chimera {

struct GenerateParams {
  SamplingParams sampling;
  int32_t n_predict = 128;        // max new tokens (< 0: until EOS or the context is full)
  std::vector<std::string> stop;  // stop strings (not included in the output)
  bool ignore_eos = false;
  uint32_t n_ctx = 4096;       // max tokens of the sequence (prompt + generated)
  int32_t prompt_chunk = 512;  // prompt tokens per decode call (progress granularity)
  bool logprobs = false;       // fill GenerateResult::logprobs
  // Speculative decoding when set: the drafter proposes, the model verifies in one batch. The
  // output (tokens, text, logprobs) is byte-identical to generation without it.
  Drafter* drafter = nullptr;
  SpecParams spec;
};

enum class StopReason { kLength, kEos, kStopString, kContext, kCallback };
const char* stop_reason_name(StopReason r);

struct GenerateResult {
  std::string text;
  std::vector<TokenId> tokens;     // generated tokens
  int64_t n_prompt_processed = 0;  // prompt tokens actually run through the model
  int64_t n_prompt_reused = 0;     // prompt tokens found already in memory
  double prompt_seconds = 0, gen_seconds = 0;
  StopReason stop = StopReason::kLength;
  std::vector<float> logprobs;  // per generated token (GenerateParams::logprobs)
  SpecStats spec;               // drafted / accepted tokens (speculative decoding)
  SpecCosts spec_costs;         // the speculation controller's measurements
};

struct GenerateCallbacks {
  // Prompt progress (done, total); may be null.
  std::function<void(int64_t, int64_t)> on_prompt_progress;
  // Streamed text; return false to stop. May be null.
  std::function<bool(const std::string&)> on_text;
};

// Makes sequence `seq` hold exactly `prompt` (reusing the longest common prefix already in memory,
// truncating the rest exactly), then samples up to n_predict tokens.
Result<GenerateResult> generate(Context& ctx, const Tokenizer& tok, int32_t seq,
                                const std::vector<TokenId>& prompt, const GenerateParams& params,
                                Sampler& sampler, const GenerateCallbacks& cb = {});

class ChatSession {
 public:
  ChatSession(Context& ctx, const Tokenizer& tok, std::string chat_template, int32_t seq = 0);
  void add_system(const std::string& text) { add_message("system", text); }
  // Appends a message as is (e.g. to rebuild a conversation).
  void add_message(const std::string& role, const std::string& text) {
    messages_.push_back({role, text, nlohmann::ordered_json::object()});
  }
  // Adds the user message, generates the assistant reply and appends it to the conversation.
  Result<GenerateResult> turn(const std::string& user, const GenerateParams& params,
                              Sampler& sampler, const GenerateCallbacks& cb = {});
  const std::vector<ChatMessage>& messages() const { return messages_; }
  // The full prompt of the conversation so far plus a generation prompt.
  Result<std::vector<TokenId>> render_prompt() const;

 private:
  Context& ctx_;
  const Tokenizer& tok_;
  std::string template_;
  int32_t seq_;
  std::vector<ChatMessage> messages_;
};

// The chat template of a model file (tokenizer.chat_template), or a ChatML fallback.
std::string chat_template_of(const GgufFile& file);

}  // namespace chimera
