// The AVX-512 VNNI kernels for Q4_1, Q5_0, Q5_1, IQ4_NL and IQ4_XS
// (matmul_q4_1_q5_iq4_avx512.cpp) promise results bit-identical to the AVX2 kernels. Checked here
// byte for byte, calling both kernels on the same prepared activations: batch sizes on both sides
// of the decode/prefill edge (4 rows) and the row-block edge (64 rows), odd block counts (the
// half-empty last pair), column counts that leave partial tiles, and the column splits of 1 and 2
// threads. Runs only where the CPU has AVX-512 VNNI.
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

// Prepared activation rows as the AVX2 path lays them out for `t`; returns the row stride.
size_t prepare(GgmlType t, const std::vector<float>& x, int64_t m, int64_t n_in,
               std::vector<uint8_t>& out) {
  if (t == GgmlType::IQ4_XS) {
    const size_t row = sizeof(BlockQ8_K) * static_cast<size_t>(n_in / kQK_K);
    out.assign(row * m, 0);
    for (int64_t i = 0; i < m; ++i)
      quantize_act_q8k(x.data() + i * n_in, n_in,
                       reinterpret_cast<BlockQ8_K*>(out.data() + i * row));
    return row;
  }
  const int64_t nb = n_in / 32;
  const size_t row = sizeof(ActPairQ8) * static_cast<size_t>((nb + 1) / 2);
  out.assign(row * m, 0);
  std::vector<ActBlockQ8> blocks(nb);
  for (int64_t i = 0; i < m; ++i) {
    quantize_act_q8(x.data() + i * n_in, n_in, blocks.data());
    pair_act_q8(blocks.data(), nb, reinterpret_cast<ActPairQ8*>(out.data() + i * row));
  }
  return row;
}

class MatmulQ41Q5IQ4Avx512 : public testing::TestWithParam<GgmlType> {};

TEST_P(MatmulQ41Q5IQ4Avx512, BitIdenticalToAvx2) {
  if (!have_vnni()) GTEST_SKIP() << "needs AVX2 and AVX-512 VNNI";
  const GgmlType t = GetParam();
  const auto k2 = matmul_detail::avx2_kernel(t);
  const auto k5 = matmul_detail::avx512_kernel_q4_1_q5_iq4(t);
  ASSERT_NE(k2, nullptr);
  ASSERT_NE(k5, nullptr);
  ASSERT_FALSE(matmul_detail::act_paired(t, Isa::kAvx2) != (t != GgmlType::IQ4_XS));
  const int64_t ms[] = {1, 2, 3, 4, 5, 7, 8, 16, 33, 64, 100};
  const int64_t max_m = 100;
  const bool xs = t == GgmlType::IQ4_XS;
  // K: odd and even block counts (IQ4_XS: 1 and 3 super-blocks).
  const int64_t n_ins[] = {xs ? 256 : 32, xs ? 768 : 7 * 32, xs ? 768 : 40 * 32};
  for (int64_t n_in : n_ins) {
    const auto x = matmul_test::random_activations(max_m, n_in, 5 + static_cast<uint32_t>(n_in));
    std::vector<uint8_t> act;
    const size_t stride = prepare(t, x, max_m, n_in, act);
    for (int64_t n_out : {int64_t{1}, int64_t{6}, int64_t{37}, int64_t{64}}) {
      const auto wbytes = matmul_test::random_weights(t, n_in, n_out, 31 + n_in + n_out);
      matmul_detail::KernelArgs args{};
      args.w = wbytes.data();
      args.w_row_bytes = row_bytes(t, n_in);
      args.act = act.data();
      args.act_stride = stride;
      args.n_in = n_in;
      args.y_stride = n_out;
      matmul_test::expect_kernels_bit_identical(k2, k5, args, ms, t, n_out);
    }
  }
}

// The comparison must be able to fail: a changed fifth bit changes the AVX-512 decode result.
TEST(MatmulQ41Q5IQ4Avx512Check, SeesAChangedFifthBit) {
  if (!have_vnni()) GTEST_SKIP() << "needs AVX2 and AVX-512 VNNI";
  const GgmlType t = GgmlType::Q5_1;
  const int64_t n_in = 96, n_out = 4, m = 1;
  auto wbytes = matmul_test::random_weights(t, n_in, n_out, 3);
  const auto x = matmul_test::random_activations(m, n_in, 4);
  std::vector<uint8_t> act;
  matmul_detail::KernelArgs args{};
  args.act_stride = prepare(t, x, m, n_in, act);
  args.w = wbytes.data();
  args.w_row_bytes = row_bytes(t, n_in);
  args.act = act.data();
  args.m = m;
  args.n_in = n_in;
  args.y_stride = n_out;
  std::vector<float> y0(n_out), y1(n_out);
  args.y = y0.data();
  matmul_detail::avx512_kernel_q4_1_q5_iq4(t)(args, 0, n_out);
  wbytes[sizeof(BlockQ5_1) * 2 + offsetof(BlockQ5_1, qh) + 1] ^= 0x12;  // row 0, third block
  args.y = y1.data();
  matmul_detail::avx512_kernel_q4_1_q5_iq4(t)(args, 0, n_out);
  EXPECT_NE(0, std::memcmp(&y0[0], &y1[0], sizeof(float)));
  EXPECT_EQ(0, std::memcmp(&y0[1], &y1[1], 3 * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulQ41Q5IQ4Avx512,
                         testing::Values(GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                                         GgmlType::IQ4_NL, GgmlType::IQ4_XS),
                         [](const auto& info) { return std::string(type_name(info.param)); });

}  // namespace
}  // namespace chimera
