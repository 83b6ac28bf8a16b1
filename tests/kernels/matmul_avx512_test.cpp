// The AVX-512 path promises results bit-identical to the AVX2 path (matmul.h): its VNNI kernels
// (Q8_0, Q4_0 prefill) rebuild AVX2's exact integer lanes and float steps, its float kernels
// (F16, BF16, F32) AVX2's FMA lanes and horizontal sum, and every other type and op runs the AVX2
// code. Checked here byte for byte for every type, batch sizes on both sides
// of the kernels' tile and row-block edges, odd column counts (the zero partner column), K
// spanning several packing chunks, and 1 to 3 threads. Runs only where the CPU has AVX-512.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "kernels/activation.h"
#include "kernels/norm.h"
#include "matmul_test_util.h"

namespace chimera {
namespace {

using matmul_test::kAllTypes;

bool have_both() {
  return isa_supported(Isa::kAvx2) && isa_supported(Isa::kAvx512);
}

class MatmulAvx512 : public testing::TestWithParam<GgmlType> {};

TEST_P(MatmulAvx512, BitIdenticalToAvx2) {
  if (!have_both()) GTEST_SKIP() << "needs AVX2 and AVX-512 VNNI";
  const GgmlType t = GetParam();
  const int64_t bs = matmul_test::block_size(t);
  // K: for 32-blocks 5 blocks (odd: Q4_0's half-empty last pair) and 71 blocks (three packing
  // chunks of 24 units for Q8_0, two of 24 pairs for Q4_0); super-blocks 1 and 3; element types a
  // ragged 37 and 300.
  const int64_t n_ins[2] = {bs == 1 ? 37 : bs == 32 ? 5 * 32 : bs, bs == 1 ? 300 : 71 * bs};
  // n_out 37: odd, and not a multiple of 4: partial column groups on each thread (the packed
  // tiles' 8-column groups end with 5 columns); 4 and 10: groups ending with 4 and 2 columns.
  const int64_t ms[] = {1, 2, 3, 4, 5, 7, 8, 16, 33, 64, 65, 130};
  for (int64_t n_out : {37, 4, 10})
    for (int64_t n_in : n_ins) {
      const auto wbytes = matmul_test::random_weights(t, n_in, n_out, 77 + n_in);
      const WeightMatrix w{t, wbytes.data(), n_in, n_out};
      const auto x = matmul_test::random_activations(130, n_in, 91 + n_in);
      // Both tile choices of the AVX-512 path (MatmulWorkspace::zmm_tiles), whatever the host.
      MatmulWorkspace ws2(Isa::kAvx2), ws5(Isa::kAvx512), ws5z(Isa::kAvx512);
      ws5.set_zmm_tiles(false);
      ws5z.set_zmm_tiles(true);
      for (int threads : {1, 2, 3}) {
        ThreadContext ctx(threads);
        for (int64_t m : ms) {
          std::vector<float> y2(m * n_out, -1.0f), y5(m * n_out, -2.0f), y5z(m * n_out, -3.0f);
          ASSERT_TRUE(matmul(ctx, w, x.data(), m, y2.data(), ws2).ok());
          ASSERT_TRUE(matmul(ctx, w, x.data(), m, y5.data(), ws5).ok());
          ASSERT_TRUE(matmul(ctx, w, x.data(), m, y5z.data(), ws5z).ok());
          for (int64_t i = 0; i < m * n_out; ++i) {
            ASSERT_EQ(0, std::memcmp(&y2[i], &y5[i], sizeof(float)))
                << type_name(t) << " n_in=" << n_in << " n_out=" << n_out << " m=" << m
                << " threads=" << threads << " row " << i / n_out << " col " << i % n_out
                << ": avx2 " << y2[i] << " avx512 " << y5[i];
            ASSERT_EQ(0, std::memcmp(&y2[i], &y5z[i], sizeof(float)))
                << type_name(t) << " n_in=" << n_in << " n_out=" << n_out << " m=" << m
                << " threads=" << threads << " row " << i / n_out << " col " << i % n_out
                << ": avx2 " << y2[i] << " avx512 with 512-bit tiles " << y5z[i];
          }
        }
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulAvx512, testing::ValuesIn(kAllTypes),
                         [](const auto& info) { return std::string(type_name(info.param)); });

// Small batches (sequences decoding together, speculative verification) run their own tiles on
// the AVX-512 path (Q4_0 and Q8_0 up to 8 rows, Q4_K, Q5_K and Q6_K up to 6: multi-row tiles that
// decode the weights in registers; the packed driver above).
// Every batch size from 1 to 20, each row checked byte for byte against the same row decoded
// alone (the GEMV tile) and against the AVX2 kernels' batch: block counts odd (Q4_0's last pair
// half empty) and even, several packing chunks, column counts leaving 1 to 7 columns in the last
// group, 1 to 3 threads, rows at varying positions.
class MatmulAvx512SmallBatch : public testing::TestWithParam<GgmlType> {};

TEST_P(MatmulAvx512SmallBatch, EveryRowCountMatchesDecodeAndAvx2) {
  if (!have_both()) GTEST_SKIP() << "needs AVX2 and AVX-512 VNNI";
  const GgmlType t = GetParam();
  const int64_t bs = matmul_test::block_size(t);
  const int64_t pool = 29;  // distinct activation rows
  struct Shape {
    int64_t n_in, n_out;
  };
  const Shape shapes[] = {{bs == 32 ? 5 * 32 : bs, 37},
                          {bs == 32 ? 23 * 32 : 3 * bs, 9},
                          {bs == 32 ? 50 * 32 : 2 * bs, 70}};
  for (const Shape s : shapes) {
    const auto wbytes = matmul_test::random_weights(t, s.n_in, s.n_out, 11 + s.n_in);
    const WeightMatrix w{t, wbytes.data(), s.n_in, s.n_out};
    const auto x = matmul_test::random_activations(pool, s.n_in, 23 + s.n_in);
    MatmulWorkspace ws2(Isa::kAvx2), ws5(Isa::kAvx512);
    ThreadContext one(1);
    std::vector<float> alone(pool * s.n_out);
    for (int64_t p = 0; p < pool; ++p) {
      ASSERT_TRUE(gemv(one, w, x.data() + p * s.n_in, alone.data() + p * s.n_out, ws5).ok());
    }
    for (int threads : {1, 2, 3}) {
      ThreadContext ctx(threads);
      for (int64_t m = 1; m <= 20; ++m) {
        const int64_t offset = (m * 7 + threads) % pool;
        std::vector<float> xb(m * s.n_in);
        for (int64_t i = 0; i < m; ++i) {
          std::memcpy(&xb[i * s.n_in], &x[(offset + i) % pool * s.n_in], s.n_in * sizeof(float));
        }
        std::vector<float> y2(m * s.n_out, -1.0f), y5(m * s.n_out, -2.0f);
        ASSERT_TRUE(matmul(ctx, w, xb.data(), m, y2.data(), ws2).ok());
        ASSERT_TRUE(matmul(ctx, w, xb.data(), m, y5.data(), ws5).ok());
        for (int64_t i = 0; i < m * s.n_out; ++i) {
          const int64_t row = i / s.n_out, col = i % s.n_out;
          const float single = alone[(offset + row) % pool * s.n_out + col];
          ASSERT_EQ(0, std::memcmp(&y5[i], &single, sizeof(float)))
              << type_name(t) << " n_in=" << s.n_in << " n_out=" << s.n_out << " m=" << m
              << " threads=" << threads << " row " << row << " col " << col << ": batch " << y5[i]
              << " alone " << single;
          ASSERT_EQ(0, std::memcmp(&y5[i], &y2[i], sizeof(float)))
              << type_name(t) << " n_in=" << s.n_in << " n_out=" << s.n_out << " m=" << m
              << " threads=" << threads << " row " << row << " col " << col << ": avx512 " << y5[i]
              << " avx2 " << y2[i];
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulAvx512SmallBatch,
                         testing::Values(GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K,
                                         GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS),
                         [](const auto& info) { return std::string(type_name(info.param)); });

// The float kernels (matmul_f16_avx512.cpp) against AVX2's, more closely: every batch size from
// 1 to 18 (2 to 16 rows run the small-batch tiles of up to 6 x 4) and sizes around the row-block
// edges (the even split of a block into tiles of up to 6 rows), K with no multiple of 8 at all
// (the whole dot product in the scalar tail), exactly 8, ragged and model-sized, column counts
// that leave 1 to 7 columns in the last group of 8 (odd ones run a repeated partner column), and
// 1 to 3 threads.
class MatmulAvx512Float : public testing::TestWithParam<GgmlType> {};

TEST_P(MatmulAvx512Float, BitIdenticalToAvx2) {
  if (!have_both()) GTEST_SKIP() << "needs AVX2 and AVX-512 VNNI";
  const GgmlType t = GetParam();
  std::vector<int64_t> ms;
  for (int64_t m = 1; m <= 18; ++m) ms.push_back(m);
  for (int64_t m : {23, 35, 63, 64, 65, 70, 130}) ms.push_back(m);
  struct Shape {
    int64_t n_in, n_out;
  };
  for (const Shape s : {Shape{7, 13}, Shape{8, 9}, Shape{773, 37}, Shape{2048, 23}}) {
    const auto wbytes = matmul_test::random_weights(t, s.n_in, s.n_out, 5 + s.n_in);
    const WeightMatrix w{t, wbytes.data(), s.n_in, s.n_out};
    const auto x = matmul_test::random_activations(130, s.n_in, 17 + s.n_in);
    MatmulWorkspace ws2(Isa::kAvx2), ws5(Isa::kAvx512);
    for (int threads : {1, 2, 3}) {
      ThreadContext ctx(threads);
      for (int64_t m : ms) {
        std::vector<float> y2(m * s.n_out, -1.0f), y5(m * s.n_out, -2.0f);
        ASSERT_TRUE(matmul(ctx, w, x.data(), m, y2.data(), ws2).ok());
        ASSERT_TRUE(matmul(ctx, w, x.data(), m, y5.data(), ws5).ok());
        for (int64_t i = 0; i < m * s.n_out; ++i) {
          ASSERT_EQ(0, std::memcmp(&y2[i], &y5[i], sizeof(float)))
              << type_name(t) << " n_in=" << s.n_in << " n_out=" << s.n_out << " m=" << m
              << " threads=" << threads << " row " << i / s.n_out << " col " << i % s.n_out
              << ": avx2 " << y2[i] << " avx512 " << y5[i];
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulAvx512Float,
                         testing::Values(GgmlType::F16, GgmlType::BF16, GgmlType::F32),
                         [](const auto& info) { return std::string(type_name(info.param)); });

// The other kernel families have no AVX-512 code: on the AVX-512 path they must run their AVX2
// versions (bit-identical), not the scalar ones. silu and RMS norm differ between scalar and AVX2
// in the last bits (their exp / sum orders differ), which the second check makes sure of, so
// a fall-back to scalar would show.
TEST(OpsAvx512, RunTheAvx2Versions) {
  if (!have_both()) GTEST_SKIP() << "needs AVX2 and AVX-512 VNNI";
  const int64_t n = 1000;
  std::vector<float> x(n), w(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::sin(0.37f * i) * 6.0f;
    w[i] = 1.0f + 0.001f * i;
  }
  std::vector<float> s2(n), s5(n), ss(n), n2(n), n5(n), ns(n);
  silu(x.data(), s2.data(), n, Isa::kAvx2);
  silu(x.data(), s5.data(), n, Isa::kAvx512);
  silu(x.data(), ss.data(), n, Isa::kScalar);
  rms_norm_row(x.data(), w.data(), n2.data(), n, 1e-6f, Isa::kAvx2);
  rms_norm_row(x.data(), w.data(), n5.data(), n, 1e-6f, Isa::kAvx512);
  rms_norm_row(x.data(), w.data(), ns.data(), n, 1e-6f, Isa::kScalar);
  EXPECT_EQ(0, std::memcmp(s2.data(), s5.data(), n * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(n2.data(), n5.data(), n * sizeof(float)));
  const bool silu_differs = std::memcmp(s2.data(), ss.data(), n * sizeof(float)) != 0;
  const bool norm_differs = std::memcmp(n2.data(), ns.data(), n * sizeof(float)) != 0;
  EXPECT_TRUE(silu_differs || norm_differs)
      << "scalar and AVX2 agree bitwise here, so this test cannot tell them apart";
}

}  // namespace
}  // namespace chimera
