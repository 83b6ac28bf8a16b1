// AVX2 blocked online-softmax attention for one (query group, kv head range) task.
//
// The keys and values are read straight from the head-major pages (F16/BF16 converted in registers)
// and shared by up to four (query, head) pairs of the same kv head: the query heads of the kv head
// and, in a multi-query task, the same heads of the group's other queries; a block's rows stay in
// L1 while the rest of the group's pairs read them. Small heads with few pairs per kv head take
// two or four kv heads in one pass (four pairs in all), and head_dim 12 and 16 are compiled as
// constants.
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

// One task: (query, head) pairs of kv heads [kv_begin, kv_end), one kv head (or one pass of two
// or four small ones) after the other. Per kv head, key blocks are the outer loop, so each block's
// rows are read once (a contiguous run of keys within a page) for every pair; every pair keeps its
// own running max, sum and accumulator across blocks, and its own key blocks: blocks start at
// first_visible, a query's last block stops at its n_visible, and a block is computed for the pairs
// whose queries see it whole together, then for each query that sees only part of it with that
// query's key count. kHd > 0: head_dim as a constant (small heads: the loops over a row's one or
// two vectors unroll and the ragged tail load is straight-line code; at run time they were half the
// work of a 12-wide head); 0: head_dim at run time.
template <class Elem, bool kRagged, int kHd>
struct Task {
  const AttentionParams& p;
  const AttentionTask& task;
  int64_t hd_rt, hd_pad_rt, nvec_rt, n_full_rt, rem_rt;
  int64_t head_stride;  // elements between one kv head's slot and the next head's (page_size*hd)

  int64_t hd() const { return kHd > 0 ? kHd : hd_rt; }
  int64_t hd_pad() const { return kHd > 0 ? (kHd + 7) / 8 * 8 : hd_pad_rt; }
  int64_t nvec() const { return kHd > 0 ? (kHd + 7) / 8 : nvec_rt; }
  int64_t n_full() const { return kHd > 0 ? kHd / 8 : n_full_rt; }
  int64_t rem() const { return kHd > 0 ? kHd % 8 : rem_rt; }

  // Pointers to keys [j0, j0 + nb) at kv head g in the K and V pages (head-major pages: kv head g
  // of a key is g * head_stride elements after kv head 0).
  void rows(int32_t j0, int32_t nb, int32_t g, const Elem** krow, const Elem** vrow) const {
    int32_t page = j0 / p.page_size, slot = j0 % p.page_size;
    if (slot + nb <= p.page_size) {  // within one page (the usual case): consecutive rows
      const Elem* k = static_cast<const Elem*>(task.table->k_pages[page]) + g * head_stride;
      const Elem* v = static_cast<const Elem*>(task.table->v_pages[page]) + g * head_stride;
      for (int32_t j = 0; j < nb; ++j) {
        krow[j] = k + (slot + j) * hd();
        vrow[j] = v + (slot + j) * hd();
      }
      return;
    }
    for (int32_t j = 0; j < nb; ++j) {
      const int64_t off = g * head_stride + slot * hd();
      krow[j] = static_cast<const Elem*>(task.table->k_pages[page]) + off;
      vrow[j] = static_cast<const Elem*>(task.table->v_pages[page]) + off;
      if (++slot == p.page_size) {
        slot = 0;
        ++page;
      }
    }
  }

  // Rows of a fixed head_dim no longer than half a cache line: every kPf-th key's row (the rest
  // share its line or the next one's; 2-7% faster 12-wide heads).
  static constexpr int kPf = kHd > 0 && kHd * sizeof(Elem) <= 32
                                 ? static_cast<int>(64 / (kHd * sizeof(Elem)))
                                 : 1;

  // The next block is prefetched a key at a time (the kv head's row): its K rows alongside the
  // current block's scores, its V rows alongside the current block's V pass, so the misses
  // are spread over the whole block (a burst would overflow the miss buffers). Within a page each
  // head's keys are contiguous, so this mostly runs ahead of the hardware prefetcher across page
  // boundaries. Always inlined: out of line, GCC's IPA pass finds a function whose only effect is
  // a prefetch "const" and deletes every call.
  [[gnu::always_inline]] void prefetch_row(const Elem* row) const {
    const char* b = reinterpret_cast<const char*>(row);
    for (int64_t o = 0; o < hd() * static_cast<int64_t>(sizeof(Elem)); o += 64)
      _mm_prefetch(b + o, _MM_HINT_T1);
  }

