// Context: a model plus its hybrid memory and threads; decodes batches over many sequences.
//
//   auto ctx = Context::create(model, params);
//   Batch b;  for each prompt token: b.add(tok, pos, seq, want_logits_for_last);
//   ctx->decode(b);                    // all-or-nothing: on error the memory is as before
//   const float* l = ctx->logits(i);   // n_vocab logits of batch entry i (if requested)
//   ctx->seq_rm(seq, p0, -1);          // exact truncation: replays from a snapshot as needed
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "core/threads.h"
#include "memory/hybrid_memory.h"
#include "models/forward.h"
#include "models/model.h"

namespace chimera {

struct ContextParams {
  int n_threads = 2;
  uint32_t max_seqs = 16;
  uint32_t page_size = 32;              // tokens per KV page
  GgmlType kv_type = GgmlType::F16;     // F32, F16 or BF16
  uint64_t memory_budget = 2ull << 30;  // bytes for KV pages + recurrent states + snapshots
  uint64_t snapshot_budget = 256ull << 20;
  uint32_t max_ubatch = 512;          // tokens per ubatch (never changes results)
  uint32_t snapshot_interval = 256;   // recurrent snapshots every N tokens (bounded replay)
  bool snapshot_prompt_end = true;    // ... at the end of each prompt (multi-token run)
  bool snapshot_prompt_start = true;  // ... before each prompt (turn boundaries)
  // Sliding-window layers: rows kept behind the window for free rollbacks (MemoryConfig);
  // UINT32_MAX keeps every row.
  uint32_t window_reserve = 32;
  // Speculative verification: recompute the kept prefix's recurrent state from the inputs the
  // verify pass kept (true) instead of storing the state after every verified token (false).
  // Both are exact; recompute writes one state per verify instead of one per token.
  bool verify_by_recompute = true;
  // Run on this worker pool (its thread count, not n_threads) instead of an own one. A draft
  // model shares its target's: each pool's workers spin ~0.2 ms after a job before they sleep
  // (ThreadContext), so with two pools on two cores the idle one's spinning worker takes the core
  // the busy one's needs, every time drafting and verification alternate. The contexts sharing a
  // pool must decode from one thread at a time.
  std::shared_ptr<ThreadContext> threads;
  // Sets the three fields above (memory_config.h: conversation() or one_shot()).
  void set_snapshot_policy(const SnapshotPolicy& p) {
    snapshot_interval = p.interval;
    snapshot_prompt_end = p.prompt_end;
    snapshot_prompt_start = p.prompt_start;
  }
};

struct ContextStats {
  uint64_t tokens_decoded = 0;   // tokens run through the model, replays included
  uint64_t tokens_replayed = 0;  // of which replays after seq_rm / seq_add
  uint64_t batches = 0;
  uint64_t ubatches = 0;
  uint64_t tokens_dropped = 0;  // verified but not kept (rejected draft tokens)
};

class Context {
 public:
  static Result<std::unique_ptr<Context>> create(const Model& model, const ContextParams& params);

  const Model& model() const { return model_; }
  HybridMemory& memory() { return *mem_; }
  const HybridMemory& memory() const { return *mem_; }
  ThreadContext& threads() { return *threads_; }
  // The pool, for another context to share (ContextParams::threads).
  std::shared_ptr<ThreadContext> shared_threads() const { return threads_; }
  int32_t n_vocab() const { return static_cast<int32_t>(model_.hp.n_vocab); }

  // Decodes the batch transactionally. Logits of entries with batch.logits[i] set are kept until
  // the next decode. Errors (invalid batch, out of memory, cancellation) leave memory unchanged.
  Status decode(const Batch& batch);
  // n_vocab logits of batch entry i of the last successful decode; nullptr if not requested
  // (or in greedy-only mode).
  const float* logits(size_t entry) const;
  // Greedy-only mode (a greedy drafter): decodes keep, for each entry that wants logits, only
  // the first index of their largest, bit for bit first_argmax of the logits (lm_argmax.h), found
  // without computing most of them; logits() is then null. -1 where not requested.
  void set_greedy_only(bool on) { greedy_only_ = on; }
  int32_t greedy_token(size_t entry) const;

  // Speculative verification: decodes like decode(), but the batch stays open, its logits
  // readable, until accept() keeps a prefix of the step_seqs sequences' tokens (the others keep
  // all of theirs) or reject() drops the whole batch. No other operation may run in between. No
  // replay of the model: the memory then holds exactly what decoding only the kept tokens would
  // have left, bit for bit. Recurrent states of a kept prefix are recomputed by accept() from the
  // verify pass's kept conv/scan inputs (ContextParams::verify_by_recompute), or were stored after
  // every token.
  Status decode_open(const Batch& batch, const std::vector<int32_t>& step_seqs);
  Status accept(const std::vector<SeqKeep>& keep);
  // ContextParams::verify_by_recompute, for the next decode_open (A/B benchmarks).
  void set_verify_by_recompute(bool on) { params_.verify_by_recompute = on; }
  void reject();
  bool batch_open() const { return mem_->in_batch(); }

  // Exact removal of positions [p0, p1) (p1 = -1: to the end), running the replay the memory
  // asks for. If the replay itself fails, the sequence is left holding its kept prefix.
  Status seq_rm(int32_t seq, int64_t p0, int64_t p1);
  // Runs a Replay returned by a memory operation (no logits).
  Status replay(const Replay& r);

  // Cancellation: when the flag becomes true, the running decode stops between ubatches and
  // returns kCancelled with the memory restored.
  void set_cancel_flag(const std::atomic<bool>* flag) { cancel_ = flag; }
  // Tests: make the n-th next ubatch fail with a compute error (-1: off).
  void inject_compute_failure(int64_t n) { fail_ubatch_in_ = n; }

  const ContextStats& stats() const { return stats_; }

 private:
  Context(const Model& model, const ContextParams& params);
  // Begins the batch and runs every ubatch; on error the memory is as before.
  Status run(const Batch& batch, const std::vector<int32_t>& step_seqs);

  const Model& model_;
  ContextParams params_;
  std::shared_ptr<ThreadContext> threads_;
  std::unique_ptr<HybridMemory> mem_;
  ForwardPass fwd_;
  std::vector<float> logits_;
  std::vector<int64_t> logits_row_;  // batch entry -> row in logits_ (-1: none)
  bool greedy_only_ = false;
  std::vector<int32_t> greedy_;      // greedy-only mode: the token per row of logits_row_
  std::vector<int32_t> open_seq_;    // sequence of each entry of the last batch run
  size_t open_size_ = 0;
  uint64_t open_count(int32_t seq) const;
  const std::atomic<bool>* cancel_ = nullptr;
  int64_t fail_ubatch_in_ = -1;
  ContextStats stats_;
};

}  // namespace chimera
