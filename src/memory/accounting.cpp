// Accounting (bytes per part, per sequence, human-readable summary) and the state fingerprint.
#include <cinttypes>
#include <cstdio>

#include "memory/hybrid_memory.h"

namespace chimera {

namespace {

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30))
    std::snprintf(buf, sizeof(buf), "%.2f GiB", b / double(1ull << 30));
  else if (b >= (1ull << 20))
    std::snprintf(buf, sizeof(buf), "%.2f MiB", b / double(1ull << 20));
  else if (b >= 1024)
    std::snprintf(buf, sizeof(buf), "%.1f KiB", b / 1024.0);
  else
    std::snprintf(buf, sizeof(buf), "%" PRIu64 " B", b);
  return buf;
}

}  // namespace

MemoryUsage HybridMemory::usage() const {
  MemoryUsage u;
  u.budget_bytes = cfg_.budget_bytes;
  u.snapshot_budget_bytes = cfg_.snapshot_budget_bytes;
  u.pages_in_use = kv_->pages_in_use();
  u.slots_in_use = states_->slots_in_use();
  u.window_pages_in_use = win_ ? win_->pages_in_use() : 0;
  u.window_kv_bytes = win_ ? uint64_t{u.window_pages_in_use} * win_->page_bytes() : 0;
  u.kv_bytes = uint64_t{u.pages_in_use} * kv_->page_bytes() + u.window_kv_bytes;
  u.state_bytes = uint64_t{u.slots_in_use} * states_->slot_bytes();
  u.cached_state_bytes = uint64_t{states_->slots_cached()} * states_->slot_bytes();
  u.n_snapshots = static_cast<uint32_t>(snaps_.size());
  for (const auto& [id, s] : snaps_.all()) u.n_pinned_snapshots += s.pins > 0;
  // What sequences hold, counted once: mark pages and slots held by books.
  held_bytes(false);
  uint64_t live_pages = 0, live_wpages = 0, live_slots = 0;
  for (size_t i = 0; i < page_mark_.size(); ++i) live_pages += page_mark_[i] == mark_gen_;
  for (size_t i = 0; i < wpage_mark_.size(); ++i) live_wpages += wpage_mark_[i] == mark_gen_;
  for (size_t i = 0; i < slot_mark_.size(); ++i) live_slots += slot_mark_[i] == mark_gen_;
  u.live_kv_bytes = live_pages * kv_->page_bytes() + (win_ ? live_wpages * win_->page_bytes() : 0);
  u.live_state_bytes = live_slots * states_->slot_bytes();
  u.snapshot_bytes = u.total_bytes() - u.live_kv_bytes - u.live_state_bytes;
  for (uint32_t s = 0; s < cfg_.max_seqs; ++s) {
    const SeqBook& b = seqs_[s];
    if (b.n == 0) continue;
    SeqUsage q;
    q.seq = static_cast<int32_t>(s);
    q.n_tokens = b.n;
    q.pages = static_cast<uint32_t>(b.pages->size());
    q.window_pages = win_ ? q.pages - static_cast<uint32_t>(b.pages->window_from()) : 0;
    q.kv_bytes = uint64_t{q.pages} * kv_->page_bytes() +
                 (win_ ? uint64_t{q.window_pages} * win_->page_bytes() : 0);
    for (uint32_t id : b.pages->ids())
      if (b.pages.use_count() > 1 || kv_->refs(id) > 1) q.kv_shared_bytes += kv_->page_bytes();
    for (uint32_t id : b.pages->wids())
      if (id != kNoPage && (b.pages.use_count() > 1 || win_->refs(id) > 1))
        q.kv_shared_bytes += win_->page_bytes();
    q.state_bytes = b.slot == zero_slot_ ? 0 : states_->slot_bytes();
    q.snapshots = static_cast<uint32_t>(b.snaps.size());
    u.seqs.push_back(q);
  }
  return u;
}

std::string MemoryUsage::summary() const {
  std::string out = StrCat("memory: ", human_bytes(total_bytes()), " of ",
                           human_bytes(budget_bytes), " budget\n");
  out += StrCat("  KV pages:   ", human_bytes(kv_bytes), " (", pages_in_use, " pages; ",
                human_bytes(live_kv_bytes), " held by sequences)\n");
  if (window_pages_in_use > 0)
    out += StrCat("  of which sliding-window layers: ", human_bytes(window_kv_bytes), " (",
                  window_pages_in_use, " pages; rows behind every window released)\n");
  out += StrCat("  states:     ", human_bytes(state_bytes), " (", slots_in_use, " slots; ",
                human_bytes(live_state_bytes), " held by sequences)\n");
  out += StrCat("  snapshots:  ", n_snapshots, " (", n_pinned_snapshots, " explicit), ",
                human_bytes(snapshot_bytes), " held only by them, budget ",
                human_bytes(snapshot_budget_bytes), "\n");
  out += StrCat("  cached free state buffers: ", human_bytes(cached_state_bytes), "\n");
  for (const SeqUsage& q : seqs)
    out +=
        StrCat("  seq ", q.seq, ": ", q.n_tokens, " tokens, ", q.pages, " pages",
               window_pages_in_use > 0 ? StrCat(" (", q.window_pages, " with window rows)") : "",
               " (", human_bytes(q.kv_bytes), ", ", human_bytes(q.kv_shared_bytes),
               " shared), state ", human_bytes(q.state_bytes), ", ", q.snapshots, " snapshots\n");
  return out;
}

uint64_t HybridMemory::fingerprint() const {
  uint64_t h = 0x5eed;
  auto add = [&h](uint64_t v) { h = checksum64(&v, sizeof(v), h); };
  std::vector<uint8_t> buf;
  auto add_list = [&](const PageList& list, uint32_t n) {
    add(list.window_from());
    for (uint32_t t = 0; t < n; ++t) {
      const uint32_t pi = t / cfg_.page_size, row = t % cfg_.page_size;
      add(static_cast<uint32_t>(kv_->tokens(list.ids()[pi])[row]));
      for (uint32_t a = 0; a < attn_window_.size(); ++a) {
        const uint32_t page = page_of(a, list, pi);
        if (page == kNoPage) continue;  // released window rows
        const KvPool& pool = pool_of(a);
        const uint32_t sub = attn_sub_[a];
        buf.resize(pool.row_bytes(sub));
        pool.layout(sub).read_row(pool.k_page(sub, page), row, buf.data());
        h = checksum64(buf.data(), buf.size(), h);
        pool.layout(sub).read_row(pool.v_page(sub, page), row, buf.data());
        h = checksum64(buf.data(), buf.size(), h);
      }
    }
  };
  auto add_slot = [&](uint32_t slot) {
    if (slot != kNoSlot) h = checksum64(states_->data(slot), states_->slot_bytes(), h);
  };
  for (uint32_t s = 0; s < cfg_.max_seqs; ++s) {
    const SeqBook& b = seqs_[s];
    add(s);
    add(b.n);
    add(static_cast<uint64_t>(b.pos_base));
    add_list(*b.pages, b.n);
    add_slot(b.slot);
    for (uint64_t id : b.snaps) add(id);
  }
  for (const auto& [id, snap] : snaps_.all()) {
    add(id);
    add(snap.n_tokens);
    add(snap.pins);
    add(snap.made_by_handle);
    add(snap.seq_refs);
    add(static_cast<uint64_t>(snap.pos_base));
    add_list(*snap.pages, snap.n_tokens);
    add_slot(snap.slot);
  }
  add(kv_->pages_in_use());
  if (win_) add(win_->pages_in_use());
  add(states_->slots_in_use());
  return h;
}

}  // namespace chimera
