// Request parsing for the OpenAI-compatible HTTP API: a JSON body in, a validated request or an
// error naming the offending field out. Pure functions (no model, no engine, no I/O), so they are
// unit-tested and fuzzed on their own (tests/server, tests/fuzz/fuzz_api_request.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/sampling.h"
#include "runtime/tokenizer.h"

namespace chimera::server {

// An error as the API reports it: {"error": {"message", "type", "param", "code", ...extra}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the field at fault ("messages[2].content"); "" when none
  std::string code;   // machine-readable reason ("context_length_exceeded"); "" when none
  nlohmann::json extra = nlohmann::json::object();  // more keys for the error object
};

// The OpenAI error document for `e`.
nlohmann::json error_body(const ApiError& e);
ApiError invalid_field(std::string param, std::string message);

template <typename T>
class Parsed {
 public:
  Parsed(T value) : v_(std::move(value)) {}     // NOLINT: implicit by design
  Parsed(ApiError err) : v_(std::move(err)) {}  // NOLINT
  bool ok() const { return std::holds_alternative<T>(v_); }
  T& value() { return std::get<T>(v_); }
  const T& value() const { return std::get<T>(v_); }
  const ApiError& error() const { return std::get<ApiError>(v_); }

 private:
  std::variant<T, ApiError> v_;
};

// Fields shared by chat and text completions.
struct GenerationRequest {
  std::string model;        // echoed nowhere: one model is served; accepted for compatibility
  SamplingParams sampling;  // absent fields keep SamplingParams' defaults (llama.cpp's)
  bool seed_given = false;  // false: the server picks a random seed
  int32_t max_tokens = -1;  // -1: until end of generation or the context is full
  std::vector<std::string> stop;
  int n = 1;
  int top_logprobs = -1;  // -1: no logprobs
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;     // llama.cpp extension
  int32_t draft_max = -1;      // speculative decoding: -1 server default, 0 off, else a cap
};

struct ChatRequest {
  GenerationRequest gen;
  // Validated messages (each an object with a string "role" and a string or null "content";
  // content given as a list of text parts is joined into one string).
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  // Extra template variables: "tools", and everything in "chat_template_kwargs".
  nlohmann::ordered_json template_vars = nlohmann::ordered_json::object();
};

struct CompletionRequest {
  GenerationRequest gen;
  std::optional<std::string> prompt_text;  // exactly one of prompt_text / prompt_tokens
  std::vector<TokenId> prompt_tokens;
};

struct TokenizeRequest {
  std::string content;
  bool add_special = false;
  bool parse_special = true;
  bool with_pieces = false;
};

struct DetokenizeRequest {
  std::vector<TokenId> tokens;
};

struct ApplyTemplateRequest {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json template_vars = nlohmann::ordered_json::object();
};

// Nesting deeper than this is refused before the body is parsed (bounded recursion everywhere).
inline constexpr int kMaxJsonDepth = 64;

// The body as a JSON object, or a 400 naming the position of the syntax error.
Parsed<nlohmann::ordered_json> parse_json_object(std::string_view body);

Parsed<ChatRequest> parse_chat_request(std::string_view body);
Parsed<CompletionRequest> parse_completion_request(std::string_view body);
Parsed<TokenizeRequest> parse_tokenize_request(std::string_view body);
Parsed<DetokenizeRequest> parse_detokenize_request(std::string_view body);
Parsed<ApplyTemplateRequest> parse_apply_template_request(std::string_view body);

}  // namespace chimera::server
