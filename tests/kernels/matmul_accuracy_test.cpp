// Matmul against a double-precision reference, for every weight type, both ISA paths and
// awkward shapes.
//
// The reference multiplies the dequantized weights (gguf/quants.h, an independent scalar
// implementation) by the activations *as the kernel sees them*: unchanged for F32/F16/BF16, and
// after the activation quantizer for quantized types (whose output is checked bit for bit
// against gguf/quants.h's activation quantizers below). What remains is float rounding, bounded
// per element (see rounding_tolerance).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kernels/act_quant.h"
#include "matmul_test_util.h"

namespace chimera {
namespace {

using matmul_test::kAllTypes;

// The activations a kernel multiplies with: x itself, or x quantized per row and dequantized.
std::vector<float> effective_activations(GgmlType t, const std::vector<float>& x, int64_t m,
                                         int64_t n_in) {
  std::vector<float> out(x);
  const auto fmt = matmul_detail::act_format(t);
  if (fmt == matmul_detail::ActFormat::kF32) return out;
  for (int64_t i = 0; i < m; ++i) {
    const float* xr = x.data() + i * n_in;
    float* o = out.data() + i * n_in;
    if (fmt == matmul_detail::ActFormat::kQ8) {
      std::vector<ActBlockQ8> q(n_in / 32);
      quantize_act_q8(xr, n_in, q.data());
      for (int64_t k = 0; k < n_in; ++k) o[k] = q[k / 32].d * q[k / 32].qs[k % 32];
    } else {
      std::vector<BlockQ8_K> q(n_in / kQK_K);
      quantize_act_q8k(xr, n_in, q.data());
      for (int64_t k = 0; k < n_in; ++k) o[k] = q[k / kQK_K].d * q[k / kQK_K].qs[k % kQK_K];
    }
  }
  return out;
}

// Dequantized weights with every quantized value set to zero: -dmin*m per element for Q4_K/Q5_K,
// m for Q4_1/Q5_1 (the size of the min term the kernel adds separately), zero for the others.
std::vector<float> min_offsets(GgmlType t, std::vector<uint8_t> w, int64_t n_in, int64_t n_out) {
  size_t qh_off = 0, qh_size = 0, qs_off = 0, qs_size = 0;
  switch (t) {
    case GgmlType::Q4_K:
      qs_off = offsetof(BlockQ4_K, qs);
      qs_size = sizeof(BlockQ4_K::qs);
      break;
    case GgmlType::Q5_K:
      qh_off = offsetof(BlockQ5_K, qh);
      qh_size = sizeof(BlockQ5_K::qh);
      qs_off = offsetof(BlockQ5_K, qs);
      qs_size = sizeof(BlockQ5_K::qs);
      break;
    case GgmlType::Q4_1:
      qs_off = offsetof(BlockQ4_1, qs);
      qs_size = sizeof(BlockQ4_1::qs);
      break;
    case GgmlType::Q5_1:
      qh_off = offsetof(BlockQ5_1, qh);
      qh_size = sizeof(BlockQ5_1::qh);
      qs_off = offsetof(BlockQ5_1, qs);
      qs_size = sizeof(BlockQ5_1::qs);
      break;
    default:
      return std::vector<float>(n_in * n_out, 0.0f);
  }
  const size_t bs = type_traits(t).type_size;
  for (size_t off = 0; off < w.size(); off += bs) {
    std::memset(w.data() + off + qh_off, 0, qh_size);
    std::memset(w.data() + off + qs_off, 0, qs_size);
  }
  return matmul_test::dequantize_matrix(t, w, n_in, n_out);
}

// Float rounding bound for one output element. Both paths form each term exactly or with one
// rounding (block scale product d_w*d_a, int->float is exact below 2^24) and add terms with one
// rounding each: at most n_in (F32/F16/BF16) or 2 per block plus the horizontal sum (quantized)
// sequential steps. The classic bound for a sum of n rounded steps is n*u*sum|terms| (u = 2^-24);
// we use 2u per step to cover the product roundings. For Q4_K/Q5_K/Q4_1/Q5_1 the kernel adds the
// scale term and the min term separately, so their magnitudes count separately:
// |d*sc*q| <= |w| + |off|.
double rounding_tolerance(GgmlType t, int64_t n_in, double abs_sum) {
  const double u = std::ldexp(1.0, -24);
  const int64_t bs = matmul_test::block_size(t);
  const double steps = (bs == 1 ? n_in : 2 * (n_in / bs)) + 8;
  return 2 * u * steps * abs_sum + 1e-30;
}

void check_against_reference(GgmlType t, Isa isa, int64_t n_in, int64_t n_out, int64_t m,
                             uint32_t seed) {
  SCOPED_TRACE(std::string(type_name(t)) + " " + isa_name(isa) + " n_in=" + std::to_string(n_in) +
               " n_out=" + std::to_string(n_out) + " m=" + std::to_string(m));
  const auto wbytes = matmul_test::random_weights(t, n_in, n_out, seed);
  const auto wf = matmul_test::dequantize_matrix(t, wbytes, n_in, n_out);
  const auto off = min_offsets(t, wbytes, n_in, n_out);
  const auto x = matmul_test::random_activations(m, n_in, seed + 1);
  const auto xe = effective_activations(t, x, m, n_in);

  WeightMatrix w{t, wbytes.data(), n_in, n_out};
  MatmulWorkspace ws(isa);
  ThreadContext ctx(2);
  std::vector<float> y(m * n_out, -1.0f);
  ASSERT_TRUE(matmul(ctx, w, x.data(), m, y.data(), ws).ok());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n_out; ++j) {
      double ref = 0, abs_sum = 0;
      for (int64_t k = 0; k < n_in; ++k) {
        const double a = xe[i * n_in + k], b = wf[j * n_in + k], o = off[j * n_in + k];
        ref += a * b;
        abs_sum += std::fabs(a) * (std::fabs(b) + 2 * std::fabs(o));
      }
      const double tol = rounding_tolerance(t, n_in, abs_sum);
      ASSERT_NEAR(y[i * n_out + j], ref, tol) << "row " << i << " col " << j;
    }
  }
}

