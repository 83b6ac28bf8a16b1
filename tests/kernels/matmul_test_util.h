// Helpers shared by the matmul tests: random weights of every supported type (raw random bytes
// for the quantized payload, so every bit pattern is exercised, with sane fp16 scales) and the
// dequantized matrix from the gguf layer's scalar reference (gguf/quants.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/threads.h"
#include "gguf/quants.h"
#include "gguf/types.h"
#include "kernels/matmul.h"

namespace chimera::matmul_test {

inline const GgmlType kAllTypes[] = {
    GgmlType::F32,  GgmlType::F16,  GgmlType::BF16,  GgmlType::Q8_0,   GgmlType::Q4_0,
    GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,  GgmlType::IQ4_NL, GgmlType::Q4_K,
    GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS};

// The ISA paths this machine can run (scalar always).
inline std::vector<Isa> runnable_isas() {
  std::vector<Isa> out{Isa::kScalar};
  if (isa_supported(Isa::kAvx2)) out.push_back(Isa::kAvx2);
  if (isa_supported(Isa::kAvx512)) out.push_back(Isa::kAvx512);
  return out;
}

// A parameterised matmul test's case: one weight type on one ISA path, named "Q4_0_avx2".
struct TypeIsa {
  GgmlType type;
  Isa isa;
};

inline std::string type_isa_name(const testing::TestParamInfo<TypeIsa>& info) {
  return std::string(type_name(info.param.type)) + "_" + isa_name(info.param.isa);
}

// Each of `types` on each path this machine runs, the scalar one only when `with_scalar`.
inline std::vector<TypeIsa> type_isa_cases(std::span<const GgmlType> types, bool with_scalar) {
  std::vector<TypeIsa> out;
  for (GgmlType t : types)
    for (Isa isa : runnable_isas())
      if (with_scalar || isa != Isa::kScalar) out.push_back({t, isa});
  return out;
}

inline int64_t block_size(GgmlType t) {
  return type_traits(t).block_size;
}

inline void put_fp16(uint8_t* dst, float v) {
  const uint16_t h = f32_to_fp16(v);
  std::memcpy(dst, &h, 2);
}

// n_rows rows of n_in elements of type t. Block scales are positive fp16 values around `scale`
// (a random sign for d where the format allows it), all other bytes random.
inline std::vector<uint8_t> random_weights(GgmlType t, int64_t n_in, int64_t n_rows,
                                           uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::uniform_int_distribution<int> byte(0, 255);
  const size_t rb = row_bytes(t, n_in);
  std::vector<uint8_t> w(rb * n_rows);
  if (t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16) {
    for (int64_t k = 0; k < n_in * n_rows; ++k) {
      const float v = uni(rng);
      if (t == GgmlType::F32) {
        std::memcpy(&w[4 * k], &v, 4);
      } else {
        const uint16_t h = t == GgmlType::F16 ? f32_to_fp16(v) : f32_to_bf16(v);
        std::memcpy(&w[2 * k], &h, 2);
      }
    }
    return w;
  }
  for (auto& b : w) b = static_cast<uint8_t>(byte(rng));
  const size_t bs = type_traits(t).type_size;
  for (size_t off = 0; off < w.size(); off += bs) {
    uint8_t* blk = &w[off];
    switch (t) {
      case GgmlType::Q8_0:
      case GgmlType::Q4_0:
      case GgmlType::Q5_0:
      case GgmlType::IQ4_NL:
        put_fp16(blk, 0.02f * uni(rng));
        break;
      case GgmlType::Q4_1:
      case GgmlType::Q5_1:
        put_fp16(blk, 0.002f * (1.0f + uni(rng)));  // d
        put_fp16(blk + 2, 0.03f * uni(rng));        // m
        break;
      case GgmlType::IQ4_XS:
        put_fp16(blk, 0.0005f * uni(rng));  // d; the 6-bit sub-block scales stay random
        break;
      case GgmlType::Q4_K:
      case GgmlType::Q5_K:
        put_fp16(blk, 0.002f * (1.0f + uni(rng)));      // d
        put_fp16(blk + 2, 0.004f * (1.0f + uni(rng)));  // dmin
        break;
      case GgmlType::Q6_K:
        put_fp16(blk + offsetof(BlockQ6_K, d), 0.0005f * uni(rng));
        break;
      default:
        break;
    }
  }
  return w;
}

inline std::vector<float> dequantize_matrix(GgmlType t, const std::vector<uint8_t>& w, int64_t n_in,
                                            int64_t n_rows) {
  std::vector<float> out(n_in * n_rows);
  const size_t rb = row_bytes(t, n_in);
  for (int64_t j = 0; j < n_rows; ++j) {
    const Status st = dequantize_row(t, w.data() + j * rb, out.data() + j * n_in, n_in);
    if (!st.ok()) std::abort();
  }
  return out;
}

// Activations: uniform in [-1, 1], with some rows scaled up or down and an all-zero row, so the
// activation quantizers see varied magnitudes.
inline std::vector<float> random_activations(int64_t m, int64_t n_in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> x(m * n_in);
  for (int64_t i = 0; i < m; ++i) {
    const float scale = (i % 5 == 3) ? 0.0f : (i % 3 == 1 ? 40.0f : (i % 3 == 2 ? 0.01f : 1.0f));
    for (int64_t k = 0; k < n_in; ++k) x[i * n_in + k] = scale * uni(rng);
  }
  return x;
}

// Runs kernels `a` and `b` (two ISA paths of one type) on the same prepared arguments, for every
// m in `ms` and 1 and 2 threads (column chunks of 16, matmul's grain, spread over the threads as
// matmul() does), and requires byte-identical outputs. `args` must have everything but m and y.
inline void expect_kernels_bit_identical(matmul_detail::KernelFn a, matmul_detail::KernelFn b,
                                         matmul_detail::KernelArgs args,
                                         std::span<const int64_t> ms, GgmlType t, int64_t n_out) {
  for (int threads : {1, 2}) {
    ThreadContext ctx(threads);
    for (int64_t m : ms) {
      args.m = m;
      std::vector<float> ya(m * n_out, -1.0f), yb(m * n_out, -2.0f);
      auto args_a = args;
      args_a.y = ya.data();
      ctx.parallel_for(n_out, 16, [&](int64_t j0, int64_t j1) { a(args_a, j0, j1); });
      auto args_b = args;
      args_b.y = yb.data();
      ctx.parallel_for(n_out, 16, [&](int64_t j0, int64_t j1) { b(args_b, j0, j1); });
      for (int64_t i = 0; i < m * n_out; ++i) {
        ASSERT_EQ(0, std::memcmp(&ya[i], &yb[i], sizeof(float)))
            << type_name(t) << " n_in=" << args.n_in << " n_out=" << n_out << " m=" << m
            << " threads=" << threads << " row " << i / n_out << " col " << i % n_out << ": "
            << ya[i] << " vs " << yb[i];
      }
    }
  }
}

}  // namespace chimera::matmul_test
