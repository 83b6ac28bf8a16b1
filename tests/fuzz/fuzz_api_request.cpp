// libFuzzer target for the HTTP API's request parsing (tools/server/api_request.h). Every input
// is run through each endpoint's parser. A parser must never crash or throw; a refusal must be a
// 400 with a message; an accepted request must hold only validated values.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>

#include "api_request.h"
#include "api_response.h"

namespace {

using namespace chimera::server;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_api_request: %s\n", what);
  __builtin_trap();
}

template <typename T>
void check_error(const Parsed<T>& p) {
  if (p.ok()) return;
  if (p.error().status != 400) fail("a parse error that is not a 400");
  if (p.error().message.empty()) fail("an error without a message");
  (void)dump_json(error_body(p.error()));  // must not throw on any bytes the body held
}

void check_generation(const GenerationRequest& g) {
  const auto& s = g.sampling;
  if (!(s.temperature >= 0 && s.temperature <= 2)) fail("temperature out of range");
  if (!(s.top_p >= 0 && s.top_p <= 1)) fail("top_p out of range");
  if (!(s.min_p >= 0 && s.min_p <= 1)) fail("min_p out of range");
  if (!(s.repeat_penalty > 0 && s.repeat_penalty <= 10)) fail("repeat_penalty out of range");
  if (!(std::fabs(s.presence_penalty) <= 2 && std::fabs(s.frequency_penalty) <= 2))
    fail("penalty out of range");
  if (s.top_k < 0 || s.repeat_last_n < 0) fail("negative top_k / repeat_last_n");
  if (g.n < 1 || g.n > 16) fail("n out of range");
  if (g.max_tokens == 0 || g.max_tokens < -1) fail("max_tokens out of range");
  if (g.top_logprobs < -1 || g.top_logprobs > 20) fail("top_logprobs out of range");
  for (const auto& stop : g.stop)
    if (stop.empty()) fail("empty stop string accepted");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);

  auto chat = parse_chat_request(body);
  check_error(chat);
  if (chat.ok()) {
    check_generation(chat.value().gen);
    const auto& msgs = chat.value().messages;
    if (!msgs.is_array() || msgs.empty()) fail("messages not a non-empty array");
    for (const auto& m : msgs) {
      if (!m.is_object() || !m["role"].is_string()) fail("message without a string role");
      if (!m["content"].is_string() && !m["content"].is_null()) fail("content not a string");
    }
    if (!chat.value().template_vars.is_object()) fail("template vars not an object");
  }

  auto completion = parse_completion_request(body);
  check_error(completion);
  if (completion.ok()) {
    check_generation(completion.value().gen);
    const auto& c = completion.value();
    if (c.prompt_text ? c.prompt_text->empty() : c.prompt_tokens.empty()) fail("empty prompt");
    for (auto t : c.prompt_tokens)
      if (t < 0) fail("negative token id");
  }

  check_error(parse_tokenize_request(body));
  auto detok = parse_detokenize_request(body);
  check_error(detok);
  if (detok.ok())
    for (auto t : detok.value().tokens)
      if (t < 0) fail("negative token id");
  check_error(parse_apply_template_request(body));
  return 0;
}
