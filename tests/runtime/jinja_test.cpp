// The Jinja interpreter against Python's jinja2: every case in jinja_cases.json was rendered by
// jinja2 3.1 in HF's chat-template environment (python/make_template_fixtures.py); the C++ render
// must match byte for byte, and fail where jinja2 failed.
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/jinja/template.h"

namespace chimera::jinja {
namespace {

using Json = nlohmann::ordered_json;

Json load_json(const std::string& rel) {
  std::ifstream f(std::string(CHIMERA_SOURCE_DIR) + "/" + rel, std::ios::binary);
  EXPECT_TRUE(f.good()) << "missing fixture " << rel;
  std::stringstream ss;
  ss << f.rdbuf();
  return Json::parse(ss.str());
}

struct FeatureCase {
  std::string name;
  Json data;
};

std::vector<FeatureCase> load_cases() {
  std::vector<FeatureCase> out;
  for (const auto& c : load_json("tests/fixtures/templates/jinja_cases.json")) {
    out.push_back({c["name"].get<std::string>(), c});
  }
  return out;
}

// The fixture script pins strftime_now to 2025-03-09 14:05:07.
Value pinned_strftime_now() {
  return Value::callable("strftime_now", [](CallArgs& a) {
    std::tm tm{};
    tm.tm_year = 2025 - 1900;
    tm.tm_mon = 2;
    tm.tm_mday = 9;
    tm.tm_hour = 14;
    tm.tm_min = 5;
    tm.tm_sec = 7;
    std::time_t t = timegm(&tm);  // fills in the weekday
    gmtime_r(&t, &tm);
    char buf[256];
    size_t n = std::strftime(buf, sizeof(buf), a.positional.at(0).str().c_str(), &tm);
    return Value(std::string(buf, n));
  });
}

// gtest prints parameters by name rather than as bytes.
void PrintTo(const FeatureCase& c, std::ostream* os) {
  *os << c.name;
}

class JinjaFeature : public ::testing::TestWithParam<FeatureCase> {};

TEST_P(JinjaFeature, MatchesPythonJinja2) {
  const Json& c = GetParam().data;
  const std::string source = c["template"].get<std::string>();
  ValueMap vars;
  for (auto it = c["vars"].begin(); it != c["vars"].end(); ++it)
    vars.set(it.key(), Value::from_json(it.value()));
  vars.set("strftime_now", pinned_strftime_now());

  Result<Template> tmpl = Template::parse(source);
  Result<std::string> out = tmpl.ok() ? tmpl->render(vars) : Result<std::string>(tmpl.status());
  if (c.contains("output")) {
    ASSERT_TRUE(out.ok()) << "template: " << source << "\nerror: " << out.status().ToString();
    EXPECT_EQ(*out, c["output"].get<std::string>()) << "template: " << source;
    return;
  }
  // jinja2 failed: so must we. Syntax errors are reported at parse time with our own wording; run
  // time errors carry jinja2's message (raise_exception's verbatim).
  ASSERT_FALSE(out.ok()) << "template: " << source << "\nrendered: " << *out;
  const std::string type = c["error_type"].get<std::string>();
  const std::string msg = out.status().message();
  if (type == "TemplateSyntaxError") {
    EXPECT_EQ(out.status().code(), ErrorCode::kFormat) << msg;
    EXPECT_FALSE(tmpl.ok()) << "syntax errors must surface when parsing";
  } else {
    EXPECT_EQ(out.status().code(), ErrorCode::kInvalidArgument) << msg;
    EXPECT_NE(msg.find(c["error"].get<std::string>()), std::string::npos)
        << "jinja2 said: " << c["error"] << "\nwe said: " << msg;
  }
  EXPECT_NE(msg.find("line 1"), std::string::npos) << "errors name the template line: " << msg;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, JinjaFeature, ::testing::ValuesIn(load_cases()),
                         [](const ::testing::TestParamInfo<FeatureCase>& info) {
                           return info.param.name;
                         });

// ---- behaviour beyond the fixture cases ----

Result<std::string> render(const std::string& src, const ValueMap& vars = {}) {
  Result<Template> t = Template::parse(src);
  if (!t.ok()) return t.status();
  return t->render(vars);
}

TEST(Jinja, ErrorsNameLineAndColumn) {
  Result<std::string> r = render("line one\n{{ 'a' }}\n  {{ x + }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kFormat);
  EXPECT_NE(r.status().message().find("line 3, column 10"), std::string::npos)
      << r.status().message();

  r = render("ok\n{{ 'a' + 1 }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("line 2"), std::string::npos) << r.status().message();
}

TEST(Jinja, UnsupportedFeaturesAreNamed) {
  Result<std::string> r = render("{{ 'x'|wordwrap(3) }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kUnsupported);
  EXPECT_NE(r.status().message().find("wordwrap"), std::string::npos) << r.status().message();

  r = render("{% include 'other.jinja' %}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kUnsupported);
  EXPECT_NE(r.status().message().find("include"), std::string::npos) << r.status().message();

  r = render("{{ x is prime }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kUnsupported);
}

TEST(Jinja, RaisedMessagePassesThrough) {
  Result<std::string> r = render("{{ raise_exception('Only user and assistant roles!') }}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("Only user and assistant roles!"), std::string::npos);
}

TEST(Jinja, MalformedTemplatesFailCleanly) {
  const char* bad[] = {"{{",
                       "{% if %}",
                       "{{ 'unterminated }}",
                       "{% for x in %}{% endfor %}",
                       "{{ (1, 2 }}",
                       "{% endif %}",
                       "{{ a[} }}",
                       "{% set = 1 %}",
                       "{# open",
                       "{{ 1 +* 2 }}",
                       "{% macro m( %}",
                       "{{ x | }}",
                       "{{ 'a\\x' }}",
                       "{{ ] }}",
                       "{% if true %}{% else %}{% else %}{% endif %}"};
  for (const char* src : bad) {
    Result<std::string> r = render(src);
    EXPECT_FALSE(r.ok()) << src;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), ErrorCode::kFormat) << src << ": " << r.status().message();
    }
  }
}

TEST(Jinja, DeepNestingIsRefusedNotACrash) {
  std::string deep = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  Result<std::string> r = render(deep);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("too deep"), std::string::npos) << r.status().message();

  r = render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nest too deeply"), std::string::npos)
      << r.status().message();
}

TEST(Jinja, RangeIsBoundedLikeTheSandbox) {
  Result<std::string> r = render("{% for i in range(1000000) %}{% endfor %}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("MAX_RANGE"), std::string::npos);
}

TEST(Jinja, TemplateRendersRepeatedlyWithFreshState) {
  Result<Template> t = Template::parse(
      "{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n "
      "}}");
  ASSERT_TRUE(t.ok());
  ValueMap vars;
  vars.set("xs", Value::list({Value(1), Value(2), Value(3)}));
  for (int i = 0; i < 3; ++i) {
    Result<std::string> r = t->render(vars);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(*r, "6");
  }
}

TEST(Jinja, OutputSizeIsBounded) {
  Result<Template> t = Template::parse("{% for i in range(100) %}{{ 'x' * 1000 }}{% endfor %}");
  ASSERT_TRUE(t.ok());
  RenderLimits limits;
  limits.max_output_bytes = 10000;
  Result<std::string> r = t->render({}, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("size limit"), std::string::npos);
}

TEST(Jinja, RunawayDataAndStringsAreRefused) {
  Result<std::string> r = render(
      "{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor "
      "%}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nests deeper"), std::string::npos) << r.status().message();

  r = render("{% set ns = namespace() %}{% set ns.me = [ns] %}{{ ns }}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cannot contain itself"), std::string::npos);

  r = render(
      "{% set ns = namespace(s='xx') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s "
      "%}{% endfor %}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("64 MiB"), std::string::npos) << r.status().message();

  r = render("{{ 'x' * 9223372036854775807 }}");
  ASSERT_FALSE(r.ok());
  r = render("{{ 'a\nb'|indent(1000000000) }}");
  ASSERT_FALSE(r.ok());
  r = render("{{ [1]|tojson(indent=1000000) }}");
  ASSERT_FALSE(r.ok());
}

// Mutated real templates: parsing and rendering return a Status, never crash, and whatever they
// render is valid UTF-8.
TEST(Jinja, MutatedTemplatesNeverCrash) {
  const char* names[] = {"granite-4.0-h", "llama-3.1", "qwen2.5", "mistral-v3-tools"};
  const char* pieces[] = {"{{",     "}}",    "{%",  "%}", "{#", "-",  "(",  ")",
                          "[",      "]",     "'",   "\"", "|",  ".",  "if", "for",
                          "endfor", "endif", "not", "~",  "*",  "**", ",",  ":"};
  ValueMap vars;
  Json msgs = Json::parse(R"([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                              {"role": "assistant", "content": "a", "tool_calls": []}])");
  vars.set("messages", Value::from_json(msgs));
  vars.set("add_generation_prompt", Value(true));
  uint64_t rng = 12345;
  auto next = [&rng](uint64_t n) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (rng >> 33) % n;
  };
  int rendered = 0, failed = 0;
  for (const char* name : names) {
    std::ifstream f(std::string(CHIMERA_SOURCE_DIR) + "/tests/fixtures/templates/" + name +
                    ".jinja");
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string base = ss.str();
    ASSERT_FALSE(base.empty()) << name;
    for (int iter = 0; iter < 150; ++iter) {
      std::string src = base;
      for (int m = 0; m < 3; ++m) {
        size_t pos = next(src.size());
        if (next(2) == 0) {
          src.erase(pos, 1 + next(8));
        } else {
          src.insert(pos, pieces[next(sizeof(pieces) / sizeof(pieces[0]))]);
        }
      }
      Result<Template> t = Template::parse(src);
      Result<std::string> r = t.ok() ? t->render(vars) : Result<std::string>(t.status());
      if (r.ok()) {
        ++rendered;
        EXPECT_TRUE(utf8_valid(*r));
      } else {
        ++failed;
        EXPECT_FALSE(r.status().message().empty());
      }
    }
  }
  EXPECT_GT(failed, 0);  // the mutations did break templates (the test exercises error paths)
}

TEST(Jinja, InvalidUtf8TemplateIsRejected) {
  Result<Template> t = Template::parse(std::string("ok \xff\xfe"));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), ErrorCode::kFormat);
}

}  // namespace
}  // namespace chimera::jinja
