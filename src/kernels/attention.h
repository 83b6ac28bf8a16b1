// Causal attention with GQA over a paged KV cache, computed so that a query's output never
// depends on batching: each (query, head) runs an online softmax over its visible keys in
// fixed-size key blocks of kAttentionKeyBlock keys, in order, whatever the page size, the number
// of queries processed together, or the thread count.
//
// ---- Paged KV layout: the contract with the memory layer ----
// For one attention layer, one sequence's keys live in pages of `page_size` tokens. A K page is a
// contiguous head-major array [n_head_kv][page_size][head_dim] of elements of `kv_type` (F32,
// F16, BF16): key j of the sequence is slot (j % page_size) of page (j / page_size), and its kv
// head g occupies elements [(g*page_size + slot)*head_dim, +head_dim). Each head's keys are
// contiguous, so a decode reading one kv head streams its pages. V pages have the same layout (the
// memory's KvPageLayout). Pages need no particular alignment beyond their element type. The memory
// hands the kernel, per sequence, a table of K page pointers and a table of V page pointers
// (KvPageTable); page i holds keys [i*page_size, (i+1)*page_size). Rows past the visible count are
// never read, so a partly filled last page may hold garbage there. Writing: kv_write_token()
// converts one token's K and V (F32) into a page slot; F16 and BF16 use round-to-nearest-even
// (f32_to_fp16 / f32_to_bf16 in gguf/types.h), as llama.cpp's cache.
//
// ---- Semantics ----
// Query head h (0..n_head-1) uses kv head h / (n_head / n_head_kv). For each query and head:
//   s_j = (q_h · k_j) * scale for j < n_visible;  out_h = Σ_j softmax(s)_j v_j
// The caller passes n_visible per query (causal: position + 1 for a plain sequence) and, for a
// sliding-window layer, first_visible: the query then reads keys [first_visible, n_visible) only,
// in key blocks starting at first_visible (so the blocks depend on the query alone), and pages
// wholly before first_visible are never read (they may be null). No other masks are supported.
// Queries are already rotated (RoPE) when the model uses it. Threads split (group of consecutive
// queries of one sequence, range of kv heads) tasks, never the keys.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "core/threads.h"
#include "gguf/types.h"
#include "kernels/activation.h"

namespace chimera {

// Keys per online-softmax step. A kernel constant: changing it changes results (bitwise).
constexpr int32_t kAttentionKeyBlock = 32;

struct AttentionParams {
  int32_t n_head = 0;
  int32_t n_head_kv = 0;             // divides n_head
  int32_t head_dim = 0;              // any size >= 1
  int32_t page_size = 0;             // tokens per KV page, >= 1
  GgmlType kv_type = GgmlType::F16;  // F32, F16 or BF16
  float scale = 1.0f;                // score scale (1/sqrt(head_dim), or attention.scale)
};

// One sequence's pages for one layer.
struct KvPageTable {
  const void* const* k_pages = nullptr;
  const void* const* v_pages = nullptr;
  int32_t n_pages = 0;  // entries in both tables
};

struct AttentionBatch {
  int64_t n_queries = 0;
  const float* q = nullptr;  // query i at q + i*q_stride: n_head*head_dim F32
  int64_t q_stride = 0;
  const int32_t* n_visible = nullptr;  // [n_queries], 1..n_pages*page_size of its sequence
  const int32_t* seq = nullptr;        // [n_queries], index into seqs
  const KvPageTable* seqs = nullptr;
  int32_t n_seqs = 0;
  float* out = nullptr;  // query i at out + i*out_stride: n_head*head_dim F32; may equal q
  int64_t out_stride = 0;
  const int32_t* first_visible = nullptr;  // [n_queries], 0..n_visible-1 (windows); null: all 0
};

// Validates everything first (sizes, strides, sequence indices, visible counts against the page
// tables, every page that will be read is non-null); on error nothing is written.
// threads may be null (run on the caller).
Status attention_paged(const AttentionParams& params, const AttentionBatch& batch,
                       ThreadContext* threads, Isa isa = active_isa());

// Bytes of one K (or V) page.
int64_t kv_page_bytes(const AttentionParams& params);

// Writes one token's k and v (n_head_kv*head_dim F32 each) into row `slot` of k_page / v_page,
// converting to params.kv_type. Errors: slot outside [0, page_size), bad params.
Status kv_write_token(const AttentionParams& params, const float* k, const float* v, void* k_page,
                      void* v_page, int32_t slot);

namespace ops_internal {
// Queries of one sequence that one task processes together against each key block (verify,
// prefill): each block's K/V rows are read once for all of them, from L1 after the first. At least
// kAttentionMaxGroup; where a kv head has one or two query heads, up to kAttentionMaxGroupPairs
// (query, head) pairs per kv head (kAttentionMaxGroupWide queries at most): a 9-token verify with
// two heads per kv head is then one group of 18 pairs, six full passes of three, instead of groups
// of 8 and 1 (the lone query re-reads every key block for a pass of two pairs; 5% slower).
constexpr int32_t kAttentionMaxGroup = 8;
constexpr int32_t kAttentionMaxGroupWide = 12;
constexpr int32_t kAttentionMaxGroupPairs = 24;
int32_t attention_max_group(const AttentionParams& params);  // params valid

// A group of n_q (1..attention_max_group) queries of one sequence sharing first_visible, kv heads
// [kv_begin, kv_end) with their n_head/n_head_kv query heads each. Internal to the attention
// files; q and out point at query 0's head 0, query i is i*q_stride / i*out_stride further. How
// queries and kv heads are grouped into tasks never changes a (query, head)'s arithmetic: each
// keeps its own key blocks (its own last, partial one) and its own order of operations.
struct AttentionTask {
  const AttentionParams* params;
  const float* q;
  float* out;
  int64_t q_stride;
  int64_t out_stride;
  const KvPageTable* table;
  const int32_t* n_visible;  // [n_q]
  int32_t n_q;
  int32_t first_visible;  // keys [first_visible, n_visible[i]) for every query of the group
  int32_t kv_begin;
  int32_t kv_end;
};
int64_t attention_scratch_floats(const AttentionParams& params);  // for any task
void attention_task_scalar(const AttentionTask& task, float* scratch);
void attention_task_avx2(const AttentionTask& task, float* scratch);
// attention_task_avx2 with head_dim always a run-time value: what its compile-time head_dim
// specializations (12, 16) must equal bit for bit (tests).
void attention_task_avx2_runtime_hd(const AttentionTask& task, float* scratch);
// The same task code compiled for AVX-512 (attention_avx512.cpp): the AVX2 path's bits.
void attention_task_avx512(const AttentionTask& task, float* scratch);
void attention_task_avx512_runtime_hd(const AttentionTask& task, float* scratch);
// y[i] = f32_to_fp16(x[i]) with F16C, bit for bit (attention_kv_avx2.cpp).
void f32_to_fp16_row_avx2(const float* x, uint16_t* y, int64_t n);
}  // namespace ops_internal

}  // namespace chimera
