// AVX2 blocked online-softmax attention for one (query group, kv head range) task.
//
// The keys and values are read straight from the head-major pages (F16/BF16 converted in registers)
// and shared by up to four (query, head) pairs of the same kv head: the query heads of the kv head
// and, in a multi-query task, the same heads of the group's other queries; a block's rows stay in
// L1 while the rest of the group's pairs read them.
// The arithmetic of each (query head, key) score, of the block softmax and of each accumulator
// element is fixed by the key block and head_dim only: every score is its own FMA chain over
// head_dim followed by one fixed pairwise tree over its 8 lanes (computed for four keys at once
// by a transposing hadd), every accumulator element is scaled by alpha and then takes p_j v_j in
// key order. How keys and heads are grouped for instruction-level
// parallelism never changes a bit.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/attention.h"

namespace chimera::ops_internal {
namespace {

constexpr int32_t kKB = kAttentionKeyBlock;
static_assert(kKB % 8 == 0, "the block exp/sum runs on whole vectors");
// (query, head) pairs sharing one pass over a kv head's keys: four, or three where head_dim has
// four or more vectors. Three pairs score four keys at a time (12 independent FMA chains), four
// only two (8 chains, too few to cover the FMA latency): 12-27% faster multi-query and
// 4-heads-per-kv-head tasks at head_dim 64-128. Short heads are dominated by the per-pass cost
// instead (head_dim 12: 30% slower in threes).
constexpr int kMaxHeads = 4;

// A BF16 element: its own type, so that the loads below pick the BF16 conversion (uint16_t is F16).
struct Bf16 {
  uint16_t bits;
};

// 8 elements of a KV row as floats; the _tail variants read only n < 8 and zero the rest (so no
// read past a row, and padding lanes contribute exactly 0). Always inlined: GCC left load_vec
// out of line in the grown task code, a call per vector (10% of a 12-wide head's time).
// BF16 is the top half of an F32: widen and shift.
[[gnu::always_inline]] inline __m256 load8(const Bf16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
// The first n (1..7) 16-bit elements at p in the low lanes, zeros above, built in registers: a
// copy through a stack buffer cost a memcpy call (n is not a constant), a spill of every live
// vector around it and a store-forwarding stall on the reload, once per key and vector of a
// ragged head_dim (the 12-wide heads of a small draft model spent most of a forward there).
[[gnu::always_inline]] inline __m128i load_halves(const uint16_t* p, int64_t n) {
  __m128i h = _mm_setzero_si128();
  if (n >= 4) {
    h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));  // elements 0..3
    switch (n) {
      case 7:
        h = _mm_insert_epi16(h, p[6], 6);
        [[fallthrough]];
      case 6:
        h = _mm_insert_epi16(h, p[5], 5);
        [[fallthrough]];
      case 5:
        h = _mm_insert_epi16(h, p[4], 4);
        [[fallthrough]];
      default:
        break;
    }
    return h;
  }
  switch (n) {
    case 3:
      h = _mm_insert_epi16(h, p[2], 2);
      [[fallthrough]];
    case 2:
      h = _mm_insert_epi16(h, p[1], 1);
      [[fallthrough]];
    case 1:
      h = _mm_insert_epi16(h, p[0], 0);
      [[fallthrough]];
    default:
      break;
  }
  return h;
}
[[gnu::always_inline]] inline __m256 load_tail(const Bf16* p, int64_t n) {
  const __m128i h = load_halves(reinterpret_cast<const uint16_t*>(p), n);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
[[gnu::always_inline]] inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
[[gnu::always_inline]] inline __m256 load8(const float* p) {
  return _mm256_loadu_ps(p);
}
[[gnu::always_inline]] inline __m256 load_tail(const uint16_t* p, int64_t n) {
  return _mm256_cvtph_ps(load_halves(p, n));
}
[[gnu::always_inline]] inline __m256 load_tail(const float* p, int64_t n) {
  return _mm256_maskload_ps(p, tail_mask_avx2(n));
}

// Element e-block c of a row: full vectors below n_full, the ragged tail at n_full. kRagged is
// false when head_dim is a multiple of 8 (every block full): no test per load.
template <bool kRagged, class Elem>
[[gnu::always_inline]] inline __m256 load_vec(const Elem* row, int64_t c, int64_t n_full,
                                              int64_t rem) {
  if constexpr (!kRagged) return load8(row + 8 * c);
  return c < n_full ? load8(row + 8 * c) : load_tail(row + 8 * c, rem);
}

// One task: (query, head) pairs of kv heads [kv_begin, kv_end), one kv head after the other. Per
// kv head, key blocks are the outer loop, so each block's rows are read once (a contiguous run of
// keys within a page) for every pair; every pair keeps its own running max, sum and accumulator
// across blocks, and its own key blocks: blocks start at first_visible, a query's last block
// stops at its n_visible, and a block is computed for the pairs whose queries see it whole
// together, then for each query that sees only part of it with that query's key count.
template <class Elem, bool kRagged>
struct Task {
  const AttentionParams& p;
  const AttentionTask& task;
  int64_t hd, hd_pad, nvec, n_full, rem;
  int64_t head_stride;  // elements between one kv head's slot and the next head's (page_size*hd)

  // Pointers to keys [j0, j0 + nb) at kv head g in the K and V pages (head-major pages: kv head g
  // of a key is g * head_stride elements after kv head 0).
  void rows(int32_t j0, int32_t nb, int32_t g, const Elem** krow, const Elem** vrow) const {
    int32_t page = j0 / p.page_size, slot = j0 % p.page_size;
    if (slot + nb <= p.page_size) {  // within one page (the usual case): consecutive rows
      const Elem* k = static_cast<const Elem*>(task.table->k_pages[page]) + g * head_stride;
      const Elem* v = static_cast<const Elem*>(task.table->v_pages[page]) + g * head_stride;
      for (int32_t j = 0; j < nb; ++j) {
        krow[j] = k + (slot + j) * hd;
        vrow[j] = v + (slot + j) * hd;
      }
      return;
    }
    for (int32_t j = 0; j < nb; ++j) {
      const int64_t off = g * head_stride + slot * hd;
      krow[j] = static_cast<const Elem*>(task.table->k_pages[page]) + off;
      vrow[j] = static_cast<const Elem*>(task.table->v_pages[page]) + off;
      if (++slot == p.page_size) {
        slot = 0;
        ++page;
      }
    }
  }

  // The next block is prefetched a key at a time (the kv head's row): its K rows alongside the
  // current block's scores, its V rows alongside the current block's V pass, so the misses
  // are spread over the whole block (a burst would overflow the miss buffers). Within a page each
  // head's keys are contiguous, so this mostly runs ahead of the hardware prefetcher across page
  // boundaries. Always inlined: out of line, GCC's IPA pass finds a function whose only effect is
  // a prefetch "const" and deletes every call.
  [[gnu::always_inline]] void prefetch_row(const Elem* row) const {
    const char* b = reinterpret_cast<const char*>(row);
    for (int64_t o = 0; o < hd * static_cast<int64_t>(sizeof(Elem)); o += 64)
      _mm_prefetch(b + o, _MM_HINT_T1);
  }

  // Scores of keys [j, j + KJ) (KJ = 1, 2 or 4) for H heads: one FMA chain per (head, key) over
  // head_dim, then one transposed reduction per head: hadd pairs the keys' lanes, so key k's score
  // is ((a0+a1)+(a2+a3)) + ((a4+a5)+(a6+a7)) of its lane sums a, scaled, whatever KJ is (zero
  // vectors stand in for the missing keys). Prefetches the next block's keys [j, j + KJ) below
  // nb_next when pf_k is not null.
  template <int H, int KJ>
  [[gnu::always_inline]] void score_keys(const float* const* qh, const Elem* const* krow, int32_t j,
                                         float (*s)[kKB], const Elem* const* pf_k,
                                         const Elem* const* pf_v, int32_t nb_next) const {
    if (pf_k)
      for (int k = 0; k < KJ; ++k)
        if (j + k < nb_next) prefetch_row(pf_k[j + k]);
    __m256 a[KJ][H];
    for (int k = 0; k < KJ; ++k)
      for (int h = 0; h < H; ++h) a[k][h] = _mm256_setzero_ps();
    for (int64_t c = 0; c < nvec; ++c) {
      // One key vector live at a time, q as a memory operand: KJ*H accumulators + 1 register.
      for (int k = 0; k < KJ; ++k) {
        const __m256 kv = load_vec<kRagged>(krow[j + k], c, n_full, rem);
        for (int h = 0; h < H; ++h)
          a[k][h] = _mm256_fmadd_ps(_mm256_loadu_ps(qh[h] + 8 * c), kv, a[k][h]);
      }
    }
    const __m128 vscale = _mm_set1_ps(p.scale);
    const __m256 zero = _mm256_setzero_ps();
    for (int h = 0; h < H; ++h) {
      const __m256 x = _mm256_hadd_ps(a[0][h], KJ > 1 ? a[KJ > 1 ? 1 : 0][h] : zero);
      const __m256 y = KJ > 2 ? _mm256_hadd_ps(a[KJ > 2 ? 2 : 0][h], a[KJ > 2 ? 3 : 0][h]) : zero;
      const __m256 t = _mm256_hadd_ps(x, y);
      const __m128 r =
          _mm_mul_ps(_mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)), vscale);
      if constexpr (KJ == 4) {
        _mm_storeu_ps(&s[h][j], r);
      } else {
        alignas(16) float lanes[4];
        _mm_store_ps(lanes, r);
        for (int k = 0; k < KJ; ++k) s[h][j + k] = lanes[k];
      }
    }
  }

