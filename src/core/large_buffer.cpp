#include "core/large_buffer.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace chimera {

Result<LargeBuffer> LargeBuffer::allocate(size_t bytes) {
  LargeBuffer b;
  b.size_ = bytes;
  // Whole huge pages only where the rounding wastes at most an eighth: a buffer is usually
  // written whole (a state slot), and then its last huge page is resident whole too.
  const size_t span = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  if (bytes < kHugePage || span - bytes > bytes / 8) {
    const size_t rounded = (bytes + 63) / 64 * 64;
    b.data_ = static_cast<uint8_t*>(std::aligned_alloc(64, rounded == 0 ? 64 : rounded));
    if (b.data_ == nullptr)
      return Error(ErrorCode::kOutOfMemory, "cannot allocate ", bytes, " bytes");
    return b;
  }
  // Map one huge page more than needed, then give back the unaligned head and the tail, so that
  // what stays is exactly the aligned, whole-huge-page span.
  void* raw =
      mmap(nullptr, span + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    return Error(ErrorCode::kOutOfMemory, "cannot map ", bytes, " bytes: ", std::strerror(errno));
  const uintptr_t at = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (at + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > at) munmap(raw, aligned - at);
  const size_t tail = at + span + kHugePage - (aligned + span);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + span), tail);
  b.data_ = reinterpret_cast<uint8_t*>(aligned);
  b.mapped_bytes_ = span;
  b.advised_ = madvise(b.data_, span, MADV_HUGEPAGE) == 0;
  return b;
}

LargeBuffer& LargeBuffer::operator=(LargeBuffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = o.data_;
    size_ = o.size_;
    mapped_bytes_ = o.mapped_bytes_;
    advised_ = o.advised_;
    o.data_ = nullptr;
    o.size_ = o.mapped_bytes_ = 0;
    o.advised_ = false;
  }
  return *this;
}

void LargeBuffer::release() {
  if (data_ == nullptr) return;
  if (mapped_bytes_ != 0) {
    munmap(data_, mapped_bytes_);
  } else {
    std::free(data_);
  }
  data_ = nullptr;
  size_ = mapped_bytes_ = 0;
}

bool transparent_huge_pages_available() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s;
  if (!std::getline(f, s)) return false;
  return s.find("[always]") != std::string::npos || s.find("[madvise]") != std::string::npos;
}

}  // namespace chimera
