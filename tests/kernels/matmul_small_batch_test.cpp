// Float weights (F16, BF16, F32) at the batch sizes of speculative verification and small decode
// batches, where both paths have their own tiling (2 to 16 rows: AVX2's tiles of up to 6 x 3,
// AVX-512's of up to 6 x 4): every output is checked bit for bit against a plain C++ emulation of
// the documented summation order (8 lanes of FMAs over k = 0, 8, 16, ..., AVX2's horizontal sum,
// the ragged tail as scalar FMAs). So each row count's tiles, the ragged last column groups and
// the thread splits must all give exactly the bits of one order, the order GEMV (one row) has
// always had.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "matmul_test_util.h"

namespace chimera {
namespace {

// y = x . w in the AVX2 kernels' order, with exact (libm) fused multiply-adds.
float ordered_dot(const float* x, const float* w, int64_t n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int64_t k8 = n / 8 * 8;
  for (int64_t k = 0; k < k8; k += 8)
    for (int l = 0; l < 8; ++l) lane[l] = std::fma(x[k + l], w[k + l], lane[l]);
  // hsum: the 128-bit halves added, then lanes 0 + 2 and 1 + 3, then those two.
  float h[4];
  for (int l = 0; l < 4; ++l) h[l] = lane[l] + lane[l + 4];
  float s = (h[0] + h[2]) + (h[1] + h[3]);
  for (int64_t k = k8; k < n; ++k) s = std::fma(x[k], w[k], s);
  return s;
}

using Case = matmul_test::TypeIsa;
constexpr GgmlType kFloatTypes[] = {GgmlType::F16, GgmlType::BF16, GgmlType::F32};

class MatmulSmallBatchFloat : public testing::TestWithParam<Case> {};

TEST_P(MatmulSmallBatchFloat, EveryRowCountMatchesTheSummationOrder) {
  const GgmlType t = GetParam().type;
  MatmulWorkspace ws(GetParam().isa);
  struct Shape {
    int64_t n_in, n_out;
  };
  // K: all tail (5), exactly 8, ragged (101), model-like (776); columns: one group of 12 and
  // less (1, 5, 11), a group plus 1 (13), ragged groups under each tile width (25, 37, 70).
  const Shape shapes[] = {{5, 13}, {8, 11}, {101, 37}, {776, 25}, {101, 1}, {8, 70}, {776, 5}};
  std::vector<int64_t> ms;
  for (int64_t m = 1; m <= 18; ++m) ms.push_back(m);
  ms.push_back(33);
  for (const Shape s : shapes) {
    const auto wbytes = matmul_test::random_weights(t, s.n_in, s.n_out, 91 + s.n_in);
    const auto wf = matmul_test::dequantize_matrix(t, wbytes, s.n_in, s.n_out);
    const WeightMatrix w{t, wbytes.data(), s.n_in, s.n_out};
    const auto x = matmul_test::random_activations(33, s.n_in, 7 + s.n_out);
    std::vector<float> want(33 * s.n_out);
    for (int64_t i = 0; i < 33; ++i)
      for (int64_t j = 0; j < s.n_out; ++j)
        want[i * s.n_out + j] = ordered_dot(&x[i * s.n_in], &wf[j * s.n_in], s.n_in);
    for (int threads : {1, 2, 3}) {
      ThreadContext ctx(threads);
      for (int64_t m : ms) {
        // Rows start at a row-count-dependent offset, so each row sits at several positions.
        const int64_t off = m <= 33 - 3 ? (m * 5) % (33 - m + 1) : 0;
        std::vector<float> y(m * s.n_out, -1.0f);
        ASSERT_TRUE(matmul(ctx, w, x.data() + off * s.n_in, m, y.data(), ws).ok());
        for (int64_t q = 0; q < m * s.n_out; ++q) {
          const float expect = want[off * s.n_out + q];
          ASSERT_EQ(0, std::memcmp(&y[q], &expect, sizeof(float)))
              << type_name(t) << " n_in=" << s.n_in << " n_out=" << s.n_out << " m=" << m
              << " threads=" << threads << " row " << q / s.n_out << " col " << q % s.n_out
              << ": got " << y[q] << " want " << expect;
        }
      }
    }
  }
}

// The default model's F16 shapes (256 and 512 wide; 1096 columns: 16-column thread pieces and a
// ragged last one) and ragged ones (K not a multiple of 8, last column groups of 1 to 3), at the
// batch sizes of speculative verification and either side of the AVX-512 path's small-batch
// tiles (2 to 16 rows): every row of every batch of 1 to 20 rows is, byte for byte, what gemv
// (one row, the decode path) on the AVX2 path gives for that row, on every path and thread count.
TEST(MatmulSmallBatchF16, ModelShapesMatchGemvOnEveryPath) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "no AVX2 path on this CPU";
  struct Shape {
    int64_t n_in, n_out;
  };
  const Shape shapes[] = {{256, 1096}, {512, 256}, {256, 2048}, {259, 37}, {3, 6}, {517, 71}};
  constexpr int64_t kRows = 20;
  for (const Shape s : shapes) {
    const auto wbytes = matmul_test::random_weights(GgmlType::F16, s.n_in, s.n_out, 5 + s.n_out);
    const WeightMatrix w{GgmlType::F16, wbytes.data(), s.n_in, s.n_out};
    const auto x = matmul_test::random_activations(kRows, s.n_in, 3 + s.n_in);
    MatmulWorkspace ws2(Isa::kAvx2);
    ThreadContext one(1);
    std::vector<float> want(kRows * s.n_out);
    for (int64_t i = 0; i < kRows; ++i)
      ASSERT_TRUE(gemv(one, w, x.data() + i * s.n_in, want.data() + i * s.n_out, ws2).ok());
    for (Isa isa : matmul_test::runnable_isas()) {
      if (isa == Isa::kScalar) continue;
      MatmulWorkspace ws(isa);
      for (int threads : {1, 2}) {
        ThreadContext ctx(threads);
        for (int64_t m = 1; m <= kRows; ++m) {
          std::vector<float> y(m * s.n_out, -1.0f);
          ASSERT_TRUE(matmul(ctx, w, x.data(), m, y.data(), ws).ok());
          ASSERT_EQ(0, std::memcmp(y.data(), want.data(), y.size() * sizeof(float)))
              << isa_name(isa) << " n_in=" << s.n_in << " n_out=" << s.n_out << " m=" << m
              << " threads=" << threads;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulSmallBatchFloat,
                         testing::ValuesIn(matmul_test::type_isa_cases(kFloatTypes, false)),
                         matmul_test::type_isa_name);

}  // namespace
}  // namespace chimera
