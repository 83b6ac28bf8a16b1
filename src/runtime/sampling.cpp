#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>

#include "core/status.h"

namespace chimera {

void Candidates::sort_descending() {
  if (sorted) return;
  // Ties broken by id so the order (and the draw) never depends on the sort's stability.
  std::sort(items.begin(), items.end(), [](const Candidate& a, const Candidate& b) {
    return a.logit != b.logit ? a.logit > b.logit : a.id < b.id;
  });
  sorted = true;
}

void TokenHistory::push(int32_t token) {
  if (window_ <= 0) return;
  recent_.push_back(token);
  ++counts_[token];
  if (static_cast<int>(recent_.size()) > window_) {
    int32_t old = recent_.front();
    recent_.pop_front();
    if (--counts_[old] == 0) counts_.erase(old);
  }
}

void TokenHistory::clear() {
  recent_.clear();
  counts_.clear();
}

int TokenHistory::count(int32_t token) const {
  auto it = counts_.find(token);
  return it == counts_.end() ? 0 : it->second;
}

namespace {

class PenaltyStage : public SamplerStage {
 public:
  PenaltyStage(float repeat, float presence, float frequency)
      : repeat_(repeat), presence_(presence), frequency_(frequency) {}
  const char* name() const override { return "penalties"; }
  void apply(Candidates& c, const TokenHistory& h) override {
    if (h.counts().empty()) return;
    for (Candidate& cand : c.items) {
      int n = h.count(cand.id);
      if (n == 0) continue;
      if (repeat_ != 1.0f)
        cand.logit = cand.logit > 0 ? cand.logit / repeat_ : cand.logit * repeat_;
      cand.logit -= static_cast<float>(n) * frequency_ + presence_;
    }
    c.sorted = false;
  }

 private:
  float repeat_, presence_, frequency_;
};

class TopKStage : public SamplerStage {
 public:
  explicit TopKStage(int k) : k_(k) {}
  const char* name() const override { return "top-k"; }
  void apply(Candidates& c, const TokenHistory&) override {
    if (k_ <= 0 || static_cast<size_t>(k_) >= c.items.size()) return;
    if (!c.sorted) {
      std::partial_sort(c.items.begin(), c.items.begin() + k_, c.items.end(),
                        [](const Candidate& a, const Candidate& b) {
                          return a.logit != b.logit ? a.logit > b.logit : a.id < b.id;
                        });
      c.sorted = true;
    }
    c.items.resize(k_);
  }

 private:
  int k_;
};

// Softmax of the candidates (sorted), in double for a stable cumulative sum.
std::vector<double> softmax_sorted(Candidates& c) {
  c.sort_descending();
  std::vector<double> p(c.items.size());
  const double max = c.items.empty() ? 0 : c.items[0].logit;
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) sum += p[i] = std::exp(double(c.items[i].logit) - max);
  for (double& v : p) v /= sum;
  return p;
}

class TopPStage : public SamplerStage {
 public:
  explicit TopPStage(float p) : p_(p) {}
  const char* name() const override { return "top-p"; }
  void apply(Candidates& c, const TokenHistory&) override {
    if (p_ >= 1.0f || c.items.size() <= 1) return;
    std::vector<double> p = softmax_sorted(c);
    double cum = 0;
    size_t keep = p.size();
    for (size_t i = 0; i < p.size(); ++i) {
      cum += p[i];
      if (cum >= p_) {
        keep = i + 1;
        break;
      }
    }
    c.items.resize(keep);
  }

 private:
  float p_;
};

class MinPStage : public SamplerStage {
 public:
  explicit MinPStage(float p) : p_(p) {}
  const char* name() const override { return "min-p"; }
  void apply(Candidates& c, const TokenHistory&) override {
    if (p_ <= 0.0f || c.items.size() <= 1) return;
    c.sort_descending();
    // p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p)
    const float threshold = c.items[0].logit + std::log(p_);
    size_t keep = 1;
    while (keep < c.items.size() && c.items[keep].logit >= threshold) ++keep;
    c.items.resize(keep);
  }

 private:
  float p_;
};

class TemperatureStage : public SamplerStage {
 public:
  explicit TemperatureStage(float t) : t_(t) {}
  const char* name() const override { return "temperature"; }
  void apply(Candidates& c, const TokenHistory&) override {
    for (Candidate& cand : c.items) cand.logit /= t_;
  }

 private:
  float t_;
};

}  // namespace

Sampler::Sampler(const SamplingParams& params)
    : params_(params), history_(params.repeat_last_n), rng_state_(params.seed) {
  if (params.repeat_penalty != 1.0f || params.presence_penalty != 0.0f ||
      params.frequency_penalty != 0.0f)
    add_stage(std::make_unique<PenaltyStage>(params.repeat_penalty, params.presence_penalty,
                                             params.frequency_penalty));
  if (params.temperature > 0) {
    if (params.top_k > 0) add_stage(std::make_unique<TopKStage>(params.top_k));
    if (params.top_p < 1.0f) add_stage(std::make_unique<TopPStage>(params.top_p));
    if (params.min_p > 0.0f) add_stage(std::make_unique<MinPStage>(params.min_p));
    add_stage(std::make_unique<TemperatureStage>(params.temperature));
  }
}

void Sampler::reset() {
  history_.clear();
  rng_state_ = params_.seed;
}

double Sampler::next_uniform() {
  // splitmix64: tiny, seedable, identical on every platform.
  uint64_t z = (rng_state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

int32_t Sampler::sample(const float* logits, int32_t n_vocab) {
  CHIMERA_CHECK(n_vocab > 0);
  Candidates c;
  c.items.resize(n_vocab);
  for (int32_t i = 0; i < n_vocab; ++i) c.items[i] = {i, logits[i]};
  for (auto& stage : stages_) stage->apply(c, history_);
  if (params_.temperature <= 0) {
    if (c.sorted) return c.items[0].id;
    // Greedy: the first entry of the descending order (ties to the lower id), found in one pass
    // instead of a sort (the stages before keep the entries in id order unless they sorted).
    size_t best = 0;
    for (size_t i = 1; i < c.items.size(); ++i) {
      const Candidate& a = c.items[i];
      const Candidate& b = c.items[best];
      if (a.logit > b.logit || (a.logit == b.logit && a.id < b.id)) best = i;
    }
    return c.items[best].id;
  }
  std::vector<double> p = softmax_sorted(c);
  const double r = next_uniform();
  double cum = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    cum += p[i];
    if (r < cum) return c.items[i].id;
  }
  return c.items.back().id;  // r rounded past the cumulative sum
}

std::string Sampler::describe() const {
  std::string s;
  for (const auto& st : stages_) s += StrCat(s.empty() ? "" : " -> ", st->name());
  s += StrCat(s.empty() ? "" : " -> ", params_.temperature > 0 ? "draw" : "greedy");
  return s;
}

std::string StopStringMatcher::feed(const std::string& piece) {
  if (stopped_) return "";
  pending_ += piece;
  // A full stop string: emit what precedes it and stop.
  size_t first = std::string::npos;
  for (const std::string& s : stops_) {
    if (s.empty()) continue;
    size_t at = pending_.find(s);
    if (at != std::string::npos && at < first) first = at;
  }
  if (first != std::string::npos) {
    std::string out = pending_.substr(0, first);
    pending_.clear();
    stopped_ = true;
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    for (size_t len = std::min(s.size() - (s.empty() ? 0 : 1), pending_.size()); len > hold;
         --len) {
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStringMatcher::flush() {
  std::string out;
  if (!stopped_) out.swap(pending_);
  return out;
}

}  // namespace chimera
