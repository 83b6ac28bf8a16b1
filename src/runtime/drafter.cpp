#include "runtime/drafter.h"

#include <algorithm>
#include <chrono>
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
      // The text is taken to continue as it did after the occurrence: draft token j is the
      // token at c + j of history followed by the draft itself. When that continuation runs
      // into the present (c + j >= L) it goes on with the tokens just drafted, so a loop of
      // period L - c is drafted to any length rather than cut at one period (greedy text that
      // cycles through a few tokens would otherwise get drafts no longer than its period).
      const int64_t c = i + n;  // first token after the occurrence (< L)
      const int64_t take = p_.extend ? max_tokens : std::min<int64_t>(max_tokens, L - c);
      out.reserve(static_cast<size_t>(take));
      for (int64_t j = 0; j < take; ++j)
        out.push_back(c + j < L ? history[static_cast<size_t>(c + j)]
                                : out[static_cast<size_t>(c + j - L)]);
      return out;
    }
  }
  return out;
}

// ---------------------------------------------------------------- draft model

int32_t default_draft_threads(const Model& draft, int32_t target_threads) {
  uint64_t bytes = 0;
  for (const GgufTensorInfo& t : draft.file->tensors()) bytes += t.nbytes;
  return bytes < kTinyDraftBytes ? 1 : std::max(1, target_threads);
}

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
  // The drafter places its own rollback points (marks); the prompt-start and prompt-end
  // snapshots of its two-token catch-up batches would be one more restore point per step, never
  // used. The periodic ones stay, to bound the replay of a rollback past the marks.
  ContextParams cp = params.context;
  cp.snapshot_prompt_start = false;
  cp.snapshot_prompt_end = false;
  CHIMERA_ASSIGN_OR_RETURN(std::unique_ptr<Context> ctx, Context::create(draft, cp));
  // Without a probability cut-off only each entry's greedy token is read: the draft context
  // finds it without computing most of the logits (the LM head was ~a quarter of a forward).
  ctx->set_greedy_only(params.p_min <= 0);
  std::unique_ptr<ModelDrafter> d(new ModelDrafter(std::move(ctx), params));
  CHIMERA_RETURN_IF_ERROR(d->warm_up());
  return d;
}

Status ModelDrafter::warm_up() {
  // What drafting first touches -- the weights' pages, the scratch buffers of a catch-up batch
  // and of a one-token step, the snapshot path, the worker threads -- is touched here once, so
  // that the first drafter call of a request does not pay it and the controller's first cost
  // measurements are those of the steady state. The memory is cleared afterwards.
  HybridMemory& mem = ctx_->memory();
  const int32_t V = ctx_->n_vocab();
  Batch b;
  for (int32_t i = 0; i < 4; ++i) b.add(i % V, i, 0, i == 3);
  Status st = ctx_->decode(b);
  for (int32_t i = 0; st.ok() && i < 2; ++i) {
    auto id = mem.snapshot(0);
    if (!id.ok()) {
      st = id.status();
      break;
    }
    Batch one;
    one.add(i % V, static_cast<int32_t>(mem.next_pos(0)), 0, true);
    st = ctx_->decode(one);
    if (st.ok()) st = mem.restore(0, *id);
    (void)mem.release(*id);
  }
  mem.clear();
  return st;
}

ModelDrafter::ModelDrafter(std::unique_ptr<Context> ctx, const DraftModelParams& p)
    : ctx_(std::move(ctx)),
      p_(p),
      marks_(p.context.max_seqs),
      base_(p.context.max_seqs, 0),
      lookup_(NgramParams{}) {}

ModelDrafter::~ModelDrafter() {
  for (size_t s = 0; s < marks_.size(); ++s) release_marks(static_cast<int32_t>(s));
}

void ModelDrafter::release_marks(int32_t seq) {
  // Discarded, not released: released marks stay on the path as restore points, three or so a
  // step, and the snapshot bookkeeping (its sorted path, lookups) slows with their number.
  for (auto [n, id] : marks_[seq]) (void)ctx_->memory().discard(id);
  marks_[seq].clear();
}

void ModelDrafter::forget(int32_t seq) {
  if (seq < 0 || static_cast<size_t>(seq) >= marks_.size()) return;
  release_marks(seq);
  (void)ctx_->memory().seq_rm(seq, -1, -1);
  base_[seq] = 0;
}

