// State save/load. Format (little-endian, version 2):
//   header: magic "CHIMSTAT", u32 version, u32 scope (0 whole memory, 1 one sequence),
//           u64 layout fingerprint, u32 n_layers, u32 n_attention, u32 n_recurrent, u32 kv_type,
//           u32 n_vocab, u32 n_entries, u64 payload bytes, u64 payload checksum,
//           u64 header checksum (of the bytes before it)
//   payload, per sequence: i32 seq, u32 n_tokens, i64 position base, i32 tokens[n],
//           [window layers only: u32 wf, the first token whose window-layer rows are held],
//           per attention layer: K rows, V rows (token-major rows, heads in order, whatever the
//           page layout in memory): [n][row], or [n - wf][row] (tokens wf..n-1) for window layers;
//           if recurrent: f32 live state [slot floats];
//           u32 n_snapshots, per snapshot: u32 token count at, if recurrent f32 state [slot
//           floats], [window layers only: u32 sf, the first token whose window rows it holds,
//           then per window layer K rows, V rows of tokens sf .. min(at, wf)-1, the ones its
//           sequence no longer holds].
// wf and sf are multiples of the page size, at most n + 1 - window (at + 1 - window): the rows
// the next token needs are always there. Version 1 is version 2 for memories without window
// layers (and is still read for them).
// Sequences are stored whole (sharing between them is not kept); a snapshot's KV is the prefix
// of its sequence's. Loaded snapshots are automatic (explicit handles are not persisted).
// A load parses and checks everything (checksums, layout, ids, sizes, budget) before it changes
// anything.
#include <algorithm>
#include <cstring>
#include <functional>

#include "memory/hybrid_memory.h"

namespace chimera {

namespace {

constexpr char kMagic[8] = {'C', 'H', 'I', 'M', 'S', 'T', 'A', 'T'};
constexpr uint32_t kVersion = 2;
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8 + 4 * 6 + 8 + 8 + 8;

class Writer {
 public:
  template <typename T>
  void put(T v) {
    raw(&v, sizeof(v));
  }
  void raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  }
  std::vector<uint8_t> out;
};

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  template <typename T>
  bool get(T* v) {
    if (n_ - off_ < sizeof(T)) return false;
    std::memcpy(v, p_ + off_, sizeof(T));
    off_ += sizeof(T);
    return true;
  }
  // Skips count * elem bytes, returning where they start (nullptr when they do not fit).
  const uint8_t* take(uint64_t count, uint64_t elem) {
    if (elem != 0 && count > (n_ - off_) / elem) return nullptr;
    const uint8_t* at = p_ + off_;
    off_ += count * elem;
    return at;
  }
  size_t offset() const { return off_; }
  size_t left() const { return n_ - off_; }

 private:
  const uint8_t* p_;
  size_t n_, off_ = 0;
};

struct ParsedSnap {
  uint32_t at = 0;
  const uint8_t* state = nullptr;
  uint32_t sf = 0;                   // window layers: first token with rows
  std::vector<const uint8_t*> k, v;  // per attention layer: rows sf .. min(at, wf)-1 (window only)
};

struct ParsedSeq {
  int32_t seq = 0;
  uint32_t n = 0;
  int64_t pos_base = 0;
  const uint8_t* tokens = nullptr;
  uint32_t wf = 0;
  std::vector<const uint8_t*> k, v;  // rows 0.. (window layers: wf..) n-1
  const uint8_t* state = nullptr;
  std::vector<ParsedSnap> snaps;
};

// What the parser needs to know of the memory beyond its config.
struct StateShape {
  uint32_t n_attn = 0, n_rec = 0;
  std::vector<size_t> row_bytes;  // per attention ordinal
  std::vector<uint8_t> window;    // per attention ordinal
  uint32_t max_window = 0;        // 0: no window layers
  uint64_t slot_bytes = 0;
  // First token index the token after the first n reads in a window layer.
  uint64_t need(uint32_t n) const {
    return uint64_t{n} + 1 > max_window ? uint64_t{n} + 1 - max_window : 0;
  }
};

}  // namespace

