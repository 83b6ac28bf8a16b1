#include "runtime/jinja/template.h"

#include <new>
#include <stdexcept>
#include <unordered_map>

#include "runtime/jinja/builtins.h"
#include "runtime/jinja/lexer.h"
#include "runtime/jinja/parser.h"

namespace chimera::jinja {

namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2's sandbox refuses larger ranges too

using Frame = std::unordered_map<std::string, Value>;
using Scopes = std::vector<std::shared_ptr<Frame>>;

enum class Flow { kNormal, kBreak, kContinue };

class Interpreter {
 public:
  Interpreter(const ValueMap& vars, const RenderLimits& limits) : vars_(vars), limits_(limits) {
    scopes_.push_back(std::make_shared<Frame>());
    install_globals();
  }

  std::string run(const Body& body) {
    std::string out;
    Flow f = render(body, out);
    if (f != Flow::kNormal) fail("'break' or 'continue' outside of a loop");
    return out;
  }

 private:
  // ---- names ----
  void install_globals() {
    globals_.set("range", Value::callable("range", [](CallArgs& a) { return builtin_range(a); }));
    globals_.set("namespace", Value::callable("namespace", [](CallArgs& a) {
                   ValueMap m;
                   for (const auto& p : a.positional) {
                     if (!p.is_dict()) fail("namespace() positional arguments must be mappings");
                     for (const auto& [k, v] : p.map().entries) m.set(k, v);
                   }
                   for (const auto& [k, v] : a.named) m.set(k, v);
                   return Value::make_namespace(std::move(m));
                 }));
    globals_.set("dict", Value::callable("dict", [](CallArgs& a) {
                   ValueMap m;
                   for (const auto& p : a.positional) {
                     if (!p.is_dict()) fail("dict() positional arguments must be mappings");
                     for (const auto& [k, v] : p.map().entries) m.set(k, v);
                   }
                   for (const auto& [k, v] : a.named) m.set(k, v);
                   return Value::dict(std::move(m));
                 }));
    globals_.set("raise_exception", Value::callable("raise_exception", [](CallArgs& a) -> Value {
                   std::string msg = a.positional.empty() ? "" : to_str(a.positional[0]);
                   throw JinjaError{msg, {}, JinjaErrorKind::kRaised};
                 }));
  }

