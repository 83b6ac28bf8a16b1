#include "runtime/jinja/builtins.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>

#include "core/status.h"

namespace chimera::jinja {

namespace {

// Strings a template builds are capped (a template from a GGUF file is untrusted input): a
// clear error instead of exhausting memory.
constexpr size_t kMaxStringBytes = 64u << 20;

void check_size(size_t bytes) {
  if (bytes > kMaxStringBytes) fail("a string built by the template exceeds 64 MiB");
}

// ---------------------------------------------------------------------------------------------
// Argument binding: positional then keyword arguments onto named parameters, like Python.

struct Param {
  const char* name;
  Value def;
  bool required = false;
};

std::vector<Value> bind(const char* fname, const CallArgs& args, const std::vector<Param>& params) {
  if (args.positional.size() > params.size()) {
    fail(StrCat(fname, "() takes at most ", params.size(), " argument(s) (", args.positional.size(),
                " given)"));
  }
  std::vector<Value> out(params.size());
  std::vector<bool> set(params.size(), false);
  for (size_t i = 0; i < args.positional.size(); ++i) {
    out[i] = args.positional[i];
    set[i] = true;
  }
  for (const auto& [k, v] : args.named) {
    size_t i = 0;
    while (i < params.size() && k != params[i].name) ++i;
    if (i == params.size()) fail(StrCat(fname, "() got an unexpected keyword argument '", k, "'"));
    if (set[i]) fail(StrCat(fname, "() got multiple values for argument '", k, "'"));
    out[i] = v;
    set[i] = true;
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (set[i]) continue;
    if (params[i].required)
      fail(StrCat(fname, "() missing required argument '", params[i].name, "'"));
    out[i] = params[i].def;
  }
  return out;
}

void no_args(const char* fname, const CallArgs& args) {
  bind(fname, args, {});
}

const std::string& need_string(const Value& v, const char* what) {
  if (v.is_undefined()) fail_undefined(v);
  if (!v.is_string()) fail(StrCat(what, " expects a string, got ", type_name(v)));
  return v.str();
}

int64_t need_int(const Value& v, const char* what) {
  if (v.is_undefined()) fail_undefined(v);
  if (!v.is_int() && !v.is_bool()) {
    fail(StrCat(what, ": '", type_name(v), "' object cannot be interpreted as an integer"));
  }
  return v.as_int();
}

// soft_str: what filters like upper/trim apply str() to.
std::string soft_str(const Value& v) {
  return to_str(v);
}

// ---------------------------------------------------------------------------------------------
// String helpers (code point based, as Python).

std::string strip_cps(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<uint32_t> cps = utf8_decode(s);
  std::vector<uint32_t> set;
  bool ws = chars.is_none() || chars.is_undefined();
  if (!ws) set = utf8_decode(need_string(chars, "strip"));
  auto strip_it = [&](uint32_t cp) {
    return ws ? is_py_space(cp) : std::find(set.begin(), set.end(), cp) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_it(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(cps[e - 1])) --e;
  }
  return utf8_encode(std::vector<uint32_t>(cps.begin() + b, cps.begin() + e));
}

std::string map_case(const std::string& s, bool upper) {
  std::string out;
  for (uint32_t cp : utf8_decode(s)) utf8_append(out, upper ? py_upper(cp) : py_lower(cp));
  return out;
}

// str.title(): a cased letter after an uncased character starts a word.
std::string py_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (uint32_t cp : utf8_decode(s)) {
    bool cased = py_is_cased_letter(cp);
    utf8_append(out, cased ? (prev_cased ? py_lower(cp) : py_upper(cp)) : cp);
    prev_cased = cased;
  }
  return out;
}

// jinja2's title filter: words start after runs of whitespace, '-', '(', '{', '[', '<'.
std::string jinja_title(const std::string& s) {
  std::string out;
  bool word_start = true;
  for (uint32_t cp : utf8_decode(s)) {
    bool sep = is_py_space(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
    if (sep) {
      utf8_append(out, cp);
      word_start = true;
    } else {
      utf8_append(out, word_start ? py_upper(cp) : py_lower(cp));
      word_start = false;
    }
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::vector<uint32_t> cps = utf8_decode(s);
  std::string out;
  for (size_t i = 0; i < cps.size(); ++i)
    utf8_append(out, i == 0 ? py_upper(cps[i]) : py_lower(cps[i]));
  return out;
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& repl,
                       int64_t count) {
  std::string out;
  if (old.empty()) {  // Python inserts the replacement around every code point
    std::vector<uint32_t> cps = utf8_decode(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += repl;
        check_size(out.size());
        ++done;
      }
      if (i < cps.size()) utf8_append(out, cps[i]);
    }
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t hit = s.find(old, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += repl;
    check_size(out.size());
    pos = hit + old.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

Value py_split(const std::string& s, const Value& sep_v, int64_t maxsplit) {
  ValueList parts;
  if (sep_v.is_none() || sep_v.is_undefined()) {  // runs of whitespace, no empty parts
    std::vector<uint32_t> cps = utf8_decode(s);
    size_t i = 0;
    int64_t splits = 0;
    while (true) {
      while (i < cps.size() && is_py_space(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && splits >= maxsplit) {
        size_t e = cps.size();
        while (e > i && is_py_space(cps[e - 1])) --e;
        parts.emplace_back(utf8_encode(std::vector<uint32_t>(cps.begin() + i, cps.begin() + e)));
        break;
      }
      size_t b = i;
      while (i < cps.size() && !is_py_space(cps[i])) ++i;
      parts.emplace_back(utf8_encode(std::vector<uint32_t>(cps.begin() + b, cps.begin() + i)));
      ++splits;
    }
    return Value::list(std::move(parts));
  }
  const std::string& sep = need_string(sep_v, "split");
  if (sep.empty()) fail("empty separator");
  size_t pos = 0;
  int64_t splits = 0;
  while (maxsplit < 0 || splits < maxsplit) {
    size_t hit = s.find(sep, pos);
    if (hit == std::string::npos) break;
    parts.emplace_back(s.substr(pos, hit - pos));
    pos = hit + sep.size();
    ++splits;
  }
  parts.emplace_back(s.substr(pos));
  return Value::list(std::move(parts));
}

bool starts_or_ends(const std::string& s, const Value& affix, bool starts) {
  auto one = [&](const std::string& a) {
    if (a.size() > s.size()) return false;
    return starts ? s.compare(0, a.size(), a) == 0
                  : s.compare(s.size() - a.size(), a.size(), a) == 0;
  };
  if (affix.is_list() && affix.is_tuple()) {
    for (const auto& a : affix.items()) {
      if (one(need_string(a, starts ? "startswith" : "endswith"))) return true;
    }
    return false;
  }
  return one(need_string(affix, starts ? "startswith" : "endswith"));
}

// str.splitlines() boundaries.
std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::vector<uint32_t> cps = utf8_decode(s);
  std::vector<uint32_t> cur;
  for (size_t i = 0; i < cps.size(); ++i) {
    uint32_t c = cps[i];
    bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E) ||
               c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) {
      cur.push_back(c);
      continue;
    }
    if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
    lines.push_back(utf8_encode(cur));
    cur.clear();
  }
  if (!cur.empty()) lines.push_back(utf8_encode(cur));
  return lines;
}

// ---------------------------------------------------------------------------------------------
// Methods of str, dict and list, as bound callables.

Value method(const std::string& name, NativeFn fn) {
  return Value::callable(name, std::move(fn));
}

Value string_method(const std::string& s, const std::string& name) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    return method(name, [s, name](CallArgs& a) {
      auto v = bind(name.c_str(), a, {{"chars", Value::none()}});
      return Value(strip_cps(s, v[0], name != "rstrip", name != "lstrip"));
    });
  }
  if (name == "upper" || name == "lower") {
    return method(name, [s, name](CallArgs& a) {
      no_args(name.c_str(), a);
      return Value(map_case(s, name == "upper"));
    });
  }
  if (name == "title") {
    return method(name, [s](CallArgs& a) {
      no_args("title", a);
      return Value(py_title(s));
    });
  }
  if (name == "capitalize") {
    return method(name, [s](CallArgs& a) {
      no_args("capitalize", a);
      return Value(py_capitalize(s));
    });
  }
  if (name == "split") {
    return method(name, [s](CallArgs& a) {
      auto v = bind("split", a, {{"sep", Value::none()}, {"maxsplit", Value(-1)}});
      return py_split(s, v[0], need_int(v[1], "split"));
    });
  }
  if (name == "startswith" || name == "endswith") {
    return method(name, [s, name](CallArgs& a) {
      auto v = bind(name.c_str(), a, {{"prefix", Value(), true}});
      return Value(starts_or_ends(s, v[0], name == "startswith"));
    });
  }
  if (name == "replace") {
    return method(name, [s](CallArgs& a) {
      auto v = bind("replace", a,
                    {{"old", Value(), true}, {"new", Value(), true}, {"count", Value(-1)}});
      return Value(py_replace(s, need_string(v[0], "replace"), need_string(v[1], "replace"),
                              need_int(v[2], "replace")));
    });
  }
  if (name == "find" || name == "count") {
    return method(name, [s, name](CallArgs& a) {
      auto v = bind(name.c_str(), a, {{"sub", Value(), true}});
      const std::string& sub = need_string(v[0], name.c_str());
      if (name == "find") {
        size_t hit = s.find(sub);
        return Value(hit == std::string::npos
                         ? int64_t{-1}
                         : static_cast<int64_t>(utf8_length(s.substr(0, hit))));
      }
      if (sub.empty()) return Value(static_cast<int64_t>(utf8_length(s) + 1));
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value(n);
    });
  }
  if (name == "join") {
    return method(name, [s](CallArgs& a) {
      auto v = bind("join", a, {{"iterable", Value(), true}});
      std::string out;
      bool first = true;
      for (const auto& item : iterate(v[0])) {
        if (!first) out += s;
        first = false;
        out += need_string(item, "join");
      }
      return Value(out);
    });
  }
  if (name == "splitlines") {
    return method(name, [s](CallArgs& a) {
      no_args("splitlines", a);
      ValueList out;
      for (auto& l : split_lines(s)) out.emplace_back(l);
      return Value::list(std::move(out));
    });
  }
  if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum" ||
      name == "islower" || name == "isupper") {
    return method(name, [s, name](CallArgs& a) {
      no_args(name.c_str(), a);
      std::vector<uint32_t> cps = utf8_decode(s);
      if (cps.empty()) return Value(false);
      bool any_cased = false;
      for (uint32_t c : cps) {
        bool digit = c >= '0' && c <= '9';
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= 0x80 && py_is_cased_letter(c));
        if (name == "isdigit" && !digit) return Value(false);
        if (name == "isspace" && !is_py_space(c)) return Value(false);
        if (name == "isalpha" && !alpha) return Value(false);
        if (name == "isalnum" && !alpha && !digit) return Value(false);
        if (py_is_cased_letter(c)) {
          any_cased = true;
          if (name == "islower" && py_lower(c) != c) return Value(false);
          if (name == "isupper" && py_upper(c) != c) return Value(false);
        }
      }
      if (name == "islower" || name == "isupper") return Value(any_cased);
      return Value(true);
    });
  }
  if (name == "format") fail_unsupported("str.format() is not supported");
  return Value::undefined(StrCat("'str object' has no attribute '", name, "'"));
}

