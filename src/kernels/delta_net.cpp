#include "kernels/delta_net.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/norm.h"

namespace chimera {
namespace {

Status check(const DeltaNetArgs& a) {
  if (a.n_tokens < 0) return Error(ErrorCode::kInvalidArgument, "delta_net: n_tokens < 0");
  if (a.n_k_heads < 1 || a.n_v_heads < 1 || a.head_dim < 1)
    return Error(ErrorCode::kInvalidArgument, "delta_net: Hk ", a.n_k_heads, ", Hv ", a.n_v_heads,
                 ", S ", a.head_dim, " must all be >= 1");
  if (a.n_v_heads % a.n_k_heads != 0)
    return Error(ErrorCode::kInvalidArgument, "delta_net: value heads ", a.n_v_heads,
                 " not a multiple of key heads ", a.n_k_heads);
  if (!a.A || !a.state) return Error(ErrorCode::kInvalidArgument, "delta_net: null A or state");
  if (!(a.l2_eps >= 0) || !(a.norm_eps >= 0))
    return Error(ErrorCode::kInvalidArgument, "delta_net: negative or NaN eps");
  if (a.n_tokens > 0) {
    if (!a.q || !a.k || !a.v || !a.alpha || !a.beta || !a.z || !a.out)
      return Error(ErrorCode::kInvalidArgument, "delta_net: null q, k, v, alpha, beta, z or out");
    const int64_t vs = int64_t(a.n_v_heads) * a.head_dim;
    if (a.qkv_stride < int64_t(a.n_k_heads) * a.head_dim || a.qkv_stride < vs ||
        a.ab_stride < a.n_v_heads || a.z_stride < vs || a.out_stride < vs)
      return Error(ErrorCode::kInvalidArgument, "delta_net: a stride is below its row width (qkv ",
                   a.qkv_stride, ", alpha/beta ", a.ab_stride, ", z ", a.z_stride, ", out ",
                   a.out_stride, "; Hv*S = ", vs, ")");
  }
  return Status::Ok();
}

// 1 / max(||x||, eps) with the sum of squares in double (as RMSNorm).
float inv_l2(const float* x, int64_t n, float eps) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return 1.0f / std::max(std::sqrt(static_cast<float>(s)), eps);
}

}  // namespace

namespace ops_internal {

void delta_net_token_inputs(const DeltaNetArgs& a, int64_t t, int32_t h, float* q_out, float* k_out,
                            float* decay, float* beta) {
  const int64_t S = a.head_dim;
  const int32_t kh =
      a.head_map == DeltaNetHeadMap::kTiled ? h % a.n_k_heads : h / (a.n_v_heads / a.n_k_heads);
  const float* q = a.q + t * a.qkv_stride + kh * S;
  const float* k = a.k + t * a.qkv_stride + kh * S;
  const float q_scale = inv_l2(q, S, a.l2_eps) * (1.0f / std::sqrt(static_cast<float>(S)));
  const float k_scale = inv_l2(k, S, a.l2_eps);
  for (int64_t i = 0; i < S; ++i) {
    q_out[i] = q[i] * q_scale;
    k_out[i] = k[i] * k_scale;
  }
  const float x = a.alpha[t * a.ab_stride + h] + (a.dt_bias ? a.dt_bias[h] : 0.0f);
  *decay = std::exp(softplus(x) * a.A[h]);
  *beta = 1.0f / (1.0f + std::exp(-a.beta[t * a.ab_stride + h]));
}

void delta_net_update_scalar(const float* prev, float* cur, int64_t S, const float* q,
                             const float* k, const float* v, float decay, float beta, float* o) {
  for (int64_t j = 0; j < S; ++j) {
    float kv = 0.0f;
    for (int64_t i = 0; i < S; ++i) {
      const float s = prev[i * S + j] * decay;
      cur[i * S + j] = s;
      kv += k[i] * s;
    }
    const float delta = beta * (v[j] - kv);
    float acc = 0.0f;
    for (int64_t i = 0; i < S; ++i) {
      const float s = cur[i * S + j] + k[i] * delta;
      cur[i * S + j] = s;
      acc += q[i] * s;
    }
    o[j] = acc;
  }
}

}  // namespace ops_internal

Status delta_net(const DeltaNetArgs& args, ThreadContext* threads, Isa isa) {
  CHIMERA_RETURN_IF_ERROR(check(args));
  const int64_t S = args.head_dim;
  auto run_heads = [&](int64_t b, int64_t e) {
    std::vector<float> scratch(3 * S);
    float* q = scratch.data();
    float* k = q + S;
    float* o = k + S;
    for (int64_t h = b; h < e; ++h) {
      float* last = args.state + h * S * S;
      const float* in = args.state_in ? args.state_in + h * S * S : last;
      if (args.n_tokens == 0 && in != last) std::copy(in, in + S * S, last);
      const float* prev = in;  // token 0 reads the incoming state
      for (int64_t t = 0; t < args.n_tokens; ++t) {
        // The state after token t: its step buffer, or `state` for the last token.
        float* cur =
            args.state_steps && t + 1 < args.n_tokens ? args.state_steps[t] + h * S * S : last;
        float decay, beta;
        ops_internal::delta_net_token_inputs(args, t, static_cast<int32_t>(h), q, k, &decay, &beta);
        const float* v = args.v + t * args.qkv_stride + h * S;
        if (ops_internal::use_avx2(isa)) {
          ops_internal::delta_net_update_avx2(prev, cur, S, q, k, v, decay, beta, o);
        } else {
          ops_internal::delta_net_update_scalar(prev, cur, S, q, k, v, decay, beta, o);
        }
        float* y = args.out + t * args.out_stride + h * S;
        rms_norm_row(o, args.norm_weight, y, S, args.norm_eps, isa);
        const float* z = args.z + t * args.z_stride + h * S;
        silu(z, o, S, isa);
        for (int64_t j = 0; j < S; ++j) y[j] *= o[j];
        prev = cur;
      }
    }
  };
  if (threads) {
    threads->parallel_for(args.n_v_heads, 1, run_heads);
  } else {
    run_heads(0, args.n_v_heads);
  }
  return Status::Ok();
}

}  // namespace chimera
