// Chat messages -> prompt tokens, with the token counts at which each message ends (the
// boundaries the prefix cache keeps snapshots at).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "runtime/tokenizer.h"

namespace chimera::server {

struct ChatPrompt {
  std::string text;  // the rendered template
  std::vector<TokenId> tokens;
  // Ascending token counts where a message ends: message k's boundary is the token count of the
  // conversation up to and including message k, rendered alone, when those tokens are a prefix
  // of `tokens` (a tokenization that merges across the boundary has no boundary there).
  std::vector<uint32_t> boundaries;
};

// Renders `messages` (validated OpenAI messages) with the Jinja chat template, adding the
// generation prompt, and tokenizes (control tokens in the template's text are parsed).
Result<ChatPrompt> render_chat_prompt(const Tokenizer& tok, const std::string& chat_template,
                                      const nlohmann::ordered_json& messages,
                                      const nlohmann::ordered_json& template_vars,
                                      bool with_boundaries = true);

// Template text -> tokens the way chat prompts are tokenized (BOS added unless the text already
// starts with it).
Result<std::vector<TokenId>> tokenize_prompt_text(const Tokenizer& tok, const std::string& text);

}  // namespace chimera::server
