#include "runtime/sampling.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace chimera {
namespace {

SamplingParams plain(float temp) {
  SamplingParams p;
  p.temperature = temp;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  return p;
}

TEST(Sampling, GreedyPicksArgmaxAndLowestIdOnTies) {
  Sampler s(plain(0.0f));
  std::vector<float> logits = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f};
  EXPECT_EQ(s.sample(logits.data(), 5), 1);
  logits[4] = 7.0f;
  EXPECT_EQ(s.sample(logits.data(), 5), 4);
}

TEST(Sampling, SameSeedSameTokensDifferentSeedDifferentTokens) {
  std::vector<float> logits(50, 0.0f);  // flat: every draw is informative
  auto run = [&](uint64_t seed) {
    SamplingParams p = plain(1.0f);
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(logits.data(), 50));
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(Sampling, ResetRestartsTheStream) {
  std::vector<float> logits(20, 0.0f);
  Sampler s(plain(1.0f));
  std::vector<int32_t> a, b;
  for (int i = 0; i < 16; ++i) a.push_back(s.sample(logits.data(), 20));
  s.reset();
  for (int i = 0; i < 16; ++i) b.push_back(s.sample(logits.data(), 20));
  EXPECT_EQ(a, b);
}

TEST(Sampling, FrequenciesFollowTheSoftmax) {
  // logits log(1), log(2), log(3), log(4): probabilities 0.1 .. 0.4.
  std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f)};
  Sampler s(plain(1.0f));
  const int n = 40000;
  std::vector<int> counts(4, 0);
  for (int i = 0; i < n; ++i) counts[s.sample(logits.data(), 4)]++;
  for (int i = 0; i < 4; ++i) {
    const double p = (i + 1) / 10.0;
    const double sigma = std::sqrt(n * p * (1 - p));
    // 5 sigma: a false failure has probability ~ 6e-7 per token.
    EXPECT_NEAR(counts[i], n * p, 5 * sigma) << "token " << i;
  }
}

// The distribution a sampler should draw from, computed here independently of sampling.cpp from
// the documented chain (sampling.h): top-k, then top-p and min-p on the temperature-1
// probabilities of what is left, then softmax(logit / T) over the survivors.
std::vector<double> reference_probs(const std::vector<float>& logits, float temp, int top_k,
                                    float top_p, float min_p) {
  const size_t n = logits.size();
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  size_t keep = n;
  if (top_k > 0) keep = std::min(keep, static_cast<size_t>(top_k));
  auto probs_at_one = [&](size_t k) {  // softmax of the first k, temperature 1
    std::vector<double> q(k);
    double sum = 0;
    for (size_t i = 0; i < k; ++i) sum += q[i] = std::exp(double(logits[order[i]]));
    for (double& v : q) v /= sum;
    return q;
  };
  if (top_p < 1.0f) {
    const std::vector<double> q = probs_at_one(keep);
    double cum = 0;
    for (size_t i = 0; i < keep; ++i)
      if ((cum += q[i]) >= top_p) {
        keep = i + 1;
        break;
      }
  }
  if (min_p > 0.0f) {
    const std::vector<double> q = probs_at_one(keep);
    size_t k = 1;
    while (k < keep && q[k] >= min_p * q[0]) ++k;
    keep = k;
  }
  std::vector<double> p(n, 0.0);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += p[order[i]] = std::exp(double(logits[order[i]]) / temp);
  for (double& v : p) v /= sum;
  return p;
}

// Draws n tokens and checks each token's count against the reference within 5 sigma (a false
// failure has probability ~6e-7 per token); tokens the reference excludes must never appear.
void expect_distribution(const std::vector<float>& logits, const SamplingParams& p,
                         const std::vector<double>& want, int n) {
  Sampler s(p);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < n; ++i)
    counts[s.sample(logits.data(), static_cast<int32_t>(logits.size()))]++;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (want[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " should have been cut";
      continue;
    }
    const double sigma = std::sqrt(n * want[i] * (1 - want[i]));
    EXPECT_NEAR(counts[i], n * want[i], 5 * sigma + 1) << "token " << i << " p " << want[i];
  }
}

TEST(Sampling, TemperatureScalesTheLogits) {
  // softmax(logit / T) of log(1..4): T 0.5 gives 1:4:9:16, T 2 gives 1:1.41:1.73:2.
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f)};
  for (float t : {0.5f, 1.0f, 2.0f}) {
    SCOPED_TRACE(t);
    std::vector<double> want(4);
    double sum = 0;
    for (int i = 0; i < 4; ++i) sum += want[i] = std::pow(i + 1.0, 1.0 / t);
    for (double& w : want) w /= sum;
    const std::vector<double> ref = reference_probs(logits, t, 0, 1.0f, 0.0f);
    for (int i = 0; i < 4; ++i) ASSERT_NEAR(ref[i], want[i], 1e-6);  // the reference agrees
    expect_distribution(logits, plain(t), want, 40000);
  }
}

