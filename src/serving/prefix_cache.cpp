#include "serving/prefix_cache.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace chimera::serving {

// ---------------------------------------------------------------- radix tree

struct RadixTree::Node {
  std::vector<TokenId> edge;
  std::map<TokenId, std::unique_ptr<Node>> kids;
  std::set<uint64_t> ids;
};

RadixTree::RadixTree() : root_(std::make_unique<Node>()) {}
RadixTree::~RadixTree() = default;

void RadixTree::insert(const std::vector<TokenId>& tokens, uint64_t id) {
  Node* n = root_.get();
  n->ids.insert(id);
  size_t i = 0;
  while (i < tokens.size()) {
    auto it = n->kids.find(tokens[i]);
    if (it == n->kids.end()) {
      auto leaf = std::make_unique<Node>();
      leaf->edge.assign(tokens.begin() + i, tokens.end());
      leaf->ids.insert(id);
      n->kids.emplace(tokens[i], std::move(leaf));
      return;
    }
    Node* c = it->second.get();
    size_t k = 0;
    while (k < c->edge.size() && i + k < tokens.size() && c->edge[k] == tokens[i + k]) ++k;
    if (k < c->edge.size()) {  // split the edge at k
      auto mid = std::make_unique<Node>();
      mid->edge.assign(c->edge.begin(), c->edge.begin() + k);
      mid->ids = c->ids;
      std::unique_ptr<Node> old = std::move(it->second);
      old->edge.erase(old->edge.begin(), old->edge.begin() + k);
      mid->kids.emplace(old->edge[0], std::move(old));
      it->second = std::move(mid);
      c = it->second.get();
    }
    c->ids.insert(id);
    n = c;
    i += k;
  }
}

void RadixTree::erase(const std::vector<TokenId>& tokens, uint64_t id) {
  Node* n = root_.get();
  n->ids.erase(id);
  size_t i = 0;
  while (i < tokens.size()) {
    auto it = n->kids.find(tokens[i]);
    if (it == n->kids.end()) return;
    Node* c = it->second.get();
    c->ids.erase(id);
    if (c->ids.empty()) {  // nobody passes here any more
      n->kids.erase(it);
      return;
    }
    i += c->edge.size();
    n = c;
  }
}

std::map<uint64_t, size_t> RadixTree::match(const std::vector<TokenId>& tokens) const {
  std::map<uint64_t, size_t> out;
  const Node* n = root_.get();
  for (uint64_t id : n->ids) out[id] = 0;
  size_t i = 0;
  while (i < tokens.size()) {
    auto it = n->kids.find(tokens[i]);
    if (it == n->kids.end()) break;
    const Node* c = it->second.get();
    size_t k = 0;
    while (k < c->edge.size() && i + k < tokens.size() && c->edge[k] == tokens[i + k]) ++k;
    i += k;
    for (uint64_t id : c->ids) out[id] = i;
    if (k < c->edge.size()) break;
    n = c;
  }
  return out;
}

size_t RadixTree::nodes() const {
  size_t count = 0;
  std::vector<const Node*> stack = {root_.get()};
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    ++count;
    for (const auto& [t, c] : n->kids) stack.push_back(c.get());
  }
  return count;
}

// ---------------------------------------------------------------- the cache

