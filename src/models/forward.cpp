#include "models/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/embedding.h"
#include "kernels/moe_route.h"
#include "kernels/norm.h"
#include "kernels/rope.h"
#include "kernels/ssm.h"
#include "models/forward_internal.h"

namespace chimera {
namespace {

WeightMatrix as_matrix(Weight w) {
  WeightMatrix m;
  m.type = w->type;
  m.data = w->data;
  m.n_in = w->ne[0];
  m.n_out = w->ne[1];
  m.n_expert = w->ne[2];
  return m;
}

using forward_internal::f32;
using forward_internal::grow;

// Rows per piece of the element-wise ops split over threads: a few rows of work per hand-off, and
// a single row (decode) stays on the calling thread.
constexpr int64_t kRowGrain = 4;

// Row-wise ops (norms, gating) over fewer floats than this run on the calling thread: a hand-off
// and the wait at its end cost more than half of a few microseconds' work (a decode step's rows,
// or a few sequences' rows, at the widths here). Rows are computed alike either way.
constexpr int64_t kParallelFloats = 16384;

// y[r] += b for every row (bias add, row-local).
void add_bias(float* y, int64_t rows, int64_t n, int64_t stride, Weight b) {
  if (!b) return;
  const float* bb = f32(b);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) y[r * stride + i] += bb[i];
}

}  // namespace

MemoryConfig memory_config_for(const Model& model) {
  MemoryConfig cfg;
  const ModelHParams& hp = model.hp;
  for (const LayerWeights& l : model.layers) {
    MemoryLayer ml;
    if (l.kind == MixerKind::kAttentionMamba2) {  // two memory layers: KV cache, then state
      ml.kind = LayerKind::kAttention;
      ml.kv_dim = l.n_head_kv * hp.head_dim;
      ml.kv_heads = l.n_head_kv;
      cfg.layers.push_back(ml);
      ml = MemoryLayer{};
      ml.kind = LayerKind::kRecurrent;
      ml.conv_floats = hp.conv_state_floats();
      ml.ssm_floats = hp.ssm_state_floats();
    } else if (l.kind == MixerKind::kNone) {
      ml.kind = LayerKind::kNone;
    } else if (l.kind == MixerKind::kAttention) {
      ml.kind = LayerKind::kAttention;
      ml.kv_dim = l.n_head_kv * hp.head_dim;
      ml.kv_heads = l.n_head_kv;
      ml.window = l.n_swa;  // window layers' rows behind the window are released
    } else if (l.kind == MixerKind::kShortConv) {  // the last l_cache - 1 inputs per channel
      ml.kind = LayerKind::kRecurrent;
      ml.conv_floats = uint64_t(hp.shortconv_l_cache - 1) * hp.n_embd;
    } else {
      ml.kind = LayerKind::kRecurrent;
      ml.conv_floats = hp.conv_state_floats();
      ml.ssm_floats = hp.ssm_state_floats();
    }
    cfg.layers.push_back(ml);
  }
  cfg.n_vocab = hp.n_vocab;
  cfg.positions_matter = hp.use_rope;
  return cfg;
}

ForwardPass::ForwardPass(const Model& model, ThreadContext& threads)
    : model_(model), threads_(threads) {
  // Memory layers in memory_config_for's order: one per model layer, two for a parallel one.
  uint32_t next = 0;
  for (const LayerWeights& l : model.layers) {
    mem_attn_.push_back(next);
    if (l.kind == MixerKind::kAttentionMamba2) ++next;
    mem_recr_.push_back(next++);
  }
}

ThreadContext* ForwardPass::pool_for(int64_t floats) {
  return floats >= kParallelFloats ? &threads_ : nullptr;
}

Status ForwardPass::mm(Weight w, const float* x, int64_t m, float* y, int64_t x_stride,
                       int64_t y_stride, const ReadAhead* ahead) {
  return matmul(threads_, as_matrix(w), x, m, y, ws_, x_stride, y_stride, ahead);
}

const ReadAhead* ForwardPass::ahead_window(double from, double to) {
  if (ahead_bytes_ == 0) return nullptr;
  ahead_.ranges = ahead_ranges_.data();
  ahead_.n_ranges = static_cast<int64_t>(ahead_ranges_.size());
  ahead_.begin = static_cast<uint64_t>(from * static_cast<double>(ahead_bytes_));
  ahead_.end =
      to >= 1.0 ? ahead_bytes_ : static_cast<uint64_t>(to * static_cast<double>(ahead_bytes_));
  return &ahead_;
}

