// matmul_argmax (lm_argmax.h) against the full logits: for every row, exactly first_argmax of
// matmul()'s outputs on the same path, whatever the path (the AVX-512 int8 search, or every
// logit), the row count, ties, near-ties and non-finite activations.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "kernels/lm_argmax.h"
#include "matmul_test_util.h"

namespace chimera {
namespace {

using Case = matmul_test::TypeIsa;
constexpr GgmlType kFloatTypes[] = {GgmlType::F16, GgmlType::BF16, GgmlType::F32};

// first_argmax of every row of matmul(w, x) on the workspace's path.
std::vector<int32_t> full_argmax(const WeightMatrix& w, const std::vector<float>& x, int64_t m,
                                 MatmulWorkspace& ws) {
  ThreadContext ctx(1);
  std::vector<float> y(static_cast<size_t>(m * w.n_out));
  EXPECT_TRUE(matmul(ctx, w, x.data(), m, y.data(), ws).ok());
  std::vector<int32_t> out(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i)
    out[i] = first_argmax(y.data() + i * w.n_out, static_cast<int32_t>(w.n_out));
  return out;
}

void expect_same_argmax(const WeightMatrix& w, const std::vector<float>& x, int64_t m, Isa isa,
                        const std::string& what) {
  MatmulWorkspace ws(isa);
  ThreadContext ctx(1);
  const std::unique_ptr<ArgmaxHead> head = ArgmaxHead::pack(w);
  std::vector<int32_t> got(static_cast<size_t>(m), -7);
  std::vector<float> scratch;
  ASSERT_TRUE(matmul_argmax(ctx, w, head.get(), x.data(), m, got.data(), ws, scratch).ok());
  const std::vector<int32_t> want = full_argmax(w, x, m, ws);
  EXPECT_EQ(got, want) << what;
  if (isa != Isa::kAvx512 || !head) return;
  // The search itself, not its fallback, answered every row it takes.
  std::vector<int32_t> direct(static_cast<size_t>(m), -7);
  scratch.assign(static_cast<size_t>(16 * ((w.n_out + 15) / 16 * 16)), 0.0f);
  const int64_t left = ops_internal::argmax_rows_avx512(*head, w, x.data(), w.n_in, m,
                                                        direct.data(), scratch.data());
  int64_t n_left = 0;
  for (int64_t i = 0; i < m; ++i) {
    float amax = 0;
    bool finite = true;
    for (int64_t k = 0; k < w.n_in; ++k) {
      finite = finite && std::isfinite(x[i * w.n_in + k]);
      amax = std::fmax(amax, std::fabs(x[i * w.n_in + k]));
    }
    const bool in_range = finite && amax >= 0x1p-30f && amax <= 0x1p30f;
    if (direct[i] < 0) {
      ++n_left;
      EXPECT_FALSE(in_range) << what << " row " << i;  // only such rows are left
    } else {
      EXPECT_EQ(direct[i], want[i]) << what << " row " << i;
    }
  }
  EXPECT_EQ(left, n_left) << what;
}

TEST(FirstArgmax, FirstOfTheLargest) {
  const float v[] = {1, 3, 2, 3, -1, 3, 0, 0, 0, 3, 1};
  EXPECT_EQ(first_argmax(v, 11), 1);
  EXPECT_EQ(first_argmax(v, 1), 0);
  const float z[] = {-0.0f, 0.0f, -1.0f};
  EXPECT_EQ(first_argmax(z, 3), 0);  // -0 == +0
  const float n[] = {std::nanf(""), std::nanf("")};
  EXPECT_EQ(first_argmax(n, 2), 0);
}

class LmArgmax : public testing::TestWithParam<Case> {};

TEST_P(LmArgmax, EveryRowMatchesTheFullLogits) {
  const GgmlType t = GetParam().type;
  struct Shape {
    int64_t n_in, n_out;
  };
  // The draft model's head (48 x 2048), ragged K (3, 20, 61), the largest K (64), ragged and
  // tiny column counts; and one K too long for the search (every logit).
  const Shape shapes[] = {{48, 2048}, {3, 37}, {20, 16}, {61, 1}, {64, 100}, {48, 17}, {72, 40}};
  for (const Shape s : shapes) {
    const auto wb = matmul_test::random_weights(t, s.n_in, s.n_out, 17 + s.n_in);
    const WeightMatrix w{t, wb.data(), s.n_in, s.n_out};
    for (int64_t m : {1, 2, 5, 8, 9, 10, 17}) {
      const auto x = matmul_test::random_activations(m, s.n_in, 5 + m);
      expect_same_argmax(w, x, m, GetParam().isa,
                         "n_in " + std::to_string(s.n_in) + " n_out " + std::to_string(s.n_out) +
                             " m " + std::to_string(m));
    }
  }
}

TEST_P(LmArgmax, TiesAndNearTiesGoToTheFirstLargest) {
  const GgmlType t = GetParam().type;
  const int64_t n_in = 48, n_out = 300;
  auto wb = matmul_test::random_weights(t, n_in, n_out, 3);
  const size_t rb = wb.size() / n_out;
  // Copies of row 7 further on (exact ties), and rows differing from it in one element's last
  // bit (logits a rounding apart, or equal after rounding): the bounds cannot tell them apart,
  // the exact pass must.
  for (int64_t v : {40, 41, 200, 299}) std::memcpy(&wb[v * rb], &wb[7 * rb], rb);
  for (int64_t v : {100, 150, 250}) {
    std::memcpy(&wb[v * rb], &wb[7 * rb], rb);
    wb[v * rb + (v % n_in) * (rb / n_in)] ^= 1;
  }
  const WeightMatrix w{t, wb.data(), n_in, n_out};
  const auto wf = matmul_test::dequantize_matrix(t, wb, n_in, n_out);
  // Rows along row 7's weights (so that it and its near-copies lead), and random ones.
  const int64_t m = 12;
  auto x = matmul_test::random_activations(m, n_in, 9);
  for (int64_t i = 0; i < 8; ++i)
    for (int64_t k = 0; k < n_in; ++k) x[i * n_in + k] = wf[7 * n_in + k] * (1.0f + 0.25f * i);
  expect_same_argmax(w, x, m, GetParam().isa, "ties");
}

TEST_P(LmArgmax, NonFiniteAndExtremeRowsTakeEveryLogit) {
  const GgmlType t = GetParam().type;
  const int64_t n_in = 48, n_out = 64, m = 6;
  const auto wb = matmul_test::random_weights(t, n_in, n_out, 11);
  const WeightMatrix w{t, wb.data(), n_in, n_out};
  auto x = matmul_test::random_activations(m, n_in, 13);
  x[0 * n_in + 3] = std::numeric_limits<float>::quiet_NaN();
  x[1 * n_in + 5] = std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < n_in; ++k) x[2 * n_in + k] = 0.0f;  // every logit 0: all tie
  x[3 * n_in + 1] = 1e35f;
  for (int64_t k = 0; k < n_in; ++k) x[4 * n_in + k] *= 1e-33f;  // below the search's range
  expect_same_argmax(w, x, m, GetParam().isa, "non-finite");
}

TEST_P(LmArgmax, ZeroAndUnpackableWeights) {
  const GgmlType t = GetParam().type;
  const int64_t n_in = 16, n_out = 40, m = 3;
  auto wb = matmul_test::random_weights(t, n_in, n_out, 21);
  const size_t rb = wb.size() / n_out;
  std::memset(&wb[5 * rb], 0, rb);  // a zero row
  const WeightMatrix w{t, wb.data(), n_in, n_out};
  const auto x = matmul_test::random_activations(m, n_in, 23);
  expect_same_argmax(w, x, m, GetParam().isa, "zero row");
  // A NaN weight: nothing packed, every logit computed.
  if (t == GgmlType::F32) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(&wb[9 * rb], &nan, 4);
  } else {
    wb[9 * rb] = 0xFF;
    wb[9 * rb + 1] = 0x7F;  // F16 and BF16 NaN
  }
  EXPECT_EQ(ArgmaxHead::pack(w), nullptr);
  expect_same_argmax(w, x, m, GetParam().isa, "nan weight");
}

