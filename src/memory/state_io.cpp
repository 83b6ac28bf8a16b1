// State save/load. Format (little-endian, version 1):
//   header: magic "CHIMSTAT", u32 version, u32 scope (0 whole memory, 1 one sequence),
//           u64 layout fingerprint, u32 n_layers, u32 n_attention, u32 n_recurrent, u32 kv_type,
//           u32 n_vocab, u32 n_entries, u64 payload bytes, u64 payload checksum,
//           u64 header checksum (of the bytes before it)
//   payload, per sequence: i32 seq, u32 n_tokens, i64 position base, i32 tokens[n],
//           per attention layer: K rows [n][row], V rows [n][row] (token-major rows, heads in
//           order, whatever the page layout in memory);
//           if recurrent: f32 live state [slot floats];
//           u32 n_snapshots, per snapshot: u32 token count, if recurrent f32 state [slot floats]
// Sequences are stored whole (sharing between them is not kept); a snapshot's KV is the prefix
// of its sequence's. Loaded snapshots are automatic (explicit handles are not persisted).
// A load parses and checks everything (checksums, layout, ids, sizes, budget) before it changes
// anything.
#include <cstring>
#include <functional>

#include "memory/hybrid_memory.h"

namespace chimera {

namespace {

constexpr char kMagic[8] = {'C', 'H', 'I', 'M', 'S', 'T', 'A', 'T'};
constexpr uint32_t kVersion = 1;
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

struct ParsedSeq {
  int32_t seq = 0;
  uint32_t n = 0;
  int64_t pos_base = 0;
  const uint8_t* tokens = nullptr;
  std::vector<const uint8_t*> k, v;
  const uint8_t* state = nullptr;
  std::vector<std::pair<uint32_t, const uint8_t*>> snaps;
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
  return finish(cfg_, 0, n_entries, w.out, kv_->n_layers(), states_->n_layers());
}

Result<std::vector<uint8_t>> HybridMemory::save_seq(int32_t seq) const {
  CHIMERA_RETURN_IF_ERROR(check_idle("save_seq"));
  CHIMERA_RETURN_IF_ERROR(check_seq(seq, "save_seq"));
  const SeqBook& b = seqs_[seq];
  Writer w;
  write_seq(w, seq, tokens(seq), b.pos_base, [&](Writer& w2) {
    // Token rows, whatever the page layout in memory (KvPageLayout).
    std::vector<uint8_t> row;
    for (uint32_t a = 0; a < kv_->n_layers(); ++a) {
      row.resize(kv_->row_bytes(a));
      for (int pass = 0; pass < 2; ++pass)
        for (uint32_t t = 0; t < b.n; ++t) {
          const uint32_t page = b.pages->ids()[t / cfg_.page_size];
          kv_->layout(a).read_row(pass == 0 ? kv_->k_page(a, page) : kv_->v_page(a, page),
                                  t % cfg_.page_size, row.data());
          w2.raw(row.data(), row.size());
        }
    }
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
    }
  });
  return finish(cfg_, 1, 1, w.out, kv_->n_layers(), states_->n_layers());
}

namespace {

Status parse_state(const MemoryConfig& cfg, const uint8_t* data, size_t size, uint32_t want_scope,
                   uint32_t n_attn, uint32_t n_rec, const std::vector<size_t>& row_bytes,
                   uint64_t slot_bytes, std::vector<ParsedSeq>* out) {
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
  if (version != kVersion)
    return Error(ErrorCode::kUnsupported, "state: format version ", version,
                 "; this build reads version ", kVersion);
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
    for (uint32_t a = 0; a < n_attn; ++a) {
      p.k.push_back(r.take(p.n, row_bytes[a]));
      p.v.push_back(r.take(p.n, row_bytes[a]));
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
      if (at > p.n || (!p.snaps.empty() && at <= p.snaps.back().first))
        return bad("entry ", e, ": snapshot ", k, " at token ", at,
                   " (must be ascending and <= ", p.n, ")");
      const uint8_t* st = nullptr;
      if (n_rec > 0 && !(st = r.take(1, slot_bytes)))
        return bad("entry ", e, ": snapshot ", k, " state truncated");
      p.snaps.emplace_back(at, st);
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
  std::vector<size_t> rows;
  for (uint32_t a = 0; a < kv_->n_layers(); ++a) rows.push_back(kv_->row_bytes(a));
  std::vector<ParsedSeq> parsed;
  CHIMERA_RETURN_IF_ERROR(parse_state(cfg_, data, size, whole ? 0 : 1, kv_->n_layers(),
                                      states_->n_layers(), rows, states_->slot_bytes(), &parsed));
  uint64_t pages = 0, slots = 0;
  for (const ParsedSeq& p : parsed) {
    pages += pages_for(p.n);
    if (has_recurrent_) slots += 1 + p.snaps.size();
  }
  const uint64_t need = pages * kv_->page_bytes() + slots * states_->slot_bytes();
  if (whole) {
    // Everything is replaced; only the zero state stays.
    const uint64_t zero = has_recurrent_ ? states_->slot_bytes() : 0;
    if (need + zero > cfg_.budget_bytes || pages > kv_->max_pages())
      return Error(ErrorCode::kOutOfMemory, "load: the state needs ", need,
                   " bytes, the memory budget is ", cfg_.budget_bytes);
    clear();
  } else {
    // Conservative: as if the destination's current contents stayed.
    if (kv_->pages_in_use() + pages > kv_->max_pages() || !make_room(need, cfg_.budget_bytes))
      return Error(ErrorCode::kOutOfMemory, "load_seq: the sequence needs ", need, " bytes; ",
                   used_bytes(), " of the ", cfg_.budget_bytes,
                   "-byte budget are in use and cannot be freed");
    release_seq(seqs_[dst_seq]);
  }
  for (const ParsedSeq& p : parsed) {
    SeqBook& b = seqs_[whole ? p.seq : dst_seq];
    b.pos_base = p.pos_base;
    b.n = p.n;
    for (uint32_t i = 0; i < pages_for(p.n); ++i) {
      Result<uint32_t> page = kv_->alloc();
      CHIMERA_CHECK(page.ok(), "load: page allocation after the budget check");
      const uint32_t first = i * cfg_.page_size;
      const uint32_t cnt = std::min(cfg_.page_size, p.n - first);
      kv_->set_fill(*page, cnt);
      std::memcpy(kv_->tokens(*page), p.tokens + 4 * size_t{first}, 4 * size_t{cnt});
      for (uint32_t a = 0; a < kv_->n_layers(); ++a) {
        for (uint32_t j = 0; j < cnt; ++j) {
          kv_->layout(a).write_row(kv_->k_page(a, *page), j, p.k[a] + (first + j) * rows[a]);
          kv_->layout(a).write_row(kv_->v_page(a, *page), j, p.v[a] + (first + j) * rows[a]);
        }
      }
      b.pages->push(*page);
    }
    if (has_recurrent_) {
      const uint32_t slot = states_->alloc();
      std::memcpy(states_->data(slot), p.state, states_->slot_bytes());
      states_->unref(b.slot);
      b.slot = slot;
    }
    for (auto [at, st] : p.snaps) {
      uint32_t slot = kNoSlot;
      if (has_recurrent_) {
        slot = states_->alloc();
        std::memcpy(states_->data(slot), st, states_->slot_bytes());
      }
      add_snapshot(b, at, slot, b.pages, false);
      if (slot != kNoSlot) states_->unref(slot);
    }
  }
  enforce_snapshot_budget();
  return Status::Ok();
}

}  // namespace chimera