Status ForwardPass::run_layers(HybridMemory& mem, const Batch& batch, const BatchPlan& plan,
                               size_t u) {
  const Ubatch& ub = plan.ubatches[u];
  const ModelHParams& hp = model_.hp;
  const int64_t T = ub.n_tokens(), D = hp.n_embd;
  if (u == 0) n_kept_ = 0;  // a new batch
  pending_norm_ = nullptr;  // (an earlier call may have failed midway)
  fuse_residual_ = branch_added_ = false;
  pos_.resize(T);
  ids_.resize(T);
  for (int64_t r = 0; r < T; ++r) {
    ids_[r] = batch.tokens[ub.batch_index[r]];
    pos_[r] = batch.pos[ub.batch_index[r]];
  }
  float* x = grow(x_, T * D);
  const Weight emb = model_.token_embd;
  CHIMERA_RETURN_IF_ERROR(
      embedding_lookup(emb->type, emb->data, D, emb->ne[1], ids_.data(), T, x, D));
  if (hp.embedding_scale != 0)
    for (int64_t i = 0; i < T * D; ++i) x[i] *= hp.embedding_scale;

  // A branch's output (in d_) joins the residual stream: scale the branch, then add (never
  // scale the sum, spec 8.8).
  // On the calling thread: split over two threads it measured slower (memory-bound, and the
  // hand-off costs more than the half it saves).
  // The output matmul may have done it already (fuse_residual_).
  auto add_branch = [&] {
    if (branch_added_) {
      branch_added_ = false;
      return;
    }
    float* o = d_.data();
    if (hp.residual_scale != 0)
      for (int64_t i = 0; i < T * D; ++i) o[i] *= hp.residual_scale;
    for (int64_t i = 0; i < T * D; ++i) x[i] += o[i];
  };
  const bool fuse = fuse_rows(T);
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    const LayerWeights& l = model_.layers[il];
    float* un = grow(u_, T * D);
    if (l.kind != MixerKind::kNone) {  // an FFN-only layer goes straight to its FFN
      // Attention and Mamba2 mixers take their pre-norm and residual add into their first and
      // last matmuls' regions (fuse_rows).
      const bool fusable =
          fuse && (l.kind == MixerKind::kAttention || l.kind == MixerKind::kMamba2);
      if (fusable) {
        pending_norm_ = f32(l.attn_norm);
      } else {
        CHIMERA_RETURN_IF_ERROR(
            rms_norm(x, D, f32(l.attn_norm), un, D, D, T, hp.rms_eps, pool_for(T * D)));
      }
      fuse_residual_ = fusable && !l.attn_post_norm;
      if (l.kind == MixerKind::kAttentionMamba2) {
        // attn_out + ssm_out, then into the residual (llama.cpp's order of the two adds)
        CHIMERA_RETURN_IF_ERROR(attention_layer(il, mem, ub, u));
        float* attn = grow(par_, T * D);
        std::memcpy(attn, d_.data(), T * D * sizeof(float));
        CHIMERA_RETURN_IF_ERROR(mamba2_layer(il, mem, ub, u));
        for (int64_t i = 0; i < T * D; ++i) d_[i] = attn[i] + d_[i];
      } else if (l.kind == MixerKind::kAttention) {
        CHIMERA_RETURN_IF_ERROR(attention_layer(il, mem, ub, u));
      } else if (l.kind == MixerKind::kDeltaNet) {
        CHIMERA_RETURN_IF_ERROR(delta_net_layer(il, mem, ub, u));
      } else if (l.kind == MixerKind::kShortConv) {
        CHIMERA_RETURN_IF_ERROR(short_conv_layer(il, mem, ub, u));
      } else {
        CHIMERA_RETURN_IF_ERROR(mamba2_layer(il, mem, ub, u));
      }
      fuse_residual_ = false;
      CHIMERA_CHECK(pending_norm_ == nullptr, "layer ", il, ": its pre-norm was never done");
      if (l.attn_post_norm)  // Gemma: the branch output is normed before the residual add
        CHIMERA_RETURN_IF_ERROR(rms_norm(d_.data(), D, f32(l.attn_post_norm), d_.data(), D, D, T,
                                         hp.rms_eps, pool_for(T * D)));
      add_branch();
    }
    if (l.ffn_kind == FfnKind::kNone) continue;
    // Several sequences: each reads and writes its own recurrent state in the next layer's scan
    // (memory-bound), while the FFN over their few rows is compute-bound: it prefetches the
    // states meanwhile.
    ahead_ranges_.clear();
    ahead_bytes_ = 0;
    if (ub.runs.size() >= 2 && il + 1 < hp.n_layer) {
      const MixerKind next = model_.layers[il + 1].kind;
      if (keeps_recurrent_state(next)) {
        for (size_t r = 0; r < ub.runs.size(); ++r) {
          const RecurrentRun s = mem.recurrent(mem_recr_[il + 1], u, r);
          ahead_ranges_.push_back({s.conv_src, s.conv_floats * sizeof(float)});
          ahead_ranges_.push_back({s.ssm_src, s.ssm_floats * sizeof(float)});
          ahead_bytes_ += (s.conv_floats + s.ssm_floats) * sizeof(float);
        }
      }
    }
    // The dense gated FFN takes its pre-norm and residual add into its matmuls' regions.
    if (fuse && fused_gate_up(l)) {
      pending_norm_ = f32(l.ffn_norm);
      fuse_residual_ = !l.ffn_post_norm;
    } else {
      CHIMERA_RETURN_IF_ERROR(
          rms_norm(x, D, f32(l.ffn_norm), un, D, D, T, hp.rms_eps, pool_for(T * D)));
    }
    CHIMERA_RETURN_IF_ERROR(ffn(il, T));
    fuse_residual_ = false;
    CHIMERA_CHECK(pending_norm_ == nullptr, "layer ", il, ": its FFN pre-norm was never done");
    if (l.ffn_post_norm)
      CHIMERA_RETURN_IF_ERROR(rms_norm(d_.data(), D, f32(l.ffn_post_norm), d_.data(), D, D, T,
                                       hp.rms_eps, pool_for(T * D)));
    add_branch();
  }
  return Status::Ok();
}

