// The forward pass shared by every architecture: embeddings, then per layer a pre-normed
// attention, Mamba2, gated-DeltaNet (forward_delta_net.cpp) or short-conv (forward_short_conv.cpp)
// mixer or none, and an optional
// dense (SwiGLU or squared-ReLU) or MoE FFN (with the Granite multipliers when set), then the final
// norm and the LM head for the rows that want logits.
//
// Exactness: every step is row-local (matmul, norms, activations, attention per query) or walks
// one sequence's run in token order (conv, scan), with batch-invariant kernels; so a token's
// logits never depend on the ubatch it was computed in.
#pragma once

#include <functional>
#include <vector>

#include "core/threads.h"
#include "kernels/lm_argmax.h"
#include "kernels/matmul.h"
#include "kernels/ssm.h"
#include "memory/hybrid_memory.h"
#include "models/model.h"

namespace chimera {

// The memory layout a model needs (layer kinds and state sizes); the caller adds budgets.
MemoryConfig memory_config_for(const Model& model);

class ForwardPass {
 public:
  ForwardPass(const Model& model, ThreadContext& threads);

  // Verification by prefix recompute (HybridMemory::begin_batch prefix_seqs): writes into the
  // memory, for every recurrent layer, the state after the first n of seq's batch tokens, by
  // re-running its conv and scan from the pre-batch state over the inputs the verify pass kept.
  // Same kernels and per-token arithmetic, so bit-identical to having decoded only those tokens.
  Status replay_prefix(HybridMemory& mem, int32_t seq, uint32_t n);

  // Runs ubatch `u` of the memory's current batch plan. For each ubatch row r whose batch entry
  // wants logits, writes n_vocab floats to logits_out(batch entry index).
  template <typename LogitsOut>
  Status run(HybridMemory& mem, const Batch& batch, const BatchPlan& plan, size_t u,
             LogitsOut&& logits_out) {
    CHIMERA_RETURN_IF_ERROR(run_layers(mem, batch, plan, u));
    return run_head(batch, plan.ubatches[u], [&](int32_t entry) { return logits_out(entry); });
  }

  // The same, but for each row that wants logits writes only the first index of their largest
  // (first_argmax of the logits run() gives) to *token_out(batch entry index): a greedy drafter's
  // whole use of them, found without computing most of them (lm_argmax.h).
  template <typename TokenOut>
  Status run_greedy(HybridMemory& mem, const Batch& batch, const BatchPlan& plan, size_t u,
                    TokenOut&& token_out) {
    CHIMERA_RETURN_IF_ERROR(run_layers(mem, batch, plan, u));
    return run_head_greedy(batch, plan.ubatches[u],
                           [&](int32_t entry) { return token_out(entry); });
  }

