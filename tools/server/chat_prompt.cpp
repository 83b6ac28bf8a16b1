#include "chat_prompt.h"

#include <algorithm>

#include "runtime/chat_template.h"

namespace chimera::server {

namespace {

ChatTemplateOptions template_options(const Tokenizer& tok, const nlohmann::ordered_json& vars) {
  ChatTemplateOptions opts;
  if (tok.bos() != kNoToken) opts.bos_token = tok.token_text(tok.bos());
  if (tok.eos() != kNoToken) opts.eos_token = tok.token_text(tok.eos());
  opts.extra_vars = vars;
  return opts;
}

// Boundaries are computed for at most this many trailing messages: each costs one render and
// one tokenization of the conversation so far, and divergence is most likely near the end.
constexpr size_t kMaxBoundaryMessages = 48;

}  // namespace

Result<std::vector<TokenId>> tokenize_prompt_text(const Tokenizer& tok, const std::string& text) {
  EncodeOptions eo;
  eo.parse_special = true;  // the template writes control tokens as text
  const std::string bos = tok.bos() != kNoToken ? tok.token_text(tok.bos()) : std::string();
  // Templates that print bos_token themselves must not get a second one.
  eo.add_special = !(!bos.empty() && text.rfind(bos, 0) == 0);
  return tok.encode(text, eo);
}

Result<ChatPrompt> render_chat_prompt(const Tokenizer& tok, const std::string& chat_template,
                                      const nlohmann::ordered_json& messages,
                                      const nlohmann::ordered_json& template_vars,
                                      bool with_boundaries) {
  const ChatTemplateOptions opts = template_options(tok, template_vars);
  ChatPrompt p;
  CHIMERA_ASSIGN_OR_RETURN(p.text, apply_chat_template_json(chat_template, messages,
                                                            /*add_generation_prompt=*/true, opts));
  CHIMERA_ASSIGN_OR_RETURN(p.tokens, tokenize_prompt_text(tok, p.text));
  if (!with_boundaries) return p;
  const size_t n = messages.size();
  for (size_t k = n > kMaxBoundaryMessages ? n - kMaxBoundaryMessages : 1; k <= n; ++k) {
    nlohmann::ordered_json prefix = nlohmann::ordered_json::array();
    for (size_t i = 0; i < k; ++i) prefix.push_back(messages[i]);
    // A template may refuse a partial conversation (e.g. one ending in a system message): then
    // that message simply has no boundary.
    auto text =
        apply_chat_template_json(chat_template, prefix, /*add_generation_prompt=*/false, opts);
    if (!text.ok() || p.text.compare(0, text->size(), *text) != 0) continue;
    auto ids = tokenize_prompt_text(tok, *text);
    if (!ids.ok() || ids->empty() || ids->size() > p.tokens.size()) continue;
    if (!std::equal(ids->begin(), ids->end(), p.tokens.begin())) continue;
    const auto b = static_cast<uint32_t>(ids->size());
    if (p.boundaries.empty() || p.boundaries.back() < b) p.boundaries.push_back(b);
  }
  return p;
}

}  // namespace chimera::server
