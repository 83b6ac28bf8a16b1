#include "kernels/ssm.h"

#include <algorithm>
#include <cmath>
#include <vector>

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
    a.out[t * a.out_stride + c] = a.silu ? silu_scalar(sum + b) : sum + b;
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
  return ssm_conv_runs(&args, 1, threads, isa);
}

Status ssm_scan(const SsmScanArgs& args, ThreadContext* threads, Isa isa) {
  return ssm_scan_runs(&args, 1, threads, isa);
}

Status ssm_conv_check_runs(const SsmConvArgs* runs, int32_t n_runs) {
  if (n_runs < 0 || (n_runs > 0 && !runs))
    return Error(ErrorCode::kInvalidArgument, "ssm_conv: ", n_runs, " runs at ", runs);
  for (int32_t r = 0; r < n_runs; ++r) {
    Status st = check_conv(runs[r]);
    if (!st.ok()) return Error(st.code(), "run ", r, ": ", st.message());
  }
  return Status::Ok();
}

void ssm_conv_channels(const SsmConvArgs* runs, int32_t n_runs, int32_t c_begin, int32_t c_end,
                       Isa isa) {
  for (int32_t r = 0; r < n_runs; ++r) {
    const SsmConvArgs& a = runs[r];
    const int32_t c1 = std::min(c_end, a.n_channels);
    if (c_begin >= c1) continue;
    if (ops_internal::use_avx2(isa)) {
      ops_internal::ssm_conv_avx2(a, c_begin, c1);
    } else {
      for (int32_t c = c_begin; c < c1; ++c) conv_channel_scalar(a, c);
    }
  }
}

Status ssm_conv_runs(const SsmConvArgs* runs, int32_t n_runs, ThreadContext* threads, Isa isa) {
  CHIMERA_RETURN_IF_ERROR(ssm_conv_check_runs(runs, n_runs));
  // Work is dealt in blocks of 8 channels so that a channel always lands in the same vector lane;
  // item i is block i % n_blocks[r] of run r, items of run r following those of run r - 1.
  std::vector<int64_t> first(static_cast<size_t>(n_runs) + 1, 0);
  for (int32_t r = 0; r < n_runs; ++r) first[r + 1] = first[r] + (runs[r].n_channels + 7) / 8;
  auto run_items = [&](int64_t b, int64_t e) {
    int32_t r =
        static_cast<int32_t>(std::upper_bound(first.begin(), first.end(), b) - first.begin()) - 1;
    for (; b < e; ++r) {
      const SsmConvArgs& a = runs[r];
      const int64_t be = std::min(e, first[r + 1]);
      const int32_t c0 = static_cast<int32_t>((b - first[r]) * 8);
      const int32_t c1 = static_cast<int32_t>(std::min<int64_t>((be - first[r]) * 8, a.n_channels));
      if (ops_internal::use_avx2(isa)) {
        ops_internal::ssm_conv_avx2(a, c0, c1);
      } else {
        for (int32_t c = c0; c < c1; ++c) conv_channel_scalar(a, c);
      }
      b = be;
    }
  };
  if (threads) {
    threads->parallel_for(first.back(), 1, run_items);
  } else {
    run_items(0, first.back());
  }
  return Status::Ok();
}

Status ssm_scan_runs(const SsmScanArgs* runs, int32_t n_runs, ThreadContext* threads, Isa isa) {
  if (n_runs < 0 || (n_runs > 0 && !runs))
    return Error(ErrorCode::kInvalidArgument, "ssm_scan: ", n_runs, " runs at ", runs);
  for (int32_t r = 0; r < n_runs; ++r) {
    Status st = check_scan(runs[r]);
    if (!st.ok()) return Error(st.code(), "run ", r, ": ", st.message());
  }
  std::vector<int64_t> first(static_cast<size_t>(n_runs) + 1, 0);
  for (int32_t r = 0; r < n_runs; ++r) first[r + 1] = first[r] + runs[r].n_head;
  auto run_items = [&](int64_t b, int64_t e) {
    int32_t r =
        static_cast<int32_t>(std::upper_bound(first.begin(), first.end(), b) - first.begin()) - 1;
    for (int64_t i = b; i < e; ++i) {
      while (i >= first[r + 1]) ++r;
      const int32_t h = static_cast<int32_t>(i - first[r]);
      if (ops_internal::use_avx2(isa)) {
        ops_internal::ssm_scan_head_avx2(runs[r], h);
      } else {
        scan_head_scalar(runs[r], h);
      }
    }
  };
  if (threads) {
    threads->parallel_for_balanced(first.back(), 1, run_items);
  } else {
    run_items(0, first.back());
  }
  return Status::Ok();
}

}  // namespace chimera
