#include "runtime/jinja/lexer.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "core/status.h"

namespace chimera::jinja {

namespace {

bool ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_name_char(char c) {
  return is_name_start(c) || is_digit(c);
}

// Python's str.rstrip() (Unicode whitespace).
std::string rstrip_py(const std::string& s) {
  std::vector<uint32_t> cps = utf8_decode(s);
  size_t n = cps.size();
  while (n > 0 && is_py_space(cps[n - 1])) --n;
  cps.resize(n);
  return utf8_encode(cps);
}

bool all_py_space(const std::string& s) {
  if (s.empty()) return false;
  for (uint32_t cp : utf8_decode(s)) {
    if (!is_py_space(cp)) return false;
  }
  return true;
}

class Lexer {
 public:
  Lexer(std::string src, const LexOptions& opts) : src_(std::move(src)), opts_(opts) {
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;  // the previous match ended a line (jinja2 lstrip rule)
    while (pos < src_.size()) {
      size_t tag = find_tag(pos);
      if (tag == std::string::npos) {
        emit_text(src_.substr(pos), pos);
        break;
      }
      char kind = src_[tag + 1];  // '{', '%' or '#'
      size_t after = tag + 2;
      char sign = 0;
      if (after < src_.size() && (src_[after] == '-' || src_[after] == '+')) sign = src_[after++];
      std::string text = src_.substr(pos, tag - pos);
      if (sign == '-') {
        text = rstrip_py(text);
      } else if (sign != '+' && opts_.lstrip_blocks && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = (l_pos == std::string::npos) ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && all_py_space(text.substr(l_pos))) text.resize(l_pos);
      }
      emit_text(text, pos);
      if (kind == '#') {
        pos = skip_comment(tag, after, &line_starting);
      } else {
        pos = lex_tag(tag, after, kind == '{', &line_starting);
      }
    }
    Token eof;
    eof.type = Tok::kEof;
    eof.loc = loc_at(src_.size());
    tokens_.push_back(eof);
    return std::move(tokens_);
  }

 private:
  SourceLoc loc_at(size_t offset) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    size_t line = it - line_starts_.begin();  // line_starts_ holds starts of lines 2..n
    size_t start = line == 0 ? 0 : line_starts_[line - 1];
    return SourceLoc{static_cast<int>(line + 1), static_cast<int>(offset - start + 1)};
  }

  [[noreturn]] void error_at(size_t offset, const std::string& msg) const {
    throw JinjaError{msg, loc_at(offset), JinjaErrorKind::kSyntax};
  }

  size_t find_tag(size_t pos) const {
    while (true) {
      size_t p = src_.find('{', pos);
      if (p == std::string::npos || p + 1 >= src_.size()) return std::string::npos;
      char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      pos = p + 1;
    }
  }

  void emit_text(const std::string& text, size_t offset) {
    if (text.empty()) return;
    Token t;
    t.type = Tok::kText;
    t.text = text;
    t.loc = loc_at(offset);
    tokens_.push_back(std::move(t));
  }

  void push(Tok type, size_t offset, std::string text = {}) {
    Token t;
    t.type = type;
    t.text = std::move(text);
    t.loc = loc_at(offset);
    tokens_.push_back(std::move(t));
  }

  // After a block or comment end: `-` eats all following whitespace, plain ends eat one newline.
  size_t finish_end(size_t pos, char sign, bool trim_newline, bool* line_starting) {
    size_t start = pos;
    if (sign == '-') {
      while (pos < src_.size() && ascii_space_or_unicode(pos)) pos = next_cp(pos);
    } else if (sign != '+' && trim_newline && pos < src_.size() && src_[pos] == '\n') {
      ++pos;
    }
    *line_starting = pos > start ? src_[pos - 1] == '\n' : false;
    return pos;
  }

  bool ascii_space_or_unicode(size_t pos) const {
    auto c = static_cast<unsigned char>(src_[pos]);
    if (c < 0x80) return ascii_space(static_cast<char>(c)) || (c >= 0x1C && c <= 0x1F);
    std::vector<uint32_t> cp = utf8_decode(src_.substr(pos, next_cp(pos) - pos));
    return !cp.empty() && is_py_space(cp[0]);
  }

  size_t next_cp(size_t pos) const {
    ++pos;
    while (pos < src_.size() && (static_cast<unsigned char>(src_[pos]) & 0xC0) == 0x80) ++pos;
    return pos;
  }

  size_t skip_comment(size_t tag, size_t pos, bool* line_starting) {
    size_t end = src_.find("#}", pos);
    if (end == std::string::npos) error_at(tag, "missing end of comment tag");
    char sign = 0;
    if (end > pos && (src_[end - 1] == '-' || src_[end - 1] == '+')) sign = src_[end - 1];
    return finish_end(end + 2, sign, opts_.trim_blocks, line_starting);
  }

