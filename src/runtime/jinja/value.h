// Values of the Jinja interpreter: Python's data model as chat templates see it (None, bool, int,
// float, str, list/tuple, insertion-ordered dict, namespace, callables, and jinja2's Undefined).
// Strings are UTF-8; lengths, indices and slices count code points, as Python's do.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace chimera::jinja {

struct SourceLoc {
  int line = 0;  // 1-based; 0 when unknown
  int column = 0;
};

enum class JinjaErrorKind {
  kSyntax,       // the template does not parse
  kRuntime,      // rendering failed (undefined value misused, type error, ...)
  kUnsupported,  // valid Jinja this interpreter does not implement
  kRaised,       // the template called raise_exception(message)
};

// Raised inside the interpreter and turned into a Status at the API boundary (template.cpp); it
// never leaves this library.
struct JinjaError {
  std::string message;
  SourceLoc loc;
  JinjaErrorKind kind = JinjaErrorKind::kRuntime;
};

[[noreturn]] void fail(const std::string& message);
[[noreturn]] void fail_unsupported(const std::string& message);

class Value;
using ValueList = std::vector<Value>;

// Python dict with string keys, in insertion order (templates print and tojson them in order).
struct ValueMap {
  std::vector<std::pair<std::string, Value>> entries;
  int child_depth = 0;  // deepest nesting among the values (kept current by set())
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value value);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> named;
  const Value* find_named(const std::string& name) const;
};

using NativeFn = std::function<Value(CallArgs&)>;

struct Callable {
  std::string name;
  NativeFn fn;
};

enum class Kind {
  kUndefined,
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,
  kList,
  kDict,
  kNamespace,
  kCallable
};

class Value {
 public:
  Value() = default;                               // Undefined without a name
  Value(bool b) : kind_(Kind::kBool), i_(b) {}     // NOLINT: implicit, like Python literals
  Value(int v) : kind_(Kind::kInt), i_(v) {}       // NOLINT
  Value(int64_t v) : kind_(Kind::kInt), i_(v) {}   // NOLINT
  Value(double v) : kind_(Kind::kFloat), f_(v) {}  // NOLINT
  Value(std::string s) : kind_(Kind::kString), s_(std::move(s)) {}  // NOLINT
  Value(const char* s) : kind_(Kind::kString), s_(s) {}             // NOLINT

  // `hint` is the error jinja2 would raise when the undefined value is used ("'x' is undefined").
  static Value undefined(std::string hint);
  static Value none();
  static Value list(ValueList items, bool tuple = false);
  static Value dict(ValueMap map);
  static Value make_namespace(ValueMap map);
  static Value callable(std::string name, NativeFn fn);
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const {
    return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool;
  }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kList && tuple_; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_callable() const { return kind_ == Kind::kCallable; }

  bool as_bool() const { return i_ != 0; }
  int64_t as_int() const { return i_; }  // also for bool
  double as_double() const { return kind_ == Kind::kFloat ? f_ : static_cast<double>(i_); }
  const std::string& str() const { return s_; }
  const ValueList& items() const { return *list_; }
  const ValueMap& map() const { return *map_; }
  ValueMap& namespace_map() const { return *map_; }  // namespaces are the one mutable object
  const Callable& fn() const { return *fn_; }
  const std::string& undefined_hint() const { return s_; }

  bool truthy() const;
  // Nesting depth of lists, dicts and namespaces (scalars are 0). Building data deeper than
  // kMaxDepth fails, which bounds every recursion over values (printing, tojson, comparison).
  int depth() const;
  static constexpr int kMaxDepth = 256;

 private:
  Kind kind_ = Kind::kUndefined;
  bool tuple_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;  // string, or the undefined hint
  std::shared_ptr<const ValueList> list_;
  std::shared_ptr<ValueMap> map_;
  int depth_ = 0;  // lists and dicts; namespaces read their map's child_depth
  std::shared_ptr<const Callable> fn_;
};

// Python's type name, for error messages ("str", "NoneType", "dict", ...).
std::string type_name(const Value& v);
// True when `v` is, or contains, the namespace `ns` (assigning it into `ns` would make a cycle).
bool contains_namespace(const Value& v, const ValueMap* ns);
// Raises the UndefinedError a use of `v` deserves.
[[noreturn]] void fail_undefined(const Value& v);

// str(v) as jinja2 prints {{ v }}: Undefined is empty, None is "None", floats as Python repr.
std::string to_str(const Value& v);
// repr(v): strings quoted the way Python quotes them (used inside printed lists and dicts).
std::string repr(const Value& v);
std::string float_repr(double d);

bool values_equal(const Value& a, const Value& b);
// Python's ordering (<) for numbers, strings and lists; anything else is a TypeError.
bool value_less(const Value& a, const Value& b);
// `needle in haystack`.
bool value_contains(const Value& haystack, const Value& needle);
// What a for loop walks: list items, dict keys, string code points; Undefined is empty.
ValueList iterate(const Value& v);

struct JsonOptions {
  bool ensure_ascii = false;
  bool pretty = false;          // indent was given (even 0 or ""): one item per line
  std::string indent_str;       // what each level adds
  std::string item_sep = ", ";  // Python's default; "," when pretty and no separators given
  std::string key_sep = ": ";
  bool sort_keys = false;
};
// json.dumps(v, ...) byte for byte as Python writes it.
std::string to_json(const Value& v, const JsonOptions& opts);

// UTF-8 helpers (input is validated before rendering, so these assume well-formed text).
std::vector<uint32_t> utf8_decode(const std::string& s);
void utf8_append(std::string& out, uint32_t cp);
std::string utf8_encode(const std::vector<uint32_t>& cps);
bool utf8_valid(const std::string& s);
size_t utf8_length(const std::string& s);
bool is_py_space(uint32_t cp);  // str.isspace()
uint32_t py_upper(uint32_t cp);
uint32_t py_lower(uint32_t cp);
bool py_is_cased_letter(uint32_t cp);

}  // namespace chimera::jinja