namespace {

constexpr size_t kMaxTombstones = 64;
// Priors for the value of a snapshot against a whole entry (which a continuation reuses whole):
// the share of requests that diverge at a message boundary (edit, regenerate) or elsewhere.
// A conversation's tip snapshot (its last prompt's end) serves its next turn whenever that
// diverges inside the last answer (sent back re-tokenized), and every regeneration of it:
// that one weighs most.
constexpr double kTipDivergence = 0.5;
constexpr double kBoundaryDivergence = 0.25;
constexpr double kIntervalDivergence = 0.1;
// Tiers (lowest goes first): prompt-end snapshots of conversations that moved on (a later turn
// holds snapshots past them, at the answer end and its own prompt end; only branching back to
// regenerate that old answer wants them), then old branches and inner snapshots, then what a
// conversation's next turn needs: its tip (its last prompt's end, and the end of its last
// message just before it: a next turn whose answer sent back tokenizes together with the
// generation header diverges inside the header), then branch points live conversations share
// (one serves every conversation that shares it, a common system prompt; below the tips, the
// two tips of many conversations filled the budget and evicted it, so each new user ran the
// system prompt again), and last each entry (a tip serves a next turn only with its entry; an
// entry without its tip still serves every turn that sends the last answer back as generated,
// and the rest replays from an earlier snapshot).
constexpr int kTierStalePromptEnd = 0;
constexpr int kTierInner = 1;
constexpr int kTierTip = 2;
constexpr int kTierShared = 3;
constexpr int kTierEntry = 4;
constexpr int kTiers = 5;
constexpr double kRecencyWeight = 0.5;

size_t common_prefix(const std::vector<TokenId>& a, const std::vector<TokenId>& b) {
  size_t k = 0;
  while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
  return k;
}

// 1-based index of the message holding token `at`, from the message end counts.
size_t message_of(const std::vector<uint32_t>& boundaries, size_t at) {
  return static_cast<size_t>(std::upper_bound(boundaries.begin(), boundaries.end(), at) -
                             boundaries.begin()) +
         1;
}

}  // namespace

PrefixCache::PrefixCache(HybridMemory& mem, const EngineConfig& cfg, int32_t n_vocab)
    : mem_(mem), cfg_(cfg), n_vocab_(n_vocab) {
  baseline_bytes_ = mem_.usage().total_bytes();
}

PrefixCache::~PrefixCache() = default;

uint64_t PrefixCache::slot_bytes() const {
  uint64_t floats = 0;
  for (const MemoryLayer& l : mem_.config().layers) floats += l.conv_floats + l.ssm_floats;
  return floats * sizeof(float);
}

uint64_t PrefixCache::snap_bytes(const SnapInfo& s) const {
  return slot_bytes() + (s.logits ? s.logits->size() * sizeof(float) : 0);
}

uint64_t PrefixCache::logits_bytes() const {
  uint64_t n = 0;
  for (const auto& [sid, s] : snaps_)
    if (s.logits) n += s.logits->size() * sizeof(float);
  return n;
}

uint64_t PrefixCache::tokens() const {
  uint64_t n = 0;
  for (const auto& [id, e] : entries_) n += e.tokens.size();
  return n;
}

