// Sequence operations with the exact meanings of MEMORY.md section 3, explicit snapshots, and
// read-only inspection.
#include <algorithm>
#include <cstring>

#include "memory/hybrid_memory.h"

namespace chimera {

void HybridMemory::release_seq(SeqBook& b) {
  b.pages = std::make_shared<PageList>(kv_.get(), win_.get());
  set_snaps(b, {});
  if (has_recurrent_ && b.slot != zero_slot_) {
    states_->ref(zero_slot_);
    states_->unref(b.slot);
    b.slot = zero_slot_;
  }
  b.n = 0;
  b.pos_base = 0;
}

void HybridMemory::truncate_seq(SeqBook& b, uint32_t n, uint32_t slot,
                                const std::shared_ptr<PageList>& pages) {
  CHIMERA_CHECK(n <= b.n, "truncate_seq to ", n, " of ", b.n);
  std::vector<uint64_t> keep;
  for (uint64_t id : b.snaps)
    if (snaps_.find(id)->n_tokens <= n) keep.push_back(id);
  const uint32_t np = pages_for(n);
  if (pages) {
    CHIMERA_CHECK(pages->size() == np, "snapshot page list size");
    b.pages = pages;
  } else if (b.pages->size() > np) {
    if (b.pages.use_count() == 1)
      b.pages->truncate(np);
    else
      b.pages = b.pages->clone_prefix(np);
  }
  // Alone on the partial last page: rows past n are nobody's, so appending may reuse them.
  if (n % cfg_.page_size != 0 && b.pages.use_count() == 1 && kv_->refs(b.pages->ids().back()) == 1)
    kv_->set_fill(b.pages->ids().back(), n % cfg_.page_size);
  if (has_recurrent_) {
    states_->ref(slot);
    states_->unref(b.slot);
    b.slot = slot;
  }
  b.n = n;
  set_snaps(b, std::move(keep));
}

uint32_t HybridMemory::restore_point(const SeqBook& b, uint32_t n, const Snapshot** snap) const {
  *snap = nullptr;
  // Attention alone: any prefix is exact as it stands, unless window rows it needs are gone.
  if (!has_recurrent_ && window_ok(*b.pages, n)) return n;
  for (auto it = b.snaps.rbegin(); it != b.snaps.rend(); ++it) {
    const Snapshot* s = snaps_.find(*it);
    if (s->n_tokens <= n) {
      *snap = s;
      return s->n_tokens;
    }
  }
  return 0;
}

Result<Replay> HybridMemory::seq_rm(int32_t seq, int64_t p0, int64_t p1) {
  CHIMERA_RETURN_IF_ERROR(check_idle("seq_rm"));
  CHIMERA_RETURN_IF_ERROR(check_seq(seq, "seq_rm"));
  if (p0 >= 0 && p1 >= 0 && p1 < p0)
    return Error(ErrorCode::kInvalidArgument, "seq_rm(", seq, ", ", p0, ", ", p1,
                 "): end before start");
  SeqBook& b = seqs_[seq];
  const int64_t n = b.n;
  const int64_t i0 = std::clamp<int64_t>(p0 < 0 ? 0 : p0 - b.pos_base, 0, n);
  const int64_t i1 = std::clamp<int64_t>(p1 < 0 ? n : p1 - b.pos_base, 0, n);
  Replay rep;
  rep.seq = seq;
  if (i0 >= i1) {  // nothing held in the range
    rep.pos0 = static_cast<int32_t>(b.pos_base + n);
    return rep;
  }
  if (i0 == 0 && i1 == n) {
    release_seq(b);
    return rep;
  }
  const Snapshot* snap = nullptr;
  const uint32_t r = restore_point(b, static_cast<uint32_t>(i0), &snap);
  const std::vector<int32_t> toks = tokens(seq);
  rep.tokens.assign(toks.begin() + r, toks.begin() + i0);
  rep.tokens.insert(rep.tokens.end(), toks.begin() + i1, toks.end());
  const std::shared_ptr<PageList> pages = snap ? snap->pages : nullptr;
  truncate_seq(b, r, snap ? snap->slot : zero_slot_, pages);
  rep.pos0 = static_cast<int32_t>(b.pos_base + r);
  return rep;
}

Status HybridMemory::seq_cp(int32_t src, int32_t dst) {
  CHIMERA_RETURN_IF_ERROR(check_idle("seq_cp"));
  CHIMERA_RETURN_IF_ERROR(check_seq(src, "seq_cp (source)"));
  CHIMERA_RETURN_IF_ERROR(check_seq(dst, "seq_cp (destination)"));
  if (src == dst) return Status::Ok();
  SeqBook& s = seqs_[src];
  SeqBook& d = seqs_[dst];
  d.pages = s.pages;  // shared; whoever changes it first clones it
  d.n = s.n;
  d.pos_base = s.pos_base;
  if (has_recurrent_) {
    states_->ref(s.slot);
    states_->unref(d.slot);
    d.slot = s.slot;
  }
  set_snaps(d, s.snaps);
  return Status::Ok();
}

Status HybridMemory::seq_keep(int32_t seq) {
  CHIMERA_RETURN_IF_ERROR(check_idle("seq_keep"));
  CHIMERA_RETURN_IF_ERROR(check_seq(seq, "seq_keep"));
  for (size_t i = 0; i < seqs_.size(); ++i)
    if (static_cast<int32_t>(i) != seq) release_seq(seqs_[i]);
  return Status::Ok();
}

Result<ShiftOutcome> HybridMemory::seq_add(int32_t seq, int64_t p0, int64_t p1, int64_t delta) {
  CHIMERA_RETURN_IF_ERROR(check_idle("seq_add"));
  CHIMERA_RETURN_IF_ERROR(check_seq(seq, "seq_add"));
  SeqBook& b = seqs_[seq];
  ShiftOutcome out;
  out.replay.seq = seq;
  const bool whole =
      b.n == 0 || ((p0 < 0 || p0 <= b.pos_base) && (p1 < 0 || p1 >= b.pos_base + b.n));
  if (!whole)
    return Error(ErrorCode::kInvalidArgument, "seq_add(", seq, ", ", p0, ", ", p1, ", ", delta,
                 "): only a shift of the whole sequence (positions ", b.pos_base, "..",
                 b.pos_base + b.n - 1,
                 ") keeps positions contiguous; seq_rm already renumbers what follows a removal");
  // pos_base is in [0, 2^31) and n <= 2^31, so these bounds cannot overflow; pos_base + delta
  // could (delta is the caller's int64).
  if (delta < -b.pos_base || delta > int64_t{INT32_MAX} - b.pos_base - int64_t{b.n})
    return Error(ErrorCode::kInvalidArgument, "seq_add(", seq, ", ", p0, ", ", p1, ", ", delta,
                 "): positions ", b.pos_base, "..", b.pos_base + b.n,
                 " shifted by that would leave [0, 2^31)");
  const int64_t base = b.pos_base + delta;
  out.replay.pos0 = static_cast<int32_t>(base);
  if (delta == 0 || b.n == 0 || !cfg_.positions_matter || !has_attention()) {
    b.pos_base = base;  // positions are book-keeping only: exact as is
    return out;
  }
  // Rotating cached K would be approximate; the exact way is to recompute at the new positions.
  out.needs_replay = true;
  out.replay.tokens = tokens(seq);
  truncate_seq(b, 0, zero_slot_, nullptr);
  b.pos_base = base;
  return out;
}

Status HybridMemory::seq_div(int32_t seq, int64_t p0, int64_t p1, int d) {
  CHIMERA_RETURN_IF_ERROR(check_idle("seq_div"));
  CHIMERA_RETURN_IF_ERROR(check_seq(seq, "seq_div"));
  if (d <= 0) return Error(ErrorCode::kInvalidArgument, "seq_div(", seq, "): divisor ", d);
  if (d == 1 || seqs_[seq].n == 0) return Status::Ok();
  return Error(ErrorCode::kUnsupported, "seq_div(", seq, ", ", p0, ", ", p1, ", ", d,
               "): dividing positions merges them; an exact memory keeps each sequence's "
               "positions contiguous, so this is not offered");
}

int64_t HybridMemory::pos_min(int32_t seq) const {
  if (!check_seq(seq, "pos_min").ok() || seqs_[seq].n == 0) return -1;
  return seqs_[seq].pos_base;
}

int64_t HybridMemory::pos_max(int32_t seq) const {
  if (!check_seq(seq, "pos_max").ok() || seqs_[seq].n == 0) return -1;
  return seqs_[seq].pos_base + seqs_[seq].n - 1;
}

int64_t HybridMemory::next_pos(int32_t seq) const {
  if (!check_seq(seq, "next_pos").ok()) return -1;
  return seqs_[seq].pos_base + seqs_[seq].n;
}

uint32_t HybridMemory::n_tokens(int32_t seq) const {
  if (!check_seq(seq, "n_tokens").ok()) return 0;
  return seqs_[seq].n;
}

std::vector<int32_t> HybridMemory::tokens(int32_t seq) const {
  std::vector<int32_t> out;
  if (!check_seq(seq, "tokens").ok()) return out;
  const SeqBook& b = seqs_[seq];
  out.resize(b.n);
  for (uint32_t i = 0; i < b.pages->size(); ++i) {
    const uint32_t first = i * cfg_.page_size;
    const uint32_t cnt = std::min(cfg_.page_size, b.n - first);
    std::memcpy(out.data() + first, kv_->tokens(b.pages->ids()[i]), cnt * sizeof(int32_t));
  }
  return out;
}

RestorePoints HybridMemory::restorable(int32_t seq) const {
  RestorePoints rp;
  if (!check_seq(seq, "restorable").ok()) return rp;
  const SeqBook& b = seqs_[seq];
  if (!has_recurrent_) {
    rp.any = true;
    // The smallest count whose window rows are all held (window_ok is monotone in the count).
    uint32_t lo = 0, hi = b.n;
    while (lo < hi) {
      const uint32_t mid = lo + (hi - lo) / 2;
      if (window_ok(*b.pages, mid))
        hi = mid;
      else
        lo = mid + 1;
    }
    rp.any_from = lo;
    if (lo == 0) return rp;
  }
  rp.counts.push_back(0);
  for (uint64_t id : b.snaps) rp.counts.push_back(snaps_.find(id)->n_tokens);
  if (!rp.any) rp.counts.push_back(b.n);
  if (rp.any)  // below any_from: only the snapshots
    rp.counts.erase(std::remove_if(rp.counts.begin(), rp.counts.end(),
                                   [&](uint32_t c) { return c >= rp.any_from; }),
                    rp.counts.end());
  rp.counts.erase(std::unique(rp.counts.begin(), rp.counts.end()), rp.counts.end());
  return rp;
}

uint32_t HybridMemory::window_from(int32_t seq) const {
  if (!check_seq(seq, "window_from").ok()) return 0;
  return static_cast<uint32_t>(seqs_[seq].pages->window_from()) * cfg_.page_size;
}

void HybridMemory::clear() {
  abort();
  for (SeqBook& b : seqs_) release_seq(b);
  while (!snaps_.all().empty()) erase_snapshot(snaps_.all().begin()->second);
}

Result<uint64_t> HybridMemory::snapshot(int32_t seq) {
  CHIMERA_RETURN_IF_ERROR(check_idle("snapshot"));
  CHIMERA_RETURN_IF_ERROR(check_seq(seq, "snapshot"));
  SeqBook& b = seqs_[seq];
  if (!b.snaps.empty()) {
    Snapshot* last = snaps_.find(b.snaps.back());
    // Already have this exact state (same tokens and position base): pin it.
    if (last->n_tokens == b.n && last->pos_base == b.pos_base) {
      ++last->pins;
      return last->id;
    }
  }
  const uint64_t id = add_snapshot(b, b.n, b.slot, b.pages, true);
  snaps_.find(id)->made_by_handle = true;
  return id;
}

Status HybridMemory::restore(int32_t seq, uint64_t snapshot_id) {
  CHIMERA_RETURN_IF_ERROR(check_idle("restore"));
  CHIMERA_RETURN_IF_ERROR(check_seq(seq, "restore"));
  const Snapshot* x = snaps_.find(snapshot_id);
  if (!x) return Error(ErrorCode::kNotFound, "restore: no snapshot ", snapshot_id);
  SeqBook& b = seqs_[seq];
  // Snapshots of b's path that are also on x's path: same pages up to their length (rows of a
  // page below a holder's length never change, so equal page ids mean equal tokens and KV).
  std::vector<uint64_t> keep;
  for (uint64_t id : b.snaps) {
    const Snapshot* y = snaps_.find(id);
    if (id == snapshot_id || y->n_tokens >= x->n_tokens) continue;  // x takes its place
    const uint32_t np = pages_for(y->n_tokens);
    if (std::equal(y->pages->ids().begin(), y->pages->ids().begin() + np, x->pages->ids().begin()))
      keep.push_back(id);
  }
  keep.push_back(snapshot_id);
  const std::shared_ptr<PageList> pages = x->pages;
  if (has_recurrent_) {
    states_->ref(x->slot);
    states_->unref(b.slot);
    b.slot = x->slot;
  }
  b.pages = pages;
  b.n = x->n_tokens;
  b.pos_base = x->pos_base;
  set_snaps(b, std::move(keep));
  return Status::Ok();
}

Status HybridMemory::release(uint64_t snapshot_id) {
  return unpin(snapshot_id, "release", false);
}

Status HybridMemory::discard(uint64_t snapshot_id) {
  return unpin(snapshot_id, "discard", true);
}

Status HybridMemory::unpin(uint64_t snapshot_id, const char* op, bool drop_marks) {
  Snapshot* s = snaps_.find(snapshot_id);
  if (!s) return Error(ErrorCode::kNotFound, op, ": no snapshot ", snapshot_id);
  if (s->pins == 0)
    return Error(ErrorCode::kInvalidArgument, op, ": snapshot ", snapshot_id,
                 " has no explicit handle left (already released)");
  // A snapshot that snapshot() made is dropped with its last handle when discarded, even while
  // sequences still list it as a restore point.
  if (--s->pins == 0 && (s->seq_refs == 0 || (drop_marks && s->made_by_handle))) erase_snapshot(*s);
  if (!txn_) enforce_snapshot_budget();
  return Status::Ok();
}

Status HybridMemory::pin(uint64_t snapshot_id) {
  Snapshot* s = snaps_.find(snapshot_id);
  if (!s) return Error(ErrorCode::kNotFound, "pin: no snapshot ", snapshot_id);
  ++s->pins;
  return Status::Ok();
}

void HybridMemory::set_snapshot_budget(uint64_t bytes) {
  cfg_.snapshot_budget_bytes = bytes;
  if (!txn_) enforce_snapshot_budget();
}

std::vector<std::pair<uint64_t, uint32_t>> HybridMemory::snapshots_of(int32_t seq) const {
  std::vector<std::pair<uint64_t, uint32_t>> out;
  if (!check_seq(seq, "snapshots_of").ok()) return out;
  for (uint64_t id : seqs_[seq].snaps) out.emplace_back(id, snaps_.find(id)->n_tokens);
  return out;
}

void HybridMemory::k_at(uint32_t layer, int32_t seq, uint32_t t, void* row) const {
  CHIMERA_CHECK(layer < attn_index_.size() && attn_index_[layer] >= 0 && seq >= 0 &&
                    static_cast<uint32_t>(seq) < cfg_.max_seqs && t < seqs_[seq].n,
                "k_at(", layer, ", ", seq, ", ", t, ")");
  read_row(true, layer, seqs_[seq], t, row);
}

void HybridMemory::v_at(uint32_t layer, int32_t seq, uint32_t t, void* row) const {
  CHIMERA_CHECK(layer < attn_index_.size() && attn_index_[layer] >= 0 && seq >= 0 &&
                    static_cast<uint32_t>(seq) < cfg_.max_seqs && t < seqs_[seq].n,
                "v_at(", layer, ", ", seq, ", ", t, ")");
  read_row(false, layer, seqs_[seq], t, row);
}

const float* HybridMemory::conv_state(uint32_t layer, int32_t seq) const {
  CHIMERA_CHECK(layer < rec_index_.size() && rec_index_[layer] >= 0 && seq >= 0 &&
                    static_cast<uint32_t>(seq) < cfg_.max_seqs,
                "conv_state(", layer, ", ", seq, ")");
  return states_->conv(seqs_[seq].slot, static_cast<uint32_t>(rec_index_[layer]));
}

const float* HybridMemory::ssm_state(uint32_t layer, int32_t seq) const {
  CHIMERA_CHECK(layer < rec_index_.size() && rec_index_[layer] >= 0 && seq >= 0 &&
                    static_cast<uint32_t>(seq) < cfg_.max_seqs,
                "ssm_state(", layer, ", ", seq, ")");
  return states_->ssm(seqs_[seq].slot, static_cast<uint32_t>(rec_index_[layer]));
}

const float* HybridMemory::snapshot_state(uint64_t snapshot_id) const {
  const Snapshot* s = snaps_.find(snapshot_id);
  if (!s || s->slot == kNoSlot) return nullptr;
  return states_->data(s->slot);
}

}  // namespace chimera
