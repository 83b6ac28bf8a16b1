#include "memory/state_pool.h"

#include <algorithm>
#include <cstdlib>

namespace chimera {

StatePool::StatePool(std::vector<uint64_t> conv_floats, std::vector<uint64_t> ssm_floats)
    : conv_n_(std::move(conv_floats)), ssm_n_(std::move(ssm_floats)) {
  CHIMERA_CHECK(conv_n_.size() == ssm_n_.size(), "state pool layer lists differ");
  for (size_t i = 0; i < conv_n_.size(); ++i) {
    conv_off_.push_back(slot_floats_);
    slot_floats_ += conv_n_[i];
    ssm_off_.push_back(slot_floats_);
    slot_floats_ += ssm_n_[i];
  }
}

uint32_t StatePool::alloc() {
  uint32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    if (!empty_.empty()) {
      id = empty_.back();
      empty_.pop_back();
    } else {
      id = static_cast<uint32_t>(bufs_.size());
      bufs_.emplace_back();
      refs_.push_back(0);
    }
    // At least one float so that data() is a valid pointer even for an empty layout.
    const size_t bytes = std::max<uint64_t>(slot_floats_, 1) * sizeof(float);
    Result<LargeBuffer> buf = LargeBuffer::allocate(bytes);
    CHIMERA_CHECK(buf.ok(), "state pool: out of memory for a ", bytes, "-byte slot");
    bufs_[id] = std::move(buf).value();
  }
  refs_[id] = 1;
  ++in_use_;
  return id;
}

void StatePool::ref(uint32_t slot) {
  CHIMERA_CHECK(slot < refs_.size() && refs_[slot] > 0, "ref of free slot ", slot);
  ++refs_[slot];
}

void StatePool::unref(uint32_t slot) {
  CHIMERA_CHECK(slot < refs_.size() && refs_[slot] > 0, "unref of free slot ", slot);
  if (--refs_[slot] == 0) {
    free_.push_back(slot);
    --in_use_;
  }
}

void StatePool::trim_cache(uint32_t keep) {
  while (free_.size() > keep) {
    uint32_t id = free_.back();
    free_.pop_back();
    bufs_[id] = LargeBuffer();
    empty_.push_back(id);
  }
}

}  // namespace chimera