PrefixCache::Attach PrefixCache::attach(const std::vector<TokenId>& prompt,
                                        const std::vector<uint32_t>& boundaries, int32_t dst) {
  Attach out;
  ++clock_;
  const size_t P = prompt.size();
  const std::map<uint64_t, size_t> lcp = tree_.match(prompt);
  size_t matched = 0;
  for (const auto& [id, l] : lcp) matched = std::max(matched, l);
  // The best entry: the one whose state, rolled back to at most P - 1 tokens (the last prompt
  // token always runs, for its logits), keeps the most tokens without compute.
  // Or the whole prompt, where a snapshot at its end kept the last token's logits.
  uint64_t best = 0, deepest = 0;
  size_t best_rp = 0;
  uint64_t best_snap = 0;
  Logits best_logits;
  for (const auto& [id, l] : lcp) {
    const Entry& e = entries_.at(id);
    if (!deepest || l > lcp.at(deepest) ||
        (l == lcp.at(deepest) && e.last_use > entries_.at(deepest).last_use))
      deepest = id;
    const size_t t = std::min(l, P - 1);
    size_t rp = 0;
    uint64_t snap = 0;
    Logits logits;
    if (l == P)
      for (auto [sid, n] : mem_.snapshots_of(e.seq)) {
        auto it = snaps_.find(sid);
        if (n == P && it != snaps_.end() && it->second.logits) {
          rp = P;
          snap = sid;
          logits = it->second.logits;
        }
      }
    if (logits) {
      // the whole prompt, nothing to run
    } else if (t == e.tokens.size() || !mem_.has_recurrent()) {
      rp = t;  // the whole entry, or attention alone (any prefix of it is exact)
    } else {
      for (auto [sid, n] : mem_.snapshots_of(e.seq))
        if (n <= t && n >= rp) {
          rp = n;
          snap = sid;
        }
    }
    if (rp > best_rp || (rp == best_rp && rp > 0 && e.last_use > entries_.at(best).last_use)) {
      best = id;
      best_rp = rp;
      best_snap = snap;
      best_logits = logits;
    }
  }
  out.report.matched = static_cast<int64_t>(std::min(matched, P));
  if (best_rp > 0) {
    Entry& e = entries_.at(best);
    Status st = mem_.seq_cp(e.seq, dst);
    CHIMERA_CHECK(st.ok(), "prefix cache fork: ", st.ToString());
    if (best_rp < e.tokens.size()) {
      auto rep = mem_.seq_rm(dst, static_cast<int64_t>(best_rp), -1);
      CHIMERA_CHECK(rep.ok() && rep->empty(), "prefix cache rollback to a snapshot replays");
    }
    CHIMERA_CHECK(mem_.n_tokens(dst) == best_rp, "prefix cache fork holds ", mem_.n_tokens(dst),
                  " tokens, expected ", best_rp);
    e.last_use = clock_;
    ++e.hits;
    ++hits_;
    if (best_snap) snaps_[best_snap].last_use = clock_;
    out.held = best_rp;
    out.logits = best_logits;
  }
  out.report.reused = static_cast<int64_t>(out.held);
  // Why it matched less than it could have.
  size_t tomb = 0;
  for (const auto& t : tombstones_) tomb = std::max(tomb, common_prefix(t, prompt));
  const size_t reachable = std::min(matched, P - 1);
  std::vector<std::string> why;
  if (tomb > matched && tomb > out.held)
    why.push_back("entry evicted (it held " + std::to_string(std::min(tomb, P)) +
                  " tokens of this prompt)");
  if (matched < P && !entries_.empty() && tomb <= matched) {
    std::string d = "diverged at token " + std::to_string(matched);
    if (!boundaries.empty())
      d += " (message " + std::to_string(message_of(boundaries, matched)) + ")";
    why.push_back(d);
  }
  if (out.held < reachable) {
    const uint64_t which = best ? best : deepest;
    const Entry* e = which ? &entries_.at(which) : nullptr;
    bool evicted = false;
    if (e)
      for (uint32_t n : e->evicted_snaps) evicted = evicted || (n > out.held && n <= reachable);
    const std::string replayed = "replayed " + std::to_string(reachable - out.held) +
                                 " tokens from token " + std::to_string(out.held);
    why.push_back(evicted ? "snapshot evicted: " + replayed : replayed);
  }
  for (size_t i = 0; i < why.size(); ++i) out.report.reason += (i ? "; " : "") + why[i];
  return out;
}

void PrefixCache::own_snapshot(Entry& e, uint64_t id) {
  if (std::find(e.snaps.begin(), e.snaps.end(), id) != e.snaps.end()) return;
  e.snaps.push_back(id);
  ++snaps_.at(id).owners;
}

void PrefixCache::disown_snapshot(uint64_t id) {
  auto it = snaps_.find(id);
  CHIMERA_CHECK(it != snaps_.end() && it->second.owners > 0, "disown of snapshot ", id);
  if (--it->second.owners == 0) {
    (void)mem_.release(id);
    snaps_.erase(it);
  }
}

uint64_t PrefixCache::add_entry(int32_t seq, std::vector<uint32_t> boundaries,
                                std::vector<uint64_t> pinned,
                                const std::map<uint64_t, Logits>& logits) {
  Entry e;
  e.id = next_id_++;
  e.seq = seq;
  e.tokens = mem_.tokens(seq);
  e.boundaries = std::move(boundaries);
  e.last_use = ++clock_;
  // Where its last turn began: its last message boundary, or (a completion) its deepest
  // pinned snapshot, where the same prompt again resumes.
  for (uint32_t b : e.boundaries)
    if (b <= e.tokens.size()) e.anchor = std::max(e.anchor, b);
  if (e.boundaries.empty())
    for (auto [sid, k] : mem_.snapshots_of(seq))
      if (std::find(pinned.begin(), pinned.end(), sid) != pinned.end())
        e.anchor = std::max(e.anchor, k);
  if (e.anchor == 0) e.anchor = static_cast<uint32_t>(e.tokens.size());
  std::set<uint64_t> on_path;
  for (auto [sid, n] : mem_.snapshots_of(seq)) on_path.insert(sid);
  // Snapshots pinned for this sequence: one pin each, which the cache now holds.
  for (uint64_t sid : pinned) {
    auto it = snaps_.find(sid);
    auto lg = logits.find(sid);
    if (it != snaps_.end()) {
      (void)mem_.release(sid);  // the cache already holds a pin on it
      if (lg != logits.end() && !it->second.logits) it->second.logits = lg->second;
    } else {
      SnapInfo si;
      for (auto [id2, n] : mem_.snapshots_of(seq))
        if (id2 == sid) si.n_tokens = n;
      si.boundary = std::binary_search(e.boundaries.begin(), e.boundaries.end(), si.n_tokens);
      si.last_use = e.last_use;
      if (lg != logits.end()) si.logits = lg->second;
      snaps_[sid] = si;
    }
  }
  const uint64_t id = e.id;
  Entry& ref = entries_[id] = std::move(e);
  // It owns every cache snapshot on its path (inherited from the entry it was forked from, or
  // pinned for it).
  for (uint64_t sid : on_path)
    if (snaps_.count(sid)) own_snapshot(ref, sid);
  for (uint64_t sid : pinned)
    if (snaps_.count(sid) && snaps_.at(sid).owners == 0) {
      // Pinned for it but no longer on its path (cannot happen: pins keep them); drop it.
      snaps_.erase(sid);
      (void)mem_.release(sid);
    }
  tree_.insert(ref.tokens, id);
  return id;
}

