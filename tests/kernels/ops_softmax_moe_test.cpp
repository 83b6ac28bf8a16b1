// Softmax and MoE routing against double-precision references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/moe_route.h"
#include "kernels/softmax.h"

namespace chimera {
namespace {

std::vector<double> softmax_ref(const float* x, int n) {
  double mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
  std::vector<double> y(n);
  double s = 0;
  for (int i = 0; i < n; ++i) s += (y[i] = std::exp(x[i] - mx));
  for (double& v : y) v /= s;
  return y;
}

TEST(OpsSoftmax, MatchesReference) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-30.0f, 30.0f);
  for (int n : {1, 2, 7, 64, 1000}) {
    std::vector<float> x(2 * n + 3), y(2 * n + 3);
    for (float& v : x) v = u(rng);
    ASSERT_TRUE(softmax(x.data(), n + 3, y.data(), n + 3, n, 2).ok());
    for (int r = 0; r < 2; ++r) {
      const std::vector<double> want = softmax_ref(x.data() + r * (n + 3), n);
      const float* xr = x.data() + r * (n + 3);
      const float mx = *std::max_element(xr, xr + n);
      for (int i = 0; i < n; ++i) {
        // x - max rounds to half an ulp of |x - max|, i.e. a relative error |x - max|·2^-24 in
        // exp; then expf (1 ulp), the double sum, and one float multiply by the rounded 1/sum.
        const double tol = (8 + std::fabs(xr[i] - mx)) * 1.1920929e-7 * want[i] + 1e-37;
        EXPECT_NEAR(y[r * (n + 3) + i], want[i], tol);
      }
    }
  }
}

TEST(OpsSoftmax, RejectsBadShapes) {
  float x[4] = {}, y[4] = {};
  EXPECT_EQ(softmax(x, 4, y, 4, 0, 1).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(softmax(x, 2, y, 4, 4, 1).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(softmax(x, 4, y, 4, 4, -1).code(), ErrorCode::kInvalidArgument);
}

TEST(OpsMoeRoute, SelectsTopKAndRenormalises) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (int n_expert : {1, 4, 8, 40}) {
    for (int k : {1, 2, n_expert}) {
      if (k > n_expert) continue;
      for (bool renorm : {true, false}) {
        const int T = 6;
        std::vector<float> logits(T * n_expert);
        for (float& v : logits) v = nd(rng);
        MoeRouteParams p;
        p.n_expert = n_expert;
        p.n_expert_used = k;
        p.renormalize = renorm;
        p.weight_scale = renorm ? 0.0f : 2.5f;
        std::vector<int32_t> ids(T * k);
        std::vector<float> w(T * k);
        ASSERT_TRUE(moe_route(p, logits.data(), n_expert, T, ids.data(), w.data()).ok());
        for (int t = 0; t < T; ++t) {
          const std::vector<double> pr = softmax_ref(&logits[t * n_expert], n_expert);
          std::vector<int> ord(n_expert);
          std::iota(ord.begin(), ord.end(), 0);
          std::stable_sort(ord.begin(), ord.end(), [&](int a, int b) { return pr[a] > pr[b]; });
          double sum = 0;
          for (int j = 0; j < k; ++j) sum += pr[ord[j]];
          for (int j = 0; j < k; ++j) {
            ASSERT_EQ(ids[t * k + j], ord[j]) << "t " << t << " rank " << j;
            double want = pr[ord[j]];
            if (renorm) want /= std::max(sum, 6.103515625e-5);
            if (!renorm) want *= 2.5;
            // softmax error (~8 ulp) + float sum of k terms + divide: k + 10 ulp
            EXPECT_NEAR(w[t * k + j], want, (k + 10) * 1.1920929e-7 * want + 1e-30);
          }
        }
      }
    }
  }
}

// Sigmoid gating with a selection bias (Nemotron-H MoE): the bias decides the ranking, the
// weights are the unbiased sigmoids of the chosen experts, renormalised, then scaled.
TEST(OpsMoeRoute, SigmoidWithSelectionBias) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  const int E = 16, k = 4, T = 5;
  std::vector<float> logits(T * E), bias(E);
  for (float& v : logits) v = nd(rng);
  for (float& v : bias) v = nd(rng);
  MoeRouteParams p;
  p.n_expert = E;
  p.n_expert_used = k;
  p.sigmoid = true;
  p.selection_bias = bias.data();
  p.weight_scale = 2.5f;
  std::vector<int32_t> ids(T * k);
  std::vector<float> w(T * k);
  ASSERT_TRUE(moe_route(p, logits.data(), E, T, ids.data(), w.data()).ok());
  bool bias_changed_a_choice = false;
  for (int t = 0; t < T; ++t) {
    std::vector<double> s(E), r(E);
    for (int e = 0; e < E; ++e) {
      s[e] = 1.0 / (1.0 + std::exp(-double(logits[t * E + e])));
      r[e] = s[e] + bias[e];
    }
    std::vector<int> ord(E), plain(E);
    std::iota(ord.begin(), ord.end(), 0);
    std::iota(plain.begin(), plain.end(), 0);
    std::stable_sort(ord.begin(), ord.end(), [&](int a, int b) { return r[a] > r[b]; });
    std::stable_sort(plain.begin(), plain.end(), [&](int a, int b) { return s[a] > s[b]; });
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += s[ord[j]];
    for (int j = 0; j < k; ++j) {
      ASSERT_EQ(ids[t * k + j], ord[j]) << "t " << t << " rank " << j;
      bias_changed_a_choice |= ord[j] != plain[j];
      const double want = s[ord[j]] / sum * 2.5;
      EXPECT_NEAR(w[t * k + j], want, 1e-6 * want);
    }
  }
  EXPECT_TRUE(bias_changed_a_choice);  // the bias must matter for this test to mean anything
}

