// LFM2's gated short convolution mixer: in_proj -> [B | C | x] per token, the causal depthwise
// conv (kernel l_cache, no bias, no activation) over B*x with the last l_cache - 1 inputs carried
// as recurrent state, then C * conv and out_proj. The conv state lives in the recurrent state
// pool like Mamba2's, so snapshots, forks, rollback and save/load apply unchanged; every run of
// the ubatch goes through one ssm_conv_runs call (row-local arithmetic, token order per run).
#include <cstring>

#include "kernels/ssm.h"
#include "models/forward.h"
#include "models/forward_internal.h"

namespace chimera {

using forward_internal::f32;
using forward_internal::grow;

namespace {
SsmConvArgs conv_args(const Model& m, uint32_t il, const float* bx, uint32_t n_tokens,
                      const RecurrentRun& s, float* y) {
  const int64_t D = m.hp.n_embd;
  SsmConvArgs ca;
  ca.n_tokens = static_cast<int32_t>(n_tokens);
  ca.n_channels = static_cast<int32_t>(D);
  ca.kernel_size = static_cast<int32_t>(m.hp.shortconv_l_cache);
  ca.x = bx;
  ca.x_stride = D;
  ca.weight = f32(m.layers[il].short_conv.conv);
  ca.silu = false;
  ca.conv_state = s.conv_dst;
  ca.conv_state_in = s.conv_src;
  ca.out = y;
  ca.out_stride = D;
  return ca;
}
}  // namespace

Status ForwardPass::short_conv_prefix(uint32_t il, const float* kept, uint32_t n,
                                      const RecurrentRun& s) {
  const SsmConvArgs ca = conv_args(model_, il, kept, n, s, grow(c_, n * model_.hp.n_embd));
  return ssm_conv_runs(&ca, 1, &threads_);
}

Status ForwardPass::short_conv_layer(uint32_t il, HybridMemory& mem, const Ubatch& ub, size_t u) {
  const ModelHParams& hp = model_.hp;
  const ShortConvWeights& w = model_.layers[il].short_conv;
  const int64_t T = ub.n_tokens(), D = hp.n_embd;
  float* bcx = grow(a_, T * 3 * D);  // token t: [B (D) | C (D) | x (D)]
  float* bx = grow(b_, T * D);
  float* y = grow(c_, T * D);
  CHIMERA_RETURN_IF_ERROR(mm(w.in, u_.data(), T, bcx));
  for (int64_t t = 0; t < T; ++t) {
    const float* r = bcx + t * 3 * D;
    for (int64_t i = 0; i < D; ++i) bx[t * D + i] = r[i] * r[2 * D + i];
  }
  const size_t n_runs = ub.runs.size();
  conv_args_.resize(n_runs);
  size_t n_steps = 0;  // step-buffer pointers of all runs, laid out run after run
  for (size_t r = 0; r < n_runs; ++r) n_steps += mem.recurrent(il, u, r).n_steps;
  conv_steps_.resize(n_steps);
  n_steps = 0;
  for (size_t r = 0; r < n_runs; ++r) {
    const SeqRun& run = ub.runs[r];
    const RecurrentRun s = mem.recurrent(il, u, r);
    SsmConvArgs ca = conv_args(model_, il, bx + int64_t(run.offset) * D, run.n_tokens, s,
                               y + int64_t(run.offset) * D);
    if (s.keep_inputs)  // prefix recompute: the conv's inputs B*x
      std::memcpy(keep_inputs(il, run.seq, run.n_tokens, D), ca.x,
                  sizeof(float) * D * run.n_tokens);
    // Speculative verification: the state after every token into the memory's step buffers.
    for (uint32_t t = 0; t < s.n_steps; ++t) conv_steps_[n_steps + t] = s.conv_step(t);
    if (s.n_steps > 0) ca.conv_state_steps = conv_steps_.data() + n_steps;
    conv_args_[r] = ca;
    n_steps += s.n_steps;
  }
  CHIMERA_RETURN_IF_ERROR(
      ssm_conv_runs(conv_args_.data(), static_cast<int32_t>(n_runs), &threads_));
  for (int64_t t = 0; t < T; ++t) {
    const float* c = bcx + t * 3 * D + D;
    for (int64_t i = 0; i < D; ++i) y[t * D + i] *= c[i];
  }
  return mm(w.out, y, T, grow(d_, T * D));
}

}  // namespace chimera