TEST(Sampling, TruncationThenTemperatureMatchesTheReference) {
  // 12 tokens with distinct logits; each case cuts somewhere else, away from any boundary tie.
  const std::vector<float> logits = {1.3f, -0.2f, 2.1f,  0.4f, -1.5f, 0.9f,
                                     1.7f, 0.0f,  -0.7f, 2.4f, 0.2f,  -2.2f};
  struct Case {
    float temp;
    int top_k;
    float top_p, min_p;
    size_t kept;  // survivors, counted by hand from the logits above
  };
  const Case cases[] = {
      {0.7f, 5, 1.0f, 0.0f, 5},    // top-k alone
      {2.0f, 0, 0.8f, 0.0f, 5},    // top-p alone (cumulative 0.784 after 4, 0.852 after 5)
      {1.5f, 0, 1.0f, 0.2f, 5},    // min-p alone (keeps p >= 0.2 p_max: logits >= 0.79)
      {0.5f, 6, 0.9f, 0.15f, 5},   // all three: k 6, p cuts at 5 (0.878, 0.954)
      {2.0f, 8, 0.95f, 0.05f, 7},  // p cuts at 7 of 8 (0.936, 0.971); min-p keeps all 7
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message()
                 << "T " << c.temp << " k " << c.top_k << " p " << c.top_p << " min_p " << c.min_p);
    const std::vector<double> want = reference_probs(logits, c.temp, c.top_k, c.top_p, c.min_p);
    EXPECT_EQ(static_cast<size_t>(
                  std::count_if(want.begin(), want.end(), [](double w) { return w > 0; })),
              c.kept);
    SamplingParams p = plain(c.temp);
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    expect_distribution(logits, p, want, 30000);
  }
}

TEST(Sampling, TopKOneIsGreedyAtAnyTemperature) {
  SamplingParams p = plain(5.0f);
  p.top_k = 1;
  Sampler s(p);
  std::vector<float> logits = {1.0f, 2.0f, 1.9f, 0.0f};
  for (int i = 0; i < 200; ++i) ASSERT_EQ(s.sample(logits.data(), 4), 1);
}

TEST(Sampling, TopPKeepsOnlyTheNucleus) {
  // probabilities 0.5, 0.3, 0.15, 0.05: top-p 0.7 keeps {0, 1}.
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p = plain(1.0f);
  p.top_p = 0.7f;
  Sampler s(p);
  std::set<int32_t> seen;
  for (int i = 0; i < 3000; ++i) seen.insert(s.sample(logits.data(), 4));
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
}

TEST(Sampling, MinPDropsUnlikelyTokens) {
  // p = 0.5, 0.3, 0.15, 0.05; min_p 0.2 keeps tokens with p >= 0.1: {0, 1, 2}.
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p = plain(1.0f);
  p.min_p = 0.2f;
  Sampler s(p);
  std::set<int32_t> seen;
  for (int i = 0; i < 5000; ++i) seen.insert(s.sample(logits.data(), 4));
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1, 2}));
}

TEST(Sampling, RepetitionPenaltyChangesTheGreedyChoice) {
  SamplingParams p = plain(0.0f);
  p.repeat_penalty = 2.0f;
  Sampler s(p);
  std::vector<float> logits = {3.0f, 2.0f, -1.0f};
  EXPECT_EQ(s.sample(logits.data(), 3), 0);
  s.accept(0);  // 3.0 / 2 = 1.5 < 2.0
  EXPECT_EQ(s.sample(logits.data(), 3), 1);
}

TEST(Sampling, PresenceAndFrequencyPenalties) {
  SamplingParams p = plain(0.0f);
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.4f;
  Sampler s(p);
  std::vector<float> logits = {2.0f, 1.0f};
  s.accept(0);  // 2.0 - 0.4 - 0.5 = 1.1 > 1.0
  EXPECT_EQ(s.sample(logits.data(), 2), 0);
  s.accept(0);  // 2.0 - 0.8 - 0.5 = 0.7 < 1.0
  EXPECT_EQ(s.sample(logits.data(), 2), 1);
}

TEST(Sampling, PenaltyWindowForgetsOldTokens) {
  SamplingParams p = plain(0.0f);
  p.repeat_penalty = 10.0f;
  p.repeat_last_n = 2;
  Sampler s(p);
  std::vector<float> logits = {3.0f, 2.0f, 1.0f};
  s.accept(0);
  EXPECT_EQ(s.sample(logits.data(), 3), 1);
  s.accept(2);
  s.accept(2);  // token 0 has left the window of 2
  EXPECT_EQ(s.sample(logits.data(), 3), 0);
}

TEST(StopStrings, HoldsBackPartialMatchesAcrossPieces) {
  StopStringMatcher m({"<|end|>", "\n\n"});
  std::string shown;
  shown += m.feed("Hello <|");
  EXPECT_EQ(shown, "Hello ");
  shown += m.feed("en");
  EXPECT_EQ(shown, "Hello ");
  shown += m.feed("dless");  // not a stop after all
  EXPECT_EQ(shown, "Hello <|endless");
  shown += m.feed(" end<|end|>ignored");
  EXPECT_EQ(shown, "Hello <|endless end");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.feed("more"), "");
}

TEST(StopStrings, FlushReturnsHeldText) {
  StopStringMatcher m({"STOP"});
  EXPECT_EQ(m.feed("abcST"), "abc");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.flush(), "ST");
}

TEST(StopStrings, EarliestStopWins) {
  StopStringMatcher m({"cd", "b"});
  EXPECT_EQ(m.feed("abcd"), "a");
  EXPECT_TRUE(m.stopped());
}

}  // namespace
}  // namespace chimera
