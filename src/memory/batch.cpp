#include "memory/batch.h"

#include <algorithm>

namespace chimera {

Status validate_batch(const Batch& batch, uint32_t n_vocab, uint32_t max_seqs,
                      const std::vector<int64_t>& next_pos) {
  const size_t n = batch.tokens.size();
  if (n == 0) return Error(ErrorCode::kInvalidArgument, "batch: empty");
  if (batch.pos.size() != n || batch.seq.size() != n ||
      (!batch.logits.empty() && batch.logits.size() != n))
    return Error(ErrorCode::kInvalidArgument, "batch: array sizes differ (tokens ", n,
                 ", positions ", batch.pos.size(), ", sequences ", batch.seq.size(), ", logits ",
                 batch.logits.size(), ")");
  if (n > (1u << 30)) return Error(ErrorCode::kInvalidArgument, "batch: ", n, " entries");
  CHIMERA_CHECK(next_pos.size() == max_seqs, "next_pos size");
  std::vector<int64_t> expect = next_pos;
  for (size_t i = 0; i < n; ++i) {
    const int32_t tok = batch.tokens[i], s = batch.seq[i], p = batch.pos[i];
    if (tok < 0 || static_cast<uint32_t>(tok) >= n_vocab)
      return Error(ErrorCode::kInvalidArgument, "batch entry ", i, ": token id ", tok,
                   " out of range [0, ", n_vocab, ")");
    if (s < 0 || static_cast<uint32_t>(s) >= max_seqs)
      return Error(ErrorCode::kInvalidArgument, "batch entry ", i, ": sequence id ", s,
                   " out of range [0, ", max_seqs, ")");
    if (p != expect[s]) {
      if (expect[s] == next_pos[s])
        return Error(ErrorCode::kInvalidArgument, "batch entry ", i, " (sequence ", s,
                     "): position ", p, ", but the sequence continues at position ", expect[s]);
      return Error(ErrorCode::kInvalidArgument, "batch entry ", i, " (sequence ", s, "): position ",
                   p, ", expected ", expect[s],
                   " (positions of a sequence must be contiguous and in order)");
    }
    if (expect[s] >= INT32_MAX)
      return Error(ErrorCode::kInvalidArgument, "batch entry ", i, " (sequence ", s,
                   "): position overflows int32");
    ++expect[s];
  }
  return Status::Ok();
}

BatchPlan plan_ubatches(const Batch& batch, uint32_t max_tokens,
                        const std::vector<uint32_t>& seq_len, const std::vector<int64_t>& next_pos,
                        uint32_t cut_interval) {
  CHIMERA_CHECK(max_tokens > 0, "max_tokens 0");
  // Entries of each sequence, in order, sequences in order of first appearance.
  std::vector<int32_t> order;
  std::vector<std::vector<int32_t>> entries(seq_len.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    const int32_t s = batch.seq[i];
    if (entries[s].empty()) order.push_back(s);
    entries[s].push_back(static_cast<int32_t>(i));
  }
  std::vector<uint32_t> done(seq_len.size(), 0);  // entries of each sequence already planned
  size_t remaining = batch.size();
  BatchPlan plan;
  while (remaining > 0) {
    Ubatch ub;
    uint32_t space = max_tokens;
    for (int32_t s : order) {
      const uint32_t total = static_cast<uint32_t>(entries[s].size());
      if (done[s] == total) continue;
      const uint32_t first = seq_len[s] + done[s];
      uint32_t take = std::min(space, total - done[s]);
      bool cut = false;
      if (cut_interval > 0) {
        const uint32_t to_cut = cut_interval - first % cut_interval;
        if (to_cut <= take) {
          take = to_cut;
          cut = true;
        }
      }
      SeqRun run;
      run.seq = s;
      run.pos0 = static_cast<int32_t>(next_pos[s] + done[s]);
      run.first = first;
      run.n_tokens = take;
      run.offset = ub.n_tokens();
      run.snapshot_after = cut;
      for (uint32_t k = 0; k < take; ++k) ub.batch_index.push_back(entries[s][done[s] + k]);
      ub.runs.push_back(run);
      done[s] += take;
      remaining -= take;
      space -= take;
      if (space == 0) break;
    }
    plan.ubatches.push_back(std::move(ub));
  }
  return plan;
}

}  // namespace chimera
