// Random-operation driver for the memory oracle test: every operation of the memory (batches
// with random shapes and ubatch sizes, injected failures, invalid input, seq_rm of tails/prefixes/
// middles with replay, seq_cp/keep/add/div, clear, explicit snapshots, save/load round trips and
// corrupted loads), each checked against a reference token list per sequence.
#pragma once

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "fake_model.h"

namespace chimera::fake {

struct RefSeq {
  std::vector<int32_t> tokens;
  int64_t pos_base = 0;
};

class RandomOps {
 public:
  RandomOps(HybridMemory& mem, uint64_t seed, uint32_t active_seqs, uint32_t max_len)
      : mem_(mem),
        rng_(seed),
        active_(active_seqs),
        max_len_(max_len),
        ref_(mem.config().max_seqs) {}

  // Runs n operations; returns "" or a description of the first failure. full_every: check
  // every sequence after that many operations (touched sequences are checked after each one).
  std::string run(uint64_t n, uint64_t full_every = 1) {
    for (uint64_t i = 0; i < n; ++i) {
      touched_.clear();
      std::string err = step();
      if (err.empty()) {
        if (full_every <= 1 || i % full_every == 0) {
          err = check_all();
        } else {
          for (int32_t s : touched_) {
            err = check_seq(mem_, s, ref_[s].tokens, ref_[s].pos_base);
            if (!err.empty()) break;
          }
        }
      }
      ++ops_;
      if (!err.empty()) return "op " + std::to_string(i) + " (" + last_op_ + "): " + err;
    }
    return "";
  }
  uint64_t ops() const { return ops_; }
  uint64_t batches() const { return batches_; }
  uint64_t tokens_decoded() const { return tokens_decoded_; }
  // seq_rm cuts behind released window rows (restore + replay).
  uint64_t window_restores() const { return window_restores_; }

  std::string check_all() {
    for (uint32_t s = 0; s < mem_.config().max_seqs; ++s) {
      std::string err = check_seq(mem_, static_cast<int32_t>(s), ref_[s].tokens, ref_[s].pos_base);
      if (!err.empty()) return err;
    }
    return "";
  }

 private:
  uint32_t rnd(uint32_t n) { return static_cast<uint32_t>(rng_() % n); }
  int32_t pick_seq() { return static_cast<int32_t>(rnd(active_)); }
  int32_t pick_nonempty() {
    for (int k = 0; k < 8; ++k) {
      int32_t s = pick_seq();
      if (!ref_[s].tokens.empty()) return s;
    }
    return pick_seq();
  }

