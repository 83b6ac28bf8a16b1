// What every AVX2 matmul kernel file shares: small helpers and the tiling driver that walks the
// output in register tiles. Include only from *_avx2.cpp files (they are compiled with AVX2 flags).
//
// A kernel K provides kMR, kNR (GEMM tile) and kNRGemv (decode tile), each at most 4, and
// `template <int MR, int NR> static void tile(const KernelArgs&, int64_t i, int64_t j)`, which
// computes rows [i, i + MR) x columns [j, j + NR) with one accumulator per output element that sees
// the same instructions in the same order whatever MR and NR are. The driver only chooses which
// tiles run, so a row's result never depends on the batch, its position or the thread split.
//
// Super-block types (K-quants, IQ4_XS) instead describe their blocks to SuperBlockKernel below,
// which runs decode straight from the weights and prefill from packed, pre-decoded weights; both
// give each output element the same integer sums and the same float steps.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/act_quant.h"
#include "kernels/matmul.h"

namespace chimera::matmul_detail::avx2 {

// Rows of activations kept hot in cache while a thread walks its weight columns (prefill).
constexpr int64_t kRowBlock = 64;

#include "kernels/hsum_avx.inc"  // hsum, hsum_x4, hsum_x8

inline float fp16(uint16_t h) {
  return _cvtsh_ss(h);
}

template <class T>
inline const T* row_ptr(const uint8_t* base, size_t stride, int64_t index) {
  return reinterpret_cast<const T*>(base + static_cast<size_t>(index) * stride);
}

// Decode reads each weight row once, and a row is only a few KB: too short a stream for the
// hardware prefetcher to ramp up. A GEMV tile therefore prefetches the next tile's rows (they
// follow this tile's in memory) at the same relative position, one tile ahead. `next` is the
// start of the next tile; step k of the loop covers bytes [k * kBytes, (k + 1) * kBytes).
// kLocality as __builtin_prefetch's: 3 (prefetcht0, into L1) or 2 (prefetcht1, into L2: for a
// stream read further ahead, where L1's few miss buffers would cap the bytes in flight).
template <size_t kBytes, int kLocality = 3>
inline void prefetch_ahead(const uint8_t* next, int64_t k) {
  const uint8_t* p = next + static_cast<size_t>(k) * kBytes;
  for (size_t o = 0; o < kBytes; o += 64) __builtin_prefetch(p + o, 0, kLocality);
}

// prefetch_ahead into L1, or into L2 for a tile too large for L1 (kL1PrefetchMaxTileBytes).
template <size_t kBytes>
inline void prefetch_next_tile(const uint8_t* next, int64_t k, bool to_l2) {
  if (to_l2) {
    prefetch_ahead<kBytes, 2>(next, k);
  } else {
    prefetch_ahead<kBytes, 3>(next, k);
  }
}

// Batches of up to this many rows (speculative verification, small decode batches) still stream
// each weight row about once, like decode: their tiles prefetch too.
constexpr int64_t kPrefetchMaxRows = 16;

// The pointers to a tile's MR activation rows and NR weight rows.
template <class A, class W, int MR, int NR>
struct TileRows {
  const A* x[MR];
  const W* w[NR];
  TileRows(const KernelArgs& a, int64_t i, int64_t j) {
    for (int r = 0; r < MR; ++r) x[r] = row_ptr<A>(a.act, a.act_stride, i + r);
    for (int c = 0; c < NR; ++c) w[c] = row_ptr<W>(a.w, a.w_row_bytes, j + c);
  }
  // Where the tile after this one (the next NR weight rows) starts: what decode prefetches.
  const uint8_t* next(const KernelArgs& a) const {
    return reinterpret_cast<const uint8_t*>(w[0]) + NR * a.w_row_bytes;
  }
};

template <int MR, int NR>
inline void zero_tile(__m256 (&acc)[MR][NR]) {
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_setzero_ps();
}

// The one horizontal sum that ends every output element (hsum, four at a time).
template <int MR, int NR>
inline void store_tile(const KernelArgs& a, int64_t i, int64_t j, const __m256 (&acc)[MR][NR]) {
  constexpr int kN = MR * NR, kQuads = kN / 4 * 4;
  alignas(16) float sums[4];
  for (int e = 0; e < kQuads; e += 4) {
    _mm_store_ps(sums, hsum_x4(acc[e / NR][e % NR], acc[(e + 1) / NR][(e + 1) % NR],
                               acc[(e + 2) / NR][(e + 2) % NR], acc[(e + 3) / NR][(e + 3) % NR]));
    for (int q = 0; q < 4; ++q) a.y[(i + (e + q) / NR) * a.y_stride + j + (e + q) % NR] = sums[q];
  }
  for (int e = kQuads; e < kN; ++e)
    a.y[(i + e / NR) * a.y_stride + j + e % NR] = hsum(acc[e / NR][e % NR]);
}

using TileFn = void (*)(const KernelArgs&, int64_t, int64_t);

inline __m256i load256(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

template <class K, int MR, int NR>
void tile_entry(const KernelArgs& a, int64_t i, int64_t j) {
  if constexpr (MR <= K::kMR && NR <= std::max(K::kNR, K::kNRGemv)) {
    K::template tile<MR, NR>(a, i, j);
  }
}

template <class K>
struct TileTable {
  // fn[mr - 1][nr - 1]
  static constexpr TileFn fn[4][4] = {
      {tile_entry<K, 1, 1>, tile_entry<K, 1, 2>, tile_entry<K, 1, 3>, tile_entry<K, 1, 4>},
      {tile_entry<K, 2, 1>, tile_entry<K, 2, 2>, tile_entry<K, 2, 3>, tile_entry<K, 2, 4>},
      {tile_entry<K, 3, 1>, tile_entry<K, 3, 2>, tile_entry<K, 3, 3>, tile_entry<K, 3, 4>},
      {tile_entry<K, 4, 1>, tile_entry<K, 4, 2>, tile_entry<K, 4, 3>, tile_entry<K, 4, 4>},
  };
};

template <class K>
void run_kernel(const KernelArgs& a, int64_t j0, int64_t j1) {
  static_assert(K::kMR <= 4 && K::kNR <= 4 && K::kNRGemv <= 4);
  const auto& fn = TileTable<K>::fn;
  if (a.m == 1) {  // decode: one activation row against many weight rows
    for (int64_t j = j0; j < j1; j += K::kNRGemv) {
      const int nr = static_cast<int>(std::min<int64_t>(K::kNRGemv, j1 - j));
      fn[0][nr - 1](a, 0, j);
    }
    return;
  }
  for (int64_t ib = 0; ib < a.m; ib += kRowBlock) {
    const int64_t ie = std::min(a.m, ib + kRowBlock);
    for (int64_t j = j0; j < j1; j += K::kNR) {
      const int nr = static_cast<int>(std::min<int64_t>(K::kNR, j1 - j));
      for (int64_t i = ib; i < ie; i += K::kMR) {
        const int mr = static_cast<int>(std::min<int64_t>(K::kMR, ie - i));
        fn[mr - 1][nr - 1](a, i, j);
      }
    }
  }
}

// ---------------------------------------------------------------- packed prefill driver
// Prefill over packed weights. P decodes kNR weight columns, up to kPackBlocks units of K at a
// time (pack_units(a) in all), into an L1-sized buffer once, and runs every kMR-row tile of a
// kRowBlock-row block over it (packed_tile); the tiles' float accumulators live in `acc` between
// K-blocks (stored and reloaded exactly) and end in the same hsum as the GEMV path. P provides
// Packed, kMR == 4, kNR == 2, kPackBlocks, pack_units, pack_column and packed_tile<MR, NR>.
// A packed tile's activation rows and local copies of its accumulators (so that nothing the loop
// reads can alias them); store() writes the accumulators back.
template <class A, int MR, int NR, int kNR>
struct PackedTileState {
  const A* x[MR];
  __m256 ac[MR][NR];
  __m256 (*acc)[kNR];
  PackedTileState(const KernelArgs& a, int64_t i, __m256 (*acc_rows)[kNR]) : acc(acc_rows) {
    for (int r = 0; r < MR; ++r) x[r] = row_ptr<A>(a.act, a.act_stride, i + r);
    for (int r = 0; r < MR; ++r)
      for (int c = 0; c < NR; ++c) ac[r][c] = acc[r][c];
  }
  void store() {
    for (int r = 0; r < MR; ++r)
      for (int c = 0; c < NR; ++c) acc[r][c] = ac[r][c];
  }
};

template <class P>
void run_packed(const KernelArgs& a, int64_t j0, int64_t j1) {
  using Packed = typename P::Packed;
  constexpr int64_t kPB = P::kPackBlocks;
  using Fn = void (*)(const KernelArgs&, const Packed(*)[kPB], int64_t, int64_t, int64_t,
                      __m256(*)[P::kNR]);
  static_assert(P::kMR == 4 && P::kNR == 2);
  static constexpr Fn fn[4][2] = {
      {P::template packed_tile<1, 1>, P::template packed_tile<1, 2>},
      {P::template packed_tile<2, 1>, P::template packed_tile<2, 2>},
      {P::template packed_tile<3, 1>, P::template packed_tile<3, 2>},
      {P::template packed_tile<4, 1>, P::template packed_tile<4, 2>},
  };
  Packed pk[P::kNR][kPB];
  __m256 acc[kRowBlock][P::kNR];
  // The row block's results for kOutCols columns, written to y a line per row at a time: y's
  // rows are often 4 KB apart (n_out 1024), so a group's few floats per row all fall in one L1
  // set and were evicted before the next group wrote beside them.
  constexpr int64_t kOutCols = 16;
  static_assert(kOutCols % P::kNR == 0);
  float ybuf[kRowBlock][kOutCols];
  const int64_t nu = P::pack_units(a);
  for (int64_t ib = 0; ib < a.m; ib += kRowBlock) {
    const int64_t ie = std::min(a.m, ib + kRowBlock);
    for (int64_t j = j0; j < j1; j += P::kNR) {
      const int nr = static_cast<int>(std::min<int64_t>(P::kNR, j1 - j));
      const int64_t jb = j0 + (j - j0) / kOutCols * kOutCols;  // this group's ybuf columns
      for (int64_t r = 0; r < ie - ib; ++r)
        for (int c = 0; c < P::kNR; ++c) acc[r][c] = _mm256_setzero_ps();
      for (int64_t u0 = 0; u0 < nu; u0 += kPB) {
        const int64_t u1 = std::min(nu, u0 + kPB);
        // The next group's bytes for these units, into L2 while this group computes: a profile
        // showed the packing waiting on weight lines (the rows are too short a stream for the
        // hardware prefetcher).
        for (int64_t c = j + P::kNR; c < std::min(j1, j + 2 * P::kNR); ++c) {
          const uint8_t* row = a.w + static_cast<size_t>(c) * a.w_row_bytes;
          const size_t b1 = static_cast<size_t>(u1) * a.w_row_bytes / nu;
          for (size_t o = static_cast<size_t>(u0) * a.w_row_bytes / nu; o < b1; o += 64)
            _mm_prefetch(reinterpret_cast<const char*>(row + o), _MM_HINT_T1);
        }
        for (int c = 0; c < nr; ++c) P::pack_column(a, j + c, u0, u1, pk[c]);
        for (int64_t i = ib; i < ie; i += P::kMR) {
          const int mr = static_cast<int>(std::min<int64_t>(P::kMR, ie - i));
          fn[mr - 1][nr - 1](a, pk, i, u0, u1, acc + (i - ib));
        }
      }
      for (int64_t r = 0; r < ie - ib; ++r) {
        for (int c = 0; c < nr; ++c) {
          // One 256-bit load of what the tile just stored: hsum's two 128-bit halves read
          // straight from memory missed the store forwarding (a profile's hot spot).
          __m256 v = acc[r][c];
          asm("" : "+x"(v));
          ybuf[r][j - jb + c] = hsum(v);
        }
      }
      if (j + nr == j1 || j + nr - jb == kOutCols) {  // ybuf full (or the last group): to y
        for (int64_t r = 0; r < ie - ib; ++r)
          std::memcpy(a.y + (ib + r) * a.y_stride + jb, ybuf[r], sizeof(float) * (j + nr - jb));
      }
    }
  }
}

// ---------------------------------------------------------------- 32-blocks, Q8 activations
// Q8_0, Q4_1, Q5_0, Q5_1 and IQ4_NL. Traits T give Block, values(blk) (the 32 values in element
// order) and three flags. kMin: the block adds m * sum(a) (Q4_1, Q5_1). kOffset16: the stored
// levels are q + 16 (Q5_0), so 16 * sum(a) is subtracted in integers. kSigned: values are signed
// (Q8_0, IQ4_NL), multiplied with the sign trick: |w| (unsigned) x (a with w's sign) = w a, with
// no saturation at 127.
template <class T>
struct Block32Kernel {
  static constexpr int kMR = 4, kNR = 2, kNRGemv = 4;
  using Block = typename T::Block;

  struct Unpacked {
    __m256i v;     // the values (unsigned levels, or signed values for kSigned)
    __m256i vabs;  // kSigned: their magnitudes
    __m256 d, m;   // scale and (kMin) min
  };
  static Unpacked unpack(const Block& blk) {
    Unpacked u;
    u.v = T::values(blk);
    if constexpr (T::kSigned) u.vabs = _mm256_sign_epi8(u.v, u.v);
    u.d = _mm256_set1_ps(fp16(blk.d));
    if constexpr (T::kMin) u.m = _mm256_set1_ps(fp16(blk.m));
    return u;
  }

  // Block b of every element of a tile, from the unpacked columns u[c].
  template <int MR, int NR>
  static void block_step(const Unpacked* const (&u)[NR], const ActBlockQ8* const (&x)[MR],
                         int64_t b, __m256 (&acc)[MR][NR]) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    for (int r = 0; r < MR; ++r) {
      const ActBlockQ8& ab = x[r][b];
      const __m256i av = load256(ab.qs);
      const __m256 da = _mm256_set1_ps(ab.d);
      // sum8 lanes are 8 x the sums of the same groups of 4 values as the madd lanes below.
      __m256i sum8 = _mm256_setzero_si256();
      if constexpr (T::kMin || T::kOffset16) sum8 = load256(ab.sum8);
      for (int c = 0; c < NR; ++c) {
        __m256i p;
        if constexpr (T::kSigned) {
          p = _mm256_madd_epi16(_mm256_maddubs_epi16(u[c]->vabs, _mm256_sign_epi8(av, u[c]->v)),
                                ones16);
        } else {
          p = _mm256_madd_epi16(_mm256_maddubs_epi16(u[c]->v, av), ones16);
        }
        if constexpr (T::kOffset16) p = _mm256_sub_epi32(p, _mm256_slli_epi32(sum8, 1));
        acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(u[c]->d, da), _mm256_cvtepi32_ps(p), acc[r][c]);
        if constexpr (T::kMin) {
          acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(u[c]->m, da),
                                      _mm256_cvtepi32_ps(_mm256_srai_epi32(sum8, 3)), acc[r][c]);
        }
      }
    }
  }

  template <int MR, int NR>
  static void tile(const KernelArgs& a, int64_t i, int64_t j) {
    const TileRows<ActBlockQ8, Block, MR, NR> t(a, i, j);
    __m256 acc[MR][NR];
    zero_tile(acc);
    const int64_t nb = a.n_in / 32;
    const uint8_t* next = t.next(a);
    const bool to_l2 = NR * a.w_row_bytes > kL1PrefetchMaxTileBytes;
    for (int64_t b = 0; b < nb; ++b) {
      if (MR == 1 || a.m <= kPrefetchMaxRows)
        prefetch_next_tile<NR * sizeof(Block)>(next, b, to_l2);
      Unpacked u[NR];
      const Unpacked* up[NR];
      for (int c = 0; c < NR; ++c) {
        u[c] = unpack(t.w[c][b]);
        up[c] = &u[c];
      }
      block_step<MR, NR>(up, t.x, b, acc);
    }
    store_tile(a, i, j, acc);
  }

  // Prefill (run_packed): each weight block unpacked once per column tile and row block.
  using Packed = Unpacked;
  static constexpr int64_t kPackBlocks = 64;  // 2 columns x 64 x 128 B = 16 KB
  static int64_t pack_units(const KernelArgs& a) { return a.n_in / 32; }
  static void pack_column(const KernelArgs& a, int64_t j, int64_t b0, int64_t b1, Packed* out) {
    const Block* w = row_ptr<Block>(a.w, a.w_row_bytes, j);
    for (int64_t b = b0; b < b1; ++b) out[b - b0] = unpack(w[b]);
  }
  template <int MR, int NR>
  static void packed_tile(const KernelArgs& a, const Packed (*pk)[kPackBlocks], int64_t i,
                          int64_t b0, int64_t b1, __m256 (*acc)[kNR]) {
    PackedTileState<ActBlockQ8, MR, NR, kNR> t(a, i, acc);
    for (int64_t b = b0; b < b1; ++b) {
      const Unpacked* up[NR];
      for (int c = 0; c < NR; ++c) up[c] = &pk[c][b - b0];
      block_step<MR, NR>(up, t.x, b, t.ac);
    }
    t.store();
  }

  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    if (a.m < kMR) return run_kernel<Block32Kernel>(a, j0, j1);  // decode and tiny batches
    run_packed<Block32Kernel>(a, j0, j1);
  }
};

