// Speculative decoding: drafters propose the next few tokens of a sequence cheaply; the target
// model verifies them in one batch (Context::decode_open with per-token states) and the memory
// keeps exactly the accepted prefix, with no replay (MEMORY.md section 8).
//
// Exactness: the target samples every position with the sampler state and random draws it would
// have used without drafting, and a draft token is accepted only when it equals that sample; so
// the output is byte-identical with and without speculation, for greedy and seeded sampling.
// Drafters only change speed.
//
//   NgramDrafter    prompt lookup: continues the latest earlier occurrence of the sequence's
//                   last n tokens in its own token list (no second model), periodically past
//                   the present;
//   ModelDrafter    a small draft model with the same vocabulary, drafting greedily; its memory
//                   rolls back replay-free too (O(1) snapshots after each drafted token). It
//                   first checks, in one batch, the continuation an n-gram lookup proposes
//                   (lookup staging: the same drafts, fewer forwards on a text that repeats).
// SpecController picks the draft length per step and pauses speculation when it does not pay.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "runtime/context.h"
#include "runtime/tokenizer.h"

namespace chimera {

class Drafter {
 public:
  virtual ~Drafter() = default;
  virtual std::string name() const = 0;
  // Up to max_tokens tokens continuing `history`, the whole token list of sequence `seq` (prompt
  // and generated; its last token is the one about to be verified). May propose none.
  virtual Result<std::vector<TokenId>> draft(int32_t seq, const std::vector<TokenId>& history,
                                             int32_t max_tokens) = 0;
  // The sequence is finished or reused for another request: drop what is kept for it.
  virtual void forget(int32_t seq) {}
  // Seconds of the last draft() spent catching up on tokens the drafter had not seen (a new
  // prompt, the steps of a pause): its first forward when that ran more than the steady-state two
  // tokens. The controller charges it to the pause (probe cost), not to drafting per token.
  virtual double last_catch_up_seconds() const { return 0; }
  // After draft(): whether the drafter's own prediction for each of the last few tokens of
  // `history` (oldest first, the last entry for history.back()) was that token, as far as the
  // call saw it (empty: not known). A step that accepts every draft never shows whether the
  // drafter would have got the target's next token right; this does, and SpecController learns
  // from it where the drafter's misses fall (see there).
  const std::vector<uint8_t>& last_tail_hits() const { return tail_hits_; }
  static constexpr size_t kMaxTailHits = 4;

 protected:
  std::vector<uint8_t> tail_hits_;
};

struct NgramParams {
  int32_t n_max = 4;  // longest suffix looked up first
  int32_t n_min = 2;  // shortest suffix tried
  // Continue past the present with the drafted tokens themselves (a repeating text drafts to
  // full length); false stops at the end of the history.
  bool extend = true;
};

class NgramDrafter : public Drafter {
 public:
  explicit NgramDrafter(const NgramParams& p = {}) : p_(p) {}
  std::string name() const override { return "ngram"; }
  Result<std::vector<TokenId>> draft(int32_t seq, const std::vector<TokenId>& history,
                                     int32_t max_tokens) override;