  // Submits `batch` (expected tokens per sequence in `after`), possibly failing on purpose.
  // Returns "" on success or expected failure.
  // step_seqs / keep: speculative verification (per-token states, commit of a prefix).
  std::string submit(const Batch& batch, int mode, const std::vector<int32_t>& step_seqs = {},
                     const std::vector<SeqKeep>& keep = {}) {
    ++batches_;
    const uint64_t fp = mem_.fingerprint();
    const uint32_t n_snaps = mem_.usage().n_snapshots;
    if (mode == 2) mem_.inject_alloc_failure(rnd(4));
    auto plan = mem_.begin_batch(batch, step_seqs);
    mem_.inject_alloc_failure(-1);
    auto unchanged = [&](const char* what) -> std::string {
      // Reserving may evict automatic snapshots to make room; only then may the hash differ.
      if (mem_.usage().n_snapshots == n_snaps && mem_.fingerprint() != fp)
        return std::string("state changed after ") + what;
      return check_all();
    };
    if (!plan.ok()) {
      if (plan.status().code() != ErrorCode::kOutOfMemory)
        return "unexpected batch error: " + plan.status().ToString();
      return unchanged("a failed reservation");
    }
    std::vector<std::vector<int32_t>> expect(mem_.config().max_seqs);
    for (size_t i = 0; i < batch.size(); ++i) touched_.push_back(batch.seq[i]);
    for (int32_t s : touched_) expect[s] = ref_[s].tokens;
    for (size_t i = 0; i < batch.size(); ++i) expect[batch.seq[i]].push_back(batch.tokens[i]);
    std::string why;
    const int abort_at = mode == 1 ? static_cast<int>(rnd((*plan)->ubatches.size())) : -1;
    if (!run_batch(mem_, batch, **plan, &expect, &why, abort_at)) return why;
    if (mode == 1) {
      mem_.abort();
      return unchanged("abort");
    }
    if (mem_.has_recurrent() && rnd(4) == 0) {
      // A partial keep of a sequence without per-token states is refused; the batch stays open.
      for (int32_t s : touched_) {
        const uint32_t k = static_cast<uint32_t>(expect[s].size() - ref_[s].tokens.size());
        if (k < 2 || std::find(step_seqs.begin(), step_seqs.end(), s) != step_seqs.end()) continue;
        if (mem_.commit({{s, k - 1}}).ok()) return "partial commit without per-token states";
        if (!mem_.in_batch()) return "refused commit closed the batch";
        break;
      }
    }
    Status st = mem_.commit(keep);
    if (!st.ok()) return "commit: " + st.ToString();
    // Window layers: after a commit a sequence holds no window rows on pages wholly before
    // n + 1 - window - reserve (its memory is bounded by the window, not its length).
    const MemoryConfig& cfg = mem_.config();
    uint32_t window = 0;
    for (const MemoryLayer& L : cfg.layers) window = std::max(window, L.window);
    if (window > 0 && cfg.window_reserve != UINT32_MAX)
      for (int32_t s : touched_) {
        const uint64_t n = mem_.n_tokens(s);
        const uint64_t need = n + 1 > window ? n + 1 - window : 0;
        const uint64_t from = need > cfg.window_reserve ? need - cfg.window_reserve : 0;
        if (mem_.window_from(s) < from / cfg.page_size * cfg.page_size)
          return "seq " + std::to_string(s) + " of " + std::to_string(n) +
                 " tokens keeps window rows from " + std::to_string(mem_.window_from(s)) +
                 "; pages before " + std::to_string(from) + " should be released";
      }
    std::vector<uint8_t> done(mem_.config().max_seqs, 0);
    for (int32_t s : touched_) {
      if (done[s]++) continue;  // touched_ lists a sequence once per batch entry
      const size_t old_n = ref_[s].tokens.size();
      ref_[s].tokens = expect[s];
      for (const SeqKeep& k : keep)
        if (k.seq == s) ref_[s].tokens.resize(old_n + k.n);
    }
    tokens_decoded_ += batch.size();
    return "";
  }

  // Speculative verification: some sequences run 1..17 tokens with per-token states and keep a
  // random prefix of them (0 to all); others in the same batch decode one token or a chunk.
  std::string op_spec_batch() {
    const uint32_t n_seq = 1 + rnd(std::min<uint32_t>(active_, 4));
    std::vector<int32_t> seqs, step_seqs;
    for (uint32_t k = 0; k < n_seq; ++k) {
      int32_t s = pick_seq();
      if (std::find(seqs.begin(), seqs.end(), s) == seqs.end()) seqs.push_back(s);
    }
    std::vector<int32_t> order;
    std::vector<uint32_t> len(mem_.config().max_seqs, 0);
    for (int32_t s : seqs) {
      const bool spec = rnd(3) != 0;
      len[s] = spec ? 1 + rnd(17) : rnd(3) == 0 ? 1 + rnd(20) : 1;
      if (ref_[s].tokens.size() + len[s] > max_len_) len[s] = 1;
      if (spec) step_seqs.push_back(s);
      order.insert(order.end(), len[s], s);
    }
    std::shuffle(order.begin(), order.end(), rng_);
    Batch b;
    std::vector<int64_t> next(mem_.config().max_seqs);
    for (int32_t s : seqs) next[s] = ref_[s].pos_base + static_cast<int64_t>(ref_[s].tokens.size());
    for (int32_t s : order)
      b.add(static_cast<int32_t>(rnd(mem_.config().n_vocab)), static_cast<int32_t>(next[s]++), s);
    std::vector<SeqKeep> keep;
    for (int32_t s : step_seqs) keep.push_back({s, rnd(4) == 0 ? len[s] : rnd(len[s] + 1)});
    // Attention alone rolls back for free: a prefix may be kept without per-token states.
    if (!mem_.has_recurrent())
      for (int32_t s : seqs)
        if (std::find(step_seqs.begin(), step_seqs.end(), s) == step_seqs.end() && rnd(2))
          keep.push_back({s, rnd(len[s] + 1)});
    mem_.set_max_ubatch_tokens(rnd(2) ? 512 : 1 + rnd(8));
    const uint32_t m = rnd(20);
    const int mode = m == 0 ? 1 : m == 1 ? 2 : 0;
    last_op_ = mode == 1   ? "spec batch+abort"
               : mode == 2 ? "spec batch+alloc failure"
                           : "spec batch";
    return submit(b, mode, step_seqs, keep);
  }

