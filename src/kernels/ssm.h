// Mamba2 kernels for ONE sequence's run of T tokens (spec 3.3-3.4): the causal depthwise conv with
// carried state, and the selective scan with carried state. Ragged batches call them once per
// sequence run. Tokens are processed strictly in order with the same arithmetic for T = 1
// (decode) and T = 512 (prefill), so running T tokens at once, one by one, or in any chunks
// gives bit-identical outputs and states. Threads split channels (conv) or heads (scan), never
// the time axis.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "core/threads.h"
#include "kernels/activation.h"

namespace chimera {

constexpr int32_t kSsmMaxConvKernel = 16;

// Causal depthwise conv, bias, SiLU (spec 3.4 steps 2-3; without the SiLU for LFM2's short conv).
//   X_c = [conv_state[c][0..K-2], x_0[c], ..., x_{T-1}[c]]
//   out_t[c] = silu(Σ_{k<K} weight[c][k] * X_c[t+k] + bias[c])   (sum in k order)
//   conv_state[c] <- last K-1 entries of X_c
struct SsmConvArgs {
  int32_t n_tokens = 0;      // T >= 0
  int32_t n_channels = 0;    // C (d_in + 2*G*N for Mamba2)
  int32_t kernel_size = 0;   // K, 1..kSsmMaxConvKernel
  const float* x = nullptr;  // token t's C raw inputs at x + t*x_stride
  int64_t x_stride = 0;
  const float* weight = nullptr;  // [C][K] (ggml {K, C}); tap K-1 multiplies the newest input
  const float* bias = nullptr;    // [C] or null
  float* conv_state = nullptr;    // [C][K-1] (ggml {K-1, C}): per channel the K-1 last raw
                                  // inputs, oldest first; updated in place
  float* out = nullptr;           // token t's C outputs at out + t*out_stride; must not overlap x
  int64_t out_stride = 0;
  // Optional: the incoming state, when it lives elsewhere (a snapshot-safe copy-on-write slot):
  // read from here, the result written to conv_state, so no copy is made first. Same layout;
  // either conv_state itself or not overlapping it.
  const float* conv_state_in = nullptr;
  // Optional (speculative verification): n_tokens - 1 pointers; the state after token t < T-1 is
  // written to conv_state_steps[t] (same layout), the state after the last token to conv_state as
  // always. Each holds exactly what a run of tokens 0..t alone would leave in conv_state. None
  // may overlap another or the incoming state.
  float* const* conv_state_steps = nullptr;
  bool silu = true;  // false: out_t[c] is the biased sum itself (LFM2's short conv)
};
Status ssm_conv(const SsmConvArgs& args, ThreadContext* threads, Isa isa = active_isa());

// Selective scan with scalar decay per head (spec 3.4 steps 5-7). For head h, group
// g = h / (H/G), each token t in order:
//   delta = softplus(dt_t[h] + dt_bias[h]);  dA = exp(delta * A[h])
//   S[h,p,n] = S[h,p,n]*dA + B_t[g,n] * (x_t[h,p]*delta)
//   y_t[h,p] = Σ_n S[h,p,n]*C_t[g,n] + D[h]*x_t[h,p]
// State layout [H][P][N] F32: element n + N*(p + P*h) (ggml {N, P, H}).
struct SsmScanArgs {
  int32_t n_tokens = 0;      // T >= 0
  int32_t n_head = 0;        // H
  int32_t head_dim = 0;      // P
  int32_t n_group = 0;       // G, divides H
  int32_t state_size = 0;    // N
  const float* x = nullptr;  // token t: H*P post-conv x at x + t*x_stride (head-major)
  int64_t x_stride = 0;
  const float* dt = nullptr;  // token t: H raw dt (before bias and softplus)
  int64_t dt_stride = 0;
  const float* dt_bias = nullptr;  // [H] or null
  const float* A = nullptr;        // [H], already -exp(A_log)
  const float* B = nullptr;        // token t: G*N, group-major
  int64_t B_stride = 0;
  const float* C = nullptr;
  int64_t C_stride = 0;
  const float* D = nullptr;  // [H] or null (no skip)
  float* y = nullptr;        // token t: H*P at y + t*y_stride; may be x itself (same stride)
  int64_t y_stride = 0;
  float* state = nullptr;  // [H][P][N], updated in place
  // Optional: the incoming state, read from here and the result written to `state` (see
  // SsmConvArgs::conv_state_in). Either `state` itself or not overlapping it.
  const float* state_in = nullptr;
  // Optional: per-token states, as SsmConvArgs::conv_state_steps. The scan then runs token t from
  // the state after token t-1 wherever it lives, so the arithmetic is the same as without.
  float* const* state_steps = nullptr;
};
Status ssm_scan(const SsmScanArgs& args, ThreadContext* threads, Isa isa = active_isa());

// Several independent runs (one per sequence of a ragged ubatch) in one parallel region each:
// every (run, channel block) / (run, head) is one work item, computed exactly as the
// single-run call computes it, so the results are bit-identical to n separate calls while the
// threads meet once instead of n times. Every run is validated before anything is written.
Status ssm_conv_runs(const SsmConvArgs* runs, int32_t n_runs, ThreadContext* threads,
                     Isa isa = active_isa());
Status ssm_scan_runs(const SsmScanArgs* runs, int32_t n_runs, ThreadContext* threads,
                     Isa isa = active_isa());

// For a caller that deals the channels out itself, e.g. in the parallel region of the matmul that
// produces them: ssm_conv_check_runs validates as ssm_conv_runs does, then ssm_conv_channels
// computes channels [c_begin, c_end) of every run on the calling thread, each exactly as
// ssm_conv_runs does. c_begin must be a multiple of 8 (the blocks channels are dealt in, which
// fix each channel's vector lane), c_end one too or at least a run's n_channels (clamped).
Status ssm_conv_check_runs(const SsmConvArgs* runs, int32_t n_runs);
void ssm_conv_channels(const SsmConvArgs* runs, int32_t n_runs, int32_t c_begin, int32_t c_end,
                       Isa isa = active_isa());

namespace ops_internal {
// Channels [c_begin, c_end) (c_begin a multiple of 8) / heads [h_begin, h_end).
void ssm_conv_avx2(const SsmConvArgs& a, int32_t c_begin, int32_t c_end);
void ssm_scan_head_avx2(const SsmScanArgs& a, int32_t h);
}  // namespace ops_internal

}  // namespace chimera
