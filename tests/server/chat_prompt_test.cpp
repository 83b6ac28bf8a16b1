// Chat prompts with message boundaries (on the default model's template and tokenizer), and the
// response JSON: stream chunks, usage, timings, logprobs, Prometheus text.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "api_response.h"
#include "chat_prompt.h"
#include "gguf/gguf_file.h"
#include "runtime/chat_template.h"
#include "runtime/generate.h"

namespace chimera::server {
namespace {

struct DefaultModel {
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tok;
  std::string tmpl;
};

const DefaultModel& default_model() {
  static DefaultModel m = [] {
    DefaultModel d;
    auto f = GgufFile::open(std::string(CHIMERA_SOURCE_DIR) + "/models/default.gguf");
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    d.file = std::move(f).value();
    auto t = Tokenizer::from_gguf(*d.file);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    d.tok = std::make_unique<Tokenizer>(std::move(t).value());
    d.tmpl = chat_template_of(*d.file);
    return d;
  }();
  return m;
}

TEST(ChatPrompt, BoundariesAreTheTokenCountsOfEachMessagePrefix) {
  const auto& m = default_model();
  const nlohmann::ordered_json msgs = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "You answer in the words of the King James Bible."},
    {"role": "user", "content": "Who made the heaven and the earth?"},
    {"role": "assistant", "content": "In the beginning God created the heaven and the earth."},
    {"role": "user", "content": "And what was upon the face of the deep?"}])");
  auto p = render_chat_prompt(*m.tok, m.tmpl, msgs, nlohmann::ordered_json::object());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->boundaries.size(), msgs.size());
  // Each boundary is the length of the prefix conversation's own tokenization, which is a
  // prefix of the whole prompt; the generation prompt follows the last one.
  for (size_t k = 1; k <= msgs.size(); ++k) {
    nlohmann::ordered_json prefix(msgs.begin(), msgs.begin() + k);
    ChatTemplateOptions opts;
    opts.bos_token = m.tok->token_text(m.tok->bos());
    opts.eos_token = m.tok->token_text(m.tok->eos());
    auto text = apply_chat_template_json(m.tmpl, prefix, false, opts);
    ASSERT_TRUE(text.ok());
    auto ids = tokenize_prompt_text(*m.tok, *text);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(p->boundaries[k - 1], ids->size()) << k;
    EXPECT_TRUE(std::equal(ids->begin(), ids->end(), p->tokens.begin()));
  }
  EXPECT_LT(p->boundaries.back(), p->tokens.size());
  EXPECT_TRUE(std::is_sorted(p->boundaries.begin(), p->boundaries.end()));
  auto again = tokenize_prompt_text(*m.tok, p->text);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, p->tokens);
}

TEST(ChatPrompt, TemplateErrorsAreReported) {
  const auto& m = default_model();
  auto p = render_chat_prompt(*m.tok, "{{ raise_exception('roles must alternate') }}",
                              nlohmann::ordered_json::parse(R"([{"role":"user","content":"a"}])"),
                              nlohmann::ordered_json::object());
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("roles must alternate"), std::string::npos);
}

serving::Event done_event() {
  serving::Event ev;
  ev.kind = serving::Event::Kind::kDone;
  ev.usage = {.prompt_tokens = 10, .completion_tokens = 4, .cached_tokens = 6};
  ev.timings.prompt_reused = 6;
  ev.timings.prompt_processed = 4;
  ev.timings.prompt_replayed = 2;
  ev.timings.prompt_ms = 8;
  ev.timings.predicted_n = 4;
  ev.timings.predicted_ms = 20;
  ev.cache = {.matched = 8, .reused = 6, .reason = "diverged at token 8 (message 2)"};
  return ev;
}

