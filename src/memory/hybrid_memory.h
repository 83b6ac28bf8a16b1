// HybridMemory: the one memory object the engine talks to, for attention-only, recurrent-only and
// hybrid models alike (configured from the layer list, see memory_config.h). It owns the KV page
// pool, the recurrent state pool, the snapshots and, per sequence, the book: token list (kept in
// the pages), position base, page table, live state slot and the snapshots on its path.
//
// Promise (shared/design/MEMORY.md): every sequence always holds exactly the state that
// processing its current token list from scratch would produce, bit for bit.
//
// ---- Engine-facing API: one decode step ----
//
//   Batch b;                                   // one new token for each of two sequences
//   b.add(tok0, mem.next_pos(0), 0, true);
//   b.add(tok1, mem.next_pos(1), 1, true);
//   auto plan = mem.begin_batch(b);            // validate + plan + reserve everything; on error
//   if (!plan.ok()) return plan.status();      //   nothing changed
//   for (size_t u = 0; u < (*plan)->ubatches.size(); ++u) {
//     const Ubatch& ub = (*plan)->ubatches[u];
//     for (size_t r = 0; r < ub.runs.size(); ++r) {      // one run per sequence
//       for each attention layer il:
//         AttentionRun a = mem.attention(il, u, r);
//         for t in 0..run.n_tokens-1: write K/V of token t into mem.kv_slot(il, u, r, t)
//           (kernels/attention.h kv_write_token(), or mem.kv_layout(il).write_row())
//         attend queries (token indices a.first .. a.n_kv-1) over a.k_pages / a.v_pages:
//           KvPageTable{a.k_pages, a.v_pages, a.n_pages}, n_visible = token index + 1
//       for each recurrent layer il:
//         RecurrentRun s = mem.recurrent(il, u, r);  // read *_src, write *_dst (never aliased)
//     }
//     if (failed or cancelled) { mem.abort(); return error; }  // exactly the pre-batch state
//   }
//   CHIMERA_RETURN_IF_ERROR(mem.commit());     // new tokens and states become live
//
// Speculative verification ("commit up to token j of this run"): begin_batch(b, {s}) keeps, for
// sequence s, the recurrent state after EVERY token of the batch in scratch slots (the run's
// step buffers, RecurrentRun::conv_step/ssm_step). commit({{s, j + 1}}) then keeps only the first
// j + 1 of s's batch tokens: the state after token j becomes live, KV rows past it are dropped,
// the other scratch slots are released. No replay; the result is bit-identical to having decoded
// only those tokens. Other sequences of the batch commit all their tokens.
//
// Verification by prefix recompute (cheaper: no state per token): begin_batch(b, {}, {s}) plans s
// like a plain sequence, one state slot; when all of s's batch tokens fall in one run, that run's
// RecurrentRun::keep_inputs is set and the engine keeps what its kernels need to recompute the
// state after any prefix of the run (the small per-token conv/scan inputs). Before
// commit({{s, j + 1}}) with 0 < j + 1 < s's count, the engine asks recurrent_prefix(layer, s,
// j + 1) for every recurrent layer and writes, from src (the pre-batch state, untouched), the state
// after the first j + 1 tokens into dst with the same kernels; commit then makes it live. If s's
// tokens span several runs (ubatch or snapshot splits), s falls back to per-token states
// (replays_prefix(s) is false, RecurrentRun::n_steps as above).
//
// Paged KV layout (read by kernels/attention): for one attention layer, a K page is a contiguous
// head-major [kv_heads][page_size][head_dim] array of kv_type elements (F32/F16/BF16), V likewise
// (KvPageLayout in kv_pool.h); page i of a sequence holds its token indices
// [i*page_size, (i+1)*page_size). Pages of different layers are separate storage; the page table
// is shared across layers.
//
// Sliding-window layers (MemoryLayer::window): their rows live in a second page pool, paired
// page for page with the main one (PageList), so a page's window rows can be released while its
// tokens and global-layer rows stay. After each commit a sequence of n tokens releases the
// window rows of pages wholly before n + 1 - window - window_reserve (window_from()); those
// pages' entries in a window layer's AttentionRun are null (the kernel never reads them: they lie
// before every query's first visible key). Snapshots keep the window rows ending at their point.
// seq_rm to a count whose window rows are gone restores the newest snapshot at or before it (or
// the empty state) and replays, exactly as for recurrent layers. So a long sequence holds about
// window + reserve rows of each window layer, plus what its snapshots hold.
//
// Recurrent contract: conv_src/ssm_src hold the state before the run's first token (zeros for an
// empty sequence); the kernel writes the state after the run's last token to conv_dst/ssm_dst.
// src and dst never alias, src is never written; dst is scratch until commit().
//
// Replay: seq_rm (and seq_add when positions matter) returns a Replay: "run these tokens at these
// positions for this sequence" (replay.as_batch()). Until the engine runs it, the sequence holds
// exactly the kept prefix (pos_max reflects that), so the memory is consistent at every moment.
//
// All operations validate first and then apply: an error means nothing changed. Not thread-safe:
// one thread drives the memory; kernels may use the returned pointers from many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "memory/batch.h"
#include "memory/kv_pool.h"
#include "memory/memory_config.h"
#include "memory/snapshot_store.h"
#include "memory/state_pool.h"

