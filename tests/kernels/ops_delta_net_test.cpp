// Gated DeltaNet recurrence: accuracy against a float64 reference written here from the formulas
// (spec 6.5 / kernels/delta_net.h), both head maps, and the exactness promise for recurrent
// layers: T tokens at once == one by one carrying state == any chunking, with 1 or 2 threads,
// in place or from a separate incoming state, bitwise for outputs and states; for each ISA.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/delta_net.h"

namespace chimera {
namespace {

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

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Problem {
  int T, Hk, Hv, S;
  DeltaNetHeadMap map;
  int64_t qkv_stride, ab_stride, z_stride;
  std::vector<float> qkv, alpha, beta, z, dt_bias, A, norm_w, state;
};

Problem make_problem(int T, int Hk, int Hv, int S, DeltaNetHeadMap map, std::mt19937& rng) {
  Problem p{T,  Hk, Hv, S,  map, 2 * Hk * S + Hv * S + 3, Hv + 1, Hv * S + 2, {}, {}, {},
            {}, {}, {}, {}, {}};
  p.qkv = rand_vec(size_t(T) * p.qkv_stride, -1.5f, 1.5f, rng);
  p.alpha = rand_vec(size_t(T) * p.ab_stride, -3, 3, rng);
  p.beta = rand_vec(size_t(T) * p.ab_stride, -3, 3, rng);
  p.z = rand_vec(size_t(T) * p.z_stride, -2, 2, rng);
  p.dt_bias = rand_vec(Hv, -1, 1, rng);
  p.A = rand_vec(Hv, -4, -0.2f, rng);
  p.norm_w = rand_vec(S, 0.5f, 1.5f, rng);
  p.state = rand_vec(size_t(Hv) * S * S, -0.5f, 0.5f, rng);
  return p;
}

// Tokens [t0, t0+n) of p against `state`; outputs rows [t0, t0+n) of out (stride Hv*S).
Status run(const Problem& p, int t0, int n, std::vector<float>& state, std::vector<float>& out,
           ThreadContext* threads, Isa isa, const float* state_in = nullptr,
           float* const* state_steps = nullptr) {
  DeltaNetArgs a;
  a.n_tokens = n;
  a.n_k_heads = p.Hk;
  a.n_v_heads = p.Hv;
  a.head_dim = p.S;
  a.head_map = p.map;
  const float* row = p.qkv.data() + int64_t(t0) * p.qkv_stride;
  a.q = row;
  a.k = row + p.Hk * p.S;
  a.v = row + 2 * p.Hk * p.S;
  a.qkv_stride = p.qkv_stride;
  a.alpha = p.alpha.data() + int64_t(t0) * p.ab_stride;
  a.beta = p.beta.data() + int64_t(t0) * p.ab_stride;
  a.ab_stride = p.ab_stride;
  a.dt_bias = p.dt_bias.data();
  a.A = p.A.data();
  a.l2_eps = 1e-6f;
  a.z = p.z.data() + int64_t(t0) * p.z_stride;
  a.z_stride = p.z_stride;
  a.norm_weight = p.norm_w.data();
  a.norm_eps = 1e-6f;
  a.out = out.data() + int64_t(t0) * p.Hv * p.S;
  a.out_stride = p.Hv * p.S;
  a.state = state.data();
  a.state_in = state_in;
  a.state_steps = state_steps;
  return delta_net(a, threads, isa);
}

// float64 reference, straight from the formulas, state M[h][i][j].
void reference(const Problem& p, std::vector<double>& M, std::vector<double>& out) {
  const int S = p.S, r = p.Hv / p.Hk;
  out.assign(size_t(p.T) * p.Hv * S, 0.0);
  for (int t = 0; t < p.T; ++t) {
    const float* row = p.qkv.data() + int64_t(t) * p.qkv_stride;
    for (int h = 0; h < p.Hv; ++h) {
      const int kh = p.map == DeltaNetHeadMap::kTiled ? h % p.Hk : h / r;
      std::vector<double> q(S), k(S), o(S);
      double qq = 0, kk = 0;
      for (int i = 0; i < S; ++i) {
        q[i] = row[kh * S + i];
        k[i] = row[p.Hk * S + kh * S + i];
        qq += q[i] * q[i];
        kk += k[i] * k[i];
      }
      for (int i = 0; i < S; ++i) {
        q[i] /= std::max(std::sqrt(qq), 1e-6) * std::sqrt(double(S));
        k[i] /= std::max(std::sqrt(kk), 1e-6);
      }
      const double x = double(p.alpha[t * p.ab_stride + h]) + p.dt_bias[h];
      const double decay = std::exp(std::log1p(std::exp(x)) * p.A[h]);
      const double b = 1.0 / (1.0 + std::exp(-double(p.beta[t * p.ab_stride + h])));
      double* m = M.data() + size_t(h) * S * S;
      for (double* e = m; e < m + S * S; ++e) *e *= decay;
      for (int j = 0; j < S; ++j) {
        double kv = 0;
        for (int i = 0; i < S; ++i) kv += m[i * S + j] * k[i];
        const double delta = b * (row[2 * p.Hk * S + h * S + j] - kv);
        for (int i = 0; i < S; ++i) m[i * S + j] += k[i] * delta;
      }
      double ss = 0;
      for (int j = 0; j < S; ++j) {
        o[j] = 0;
        for (int i = 0; i < S; ++i) o[j] += m[i * S + j] * q[i];
        ss += o[j] * o[j];
      }
      const double scale = 1.0 / std::sqrt(ss / S + 1e-6);
      for (int j = 0; j < S; ++j) {
        const double zz = p.z[t * p.z_stride + h * S + j];
        out[(size_t(t) * p.Hv + h) * S + j] = o[j] * scale * p.norm_w[j] * zz / (1 + std::exp(-zz));
      }
    }
  }
}

TEST(OpsDeltaNet, MatchesFloat64Reference) {
  std::mt19937 rng(7);
  ThreadContext two(2);
  struct Shape {
    int Hk, Hv, S;
  };
  for (const Shape sh :
       {Shape{1, 1, 8}, Shape{2, 4, 16}, Shape{2, 6, 13}, Shape{1, 3, 32}, Shape{2, 2, 44}}) {
    for (DeltaNetHeadMap map : {DeltaNetHeadMap::kGrouped, DeltaNetHeadMap::kTiled}) {
      const Problem p = make_problem(9, sh.Hk, sh.Hv, sh.S, map, rng);
      std::vector<double> M(p.state.begin(), p.state.end()), ref;
      reference(p, M, ref);
      for (Isa isa : OpIsas()) {
        SCOPED_TRACE(::testing::Message()
                     << "Hk " << sh.Hk << " Hv " << sh.Hv << " S " << sh.S << " tiled "
                     << (map == DeltaNetHeadMap::kTiled) << " isa " << isa_name(isa));
        std::vector<float> state = p.state, out(size_t(p.T) * p.Hv * p.S);
        ASSERT_TRUE(run(p, 0, p.T, state, out, &two, isa).ok());
        double err = 0, norm = 0;
        for (size_t i = 0; i < out.size(); ++i) {
          err = std::max(err, std::abs(out[i] - ref[i]));
          norm = std::max(norm, std::abs(ref[i]));
        }
        EXPECT_LT(err, 2e-5 * std::max(1.0, norm));
        double serr = 0;
        for (size_t i = 0; i < state.size(); ++i) serr = std::max(serr, std::abs(state[i] - M[i]));
        EXPECT_LT(serr, 2e-5);
      }
    }
  }
}

TEST(OpsDeltaNet, HeadMapsDiffer) {
  // With Hv > Hk the two maps must read different key heads (else a mix-up would go unseen).
  std::mt19937 rng(8);
  Problem p = make_problem(3, 2, 4, 8, DeltaNetHeadMap::kGrouped, rng);
  std::vector<float> s1 = p.state, s2 = p.state, o1(size_t(3) * 4 * 8), o2(o1.size());
  ASSERT_TRUE(run(p, 0, 3, s1, o1, nullptr, Isa::kScalar).ok());
  p.map = DeltaNetHeadMap::kTiled;
  ASSERT_TRUE(run(p, 0, 3, s2, o2, nullptr, Isa::kScalar).ok());
  EXPECT_FALSE(same_bits(o1, o2));
}

TEST(OpsDeltaNet, ChunkingThreadsAndIncomingStateAreBitwiseInvariant) {
  std::mt19937 rng(9);
  ThreadContext two(2);
  // S = 40: one four-block group and one single block per row in the AVX2 path
  const Problem p = make_problem(13, 2, 4, 40, DeltaNetHeadMap::kTiled, rng);
  for (Isa isa : OpIsas()) {
    SCOPED_TRACE(isa_name(isa));
    std::vector<float> s_all = p.state, o_all(size_t(p.T) * p.Hv * p.S);
    ASSERT_TRUE(run(p, 0, p.T, s_all, o_all, nullptr, isa).ok());
    // one by one, two threads
    std::vector<float> s1 = p.state, o1(o_all.size());
    for (int t = 0; t < p.T; ++t) ASSERT_TRUE(run(p, t, 1, s1, o1, &two, isa).ok());
    EXPECT_TRUE(same_bits(s_all, s1));
    EXPECT_TRUE(same_bits(o_all, o1));
    // uneven chunks (0-token chunk included), each reading the previous state from a separate
    // buffer and writing a fresh one
    std::vector<float> cur = p.state, oc(o_all.size());
    int t = 0;
    for (int n : {0, 4, 1, 0, 6, 2}) {
      std::vector<float> next(cur.size(), -7.0f);
      ASSERT_TRUE(run(p, t, n, next, oc, &two, isa, cur.data()).ok());
      cur = next;
      t += n;
    }
    ASSERT_EQ(t, p.T);
    EXPECT_TRUE(same_bits(s_all, cur));
    EXPECT_TRUE(same_bits(o_all, oc));
  }
}

TEST(OpsDeltaNet, PerTokenStatesEqualShorterRuns) {
  // state_steps[t] must hold exactly what a run of tokens 0..t alone leaves in `state`.
  std::mt19937 rng(11);
  ThreadContext two(2);
  const Problem p = make_problem(6, 2, 4, 16, DeltaNetHeadMap::kGrouped, rng);
  const size_t n = p.state.size();
  for (Isa isa : OpIsas()) {
    SCOPED_TRACE(isa_name(isa));
    std::vector<std::vector<float>> steps(p.T - 1, std::vector<float>(n, -3.0f));
    std::vector<float*> ptrs;
    for (auto& s : steps) ptrs.push_back(s.data());
    std::vector<float> last(n), out(size_t(p.T) * p.Hv * p.S);
    ASSERT_TRUE(run(p, 0, p.T, last, out, &two, isa, p.state.data(), ptrs.data()).ok());
    for (int t = 0; t < p.T; ++t) {
      std::vector<float> s = p.state, o(out.size());
      ASSERT_TRUE(run(p, 0, t + 1, s, o, nullptr, isa).ok());
      EXPECT_TRUE(same_bits(s, t + 1 < p.T ? steps[t] : last)) << "after token " << t;
      EXPECT_EQ(0, std::memcmp(o.data(), out.data(), size_t(t + 1) * p.Hv * p.S * 4));
    }
  }
}

TEST(OpsDeltaNet, RejectsBadArgs) {
  std::mt19937 rng(10);
  const Problem p = make_problem(2, 2, 4, 8, DeltaNetHeadMap::kGrouped, rng);
  std::vector<float> state = p.state, out(size_t(2) * 4 * 8);
  Problem bad = p;
  bad.Hv = 3;  // not a multiple of Hk
  EXPECT_FALSE(run(bad, 0, 2, state, out, nullptr, Isa::kScalar).ok());
  bad = p;
  bad.z_stride = 4;  // below Hv*S
  EXPECT_FALSE(run(bad, 0, 1, state, out, nullptr, Isa::kScalar).ok());
  EXPECT_FALSE(run(p, 0, -1, state, out, nullptr, Isa::kScalar).ok());
  DeltaNetArgs a;
  a.n_tokens = 1;
  a.n_k_heads = a.n_v_heads = 1;
  a.head_dim = 4;
  EXPECT_FALSE(delta_net(a, nullptr).ok());  // null pointers
  EXPECT_TRUE(same_bits(state, p.state));    // nothing touched by the refused calls
}

}  // namespace
}  // namespace chimera