  std::string op_batch() {
    last_op_ = "batch";
    const uint32_t n_seq = 1 + rnd(std::min<uint32_t>(active_, 8));
    std::vector<int32_t> seqs;
    for (uint32_t k = 0; k < n_seq; ++k) {
      int32_t s = pick_seq();
      if (std::find(seqs.begin(), seqs.end(), s) == seqs.end()) seqs.push_back(s);
    }
    // Per sequence 1 token (decode) or a prompt chunk; entries interleaved at random.
    std::vector<int32_t> order;
    for (int32_t s : seqs) {
      uint32_t len = rnd(3) == 0 ? 1 + rnd(40) : 1;
      if (ref_[s].tokens.size() + len > max_len_) len = 1;
      order.insert(order.end(), len, s);
    }
    std::shuffle(order.begin(), order.end(), rng_);
    Batch b;
    std::vector<int64_t> next(mem_.config().max_seqs);
    for (int32_t s : seqs) next[s] = ref_[s].pos_base + static_cast<int64_t>(ref_[s].tokens.size());
    for (int32_t s : order)
      b.add(static_cast<int32_t>(rnd(mem_.config().n_vocab)), static_cast<int32_t>(next[s]++), s);
    mem_.set_max_ubatch_tokens(rnd(2) ? 512 : 1 + rnd(16));
    const uint32_t m = rnd(20);
    const int mode = m == 0 ? 1 : m == 1 ? 2 : 0;  // 5% compute failure, 5% allocation failure
    last_op_ = mode == 1 ? "batch+abort" : mode == 2 ? "batch+alloc failure" : "batch";
    std::string err = submit(b, mode);
    if (err.empty() && mem_.n_tokens(seqs[0]) > max_len_ / 2 && rnd(4) == 0) return op_rm();
    return err;
  }

  std::string op_invalid_batch() {
    last_op_ = "invalid batch";
    const int32_t s = pick_seq();
    Batch b;
    const int64_t next = ref_[s].pos_base + static_cast<int64_t>(ref_[s].tokens.size());
    for (int i = 0; i < 3; ++i) b.add(1, static_cast<int32_t>(next + i), s);
    const uint32_t which = rnd(2 + 1);
    const uint32_t e = rnd(3);
    if (which == 0) b.tokens[e] = static_cast<int32_t>(mem_.config().n_vocab + rnd(5));
    if (which == 1) b.seq[e] = rnd(2) ? -1 : static_cast<int32_t>(mem_.config().max_seqs);
    if (which == 2) b.pos[e] += rnd(2) ? 1 : -1;
    const uint64_t fp = mem_.fingerprint();
    auto plan = mem_.begin_batch(b);
    if (plan.ok()) {
      mem_.abort();
      return "invalid batch accepted";
    }
    if (plan.status().code() != ErrorCode::kInvalidArgument)
      return "invalid batch: " + plan.status().ToString();
    if (plan.status().message().find("entry " + std::to_string(e)) == std::string::npos)
      return "error does not name entry " + std::to_string(e) + ": " + plan.status().message();
    if (mem_.fingerprint() != fp) return "invalid batch changed the state";
    return "";
  }

  // Runs a replay returned by the memory; on OOM the sequence keeps the prefix.
  std::string replay(const Replay& rep, int32_t s) {
    if (rep.empty()) return "";
    if (rep.pos0 != ref_[s].pos_base + static_cast<int64_t>(ref_[s].tokens.size()))
      return "replay starts at " + std::to_string(rep.pos0);
    const Batch b = rep.as_batch();
    mem_.set_max_ubatch_tokens(1 + rnd(64));
    return submit(b, 0);
  }

