// Mamba2 conv and scan: accuracy against double-precision references of spec 3.4, and the core
// exactness promise for recurrent layers: T tokens at once == one by one carrying state == any
// chunking, with 1 to 4 threads, bitwise for outputs and states; for each ISA.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/ssm.h"

namespace chimera {
namespace {

constexpr double kEps32 = 1.1920929e-7;

std::vector<Isa> OpIsas() {
  std::vector<Isa> out{Isa::kScalar};
  if (isa_supported(Isa::kAvx2)) out.push_back(Isa::kAvx2);
  if (isa_supported(Isa::kAvx512)) out.push_back(Isa::kAvx512);  // runs the AVX2 ops
  return out;
}

std::vector<float> rand_vec(size_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Bitwise equality; empty vectors (K = 1 has no conv state) are equal without touching data().
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// ---------------------------------------------------------------- conv

struct ConvData {
  int T, C, K;
  int64_t x_stride;
  std::vector<float> x, w, bias, state;
};

ConvData make_conv(int T, int C, int K, bool with_bias, std::mt19937& rng) {
  ConvData d{T, C, K, C + 3, {}, {}, {}, {}};
  d.x = rand_vec(static_cast<size_t>(T) * d.x_stride, -2, 2, rng);
  d.w = rand_vec(static_cast<size_t>(C) * K, -1, 1, rng);
  if (with_bias) d.bias = rand_vec(C, -0.5f, 0.5f, rng);
  d.state = rand_vec(static_cast<size_t>(C) * (K - 1), -2, 2, rng);
  return d;
}

// Runs tokens [t0, t0+n) of d against `state`, writing out rows [t0, t0+n) (stride C).
// The conv of tokens [t0, t0 + n) of `d`, updating `state` in place, into `out` (all tokens).
SsmConvArgs conv_args(const ConvData& d, int t0, int n, float* state, float* out) {
  SsmConvArgs a;
  a.n_tokens = n;
  a.n_channels = d.C;
  a.kernel_size = d.K;
  a.x = d.x.data() + static_cast<int64_t>(t0) * d.x_stride;
  a.x_stride = d.x_stride;
  a.weight = d.w.data();
  a.bias = d.bias.empty() ? nullptr : d.bias.data();
  a.conv_state = state;
  a.out = out + static_cast<int64_t>(t0) * d.C;
  a.out_stride = d.C;
  return a;
}

void conv_run(const ConvData& d, int t0, int n, std::vector<float>& state, std::vector<float>& out,
              ThreadContext* threads, Isa isa) {
  ASSERT_TRUE(ssm_conv(conv_args(d, t0, n, state.data(), out.data()), threads, isa).ok());
}

TEST(OpsSsmConv, MatchesReference) {
  std::mt19937 rng(41);
  ThreadContext two(2);
  for (int K : {1, 2, 4, 5}) {
    for (int C : {1, 5, 8, 13, 37}) {
      for (int T : {1, 2, 9, 40}) {  // 40: several of the AVX2 kernel's token tiles
        const ConvData d = make_conv(T, C, K, C % 2 == 1, rng);
        for (Isa isa : OpIsas()) {
          SCOPED_TRACE(::testing::Message()
                       << isa_name(isa) << " K " << K << " C " << C << " T " << T);
          std::vector<float> state = d.state, out(static_cast<size_t>(T) * C);
          conv_run(d, 0, T, state, out, &two, isa);
          for (int c = 0; c < C; ++c) {
            auto X = [&](int i) -> double {
              return i < K - 1 ? d.state[c * (K - 1) + i] : d.x[(i - (K - 1)) * d.x_stride + c];
            };
            for (int t = 0; t < T; ++t) {
              double v = d.bias.empty() ? 0.0 : d.bias[c], mag = std::fabs(v);
              for (int k = 0; k < K; ++k) {
                v += static_cast<double>(d.w[c * K + k]) * X(t + k);
                mag += std::fabs(d.w[c * K + k] * X(t + k));
              }
              const double want = v / (1 + std::exp(-v));
              // float sum of K products + bias: (K+2)·eps·Σ|terms|, SiLU's slope <= 1.1, plus the
              // SiLU budget of 16 ulp (activation test).
              const double tol =
                  1.1 * (K + 2) * kEps32 * mag + 16 * kEps32 * std::fabs(want) + 1e-30;
              ASSERT_NEAR(out[t * C + c], want, tol) << "c " << c << " t " << t;
            }
            for (int i = 0; i < K - 1; ++i)  // new state = last K-1 raw inputs, exact copies
              ASSERT_EQ(state[c * (K - 1) + i], static_cast<float>(X(T + i)))
                  << "state " << c << "," << i;
          }
        }
      }
    }
  }
}

// silu = false (LFM2's short conv): the biased sum itself, and the same state as with SiLU.
TEST(OpsSsmConv, WithoutSiluMatchesReference) {
  std::mt19937 rng(43);
  ThreadContext two(2);
  for (int K : {2, 3, 4}) {
    for (int C : {5, 16, 37}) {
      const int T = 7;
      const ConvData d = make_conv(T, C, K, false, rng);
      for (Isa isa : OpIsas()) {
        SCOPED_TRACE(::testing::Message() << isa_name(isa) << " K " << K << " C " << C);
        std::vector<float> state = d.state, out(static_cast<size_t>(T) * C);
        SsmConvArgs a = conv_args(d, 0, T, state.data(), out.data());
        a.silu = false;
        ASSERT_TRUE(ssm_conv(a, &two, isa).ok());
        std::vector<float> state_silu = d.state, out_silu(out.size());
        conv_run(d, 0, T, state_silu, out_silu, &two, isa);
        EXPECT_TRUE(same_bits(state, state_silu));
        for (int c = 0; c < C; ++c) {
          auto X = [&](int i) -> double {
            return i < K - 1 ? d.state[c * (K - 1) + i] : d.x[(i - (K - 1)) * d.x_stride + c];
          };
          for (int t = 0; t < T; ++t) {
            double v = 0, mag = 0;
            for (int k = 0; k < K; ++k) {
              v += static_cast<double>(d.w[c * K + k]) * X(t + k);
              mag += std::fabs(d.w[c * K + k] * X(t + k));
            }
            ASSERT_NEAR(out[t * C + c], v, 1.1 * (K + 2) * kEps32 * mag + 1e-30)
                << "c " << c << " t " << t;
            ASSERT_NE(out[t * C + c], out_silu[t * C + c]) << "c " << c << " t " << t;
          }
        }
      }
    }
  }
}

TEST(OpsSsmConv, ChunkingAndThreadsAreBitwiseInvariant) {
  std::mt19937 rng(42);
  ThreadContext two(2), three(3), four(4);
  ThreadContext* const chunk_threads[] = {nullptr, &three, &four};  // 3, 4: uneven channel splits
  for (int K : {1, 3, 4}) {
    for (int C : {1, 13, 40, 100}) {
      const int T = 23;
      const ConvData d = make_conv(T, C, K, true, rng);
      for (Isa isa : OpIsas()) {
        SCOPED_TRACE(::testing::Message() << isa_name(isa) << " K " << K << " C " << C);
        const size_t ob = static_cast<size_t>(T) * C * sizeof(float);
        std::vector<float> s_all = d.state, o_all(static_cast<size_t>(T) * C);
        conv_run(d, 0, T, s_all, o_all, nullptr, isa);
        std::vector<float> s_one = d.state, o_one(o_all.size());
        for (int t = 0; t < T; ++t) conv_run(d, t, 1, s_one, o_one, &two, isa);
        EXPECT_EQ(0, std::memcmp(o_all.data(), o_one.data(), ob)) << "one by one";
        EXPECT_TRUE(same_bits(s_all, s_one));
        std::vector<float> s_ch = d.state, o_ch(o_all.size());
        int t0 = 0, i = 0;
        for (int len : {2, 5, 1, 7, 3, 5}) {
          conv_run(d, t0, len, s_ch, o_ch, chunk_threads[i++ % 3], isa);
          t0 += len;
        }
        ASSERT_EQ(t0, T);
        EXPECT_EQ(0, std::memcmp(o_all.data(), o_ch.data(), ob)) << "chunks";
        EXPECT_TRUE(same_bits(s_all, s_ch));
      }
    }
  }
}

// The AVX2 conv's full blocks of kernel size 4 (Mamba2's d_conv: taps and state moved with vector
// permutes) against the generic code of ragged blocks, which moves them value by value: every
// channel's outputs and new state, bit for bit. Channels [c, c + 7) and [c + 7, c + 8) of each
// block run as two ragged blocks (a channel's arithmetic does not depend on its lane).
TEST(OpsSsmConv, KernelSize4FullBlocksMatchRaggedBlocksBitwise) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "no AVX2";
  std::mt19937 rng(44);
  const int C = 48, K = 4;
  for (int T : {0, 1, 2, 5, 17, 40}) {  // 17, 40: tiles that start past the incoming state
    for (int variant = 0; variant < 4; ++variant) {
      const bool separate_in = variant & 1, silu = variant & 2;
      SCOPED_TRACE(::testing::Message() << "T " << T << " variant " << variant);
      const ConvData d = make_conv(T, C, K, true, rng);
      auto run = [&](bool full, std::vector<float>& state, std::vector<float>& out) {
        SsmConvArgs a = conv_args(d, 0, T, state.data(), out.data());
        a.silu = silu;
        if (separate_in) a.conv_state_in = d.state.data();
        for (int c = 0; c < C; c += 8) {
          if (full) {
            ops_internal::ssm_conv_avx2(a, c, c + 8);
          } else {
            ops_internal::ssm_conv_avx2(a, c, c + 7);
            ops_internal::ssm_conv_avx2(a, c + 7, c + 8);
          }
        }
      };
      std::vector<float> s_full = separate_in ? std::vector<float>(d.state.size()) : d.state;
      std::vector<float> s_ragged = s_full, o_full(static_cast<size_t>(T) * C + 1, -1.0f);
      std::vector<float> o_ragged = o_full;
      run(true, s_full, o_full);
      run(false, s_ragged, o_ragged);
      EXPECT_TRUE(same_bits(o_full, o_ragged)) << "outputs";
      EXPECT_TRUE(same_bits(s_full, s_ragged)) << "state";
    }
  }
}

// Reading the incoming state from a separate buffer (conv_state_in) gives the same outputs and
// new state as updating in place, leaves the source untouched, and T = 0 just copies it.
TEST(OpsSsmConv, SeparateIncomingStateMatchesInPlace) {
  std::mt19937 rng(46);
  ThreadContext two(2);
  for (int K : {1, 2, 4}) {
    for (int C : {5, 40}) {
      for (int T : {0, 1, 7, 37}) {
        const ConvData d = make_conv(T, C, K, true, rng);
        for (Isa isa : OpIsas()) {
          SCOPED_TRACE(::testing::Message()
                       << isa_name(isa) << " K " << K << " C " << C << " T " << T);
          std::vector<float> s_ip = d.state, o_ip(static_cast<size_t>(T) * C + 1);
          conv_run(d, 0, T, s_ip, o_ip, &two, isa);
          const std::vector<float> src = d.state;
          std::vector<float> dst(d.state.size(), -7.0f), o_sep(o_ip.size());
          SsmConvArgs a = conv_args(d, 0, T, dst.data(), o_sep.data());
          a.conv_state_in = src.data();
          ASSERT_TRUE(ssm_conv(a, &two, isa).ok());
          EXPECT_TRUE(same_bits(o_ip, o_sep));
          EXPECT_TRUE(same_bits(s_ip, dst));
          EXPECT_TRUE(same_bits(src, d.state)) << "the incoming state was written";
        }
      }
    }
  }
}

// Per-token states (speculative verification): with conv_state_steps, a run of T tokens leaves
// the state after token t in step t, bit for bit the state a run of tokens 0..t alone leaves; the
// outputs and the final state are those of the plain run.
TEST(OpsSsmConv, PerTokenStatesMatchShorterRuns) {
  std::mt19937 rng(48);
  ThreadContext two(2);
  for (int K : {1, 2, 4}) {
    for (int C : {5, 40}) {
      const int T = 21;
      const ConvData d = make_conv(T, C, K, true, rng);
      for (Isa isa : OpIsas()) {
        SCOPED_TRACE(::testing::Message() << isa_name(isa) << " K " << K << " C " << C);
        std::vector<float> s_plain = d.state, o_plain(static_cast<size_t>(T) * C);
        conv_run(d, 0, T, s_plain, o_plain, &two, isa);
        const std::vector<float> src = d.state;
        std::vector<std::vector<float>> steps(T - 1, std::vector<float>(d.state.size(), -3.0f));
        std::vector<float*> ptrs;
        for (auto& v : steps) ptrs.push_back(v.data());
        std::vector<float> dst(d.state.size(), -7.0f), o(o_plain.size());
        SsmConvArgs a = conv_args(d, 0, T, dst.data(), o.data());
        a.conv_state_in = src.data();
        a.conv_state_steps = ptrs.data();
        ASSERT_TRUE(ssm_conv(a, &two, isa).ok());
        EXPECT_TRUE(same_bits(o_plain, o));
        EXPECT_TRUE(same_bits(s_plain, dst));
        for (int t = 0; t + 1 < T; ++t) {
          std::vector<float> s_short = d.state, o_short(o_plain.size());
          conv_run(d, 0, t + 1, s_short, o_short, nullptr, isa);
          EXPECT_TRUE(same_bits(s_short, steps[t])) << "state after token " << t;
        }
      }
    }
  }
}

TEST(OpsSsmConv, RejectsBadArgs) {
  std::vector<float> x(8), w(8), st(8), out(8);
  SsmConvArgs a{2, 4, 2, x.data(), 4, w.data(), nullptr, st.data(), out.data(), 4};
  EXPECT_TRUE(ssm_conv(a, nullptr).ok());
  SsmConvArgs b = a;
  b.kernel_size = kSsmMaxConvKernel + 1;
  EXPECT_EQ(ssm_conv(b, nullptr).code(), ErrorCode::kUnsupported);
  b = a;
  b.x_stride = 3;
  EXPECT_EQ(ssm_conv(b, nullptr).code(), ErrorCode::kInvalidArgument);
  b = a;
  b.conv_state = nullptr;
  EXPECT_EQ(ssm_conv(b, nullptr).code(), ErrorCode::kInvalidArgument);
}

// ---------------------------------------------------------------- scan

struct ScanData {
  int T, H, P, G, N;
  int64_t x_stride, dt_stride, bc_stride;
  std::vector<float> x, dt, dt_bias, A, B, C, D, state;
};

ScanData make_scan(int T, int H, int P, int G, int N, std::mt19937& rng) {
  ScanData d{T, H, P, G, N, H * P + 2, H + 1, 2 * G * N + 5, {}, {}, {}, {}, {}, {}, {}, {}};
  d.x = rand_vec(static_cast<size_t>(T) * d.x_stride, -2, 2, rng);
  d.dt = rand_vec(static_cast<size_t>(T) * d.dt_stride, -6, 2, rng);
  d.dt_bias = rand_vec(H, -1, 1, rng);
  d.dt_bias[0] = 25.0f;  // head 0 takes softplus's x > 20 shortcut
  d.A = rand_vec(H, -8, -0.05f, rng);
  d.B = rand_vec(static_cast<size_t>(T) * d.bc_stride, -1, 1, rng);  // C lives at B + G*N
  d.D = rand_vec(H, -1, 1, rng);
  d.state = rand_vec(static_cast<size_t>(H) * P * N, -1, 1, rng);
  return d;
}

SsmScanArgs scan_args(const ScanData& d, int t0, int n, float* y, int64_t y_stride,
                      std::vector<float>& state) {
  SsmScanArgs a;
  a.n_tokens = n;
  a.n_head = d.H;
  a.head_dim = d.P;
  a.n_group = d.G;
  a.state_size = d.N;
  a.x = d.x.data() + t0 * d.x_stride;
  a.x_stride = d.x_stride;
  a.dt = d.dt.data() + t0 * d.dt_stride;
  a.dt_stride = d.dt_stride;
  a.dt_bias = d.dt_bias.data();
  a.A = d.A.data();
  a.B = d.B.data() + t0 * d.bc_stride;
  a.B_stride = d.bc_stride;
  a.C = d.B.data() + t0 * d.bc_stride + d.G * d.N;
  a.C_stride = d.bc_stride;
  a.D = d.D.data();
  a.y = y + t0 * y_stride;
  a.y_stride = y_stride;
  a.state = state.data();
  return a;
}

struct ScanShape {
  int H, P, G, N;
};
const ScanShape kScanShapes[] = {
    {6, 5, 2, 13}, {4, 1, 4, 1}, {8, 16, 1, 128}, {3, 7, 1, 8}, {6, 3, 3, 20}};

TEST(OpsSsmScan, MatchesReference) {
  std::mt19937 rng(43);
  ThreadContext two(2);
  for (const ScanShape& s : kScanShapes) {
    const int T = 30;
    const ScanData d = make_scan(T, s.H, s.P, s.G, s.N, rng);
    // Reference in double, with |.|-propagated magnitudes for the error bound.
    std::vector<double> S(d.state.begin(), d.state.end()), Sabs(S.size());
    for (size_t i = 0; i < S.size(); ++i) Sabs[i] = std::fabs(S[i]);
    std::vector<double> want(static_cast<size_t>(T) * s.H * s.P), mag(want.size());
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < s.H; ++h) {
        const int g = h / (s.H / s.G);
        const double raw = static_cast<double>(d.dt[t * d.dt_stride + h]) + d.dt_bias[h];
        const double delta = raw > 20 ? raw : std::log1p(std::exp(raw));
        const double dA = std::exp(delta * d.A[h]);
        for (int p = 0; p < s.P; ++p) {
          const double xv = d.x[t * d.x_stride + h * s.P + p];
          double y = 0, m = 0;
          for (int n = 0; n < s.N; ++n) {
            const size_t i = (static_cast<size_t>(h) * s.P + p) * s.N + n;
            const double b = d.B[t * d.bc_stride + g * s.N + n];
            const double c = d.B[t * d.bc_stride + s.G * s.N + g * s.N + n];
            S[i] = S[i] * dA + b * xv * delta;
            Sabs[i] = Sabs[i] * dA + std::fabs(b * xv * delta);
            y += S[i] * c;
            m += Sabs[i] * std::fabs(c);
          }
          want[(t * s.H + h) * s.P + p] = y + d.D[h] * xv;
          mag[(t * s.H + h) * s.P + p] = m + std::fabs(d.D[h] * xv);
        }
      }
    }
    for (Isa isa : OpIsas()) {
      SCOPED_TRACE(::testing::Message() << isa_name(isa) << " H " << s.H << " P " << s.P << " G "
                                        << s.G << " N " << s.N);
      std::vector<float> state = d.state, y(want.size());
      ASSERT_TRUE(ssm_scan(scan_args(d, 0, T, y.data(), s.H * s.P, state), &two, isa).ok());
      // Per step the carried state picks up ~3 ulp (dA from softplus/exp in float, the multiply
      // and the add); after t steps at most ~3t ulp of the magnitude bound Sabs; the output sum
      // adds N ulp. Factor 2 of margin: 2·(4T + N + 8)·eps·magnitude.
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(y[i], want[i], 2 * (4 * T + s.N + 8) * kEps32 * mag[i] + 1e-30) << "i " << i;
      for (size_t i = 0; i < S.size(); ++i)
        ASSERT_NEAR(state[i], S[i], 2 * (4 * T + 8) * kEps32 * Sabs[i] + 1e-30) << "state " << i;
    }
  }
}

