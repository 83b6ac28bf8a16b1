// A parsed Jinja template and its renderer: the subset of jinja2 that chat templates use, with the
// environment HF transformers renders them in (ImmutableSandboxedEnvironment, trim_blocks,
// lstrip_blocks, loop controls, json.dumps-style tojson, raise_exception). Not for the hot path:
// a template renders once per turn.
//
//   auto tmpl = Template::parse(source);          // error: "line 3, column 7: ..."
//   ValueMap vars; vars.set("messages", ...);
//   auto text = tmpl->render(vars);
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "runtime/jinja/ast.h"
#include "runtime/jinja/value.h"

namespace chimera::jinja {

struct RenderLimits {
  size_t max_output_bytes = 64u << 20;
  int max_call_depth = 64;  // macro recursion
};

class Template {
 public:
  // kFormat for a syntax error, kUnsupported for valid Jinja this interpreter does not implement;
  // the message names line and column.
  static Result<Template> parse(const std::string& source);

  // `variables` sit on top of the globals range(), namespace(), dict() and raise_exception().
  // Errors: kInvalidArgument when the template raises (message passed through) or fails at run
  // time, kUnsupported for an unimplemented filter/test/method; messages name line and column.
  Result<std::string> render(const ValueMap& variables, const RenderLimits& limits = {}) const;

 private:
  std::shared_ptr<const Body> body_;
};

}  // namespace chimera::jinja
