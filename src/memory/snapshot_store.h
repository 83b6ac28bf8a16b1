// Snapshots: immutable, ref-counted copies of a sequence's whole hybrid state at a token count:
// a reference on the recurrent state slot (slots are immutable once committed, so this costs no
// copy at creation; the slot stays alive after the sequence moves on, which costs one state) and
// a reference on the page list covering the tokens (KV rows and token ids).
#pragma once

#include <cstdint>
#include <map>
#include <memory>

#include "memory/kv_pool.h"

namespace chimera {

constexpr uint32_t kNoSlot = UINT32_MAX;

struct Snapshot {
  uint64_t id = 0;
  uint32_t n_tokens = 0;
  int64_t pos_base = 0;
  uint32_t slot = kNoSlot;          // one reference held (kNoSlot: model has no recurrent layers)
  std::shared_ptr<PageList> pages;  // exactly ceil(n_tokens / page_size) pages
  uint32_t seq_refs = 0;            // sequence books listing it (it is on their path)
  uint32_t pins = 0;                // explicit handles (snapshot() calls not yet released)
  bool made_by_handle = false;      // created by snapshot(), not by the snapshot policy
  uint64_t stamp = 0;               // creation order: automatic eviction takes the oldest
  bool evictable() const { return pins == 0; }
};

// Owns the snapshots by id. Releasing a snapshot's slot is the caller's job (it owns the pool).
class SnapshotStore {
 public:
  Snapshot& create() {
    const uint64_t id = next_id_++;
    Snapshot& s = map_[id];
    s.id = id;
    s.stamp = id;
    return s;
  }
  Snapshot* find(uint64_t id) {
    auto it = map_.find(id);
    return it == map_.end() ? nullptr : &it->second;
  }
  const Snapshot* find(uint64_t id) const {
    auto it = map_.find(id);
    return it == map_.end() ? nullptr : &it->second;
  }
  void erase(uint64_t id) { map_.erase(id); }
  size_t size() const { return map_.size(); }
  // The evictable snapshot created first; nullptr when none.
  Snapshot* oldest_evictable() {
    for (auto& [id, s] : map_)
      if (s.evictable()) return &s;
    return nullptr;
  }
  std::map<uint64_t, Snapshot>& all() { return map_; }
  const std::map<uint64_t, Snapshot>& all() const { return map_; }

 private:
  std::map<uint64_t, Snapshot> map_;  // ordered by id = creation order
  uint64_t next_id_ = 1;
};

}  // namespace chimera
