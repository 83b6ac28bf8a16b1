#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

namespace chimera {
namespace {

// n elements of T: on the stack up to N, else on the heap. A decode step's attention call (one
// query, one sequence, a small model's scratch) then allocates nothing: the draft model of
// speculative decoding runs it ~10^4 times a second.
template <class T, size_t N>
class Buffer {
 public:
  explicit Buffer(size_t n) {
    if (n > N) {
      heap_ = std::make_unique_for_overwrite<T[]>(n);
      data_ = heap_.get();
    }
  }
  T* data() { return data_; }
  T& operator[](size_t i) { return data_[i]; }

 private:
  T local_[N];
  std::unique_ptr<T[]> heap_;
  T* data_ = local_;
};

int64_t padded_head_dim(int32_t head_dim) {
  return (static_cast<int64_t>(head_dim) + 7) / 8 * 8;
}

int64_t kv_element_bytes(GgmlType t) {
  return t == GgmlType::F32 ? 4 : 2;  // F16, BF16
}

Status check_params(const AttentionParams& p) {
  if (p.n_head < 1 || p.n_head_kv < 1 || p.n_head % p.n_head_kv != 0)
    return Error(ErrorCode::kInvalidArgument, "attention: n_head ", p.n_head,
                 " must be a positive multiple of n_head_kv ", p.n_head_kv);
  if (p.head_dim < 1)
    return Error(ErrorCode::kInvalidArgument, "attention: head_dim ", p.head_dim, " < 1");
  if (p.page_size < 1)
    return Error(ErrorCode::kInvalidArgument, "attention: page_size ", p.page_size, " < 1");
  if (p.kv_type != GgmlType::F32 && p.kv_type != GgmlType::F16 && p.kv_type != GgmlType::BF16)
    return Error(ErrorCode::kUnsupported, "attention: KV type ", type_name(p.kv_type),
                 " (supported: F32, F16, BF16)");
  return Status::Ok();
}

Status check_batch(const AttentionParams& p, const AttentionBatch& b) {
  const int64_t width = static_cast<int64_t>(p.n_head) * p.head_dim;
  if (b.n_queries < 0) return Error(ErrorCode::kInvalidArgument, "attention: n_queries < 0");
  if (b.n_queries == 0) return Status::Ok();
  if (!b.q || !b.out || !b.n_visible || !b.seq || !b.seqs)
    return Error(ErrorCode::kInvalidArgument, "attention: null q/out/n_visible/seq/seqs");
  if (b.q_stride < width || b.out_stride < width)
    return Error(ErrorCode::kInvalidArgument, "attention: q/out stride (", b.q_stride, ", ",
                 b.out_stride, ") < n_head*head_dim ", width);
  // Largest visible count and smallest first key per sequence: every page between must exist.
  const auto n_seqs = static_cast<size_t>(std::max(0, b.n_seqs));
  Buffer<int32_t, 16> max_visible(n_seqs), min_first(n_seqs);
  std::fill(max_visible.data(), max_visible.data() + n_seqs, 0);
  std::fill(min_first.data(), min_first.data() + n_seqs, INT32_MAX);
  for (int64_t i = 0; i < b.n_queries; ++i) {
    const int32_t s = b.seq[i];
    if (s < 0 || s >= b.n_seqs)
      return Error(ErrorCode::kInvalidArgument, "attention: query ", i, " names sequence ", s,
                   " of ", b.n_seqs);
    const KvPageTable& t = b.seqs[s];
    const int64_t capacity = static_cast<int64_t>(t.n_pages) * p.page_size;
    if (b.n_visible[i] < 1 || b.n_visible[i] > capacity)
      return Error(ErrorCode::kInvalidArgument, "attention: query ", i, " sees ", b.n_visible[i],
                   " keys but sequence ", s, " has room for ", capacity, " (", t.n_pages,
                   " pages of ", p.page_size, ")");
    const int32_t first = b.first_visible ? b.first_visible[i] : 0;
    if (first < 0 || first >= b.n_visible[i])
      return Error(ErrorCode::kInvalidArgument, "attention: query ", i, " first visible key ",
                   first, " outside [0, ", b.n_visible[i], ")");
    max_visible[static_cast<size_t>(s)] =
        std::max(max_visible[static_cast<size_t>(s)], b.n_visible[i]);
    min_first[static_cast<size_t>(s)] = std::min(min_first[static_cast<size_t>(s)], first);
  }
  for (int32_t s = 0; s < b.n_seqs; ++s) {
    const int32_t need = max_visible[static_cast<size_t>(s)];
    if (need == 0) continue;
    const KvPageTable& t = b.seqs[s];
    if (!t.k_pages || !t.v_pages)
      return Error(ErrorCode::kInvalidArgument, "attention: sequence ", s, " has no page table");
    for (int32_t pg = min_first[static_cast<size_t>(s)] / p.page_size;
         pg < (need + p.page_size - 1) / p.page_size; ++pg)
      if (!t.k_pages[pg] || !t.v_pages[pg])
        return Error(ErrorCode::kInvalidArgument, "attention: sequence ", s, " page ", pg,
                     " is null but holds visible keys");
  }
  return Status::Ok();
}

// Copies keys [j0, j0+nb) of one kv head into dst rows of hd_pad floats, zero-padded.
void gather_block_scalar(const AttentionParams& p, const void* const* pages, int32_t kv_head,
                         int32_t j0, int32_t nb, float* dst) {
  const int64_t hd_pad = padded_head_dim(p.head_dim);
  for (int32_t j = 0; j < nb; ++j) {
    const int32_t key = j0 + j;
    const int64_t off =
        (static_cast<int64_t>(kv_head) * p.page_size + key % p.page_size) * p.head_dim;
    float* d = dst + j * hd_pad;
    if (p.kv_type == GgmlType::F16) {
      const uint16_t* src = static_cast<const uint16_t*>(pages[key / p.page_size]) + off;
      for (int32_t e = 0; e < p.head_dim; ++e) d[e] = fp16_to_f32(src[e]);
    } else if (p.kv_type == GgmlType::BF16) {
      const uint16_t* src = static_cast<const uint16_t*>(pages[key / p.page_size]) + off;
      for (int32_t e = 0; e < p.head_dim; ++e) d[e] = bf16_to_f32(src[e]);
    } else {
      const float* src = static_cast<const float*>(pages[key / p.page_size]) + off;
      std::copy(src, src + p.head_dim, d);
    }
    std::fill(d + p.head_dim, d + hd_pad, 0.0f);
  }
}

}  // namespace

int64_t kv_page_bytes(const AttentionParams& p) {
  return static_cast<int64_t>(p.page_size) * p.n_head_kv * p.head_dim * kv_element_bytes(p.kv_type);
}

namespace ops_internal {

int32_t attention_max_group(const AttentionParams& p) {
  return std::clamp(kAttentionMaxGroupPairs / (p.n_head / p.n_head_kv), kAttentionMaxGroup,
                    kAttentionMaxGroupWide);
}

int64_t attention_scratch_floats(const AttentionParams& p) {
  const int64_t hd_pad = padded_head_dim(p.head_dim);
  const int64_t heads =
      int64_t{attention_max_group(p)} * p.n_head;  // (query, head) pairs of a task
  // AVX2: a query row and an accumulator row per pair, then m and l. Scalar: one query's K and V
  // blocks, accumulators and block scores (smaller).
  return std::max(2 * heads * hd_pad + 2 * heads, 2 * kAttentionKeyBlock * hd_pad +
                                                      2 * p.n_head * hd_pad + kAttentionKeyBlock +
                                                      2 * p.n_head) +
         8;
}

// Scalar reference of the blocked online softmax. Per head and block: scores by a sequential
// dot product, block max, rescale of the running sum and accumulator, then p_j in key order.
namespace {
void attention_head_group_scalar(const AttentionParams& p, const float* q_query, float* out_query,
                                 const KvPageTable& table, int32_t n_visible, int32_t first_visible,
                                 int32_t kv_head, float* scratch) {
  const float* q_group =
      q_query + static_cast<int64_t>(kv_head) * (p.n_head / p.n_head_kv) * p.head_dim;
  float* out_group =
      out_query + static_cast<int64_t>(kv_head) * (p.n_head / p.n_head_kv) * p.head_dim;
  const int64_t hd = p.head_dim;
  const int64_t hd_pad = padded_head_dim(p.head_dim);
  const int32_t rep = p.n_head / p.n_head_kv;
  float* kblk = scratch;
  float* vblk = kblk + kAttentionKeyBlock * hd_pad;
  float* acc = vblk + kAttentionKeyBlock * hd_pad;
  float* s = acc + rep * hd_pad;
  float* m = s + kAttentionKeyBlock;
  float* l = m + rep;
  for (int32_t r = 0; r < rep; ++r) {
    m[r] = -std::numeric_limits<float>::infinity();
    l[r] = 0.0f;
    std::fill(acc + r * hd_pad, acc + (r + 1) * hd_pad, 0.0f);
  }
  for (int32_t j0 = first_visible; j0 < n_visible; j0 += kAttentionKeyBlock) {
    const int32_t nb = std::min(kAttentionKeyBlock, n_visible - j0);
    gather_block_scalar(p, table.k_pages, kv_head, j0, nb, kblk);
    gather_block_scalar(p, table.v_pages, kv_head, j0, nb, vblk);
    for (int32_t r = 0; r < rep; ++r) {
      const float* q = q_group + r * hd;
      float block_max = -std::numeric_limits<float>::infinity();
      for (int32_t j = 0; j < nb; ++j) {
        float dot = 0.0f;
        for (int64_t e = 0; e < hd; ++e) dot += q[e] * kblk[j * hd_pad + e];
        s[j] = dot * p.scale;
        block_max = std::fmax(block_max, s[j]);
      }
      const float new_max = std::fmax(m[r], block_max);
      const float alpha = std::exp(m[r] - new_max);
      float block_sum = 0.0f;
      for (int32_t j = 0; j < nb; ++j) {
        s[j] = std::exp(s[j] - new_max);
        block_sum += s[j];
      }
      l[r] = l[r] * alpha + block_sum;
      float* a = acc + r * hd_pad;
      for (int64_t e = 0; e < hd; ++e) {
        float v = a[e] * alpha;
        for (int32_t j = 0; j < nb; ++j) v += s[j] * vblk[j * hd_pad + e];
        a[e] = v;
      }
      m[r] = new_max;
    }
  }
  for (int32_t r = 0; r < rep; ++r)
    for (int64_t e = 0; e < hd; ++e) out_group[r * hd + e] = acc[r * hd_pad + e] / l[r];
}
}  // namespace

void attention_task_scalar(const AttentionTask& task, float* scratch) {
  for (int32_t i = 0; i < task.n_q; ++i)
    for (int32_t g = task.kv_begin; g < task.kv_end; ++g)
      attention_head_group_scalar(*task.params, task.q + i * task.q_stride,
                                  task.out + i * task.out_stride, *task.table, task.n_visible[i],
                                  task.first_visible, g, scratch);
}

}  // namespace ops_internal

Status attention_paged(const AttentionParams& params, const AttentionBatch& batch,
                       ThreadContext* threads, Isa isa) {
  CHIMERA_RETURN_IF_ERROR(check_params(params));
  CHIMERA_RETURN_IF_ERROR(check_batch(params, batch));
  if (batch.n_queries == 0) return Status::Ok();
  // Tasks are (group of queries, range of kv heads). A group is a run of up to
  // attention_max_group consecutive queries of one sequence with the same first visible key
  // (speculative verify, prefill): the task reads each key block once for all of them. Few
  // tasks (decode): kv heads are split so every thread has work, and groups are made smaller
  // while there are fewer tasks than threads. Tasks are dealt round-robin: causal prefill
  // queries grow in cost, contiguous chunks would leave one thread with the long ones. Each task
  // owns its outputs, so none of these choices is visible in the results. One thread: one task
  // per group (splitting its kv heads would only repeat the per-task and per-block set-up; the
  // 1-thread draft model of speculative decoding runs here).
  const int nth = threads ? threads->n_threads() : 1;
  const auto first_of = [&](int64_t i) { return batch.first_visible ? batch.first_visible[i] : 0; };
  Buffer<std::pair<int64_t, int32_t>, 16> groups(static_cast<size_t>(batch.n_queries));
  int64_t n_groups = 0;  // groups[0, n_groups): (first query, queries)
  int32_t chunks = 1;
  for (int32_t max_group = ops_internal::attention_max_group(params);; max_group /= 2) {
    n_groups = 0;
    for (int64_t i = 0; i < batch.n_queries; ++i) {
      if (n_groups > 0) {
        auto& [g0, n] = groups[static_cast<size_t>(n_groups - 1)];
        if (n < max_group && batch.seq[i] == batch.seq[g0] && first_of(i) == first_of(g0)) {
          ++n;
          continue;
        }
      }
      groups[static_cast<size_t>(n_groups++)] = {i, 1};
    }
    const int64_t want_chunks =
        nth == 1 ? 1 : (2 * static_cast<int64_t>(nth) + n_groups - 1) / n_groups;
    chunks = static_cast<int32_t>(std::clamp<int64_t>(want_chunks, 1, params.n_head_kv));
    if (max_group == 1 || n_groups * chunks >= nth) break;
  }
  const int64_t n_tasks = n_groups * chunks;
  const int64_t scratch_floats = ops_internal::attention_scratch_floats(params);
  auto work = [&](int ith, int nth_run) {
    // Uninitialized: each task writes every scratch float it reads. 32 KiB on the stack hold a
    // small model's (head_dim 64, 4 heads, groups of 12 queries: 24 KiB).
    Buffer<float, 8192> scratch(static_cast<size_t>(scratch_floats));
    for (int64_t t = ith; t < n_tasks; t += nth_run) {
      const auto [i, n_q] = groups[static_cast<size_t>(t / chunks)];
      const int32_t ch = static_cast<int32_t>(t % chunks);
      ops_internal::AttentionTask task{
          &params,
          batch.q + i * batch.q_stride,
          batch.out + i * batch.out_stride,
          batch.q_stride,
          batch.out_stride,
          &batch.seqs[batch.seq[i]],
          batch.n_visible + i,
          n_q,
          first_of(i),
          static_cast<int32_t>(int64_t{ch} * params.n_head_kv / chunks),
          static_cast<int32_t>(int64_t{ch + 1} * params.n_head_kv / chunks)};
      if (isa == Isa::kAvx512 && isa_supported(Isa::kAvx512)) {
        ops_internal::attention_task_avx512(task, scratch.data());
      } else if (ops_internal::use_avx2(isa)) {
        ops_internal::attention_task_avx2(task, scratch.data());
      } else {
        ops_internal::attention_task_scalar(task, scratch.data());
      }
    }
  };
  if (threads) {
    threads->run(work);
  } else {
    work(0, 1);
  }
  return Status::Ok();
}

Status kv_write_token(const AttentionParams& params, const float* k, const float* v, void* k_page,
                      void* v_page, int32_t slot) {
  CHIMERA_RETURN_IF_ERROR(check_params(params));
  if (slot < 0 || slot >= params.page_size)
    return Error(ErrorCode::kInvalidArgument, "kv_write_token: slot ", slot, " outside [0, ",
                 params.page_size, ")");
  if (!k || !v || !k_page || !v_page)
    return Error(ErrorCode::kInvalidArgument, "kv_write_token: null row or page");
  const int64_t hd = params.head_dim;
  for (int32_t g = 0; g < params.n_head_kv; ++g) {
    const int64_t dst = (static_cast<int64_t>(g) * params.page_size + slot) * hd;  // head-major
    const float* ks = k + g * hd;
    const float* vs = v + g * hd;
    if (params.kv_type == GgmlType::F16 || params.kv_type == GgmlType::BF16) {
      uint16_t* kd = static_cast<uint16_t*>(k_page) + dst;
      uint16_t* vd = static_cast<uint16_t*>(v_page) + dst;
      const bool half = params.kv_type == GgmlType::F16;
      if (half && isa_supported(Isa::kAvx2)) {  // same bits as the scalar conversion
        ops_internal::f32_to_fp16_row_avx2(ks, kd, hd);
        ops_internal::f32_to_fp16_row_avx2(vs, vd, hd);
        continue;
      }
      for (int64_t e = 0; e < hd; ++e) {
        kd[e] = half ? f32_to_fp16(ks[e]) : f32_to_bf16(ks[e]);
        vd[e] = half ? f32_to_fp16(vs[e]) : f32_to_bf16(vs[e]);
      }
    } else {
      std::copy(ks, ks + hd, static_cast<float*>(k_page) + dst);
      std::copy(vs, vs + hd, static_cast<float*>(v_page) + dst);
    }
  }
  return Status::Ok();
}

}  // namespace chimera