TEST(OpsSsmScan, ChunkingThreadsAndInPlaceAreBitwiseInvariant) {
  std::mt19937 rng(44);
  ThreadContext two(2), three(3), four(4);
  ThreadContext* const chunk_threads[] = {nullptr, &three, &four};  // 3, 4: uneven head splits
  for (const ScanShape& s : kScanShapes) {
    const int T = 26, HP = s.H * s.P;
    const ScanData d = make_scan(T, s.H, s.P, s.G, s.N, rng);
    for (Isa isa : OpIsas()) {
      SCOPED_TRACE(::testing::Message() << isa_name(isa) << " H " << s.H << " N " << s.N);
      const size_t yb = static_cast<size_t>(T) * HP * sizeof(float);
      const size_t sb = d.state.size() * sizeof(float);
      std::vector<float> s_all = d.state, y_all(static_cast<size_t>(T) * HP);
      ASSERT_TRUE(ssm_scan(scan_args(d, 0, T, y_all.data(), HP, s_all), nullptr, isa).ok());
      std::vector<float> s_one = d.state, y_one(y_all.size());
      for (int t = 0; t < T; ++t)
        ASSERT_TRUE(ssm_scan(scan_args(d, t, 1, y_one.data(), HP, s_one), &two, isa).ok());
      EXPECT_EQ(0, std::memcmp(y_all.data(), y_one.data(), yb)) << "one by one";
      EXPECT_EQ(0, std::memcmp(s_all.data(), s_one.data(), sb));
      std::vector<float> s_ch = d.state, y_ch(y_all.size());
      int t0 = 0, i = 0;
      for (int len : {4, 1, 9, 2, 10}) {
        ASSERT_TRUE(
            ssm_scan(scan_args(d, t0, len, y_ch.data(), HP, s_ch), chunk_threads[i++ % 3], isa)
                .ok());
        t0 += len;
      }
      ASSERT_EQ(t0, T);
      EXPECT_EQ(0, std::memcmp(y_all.data(), y_ch.data(), yb)) << "chunks";
      EXPECT_EQ(0, std::memcmp(s_all.data(), s_ch.data(), sb));
      // y written over x (same stride): compare row by row.
      ScanData dx = d;
      std::vector<float> s_ip = d.state;
      SsmScanArgs a = scan_args(dx, 0, T, dx.x.data(), dx.x_stride, s_ip);
      ASSERT_TRUE(ssm_scan(a, &two, isa).ok());
      for (int t = 0; t < T; ++t)
        ASSERT_EQ(0, std::memcmp(&dx.x[t * dx.x_stride], &y_all[static_cast<size_t>(t) * HP],
                                 HP * sizeof(float)))
            << "in place, token " << t;
    }
  }
}

