// Gated DeltaNet recurrence (Qwen3-Next / Qwen3.5 linear-attention layers, spec 6.5) for ONE
// sequence's run of T tokens, after the short causal conv + SiLU (ssm_conv, no bias). Per value
// head h, with k-head kh = map(h), each token t in order:
//   q = l2norm(q_t[kh]) / sqrt(S);  k = l2norm(k_t[kh])       (l2norm: x / max(||x||, l2_eps))
//   decay = exp(softplus(alpha_t[h] + dt_bias[h]) * A[h]);  b = sigmoid(beta_t[h])
//   M <- decay * M;  delta_j = b * (v_t[h][j] - sum_i M[i][j] k_i);  M[i][j] += k_i * delta_j
//   o_j = sum_i M[i][j] q_i
//   out_t[h] = rmsnorm(o) * norm_weight * silu(z_t[h])          (norm first, then the gate)
// This is the recurrent form only, never the chunked one: the same arithmetic for T = 1 (decode)
// and T = 512 (prefill), so any split of a run gives bit-identical outputs and states. Threads
// split value heads, never the time axis; every column j is updated on its own, in i order.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "core/threads.h"
#include "kernels/activation.h"

namespace chimera {

// Which key head a value head reads when there are fewer key heads than value heads.
enum class DeltaNetHeadMap : uint8_t {
  kGrouped,  // kh = h / (Hv/Hk): HF order, kept by llama.cpp's qwen3next files
  kTiled,    // kh = h % Hk: llama.cpp reorders qwen35/qwen35moe value heads to this order
};

struct DeltaNetArgs {
  int32_t n_tokens = 0;   // T >= 0
  int32_t n_k_heads = 0;  // Hk >= 1
  int32_t n_v_heads = 0;  // Hv, a multiple of Hk
  int32_t head_dim = 0;   // S: key and value head size
  DeltaNetHeadMap head_map = DeltaNetHeadMap::kGrouped;
  // Token t: q at q + t*qkv_stride (Hk*S), k likewise (Hk*S), v likewise (Hv*S).
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t qkv_stride = 0;
  // Token t: Hv raw alpha (decay input) and raw beta values.
  const float* alpha = nullptr;
  const float* beta = nullptr;
  int64_t ab_stride = 0;
  const float* dt_bias = nullptr;  // [Hv] or null
  const float* A = nullptr;        // [Hv], already -exp(A_log)
  float l2_eps = 1e-6f;
  const float* z = nullptr;  // token t: Hv*S gate values at z + t*z_stride
  int64_t z_stride = 0;
  const float* norm_weight = nullptr;  // [S] or null, shared by every head
  float norm_eps = 1e-6f;
  float* out = nullptr;  // token t: Hv*S at out + t*out_stride; must not overlap the inputs
  int64_t out_stride = 0;
  // [Hv][S][S], element j + S*(i + S*h): head h's matrix, key index i, value index j (j
  // contiguous). Updated in place.
  float* state = nullptr;
  // Optional incoming state (a copy-on-write slot): read from here, the result written to
  // `state`. Either `state` itself or not overlapping it.
  const float* state_in = nullptr;
  // Optional (speculative verification, as SsmConvArgs::conv_state_steps): n_tokens - 1
  // pointers; the state after token t < T-1 is written to state_steps[t] (same layout), the state
  // after the last token to `state`. None may overlap another or the incoming state.
  float* const* state_steps = nullptr;
};
Status delta_net(const DeltaNetArgs& args, ThreadContext* threads, Isa isa = active_isa());

namespace ops_internal {
// Per (token, head) scalars shared by every ISA: normalised q (already / sqrt(S)) and k, the decay
// and beta. q_out and k_out hold S floats.
void delta_net_token_inputs(const DeltaNetArgs& a, int64_t t, int32_t h, float* q_out, float* k_out,
                            float* decay, float* beta);
// Columns of one head's state update and read-out for one token: prev -> cur (may alias),
// writes o[0..S). Scalar and AVX2 versions.
void delta_net_update_scalar(const float* prev, float* cur, int64_t S, const float* q,
                             const float* k, const float* v, float decay, float beta, float* o);
void delta_net_update_avx2(const float* prev, float* cur, int64_t S, const float* q, const float* k,
                           const float* v, float decay, float beta, float* o);
}  // namespace ops_internal

}  // namespace chimera