namespace chimera {

// Tokens the engine must run for `seq` at positions pos0, pos0+1, ... (empty: nothing to run).
struct Replay {
  int32_t seq = -1;
  int32_t pos0 = 0;
  std::vector<int32_t> tokens;
  bool empty() const { return tokens.empty(); }
  Batch as_batch(bool logits_last = true) const;
};

struct ShiftOutcome {
  bool exact = true;          // always true here: approximate shifts are not offered
  bool needs_replay = false;  // positions matter to attention: exactness costs a replay
  Replay replay;
};

// Token counts a sequence can be rolled back to without replay.
struct RestorePoints {
  bool any = false;              // attention-only model: every count any_from..n_tokens
  uint32_t any_from = 0;         // 0 unless window rows were released (then also `counts` below it)
  std::vector<uint32_t> counts;  // otherwise: 0, the snapshots on its path, and n_tokens
};

struct AttentionRun {
  const void* const* k_pages = nullptr;  // page base pointers, n_pages of them
  const void* const* v_pages = nullptr;
  uint32_t n_pages = 0;
  uint32_t first = 0;  // token index of the run's first new token
  uint32_t n_kv = 0;   // keys visible to the run's last token: token indices [0, n_kv)
  uint32_t page_size = 0;
  uint32_t kv_dim = 0;
  GgmlType type = GgmlType::F16;
};

// Where token t of a run goes in one attention layer: row `slot` of k_page / v_page (the form
// kernels/attention.h kv_write_token() takes).
struct KvSlot {
  void* k_page = nullptr;
  void* v_page = nullptr;
  int32_t slot = 0;
};

struct RecurrentRun {
  const float* conv_src = nullptr;
  float* conv_dst = nullptr;
  const float* ssm_src = nullptr;
  float* ssm_dst = nullptr;
  uint64_t conv_floats = 0;
  uint64_t ssm_floats = 0;
  // Sequences begun with per-token states: n_steps = n_tokens - 1 buffers; the state after token
  // t < n_steps of the run goes to conv_step(t) / ssm_step(t) (never aliasing src, dst or each
  // other), the state after the last token to *_dst as always. 0 otherwise.
  uint32_t n_steps = 0;
  float* conv_step(uint32_t t) const { return pool->conv(step_slots[t], layer); }
  float* ssm_step(uint32_t t) const { return pool->ssm(step_slots[t], layer); }
  const StatePool* pool = nullptr;
  const uint32_t* step_slots = nullptr;
  uint32_t layer = 0;  // recurrent ordinal in the pool
  // The run of a sequence begun in prefix_seqs: keep the inputs that recompute any prefix's state.
  bool keep_inputs = false;
};

// commit(): keep the first n of this batch's tokens of sequence seq (0 <= n <= its count).
struct SeqKeep {
  int32_t seq = 0;
  uint32_t n = 0;
};

struct SeqUsage {
  int32_t seq = 0;
  uint32_t n_tokens = 0;
  uint32_t pages = 0;
  uint32_t window_pages = 0;     // pages whose window-layer rows it still holds
  uint64_t kv_bytes = 0;         // its pages, whole (both halves)
  uint64_t kv_shared_bytes = 0;  // of which shared with other holders
  uint64_t state_bytes = 0;      // its live slot (0 when it is the shared zero state)
  uint32_t snapshots = 0;
};

struct MemoryUsage {
  uint64_t budget_bytes = 0, snapshot_budget_bytes = 0;
  uint64_t kv_bytes = 0;            // every page in use (main and window pools)
  uint64_t window_kv_bytes = 0;     // of which the sliding-window layers' pages
  uint64_t state_bytes = 0;         // every slot in use (live, snapshot, zero state)
  uint64_t live_kv_bytes = 0;       // pages held by at least one sequence
  uint64_t live_state_bytes = 0;    // slots held by at least one sequence (or the zero state)
  uint64_t snapshot_bytes = 0;      // pages + slots held only by snapshots
  uint64_t cached_state_bytes = 0;  // released slot buffers kept for reuse (not in the budget)
  uint32_t pages_in_use = 0, slots_in_use = 0, n_snapshots = 0, n_pinned_snapshots = 0;
  uint32_t window_pages_in_use = 0;  // pages of the window pool (0 without window layers)
  std::vector<SeqUsage> seqs;        // non-empty sequences
  uint64_t total_bytes() const { return kv_bytes + state_bytes; }
  std::string summary() const;  // human-readable, multi-line
};

class HybridMemory {
 public:
  static Result<std::unique_ptr<HybridMemory>> create(const MemoryConfig& config);
  ~HybridMemory();
  HybridMemory(const HybridMemory&) = delete;
  HybridMemory& operator=(const HybridMemory&) = delete;