// ---------------------------------------------------------------- super-block kernels
// A super-block type (256 values against one BlockQ8_K activation block) describes itself as
// eight steps of 32 values. Ops provides:
//   WBlock; kSigned (values are signed: multiplied with the sign trick, else unsigned);
//   Col prep(const WBlock&)                    per-block state (unpacked scales);
//   __m256i values(const WBlock&, int s)       the 32 values of step s;
//   __m256i scale(const Col&, int s)           16 int16 multipliers for step s's 16 pair sums;
//   Tail tail(const WBlock&, const Col&)       what the float step needs;
//   void finish(const Tail&, const BlockQ8_K&, __m256i sumi, __m256& acc)   the float step.
// Step s meets activations qs[32 s, 32 s + 32). A block's integer sum sumi (8 int32 lanes, each
// lane the same values whichever path) is exact, so the order of the steps does not matter; the
// float steps are finish()'s, once per block in block order.
template <bool kSigned>
inline __m256i step_dot(__m256i v, __m256i vabs, __m256i act, __m256i scale) {
  if constexpr (kSigned) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(vabs, _mm256_sign_epi8(act, v)), scale);
  } else {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(v, act), scale);
  }
}

// An empty asm that claims to change v: the compiler must have v in a register here, so it cannot
// re-associate a chain of integer adds into a tree of 64 live products (which it otherwise does,
// spilling them all to the stack).
inline void keep_in_register(__m256i& v) {
  asm("" : "+x"(v));
}

