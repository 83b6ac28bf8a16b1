// Syntax tree of a parsed template: expressions and statements, each with its source location.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/jinja/value.h"

namespace chimera::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  kLiteral,   // literal
  kName,      // name
  kList,      // items
  kTuple,     // items
  kDict,      // items as key, value pairs
  kGetAttr,   // target.name
  kGetItem,   // target[items[0]]
  kSlice,     // target[items[0]:items[1]:items[2]] (null parts are omitted bounds)
  kCall,      // target(items, kwargs)
  kFilter,    // target | name(items, kwargs); target is null inside a filter block chain
  kTest,      // target is [not] name(items, kwargs); `negated`
  kNot,       // not target
  kNeg,       // -target
  kPos,       // +target
  kBinary,    // items[0] op items[1]: + - * / // % ** ~
  kCompare,   // items[0] ops[0] items[1] ops[1] items[2] ...: == != < <= > >= in notin
  kAnd,       // items[0] and items[1]
  kOr,        // items[0] or items[1]
  kCondExpr,  // items[0] if items[1] else items[2] (items[2] null: undefined)
};

struct Expr {
  ExprKind kind;
  SourceLoc loc;
  Value literal;
  std::string name;  // variable, attribute, filter, test, or binary operator
  ExprPtr target;
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

enum class NodeKind {
  kText,      // text
  kOutput,    // {{ expr }}
  kIf,        // branches: (condition, body)...; a null condition is `else`
  kFor,       // for targets in expr [if cond]: body [else else_body]
  kSet,       // set targets = expr, or set targets[0].attr = expr (attr non-empty)
  kSetBlock,  // set targets[0] [| filters] %} body {% endset
  kMacro,     // macro name(params) body
  kBreak,
  kContinue,
  kFilterBlock,  // filter filters %} body {% endfilter
  kScope,        // a body rendered in place ({% generation %} from HF's AssistantTracker)
};

struct Node {
  NodeKind kind;
  SourceLoc loc;
  std::string text;  // kText; macro name
  ExprPtr expr;      // output / for iterable / set value
  ExprPtr cond;      // for filter condition
  std::vector<std::string> targets;
  std::string attr;  // set ns.attr
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::vector<ExprPtr> filters;  // kFilter exprs with a null target, applied in order
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters with defaults (or null)
};

}  // namespace chimera::jinja