  const MemoryConfig& config() const { return cfg_; }
  bool has_attention() const { return !attn_index_.empty(); }
  bool has_recurrent() const { return has_recurrent_; }
  bool has_window() const { return win_ != nullptr; }
  uint32_t page_size() const { return cfg_.page_size; }
  // Ubatch size for the next begin_batch() (plans never change results, so this is free to tune).
  void set_max_ubatch_tokens(uint32_t n) { cfg_.max_ubatch_tokens = n > 0 ? n : 1; }
  // The cap on bytes held only by automatic snapshots; lowering it evicts them (oldest first)
  // right away unless a batch is in progress.
  void set_snapshot_budget(uint64_t bytes);

  // ---- batches: transactional ----
  // Validates, plans ragged ubatches, reserves every page and state slot for the whole batch
  // (evicting automatic snapshots if that makes it fit). On error nothing changed. The plan stays
  // valid until commit() or abort(). Sequences in step_seqs keep the state after every token
  // (one scratch slot per token) so that commit() may keep a prefix of their tokens.
  // Sequences in prefix_seqs may commit a prefix too, by recompute instead of per-token states
  // (see the header comment); a sequence may not be in both lists.
  Result<const BatchPlan*> begin_batch(const Batch& batch,
                                       const std::vector<int32_t>& step_seqs = {},
                                       const std::vector<int32_t>& prefix_seqs = {});
  bool in_batch() const { return txn_ != nullptr; }
  // `layer` is the model layer index; it must be an attention layer (checked).
  AttentionRun attention(uint32_t layer, size_t ubatch, size_t run) const;
  KvSlot kv_slot(uint32_t layer, size_t ubatch, size_t run, uint32_t t) const;
  // The page geometry of an attention layer (checked), for writing and reading token rows.
  const KvPageLayout& kv_layout(uint32_t layer) const;
  RecurrentRun recurrent(uint32_t layer, size_t ubatch, size_t run) const;
  // True when seq was begun in prefix_seqs and its tokens form one run (prefix by recompute).
  bool replays_prefix(int32_t seq) const;
  // For such a sequence: src = its pre-batch state, dst = the slot commit() will make live; the
  // engine writes there the state after its first n batch tokens (0 < n < its count). Records n:
  // a partial commit of the sequence must keep exactly n tokens.
  Result<RecurrentRun> recurrent_prefix(uint32_t layer, int32_t seq, uint32_t n);
  // Makes the batch live and applies the snapshot policy.
  Status commit() { return commit(std::vector<SeqKeep>{}); }
  // Same, keeping only a prefix of the listed sequences' batch tokens (others keep all). A prefix
  // shorter than the whole run and longer than 0 needs the sequence in begin_batch's step_seqs
  // when the model has recurrent layers, or in prefix_seqs with recurrent_prefix(.., n) called. On
  // error (bad list) nothing changed and the batch is still open.
  Status commit(const std::vector<SeqKeep>& keep);
  // Returns to exactly the pre-batch state (for failures and cancellation).
  void abort();

