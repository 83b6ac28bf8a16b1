// Token sampling: a chain of stages over a candidate list, then a seeded draw.
// Order (as llama.cpp's default chain): penalties -> top-k -> top-p -> min-p -> temperature ->
// draw. Temperature <= 0 means greedy (argmax of the penalised logits; ties -> lowest id).
// New stages (e.g. grammar constraints) implement SamplerStage and are added to the chain.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace chimera {

struct Candidate {
  int32_t id;
  float logit;
};

// The candidates a stage sees; `sorted` tells whether they are in descending logit order.
struct Candidates {
  std::vector<Candidate> items;
  bool sorted = false;
  void sort_descending();
};

// Tokens generated (and prompt tokens, when penalties should see them) so far.
class TokenHistory {
 public:
  explicit TokenHistory(int window = 64) : window_(window) {}
  void push(int32_t token);
  void clear();
  int count(int32_t token) const;
  const std::unordered_map<int32_t, int>& counts() const { return counts_; }

 private:
  int window_;
  std::deque<int32_t> recent_;
  std::unordered_map<int32_t, int> counts_;
};

class SamplerStage {
 public:
  virtual ~SamplerStage() = default;
  virtual const char* name() const = 0;
  virtual void apply(Candidates& c, const TokenHistory& history) = 0;
};

struct SamplingParams {
  float temperature = 0.8f;     // <= 0: greedy
  int top_k = 40;               // <= 0: off
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off (llama.cpp semantics: divide positive, multiply negative)
  int repeat_last_n = 64;       // window the penalties look at
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint64_t seed = 0xC0FFEE;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks the next token from n_vocab logits. Same seed, same logits, same history: same token.
  int32_t sample(const float* logits, int32_t n_vocab);
  // Record a token (prompt or generated) for the penalties.
  void accept(int32_t token) { history_.push(token); }
  void reset();
  void add_stage(std::unique_ptr<SamplerStage> stage) { stages_.push_back(std::move(stage)); }
  const SamplingParams& params() const { return params_; }
  std::string describe() const;  // "penalties -> top-k(40) -> ..."

 private:
  double next_uniform();  // [0, 1), from a seeded splitmix64 stream (portable, unlike <random>)

  SamplingParams params_;
  TokenHistory history_;
  std::vector<std::unique_ptr<SamplerStage>> stages_;
  uint64_t rng_state_;
};

// Detects stop strings in streamed text. feed() returns the text that is safe to show now: text
// that might be the beginning of a stop string is held back until it is decided.
class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  std::string feed(const std::string& piece);
  std::string flush();  // at the end of generation: whatever was held back
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace chimera
