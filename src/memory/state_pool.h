// Recurrent state pool: a slot holds one sequence's whole recurrent state (conv + ssm of every
// recurrent layer, floats, layer after layer). Slots are ref-counted and immutable once a batch
// commits them: a batch writes into fresh scratch slots, which become live on commit. So sharing
// a state (seq_cp, snapshots) is a reference, and a failed batch just drops its scratch slots.
// Slots are not tied to sequence ids.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/large_buffer.h"
#include "core/status.h"

namespace chimera {

class StatePool {
 public:
  // conv/ssm float counts, one entry per recurrent layer.
  StatePool(std::vector<uint64_t> conv_floats, std::vector<uint64_t> ssm_floats);
  StatePool(const StatePool&) = delete;
  StatePool& operator=(const StatePool&) = delete;

  uint32_t n_layers() const { return static_cast<uint32_t>(conv_off_.size()); }
  uint64_t slot_floats() const { return slot_floats_; }
  uint64_t slot_bytes() const { return slot_floats_ * sizeof(float); }
  uint64_t conv_floats(uint32_t layer) const { return conv_n_[layer]; }
  uint64_t ssm_floats(uint32_t layer) const { return ssm_n_[layer]; }
  uint32_t slots_in_use() const { return in_use_; }
  uint32_t slots_cached() const { return static_cast<uint32_t>(free_.size()); }
  uint32_t ids_issued() const { return static_cast<uint32_t>(refs_.size()); }

  // A slot with refcount 1 and unspecified contents (reuses a cached buffer when there is one).
  uint32_t alloc();
  void ref(uint32_t slot);
  void unref(uint32_t slot);  // at zero the buffer goes to the cache
  uint32_t refs(uint32_t slot) const { return refs_[slot]; }
  // Frees cached buffers beyond `keep`.
  void trim_cache(uint32_t keep);

  float* data(uint32_t slot) const { return reinterpret_cast<float*>(bufs_[slot].data()); }
  float* conv(uint32_t slot, uint32_t layer) const { return data(slot) + conv_off_[layer]; }
  float* ssm(uint32_t slot, uint32_t layer) const { return data(slot) + ssm_off_[layer]; }

 private:
  std::vector<uint64_t> conv_n_, ssm_n_, conv_off_, ssm_off_;
  uint64_t slot_floats_ = 0;
  // 64-byte aligned buffers (the scan's streaming stores of a new state need aligned rows), in
  // huge pages from 2 MiB on: every token reads and writes its sequences' whole slots.
  std::vector<LargeBuffer> bufs_;
  std::vector<uint32_t> refs_;
  std::vector<uint32_t> free_;   // released slot ids whose buffer is kept
  std::vector<uint32_t> empty_;  // released slot ids without a buffer
  uint32_t in_use_ = 0;
};

}  // namespace chimera
