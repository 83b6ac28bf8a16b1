// Real chat templates (Granite 4.0-H, Llama 3.1 / 3.2, Qwen2.5, ChatML, Mistral v3 with tools,
// Mixtral) applied to a set of conversations, compared byte for byte with Python jinja2 rendering
// them the way transformers' apply_chat_template does (python/make_template_fixtures.py).
#include "runtime/chat_template.h"

#include <cctype>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace chimera {
namespace {

using Json = nlohmann::ordered_json;

const std::string kDir = std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/templates/";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "missing fixture " << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The date the fixture script pins strftime_now() to: 2025-03-09 14:05:07.
std::tm pinned_now() {
  std::tm tm{};
  tm.tm_year = 2025 - 1900;
  tm.tm_mon = 2;
  tm.tm_mday = 9;
  tm.tm_hour = 14;
  tm.tm_min = 5;
  tm.tm_sec = 7;
  std::time_t t = timegm(&tm);
  gmtime_r(&t, &tm);  // weekday and day of year
  return tm;
}

struct RenderCase {
  std::string label;
  Json expected;
};

std::vector<RenderCase> load_cases() {
  std::vector<RenderCase> out;
  for (const auto& e : Json::parse(read_file(kDir + "expected.json"))) {
    std::string label = e["template"].get<std::string>() + "__" +
                        e["conversation"].get<std::string>() +
                        (e["add_generation_prompt"].get<bool>() ? "__gen" : "__nogen");
    for (char& c : label) {
      if (!isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    out.push_back({label, e});
  }
  return out;
}

// gtest prints parameters by name rather than as bytes.
void PrintTo(const RenderCase& c, std::ostream* os) {
  *os << c.label;
}

class ChatTemplateFixture : public ::testing::TestWithParam<RenderCase> {
 protected:
  static void SetUpTestSuite() {
    conversations_ = new Json(Json::parse(read_file(kDir + "conversations.json")));
  }
  static void TearDownTestSuite() {
    delete conversations_;
    conversations_ = nullptr;
  }
  static Json* conversations_;
};
Json* ChatTemplateFixture::conversations_ = nullptr;

TEST_P(ChatTemplateFixture, MatchesTransformersRendering) {
  const Json& e = GetParam().expected;
  const std::string name = e["template"].get<std::string>();
  const std::string tmpl = read_file(kDir + name + ".jinja");
  const Json& special = (*conversations_)["templates"][name];
  const Json* conv = nullptr;
  for (const auto& c : (*conversations_)["conversations"]) {
    if (c["name"] == e["conversation"]) conv = &c;
  }
  ASSERT_NE(conv, nullptr);

  ChatTemplateOptions opts;
  opts.bos_token = special["bos_token"].get<std::string>();
  opts.eos_token = special["eos_token"].get<std::string>();
  if (conv->contains("vars")) opts.extra_vars = (*conv)["vars"];
  opts.now = pinned_now();
  Result<std::string> out = apply_chat_template_json(tmpl, (*conv)["messages"],
                                                     e["add_generation_prompt"].get<bool>(), opts);

  if (e.contains("output")) {
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_EQ(*out, e["output"].get<std::string>());
  } else {
    ASSERT_FALSE(out.ok()) << "rendered: " << *out;
    EXPECT_EQ(out.status().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(out.status().message().find(e["error"].get<std::string>()), std::string::npos)
        << "jinja2 said: " << e["error"] << "\nwe said: " << out.status().message();
  }
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatTemplateFixture, ::testing::ValuesIn(load_cases()),
                         [](const ::testing::TestParamInfo<RenderCase>& info) {
                           return info.param.label;
                         });

TEST(ChatTemplate, FixturesCoverTheRequiredFamilies) {
  std::map<std::string, int> renders;
  for (const auto& c : load_cases()) {
    if (c.expected.contains("output")) ++renders[c.expected["template"].get<std::string>()];
  }
  for (const char* name : {"granite-4.0-h", "llama-3.1", "llama-3.2", "qwen2.5", "qwen3.5",
                           "chatml", "mistral-v3-tools"}) {
    EXPECT_GE(renders[name], 10) << name;
  }
}

TEST(ChatTemplate, MessageStructsMatchTheJsonForm) {
  const std::string tmpl = read_file(kDir + "granite-4.0-h.jinja");
  std::vector<ChatMessage> msgs = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}};
  msgs[2].extra["tool_calls"] =
      Json::array({{{"function", {{"name", "f"}, {"arguments", {{"x", 1}}}}}}});
  Json arr = Json::array();
  arr.push_back({{"role", "system"}, {"content", "Be brief."}});
  arr.push_back({{"role", "user"}, {"content", "Hi"}});
  arr.push_back(
      {{"role", "assistant"}, {"content", "Hello."}, {"tool_calls", msgs[2].extra["tool_calls"]}});
  ChatTemplateOptions opts;
  Result<std::string> a = apply_chat_template(tmpl, msgs, true, opts);
  Result<std::string> b = apply_chat_template_json(tmpl, arr, true, opts);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(*a, *b);
  EXPECT_NE(a->find("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>"),
            std::string::npos)
      << *a;
}

TEST(ChatTemplate, ContentCanBeReplacedThroughExtra) {
  std::vector<ChatMessage> msgs = {{"user", "ignored"}};
  msgs[0].extra["content"] = nullptr;
  Result<std::string> r = apply_chat_template("{{ messages[0].content is none }}", msgs, false, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "True");
}

TEST(ChatTemplate, StrftimeNowUsesTheInjectedDate) {
  ChatTemplateOptions opts;
  opts.now = pinned_now();
  Result<std::string> r = apply_chat_template("{{ strftime_now('%d %b %Y') }}", {}, false, opts);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "09 Mar 2025");
}

TEST(ChatTemplate, BadInputGetsClearErrors) {
  ChatTemplateOptions opts;
  std::vector<ChatMessage> bad_utf8 = {{"user", std::string("caf\xc3")}};
  Result<std::string> r = apply_chat_template("{{ messages }}", bad_utf8, false, opts);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("messages[0].content"), std::string::npos)
      << r.status().message();

  r = apply_chat_template_json("{{ messages }}", Json::object(), false, opts);
  EXPECT_FALSE(r.ok());
  r = apply_chat_template_json("{{ messages }}", Json::array({1}), false, opts);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("message 0"), std::string::npos);

  Json deep = Json::array();
  for (int i = 0; i < 1000; ++i) deep = Json::array({deep});
  opts.extra_vars = {{"deep", deep}};
  r = apply_chat_template_json("x", Json::array(), false, opts);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nests deeper"), std::string::npos);

  r = apply_chat_template("{% for m in messages %}", {}, false, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kFormat);
  EXPECT_NE(r.status().message().find("line 1"), std::string::npos);
}

}  // namespace
}  // namespace chimera