  std::string op_rm() {
    const int32_t s = pick_nonempty();
    touched_.push_back(s);
    RefSeq& r = ref_[s];
    const int64_t n = static_cast<int64_t>(r.tokens.size());
    const uint32_t kind = rnd(4);
    int64_t p0, p1;
    if (kind <= 1) {  // tail
      last_op_ = "seq_rm tail";
      p0 = r.pos_base + (n ? rnd(static_cast<uint32_t>(n + 1)) : 0);
      p1 = -1;
    } else if (kind == 2) {  // prefix
      last_op_ = "seq_rm prefix";
      p0 = rnd(2) ? -1 : 0;
      p1 = r.pos_base + (n ? rnd(static_cast<uint32_t>(n + 1)) : 0);
    } else {  // middle
      last_op_ = "seq_rm middle";
      const int64_t a = n ? rnd(static_cast<uint32_t>(n + 1)) : 0;
      const int64_t b = a + (n - a ? rnd(static_cast<uint32_t>(n - a + 1)) : 0);
      p0 = r.pos_base + a;
      p1 = r.pos_base + b;
    }
    std::vector<int32_t> kept;
    const int64_t i0 = std::clamp<int64_t>(p0 < 0 ? 0 : p0 - r.pos_base, 0, n);
    const int64_t i1 = std::clamp<int64_t>(p1 < 0 ? n : p1 - r.pos_base, 0, n);
    for (int64_t i = 0; i < n; ++i)
      if (i < i0 || i >= i1) kept.push_back(r.tokens[i]);
    const RestorePoints rp = mem_.restorable(s);
    const uint32_t wf_before = mem_.window_from(s);
    auto rep = mem_.seq_rm(s, p0, p1);
    if (!rep.ok()) return "seq_rm failed: " + rep.status().ToString();
    if (kept.empty()) r.pos_base = i0 < i1 ? 0 : r.pos_base;
    if (i0 >= i1) kept = r.tokens;
    // Memory now holds a prefix of `kept`; the replay brings it to all of `kept`.
    const size_t have = mem_.n_tokens(s);
    if (have + rep->tokens.size() != kept.size() ||
        !std::equal(rep->tokens.begin(), rep->tokens.end(), kept.begin() + have))
      return "replay tokens do not complete the kept list";
    r.tokens.assign(kept.begin(), kept.begin() + have);
    // Attention alone: a tail removal replays only when window rows it needs were released.
    if (!mem_.has_recurrent() && kind <= 1 && i0 < i1 && i0 >= rp.any_from && !rep->empty())
      return "attention tail rm replays (restorable from " + std::to_string(rp.any_from) + ")";
    uint32_t window = 0;
    for (const MemoryLayer& L : mem_.config().layers) window = std::max(window, L.window);
    if (i0 < i1 && i0 + 1 > window && wf_before > i0 + 1 - window) ++window_restores_;
    if (!mem_.has_recurrent() && kind <= 1 && i0 < i1 && i0 < rp.any_from) {
      // Window rows gone: it restored the newest restore point (a snapshot or 0) before the cut.
      uint32_t best = 0;
      for (uint32_t c : rp.counts)
        if (c <= i0) best = std::max(best, c);
      if (have != best)
        return "tail rm kept " + std::to_string(have) + " tokens, not the newest restore point " +
               std::to_string(best);
    }
    return replay(*rep, s);
  }

  std::string op_cp() {
    last_op_ = "seq_cp";
    const int32_t a = pick_nonempty(), b = pick_seq();
    touched_.push_back(b);
    Status st = mem_.seq_cp(a, b);
    if (!st.ok()) return st.ToString();
    ref_[b] = ref_[a];
    return "";
  }

  std::string op_keep() {
    last_op_ = "seq_keep";
    const int32_t s = pick_seq();
    Status st = mem_.seq_keep(s);
    if (!st.ok()) return st.ToString();
    for (size_t i = 0; i < ref_.size(); ++i)
      if (static_cast<int32_t>(i) != s) ref_[i] = RefSeq();
    return "";
  }

  std::string op_clear() {
    last_op_ = "clear";
    mem_.clear();
    for (RefSeq& r : ref_) r = RefSeq();
    handles_.clear();
    return "";
  }

  std::string op_add() {
    last_op_ = "seq_add";
    const int32_t s = pick_seq();
    touched_.push_back(s);
    RefSeq& r = ref_[s];
    const int64_t delta = static_cast<int64_t>(rnd(16)) - (r.pos_base > 8 ? 8 : 0);
    if (rnd(8) == 0 && !r.tokens.empty()) {  // a sub-range: must be refused, nothing changed
      const uint64_t fp = mem_.fingerprint();
      auto bad = mem_.seq_add(s, r.pos_base + 1, -1, 3);
      if (bad.ok() || mem_.fingerprint() != fp) return "partial seq_add accepted";
      return "";
    }
    auto out = mem_.seq_add(s, -1, -1, delta);
    if (!out.ok()) return out.status().ToString();
    r.pos_base += delta;
    const std::vector<int32_t> all = r.tokens;
    r.tokens.resize(mem_.n_tokens(s));
    if (out->needs_replay != !out->replay.empty() || (out->needs_replay && !r.tokens.empty()))
      return "seq_add replay inconsistent";
    if (out->replay.tokens.size() + r.tokens.size() != all.size()) return "seq_add replay size";
    std::string err = replay(out->replay, s);
    if (err.empty() && mem_.seq_div(s, -1, -1, 2).ok() && mem_.n_tokens(s) > 0)
      return "seq_div accepted";
    return err;
  }