void PrefixCache::park(const std::vector<int32_t>& seqs, std::vector<uint64_t> snaps,
                       const std::vector<uint32_t>& thinned,
                       const std::vector<uint32_t>& boundaries, const PromptEnd& prompt_end,
                       std::vector<int32_t>& free_seqs) {
  std::vector<uint64_t> pinned = std::move(snaps);
  std::map<uint64_t, Logits> logits;
  if (prompt_end.snap && prompt_end.logits &&
      std::find(pinned.begin(), pinned.end(), prompt_end.snap) != pinned.end())
    logits[prompt_end.snap] = prompt_end.logits;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int32_t seq = seqs[i];
    if (mem_.n_tokens(seq) == 0 || cfg_.cache_mem == 0) {
      (void)mem_.seq_rm(seq, 0, -1);
      free_seqs.push_back(seq);
      continue;
    }
    // The first sequence takes the request's pins; the others own them through the cache.
    const uint64_t id =
        add_entry(seq, boundaries, i == 0 ? pinned : std::vector<uint64_t>{}, logits);
    if (i == 0) pinned.clear();
    Entry& e = entries_.at(id);
    e.evicted_snaps = thinned;
    std::set<uint64_t> path;
    for (auto [sid, n] : mem_.snapshots_of(seq)) path.insert(sid);
    // Entries this one makes redundant: a prefix of it whose snapshots it also holds.
    const std::map<uint64_t, size_t> lcp = tree_.match(e.tokens);
    for (const auto& [other, l] : lcp) {
      if (other == id) continue;
      Entry& o = entries_.at(other);
      bool covered = true;
      for (uint64_t sid : o.snaps) covered = covered && path.count(sid) > 0;
      if (!covered) continue;
      if (l == o.tokens.size()) {
        for (uint64_t sid : o.snaps) own_snapshot(e, sid);
        e.hits += o.hits;
        remove_entry(other, &free_seqs, false);
      }
    }
    // Or this one is redundant: a prefix of another entry that holds its snapshots.
    for (const auto& [other, l] : tree_.match(e.tokens)) {
      if (other == id || l != e.tokens.size()) continue;
      Entry& o = entries_.at(other);
      if (o.tokens.size() < e.tokens.size()) continue;
      std::set<uint64_t> opath;
      for (auto [sid, n] : mem_.snapshots_of(o.seq)) opath.insert(sid);
      bool covered = true;
      for (uint64_t sid : e.snaps) covered = covered && opath.count(sid) > 0;
      if (!covered) continue;
      for (uint64_t sid : e.snaps) own_snapshot(o, sid);
      o.last_use = std::max(o.last_use, e.last_use);
      remove_entry(id, &free_seqs, false);
      break;
    }
  }
  for (uint64_t sid : pinned) (void)mem_.release(sid);  // no sequence kept them
}

