// HybridMemory: construction, batch transactions, engine views, snapshot book-keeping, budgets.
// Sequence operations: sequence_ops.cpp; save/load: state_io.cpp; accounting: accounting.cpp.
#include "memory/hybrid_memory.h"

#include <algorithm>
#include <cstring>

namespace chimera {

struct HybridMemory::Txn {
  struct SeqTxn {
    int32_t seq = 0;
    uint32_t old_n = 0;
    uint32_t k = 0;  // tokens this batch appends
    std::shared_ptr<PageList> old_pages;
    std::vector<std::pair<uint32_t, uint32_t>> old_fill;  // (page, fill before the batch)
    std::vector<uint32_t> slots;                          // scratch slots allocated for it
    uint32_t final_slot = kNoSlot;
    std::vector<std::pair<uint32_t, uint32_t>> frozen;  // (token count, slot) kept as snapshots
    bool snapshot_end = false;
    // Per-token states (speculative verification): slots[i] holds the state after batch token i.
    bool steps = false;
    // Prefix by recompute (prefix_seqs, one run): the engine rewrites final_slot before a partial
    // commit; prefix_n is the count it last wrote for (recurrent_prefix), 0 if none.
    bool prefix = false;
    uint32_t prefix_n = 0;
  };
  BatchPlan plan;
  std::vector<SeqTxn> seqs;
  std::vector<std::vector<std::pair<uint32_t, uint32_t>>> run_slots;  // [ubatch][run]: (src, dst)
  std::vector<std::vector<std::vector<uint32_t>>> run_steps;          // [ubatch][run]: step slots
};

Batch Replay::as_batch(bool logits_last) const {
  Batch b;
  for (size_t i = 0; i < tokens.size(); ++i)
    b.add(tokens[i], pos0 + static_cast<int32_t>(i), seq, logits_last && i + 1 == tokens.size());
  return b;
}

Result<std::unique_ptr<HybridMemory>> HybridMemory::create(const MemoryConfig& config) {
  CHIMERA_RETURN_IF_ERROR(config.validate());
  std::unique_ptr<HybridMemory> m(new HybridMemory(config));
  for (const KvPool* pool : {m->kv_.get(), m->win_.get()})
    if (pool != nullptr && !pool->reservation().ok())
      return Error(ErrorCode::kOutOfMemory, "memory budget ", config.budget_bytes,
                   " bytes: ", pool->reservation().message(), "; a smaller budget reserves less");
  if (m->has_recurrent_ && m->states_->slot_bytes() > config.budget_bytes)
    return Error(ErrorCode::kOutOfMemory, "memory budget ", config.budget_bytes,
                 " bytes is smaller than one recurrent state (", m->states_->slot_bytes(),
                 " bytes)");
  if (m->kv_->max_pages() == 0)
    return Error(ErrorCode::kOutOfMemory, "memory budget ", config.budget_bytes,
                 " bytes is smaller than one KV page (", m->pair_bytes(), " bytes)");
  return m;
}

HybridMemory::HybridMemory(const MemoryConfig& config) : cfg_(config) {
  std::vector<uint32_t> kv_dims, kv_heads, win_dims, win_heads;
  std::vector<uint64_t> conv, ssm;
  for (const MemoryLayer& l : cfg_.layers) {
    attn_index_.push_back(
        l.kind == LayerKind::kAttention ? static_cast<int32_t>(attn_window_.size()) : -1);
    rec_index_.push_back(l.kind == LayerKind::kRecurrent ? static_cast<int32_t>(conv.size()) : -1);
    if (l.kind == LayerKind::kAttention) {
      const bool w = l.window != 0;
      attn_window_.push_back(w);
      attn_sub_.push_back(static_cast<uint32_t>(w ? win_dims.size() : kv_dims.size()));
      (w ? win_dims : kv_dims).push_back(l.kv_dim);
      (w ? win_heads : kv_heads).push_back(l.kv_heads);
      window_ = std::max(window_, l.window);
    }
    if (l.kind == LayerKind::kRecurrent) {
      conv.push_back(l.conv_floats);
      ssm.push_back(l.ssm_floats);
    }
  }
  has_recurrent_ = !conv.empty();
  // Page capacity: as many pages as the whole budget could hold (the arenas are virtual).
  const size_t elem = cfg_.kv_type == GgmlType::F32 ? 4 : 2;
  uint64_t page_bytes = uint64_t{cfg_.page_size} * sizeof(int32_t), win_bytes = 0;
  for (uint32_t d : kv_dims) page_bytes += 2ull * cfg_.page_size * d * elem;
  for (uint32_t d : win_dims) win_bytes += 2ull * cfg_.page_size * d * elem;
  const uint64_t max_pages =
      std::min<uint64_t>(cfg_.budget_bytes / (page_bytes + win_bytes), UINT32_MAX - 1);
  kv_ = std::make_unique<KvPool>(kv_dims, kv_heads, cfg_.page_size, cfg_.kv_type,
                                 static_cast<uint32_t>(max_pages));
  if (!win_dims.empty())
    win_ = std::make_unique<KvPool>(win_dims, win_heads, cfg_.page_size, cfg_.kv_type,
                                    static_cast<uint32_t>(max_pages), false);
  states_ = std::make_unique<StatePool>(conv, ssm);
  if (has_recurrent_ && states_->slot_bytes() <= cfg_.budget_bytes) {
    zero_slot_ = states_->alloc();
    std::memset(states_->data(zero_slot_), 0, states_->slot_bytes());
  }
  seqs_.resize(cfg_.max_seqs);
  for (SeqBook& b : seqs_) {
    b.pages = std::make_shared<PageList>(kv_.get(), win_.get());
    b.slot = zero_slot_;
    if (zero_slot_ != kNoSlot) states_->ref(zero_slot_);
    b.k_tab.resize(attn_window_.size());
    b.v_tab.resize(attn_window_.size());
  }
}

HybridMemory::~HybridMemory() {
  if (txn_) abort();
  for (SeqBook& b : seqs_) release_seq(b);
  while (Snapshot* s = snaps_.all().empty() ? nullptr : &snaps_.all().begin()->second)
    erase_snapshot(*s);
}

Status HybridMemory::check_seq(int32_t seq, const char* op) const {
  if (seq < 0 || static_cast<uint32_t>(seq) >= cfg_.max_seqs)
    return Error(ErrorCode::kInvalidArgument, op, ": sequence id ", seq, " out of range [0, ",
                 cfg_.max_seqs, ")");
  return Status::Ok();
}

Status HybridMemory::check_idle(const char* op) const {
  if (txn_)
    return Error(ErrorCode::kInvalidArgument, op,
                 ": a batch is in progress (commit() or abort() it first)");
  return Status::Ok();
}

// ---------------------------------------------------------------- batch transactions

Result<const BatchPlan*> HybridMemory::begin_batch(const Batch& batch,
                                                   const std::vector<int32_t>& step_seqs,
                                                   const std::vector<int32_t>& prefix_seqs) {
  CHIMERA_RETURN_IF_ERROR(check_idle("begin_batch"));
  for (int32_t s : step_seqs) CHIMERA_RETURN_IF_ERROR(check_seq(s, "begin_batch (step_seqs)"));
  std::vector<int64_t> next(cfg_.max_seqs);
  std::vector<uint32_t> lens(cfg_.max_seqs);
  for (uint32_t s = 0; s < cfg_.max_seqs; ++s) {
    next[s] = seqs_[s].pos_base + seqs_[s].n;
    lens[s] = seqs_[s].n;
  }
  CHIMERA_RETURN_IF_ERROR(validate_batch(batch, cfg_.n_vocab, cfg_.max_seqs, next));

  auto txn = std::make_unique<Txn>();
  txn->plan = plan_ubatches(batch, cfg_.max_ubatch_tokens, lens, next,
                            has_recurrent_ ? cfg_.snapshot_interval : 0);
  std::vector<int32_t> of_seq(cfg_.max_seqs, -1);
  for (size_t i = 0; i < batch.size(); ++i) {
    const int32_t s = batch.seq[i];
    if (of_seq[s] < 0) {
      of_seq[s] = static_cast<int32_t>(txn->seqs.size());
      txn->seqs.emplace_back();
      txn->seqs.back().seq = s;
      txn->seqs.back().old_n = seqs_[s].n;
    }
    ++txn->seqs[of_seq[s]].k;
  }
  for (int32_t s : step_seqs) {
    if (s < 0 || s >= static_cast<int32_t>(cfg_.max_seqs) || of_seq[s] < 0)
      return Error(ErrorCode::kInvalidArgument, "begin_batch: per-token states asked for sequence ",
                   s, ", which has no token in the batch");
    txn->seqs[of_seq[s]].steps = true;
  }
  for (int32_t s : prefix_seqs) {
    if (s < 0 || s >= static_cast<int32_t>(cfg_.max_seqs) || of_seq[s] < 0)
      return Error(ErrorCode::kInvalidArgument, "begin_batch: prefix recompute asked for sequence ",
                   s, ", which has no token in the batch");
    Txn::SeqTxn& st = txn->seqs[of_seq[s]];
    if (st.steps)
      return Error(ErrorCode::kInvalidArgument, "begin_batch: sequence ", s,
                   " asked for both per-token states and prefix recompute");
    if (!has_recurrent_) continue;  // attention only: any prefix commits as it is
    uint32_t n_runs = 0;
    for (const Ubatch& ub : txn->plan.ubatches)
      for (const SeqRun& run : ub.runs) n_runs += run.seq == s;
    // Split over several runs: the state at a split would need its own slot; per-token states.
    if (n_runs == 1)
      st.prefix = true;
    else
      st.steps = true;
  }

  // Recurrent slots, planned with per-sequence virtual ids (index into SeqTxn::slots): run j
  // reads the state left by run j-1 and writes a scratch slot; a slot whose run ends at a
  // snapshot point is frozen (kept), others are recycled once read.
  const uint32_t kLive = UINT32_MAX;
  std::vector<uint32_t> n_virtual(txn->seqs.size(), 0);
  txn->run_slots.resize(txn->plan.ubatches.size());
  txn->run_steps.resize(txn->plan.ubatches.size());
  for (size_t u = 0; u < txn->plan.ubatches.size(); ++u)
    txn->run_steps[u].resize(txn->plan.ubatches[u].runs.size());
  if (has_recurrent_) {
    std::vector<uint32_t> cur(txn->seqs.size(), kLive);
    std::vector<std::vector<uint32_t>> recycled(txn->seqs.size());
    std::vector<std::vector<bool>> frozen(txn->seqs.size());
    std::vector<uint32_t> done(txn->seqs.size(), 0);
    for (size_t u = 0; u < txn->plan.ubatches.size(); ++u) {
      for (size_t j = 0; j < txn->plan.ubatches[u].runs.size(); ++j) {
        const SeqRun& run = txn->plan.ubatches[u].runs[j];
        const int32_t t = of_seq[run.seq];
        Txn::SeqTxn& st = txn->seqs[t];
        if (st.steps) {
          // One virtual slot per batch token: token i's state lands in slot i; nothing recycled.
          n_virtual[t] = st.k;
          const uint32_t a = done[t];
          txn->run_slots[u].emplace_back(a == 0 ? kLive : a - 1, a + run.n_tokens - 1);
          for (uint32_t i = a; i + 1 < a + run.n_tokens; ++i) txn->run_steps[u][j].push_back(i);
          done[t] += run.n_tokens;
          if (run.snapshot_after) st.frozen.emplace_back(run.first + run.n_tokens, done[t] - 1);
          continue;
        }
        uint32_t dst;
        if (!recycled[t].empty()) {
          dst = recycled[t].back();
          recycled[t].pop_back();
        } else {
          dst = n_virtual[t]++;
          frozen[t].push_back(false);
        }
        txn->run_slots[u].emplace_back(cur[t], dst);
        done[t] += run.n_tokens;
        const bool last = done[t] == st.k;
        if (run.snapshot_after && !last) {
          frozen[t][dst] = true;
          st.frozen.emplace_back(run.first + run.n_tokens, dst);
        }
        if (run.snapshot_after && last) st.snapshot_end = true;
        if (cur[t] != kLive && !frozen[t][cur[t]]) recycled[t].push_back(cur[t]);
        cur[t] = dst;
        if (last) st.final_slot = dst;
      }
    }
  }

  // Pages: append in place into a partial last page when nobody else wrote past our rows,
  // otherwise copy it (copy-on-write); then whole new pages.
  const uint32_t ps = cfg_.page_size;
  // Sequences sharing a partial page (after seq_cp) may both append in this batch: decide in
  // order, seeing the fills the earlier ones will set.
  std::vector<uint8_t> in_place(txn->seqs.size(), 0), cow(txn->seqs.size(), 0);
  std::vector<std::pair<uint32_t, uint32_t>> planned_fill;  // (page, fill after this batch)
  uint64_t new_pages = 0, new_slots = 0;
  for (size_t t = 0; t < txn->seqs.size(); ++t) {
    const Txn::SeqTxn& st = txn->seqs[t];
    const SeqBook& b = seqs_[st.seq];
    const uint32_t r = st.old_n % ps;
    uint32_t room = 0;
    if (r != 0) {
      const uint32_t last = b.pages->ids().back();
      const bool exclusive = b.pages.use_count() == 1 && kv_->refs(last) == 1;
      uint32_t fill = kv_->fill(last);
      for (auto [p, f] : planned_fill)
        if (p == last) fill = f;
      in_place[t] = exclusive || fill == r;
      if (in_place[t]) planned_fill.emplace_back(last, r + std::min(ps - r, st.k));
      cow[t] = !in_place[t];
      room = ps - r;
    }
    new_pages += cow[t] + (st.k > room ? (st.k - room + ps - 1) / ps : 0);
    new_slots += n_virtual[t];
  }
  const uint64_t need = new_pages * pair_bytes() + new_slots * states_->slot_bytes();
  if (kv_->pages_in_use() + new_pages > kv_->max_pages() ||
      (win_ && win_->pages_in_use() + new_pages > win_->max_pages()) ||
      !make_room(need, cfg_.budget_bytes))
    return Error(ErrorCode::kOutOfMemory, "batch of ", batch.size(), " tokens needs ", need,
                 " bytes (", new_pages, " KV pages, ", new_slots, " state slots); ", used_bytes(),
                 " of the ", cfg_.budget_bytes, "-byte budget are in use and cannot be freed");

  // Apply the reservation; any allocation failure unwinds everything done so far.
  Status failure;
  for (size_t t = 0; t < txn->seqs.size() && failure.ok(); ++t) {
    Txn::SeqTxn& st = txn->seqs[t];
    SeqBook& b = seqs_[st.seq];
    st.old_pages = b.pages;
    const uint32_t r = st.old_n % ps;
    const uint32_t room = r ? ps - r : 0;
    const uint32_t fresh = st.k > room ? (st.k - room + ps - 1) / ps : 0;
    if (cow[t] || fresh > 0) b.pages = b.pages->clone_prefix(b.pages->size());
    if (r != 0) {
      const uint32_t take = std::min(room, st.k);
      const size_t li = b.pages->size() - 1;
      const uint32_t last = b.pages->ids()[li];
      if (in_place[t]) {
        st.old_fill.emplace_back(last, kv_->fill(last));
        kv_->set_fill(last, r + take);
      } else {
        auto p = alloc_pair();
        if (!p.ok()) {
          failure = p.status();
          break;
        }
        kv_->copy_rows(last, p->first, r);
        if (win_) win_->copy_rows(b.pages->wids()[li], p->second, r);
        kv_->set_fill(p->first, r + take);
        b.pages->replace(li, p->first, p->second);
      }
    }
    for (uint32_t i = 0; i < fresh; ++i) {
      auto p = alloc_pair();
      if (!p.ok()) {
        failure = p.status();
        break;
      }
      const uint32_t before = st.old_n + room + i * ps;
      kv_->set_fill(p->first, std::min(ps, st.old_n + st.k - before));
      b.pages->push(p->first, p->second);
    }
    if (!failure.ok()) break;
    for (uint32_t v = 0; v < n_virtual[t]; ++v) {
      if (fail_alloc_in_ == 0) {
        fail_alloc_in_ = -1;
        failure = Error(ErrorCode::kOutOfMemory, "injected allocation failure");
        break;
      }
      if (fail_alloc_in_ > 0) --fail_alloc_in_;
      st.slots.push_back(states_->alloc());
    }
  }
  if (!failure.ok()) {
    txn_ = std::move(txn);
    abort();
    return Error(failure.code(), "batch of ", batch.size(), " tokens: reserving memory failed (",
                 failure.message(), "); nothing changed");
  }

  // Token ids into the page rows (the memory's copy of each token list).
  std::vector<uint32_t> written(cfg_.max_seqs, 0);
  for (size_t i = 0; i < batch.size(); ++i) {
    const int32_t s = batch.seq[i];
    SeqBook& b = seqs_[s];
    const uint32_t idx = b.n + written[s]++;
    kv_->tokens(b.pages->ids()[idx / ps])[idx % ps] = batch.tokens[i];
  }
  // Virtual slot ids -> real slots.
  for (size_t u = 0; u < txn->run_slots.size(); ++u) {
    for (size_t j = 0; j < txn->run_slots[u].size(); ++j) {
      auto& [src, dst] = txn->run_slots[u][j];
      const Txn::SeqTxn& st = txn->seqs[of_seq[txn->plan.ubatches[u].runs[j].seq]];
      src = src == kLive ? seqs_[st.seq].slot : st.slots[src];
      dst = st.slots[dst];
      for (uint32_t& v : txn->run_steps[u][j]) v = st.slots[v];
    }
  }
  for (Txn::SeqTxn& st : txn->seqs) {
    if (has_recurrent_ && !st.steps) {
      st.final_slot = st.slots[st.final_slot];
      for (auto& f : st.frozen) f.second = st.slots[f.second];
    }
    if (has_attention()) sync_tables(seqs_[st.seq]);
  }
  txn_ = std::move(txn);
  return &txn_->plan;
}

void HybridMemory::sync_tables(SeqBook& b) {
  const std::vector<uint32_t>& ids = b.pages->ids();
  const std::vector<uint32_t>& wids = b.pages->wids();
  size_t i0 = 0;
  const size_t common = std::min(ids.size(), b.table_ids.size());
  while (i0 < common && ids[i0] == b.table_ids[i0] && (!win_ || wids[i0] == b.table_wids[i0])) ++i0;
  b.table_ids = ids;
  b.table_wids = wids;
  for (uint32_t a = 0; a < attn_window_.size(); ++a) {
    const KvPool& pool = pool_of(a);
    const uint32_t sub = attn_sub_[a];
    b.k_tab[a].resize(ids.size());
    b.v_tab[a].resize(ids.size());
    for (size_t i = i0; i < ids.size(); ++i) {
      const uint32_t page = page_of(a, *b.pages, static_cast<uint32_t>(i));
      // A released window half: null (lies before every query's window, never read).
      b.k_tab[a][i] = page == kNoPage ? nullptr : pool.k_page(sub, page);
      b.v_tab[a][i] = page == kNoPage ? nullptr : pool.v_page(sub, page);
    }
  }
}

AttentionRun HybridMemory::attention(uint32_t layer, size_t ubatch, size_t run) const {
  CHIMERA_CHECK(txn_ && layer < attn_index_.size() && attn_index_[layer] >= 0,
                "attention(): no batch or layer ", layer, " is not an attention layer");
  const SeqRun& r = txn_->plan.ubatches.at(ubatch).runs.at(run);
  const SeqBook& b = seqs_[r.seq];
  const uint32_t a = static_cast<uint32_t>(attn_index_[layer]);
  AttentionRun out;
  out.k_pages = b.k_tab[a].data();
  out.v_pages = b.v_tab[a].data();
  out.first = r.first;
  out.n_kv = r.first + r.n_tokens;
  out.n_pages = pages_for(out.n_kv);
  out.page_size = cfg_.page_size;
  out.kv_dim = pool_of(a).kv_dim(attn_sub_[a]);
  out.type = cfg_.kv_type;
  return out;
}

KvSlot HybridMemory::kv_slot(uint32_t layer, size_t ubatch, size_t run, uint32_t t) const {
  CHIMERA_CHECK(txn_ && layer < attn_index_.size() && attn_index_[layer] >= 0, "kv_slot layer ",
                layer);
  const SeqRun& r = txn_->plan.ubatches.at(ubatch).runs.at(run);
  CHIMERA_CHECK(t < r.n_tokens, "kv_slot token ", t, " of ", r.n_tokens);
  const uint32_t a = static_cast<uint32_t>(attn_index_[layer]);
  const uint32_t idx = r.first + t;
  const uint32_t page = page_of(a, *seqs_[r.seq].pages, idx / cfg_.page_size);
  KvSlot out;
  out.k_page = pool_of(a).k_page(attn_sub_[a], page);
  out.v_page = pool_of(a).v_page(attn_sub_[a], page);
  out.slot = static_cast<int32_t>(idx % cfg_.page_size);
  return out;
}

const KvPageLayout& HybridMemory::kv_layout(uint32_t layer) const {
  CHIMERA_CHECK(layer < attn_index_.size() && attn_index_[layer] >= 0, "kv_layout: layer ", layer,
                " is not an attention layer");
  const uint32_t a = static_cast<uint32_t>(attn_index_[layer]);
  return pool_of(a).layout(attn_sub_[a]);
}

void HybridMemory::read_row(bool k, uint32_t layer, const SeqBook& b, uint32_t t, void* row) const {
  const uint32_t a = static_cast<uint32_t>(attn_index_[layer]);
  const uint32_t page = page_of(a, *b.pages, t / cfg_.page_size);
  CHIMERA_CHECK(page != kNoPage, "row ", t, " of window layer ", layer, " was released");
  const KvPool& pool = pool_of(a);
  const uint32_t sub = attn_sub_[a];
  pool.layout(sub).read_row(k ? pool.k_page(sub, page) : pool.v_page(sub, page), t % cfg_.page_size,
                            row);
}

RecurrentRun HybridMemory::recurrent(uint32_t layer, size_t ubatch, size_t run) const {
  CHIMERA_CHECK(txn_ && layer < rec_index_.size() && rec_index_[layer] >= 0,
                "recurrent(): no batch or layer ", layer, " is not a recurrent layer");
  const auto [src, dst] = txn_->run_slots.at(ubatch).at(run);
  const uint32_t l = static_cast<uint32_t>(rec_index_[layer]);
  RecurrentRun out;
  out.conv_src = states_->conv(src, l);
  out.ssm_src = states_->ssm(src, l);
  out.conv_dst = states_->conv(dst, l);
  out.ssm_dst = states_->ssm(dst, l);
  out.conv_floats = states_->conv_floats(l);
  out.ssm_floats = states_->ssm_floats(l);
  const std::vector<uint32_t>& steps = txn_->run_steps.at(ubatch).at(run);
  out.n_steps = static_cast<uint32_t>(steps.size());
  out.pool = states_.get();
  out.step_slots = steps.data();
  out.layer = l;
  const int32_t seq = txn_->plan.ubatches[ubatch].runs[run].seq;
  for (const Txn::SeqTxn& st : txn_->seqs)
    if (st.seq == seq) out.keep_inputs = st.prefix;
  return out;
}

bool HybridMemory::replays_prefix(int32_t seq) const {
  if (!txn_) return false;
  for (const Txn::SeqTxn& st : txn_->seqs)
    if (st.seq == seq) return st.prefix;
  return false;
}

Result<RecurrentRun> HybridMemory::recurrent_prefix(uint32_t layer, int32_t seq, uint32_t n) {
  if (!txn_) return Error(ErrorCode::kInvalidArgument, "recurrent_prefix: no batch in progress");
  if (layer >= rec_index_.size() || rec_index_[layer] < 0)
    return Error(ErrorCode::kInvalidArgument, "recurrent_prefix: layer ", layer,
                 " is not a recurrent layer");
  Txn::SeqTxn* st = nullptr;
  for (Txn::SeqTxn& t : txn_->seqs)
    if (t.seq == seq) st = &t;
  if (!st || !st->prefix)
    return Error(ErrorCode::kInvalidArgument, "recurrent_prefix: sequence ", seq,
                 " was not begun for prefix recompute in one run");
  if (n == 0 || n >= st->k)
    return Error(ErrorCode::kInvalidArgument, "recurrent_prefix: ", n, " tokens of sequence ", seq,
                 "'s ", st->k, " (a prefix is 1 .. count - 1)");
  st->prefix_n = n;
  const uint32_t l = static_cast<uint32_t>(rec_index_[layer]);
  const uint32_t src = seqs_[seq].slot, dst = st->final_slot;
  RecurrentRun out;
  out.conv_src = states_->conv(src, l);
  out.ssm_src = states_->ssm(src, l);
  out.conv_dst = states_->conv(dst, l);
  out.ssm_dst = states_->ssm(dst, l);
  out.conv_floats = states_->conv_floats(l);
  out.ssm_floats = states_->ssm_floats(l);
  out.pool = states_.get();
  out.layer = l;
  return out;
}

Status HybridMemory::commit(const std::vector<SeqKeep>& keep) {
  if (!txn_) return Error(ErrorCode::kInvalidArgument, "commit: no batch in progress");
  // Validate the whole list first: on error the batch stays open and nothing changed.
  std::vector<uint32_t> kept(txn_->seqs.size());
  std::vector<uint8_t> listed(txn_->seqs.size(), 0);
  for (size_t t = 0; t < txn_->seqs.size(); ++t) kept[t] = txn_->seqs[t].k;
  for (const SeqKeep& sk : keep) {
    size_t t = 0;
    while (t < txn_->seqs.size() && txn_->seqs[t].seq != sk.seq) ++t;
    if (t == txn_->seqs.size())
      return Error(ErrorCode::kInvalidArgument, "commit: sequence ", sk.seq,
                   " has no token in the batch");
    const Txn::SeqTxn& st = txn_->seqs[t];
    if (listed[t]) return Error(ErrorCode::kInvalidArgument, "commit: sequence ", sk.seq, " twice");
    if (sk.n > st.k)
      return Error(ErrorCode::kInvalidArgument, "commit: keep ", sk.n, " tokens of sequence ",
                   sk.seq, ", which has ", st.k, " in the batch");
    if (has_recurrent_ && !st.steps && sk.n != 0 && sk.n != st.k) {
      if (!st.prefix)
        return Error(ErrorCode::kInvalidArgument, "commit: keep ", sk.n, " of ", st.k,
                     " tokens of sequence ", sk.seq,
                     ": a partial commit needs per-token states or prefix recompute (begin_batch "
                     "step_seqs or prefix_seqs)");
      if (st.prefix_n != sk.n)
        return Error(ErrorCode::kInvalidArgument, "commit: keep ", sk.n, " of ", st.k,
                     " tokens of sequence ", sk.seq, ": the state after them was not recomputed",
                     " (recurrent_prefix was last asked for ", st.prefix_n, ")");
    }
    listed[t] = 1;
    kept[t] = sk.n;
  }
  // A recomputed prefix overwrote the final state: only that prefix (or nothing) can be kept.
  for (size_t t = 0; t < txn_->seqs.size(); ++t) {
    const Txn::SeqTxn& st = txn_->seqs[t];
    if (st.prefix && st.prefix_n != 0 && kept[t] != 0 && kept[t] != st.prefix_n)
      return Error(ErrorCode::kInvalidArgument, "commit: keep ", kept[t], " of ", st.k,
                   " tokens of sequence ", st.seq, ", but its state was recomputed for ",
                   st.prefix_n);
  }
  for (size_t t = 0; t < txn_->seqs.size(); ++t) {
    Txn::SeqTxn& st = txn_->seqs[t];
    SeqBook& b = seqs_[st.seq];
    if (kept[t] == 0) {  // nothing kept: exactly the pre-batch state, as abort() for this one
      b.pages = st.old_pages;
      for (auto [page, fill] : st.old_fill) kv_->set_fill(page, fill);
      for (uint32_t s : st.slots) states_->unref(s);
      continue;
    }
    const uint32_t new_n = st.old_n + kept[t];
    if (kept[t] < st.k) drop_tail(b, st.old_n, new_n, st.old_fill);
    b.n = new_n;
    if (!has_recurrent_) {
      if (win_) commit_window_snapshots(b, st.old_n, st.k, st.old_pages);
      continue;
    }
    if (st.steps) {
      // Speculative verification: the state after the last kept token becomes live; no prompt
      // snapshots (the rollback they would serve is what this commit just did).
      for (auto [n_at, slot] : st.frozen)
        if (n_at <= new_n) add_snapshot(b, n_at, st.slots[slot], b.pages, false);
      st.final_slot = st.slots[kept[t] - 1];
      states_->unref(b.slot);
      b.slot = st.final_slot;
    } else if (st.prefix) {
      // Verification by recompute: the final slot holds the state after the kept tokens (all of
      // them, or the prefix the engine rewrote); as with per-token states, no prompt snapshots.
      states_->unref(b.slot);
      b.slot = st.final_slot;
      if (st.snapshot_end && kept[t] == st.k) add_snapshot(b, new_n, b.slot, b.pages, false);
    } else {
      auto has_snap_at = [&](uint32_t n) {
        return !b.snaps.empty() && snaps_.find(b.snaps.back())->n_tokens == n;
      };
      // Before a multi-token run (a prompt, or verification without per-token states): the
      // pre-batch state, for free.
      if (st.k > 1 && cfg_.snapshot_prompt_start && st.old_n > 0 && !has_snap_at(st.old_n))
        add_snapshot(b, st.old_n, b.slot, st.old_pages, false);
      for (auto [n_at, slot] : st.frozen) add_snapshot(b, n_at, slot, b.pages, false);
      states_->unref(b.slot);
      b.slot = st.final_slot;
      trim_window(b.pages, new_n);
      if (st.snapshot_end || (st.k > 1 && cfg_.snapshot_prompt_end))
        add_snapshot(b, new_n, b.slot, b.pages, false);
    }
    trim_window(b.pages, new_n);
    // The batch's allocation references: final moves to the book, the rest are dropped
    // (frozen slots live on in their snapshots).
    for (uint32_t s : st.slots)
      if (s != st.final_slot) states_->unref(s);
  }
  txn_.reset();
  enforce_snapshot_budget();
  trim_slot_cache();
  return Status::Ok();
}

void HybridMemory::drop_tail(SeqBook& b, uint32_t old_n, uint32_t new_n,
                             const std::vector<std::pair<uint32_t, uint32_t>>& old_fill) {
  const uint32_t ps = cfg_.page_size;
  const uint32_t np = pages_for(new_n);
  if (b.pages->size() > np) {
    // Pages past the kept rows came with this batch, in a list this batch cloned.
    CHIMERA_CHECK(b.pages.use_count() == 1, "drop_tail: shared page list");
    b.pages->truncate(np);
  }
  // Rows of the new last page past new_n were written by this batch only and are nobody's now:
  // lower the page's high-water mark to what holders have, so appending may reuse them.
  const uint32_t r = new_n % ps;
  if (r != 0 && np - 1 >= old_n / ps) {
    const uint32_t last = b.pages->ids().back();
    uint32_t before = 0;
    for (auto [page, fill] : old_fill)
      if (page == last) before = fill;
    kv_->set_fill(last, std::max(before, r));
  }
}

void HybridMemory::abort() {
  if (!txn_) return;
  for (auto it = txn_->seqs.rbegin(); it != txn_->seqs.rend(); ++it) {
    if (!it->old_pages) continue;  // reservation never reached this sequence
    seqs_[it->seq].pages = it->old_pages;
    for (auto [page, fill] : it->old_fill) kv_->set_fill(page, fill);
    for (uint32_t s : it->slots) states_->unref(s);
  }
  txn_.reset();
}

// ---------------------------------------------------------------- sliding-window pages

uint32_t HybridMemory::window_release(uint32_t n) const {
  if (!win_ || cfg_.window_reserve == UINT32_MAX) return 0;
  // The token after the first n (index n) reads keys from n + 1 - window on.
  const uint64_t need = uint64_t{n} + 1 > window_ ? uint64_t{n} + 1 - window_ : 0;
  const uint64_t keep_from = need > cfg_.window_reserve ? need - cfg_.window_reserve : 0;
  return static_cast<uint32_t>(keep_from / cfg_.page_size);
}

bool HybridMemory::window_ok(const PageList& list, uint32_t n) const {
  if (!win_) return true;
  const uint64_t need = uint64_t{n} + 1 > window_ ? uint64_t{n} + 1 - window_ : 0;
  return list.window_from() * uint64_t{cfg_.page_size} <= need;
}

void HybridMemory::trim_window(std::shared_ptr<PageList>& list, uint32_t n) {
  const size_t upto = std::min<size_t>(window_release(n), list->size());
  if (list->window_from() >= upto) return;
  if (list.use_count() > 1) list = list->clone_prefix(list->size());
  list->release_window(upto);
}

Result<std::pair<uint32_t, uint32_t>> HybridMemory::alloc_pair() {
  if (fail_alloc_in_ == 0) {
    fail_alloc_in_ = -1;
    return Error(ErrorCode::kOutOfMemory, "injected allocation failure");
  }
  if (fail_alloc_in_ > 0) --fail_alloc_in_;
  CHIMERA_ASSIGN_OR_RETURN(uint32_t id, kv_->alloc());
  if (!win_) return std::make_pair(id, kNoPage);
  Result<uint32_t> wid = win_->alloc();
  if (!wid.ok()) {
    kv_->unref(id);
    return wid.status();
  }
  return std::make_pair(id, *wid);
}

void HybridMemory::commit_window_snapshots(SeqBook& b, uint32_t old_n, uint32_t k,
                                           const std::shared_ptr<PageList>& old_pages) {
  // Window rows behind the window go, so rolling back past the reserve replays from a snapshot;
  // these hold the window rows at their point (no recurrent state). Same policy as recurrent.
  const uint32_t new_n = b.n, every = cfg_.snapshot_interval;
  auto has_snap_at = [&](uint32_t n) {
    return !b.snaps.empty() && snaps_.find(b.snaps.back())->n_tokens == n;
  };
  if (k > 1 && cfg_.snapshot_prompt_start && old_n > 0 && !has_snap_at(old_n))
    add_snapshot(b, old_n, kNoSlot, old_pages, false);
  if (every > 0)
    for (uint32_t at = (old_n / every + 1) * every; at < new_n; at += every)
      add_snapshot(b, at, kNoSlot, b.pages, false);
  trim_window(b.pages, new_n);
  if ((every > 0 && new_n % every == 0 && new_n > old_n) || (k > 1 && cfg_.snapshot_prompt_end))
    add_snapshot(b, new_n, kNoSlot, b.pages, false);
}

// ---------------------------------------------------------------- snapshots and budgets

uint64_t HybridMemory::add_snapshot(SeqBook& b, uint32_t n, uint32_t slot,
                                    const std::shared_ptr<PageList>& pages, bool pinned) {
  Snapshot& s = snaps_.create();
  s.n_tokens = n;
  s.pos_base = b.pos_base;
  s.slot = slot;
  if (slot != kNoSlot) states_->ref(slot);
  s.pages = pages->size() == pages_for(n) ? pages : pages->clone_prefix(pages_for(n));
  trim_window(s.pages, n);  // the window rows ending at n, no more
  s.pins = pinned ? 1 : 0;
  s.seq_refs = 1;
  auto pos = std::upper_bound(b.snaps.begin(), b.snaps.end(), n, [this](uint32_t v, uint64_t id) {
    return v < snaps_.find(id)->n_tokens;
  });
  b.snaps.insert(pos, s.id);
  return s.id;
}

void HybridMemory::set_snaps(SeqBook& b, std::vector<uint64_t> snaps) {
  for (uint64_t id : snaps) ++snaps_.find(id)->seq_refs;
  std::vector<uint64_t> old = std::move(b.snaps);
  b.snaps = std::move(snaps);
  for (uint64_t id : old) unlist_snapshot(id);
}

void HybridMemory::unlist_snapshot(uint64_t id) {
  Snapshot* s = snaps_.find(id);
  CHIMERA_CHECK(s && s->seq_refs > 0, "unlist of snapshot ", id);
  if (--s->seq_refs == 0 && s->pins == 0) erase_snapshot(*s);
}

void HybridMemory::erase_snapshot(Snapshot& s) {
  const uint64_t id = s.id;
  for (uint32_t i = 0; i < seqs_.size() && s.seq_refs > 0; ++i) {
    auto& v = seqs_[i].snaps;
    auto it = std::find(v.begin(), v.end(), id);
    if (it != v.end()) {
      v.erase(it);
      --s.seq_refs;
    }
  }
  if (s.slot != kNoSlot) states_->unref(s.slot);
  s.pages.reset();
  snaps_.erase(id);
}

uint64_t HybridMemory::used_bytes() const {
  return uint64_t{kv_->pages_in_use()} * kv_->page_bytes() +
         (win_ ? uint64_t{win_->pages_in_use()} * win_->page_bytes() : 0) +
         uint64_t{states_->slots_in_use()} * states_->slot_bytes();
}

uint64_t HybridMemory::held_bytes(bool include_pinned) const {
  if (++mark_gen_ == 0) {  // wrapped: reset the marks
    std::fill(page_mark_.begin(), page_mark_.end(), 0);
    std::fill(wpage_mark_.begin(), wpage_mark_.end(), 0);
    std::fill(slot_mark_.begin(), slot_mark_.end(), 0);
    mark_gen_ = 1;
  }
  page_mark_.resize(kv_->ids_issued(), 0);
  wpage_mark_.resize(win_ ? win_->ids_issued() : 0, 0);
  slot_mark_.resize(states_->ids_issued(), 0);
  uint64_t pages = 0, wpages = 0, slots = 0;
  auto mark = [&](const PageList& list, uint32_t slot) {
    for (uint32_t id : list.ids())
      if (page_mark_[id] != mark_gen_) {
        page_mark_[id] = mark_gen_;
        ++pages;
      }
    for (uint32_t id : list.wids())
      if (id != kNoPage && wpage_mark_[id] != mark_gen_) {
        wpage_mark_[id] = mark_gen_;
        ++wpages;
      }
    if (slot != kNoSlot && slot_mark_[slot] != mark_gen_) {
      slot_mark_[slot] = mark_gen_;
      ++slots;
    }
  };
  const PageList empty(kv_.get(), win_.get());
  mark(empty, zero_slot_);
  for (const SeqBook& b : seqs_) mark(*b.pages, b.slot);
  if (include_pinned)
    for (const auto& [id, s] : snaps_.all())
      if (s.pins > 0) mark(*s.pages, s.slot);
  return pages * kv_->page_bytes() + (win_ ? wpages * win_->page_bytes() : 0) +
         slots * states_->slot_bytes();
}

bool HybridMemory::make_room(uint64_t extra, uint64_t limit) {
  if (used_bytes() + extra <= limit) return true;
  if (held_bytes(true) + extra > limit) return false;
  while (used_bytes() + extra > limit) {
    Snapshot* s = snaps_.oldest_evictable();
    CHIMERA_CHECK(s, "make_room: nothing left to evict");
    erase_snapshot(*s);
  }
  return true;
}

void HybridMemory::enforce_snapshot_budget() {
  if (snaps_.size() == 0) return;
  const uint64_t live = held_bytes(false);
  while (used_bytes() - live > cfg_.snapshot_budget_bytes) {
    Snapshot* s = snaps_.oldest_evictable();
    if (!s) break;
    erase_snapshot(*s);
  }
}

void HybridMemory::trim_slot_cache() {
  // Keep released state buffers for reuse (a decode step needs fresh scratch slots), but never
  // more than the unused part of the budget.
  const uint64_t used = used_bytes();
  const uint64_t spare = used < cfg_.budget_bytes ? cfg_.budget_bytes - used : 0;
  const uint64_t sb = std::max<uint64_t>(states_->slot_bytes(), 1);
  states_->trim_cache(static_cast<uint32_t>(std::min<uint64_t>(spare / sb, 2 * cfg_.max_seqs)));
}

}  // namespace chimera