Status ModelDrafter::rewind(int32_t seq, uint32_t n) {
  for (auto [count, id] : marks_[seq])
    if (count == n) return ctx_->memory().restore(seq, id);
  return ctx_->seq_rm(seq, n, -1);  // not a drafting rollback (e.g. a new prompt): exact replay
}

namespace {

// Whether softmax(logits)[best] >= p_min, i.e. sum_v exp(l_v - l_best) <= 1 / p_min, without a
// full pass of exponentials where the runner-up settles it (it runs once per drafted token, and
// on a small draft model a vocabulary of exponentials costs as much as a forward). Only decides
// whether to draft on: speed, never the output.
bool top_probability_at_least(const float* logits, int32_t V, int32_t best, float second,
                              float p_min) {
  const double limit = 1.0 / p_min;
  const double r = std::exp(double(second) - double(logits[best]));
  if (1.0 + r > limit) return false;            // the runner-up alone takes too much
  if (1.0 + (V - 1) * r <= limit) return true;  // even V - 1 runners-up would fit
  const float top = logits[best];
  double sum = 0;
  for (int32_t v = 0; v < V; ++v) {
    const float d = logits[v] - top;
    if (d < -30.0f) continue;  // exp(-30) * V adds nothing at float precision
    sum += std::exp(d);
    if (sum > limit) return false;
  }
  return true;
}

// The largest logit other than entry `skip` (-inf when there is none).
float max_except(const float* logits, int32_t V, int32_t skip) {
  float m = -INFINITY;
  for (int32_t v = 0; v < V; ++v)
    if (v != skip && logits[v] > m) m = logits[v];
  return m;
}

}  // namespace