Status ForwardPass::attention_layer(uint32_t il, HybridMemory& mem, const Ubatch& ub, size_t u) {
  const ModelHParams& hp = model_.hp;
  const LayerWeights& l = model_.layers[il];
  const int64_t T = ub.n_tokens(), D = hp.n_embd, hd = hp.head_dim;
  const int64_t nq = int64_t(hp.n_head) * hd, nkv = int64_t(l.n_head_kv) * hd;
  float* q = grow(a_, T * nq);
  float* k = grow(b_, T * nkv);
  float* v = grow(c_, T * nkv);
  // Gated attention: wq yields per head [q | gate]; q is copied out, the gate stays in e_.
  const bool gated = l.attn.output_gate;
  float* qg = gated ? grow(e_, T * 2 * nq) : nullptr;
  // Q, K and V read the same input: one parallel region, one activation quantization.
  const MatmulPart qkv[3] = {{as_matrix(l.attn.wq), gated ? qg : q, 0},
                             {as_matrix(l.attn.wk), k, 0},
                             {as_matrix(l.attn.wv), v, 0}};
  CHIMERA_RETURN_IF_ERROR(mm_normed(qkv, 3, T, nullptr, MatmulFusion{}));
  if (gated)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < hp.n_head; ++h)
        std::memcpy(q + t * nq + h * hd, qg + t * 2 * nq + h * 2 * hd, hd * 4);
  add_bias(q, T, nq, nq, l.attn.bq);
  add_bias(k, T, nkv, nkv, l.attn.bk);
  add_bias(v, T, nkv, nkv, l.attn.bv);
  if (l.attn.q_norm)  // per-head RMSNorm, every head a row of hd
    CHIMERA_RETURN_IF_ERROR(rms_norm(q, hd, f32(l.attn.q_norm), q, hd, hd, T * hp.n_head,
                                     hp.rms_eps, pool_for(T * nq)));
  if (l.attn.k_norm)
    CHIMERA_RETURN_IF_ERROR(rms_norm(k, hd, f32(l.attn.k_norm), k, hd, hd, T * l.n_head_kv,
                                     hp.rms_eps, pool_for(T * nkv)));
  if (hp.use_rope) {
    RopeParams rp;
    rp.n_rot = static_cast<int32_t>(hp.n_rot);
    rp.freq_base = l.rope_freq_base != 0 ? l.rope_freq_base : hp.rope_freq_base;
    rp.freq_scale = l.rope_freq_scale != 0 ? l.rope_freq_scale : hp.rope_freq_scale;
    rp.mode = hp.rope_mode;
    rp.freq_factors = f32(model_.rope_freqs);
    CHIMERA_RETURN_IF_ERROR(rope(q, nq, T, hp.n_head, hd, pos_.data(), rp));
    CHIMERA_RETURN_IF_ERROR(rope(k, nkv, T, l.n_head_kv, hd, pos_.data(), rp));
  }
  AttentionParams ap;
  ap.n_head = static_cast<int32_t>(hp.n_head);
  ap.n_head_kv = static_cast<int32_t>(l.n_head_kv);
  ap.head_dim = static_cast<int32_t>(hd);
  ap.page_size = static_cast<int32_t>(mem.page_size());
  ap.kv_type = mem.config().kv_type;
  ap.scale = hp.kq_scale();
  std::vector<KvPageTable> tables(ub.runs.size());
  n_visible_.resize(T);
  first_visible_.resize(T);
  seq_of_.resize(T);
  for (size_t r = 0; r < ub.runs.size(); ++r) {
    const SeqRun& run = ub.runs[r];
    for (uint32_t t = 0; t < run.n_tokens; ++t) {
      const int64_t row = run.offset + t;
      const KvSlot slot = mem.kv_slot(mem_attn_[il], u, r, t);
      CHIMERA_RETURN_IF_ERROR(
          kv_write_token(ap, k + row * nkv, v + row * nkv, slot.k_page, slot.v_page, slot.slot));
    }
    const AttentionRun ar = mem.attention(mem_attn_[il], u, r);
    tables[r] = {ar.k_pages, ar.v_pages, static_cast<int32_t>(ar.n_pages)};
    for (uint32_t t = 0; t < run.n_tokens; ++t) {
      const uint32_t n = ar.first + t + 1;
      n_visible_[run.offset + t] = static_cast<int32_t>(n);
      // A window layer reads the last n_swa keys: pos - key_pos < n_swa (transformers' and
      // llama.cpp's convention), the current token included.
      first_visible_[run.offset + t] =
          static_cast<int32_t>(n > l.n_swa && l.n_swa ? n - l.n_swa : 0);
      seq_of_[run.offset + t] = static_cast<int32_t>(r);
    }
  }
  AttentionBatch ab;
  ab.n_queries = T;
  ab.q = q;
  ab.q_stride = nq;
  ab.n_visible = n_visible_.data();
  ab.first_visible = l.n_swa ? first_visible_.data() : nullptr;
  ab.seq = seq_of_.data();
  ab.seqs = tables.data();
  ab.n_seqs = static_cast<int32_t>(tables.size());
  ab.out = q;
  ab.out_stride = nq;
  CHIMERA_RETURN_IF_ERROR(attention_paged(ap, ab, &threads_));
  if (gated)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < hp.n_head; ++h) {
        const float* g = qg + t * 2 * nq + h * 2 * hd + hd;
        float* a = q + t * nq + h * hd;
        for (int64_t i = 0; i < hd; ++i) a[i] *= 1.0f / (1.0f + std::exp(-g[i]));
      }
  float* o = grow(d_, T * D);
  if (fuse_residual_ && !l.attn.bo) {
    MatmulFusion fusion;
    auto add = [&](int, int64_t j0, int64_t j1) { add_branch_columns(T, j0, j1); };
    fusion.after = add;
    const MatmulPart part{as_matrix(l.attn.wo), o, 0};
    CHIMERA_RETURN_IF_ERROR(matmul_fused(threads_, &part, 1, q, T, ws_, 0, nullptr, fusion));
    branch_added_ = true;
    return Status::Ok();
  }
  CHIMERA_RETURN_IF_ERROR(mm(l.attn.wo, q, T, o));
  add_bias(o, T, D, D, l.attn.bo);
  return Status::Ok();
}

