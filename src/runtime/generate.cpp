#include "runtime/generate.h"

#include <algorithm>
#include <chrono>

namespace chimera {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A plain ChatML template for vocabularies that carry none.
constexpr const char* kChatMlTemplate =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' "
    "}}{% endif %}";

}  // namespace

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::kLength:
      return "length";
    case StopReason::kEos:
      return "end of generation token";
    case StopReason::kStopString:
      return "stop string";
    case StopReason::kContext:
      return "context full";
    case StopReason::kCallback:
      return "stopped by caller";
  }
  return "?";
}

Result<GenerateResult> generate(Context& ctx, const Tokenizer& tok, int32_t seq,
                                const std::vector<TokenId>& prompt, const GenerateParams& params,
                                Sampler& sampler, const GenerateCallbacks& cb) {
  if (prompt.empty()) return Error(ErrorCode::kInvalidArgument, "empty prompt");
  if (prompt.size() >= params.n_ctx)
    return Error(ErrorCode::kInvalidArgument, "prompt of ", prompt.size(),
                 " tokens does not fit the context of ", params.n_ctx,
                 " tokens (raise it with -c)");
  GenerateResult res;
  HybridMemory& mem = ctx.memory();
  // Reuse the longest common prefix; always run at least the last prompt token for its logits.
  const std::vector<int32_t> held = mem.tokens(seq);
  size_t common = 0;
  while (common < held.size() && common + 1 < prompt.size() && held[common] == prompt[common])
    ++common;
  if (common < held.size()) CHIMERA_RETURN_IF_ERROR(ctx.seq_rm(seq, common, -1));
  res.n_prompt_reused = static_cast<int64_t>(common);
  const double t0 = now_seconds();
  const int64_t total = static_cast<int64_t>(prompt.size() - common);
  size_t i = common;
  size_t last_entry = 0;
  while (i < prompt.size()) {
    Batch b;
    const size_t end = std::min(prompt.size(), i + std::max<int32_t>(1, params.prompt_chunk));
    for (size_t j = i; j < end; ++j)
      b.add(prompt[j], static_cast<int32_t>(mem.next_pos(seq) + (j - i)), seq,
            j + 1 == prompt.size());
    CHIMERA_RETURN_IF_ERROR(ctx.decode(b));
    last_entry = b.size() - 1;
    i = end;
    if (cb.on_prompt_progress) cb.on_prompt_progress(static_cast<int64_t>(i - common), total);
  }
  res.n_prompt_processed = total;
  for (TokenId t : prompt) sampler.accept(t);
  const double t1 = now_seconds();
  res.prompt_seconds = t1 - t0;

  StopStringMatcher stops(params.stop);
  StreamDecoder stream(tok, false);
  const float* logits = ctx.logits(last_entry);
  for (int32_t n = 0; params.n_predict < 0 || n < params.n_predict; ++n) {
    if (mem.n_tokens(seq) >= params.n_ctx) {
      res.stop = StopReason::kContext;
      break;
    }
    const TokenId next = sampler.sample(logits, ctx.n_vocab());
    sampler.accept(next);
    if (!params.ignore_eos && tok.is_eog(next)) {
      res.stop = StopReason::kEos;
      break;
    }
    res.tokens.push_back(next);
    CHIMERA_ASSIGN_OR_RETURN(std::string piece, stream.push(next));
    std::string shown = stops.feed(piece);
    res.text += shown;
    if (cb.on_text && !shown.empty() && !cb.on_text(shown)) {
      res.stop = StopReason::kCallback;
      break;
    }
    if (stops.stopped()) {
      res.stop = StopReason::kStopString;
      break;
    }
    Batch b;
    b.add(next, static_cast<int32_t>(mem.next_pos(seq)), seq, true);
    CHIMERA_RETURN_IF_ERROR(ctx.decode(b));
    logits = ctx.logits(0);
  }
  if (res.stop != StopReason::kStopString) {
    std::string rest = stops.feed(stream.flush());
    rest += stops.flush();
    res.text += rest;
    if (cb.on_text && !rest.empty()) cb.on_text(rest);
  }
  res.gen_seconds = now_seconds() - t1;
  return res;
}

ChatSession::ChatSession(Context& ctx, const Tokenizer& tok, std::string chat_template, int32_t seq)
    : ctx_(ctx), tok_(tok), template_(std::move(chat_template)), seq_(seq) {}

Result<std::vector<TokenId>> ChatSession::render_prompt() const {
  ChatTemplateOptions opts;
  if (tok_.bos() != kNoToken) opts.bos_token = tok_.token_text(tok_.bos());
  if (tok_.eos() != kNoToken) opts.eos_token = tok_.token_text(tok_.eos());
  CHIMERA_ASSIGN_OR_RETURN(std::string text, apply_chat_template(template_, messages_, true, opts));
  EncodeOptions eo;
  eo.parse_special = true;  // the template writes control tokens as text
  // Templates that print bos_token themselves must not get a second one.
  eo.add_special =
      !(tok_.bos() != kNoToken && text.rfind(opts.bos_token, 0) == 0 && !opts.bos_token.empty());
  return tok_.encode(text, eo);
}

Result<GenerateResult> ChatSession::turn(const std::string& user, const GenerateParams& params,
                                         Sampler& sampler, const GenerateCallbacks& cb) {
  add_message("user", user);
  auto prompt = render_prompt();
  if (!prompt.ok()) {
    messages_.pop_back();
    return prompt.status();
  }
  auto res = generate(ctx_, tok_, seq_, *prompt, params, sampler, cb);
  if (!res.ok()) {
    messages_.pop_back();
    return res.status();
  }
  add_message("assistant", res->text);
  return res;
}

std::string chat_template_of(const GgufFile& file) {
  auto t = file.get_optional<std::string>("tokenizer.chat_template");
  if (t.ok() && t->has_value() && !(*t)->empty()) return **t;
  return kChatMlTemplate;
}

}  // namespace chimera