// The candidates' exact pass (the search runs on the AVX-512 path only) is matmul's element
// arithmetic there: every element, bit for bit.
class LmArgmaxExactDot : public testing::TestWithParam<GgmlType> {};

TEST_P(LmArgmaxExactDot, IsMatmulsElement) {
  if (!isa_supported(Isa::kAvx512)) GTEST_SKIP() << "needs the AVX-512 path";
  const GgmlType t = GetParam();
  for (int64_t n_in : {1, 7, 8, 20, 48, 64}) {
    const int64_t n_out = 50, m = 9;
    const auto wb = matmul_test::random_weights(t, n_in, n_out, 31 + n_in);
    const WeightMatrix w{t, wb.data(), n_in, n_out};
    const auto x = matmul_test::random_activations(m, n_in, 37);
    MatmulWorkspace ws(Isa::kAvx512);
    ThreadContext ctx(1);
    std::vector<float> y(m * n_out);
    ASSERT_TRUE(matmul(ctx, w, x.data(), m, y.data(), ws).ok());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t v = 0; v < n_out; ++v) {
        const float e = ops_internal::argmax_exact_dot_avx512(w, x.data() + i * n_in, v);
        ASSERT_EQ(std::memcmp(&e, &y[i * n_out + v], 4), 0) << n_in << " " << i << " " << v;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, LmArgmax,
                         testing::ValuesIn(matmul_test::type_isa_cases(kFloatTypes, true)),
                         matmul_test::type_isa_name);
INSTANTIATE_TEST_SUITE_P(Types, LmArgmaxExactDot, testing::ValuesIn(kFloatTypes),
                         [](const testing::TestParamInfo<GgmlType>& i) {
                           return std::string(type_name(i.param));
                         });

}  // namespace
}  // namespace chimera