  // Scores of keys [j, j + KJ) (KJ = 1, 2 or 4) for H heads: one FMA chain per (head, key) over
  // head_dim, then one transposed reduction per head: hadd pairs the keys' lanes, so key k's score
  // is ((a0+a1)+(a2+a3)) + ((a4+a5)+(a6+a7)) of its lane sums a, scaled, whatever KJ is (zero
  // vectors stand in for the missing keys). The rows are krow[j] + off (off: the kv head's
  // offset from the rows' kv head). Prefetches the next block's keys [j, j + KJ) below nb_next
  // when pf_k is not null.
  template <int H, int KJ>
  [[gnu::always_inline]] void score_keys(const float* const* qh, const Elem* const* krow,
                                         int64_t off, int32_t j, float (*s)[kKB],
                                         const Elem* const* pf_k, int32_t nb_next) const {
    if (pf_k)
      for (int k = 0; k < KJ; ++k)
        if (k % kPf == 0 && j + k < nb_next) prefetch_row(pf_k[j + k] + off);
    __m256 a[KJ][H];
    for (int k = 0; k < KJ; ++k)
      for (int h = 0; h < H; ++h) a[k][h] = _mm256_setzero_ps();
    for (int64_t c = 0; c < nvec(); ++c) {
      // One key vector live at a time, q as a memory operand: KJ*H accumulators + 1 register.
      for (int k = 0; k < KJ; ++k) {
        const __m256 kv = load_vec<kRagged>(krow[j + k] + off, c, n_full(), rem());
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
  void scores(float* const* q, const Elem* const* krow, int64_t off, int32_t nb, float (*s)[kKB],
              const Elem* const* pf_k, int32_t nb_next) const {
    const float* qh[H];  // local copies: the compiler keeps them in registers
    for (int h = 0; h < H; ++h) qh[h] = q[h];
    int32_t j = 0;
    if constexpr (H <= 3) {
      for (; j + 4 <= nb; j += 4) score_keys<H, 4>(qh, krow, off, j, s, pf_k, nb_next);
    }
    for (; j + 2 <= nb; j += 2) score_keys<H, 2>(qh, krow, off, j, s, pf_k, nb_next);
    if (j < nb) score_keys<H, 1>(qh, krow, off, j, s, pf_k, nb_next);
    for (int h = 0; h < H; ++h)
      for (int32_t jj = nb; jj < kKB; ++jj) s[h][jj] = -std::numeric_limits<float>::infinity();
  }

  // 12-wide heads with many pairs per kv head (verify, prefill): the block's keys transposed
  // once per kv head, kt[e][j] = element e of key j (exact conversions; keys from nb to the next
  // multiple of 8 are zeros), so a pair scores eight keys per vector with no horizontal reduction.
  // Prefetches the next block's K rows below nb_next.
  void transpose_keys(const Elem* const* krow, int64_t off, int32_t nb, float (*kt)[kKB],
                      const Elem* const* pf_k, int32_t nb_next) const {
    static_assert(kHd == 12);
    for (int32_t j0 = 0; j0 < nb; j0 += 8) {  // the scores read no group past nb
      __m256 r[8];
      __m128 tl[8];  // elements 8..11
      for (int k = 0; k < 8; ++k) {
        const int32_t j = j0 + k;
        if (j < nb) {
          if (pf_k && j % kPf == 0 && j < nb_next) prefetch_row(pf_k[j] + off);
          r[k] = load8(krow[j] + off);
          tl[k] = _mm256_castps256_ps128(load_tail(krow[j] + off + 8, 4));
        } else {
          r[k] = _mm256_setzero_ps();
          tl[k] = _mm_setzero_ps();
        }
      }
      // 8x8 transpose: unpack pairs, shuffle quads, swap 128-bit halves.
      const __m256 u0 = _mm256_unpacklo_ps(r[0], r[1]), u1 = _mm256_unpackhi_ps(r[0], r[1]);
      const __m256 u2 = _mm256_unpacklo_ps(r[2], r[3]), u3 = _mm256_unpackhi_ps(r[2], r[3]);
      const __m256 u4 = _mm256_unpacklo_ps(r[4], r[5]), u5 = _mm256_unpackhi_ps(r[4], r[5]);
      const __m256 u6 = _mm256_unpacklo_ps(r[6], r[7]), u7 = _mm256_unpackhi_ps(r[6], r[7]);
      const __m256 v0 = _mm256_shuffle_ps(u0, u2, 0x44), v1 = _mm256_shuffle_ps(u0, u2, 0xEE);
      const __m256 v2 = _mm256_shuffle_ps(u1, u3, 0x44), v3 = _mm256_shuffle_ps(u1, u3, 0xEE);
      const __m256 v4 = _mm256_shuffle_ps(u4, u6, 0x44), v5 = _mm256_shuffle_ps(u4, u6, 0xEE);
      const __m256 v6 = _mm256_shuffle_ps(u5, u7, 0x44), v7 = _mm256_shuffle_ps(u5, u7, 0xEE);
      _mm256_store_ps(&kt[0][j0], _mm256_permute2f128_ps(v0, v4, 0x20));
      _mm256_store_ps(&kt[1][j0], _mm256_permute2f128_ps(v1, v5, 0x20));
      _mm256_store_ps(&kt[2][j0], _mm256_permute2f128_ps(v2, v6, 0x20));
      _mm256_store_ps(&kt[3][j0], _mm256_permute2f128_ps(v3, v7, 0x20));
      _mm256_store_ps(&kt[4][j0], _mm256_permute2f128_ps(v0, v4, 0x31));
      _mm256_store_ps(&kt[5][j0], _mm256_permute2f128_ps(v1, v5, 0x31));
      _mm256_store_ps(&kt[6][j0], _mm256_permute2f128_ps(v2, v6, 0x31));
      _mm256_store_ps(&kt[7][j0], _mm256_permute2f128_ps(v3, v7, 0x31));
      // 8x4 tail: two 4x4 transposes, keys 0..3 in the low halves, 4..7 in the high.
      _MM_TRANSPOSE4_PS(tl[0], tl[1], tl[2], tl[3]);
      _MM_TRANSPOSE4_PS(tl[4], tl[5], tl[6], tl[7]);
      for (int e = 0; e < 4; ++e)
        _mm256_store_ps(&kt[8 + e][j0], _mm256_set_m128(tl[4 + e], tl[e]));
    }
  }

  // s[h][j] for H pairs from the transposed keys, bit for bit what score_keys gives: lane i of
  // score_keys' accumulator is fma(q[8+i], k[8+i], fma(q[i], k[i], 0)) for i < 4 and
  // fma(0, 0, fma(q[i], k[i], 0)) = fma(q[i], k[i], 0) + 0 for i >= 4 (the zero padding; the
  // + 0 turns an underflowed -0 into +0 as it does there), and the score is
  // (((a0+a1)+(a2+a3)) + ((a4+a5)+(a6+a7))) * scale.
  template <int H>
  void scores_transposed(float* const* q, const float (*kt)[kKB], int32_t nb,
                         float (*s)[kKB]) const {
    static_assert(kHd == 12);
    const __m256 zero = _mm256_setzero_ps();
    const __m256 vscale = _mm256_set1_ps(p.scale);
    for (int h = 0; h < H; ++h) {
      __m256 qb[12];
      for (int e = 0; e < 12; ++e) qb[e] = _mm256_broadcast_ss(q[h] + e);
      for (int32_t j0 = 0; j0 < nb; j0 += 8) {
        const auto lo = [&](int i) {
          return _mm256_fmadd_ps(qb[8 + i], _mm256_load_ps(&kt[8 + i][j0]),
                                 _mm256_fmadd_ps(qb[i], _mm256_load_ps(&kt[i][j0]), zero));
        };
        const auto hi = [&](int i) {
          return _mm256_add_ps(_mm256_fmadd_ps(qb[i], _mm256_load_ps(&kt[i][j0]), zero), zero);
        };
        const __m256 x = _mm256_add_ps(_mm256_add_ps(lo(0), lo(1)), _mm256_add_ps(lo(2), lo(3)));
        const __m256 y = _mm256_add_ps(_mm256_add_ps(hi(4), hi(5)), _mm256_add_ps(hi(6), hi(7)));
        _mm256_store_ps(&s[h][j0], _mm256_mul_ps(_mm256_add_ps(x, y), vscale));
      }
      for (int32_t jj = nb; jj < kKB; ++jj) s[h][jj] = -std::numeric_limits<float>::infinity();
    }
  }

  // Online-softmax step of H (1..4) heads at once, head h in lane h: s[h] becomes the block's
  // p_j, m[t[h]] / l[t[h]] the running max and sum, alpha[h] the rescale. Per head this is the
  // one-head arithmetic, bit for bit: the block max takes s's vectors in order and then lanes
  // 0..7 in order, new_max = max(m, block max), alpha = exp(m - new_max), p_j = exp(s_j -
  // new_max), and l = fma(l, alpha, ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7))) over the lanes of
  // the vector sum of the p vectors (hsum's tree). The heads only share instructions: the
  // lane-wise max, exp, add and FMA give each lane what they give one head alone (_mm_max_ps(x,
  // y) is x > y ? x : y, std::max(y, x) for NaNs and signed zeros too). One head's exp of alpha,
  // reductions and lane extractions ran as a latency chain per head; four heads share them.
  template <int H>
  [[gnu::always_inline]] static void softmax(float (*s)[kKB], const int32_t* t, float* m, float* l,
                                             float* alpha) {
    static_assert(H >= 1 && H <= 4);
    __m256 vmax[4];
    for (int h = 0; h < H; ++h) {
      vmax[h] = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
      for (int32_t c = 0; c < kKB / 8; ++c)
        vmax[h] = _mm256_max_ps(vmax[h], _mm256_loadu_ps(s[h] + 8 * c));
    }
    for (int h = H; h < 4; ++h) vmax[h] = vmax[0];  // unused lanes
    // Lane i of the heads' max vectors as one vector per i (head h in lane h).
    __m128 lo[4], hi[4];
    for (int h = 0; h < 4; ++h) {
      lo[h] = _mm256_castps256_ps128(vmax[h]);
      hi[h] = _mm256_extractf128_ps(vmax[h], 1);
    }
    _MM_TRANSPOSE4_PS(lo[0], lo[1], lo[2], lo[3]);
    _MM_TRANSPOSE4_PS(hi[0], hi[1], hi[2], hi[3]);
    __m128 block_max = lo[0];
    for (int i = 1; i < 4; ++i) block_max = _mm_max_ps(lo[i], block_max);
    for (int i = 0; i < 4; ++i) block_max = _mm_max_ps(hi[i], block_max);
    alignas(16) float mv[4] = {}, lv[4] = {};
    for (int h = 0; h < H; ++h) {
      mv[h] = m[t[h]];
      lv[h] = l[t[h]];
    }
    const __m128 m_old = _mm_load_ps(mv);
    const __m128 new_max = _mm_max_ps(block_max, m_old);
    const __m128 va = _mm256_castps256_ps128(
        exp_avx2(_mm256_castps128_ps256(_mm_sub_ps(m_old, new_max))));  // lanes 0..3 only
    alignas(16) float nm[4];
    _mm_store_ps(nm, new_max);
    __m128 half[4];
    for (int h = 0; h < H; ++h) {
      const __m256 vnew_max = _mm256_set1_ps(nm[h]);
      __m256 vsum = _mm256_setzero_ps();
      for (int32_t c = 0; c < kKB / 8; ++c) {  // padding scores are -inf: exp gives exactly 0
        const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(s[h] + 8 * c), vnew_max));
        _mm256_storeu_ps(s[h] + 8 * c, e);
        vsum = _mm256_add_ps(vsum, e);
      }
      half[h] = _mm_add_ps(_mm256_castps256_ps128(vsum), _mm256_extractf128_ps(vsum, 1));
    }
    for (int h = H; h < 4; ++h) half[h] = half[0];
    _MM_TRANSPOSE4_PS(half[0], half[1], half[2], half[3]);
    const __m128 sum = _mm_add_ps(_mm_add_ps(half[0], half[2]), _mm_add_ps(half[1], half[3]));
    // One fused multiply-add, written out: the compilers contract `l * alpha + sum` to the same
    // FMA by default, but an explicit one does not rest on that.
    _mm_store_ps(lv, _mm_fmadd_ps(_mm_load_ps(lv), va, sum));
    alignas(16) float av[4];
    _mm_store_ps(av, va);
    for (int h = 0; h < H; ++h) {
      m[t[h]] = nm[h];
      l[t[h]] = lv[h];
      alpha[h] = av[h];
    }
  }

  // Vectors [c, c + CV) of acc_h = acc_h * alpha_h + sum_j p_hj v_j (j in key order): H*CV
  // accumulators, so enough FMA chains run at once to cover the FMA latency. Heads g*R..g*R+R-1
  // read kv head g of the pass: rows vrow[j] + g * head_stride.
  template <int G, int R, int CV>
  [[gnu::always_inline]] void accumulate_cols(float* const* acc, const float* alpha,
                                              const float (*s)[kKB], const Elem* const* vrow,
                                              int32_t nb, int64_t c, const Elem* const* pf_v,
                                              int32_t nb_next) const {
    constexpr int H = G * R;
    __m256 v[H][CV];
    for (int h = 0; h < H; ++h) {
      const __m256 va = _mm256_set1_ps(alpha[h]);
      for (int i = 0; i < CV; ++i)
        v[h][i] = _mm256_mul_ps(_mm256_loadu_ps(acc[h] + 8 * (c + i)), va);
    }
    for (int32_t j = 0; j < nb; ++j) {
      __m256 w[H];
      for (int h = 0; h < H; ++h) w[h] = _mm256_set1_ps(s[h][j]);
      if (pf_v && j % kPf == 0 && j < nb_next)
        for (int g = 0; g < G; ++g) prefetch_row(pf_v[j] + g * head_stride);
      for (int g = 0; g < G; ++g) {
        const Elem* row = vrow[j] + g * head_stride;
        for (int i = 0; i < CV; ++i) {
          const __m256 r = load_vec<kRagged>(row, c + i, n_full(), rem());
          for (int h = g * R; h < (g + 1) * R; ++h) v[h][i] = _mm256_fmadd_ps(w[h], r, v[h][i]);
        }
      }
    }
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < CV; ++i) _mm256_storeu_ps(acc[h] + 8 * (c + i), v[h][i]);
  }