 private:
  NgramParams p_;
};

struct DraftModelParams {
  // Stop drafting when the draft model's top probability falls below. 0 (llama.cpp's default):
  // SpecController settles the draft length from the measured acceptance and costs. The
  // measurements of a cut-off are mixed (the 302M Q4_0 self-draft: 1.10-1.35x at 0.75 against
  // 1.51-1.59x at 0 in two runs, 1.73x against 1.43x in a later one; README).
  float p_min = 0.0f;
  // Lookup staging: before drafting token by token, the draft model checks in one batch the
  // continuation an n-gram lookup of the history proposes, and keeps as many of those tokens as
  // are its own greedy choices. The drafts are the same either way (the draft model's greedy
  // tokens); on a text that repeats, a step costs one draft forward (the lookup's tokens go in
  // the batch that catches up on the target's last tokens) instead of one per drafted token.
  // Off with p_min > 0 (the cut-off is judged token by token).
  bool lookup = true;
  ContextParams context;
};

// Threads for a draft model when the user did not choose: one for a model of fewer than
// kTinyDraftBytes of weights (a forward that small -- the 200K-parameter draft of the 5M default
// model -- costs more in its ops' thread barriers than the second thread saves, and those
// barriers stall whenever the host takes a core away), else the target's count (then it shares
// the target's pool).
constexpr uint64_t kTinyDraftBytes = 1 << 20;
int32_t default_draft_threads(const Model& draft, int32_t target_threads);

// Lookup staging's counts (diagnostics: `chimera bench` prints them): drafter calls that could
// stage (DraftModelParams::lookup, k >= 3), lookups made (the rest skipped while lookups do not
// pay), lookup batches run, and their proposals past the first token (the draft model's own):
// run, and confirmed as its greedy choices.
struct LookupStats {
  int64_t calls = 0, lookups = 0, batches = 0, proposed = 0, confirmed = 0;
  // Batches that also ran the catch-up, and of those the ones whose first proposal the draft
  // model did not take (none kept).
  int64_t with_catch_up = 0, first_missed = 0;
  // The counts since `earlier` (a snapshot of the same drafter's).
  LookupStats since(const LookupStats& earlier) const {
    return {calls - earlier.calls,
            lookups - earlier.lookups,
            batches - earlier.batches,
            proposed - earlier.proposed,
            confirmed - earlier.confirmed,
            with_catch_up - earlier.with_catch_up,
            first_missed - earlier.first_missed};
  }
};

// Fails with a message naming the first difference when the two models' vocabularies differ
// (size, or any token's text); tokenizers may be null (then only the sizes are compared).
Status check_same_vocabulary(const Model& target, const Tokenizer* target_tok, const Model& draft,
                             const Tokenizer* draft_tok);

class ModelDrafter : public Drafter {
 public:
  // The draft model must outlive the drafter; the vocabularies are checked here.
  static Result<std::unique_ptr<ModelDrafter>> create(const Model& target,
                                                      const Tokenizer* target_tok,
                                                      const Model& draft,
                                                      const Tokenizer* draft_tok,
                                                      const DraftModelParams& params);
  ~ModelDrafter() override;
  std::string name() const override { return "draft model"; }
  Result<std::vector<TokenId>> draft(int32_t seq, const std::vector<TokenId>& history,
                                     int32_t max_tokens) override;
  void forget(int32_t seq) override;
  double last_catch_up_seconds() const override { return catch_up_seconds_; }
  const LookupStats& lookup_stats() const { return lookup_stats_; }
  Context& context() { return *ctx_; }

 private:
  ModelDrafter(std::unique_ptr<Context> ctx, const DraftModelParams& p);
  // One catch-up batch and two one-token steps (with a snapshot restored), then a clear memory.
  Status warm_up();
  void release_marks(int32_t seq);
  // Makes the draft memory hold history[0, n) exactly: restores a mark, else an exact seq_rm.
  Status rewind(int32_t seq, uint32_t n);
  // A rollback point at the draft memory's current end.
  Status mark(int32_t seq);
  // The draft model's greedy token after batch entry `entry` of the last decode.
  TokenId top(size_t entry) const;
  // Lookup staging after a catch-up longer than kStagedCatchUp (DraftModelParams::lookup): with
  // the memory at history's end and `first` the greedy token after its last entry, appends the
  // draft tokens a lookup batch confirms to `out` (none when the lookup proposes nothing that
  // starts with the draft's own first token) and leaves the memory holding every one of them but
  // the last.
  Status stage_lookup(int32_t seq, const std::vector<TokenId>& history, int32_t max_tokens,
                      TokenId first, std::vector<TokenId>& out);
  // The lookup's proposals for staging (at least three tokens), or none: too short a draft, a
  // back-off call, or nothing usable found.
  Result<std::vector<TokenId>> lookup_proposals(int32_t seq, const std::vector<TokenId>& history,
                                                int32_t max_tokens);
  // After a batch whose entries from `offset` on are p[0 .. m-2] (an open batch): appends the
  // drafts they confirm to `out` when p[0] is `first`, the draft's own first token (else
  // nothing), and accepts the entries before `offset` and the confirmed ones but the last.
  Status confirm_staged(int32_t seq, const std::vector<TokenId>& p, int32_t offset, TokenId first,
                        int32_t max_tokens, std::vector<TokenId>& out);