void ForwardPass::mamba2_run_args(uint32_t il, const float* xbc_dt, int64_t stride,
                                  uint32_t n_tokens, const RecurrentRun& s, float* xr, float* y,
                                  SsmConvArgs& ca, SsmScanArgs& sa) const {
  const ModelHParams& hp = model_.hp;
  const Mamba2Weights& w = model_.layers[il].ssm;
  const int64_t d_in = hp.ssm_inner, G = hp.ssm_groups, N = hp.ssm_state;
  const int64_t C = hp.ssm_conv_channels();
  ca = SsmConvArgs{};
  ca.n_tokens = static_cast<int32_t>(n_tokens);
  ca.n_channels = static_cast<int32_t>(C);
  ca.kernel_size = static_cast<int32_t>(hp.ssm_conv_kernel);
  ca.x = xbc_dt;
  ca.x_stride = stride;
  ca.weight = f32(w.conv);
  ca.bias = f32(w.conv_bias);
  ca.conv_state = s.conv_dst;
  ca.conv_state_in = s.conv_src;
  ca.out = xr;
  ca.out_stride = C;
  sa = SsmScanArgs{};
  sa.n_tokens = static_cast<int32_t>(n_tokens);
  sa.n_head = static_cast<int32_t>(hp.ssm_heads);
  sa.head_dim = static_cast<int32_t>(hp.ssm_head_dim());
  sa.n_group = static_cast<int32_t>(G);
  sa.state_size = static_cast<int32_t>(N);
  sa.x = xr;
  sa.x_stride = C;
  sa.dt = xbc_dt + C;
  sa.dt_stride = stride;
  sa.dt_bias = f32(w.dt_bias);
  sa.A = f32(w.a);
  sa.B = xr + d_in;
  sa.B_stride = C;
  sa.C = xr + d_in + G * N;
  sa.C_stride = C;
  sa.D = f32(w.d);
  sa.y = y;
  sa.y_stride = d_in;
  sa.state = s.ssm_dst;
  sa.state_in = s.ssm_src;
}

float* ForwardPass::keep_inputs(uint32_t il, int32_t seq, uint32_t n_tokens, size_t per_token) {
  size_t i = 0;
  while (i < n_kept_ && kept_[i].seq != seq) ++i;
  if (i == n_kept_) {
    if (kept_.size() <= n_kept_) kept_.emplace_back();
    ++n_kept_;
    kept_[i].seq = seq;
    kept_[i].n_tokens = n_tokens;
    kept_[i].layer.resize(model_.hp.n_layer);
  }
  return grow(kept_[i].layer[il], n_tokens * per_token);
}

Status ForwardPass::replay_prefix(HybridMemory& mem, int32_t seq, uint32_t n) {
  size_t i = 0;
  while (i < n_kept_ && kept_[i].seq != seq) ++i;
  if (i == n_kept_ || n == 0 || n >= kept_[i].n_tokens)
    return Error(ErrorCode::kInvalidArgument, "replay_prefix: no kept inputs of sequence ", seq,
                 " for a prefix of ", n, " tokens");
  const ModelHParams& hp = model_.hp;
  const int64_t C = hp.ssm_conv_channels(), H = hp.ssm_heads, d_in = hp.ssm_inner;
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    const MixerKind kind = model_.layers[il].kind;
    if (!keeps_recurrent_state(kind)) continue;
    CHIMERA_ASSIGN_OR_RETURN(const RecurrentRun s, mem.recurrent_prefix(mem_recr_[il], seq, n));
    const float* k = kept_[i].layer[il].data();
    if (kind == MixerKind::kDeltaNet) {
      CHIMERA_RETURN_IF_ERROR(delta_net_prefix(il, k, n, s));
    } else if (kind == MixerKind::kShortConv) {
      CHIMERA_RETURN_IF_ERROR(short_conv_prefix(il, k, n, s));
    } else {
      // The same conv and scan over the kept [xBC | dt]; y is recomputed and dropped.
      SsmConvArgs ca;
      SsmScanArgs sa;
      mamba2_run_args(il, k, C + H, n, s, grow(b_, n * C), grow(c_, n * d_in), ca, sa);
      CHIMERA_RETURN_IF_ERROR(ssm_conv_runs(&ca, 1, &threads_));
      CHIMERA_RETURN_IF_ERROR(ssm_scan_runs(&sa, 1, &threads_));
    }
  }
  return Status::Ok();
}