  // acc_h = acc_h * alpha_h + sum_j p_hj v_j: four vectors of head_dim at a time for up to three
  // heads, two for four heads, and the remaining vectors in one pass too (a pass per remaining
  // vector left a 12-wide head's two vectors as two latency-bound chains of 32 FMAs each). Each
  // element's arithmetic is the same whatever the grouping.
  template <int G, int R>
  void accumulate(float* const* acc, const float* alpha, const float (*s)[kKB],
                  const Elem* const* vrow, int32_t nb, const Elem* const* pf_v,
                  int32_t nb_next) const {
    constexpr int CV = G * R <= 3 ? 4 : 2;
    int64_t c = 0;
    for (; c + CV <= nvec(); c += CV)
      accumulate_cols<G, R, CV>(acc, alpha, s, vrow, nb, c, c == 0 ? pf_v : nullptr, nb_next);
    const Elem* const* pf = c == 0 ? pf_v : nullptr;
    switch (nvec() - c) {  // 0 .. CV-1
      case 3:
        accumulate_cols<G, R, CV == 4 ? 3 : 1>(acc, alpha, s, vrow, nb, c, pf, nb_next);
        break;
      case 2:
        accumulate_cols<G, R, 2>(acc, alpha, s, vrow, nb, c, pf, nb_next);
        break;
      case 1:
        accumulate_cols<G, R, 1>(acc, alpha, s, vrow, nb, c, pf, nb_next);
        break;
      default:
        break;
    }
  }