template <class Ops>
struct SuperBlockKernel {
  using WBlock = typename Ops::WBlock;
  using Tail = typename Ops::Tail;
  static constexpr bool kSigned = Ops::kSigned;
  static constexpr int kNRGemv = 4;
  // Prefill register tile over packed weights, and super-blocks packed per step (about 16 KB).
  static constexpr int kMR = 4, kNR = 2;
  static constexpr int64_t kPackBlocks = kSigned ? 10 : 14;

  // One weight block decoded for prefill: what the steps and the float step read.
  struct alignas(32) Packed {
    __m256i v[8];
    __m256i scale[8];
    __m256i vabs[kSigned ? 8 : 1];
    Tail tail;
  };

  static void pack(const WBlock& blk, Packed* p) {
    const auto col = Ops::prep(blk);
    for (int s = 0; s < 8; ++s) {
      p->v[s] = Ops::values(blk, s);
      if constexpr (kSigned) p->vabs[s] = _mm256_sign_epi8(p->v[s], p->v[s]);
      p->scale[s] = Ops::scale(col, s);
    }
    p->tail = Ops::tail(blk, col);
  }

  // Decode: one activation row, NR weight rows, one column's super-block at a time (everything
  // stays in registers).
  template <int NR>
  static void gemv_tile(const KernelArgs& a, int64_t i, int64_t j) {
    const TileRows<BlockQ8_K, WBlock, 1, NR> t(a, i, j);
    __m256 acc[1][NR];
    zero_tile(acc);
    const int64_t nb = a.n_in / kQK_K;
    const uint8_t* next = t.next(a);
    const bool to_l2 = NR * a.w_row_bytes > kL1PrefetchMaxTileBytes;
    for (int64_t b = 0; b < nb; ++b) {
      prefetch_next_tile<NR * sizeof(WBlock)>(next, b, to_l2);
      const BlockQ8_K& ab = t.x[0][b];
      for (int c = 0; c < NR; ++c) {
        const WBlock& blk = t.w[c][b];
        const auto col = Ops::prep(blk);
        __m256i sumi = _mm256_setzero_si256();
        for (int s = 0; s < 8; ++s) {
          const __m256i v = Ops::values(blk, s);
          __m256i vabs = v;
          if constexpr (kSigned) vabs = _mm256_sign_epi8(v, v);
          sumi = _mm256_add_epi32(
              sumi, step_dot<kSigned>(v, vabs, load256(ab.qs + 32 * s), Ops::scale(col, s)));
        }
        Ops::finish(Ops::tail(blk, col), ab, sumi, acc[0][c]);
      }
    }
    store_tile(a, i, j, acc);
  }