Value dict_method(const Value& d, const std::string& name) {
  if (name == "items" || name == "keys" || name == "values") {
    return method(name, [d, name](CallArgs& a) {
      no_args(name.c_str(), a);
      ValueList out;
      for (const auto& [k, v] : d.map().entries) {
        if (name == "items") {
          out.push_back(Value::list({Value(k), v}, /*tuple=*/true));
        } else {
          out.push_back(name == "keys" ? Value(k) : v);
        }
      }
      return Value::list(std::move(out));
    });
  }
  if (name == "get") {
    return method(name, [d](CallArgs& a) {
      auto v = bind("get", a, {{"key", Value(), true}, {"default", Value::none()}});
      if (!v[0].is_string()) return v[1];
      const Value* hit = d.map().find(v[0].str());
      return hit ? *hit : v[1];
    });
  }
  if (name == "copy") {
    return method(name, [d](CallArgs& a) {
      no_args("copy", a);
      return Value::dict(d.map());
    });
  }
  static const std::set<std::string> kMutating = {"pop", "popitem", "setdefault", "update",
                                                  "clear"};
  if (kMutating.count(name)) {  // the sandbox's unsafe_undefined: prints empty, fails when called
    return Value::undefined(StrCat("access to attribute '", name, "' of 'dict' object is unsafe."));
  }
  return Value::undefined("");  // not a method
}

