#include "runtime/jinja/parser.h"

#include <set>

#include "core/status.h"

namespace chimera::jinja {

namespace {

constexpr int kMaxNesting = 200;  // deeper expressions or blocks are refused, not a stack overflow

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : toks_(tokens) {}

  Body parse() {
    std::string end;
    Body body = parse_body({}, &end);
    return body;
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  void advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool is_op(const char* op) const { return cur().type == Tok::kOp && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == Tok::kName && cur().text == name; }

  [[noreturn]] void error(const std::string& msg) const {
    throw JinjaError{msg, cur().loc, JinjaErrorKind::kSyntax};
  }

  std::string describe(const Token& t) const {
    switch (t.type) {
      case Tok::kEof:
        return "end of template";
      case Tok::kBlockEnd:
        return "end of statement block";
      case Tok::kVarEnd:
        return "end of print statement";
      case Tok::kString:
        return "string";
      case Tok::kInt:
      case Tok::kFloat:
        return "number";
      default:
        return "'" + t.text + "'";
    }
  }

  void expect_op(const char* op) {
    if (!is_op(op)) error(StrCat("expected '", op, "', got ", describe(cur())));
    advance();
  }
  std::string expect_name() {
    if (cur().type != Tok::kName) error(StrCat("expected a name, got ", describe(cur())));
    std::string n = cur().text;
    advance();
    return n;
  }
  void expect_block_end() {
    if (cur().type != Tok::kBlockEnd)
      error(StrCat("expected end of statement block, got ", describe(cur())));
    advance();
  }

  struct DepthGuard {
    explicit DepthGuard(Parser* p) : p_(p) {
      if (++p_->depth_ > kMaxNesting) p_->error("template nesting is too deep");
    }
    ~DepthGuard() { --p_->depth_; }
    Parser* p_;
  };

  // ---- statements ----

  // Parses nodes until a block tag whose name is in `ends` (left unconsumed after the name: pos_
  // is on that name token) or end of input (an error when `ends` is non-empty).
  Body parse_body(const std::set<std::string>& ends, std::string* end_tag) {
    DepthGuard guard(this);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::kEof) {
        if (!ends.empty()) {
          error(StrCat("unexpected end of template, expected '", *ends.begin(), "'"));
        }
        return body;
      }
      if (t.type == Tok::kText) {
        auto n = std::make_unique<Node>();
        n->kind = NodeKind::kText;
        n->loc = t.loc;
        n->text = t.text;
        body.push_back(std::move(n));
        advance();
      } else if (t.type == Tok::kVarBegin) {
        auto n = std::make_unique<Node>();
        n->kind = NodeKind::kOutput;
        n->loc = t.loc;
        advance();
        n->expr = parse_tuple_expr();
        if (cur().type != Tok::kVarEnd) error(StrCat("expected '}}', got ", describe(cur())));
        advance();
        body.push_back(std::move(n));
      } else if (t.type == Tok::kBlockBegin) {
        advance();
        if (cur().type != Tok::kName) error("expected a statement name after '{%'");
        std::string name = cur().text;
        if (ends.count(name)) {
          *end_tag = name;
          return body;
        }
        body.push_back(parse_statement());
      } else {
        error(StrCat("unexpected ", describe(t)));
      }
    }
  }

  NodePtr parse_statement() {
    const std::string name = cur().text;
    SourceLoc loc = cur().loc;
    NodePtr n;
    if (name == "if") {
      n = parse_if();
    } else if (name == "for") {
      n = parse_for();
    } else if (name == "set") {
      n = parse_set();
    } else if (name == "macro") {
      n = parse_macro();
    } else if (name == "break" || name == "continue") {
      advance();
      expect_block_end();
      n = std::make_unique<Node>();
      n->kind = name == "break" ? NodeKind::kBreak : NodeKind::kContinue;
    } else if (name == "filter") {
      advance();
      n = std::make_unique<Node>();
      n->kind = NodeKind::kFilterBlock;
      n->filters = parse_filter_chain(/*leading_pipe=*/false);
      expect_block_end();
      n->body = parse_closing_body("endfilter");
    } else if (name == "generation") {
      advance();
      expect_block_end();
      n = std::make_unique<Node>();
      n->kind = NodeKind::kScope;
      n->body = parse_closing_body("endgeneration");
    } else if (name.rfind("end", 0) == 0 || name == "else" || name == "elif") {
      error(StrCat("unexpected '", name, "' tag (no block open that it closes)"));
    } else {
      throw JinjaError{StrCat("unsupported template tag '", name, "'"), loc,
                       JinjaErrorKind::kUnsupported};
    }
    n->loc = loc;
    return n;
  }

