// SiLU / SwiGLU / squared ReLU / softplus against double-precision references; tails handled
// position-free.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/activation.h"

namespace chimera {
namespace {

std::vector<Isa> OpIsas() {
  std::vector<Isa> out{Isa::kScalar};
  if (isa_supported(Isa::kAvx2)) out.push_back(Isa::kAvx2);
  if (isa_supported(Isa::kAvx512)) out.push_back(Isa::kAvx512);  // runs the AVX2 ops
  return out;
}

double silu_ref(double x) {
  return x / (1.0 + std::exp(-x));
}

// Relative tolerance: the scalar path is expf (<= 1 ulp) + add + divide (0.5 ulp each); the AVX2
// polynomial exp is within ~2 ulp; 16 ulp (~1e-6) leaves margin. Below x = -87 the AVX2 exp of
// -x is clamped (result x / 2.4e38 instead of ~x·e^x): absolute error < 1e-35, hence the abs term.
bool close_silu(float got, double want) {
  return std::fabs(got - want) <= 16 * 1.1920929e-7 * std::fabs(want) + 1e-35;
}

TEST(OpsActivation, SiluMatchesReferenceOverWideRange) {
  std::vector<float> x;
  for (float v = -100.0f; v <= 100.0f; v += 0.0371f) x.push_back(v);
  x.push_back(0.0f);
  x.push_back(-0.0f);
  x.push_back(1e-30f);
  for (Isa isa : OpIsas()) {
    SCOPED_TRACE(isa_name(isa));
    std::vector<float> y(x.size());
    silu(x.data(), y.data(), static_cast<int64_t>(x.size()), isa);
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_TRUE(close_silu(y[i], silu_ref(x[i]))) << "x=" << x[i] << " got " << y[i];
  }
}

TEST(OpsActivation, SiluNanPropagatesAndInfinitiesAreSane) {
  const float inf = std::numeric_limits<float>::infinity();
  const float x[3] = {std::nanf(""), inf, -inf};
  for (Isa isa : OpIsas()) {
    float y[3];
    silu(x, y, 3, isa);
    EXPECT_TRUE(std::isnan(y[0])) << isa_name(isa);
    EXPECT_EQ(y[1], inf) << isa_name(isa);
    EXPECT_TRUE(y[2] == 0.0f || std::isnan(y[2])) << isa_name(isa);  // -inf/inf: either is fine
  }
}

TEST(OpsActivation, SwigluMatchesReference) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-12.0f, 12.0f);
  for (int64_t n : {1, 3, 7, 8, 9, 15, 16, 17, 100}) {
    std::vector<float> g(n), up(n), y(n);
    for (int64_t i = 0; i < n; ++i) g[i] = u(rng), up[i] = u(rng);
    for (Isa isa : OpIsas()) {
      swiglu(g.data(), up.data(), y.data(), n, isa);
      for (int64_t i = 0; i < n; ++i) {
        const double want = silu_ref(g[i]) * up[i];
        // one extra rounding (the multiply) on top of SiLU's error budget
        EXPECT_NEAR(y[i], want, 17 * 1.1920929e-7 * std::fabs(want) + 1e-35)
            << isa_name(isa) << " n=" << n << " i=" << i;
      }
    }
  }
}

// An element's result must not depend on where it sits (vector body or ragged tail).
TEST(OpsActivation, ElementResultIndependentOfPositionAndLength) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-9.0f, 9.0f);
  std::vector<float> x(67);
  for (float& v : x) v = u(rng);
  for (Isa isa : OpIsas()) {
    std::vector<float> full(x.size());
    silu(x.data(), full.data(), static_cast<int64_t>(x.size()), isa);
    for (size_t start = 0; start < 9; ++start) {
      for (size_t len : {1u, 5u, 8u, 13u}) {
        std::vector<float> part(len);
        silu(x.data() + start, part.data(), static_cast<int64_t>(len), isa);
        ASSERT_EQ(0, std::memcmp(part.data(), full.data() + start, len * sizeof(float)))
            << isa_name(isa) << " start " << start << " len " << len;
      }
    }
  }
}

