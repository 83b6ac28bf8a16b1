// jinja2's built-in filters and tests, Python's str/dict/list methods, attribute and item lookup,
// and the arithmetic operators, with the semantics of jinja2 3.1 in HF's sandboxed environment.
#pragma once

#include <string>

#include "runtime/jinja/value.h"

namespace chimera::jinja {

// `obj.name`: methods first, then keys (jinja2's getattr order).
Value get_attribute(const Value& obj, const std::string& name);
// `obj[key]`: keys and indices first, then attributes (jinja2's getitem order).
Value get_item(const Value& obj, const Value& key);
// `obj[start:stop:step]`; absent bounds are Undefined.
Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
// + - * / // % ** ~
Value binary_op(const std::string& op, const Value& a, const Value& b);
Value negate(const Value& v);

// Throws JinjaError (kUnsupported) for a filter or test this interpreter does not implement.
Value apply_filter(const std::string& name, const Value& target, const CallArgs& args);
bool apply_test(const std::string& name, const Value& target, const CallArgs& args);

// Python's len(); strings count code points.
int64_t py_len(const Value& v);

}  // namespace chimera::jinja