  // Pair t's padded query row and accumulator row in the scratch buffer.
  float* q_row(float* scratch, int32_t t) const { return scratch + 2 * t * hd_pad(); }
  float* acc_row(float* scratch, int32_t t) const { return q_row(scratch, t) + hd_pad(); }

  // One key block of nb keys for G*R pairs t[0..G*R): pairs t[g*R .. g*R+R) read kv head g of
  // the pass, whose rows are krow/vrow (kv head 0's) plus g * head_stride; m/l are the task's
  // per-pair running max and sum.
  template <int G, int R>
  void block(const int32_t* t, float* scratch, float* m, float* l, const Elem* const* krow,
             const Elem* const* vrow, int32_t nb, const Elem* const* pf_k, const Elem* const* pf_v,
             int32_t nb_next, const float (*kt)[kKB]) const {
    constexpr int H = G * R;
    float* q[H];
    float* acc[H];
    for (int h = 0; h < H; ++h) {
      q[h] = q_row(scratch, t[h]);
      acc[h] = acc_row(scratch, t[h]);
    }
    alignas(32) float s[H][kKB];
    float alpha[H];
    if constexpr (kHd == 12 && G == 1) {
      if (kt) {
        scores_transposed<H>(q, kt, nb, s);
        softmax<H>(s, t, m, l, alpha);
        accumulate<G, R>(acc, alpha, s, vrow, nb, pf_v, nb_next);
        return;
      }
    }
    for (int g = 0; g < G; ++g) {  // scores per kv head: its K rows are shared by its R pairs
      if (R == 4 && nvec() <= 2) {
        // Small heads: two pairs at a time score four keys per reduction (four pairs, two), at
        // twice the K loads: the reductions, not the loads, dominate a 12-wide head's scores.
        scores<2>(q + g * R, krow, g * head_stride, nb, s + g * R, pf_k, nb_next);
        scores<2>(q + g * R + 2, krow, g * head_stride, nb, s + g * R + 2, nullptr, nb_next);
      } else {
        scores<R>(q + g * R, krow, g * head_stride, nb, s + g * R, pf_k, nb_next);
      }
    }
    softmax<H>(s, t, m, l, alpha);
    accumulate<G, R>(acc, alpha, s, vrow, nb, pf_v, nb_next);
  }