TEST(ApiResponse, CompletionCarriesUsageTimingsAndCache) {
  const auto& m = default_model();
  ResponseMeta meta{"chatcmpl-1", 123, "default", true};
  std::vector<ChoiceResult> choices(2);
  choices[0] = {"And God said", {}, "length"};
  choices[1] = {"Let there be", {}, "stop"};
  const nlohmann::json r = completion_response(meta, choices, done_event(), -1, *m.tok);
  EXPECT_EQ(r["object"], "chat.completion");
  ASSERT_EQ(r["choices"].size(), 2u);
  EXPECT_EQ(r["choices"][1]["index"], 1);
  EXPECT_EQ(r["choices"][1]["message"]["content"], "Let there be");
  EXPECT_EQ(r["choices"][1]["message"]["role"], "assistant");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(r["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(r["usage"]["total_tokens"], 14);
  EXPECT_EQ(r["usage"]["prompt_tokens_details"]["cached_tokens"], 6);
  EXPECT_EQ(r["timings"]["prompt_processed"], 4);
  EXPECT_EQ(r["timings"]["prompt_replayed"], 2);
  EXPECT_EQ(r["timings"]["prompt_reused"], 6);
  EXPECT_DOUBLE_EQ(r["timings"]["predicted_per_second"].get<double>(), 200.0);
  EXPECT_EQ(r["cache"]["reason"], "diverged at token 8 (message 2)");
}

TEST(ApiResponse, ChunksAndLogprobs) {
  const auto& m = default_model();
  ResponseMeta meta{"chatcmpl-1", 123, "default", true};
  serving::Event ev;
  ev.choice = 1;
  ev.text = "God";
  const TokenId god = m.tok->encode(" God", {.add_special = false}).value().at(0);
  ev.logprobs = {{god, " God", -0.25f, {{god, -0.25f}, {5, -3.0f}}}};
  nlohmann::json first = delta_chunk(meta, ev, true, true, *m.tok);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["index"], 1);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["choices"][0]["delta"]["content"], "God");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const auto& lp = first["choices"][0]["logprobs"]["content"][0];
  EXPECT_EQ(lp["token"], " God");
  EXPECT_EQ(lp["id"], god);
  EXPECT_EQ(lp["top_logprobs"][1]["id"], 5);
  EXPECT_FLOAT_EQ(lp["logprob"].get<float>(), -0.25f);
  EXPECT_EQ(lp["bytes"].size(), 4u);
  EXPECT_EQ(lp["top_logprobs"].size(), 2u);
  EXPECT_EQ(lp["top_logprobs"][1]["token"], m.tok->piece(5, true));
  ev.finish_reason = "stop";
  nlohmann::json last = delta_chunk(meta, ev, false, false, *m.tok);
  EXPECT_FALSE(last["choices"][0]["delta"].contains("role"));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(last["choices"][0]["logprobs"].is_null());
  nlohmann::json usage = usage_chunk(meta, done_event());
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 4);

  // Legacy completions logprobs: parallel lists with text offsets.
  nlohmann::json legacy = logprobs_json(ev.logprobs, false, *m.tok, 7);
  EXPECT_EQ(legacy["tokens"][0], " God");
  EXPECT_EQ(legacy["text_offset"][0], 7);
  EXPECT_EQ(legacy["top_logprobs"][0].size(), 2u);

  // Model text that is not valid UTF-8 is replaced, never thrown on.
  nlohmann::json bad = {{"text", std::string("\xe2\x82")}};
  EXPECT_EQ(sse_event(bad), "data: {\"text\":\"\xef\xbf\xbd\"}\n\n");
}

TEST(ApiResponse, PrometheusText) {
  serving::MetricsSnapshot s;
  s.requests_total = 3;
  s.prompt_tokens_cached = 12;
  s.time_to_first_token = {{0.1, 1.0}, {1, 2}, 3, 2.5};
  s.requests_running = 2;
  HttpCounters http;
  http.responses_by_status[200] = 5;
  http.responses_by_status[503] = 1;
  const std::string t = prometheus_text(s, http);
  for (const char* line :
       {"# TYPE chimera_requests_total counter\nchimera_requests_total 3\n",
        "chimera_prompt_tokens_cached_total 12\n",
        "# TYPE chimera_time_to_first_token_seconds histogram\n",
        "chimera_time_to_first_token_seconds_bucket{le=\"0.10000000000000001\"} 1\n",
        "chimera_time_to_first_token_seconds_bucket{le=\"1\"} 2\n",
        "chimera_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n",
        "chimera_time_to_first_token_seconds_sum 2.5\n",
        "chimera_time_to_first_token_seconds_count 3\n",
        "# TYPE chimera_inter_token_latency_seconds histogram\n",
        "# TYPE chimera_requests_running gauge\nchimera_requests_running 2\n",
        "chimera_requests_queued 0\n", "chimera_cache_bytes 0\n", "chimera_cache_entries 0\n",
        "chimera_memory_bytes 0\n", "chimera_prompt_tokens_processed_total 0\n",
        "chimera_prompt_tokens_replayed_total 0\n", "chimera_generated_tokens_total 0\n",
        "chimera_http_responses_total{code=\"503\"} 1\n"})
    EXPECT_NE(t.find(line), std::string::npos) << line;
}

}  // namespace
}  // namespace chimera::server