  std::string op_snapshot() {
    last_op_ = "snapshot";
    const int32_t s = pick_seq();
    auto id = mem_.snapshot(s);
    if (!id.ok()) return id.status().ToString();
    handles_.push_back({*id, ref_[s]});
    return "";
  }

  std::string op_restore() {
    last_op_ = "restore";
    if (handles_.empty()) return op_snapshot();
    const auto& [id, state] = handles_[rnd(static_cast<uint32_t>(handles_.size()))];
    const int32_t s = pick_seq();
    touched_.push_back(s);
    Status st = mem_.restore(s, id);
    if (!st.ok()) return st.ToString();
    ref_[s] = state;
    return "";
  }

  std::string op_release() {
    last_op_ = "release";
    if (handles_.empty()) return "";
    const size_t k = rnd(static_cast<uint32_t>(handles_.size()));
    Status st = mem_.release(handles_[k].first);
    handles_.erase(handles_.begin() + k);
    return st.ok() ? "" : st.ToString();
  }

  std::string op_save_load() {
    if (rnd(2)) {
      last_op_ = "save/load whole";
      auto bytes = mem_.save();
      if (!bytes.ok()) return bytes.status().ToString();
      const uint64_t fp = mem_.fingerprint();
      Status st = mem_.load(bytes->data(), bytes->size());
      if (st.code() == ErrorCode::kOutOfMemory)  // sharing is not persisted: may not fit
        return mem_.fingerprint() == fp ? "" : "failed load changed the state";
      if (!st.ok()) return "load: " + st.ToString();
      handles_.clear();  // explicit handles do not survive a whole load
      return check_all();
    }
    last_op_ = "save_seq/load_seq";
    const int32_t a = pick_seq(), b = pick_seq();
    touched_.push_back(b);
    auto bytes = mem_.save_seq(a);
    if (!bytes.ok()) return bytes.status().ToString();
    Status st = mem_.load_seq(bytes->data(), bytes->size(), b);
    if (st.code() == ErrorCode::kOutOfMemory) return "";
    if (!st.ok()) return "load_seq: " + st.ToString();
    ref_[b] = ref_[a];
    return "";
  }

  std::string op_bad_load() {
    last_op_ = "corrupted load";
    const int32_t a = pick_seq();
    auto bytes = rnd(2) ? mem_.save_seq(a) : mem_.save();
    if (!bytes.ok()) return bytes.status().ToString();
    std::vector<uint8_t> v = *bytes;
    const bool seq_file = v[12] == 1;
    switch (rnd(3)) {
      case 0:
        v[rnd(static_cast<uint32_t>(v.size()))] ^= static_cast<uint8_t>(1 + rnd(255));
        break;
      case 1:
        v.resize(rnd(static_cast<uint32_t>(v.size())));
        break;
      default:
        v.push_back(0);
        break;
    }
    const uint64_t fp = mem_.fingerprint();
    Status st =
        seq_file ? mem_.load_seq(v.data(), v.size(), pick_seq()) : mem_.load(v.data(), v.size());
    if (st.ok()) return "corrupted state loaded";
    if (mem_.fingerprint() != fp) return "failed load changed the state: " + st.ToString();
    return "";
  }

  std::string step() {
    const uint32_t r = rnd(100);
    if (r < 33) return op_batch();
    if (r < 45) return op_spec_batch();
    if (r < 48) return op_invalid_batch();
    if (r < 60) return op_rm();
    if (r < 68) return op_cp();
    if (r < 69) return op_keep();
    if (r < 70) return op_clear();
    if (r < 74) return op_add();
    if (r < 80) return op_snapshot();
    if (r < 85) return op_restore();
    if (r < 89) return op_release();
    if (r < 95) return op_save_load();
    return op_bad_load();
  }

  HybridMemory& mem_;
  std::mt19937_64 rng_;
  uint32_t active_, max_len_;
  std::vector<RefSeq> ref_;
  std::vector<std::pair<uint64_t, RefSeq>> handles_;
  std::vector<int32_t> touched_;
  std::string last_op_;
  uint64_t ops_ = 0, batches_ = 0, tokens_decoded_ = 0, window_restores_ = 0;
};

}  // namespace chimera::fake