Value list_method(const Value& l, const std::string& name) {
  if (name == "index" || name == "count") {
    return method(name, [l, name](CallArgs& a) {
      auto v = bind(name.c_str(), a, {{"value", Value(), true}});
      int64_t n = 0;
      for (size_t i = 0; i < l.items().size(); ++i) {
        if (values_equal(l.items()[i], v[0])) {
          if (name == "index") return Value(static_cast<int64_t>(i));
          ++n;
        }
      }
      if (name == "index") fail(StrCat(repr(v[0]), " is not in list"));
      return Value(n);
    });
  }
  static const std::set<std::string> kMutating = {"append", "extend", "insert",  "pop",
                                                  "remove", "sort",   "reverse", "clear"};
  if (kMutating.count(name) && !l.is_tuple()) {  // the sandbox's unsafe_undefined
    return Value::undefined(StrCat("access to attribute '", name, "' of 'list' object is unsafe."));
  }
  return Value::undefined("");
}

std::string object_desc(const Value& v) {
  if (v.is_none()) return "None";
  return type_name(v) + " object";
}

// Python's index rule for a sequence of length n; false when out of range.
bool normalize_index(int64_t& i, int64_t n) {
  if (i < 0) i += n;
  return i >= 0 && i < n;
}

}  // namespace

int64_t py_len(const Value& v) {
  switch (v.kind()) {
    case Kind::kString:
      return static_cast<int64_t>(utf8_length(v.str()));
    case Kind::kList:
      return static_cast<int64_t>(v.items().size());
    case Kind::kDict:
      return static_cast<int64_t>(v.map().entries.size());
    case Kind::kUndefined:
      return 0;
    default:
      fail(StrCat("object of type '", type_name(v), "' has no len()"));
  }
}

