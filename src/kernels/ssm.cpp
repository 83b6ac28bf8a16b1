#include "kernels/ssm.h"

#include <algorithm>
#include <cmath>

namespace chimera {
namespace {

Status check_conv(const SsmConvArgs& a) {
  if (a.n_tokens < 0) return Error(ErrorCode::kInvalidArgument, "ssm_conv: n_tokens < 0");
  if (a.n_channels < 1)
    return Error(ErrorCode::kInvalidArgument, "ssm_conv: n_channels ", a.n_channels, " < 1");
  if (a.kernel_size < 1 || a.kernel_size > kSsmMaxConvKernel)
    return Error(ErrorCode::kUnsupported, "ssm_conv: kernel size ", a.kernel_size, " outside [1, ",
                 kSsmMaxConvKernel, "]");
  if (!a.weight || (a.kernel_size > 1 && !a.conv_state))
    return Error(ErrorCode::kInvalidArgument, "ssm_conv: null weight or conv state");
  if (a.n_tokens > 0) {
    if (!a.x || !a.out) return Error(ErrorCode::kInvalidArgument, "ssm_conv: null x or out");
    if (a.x_stride < a.n_channels || a.out_stride < a.n_channels)
      return Error(ErrorCode::kInvalidArgument, "ssm_conv: x/out stride (", a.x_stride, ", ",
                   a.out_stride, ") < n_channels ", a.n_channels);
  }
  return Status::Ok();
}

Status check_scan(const SsmScanArgs& a) {
  if (a.n_tokens < 0) return Error(ErrorCode::kInvalidArgument, "ssm_scan: n_tokens < 0");
  if (a.n_head < 1 || a.head_dim < 1 || a.state_size < 1 || a.n_group < 1)
    return Error(ErrorCode::kInvalidArgument, "ssm_scan: H ", a.n_head, ", P ", a.head_dim, ", N ",
                 a.state_size, ", G ", a.n_group, " must all be >= 1");
  if (a.n_head % a.n_group != 0)
    return Error(ErrorCode::kInvalidArgument, "ssm_scan: n_head ", a.n_head,
                 " is not a multiple of n_group ", a.n_group);
  if (!a.A || !a.state) return Error(ErrorCode::kInvalidArgument, "ssm_scan: null A or state");
  if (a.n_tokens > 0) {
    if (!a.x || !a.dt || !a.B || !a.C || !a.y)
      return Error(ErrorCode::kInvalidArgument, "ssm_scan: null x, dt, B, C or y");
    const int64_t hp = static_cast<int64_t>(a.n_head) * a.head_dim;
    const int64_t gn = static_cast<int64_t>(a.n_group) * a.state_size;
    if (a.x_stride < hp || a.y_stride < hp || a.dt_stride < a.n_head || a.B_stride < gn ||
        a.C_stride < gn)
      return Error(ErrorCode::kInvalidArgument, "ssm_scan: a stride is below its row width (x ",
                   a.x_stride, ", y ", a.y_stride, " vs H*P ", hp, "; dt ", a.dt_stride, " vs H ",
                   a.n_head, "; B ", a.B_stride, ", C ", a.C_stride, " vs G*N ", gn, ")");
    if (a.y == a.x && a.y_stride != a.x_stride)
      return Error(ErrorCode::kInvalidArgument, "ssm_scan: y aliases x with another stride");
  }
  return Status::Ok();
}

void conv_channel_scalar(const SsmConvArgs& a, int32_t c) {
  const int32_t K = a.kernel_size;
  const float* w = a.weight + static_cast<int64_t>(c) * K;
  float* st = a.conv_state + static_cast<int64_t>(c) * (K - 1);
  const float* in = a.conv_state_in ? a.conv_state_in + static_cast<int64_t>(c) * (K - 1) : st;
  // X(i): i < K-1 from the incoming state, else token i-(K-1).
  auto X = [&](int64_t i) { return i < K - 1 ? in[i] : a.x[(i - (K - 1)) * a.x_stride + c]; };
  const float b = a.bias ? a.bias[c] : 0.0f;
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    float sum = 0.0f;
    for (int32_t k = 0; k < K; ++k) sum += w[k] * X(t + k);
    a.out[t * a.out_stride + c] = silu_scalar(sum + b);
    if (a.conv_state_steps && t + 1 < a.n_tokens) {  // the state after token t
      float* step = a.conv_state_steps[t] + static_cast<int64_t>(c) * (K - 1);
      for (int32_t i = 0; i < K - 1; ++i) step[i] = X(t + 1 + i);
    }
  }
  // New state = X(T .. T+K-2); X(T+i) with T+i < K-1 reads in[T+i], not yet overwritten when
  // in == st (i ascending, T+i > i).
  for (int32_t i = 0; i < K - 1; ++i) st[i] = X(a.n_tokens + i);
}

void scan_head_scalar(const SsmScanArgs& a, int32_t h) {
  const int64_t P = a.head_dim, N = a.state_size;
  const int32_t g = h / (a.n_head / a.n_group);
  float* S_last = a.state + static_cast<int64_t>(h) * P * N;
  const float* S_in = a.state_in ? a.state_in + static_cast<int64_t>(h) * P * N : S_last;
  if (a.n_tokens == 0 && S_in != S_last) std::copy(S_in, S_in + P * N, S_last);
  const float* prev = S_in;  // token 0 reads the incoming state
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    // Where the state after token t goes: its step buffer, or `state` for the last token.
    float* S = a.state_steps && t + 1 < a.n_tokens
                   ? a.state_steps[t] + static_cast<int64_t>(h) * P * N
                   : S_last;
    const float delta = softplus(a.dt[t * a.dt_stride + h] + (a.dt_bias ? a.dt_bias[h] : 0.0f));
    const float dA = std::exp(delta * a.A[h]);
    const float* B = a.B + t * a.B_stride + g * N;
    const float* C = a.C + t * a.C_stride + g * N;
    const float* x = a.x + t * a.x_stride + h * P;
    float* y = a.y + t * a.y_stride + h * P;
    for (int64_t p = 0; p < P; ++p) {
      const float xv = x[p];
      const float x_dt = xv * delta;
      float* s = S + p * N;
      const float* s_prev = prev + p * N;
      float sum = 0.0f;
      for (int64_t n = 0; n < N; ++n) {
        s[n] = s_prev[n] * dA + B[n] * x_dt;
        sum += s[n] * C[n];
      }
      y[p] = a.D ? sum + a.D[h] * xv : sum;
    }
    prev = S;
  }
}

}  // namespace

