#include "runtime/drafter.h"

#include <algorithm>
#include <cmath>

namespace chimera {

// ---------------------------------------------------------------- n-gram / prompt lookup

Result<std::vector<TokenId>> NgramDrafter::draft(int32_t, const std::vector<TokenId>& history,
                                                 int32_t max_tokens) {
  std::vector<TokenId> out;
  const int64_t L = static_cast<int64_t>(history.size());
  if (max_tokens <= 0) return out;
  // Longest suffix first; its latest earlier occurrence is the likeliest to continue alike.
  for (int64_t n = std::min<int64_t>(p_.n_max, L - 1); n >= std::max(1, p_.n_min); --n) {
    const TokenId* suffix = history.data() + (L - n);
    for (int64_t i = L - n - 1; i >= 0; --i) {
      if (!std::equal(suffix, suffix + n, history.data() + i)) continue;
      const int64_t c = i + n;  // first token after the occurrence (< L)
      const int64_t take = std::min<int64_t>(max_tokens, L - c);
      out.assign(history.begin() + c, history.begin() + c + take);
      return out;
    }
  }
  return out;
}

// ---------------------------------------------------------------- draft model

Status check_same_vocabulary(const Model& target, const Tokenizer* target_tok, const Model& draft,
                             const Tokenizer* draft_tok) {
  if (target.hp.n_vocab != draft.hp.n_vocab)
    return Error(ErrorCode::kInvalidArgument, "draft model: vocabulary of ", draft.hp.n_vocab,
                 " tokens, the target has ", target.hp.n_vocab,
                 " (speculative decoding needs the same vocabulary)");
  if (!target_tok || !draft_tok) return Status::Ok();
  if (target_tok->n_tokens() != draft_tok->n_tokens())
    return Error(ErrorCode::kInvalidArgument, "draft model: tokenizer of ", draft_tok->n_tokens(),
                 " tokens, the target's has ", target_tok->n_tokens(),
                 " (speculative decoding needs the same vocabulary)");
  for (TokenId id = 0; id < target_tok->n_tokens(); ++id)
    if (target_tok->token_text(id) != draft_tok->token_text(id))
      return Error(ErrorCode::kInvalidArgument, "draft model: token ", id, " is '",
                   draft_tok->token_text(id), "', the target's is '", target_tok->token_text(id),
                   "' (speculative decoding needs the same vocabulary)");
  return Status::Ok();
}

Result<std::unique_ptr<ModelDrafter>> ModelDrafter::create(const Model& target,
                                                           const Tokenizer* target_tok,
                                                           const Model& draft,
                                                           const Tokenizer* draft_tok,
                                                           const DraftModelParams& params) {
  CHIMERA_RETURN_IF_ERROR(check_same_vocabulary(target, target_tok, draft, draft_tok));
  if (!(params.p_min >= 0.0f && params.p_min <= 1.0f))
    return Error(ErrorCode::kInvalidArgument, "draft p-min ", params.p_min, " outside [0, 1]");
  CHIMERA_ASSIGN_OR_RETURN(std::unique_ptr<Context> ctx, Context::create(draft, params.context));
  return std::unique_ptr<ModelDrafter>(new ModelDrafter(std::move(ctx), params));
}

ModelDrafter::ModelDrafter(std::unique_ptr<Context> ctx, const DraftModelParams& p)
    : ctx_(std::move(ctx)), p_(p), marks_(p.context.max_seqs) {}

ModelDrafter::~ModelDrafter() {
  for (size_t s = 0; s < marks_.size(); ++s) release_marks(static_cast<int32_t>(s));
}

void ModelDrafter::release_marks(int32_t seq) {
  for (auto [n, id] : marks_[seq]) (void)ctx_->memory().release(id);
  marks_[seq].clear();
}

void ModelDrafter::forget(int32_t seq) {
  if (seq < 0 || static_cast<size_t>(seq) >= marks_.size()) return;
  release_marks(seq);
  (void)ctx_->memory().seq_rm(seq, -1, -1);
}

Status ModelDrafter::rewind(int32_t seq, uint32_t n) {
  for (auto [count, id] : marks_[seq])
    if (count == n) return ctx_->memory().restore(seq, id);
  return ctx_->seq_rm(seq, n, -1);  // not a drafting rollback (e.g. a new prompt): exact replay
}

Result<std::vector<TokenId>> ModelDrafter::draft(int32_t seq, const std::vector<TokenId>& history,
                                                 int32_t max_tokens) {
  std::vector<TokenId> out;
  if (seq < 0 || static_cast<size_t>(seq) >= marks_.size())
    return Error(ErrorCode::kInvalidArgument, "draft: sequence ", seq, " out of range [0, ",
                 marks_.size(), ")");
  if (max_tokens <= 0 || history.empty()) return out;
  HybridMemory& mem = ctx_->memory();
  // Bring the draft memory to `history`: roll back to the common prefix (a snapshot taken while
  // drafting: no replay), then run what it lacks; always at least the last token, for logits.
  const std::vector<int32_t> held = mem.tokens(seq);
  size_t common = 0;
  while (common < held.size() && common + 1 < history.size() && held[common] == history[common])
    ++common;
  if (common < held.size()) CHIMERA_RETURN_IF_ERROR(rewind(seq, static_cast<uint32_t>(common)));
  release_marks(seq);
  Batch b;
  const int64_t p0 = mem.next_pos(seq);
  for (size_t i = common; i < history.size(); ++i)
    b.add(history[i], static_cast<int32_t>(p0 + (i - common)), seq, i + 1 == history.size());
  CHIMERA_RETURN_IF_ERROR(ctx_->decode(b));
  const float* logits = ctx_->logits(b.size() - 1);
  const int32_t V = ctx_->n_vocab();
  for (int32_t i = 0; i < max_tokens; ++i) {
    // The rollback point after this many tokens (O(1): references, no copy).
    CHIMERA_ASSIGN_OR_RETURN(uint64_t id, mem.snapshot(seq));
    marks_[seq].emplace_back(mem.n_tokens(seq), id);
    int32_t best = 0;
    for (int32_t v = 1; v < V; ++v)
      if (logits[v] > logits[best]) best = v;
    double sum = 0;
    for (int32_t v = 0; v < V; ++v) sum += std::exp(double(logits[v]) - double(logits[best]));
    if (1.0 / sum < p_.p_min) break;
    out.push_back(best);
    if (i + 1 == max_tokens) break;  // the last draft token is verified, never run here
    Batch one;
    one.add(best, static_cast<int32_t>(mem.next_pos(seq)), seq, true);
    CHIMERA_RETURN_IF_ERROR(ctx_->decode(one));
    logits = ctx_->logits(0);
  }
  return out;
}

// ---------------------------------------------------------------- statistics and control

void SpecStats::record(int32_t n_drafted, int32_t n_accepted) {
  if (n_drafted <= 0) return;
  ++steps;
  drafted += n_drafted;
  accepted += n_accepted;
  if (drafted_at.size() < static_cast<size_t>(n_drafted)) {
    drafted_at.resize(n_drafted, 0);
    accepted_at.resize(n_drafted, 0);
  }
  for (int32_t i = 0; i < n_drafted; ++i) {
    ++drafted_at[i];
    if (i < n_accepted) ++accepted_at[i];
  }
}

SpecController::SpecController(const SpecParams& p) : p_(p), k_(std::max(1, p.draft_max)) {
  if (!p_.adaptive) pause_left_ = 0;
}

int32_t SpecController::draft_len() {
  if (p_.draft_max <= 0) return 0;
  if (!p_.adaptive) return p_.draft_max;
  if (pause_left_ > 0) {
    if (--pause_left_ == 0) spec_tok_ = 0;  // measure speculation afresh when it resumes
    return 0;
  }
  return k_;
}

void SpecController::record(int32_t drafted, int32_t accepted, double seconds) {
  if (!p_.adaptive) return;
  constexpr double kAlpha = 0.3;
  auto ema = [](double& v, double x) { v = v == 0 ? x : v + kAlpha * (x - v); };
  if (drafted == 0) {
    ema(plain_tok_, seconds);
    return;
  }
  ema(spec_tok_, seconds / (accepted + 1));
  // Draft length: longer after a fully accepted draft, shorter after a rejection.
  k_ = accepted == drafted ? std::min(p_.draft_max, k_ + 2) : std::max(1, k_ - 1);
  if (plain_tok_ > 0 && spec_tok_ > plain_tok_) {
    // Slower than plain decoding: pause, longer each time it happens again.
    pause_left_ = cooldown_;
    cooldown_ = std::min(cooldown_ * 2, 512);
  } else if (plain_tok_ > 0 && spec_tok_ < 0.9 * plain_tok_) {
    cooldown_ = 8;
  }
}

float token_logprob(const float* logits, int32_t n_vocab, TokenId token) {
  double mx = logits[0];
  for (int32_t v = 1; v < n_vocab; ++v) mx = std::max(mx, double(logits[v]));
  double sum = 0;
  for (int32_t v = 0; v < n_vocab; ++v) sum += std::exp(double(logits[v]) - mx);
  return static_cast<float>(double(logits[token]) - mx - std::log(sum));
}

}  // namespace chimera