  // ---- sequences (positions; p1 = -1 means "to the end") ----
  // Removes positions [p0, p1) with exact semantics; see Replay. Never fails for valid ids.
  Result<Replay> seq_rm(int32_t seq, int64_t p0, int64_t p1);
  Status seq_cp(int32_t src, int32_t dst);  // dst becomes a copy of src, O(1) in its length
  Status seq_keep(int32_t seq);
  // Shifts the positions of the whole sequence by delta (a sub-range would break contiguity).
  Result<ShiftOutcome> seq_add(int32_t seq, int64_t p0, int64_t p1, int64_t delta);
  // Only d == 1 is supported: dividing merges positions, which no exact memory can represent.
  Status seq_div(int32_t seq, int64_t p0, int64_t p1, int d);
  int64_t pos_min(int32_t seq) const;   // -1 when empty
  int64_t pos_max(int32_t seq) const;   // -1 when empty
  int64_t next_pos(int32_t seq) const;  // where the next token of seq must go
  uint32_t n_tokens(int32_t seq) const;
  std::vector<int32_t> tokens(int32_t seq) const;
  RestorePoints restorable(int32_t seq) const;
  // First token index whose window-layer rows the sequence still holds (a multiple of the page
  // size; 0 without window layers). Rows before it were released.
  uint32_t window_from(int32_t seq) const;
  void clear();  // every sequence and snapshot (explicit handles become invalid)

  // ---- explicit snapshots ----
  Result<uint64_t> snapshot(int32_t seq);  // pinned until release()
  Status restore(int32_t seq, uint64_t snapshot_id);
  Status release(uint64_t snapshot_id);
  // As release(), but when that was the last handle on a snapshot that snapshot() created (not
  // an automatic one it pinned), the snapshot also leaves every sequence's path and is freed: a
  // rollback point its owner has moved past (a drafter's per-token marks). release() leaves it
  // listed as a restore point, so marks taken every step would pile up. Never changes what a
  // sequence holds; a later seq_rm to there replays from an older snapshot.
  Status discard(uint64_t snapshot_id);
  // One more explicit handle on an existing snapshot (e.g. an automatic one a load brought back,
  // or one a second owner wants kept); each pin needs its own release().
  Status pin(uint64_t snapshot_id);
  // Snapshots on the sequence's path: (id, token count), ascending.
  std::vector<std::pair<uint64_t, uint32_t>> snapshots_of(int32_t seq) const;

  // ---- persistence (state_io.cpp) ----
  Result<std::vector<uint8_t>> save() const;
  Result<std::vector<uint8_t>> save_seq(int32_t seq) const;
  Status load(const uint8_t* data, size_t size);                       // replaces everything
  Status load_seq(const uint8_t* data, size_t size, int32_t dst_seq);  // replaces dst_seq

  // ---- accounting (accounting.cpp) ----
  MemoryUsage usage() const;

  // ---- inspection for tests and tools ----
  // Copies of a sequence's stored K / V row of token t < n_tokens (kv_dim elements, heads in
  // order) into row (window layers: t >= window_from(seq)); read-only views of its states.
  void k_at(uint32_t layer, int32_t seq, uint32_t t, void* row) const;
  void v_at(uint32_t layer, int32_t seq, uint32_t t, void* row) const;
  const float* conv_state(uint32_t layer, int32_t seq) const;
  const float* ssm_state(uint32_t layer, int32_t seq) const;
  const float* snapshot_state(uint64_t snapshot_id) const;  // whole slot; nullptr if none
  // A hash of everything observable (books, KV rows, states, snapshots, pool counters).
  uint64_t fingerprint() const;
  // Makes the n-th next page/slot allocation in begin_batch fail with kOutOfMemory (-1: off).
  void inject_alloc_failure(int64_t n) { fail_alloc_in_ = n; }

 private:
  struct SeqBook {
    std::shared_ptr<PageList> pages;
    uint32_t n = 0;
    int64_t pos_base = 0;
    uint32_t slot = kNoSlot;
    std::vector<uint64_t> snaps;  // on its path, ascending token count
    // Page pointer tables for the engine, per attention layer, synced lazily to `pages`.
    std::vector<uint32_t> table_ids, table_wids;
    std::vector<std::vector<const void*>> k_tab, v_tab;
  };
  struct Txn;