  // block<G, R> for a pass of g (1, 2 or 4) kv heads and n (1..4) pairs, n / g per kv head.
  void pass(int32_t g, int32_t n, const int32_t* t, float* scratch, float* m, float* l,
            const Elem* const* krow, const Elem* const* vrow, int32_t nb, const Elem* const* pf_k,
            const Elem* const* pf_v, int32_t nb_next, const float (*kt)[kKB]) const {
    if (g == 4) {
      block<4, 1>(t, scratch, m, l, krow, vrow, nb, pf_k, pf_v, nb_next, nullptr);
    } else if (g == 2) {
      if (n == 2) {
        block<2, 1>(t, scratch, m, l, krow, vrow, nb, pf_k, pf_v, nb_next, nullptr);
      } else {
        block<2, 2>(t, scratch, m, l, krow, vrow, nb, pf_k, pf_v, nb_next, nullptr);
      }
    } else {
      switch (n) {
        case 1:
          block<1, 1>(t, scratch, m, l, krow, vrow, nb, pf_k, pf_v, nb_next, kt);
          break;
        case 2:
          block<1, 2>(t, scratch, m, l, krow, vrow, nb, pf_k, pf_v, nb_next, kt);
          break;
        case 3:
          block<1, 3>(t, scratch, m, l, krow, vrow, nb, pf_k, pf_v, nb_next, kt);
          break;
        default:
          block<1, 4>(t, scratch, m, l, krow, vrow, nb, pf_k, pf_v, nb_next, kt);
          break;
      }
    }
  }

