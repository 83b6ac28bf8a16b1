#include "api_response.h"

#include <cstdio>

namespace chimera::server {

using nlohmann::json;

std::string dump_json(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string sse_event(const json& j) {
  return "data: " + dump_json(j) + "\n\n";
}

json usage_json(const serving::Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

json timings_json(const serving::Timings& t) {
  // prompt_n / cache_n / predicted_* are llama-server's names, so tools written for it read
  // chimera's numbers unchanged; prompt_reused / processed / replayed split the prompt exactly.
  return {
      {"prompt_n", t.prompt_processed},
      {"cache_n", t.prompt_reused},
      {"prompt_reused", t.prompt_reused},
      {"prompt_processed", t.prompt_processed},
      {"prompt_replayed", t.prompt_replayed},
      {"prompt_logits_reused", t.prompt_logits_reused},
      {"prompt_ms", t.prompt_ms},
      {"prompt_per_second", t.prompt_ms > 0 ? t.prompt_processed * 1000.0 / t.prompt_ms : 0.0},
      {"predicted_n", t.predicted_n},
      {"predicted_ms", t.predicted_ms},
      {"predicted_per_second", t.predicted_ms > 0 ? t.predicted_n * 1000.0 / t.predicted_ms : 0.0},
      {"draft_n", t.draft_n},
      {"draft_n_accepted", t.draft_n_accepted}};
}

json cache_report_json(const serving::CacheReport& c) {
  return {{"matched", c.matched}, {"reused", c.reused}, {"reason", c.reason}};
}

namespace {

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

const std::string& piece_of(const Tokenizer& tok, TokenId id) {
  static const std::string kEmpty;
  return tok.valid(id) ? tok.piece(id, /*special=*/true) : kEmpty;
}

}  // namespace

json logprobs_json(const std::vector<serving::TokenLogprob>& lps, bool chat, const Tokenizer& tok,
                   size_t text_offset) {
  if (chat) {
    json content = json::array();
    for (const auto& lp : lps) {
      json top = json::array();
      for (const auto& t : lp.top) {
        const std::string& p = piece_of(tok, t.token);
        top.push_back(
            {{"id", t.token}, {"token", p}, {"logprob", t.logprob}, {"bytes", bytes_of(p)}});
      }
      // "id" (not in OpenAI's shape; llama-server has it too): the token itself, which text
      // cannot always tell (several tokens can spell the same bytes).
      content.push_back({{"id", lp.token},
                         {"token", lp.text},
                         {"logprob", lp.logprob},
                         {"bytes", bytes_of(lp.text)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), token_lps = json::array(), tops = json::array(),
       offsets = json::array();
  for (const auto& lp : lps) {
    tokens.push_back(lp.text);
    token_lps.push_back(lp.logprob);
    json top = json::object();
    for (const auto& t : lp.top) top[piece_of(tok, t.token)] = t.logprob;
    tops.push_back(top);
    offsets.push_back(text_offset);
    text_offset += lp.text.size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_lps},
          {"top_logprobs", tops},
          {"text_offset", offsets}};
}

namespace {

json base_object(const ResponseMeta& m, const char* object) {
  return {{"id", m.id},
          {"object", object},
          {"created", m.created},
          {"model", m.model},
          {"system_fingerprint", "chimera"}};
}

}  // namespace

json completion_response(const ResponseMeta& m, const std::vector<ChoiceResult>& choices,
                         const serving::Event& done, int top_logprobs, const Tokenizer& tok) {
  json r = base_object(m, m.chat ? "chat.completion" : "text_completion");
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const auto& c = choices[i];
    json choice = {{"index", i}};
    if (m.chat)
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    else
      choice["text"] = c.text;
    choice["logprobs"] = top_logprobs >= 0 ? logprobs_json(c.logprobs, m.chat, tok) : json(nullptr);
    choice["finish_reason"] = c.finish_reason;
    cs.push_back(std::move(choice));
  }
  r["choices"] = std::move(cs);
  r["usage"] = usage_json(done.usage);
  r["timings"] = timings_json(done.timings);
  r["cache"] = cache_report_json(done.cache);
  return r;
}

json delta_chunk(const ResponseMeta& m, const serving::Event& ev, bool first, bool logprobs_on,
                 const Tokenizer& tok) {
  json r = base_object(m, m.chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", ev.choice}};
  if (m.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!ev.text.empty() || first) delta["content"] = ev.text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = ev.text;
  }
  choice["logprobs"] = logprobs_on ? logprobs_json(ev.logprobs, m.chat, tok) : json(nullptr);
  choice["finish_reason"] = ev.finish_reason ? json(*ev.finish_reason) : json(nullptr);
  r["choices"] = json::array({std::move(choice)});
  return r;
}

json usage_chunk(const ResponseMeta& m, const serving::Event& done) {
  json r = base_object(m, m.chat ? "chat.completion.chunk" : "text_completion");
  r["choices"] = json::array();
  r["usage"] = usage_json(done.usage);
  r["timings"] = timings_json(done.timings);
  r["cache"] = cache_report_json(done.cache);
  return r;
}

namespace {

void metric(std::string& out, const char* name, const char* type, const char* help, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", value);
  out +=
      StrCat("# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ", buf, "\n");
}

void histogram(std::string& out, const char* name, const char* help, const serving::Histogram& h) {
  out += StrCat("# HELP ", name, " ", help, "\n# TYPE ", name, " histogram\n");
  char buf[64];
  for (size_t i = 0; i < h.bounds.size() && i < h.buckets.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%.17g", h.bounds[i]);
    out += StrCat(name, "_bucket{le=\"", buf, "\"} ", h.buckets[i], "\n");
  }
  out += StrCat(name, "_bucket{le=\"+Inf\"} ", h.count, "\n");
  std::snprintf(buf, sizeof buf, "%.17g", h.sum);
  out += StrCat(name, "_sum ", buf, "\n", name, "_count ", h.count, "\n");
}

}  // namespace

std::string prometheus_text(const serving::MetricsSnapshot& m, const HttpCounters& http) {
  std::string o;
  metric(o, "chimera_requests_total", "counter", "Generation requests admitted.", m.requests_total);
  metric(o, "chimera_requests_failed_total", "counter", "Requests that ended in an error.",
         m.requests_failed);
  metric(o, "chimera_requests_cancelled_total", "counter",
         "Requests cancelled (client gone, timeout, shutdown).", m.requests_cancelled);
  metric(o, "chimera_prompt_tokens_processed_total", "counter",
         "Prompt tokens run through the model.", m.prompt_tokens_processed);
  metric(o, "chimera_prompt_tokens_cached_total", "counter",
         "Prompt tokens taken from the prefix cache without compute.", m.prompt_tokens_cached);
  metric(o, "chimera_prompt_tokens_replayed_total", "counter",
         "Tokens re-run to roll a recurrent state back to a cache match.",
         m.prompt_tokens_replayed);
  metric(o, "chimera_generated_tokens_total", "counter", "Tokens generated.", m.generated_tokens);
  metric(o, "chimera_cache_hits_total", "counter", "Requests that reused a cached prefix.",
         m.cache_hits);
  metric(o, "chimera_cache_evictions_total", "counter", "Prefix cache entries evicted.",
         m.cache_evictions);
  metric(o, "chimera_draft_tokens_total", "counter", "Speculative draft tokens proposed.",
         m.draft_tokens);
  metric(o, "chimera_draft_tokens_accepted_total", "counter", "Speculative draft tokens accepted.",
         m.draft_tokens_accepted);
  metric(o, "chimera_draft_lookup_batches_total", "counter",
         "Lookup batches a draft model ran (n-gram continuations checked in one batch).",
         m.draft_lookup_batches);
  metric(o, "chimera_draft_lookup_proposed_total", "counter",
         "Tokens proposed by those lookups past their first.", m.draft_lookup_proposed);
  metric(o, "chimera_draft_lookup_confirmed_total", "counter",
         "Proposed tokens the draft model confirmed as its own greedy choices.",
         m.draft_lookup_confirmed);
  // Per draft position (0 = the first drafted token of a step): drafted and accepted counts.
  if (!m.draft_tokens_by_position.empty()) {
    o += "# HELP chimera_draft_position_tokens_total Draft tokens proposed at each draft "
         "position.\n# TYPE chimera_draft_position_tokens_total counter\n";
    for (size_t i = 0; i < m.draft_tokens_by_position.size(); ++i)
      o += StrCat("chimera_draft_position_tokens_total{position=\"", i, "\"} ",
                  m.draft_tokens_by_position[i], "\n");
    o += "# HELP chimera_draft_position_accepted_total Draft tokens accepted at each draft "
         "position.\n# TYPE chimera_draft_position_accepted_total counter\n";
    for (size_t i = 0; i < m.draft_accepted_by_position.size(); ++i)
      o += StrCat("chimera_draft_position_accepted_total{position=\"", i, "\"} ",
                  m.draft_accepted_by_position[i], "\n");
  }
  histogram(o, "chimera_time_to_first_token_seconds", "Admission to first generated token.",
            m.time_to_first_token);
  histogram(o, "chimera_inter_token_latency_seconds", "Time between generated tokens.",
            m.inter_token_latency);
  metric(o, "chimera_requests_running", "gauge", "Requests decoding now.", m.requests_running);
  metric(o, "chimera_requests_queued", "gauge", "Requests waiting for admission.",
         m.requests_queued);
  metric(o, "chimera_cache_bytes", "gauge", "Bytes held by the prefix cache.", m.cache_bytes);
  metric(o, "chimera_cache_entries", "gauge", "Prefix cache entries.", m.cache_entries);
  metric(o, "chimera_cache_tokens", "gauge", "Tokens held by the prefix cache.", m.cache_tokens);
  metric(o, "chimera_memory_bytes", "gauge",
         "Bytes in use by KV pages, recurrent states and snapshots.", m.memory_bytes);
  o += "# HELP chimera_http_responses_total HTTP responses by status code.\n"
       "# TYPE chimera_http_responses_total counter\n";
  for (const auto& [status, n] : http.responses_by_status)
    o += StrCat("chimera_http_responses_total{code=\"", status, "\"} ", n, "\n");
  return o;
}

}  // namespace chimera::server
