#include "runtime/context.h"

#include <algorithm>

namespace chimera {

Context::Context(const Model& model, const ContextParams& params)
    : model_(model),
      params_(params),
      threads_(params.threads ? params.threads : std::make_shared<ThreadContext>(params.n_threads)),
      fwd_(model, *threads_) {}

Result<std::unique_ptr<Context>> Context::create(const Model& model, const ContextParams& params) {
  if (!params.threads && (params.n_threads < 1 || params.n_threads > 256))
    return Error(ErrorCode::kInvalidArgument, "thread count ", params.n_threads,
                 " out of range 1..256");
  MemoryConfig cfg = memory_config_for(model);
  cfg.max_seqs = params.max_seqs;
  cfg.page_size = params.page_size;
  cfg.kv_type = params.kv_type;
  cfg.budget_bytes = params.memory_budget;
  cfg.snapshot_budget_bytes = params.snapshot_budget;
  cfg.set_snapshot_policy(
      {params.snapshot_interval, params.snapshot_prompt_end, params.snapshot_prompt_start});
  cfg.max_ubatch_tokens = params.max_ubatch;
  cfg.window_reserve = params.window_reserve;
  std::unique_ptr<Context> ctx(new Context(model, params));
  CHIMERA_ASSIGN_OR_RETURN(ctx->mem_, HybridMemory::create(cfg));
  return ctx;
}

Status Context::decode(const Batch& batch) {
  CHIMERA_RETURN_IF_ERROR(run(batch, {}));
  CHIMERA_RETURN_IF_ERROR(mem_->commit());
  stats_.tokens_decoded += batch.size();
  ++stats_.batches;
  return Status::Ok();
}

Status Context::decode_open(const Batch& batch, const std::vector<int32_t>& step_seqs) {
  CHIMERA_RETURN_IF_ERROR(run(batch, step_seqs));
  open_size_ = batch.size();
  return Status::Ok();
}

Status Context::accept(const std::vector<SeqKeep>& keep) {
  if (!mem_->in_batch()) return Error(ErrorCode::kInvalidArgument, "accept: no open batch");
  for (const SeqKeep& k : keep)
    if (k.n > 0 && k.n < open_count(k.seq) && mem_->replays_prefix(k.seq))
      CHIMERA_RETURN_IF_ERROR(fwd_.replay_prefix(*mem_, k.seq, static_cast<uint32_t>(k.n)));
  CHIMERA_RETURN_IF_ERROR(mem_->commit(keep));
  uint64_t kept = open_size_;
  for (const SeqKeep& k : keep) kept -= open_count(k.seq) - k.n;
  stats_.tokens_decoded += open_size_;
  stats_.tokens_dropped += open_size_ - kept;
  ++stats_.batches;
  return Status::Ok();
}

void Context::reject() {
  mem_->abort();
  logits_row_.clear();
}

Status Context::run(const Batch& batch, const std::vector<int32_t>& step_seqs) {
  const bool recompute = params_.verify_by_recompute;
  CHIMERA_ASSIGN_OR_RETURN(const BatchPlan* plan,
                           mem_->begin_batch(batch, recompute ? std::vector<int32_t>{} : step_seqs,
                                             recompute ? step_seqs : std::vector<int32_t>{}));
  open_seq_.assign(batch.seq.begin(), batch.seq.end());
  const int64_t V = model_.hp.n_vocab;
  logits_row_.assign(batch.size(), -1);
  int64_t n_rows = 0;
  for (size_t i = 0; i < batch.size(); ++i)
    if (i < batch.logits.size() && batch.logits[i]) logits_row_[i] = n_rows++;
  if (greedy_only_) {
    greedy_.assign(n_rows, -1);
  } else {
    logits_.resize(n_rows * V);
  }
  for (size_t u = 0; u < plan->ubatches.size(); ++u) {
    Status st;
    if (cancel_ && cancel_->load()) {
      st = Error(ErrorCode::kCancelled, "decode cancelled before ubatch ", u);
    } else if (fail_ubatch_in_ == 0) {
      st = Error(ErrorCode::kInternal, "injected compute failure in ubatch ", u);
    } else if (greedy_only_) {
      st = fwd_.run_greedy(*mem_, batch, *plan, u,
                           [&](int32_t entry) { return greedy_.data() + logits_row_[entry]; });
    } else {
      st = fwd_.run(*mem_, batch, *plan, u,
                    [&](int32_t entry) { return logits_.data() + logits_row_[entry] * V; });
    }
    if (fail_ubatch_in_ >= 0) --fail_ubatch_in_;
    if (!st.ok()) {
      mem_->abort();
      logits_row_.assign(batch.size(), -1);
      return st;
    }
    ++stats_.ubatches;
  }
  return Status::Ok();
}

uint64_t Context::open_count(int32_t seq) const {
  return static_cast<uint64_t>(std::count(open_seq_.begin(), open_seq_.end(), seq));
}

const float* Context::logits(size_t entry) const {
  if (greedy_only_ || entry >= logits_row_.size() || logits_row_[entry] < 0) return nullptr;
  return logits_.data() + logits_row_[entry] * model_.hp.n_vocab;
}

int32_t Context::greedy_token(size_t entry) const {
  if (!greedy_only_ || entry >= logits_row_.size() || logits_row_[entry] < 0) return -1;
  return greedy_[static_cast<size_t>(logits_row_[entry])];
}

Status Context::replay(const Replay& r) {
  if (r.empty()) return Status::Ok();
  Batch b = r.as_batch(false);
  CHIMERA_RETURN_IF_ERROR(decode(b));
  stats_.tokens_replayed += b.size();
  return Status::Ok();
}

Status Context::seq_rm(int32_t seq, int64_t p0, int64_t p1) {
  CHIMERA_ASSIGN_OR_RETURN(Replay r, mem_->seq_rm(seq, p0, p1));
  return replay(r);
}

}  // namespace chimera
