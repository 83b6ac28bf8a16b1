// Recursive-descent parser for the Jinja subset chat templates use, following jinja2's grammar and
// operator precedence (filters and tests bind tighter than arithmetic; `not` looser than
// comparisons).
#pragma once

#include <string>
#include <vector>

#include "runtime/jinja/ast.h"
#include "runtime/jinja/lexer.h"

namespace chimera::jinja {

// Throws JinjaError with the location of the offending token.
Body parse_template(const std::vector<Token>& tokens);

}  // namespace chimera::jinja