  std::unique_ptr<Context> ctx_;
  DraftModelParams p_;
  // Per sequence: pinned snapshots (token count, id) taken while drafting, the rollback points.
  std::vector<std::vector<std::pair<uint32_t, uint64_t>>> marks_;
  // Per sequence: the draft memory holds history[base_, ...) (see draft()).
  std::vector<size_t> base_;
  double catch_up_seconds_ = 0;
  NgramDrafter lookup_;
  // Share of the lookups' proposals the draft model kept (recent calls; a lookup that proposes
  // nothing usable counts as none kept): below kLookupMinKept a lookup is made only every
  // kLookupProbe-th call, so a text whose lookups miss costs next to nothing.
  double lookup_kept_ = 1.0;
  void note_lookup_kept(double share) { lookup_kept_ += kLookupAlpha * (share - lookup_kept_); }
  int64_t lookup_skipped_ = 0;
  LookupStats lookup_stats_;
  static constexpr double kLookupMinKept = 0.3;
  static constexpr double kLookupAlpha = 0.25;  // EMA weight of the newest lookup's share
  // A catch-up of at most this many tokens (the steady state) carries the lookup's proposals in
  // its own batch.
  static constexpr size_t kStagedCatchUp = 2;
  static constexpr int64_t kLookupProbe = 8;
  static constexpr size_t kMaxCatchUp = 64;     // more missing tokens: restart from a window
  static constexpr size_t kCatchUpWindow = 32;  // tokens the restart runs
};

struct SpecParams {
  int32_t draft_max = 8;  // K: most tokens drafted per step
  int32_t draft_min = 0;  // fewer drafted tokens than this: decode the step without verification
  // Adapt: pick each step's draft length from measured costs and acceptance, and pause
  // speculation while it does not pay. Off: always draft_max (tests).
  bool adaptive = true;
};

// Drafted/accepted counts, in total and per draft position.
struct SpecStats {
  int64_t steps = 0;  // verification steps
  int64_t drafted = 0, accepted = 0;
  std::vector<int64_t> drafted_at, accepted_at;
  void record(int32_t n_drafted, int32_t n_accepted);
  double acceptance() const { return drafted > 0 ? double(accepted) / double(drafted) : 0.0; }
};

// The controller's measurements (diagnostics: `chimera bench` prints them as ratios).
struct SpecCosts {
  double plain = 0;             // seconds of a plain step
  double draft_forward = 0;     // drafting seconds per draft forward (steady state)
  std::vector<double> verify;   // [n]: seconds of a step verifying n tokens (0: not measured)
  double fill = 0;              // share of requested tokens the drafter proposes
  double acceptance = 0;        // per draft token, given the ones before it were accepted
  double realized_gain = 0;     // measured tokens/s of speculative steps over plain decoding's
  int64_t spec_steps = 0;       // steps that asked the drafter
  int64_t paused_steps = 0;     // plain steps of pauses
  int64_t miss_steps = 0;       // plain steps chosen because the next draft would likely miss
  int64_t probes = 0;           // speculative steps that ended a pause
  double catch_up_seconds = 0;  // the drafter's catch-up (new prompt, after pauses), in total
  double probe_seconds = 0;     // probes' time beyond what plain steps would have taken
};

// Chooses each step's draft length k to maximise expected tokens per second:
//   E(k) = 1 + a + ... + a^(f k)      (a: measured probability that a draft token is accepted
//                                       given the ones before it were; but see "Where the
//                                       misses fall" below)
//   cost(k) = draft_forward * (1 + min(f k, k - 1)) + verify(1 + f k)
// with draft_forward the measured drafting time per draft forward (a call runs one to catch up,
// even when it then proposes nothing, and one per drafted token but the last), f the measured share
// of requested tokens the drafter actually proposes (so E and verify use f * k drafts), and
// verify(n) the measured time of a step that runs n tokens through the target (n = 1: plain).
// verify(n) comes from the steps seen at n, else a line through the plain step with the measured
// slope. Every few steps it takes a plain step or tries a neighbouring length, to keep the
// measurements fresh.
//
// Back-off: speculation pauses (plain steps, the drafter not asked) when no k > 0 beats a plain
// step by the model above, or when the measured speed of the recent speculative steps (tokens
// over drafting + verification time) is below plain decoding's: the second catches what the model
// misses (per-call overheads, a drafter whose proposals vary).
// Timing noise (a shared host takes the CPU away for milliseconds at a time) must not pause
// speculation that pays, since a pause then lasts long (see below): no single timing decides.
// The costs (a plain step, a verification of n tokens, a draft forward) are lower medians of their
// last few samples, and a pause that rests on the draft forward's needs two of them; a measured
// verification or draft time may at most double an estimate; the measured speed is taken over the
// last kRealWindow speculative steps leaving out the slowest (and from five steps on the fastest);
// a probe's cost is the lower median of the last few probes'. A pause ends with a probe; a probe
// that does not pay makes the next pause twice as long, and every pause is long enough that the
// probe after it, the drafter's catch-up on the paused steps included, costs at most kProbeShare of
// the pause. So a drafter that never pays costs a few percent at most; one that costs next to
// nothing, like an n-gram lookup without a match, is kept.
//
// Where the misses fall. One acceptance rate for every draft token misjudges texts whose misses
// come at a rhythm: the 5M default model's greedy text ends in a four-token loop of which its
// draft model gets three right, so a step drafting 3 right after a miss gets 4 tokens every time,
// while a rate of 3/4 predicts far less and drafting 4 or more wastes a verified token a step. So
// the controller also keeps the drafter's hit rate by run length r (its right predictions since
// its last wrong one): q(r), decayed counts pulled towards a by kRunPrior pseudo-counts. A step's
// draft positions have known run lengths when the drafter reports whether it would have predicted
// the tokens it had not drafted (Drafter::last_tail_hits: a full accept's extra token, a plain
// step's), and then E(k) = 1 + sum_i prod_{j<i} q(r + j) over the run lengths the next draft
// starts at; without that report (run lengths unknown) it is the formula above. The length that
// pays best may then be 0 for one step (the next token is a likely miss): a plain step, not a
// pause. Pausing still rests on the formula above and on measured speed.
class SpecController {
 public:
  explicit SpecController(const SpecParams& p);
  // Tokens to draft for the next step (0: decode plainly, do not call the drafter).
  int32_t draft_len();
  // After a step: drafted/accepted counts (0, 0 when nothing was drafted), seconds spent in the
  // drafter (0 when it was not called; the catch-up included), seconds of the verification step
  // (decode + sampling) and the part of draft_seconds the drafter spent catching up
  // (Drafter::last_catch_up_seconds).
  // tail_hits: Drafter::last_tail_hits() when the drafter was asked this step (else null).
  void record(int32_t drafted, int32_t accepted, double draft_seconds, double verify_seconds,
              double catch_up_seconds = 0, const std::vector<uint8_t>* tail_hits = nullptr);
  // The same when drafting and verification cannot be timed apart (one time for the step).
  void record(int32_t drafted, int32_t accepted, double seconds,
              const std::vector<uint8_t>* tail_hits = nullptr) {
    record(drafted, accepted, 0.0, seconds, 0.0, tail_hits);
  }
  bool paused() const { return pause_left_ > 0; }
  // Current estimates (tests, diagnostics).
  double acceptance_estimate() const;
  double verify_estimate(int32_t n_tokens) const;  // seconds; 0 until a plain step was seen
  // Measured speed of the speculative steps since the last pause over plain decoding's (0: fewer
  // than kRealSteps of them).
  double realized_gain() const;
  SpecCosts costs() const;

