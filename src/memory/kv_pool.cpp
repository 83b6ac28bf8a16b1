#include "memory/kv_pool.h"

#include <algorithm>
#include <cstring>

namespace chimera {

void KvPageLayout::write_row(void* page, uint32_t slot, const void* row) const {
  const size_t hb = size_t{head_dim} * elem_bytes;
  for (uint32_t h = 0; h < n_heads; ++h)
    std::memcpy(static_cast<uint8_t*>(page) + offset(slot, h),
                static_cast<const uint8_t*>(row) + h * hb, hb);
}

void KvPageLayout::read_row(const void* page, uint32_t slot, void* row) const {
  const size_t hb = size_t{head_dim} * elem_bytes;
  for (uint32_t h = 0; h < n_heads; ++h)
    std::memcpy(static_cast<uint8_t*>(row) + h * hb,
                static_cast<const uint8_t*>(page) + offset(slot, h), hb);
}

void KvPageLayout::copy_rows(const void* src, void* dst, uint32_t n_rows) const {
  const size_t n = size_t{n_rows} * head_dim * elem_bytes;
  for (uint32_t h = 0; h < n_heads; ++h)
    std::memcpy(static_cast<uint8_t*>(dst) + offset(0, h),
                static_cast<const uint8_t*>(src) + offset(0, h), n);
}

KvPool::KvPool(std::vector<uint32_t> kv_dims, std::vector<uint32_t> kv_heads, uint32_t page_size,
               GgmlType type, uint32_t max_pages, bool holds_tokens)
    : kv_dims_(std::move(kv_dims)),
      page_size_(page_size),
      type_(type),
      max_pages_(max_pages),
      holds_tokens_(holds_tokens) {
  CHIMERA_CHECK(kv_heads.size() == kv_dims_.size(), "KvPool: ", kv_heads.size(),
                " head counts for ", kv_dims_.size(), " layers");
  const uint32_t elem = type == GgmlType::F32 ? 4 : 2;
  page_bytes_ = holds_tokens ? uint64_t{page_size} * sizeof(int32_t) : 0;
  for (size_t a = 0; a < kv_dims_.size(); ++a) {
    const uint32_t d = kv_dims_[a];
    CHIMERA_CHECK(kv_heads[a] > 0 && d % kv_heads[a] == 0, "KvPool: kv_dim ", d, " and ",
                  kv_heads[a], " heads");
    layouts_.push_back({page_size, kv_heads[a], d / kv_heads[a], elem});
    page_bytes_ += 2ull * page_size * d * elem;
    // Untouched bytes (LargeBuffer, as new[] without ()): unused pages never become resident.
    const size_t bytes = size_t{max_pages} * page_size * d * elem;
    for (std::vector<LargeBuffer>* kv : {&k_, &v_}) {
      Result<LargeBuffer> buf = LargeBuffer::allocate(bytes);
      if (!buf.ok()) {  // the owner reports it (reservation()) and discards the pool
        reservation_ = Error(ErrorCode::kOutOfMemory, "cannot reserve ", bytes,
                             " bytes of address space for the KV pages of attention layer ", a,
                             " (", max_pages, " pages of ", page_size, " tokens)");
        max_pages_ = 0;
        return;
      }
      kv->push_back(std::move(buf).value());
    }
  }
  if (holds_tokens) tokens_.reset(new int32_t[size_t{max_pages} * page_size]);
}

Result<uint32_t> KvPool::alloc() {
  uint32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else if (refs_.size() < max_pages_) {
    // Book-keeping grows with use, so a huge capacity costs nothing until it is used.
    id = static_cast<uint32_t>(refs_.size());
    refs_.push_back(0);
    fill_.push_back(0);
  } else {
    return Error(ErrorCode::kOutOfMemory, "KV pool: all ", max_pages_, " pages in use");
  }
  refs_[id] = 1;
  fill_[id] = 0;
  ++in_use_;
  return id;
}

void KvPool::ref(uint32_t id) {
  CHIMERA_CHECK(id < refs_.size() && refs_[id] > 0, "ref of free page ", id);
  ++refs_[id];
}

void KvPool::unref(uint32_t id) {
  CHIMERA_CHECK(id < refs_.size() && refs_[id] > 0, "unref of free page ", id);
  if (--refs_[id] == 0) {
    free_.push_back(id);
    --in_use_;
  }
}

void KvPool::copy_rows(uint32_t src, uint32_t dst, uint32_t n_rows) {
  CHIMERA_CHECK(n_rows <= page_size_, "copy_rows ", n_rows);
  if (holds_tokens_) std::memcpy(tokens(dst), tokens(src), n_rows * sizeof(int32_t));
  for (uint32_t l = 0; l < n_layers(); ++l) {
    layouts_[l].copy_rows(k_page(l, src), k_page(l, dst), n_rows);
    layouts_[l].copy_rows(v_page(l, src), v_page(l, dst), n_rows);
  }
}

PageList::~PageList() {
  truncate(0);
}

std::shared_ptr<PageList> PageList::clone_prefix(size_t n) const {
  CHIMERA_CHECK(n <= ids_.size(), "clone_prefix ", n, " of ", ids_.size());
  auto out = std::make_shared<PageList>(pool_, wpool_);
  out->ids_.assign(ids_.begin(), ids_.begin() + n);
  for (uint32_t id : out->ids_) pool_->ref(id);
  if (wpool_) {
    out->wids_.assign(wids_.begin(), wids_.begin() + n);
    for (uint32_t id : out->wids_)
      if (id != kNoPage) wpool_->ref(id);
    out->w_first_ = std::min(w_first_, n);
  }
  return out;
}

void PageList::push(uint32_t id, uint32_t wid) {
  CHIMERA_CHECK(wpool_ ? wid != kNoPage || w_first_ == wids_.size() : wid == kNoPage,
                "PageList::push: window half");
  ids_.push_back(id);
  if (!wpool_) return;
  wids_.push_back(wid);
  if (wid == kNoPage) ++w_first_;
}

void PageList::replace(size_t i, uint32_t id, uint32_t wid) {
  CHIMERA_CHECK((wid != kNoPage) == (wpool_ != nullptr) && i >= w_first_,
                "PageList::replace: window half");
  pool_->unref(ids_[i]);
  ids_[i] = id;
  if (wpool_) {
    wpool_->unref(wids_[i]);
    wids_[i] = wid;
  }
}

void PageList::truncate(size_t n) {
  while (ids_.size() > n) {
    pool_->unref(ids_.back());
    ids_.pop_back();
    if (wpool_) {
      if (wids_.back() != kNoPage) wpool_->unref(wids_.back());
      wids_.pop_back();
    }
  }
  w_first_ = std::min(w_first_, n);
}

void PageList::release_window(size_t n) {
  if (!wpool_) return;
  n = std::min(n, ids_.size());
  for (; w_first_ < n; ++w_first_) {
    wpool_->unref(wids_[w_first_]);
    wids_[w_first_] = kNoPage;
  }
}

}  // namespace chimera