Value get_attribute(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) fail_undefined(obj);
  switch (obj.kind()) {
    case Kind::kString:
      return string_method(obj.str(), name);
    case Kind::kDict: {
      Value m = dict_method(obj, name);
      if (!m.is_undefined() || !m.undefined_hint().empty()) return m;  // a method (maybe unsafe)
      if (const Value* hit = obj.map().find(name)) return *hit;
      break;
    }
    case Kind::kNamespace: {
      const Value* hit = obj.namespace_map().find(name);
      if (hit) return *hit;
      break;
    }
    case Kind::kList: {
      Value m = list_method(obj, name);
      if (!m.is_undefined() || !m.undefined_hint().empty()) return m;
      break;
    }
    default:
      break;
  }
  return Value::undefined(StrCat("'", object_desc(obj), "' has no attribute '", name, "'"));
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) fail_undefined(obj);
  switch (obj.kind()) {
    case Kind::kDict:
    case Kind::kNamespace:
      if (key.is_string()) {
        const Value* hit = obj.namespace_map().find(key.str());
        if (hit) return *hit;
      }
      break;
    case Kind::kList:
      if (key.is_int() || key.is_bool()) {
        int64_t i = key.as_int();
        if (normalize_index(i, static_cast<int64_t>(obj.items().size()))) return obj.items()[i];
        return Value::undefined(StrCat(type_name(obj), " object has no element ", key.as_int()));
      }
      break;
    case Kind::kString:
      if (key.is_int() || key.is_bool()) {
        std::vector<uint32_t> cps = utf8_decode(obj.str());
        int64_t i = key.as_int();
        if (normalize_index(i, static_cast<int64_t>(cps.size()))) {
          std::string c;
          utf8_append(c, cps[i]);
          return Value(c);
        }
        return Value::undefined(StrCat("str object has no element ", key.as_int()));
      }
      break;
    default:
      break;
  }
  if (key.is_string()) return get_attribute(obj, key.str());
  return Value::undefined(StrCat("'", object_desc(obj), "' has no attribute ", repr(key)));
}

Value get_slice(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v) {
  if (obj.is_undefined()) fail_undefined(obj);
  auto opt_int = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    return need_int(v, what);
  };
  std::optional<int64_t> start = opt_int(start_v, "slice"), stop = opt_int(stop_v, "slice"),
                         step_o = opt_int(step_v, "slice");
  int64_t step = step_o.value_or(1);
  if (step == 0) fail("slice step cannot be zero");
  int64_t n;
  std::vector<uint32_t> cps;
  if (obj.is_string()) {
    cps = utf8_decode(obj.str());
    n = static_cast<int64_t>(cps.size());
  } else if (obj.is_list()) {
    n = static_cast<int64_t>(obj.items().size());
  } else {
    fail(StrCat("'", type_name(obj), "' object is not subscriptable"));
  }
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](std::optional<int64_t> v, int64_t def_pos, int64_t def_neg) {
    if (!v) return step > 0 ? def_pos : def_neg;
    int64_t x = *v;
    if (x < 0) {
      x += n;
      if (x < 0) x = step < 0 ? -1 : 0;
    } else if (x >= n) {
      x = step < 0 ? n - 1 : n;
    }
    return x;
  };
  int64_t b = adjust(start, 0, n - 1);
  int64_t e = adjust(stop, n, -1);
  std::vector<int64_t> idx;
  if (step > 0) {
    for (int64_t i = b; i < e; i += step) {
      idx.push_back(i);
      if (e - i <= step) break;  // the next step would pass the end (and might overflow)
    }
  } else {
    for (int64_t i = b; i > e; i += step) {
      idx.push_back(i);
      if (i - e <= -step) break;
    }
  }
  if (obj.is_string()) {
    std::string out;
    for (int64_t i : idx) utf8_append(out, cps[i]);
    return Value(out);
  }
  ValueList out;
  for (int64_t i : idx) out.push_back(obj.items()[i]);
  return Value::list(std::move(out), obj.is_tuple());
}

