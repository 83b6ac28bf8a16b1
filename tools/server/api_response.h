// Engine results -> OpenAI-shaped JSON: chat and text completions, their stream chunks, usage,
// timings, logprobs; and /metrics in the Prometheus text format. Pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/tokenizer.h"
#include "serving/engine.h"

namespace chimera::server {

// What every response object of one request shares.
struct ResponseMeta {
  std::string id;  // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;
  std::string model;
  bool chat = true;
};

struct ChoiceResult {
  std::string text;
  std::vector<serving::TokenLogprob> logprobs;
  std::string finish_reason;
};

// `top_logprobs` < 0: the choices carry "logprobs": null.
nlohmann::json completion_response(const ResponseMeta& m, const std::vector<ChoiceResult>& choices,
                                   const serving::Event& done, int top_logprobs,
                                   const Tokenizer& tok);

// One stream chunk for a delta of one choice. `first`: the choice's first chunk (carries the
// role in chat). `logprobs_on`: include the delta's logprobs.
nlohmann::json delta_chunk(const ResponseMeta& m, const serving::Event& ev, bool first,
                           bool logprobs_on, const Tokenizer& tok);
// The final chunk of a stream with usage (choices empty), as stream_options.include_usage asks.
nlohmann::json usage_chunk(const ResponseMeta& m, const serving::Event& done);

nlohmann::json usage_json(const serving::Usage& u);
nlohmann::json timings_json(const serving::Timings& t);
nlohmann::json cache_report_json(const serving::CacheReport& c);
// Chat format ({"content": [...]}) or legacy completions format ({"tokens", "token_logprobs",
// "top_logprobs", "text_offset"}); `text_offset` is the choice's text length before these tokens.
nlohmann::json logprobs_json(const std::vector<serving::TokenLogprob>& lps, bool chat,
                             const Tokenizer& tok, size_t text_offset = 0);

// "data: <json>\n\n" (invalid UTF-8 in model text is replaced, never thrown on).
std::string sse_event(const nlohmann::json& j);
std::string dump_json(const nlohmann::json& j);

// Counters the HTTP edge keeps itself.
struct HttpCounters {
  std::map<int, uint64_t> responses_by_status;
};

// Prometheus text exposition format (version 0.0.4).
std::string prometheus_text(const serving::MetricsSnapshot& m, const HttpCounters& http);

}  // namespace chimera::server