  // s[h][j] = (q_h . k_j) * scale for the block's keys: four keys
  // at a time for up to three heads (12 accumulators), two for four heads; the rest one or two.
  template <int H>
  void scores(float* const* q, const Elem* const* krow, int32_t nb, float (*s)[kKB],
              const Elem* const* pf_k, const Elem* const* pf_v, int32_t nb_next) const {
    const float* qh[H];  // local copies: the compiler keeps them in registers
    for (int h = 0; h < H; ++h) qh[h] = q[h];
    int32_t j = 0;
    if constexpr (H <= 3) {
      for (; j + 4 <= nb; j += 4) score_keys<H, 4>(qh, krow, j, s, pf_k, pf_v, nb_next);
    }
    for (; j + 2 <= nb; j += 2) score_keys<H, 2>(qh, krow, j, s, pf_k, pf_v, nb_next);
    if (j < nb) score_keys<H, 1>(qh, krow, j, s, pf_k, pf_v, nb_next);
    for (int h = 0; h < H; ++h)
      for (int32_t jj = nb; jj < kKB; ++jj) s[h][jj] = -std::numeric_limits<float>::infinity();
  }

  // Online-softmax step of one head: s becomes the block's p_j; returns alpha.
  static float softmax_step(float* s, float* m, float* l) {
    __m256 vmax = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    for (int32_t c = 0; c < kKB / 8; ++c) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + 8 * c));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, vmax);
    float block_max = lanes[0];
    for (int i = 1; i < 8; ++i) block_max = std::max(block_max, lanes[i]);
    const float new_max = std::max(*m, block_max);
    const float alpha = _mm256_cvtss_f32(exp_avx2(_mm256_set1_ps(*m - new_max)));
    const __m256 vnew_max = _mm256_set1_ps(new_max);
    __m256 vsum = _mm256_setzero_ps();
    for (int32_t c = 0; c < kKB / 8; ++c) {  // padding scores are -inf: exp gives exactly 0
      const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + 8 * c), vnew_max));
      _mm256_storeu_ps(s + 8 * c, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    // One fused multiply-add, written out: the compilers contract `*l * alpha + sum` to the
    // same FMA by default, but an explicit one does not rest on that (nor would another ISA's
    // path that shares these results).
    *l = std::fma(*l, alpha, hsum_avx2(vsum));
    *m = new_max;
    return alpha;
  }

  // Vectors [c, c + CV) of acc_h = acc_h * alpha_h + sum_j p_hj v_j (j in key order): H*CV
  // accumulators, so enough FMA chains run at once to cover the FMA latency.
  template <int H, int CV>
  [[gnu::always_inline]] void accumulate_cols(float* const* acc, const float* alpha,
                                              const float (*s)[kKB], const Elem* const* vrow,
                                              int32_t nb, int64_t c, const Elem* const* pf_v,
                                              int32_t nb_next) const {
    __m256 v[H][CV];
    for (int h = 0; h < H; ++h) {
      const __m256 va = _mm256_set1_ps(alpha[h]);
      for (int i = 0; i < CV; ++i)
        v[h][i] = _mm256_mul_ps(_mm256_loadu_ps(acc[h] + 8 * (c + i)), va);
    }
    for (int32_t j = 0; j < nb; ++j) {
      __m256 w[H];
      for (int h = 0; h < H; ++h) w[h] = _mm256_set1_ps(s[h][j]);
      if (pf_v && j < nb_next) prefetch_row(pf_v[j]);
      const Elem* row = vrow[j];
      for (int i = 0; i < CV; ++i) {
        const __m256 r = load_vec<kRagged>(row, c + i, n_full, rem);
        for (int h = 0; h < H; ++h) v[h][i] = _mm256_fmadd_ps(w[h], r, v[h][i]);
      }
    }
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < CV; ++i) _mm256_storeu_ps(acc[h] + 8 * (c + i), v[h][i]);
  }

  // acc_h = acc_h * alpha_h + sum_j p_hj v_j: four vectors of head_dim at a time for up to three
  // heads, two for four heads, and the remaining vectors in one pass too (a pass per remaining
  // vector left a 12-wide head's two vectors as two latency-bound chains of 32 FMAs each). Each
  // element's arithmetic is the same whatever the grouping.
  template <int H>
  void accumulate(float* const* acc, const float* alpha, const float (*s)[kKB],
                  const Elem* const* vrow, int32_t nb, const Elem* const* pf_v,
                  int32_t nb_next) const {
    constexpr int CV = H <= 3 ? 4 : 2;
    int64_t c = 0;
    for (; c + CV <= nvec; c += CV)
      accumulate_cols<H, CV>(acc, alpha, s, vrow, nb, c, c == 0 ? pf_v : nullptr, nb_next);
    const Elem* const* pf = c == 0 ? pf_v : nullptr;
    switch (nvec - c) {  // 0 .. CV-1
      case 3:
        accumulate_cols<H, CV == 4 ? 3 : 1>(acc, alpha, s, vrow, nb, c, pf, nb_next);
        break;
      case 2:
        accumulate_cols<H, 2>(acc, alpha, s, vrow, nb, c, pf, nb_next);
        break;
      case 1:
        accumulate_cols<H, 1>(acc, alpha, s, vrow, nb, c, pf, nb_next);
        break;
      default:
        break;
    }
  }

  // Pair t's padded query row and accumulator row in the scratch buffer.
  float* q_row(float* scratch, int32_t t) const { return scratch + 2 * t * hd_pad; }
  float* acc_row(float* scratch, int32_t t) const { return q_row(scratch, t) + hd_pad; }

  // One key block of nb keys for H pairs t[0..H) of the same kv head (rows krow/vrow); m/l are
  // the task's per-pair running max and sum.
  template <int H>
  void block(const int32_t* t, float* scratch, float* m, float* l, const Elem* const* krow,
             const Elem* const* vrow, int32_t nb, const Elem* const* pf_k, const Elem* const* pf_v,
             int32_t nb_next) const {
    float* q[H];
    float* acc[H];
    for (int h = 0; h < H; ++h) {
      q[h] = q_row(scratch, t[h]);
      acc[h] = acc_row(scratch, t[h]);
    }
    alignas(32) float s[H][kKB];
    float alpha[H];
    scores<H>(q, krow, nb, s, pf_k, pf_v, nb_next);
    for (int h = 0; h < H; ++h) alpha[h] = softmax_step(s[h], &m[t[h]], &l[t[h]]);
    accumulate<H>(acc, alpha, s, vrow, nb, pf_v, nb_next);
  }

  // scratch: per (query, head) pair t = i * nh + r (nh task heads per query) a padded query row
  // and an accumulator row, then m and l.
  void run(float* scratch) const {
    const int32_t rep = p.n_head / p.n_head_kv;
    const int32_t nh = (task.kv_end - task.kv_begin) * rep;
    const int32_t n_pairs = task.n_q * nh;
    const int32_t h_first = task.kv_begin * rep;  // query head of task head 0
    float* m = scratch + 2 * n_pairs * hd_pad;
    float* l = m + n_pairs;
    int32_t n_max = 0;
    for (int32_t i = 0; i < task.n_q; ++i) {
      n_max = std::max(n_max, task.n_visible[i]);
      for (int32_t r = 0; r < nh; ++r) {
        const int32_t t = i * nh + r;
        float* q = q_row(scratch, t);
        const float* src = task.q + i * task.q_stride + static_cast<int64_t>(h_first + r) * hd;
        std::copy(src, src + hd, q);
        std::fill(q + hd, q + hd_pad, 0.0f);
        std::fill(acc_row(scratch, t), acc_row(scratch, t) + hd_pad, 0.0f);
        m[t] = -std::numeric_limits<float>::infinity();
        l[t] = 0.0f;
      }
    }
    const Elem* krow[2][kKB];
    const Elem* vrow[2][kKB];
    const int32_t j_first = task.first_visible;
    const int max_pairs = nvec >= 4 ? 3 : kMaxHeads;
    for (int32_t g = task.kv_begin; g < task.kv_end; ++g) {
      const int32_t r_first = (g - task.kv_begin) * rep;  // task head of the kv head's first
      rows(j_first, std::min(kKB, n_max - j_first), g, krow[0], vrow[0]);
      for (int32_t j0 = j_first, b = 0; j0 < n_max; j0 += kKB, b ^= 1) {
        const int32_t nb_next = std::clamp(n_max - j0 - kKB, 0, kKB);
        if (nb_next > 0) rows(j0 + kKB, nb_next, g, krow[b ^ 1], vrow[b ^ 1]);
        // The first call of the block prefetches the next block's rows.
        const Elem* const* pk = nb_next > 0 ? krow[b ^ 1] : nullptr;
        const Elem* const* pv = nb_next > 0 ? vrow[b ^ 1] : nullptr;
        int32_t pending[kMaxHeads];
        int n_pending = 0;
        const auto flush = [&](int32_t nb) {
          switch (n_pending) {
            case 1:
              block<1>(pending, scratch, m, l, krow[b], vrow[b], nb, pk, pv, nb_next);
              break;
            case 2:
              block<2>(pending, scratch, m, l, krow[b], vrow[b], nb, pk, pv, nb_next);
              break;
            case 3:
              block<3>(pending, scratch, m, l, krow[b], vrow[b], nb, pk, pv, nb_next);
              break;
            default:
              block<4>(pending, scratch, m, l, krow[b], vrow[b], nb, pk, pv, nb_next);
              break;
          }
          n_pending = 0;
          pk = pv = nullptr;
        };
        // The pairs of the queries that see the whole block, max_pairs at a time...
        for (int32_t i = 0; i < task.n_q; ++i) {
          if (task.n_visible[i] - j0 < kKB) continue;
          for (int32_t r = 0; r < rep; ++r) {
            pending[n_pending++] = i * nh + r_first + r;
            if (n_pending == max_pairs) flush(kKB);
          }
        }
        if (n_pending > 0) flush(kKB);
        // ...then each query that sees part of it (its last block), with its own key count.
        for (int32_t i = 0; i < task.n_q; ++i) {
          const int32_t nb = task.n_visible[i] - j0;
          if (nb <= 0 || nb >= kKB) continue;
          for (int32_t r = 0; r < rep; ++r) {
            pending[n_pending++] = i * nh + r_first + r;
            if (n_pending == max_pairs) flush(nb);
          }
          if (n_pending > 0) flush(nb);
        }
      }
    }
    for (int32_t i = 0; i < task.n_q; ++i) {
      for (int32_t r = 0; r < nh; ++r) {
        const int32_t t = i * nh + r;
        const __m256 vl = _mm256_set1_ps(l[t]);
        const float* acc = acc_row(scratch, t);
        float* o = task.out + i * task.out_stride + static_cast<int64_t>(h_first + r) * hd;
        int64_t e = 0;
        for (; e + 8 <= hd; e += 8)
          _mm256_storeu_ps(o + e, _mm256_div_ps(_mm256_loadu_ps(acc + e), vl));
        for (; e < hd; ++e) o[e] = acc[e] / l[t];  // IEEE division: same as the vector lanes
      }
    }
  }
};

template <class Elem>
void run_task(const AttentionTask& task, float* scratch) {
  const AttentionParams& p = *task.params;
  const int64_t hd = p.head_dim;
  const int64_t hd_pad = (hd + 7) / 8 * 8;
  if (hd % 8 == 0) {
    const Task<Elem, false> t{p, task, hd, hd_pad, hd_pad / 8, hd / 8, 0, p.page_size * hd};
    t.run(scratch);
  } else {
    const Task<Elem, true> t{p, task, hd, hd_pad, hd_pad / 8, hd / 8, hd % 8, p.page_size * hd};
    t.run(scratch);
  }
}

}  // namespace

void attention_task_avx2(const AttentionTask& task, float* scratch) {
  if (task.params->kv_type == GgmlType::F16) {
    run_task<uint16_t>(task, scratch);
  } else if (task.params->kv_type == GgmlType::BF16) {
    run_task<Bf16>(task, scratch);
  } else {
    run_task<float>(task, scratch);
  }
}

}  // namespace chimera::ops_internal
