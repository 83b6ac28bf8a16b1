// ssm_conv_runs / ssm_scan_runs: several sequences' runs in one call give bit-identical outputs
// and states to one call per run, for every ISA, with and without threads; a bad run is an
// error that writes nothing.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/ssm.h"

namespace chimera {
namespace {

std::vector<Isa> Isas() {
  std::vector<Isa> out{Isa::kScalar};
  if (isa_supported(Isa::kAvx2)) out.push_back(Isa::kAvx2);
  if (isa_supported(Isa::kAvx512)) out.push_back(Isa::kAvx512);  // runs the AVX2 ops
  return out;
}

// Byte equality of two float vectors (memcmp only when non-empty: an empty vector's data() may be
// null, which memcmp must not get).
bool same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

std::vector<float> rnd(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

constexpr int kH = 6, kP = 6, kN = 16, kG = 2, kK = 4;
constexpr int kC = kH * kP + 2 * kG * kN;  // conv channels (x, B, C): 100, a ragged last block

// One sequence's run: its inputs, incoming states and output buffers.
struct RunData {
  int T;
  std::vector<float> x, dt, conv_in, conv_out, ssm_in, ssm_out, xc, y;
};

RunData make_run(int T, std::mt19937& rng) {
  RunData r{T,
            rnd(size_t(T) * kC, rng),
            rnd(size_t(T) * kH, rng, -2.0f, 1.0f),
            rnd(size_t(kC) * (kK - 1), rng),
            std::vector<float>(size_t(kC) * (kK - 1), 7.0f),
            rnd(size_t(kH) * kP * kN, rng),
            std::vector<float>(size_t(kH) * kP * kN, 7.0f),
            std::vector<float>(size_t(T) * kC, 7.0f),
            std::vector<float>(size_t(T) * kH * kP, 7.0f)};
  return r;
}

struct Weights {
  std::vector<float> conv_w, conv_b, A, D, dt_bias;
};

SsmConvArgs conv_args(RunData& r, const Weights& w) {
  SsmConvArgs a;
  a.n_tokens = r.T;
  a.n_channels = kC;
  a.kernel_size = kK;
  a.x = r.x.data();
  a.x_stride = kC;
  a.weight = w.conv_w.data();
  a.bias = w.conv_b.data();
  a.conv_state = r.conv_out.data();
  a.conv_state_in = r.conv_in.data();
  a.out = r.xc.data();
  a.out_stride = kC;
  return a;
}

SsmScanArgs scan_args(RunData& r, const Weights& w) {
  SsmScanArgs a;
  a.n_tokens = r.T;
  a.n_head = kH;
  a.head_dim = kP;
  a.n_group = kG;
  a.state_size = kN;
  a.x = r.xc.data();
  a.x_stride = kC;
  a.dt = r.dt.data();
  a.dt_stride = kH;
  a.dt_bias = w.dt_bias.data();
  a.A = w.A.data();
  // An empty run (T = 0) has no activations: no offset may be applied to its null data().
  float* xc = r.xc.empty() ? nullptr : r.xc.data();
  a.B = xc ? xc + kH * kP : nullptr;
  a.B_stride = kC;
  a.C = xc ? xc + kH * kP + kG * kN : nullptr;
  a.C_stride = kC;
  a.D = w.D.data();
  a.y = r.y.data();
  a.y_stride = kH * kP;
  a.state = r.ssm_out.data();
  a.state_in = r.ssm_in.data();
  return a;
}

TEST(OpsSsmRuns, ManyRunsInOneCallEqualOneCallPerRun) {
  std::mt19937 rng(3);
  Weights w{rnd(size_t(kC) * kK, rng), rnd(kC, rng), rnd(kH, rng, -2.0f, -0.1f), rnd(kH, rng),
            rnd(kH, rng)};
  std::vector<RunData> base;
  for (int T : {1, 5, 1, 0, 3, 1}) base.push_back(make_run(T, rng));
  ThreadContext two(2);
  for (Isa isa : Isas()) {
    for (ThreadContext* th : {static_cast<ThreadContext*>(nullptr), &two}) {
      std::vector<RunData> one = base, many = base;
      for (RunData& r : one) {
        ASSERT_TRUE(ssm_conv(conv_args(r, w), th, isa).ok());
        ASSERT_TRUE(ssm_scan(scan_args(r, w), th, isa).ok());
      }
      std::vector<SsmConvArgs> ca;
      std::vector<SsmScanArgs> sa;
      for (RunData& r : many) {
        ca.push_back(conv_args(r, w));
        sa.push_back(scan_args(r, w));
      }
      ASSERT_TRUE(ssm_conv_runs(ca.data(), static_cast<int32_t>(ca.size()), th, isa).ok());
      ASSERT_TRUE(ssm_scan_runs(sa.data(), static_cast<int32_t>(sa.size()), th, isa).ok());
      for (size_t i = 0; i < base.size(); ++i) {
        EXPECT_TRUE(same(one[i].xc, many[i].xc)) << "conv out, run " << i;
        EXPECT_TRUE(same(one[i].conv_out, many[i].conv_out)) << "conv state, run " << i;
        EXPECT_TRUE(same(one[i].y, many[i].y)) << "y, run " << i;
        EXPECT_TRUE(same(one[i].ssm_out, many[i].ssm_out)) << "ssm state, run " << i;
      }
    }
  }
}

// A caller dealing channels out itself (matmul_parts' hook) in chunks of 16 from 0, in any order,
// gets the outputs and states of ssm_conv_runs.
TEST(OpsSsmRuns, ChannelChunksEqualOneCall) {
  std::mt19937 rng(5);
  Weights w{rnd(size_t(kC) * kK, rng), rnd(kC, rng), rnd(kH, rng, -2.0f, -0.1f), rnd(kH, rng),
            rnd(kH, rng)};
  std::vector<RunData> base;
  for (int T : {1, 4, 0, 2}) base.push_back(make_run(T, rng));
  for (Isa isa : Isas()) {
    std::vector<RunData> one = base, chunks = base;
    std::vector<SsmConvArgs> ca, cb;
    for (RunData& r : one) ca.push_back(conv_args(r, w));
    for (RunData& r : chunks) cb.push_back(conv_args(r, w));
    const int32_t n = static_cast<int32_t>(ca.size());
    ASSERT_TRUE(ssm_conv_runs(ca.data(), n, nullptr, isa).ok());
    ASSERT_TRUE(ssm_conv_check_runs(cb.data(), n).ok());
    for (int32_t c0 = (kC - 1) / 16 * 16; c0 >= 0; c0 -= 16)  // last chunk first
      ssm_conv_channels(cb.data(), n, c0, c0 + 16, isa);
    for (size_t i = 0; i < base.size(); ++i) {
      EXPECT_TRUE(same(one[i].xc, chunks[i].xc)) << isa_name(isa) << " conv out, run " << i;
      EXPECT_TRUE(same(one[i].conv_out, chunks[i].conv_out))
          << isa_name(isa) << " conv state, run " << i;
    }
  }
  std::vector<SsmConvArgs> bad{conv_args(base[0], w)};
  bad[0].kernel_size = 0;
  EXPECT_FALSE(ssm_conv_check_runs(bad.data(), 1).ok());
}

TEST(OpsSsmRuns, ABadRunIsAnErrorAndWritesNothing) {
  std::mt19937 rng(4);
  Weights w{rnd(size_t(kC) * kK, rng), rnd(kC, rng), rnd(kH, rng, -2.0f, -0.1f), rnd(kH, rng),
            rnd(kH, rng)};
  std::vector<RunData> runs{make_run(2, rng), make_run(3, rng)};
  std::vector<SsmConvArgs> ca{conv_args(runs[0], w), conv_args(runs[1], w)};
  std::vector<SsmScanArgs> sa{scan_args(runs[0], w), scan_args(runs[1], w)};
  ca[1].kernel_size = 0;
  sa[1].n_group = 4;  // does not divide n_head 6
  const Status c = ssm_conv_runs(ca.data(), 2, nullptr);
  const Status s = ssm_scan_runs(sa.data(), 2, nullptr);
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.message().find("run 1"), std::string::npos) << c.message();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("run 1"), std::string::npos) << s.message();
  EXPECT_EQ(runs[0].xc, std::vector<float>(runs[0].xc.size(), 7.0f));
  EXPECT_EQ(runs[0].y, std::vector<float>(runs[0].y.size(), 7.0f));
  EXPECT_FALSE(ssm_conv_runs(nullptr, 1, nullptr).ok());
  EXPECT_TRUE(ssm_scan_runs(nullptr, 0, nullptr).ok());
}

}  // namespace
}  // namespace chimera