TEST(MatmulAccuracy, EveryTypePathAndAwkwardShape) {
  uint32_t seed = 100;
  for (GgmlType t : kAllTypes) {
    const int64_t bs = matmul_test::block_size(t);
    // One block, a few blocks; for element types also sizes off the vector width.
    std::vector<int64_t> n_ins =
        bs == 1 ? std::vector<int64_t>{1, 7, 8, 9, 33, 100, 256} : std::vector<int64_t>{bs, 3 * bs};
    for (Isa isa : matmul_test::runnable_isas()) {
      for (int64_t n_in : n_ins) {
        for (int64_t n_out : {1, 3, 17, 33}) {
          for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 9, 31, 64}) {
            // Keep the run short: the full m sweep on the smallest n_in, a sample otherwise.
            if (n_in != n_ins.front() && m != 1 && m != 5 && m != 64) continue;
            check_against_reference(t, isa, n_in, n_out, m, seed++);
          }
        }
      }
    }
  }
}

TEST(MatmulAccuracy, LargeInnerDimension) {
  // A realistic row length: accumulation over many blocks.
  uint32_t seed = 9000;
  for (GgmlType t : kAllTypes) {
    for (Isa isa : matmul_test::runnable_isas())
      check_against_reference(t, isa, 2048, 19, 5, seed++);
  }
}

// The AVX2 Q4_0 kernel's paired layout holds exactly the blocks' values, sums and scales, in the
// documented places; an odd block count leaves the last pair's second half zero.
TEST(MatmulActQuant, PairedBlocksHoldTheBlocksValues) {
  for (int64_t nb : {1, 2, 5, 8}) {
    const auto x = matmul_test::random_activations(1, nb * 32, 80 + static_cast<uint32_t>(nb));
    std::vector<ActBlockQ8> blocks(nb);
    quantize_act_q8(x.data(), nb * 32, blocks.data());
    std::vector<ActPairQ8> pairs((nb + 1) / 2);
    pair_act_q8(blocks.data(), nb, pairs.data());
    for (int64_t b = 0; b < 2 * static_cast<int64_t>(pairs.size()); ++b) {
      const ActPairQ8& p = pairs[b / 2];
      const int h = static_cast<int>(b % 2);
      for (int k = 0; k < 32; ++k) {
        const int8_t got = k < 16 ? p.lo[16 * h + k] : p.hi[16 * h + k - 16];
        ASSERT_EQ(got, b < nb ? blocks[b].qs[k] : 0) << "nb " << nb << " block " << b;
      }
      for (int m = 0; m < 4; ++m) {
        int want = 0;
        if (b < nb) {
          for (int k : {4 * m, 4 * m + 1, 4 * m + 2, 4 * m + 3})
            want += 8 * (blocks[b].qs[k] + blocks[b].qs[16 + k]);
        }
        ASSERT_EQ(p.sum8[4 * h + m], want) << "nb " << nb << " block " << b;
        ASSERT_EQ(p.d[4 * h + m], b < nb ? blocks[b].d : 0.0f);
      }
    }
  }
}