void PrefixCache::remove_entry(uint64_t id, std::vector<int32_t>* free_seqs, bool tombstone) {
  auto it = entries_.find(id);
  CHIMERA_CHECK(it != entries_.end(), "remove of cache entry ", id);
  Entry& e = it->second;
  tree_.erase(e.tokens, id);
  (void)mem_.seq_rm(e.seq, 0, -1);
  if (free_seqs) free_seqs->push_back(e.seq);
  for (uint64_t sid : e.snaps) disown_snapshot(sid);
  if (tombstone) {
    tombstones_.push_back(std::move(e.tokens));
    if (tombstones_.size() > kMaxTombstones) tombstones_.pop_front();
  }
  entries_.erase(it);
}

uint64_t PrefixCache::entry_bytes(const Entry& e, const MemoryUsage& u) const {
  for (const SeqUsage& q : u.seqs)
    if (q.seq == e.seq) return q.kv_bytes - q.kv_shared_bytes + q.state_bytes;
  return 0;
}

bool PrefixCache::evict_one(std::vector<int32_t>& free_seqs, bool need_seq) {
  if (entries_.empty()) return false;
  const MemoryUsage u = mem_.usage();
  const bool recurrent = mem_.has_recurrent();
  // The entries, their snapshots (ascending) and the prefix each pair shares.
  std::vector<const Entry*> es;
  std::map<uint64_t, size_t> index;
  for (const auto& [id, e] : entries_) {
    index[id] = es.size();
    es.push_back(&e);
  }
  const size_t n = es.size();
  std::vector<std::vector<size_t>> shared(n, std::vector<size_t>(n, 0));
  std::vector<std::vector<std::pair<uint32_t, uint64_t>>> at(n);
  for (size_t i = 0; i < n; ++i) {
    for (const auto& [id, l] : tree_.match(es[i]->tokens)) shared[i][index.at(id)] = l;
    for (uint64_t sid : es[i]->snaps) at[i].emplace_back(snaps_.at(sid).n_tokens, sid);
    std::sort(at[i].begin(), at[i].end());
  }
  // An old branch: a newer entry shares it up to where its last turn began (that turn was
  // continued with the answer sent back otherwise, or regenerated).
  std::vector<bool> old(n, false);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n && !old[i]; ++j)
      old[i] = j != i && es[j]->last_use > es[i]->last_use &&
               shared[i][j] >= std::min<size_t>(es[i]->anchor, es[i]->tokens.size());
  // The most a request following entry i for `limit` tokens could still fork without compute,
  // were entry `skip_entry` or snapshot `skip_snap` gone.
  auto fallback = [&](size_t i, size_t limit, size_t skip_entry, uint64_t skip_snap) {
    size_t best = 0;
    for (size_t j = 0; j < n; ++j) {
      if (j == skip_entry) continue;
      const size_t l = std::min(limit, shared[i][j]);
      if (!recurrent || es[j]->tokens.size() <= l) {
        best = std::max(best, l);  // any prefix of attention, or the whole of entry j
        continue;
      }
      for (auto [k, sid] : at[j])
        if (k <= l && sid != skip_snap) best = std::max<size_t>(best, k);
    }
    return best;
  };
  // Candidates, scored by the compute their loss would cost the request most likely to want
  // them (tokens it would run again, weighted by how likely it is), per byte they free. Tiers
  // first, in the order above.
  struct Cand {
    bool entry;
    uint64_t id;
    int tier;
    double eff;
    uint64_t last;
  };
  std::vector<Cand> cands;
  for (size_t i = 0; i < n; ++i) {
    const Entry& e = *es[i];
    const double saved = static_cast<double>(e.tokens.size() - fallback(i, e.tokens.size(), i, 0));
    double bytes = static_cast<double>(entry_bytes(e, u));
    for (uint64_t sid : e.snaps) {  // those only it holds go with it
      const SnapInfo& s = snaps_.at(sid);
      bytes += s.owners == 1 ? static_cast<double>(snap_bytes(s)) : 0.0;
    }
    cands.push_back(
        {true, e.id, old[i] ? kTierInner : kTierEntry, saved / std::max(bytes, 1.0), e.last_use});
  }
  if (!need_seq) {
    for (const auto& [sid, s] : snaps_) {
      double value = 0;
      uint64_t last = s.last_use;
      bool tip = false;
      int live_owners = 0;
      for (size_t i = 0; i < n; ++i) {
        if (std::find(es[i]->snaps.begin(), es[i]->snaps.end(), sid) == es[i]->snaps.end())
          continue;
        last = std::max(last, es[i]->last_use);
        live_owners += !old[i];
        const size_t k = at[i].size();
        const bool is_tip = !old[i] && (at[i][k - 1].second == sid ||
                                        (k >= 2 && at[i][k - 2].second == sid && s.boundary &&
                                         snaps_.at(at[i][k - 1].second).logits));
        tip = tip || is_tip;
        // A next turn that diverges inside the last answer (re-tokenized) resumes at the tip
        // snapshot, a regeneration samples there; an edit resumes at a message boundary.
        const double weight = is_tip       ? kTipDivergence
                              : s.boundary ? kBoundaryDivergence
                                           : kIntervalDivergence;
        const double saved =
            static_cast<double>(s.n_tokens - fallback(i, s.n_tokens, SIZE_MAX, sid));
        value = std::max(value, weight * saved);
      }
      const int tier = tip                ? kTierTip
                       : live_owners >= 2 ? kTierShared
                       : s.logits         ? kTierStalePromptEnd
                                          : kTierInner;
      cands.push_back({false, sid, tier,
                       value / static_cast<double>(std::max<uint64_t>(snap_bytes(s), 1)), last});
    }
  }
  double max_eff[kTiers] = {0, 0, 0, 0, 0};
  uint64_t min_last = UINT64_MAX, max_last = 0;
  for (const Cand& c : cands) {
    max_eff[c.tier] = std::max(max_eff[c.tier], c.eff);
    min_last = std::min(min_last, c.last);
    max_last = std::max(max_last, c.last);
  }
  const Cand* victim = nullptr;
  double victim_score = 0;
  for (const Cand& c : cands) {
    const double rec = max_last > min_last ? static_cast<double>(c.last - min_last) /
                                                 static_cast<double>(max_last - min_last)
                                           : 1.0;
    const double eff = max_eff[c.tier] > 0 ? c.eff / max_eff[c.tier] : 0.0;
    // Compute saved per byte first, recency at half weight (Marconi): cyclic use of many
    // conversations (round-robin), the worst case of plain LRU, keeps them all.
    const double score = eff + kRecencyWeight * rec;
    if (!victim || c.tier < victim->tier || (c.tier == victim->tier && score < victim_score)) {
      victim = &c;
      victim_score = score;
    }
  }
  if (victim->entry) {
    remove_entry(victim->id, &free_seqs, true);
  } else {
    const uint64_t sid = victim->id;
    const uint32_t k = snaps_.at(sid).n_tokens;
    for (auto& [id, e] : entries_) {
      auto it = std::find(e.snaps.begin(), e.snaps.end(), sid);
      if (it == e.snaps.end()) continue;
      e.snaps.erase(it);
      e.evicted_snaps.push_back(k);
    }
    snaps_.erase(sid);
    (void)mem_.release(sid);
  }
  return true;
}

