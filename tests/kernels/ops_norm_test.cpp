// RMSNorm and the Mamba2 grouped gated RMSNorm against double references, plus row invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/norm.h"

namespace chimera {
namespace {

constexpr double kEps32 = 1.1920929e-7;

std::vector<Isa> OpIsas() {
  std::vector<Isa> out{Isa::kScalar};
  if (isa_supported(Isa::kAvx2)) out.push_back(Isa::kAvx2);
  if (isa_supported(Isa::kAvx512)) out.push_back(Isa::kAvx512);  // runs the AVX2 ops
  return out;
}

// y = x / sqrt(mean(x²) + eps) * w, all in double.
std::vector<double> rms_ref(const float* x, const float* w, int64_t n, float eps) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  const double scale = 1.0 / std::sqrt(s / n + eps);
  std::vector<double> y(n);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * (w ? w[i] : 1.0);
  return y;
}

// Error budget per element: mean rounded to float, + eps, sqrtf, 1/x (0.5 ulp each), then two
// multiplies: ~3 ulp relative; 8 ulp of margin.
void expect_rms_close(const float* got, const std::vector<double>& want) {
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 8 * kEps32 * std::fabs(want[i]) + 1e-37) << "i=" << i;
}

TEST(OpsNorm, RmsNormMatchesReference) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  for (int64_t n : {1, 2, 7, 8, 9, 31, 768, 1001}) {
    std::vector<float> x(n), w(n), y(n);
    for (int64_t i = 0; i < n; ++i) x[i] = u(rng), w[i] = u(rng);
    for (Isa isa : OpIsas()) {
      SCOPED_TRACE(::testing::Message() << isa_name(isa) << " n=" << n);
      rms_norm_row(x.data(), w.data(), y.data(), n, 1e-6f, isa);
      expect_rms_close(y.data(), rms_ref(x.data(), w.data(), n, 1e-6f));
      rms_norm_row(x.data(), nullptr, y.data(), n, 1e-5f, isa);
      expect_rms_close(y.data(), rms_ref(x.data(), nullptr, n, 1e-5f));
    }
  }
}

TEST(OpsNorm, RmsNormZeroRowUsesEps) {
  std::vector<float> x(9, 0.0f), y(9, 1.0f);
  for (Isa isa : OpIsas()) {
    rms_norm_row(x.data(), nullptr, y.data(), 9, 1e-6f, isa);
    for (float v : y) EXPECT_EQ(v, 0.0f);
  }
}

// A row's output must not depend on how many rows are normalised together or on threads.
TEST(OpsNorm, RowsAreBatchAndThreadInvariant) {
  const int64_t n = 203, rows = 37, stride = 211;
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> x(rows * stride), w(n);
  for (float& v : x) v = u(rng);
  for (float& v : w) v = u(rng);
  ThreadContext two(2), three(3), four(4);  // 37 rows: uneven splits
  for (Isa isa : OpIsas()) {
    for (ThreadContext* threads : {&two, &three, &four}) {
      std::vector<float> all(rows * n);
      ASSERT_TRUE(
          rms_norm(x.data(), stride, w.data(), all.data(), n, n, rows, 1e-6f, threads, isa).ok());
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> one(n);
        ASSERT_TRUE(rms_norm(x.data() + r * stride, stride, w.data(), one.data(), n, n, 1, 1e-6f,
                             nullptr, isa)
                        .ok());
        ASSERT_EQ(0, std::memcmp(one.data(), all.data() + r * n, n * sizeof(float)))
            << isa_name(isa) << " threads " << threads->n_threads() << " row " << r;
      }
    }
  }
}

TEST(OpsNorm, GatedGroupNormMatchesReference) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  struct Case {
    int64_t d_in, groups;
  };
  for (Case c : {Case{1, 1}, Case{12, 1}, Case{12, 3}, Case{48, 4}, Case{1536, 1}, Case{1000, 8}}) {
    std::vector<float> y(c.d_in), z(c.d_in), w(c.d_in), out(c.d_in);
    for (int64_t i = 0; i < c.d_in; ++i) y[i] = u(rng), z[i] = u(rng), w[i] = u(rng);
    for (Isa isa : OpIsas()) {
      SCOPED_TRACE(::testing::Message()
                   << isa_name(isa) << " d_in=" << c.d_in << " G=" << c.groups);
      gated_group_rms_norm_row(y.data(), z.data(), w.data(), out.data(), c.d_in, c.groups, 1e-5f,
                               isa);
      const int64_t gs = c.d_in / c.groups;
      for (int64_t g = 0; g < c.groups; ++g) {
        std::vector<double> t(gs);
        double s = 0;
        for (int64_t i = 0; i < gs; ++i) {
          const double zz = z[g * gs + i];
          t[i] = zz / (1 + std::exp(-zz)) * y[g * gs + i];
          s += t[i] * t[i];
        }
        const double scale = 1.0 / std::sqrt(s / gs + 1e-5);
        for (int64_t i = 0; i < gs; ++i) {
          const double want = t[i] * scale * w[g * gs + i];
          // the gate's rounding (~16 ulp budget of SiLU, see the activation test) feeds both the
          // element and the group's sum of squares; plus the RMSNorm budget above
          ASSERT_NEAR(out[g * gs + i], want, 40 * kEps32 * std::fabs(want) + 1e-30) << "i=" << i;
        }
      }
    }
  }
}

TEST(OpsNorm, GatedGroupNormRowsInvariantAndInPlace) {
  const int64_t d = 96, rows = 9;
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> y(rows * d), z(rows * d), w(d);
  for (float& v : y) v = u(rng);
  for (float& v : z) v = u(rng);
  for (float& v : w) v = u(rng);
  ThreadContext two(2);
  for (Isa isa : OpIsas()) {
    std::vector<float> out(rows * d);
    ASSERT_TRUE(gated_group_rms_norm(y.data(), d, z.data(), d, w.data(), out.data(), d, d, 4, rows,
                                     1e-6f, &two, isa)
                    .ok());
    std::vector<float> inplace = y;  // out aliases y
    ASSERT_TRUE(gated_group_rms_norm(inplace.data(), d, z.data(), d, w.data(), inplace.data(), d, d,
                                     4, rows, 1e-6f, nullptr, isa)
                    .ok());
    EXPECT_EQ(0, std::memcmp(out.data(), inplace.data(), out.size() * sizeof(float)));
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> one(d);
      gated_group_rms_norm_row(&y[r * d], &z[r * d], w.data(), one.data(), d, 4, 1e-6f, isa);
      ASSERT_EQ(0, std::memcmp(one.data(), &out[r * d], d * sizeof(float))) << "row " << r;
    }
  }
}

TEST(OpsNorm, RejectsBadShapes) {
  float buf[16] = {};
  EXPECT_EQ(rms_norm(buf, 4, nullptr, buf, 4, 0, 1, 1e-6f, nullptr).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(rms_norm(buf, 3, nullptr, buf, 4, 4, 2, 1e-6f, nullptr).code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(gated_group_rms_norm(buf, 6, buf, 6, nullptr, buf, 6, 6, 4, 1, 1e-6f, nullptr).code(),
            ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace chimera