 private:
  Status run_layers(HybridMemory& mem, const Batch& batch, const BatchPlan& plan, size_t u);
  Status run_head(const Batch& batch, const Ubatch& ub,
                  const std::function<float*(int32_t)>& logits_out);
  Status run_head_greedy(const Batch& batch, const Ubatch& ub,
                         const std::function<int32_t*(int32_t)>& token_out);
  Status attention_layer(uint32_t il, HybridMemory& mem, const Ubatch& ub, size_t u);
  Status mamba2_layer(uint32_t il, HybridMemory& mem, const Ubatch& ub, size_t u);
  Status delta_net_layer(uint32_t il, HybridMemory& mem, const Ubatch& ub, size_t u);
  Status short_conv_layer(uint32_t il, HybridMemory& mem, const Ubatch& ub, size_t u);
  Status ffn(uint32_t il, int64_t T);
  // One Mamba2 run's conv and scan arguments over raw [xBC | dt] rows (stride floats apart).
  void mamba2_run_args(uint32_t il, const float* xbc_dt, int64_t stride, uint32_t n_tokens,
                       const RecurrentRun& s, float* xr, float* y, SsmConvArgs& ca,
                       SsmScanArgs& sa) const;
  Status delta_net_prefix(uint32_t il, const float* kept, uint32_t n, const RecurrentRun& s);
  Status short_conv_prefix(uint32_t il, const float* kept, uint32_t n, const RecurrentRun& s);
  // The buffer for a prefix_seqs run's per-token inputs of layer il (per_token floats each).
  float* keep_inputs(uint32_t il, int32_t seq, uint32_t n_tokens, size_t per_token);
  static bool gate_up_pair(const FfnWeights& f);
  // Whether layer l's FFN is a dense gated MLP with gate and up in one region (gated_mlp_fused).
  static bool fused_gate_up(const LayerWeights& l);
  Status gated_mlp_fused(const FfnWeights& f, FfnActivation act, const float* v, int64_t T,
                         float* out);
  // The pool for a row-wise op over `floats` floats, or null where the calling thread alone is
  // faster (small ops: a decode step's norms).
  ThreadContext* pool_for(int64_t floats);
  Status mm(Weight w, const float* x, int64_t m, float* y, int64_t x_stride = 0,
            int64_t y_stride = 0, const ReadAhead* ahead = nullptr);
  // Bytes [from, to) x the total of the read-ahead ranges (null when there are none).
  const ReadAhead* ahead_window(double from, double to);
  // Small ubatches of 2+ rows (speculative verification) fold row-wise work into the matmul regions
  // beside it: at 2 threads one thread running it alone between regions, the other waiting, and
  // the cache lines crossing cores twice cost more than the work itself. Per element the
  // arithmetic is unchanged. See fuse_rows().
  bool fuse_rows(int64_t T) const;
  // The matmul of u_ (a layer's pre-normed input) by `parts`. A pre-norm still pending
  // (pending_norm_) is done there: by every share on its own copy of the rows when fusable,
  // else first, as before.
  Status mm_normed(const MatmulPart* parts, int n_parts, int64_t T, const ReadAhead* ahead,
                   MatmulFusion fusion);
  Status flush_norm(int64_t T);
  // Per-share input rows for MatmulFusion::input: a slot of `floats` floats per share, 64-byte
  // aligned. Sized before the region (share_slots), read in it (share_slot).
  float* share_slots(int64_t floats);
  float* share_slot(int ith) const { return share_base_ + ith * share_stride_; }
  // MatmulFusion::after adding the residual branch (the matmul writes d_) into x_, column by
  // column, as run_layers' add_branch would; sets branch_added_.
  void add_branch_columns(int64_t T, int64_t j0, int64_t j1);

  const Model& model_;
  ThreadContext& threads_;
  MatmulWorkspace ws_;
  // Scratch, grown to the largest ubatch seen.
  std::vector<float> x_, u_, a_, b_, c_, d_, e_, f_;
  std::vector<int32_t> pos_, ids_, n_visible_, first_visible_, seq_of_;
  std::vector<float> route_w_;
  // The LM head's int8 copy for run_greedy, packed at its first use (null: not packable).
  std::unique_ptr<ArgmaxHead> argmax_head_;
  bool argmax_packed_ = false;
  std::vector<float> argmax_scratch_;
  std::vector<int32_t> argmax_tokens_;
  std::vector<float> par_;  // the attention half of a parallel (Falcon-H1) layer
  // Memory-layer index of each model layer's KV cache / recurrent state (memory_config_for).
  std::vector<uint32_t> mem_attn_, mem_recr_;
  std::vector<SsmConvArgs> conv_args_;  // per run of the ubatch (mamba2_layer)
  std::vector<SsmScanArgs> scan_args_;
  std::vector<float*> conv_steps_, ssm_steps_;  // per-token state buffers, run after run
  std::vector<float*> keep_at_;                 // per run: where its inputs are kept, or null
  std::vector<float*> head_dst_;                // per logits row: its destination
  // Inputs kept for prefix recompute, per sequence of the current batch and model layer; the
  // first n_kept_ entries are this batch's (reset by its first ubatch).
  struct KeptInputs {
    int32_t seq = -1;
    uint32_t n_tokens = 0;
    std::vector<std::vector<float>> layer;
  };
  std::vector<KeptInputs> kept_;
  size_t n_kept_ = 0;
  // Several sequences: the next layer's recurrent states (all runs), prefetched by this layer's
  // FFN matmuls so that the scan's state reads overlap their compute (see ReadAhead).
  std::vector<ReadAhead::Range> ahead_ranges_;
  uint64_t ahead_bytes_ = 0;
  ReadAhead ahead_;
  // Fusion state (fuse_rows): the pre-norm weights u_ still waits for (u_ = rms_norm(x_)), whether
  // the next mixer/FFN may add its branch into x_ in its output matmul's region, and whether it
  // did.
  const float* pending_norm_ = nullptr;
  bool fuse_residual_ = false;
  bool branch_added_ = false;
  std::vector<float> shares_;
  float* share_base_ = nullptr;
  int64_t share_stride_ = 0;
};

}  // namespace chimera