  // Prefill: rows [i, i + MR) against NR packed columns over super-blocks [b0, b1); the float
  // accumulators live in `acc` (row r of the tile at acc[r]) between K-blocks.
  template <int MR, int NR>
  static void packed_tile(const KernelArgs& a, const Packed (*pk)[kPackBlocks], int64_t i,
                          int64_t b0, int64_t b1, __m256 (*acc)[kNR]) {
    const BlockQ8_K* x[MR];
    for (int r = 0; r < MR; ++r) x[r] = row_ptr<BlockQ8_K>(a.act, a.act_stride, i + r);
    for (int64_t b = b0; b < b1; ++b) {
      __m256i sumi[MR][NR];
      for (int r = 0; r < MR; ++r)
        for (int c = 0; c < NR; ++c) sumi[r][c] = _mm256_setzero_si256();
      for (int s = 0; s < 8; ++s) {
        __m256i v[NR], vabs[NR];
        for (int c = 0; c < NR; ++c) {
          v[c] = pk[c][b - b0].v[s];
          vabs[c] = kSigned ? pk[c][b - b0].vabs[s] : v[c];
        }
        for (int r = 0; r < MR; ++r) {
          const __m256i av = load256(x[r][b].qs + 32 * s);
          for (int c = 0; c < NR; ++c) {
            sumi[r][c] = _mm256_add_epi32(
                sumi[r][c], step_dot<kSigned>(v[c], vabs[c], av, pk[c][b - b0].scale[s]));
            keep_in_register(sumi[r][c]);
          }
        }
      }
      for (int r = 0; r < MR; ++r)
        for (int c = 0; c < NR; ++c)
          Ops::finish(pk[c][b - b0].tail, x[r][b], sumi[r][c], acc[r][c]);
    }
  }

  // What run_packed needs.
  static int64_t pack_units(const KernelArgs& a) { return a.n_in / kQK_K; }
  static void pack_column(const KernelArgs& a, int64_t j, int64_t b0, int64_t b1, Packed* out) {
    const WBlock* w = row_ptr<WBlock>(a.w, a.w_row_bytes, j);
    for (int64_t b = b0; b < b1; ++b) pack(w[b], &out[b - b0]);
  }

  static void run(const KernelArgs& a, int64_t j0, int64_t j1) {
    using GemvFn = void (*)(const KernelArgs&, int64_t, int64_t);
    static constexpr GemvFn gemv[4] = {gemv_tile<1>, gemv_tile<2>, gemv_tile<3>, gemv_tile<4>};
    if (a.m < kMR) {  // decode and tiny batches: each row straight from the weights
      for (int64_t i = 0; i < a.m; ++i) {
        for (int64_t j = j0; j < j1; j += kNRGemv) {
          gemv[std::min<int64_t>(kNRGemv, j1 - j) - 1](a, i, j);
        }
      }
      return;
    }
    run_packed<SuperBlockKernel>(a, j0, j1);
  }
};

}  // namespace chimera::matmul_detail::avx2