// state_in: same outputs and state as in place, source untouched, T = 0 copies.
TEST(OpsSsmScan, SeparateIncomingStateMatchesInPlace) {
  std::mt19937 rng(47);
  ThreadContext two(2);
  for (const ScanShape& s : kScanShapes) {
    for (int T : {0, 1, 5}) {
      const int HP = s.H * s.P;
      const ScanData d = make_scan(std::max(T, 1), s.H, s.P, s.G, s.N, rng);
      for (Isa isa : OpIsas()) {
        SCOPED_TRACE(::testing::Message()
                     << isa_name(isa) << " H " << s.H << " N " << s.N << " T " << T);
        std::vector<float> s_ip = d.state, y_ip(static_cast<size_t>(std::max(T, 1)) * HP);
        ASSERT_TRUE(ssm_scan(scan_args(d, 0, T, y_ip.data(), HP, s_ip), &two, isa).ok());
        const std::vector<float> src = d.state;
        std::vector<float> dst(d.state.size(), -7.0f), y_sep(y_ip.size());
        SsmScanArgs a = scan_args(d, 0, T, y_sep.data(), HP, dst);
        a.state_in = src.data();
        ASSERT_TRUE(ssm_scan(a, &two, isa).ok());
        if (T > 0) {
          EXPECT_TRUE(same_bits(y_ip, y_sep));
        }
        EXPECT_TRUE(same_bits(s_ip, dst));
        EXPECT_TRUE(same_bits(src, d.state)) << "the incoming state was written";
      }
    }
  }
}

