// The HTTP API's request parsing: valid bodies become the fields the engine gets; every kind of
// bad body is refused with a 400 whose `param` names the field at fault.
#include <gtest/gtest.h>

#include <string>

#include "api_request.h"

namespace chimera::server {
namespace {

template <typename T>
ApiError error_of(const Parsed<T>& p) {
  EXPECT_FALSE(p.ok());
  return p.ok() ? ApiError{} : p.error();
}

TEST(ApiRequest, ChatFieldsReachTheRequest) {
  auto p = parse_chat_request(R"({
    "model": "x", "messages": [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                            {"type": "text", "text": "there"}]}],
    "temperature": 0.5, "top_p": 0.9, "top_k": 7, "min_p": 0.1, "seed": 42,
    "stop": ["\n", "END"], "presence_penalty": 0.5, "frequency_penalty": -0.5,
    "repeat_penalty": 1.1, "n": 2, "logprobs": true, "top_logprobs": 3,
    "max_completion_tokens": 17, "stream": true, "stream_options": {"include_usage": true},
    "tools": [{"type": "function"}], "chat_template_kwargs": {"enable_thinking": false},
    "user": "ignored"})");
  ASSERT_TRUE(p.ok()) << p.error().message;
  const ChatRequest& r = p.value();
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1]["content"], "Hi there");
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.gen.sampling.top_p, 0.9f);
  EXPECT_EQ(r.gen.sampling.top_k, 7);
  EXPECT_FLOAT_EQ(r.gen.sampling.min_p, 0.1f);
  EXPECT_EQ(r.gen.sampling.seed, 42u);
  EXPECT_TRUE(r.gen.seed_given);
  EXPECT_EQ(r.gen.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_FLOAT_EQ(r.gen.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.gen.sampling.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(r.gen.sampling.repeat_penalty, 1.1f);
  EXPECT_EQ(r.gen.n, 2);
  EXPECT_EQ(r.gen.top_logprobs, 3);
  EXPECT_EQ(r.gen.max_tokens, 17);
  EXPECT_TRUE(r.gen.stream);
  EXPECT_TRUE(r.gen.include_usage);
  EXPECT_TRUE(r.template_vars.contains("tools"));
  EXPECT_EQ(r.template_vars["enable_thinking"], false);
}

TEST(ApiRequest, DefaultsWhenFieldsAreAbsent) {
  auto p = parse_chat_request(R"({"messages": [{"role": "user", "content": "Hi"}]})");
  ASSERT_TRUE(p.ok());
  const SamplingParams defaults;
  EXPECT_EQ(p.value().gen.sampling.temperature, defaults.temperature);
  EXPECT_EQ(p.value().gen.max_tokens, -1);
  EXPECT_EQ(p.value().gen.top_logprobs, -1);
  EXPECT_FALSE(p.value().gen.seed_given);
  EXPECT_FALSE(p.value().gen.stream);
  EXPECT_EQ(p.value().gen.n, 1);
  // A single stop string; logprobs without top_logprobs means the token's own logprob only.
  auto q = parse_chat_request(
      R"({"messages": [{"role": "user", "content": "Hi"}], "stop": "x", "logprobs": true,
          "seed": -1, "max_tokens": 5.0})");
  ASSERT_TRUE(q.ok()) << q.error().message;
  EXPECT_EQ(q.value().gen.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(q.value().gen.top_logprobs, 0);
  EXPECT_FALSE(q.value().gen.seed_given);
  EXPECT_EQ(q.value().gen.max_tokens, 5);
}

TEST(ApiRequest, MalformedJsonIsA400) {
  for (const char* body :
       {"", "{", "{\"messages\": [}", "nul", "{\"a\": 1,}", "\xff", "{\"n\": 1e400}"}) {
    ApiError e = error_of(parse_chat_request(body));
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_NE(e.message.find("malformed JSON"), std::string::npos) << e.message;
  }
  ApiError e = error_of(parse_chat_request("[1, 2]"));
  EXPECT_NE(e.message.find("must be a JSON object"), std::string::npos) << e.message;
  std::string deep(100000, '[');
  e = error_of(parse_chat_request(deep));
  EXPECT_NE(e.message.find("nests deeper"), std::string::npos) << e.message;
}

TEST(ApiRequest, ErrorsNameTheField) {
  const std::string msgs = R"("messages": [{"role": "user", "content": "Hi"}])";
  const std::pair<std::string, std::string> cases[] = {
      {R"({"messages": "hi"})", "messages"},
      {R"({"messages": []})", "messages"},
      {R"({})", "messages"},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 5}]})",
       "messages[1].content"},
      {R"({"messages": [{"role": "robot", "content": "a"}]})", "messages[0].role"},
      {R"({"messages": [{"content": "a"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "user"}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "messages[0].content[0].type"},
      {"{" + msgs + R"(, "temperature": "hot"})", "temperature"},
      {"{" + msgs + R"(, "temperature": 3})", "temperature"},
      {"{" + msgs + R"(, "top_p": -0.1})", "top_p"},
      {"{" + msgs + R"(, "top_k": 1.5})", "top_k"},
      {"{" + msgs + R"(, "top_k": -3})", "top_k"},
      {"{" + msgs + R"(, "min_p": true})", "min_p"},
      {"{" + msgs + R"(, "seed": "7"})", "seed"},
      {"{" + msgs + R"(, "seed": 1.5})", "seed"},
      {"{" + msgs + R"(, "max_tokens": 0})", "max_tokens"},
      {"{" + msgs + R"(, "max_tokens": "10"})", "max_tokens"},
      {"{" + msgs + R"(, "max_completion_tokens": 99999999999})", "max_completion_tokens"},
      {"{" + msgs + R"(, "stop": 5})", "stop"},
      {"{" + msgs + R"(, "stop": ["a", 5]})", "stop[1]"},
      {"{" + msgs + R"(, "stop": ["a", ""]})", "stop[1]"},
      {"{" + msgs + R"(, "n": 0})", "n"},
      {"{" + msgs + R"(, "n": 1000})", "n"},
      {"{" + msgs + R"(, "logprobs": 1})", "logprobs"},
      {"{" + msgs + R"(, "top_logprobs": 2})", "top_logprobs"},
      {"{" + msgs + R"(, "logprobs": true, "top_logprobs": 21})", "top_logprobs"},
      {"{" + msgs + R"(, "stream": "yes"})", "stream"},
      {"{" + msgs + R"(, "stream_options": {"include_usage": 1}})", "stream_options.include_usage"},
      {"{" + msgs + R"(, "presence_penalty": 2.5})", "presence_penalty"},
      {"{" + msgs + R"(, "frequency_penalty": null, "repeat_penalty": 0})", "repeat_penalty"},
      {"{" + msgs + R"(, "logit_bias": {"5": 1}})", "logit_bias"},
      {"{" + msgs + R"(, "response_format": {"type": "json_object"}})", "response_format.type"},
      {"{" + msgs + R"(, "model": 3})", "model"},
      {"{" + msgs + R"(, "tools": {}})", "tools"},
  };
  for (const auto& [body, field] : cases) {
    ApiError e = error_of(parse_chat_request(body));
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, field) << body << " -> " << e.message;
    EXPECT_NE(e.message.find(field), std::string::npos) << e.message;
  }
}