TEST(OpsMoeRoute, TiesGoToLowerExpertId) {
  const float logits[6] = {1.0f, 3.0f, 3.0f, 0.0f, 3.0f, 1.0f};
  MoeRouteParams p{6, 4, true, 0.0f};
  int32_t ids[4];
  float w[4];
  ASSERT_TRUE(moe_route(p, logits, 6, 1, ids, w).ok());
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 2);
  EXPECT_EQ(ids[2], 4);
  EXPECT_EQ(ids[3], 0);
  EXPECT_EQ(w[0], w[1]);
  EXPECT_EQ(w[1], w[2]);
}

TEST(OpsMoeRoute, RejectsBadParamsWithoutWriting) {
  float logits[4] = {0, 1, 2, 3};
  int32_t ids[8] = {-7, -7, -7, -7, -7, -7, -7, -7};
  float w[8] = {};
  EXPECT_EQ(moe_route({4, 0, true, 0}, logits, 4, 1, ids, w).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(moe_route({4, 5, true, 0}, logits, 4, 1, ids, w).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(moe_route({0, 1, true, 0}, logits, 4, 1, ids, w).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(moe_route({4, 2, true, 0}, logits, 3, 1, ids, w).code(), ErrorCode::kInvalidArgument);
  for (int32_t v : ids) EXPECT_EQ(v, -7);
}

TEST(OpsMoeRoute, NanLogitsDoNotCrash) {
  const float logits[4] = {std::nanf(""), 1.0f, 2.0f, 0.5f};
  MoeRouteParams p{4, 2, true, 0.0f};
  int32_t ids[2];
  float w[2];
  ASSERT_TRUE(moe_route(p, logits, 4, 1, ids, w).ok());
  for (int32_t id : ids) EXPECT_TRUE(id >= 0 && id < 4);
}

}  // namespace
}  // namespace chimera

namespace chimera {
namespace {

// LFM2-MoE routing: sigmoid scores; the top k of score + bias are chosen, but their weights are the
// unbiased scores renormalised. A bias that reorders the experts changes the choice only.
TEST(OpsMoeRoute, SigmoidSelectionBiasChangesChoiceNotWeights) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  const int E = 8, K = 3, T = 16;
  std::vector<float> logits(T * E), bias(E);
  for (float& v : logits) v = nd(rng);
  for (float& v : bias) v = 0.6f * nd(rng);
  MoeRouteParams p;
  p.n_expert = E;
  p.n_expert_used = K;
  p.sigmoid = true;
  p.selection_bias = bias.data();
  std::vector<int32_t> ids(T * K), ids_nobias(T * K);
  std::vector<float> w(T * K), w_nobias(T * K);
  ASSERT_TRUE(moe_route(p, logits.data(), E, T, ids.data(), w.data()).ok());
  MoeRouteParams q = p;
  q.selection_bias = nullptr;
  ASSERT_TRUE(moe_route(q, logits.data(), E, T, ids_nobias.data(), w_nobias.data()).ok());
  int changed = 0;
  for (int t = 0; t < T; ++t) {
    std::vector<double> s(E), score(E);
    for (int e = 0; e < E; ++e) {
      s[e] = 1.0 / (1.0 + std::exp(-double(logits[t * E + e])));
      score[e] = s[e] + bias[e];
    }
    std::vector<int> ord(E);
    std::iota(ord.begin(), ord.end(), 0);
    std::stable_sort(ord.begin(), ord.end(), [&](int a, int b) { return score[a] > score[b]; });
    double sum = 0;
    for (int j = 0; j < K; ++j) sum += s[ord[j]];
    for (int j = 0; j < K; ++j) {
      ASSERT_EQ(ids[t * K + j], ord[j]) << "t " << t << " rank " << j;
      const double want = s[ord[j]] / sum;
      EXPECT_NEAR(w[t * K + j], want, 16 * 1.1920929e-7 * want) << "t " << t << " rank " << j;
    }
    changed +=
        !std::equal(ids.begin() + t * K, ids.begin() + (t + 1) * K, ids_nobias.begin() + t * K);
  }
  EXPECT_GT(changed, 0) << "the bias never changed a selection: the test proves nothing";
}

TEST(OpsMoeRoute, SigmoidNanScoresRankLastEvenBelowNegativeBias) {
  const float logits[4] = {std::nanf(""), 1.0f, 2.0f, 0.5f};
  const float bias[4] = {0.0f, -5.0f, -5.0f, -5.0f};
  MoeRouteParams p{4, 3, true, 0.0f};
  p.sigmoid = true;
  p.selection_bias = bias;
  int32_t ids[3];
  float w[3];
  ASSERT_TRUE(moe_route(p, logits, 4, 1, ids, w).ok());
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ(ids[1], 1);
  EXPECT_EQ(ids[2], 3);
}

}  // namespace
}  // namespace chimera
