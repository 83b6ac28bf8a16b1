#include "api_request.h"

#include <cmath>
#include <limits>

namespace chimera::server {

using ojson = nlohmann::ordered_json;

nlohmann::json error_body(const ApiError& e) {
  nlohmann::json err = {{"message", e.message}, {"type", e.type}};
  err["param"] = e.param.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.param);
  err["code"] = e.code.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.code);
  for (auto it = e.extra.begin(); it != e.extra.end(); ++it) err[it.key()] = it.value();
  return {{"error", err}};
}

ApiError invalid_field(std::string param, std::string message) {
  ApiError e;
  e.status = 400;
  e.param = std::move(param);
  e.message = std::move(message);
  return e;
}

namespace {

// Deepest nesting of arrays/objects, outside strings; stops counting past the limit.
int json_depth(std::string_view s) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) max_depth = depth;
      if (max_depth > kMaxJsonDepth) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

const char* type_name(const ojson& v) {
  switch (v.type()) {
    case ojson::value_t::null:
      return "null";
    case ojson::value_t::boolean:
      return "a boolean";
    case ojson::value_t::string:
      return "a string";
    case ojson::value_t::array:
      return "an array";
    case ojson::value_t::object:
      return "an object";
    case ojson::value_t::binary:
      return "binary";
    case ojson::value_t::discarded:
      return "discarded";
    default:
      return "a number";
  }
}

ApiError wrong_type(const std::string& field, const char* expected, const ojson& got) {
  return invalid_field(field, StrCat("'", field, "' must be ", expected, ", not ", type_name(got)));
}

// Readers for one optional field of `obj`: absent or null leave `out` unchanged. Each returns
// an error naming the field when the type or range is wrong.
std::optional<ApiError> read_number(const ojson& obj, const char* key, double lo, double hi,
                                    float& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return wrong_type(key, "a number", *it);
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi)
    return invalid_field(key, StrCat("'", key, "' must be between ", lo, " and ", hi, ", got ", v));
  out = static_cast<float>(v);
  return std::nullopt;
}

std::optional<ApiError> read_int(const ojson& obj, const char* key, int64_t lo, int64_t hi,
                                 int64_t& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  // 3.0 is accepted as an integer (JSON does not distinguish), 3.5 is not.
  if (it->is_number_float()) {
    const double d = it->get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || d < -9.2e18 || d > 9.2e18)
      return wrong_type(key, "an integer", *it);
    out = static_cast<int64_t>(d);
  } else if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return invalid_field(key, StrCat("'", key, "' must be at most ", hi, ", got ", u));
    out = static_cast<int64_t>(u);
  } else if (it->is_number_integer()) {
    out = it->get<int64_t>();
  } else {
    return wrong_type(key, "an integer", *it);
  }
  if (out < lo || out > hi)
    return invalid_field(key,
                         StrCat("'", key, "' must be between ", lo, " and ", hi, ", got ", out));
  return std::nullopt;
}

std::optional<ApiError> read_bool(const ojson& obj, const char* key, bool& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return wrong_type(key, "a boolean", *it);
  out = it->get<bool>();
  return std::nullopt;
}

std::optional<ApiError> read_string(const ojson& obj, const char* key, std::string& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) return wrong_type(key, "a string", *it);
  out = it->get<std::string>();
  return std::nullopt;
}

#define RETURN_IF_API_ERROR(expr)                \
  do {                                           \
    if (auto _e = (expr)) return *std::move(_e); \
  } while (0)

constexpr int kMaxStops = 16;
constexpr int kMaxChoices = 16;