Result<std::vector<TokenId>> ModelDrafter::draft(int32_t seq, const std::vector<TokenId>& history,
                                                 int32_t max_tokens) {
  std::vector<TokenId> out;
  if (seq < 0 || static_cast<size_t>(seq) >= marks_.size())
    return Error(ErrorCode::kInvalidArgument, "draft: sequence ", seq, " out of range [0, ",
                 marks_.size(), ")");
  catch_up_seconds_ = 0;
  tail_hits_.clear();
  if (max_tokens <= 0 || history.empty()) return out;
  HybridMemory& mem = ctx_->memory();
  // Bring the draft memory to `history`: roll back to the common prefix (a snapshot taken while
  // drafting: no replay), then run what it lacks; always at least the last token, for logits.
  // The draft memory holds history[base, ...): when it lags far behind (speculation was paused)
  // it restarts from the last kCatchUpWindow tokens instead of running them all; drafts only
  // change speed, and a full catch-up would cost as much as what the pause saved.
  const std::vector<int32_t> held = mem.tokens(seq);
  size_t base = base_[seq];
  size_t common = 0;
  if (base < history.size())
    while (common < held.size() && base + common + 1 < history.size() &&
           held[common] == history[base + common])
      ++common;
  const bool lagging = !held.empty() || base > 0;  // else a new sequence: run all of it
  if (base >= history.size() || (lagging && history.size() - (base + common) > kMaxCatchUp)) {
    release_marks(seq);
    CHIMERA_RETURN_IF_ERROR(ctx_->seq_rm(seq, -1, -1));
    base = history.size() > kCatchUpWindow ? history.size() - kCatchUpWindow : 0;
    base_[seq] = base;
    common = 0;
  } else if (common < held.size()) {
    CHIMERA_RETURN_IF_ERROR(rewind(seq, static_cast<uint32_t>(common)));
  }
  release_marks(seq);
  Batch b;
  const int64_t p0 = mem.next_pos(seq);
  const size_t first = base + common, n_run = history.size() - first;
  // Logits also for the entries before the last few (kMaxTailHits): each one's argmax is what
  // the drafter would have drafted for the next token, which the controller compares with it.
  const size_t tail_from = n_run > kMaxTailHits + 1 ? n_run - kMaxTailHits - 1 : 0;
  for (size_t e = 0; e < n_run; ++e)
    b.add(history[first + e], static_cast<int32_t>(p0 + e), seq, e >= tail_from);
  // Lookup staging: in the steady state (the last draft and the target's own next token to run)
  // the lookup's proposals ride in the catch-up's batch, one forward instead of two; after a
  // pause the catch-up runs alone (its time is the pause's, see last_catch_up_seconds).
  const bool staging = p_.lookup && p_.p_min <= 0;
  std::vector<TokenId> proposed;
  if (staging && n_run <= kStagedCatchUp) {
    CHIMERA_ASSIGN_OR_RETURN(proposed, lookup_proposals(seq, history, max_tokens));
  }
  if (!proposed.empty()) {
    // The rollback point before the catch-up: a rollback into the staged span replays the
    // catch-up with it (a few tokens, one batch).
    CHIMERA_RETURN_IF_ERROR(mark(seq));
    for (size_t e = 0; e + 1 < proposed.size(); ++e)
      b.add(proposed[e], static_cast<int32_t>(p0 + n_run + e), seq, true);
  }
  const auto t0 = std::chrono::steady_clock::now();
  if (proposed.empty()) {
    CHIMERA_RETURN_IF_ERROR(ctx_->decode(b));
  } else {
    CHIMERA_RETURN_IF_ERROR(ctx_->decode_open(b, {seq}));
  }
  // Steady state runs two tokens here (the last draft and the target's own next token).
  catch_up_seconds_ =
      n_run > 2 ? std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
                : 0.0;
  const int32_t V = ctx_->n_vocab();
  for (size_t e = tail_from + 1; e < n_run; ++e)
    tail_hits_.push_back(top(e - 1) == history[first + e]);
  size_t last = n_run - 1;  // the entry whose logits give the next draft
  if (!proposed.empty()) {
    const TokenId own_first = top(last);
    CHIMERA_RETURN_IF_ERROR(
        confirm_staged(seq, proposed, static_cast<int32_t>(n_run), own_first, max_tokens, out));
    ++lookup_stats_.with_catch_up;
    // A lookup that disagreed with the draft's first token kept none of its entries.
    if (out.empty()) {
      ++lookup_stats_.first_missed;
      out.push_back(own_first);
    }
  } else if (staging && n_run > kStagedCatchUp) {
    CHIMERA_RETURN_IF_ERROR(stage_lookup(seq, history, max_tokens, top(last), out));
  }
  if (!out.empty()) {
    if (static_cast<int32_t>(out.size()) >= max_tokens) return out;
    // Go on token by token from the first draft the lookup did not propose.
    CHIMERA_RETURN_IF_ERROR(mark(seq));
    Batch one;
    one.add(out.back(), static_cast<int32_t>(mem.next_pos(seq)), seq, true);
    CHIMERA_RETURN_IF_ERROR(ctx_->decode(one));
    last = 0;
  }
  for (int32_t i = static_cast<int32_t>(out.size()); i < max_tokens; ++i) {
    // The rollback point after this many tokens (O(1): references, no copy).
    CHIMERA_RETURN_IF_ERROR(mark(seq));
    const int32_t best = top(last);
    if (p_.p_min > 0) {
      const float* logits = ctx_->logits(last);
      if (!top_probability_at_least(logits, V, best, max_except(logits, V, best), p_.p_min)) break;
    }
    out.push_back(best);
    if (i + 1 == max_tokens) break;  // the last draft token is verified, never run here
    Batch one;
    one.add(best, static_cast<int32_t>(mem.next_pos(seq)), seq, true);
    CHIMERA_RETURN_IF_ERROR(ctx_->decode(one));
    last = 0;
  }
  return out;
}

TokenId ModelDrafter::top(size_t entry) const {
  const float* logits = ctx_->logits(entry);
  return logits ? first_argmax(logits, ctx_->n_vocab()) : ctx_->greedy_token(entry);
}

Status ModelDrafter::mark(int32_t seq) {
  HybridMemory& mem = ctx_->memory();
  CHIMERA_ASSIGN_OR_RETURN(uint64_t id, mem.snapshot(seq));
  marks_[seq].emplace_back(mem.n_tokens(seq), id);
  return Status::Ok();
}

Result<std::vector<TokenId>> ModelDrafter::lookup_proposals(int32_t seq,
                                                            const std::vector<TokenId>& history,
                                                            int32_t max_tokens) {
  std::vector<TokenId> none;
  if (max_tokens < 3) return none;  // a batch of one token is a plain forward
  ++lookup_stats_.calls;
  if (lookup_kept_ < kLookupMinKept && ++lookup_skipped_ % kLookupProbe != 0) return none;
  ++lookup_stats_.lookups;
  CHIMERA_ASSIGN_OR_RETURN(std::vector<TokenId> p, lookup_.draft(seq, history, max_tokens));
  if (p.size() >= 3) return p;
  // Of the recent lookups, the share of proposals kept (one that proposes nothing usable keeps
  // none: on a text that does not repeat, the lookup's own scan of the history, tens of us on a
  // long one, is then made only every kLookupProbe-th call too).
  note_lookup_kept(0.0);
  return none;
}