  // scratch: per (query, head) pair t = i * nh + r (nh task heads per query) a padded query row
  // and an accumulator row, then m and l.
  void run(float* scratch) const {
    const int32_t rep = p.n_head / p.n_head_kv;
    const int32_t nh = (task.kv_end - task.kv_begin) * rep;
    const int32_t n_pairs = task.n_q * nh;
    const int32_t h_first = task.kv_begin * rep;  // query head of task head 0
    float* m = scratch + 2 * n_pairs * hd_pad();
    float* l = m + n_pairs;
    int32_t n_max = 0;
    for (int32_t i = 0; i < task.n_q; ++i) {
      n_max = std::max(n_max, task.n_visible[i]);
      for (int32_t r = 0; r < nh; ++r) {
        const int32_t t = i * nh + r;
        float* q = q_row(scratch, t);
        const float* src = task.q + i * task.q_stride + static_cast<int64_t>(h_first + r) * hd();
        std::copy(src, src + hd(), q);
        std::fill(q + hd(), q + hd_pad(), 0.0f);
        std::fill(acc_row(scratch, t), acc_row(scratch, t) + hd_pad(), 0.0f);
        m[t] = -std::numeric_limits<float>::infinity();
        l[t] = 0.0f;
      }
    }
    const Elem* krow[2][kKB];
    const Elem* vrow[2][kKB];
    const int32_t j_first = task.first_visible;
    const int max_pairs = nvec() >= 4 ? 3 : kMaxHeads;
    // Small heads (one or two vectors) spend a pass mostly in latency chains: the block's
    // softmax and one accumulator chain per vector and pair through all its keys. Where one kv
    // head has fewer than four pairs (a decode's query with two heads per kv head), a pass takes
    // two or four kv heads, so four pairs' chains run side by side (a 1-token decode of the
    // draft model's 12-wide heads: ~1.5x faster attention).
    const int32_t per_kv = task.n_q * rep;  // pairs of one kv head
    const int32_t kv_per_pass = nvec() > 2 ? 1 : per_kv == 1 ? 4 : per_kv == 2 ? 2 : 1;
    // 12-wide heads with four or more pairs per kv head score from transposed keys (one
    // transpose per kv head and block, shared by all its pairs): ~1.9x faster scores at 18 pairs.
    const bool use_kt = kHd == 12 && per_kv >= 4;
    alignas(32) float kt[kHd == 12 ? 12 : 1][kKB];
    for (int32_t g = task.kv_begin, n_kv = 1; g < task.kv_end; g += n_kv) {
      n_kv = std::min(kv_per_pass, task.kv_end - g);
      if (n_kv == 3) n_kv = 2;
      const int32_t r_first = (g - task.kv_begin) * rep;  // task head of the kv head's first
      rows(j_first, std::min(kKB, n_max - j_first), g, krow[0], vrow[0]);
      for (int32_t j0 = j_first, b = 0; j0 < n_max; j0 += kKB, b ^= 1) {
        const int32_t nb_next = std::clamp(n_max - j0 - kKB, 0, kKB);
        if (nb_next > 0) rows(j0 + kKB, nb_next, g, krow[b ^ 1], vrow[b ^ 1]);
        // The first call of the block prefetches the next block's rows.
        const Elem* const* pk = nb_next > 0 ? krow[b ^ 1] : nullptr;
        const Elem* const* pv = nb_next > 0 ? vrow[b ^ 1] : nullptr;
        const float(*kt_blk)[kKB] = nullptr;
        if constexpr (kHd == 12) {
          if (use_kt) {
            transpose_keys(krow[b], 0, std::min(kKB, n_max - j0), kt, pk, nb_next);
            kt_blk = kt;
            pk = nullptr;
          }
        }
        // Pairs in kv-head order: n_kv kv heads of n_pending / n_kv pairs each (n_kv > 1 holds
        // at most max_pairs pairs in all, so it is flushed whole).
        int32_t pending[kMaxHeads];
        int n_pending = 0;
        // n pairs go in ceil(n / max_pairs) passes of near-equal size (16 pairs as 3,3,3,3,2,2,
        // not 3,3,3,3,3,1: a pass of one pair is a latency-bound chain per key).
        int32_t left = 0, passes = 0, want = 0;
        const auto plan = [&](int32_t n) {
          left = n;
          passes = (n + max_pairs - 1) / max_pairs;
          want = passes > 0 ? (left + passes - 1) / passes : 0;
        };
        const auto flush = [&](int32_t nb) {
          pass(n_kv, n_pending, pending, scratch, m, l, krow[b], vrow[b], nb, pk, pv, nb_next,
               kt_blk);
          left -= n_pending;
          --passes;
          want = passes > 0 ? (left + passes - 1) / passes : 0;
          n_pending = 0;
          pk = pv = nullptr;
        };
        // The pairs of the queries that see the whole block, in balanced passes...
        int32_t n_whole = 0;
        for (int32_t i = 0; i < task.n_q; ++i) n_whole += task.n_visible[i] - j0 >= kKB;
        plan(n_whole * n_kv * rep);
        for (int32_t k = 0; k < n_kv; ++k) {
          for (int32_t i = 0; i < task.n_q; ++i) {
            if (task.n_visible[i] - j0 < kKB) continue;
            for (int32_t r = 0; r < rep; ++r) {
              pending[n_pending++] = i * nh + r_first + k * rep + r;
              if (n_pending == want) flush(kKB);
            }
          }
        }
        // ...then each query that sees part of it (its last block), with its own key count.
        for (int32_t i = 0; i < task.n_q; ++i) {
          const int32_t nb = task.n_visible[i] - j0;
          if (nb <= 0 || nb >= kKB) continue;
          plan(n_kv * rep);
          for (int32_t k = 0; k < n_kv; ++k) {
            for (int32_t r = 0; r < rep; ++r) {
              pending[n_pending++] = i * nh + r_first + k * rep + r;
              if (n_pending == want) flush(nb);
            }
          }
        }
      }
    }
    for (int32_t i = 0; i < task.n_q; ++i) {
      for (int32_t r = 0; r < nh; ++r) {
        const int32_t t = i * nh + r;
        const __m256 vl = _mm256_set1_ps(l[t]);
        const float* acc = acc_row(scratch, t);
        float* o = task.out + i * task.out_stride + static_cast<int64_t>(h_first + r) * hd();
        int64_t e = 0;
        for (; e + 8 <= hd(); e += 8)
          _mm256_storeu_ps(o + e, _mm256_div_ps(_mm256_loadu_ps(acc + e), vl));
        for (; e < hd(); ++e) o[e] = acc[e] / l[t];  // IEEE division: same as the vector lanes
      }
    }
  }
};

