// KV page pool: fixed-size pages of token rows, ref-counted and shared between sequences and
// snapshots. A page id names the same token range in every attention layer; each layer keeps its
// own storage. Page layout per layer is head-major (KvPageLayout): K = [n_heads][page_size]
// [head_dim], V likewise, so decode attention reads each kv head's keys contiguously.
// Pages also hold the token ids of their rows, so a sequence's token list lives in its pages and
// is shared exactly like its KV (this is also how pure recurrent models keep their token lists).
//
// Append-only sharing: rows below a holder's length are never rewritten while that holder
// exists. `fill` is the high-water mark of rows ever written into a page; a holder of length r
// inside the page may append in place iff fill == r (nobody else wrote row r) or it holds the
// page alone; otherwise the partial page is copied first (copy-on-write).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/large_buffer.h"
#include "core/status.h"
#include "gguf/types.h"

namespace chimera {

constexpr uint32_t kNoPage = UINT32_MAX;  // a released window half (PageList::wids)

// Geometry of one attention layer's K (or V) page: [n_heads][page_size][head_dim] elements of
// elem_bytes, i.e. element e of token row `slot` (e in [0, n_heads*head_dim), heads in order) is at
// ((e / head_dim) * page_size + slot) * head_dim + e % head_dim. With n_heads = 1 this is the
// token-major [page_size][kv_dim]. kernels/attention.h reads the same layout.
struct KvPageLayout {
  uint32_t page_size = 0, n_heads = 1, head_dim = 0, elem_bytes = 2;
  size_t row_bytes() const { return size_t{n_heads} * head_dim * elem_bytes; }
  size_t page_bytes() const { return row_bytes() * page_size; }
  // Byte offset of (slot, head) in a page; the head's next token follows head_dim elements later.
  size_t offset(uint32_t slot, uint32_t head) const {
    return (size_t{head} * page_size + slot) * head_dim * elem_bytes;
  }
  // One token's row (token-major: n_heads*head_dim elements) into / out of a page slot.
  void write_row(void* page, uint32_t slot, const void* row) const;
  void read_row(const void* page, uint32_t slot, void* row) const;
  // Rows [0, n_rows) of every head from one page to another.
  void copy_rows(const void* src, void* dst, uint32_t n_rows) const;
};

class KvPool {
 public:
  // kv_dims, kv_heads: one entry per attention layer (in model order; kv_heads divides kv_dim).
  // max_pages: capacity. holds_tokens: pages also keep the token id of each row (the pool of
  // the sliding-window layers does not: the main pool keeps every token).
  KvPool(std::vector<uint32_t> kv_dims, std::vector<uint32_t> kv_heads, uint32_t page_size,
         GgmlType type, uint32_t max_pages, bool holds_tokens = true);
  KvPool(const KvPool&) = delete;
  // Whether the constructor could reserve the arenas (an error when the address space or the
  // kernel's overcommit refuses max_pages pages); a pool that failed must not be used.
  const Status& reservation() const { return reservation_; }
  KvPool& operator=(const KvPool&) = delete;

  uint32_t page_size() const { return page_size_; }
  uint32_t max_pages() const { return max_pages_; }
  uint32_t pages_in_use() const { return in_use_; }
  uint32_t n_layers() const { return static_cast<uint32_t>(kv_dims_.size()); }
  uint32_t kv_dim(uint32_t layer) const { return kv_dims_[layer]; }
  GgmlType type() const { return type_; }
  size_t row_bytes(uint32_t layer) const { return layouts_[layer].row_bytes(); }
  const KvPageLayout& layout(uint32_t layer) const { return layouts_[layer]; }
  // Bytes one page costs: K and V rows of every layer plus token ids (if held).
  uint64_t page_bytes() const { return page_bytes_; }

  // A fresh page with refcount 1 and fill 0; kOutOfMemory when the pool is full.
  Result<uint32_t> alloc();
  void ref(uint32_t id);
  void unref(uint32_t id);  // frees at zero
  uint32_t refs(uint32_t id) const { return refs_[id]; }
  uint32_t ids_issued() const { return static_cast<uint32_t>(refs_.size()); }
  uint32_t fill(uint32_t id) const { return fill_[id]; }
  void set_fill(uint32_t id, uint32_t fill) { fill_[id] = fill; }

  int32_t* tokens(uint32_t id) { return tokens_.get() + size_t{id} * page_size_; }
  const int32_t* tokens(uint32_t id) const { return tokens_.get() + size_t{id} * page_size_; }
  uint8_t* k_page(uint32_t layer, uint32_t id) const {
    return k_[layer].data() + size_t{id} * layouts_[layer].page_bytes();
  }
  uint8_t* v_page(uint32_t layer, uint32_t id) const {
    return v_[layer].data() + size_t{id} * layouts_[layer].page_bytes();
  }
  // Copies rows [0, n_rows) (tokens if held, K/V of every layer) from page src to page dst.
  void copy_rows(uint32_t src, uint32_t dst, uint32_t n_rows);

 private:
  std::vector<uint32_t> kv_dims_;
  uint32_t page_size_;
  GgmlType type_;
  uint32_t max_pages_;
  bool holds_tokens_;
  std::vector<KvPageLayout> layouts_;
  uint64_t page_bytes_ = 0;
  Status reservation_;  // see reservation()
  // Arenas sized for max_pages, per layer; untouched pages cost no RAM (allocated without
  // initialising), touched ones are huge pages where possible (decode streams them).
  std::vector<LargeBuffer> k_, v_;
  std::unique_ptr<int32_t[]> tokens_;
  std::vector<uint32_t> refs_, fill_;
  std::vector<uint32_t> free_;  // released page ids, reused LIFO
  uint32_t in_use_ = 0;
};

// A sequence's page table: page i holds tokens [i*page_size, (i+1)*page_size). Owns one reference
// on each listed page. Shared (immutable) between holders through shared_ptr; a holder that
// changes it first clones it when shared (see mutable_pages in HybridMemory).
//
// With sliding-window layers a page is a pair: ids()[i] in the main pool (token ids and the
// global layers' rows) and wids()[i] in the window pool (the window layers' rows), allocated,
// copied and shared together. Only the window half can be released, and only from the front
// (release_window): wids()[i] == kNoPage exactly for i < window_from(). Without a window pool
// wids() is empty.
class PageList {
 public:
  PageList(KvPool* pool, KvPool* wpool = nullptr) : pool_(pool), wpool_(wpool) {}
  ~PageList();
  PageList(const PageList&) = delete;
  PageList& operator=(const PageList&) = delete;

  const std::vector<uint32_t>& ids() const { return ids_; }
  const std::vector<uint32_t>& wids() const { return wids_; }
  size_t size() const { return ids_.size(); }
  // Pages before this one have no window half (0 without a window pool).
  size_t window_from() const { return w_first_; }
  // A new list with the first n pages, each referenced once more.
  std::shared_ptr<PageList> clone_prefix(size_t n) const;
  // Takes over the caller's references (wid: kNoPage without a window pool, or for a page whose
  // window half is released: only while every page before it is too).
  void push(uint32_t id, uint32_t wid = kNoPage);
  void replace(size_t i, uint32_t id, uint32_t wid = kNoPage);  // releases the old pair
  void truncate(size_t n);                                      // releases pages [n, size)
  // Releases the window halves of pages [window_from(), n).
  void release_window(size_t n);

 private:
  KvPool* pool_;
  KvPool* wpool_;
  std::vector<uint32_t> ids_, wids_;
  size_t w_first_ = 0;
};

}  // namespace chimera
