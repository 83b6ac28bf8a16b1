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
//                   last n tokens in its own token list (no second model);
//   ModelDrafter    a small draft model with the same vocabulary, drafting greedily; its memory
//                   rolls back replay-free too (O(1) snapshots after each drafted token).
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
  // prompt, the steps of a pause) beyond the steady state: a one-off cost, so the draft length
  // control leaves it out of the drafting cost per token.
  virtual double last_catch_up_seconds() const { return 0; }
};

struct NgramParams {
  int32_t n_max = 4;  // longest suffix looked up first
  int32_t n_min = 2;  // shortest suffix tried
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
  float p_min = 0.75f;  // stop drafting when the draft model's top probability falls below
  ContextParams context;
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
  Context& context() { return *ctx_; }

 private:
  ModelDrafter(std::unique_ptr<Context> ctx, const DraftModelParams& p);
  void release_marks(int32_t seq);
  // Makes the draft memory hold history[0, n) exactly: restores a mark, else an exact seq_rm.
  Status rewind(int32_t seq, uint32_t n);

  std::unique_ptr<Context> ctx_;
  DraftModelParams p_;
  // Per sequence: pinned snapshots (token count, id) taken while drafting, the rollback points.
  std::vector<std::vector<std::pair<uint32_t, uint64_t>>> marks_;
  // Per sequence: the draft memory holds history[base_, ...) (see draft()).
  std::vector<size_t> base_;
  double catch_up_seconds_ = 0;
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

// Chooses each step's draft length k to maximise expected tokens per second:
//   E(k) = 1 + a + ... + a^(f k)      (a: measured probability that a draft token is accepted
//                                       given the ones before it were)
//   cost(k) = draft_forward * (1 + min(f k, k - 1)) + verify(1 + f k)
// with draft_forward the measured drafting time per draft forward (a call runs one to catch up,
// even when it then proposes nothing, and one per drafted token but the last), f the measured share
// of requested tokens the drafter actually proposes (so E and verify use f * k drafts), and
// verify(n) the measured time of a step that runs n tokens through the target (n = 1: plain).
// verify(n) comes from the steps seen at n, else a line through the plain step with the measured
// slope. When no k > 0 beats a plain step, speculation pauses and probes again after a cool-down
// that doubles each time a probe does not pay (so a drafter that never fits costs almost nothing;
// one that costs next to nothing, like an n-gram lookup without a match, is kept). Every few steps
// it takes a plain step or tries a neighbouring length, to keep the measurements fresh.
class SpecController {
 public:
  explicit SpecController(const SpecParams& p);
  // Tokens to draft for the next step (0: decode plainly, do not call the drafter).
  int32_t draft_len();
  // After a step: drafted/accepted counts (0, 0 when nothing was drafted), seconds spent in the
  // drafter (0 when it was not called) and seconds of the verification step (decode + sampling).
  void record(int32_t drafted, int32_t accepted, double draft_seconds, double verify_seconds);
  // The same when drafting and verification cannot be timed apart (one time for the step).
  void record(int32_t drafted, int32_t accepted, double seconds) {
    record(drafted, accepted, 0.0, seconds);
  }
  bool paused() const { return pause_left_ > 0; }
  // Current estimates (tests, diagnostics).
  double acceptance_estimate() const;
  double verify_estimate(int32_t n_tokens) const;  // seconds; 0 until a plain step was seen

 private:
  // The draft length with the best expected speed, and that speed over plain decoding's.
  struct Choice {
    int32_t k = 0;
    double gain = 0;
  };
  Choice best() const;
  // Below this gain speculation pauses: a drafter that proposes nothing and costs (next to)
  // nothing, like a lookup that finds no match, keeps being asked.
  static constexpr double kMinGain = 0.99;
  SpecParams p_;
  int32_t last_k_ = 0;          // what draft_len() returned last
  int64_t rounds_ = 0;          // speculative steps so far
  int64_t calls_ = 0;           // draft_len() calls outside pauses
  double plain_ = 0;            // EMA seconds of a plain step (0: none yet)
  double slope_ = 0;            // EMA seconds per extra verified token (0: none yet)
  double draft_fwd_ = 0;        // EMA drafting seconds per draft forward (1 + drafted but last)
  double fill_ = 1;             // EMA of drafted / requested tokens (drafters may propose fewer)
  std::vector<double> verify_;  // [n]: EMA seconds of a step verifying n tokens (0: none)
  double acc_ = 0, rej_ = 0;    // decayed counts of accepted / rejected draft tokens
  int32_t pause_left_ = 1;      // a plain step first, to measure it
  int32_t cooldown_ = 8;
  bool probing_ = false;  // the current speculative step ends a pause
};

// log p(token) under the softmax of `logits` (double precision).
float token_logprob(const float* logits, int32_t n_vocab, TokenId token);

}  // namespace chimera