  Body parse_closing_body(const std::string& end) {
    std::string got;
    Body body = parse_body({end}, &got);
    advance();  // the end tag name
    expect_block_end();
    return body;
  }

  NodePtr parse_if() {
    auto n = std::make_unique<Node>();
    n->kind = NodeKind::kIf;
    advance();  // if
    ExprPtr cond = parse_expr();
    expect_block_end();
    while (true) {
      std::string end;
      Body body = parse_body({"elif", "else", "endif"}, &end);
      n->branches.emplace_back(std::move(cond), std::move(body));
      advance();  // the tag name
      if (end == "elif") {
        cond = parse_expr();
        expect_block_end();
      } else if (end == "else") {
        expect_block_end();
        n->branches.emplace_back(nullptr, parse_closing_body("endif"));
        return n;
      } else {
        expect_block_end();
        return n;
      }
    }
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> targets;
    bool paren = false;
    if (is_op("(")) {
      paren = true;
      advance();
    }
    targets.push_back(expect_name());
    while (is_op(",")) {
      advance();
      if (cur().type != Tok::kName) break;
      targets.push_back(expect_name());
    }
    if (paren) expect_op(")");
    return targets;
  }

  NodePtr parse_for() {
    auto n = std::make_unique<Node>();
    n->kind = NodeKind::kFor;
    advance();  // for
    n->targets = parse_targets();
    if (!is_name("in")) error(StrCat("expected 'in', got ", describe(cur())));
    advance();
    n->expr = parse_tuple_expr(/*with_condexpr=*/false);
    if (is_name("if")) {
      advance();
      n->cond = parse_expr();
    }
    if (is_name("recursive")) {
      throw JinjaError{"recursive for loops are not supported", cur().loc,
                       JinjaErrorKind::kUnsupported};
    }
    expect_block_end();
    std::string end;
    n->body = parse_body({"else", "endfor"}, &end);
    advance();
    expect_block_end();
    if (end == "else") n->else_body = parse_closing_body("endfor");
    return n;
  }

