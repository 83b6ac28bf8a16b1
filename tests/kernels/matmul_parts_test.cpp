// matmul_parts: several matrices over one input in one parallel region give each part's y
// bit-identical to its own matmul() call, on every ISA path, 1 and 2 threads, shared and
// distinct activation formats; the `after` hook sees every column once, when it is final.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "matmul_test_util.h"

namespace chimera {
namespace {

struct PartSpec {
  GgmlType type;
  int64_t n_out;
};

void check_parts(const std::vector<PartSpec>& specs, int64_t n_in, int64_t m, Isa isa,
                 ThreadContext& ctx) {
  SCOPED_TRACE(std::string(isa_name(isa)) + " m=" + std::to_string(m) +
               " threads=" + std::to_string(ctx.n_threads()));
  const std::vector<float> x = matmul_test::random_activations(m, n_in, 11);
  std::vector<std::vector<uint8_t>> w;
  std::vector<std::vector<float>> want, got;
  std::vector<MatmulPart> parts;
  MatmulWorkspace ws(isa);
  for (size_t p = 0; p < specs.size(); ++p) {
    w.push_back(matmul_test::random_weights(specs[p].type, n_in, specs[p].n_out, 100 + p));
    const WeightMatrix wm{specs[p].type, w[p].data(), n_in, specs[p].n_out};
    want.emplace_back(m * specs[p].n_out);
    ASSERT_TRUE(matmul(ctx, wm, x.data(), m, want[p].data(), ws).ok());
    got.emplace_back(m * specs[p].n_out, -7.0f);
  }
  for (size_t p = 0; p < specs.size(); ++p)
    parts.push_back(
        {WeightMatrix{specs[p].type, w[p].data(), n_in, specs[p].n_out}, got[p].data(), 0});
  std::mutex mu;
  std::vector<std::vector<int>> seen(specs.size());
  for (size_t p = 0; p < specs.size(); ++p) seen[p].assign(specs[p].n_out, 0);
  std::atomic<int> not_final{0}, misaligned{0};
  ASSERT_TRUE(matmul_parts(ctx, parts.data(), static_cast<int>(parts.size()), x.data(), m, ws, 0,
                           nullptr,
                           [&](int p, int64_t j0, int64_t j1) {
                             if (j0 % kMatmulColumnGrain != 0 ||
                                 (j1 % kMatmulColumnGrain != 0 && j1 != specs[p].n_out))
                               ++misaligned;
                             const int64_t n = specs[p].n_out;
                             for (int64_t i = 0; i < m; ++i)
                               if (std::memcmp(&got[p][i * n + j0], &want[p][i * n + j0],
                                               (j1 - j0) * 4) != 0)
                                 ++not_final;
                             std::lock_guard<std::mutex> lock(mu);
                             for (int64_t j = j0; j < j1; ++j) ++seen[p][j];
                           })
                  .ok());
  EXPECT_EQ(misaligned.load(), 0);
  EXPECT_EQ(not_final.load(), 0);
  for (size_t p = 0; p < specs.size(); ++p) {
    EXPECT_EQ(std::memcmp(got[p].data(), want[p].data(), got[p].size() * 4), 0)
        << "part " << p << " (" << type_name(specs[p].type) << ")";
    for (int64_t j = 0; j < specs[p].n_out; ++j) ASSERT_EQ(seen[p][j], 1) << p << "," << j;
  }
}

TEST(MatmulParts, EachPartEqualsItsOwnMatmul) {
  ThreadContext one(1), two(2);
  // Q, K, V alike (one shared preparation), mixed 32-block and 256-block quantizations (two),
  // float weights beside quantized ones; n_out not multiples of the column grain.
  const std::vector<std::vector<PartSpec>> cases = {
      {{GgmlType::Q4_0, 72}, {GgmlType::Q4_0, 40}, {GgmlType::Q4_0, 40}},
      {{GgmlType::Q4_K, 50}, {GgmlType::Q6_K, 33}, {GgmlType::Q8_0, 17}},
      {{GgmlType::F16, 24}, {GgmlType::Q4_0, 9}},
      {{GgmlType::F32, 130}}};
  for (Isa isa : matmul_test::runnable_isas())
    for (const auto& specs : cases)
      for (int64_t m : {1, 3, 9})
        for (ThreadContext* ctx : {&one, &two}) check_parts(specs, 256, m, isa, *ctx);
}

// matmul_fused: per-share input rows (each share's own copy, made by its input() call once
// before its first columns, or share 0's when ready first), lockstep parts with `after` over
// every part's final columns, and both together: bit-identical to plain matmul() per part, on
// every ISA path, 1 and 2 threads, with the workers running or held (the caller then runs every
// share, reading share 0's rows).
void check_fused(GgmlType type, int64_t n_in, int64_t n_out, int n_parts, int64_t m, bool input,
                 bool lockstep, Isa isa, ThreadContext& ctx) {
  SCOPED_TRACE(std::string(isa_name(isa)) + " " + type_name(type) + " m=" + std::to_string(m) +
               " n_out=" + std::to_string(n_out) + " parts=" + std::to_string(n_parts) +
               " input=" + std::to_string(input) + " lockstep=" + std::to_string(lockstep) +
               " threads=" + std::to_string(ctx.n_threads()));
  const std::vector<float> x = matmul_test::random_activations(m, n_in, 21);
  MatmulWorkspace ws(isa);
  std::vector<std::vector<uint8_t>> w;
  std::vector<std::vector<float>> want, got;
  std::vector<MatmulPart> parts;
  for (int p = 0; p < n_parts; ++p) {
    const int64_t rows = lockstep ? n_out : n_out + 16 * p;
    w.push_back(matmul_test::random_weights(type, n_in, rows, 200 + p));
    const WeightMatrix wm{type, w[p].data(), n_in, rows};
    want.emplace_back(m * rows);
    ASSERT_TRUE(matmul(ctx, wm, x.data(), m, want[p].data(), ws).ok());
    got.emplace_back(m * rows, -7.0f);
    parts.push_back({wm, got[p].data(), 0});
  }
  // Share copies of x, each made by its share's input() call; x itself is never read then
  // (xs[0] is poisoned).
  const int nth = ctx.n_threads();
  std::vector<std::vector<float>> copies(nth, std::vector<float>(m * n_in, -1.0f));
  std::vector<float> poisoned(m * n_in, std::nanf(""));
  std::vector<std::atomic<int>> inputs(nth);
  std::atomic<int> not_final{0};
  std::mutex mu;
  std::vector<std::vector<int>> seen(n_parts);
  for (int p = 0; p < n_parts; ++p) seen[p].assign(parts[p].w.n_out, 0);
  MatmulFusion fusion;
  auto in = [&](int ith) -> const float* {
    inputs[ith].fetch_add(1);
    std::memcpy(copies[ith].data(), x.data(), x.size() * 4);
    return copies[ith].data();
  };
  auto after = [&](int part, int64_t j0, int64_t j1) {
    for (int p = 0; p < n_parts; ++p) {
      if (!lockstep && p != part) continue;
      const int64_t n = parts[p].w.n_out;
      for (int64_t i = 0; i < m; ++i)
        if (std::memcmp(&got[p][i * n + j0], &want[p][i * n + j0], (j1 - j0) * 4) != 0) ++not_final;
      std::lock_guard<std::mutex> lock(mu);
      for (int64_t j = j0; j < j1; ++j) ++seen[p][j];
    }
  };
  fusion.after = after;
  if (input) fusion.input = in;
  fusion.lockstep = lockstep;
  for (bool hold : {false, true}) {
    for (auto& g : got) std::fill(g.begin(), g.end(), -7.0f);
    for (auto& sp : seen) std::fill(sp.begin(), sp.end(), 0);
    for (auto& c : inputs) c.store(0);
    ctx.hold_workers_for_test(hold);
    ASSERT_TRUE(matmul_fused(ctx, parts.data(), n_parts, input ? poisoned.data() : x.data(), m, ws,
                             0, nullptr, fusion)
                    .ok());
    ctx.hold_workers_for_test(false);
    EXPECT_EQ(not_final.load(), 0);
    for (int p = 0; p < n_parts; ++p) {
      EXPECT_EQ(std::memcmp(got[p].data(), want[p].data(), got[p].size() * 4), 0) << "part " << p;
      for (int64_t j = 0; j < parts[p].w.n_out; ++j) ASSERT_EQ(seen[p][j], 1) << p << "," << j;
    }
    for (int i = 0; i < nth; ++i) EXPECT_LE(inputs[i].load(), input ? 1 : 0) << "share " << i;
    if (input) {
      EXPECT_EQ(inputs[0].load(), 1);
      // Held workers: the caller runs every share after share 0, reading share 0's rows.
      if (hold) {
        for (int i = 1; i < nth; ++i) EXPECT_EQ(inputs[i].load(), 0) << "share " << i;
      }
    }
  }
}

TEST(MatmulParts, FusedInputAndLockstepEqualPlainMatmul) {
  ThreadContext one(1), two(2);
  for (Isa isa : matmul_test::runnable_isas())
    for (GgmlType type : {GgmlType::F16, GgmlType::BF16, GgmlType::F32})
      for (int64_t m : {1, 2, 9, 17})
        for (int64_t n_out : {40, 512})
          for (ThreadContext* ctx : {&one, &two}) {
            check_fused(type, 256, n_out, 1, m, true, false, isa, *ctx);
            check_fused(type, 256, n_out, 3, m, true, false, isa, *ctx);
            check_fused(type, 256, n_out, 2, m, false, true, isa, *ctx);
            check_fused(type, 256, n_out + 3, 2, m, true, true, isa, *ctx);
          }
  // Lockstep over quantized weights (their activations prepared once, as without it).
  for (Isa isa : matmul_test::runnable_isas())
    for (ThreadContext* ctx : {&one, &two})
      check_fused(GgmlType::Q4_0, 256, 72, 2, 9, false, true, isa, *ctx);
}

TEST(MatmulParts, FusedMisuseIsAnErrorThatWritesNothing) {
  ThreadContext ctx(2);
  MatmulWorkspace ws;
  const auto wq = matmul_test::random_weights(GgmlType::Q8_0, 64, 16, 1);
  const auto wf = matmul_test::random_weights(GgmlType::F16, 64, 32, 2);
  std::vector<float> x(64, 0.5f), y0(32, -3.0f), y1(32, -3.0f);
  MatmulPart parts[2] = {{WeightMatrix{GgmlType::F16, wf.data(), 64, 32}, y0.data(), 0},
                         {WeightMatrix{GgmlType::Q8_0, wq.data(), 64, 16}, y1.data(), 0}};
  MatmulFusion lockstep;
  lockstep.lockstep = true;  // n_out 32 and 16
  EXPECT_FALSE(matmul_fused(ctx, parts, 2, x.data(), 1, ws, 0, nullptr, lockstep).ok());
  MatmulFusion input;
  auto in = [&](int) -> const float* { return x.data(); };
  input.input = in;  // a Q8_0 part: quantized activations, not the rows themselves
  EXPECT_FALSE(matmul_fused(ctx, parts, 2, x.data(), 1, ws, 0, nullptr, input).ok());
  EXPECT_TRUE(matmul_fused(ctx, parts, 1, x.data(), 1, ws, 0, nullptr, input).ok());
  for (float v : y1) ASSERT_EQ(v, -3.0f);
}

TEST(MatmulParts, BadPartsAreErrorsThatWriteNothing) {
  ThreadContext ctx(2);
  MatmulWorkspace ws;
  const auto w0 = matmul_test::random_weights(GgmlType::Q8_0, 64, 16, 1);
  const auto w1 = matmul_test::random_weights(GgmlType::Q8_0, 32, 16, 2);
  std::vector<float> x(64, 0.5f), y0(16, -3.0f), y1(16, -3.0f);
  MatmulPart parts[2] = {{WeightMatrix{GgmlType::Q8_0, w0.data(), 64, 16}, y0.data(), 0},
                         {WeightMatrix{GgmlType::Q8_0, w1.data(), 32, 16}, y1.data(), 0}};
  const Status st = matmul_parts(ctx, parts, 2, x.data(), 1, ws);
  EXPECT_EQ(st.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(st.message().find("n_in"), std::string::npos) << st.message();
  parts[1].w.n_in = 64;
  parts[1].y = nullptr;
  EXPECT_FALSE(matmul_parts(ctx, parts, 2, x.data(), 1, ws).ok());
  EXPECT_FALSE(matmul_parts(ctx, parts, 0, x.data(), 1, ws).ok());
  EXPECT_FALSE(matmul_parts(ctx, parts, 9, x.data(), 1, ws).ok());
  for (float v : y0) ASSERT_EQ(v, -3.0f);
  for (float v : y1) ASSERT_EQ(v, -3.0f);
}

}  // namespace
}  // namespace chimera