static void write_seq(Writer& w, int32_t seq, const std::vector<int32_t>& toks, int64_t base,
                      const std::function<void(Writer&)>& body) {
  w.put<int32_t>(seq);
  w.put<uint32_t>(static_cast<uint32_t>(toks.size()));
  w.put<int64_t>(base);
  w.raw(toks.data(), toks.size() * sizeof(int32_t));
  body(w);
}

static Result<std::vector<uint8_t>> finish(const MemoryConfig& cfg, uint32_t scope,
                                           uint32_t n_entries, const std::vector<uint8_t>& payload,
                                           uint32_t n_attn, uint32_t n_rec) {
  Writer h;
  h.raw(kMagic, 8);
  h.put<uint32_t>(kVersion);
  h.put<uint32_t>(scope);
  h.put<uint64_t>(cfg.layout_fingerprint());
  h.put<uint32_t>(static_cast<uint32_t>(cfg.layers.size()));
  h.put<uint32_t>(n_attn);
  h.put<uint32_t>(n_rec);
  h.put<uint32_t>(static_cast<uint32_t>(cfg.kv_type));
  h.put<uint32_t>(cfg.n_vocab);
  h.put<uint32_t>(n_entries);
  h.put<uint64_t>(payload.size());
  h.put<uint64_t>(checksum64(payload.data(), payload.size()));
  h.put<uint64_t>(checksum64(h.out.data(), h.out.size()));
  CHIMERA_CHECK(h.out.size() == kHeaderBytes, "state header size");
  h.out.insert(h.out.end(), payload.begin(), payload.end());
  return std::move(h.out);
}

Result<std::vector<uint8_t>> HybridMemory::save() const {
  CHIMERA_RETURN_IF_ERROR(check_idle("save"));
  Writer w;
  uint32_t n_entries = 0;
  for (uint32_t s = 0; s < cfg_.max_seqs; ++s) {
    if (seqs_[s].n == 0 && seqs_[s].pos_base == 0) continue;
    ++n_entries;
    CHIMERA_ASSIGN_OR_RETURN(std::vector<uint8_t> one, save_seq(static_cast<int32_t>(s)));
    w.raw(one.data() + kHeaderBytes, one.size() - kHeaderBytes);
  }
  return finish(cfg_, 0, n_entries, w.out, static_cast<uint32_t>(attn_window_.size()),
                states_->n_layers());
}

Result<std::vector<uint8_t>> HybridMemory::save_seq(int32_t seq) const {
  CHIMERA_RETURN_IF_ERROR(check_idle("save_seq"));
  CHIMERA_RETURN_IF_ERROR(check_seq(seq, "save_seq"));
  const SeqBook& b = seqs_[seq];
  Writer w;
  const uint32_t ps = cfg_.page_size;
  const uint32_t wf = window_from(seq);
  write_seq(w, seq, tokens(seq), b.pos_base, [&](Writer& w2) {
    if (win_) w2.put<uint32_t>(wf);
    // Token rows [from, to) of attention ordinal a in list, whatever the page layout in memory.
    std::vector<uint8_t> row;
    auto put_rows = [&](const PageList& list, uint32_t a, uint32_t from, uint32_t to) {
      const KvPool& pool = pool_of(a);
      const uint32_t sub = attn_sub_[a];
      row.resize(pool.row_bytes(sub));
      for (int pass = 0; pass < 2; ++pass)
        for (uint32_t t = from; t < to; ++t) {
          const uint32_t page = page_of(a, list, t / ps);
          pool.layout(sub).read_row(pass == 0 ? pool.k_page(sub, page) : pool.v_page(sub, page),
                                    t % ps, row.data());
          w2.raw(row.data(), row.size());
        }
    };
    for (uint32_t a = 0; a < attn_window_.size(); ++a)
      put_rows(*b.pages, a, attn_window_[a] ? wf : 0, b.n);
    if (has_recurrent_) w2.raw(states_->data(b.slot), states_->slot_bytes());
    std::vector<const Snapshot*> path;  // one per token count (the format wants them ascending)
    for (uint64_t id : b.snaps) {
      const Snapshot* s = snaps_.find(id);
      if (path.empty() || path.back()->n_tokens < s->n_tokens) path.push_back(s);
    }
    w2.put<uint32_t>(static_cast<uint32_t>(path.size()));
    for (const Snapshot* s : path) {
      w2.put<uint32_t>(s->n_tokens);
      if (has_recurrent_) w2.raw(states_->data(s->slot), states_->slot_bytes());
      if (!win_) continue;
      const uint32_t sf = static_cast<uint32_t>(s->pages->window_from()) * ps;
      w2.put<uint32_t>(sf);
      for (uint32_t a = 0; a < attn_window_.size(); ++a)
        if (attn_window_[a]) put_rows(*s->pages, a, sf, std::max(sf, std::min(s->n_tokens, wf)));
    }
  });
  return finish(cfg_, 1, 1, w.out, static_cast<uint32_t>(attn_window_.size()), states_->n_layers());
}