uint64_t PrefixCache::bytes(const std::vector<int32_t>& running) const {
  const MemoryUsage u = mem_.usage();
  uint64_t total = u.total_bytes() > baseline_bytes_ ? u.total_bytes() - baseline_bytes_ : 0;
  for (const SeqUsage& q : u.seqs)
    if (std::find(running.begin(), running.end(), q.seq) != running.end()) {
      const uint64_t own = q.kv_bytes - q.kv_shared_bytes + q.state_bytes;
      total = total > own ? total - own : 0;
    }
  return total + logits_bytes();
}

nlohmann::json PrefixCache::info(const std::vector<int32_t>& running) const {
  const MemoryUsage u = mem_.usage();
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [id, e] : entries_) {
    nlohmann::json snaps = nlohmann::json::array();
    for (uint64_t sid : e.snaps) snaps.push_back(snaps_.at(sid).n_tokens);
    std::sort(snaps.begin(), snaps.end());
    list.push_back({{"id", id},
                    {"tokens", e.tokens.size()},
                    {"bytes", entry_bytes(e, u)},
                    {"hits", e.hits},
                    {"last_use", e.last_use},
                    {"messages", e.boundaries.size()},
                    {"snapshots", snaps}});
  }
  return {{"n_entries", entries_.size()},
          {"tokens", tokens()},
          {"bytes", bytes(running)},
          {"budget_bytes", cfg_.cache_mem},
          {"hits", hits_},
          {"snapshots", snaps_.size()},
          {"snapshot_bytes", snaps_.size() * slot_bytes()},
          {"logits_bytes", logits_bytes()},
          {"tree_nodes", tree_.nodes()},
          {"entries", list}};
}

