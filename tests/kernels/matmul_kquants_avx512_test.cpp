// The AVX-512 VNNI K-quant kernels (matmul_kquants_avx512.cpp) promise results bit-identical to
// the AVX2 kernels. Checked here byte for byte, calling both kernels on the same prepared Q8_K
// activations: batch sizes on both sides of the tile (4 rows) and row-block (128 rows) edges, odd
// column counts (the zero partner column), K spanning several packing chunks of 8 super-blocks,
// and the column splits of 1 and 2 threads. Runs only where the CPU has AVX-512 VNNI.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "kernels/act_quant.h"
#include "matmul_test_util.h"

namespace chimera {
namespace {

bool have_vnni() {
  const CpuFeatures& f = cpu_features();
  return isa_supported(Isa::kAvx2) && isa_supported(Isa::kAvx512) && f.avx512vnni;
}

class MatmulKQuantsAvx512 : public testing::TestWithParam<GgmlType> {};

TEST_P(MatmulKQuantsAvx512, BitIdenticalToAvx2) {
  if (!have_vnni()) GTEST_SKIP() << "needs AVX2 and AVX-512 VNNI";
  const GgmlType t = GetParam();
  const auto k2 = matmul_detail::avx2_kernel(t);
  const auto k5 = matmul_detail::avx512_kernel_kquants(t);
  ASSERT_NE(k2, nullptr);
  ASSERT_NE(k5, nullptr);
  const int64_t ms[] = {1, 2, 3, 4, 5, 7, 8, 16, 33, 64, 100, 130};
  const int64_t max_m = 130;
  // K: one super-block, and 19 (two full packing chunks of 8 and a partial one).
  for (int64_t n_in : {int64_t{256}, int64_t{19 * 256}}) {
    const auto x = matmul_test::random_activations(max_m, n_in, 5 + static_cast<uint32_t>(n_in));
    std::vector<BlockQ8_K> act(static_cast<size_t>(max_m * n_in / kQK_K));
    for (int64_t i = 0; i < max_m; ++i)
      quantize_act_q8k(x.data() + i * n_in, n_in, act.data() + i * (n_in / kQK_K));
    for (int64_t n_out : {int64_t{1}, int64_t{6}, int64_t{37}, int64_t{64}}) {
      const auto wbytes = matmul_test::random_weights(t, n_in, n_out, 31 + n_in + n_out);
      matmul_detail::KernelArgs args{};
      args.w = wbytes.data();
      args.w_row_bytes = row_bytes(t, n_in);
      args.act = reinterpret_cast<const uint8_t*>(act.data());
      args.act_stride = sizeof(BlockQ8_K) * static_cast<size_t>(n_in / kQK_K);
      args.n_in = n_in;
      args.y_stride = n_out;
      matmul_test::expect_kernels_bit_identical(k2, k5, args, ms, t, n_out);
    }
  }
}

// The comparison must be able to fail: a changed weight byte changes the AVX-512 result.
TEST(MatmulKQuantsAvx512Check, SeesAChangedWeight) {
  if (!have_vnni()) GTEST_SKIP() << "needs AVX2 and AVX-512 VNNI";
  const GgmlType t = GgmlType::Q4_K;
  const int64_t n_in = 256, n_out = 4, m = 8;
  auto wbytes = matmul_test::random_weights(t, n_in, n_out, 3);
  const auto x = matmul_test::random_activations(m, n_in, 4);
  std::vector<BlockQ8_K> act(m);
  for (int64_t i = 0; i < m; ++i) quantize_act_q8k(x.data() + i * n_in, n_in, &act[i]);
  matmul_detail::KernelArgs args{};
  args.w = wbytes.data();
  args.w_row_bytes = row_bytes(t, n_in);
  args.act = reinterpret_cast<const uint8_t*>(act.data());
  args.act_stride = sizeof(BlockQ8_K);
  args.m = m;
  args.n_in = n_in;
  args.y_stride = n_out;
  std::vector<float> y0(m * n_out), y1(m * n_out);
  args.y = y0.data();
  matmul_detail::avx512_kernel_kquants(t)(args, 0, n_out);
  wbytes[offsetof(BlockQ4_K, qs) + 5] ^= 0x11;  // two values of row 0
  args.y = y1.data();
  matmul_detail::avx512_kernel_kquants(t)(args, 0, n_out);
  EXPECT_NE(0, std::memcmp(y0.data(), y1.data(), n_out * sizeof(float)));  // row 0 of the output
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulKQuantsAvx512,
                         testing::Values(GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                                         GgmlType::IQ4_XS),
                         [](const auto& info) { return std::string(type_name(info.param)); });

}  // namespace
}  // namespace chimera