namespace {

Status parse_state(const MemoryConfig& cfg, const uint8_t* data, size_t size, uint32_t want_scope,
                   const StateShape& shape, std::vector<ParsedSeq>* out) {
  const uint32_t n_attn = shape.n_attn, n_rec = shape.n_rec;
  const std::vector<size_t>& row_bytes = shape.row_bytes;
  const uint64_t slot_bytes = shape.slot_bytes;
  const bool windowed = shape.max_window > 0;
  auto bad = [](auto... args) { return Error(ErrorCode::kFormat, "state: ", args...); };
  if (data == nullptr || size < kHeaderBytes)
    return bad(size, " bytes, shorter than the ", kHeaderBytes, "-byte header");
  Reader r(data, size);
  char magic[8];
  for (char& c : magic) r.get(&c);
  if (std::memcmp(magic, kMagic, 8) != 0) return bad("not a chimera state (bad magic)");
  uint32_t version, scope, n_layers, f_attn, f_rec, kv_type, n_vocab, n_entries;
  uint64_t fp, payload_bytes, payload_sum, header_sum;
  r.get(&version);
  r.get(&scope);
  r.get(&fp);
  r.get(&n_layers);
  r.get(&f_attn);
  r.get(&f_rec);
  r.get(&kv_type);
  r.get(&n_vocab);
  r.get(&n_entries);
  r.get(&payload_bytes);
  r.get(&payload_sum);
  const size_t header_sum_at = r.offset();
  r.get(&header_sum);
  if (checksum64(data, header_sum_at) != header_sum) return bad("header checksum mismatch");
  if (version == 1 && windowed)
    return Error(ErrorCode::kUnsupported,
                 "state: format version 1 predates the release of sliding-window rows; this "
                 "memory has window layers and reads version ",
                 kVersion, " only (save the state again with this build)");
  if (version != kVersion && version != 1)
    return Error(ErrorCode::kUnsupported, "state: format version ", version,
                 "; this build reads versions 1 (memories without window layers) and ", kVersion);
  if (scope != want_scope)
    return Error(ErrorCode::kInvalidArgument, "state: holds ",
                 scope == 0 ? "a whole memory" : "one sequence", "; use ",
                 scope == 0 ? "load()" : "load_seq()");
  if (fp != cfg.layout_fingerprint()) {
    const GgmlType ft = static_cast<GgmlType>(kv_type);
    const TypeTraits* tt = type_traits(kv_type);
    return Error(ErrorCode::kInvalidArgument, "state: saved from another model or shape (",
                 n_layers, " layers, ", f_attn, " attention, ", f_rec, " recurrent, KV ",
                 tt ? type_name(ft) : "?", ", n_vocab ", n_vocab,
                 "); this memory: ", cfg.describe(),
                 n_layers == cfg.layers.size() && f_attn == n_attn && f_rec == n_rec
                     ? " (layer sizes differ)"
                     : "");
  }
  if (payload_bytes != size - kHeaderBytes)
    return bad("payload is ", size - kHeaderBytes, " bytes, header says ", payload_bytes);
  if (checksum64(data + kHeaderBytes, size - kHeaderBytes) != payload_sum)
    return bad("payload checksum mismatch");
  if (scope == 1 && n_entries != 1) return bad("one-sequence state with ", n_entries, " entries");
  if (n_entries > cfg.max_seqs) return bad(n_entries, " sequences, max ", cfg.max_seqs);
  std::vector<uint8_t> seen(cfg.max_seqs, 0);
  for (uint32_t e = 0; e < n_entries; ++e) {
    ParsedSeq p;
    if (!r.get(&p.seq) || !r.get(&p.n) || !r.get(&p.pos_base))
      return bad("entry ", e, " truncated");
    if (scope == 0) {
      if (p.seq < 0 || static_cast<uint32_t>(p.seq) >= cfg.max_seqs)
        return bad("entry ", e, ": sequence id ", p.seq, " out of range [0, ", cfg.max_seqs, ")");
      if (seen[p.seq]++) return bad("entry ", e, ": sequence ", p.seq, " appears twice");
    }
    // Compared without adding: pos_base near INT64_MAX would overflow the sum (signed, UB).
    if (p.pos_base < 0 || p.pos_base > int64_t{INT32_MAX} - int64_t{p.n})
      return bad("entry ", e, ": positions ", p.pos_base, " + ", p.n, " out of range");
    if (!(p.tokens = r.take(p.n, 4))) return bad("entry ", e, ": tokens truncated");
    for (uint32_t t = 0; t < p.n; ++t) {
      int32_t tok;
      std::memcpy(&tok, p.tokens + 4 * size_t{t}, 4);
      if (tok < 0 || static_cast<uint32_t>(tok) >= cfg.n_vocab)
        return bad("entry ", e, " (sequence ", p.seq, "): token ", t, " id ", tok,
                   " out of range [0, ", cfg.n_vocab, ")");
    }
    const uint32_t ps = cfg.page_size;
    if (windowed) {
      if (!r.get(&p.wf)) return bad("entry ", e, ": window start truncated");
      if (p.wf % ps != 0 || p.wf > shape.need(p.n))
        return bad("entry ", e, ": window rows from token ", p.wf, " (must be a multiple of the ",
                   ps, "-token page and <= ", shape.need(p.n), " for ", p.n, " tokens)");
    }
    for (uint32_t a = 0; a < n_attn; ++a) {
      const uint32_t rows = p.n - (shape.window[a] ? p.wf : 0);
      p.k.push_back(r.take(rows, row_bytes[a]));
      p.v.push_back(r.take(rows, row_bytes[a]));
      if (!p.k.back() || !p.v.back()) return bad("entry ", e, ": KV rows truncated");
    }
    if (n_rec > 0 && !(p.state = r.take(1, slot_bytes)))
      return bad("entry ", e, ": state truncated");
    uint32_t n_snaps;
    if (!r.get(&n_snaps)) return bad("entry ", e, ": snapshot count truncated");
    if (n_snaps > p.n + 1)
      return bad("entry ", e, ": ", n_snaps, " snapshots for ", p.n, " tokens");
    for (uint32_t k = 0; k < n_snaps; ++k) {
      uint32_t at;
      if (!r.get(&at)) return bad("entry ", e, ": snapshot ", k, " truncated");
      if (at > p.n || (!p.snaps.empty() && at <= p.snaps.back().at))
        return bad("entry ", e, ": snapshot ", k, " at token ", at,
                   " (must be ascending and <= ", p.n, ")");
      ParsedSnap q;
      q.at = at;
      if (n_rec > 0 && !(q.state = r.take(1, slot_bytes)))
        return bad("entry ", e, ": snapshot ", k, " state truncated");
      if (windowed) {
        if (!r.get(&q.sf)) return bad("entry ", e, ": snapshot ", k, " window start truncated");
        if (q.sf % ps != 0 || q.sf > shape.need(at))
          return bad("entry ", e, ": snapshot ", k, " window rows from token ", q.sf,
                     " (must be a multiple of the ", ps, "-token page and <= ", shape.need(at),
                     ")");
        const uint32_t rows = std::max(q.sf, std::min(at, p.wf)) - q.sf;
        for (uint32_t a = 0; a < n_attn; ++a) {
          q.k.push_back(shape.window[a] ? r.take(rows, row_bytes[a]) : nullptr);
          q.v.push_back(shape.window[a] ? r.take(rows, row_bytes[a]) : nullptr);
          if (shape.window[a] && (!q.k.back() || !q.v.back()))
            return bad("entry ", e, ": snapshot ", k, " window rows truncated");
        }
      }
      p.snaps.push_back(std::move(q));
    }
    out->push_back(std::move(p));
  }
  if (r.left() != 0) return bad(r.left(), " trailing bytes after the last entry");
  return Status::Ok();
}

}  // namespace