template <class Elem, int kHd>
void run_fixed(const AttentionTask& task, float* scratch) {
  const AttentionParams& p = *task.params;
  const Task<Elem, kHd % 8 != 0, kHd> t{p, task, 0, 0, 0, 0, 0, int64_t{p.page_size} * kHd};
  t.run(scratch);
}

template <class Elem>
void run_task(const AttentionTask& task, float* scratch, bool fixed) {
  const AttentionParams& p = *task.params;
  const int64_t hd = p.head_dim;
  const int64_t hd_pad = (hd + 7) / 8 * 8;
  if (fixed && hd == 12) return run_fixed<Elem, 12>(task, scratch);
  if (fixed && hd == 16) return run_fixed<Elem, 16>(task, scratch);
  if (hd % 8 == 0) {
    const Task<Elem, false, 0> t{p, task, hd, hd_pad, hd_pad / 8, hd / 8, 0, p.page_size * hd};
    t.run(scratch);
  } else {
    const Task<Elem, true, 0> t{p, task, hd, hd_pad, hd_pad / 8, hd / 8, hd % 8, p.page_size * hd};
    t.run(scratch);
  }
}

void run_any(const AttentionTask& task, float* scratch, bool fixed) {
  if (task.params->kv_type == GgmlType::F16) {
    run_task<uint16_t>(task, scratch, fixed);
  } else if (task.params->kv_type == GgmlType::BF16) {
    run_task<Bf16>(task, scratch, fixed);
  } else {
    run_task<float>(task, scratch, fixed);
  }
}

}  // namespace

void attention_task_avx2(const AttentionTask& task, float* scratch) {
  run_any(task, scratch, true);
}

void attention_task_avx2_runtime_hd(const AttentionTask& task, float* scratch) {
  run_any(task, scratch, false);
}

}  // namespace chimera::ops_internal