// ---------------------------------------------------------------- persistence
// File (little-endian): magic "CHIMPCAC", u32 version, u64 memory layout fingerprint,
// u32 n_entries; per entry: u64 hits, u32 n_boundaries, u32 boundaries[], u32 n_snapshots,
// u32 snapshot token counts[], (version 2:) u32 n_logits, per kept logits: u32 snapshot token
// count, u32 n_vocab, f32 logits[n_vocab]; then u64 state bytes, the memory's save_seq() of its
// sequence; then u64 checksum64 of everything before it. Version 1 files (no logits) load too.

namespace {

constexpr char kCacheMagic[8] = {'C', 'H', 'I', 'M', 'P', 'C', 'A', 'C'};
constexpr uint32_t kCacheVersion = 2;
constexpr uint32_t kOldestCacheVersion = 1;

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const auto* b = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), b, b + sizeof(T));
}

class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  template <typename T>
  bool get(T* v) {
    if (n_ - off_ < sizeof(T)) return false;
    std::memcpy(v, p_ + off_, sizeof(T));
    off_ += sizeof(T);
    return true;
  }
  const uint8_t* take(uint64_t n) {
    if (n > n_ - off_) return nullptr;
    const uint8_t* at = p_ + off_;
    off_ += n;
    return at;
  }
  size_t left() const { return n_ - off_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
};

}  // namespace