Status ssm_conv(const SsmConvArgs& args, ThreadContext* threads, Isa isa) {
  CHIMERA_RETURN_IF_ERROR(check_conv(args));
  const int64_t n_blocks = (args.n_channels + 7) / 8;
  // Work is dealt in blocks of 8 channels so that a channel always lands in the same vector lane.
  auto run_blocks = [&](int64_t b, int64_t e) {
    const int32_t c0 = static_cast<int32_t>(b * 8);
    const int32_t c1 = static_cast<int32_t>(std::min<int64_t>(e * 8, args.n_channels));
    if (ops_internal::use_avx2(isa)) {
      ops_internal::ssm_conv_avx2(args, c0, c1);
    } else {
      for (int32_t c = c0; c < c1; ++c) conv_channel_scalar(args, c);
    }
  };
  if (threads) {
    threads->parallel_for(n_blocks, 1, run_blocks);
  } else {
    run_blocks(0, n_blocks);
  }
  return Status::Ok();
}

Status ssm_scan(const SsmScanArgs& args, ThreadContext* threads, Isa isa) {
  CHIMERA_RETURN_IF_ERROR(check_scan(args));
  auto run_heads = [&](int64_t b, int64_t e) {
    for (int64_t h = b; h < e; ++h) {
      if (ops_internal::use_avx2(isa)) {
        ops_internal::ssm_scan_head_avx2(args, static_cast<int32_t>(h));
      } else {
        scan_head_scalar(args, static_cast<int32_t>(h));
      }
    }
  };
  if (threads) {
    threads->parallel_for(args.n_head, 1, run_heads);
  } else {
    run_heads(0, args.n_head);
  }
  return Status::Ok();
}

}  // namespace chimera