Status HybridMemory::load(const uint8_t* data, size_t size) {
  return load_impl(data, size, -1);
}

Status HybridMemory::load_seq(const uint8_t* data, size_t size, int32_t dst_seq) {
  CHIMERA_RETURN_IF_ERROR(check_seq(dst_seq, "load_seq"));
  return load_impl(data, size, dst_seq);
}

Status HybridMemory::load_impl(const uint8_t* data, size_t size, int32_t dst_seq) {
  const bool whole = dst_seq < 0;
  CHIMERA_RETURN_IF_ERROR(check_idle(whole ? "load" : "load_seq"));
  StateShape shape;
  shape.n_attn = static_cast<uint32_t>(attn_window_.size());
  shape.n_rec = states_->n_layers();
  for (uint32_t a = 0; a < shape.n_attn; ++a) {
    shape.row_bytes.push_back(pool_of(a).row_bytes(attn_sub_[a]));
    shape.window.push_back(attn_window_[a]);
  }
  shape.max_window = window_;
  shape.slot_bytes = states_->slot_bytes();
  const std::vector<size_t>& rows = shape.row_bytes;
  std::vector<ParsedSeq> parsed;
  CHIMERA_RETURN_IF_ERROR(parse_state(cfg_, data, size, whole ? 0 : 1, shape, &parsed));
  const uint32_t ps = cfg_.page_size;
  uint64_t pages = 0, wpages = 0, slots = 0;
  for (const ParsedSeq& p : parsed) {
    pages += pages_for(p.n);
    if (has_recurrent_) slots += 1 + p.snaps.size();
    if (!win_) continue;
    wpages += pages_for(p.n) - p.wf / ps;
    // A snapshot's own window pages: those its sequence released.
    for (const ParsedSnap& q : p.snaps)
      wpages += pages_for(std::max(q.sf, std::min(q.at, p.wf))) - q.sf / ps;
  }
  const uint64_t need = pages * kv_->page_bytes() + (win_ ? wpages * win_->page_bytes() : 0) +
                        slots * states_->slot_bytes();
  if (whole) {
    // Everything is replaced; only the zero state stays.
    const uint64_t zero = has_recurrent_ ? states_->slot_bytes() : 0;
    if (need + zero > cfg_.budget_bytes || pages > kv_->max_pages() ||
        (win_ && wpages > win_->max_pages()))
      return Error(ErrorCode::kOutOfMemory, "load: the state needs ", need,
                   " bytes, the memory budget is ", cfg_.budget_bytes);
    clear();
  } else {
    // Conservative: as if the destination's current contents stayed.
    if (kv_->pages_in_use() + pages > kv_->max_pages() ||
        (win_ && win_->pages_in_use() + wpages > win_->max_pages()) ||
        !make_room(need, cfg_.budget_bytes))
      return Error(ErrorCode::kOutOfMemory, "load_seq: the sequence needs ", need, " bytes; ",
                   used_bytes(), " of the ", cfg_.budget_bytes,
                   "-byte budget are in use and cannot be freed");
    release_seq(seqs_[dst_seq]);
  }
  auto alloc = [](KvPool& pool) {
    Result<uint32_t> page = pool.alloc();
    CHIMERA_CHECK(page.ok(), "load: page allocation after the budget check");
    return *page;
  };
  // Rows [from, to) of attention ordinal a (src: row `from` first) into the page pair (id, wid)
  // holding tokens [first, first + page_size).
  auto put_rows = [&](uint32_t a, uint32_t id, uint32_t wid, uint32_t first, uint32_t from,
                      uint32_t to, const uint8_t* k, const uint8_t* v) {
    KvPool& pool = attn_window_[a] ? *win_ : *kv_;
    const uint32_t sub = attn_sub_[a], page = attn_window_[a] ? wid : id;
    for (uint32_t t = std::max(from, first); t < std::min(to, first + ps); ++t) {
      pool.layout(sub).write_row(pool.k_page(sub, page), t - first, k + (t - from) * rows[a]);
      pool.layout(sub).write_row(pool.v_page(sub, page), t - first, v + (t - from) * rows[a]);
    }
  };
  for (const ParsedSeq& p : parsed) {
    SeqBook& b = seqs_[whole ? p.seq : dst_seq];
    b.pos_base = p.pos_base;
    b.n = p.n;
    for (uint32_t i = 0; i < pages_for(p.n); ++i) {
      const uint32_t first = i * ps;
      const uint32_t id = alloc(*kv_);
      const uint32_t wid = win_ && first >= p.wf ? alloc(*win_) : kNoPage;
      const uint32_t cnt = std::min(ps, p.n - first);
      kv_->set_fill(id, cnt);
      std::memcpy(kv_->tokens(id), p.tokens + 4 * size_t{first}, 4 * size_t{cnt});
      for (uint32_t a = 0; a < shape.n_attn; ++a)
        if (!attn_window_[a] || wid != kNoPage)
          put_rows(a, id, wid, first, attn_window_[a] ? p.wf : 0, p.n, p.k[a], p.v[a]);
      b.pages->push(id, wid);
    }
    if (has_recurrent_) {
      const uint32_t slot = states_->alloc();
      std::memcpy(states_->data(slot), p.state, states_->slot_bytes());
      states_->unref(b.slot);
      b.slot = slot;
    }
    for (const ParsedSnap& q : p.snaps) {
      uint32_t slot = kNoSlot;
      if (has_recurrent_) {
        slot = states_->alloc();
        std::memcpy(states_->data(slot), q.state, states_->slot_bytes());
      }
      std::shared_ptr<PageList> list = b.pages;
      if (win_) {  // the sequence's pages, with window halves of its own where they were released
        const uint32_t own_to = std::max(q.sf, std::min(q.at, p.wf));
        list = std::make_shared<PageList>(kv_.get(), win_.get());
        for (uint32_t i = 0; i < pages_for(q.at); ++i) {
          const uint32_t first = i * ps, id = b.pages->ids()[i];
          kv_->ref(id);
          uint32_t wid = kNoPage;
          if (first >= q.sf && first < own_to) {
            wid = alloc(*win_);
            for (uint32_t a = 0; a < shape.n_attn; ++a)
              if (attn_window_[a]) put_rows(a, id, wid, first, q.sf, own_to, q.k[a], q.v[a]);
          } else if (first >= q.sf) {
            wid = b.pages->wids()[i];
            win_->ref(wid);
          }
          list->push(id, wid);
        }
      }
      add_snapshot(b, q.at, slot, list, false);
      if (slot != kNoSlot) states_->unref(slot);
    }
    trim_window(b.pages, b.n);  // this memory's reserve may release more than the saver's
  }
  enforce_snapshot_budget();
  return Status::Ok();
}

}  // namespace chimera