Status PrefixCache::save_file(const std::string& path) const {
  std::vector<uint8_t> out(kCacheMagic, kCacheMagic + 8);
  put<uint32_t>(out, kCacheVersion);
  put<uint64_t>(out, mem_.config().layout_fingerprint());
  put<uint32_t>(out, static_cast<uint32_t>(entries_.size()));
  for (const auto& [id, e] : entries_) {
    put<uint64_t>(out, e.hits);
    put<uint32_t>(out, static_cast<uint32_t>(e.boundaries.size()));
    for (uint32_t b : e.boundaries) put<uint32_t>(out, b);
    std::vector<uint32_t> at;
    for (uint64_t sid : e.snaps) at.push_back(snaps_.at(sid).n_tokens);
    std::sort(at.begin(), at.end());
    put<uint32_t>(out, static_cast<uint32_t>(at.size()));
    for (uint32_t n : at) put<uint32_t>(out, n);
    std::vector<std::pair<uint32_t, Logits>> kept;
    for (uint64_t sid : e.snaps)
      if (const SnapInfo& s = snaps_.at(sid); s.logits) kept.emplace_back(s.n_tokens, s.logits);
    std::sort(kept.begin(), kept.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    put<uint32_t>(out, static_cast<uint32_t>(kept.size()));
    for (const auto& [n, lg] : kept) {
      put<uint32_t>(out, n);
      put<uint32_t>(out, static_cast<uint32_t>(lg->size()));
      const auto* b = reinterpret_cast<const uint8_t*>(lg->data());
      out.insert(out.end(), b, b + lg->size() * sizeof(float));
    }
    CHIMERA_ASSIGN_OR_RETURN(std::vector<uint8_t> blob, mem_.save_seq(e.seq));
    put<uint64_t>(out, blob.size());
    out.insert(out.end(), blob.begin(), blob.end());
  }
  put<uint64_t>(out, checksum64(out.data(), out.size()));
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return Error(ErrorCode::kIo, "cannot write ", tmp);
    f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
    f.flush();
    if (!f) return Error(ErrorCode::kIo, "write to ", tmp, " failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Error(ErrorCode::kIo, "cannot rename ", tmp, " to ", path);
  }
  return Status::Ok();
}

Status PrefixCache::load_file(const std::string& path, std::vector<int32_t>& free_seqs) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Error(ErrorCode::kNotFound, "cannot open ", path);
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto bad = [&](const std::string& why) { return Error(ErrorCode::kFormat, path, ": ", why); };
  if (data.size() < 8 + 4 + 8 + 4 + 8 || std::memcmp(data.data(), kCacheMagic, 8) != 0)
    return bad("not a chimera prefix cache file");
  uint64_t sum;
  std::memcpy(&sum, data.data() + data.size() - 8, 8);
  Cursor r(data.data() + 8, data.size() - 16);
  uint32_t version, n_entries;
  uint64_t layout;
  (void)r.get(&version);
  if (version < kOldestCacheVersion || version > kCacheVersion)
    return bad("version " + std::to_string(version) + ", this build reads versions " +
               std::to_string(kOldestCacheVersion) + " to " + std::to_string(kCacheVersion));
  if (checksum64(data.data(), data.size() - 8) != sum) return bad("checksum mismatch");
  (void)r.get(&layout);
  if (layout != mem_.config().layout_fingerprint())
    return bad("made for another model (memory layout differs)");
  (void)r.get(&n_entries);
  struct Parsed {
    uint64_t hits;
    std::vector<uint32_t> boundaries, snaps;
    std::map<uint32_t, Logits> logits;  // by snapshot token count
    const uint8_t* blob;
    uint64_t size;
  };
  std::vector<Parsed> parsed;
  for (uint32_t i = 0; i < n_entries; ++i) {
    Parsed p;
    uint32_t nb, ns;
    if (!r.get(&p.hits) || !r.get(&nb) || nb > r.left() / 4) return bad("entry truncated");
    p.boundaries.resize(nb);
    for (uint32_t& b : p.boundaries) (void)r.get(&b);
    if (!r.get(&ns) || ns > r.left() / 4) return bad("entry truncated");
    p.snaps.resize(ns);
    for (uint32_t& s : p.snaps) (void)r.get(&s);
    uint32_t nl = 0;
    if (version >= 2 && !r.get(&nl)) return bad("entry truncated");
    for (uint32_t k = 0; k < nl; ++k) {
      uint32_t at, nv;
      if (!r.get(&at) || !r.get(&nv)) return bad("entry logits truncated");
      if (nv != static_cast<uint32_t>(n_vocab_))
        return bad("logits of " + std::to_string(nv) + " tokens, the model has " +
                   std::to_string(n_vocab_));
      if (!std::binary_search(p.snaps.begin(), p.snaps.end(), at))
        return bad("logits at token " + std::to_string(at) + " without a snapshot there");
      const uint8_t* f = r.take(static_cast<uint64_t>(nv) * sizeof(float));
      if (!f) return bad("entry logits truncated");
      auto lg = std::make_shared<std::vector<float>>(nv);
      std::memcpy(lg->data(), f, static_cast<size_t>(nv) * sizeof(float));
      p.logits[at] = std::move(lg);
    }
    if (!r.get(&p.size) || !(p.blob = r.take(p.size))) return bad("entry state truncated");
    parsed.push_back(std::move(p));
  }
  if (r.left() != 0) return bad("trailing bytes");
  if (parsed.size() > free_seqs.size())
    return bad(std::to_string(parsed.size()) + " entries, room for " +
               std::to_string(free_seqs.size()));
  // Loaded snapshots arrive automatic; keep them all until the wanted ones are pinned.
  const uint64_t snap_budget = mem_.config().snapshot_budget_bytes;
  mem_.set_snapshot_budget(UINT64_MAX);
  Status st;
  for (const Parsed& p : parsed) {
    const int32_t seq = free_seqs.back();
    st = mem_.load_seq(p.blob, p.size, seq);
    if (!st.ok()) break;
    free_seqs.pop_back();
    std::vector<uint64_t> pins;
    std::map<uint64_t, Logits> logits;
    for (auto [sid, n] : mem_.snapshots_of(seq))
      if (std::binary_search(p.snaps.begin(), p.snaps.end(), n) && mem_.pin(sid).ok()) {
        pins.push_back(sid);
        if (auto it = p.logits.find(n); it != p.logits.end()) logits[sid] = it->second;
      }
    const uint64_t id = add_entry(seq, p.boundaries, pins, logits);
    entries_.at(id).hits = p.hits;
  }
  if (!st.ok()) {
    while (!entries_.empty()) remove_entry(entries_.begin()->first, &free_seqs, false);
  }
  mem_.set_snapshot_budget(snap_budget);
  if (!st.ok()) return Error(st.code(), path, ": ", st.message());
  return Status::Ok();
}

}  // namespace chimera::serving