  static Value builtin_range(CallArgs& a) {
    if (!a.named.empty() || a.positional.empty() || a.positional.size() > 3) {
      fail("range() expects 1 to 3 integer arguments");
    }
    std::vector<int64_t> v;
    for (const auto& p : a.positional) {
      if (p.is_undefined()) fail_undefined(p);
      if (!p.is_int() && !p.is_bool())
        fail(StrCat("'", type_name(p), "' object cannot be interpreted as an integer"));
      v.push_back(p.as_int());
    }
    int64_t start = v.size() == 1 ? 0 : v[0];
    int64_t stop = v.size() == 1 ? v[0] : v[1];
    int64_t step = v.size() == 3 ? v[2] : 1;
    if (step == 0) fail("range() arg 3 must not be zero");
    ValueList out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (static_cast<int64_t>(out.size()) >= kMaxRange) {
        fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
      }
      out.emplace_back(i);
    }
    return Value::list(std::move(out));
  }

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto hit = (*it)->find(name);
      if (hit != (*it)->end()) return hit->second;
    }
    if (const Value* v = vars_.find(name)) return *v;
    if (const Value* v = globals_.find(name)) return *v;
    return Value::undefined(StrCat("'", name, "' is undefined"));
  }

  void assign(const std::vector<std::string>& targets, const Value& v) {
    Frame& f = *scopes_.back();
    if (targets.size() == 1) {
      f[targets[0]] = v;
      return;
    }
    ValueList items = iterate(v);
    if (items.size() != targets.size()) {
      if (items.size() > targets.size())
        fail(StrCat("too many values to unpack (expected ", targets.size(), ")"));
      fail(StrCat("not enough values to unpack (expected ", targets.size(), ", got ", items.size(),
                  ")"));
    }
    for (size_t i = 0; i < targets.size(); ++i) f[targets[i]] = items[i];
  }

  struct ScopeGuard {
    explicit ScopeGuard(Scopes& s) : s_(s) { s_.push_back(std::make_shared<Frame>()); }
    ~ScopeGuard() { s_.pop_back(); }
    Scopes& s_;
  };

  // ---- statements ----
  void emit(std::string& out, const std::string& s) {
    out += s;
    if (out.size() > limits_.max_output_bytes) fail("rendered output exceeds the size limit");
  }

  Flow render(const Body& body, std::string& out) {
    for (const auto& n : body) {
      Flow f;
      try {
        f = render_node(*n, out);
      } catch (JinjaError& err) {
        if (err.loc.line == 0) err.loc = n->loc;
        throw;
      }
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  Flow render_node(const Node& n, std::string& out) {
    switch (n.kind) {
      case NodeKind::kText:
        emit(out, n.text);
        return Flow::kNormal;
      case NodeKind::kOutput: {
        emit(out, to_str(eval(*n.expr)));
        return Flow::kNormal;
      }
      case NodeKind::kIf:
        for (const auto& [cond, body] : n.branches) {
          if (!cond || eval(*cond).truthy()) return render(body, out);
        }
        return Flow::kNormal;
      case NodeKind::kFor:
        render_for(n, out);
        return Flow::kNormal;
      case NodeKind::kSet: {
        Value v = eval(*n.expr);
        if (n.attr.empty()) {
          assign(n.targets, v);
        } else {
          Value ns = lookup(n.targets[0]);
          if (!ns.is_namespace()) fail("cannot assign attribute on non-namespace object");
          if (contains_namespace(v, &ns.namespace_map())) fail("a namespace cannot contain itself");
          if (v.depth() + 1 > Value::kMaxDepth)
            fail(StrCat("data nests deeper than ", Value::kMaxDepth, " levels"));
          ns.namespace_map().set(n.attr, v);
        }
        return Flow::kNormal;
      }
      case NodeKind::kSetBlock: {
        std::string captured;
        {
          ScopeGuard g(scopes_);
          render(n.body, captured);
        }
        assign(n.targets, apply_filters(n.filters, Value(captured)));
        return Flow::kNormal;
      }
      case NodeKind::kFilterBlock: {
        std::string captured;
        {
          ScopeGuard g(scopes_);
          render(n.body, captured);
        }
        emit(out, to_str(apply_filters(n.filters, Value(captured))));
        return Flow::kNormal;
      }
      case NodeKind::kMacro:
        (*scopes_.back())[n.text] = make_macro(n);
        return Flow::kNormal;
      case NodeKind::kBreak:
        return Flow::kBreak;
      case NodeKind::kContinue:
        return Flow::kContinue;
      case NodeKind::kScope:
        return render(n.body, out);
    }
    return Flow::kNormal;
  }

  Value apply_filters(const std::vector<ExprPtr>& filters, Value v) {
    for (const auto& f : filters) v = call_filter(*f, v);
    return v;
  }

  void render_for(const Node& n, std::string& out) {
    ValueList items = iterate(eval(*n.expr));
    if (n.cond) {
      ValueList kept;
      for (const auto& item : items) {
        ScopeGuard g(scopes_);
        assign(n.targets, item);
        if (eval(*n.cond).truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      ScopeGuard g(scopes_);
      render(n.else_body, out);
      return;
    }
    const int64_t len = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < len; ++i) {
      ScopeGuard g(scopes_);  // a fresh scope per iteration: sets do not outlive it (as jinja2)
      ValueMap loop;
      loop.set("index0", Value(i));
      loop.set("index", Value(i + 1));
      loop.set("revindex0", Value(len - i - 1));
      loop.set("revindex", Value(len - i));
      loop.set("first", Value(i == 0));
      loop.set("last", Value(i == len - 1));
      loop.set("length", Value(len));
      loop.set("depth", Value(1));
      loop.set("depth0", Value(0));
      if (i > 0) loop.set("previtem", items[i - 1]);
      if (i + 1 < len) loop.set("nextitem", items[i + 1]);
      loop.set("cycle", Value::callable("cycle", [i](CallArgs& a) {
                 if (a.positional.empty()) fail("no items for cycling given");
                 return a.positional[i % a.positional.size()];
               }));
      (*scopes_.back())["loop"] = Value::dict(std::move(loop));
      assign(n.targets, items[i]);
      Flow f = render(n.body, out);
      if (f == Flow::kBreak) break;
    }
  }

  Value make_macro(const Node& n) {
    // Macros see the scopes they were defined in. Weak references: the macro lives in one of those
    // frames, and a strong one would be a cycle.
    std::vector<std::weak_ptr<Frame>> captured(scopes_.begin(), scopes_.end());
    const Node* node = &n;
    return Value::callable(n.text, [this, node, captured](CallArgs& a) -> Value {
      Scopes frames;
      for (const auto& w : captured) {
        frames.push_back(w.lock());
        if (!frames.back()) fail(StrCat("macro '", node->text, "' called after its scope ended"));
      }
      if (++call_depth_ > limits_.max_call_depth) {
        --call_depth_;
        fail("macro calls nest too deeply");
      }
      if (a.positional.size() > node->params.size()) {
        --call_depth_;
        fail(StrCat("macro '", node->text, "' takes not more than ", node->params.size(),
                    " argument(s)"));
      }
      Scopes saved = std::move(scopes_);
      scopes_ = std::move(frames);
      scopes_.push_back(std::make_shared<Frame>());
      std::string out;
      try {
        Frame& f = *scopes_.back();
        std::vector<bool> given(node->params.size(), false);
        for (size_t i = 0; i < a.positional.size(); ++i) {
          f[node->params[i].first] = a.positional[i];
          given[i] = true;
        }
        for (const auto& [k, v] : a.named) {
          size_t i = 0;
          while (i < node->params.size() && node->params[i].first != k) ++i;
          if (i == node->params.size())
            fail(StrCat("macro '", node->text, "' takes no keyword argument '", k, "'"));
          f[k] = v;
          given[i] = true;
        }
        for (size_t i = 0; i < node->params.size(); ++i) {
          if (given[i]) continue;
          const auto& [pname, def] = node->params[i];
          f[pname] = def ? eval(*def) : Value::undefined(StrCat("'", pname, "' is undefined"));
        }
        if (render(node->body, out) != Flow::kNormal)
          fail("'break' or 'continue' outside of a loop");
      } catch (...) {
        scopes_ = std::move(saved);
        --call_depth_;
        throw;
      }
      scopes_ = std::move(saved);
      --call_depth_;
      return Value(out);
    });
  }

  // ---- expressions ----
  CallArgs eval_args(const Expr& e) {
    CallArgs args;
    for (const auto& a : e.items) args.positional.push_back(eval(*a));
    for (const auto& [k, a] : e.kwargs) args.named.emplace_back(k, eval(*a));
    return args;
  }

  Value call_filter(const Expr& f, const Value& target) {
    try {
      CallArgs args = eval_args(f);
      return apply_filter(f.name, target, args);
    } catch (JinjaError& err) {
      if (err.loc.line == 0) err.loc = f.loc;
      throw;
    }
  }

  Value eval(const Expr& e) {
    try {
      return eval_inner(e);
    } catch (JinjaError& err) {
      if (err.loc.line == 0) err.loc = e.loc;
      throw;
    }
  }

  Value eval_inner(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kLiteral:
        return e.literal;
      case ExprKind::kName:
        return lookup(e.name);
      case ExprKind::kList:
      case ExprKind::kTuple: {
        ValueList items;
        for (const auto& i : e.items) items.push_back(eval(*i));
        return Value::list(std::move(items), e.kind == ExprKind::kTuple);
      }
      case ExprKind::kDict: {
        ValueMap m;
        for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
          Value k = eval(*e.items[i]);
          if (!k.is_string()) fail_unsupported("dict literal keys must be strings");
          m.set(k.str(), eval(*e.items[i + 1]));
        }
        return Value::dict(std::move(m));
      }
      case ExprKind::kGetAttr:
        return get_attribute(eval(*e.target), e.name);
      case ExprKind::kGetItem: {
        Value t = eval(*e.target);
        return get_item(t, eval(*e.items[0]));
      }
      case ExprKind::kSlice: {
        Value t = eval(*e.target);
        Value parts[3];
        for (int i = 0; i < 3; ++i) {
          if (e.items[i]) parts[i] = eval(*e.items[i]);
        }
        return get_slice(t, parts[0], parts[1], parts[2]);
      }
      case ExprKind::kCall: {
        Value fn = eval(*e.target);
        CallArgs args = eval_args(e);
        if (fn.is_undefined()) fail_undefined(fn);
        if (!fn.is_callable()) fail(StrCat("'", type_name(fn), "' object is not callable"));
        return fn.fn().fn(args);
      }
      case ExprKind::kFilter:
        return call_filter(e, eval(*e.target));
      case ExprKind::kTest: {
        Value t = eval(*e.target);
        CallArgs args = eval_args(e);
        return Value(apply_test(e.name, t, args) != e.negated);
      }
      case ExprKind::kNot:
        return Value(!eval(*e.target).truthy());
      case ExprKind::kNeg:
        return negate(eval(*e.target));
      case ExprKind::kPos: {
        Value v = eval(*e.target);
        if (v.is_undefined()) fail_undefined(v);
        if (!v.is_number()) fail(StrCat("bad operand type for unary +: '", type_name(v), "'"));
        return v.is_float() ? v : Value(v.as_int());
      }
      case ExprKind::kBinary: {
        Value a = eval(*e.items[0]);
        Value b = eval(*e.items[1]);
        return binary_op(e.name, a, b);
      }
      case ExprKind::kCompare: {
        Value left = eval(*e.items[0]);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.items[i + 1]);
          const std::string& op = e.ops[i];
          bool ok;
          if (op == "==") {
            ok = values_equal(left, right);
          } else if (op == "!=") {
            ok = !values_equal(left, right);
          } else if (op == "<") {
            ok = value_less(left, right);
          } else if (op == ">") {
            ok = value_less(right, left);
          } else if (op == "<=") {
            ok = value_less(left, right) || values_equal(left, right);
          } else if (op == ">=") {
            ok = value_less(right, left) || values_equal(left, right);
          } else if (op == "in") {
            ok = value_contains(right, left);
          } else {
            ok = !value_contains(right, left);
          }
          if (!ok) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case ExprKind::kAnd: {
        Value a = eval(*e.items[0]);
        return a.truthy() ? eval(*e.items[1]) : a;
      }
      case ExprKind::kOr: {
        Value a = eval(*e.items[0]);
        return a.truthy() ? a : eval(*e.items[1]);
      }
      case ExprKind::kCondExpr: {
        if (eval(*e.items[1]).truthy()) return eval(*e.items[0]);
        if (e.items[2]) return eval(*e.items[2]);
        return Value::undefined(StrCat("the inline if-expression on line ", e.loc.line,
                                       " evaluated to false and no else section was defined."));
      }
    }
    return Value();
  }

  const ValueMap& vars_;
  const RenderLimits& limits_;
  ValueMap globals_;
  Scopes scopes_;
  int call_depth_ = 0;
};

