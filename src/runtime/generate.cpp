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
  std::vector<TokenId> history;  // the sequence's whole token list, for drafters
  if (params.drafter) history = prompt;
  // Samples the token at the next position from `logits` and emits it; false when generation
  // stops there (the reason is in res.stop). The sampler sees exactly the calls it would
  // without speculation, in the same order.
  auto emit = [&](const float* logits, TokenId* out) -> Result<bool> {
    const TokenId next = sampler.sample(logits, ctx.n_vocab());
    sampler.accept(next);
    *out = next;
    if (!params.ignore_eos && tok.is_eog(next)) {
      res.stop = StopReason::kEos;
      return false;
    }
    res.tokens.push_back(next);
    if (params.logprobs) res.logprobs.push_back(token_logprob(logits, ctx.n_vocab(), next));
    CHIMERA_ASSIGN_OR_RETURN(std::string piece, stream.push(next));
    std::string shown = stops.feed(piece);
    res.text += shown;
    if (cb.on_text && !shown.empty() && !cb.on_text(shown)) {
      res.stop = StopReason::kCallback;
      return false;
    }
    if (stops.stopped()) {
      res.stop = StopReason::kStopString;
      return false;
    }
    return true;
  };
  auto out_of_room = [&](uint32_t held) {
    if (held < params.n_ctx) return false;
    res.stop = StopReason::kContext;
    return true;
  };
  auto length_done = [&] {
    return params.n_predict >= 0 && static_cast<int64_t>(res.tokens.size()) >= params.n_predict;
  };
  SpecController control(params.spec);
  // Each step runs the pending token (sampled, emitted, not yet in memory) plus any drafted
  // tokens, then samples position after position until a sample differs from the draft: that
  // sample is the next pending token, and the memory keeps exactly the tokens before it.
  TokenId pending = kNoToken;
  bool go = params.n_predict != 0 && !out_of_room(mem.n_tokens(seq));
  if (go) {
    CHIMERA_ASSIGN_OR_RETURN(go, emit(ctx.logits(last_entry), &pending));
  }
  while (go) {
    double draft_seconds = 0;  // 0: the drafter was not asked
    double catch_up_seconds = 0;
    const std::vector<uint8_t>* tail_hits = nullptr;  // the drafter's, when it was asked
    const uint32_t held = mem.n_tokens(seq);
    std::vector<TokenId> drafts;
    if (params.drafter && !length_done()) {
      history.push_back(pending);
      // Positions that can still be sampled: the remaining length and the context bound them.
      int64_t k = control.draft_len();
      if (params.n_predict >= 0)
        k = std::min<int64_t>(k, params.n_predict - static_cast<int64_t>(res.tokens.size()));
      k = std::min<int64_t>(k, static_cast<int64_t>(params.n_ctx) - held - 1);
      if (k > 0) {
        const double t0 = now_seconds();
        CHIMERA_ASSIGN_OR_RETURN(drafts,
                                 params.drafter->draft(seq, history, static_cast<int32_t>(k)));
        draft_seconds = std::max(1e-9, now_seconds() - t0);
        catch_up_seconds = params.drafter->last_catch_up_seconds();
        tail_hits = &params.drafter->last_tail_hits();
        if (static_cast<int64_t>(drafts.size()) > k) drafts.resize(k);
        if (static_cast<int32_t>(drafts.size()) < std::max(1, params.spec.draft_min))
          drafts.clear();
      }
    }
    const double verify_t0 = now_seconds();
    Batch b;
    b.add(pending, static_cast<int32_t>(mem.next_pos(seq)), seq, true);
    for (size_t i = 0; i < drafts.size(); ++i)
      b.add(drafts[i], static_cast<int32_t>(mem.next_pos(seq) + 1 + i), seq, true);
    if (drafts.empty()) {
      CHIMERA_RETURN_IF_ERROR(ctx.decode(b));
    } else {
      CHIMERA_RETURN_IF_ERROR(ctx.decode_open(b, {seq}));
    }
    // Position i (1-based) is sampled from entry i-1's logits, as a plain step would have after
    // decoding i tokens.
    uint32_t keep = 1;
    Status failure;
    for (uint32_t i = 1;; ++i) {
      keep = i;
      if (length_done() || out_of_room(held + i)) {
        go = false;
        break;
      }
      TokenId next = kNoToken;
      auto more = emit(ctx.logits(i - 1), &next);
      if (!more.ok()) {
        failure = more.status();
        go = false;
        break;
      }
      if (!*more) {
        go = false;
        break;
      }
      if (i <= drafts.size() && next == drafts[i - 1]) {
        if (params.drafter) history.push_back(next);
        continue;
      }
      pending = next;
      break;
    }
    if (!drafts.empty()) {
      if (!failure.ok()) {
        ctx.reject();
        return failure;
      }
      CHIMERA_RETURN_IF_ERROR(ctx.accept({{seq, keep}}));
      res.spec.record(static_cast<int32_t>(drafts.size()), static_cast<int32_t>(keep - 1));
    }
    CHIMERA_RETURN_IF_ERROR(failure);
    control.record(static_cast<int32_t>(drafts.size()), static_cast<int32_t>(keep - 1),
                   draft_seconds, now_seconds() - verify_t0, catch_up_seconds, tail_hits);
  }
  if (res.stop != StopReason::kStopString) {
    std::string rest = stops.feed(stream.flush());
    rest += stops.flush();
    res.text += rest;
    if (cb.on_text && !rest.empty()) cb.on_text(rest);
  }
  res.gen_seconds = now_seconds() - t1;
  if (params.drafter) res.spec_costs = control.costs();
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
