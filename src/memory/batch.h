// Input batches, their validation, and ragged ubatch planning.
//
// A batch is a list of entries (token, position, sequence id). Entries of one sequence must be in
// position order and continue the sequence exactly; entries of different sequences may
// interleave. A token belongs to one sequence (to start several sequences from one prompt,
// decode it once and seq_cp).
//
// Planning is ragged: a ubatch holds one run of consecutive tokens per sequence it touches, of
// any length (like cu_seqlens), up to max_ubatch_tokens in total. Runs are also cut where the
// snapshot policy wants the state of a sequence (multiples of the snapshot interval). Because
// every kernel is batch-invariant, the plan never changes results.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace chimera {

struct Batch {
  std::vector<int32_t> tokens;
  std::vector<int32_t> pos;
  std::vector<int32_t> seq;
  std::vector<uint8_t> logits;  // for the engine: which entries want logits (the memory ignores it)

  void add(int32_t token, int32_t position, int32_t seq_id, bool want_logits = false) {
    tokens.push_back(token);
    pos.push_back(position);
    seq.push_back(seq_id);
    logits.push_back(want_logits ? 1 : 0);
  }
  size_t size() const { return tokens.size(); }
};

// One sequence's share of a ubatch: n_tokens consecutive tokens of `seq`, the first at position
// pos0 and token index `first` (index in the sequence's token list = pos0 - position base).
struct SeqRun {
  int32_t seq = 0;
  int32_t pos0 = 0;
  uint32_t first = 0;
  uint32_t n_tokens = 0;
  uint32_t offset = 0;  // this run's tokens are Ubatch::batch_index[offset .. offset + n_tokens)
  // The memory keeps the recurrent state reached at the end of this run as a snapshot.
  bool snapshot_after = false;
};

struct Ubatch {
  std::vector<SeqRun> runs;          // at most one run per sequence
  std::vector<int32_t> batch_index;  // entry indices into the Batch, run after run
  uint32_t n_tokens() const { return static_cast<uint32_t>(batch_index.size()); }
};

struct BatchPlan {
  std::vector<Ubatch> ubatches;
};

// Checks the whole batch: equal array sizes, non-empty, token ids < n_vocab, sequence ids in
// [0, max_seqs), positions of each sequence contiguous and starting at next_pos[seq]. The error
// names the entry. next_pos.size() == max_seqs.
Status validate_batch(const Batch& batch, uint32_t n_vocab, uint32_t max_seqs,
                      const std::vector<int64_t>& next_pos);

// Cuts a validated batch into ragged ubatches of at most max_tokens tokens. seq_len[s] is the
// sequence's token count before the batch; runs end at token counts that are multiples of
// cut_interval (0 = never), and those runs are flagged snapshot_after.
BatchPlan plan_ubatches(const Batch& batch, uint32_t max_tokens,
                        const std::vector<uint32_t>& seq_len, const std::vector<int64_t>& next_pos,
                        uint32_t cut_interval);

}  // namespace chimera
