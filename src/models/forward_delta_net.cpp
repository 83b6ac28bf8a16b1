// The gated-DeltaNet mixer layer (spec 6.5): fused projections, the short causal conv + SiLU
// (ssm_conv without bias) and the recurrence with its gated RMSNorm (delta_net), per sequence
// run in token order, then the output projection. Conv and delta states live in the recurrent
// state pool like Mamba2's, so snapshots, forks, rollback and save/load apply unchanged.
#include <cstring>

#include "kernels/delta_net.h"
#include "kernels/ssm.h"
#include "models/forward.h"
#include "models/forward_internal.h"

namespace chimera {

using forward_internal::f32;
using forward_internal::grow;

namespace {

// One run's raw per-token rows: qkv before the conv, [beta | alpha], the gate z.
struct DeltaNetRows {
  const float* qkv;
  int64_t qkv_stride;
  const float* ba;
  int64_t ba_stride;
  const float* z;
  int64_t z_stride;
};

void delta_net_args(const Model& m, uint32_t il, const DeltaNetRows& rows, uint32_t n_tokens,
                    const RecurrentRun& s, float* xc, float* y, SsmConvArgs& ca, DeltaNetArgs& da) {
  const ModelHParams& hp = m.hp;
  const DeltaNetWeights& w = m.layers[il].delta;
  const int64_t S = hp.ssm_state, Hk = hp.ssm_groups, Hv = hp.ssm_heads;
  const int64_t C = hp.ssm_conv_channels(), d_in = hp.ssm_inner;
  ca = SsmConvArgs{};
  ca.n_tokens = static_cast<int32_t>(n_tokens);
  ca.n_channels = static_cast<int32_t>(C);
  ca.kernel_size = static_cast<int32_t>(hp.ssm_conv_kernel);
  ca.x = rows.qkv;
  ca.x_stride = rows.qkv_stride;
  ca.weight = f32(w.conv);
  ca.conv_state = s.conv_dst;
  ca.conv_state_in = s.conv_src;
  ca.out = xc;
  ca.out_stride = C;
  da = DeltaNetArgs{};
  da.n_tokens = static_cast<int32_t>(n_tokens);
  da.n_k_heads = static_cast<int32_t>(Hk);
  da.n_v_heads = static_cast<int32_t>(Hv);
  da.head_dim = static_cast<int32_t>(S);
  da.head_map = hp.delta_tiled_heads ? DeltaNetHeadMap::kTiled : DeltaNetHeadMap::kGrouped;
  da.q = xc;
  da.k = da.q + Hk * S;
  da.v = da.q + 2 * Hk * S;
  da.qkv_stride = C;
  da.beta = rows.ba;
  da.alpha = rows.ba + Hv;
  da.ab_stride = rows.ba_stride;
  da.dt_bias = f32(w.dt_bias);
  da.A = f32(w.a);
  da.l2_eps = hp.rms_eps;
  da.z = rows.z;
  da.z_stride = rows.z_stride;
  da.norm_weight = f32(w.norm);
  da.norm_eps = hp.rms_eps;
  da.out = y;
  da.out_stride = d_in;
  da.state = s.ssm_dst;
  da.state_in = s.ssm_src;
}

}  // namespace

Status ForwardPass::delta_net_prefix(uint32_t il, const float* kept, uint32_t n,
                                     const RecurrentRun& s) {
  const ModelHParams& hp = model_.hp;
  const int64_t C = hp.ssm_conv_channels(), Hv = hp.ssm_heads, d_in = hp.ssm_inner;
  const int64_t per = C + 2 * Hv + d_in;
  const DeltaNetRows rows{kept, per, kept + C, per, kept + C + 2 * Hv, per};
  SsmConvArgs ca;
  DeltaNetArgs da;
  delta_net_args(model_, il, rows, n, s, grow(e_, n * C), grow(f_, n * d_in), ca, da);
  CHIMERA_RETURN_IF_ERROR(ssm_conv(ca, &threads_));
  return delta_net(da, &threads_);
}

Status ForwardPass::delta_net_layer(uint32_t il, HybridMemory& mem, const Ubatch& ub, size_t u) {
  const ModelHParams& hp = model_.hp;
  const DeltaNetWeights& w = model_.layers[il].delta;
  const int64_t T = ub.n_tokens(), D = hp.n_embd, d_in = hp.ssm_inner;
  const int64_t Hk = hp.ssm_groups, Hv = hp.ssm_heads;
  const int64_t C = hp.ssm_conv_channels();  // 2*Hk*S + d_in: [q | k | v]
  float* qkv = grow(a_, T * C);
  float* z = grow(b_, T * d_in);
  float* ba = grow(c_, T * 2 * Hv);  // token t: [beta (Hv) | alpha (Hv)] in value-head order
  CHIMERA_RETURN_IF_ERROR(mm(w.qkv, u_.data(), T, qkv));
  CHIMERA_RETURN_IF_ERROR(mm(w.gate, u_.data(), T, z));
  if (w.ba) {
    // qwen3next: per key head g, [b of its r value heads | a of them] (r = Hv/Hk)
    float* raw = grow(e_, T * 2 * Hv);
    CHIMERA_RETURN_IF_ERROR(mm(w.ba, u_.data(), T, raw));
    const int64_t r = Hv / Hk;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t g = 0; g < Hk; ++g)
        for (int64_t j = 0; j < r; ++j) {
          ba[t * 2 * Hv + g * r + j] = raw[t * 2 * Hv + g * 2 * r + j];
          ba[t * 2 * Hv + Hv + g * r + j] = raw[t * 2 * Hv + g * 2 * r + r + j];
        }
  } else {
    CHIMERA_RETURN_IF_ERROR(mm(w.beta, u_.data(), T, ba, 0, 2 * Hv));
    CHIMERA_RETURN_IF_ERROR(mm(w.alpha, u_.data(), T, ba + Hv, 0, 2 * Hv));
  }
  float* xc = grow(e_, T * C);  // conv + SiLU output
  float* y = grow(f_, T * d_in);
  for (size_t r = 0; r < ub.runs.size(); ++r) {
    const SeqRun& run = ub.runs[r];
    const RecurrentRun s = mem.recurrent(mem_recr_[il], u, r);
    const int64_t off = run.offset;
    DeltaNetRows rows{qkv + off * C, C, ba + off * 2 * Hv, 2 * Hv, z + off * d_in, d_in};
    SsmConvArgs ca;
    DeltaNetArgs da;
    delta_net_args(model_, il, rows, run.n_tokens, s, xc + off * C, y + off * d_in, ca, da);
    // Speculative verification: the state after every token into the memory's step buffers, or
    // the raw [qkv | beta alpha | z] rows kept to recompute any prefix.
    conv_steps_.resize(s.n_steps);
    ssm_steps_.resize(s.n_steps);
    for (uint32_t t = 0; t < s.n_steps; ++t) {
      conv_steps_[t] = s.conv_step(t);
      ssm_steps_[t] = s.ssm_step(t);
    }
    if (s.n_steps > 0) ca.conv_state_steps = conv_steps_.data();
    if (s.n_steps > 0) da.state_steps = ssm_steps_.data();
    if (s.keep_inputs) {
      const int64_t per = C + 2 * Hv + d_in;
      float* k = keep_inputs(il, run.seq, run.n_tokens, per);
      for (int64_t t = 0; t < run.n_tokens; ++t) {
        std::memcpy(k + t * per, rows.qkv + t * C, sizeof(float) * C);
        std::memcpy(k + t * per + C, rows.ba + t * 2 * Hv, sizeof(float) * 2 * Hv);
        std::memcpy(k + t * per + C + 2 * Hv, rows.z + t * d_in, sizeof(float) * d_in);
      }
    }
    CHIMERA_RETURN_IF_ERROR(ssm_conv(ca, &threads_));
    CHIMERA_RETURN_IF_ERROR(delta_net(da, &threads_));
  }
  return mm(w.out, y, T, grow(d_, T * D));
}

}  // namespace chimera