 private:
  // The draft length with the best expected speed, and that speed over plain decoding's.
  struct Choice {
    int32_t k = 0;
    double gain = 0;
  };
  // draft_forward: seconds per draft forward assumed (the estimate, or 0 to ask whether
  // acceptance and verification alone rule speculation out). from_state: expected tokens from
  // the run lengths the next draft starts at, when known; else from one acceptance rate.
  Choice best(double draft_forward, bool from_state = false) const;
  Choice best() const { return best(draft_fwd_); }
  // tokens[k], k = 0..draft_max: expected tokens of a step drafting k (accepted + 1).
  void expected_tokens(bool from_state, std::vector<double>& tokens) const;
  double run_hit_rate(int32_t r) const;  // q(r)
  void learn_run(bool hit);              // one judged prediction at run length run_
  // The lower median of the last kSamples values pushed (0: none yet).
  struct Recent {
    static constexpr int kSamples = 5;
    double v[kSamples] = {};
    int n = 0, next = 0;
    void push(double x);
    double median(int last = kSamples) const;  // of the newest `last` (at most n) samples
  };
  void pause();
  // Below this gain speculation pauses: a drafter that proposes nothing and costs (next to)
  // nothing, like a lookup that finds no match, keeps being asked.
  static constexpr double kMinGain = 0.99;
  // Below this measured gain speculation pauses (lower than kMinGain: measurements are noisy),
  // once kRealSteps speculative steps since the last pause have been measured.
  static constexpr double kMinRealGain = 0.97;
  // The window is long enough that the luck of acceptance (a few rejections in a row) does not
  // pull a drafter that pays by ~20% below kMinRealGain (at 8 steps it did, on the 5M pair).
  static constexpr int32_t kRealSteps = 4;
  static constexpr int32_t kRealWindow = 16;  // steps the measured speed looks at
  // A probe (with the drafter's catch-up) may cost this share of the pause before it.
  static constexpr double kProbeShare = 0.02;
  static constexpr int32_t kMinCooldown = 8, kMaxCooldown = 512, kMaxPause = 4096;
  SpecParams p_;
  int32_t last_k_ = 0;  // what draft_len() returned last
  int64_t rounds_ = 0;  // speculative steps so far
  int64_t calls_ = 0;   // draft_len() calls outside pauses
  double plain_ = 0;    // seconds of a plain step: plain_samples_' median (0: none yet)
  Recent plain_samples_;
  double slope_ = 0;            // EMA seconds per extra verified token (0: none yet)
  double draft_fwd_ = 0;        // drafting seconds per draft forward: draft_samples_' median
  Recent draft_samples_;        // seconds per draft forward of the last steps that ran one
  double fill_ = 1;             // EMA of drafted / requested tokens (drafters may propose fewer)
  std::vector<double> verify_;  // [n]: seconds of a step verifying n tokens (0: none): median of
  std::vector<Recent> verify_samples_;  // [n]: the last ones
  double acc_ = 0, rej_ = 0;            // decayed counts of accepted / rejected draft tokens
  // Run lengths (see "Where the misses fall"): decayed counts of the drafter's right and wrong
  // predictions by run length (the last bucket takes longer runs); run_: the run length before
  // the oldest of the unjudged_ emitted tokens whose prediction is not known yet (-1: unknown).
  static constexpr int32_t kRuns = 32;
  static constexpr double kRunPrior = 4;  // pseudo-counts of the overall rate in each q(r)
  double run_hit_[kRuns] = {}, run_miss_[kRuns] = {};
  int32_t run_ = -1, unjudged_ = 0;
  // The last kRealWindow speculative steps since the last pause: tokens emitted, their seconds.
  double real_tokens_[kRealWindow] = {}, real_seconds_[kRealWindow] = {};
  int32_t real_steps_ = 0;  // since the last pause
  double probe_cost_ = 0;   // seconds a probe costs beyond plain steps: probe_samples_' median
  Recent probe_samples_;
  int32_t pause_left_ = 2;  // plain steps first, to measure them (two: one may have stalled)
  int32_t cooldown_ = kMinCooldown;
  bool probe_next_ = false;  // a pause just ended: the next speculative step is a probe
  bool probing_ = false;     // the current speculative step is a probe
  SpecCosts totals_;         // counters for costs()
};

// log p(token) under the softmax of `logits` (double precision).
float token_logprob(const float* logits, int32_t n_vocab, TokenId token);

}  // namespace chimera
