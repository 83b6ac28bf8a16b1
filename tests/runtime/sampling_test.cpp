#include "runtime/sampling.h"

#include <gtest/gtest.h>

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
