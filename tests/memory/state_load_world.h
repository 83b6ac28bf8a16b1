// The memory that fuzz_state_load loads into, shared with the unit tests that replay its findings
// (memory_unit_test.cpp), so a committed crash input means the same thing in both.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "memory/hybrid_memory.h"

namespace chimera::fake {

constexpr size_t kStateHeaderBytes = 72;  // state_io.cpp: the fixed header

inline MemoryConfig state_load_config() {
  MemoryConfig c;
  c.layers = {{LayerKind::kAttention, 4, 0, 0}, {LayerKind::kRecurrent, 0, 5, 3}};
  c.n_vocab = 64;
  c.max_seqs = 6;
  c.page_size = 3;
  c.kv_type = GgmlType::F16;
  c.budget_bytes = 64 << 10;
  c.snapshot_budget_bytes = 16 << 10;
  c.snapshot_interval = 4;
  return c;
}

// Rewrites the payload length and both checksums, so that mutations reach the parser behind them.
inline void repair_state_checksums(std::vector<uint8_t>& v) {
  if (v.size() < kStateHeaderBytes) return;
  const uint64_t payload = v.size() - kStateHeaderBytes;
  std::memcpy(v.data() + 48, &payload, 8);
  const uint64_t psum = checksum64(v.data() + kStateHeaderBytes, payload);
  std::memcpy(v.data() + 56, &psum, 8);
  const uint64_t hsum = checksum64(v.data(), 64);
  std::memcpy(v.data() + 64, &hsum, 8);
}

}  // namespace chimera::fake
