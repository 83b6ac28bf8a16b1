// The exactness promise for matmul: a row's outputs are bit-identical whether it is computed
// alone (GEMV entry point, one thread) or inside a batch of any size, at any position, with one
// to four threads, through the GEMM entry point, on each ISA path separately.
#include <gtest/gtest.h>

#include <string>

#include "matmul_test_util.h"

namespace chimera {
namespace {

using matmul_test::kAllTypes;

using Case = matmul_test::TypeIsa;

class MatmulInvariance : public testing::TestWithParam<Case> {};

TEST_P(MatmulInvariance, RowAloneEqualsRowInAnyBatch) {
  const GgmlType t = GetParam().type;
  const Isa isa = GetParam().isa;
  // n_in: two super-blocks for K-quants (enough to exercise block accumulation), 17 blocks for
  // 32-blocks (an odd count: the Q4_0 kernel's half-empty last pair), 3 * 32 + 5 for element
  // types (a ragged tail). n_out = 70: not a multiple of any tile or thread chunk, so the
  // 2-, 3- and 4-thread splits (35, 23.3, 17.5 columns each) and the tile edges land on
  // different columns.
  const int64_t bs = matmul_test::block_size(t);
  const int64_t n_in = bs == 1 ? 101 : bs == 32 ? 17 * 32 : 2 * std::max<int64_t>(bs, 256);
  const int64_t n_out = 70;
  const int64_t pool = 600;  // distinct activation rows
  const auto wbytes = matmul_test::random_weights(t, n_in, n_out, 4242);
  const auto x = matmul_test::random_activations(pool, n_in, 4343);
  const WeightMatrix w{t, wbytes.data(), n_in, n_out};
  MatmulWorkspace ws(isa);
  ThreadContext one(1), two(2), three(3), four(4);

  // Each pool row alone: the GEMV entry point on one thread.
  std::vector<float> alone(pool * n_out);
  for (int64_t p = 0; p < pool; ++p) {
    ASSERT_TRUE(gemv(one, w, x.data() + p * n_in, alone.data() + p * n_out, ws).ok());
  }
  // GEMV on two to four threads.
  for (ThreadContext* ctx : {&two, &three, &four}) {
    std::vector<float> y(n_out);
    ASSERT_TRUE(gemv(*ctx, w, x.data() + 7 * n_in, y.data(), ws).ok());
    ASSERT_EQ(0, std::memcmp(y.data(), alone.data() + 7 * n_out, n_out * sizeof(float)))
        << "threads=" << ctx->n_threads();
  }
  // Batches of sampled sizes, rows drawn from the pool at a size-dependent offset so each row
  // appears at several positions.
  const int64_t sizes[] = {2, 3, 4, 5, 7, 8, 9, 16, 31, 33, 64, 65, 127, 200, 512};
  for (int64_t m : sizes) {
    for (ThreadContext* ctx : {&one, &two, &three, &four}) {
      const int64_t offset = (m * 37 + ctx->n_threads()) % pool;
      std::vector<float> xb(m * n_in);
      for (int64_t i = 0; i < m; ++i) {
        const int64_t p = (offset + i * 3) % pool;
        std::memcpy(&xb[i * n_in], &x[p * n_in], n_in * sizeof(float));
      }
      std::vector<float> y(m * n_out);
      ASSERT_TRUE(matmul(*ctx, w, xb.data(), m, y.data(), ws).ok());
      for (int64_t i = 0; i < m; ++i) {
        const int64_t p = (offset + i * 3) % pool;
        ASSERT_EQ(0, std::memcmp(&y[i * n_out], &alone[p * n_out], n_out * sizeof(float)))
            << "m=" << m << " threads=" << ctx->n_threads() << " position " << i << " (pool row "
            << p << ")";
      }
    }
  }
}

TEST_P(MatmulInvariance, ExpertSliceAndStridesMatchPlainMatmul) {
  const GgmlType t = GetParam().type;
  const Isa isa = GetParam().isa;
  const int64_t n_in = matmul_test::block_size(t) == 1 ? 40 : 256, n_out = 21, n_expert = 3;
  const auto wbytes = matmul_test::random_weights(t, n_in, n_out * n_expert, 555);
  const auto x = matmul_test::random_activations(6, n_in, 556);
  ThreadContext ctx(2);
  MatmulWorkspace ws(isa);
  const WeightMatrix stack{t, wbytes.data(), n_in, n_out, n_expert};
  for (int64_t e = 0; e < n_expert; ++e) {
    const WeightMatrix slice{t, wbytes.data() + e * stack.matrix_bytes(), n_in, n_out};
    std::vector<float> want(6 * n_out), got(6 * n_out);
    ASSERT_TRUE(matmul(ctx, slice, x.data(), 6, want.data(), ws).ok());
    ASSERT_TRUE(matmul_expert(ctx, stack, e, x.data(), 6, got.data(), ws).ok());
    ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)))
        << "expert " << e;
    // Strided rows: x rows padded to n_in + 5, y rows to n_out + 3 (padding left untouched).
    const int64_t ldx = n_in + 5, ldy = n_out + 3;
    std::vector<float> xs(6 * ldx, 0.0f), ys(6 * ldy, -7.0f);
    for (int i = 0; i < 6; ++i) std::memcpy(&xs[i * ldx], &x[i * n_in], n_in * sizeof(float));
    ASSERT_TRUE(matmul_expert(ctx, stack, e, xs.data(), 6, ys.data(), ws, ldx, ldy).ok());
    for (int i = 0; i < 6; ++i) {
      ASSERT_EQ(0, std::memcmp(&ys[i * ldy], &want[i * n_out], n_out * sizeof(float)));
      for (int64_t j = n_out; j < ldy; ++j) ASSERT_EQ(ys[i * ldy + j], -7.0f);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatmulInvariance,
                         testing::ValuesIn(matmul_test::type_isa_cases(kAllTypes, true)),
                         matmul_test::type_isa_name);

}  // namespace
}  // namespace chimera