namespace {

[[noreturn]] void bad_operands(const std::string& op, const Value& a, const Value& b) {
  if (op == "+" && (a.is_string() || a.is_list())) {
    fail(StrCat("can only concatenate ", type_name(a), " (not \"", type_name(b), "\") to ",
                type_name(a)));
  }
  fail(StrCat("unsupported operand type(s) for ", op, ": '", type_name(a), "' and '", type_name(b),
              "'"));
}

// Wraps __builtin_*_overflow: the result is read only after the builtin has written it.
template <typename Op>
int64_t checked(Op op, int64_t a, int64_t b) {
  int64_t r = 0;
  if (op(a, b, &r)) fail("integer overflow (chimera's integers are 64-bit)");
  return r;
}
bool add_ovf(int64_t a, int64_t b, int64_t* r) {
  return __builtin_add_overflow(a, b, r);
}
bool sub_ovf(int64_t a, int64_t b, int64_t* r) {
  return __builtin_sub_overflow(a, b, r);
}
bool mul_ovf(int64_t a, int64_t b, int64_t* r) {
  return __builtin_mul_overflow(a, b, r);
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Value repeat(const Value& seq, int64_t n) {
  if (n < 0) n = 0;
  if (seq.is_string()) {
    if (n > 0 &&
        static_cast<uint64_t>(n) > kMaxStringBytes / std::max<size_t>(1, seq.str().size())) {
      fail("a string built by the template exceeds 64 MiB");
    }
    std::string out;
    for (int64_t i = 0; i < n; ++i) out += seq.str();
    return Value(out);
  }
  if (n > 0 && seq.items().size() * static_cast<uint64_t>(n) > (1u << 20))
    fail("list repetition too large");
  ValueList out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return Value::list(std::move(out), seq.is_tuple());
}

}  // namespace

Value negate(const Value& v) {
  if (v.is_undefined()) fail_undefined(v);
  if (v.is_float()) return Value(-v.as_double());
  if (v.is_int() || v.is_bool()) {
    if (v.as_int() == std::numeric_limits<int64_t>::min()) fail("integer overflow");
    return Value(-v.as_int());
  }
  fail(StrCat("bad operand type for unary -: '", type_name(v), "'"));
}

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    std::string out = to_str(a);
    out += to_str(b);
    check_size(out.size());
    return Value(std::move(out));
  }
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  bool nums = a.is_number() && b.is_number();
  bool ints = nums && !a.is_float() && !b.is_float();
  if (op == "+") {
    if (ints) return Value(checked(add_ovf, a.as_int(), b.as_int()));
    if (nums) return Value(a.as_double() + b.as_double());
    if (a.is_string() && b.is_string()) {
      check_size(a.str().size() + b.str().size());
      return Value(a.str() + b.str());
    }
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
      ValueList out = a.items();
      out.insert(out.end(), b.items().begin(), b.items().end());
      return Value::list(std::move(out), a.is_tuple());
    }
  } else if (op == "-") {
    if (ints) return Value(checked(sub_ovf, a.as_int(), b.as_int()));
    if (nums) return Value(a.as_double() - b.as_double());
  } else if (op == "*") {
    if (ints) return Value(checked(mul_ovf, a.as_int(), b.as_int()));
    if (nums) return Value(a.as_double() * b.as_double());
    if ((a.is_string() || a.is_list()) && (b.is_int() || b.is_bool())) return repeat(a, b.as_int());
    if ((b.is_string() || b.is_list()) && (a.is_int() || a.is_bool())) return repeat(b, a.as_int());
  } else if (op == "/") {
    if (nums) {
      if (b.as_double() == 0) fail("division by zero");
      return Value(a.as_double() / b.as_double());
    }
  } else if (op == "//" || op == "%") {
    if (ints) {
      if (b.as_int() == 0)
        fail(op == "//" ? "integer division or modulo by zero" : "integer modulo by zero");
      if (a.as_int() == std::numeric_limits<int64_t>::min() && b.as_int() == -1)
        fail("integer overflow");
      int64_t q = floor_div(a.as_int(), b.as_int());
      return op == "//" ? Value(q) : Value(a.as_int() - q * b.as_int());
    }
    if (nums) {
      double x = a.as_double(), y = b.as_double();
      if (y == 0) fail("float floor division by zero");
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      if (op == "%") return Value(m == 0 ? std::copysign(0.0, y) : m);
      return Value(std::floor((x - m) / y + 0.0));
    }
    if (op == "%" && a.is_string())
      fail_unsupported("printf-style string formatting ('%') is not supported");
  } else if (op == "**") {
    if (ints && b.as_int() >= 0) {
      int64_t base = a.as_int(), e = b.as_int(), acc = 1;
      while (e-- > 0) acc = checked(mul_ovf, acc, base);
      return Value(acc);
    }
    if (nums) return Value(std::pow(a.as_double(), b.as_double()));
  }
  bad_operands(op, a, b);
}

// ---------------------------------------------------------------------------------------------
// Filters.

namespace {

Value attr_path(const Value& item, const std::string& path) {
  Value v = item;
  size_t pos = 0;
  while (true) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(),
                                                [](char c) { return c >= '0' && c <= '9'; });
    v = numeric ? get_item(v, Value(static_cast<int64_t>(std::stoll(part))))
                : get_item(v, Value(part));
    if (dot == std::string::npos) return v;
    pos = dot + 1;
  }
}

// select / reject / selectattr / rejectattr
Value select_items(const char* fname, const Value& seq, const CallArgs& args, bool want,
                   bool by_attr) {
  size_t next = 0;
  std::string attr;
  if (by_attr) {
    if (args.positional.empty()) fail(StrCat(fname, "() missing the attribute name"));
    attr = need_string(args.positional[0], fname);
    next = 1;
  }
  std::string test;
  CallArgs test_args;
  if (args.positional.size() > next) {
    test = need_string(args.positional[next], fname);
    test_args.positional.assign(args.positional.begin() + next + 1, args.positional.end());
    test_args.named = args.named;
  }
  ValueList out;
  for (const auto& item : iterate(seq)) {
    Value probe = by_attr ? attr_path(item, attr) : item;
    bool ok = test.empty() ? probe.truthy() : apply_test(test, probe, test_args);
    if (ok == want) out.push_back(item);
  }
  return Value::list(std::move(out));
}

Value filter_map(const Value& seq, const CallArgs& args) {
  ValueList out;
  if (const Value* attr = args.find_named("attribute")) {
    const Value* def = args.find_named("default");
    for (const auto& item : iterate(seq)) {
      Value v = attr_path(item, need_string(*attr, "map"));
      if (v.is_undefined() && def) v = *def;
      out.push_back(v);
    }
    return Value::list(std::move(out));
  }
  if (args.positional.empty()) fail("map() needs a filter name or attribute=");
  const std::string& filter = need_string(args.positional[0], "map");
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.named = args.named;
  for (const auto& item : iterate(seq)) out.push_back(apply_filter(filter, item, rest));
  return Value::list(std::move(out));
}

// The key filters sort and compare by: lower-cased strings unless case_sensitive.
Value sort_key(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value(map_case(v.str(), false));
  return v;
}

