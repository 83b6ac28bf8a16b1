// LargeBuffer: owning storage for the big buffers every token streams through (model weights,
// recurrent states, KV arrays). Buffers of 2 MiB or more whose size rounded up to whole 2 MiB
// pages wastes at most an eighth are anonymous mappings aligned to 2 MiB and advised for
// transparent huge pages: streaming them then misses the TLB once per 2 MiB instead of once per
// 4 KiB page (in a VM each miss is a two-level page walk; a 2-thread streaming read of 160 MiB
// measured 44-46 GB/s in 4 KiB pages and 55-60 GB/s in huge ones). Like new[] without (), a
// mapping's pages become resident on first touch. Other buffers come from aligned_alloc. Views
// are plain pointers into data(); the buffer is move-only.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace chimera {

class LargeBuffer {
 public:
  static constexpr size_t kHugePage = size_t{2} << 20;

  LargeBuffer() = default;
  // At least `bytes` bytes (a zero-byte request still gets a valid, 64-byte-aligned pointer),
  // contents unspecified. Fails only when the system has no memory for it.
  static Result<LargeBuffer> allocate(size_t bytes);
  ~LargeBuffer() { release(); }
  LargeBuffer(LargeBuffer&& o) noexcept { *this = static_cast<LargeBuffer&&>(o); }
  LargeBuffer& operator=(LargeBuffer&& o) noexcept;
  LargeBuffer(const LargeBuffer&) = delete;
  LargeBuffer& operator=(const LargeBuffer&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }  // the bytes asked for
  // Whether the buffer is a 2 MiB-aligned mapping advised for huge pages (whether the kernel
  // actually backs it with them is its own decision, page by page).
  bool huge_page_advised() const { return mapped_bytes_ != 0 && advised_; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  void release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_bytes_ = 0;  // 0: from aligned_alloc
  bool advised_ = false;
};

// Whether the kernel's transparent huge pages are available to madvise()d memory (the setting
// in /sys/kernel/mm/transparent_hugepage/enabled is "always" or "madvise").
bool transparent_huge_pages_available();

}  // namespace chimera