  size_t lex_tag(size_t tag, size_t pos, bool is_var, bool* line_starting) {
    push(is_var ? Tok::kVarBegin : Tok::kBlockBegin, tag);
    std::vector<char> balance;
    bool prev_dot = false;
    while (true) {
      while (pos < src_.size() && ascii_space(src_[pos])) ++pos;
      if (pos >= src_.size()) {
        error_at(tag, is_var ? "unexpected end of template, expected '}}'"
                             : "unexpected end of template, expected '%}'");
      }
      if (balance.empty()) {
        const char* close = is_var ? "}}" : "%}";
        char sign = 0;
        size_t p = pos;
        if (src_[p] == '-' || (!is_var && src_[p] == '+')) sign = src_[p++];
        if (src_.compare(p, 2, close) == 0) {
          push(is_var ? Tok::kVarEnd : Tok::kBlockEnd, pos);
          return finish_end(p + 2, sign, !is_var && opts_.trim_blocks, line_starting);
        }
      }
      char c = src_[pos];
      size_t start = pos;
      if (is_name_start(c)) {
        while (pos < src_.size() && is_name_char(src_[pos])) ++pos;
        push(Tok::kName, start, src_.substr(start, pos - start));
        prev_dot = false;
      } else if (is_digit(c)) {
        pos = lex_number(pos, prev_dot);
        prev_dot = false;
      } else if (c == '\'' || c == '"') {
        pos = lex_string(pos);
        prev_dot = false;
      } else {
        static const char* kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (const char* t : kTwo) {
          if (src_.compare(pos, 2, t) == 0) op = t;
        }
        if (op.empty() && std::string("+-*/%~<>=.,:|()[]{}").find(c) != std::string::npos) {
          op = std::string(1, c);
        }
        if (op.empty()) error_at(pos, StrCat("unexpected character '", c, "' in tag"));
        if (op == "(" || op == "[" || op == "{") balance.push_back(op[0]);
        if (op == ")" || op == "]" || op == "}") {
          char want = op == ")" ? '(' : op == "]" ? '[' : '{';
          if (balance.empty() || balance.back() != want)
            error_at(pos, StrCat("unexpected '", op, "'"));
          balance.pop_back();
        }
        pos += op.size();
        push(Tok::kOp, start, op);
        prev_dot = op == ".";
      }
    }
  }

  size_t lex_number(size_t pos, bool after_dot) {
    size_t start = pos;
    std::string digits;
    auto take_digits = [&] {
      while (pos < src_.size() &&
             (is_digit(src_[pos]) ||
              (src_[pos] == '_' && pos + 1 < src_.size() && is_digit(src_[pos + 1])))) {
        if (src_[pos] != '_') digits += src_[pos];
        ++pos;
      }
    };
    take_digits();
    bool is_float = false;
    // `x.0.1` is attribute access: after a dot a number is always an integer (jinja2 does this
    // too).
    if (!after_dot && pos + 1 < src_.size() && src_[pos] == '.' && is_digit(src_[pos + 1])) {
      digits += '.';
      ++pos;
      take_digits();
      is_float = true;
    }
    if (!after_dot && pos < src_.size() && (src_[pos] == 'e' || src_[pos] == 'E')) {
      size_t p = pos + 1;
      if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
      if (p < src_.size() && is_digit(src_[p])) {
        digits += 'e';
        digits.append(src_, pos + 1, p - pos - 1);
        pos = p;
        take_digits();
        is_float = true;
      }
    }
    Token t;
    t.loc = loc_at(start);
    t.text = digits;
    if (is_float) {
      t.type = Tok::kFloat;
      t.float_value = std::strtod(digits.c_str(), nullptr);
    } else {
      t.type = Tok::kInt;
      errno = 0;
      t.int_value = std::strtoll(digits.c_str(), nullptr, 10);
      if (errno == ERANGE) error_at(start, "integer literal too large");
    }
    tokens_.push_back(std::move(t));
    return pos;
  }

  // Python string literal escapes, as jinja2 applies them ("unicode-escape").
  size_t lex_string(size_t pos) {
    size_t start = pos;
    char quote = src_[pos++];
    std::string out;
    while (true) {
      if (pos >= src_.size()) error_at(start, "unterminated string literal");
      char c = src_[pos];
      if (c == quote) {
        ++pos;
        break;
      }
      if (c != '\\') {
        out += c;
        ++pos;
        continue;
      }
      if (pos + 1 >= src_.size()) error_at(start, "unterminated string literal");
      char e = src_[pos + 1];
      pos += 2;
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case 'a':
          out += '\a';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case '\n':
          break;  // line continuation
        case 'x':
        case 'u':
        case 'U': {
          size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (pos + n > src_.size())
            error_at(pos - 2, "truncated \\" + std::string(1, e) + " escape");
          std::string hex = src_.substr(pos, n);
          for (char h : hex) {
            if (!std::isxdigit(static_cast<unsigned char>(h))) {
              error_at(pos - 2, "truncated \\" + std::string(1, e) + " escape");
            }
          }
          uint32_t cp = static_cast<uint32_t>(std::strtoul(hex.c_str(), nullptr, 16));
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            error_at(pos - 2, "escape is not a valid Unicode scalar value");
          }
          utf8_append(out, cp);
          pos += n;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = e - '0';
            for (int k = 0; k < 2 && pos < src_.size() && src_[pos] >= '0' && src_[pos] <= '7';
                 ++k) {
              cp = cp * 8 + (src_[pos++] - '0');
            }
            utf8_append(out, cp);
          } else {
            out += '\\';  // unknown escapes stay as written, like Python
            out += e;
          }
      }
    }
    Token t;
    t.type = Tok::kString;
    t.text = std::move(out);
    t.loc = loc_at(start);
    tokens_.push_back(std::move(t));
    return pos;
  }

  std::string src_;
  LexOptions opts_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

// jinja2 normalises \r\n and \r to \n and drops a single trailing newline (keep_trailing_newline
// is off).
std::string normalize_source(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

std::vector<Token> tokenize(const std::string& source, const LexOptions& opts) {
  Lexer lexer(normalize_source(source), opts);
  return lexer.run();
}

}  // namespace chimera::jinja