Value filter_sort(const Value& seq, const CallArgs& args) {
  auto v = bind(
      "sort", args,
      {{"reverse", Value(false)}, {"case_sensitive", Value(false)}, {"attribute", Value::none()}});
  ValueList items = iterate(seq);
  bool cs = v[1].truthy();
  std::string attr = v[2].is_string() ? v[2].str() : "";
  auto key = [&](const Value& x) { return sort_key(attr.empty() ? x : attr_path(x, attr), cs); };
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
    return v[0].truthy() ? value_less(key(b), key(a)) : value_less(key(a), key(b));
  });
  return Value::list(std::move(items));
}

Value filter_round(const Value& x, const CallArgs& args) {
  auto v = bind("round", args, {{"precision", Value(0)}, {"method", Value("common")}});
  int64_t prec = need_int(v[0], "round");
  const std::string& method = need_string(v[1], "round");
  if (x.is_undefined()) fail_undefined(x);
  if (!x.is_number()) fail(StrCat("type ", type_name(x), " doesn't define __round__ method"));
  if (method == "common") {
    if (!x.is_float()) return Value(x.as_int());  // round(int, n) stays an int
    // Correctly rounded half-even on the exact binary value, like CPython's round().
    char buf[700];  // up to 309 integer digits, the point and 300 decimals
    std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(std::clamp<int64_t>(prec, 0, 300)),
                  x.as_double());
    double r = std::strtod(buf, nullptr);
    if (prec < 0) {
      double p = std::pow(10.0, static_cast<double>(-prec));
      r = std::nearbyint(x.as_double() / p) * p;
    }
    return Value(r);
  }
  if (method != "floor" && method != "ceil") fail("method must be common, ceil or floor");
  double p = std::pow(10.0, static_cast<double>(prec));
  double d = x.as_double() * p;
  d = method == "floor" ? std::floor(d) : std::ceil(d);
  return Value(d / p);
}

// An indentation width: a count of spaces, bounded.
std::string spaces(const Value& width, const char* what) {
  int64_t w = need_int(width, what);
  if (w > 10000) fail(StrCat(what, ": indent width ", w, " is too large"));
  return std::string(static_cast<size_t>(std::max<int64_t>(0, w)), ' ');
}

Value filter_indent(const Value& s_v, const CallArgs& args) {
  auto v =
      bind("indent", args, {{"width", Value(4)}, {"first", Value(false)}, {"blank", Value(false)}});
  std::string ind = v[0].is_string() ? v[0].str() : spaces(v[0], "indent");
  std::string s = soft_str(s_v) + "\n";
  std::vector<std::string> lines = split_lines(s);
  std::string rv;
  if (v[2].truthy()) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) {
        rv += '\n';
        rv += ind;
      }
      rv += lines[i];
      check_size(rv.size());
    }
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += '\n';
      if (!lines[i].empty()) rv += ind;
      rv += lines[i];
      check_size(rv.size());
    }
  }
  if (v[1].truthy()) rv = ind + rv;
  return Value(rv);
}

Value filter_tojson(const Value& x, const CallArgs& args) {
  // HF's override: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
  auto v = bind("tojson", args,
                {{"ensure_ascii", Value(false)},
                 {"indent", Value::none()},
                 {"separators", Value::none()},
                 {"sort_keys", Value(false)}});
  JsonOptions o;
  o.ensure_ascii = v[0].truthy();
  if (!v[1].is_none()) {
    o.pretty = true;
    o.item_sep = std::string(1, ',');  // (not a literal: g++ 12 -Wrestrict false positive)
    o.indent_str = v[1].is_string() ? v[1].str() : spaces(v[1], "tojson");
  }
  if (!v[2].is_none()) {
    if (!v[2].is_list() || v[2].items().size() != 2)
      fail("tojson separators must be a pair of strings");
    o.item_sep = need_string(v[2].items()[0], "tojson");
    o.key_sep = need_string(v[2].items()[1], "tojson");
  }
  o.sort_keys = v[3].truthy();
  return Value(to_json(x, o));
}

Value to_int(const Value& x, const Value& def) {
  if (x.is_undefined()) fail_undefined(x);
  if (x.is_int() || x.is_bool()) return Value(x.as_int());
  if (x.is_float()) {
    double d = x.as_double();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return def;
    return Value(static_cast<int64_t>(d));
  }
  if (x.is_string()) {
    std::string s = strip_cps(x.str(), Value::none(), true, true);
    std::string digits;
    for (char c : s) {
      if (c != '_') digits += c;
    }
    char* end = nullptr;
    errno = 0;
    long long i = std::strtoll(digits.c_str(), &end, 10);
    if (!digits.empty() && *end == '\0' && errno == 0) return Value(static_cast<int64_t>(i));
    double d = std::strtod(digits.c_str(), &end);
    if (!digits.empty() && *end == '\0' && std::isfinite(d) && std::fabs(d) < 9.2e18) {
      return Value(static_cast<int64_t>(d));
    }
  }
  return def;
}

