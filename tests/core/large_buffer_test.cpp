// LargeBuffer: sizes, alignment, ownership, lazy residency (what the KV pool relies on).
#include "core/large_buffer.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace chimera {
namespace {

// Resident 4 KiB pages of [p, p + bytes) per mincore().
size_t resident_pages(const uint8_t* p, size_t bytes) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> v((bytes + page - 1) / page);
  EXPECT_EQ(mincore(const_cast<uint8_t*>(p), bytes, v.data()), 0);
  size_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

// Below 2 MiB, and where whole huge pages would waste more than an eighth (2 MiB + 1 byte needs
// 4 MiB; 17 MiB + 1 byte rounds to 18 MiB, under an eighth, so it is mapped).
TEST(LargeBuffer, SmallBuffersAreAlignedHeapBlocks) {
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{100}, LargeBuffer::kHugePage - 1,
                       LargeBuffer::kHugePage + 1, 7 * LargeBuffer::kHugePage + 1}) {
    auto b = LargeBuffer::allocate(bytes);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    ASSERT_NE(b->data(), nullptr) << bytes;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % 64, 0u) << bytes;
    EXPECT_EQ(b->size(), bytes);
    EXPECT_FALSE(b->huge_page_advised()) << bytes;
    std::memset(b->data(), 0x5A, bytes);  // the whole size is writable (ASan checks the bounds)
  }
}

TEST(LargeBuffer, LargeBuffersAreHugePageAlignedAndHoldTheirBytes) {
  for (size_t bytes : {LargeBuffer::kHugePage, 17 * (LargeBuffer::kHugePage / 2) + 1,
                       5 * LargeBuffer::kHugePage - 3}) {
    auto b = LargeBuffer::allocate(bytes);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % LargeBuffer::kHugePage, 0u) << bytes;
    EXPECT_EQ(b->size(), bytes);
    // The kernel accepts the advice wherever it has transparent huge pages.
    if (transparent_huge_pages_available()) EXPECT_TRUE(b->huge_page_advised()) << bytes;
    for (size_t i = 0; i < bytes; ++i) b->data()[i] = static_cast<uint8_t>(i * 131 + 7);
    size_t bad = 0;
    for (size_t i = 0; i < bytes; ++i) bad += b->data()[i] != static_cast<uint8_t>(i * 131 + 7);
    EXPECT_EQ(bad, 0u) << bytes;
  }
}

// The KV pool reserves its whole capacity up front: untouched bytes must cost no memory, and a
// touch makes resident only the (huge) page it falls in.
TEST(LargeBuffer, UntouchedPagesAreNotResident) {
  const size_t bytes = 32 * LargeBuffer::kHugePage;
  auto b = LargeBuffer::allocate(bytes);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(resident_pages(b->data(), bytes), 0u);
  b->data()[0] = 1;
  const size_t after = resident_pages(b->data(), bytes);
  EXPECT_GE(after, 1u);
  EXPECT_LE(after * static_cast<size_t>(sysconf(_SC_PAGESIZE)), LargeBuffer::kHugePage);
  EXPECT_EQ(resident_pages(b->data() + bytes - LargeBuffer::kHugePage, LargeBuffer::kHugePage), 0u);
}

TEST(LargeBuffer, MovesTransferOwnership) {
  auto a = LargeBuffer::allocate(3 * LargeBuffer::kHugePage);
  ASSERT_TRUE(a.ok());
  LargeBuffer x = std::move(a).value();
  uint8_t* p = x.data();
  p[0] = 42;
  LargeBuffer y(std::move(x));
  EXPECT_EQ(y.data(), p);
  EXPECT_EQ(y.data()[0], 42);
  EXPECT_EQ(x.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_EQ(x.size(), 0u);
  EXPECT_FALSE(static_cast<bool>(x));
  auto small = LargeBuffer::allocate(10);
  ASSERT_TRUE(small.ok());
  y = std::move(small).value();  // unmaps y's mapping, takes the heap block (LSan: freed below)
  EXPECT_EQ(y.size(), 10u);
  EXPECT_FALSE(y.huge_page_advised());
  y = LargeBuffer();
  EXPECT_EQ(y.data(), nullptr);
}

}  // namespace
}  // namespace chimera