// Per-token states: state_steps[t] holds bit for bit what a run of tokens 0..t leaves.
TEST(OpsSsmScan, PerTokenStatesMatchShorterRuns) {
  std::mt19937 rng(49);
  ThreadContext two(2);
  for (const ScanShape& s : kScanShapes) {
    const int T = 7, HP = s.H * s.P;
    const ScanData d = make_scan(T, s.H, s.P, s.G, s.N, rng);
    for (Isa isa : OpIsas()) {
      for (bool in_place : {false, true}) {
        SCOPED_TRACE(::testing::Message() << isa_name(isa) << " H " << s.H << " N " << s.N
                                          << (in_place ? " in place" : " separate source"));
        std::vector<float> s_plain = d.state, y_plain(static_cast<size_t>(T) * HP);
        ASSERT_TRUE(ssm_scan(scan_args(d, 0, T, y_plain.data(), HP, s_plain), &two, isa).ok());
        std::vector<std::vector<float>> steps(T - 1, std::vector<float>(d.state.size(), -3.0f));
        std::vector<float*> ptrs;
        for (auto& v : steps) ptrs.push_back(v.data());
        const std::vector<float> src = d.state;
        std::vector<float> dst = in_place ? d.state : std::vector<float>(d.state.size(), -7.0f);
        std::vector<float> y(y_plain.size());
        SsmScanArgs a = scan_args(d, 0, T, y.data(), HP, dst);
        if (!in_place) a.state_in = src.data();
        a.state_steps = ptrs.data();
        ASSERT_TRUE(ssm_scan(a, &two, isa).ok());
        EXPECT_TRUE(same_bits(y_plain, y));
        EXPECT_TRUE(same_bits(s_plain, dst));
        for (int t = 0; t + 1 < T; ++t) {
          std::vector<float> s_short = d.state, y_short(y_plain.size());
          ASSERT_TRUE(
              ssm_scan(scan_args(d, 0, t + 1, y_short.data(), HP, s_short), nullptr, isa).ok());
          EXPECT_TRUE(same_bits(s_short, steps[t])) << "state after token " << t;
        }
      }
    }
  }
}