  NodePtr parse_set() {
    auto n = std::make_unique<Node>();
    advance();  // set
    if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().text == ".") {
      n->targets.push_back(expect_name());
      advance();  // .
      n->attr = expect_name();
      n->kind = NodeKind::kSet;
      expect_op("=");
      n->expr = parse_tuple_expr();
      expect_block_end();
      return n;
    }
    n->targets = parse_targets();
    if (is_op("=")) {
      advance();
      n->kind = NodeKind::kSet;
      n->expr = parse_tuple_expr();
      expect_block_end();
      return n;
    }
    if (n->targets.size() != 1) error("a block set assigns a single name");
    n->kind = NodeKind::kSetBlock;
    if (is_op("|")) n->filters = parse_filter_chain(/*leading_pipe=*/true);
    expect_block_end();
    n->body = parse_closing_body("endset");
    return n;
  }

  NodePtr parse_macro() {
    auto n = std::make_unique<Node>();
    n->kind = NodeKind::kMacro;
    advance();  // macro
    n->text = expect_name();
    expect_op("(");
    while (!is_op(")")) {
      std::string param = expect_name();
      ExprPtr def;
      if (is_op("=")) {
        advance();
        def = parse_expr();
      }
      n->params.emplace_back(param, std::move(def));
      if (!is_op(",")) break;
      advance();
    }
    expect_op(")");
    expect_block_end();
    n->body = parse_closing_body("endmacro");
    return n;
  }

  // `| a(x) | b` (or `a(x) | b` in {% filter %}): filter exprs with a null target.
  std::vector<ExprPtr> parse_filter_chain(bool leading_pipe) {
    std::vector<ExprPtr> chain;
    bool first = true;
    while (true) {
      if (!first || leading_pipe) {
        if (!is_op("|")) break;
        advance();
      }
      first = false;
      chain.push_back(parse_filter(nullptr));
    }
    return chain;
  }

  // ---- expressions ----
  ExprPtr make(ExprKind kind, SourceLoc loc) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->loc = loc;
    return e;
  }

  // `a, b` without parentheses is a tuple (in {{ }} and set/for values).
  ExprPtr parse_tuple_expr(bool with_condexpr = true) {
    SourceLoc loc = cur().loc;
    ExprPtr first = with_condexpr ? parse_expr() : parse_or();
    if (!is_op(",")) return first;
    auto t = make(ExprKind::kTuple, loc);
    t->items.push_back(std::move(first));
    while (is_op(",")) {
      advance();
      if (cur().type == Tok::kBlockEnd || cur().type == Tok::kVarEnd) break;
      t->items.push_back(with_condexpr ? parse_expr() : parse_or());
    }
    return t;
  }

  ExprPtr parse_expr() {
    DepthGuard guard(this);
    SourceLoc loc = cur().loc;
    ExprPtr e = parse_or();
    while (is_name("if")) {
      advance();
      auto c = make(ExprKind::kCondExpr, loc);
      c->items.push_back(std::move(e));
      c->items.push_back(parse_or());
      if (is_name("else")) {
        advance();
        c->items.push_back(parse_expr());
      } else {
        c->items.push_back(nullptr);
      }
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(ExprKind kind, SourceLoc loc, ExprPtr a, ExprPtr b, std::string op = {}) {
    auto e = make(kind, loc);
    e->name = std::move(op);
    e->items.push_back(std::move(a));
    e->items.push_back(std::move(b));
    return e;
  }

  ExprPtr parse_or() {
    SourceLoc loc = cur().loc;
    ExprPtr e = parse_and();
    while (is_name("or")) {
      advance();
      e = binary(ExprKind::kOr, loc, std::move(e), parse_and());
    }
    return e;
  }

  ExprPtr parse_and() {
    SourceLoc loc = cur().loc;
    ExprPtr e = parse_not();
    while (is_name("and")) {
      advance();
      e = binary(ExprKind::kAnd, loc, std::move(e), parse_not());
    }
    return e;
  }

  ExprPtr parse_not() {
    DepthGuard guard(this);
    if (is_name("not")) {
      SourceLoc loc = cur().loc;
      advance();
      auto e = make(ExprKind::kNot, loc);
      e->target = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    SourceLoc loc = cur().loc;
    ExprPtr e = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::kOp &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().type == Tok::kName && peek().text == "in") {
        op = "notin";
        advance();
        advance();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(ExprKind::kCompare, loc);
        cmp->items.push_back(std::move(e));
      }
      cmp->ops.push_back(op);
      cmp->items.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(e);
  }

  ExprPtr parse_math1() {
    SourceLoc loc = cur().loc;
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().text;
      advance();
      e = binary(ExprKind::kBinary, loc, std::move(e), parse_concat(), op);
    }
    return e;
  }

  ExprPtr parse_concat() {
    SourceLoc loc = cur().loc;
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      advance();
      e = binary(ExprKind::kBinary, loc, std::move(e), parse_math2(), "~");
    }
    return e;
  }

  ExprPtr parse_math2() {
    SourceLoc loc = cur().loc;
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = cur().text;
      advance();
      e = binary(ExprKind::kBinary, loc, std::move(e), parse_pow(), op);
    }
    return e;
  }

  ExprPtr parse_pow() {
    SourceLoc loc = cur().loc;
    ExprPtr e = parse_unary(true);
    while (is_op("**")) {
      advance();
      e = binary(ExprKind::kBinary, loc, std::move(e), parse_unary(true), "**");
    }
    return e;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(this);
    SourceLoc loc = cur().loc;
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      ExprKind k = is_op("-") ? ExprKind::kNeg : ExprKind::kPos;
      advance();
      e = make(k, loc);
      e->target = parse_unary(false);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    SourceLoc loc = t.loc;
    if (t.type == Tok::kName) {
      static const std::set<std::string> kTrue = {"true", "True"}, kFalse = {"false", "False"},
                                         kNone = {"none", "None"};
      auto e = make(ExprKind::kLiteral, loc);
      if (kTrue.count(t.text)) {
        e->literal = Value(true);
      } else if (kFalse.count(t.text)) {
        e->literal = Value(false);
      } else if (kNone.count(t.text)) {
        e->literal = Value::none();
      } else {
        e->kind = ExprKind::kName;
        e->name = t.text;
      }
      advance();
      return e;
    }
    if (t.type == Tok::kString) {
      std::string s;
      while (cur().type == Tok::kString) {  // adjacent literals concatenate, as in Python
        s += cur().text;
        advance();
      }
      auto e = make(ExprKind::kLiteral, loc);
      e->literal = Value(std::move(s));
      return e;
    }
    if (t.type == Tok::kInt || t.type == Tok::kFloat) {
      auto e = make(ExprKind::kLiteral, loc);
      e->literal = t.type == Tok::kInt ? Value(t.int_value) : Value(t.float_value);
      advance();
      return e;
    }
    if (is_op("(")) {
      advance();
      if (is_op(")")) {
        advance();
        return make(ExprKind::kTuple, loc);
      }
      ExprPtr first = parse_expr();
      if (is_op(")")) {
        advance();
        return first;
      }
      auto tup = make(ExprKind::kTuple, loc);
      tup->items.push_back(std::move(first));
      while (is_op(",")) {
        advance();
        if (is_op(")")) break;
        tup->items.push_back(parse_expr());
      }
      expect_op(")");
      return tup;
    }
    if (is_op("[")) {
      advance();
      auto list = make(ExprKind::kList, loc);
      while (!is_op("]")) {
        list->items.push_back(parse_expr());
        if (!is_op(",")) break;
        advance();
      }
      expect_op("]");
      return list;
    }
    if (is_op("{")) {
      advance();
      auto dict = make(ExprKind::kDict, loc);
      while (!is_op("}")) {
        dict->items.push_back(parse_expr());
        expect_op(":");
        dict->items.push_back(parse_expr());
        if (!is_op(",")) break;
        advance();
      }
      expect_op("}");
      return dict;
    }
    error(StrCat("unexpected ", describe(t), " in expression"));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(".")) {
        SourceLoc loc = cur().loc;
        advance();
        auto a = make(ExprKind::kGetAttr, loc);
        if (cur().type == Tok::kName) {
          a->name = cur().text;
          advance();
        } else if (cur().type == Tok::kInt) {  // x.0 is x[0]
          a->kind = ExprKind::kGetItem;
          auto idx = make(ExprKind::kLiteral, cur().loc);
          idx->literal = Value(cur().int_value);
          a->items.push_back(std::move(idx));
          advance();
        } else {
          error(StrCat("expected an attribute name after '.', got ", describe(cur())));
        }
        a->target = std::move(e);
        e = std::move(a);
      } else if (is_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr target) {
    SourceLoc loc = cur().loc;
    advance();  // [
    ExprPtr parts[3];
    int colons = 0;
    auto at_part_end = [&] { return is_op(":") || is_op("]"); };
    if (!at_part_end()) parts[0] = parse_expr();
    while (is_op(":") && colons < 2) {
      advance();
      ++colons;
      if (!at_part_end()) parts[colons] = parse_expr();
    }
    expect_op("]");
    auto e = make(colons ? ExprKind::kSlice : ExprKind::kGetItem, loc);
    e->target = std::move(target);
    if (colons == 0) {
      if (!parts[0]) error("empty subscript");
      e->items.push_back(std::move(parts[0]));
    } else {
      for (auto& p : parts) e->items.push_back(std::move(p));
    }
    return e;
  }

  void parse_args(Expr* e) {
    expect_op("(");
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) error("*args and **kwargs in calls are not supported");
      if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().text == "=") {
        std::string key = cur().text;
        advance();
        advance();
        e->kwargs.emplace_back(key, parse_expr());
      } else {
        if (!e->kwargs.empty()) error("positional argument follows keyword argument");
        e->items.push_back(parse_expr());
      }
      if (!is_op(",")) break;
      advance();
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr target) {
    auto e = make(ExprKind::kCall, cur().loc);
    e->target = std::move(target);
    parse_args(e.get());
    return e;
  }

  ExprPtr parse_filter(ExprPtr target) {
    auto e = make(ExprKind::kFilter, cur().loc);
    e->name = expect_name();
    while (is_op(".")) {  // dotted filter names
      advance();
      e->name += '.';
      e->name += expect_name();
    }
    e->target = std::move(target);
    if (is_op("(")) parse_args(e.get());
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        advance();
        e = parse_filter(std::move(e));
      } else if (is_name("is")) {
        advance();
        auto t = make(ExprKind::kTest, cur().loc);
        if (is_name("not")) {
          t->negated = true;
          advance();
        }
        t->name = expect_name();
        while (is_op(".")) {
          advance();
          t->name += '.';
          t->name += expect_name();
        }
        t->target = std::move(e);
        if (is_op("(")) {
          parse_args(t.get());
        } else if ((cur().type == Tok::kName || cur().type == Tok::kString ||
                    cur().type == Tok::kInt || cur().type == Tok::kFloat || is_op("[") ||
                    is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and") && !is_name("if") &&
                   !is_name("in") && !is_name("not") && !is_name("is")) {
          // `x is sameas none`, `x is divisibleby 3`: one argument without parentheses
          ExprPtr arg = parse_primary();
          t->items.push_back(parse_postfix(std::move(arg)));
        }
        e = std::move(t);
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  const std::vector<Token>& toks_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

Body parse_template(const std::vector<Token>& tokens) {
  Parser p(tokens);
  return p.parse();
}

}  // namespace chimera::jinja
