// RoPE: NORM/NEOX against a double reference whose angles follow the spec's float iteration,
// against the closed form for small positions, and structural properties.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/rope.h"

namespace chimera {
namespace {

// Angles as the spec defines them (section 2): theta starts at p (float), multiplied by
// theta_scale = powf(base, -2/n_rot) in float each pair; then /freq_factor, *freq_scale.
std::vector<double> spec_angles(int pos, const RopeParams& p) {
  const float ts = std::pow(p.freq_base, -2.0f / static_cast<float>(p.n_rot));
  float theta = static_cast<float>(pos);
  std::vector<double> out;
  for (int i = 0; i < p.n_rot / 2; ++i) {
    const float ff = p.freq_factors ? p.freq_factors[i] : 1.0f;
    out.push_back(static_cast<double>(p.freq_scale * (theta / ff)));
    theta *= ts;
  }
  return out;
}

void rope_ref(std::vector<double>& v, int n_head, int head_dim, int pos, const RopeParams& p) {
  const std::vector<double> th = spec_angles(pos, p);
  for (int h = 0; h < n_head; ++h) {
    double* x = v.data() + h * head_dim;
    for (int i = 0; i < p.n_rot / 2; ++i) {
      const int a = p.mode == RopeMode::kNorm ? 2 * i : i;
      const int b = p.mode == RopeMode::kNorm ? 2 * i + 1 : i + p.n_rot / 2;
      const double x0 = x[a], x1 = x[b];
      x[a] = x0 * std::cos(th[i]) - x1 * std::sin(th[i]);
      x[b] = x0 * std::sin(th[i]) + x1 * std::cos(th[i]);
    }
  }
}

TEST(OpsRope, MatchesReferenceBothModes) {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> ff = {1.0f, 1.5f, 2.0f, 4.0f, 8.0f, 1.0f, 3.0f, 0.5f};
  struct Case {
    int n_head, head_dim, n_rot;
    RopeMode mode;
    float freq_scale;
    bool factors;
  };
  for (Case c :
       {Case{1, 2, 2, RopeMode::kNorm, 1.0f, false}, Case{3, 64, 64, RopeMode::kNorm, 1.0f, false},
        Case{2, 10, 6, RopeMode::kNorm, 0.25f, false}, Case{4, 16, 16, RopeMode::kNeox, 1.0f, true},
        Case{2, 20, 8, RopeMode::kNeox, 0.5f, false},
        Case{1, 128, 128, RopeMode::kNeox, 1.0f, false}}) {
    RopeParams p;
    p.n_rot = c.n_rot;
    p.freq_base = 10000.0f;
    p.freq_scale = c.freq_scale;
    p.mode = c.mode;
    p.freq_factors = c.factors ? ff.data() : nullptr;
    const int T = 5, width = c.n_head * c.head_dim, stride = width + 3;
    const int32_t pos[T] = {0, 1, 17, 511, 4099};
    std::vector<float> x(T * stride);
    for (float& v : x) v = u(rng);
    std::vector<float> y = x;
    ASSERT_TRUE(rope(y.data(), stride, T, c.n_head, c.head_dim, pos, p).ok());
    for (int t = 0; t < T; ++t) {
      std::vector<double> want(x.begin() + t * stride, x.begin() + t * stride + width);
      rope_ref(want, c.n_head, c.head_dim, pos[t], p);
      for (int i = 0; i < width; ++i) {
        const float* xr = &x[t * stride];
        // cosf/sinf of the same float angle (1 ulp each) + 2 products and a sum: about 3 ulp of
        // |x0| + |x1| <= 4, so 1e-6 absolute.
        ASSERT_NEAR(y[t * stride + i], want[i], 1e-6)
            << "n_rot " << c.n_rot << " t " << t << " i " << i << " x " << xr[i];
      }
      // the stride gap is untouched
      for (int i = width; i < stride; ++i) ASSERT_EQ(y[t * stride + i], x[t * stride + i]);
    }
  }
}

// Small positions: the iterative float angles must agree with the closed form p·base^(-2i/n).
TEST(OpsRope, AgreesWithClosedFormAtSmallPositions) {
  RopeParams p;
  p.n_rot = 32;
  p.freq_base = 500000.0f;
  std::vector<float> c(16), s(16);
  rope_cos_sin(3, p, c.data(), s.data());
  for (int i = 0; i < 16; ++i) {
    const double th = 3.0 * std::pow(500000.0, -2.0 * i / 32.0);
    // theta accumulates ~i roundings (each 0.5 ulp relative) of a value <= 3: < 1e-5 absolute
    EXPECT_NEAR(c[i], std::cos(th), 1e-5) << i;
    EXPECT_NEAR(s[i], std::sin(th), 1e-5) << i;
  }
}

TEST(OpsRope, PositionZeroIsIdentityAndUnrotatedDimsAreCopied) {
  RopeParams p;
  p.n_rot = 4;
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> y = x;
  const int32_t zero = 0;
  ASSERT_TRUE(rope(y.data(), 8, 1, 1, 8, &zero, p).ok());
  EXPECT_EQ(0, std::memcmp(x.data(), y.data(), 32));
  const int32_t five = 5;
  ASSERT_TRUE(rope(y.data(), 8, 1, 1, 8, &five, p).ok());
  for (int i = 4; i < 8; ++i) EXPECT_EQ(y[i], x[i]);
}

// NEOX on v equals NORM on v with the halves interleaved (the converter's Q/K permutation).
TEST(OpsRope, NeoxIsNormOnInterleavedDims) {
  std::mt19937 rng(10);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int d = 24;
  std::vector<float> v(d), perm(d);
  for (float& e : v) e = u(rng);
  for (int i = 0; i < d / 2; ++i) perm[2 * i] = v[i], perm[2 * i + 1] = v[i + d / 2];
  RopeParams p;
  p.n_rot = d;
  const int32_t pos = 123;
  p.mode = RopeMode::kNeox;
  ASSERT_TRUE(rope(v.data(), d, 1, 1, d, &pos, p).ok());
  p.mode = RopeMode::kNorm;
  ASSERT_TRUE(rope(perm.data(), d, 1, 1, d, &pos, p).ok());
  for (int i = 0; i < d / 2; ++i) {
    EXPECT_EQ(perm[2 * i], v[i]);
    EXPECT_EQ(perm[2 * i + 1], v[i + d / 2]);
  }
}

TEST(OpsRope, RejectsBadParamsWithoutChanging) {
  std::vector<float> x(16, 1.0f);
  const int32_t pos[2] = {1, 2};
  RopeParams p;
  p.n_rot = 3;
  EXPECT_EQ(rope(x.data(), 8, 2, 1, 8, pos, p).code(), ErrorCode::kInvalidArgument);
  p.n_rot = 10;
  EXPECT_EQ(rope(x.data(), 8, 2, 1, 8, pos, p).code(), ErrorCode::kInvalidArgument);
  p.n_rot = 8;
  EXPECT_EQ(rope(x.data(), 7, 2, 1, 8, pos, p).code(), ErrorCode::kInvalidArgument);
  p.mode = static_cast<RopeMode>(1);
  EXPECT_EQ(rope(x.data(), 8, 2, 1, 8, pos, p).code(), ErrorCode::kUnsupported);
  for (float v : x) EXPECT_EQ(v, 1.0f);
}

}  // namespace
}  // namespace chimera