  explicit HybridMemory(const MemoryConfig& config);
  Status check_seq(int32_t seq, const char* op) const;
  Status check_idle(const char* op) const;
  uint32_t pages_for(uint32_t n) const { return (n + cfg_.page_size - 1) / cfg_.page_size; }
  void read_row(bool k, uint32_t layer, const SeqBook& b, uint32_t t, void* row) const;
  void sync_tables(SeqBook& b);
  // Drops everything a sequence holds (it becomes empty, position base 0).
  void release_seq(SeqBook& b);
  // Sets b to hold its first n tokens with the given slot (a reference is taken) and optionally
  // the page list of a snapshot; drops snapshots past n from its path.
  void truncate_seq(SeqBook& b, uint32_t n, uint32_t slot, const std::shared_ptr<PageList>& pages);
  // Commit of a prefix: drops the pages and lowers the fill past new_n (old_fill: pages written
  // in place by the batch, with their fill before it).
  void drop_tail(SeqBook& b, uint32_t old_n, uint32_t new_n,
                 const std::vector<std::pair<uint32_t, uint32_t>>& old_fill);
  void set_snaps(SeqBook& b, std::vector<uint64_t> snaps);  // adjusts seq_refs
  void unlist_snapshot(uint64_t id);                        // drops one seq_ref
  void erase_snapshot(Snapshot& s);                         // frees it, removing it from books
  // release() (drop_marks false) and discard() (true): one explicit handle fewer.
  Status unpin(uint64_t snapshot_id, const char* op, bool drop_marks);
  uint64_t add_snapshot(SeqBook& b, uint32_t n, uint32_t slot,
                        const std::shared_ptr<PageList>& pages, bool pinned);
  // Bytes pages + slots in use; bytes held by sequences (and pinned snapshots if asked).
  uint64_t used_bytes() const;
  uint64_t held_bytes(bool include_pinned) const;
  // Evicts automatic snapshots (oldest first) until used_bytes() + extra <= limit. Checks first
  // that it can succeed; returns false (changing nothing) when it cannot.
  bool make_room(uint64_t extra, uint64_t limit);
  void enforce_snapshot_budget();
  void trim_slot_cache();
  Status load_impl(const uint8_t* data, size_t size, int32_t dst_seq);  // dst_seq -1: whole
  uint32_t restore_point(const SeqBook& b, uint32_t n, const Snapshot** snap) const;
  // ---- sliding-window pages ----
  // Pages [0, window_release(n)) of a holder of n tokens may lose their window rows.
  uint32_t window_release(uint32_t n) const;
  // Whether a list holds the window rows that the token after its first n needs.
  bool window_ok(const PageList& list, uint32_t n) const;
  // Releases what window_release(n) allows, cloning the list first when it is shared.
  void trim_window(std::shared_ptr<PageList>& list, uint32_t n);
  // Window-only models: the snapshot policy's snapshots (page lists, no state) and the release
  // of b's window rows, after a commit that took b from old_n to b.n (k batch tokens).
  void commit_window_snapshots(SeqBook& b, uint32_t old_n, uint32_t k,
                               const std::shared_ptr<PageList>& old_pages);
  // A fresh page pair (main, window half or kNoPage), counting injected failures.
  Result<std::pair<uint32_t, uint32_t>> alloc_pair();
  uint64_t pair_bytes() const { return kv_->page_bytes() + (win_ ? win_->page_bytes() : 0); }
  // The pool and in-pool index of attention ordinal a, and the page of token t's row in list.
  const KvPool& pool_of(uint32_t a) const { return attn_window_[a] ? *win_ : *kv_; }
  uint32_t page_of(uint32_t a, const PageList& list, uint32_t page_index) const {
    return attn_window_[a] ? list.wids()[page_index] : list.ids()[page_index];
  }

  MemoryConfig cfg_;
  bool has_recurrent_ = false;
  std::vector<int32_t> attn_index_;  // model layer -> attention ordinal (-1 if not attention)
  std::vector<int32_t> rec_index_;   // model layer -> recurrent ordinal
  // Attention ordinal -> window layer?, and its ordinal within its pool.
  std::vector<uint8_t> attn_window_;
  std::vector<uint32_t> attn_sub_;
  uint32_t window_ = 0;  // the largest window (rows a holder must keep: window - 1 behind)
  std::unique_ptr<KvPool> kv_;
  std::unique_ptr<KvPool> win_;  // window layers' halves of the pages; null without them
  std::unique_ptr<StatePool> states_;
  SnapshotStore snaps_;
  uint32_t zero_slot_ = kNoSlot;  // the state of an empty sequence (all zeros), pinned
  std::vector<SeqBook> seqs_;
  std::unique_ptr<Txn> txn_;
  int64_t fail_alloc_in_ = -1;
  mutable std::vector<uint32_t> page_mark_, wpage_mark_, slot_mark_;
  mutable uint32_t mark_gen_ = 0;
};

}  // namespace chimera
