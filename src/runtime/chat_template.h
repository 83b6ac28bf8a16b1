// Applies a GGUF's tokenizer.chat_template (Jinja) to a conversation, rendering it the way HF
// transformers' apply_chat_template does (so prompts match what the model was trained on).
//
//   std::vector<ChatMessage> msgs = {{"system", "Be brief."}, {"user", "Hi"}};
//   ChatTemplateOptions opts;
//   opts.bos_token = "<|begin_of_text|>";
//   auto prompt = apply_chat_template(tmpl, msgs, /*add_generation_prompt=*/true, opts);
#pragma once

#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace chimera {

struct ChatMessage {
  std::string role;
  std::string content;
  // More keys of the message as the template sees them (tool_calls, tool_call_id, name, ...). A
  // "content" key here replaces `content` (so content can be null or a list of parts).
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

struct ChatTemplateOptions {
  std::string bos_token;
  std::string eos_token;
  // More template variables: tools, documents, date_string, enable_thinking, ... (a JSON object).
  nlohmann::ordered_json extra_vars = nlohmann::ordered_json::object();
  // What strftime_now() formats (local time). Unset: the current time; tests pin it.
  std::optional<std::tm> now;
};

// Errors: kFormat (template syntax), kUnsupported (a feature the interpreter lacks),
// kInvalidArgument (the template raised, e.g. roles that do not alternate, or failed on these
// messages; invalid UTF-8 in a message). Messages carry the template line and column.
Result<std::string> apply_chat_template(const std::string& tmpl,
                                        const std::vector<ChatMessage>& msgs,
                                        bool add_generation_prompt,
                                        const ChatTemplateOptions& opts);

// Same, with the messages as a JSON array of objects (OpenAI chat format).
Result<std::string> apply_chat_template_json(const std::string& tmpl,
                                             const nlohmann::ordered_json& messages,
                                             bool add_generation_prompt,
                                             const ChatTemplateOptions& opts);

}  // namespace chimera
