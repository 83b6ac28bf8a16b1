// The prefix cache: finished sequences stay parked in the memory (as sequences: their pages,
// their live state) and are indexed by a radix tree over their token lists, across all requests
// and conversations. A new request forks the cached sequence that lets it skip the most work
// (seq_cp, O(1)) and rolls it back exactly to a snapshot (so it replays nothing it need not) and
// processes only the rest. Snapshots are explicit memory snapshots pinned by the cache, placed by
// the engine at message boundaries, every snapshot_every tokens and at each prompt's end, and
// thinned by value. A prompt-end snapshot also keeps the logits of the prompt's last token, so
// the same prompt again (regenerate, retry, another seed) samples with no forward pass at all:
// the logits are exact (bit-identical whatever the batch), so reusing them is exact too.
//
// Eviction (Marconi-like): every cached entry and every snapshot is a candidate, scored by the
// compute its loss would cost the request most likely to want it (the tokens that request would
// run again beyond what the rest of the cache still gives it, weighted by how likely it is) per
// byte it frees, plus half-weighted recency; the lowest goes first, in tiers: old branches (a
// newer entry redid or continued their last turn) and snapshots inside conversations go first,
// then branch points live conversations share (a common system prompt), and last what a
// conversation's next turn needs: its tip snapshots (its last prompt's end: a next turn that
// sends the last answer back re-tokenized resumes there, a regeneration needs no compute there;
// and its last message's end, where a next turn diverging inside the generation header
// resumes), and last its entry. Lowest of all go prompt-end snapshots of conversations that moved
// on (their next turn's snapshots supersede them). So many conversations used in turn stay cached
// within a budget that holds them and their tip snapshots.
// What running requests hold is theirs (shared pages and states are ref-counted in the memory),
// so eviction never changes a running sequence.
//
// Engine-thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "memory/hybrid_memory.h"
#include "serving/engine.h"

namespace chimera::serving {

// A radix tree over token lists: each node holds a run of tokens (its edge) and the ids of the
// entries whose token lists pass through or end at it.
class RadixTree {
 public:
  RadixTree();
  ~RadixTree();
  void insert(const std::vector<TokenId>& tokens, uint64_t id);
  void erase(const std::vector<TokenId>& tokens, uint64_t id);
  // For every entry sharing a prefix with `tokens`: the length of the shared prefix. Walks only
  // the path of `tokens`.
  std::map<uint64_t, size_t> match(const std::vector<TokenId>& tokens) const;
  size_t nodes() const;

 private:
  struct Node;
  std::unique_ptr<Node> root_;
};

class PrefixCache {
 public:
  using Logits = std::shared_ptr<const std::vector<float>>;

  // n_vocab: the length of kept logits (checked when a cache file is loaded).
  PrefixCache(HybridMemory& mem, const EngineConfig& cfg, int32_t n_vocab);
  ~PrefixCache();

  struct Attach {
    size_t held = 0;     // prompt tokens the destination sequence holds now
    CacheReport report;  // matched: tokens found (before rollback); reused == held
    // Set when held is the whole prompt: its last token's logits (sample from them; nothing
    // runs). Otherwise held < prompt size, and the rest runs (at least the last token).
    Logits logits;
  };
  // Puts the best cached prefix of `prompt` into the empty sequence `dst`, rolled back exactly
  // to a state it can hold without compute: the whole prompt when a snapshot at its end kept
  // the logits, else at most all but its last token (which runs, for its logits).
  Attach attach(const std::vector<TokenId>& prompt, const std::vector<uint32_t>& boundaries,
                int32_t dst);
  // A request's snapshot at its prompt's end and the logits of its last prompt token.
  struct PromptEnd {
    uint64_t snap = 0;  // 0: none (attention-only memory, or the prompt never finished)
    Logits logits;
  };
  // Takes finished sequences (with the snapshots pinned for them, one pin each; `thinned`: the
  // points whose snapshots were dropped for the budget) into the cache; sequences it does not
  // keep go back to `free_seqs`.
  void park(const std::vector<int32_t>& seqs, std::vector<uint64_t> snaps,
            const std::vector<uint32_t>& thinned, const std::vector<uint32_t>& boundaries,
            const PromptEnd& prompt_end, std::vector<int32_t>& free_seqs);
  // Evicts the least valuable entry or snapshot (only entries when `need_seq`: they free a
  // sequence id); false when nothing is left to evict.
  bool evict_one(std::vector<int32_t>& free_seqs, bool need_seq);

  // Bytes the cache holds: the memory in use beyond the baseline, less what the given running
  // sequences hold alone.
  uint64_t bytes(const std::vector<int32_t>& running) const;
  uint64_t entries() const { return entries_.size(); }
  uint64_t tokens() const;
  uint64_t hits() const { return hits_; }
  // Host bytes of kept logits (outside the memory; bytes() counts them).
  uint64_t logits_bytes() const;
  nlohmann::json info(const std::vector<int32_t>& running) const;

  // Versioned, checksummed; written to PATH.tmp, then renamed.
  Status save_file(const std::string& path) const;
  // All or nothing: on any error the cache stays empty (and the memory as it was).
  Status load_file(const std::string& path, std::vector<int32_t>& free_seqs);

 private:
  struct Entry {
    uint64_t id = 0;
    int32_t seq = -1;
    std::vector<TokenId> tokens;
    std::vector<uint32_t> boundaries;
    std::vector<uint64_t> snaps;          // cache-pinned snapshots it owns (on its path)
    std::vector<uint32_t> evicted_snaps;  // where snapshots of it were thinned away
    uint32_t anchor = 0;                  // where its last turn began (its last message boundary)
    uint64_t last_use = 0;
    uint64_t hits = 0;
  };
  struct SnapInfo {
    uint32_t n_tokens = 0;
    uint32_t owners = 0;  // entries listing it; the cache holds one memory pin while > 0
    bool boundary = false;
    uint64_t last_use = 0;
    Logits logits;  // a prompt-end snapshot: the logits after its last token
  };

  uint64_t add_entry(int32_t seq, std::vector<uint32_t> boundaries, std::vector<uint64_t> snaps,
                     const std::map<uint64_t, Logits>& logits);
  uint64_t snap_bytes(const SnapInfo& s) const;
  void own_snapshot(Entry& e, uint64_t id);
  void disown_snapshot(uint64_t id);
  void remove_entry(uint64_t id, std::vector<int32_t>* free_seqs, bool tombstone);
  uint64_t slot_bytes() const;
  uint64_t entry_bytes(const Entry& e, const MemoryUsage& u) const;

  HybridMemory& mem_;
  EngineConfig cfg_;
  int32_t n_vocab_ = 0;
  RadixTree tree_;
  std::map<uint64_t, Entry> entries_;
  std::map<uint64_t, SnapInfo> snaps_;
  std::deque<std::vector<TokenId>> tombstones_;  // token lists of evicted entries (diagnostics)
  uint64_t baseline_bytes_ = 0;
  uint64_t next_id_ = 1;
  uint64_t clock_ = 0;
  uint64_t hits_ = 0;
};

}  // namespace chimera::serving