Value to_float(const Value& x, const Value& def) {
  if (x.is_undefined()) fail_undefined(x);
  if (x.is_number()) return Value(x.as_double());
  if (x.is_string()) {
    std::string s = strip_cps(x.str(), Value::none(), true, true);
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == '\0') return Value(d);
  }
  return def;
}

Value min_max(const Value& seq, const CallArgs& args, bool want_max) {
  auto v = bind(want_max ? "max" : "min", args,
                {{"case_sensitive", Value(false)}, {"attribute", Value::none()}});
  ValueList items = iterate(seq);
  if (items.empty()) return Value::undefined(StrCat("No aggregated item, sequence was empty."));
  std::string attr = v[1].is_string() ? v[1].str() : "";
  auto key = [&](const Value& x) {
    return sort_key(attr.empty() ? x : attr_path(x, attr), v[0].truthy());
  };
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    bool better = want_max ? value_less(key(items[best]), key(items[i]))
                           : value_less(key(items[i]), key(items[best]));
    if (better) best = i;
  }
  return items[best];
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

Value apply_filter(const std::string& name, const Value& x, const CallArgs& args) {
  if (name == "trim") {
    auto v = bind("trim", args, {{"chars", Value::none()}});
    return Value(strip_cps(soft_str(x), v[0], true, true));
  }
  if (name == "length" || name == "count") {
    no_args(name.c_str(), args);
    return Value(py_len(x));
  }
  if (name == "tojson") return filter_tojson(x, args);
  if (name == "upper" || name == "lower") {
    no_args(name.c_str(), args);
    return Value(map_case(soft_str(x), name == "upper"));
  }
  if (name == "title") {
    no_args("title", args);
    return Value(jinja_title(soft_str(x)));
  }
  if (name == "capitalize") {
    no_args("capitalize", args);
    return Value(py_capitalize(soft_str(x)));
  }
  if (name == "replace") {
    auto v = bind("replace", args,
                  {{"old", Value(), true}, {"new", Value(), true}, {"count", Value::none()}});
    int64_t count = v[2].is_none() ? -1 : need_int(v[2], "replace");
    return Value(py_replace(soft_str(x), soft_str(v[0]), soft_str(v[1]), count));
  }
  if (name == "join") {
    auto v = bind("join", args, {{"d", Value("")}, {"attribute", Value::none()}});
    std::string out;
    bool first = true;
    for (const auto& item : iterate(x)) {
      if (!first) out += soft_str(v[0]);
      check_size(out.size());
      first = false;
      out += soft_str(v[1].is_none() ? item : attr_path(item, need_string(v[1], "join")));
    }
    return Value(out);
  }
  if (name == "default" || name == "d") {
    auto v = bind("default", args, {{"default_value", Value("")}, {"boolean", Value(false)}});
    if (x.is_undefined() || (v[1].truthy() && !x.truthy())) return v[0];
    return x;
  }
  if (name == "first") {
    no_args("first", args);
    ValueList items = iterate(x);
    if (items.empty()) return Value::undefined("No first item, sequence was empty.");
    return items.front();
  }
  if (name == "last") {
    no_args("last", args);
    ValueList items = iterate(x);
    if (items.empty()) return Value::undefined("No last item, sequence was empty.");
    return items.back();
  }
  if (name == "list") {
    no_args("list", args);
    return Value::list(iterate(x));
  }
  if (name == "string") {
    no_args("string", args);
    return Value(soft_str(x));
  }
  if (name == "int") {
    auto v = bind("int", args, {{"default", Value(0)}, {"base", Value(10)}});
    if (need_int(v[1], "int") != 10) fail_unsupported("int filter with a base other than 10");
    return to_int(x, v[0]);
  }
  if (name == "float") {
    auto v = bind("float", args, {{"default", Value(0.0)}});
    return to_float(x, v[0]);
  }
  if (name == "abs") {
    no_args("abs", args);
    if (x.is_float()) return Value(std::fabs(x.as_double()));
    if (x.is_int() || x.is_bool()) return x.as_int() < 0 ? negate(x) : Value(x.as_int());
    if (x.is_undefined()) fail_undefined(x);
    fail(StrCat("bad operand type for abs(): '", type_name(x), "'"));
  }
  if (name == "round") return filter_round(x, args);
  if (name == "items") {
    no_args("items", args);
    if (x.is_undefined()) return Value::list({});
    if (!x.is_dict()) fail("Can only get item pairs from a mapping.");
    CallArgs none;
    return get_attribute(x, "items").fn().fn(none);
  }
  if (name == "dictsort") {
    auto v =
        bind("dictsort", args,
             {{"case_sensitive", Value(false)}, {"by", Value("key")}, {"reverse", Value(false)}});
    if (!x.is_dict()) fail("You can only sort by either 'key' or 'value'");
    size_t pos = need_string(v[1], "dictsort") == "value" ? 1 : 0;
    ValueList pairs;
    for (const auto& [k, val] : x.map().entries)
      pairs.push_back(Value::list({Value(k), val}, true));
    bool cs = v[0].truthy(), rev = v[2].truthy();
    std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& a, const Value& b) {
      Value ka = sort_key(a.items()[pos], cs), kb = sort_key(b.items()[pos], cs);
      return rev ? value_less(kb, ka) : value_less(ka, kb);
    });
    return Value::list(std::move(pairs));
  }
  if (name == "sort") return filter_sort(x, args);
  if (name == "reverse") {
    no_args("reverse", args);
    if (x.is_string()) return get_slice(x, Value(), Value(), Value(-1));
    ValueList items = iterate(x);
    std::reverse(items.begin(), items.end());
    return Value::list(std::move(items));
  }
  if (name == "unique") {
    auto v = bind("unique", args, {{"case_sensitive", Value(false)}, {"attribute", Value::none()}});
    ValueList out, seen;
    for (const auto& item : iterate(x)) {
      Value k = sort_key(v[1].is_none() ? item : attr_path(item, need_string(v[1], "unique")),
                         v[0].truthy());
      bool dup = false;
      for (const auto& s : seen) dup = dup || values_equal(s, k);
      if (!dup) {
        seen.push_back(k);
        out.push_back(item);
      }
    }
    return Value::list(std::move(out));
  }
  if (name == "map") return filter_map(x, args);
  if (name == "select") return select_items("select", x, args, true, false);
  if (name == "reject") return select_items("reject", x, args, false, false);
  if (name == "selectattr") return select_items("selectattr", x, args, true, true);
  if (name == "rejectattr") return select_items("rejectattr", x, args, false, true);
  if (name == "safe") {
    no_args("safe", args);
    return x.is_string() ? x : Value(soft_str(x));
  }
  if (name == "escape" || name == "e") {
    no_args("escape", args);
    return Value(html_escape(soft_str(x)));
  }
  if (name == "indent") return filter_indent(x, args);
  if (name == "min" || name == "max") return min_max(x, args, name == "max");
  if (name == "sum") {
    auto v = bind("sum", args, {{"attribute", Value::none()}, {"start", Value(0)}});
    Value acc = v[1];
    for (const auto& item : iterate(x)) {
      acc = binary_op("+", acc, v[0].is_none() ? item : attr_path(item, need_string(v[0], "sum")));
    }
    return acc;
  }
  if (name == "attr") {
    auto v = bind("attr", args, {{"name", Value(), true}});
    return get_attribute(x, need_string(v[0], "attr"));
  }
  if (name == "wordcount") {
    no_args("wordcount", args);
    return Value(static_cast<int64_t>(py_split(soft_str(x), Value::none(), -1).items().size()));
  }
  fail_unsupported(StrCat("unsupported filter '", name, "'"));
}

