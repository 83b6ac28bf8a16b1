// Splits a template into text and tag tokens the way jinja2's lexer does with trim_blocks=True and
// lstrip_blocks=True (how HF renders chat templates): `-` strips whitespace beside a tag, `+`
// keeps it, the newline after a block/comment tag is dropped, indentation before a block/comment
// tag on its own line is dropped, line endings become "\n" and one trailing newline is removed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/jinja/value.h"

namespace chimera::jinja {

enum class Tok {
  kText,        // literal template text
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,
  kString,  // text holds the unescaped value
  kInt,
  kFloat,
  kOp,  // text holds the operator: + - * / // % ** ~ == != < <= > >= = . , : | ( ) [ ] { }
  kEof,
};

struct Token {
  Tok type = Tok::kEof;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
  SourceLoc loc;
};

struct LexOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
};

// Throws JinjaError (with the location) on an unterminated tag or string, or a stray character.
std::vector<Token> tokenize(const std::string& source, const LexOptions& opts);

}  // namespace chimera::jinja