Status ModelDrafter::stage_lookup(int32_t seq, const std::vector<TokenId>& history,
                                  int32_t max_tokens, TokenId first, std::vector<TokenId>& out) {
  CHIMERA_ASSIGN_OR_RETURN(std::vector<TokenId> p, lookup_proposals(seq, history, max_tokens));
  if (p.empty()) return Status::Ok();
  // The draft's first token costs no forward here: a lookup that disagrees with it is not tried.
  if (p[0] != first) {
    note_lookup_kept(0.0);
    return Status::Ok();
  }
  HybridMemory& mem = ctx_->memory();
  CHIMERA_RETURN_IF_ERROR(mark(seq));
  Batch b;
  const int32_t p0 = static_cast<int32_t>(mem.next_pos(seq));
  for (size_t e = 0; e + 1 < p.size(); ++e) b.add(p[e], p0 + static_cast<int32_t>(e), seq, true);
  CHIMERA_RETURN_IF_ERROR(ctx_->decode_open(b, {seq}));
  return confirm_staged(seq, p, 0, first, max_tokens, out);
}

Status ModelDrafter::confirm_staged(int32_t seq, const std::vector<TokenId>& p, int32_t offset,
                                    TokenId first, int32_t max_tokens, std::vector<TokenId>& out) {
  // Entries offset + e: the first draft, then proposals 2 .. m-1 (the last draft token is never
  // run). Entry offset + e's logits give draft e + 2; its input is the draft model's own token
  // while every proposal up to it matched the draft before it.
  const int32_t n_entries = static_cast<int32_t>(p.size()) - 1;
  int32_t kept = 0;  // leading entries whose input was the draft's own token
  if (p[0] == first) {
    out.push_back(first);
    kept = 1;
    for (int32_t e = 0; e < kept; ++e) {
      const TokenId d = top(static_cast<size_t>(offset + e));
      out.push_back(d);
      if (static_cast<int32_t>(out.size()) == max_tokens) break;
      if (e + 1 < n_entries && p[e + 1] == d) ++kept;
    }
  }
  // The memory keeps the entries before the staged ones and those run with the draft's own
  // tokens: all of those but its last.
  Status st = ctx_->accept({{seq, static_cast<uint32_t>(offset + kept)}});
  if (!st.ok()) {
    ctx_->reject();
    out.clear();
    return st;
  }
  ++lookup_stats_.batches;
  lookup_stats_.proposed += n_entries - 1;
  lookup_stats_.confirmed += std::max(0, kept - 1);
  const double share = kept == 0       ? 0.0
                       : n_entries > 1 ? double(kept - 1) / double(n_entries - 1)
                                       : 1.0;
  note_lookup_kept(share);
  return Status::Ok();
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

SpecController::SpecController(const SpecParams& p)
    : p_(p),
      verify_(static_cast<size_t>(std::max(1, p.draft_max)) + 2, 0.0),
      verify_samples_(verify_.size()) {
  if (!p_.adaptive) pause_left_ = 0;
}

double SpecController::acceptance_estimate() const {
  return (acc_ + 0.5) / (acc_ + rej_ + 1.0);  // a weak prior of 1/2
}

double SpecController::verify_estimate(int32_t n) const {
  if (plain_ <= 0 || n < 1) return 0;
  if (n == 1) return plain_;
  if (static_cast<size_t>(n) < verify_.size() && verify_[n] > 0) return verify_[n];
  // Unmeasured: a line through the plain step; before any measurement assume verification is
  // cheap (memory-bound), so that speculation gets tried and measured.
  const double slope = slope_ > 0 ? slope_ : 0.1 * plain_;
  return plain_ + slope * (n - 1);
}

void SpecController::Recent::push(double x) {
  v[next] = x;
  next = (next + 1) % kSamples;
  n = std::min(n + 1, kSamples);
}

double SpecController::Recent::median(int last) const {
  const int m = std::min(n, std::max(1, last));
  if (m == 0) return 0;
  double s[kSamples];
  for (int i = 0; i < m; ++i) s[i] = v[(next - 1 - i + 2 * kSamples) % kSamples];
  for (int i = 1; i < m; ++i)  // insertion sort of at most kSamples values
    for (int j = i; j > 0 && s[j] < s[j - 1]; --j) std::swap(s[j], s[j - 1]);
  return s[(m - 1) / 2];  // the lower one of an even count: noise only ever adds time
}

double SpecController::run_hit_rate(int32_t r) const {
  const int32_t b = std::clamp(r, 0, kRuns - 1);
  return (run_hit_[b] + kRunPrior * acceptance_estimate()) /
         (run_hit_[b] + run_miss_[b] + kRunPrior);
}

void SpecController::learn_run(bool hit) {
  if (run_ >= 0) (hit ? run_hit_ : run_miss_)[run_ < kRuns ? run_ : kRuns - 1] += 1;
  run_ = hit ? (run_ >= 0 ? run_ + 1 : -1) : 0;
}

void SpecController::expected_tokens(bool from_state, std::vector<double>& tokens) const {
  const int32_t K = std::max(1, p_.draft_max);
  tokens.assign(static_cast<size_t>(K) + 1, 1.0);
  if (!from_state || run_ < 0) {
    const double a = std::min(acceptance_estimate(), 0.999);
    double p = 1;
    for (int32_t k = 1; k <= K; ++k) p *= a, tokens[k] = tokens[k - 1] + p;
    return;
  }
  // The run lengths the next draft starts at: run_ carried through the unjudged tokens.
  double start[kRuns] = {};
  start[run_ < kRuns ? run_ : kRuns - 1] = 1;
  for (int32_t u = 0; u < unjudged_; ++u) {
    double next[kRuns] = {};
    for (int32_t r = 0; r < kRuns; ++r) {
      if (start[r] == 0) continue;
      const double q = run_hit_rate(r);
      next[r + 1 < kRuns ? r + 1 : kRuns - 1] += start[r] * q;
      next[0] += start[r] * (1 - q);
    }
    std::copy(next, next + kRuns, start);
  }
  // First tokens[k] = the chance that the k-th draft is accepted, then the running sum.
  std::fill(tokens.begin() + 1, tokens.end(), 0.0);
  for (int32_t r = 0; r < kRuns; ++r) {
    if (start[r] < 1e-6) continue;
    double p = start[r];
    for (int32_t k = 1; k <= K; ++k) p *= run_hit_rate(r + k - 1), tokens[k] += p;
  }
  for (int32_t k = 1; k <= K; ++k) tokens[k] += tokens[k - 1];
}

SpecController::Choice SpecController::best(double draft_forward, bool from_state) const {
  Choice c;
  if (plain_ <= 0) return c;
  std::vector<double> e;
  expected_tokens(from_state, e);
  // k = 0, a plain step, is a choice too; below kMinGain, as for pausing, so that a drafter
  // kept for costing (next to) nothing is asked, and its answers keep the run lengths known.
  if (from_state) c.gain = kMinGain;
  for (int32_t k = 1; k <= p_.draft_max; ++k) {
    const double d = fill_ * k;  // expected drafted tokens
    const int32_t lo = static_cast<int32_t>(std::floor(d));
    const double w = d - lo;
    const double tokens = (1 - w) * e[lo] + (w > 0 ? w * e[std::min(lo + 1, p_.draft_max)] : 0.0);
    const double verify =
        (1 - w) * verify_estimate(1 + lo) + (w > 0 ? w * verify_estimate(2 + lo) : 0.0);
    // A model drafter runs one forward per call (its catch-up) and one per drafted token but
    // the last: a call that proposes nothing still costs a forward.
    const double draft = draft_forward * (1.0 + std::min(d, k - 1.0));
    const double gain = tokens / (draft + verify) * plain_;  // vs plain decoding
    if (gain > c.gain) c.k = k, c.gain = gain;
  }
  return c;
}

int32_t SpecController::draft_len() {
  if (p_.draft_max <= 0) return last_k_ = 0;
  if (!p_.adaptive) return last_k_ = p_.draft_max;
  if (pause_left_ > 0) {
    --pause_left_;
    ++totals_.paused_steps;
    // Acceptance evidence ages while paused: after a long pause the probe's own outcome counts
    // most (the text may have changed; a probe is made anyway).
    acc_ *= 0.99;
    rej_ *= 0.99;
    probe_next_ = true;
    return last_k_ = 0;
  }
  const Choice c = best();
  int32_t k = c.k;
  if (probe_next_ || c.gain < kMinGain) {
    // The end of a pause: a probe, short unless the estimates say a length pays.
    probing_ = true;
    probe_next_ = false;
    if (c.gain < kMinGain) k = std::min(p_.draft_max, 2);
  } else {
    k = best(draft_fwd_, true).k;  // where the next draft starts in the drafter's runs
    // Now and then a plain step or a neighbouring length, to keep their measurements fresh.
    if (++calls_ % 8 == 0) switch ((calls_ / 8) % 3) {
        case 0:
          return last_k_ = 0;
        case 1:
          k = std::min(p_.draft_max, k + 1);
          break;
        default:
          k = std::max(1, k - 1);
      }
    if (k == 0) ++totals_.miss_steps;
  }
  return last_k_ = k;
}

double SpecController::realized_gain() const {
  if (real_steps_ < kRealSteps || plain_ <= 0) return 0;
  // Tokens over seconds of the window's steps, leaving out the slowest quarter (at least one:
  // steps that lost the CPU do not decide) and, from five steps on, the fastest (nor one lucky
  // step).
  const int32_t n = std::min(real_steps_, kRealWindow);
  int32_t order[kRealWindow];
  for (int32_t i = 0; i < n; ++i) order[i] = i;
  auto rate = [this](int32_t i) { return real_tokens_[i] / real_seconds_[i]; };
  for (int32_t i = 1; i < n; ++i)  // insertion sort by rate, slowest first
    for (int32_t j = i; j > 0 && rate(order[j]) < rate(order[j - 1]); --j)
      std::swap(order[j], order[j - 1]);
  const int32_t slow = (n + 3) / 4, fast = n >= 5 ? 1 : 0;
  double tokens = 0, seconds = 0;
  for (int32_t i = slow; i < n - fast; ++i)
    tokens += real_tokens_[order[i]], seconds += real_seconds_[order[i]];
  return seconds > 0 ? tokens / seconds * plain_ : 0;
}

void SpecController::pause() {
  // Long enough that the probe ending it (the drafter's catch-up included) costs at most
  // kProbeShare of the pause; longer each time in a row that speculation does not pay.
  int64_t len = cooldown_;
  if (plain_ > 0 && probe_cost_ > 0)
    len = std::max<int64_t>(len,
                            static_cast<int64_t>(std::ceil(probe_cost_ / (kProbeShare * plain_))));
  pause_left_ = static_cast<int32_t>(std::min<int64_t>(len, kMaxPause));
  cooldown_ = std::min(cooldown_ * 2, kMaxCooldown);
  real_steps_ = 0;
}

SpecCosts SpecController::costs() const {
  SpecCosts c = totals_;
  c.plain = plain_;
  c.draft_forward = draft_fwd_;
  c.verify = verify_;
  if (!c.verify.empty()) c.verify[0] = 0;
  if (c.verify.size() > 1) c.verify[1] = plain_;
  c.fill = fill_;
  c.acceptance = acceptance_estimate();
  c.realized_gain = realized_gain();
  return c;
}

void SpecController::record(int32_t drafted, int32_t accepted, double draft_seconds,
                            double verify_seconds, double catch_up_seconds,
                            const std::vector<uint8_t>* tail_hits) {
  if (!p_.adaptive) return;
  // Run lengths: the drafter's report judges the newest unjudged tokens (the older ones, if it
  // saw fewer, leave the run unknown until its next miss), then this step's drafts are judged by
  // the verification; a full accept leaves its extra token unjudged, a plain step its sample.
  if (tail_hits && !tail_hits->empty()) {
    const int32_t m = static_cast<int32_t>(tail_hits->size());
    if (m < unjudged_) run_ = -1;
    for (int32_t i = std::max(0, m - unjudged_); i < m; ++i) learn_run((*tail_hits)[i] != 0);
    unjudged_ = 0;
  }
  if (drafted > 0) {
    if (unjudged_ > 0) run_ = -1, unjudged_ = 0;
    for (int32_t i = 0; i < accepted; ++i) learn_run(true);
    if (accepted < drafted) learn_run(false);  // the target's token there is judged too
    unjudged_ = accepted < drafted ? 0 : 1;
  } else {
    ++unjudged_;
  }
  constexpr double kAlpha = 0.3;  // EMA weight of the newest measurement
  // Per speculative step, for the acceptance counts: ~50 steps of memory. At 0.95 (~20) the
  // estimate of a 72%-accepted drafter at k = 1 fell below the ~38% where k = 1 stops paying (the
  // 5M default pair) after runs of bad luck, and each such fall paused speculation that paid.
  constexpr double kDecay = 0.98;
  auto ema = [](double& v, double x) { v = v <= 0 ? x : v + kAlpha * (x - v); };
  const int32_t requested = last_k_;
  last_k_ = 0;
  const bool probe = probing_;
  probing_ = false;
  // A measurement may at most double an estimate: a step that lost the CPU for a while (a
  // loaded machine) must not stop speculation that pays, while a lasting change is still
  // followed within a few steps.
  if (const double est = verify_estimate(std::max(1, drafted + 1)); est > 0)
    verify_seconds = std::min(verify_seconds, 2 * est);
  if (draft_fwd_ > 0 && catch_up_seconds <= 0)
    draft_seconds = std::min(draft_seconds, 2 * draft_fwd_ * (1 + std::max(0, drafted)));
  if (drafted <= 0) {
    plain_samples_.push(verify_seconds);
    plain_ = plain_samples_.median();
    // A plain step (or the caller did not ask the drafter): nothing else to learn.
    if (requested <= 0 || draft_seconds <= 0) return;
  } else {
    const int32_t n = drafted + 1;
    if (static_cast<size_t>(n) < verify_.size()) {
      verify_samples_[n].push(verify_seconds);
      verify_[n] = verify_samples_[n].median();
    }
    const double v = static_cast<size_t>(n) < verify_.size() ? verify_[n] : verify_seconds;
    if (plain_ > 0) ema(slope_, std::max(1e-9, (v - plain_) / (n - 1)));
    acc_ = acc_ * kDecay + accepted;
    rej_ = rej_ * kDecay + (accepted < drafted ? 1 : 0);
    for (int32_t r = 0; r < kRuns; ++r) run_hit_[r] *= kDecay, run_miss_[r] *= kDecay;
  }
  const double catch_up = std::clamp(catch_up_seconds, 0.0, draft_seconds);
  ++totals_.spec_steps;
  totals_.catch_up_seconds += catch_up;
  // The drafter was asked for `requested` tokens (the caller may also have cut its answer); a
  // model drafter ran 1 + min(drafted, requested - 1) forwards for it. A catch-up replaces the
  // first of them: its cost belongs to the pause before it (see pause()), not to drafting.
  const int32_t req = std::max(requested, std::max(drafted, 1));
  const int32_t forwards = 1 + std::min(drafted, req - 1);
  const int32_t steady = catch_up > 0 ? forwards - 1 : forwards;
  if (steady > 0) {
    draft_samples_.push(std::max(1e-12, (draft_seconds - catch_up) / steady));
    draft_fwd_ = draft_samples_.median();
  }
  fill_ += kAlpha * (double(std::min(drafted, req)) / req - fill_);
  // Measured speed: a steady forward stands for the catch-up.
  const double emitted = 1.0 + (drafted > 0 ? accepted : 0);
  const int32_t slot = real_steps_ % kRealWindow;
  real_tokens_[slot] = emitted;
  real_seconds_[slot] =
      std::max(1e-12, draft_seconds - catch_up + std::min(catch_up, draft_fwd_) + verify_seconds);
  ++real_steps_;
  if (probe) {
    ++totals_.probes;
    // What the probe cost beyond plain steps; the first speculative step's catch-up (a new
    // sequence's prompt) does not recur, so it does not set the pause lengths.
    if (rounds_ > 0 && plain_ > 0) {
      const double cost = std::max(0.0, draft_seconds + verify_seconds - plain_ * emitted);
      probe_samples_.push(cost);
      probe_cost_ = probe_samples_.median(3);
      totals_.probe_seconds += cost;
    }
  }
  ++rounds_;
  const double real = realized_gain();
  // A pause that rests on the draft forward's cost needs two samples of it: the first could be
  // one that lost the CPU.
  const bool model_says_pause =
      best().gain < kMinGain && (draft_samples_.n >= 2 || best(0.0).gain < kMinGain);
  if (model_says_pause || (real > 0 && real < kMinRealGain)) {
    pause();
  } else if (real > 0) {
    cooldown_ = kMinCooldown;  // measured to pay: the next pause starts short again
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