TEST(ApiRequest, CompletionPromptForms) {
  auto a = parse_completion_request(R"({"prompt": "In the beginning", "logprobs": 2})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a.value().prompt_text, "In the beginning");
  EXPECT_EQ(a.value().gen.top_logprobs, 2);
  auto b = parse_completion_request(R"({"prompt": [5, 6, 7]})");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b.value().prompt_tokens, (std::vector<TokenId>{5, 6, 7}));
  EXPECT_FALSE(b.value().prompt_text);
  auto c = parse_completion_request(R"({"prompt": [[1, 2]]})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.value().prompt_tokens, (std::vector<TokenId>{1, 2}));
  auto d = parse_completion_request(R"({"prompt": ["one"]})");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d.value().prompt_text, "one");

  EXPECT_EQ(error_of(parse_completion_request(R"({"prompt": ["a", "b"]})")).param, "prompt");
  EXPECT_EQ(error_of(parse_completion_request(R"({"prompt": [1, -2]})")).param, "prompt[1]");
  EXPECT_EQ(error_of(parse_completion_request(R"({"prompt": [1, 2.5]})")).param, "prompt[1]");
  EXPECT_EQ(error_of(parse_completion_request(R"({"prompt": 7})")).param, "prompt");
  EXPECT_EQ(error_of(parse_completion_request(R"({"prompt": ""})")).param, "prompt");
  EXPECT_EQ(error_of(parse_completion_request(R"({})")).param, "prompt");
  EXPECT_EQ(error_of(parse_completion_request(R"({"prompt": "a", "echo": true})")).param, "echo");
  EXPECT_EQ(error_of(parse_completion_request(R"({"prompt": "a", "logprobs": true})")).param,
            "logprobs");
}

TEST(ApiRequest, TokenizeAndDetokenize) {
  auto t =
      parse_tokenize_request(R"({"content": "abc", "add_special": true, "with_pieces": true})");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t.value().content, "abc");
  EXPECT_TRUE(t.value().add_special);
  EXPECT_TRUE(t.value().parse_special);
  EXPECT_TRUE(t.value().with_pieces);
  EXPECT_EQ(error_of(parse_tokenize_request(R"({"content": 1})")).param, "content");
  EXPECT_EQ(error_of(parse_tokenize_request(R"({"content": "a", "add_special": "no"})")).param,
            "add_special");
  auto d = parse_detokenize_request(R"({"tokens": [1, 2, 3]})");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value().tokens.size(), 3u);
  EXPECT_EQ(error_of(parse_detokenize_request(R"({"tokens": [1, "2"]})")).param, "tokens[1]");
  EXPECT_EQ(error_of(parse_detokenize_request(R"({"tokens": 3})")).param, "tokens");
}

TEST(ApiRequest, ErrorBodyHasOpenAIShape) {
  ApiError e = invalid_field("temperature", "bad");
  e.extra = {{"n_ctx", 10}};
  const nlohmann::json j = error_body(e);
  EXPECT_EQ(j["error"]["message"], "bad");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_TRUE(j["error"]["code"].is_null());
  EXPECT_EQ(j["error"]["n_ctx"], 10);
}

}  // namespace
}  // namespace chimera::server
