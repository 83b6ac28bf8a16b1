// Prefill kernels pack weights in blocks of K (a few KB of decoded columns at a time) and keep the
// partial sums of a whole row block between K-blocks. This checks, for every type and path, that a
// row's outputs stay bit-identical to the GEMV result when K spans several such blocks (n_in up to
// 40 super-blocks) and the batch spans several row blocks, with ragged tiles at both edges. For
// 32-blocks the first length has an odd block count: the paired kernels' half-empty last pair
// falls in a later K-block.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "matmul_test_util.h"

namespace chimera {
namespace {

// One type on one path (a helper, so that ASSERT can return from it).
void check_long_rows(GgmlType t, Isa isa) {
  const int64_t bs = matmul_test::block_size(t);
  const int64_t unit = bs == 1 ? 32 : bs;
  for (int64_t n_in : {29 * std::max<int64_t>(unit, 256) + (bs == 1    ? 3
                                                            : bs == 32 ? 32
                                                                       : 0),
                       40 * std::max<int64_t>(unit, 256)}) {
    const int64_t n_out = 37;
    // Three row blocks of 64, the last one ragged (the scalar path, which packs nothing, only
    // keeps the comparison honest on a few rows).
    const int64_t m = isa == Isa::kScalar ? 6 : 133;
    const auto wbytes = matmul_test::random_weights(t, n_in, n_out, 99);
    const auto x = matmul_test::random_activations(m, n_in, 98);
    const WeightMatrix w{t, wbytes.data(), n_in, n_out};
    MatmulWorkspace ws(isa);
    ThreadContext one(1), two(2);
    std::vector<float> alone(m * n_out);
    for (int64_t i = 0; i < m; ++i)
      ASSERT_TRUE(gemv(one, w, x.data() + i * n_in, alone.data() + i * n_out, ws).ok());
    for (int64_t rows : {int64_t{4}, int64_t{6}, m}) {
      for (ThreadContext* ctx : {&one, &two}) {
        std::vector<float> y(rows * n_out);
        ASSERT_TRUE(matmul(*ctx, w, x.data(), rows, y.data(), ws).ok());
        ASSERT_EQ(0, std::memcmp(y.data(), alone.data(), y.size() * sizeof(float)))
            << "n_in " << n_in << " rows " << rows << " threads " << ctx->n_threads();
      }
    }
  }
}

TEST(MatmulPacking, LongRowsAcrossKBlocksMatchGemv) {
  for (GgmlType t : matmul_test::kAllTypes) {
    for (Isa isa : matmul_test::runnable_isas()) {
      SCOPED_TRACE(std::string(type_name(t)) + " " + isa_name(isa));
      check_long_rows(t, isa);
      if (testing::Test::HasFatalFailure()) return;
    }
  }
}

}  // namespace
}  // namespace chimera