Status ForwardPass::mamba2_layer(uint32_t il, HybridMemory& mem, const Ubatch& ub, size_t u) {
  const ModelHParams& hp = model_.hp;
  const Mamba2Weights& w = model_.layers[il].ssm;
  const int64_t T = ub.n_tokens(), D = hp.n_embd, d_in = hp.ssm_inner;
  const int64_t G = hp.ssm_groups, N = hp.ssm_state, H = hp.ssm_heads;
  const int64_t C = hp.ssm_conv_channels(), d_proj = 2 * d_in + 2 * G * N + H;
  float* p = grow(a_, T * d_proj);  // [z | xBC | dt] per token (spec 3.4 step 1)
  float* xbc = grow(b_, T * C);
  float* y = grow(c_, T * d_in);
  // Every sequence's conv, then every sequence's scan, each in one parallel region: threads meet
  // twice per layer instead of twice per sequence, and each run's arithmetic is unchanged. The
  // conv joins the in-projection's region: each thread convolves the channels whose xBC columns
  // it has just computed (the channels' blocks of 8 stay aligned when d_in is a multiple of 8).
  const size_t n_runs = ub.runs.size();
  conv_args_.resize(n_runs);
  scan_args_.resize(n_runs);
  size_t n_steps = 0;  // step-buffer pointers of all runs, laid out run after run
  for (size_t r = 0; r < n_runs; ++r) n_steps += mem.recurrent(mem_recr_[il], u, r).n_steps;
  conv_steps_.resize(n_steps);
  ssm_steps_.resize(n_steps);
  n_steps = 0;
  for (size_t r = 0; r < n_runs; ++r) {
    const SeqRun& run = ub.runs[r];
    const RecurrentRun s = mem.recurrent(mem_recr_[il], u, r);
    // The kernels read the incoming state from src and write dst: no copy first.
    const float* pr = p + int64_t(run.offset) * d_proj;
    SsmConvArgs& ca = conv_args_[r];
    SsmScanArgs& sa = scan_args_[r];
    mamba2_run_args(il, pr + d_in, d_proj, run.n_tokens, s, xbc + int64_t(run.offset) * C,
                    y + int64_t(run.offset) * d_in, ca, sa);
    // Speculative verification: the kernels also leave the state after every token in the
    // memory's step buffers, or the raw [xBC | dt] inputs are kept to recompute any prefix.
    for (uint32_t t = 0; t < s.n_steps; ++t) {
      conv_steps_[n_steps + t] = s.conv_step(t);
      ssm_steps_[n_steps + t] = s.ssm_step(t);
    }
    if (s.n_steps > 0) ca.conv_state_steps = conv_steps_.data() + n_steps;
    if (s.n_steps > 0) sa.state_steps = ssm_steps_.data() + n_steps;
    n_steps += s.n_steps;
  }
  const int32_t runs = static_cast<int32_t>(n_runs);
  // Speculative verification may keep the raw [xBC | dt] inputs to recompute any prefix: copied
  // out of the in-projection's columns by the thread that computed them.
  keep_at_.assign(n_runs, nullptr);
  bool keeping = false;
  for (size_t r = 0; r < n_runs; ++r) {
    if (!mem.recurrent(mem_recr_[il], u, r).keep_inputs) continue;
    keep_at_[r] = keep_inputs(il, ub.runs[r].seq, ub.runs[r].n_tokens, C + H);
    keeping = true;
  }
  auto keep = [&](int64_t j0, int64_t j1) {
    const int64_t k0 = std::max<int64_t>(j0, d_in), k1 = std::min<int64_t>(j1, d_in + C + H);
    if (k0 >= k1) return;
    for (size_t r = 0; r < n_runs; ++r) {
      if (keep_at_[r] == nullptr) continue;
      const float* pr = p + int64_t(ub.runs[r].offset) * d_proj;
      for (uint32_t t = 0; t < ub.runs[r].n_tokens; ++t)
        std::memcpy(keep_at_[r] + t * (C + H) + (k0 - d_in), pr + t * d_proj + k0,
                    sizeof(float) * (k1 - k0));
    }
  };
  const bool conv_in_matmul = d_in % 8 == 0;
  if (conv_in_matmul) {
    CHIMERA_RETURN_IF_ERROR(ssm_conv_check_runs(conv_args_.data(), runs));
    const MatmulPart part{as_matrix(w.in), p, 0};
    auto conv = [&](int, int64_t j0, int64_t j1) {
      const int64_t c0 = std::max<int64_t>(j0 - d_in, 0);
      const int64_t c1 = std::min<int64_t>(j1 - d_in, C);
      if (c0 < c1)
        ssm_conv_channels(conv_args_.data(), runs, static_cast<int32_t>(c0),
                          static_cast<int32_t>(c1));
      if (keeping) keep(j0, j1);
    };
    MatmulFusion fusion;
    fusion.after = conv;
    CHIMERA_RETURN_IF_ERROR(mm_normed(&part, 1, T, nullptr, fusion));
  } else {
    const MatmulPart part{as_matrix(w.in), p, 0};
    CHIMERA_RETURN_IF_ERROR(mm_normed(&part, 1, T, nullptr, MatmulFusion{}));
    if (keeping) keep(0, d_proj);
  }
  if (!conv_in_matmul) CHIMERA_RETURN_IF_ERROR(ssm_conv_runs(conv_args_.data(), runs, &threads_));
  CHIMERA_RETURN_IF_ERROR(ssm_scan_runs(scan_args_.data(), runs, &threads_));
  if (w.gate_only) {  // y * silu(z), no norm (Falcon-H1)
    for (int64_t t = 0; t < T; ++t) swiglu(p + t * d_proj, y + t * d_in, y + t * d_in, d_in);
    return mm(w.out, y, T, grow(d_, T * D));
  }
  // Gate then per-group RMSNorm (spec 3.4 steps 8-9): in place, or for a small ubatch by every
  // share of the out-projection's region on its own copy.
  float* o = grow(d_, T * D);
  MatmulFusion fusion;
  auto add = [&](int, int64_t j0, int64_t j1) { add_branch_columns(T, j0, j1); };
  if (fuse_residual_) fusion.after = add;
  const float* norm_w = f32(w.norm);
  auto gated_norm = [&](int ith) -> const float* {
    float* dst = share_slot(ith);
    for (int64_t t = 0; t < T; ++t)
      gated_group_rms_norm_row(y + t * d_in, p + t * d_proj, norm_w, dst + t * d_in, d_in, G,
                               hp.rms_eps);
    return dst;
  };
  const float* in = y;
  if (fuse_rows(T) && T * d_in < kParallelFloats && G >= 1 && d_in % G == 0 &&
      matmul_reads_input(w.out->type)) {
    share_slots(T * d_in);
    fusion.input = gated_norm;
    in = share_slot(0);
  } else {
    CHIMERA_RETURN_IF_ERROR(gated_group_rms_norm(y, d_in, p, d_proj, norm_w, y, d_in, d_in, G, T,
                                                 hp.rms_eps, pool_for(T * d_in)));
  }
  const MatmulPart part{as_matrix(w.out), o, 0};
  CHIMERA_RETURN_IF_ERROR(matmul_fused(threads_, &part, 1, in, T, ws_, 0, nullptr, fusion));
  if (fuse_residual_) branch_added_ = true;
  return Status::Ok();
}