TEST(OpsActivation, SoftplusUsesLog1pAndShortcut) {
  for (double x : {-30.0, -7.0, -2.5, -1e-3, 0.0, 0.7, 5.0, 19.99, 20.0, 20.01, 50.0}) {
    const float got = softplus(static_cast<float>(x));
    const double want = x > 20.0 ? x : std::log1p(std::exp(x));
    // log1pf/expf each <= 1 ulp; 4 ulp relative covers the composition
    EXPECT_NEAR(got, want, 4 * 1.1920929e-7 * std::fabs(want)) << x;
  }
  EXPECT_EQ(softplus(25.0f), 25.0f);  // the x > 20 shortcut returns x itself
}

TEST(OpsActivation, ReluSquaredIsOneCorrectlyRoundedProduct) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-40.0f, 40.0f);
  std::vector<float> x(1001), y(1001);
  for (float& v : x) v = dist(rng);
  x[0] = 0.0f;
  x[1] = -0.0f;
  x[2] = 1e-30f;  // squares to a denormal-free tiny value
  relu_squared(x.data(), y.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double r = x[i] > 0 ? double(x[i]) : 0.0;
    EXPECT_EQ(y[i], static_cast<float>(r * r)) << i << " x=" << x[i];  // exact: one rounding
  }
  EXPECT_FALSE(std::signbit(y[1]));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  float v[2] = {nan, -std::numeric_limits<float>::infinity()};
  relu_squared(v, v, 2);  // in place
  EXPECT_TRUE(std::isnan(v[0]));
  EXPECT_EQ(v[1], 0.0f);
}

// GeGLU against the double-precision gelu_tanh: tanh's relative error is amplified only near
// 1 + tanh = 0 (x << 0, where the result is tiny), so the bound is relative to |gelu| plus a
// small absolute floor. The AVX2 path (x / (1 + exp(-2u))) meets the same bound.
TEST(OpsActivation, GeGluTanhMatchesDoubleReference) {
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> dist(-8.0f, 8.0f);
  std::vector<float> g(2001), u(2001), y(2001);
  for (float& v : g) v = dist(rng);
  for (float& v : u) v = dist(rng);
  g[0] = 0.0f;
  g[1] = 1e-30f;
  g[2] = -30.0f;  // exp(-2u) overflows to +inf on AVX2: -0
  g[3] = 30.0f;   // exp(-2u) underflows to 0: x * up
  for (Isa isa : OpIsas()) {
    SCOPED_TRACE(isa_name(isa));
    geglu_tanh(g.data(), u.data(), y.data(), static_cast<int64_t>(g.size()), isa);
    for (size_t i = 0; i < g.size(); ++i) {
      const double x = g[i];
      const double gelu =
          0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
      const double want = gelu * u[i];
      ASSERT_NEAR(y[i], want, 1e-6 * std::fabs(want) + 1e-6 * std::fabs(u[i])) << "x=" << x;
    }
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_EQ(y[3], 30.0f * u[3]);
    float v[2] = {3.0f, 2.0f};
    geglu_tanh(v, v + 1, v, 1, isa);  // in place
    EXPECT_NEAR(v[0],
                2.0 * 0.5 * 3.0 * (1.0 + std::tanh(0.7978845608028654 * (3.0 + 0.044715 * 27.0))),
                1e-5);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    float w[2] = {nan, 1.0f};
    geglu_tanh(w, w + 1, w, 1, isa);
    EXPECT_TRUE(std::isnan(w[0]));
  }
}

// GeGLU and SwiGLU: an element's result does not depend on where it sits (vector body or tail).
TEST(OpsActivation, GatedResultIndependentOfPositionAndLength) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> d(-9.0f, 9.0f);
  std::vector<float> g(67), u(67);
  for (float& v : g) v = d(rng);
  for (float& v : u) v = d(rng);
  for (Isa isa : OpIsas()) {
    for (int op = 0; op < 2; ++op) {
      auto run = [&](size_t start, size_t len, float* out) {
        const int64_t n = static_cast<int64_t>(len);
        op == 0 ? geglu_tanh(g.data() + start, u.data() + start, out, n, isa)
                : swiglu(g.data() + start, u.data() + start, out, n, isa);
      };
      std::vector<float> full(g.size());
      run(0, g.size(), full.data());
      for (size_t start = 0; start < 9; ++start) {
        for (size_t len : {1u, 5u, 8u, 13u}) {
          std::vector<float> part(len);
          run(start, len, part.data());
          ASSERT_EQ(0, std::memcmp(part.data(), full.data() + start, len * sizeof(float)))
              << isa_name(isa) << " op " << op << " start " << start << " len " << len;
        }
      }
    }
  }
}

}  // namespace
}  // namespace chimera