Status to_status(const JinjaError& err) {
  std::string where =
      err.loc.line > 0 ? StrCat(" (template line ", err.loc.line, ", column ", err.loc.column, ")")
                       : "";
  switch (err.kind) {
    case JinjaErrorKind::kSyntax:
      return Error(ErrorCode::kFormat, "template syntax error: ", err.message, where);
    case JinjaErrorKind::kUnsupported:
      return Error(ErrorCode::kUnsupported, "template uses an unsupported feature: ", err.message,
                   where);
    case JinjaErrorKind::kRaised:
      return Error(ErrorCode::kInvalidArgument, "template raised an exception: ", err.message,
                   where);
    case JinjaErrorKind::kRuntime:
      break;
  }
  return Error(ErrorCode::kInvalidArgument, "template render error: ", err.message, where);
}

}  // namespace

Result<Template> Template::parse(const std::string& source) {
  if (!utf8_valid(source)) return Error(ErrorCode::kFormat, "template is not valid UTF-8");
  try {
    Template t;
    t.body_ = std::make_shared<const Body>(parse_template(tokenize(source, LexOptions{})));
    return t;
  } catch (const JinjaError& err) {
    return to_status(err);
  }
}

Result<std::string> Template::render(const ValueMap& variables, const RenderLimits& limits) const {
  CHIMERA_CHECK(body_ != nullptr, "render() on a Template that was not parsed");
  try {
    Interpreter interp(variables, limits);
    return interp.run(*body_);
  } catch (const JinjaError& err) {
    return to_status(err);
  } catch (const std::bad_alloc&) {
    return Error(ErrorCode::kOutOfMemory, "template rendering ran out of memory");
  } catch (const std::length_error&) {
    return Error(ErrorCode::kOutOfMemory, "template rendering built a string or list too large");
  }
}

}  // namespace chimera::jinja