Status ForwardPass::ffn(uint32_t il, int64_t T) {
  const ModelHParams& hp = model_.hp;
  const FfnWeights& f = model_.layers[il].ffn;
  const int64_t D = hp.n_embd;
  if (!fused_gate_up(model_.layers[il])) CHIMERA_RETURN_IF_ERROR(flush_norm(T));
  const float* v = u_.data();
  float* out = grow(d_, T * D);
  // MLP over m rows with F hidden units: SwiGLU, or squared ReLU without a gate (ffn_act);
  // mul(k, in, rows, out) multiplies by the gate (k = 0), up (1) or down (2) matrix, so the dense
  // FFN, the MoE shared expert and each routed expert share the sequence. The dense FFN's biases
  // apply where present (the shared expert has none, so there they are no-ops); routed experts
  // have no biases.
  const bool relu2 = model_.layers[il].ffn_act == FfnActivation::kReluSquared;
  auto mlp = [&](auto&& mul, int64_t F, const float* in, int64_t m, float* dst,
                 bool biases) -> Status {
    float* g = grow(a_, m * F);
    float* h = grow(b_, m * F);
    if (relu2) {
      CHIMERA_RETURN_IF_ERROR(mul(1, in, m, g));
      if (biases) add_bias(g, m, F, F, f.up_b);
      relu_squared(g, g, m * F);
    } else {
      CHIMERA_RETURN_IF_ERROR(mul(0, in, m, g));
      CHIMERA_RETURN_IF_ERROR(mul(1, in, m, h));
      if (biases) {
        add_bias(g, m, F, F, f.gate_b);
        add_bias(h, m, F, F, f.up_b);
      }
      if (model_.layers[il].ffn_act == FfnActivation::kGeGluTanh) {
        geglu_tanh(g, h, g, m * F);
      } else {
        swiglu(g, h, g, m * F);
      }
    }
    CHIMERA_RETURN_IF_ERROR(mul(2, g, m, dst));
    if (biases) add_bias(dst, m, D, D, f.down_b);
    return Status::Ok();
  };
  // The dense FFN's matmuls share the read-ahead by their sizes (gate, up and down alike).
  const double n_mats = relu2 ? 2.0 : 3.0;
  auto dense = [&](int k, const float* in, int64_t m, float* y) {
    const double first = relu2 ? k - 1 : k;
    return mm(k == 0   ? f.gate
              : k == 1 ? f.up
                       : f.down,
              in, m, y, 0, 0, ahead_window(first / n_mats, (first + 1) / n_mats));
  };
  if (model_.layers[il].ffn_kind == FfnKind::kDense) {
    if (fused_gate_up(model_.layers[il]))
      return gated_mlp_fused(f, model_.layers[il].ffn_act, v, T, out);
    return mlp(dense, f.up->ne[1], v, T, out, true);
  }
  // MoE: softmax (or sigmoid + selection bias) -> top-k -> renormalise -> scale (spec 2), experts
  // grouped over the ubatch's tokens.
  const int64_t E = hp.n_expert, K = hp.n_expert_used;
  float* logits = grow(c_, T * E);
  CHIMERA_RETURN_IF_ERROR(mm(f.router, v, T, logits));
  std::vector<int32_t> sel(T * K);
  route_w_.resize(T * K);
  MoeRouteParams rp;
  rp.n_expert = static_cast<int32_t>(E);
  rp.n_expert_used = static_cast<int32_t>(K);
  rp.renormalize = hp.moe_renormalize;
  rp.weight_scale = hp.moe_weight_scale;
  rp.sigmoid = hp.moe_sigmoid;
  rp.selection_bias = f32(f.router_bias);
  CHIMERA_RETURN_IF_ERROR(moe_route(rp, logits, E, T, sel.data(), route_w_.data()));
  float* ye = grow(e_, T * K * D);  // expert output for (token, rank)
  std::vector<int32_t> slots;
  std::vector<float> xin, yout;
  for (int64_t e = 0; e < E; ++e) {
    slots.clear();
    for (int64_t i = 0; i < T * K; ++i)
      if (sel[i] == e) slots.push_back(static_cast<int32_t>(i));
    if (slots.empty()) continue;
    const int64_t m = static_cast<int64_t>(slots.size()), F = f.up_exps->ne[1];
    xin.resize(m * D);
    for (int64_t j = 0; j < m; ++j) std::memcpy(&xin[j * D], v + (slots[j] / K) * D, D * 4);
    yout.resize(m * D);
    auto expert = [&](int k, const float* in, int64_t rows, float* y) {
      const Weight w = k == 0 ? f.gate_exps : k == 1 ? f.up_exps : f.down_exps;
      return matmul_expert(threads_, as_matrix(w), e, in, rows, y, ws_);
    };
    CHIMERA_RETURN_IF_ERROR(mlp(expert, F, xin.data(), m, yout.data(), false));
    for (int64_t j = 0; j < m; ++j) std::memcpy(ye + int64_t(slots[j]) * D, &yout[j * D], D * 4);
  }
  // Weighted sum in ranking order: the same operations for a token whatever its batch.
  for (int64_t t = 0; t < T; ++t) {
    float* o = out + t * D;
    for (int64_t i = 0; i < D; ++i) o[i] = route_w_[t * K] * ye[(t * K) * D + i];
    for (int64_t j = 1; j < K; ++j)
      for (int64_t i = 0; i < D; ++i) o[i] += route_w_[t * K + j] * ye[(t * K + j) * D + i];
  }
  if (f.up) {  // shared expert: added unweighted, or scaled by sigmoid(shexp_gate . v)
    std::vector<float> shared(T * D);
    CHIMERA_RETURN_IF_ERROR(mlp(dense, f.up->ne[1], v, T, shared.data(), true));
    if (f.shexp_gate) {
      std::vector<float> g(T);
      CHIMERA_RETURN_IF_ERROR(mm(f.shexp_gate, v, T, g.data()));
      for (int64_t t = 0; t < T; ++t) {
        const float s = 1.0f / (1.0f + std::exp(-g[t]));
        for (int64_t i = 0; i < D; ++i) shared[t * D + i] *= s;
      }
    }
    for (int64_t i = 0; i < T * D; ++i) out[i] += shared[i];
  }
  return Status::Ok();
}