// ---------------------------------------------------------------------------------------------
// Tests.

bool apply_test(const std::string& name, const Value& x, const CallArgs& args) {
  auto one_arg = [&](const char* n) { return bind(n, args, {{"other", Value(), true}})[0]; };
  if (name == "defined") return !x.is_undefined();
  if (name == "undefined") return x.is_undefined();
  if (name == "none") return x.is_none();
  if (name == "boolean") return x.is_bool();
  if (name == "true") return x.is_bool() && x.as_bool();
  if (name == "false") return x.is_bool() && !x.as_bool();
  if (name == "integer") return x.is_int();
  if (name == "float") return x.is_float();
  if (name == "number") return x.is_number();
  if (name == "string") return x.is_string();
  if (name == "mapping") return x.is_dict();
  if (name == "iterable") return x.is_string() || x.is_list() || x.is_dict() || x.is_undefined();
  if (name == "sequence") return x.is_string() || x.is_list() || x.is_dict();
  if (name == "callable") return x.is_callable();
  if (name == "sameas") {
    Value o = one_arg("sameas");
    if (x.kind() != o.kind()) return false;
    if (x.is_none() || x.is_bool()) return values_equal(x, o);
    return x.is_namespace() && values_equal(x, o);
  }
  if (name == "eq" || name == "equalto" || name == "==") return values_equal(x, one_arg("eq"));
  if (name == "ne" || name == "!=") return !values_equal(x, one_arg("ne"));
  if (name == "lt" || name == "lessthan" || name == "<") return value_less(x, one_arg("lt"));
  if (name == "gt" || name == "greaterthan" || name == ">") return value_less(one_arg("gt"), x);
  if (name == "le" || name == "<=") {
    Value o = one_arg("le");
    return value_less(x, o) || values_equal(x, o);
  }
  if (name == "ge" || name == ">=") {
    Value o = one_arg("ge");
    return value_less(o, x) || values_equal(x, o);
  }
  if (name == "in") return value_contains(one_arg("in"), x);
  if (name == "divisibleby") {
    Value o = one_arg("divisibleby");
    return need_int(binary_op("%", x, o), "divisibleby") == 0;
  }
  if (name == "even" || name == "odd") {
    no_args(name.c_str(), args);
    int64_t r = need_int(binary_op("%", x, Value(2)), name.c_str());
    return name == "even" ? r == 0 : r == 1;
  }
  if (name == "lower" || name == "upper") {
    no_args(name.c_str(), args);
    CallArgs none;
    return string_method(soft_str(x), name == "upper" ? "isupper" : "islower")
        .fn()
        .fn(none)
        .truthy();
  }
  fail_unsupported(StrCat("unsupported test '", name, "'"));
}

}  // namespace chimera::jinja