// The generation fields both endpoints share. `chat` selects OpenAI's chat conventions
// (logprobs is a boolean plus top_logprobs) over the legacy completions ones (logprobs = N).
std::optional<ApiError> read_generation(const ojson& body, bool chat, GenerationRequest& g) {
  RETURN_IF_API_ERROR(read_string(body, "model", g.model));
  SamplingParams& s = g.sampling;
  RETURN_IF_API_ERROR(read_number(body, "temperature", 0, 2, s.temperature));
  RETURN_IF_API_ERROR(read_number(body, "top_p", 0, 1, s.top_p));
  RETURN_IF_API_ERROR(read_number(body, "min_p", 0, 1, s.min_p));
  RETURN_IF_API_ERROR(read_number(body, "presence_penalty", -2, 2, s.presence_penalty));
  RETURN_IF_API_ERROR(read_number(body, "frequency_penalty", -2, 2, s.frequency_penalty));
  RETURN_IF_API_ERROR(read_number(body, "repeat_penalty", 0, 10, s.repeat_penalty));
  if (body.contains("repeat_penalty") && body["repeat_penalty"].is_number() &&
      s.repeat_penalty <= 0)
    return invalid_field("repeat_penalty", "'repeat_penalty' must be positive (1 = off)");
  int64_t v = 0;
  v = s.top_k;
  RETURN_IF_API_ERROR(read_int(body, "top_k", 0, 1 << 20, v));
  s.top_k = static_cast<int>(v);
  v = s.repeat_last_n;
  RETURN_IF_API_ERROR(read_int(body, "repeat_last_n", 0, 1 << 20, v));
  s.repeat_last_n = static_cast<int>(v);

  if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
    if (it->is_number_unsigned()) {
      s.seed = it->get<uint64_t>();
      g.seed_given = true;
    } else if (it->is_number_integer()) {
      const int64_t seed = it->get<int64_t>();
      g.seed_given = seed != -1;  // -1: a random seed, as llama.cpp
      if (g.seed_given) s.seed = static_cast<uint64_t>(seed);
    } else {
      return wrong_type("seed", "an integer", *it);
    }
  }

  // max_completion_tokens is the newer name; it wins when both are given.
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    int64_t m = -2;
    RETURN_IF_API_ERROR(read_int(body, key, 1, std::numeric_limits<int32_t>::max(), m));
    if (m != -2) g.max_tokens = static_cast<int32_t>(m);
  }
  if (body.contains("n_predict") && !body.contains("max_tokens") &&
      !body.contains("max_completion_tokens")) {
    int64_t m = -1;
    RETURN_IF_API_ERROR(read_int(body, "n_predict", -1, std::numeric_limits<int32_t>::max(), m));
    g.max_tokens = static_cast<int32_t>(m == 0 ? -1 : m);
  }

  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      g.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      if (it->size() > kMaxStops)
        return invalid_field("stop", StrCat("'stop' has ", it->size(), " entries; at most ",
                                            kMaxStops, " are allowed"));
      for (size_t i = 0; i < it->size(); ++i) {
        const auto& e = (*it)[i];
        const std::string field = StrCat("stop[", i, "]");
        if (!e.is_string()) return wrong_type(field, "a string", e);
        g.stop.push_back(e.get<std::string>());
      }
    } else {
      return wrong_type("stop", "a string or an array of strings", *it);
    }
    for (size_t i = 0; i < g.stop.size(); ++i) {
      if (!g.stop[i].empty()) continue;
      const std::string field = it->is_string() ? "stop" : StrCat("stop[", i, "]");
      return invalid_field(field, StrCat("'", field, "' must not be empty"));
    }
  }

  v = 1;
  RETURN_IF_API_ERROR(read_int(body, "n", 1, kMaxChoices, v));
  g.n = static_cast<int>(v);

  if (chat) {
    bool logprobs = false;
    RETURN_IF_API_ERROR(read_bool(body, "logprobs", logprobs));
    int64_t top = -1;
    RETURN_IF_API_ERROR(read_int(body, "top_logprobs", 0, 20, top));
    if (top >= 0 && !logprobs)
      return invalid_field("top_logprobs", "'top_logprobs' requires 'logprobs': true");
    g.top_logprobs = logprobs ? static_cast<int>(std::max<int64_t>(top, 0)) : -1;
  } else {
    int64_t top = -1;
    RETURN_IF_API_ERROR(read_int(body, "logprobs", 0, 20, top));
    g.top_logprobs = static_cast<int>(top);
  }

  RETURN_IF_API_ERROR(read_bool(body, "stream", g.stream));
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return wrong_type("stream_options", "an object", *it);
    if (auto iu = it->find("include_usage"); iu != it->end() && !iu->is_null()) {
      if (!iu->is_boolean()) return wrong_type("stream_options.include_usage", "a boolean", *iu);
      g.include_usage = iu->get<bool>();
    }
  }
  RETURN_IF_API_ERROR(read_bool(body, "ignore_eos", g.ignore_eos));
  int64_t draft_max = -1;  // llama.cpp's speculative.n_max spelled as our --draft-max
  RETURN_IF_API_ERROR(read_int(body, "draft_max", 0, 64, draft_max));
  g.draft_max = static_cast<int32_t>(draft_max);

  // Requests this server cannot honour are refused rather than silently answered differently.
  if (auto it = body.find("logit_bias"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return wrong_type("logit_bias", "an object", *it);
    if (!it->empty()) return invalid_field("logit_bias", "'logit_bias' is not supported");
  }
  if (auto it = body.find("response_format"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return wrong_type("response_format", "an object", *it);
    auto t = it->find("type");
    if (t == it->end() || !t->is_string())
      return invalid_field("response_format.type", "'response_format.type' must be a string");
    if (t->get<std::string>() != "text")
      return invalid_field("response_format.type",
                           StrCat("'response_format.type' is '", t->get<std::string>(),
                                  "': only 'text' is supported"));
  }
  return std::nullopt;
}

// Validates one message; content as a list of text parts is joined.
std::optional<ApiError> read_message(const ojson& m, size_t i, ojson& out) {
  const std::string field = StrCat("messages[", i, "]");
  if (!m.is_object()) return wrong_type(field, "an object", m);
  auto role = m.find("role");
  if (role == m.end())
    return invalid_field(field + ".role", StrCat("'", field, ".role' is missing"));
  if (!role->is_string()) return wrong_type(field + ".role", "a string", *role);
  const std::string r = role->get<std::string>();
  if (r != "system" && r != "user" && r != "assistant" && r != "tool" && r != "developer")
    return invalid_field(field + ".role",
                         StrCat("'", field, ".role' is '", r,
                                "'; expected system, developer, user, assistant or tool"));
  out = m;
  auto content = m.find("content");
  if (content == m.end() || content->is_null()) {
    // Only an assistant message that calls tools may go without content.
    if (r != "assistant" || !m.contains("tool_calls"))
      return invalid_field(field + ".content", StrCat("'", field, ".content' is missing"));
    out["content"] = nullptr;
  } else if (content->is_array()) {
    std::string joined;
    for (size_t j = 0; j < content->size(); ++j) {
      const auto& part = (*content)[j];
      const std::string pf = StrCat(field, ".content[", j, "]");
      if (!part.is_object()) return wrong_type(pf, "an object", part);
      auto type = part.find("type");
      if (type == part.end() || !type->is_string())
        return invalid_field(pf + ".type", StrCat("'", pf, ".type' must be a string"));
      if (type->get<std::string>() != "text")
        return invalid_field(pf + ".type", StrCat("'", pf, ".type' is '", type->get<std::string>(),
                                                  "': only 'text' parts are supported"));
      auto text = part.find("text");
      if (text == part.end() || !text->is_string())
        return invalid_field(pf + ".text", StrCat("'", pf, ".text' must be a string"));
      joined += text->get<std::string>();
    }
    out["content"] = joined;
  } else if (!content->is_string()) {
    return wrong_type(field + ".content", "a string or an array of text parts", *content);
  }
  if (auto name = m.find("name"); name != m.end() && !name->is_null() && !name->is_string())
    return wrong_type(field + ".name", "a string", *name);
  return std::nullopt;
}

std::optional<ApiError> read_messages(const ojson& body, ojson& out) {
  auto it = body.find("messages");
  if (it == body.end()) return invalid_field("messages", "'messages' is missing");
  if (!it->is_array()) return wrong_type("messages", "an array", *it);
  if (it->empty()) return invalid_field("messages", "'messages' must not be empty");
  out = ojson::array();
  for (size_t i = 0; i < it->size(); ++i) {
    ojson m;
    RETURN_IF_API_ERROR(read_message((*it)[i], i, m));
    out.push_back(std::move(m));
  }
  return std::nullopt;
}

std::optional<ApiError> read_template_vars(const ojson& body, ojson& vars) {
  if (auto it = body.find("tools"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return wrong_type("tools", "an array", *it);
    vars["tools"] = *it;
  }
  if (auto it = body.find("chat_template_kwargs"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return wrong_type("chat_template_kwargs", "an object", *it);
    for (auto kv = it->begin(); kv != it->end(); ++kv) vars[kv.key()] = kv.value();
  }
  return std::nullopt;
}

// A token id list; `field` names it in errors.
std::optional<ApiError> read_token_array(const ojson& arr, const std::string& field,
                                         std::vector<TokenId>& out) {
  out.clear();
  out.reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    const auto& t = arr[i];
    const std::string f = StrCat(field, "[", i, "]");
    if (!t.is_number_integer()) return wrong_type(f, "a token id (non-negative integer)", t);
    if (t.is_number_unsigned()
            ? t.get<uint64_t>() > uint64_t(std::numeric_limits<TokenId>::max())
            : (t.get<int64_t>() < 0 || t.get<int64_t>() > std::numeric_limits<TokenId>::max()))
      return invalid_field(f, StrCat("'", f, "' is not a valid token id"));
    out.push_back(static_cast<TokenId>(t.get<int64_t>()));
  }
  return std::nullopt;
}

}  // namespace

Parsed<ojson> parse_json_object(std::string_view body) {
  if (json_depth(body) > kMaxJsonDepth) {
    ApiError e =
        invalid_field("", StrCat("request body nests deeper than ", kMaxJsonDepth, " levels"));
    return e;
  }
  ojson j;
  try {
    j = ojson::parse(body.begin(), body.end());
  } catch (const ojson::exception& e) {  // parse_error, or out_of_range for 1e400
    ApiError err;
    err.message = StrCat("malformed JSON: ", e.what());
    err.code = "invalid_json";
    return err;
  }
  if (!j.is_object()) {
    ApiError err;
    err.message = StrCat("request body must be a JSON object, not ", type_name(j));
    return err;
  }
  return j;
}

Parsed<ChatRequest> parse_chat_request(std::string_view body) {
  auto j = parse_json_object(body);
  if (!j.ok()) return j.error();
  ChatRequest r;
  if (auto e = read_messages(j.value(), r.messages)) return *e;
  if (auto e = read_template_vars(j.value(), r.template_vars)) return *e;
  if (auto e = read_generation(j.value(), /*chat=*/true, r.gen)) return *e;
  return r;
}

Parsed<CompletionRequest> parse_completion_request(std::string_view body) {
  auto jp = parse_json_object(body);
  if (!jp.ok()) return jp.error();
  const ojson& j = jp.value();
  CompletionRequest r;
  auto it = j.find("prompt");
  if (it == j.end() || it->is_null()) return invalid_field("prompt", "'prompt' is missing");
  const ojson* p = &*it;
  std::string field = "prompt";
  // A list of one prompt is the same as that prompt; several prompts in one request are not
  // supported (send several requests: they are batched anyway).
  if (p->is_array() && !p->empty() && ((*p)[0].is_string() || (*p)[0].is_array())) {
    if (p->size() != 1) return invalid_field("prompt", "only one prompt per request is supported");
    p = &(*p)[0];
    field = "prompt[0]";
  }
  if (p->is_string()) {
    r.prompt_text = p->get<std::string>();
    if (r.prompt_text->empty()) return invalid_field(field, StrCat("'", field, "' is empty"));
  } else if (p->is_array()) {
    if (auto e = read_token_array(*p, field, r.prompt_tokens)) return *e;
    if (r.prompt_tokens.empty()) return invalid_field(field, StrCat("'", field, "' is empty"));
  } else {
    return wrong_type(field, "a string or an array of token ids", *p);
  }
  bool echo = false;
  if (auto e = read_bool(j, "echo", echo)) return *e;
  if (echo) return invalid_field("echo", "'echo' is not supported");
  if (auto s = j.find("suffix"); s != j.end() && !s->is_null())
    return invalid_field("suffix", "'suffix' is not supported");
  if (auto b = j.find("best_of"); b != j.end() && !b->is_null() && *b != 1)
    return invalid_field("best_of", "'best_of' is not supported");
  if (auto e = read_generation(j, /*chat=*/false, r.gen)) return *e;
  return r;
}

Parsed<TokenizeRequest> parse_tokenize_request(std::string_view body) {
  auto jp = parse_json_object(body);
  if (!jp.ok()) return jp.error();
  const ojson& j = jp.value();
  TokenizeRequest r;
  auto it = j.find("content");
  if (it == j.end()) return invalid_field("content", "'content' is missing");
  if (!it->is_string()) return wrong_type("content", "a string", *it);
  r.content = it->get<std::string>();
  if (auto e = read_bool(j, "add_special", r.add_special)) return *e;
  if (auto e = read_bool(j, "parse_special", r.parse_special)) return *e;
  if (auto e = read_bool(j, "with_pieces", r.with_pieces)) return *e;
  return r;
}

Parsed<DetokenizeRequest> parse_detokenize_request(std::string_view body) {
  auto jp = parse_json_object(body);
  if (!jp.ok()) return jp.error();
  const ojson& j = jp.value();
  auto it = j.find("tokens");
  if (it == j.end()) return invalid_field("tokens", "'tokens' is missing");
  if (!it->is_array()) return wrong_type("tokens", "an array of token ids", *it);
  DetokenizeRequest r;
  if (auto e = read_token_array(*it, "tokens", r.tokens)) return *e;
  return r;
}

Parsed<ApplyTemplateRequest> parse_apply_template_request(std::string_view body) {
  auto jp = parse_json_object(body);
  if (!jp.ok()) return jp.error();
  ApplyTemplateRequest r;
  if (auto e = read_messages(jp.value(), r.messages)) return *e;
  if (auto e = read_template_vars(jp.value(), r.template_vars)) return *e;
  return r;
}

}  // namespace chimera::server