bool ForwardPass::fused_gate_up(const LayerWeights& l) {
  return l.ffn_kind == FfnKind::kDense && l.ffn_act != FfnActivation::kReluSquared &&
         gate_up_pair(l.ffn);
}

// Gate and up of one shape, each one 2-D matrix (their types may differ), go through one
// matmul_parts call whatever their places in the file.
bool ForwardPass::gate_up_pair(const FfnWeights& f) {
  if (!f.gate || !f.up) return false;
  for (int d = 0; d < 3; ++d)
    if (f.gate->ne[d] != f.up->ne[d]) return false;
  return f.gate->ne[2] == 1;
}

// Gated MLP (SwiGLU, or GeGLU for Gemma) with gate and up in one parallel region and one
// activation quantization instead of two (matmul_parts: every output element is computed as by
// separate calls), then the activation row by row.
Status ForwardPass::gated_mlp_fused(const FfnWeights& f, FfnActivation act, const float* v,
                                    int64_t T, float* out) {
  const int64_t D = model_.hp.n_embd, F = f.gate->ne[1];
  float* gh = grow(a_, T * 2 * F);  // per row [gate | up]
  float* g = grow(b_, T * F);
  const MatmulPart gate_up[2] = {{as_matrix(f.gate), gh, 2 * F}, {as_matrix(f.up), gh + F, 2 * F}};
  const bool geglu = act == FfnActivation::kGeGluTanh;
  auto activate_columns = [&](int64_t r0, int64_t r1, int64_t j0, int64_t j1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* gate = gh + r * 2 * F;
      if (geglu) {
        geglu_tanh(gate + j0, gate + F + j0, g + r * F + j0, j1 - j0);
      } else {
        swiglu(gate + j0, gate + F + j0, g + r * F + j0, j1 - j0);
      }
    }
  };
  // A small ubatch: gate and up advance column block by column block and each block's
  // activation follows on the thread that computed it (element-wise, so unchanged).
  const bool in_region = fuse_rows(T) && T * F < kParallelFloats && !f.gate_b && !f.up_b;
  MatmulFusion fusion;
  auto activate_block = [&](int, int64_t j0, int64_t j1) { activate_columns(0, T, j0, j1); };
  if (in_region) {
    fusion.lockstep = true;
    fusion.after = activate_block;
  }
  CHIMERA_RETURN_IF_ERROR(mm_normed(gate_up, 2, T, ahead_window(0, 2.0 / 3), fusion));
  if (!in_region) {
    add_bias(gh, T, F, 2 * F, f.gate_b);
    add_bias(gh + F, T, F, 2 * F, f.up_b);
    auto activate = [&](int64_t r0, int64_t r1) { activate_columns(r0, r1, 0, F); };
    if (ThreadContext* pool = pool_for(T * F)) {
      pool->parallel_for(T, kRowGrain, activate);
    } else {
      activate(0, T);
    }
  }
  if (fuse_residual_ && !f.down_b) {
    MatmulFusion add;
    auto add_cols = [&](int, int64_t j0, int64_t j1) { add_branch_columns(T, j0, j1); };
    add.after = add_cols;
    const MatmulPart down{as_matrix(f.down), out, 0};
    CHIMERA_RETURN_IF_ERROR(
        matmul_fused(threads_, &down, 1, g, T, ws_, 0, ahead_window(2.0 / 3, 1.0), add));
    branch_added_ = true;
    return Status::Ok();
  }
  CHIMERA_RETURN_IF_ERROR(mm(f.down, g, T, out, 0, 0, ahead_window(2.0 / 3, 1.0)));
  add_bias(out, T, D, D, f.down_b);
  return Status::Ok();
}

// One row (decode) stays on the old path: there the fused ops measured slower (T = 1 forward of
// the 5M granitehybrid on 2 threads, median 162.6-163.8 -> 164.8-165.7 us), its rows being too
// short for the cross-core traffic saved to pay for the work each share repeats.
bool ForwardPass::fuse_rows(int64_t T) const {
  return T >= 2 && T * model_.hp.n_embd < kParallelFloats;
}

float* ForwardPass::share_slots(int64_t floats) {
  share_stride_ = (floats + 15) / 16 * 16;  // whole cache lines: no false sharing
  const size_t need = static_cast<size_t>(threads_.n_threads() * share_stride_ + 16);
  if (shares_.size() < need) shares_.resize(need);
  const uintptr_t at = reinterpret_cast<uintptr_t>(shares_.data());
  share_base_ = shares_.data() + ((64 - at % 64) % 64) / sizeof(float);
  return share_base_;
}

Status ForwardPass::flush_norm(int64_t T) {
  if (pending_norm_ == nullptr) return Status::Ok();
  const float* w = pending_norm_;
  pending_norm_ = nullptr;
  const int64_t D = model_.hp.n_embd;
  return rms_norm(x_.data(), D, w, grow(u_, T * D), D, D, T, model_.hp.rms_eps, pool_for(T * D));
}

Status ForwardPass::mm_normed(const MatmulPart* parts, int n_parts, int64_t T,
                              const ReadAhead* ahead, MatmulFusion fusion) {
  const int64_t D = model_.hp.n_embd;
  bool in_place = pending_norm_ != nullptr;
  for (int p = 0; p < n_parts; ++p) in_place = in_place && matmul_reads_input(parts[p].w.type);
  if (!in_place) {
    CHIMERA_RETURN_IF_ERROR(flush_norm(T));
    return matmul_fused(threads_, parts, n_parts, u_.data(), T, ws_, 0, ahead, fusion);
  }
  // Share 0 writes u_ itself (later readers of u_ find it normed), the others their own slots.
  const float* w = pending_norm_;
  pending_norm_ = nullptr;
  float* u = grow(u_, T * D);
  share_slots(T * D);
  const float* x = x_.data();
  const float eps = model_.hp.rms_eps;
  auto norm = [&](int ith) -> const float* {
    float* dst = ith == 0 ? u : share_slot(ith);
    for (int64_t t = 0; t < T; ++t) rms_norm_row(x + t * D, w, dst + t * D, D, eps);
    return dst;
  };
  fusion.input = norm;
  return matmul_fused(threads_, parts, n_parts, u, T, ws_, 0, ahead, fusion);
}