// Short multi-token runs (speculative verification: 2-17 tokens) against the one-token path,
// bitwise: every T from 1 to 17, state sizes that fit in registers (8, 32, 64), one that does not
// (128) and a ragged one (20), full and ragged row blocks (P 64, 13), with and without per-token
// states, y over x, a separate incoming state, no D.
TEST(OpsSsmScan, ShortRunsMatchOneByOneBitwise) {
  std::mt19937 rng(53);
  ThreadContext two(2);
  struct Shape {
    int P, N;
  };
  for (const Shape s :
       {Shape{64, 32}, Shape{13, 32}, Shape{64, 64}, Shape{13, 8}, Shape{64, 128}, Shape{13, 20}}) {
    const int H = 4, G = 2, T_max = 17, HP = H * s.P;
    const ScanData d = make_scan(T_max, H, s.P, G, s.N, rng);
    for (Isa isa : OpIsas()) {
      for (bool with_d : {true, false}) {
        ScanData dd = d;
        if (!with_d) dd.D.clear();
        auto args = [&](int t0, int n, float* y, int64_t y_stride, std::vector<float>& st) {
          SsmScanArgs a = scan_args(dd, t0, n, y, y_stride, st);
          if (!with_d) a.D = nullptr;
          return a;
        };
        // One token at a time: y and the state after every token.
        std::vector<float> s_one = dd.state, y_one(static_cast<size_t>(T_max) * HP);
        std::vector<std::vector<float>> after;
        for (int t = 0; t < T_max; ++t) {
          ASSERT_TRUE(ssm_scan(args(t, 1, y_one.data(), HP, s_one), nullptr, isa).ok());
          after.push_back(s_one);
        }
        for (int T = 1; T <= T_max; ++T) {
          for (int mode = 0; mode < 4; ++mode) {
            const bool steps = mode & 1, over_x = mode & 2;
            SCOPED_TRACE(::testing::Message()
                         << isa_name(isa) << " P " << s.P << " N " << s.N << " T " << T
                         << (with_d ? "" : " no D") << (steps ? " steps" : "")
                         << (over_x ? " y over x" : " separate state"));
            ScanData dx = dd;  // y over x writes dx.x
            std::vector<float> y(static_cast<size_t>(T) * HP, -5.0f);
            const std::vector<float> src = dd.state;
            std::vector<float> st = over_x ? dd.state : std::vector<float>(src.size(), -7.0f);
            std::vector<std::vector<float>> bufs(T - 1, std::vector<float>(src.size(), -3.0f));
            std::vector<float*> ptrs;
            for (auto& b : bufs) ptrs.push_back(b.data());
            SsmScanArgs a = over_x ? scan_args(dx, 0, T, dx.x.data(), dx.x_stride, st)
                                   : args(0, T, y.data(), HP, st);
            if (!with_d) a.D = nullptr;
            if (!over_x) a.state_in = src.data();
            if (steps) a.state_steps = ptrs.data();
            ASSERT_TRUE(ssm_scan(a, &two, isa).ok());
            for (int t = 0; t < T; ++t) {
              const float* got = over_x ? &dx.x[t * dx.x_stride] : &y[static_cast<size_t>(t) * HP];
              ASSERT_EQ(0,
                        std::memcmp(got, &y_one[static_cast<size_t>(t) * HP], HP * sizeof(float)))
                  << "y of token " << t;
            }
            EXPECT_TRUE(same_bits(st, after[T - 1])) << "final state";
            for (int t = 0; steps && t + 1 < T; ++t)
              EXPECT_TRUE(same_bits(bufs[t], after[t])) << "state after token " << t;
            if (!over_x) {
              EXPECT_TRUE(same_bits(src, dd.state)) << "the incoming state was written";
            }
          }
        }
      }
    }
  }
}

TEST(OpsSsmScan, RejectsBadArgs) {
  std::mt19937 rng(45);
  const ScanData d = make_scan(2, 4, 2, 2, 4, rng);
  std::vector<float> state = d.state, y(16, 9.0f);
  SsmScanArgs a = scan_args(d, 0, 2, y.data(), 8, state);
  SsmScanArgs b = a;
  b.n_group = 3;
  EXPECT_EQ(ssm_scan(b, nullptr).code(), ErrorCode::kInvalidArgument);
  b = a;
  b.B_stride = 7;
  EXPECT_EQ(ssm_scan(b, nullptr).code(), ErrorCode::kInvalidArgument);
  b = a;
  b.state_size = 0;
  EXPECT_EQ(ssm_scan(b, nullptr).code(), ErrorCode::kInvalidArgument);
  b = a;
  b.A = nullptr;
  EXPECT_EQ(ssm_scan(b, nullptr).code(), ErrorCode::kInvalidArgument);
  for (float v : y) EXPECT_EQ(v, 9.0f);
  EXPECT_EQ(0, std::memcmp(state.data(), d.state.data(), state.size() * sizeof(float)));
}

}  // namespace
}  // namespace chimera
