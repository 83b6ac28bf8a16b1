#include "runtime/chat_template.h"

#include <locale.h>

#include "runtime/jinja/template.h"
#include "runtime/jinja/value.h"

namespace chimera {

namespace {

constexpr int kMaxJsonDepth = 128;

// Strings must be UTF-8 (Python would never have decoded them otherwise); nesting is bounded so
// conversion and printing cannot exhaust the stack.
Status check_json(const nlohmann::ordered_json& j, const std::string& where, int depth) {
  if (depth > kMaxJsonDepth)
    return Error(ErrorCode::kInvalidArgument, where, " nests deeper than ", kMaxJsonDepth);
  if (j.is_string() && !jinja::utf8_valid(j.get_ref<const std::string&>())) {
    return Error(ErrorCode::kInvalidArgument, where, " is not valid UTF-8");
  }
  if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      CHIMERA_RETURN_IF_ERROR(check_json(j[i], StrCat(where, "[", i, "]"), depth + 1));
    }
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!jinja::utf8_valid(it.key()))
        return Error(ErrorCode::kInvalidArgument, where, " has a key that is not valid UTF-8");
      CHIMERA_RETURN_IF_ERROR(check_json(it.value(), StrCat(where, ".", it.key()), depth + 1));
    }
  }
  return Status::Ok();
}

std::string format_time(const std::string& fmt, const std::tm& tm) {
  static locale_t c_locale = newlocale(LC_ALL_MASK, "C", static_cast<locale_t>(nullptr));
  if (fmt.empty()) return "";
  std::vector<char> buf(256 + fmt.size() * 16);
  size_t n = c_locale ? strftime_l(buf.data(), buf.size(), fmt.c_str(), &tm, c_locale)
                      : std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
  return std::string(buf.data(), n);
}

}  // namespace

Result<std::string> apply_chat_template_json(const std::string& tmpl,
                                             const nlohmann::ordered_json& messages,
                                             bool add_generation_prompt,
                                             const ChatTemplateOptions& opts) {
  if (!messages.is_array())
    return Error(ErrorCode::kInvalidArgument, "messages must be a JSON array");
  for (size_t i = 0; i < messages.size(); ++i) {
    if (!messages[i].is_object())
      return Error(ErrorCode::kInvalidArgument, "message ", i, " is not a JSON object");
  }
  CHIMERA_RETURN_IF_ERROR(check_json(messages, "messages", 0));
  if (!opts.extra_vars.is_object())
    return Error(ErrorCode::kInvalidArgument, "extra_vars must be a JSON object");
  CHIMERA_RETURN_IF_ERROR(check_json(opts.extra_vars, "extra_vars", 0));
  if (!jinja::utf8_valid(opts.bos_token) || !jinja::utf8_valid(opts.eos_token)) {
    return Error(ErrorCode::kInvalidArgument, "bos/eos token is not valid UTF-8");
  }

  CHIMERA_ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::parse(tmpl));

  // The variables transformers passes: tools and documents are None unless given.
  jinja::ValueMap vars;
  try {
    vars.set("messages", jinja::Value::from_json(messages));
    vars.set("tools", jinja::Value::none());
    vars.set("documents", jinja::Value::none());
    vars.set("add_generation_prompt", jinja::Value(add_generation_prompt));
    vars.set("bos_token", jinja::Value(opts.bos_token));
    vars.set("eos_token", jinja::Value(opts.eos_token));
    std::optional<std::tm> now = opts.now;
    vars.set("strftime_now", jinja::Value::callable("strftime_now", [now](jinja::CallArgs& a) {
               if (a.positional.size() != 1 || !a.positional[0].is_string() || !a.named.empty()) {
                 jinja::fail("strftime_now() expects one format string");
               }
               std::tm tm{};
               if (now) {
                 tm = *now;
               } else {
                 std::time_t t = std::time(nullptr);
                 localtime_r(&t, &tm);
               }
               return jinja::Value(format_time(a.positional[0].str(), tm));
             }));
    for (auto it = opts.extra_vars.begin(); it != opts.extra_vars.end(); ++it) {
      vars.set(it.key(), jinja::Value::from_json(it.value()));
    }
  } catch (const jinja::JinjaError& err) {
    return Error(ErrorCode::kInvalidArgument, err.message);
  }
  return t.render(vars);
}

Result<std::string> apply_chat_template(const std::string& tmpl,
                                        const std::vector<ChatMessage>& msgs,
                                        bool add_generation_prompt,
                                        const ChatTemplateOptions& opts) {
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (size_t i = 0; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (!m.extra.is_object())
      return Error(ErrorCode::kInvalidArgument, "message ", i, ": extra must be a JSON object");
    nlohmann::ordered_json obj = nlohmann::ordered_json::object();
    obj["role"] = m.role;
    obj["content"] = m.content;
    for (auto it = m.extra.begin(); it != m.extra.end(); ++it) obj[it.key()] = it.value();
    arr.push_back(std::move(obj));
  }
  return apply_chat_template_json(tmpl, arr, add_generation_prompt, opts);
}

}  // namespace chimera