TEST(MatmulActQuant, MatchesGgufReferenceQuantizers) {
  const int64_t n = 1024;
  const auto x = matmul_test::random_activations(6, n, 77);
  for (int64_t i = 0; i < 6; ++i) {
    const float* xr = x.data() + i * n;
    std::vector<ActBlockQ8> mine(n / 32);
    std::vector<BlockQ8_0> ref(n / 32);
    quantize_act_q8(xr, n, mine.data());
    quantize_row_q8_0_act(xr, ref.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
      ASSERT_EQ(mine[b].d, fp16_to_f32(ref[b].d)) << "row " << i << " block " << b;
      ASSERT_EQ(0, std::memcmp(mine[b].qs, ref[b].qs, 32)) << "row " << i << " block " << b;
      for (int g = 0; g < 8; ++g) {
        int s = 0;
        for (int k = 0; k < 4; ++k) s += ref[b].qs[4 * g + k];
        ASSERT_EQ(mine[b].sum8[g], 8 * s);
      }
    }
    std::vector<BlockQ8_K> mine_k(n / kQK_K), ref_k(n / kQK_K);
    quantize_act_q8k(xr, n, mine_k.data());
    quantize_row_q8_K(xr, ref_k.data(), n);
    for (int64_t b = 0; b < n / kQK_K; ++b) {
      ASSERT_EQ(mine_k[b].d, ref_k[b].d) << "row " << i << " block " << b;
      ASSERT_EQ(0, std::memcmp(mine_k[b].qs, ref_k[b].qs, kQK_K));
      ASSERT_EQ(0, std::memcmp(mine_k[b].bsums, ref_k[b].bsums, sizeof(ref_k[b].bsums)));
    }
  }
}

TEST(MatmulActQuant, Avx2QuantizersAreBitIdenticalToScalar) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  const int64_t n = 512;
  auto x = matmul_test::random_activations(12, n, 78);
  // Row 6: exact ties after scaling (amax 127 -> scale 1, values k + 0.5); row 7: NaN and
  // infinities; row 8: the largest magnitude appears with both signs (first one must win).
  for (int64_t k = 0; k < n; ++k) x[6 * n + k] = (k % 32 == 0) ? 127.0f : (k % 7) - 3.5f;
  x[7 * n + 5] = std::nanf("");
  x[7 * n + 40] = INFINITY;
  x[7 * n + 300] = -INFINITY;
  x[8 * n + 10] = -50.0f;
  x[8 * n + 20] = 50.0f;
  for (int64_t i = 0; i < 12; ++i) {
    const float* xr = x.data() + i * n;
    std::vector<ActBlockQ8> a(n / 32), b(n / 32);
    quantize_act_q8(xr, n, a.data());
    quantize_act_q8_avx2(xr, n, b.data());
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(ActBlockQ8))) << "row " << i;
    std::vector<BlockQ8_K> ak(n / kQK_K), bk(n / kQK_K);
    quantize_act_q8k(xr, n, ak.data());
    quantize_act_q8k_avx2(xr, n, bk.data());
    ASSERT_EQ(0, std::memcmp(ak.data(), bk.data(), ak.size() * sizeof(BlockQ8_K))) << "row " << i;
  }
}

TEST(MatmulActQuant, NonFiniteInputDoesNotCrash) {
  std::vector<float> x(256, 1.0f);
  x[3] = std::nanf("");
  x[100] = INFINITY;
  std::vector<ActBlockQ8> q(8);
  quantize_act_q8(x.data(), 256, q.data());
  BlockQ8_K qk;
  quantize_act_q8k(x.data(), 256, &qk);
  for (int k = 0; k < 32; ++k) EXPECT_LE(std::abs(int(q[0].qs[k])), 127);
}

}  // namespace
}  // namespace chimera