void ForwardPass::add_branch_columns(int64_t T, int64_t j0, int64_t j1) {
  // add_branch's operations on columns [j0, j1): scale the branch, then add.
  const int64_t D = model_.hp.n_embd;
  const float s = model_.hp.residual_scale;
  const float* o = d_.data();
  float* x = x_.data();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = j0; j < j1; ++j) {
      float b = o[t * D + j];
      if (s != 0) b *= s;
      x[t * D + j] += b;
    }
}

Status ForwardPass::run_head(const Batch& batch, const Ubatch& ub,
                             const std::function<float*(int32_t)>& logits_out) {
  const ModelHParams& hp = model_.hp;
  const int64_t T = ub.n_tokens(), D = hp.n_embd, V = hp.n_vocab;
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < T; ++r)
    if (batch.logits[ub.batch_index[r]]) rows.push_back(r);
  if (rows.empty()) return Status::Ok();
  const int64_t n = static_cast<int64_t>(rows.size());
  float* h = grow(a_, n * D);
  float* logits = grow(b_, n * V);
  head_dst_.resize(n);
  for (int64_t i = 0; i < n; ++i) head_dst_[i] = logits_out(ub.batch_index[rows[i]]);
  // Logits columns [j0, j1) of every row into place.
  auto place = [&](int64_t j0, int64_t j1) {
    for (int64_t i = 0; i < n; ++i) {
      float* dst = head_dst_[i];
      const float* src = logits + i * V;
      if (hp.logit_scale != 0) {
        for (int64_t j = j0; j < j1; ++j) dst[j] = src[j] / hp.logit_scale;  // HF divides (8.8)
      } else {
        std::memcpy(dst + j0, src + j0, (j1 - j0) * 4);
      }
      if (hp.final_logit_softcap > 0) {  // Gemma: c * tanh(logits / c)
        const float c = hp.final_logit_softcap;
        for (int64_t j = j0; j < j1; ++j) dst[j] = c * std::tanh(dst[j] / c);
      }
    }
  };
  const float* norm_w = f32(model_.output_norm);
  if (fuse_rows(n) && matmul_reads_input(model_.output->type)) {
    // The final norm by every share on its own copy, the logits placed by column blocks.
    share_slots(n * D);
    auto norm = [&](int ith) -> const float* {
      float* dst = ith == 0 ? h : share_slot(ith);
      for (int64_t i = 0; i < n; ++i)
        rms_norm_row(x_.data() + rows[i] * D, norm_w, dst + i * D, D, hp.rms_eps);
      return dst;
    };
    auto after = [&](int, int64_t j0, int64_t j1) { place(j0, j1); };
    MatmulFusion fusion;
    fusion.input = norm;
    fusion.after = after;
    const MatmulPart part{as_matrix(model_.output), logits, 0};
    return matmul_fused(threads_, &part, 1, h, n, ws_, 0, nullptr, fusion);
  }
  for (int64_t i = 0; i < n; ++i) std::memcpy(h + i * D, x_.data() + rows[i] * D, D * 4);
  CHIMERA_RETURN_IF_ERROR(rms_norm(h, D, norm_w, h, D, D, n, hp.rms_eps, pool_for(n * D)));
  CHIMERA_RETURN_IF_ERROR(mm(model_.output, h, n, logits));
  place(0, V);
  return Status::Ok();
}

Status ForwardPass::run_head_greedy(const Batch& batch, const Ubatch& ub,
                                    const std::function<int32_t*(int32_t)>& token_out) {
  const ModelHParams& hp = model_.hp;
  const int64_t T = ub.n_tokens(), D = hp.n_embd, V = hp.n_vocab;
  int64_t n = 0;
  for (int64_t r = 0; r < T; ++r) n += batch.logits[ub.batch_index[r]] ? 1 : 0;
  if (n == 0) return Status::Ok();
  // A scale or a cap applied to the logits could make unequal logits equal: take every logit.
  if ((hp.logit_scale != 0 && hp.logit_scale != 1) || hp.final_logit_softcap > 0) {
    float* l = grow(f_, n * V);
    int64_t i = 0;
    std::vector<int32_t> entries;
    CHIMERA_RETURN_IF_ERROR(run_head(batch, ub, [&](int32_t entry) {
      entries.push_back(entry);
      return l + (i++) * V;
    }));
    for (int64_t k = 0; k < n; ++k)
      *token_out(entries[k]) = first_argmax(l + k * V, static_cast<int32_t>(V));
    return Status::Ok();
  }
  if (!argmax_packed_) {
    argmax_head_ = ArgmaxHead::pack(as_matrix(model_.output));
    argmax_packed_ = true;
  }
  float* h = grow(a_, n * D);
  n = 0;
  for (int64_t r = 0; r < T; ++r)
    if (batch.logits[ub.batch_index[r]]) std::memcpy(h + (n++) * D, x_.data() + r * D, D * 4);
  CHIMERA_RETURN_IF_ERROR(
      rms_norm(h, D, f32(model_.output_norm), h, D, D, n, hp.rms_eps, pool_for(n * D)));
  argmax_tokens_.resize(n);
  CHIMERA_RETURN_IF_ERROR(matmul_argmax(threads_, as_matrix(model_.output), argmax_head_.get(), h,
                                        n, argmax_tokens_.data(), ws_, argmax_scratch_));
  n = 0;
  for (int64_t r = 0; r < T; ++r)
    if (batch.logits[ub.batch_index[r]]) *token_out(ub.batch_index[r]) = argmax_tokens_[n++];
  return Status::Ok();
}

}  // namespace chimera
