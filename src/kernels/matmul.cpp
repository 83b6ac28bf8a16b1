// Matmul front end (validation, activation preparation, threading over output columns) and the
// scalar reference kernels. The scalar kernels compute each output element with a plain
// sequential loop: slow, simple, and trivially independent of the batch.
#include "kernels/matmul.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/act_quant.h"

namespace chimera {
namespace matmul_detail {

ActFormat act_format(GgmlType type) {
  switch (type) {
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::IQ4_NL:
      return ActFormat::kQ8;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
    case GgmlType::IQ4_XS:
      return ActFormat::kQ8K;
    default:
      return ActFormat::kF32;
  }
}

size_t act_row_bytes(GgmlType type, int64_t n_in) {
  switch (act_format(type)) {
    case ActFormat::kQ8:
      return static_cast<size_t>(n_in / 32) * sizeof(ActBlockQ8);
    case ActFormat::kQ8K:
      return static_cast<size_t>(n_in / kQK_K) * sizeof(BlockQ8_K);
    case ActFormat::kF32:
      return 0;
  }
  return 0;
}

bool act_paired(GgmlType type, Isa isa) {
  // The AVX-512 path runs the AVX2 kernels for these types (its Q4_0 kernel reads pairs too).
  if (isa != Isa::kAvx2 && isa != Isa::kAvx512) return false;
  switch (type) {
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::IQ4_NL:
      return true;
    default:
      return false;
  }
}

size_t prepared_row_bytes(GgmlType type, Isa isa, int64_t n_in) {
  if (act_paired(type, isa)) return static_cast<size_t>((n_in / 32 + 1) / 2) * sizeof(ActPairQ8);
  return act_row_bytes(type, n_in);
}

namespace {

// Unpacks the 6-bit scale and min of sub-block s of a Q4_K/Q5_K super-block (spec 1.5).
inline void k_scale_min(const uint8_t* scales, int s, int* sc, int* mn) {
  if (s < 4) {
    *sc = scales[s] & 63;
    *mn = scales[s + 4] & 63;
  } else {
    *sc = (scales[s + 4] & 0x0F) | ((scales[s - 4] >> 6) << 4);
    *mn = (scales[s + 4] >> 4) | ((scales[s] >> 6) << 4);
  }
}

float dot_f32(const uint8_t* w, const uint8_t* a, int64_t n) {
  const float* wf = reinterpret_cast<const float*>(w);
  const float* x = reinterpret_cast<const float*>(a);
  float acc = 0;
  for (int64_t k = 0; k < n; ++k) acc += x[k] * wf[k];
  return acc;
}

float dot_f16(const uint8_t* w, const uint8_t* a, int64_t n) {
  const float* x = reinterpret_cast<const float*>(a);
  float acc = 0;
  for (int64_t k = 0; k < n; ++k) {
    uint16_t h;
    std::memcpy(&h, w + 2 * k, 2);
    acc += x[k] * fp16_to_f32(h);
  }
  return acc;
}

float dot_bf16(const uint8_t* w, const uint8_t* a, int64_t n) {
  const float* x = reinterpret_cast<const float*>(a);
  float acc = 0;
  for (int64_t k = 0; k < n; ++k) {
    uint16_t h;
    std::memcpy(&h, w + 2 * k, 2);
    acc += x[k] * bf16_to_f32(h);
  }
  return acc;
}

float dot_q8_0(const uint8_t* w, const uint8_t* a, int64_t n) {
  const BlockQ8_0* wb = reinterpret_cast<const BlockQ8_0*>(w);
  const ActBlockQ8* ab = reinterpret_cast<const ActBlockQ8*>(a);
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < 32; ++j) sumi += wb[b].qs[j] * ab[b].qs[j];
    acc += (fp16_to_f32(wb[b].d) * ab[b].d) * static_cast<float>(sumi);
  }
  return acc;
}

float dot_q4_0(const uint8_t* w, const uint8_t* a, int64_t n) {
  const BlockQ4_0* wb = reinterpret_cast<const BlockQ4_0*>(w);
  const ActBlockQ8* ab = reinterpret_cast<const ActBlockQ8*>(a);
  float acc = 0;
  for (int64_t b = 0; b < n / 32; ++b) {
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += ((wb[b].qs[j] & 0x0F) - 8) * ab[b].qs[j];
      sumi += ((wb[b].qs[j] >> 4) - 8) * ab[b].qs[j + 16];
    }
    acc += (fp16_to_f32(wb[b].d) * ab[b].d) * static_cast<float>(sumi);
  }
  return acc;
}

// Q4_K and Q5_K share everything but the fifth bit.
template <bool kFiveBit>
float dot_q45_k(const uint8_t* w, const uint8_t* a, int64_t n) {
  using Block = std::conditional_t<kFiveBit, BlockQ5_K, BlockQ4_K>;
  const Block* wb = reinterpret_cast<const Block*>(w);
  const BlockQ8_K* ab = reinterpret_cast<const BlockQ8_K*>(a);
  float acc = 0;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const Block& blk = wb[b];
    const BlockQ8_K& act = ab[b];
    int32_t sumi = 0, summ = 0;
    for (int c = 0; c < 4; ++c) {
      int sc_lo, m_lo, sc_hi, m_hi;
      k_scale_min(blk.scales, 2 * c, &sc_lo, &m_lo);
      k_scale_min(blk.scales, 2 * c + 1, &sc_hi, &m_hi);
      int32_t s_lo = 0, s_hi = 0;
      for (int l = 0; l < 32; ++l) {
        int q_lo = blk.qs[32 * c + l] & 0x0F;
        int q_hi = blk.qs[32 * c + l] >> 4;
        if constexpr (kFiveBit) {
          q_lo += ((blk.qh[l] >> (2 * c)) & 1) << 4;
          q_hi += ((blk.qh[l] >> (2 * c + 1)) & 1) << 4;
        }
        s_lo += q_lo * act.qs[64 * c + l];
        s_hi += q_hi * act.qs[64 * c + 32 + l];
      }
      sumi += sc_lo * s_lo + sc_hi * s_hi;
      summ += m_lo * (act.bsums[4 * c] + act.bsums[4 * c + 1]) +
              m_hi * (act.bsums[4 * c + 2] + act.bsums[4 * c + 3]);
    }
    acc += (fp16_to_f32(blk.d) * act.d) * static_cast<float>(sumi);
    acc -= (fp16_to_f32(blk.dmin) * act.d) * static_cast<float>(summ);
  }
  return acc;
}

float dot_q6_k(const uint8_t* w, const uint8_t* a, int64_t n) {
  const BlockQ6_K* wb = reinterpret_cast<const BlockQ6_K*>(w);
  const BlockQ8_K* ab = reinterpret_cast<const BlockQ8_K*>(a);
  float acc = 0;
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const BlockQ6_K& blk = wb[b];
    const BlockQ8_K& act = ab[b];
    int32_t sumi = 0;
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = blk.ql + 64 * half;
      const uint8_t* qh = blk.qh + 32 * half;
      const int8_t* sc = blk.scales + 8 * half;
      const int8_t* q8 = act.qs + 128 * half;
      int32_t sub[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // sums per 16-value sub-block of this half
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        sub[is + 0] += q1 * q8[l];
        sub[is + 2] += q2 * q8[l + 32];
        sub[is + 4] += q3 * q8[l + 64];
        sub[is + 6] += q4 * q8[l + 96];
      }
      for (int s = 0; s < 8; ++s) sumi += sc[s] * sub[s];
    }
    acc += (fp16_to_f32(blk.d) * act.d) * static_cast<float>(sumi);
  }
  return acc;
}

}  // namespace

KernelFn scalar_kernel(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
      return scalar_tile<dot_f32>;
    case GgmlType::F16:
      return scalar_tile<dot_f16>;
    case GgmlType::BF16:
      return scalar_tile<dot_bf16>;
    case GgmlType::Q8_0:
      return scalar_tile<dot_q8_0>;
    case GgmlType::Q4_0:
      return scalar_tile<dot_q4_0>;
    case GgmlType::Q4_K:
      return scalar_tile<dot_q45_k<false>>;
    case GgmlType::Q5_K:
      return scalar_tile<dot_q45_k<true>>;
    case GgmlType::Q6_K:
      return scalar_tile<dot_q6_k>;
    default:
      return scalar_kernel_q4_1_q5_iq4(type);
  }
}

}  // namespace matmul_detail

using matmul_detail::ActFormat;

bool matmul_supports(GgmlType type) {
  return matmul_detail::scalar_kernel(type) != nullptr;
}

Status validate_weights(const WeightMatrix& w) {
  if (!matmul_supports(w.type)) {
    return Error(ErrorCode::kUnsupported, "matmul: weight type ", type_name(w.type),
                 " is not supported (supported: ", supported_type_names(), ")");
  }
  if (w.n_in <= 0 || w.n_out <= 0 || w.n_expert <= 0) {
    return Error(ErrorCode::kInvalidArgument, "matmul: weight shape {", w.n_in, ", ", w.n_out, ", ",
                 w.n_expert, "} has a non-positive dimension");
  }
  const uint32_t block = type_traits(w.type).block_size;
  if (w.n_in % block != 0) {
    return Error(ErrorCode::kInvalidArgument, "matmul: n_in ", w.n_in, " of a ", type_name(w.type),
                 " weight is not a multiple of its block size ", block);
  }
  if (w.data == nullptr) {
    return Error(ErrorCode::kInvalidArgument, "matmul: ", type_name(w.type), " weight {", w.n_in,
                 ", ", w.n_out, "} has no data");
  }
  return Status::Ok();
}

MatmulWorkspace::MatmulWorkspace(Isa isa) : isa_(isa), zmm_tiles_(prefer_zmm_tiles()) {}

MatmulWorkspace::~MatmulWorkspace() {
  std::free(buf_);
}

void* MatmulWorkspace::reserve(size_t bytes) {
  if (bytes <= capacity_ && buf_ != nullptr) return buf_;
  const size_t rounded = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, rounded);
  CHIMERA_CHECK(p != nullptr, "matmul workspace: out of memory for ", rounded, " bytes");
  std::free(buf_);
  buf_ = p;
  capacity_ = rounded;
  return buf_;
}

namespace {

// Output columns per thread chunk: a multiple of every kernel's register tile width, and large
// enough that a chunk's weight rows are worth a scheduling step. Columns are independent of the
// thread that computes them, so they are dealt out balanced (the last quarter to whichever thread
// is free): in decode the thread that starts an op second used to hold the other at the barrier
// for about a tenth of the step.
constexpr int64_t kColumnGrain = kMatmulColumnGrain;

// Output columns a thread computes between two read-ahead slices: a multiple of kColumnGrain
// (so the kernels see the same column groups) and of every tile width, and long enough for the
// kernels' own weight prefetch, which stops at the end of a call's columns.
constexpr int64_t kReadAheadColumns = 256;

// Prefetches bytes [b0, b1) of the concatenation of the read-ahead ranges into L2.
void prefetch_ahead(const ReadAhead& ra, uint64_t b0, uint64_t b1) {
  uint64_t base = 0;
  for (int64_t i = 0; i < ra.n_ranges && base < b1; ++i) {
    const ReadAhead::Range& r = ra.ranges[i];
    const uint64_t lo = std::max(b0, base), hi = std::min(b1, base + r.bytes);
    if (r.data != nullptr && lo < hi) {
      const char* p = static_cast<const char*>(r.data) - base;
      for (uint64_t o = lo / 64 * 64; o < hi; o += 64) __builtin_prefetch(p + o, 0, 2);
    }
    base += r.bytes;
  }
}

matmul_detail::KernelFn kernel_for(GgmlType type, Isa isa, bool zmm_tiles, Status& st) {
  switch (isa) {
    case Isa::kScalar:
      return matmul_detail::scalar_kernel(type);
    case Isa::kAvx2:
      if (!isa_supported(Isa::kAvx2)) {
        st = Error(ErrorCode::kUnsupported, "matmul: the AVX2 path needs AVX2+FMA+F16C, which ",
                   "this CPU lacks (", cpu_features().ToString(), ")");
        return nullptr;
      }
      return matmul_detail::avx2_kernel(type);
    case Isa::kAvx512:
      if (!isa_supported(Isa::kAvx512)) {
        st = Error(ErrorCode::kUnsupported,
                   "matmul: the AVX-512 path needs AVX-512 F/BW/VL/DQ+VNNI, FMA and F16C, which ",
                   "this CPU lacks (", cpu_features().ToString(), ")");
        return nullptr;
      }
      return matmul_detail::avx512_kernel(type, zmm_tiles);
  }
  return nullptr;
}

// Quantizes rows [i0, i1) of x into `act` (row bytes apart) in the format `type` wants.
void prepare_rows(GgmlType type, Isa isa, const float* x, int64_t x_stride, int64_t n_in,
                  uint8_t* act, size_t row, int64_t i0, int64_t i1) {
  const ActFormat fmt = matmul_detail::act_format(type);
  const bool simd = isa != Isa::kScalar;
  const bool paired = matmul_detail::act_paired(type, isa);
  for (int64_t i = i0; i < i1; ++i) {
    void* dst = act + static_cast<size_t>(i) * row;
    // Both quantizers give identical bits; AVX2 only saves time.
    const float* xr = x + i * x_stride;
    if (fmt == ActFormat::kQ8 && paired) {
      // Two blocks at a time through a small buffer, so no second row-sized scratch.
      ActPairQ8* pairs = static_cast<ActPairQ8*>(dst);
      ActBlockQ8 two[2];
      const int64_t nb = n_in / 32;
      for (int64_t b = 0; b < nb; b += 2) {
        const int64_t cnt = std::min<int64_t>(2, nb - b);
        simd ? quantize_act_q8_avx2(xr + 32 * b, 32 * cnt, two)
             : quantize_act_q8(xr + 32 * b, 32 * cnt, two);
        pair_act_q8(two, cnt, pairs + b / 2);
      }
    } else if (fmt == ActFormat::kQ8) {
      ActBlockQ8* q = static_cast<ActBlockQ8*>(dst);
      simd ? quantize_act_q8_avx2(xr, n_in, q) : quantize_act_q8(xr, n_in, q);
    } else {
      BlockQ8_K* q = static_cast<BlockQ8_K*>(dst);
      simd ? quantize_act_q8k_avx2(xr, n_in, q) : quantize_act_q8k(xr, n_in, q);
    }
  }
}

// Activations are prepared the same way for two types when format, pairing and row size match.
bool same_preparation(GgmlType a, GgmlType b, Isa isa, int64_t n_in) {
  using matmul_detail::act_format;
  using matmul_detail::act_paired;
  using matmul_detail::prepared_row_bytes;
  return act_format(a) == act_format(b) && act_paired(a, isa) == act_paired(b, isa) &&
         prepared_row_bytes(a, isa, n_in) == prepared_row_bytes(b, isa, n_in);
}

// Every part's columns in one parallel region. Each part's columns sit in a virtual column space
// at an offset that is a multiple of kColumnGrain, so every chunk a kernel sees starts at a
// multiple of kColumnGrain of its own matrix and ends at one or at its n_out, as in a call of its
// own: the kernels compute the same columns the same way (each output element's arithmetic
// depends on neither the chunk nor the thread).
Status run_matmul(ThreadContext& ctx, const MatmulPart* parts, int n_parts, const float* x,
                  int64_t m, MatmulWorkspace& ws, int64_t x_stride, const ReadAhead* ahead,
                  const MatmulFusion& fusion) {
  const FnRef<void(int, int64_t, int64_t)>& after = fusion.after;
  constexpr int kMaxParts = kMaxMatmulParts;
  if (m < 0) return Error(ErrorCode::kInvalidArgument, "matmul: negative row count ", m);
  const int64_t n_in = parts[0].w.n_in;
  if (x_stride == 0) x_stride = n_in;
  matmul_detail::KernelArgs args[kMaxParts];
  matmul_detail::KernelFn kernels[kMaxParts];
  int64_t offset[kMaxParts + 1];  // virtual column offsets
  int prep_of[kMaxParts];         // the part whose prepared activations a part uses
  offset[0] = 0;
  for (int p = 0; p < n_parts; ++p) {
    const MatmulPart& part = parts[p];
    const WeightMatrix& w = part.w;
    if (w.n_in != n_in)
      return Error(ErrorCode::kInvalidArgument, "matmul: part ", p, " has n_in ", w.n_in,
                   ", part 0 ", n_in);
    const int64_t y_stride = part.y_stride == 0 ? w.n_out : part.y_stride;
    if (x_stride < w.n_in || y_stride < w.n_out) {
      return Error(ErrorCode::kInvalidArgument, "matmul: row strides (x ", x_stride, ", y ",
                   y_stride, ") are shorter than the rows (n_in ", w.n_in, ", n_out ", w.n_out,
                   ")");
    }
    if (m > 0 && (x == nullptr || part.y == nullptr)) {
      return Error(ErrorCode::kInvalidArgument, "matmul: null ", x == nullptr ? "input" : "output",
                   " rows");
    }
    if (m > 0) {
      const float* x_end = x + (m - 1) * x_stride + w.n_in;
      const float* y_end = part.y + (m - 1) * y_stride + w.n_out;
      if (x < y_end && part.y < x_end) {
        return Error(ErrorCode::kInvalidArgument, "matmul: input and output rows overlap");
      }
    }
    args[p] = matmul_detail::KernelArgs{};
    args[p].w = static_cast<const uint8_t*>(w.data);
    args[p].w_row_bytes = w.row_bytes();
    args[p].m = m;
    args[p].n_in = w.n_in;
    args[p].y = part.y;
    args[p].y_stride = y_stride;
    offset[p + 1] = offset[p] + (w.n_out + kColumnGrain - 1) / kColumnGrain * kColumnGrain;
    prep_of[p] = p;
    for (int q = 0; q < p; ++q)
      if (prep_of[q] == q && same_preparation(parts[q].w.type, w.type, ws.isa(), n_in)) {
        prep_of[p] = q;
        break;
      }
  }
  if (fusion.lockstep) {
    for (int p = 1; p < n_parts; ++p)
      if (parts[p].w.n_out != parts[0].w.n_out)
        return Error(ErrorCode::kInvalidArgument, "matmul: lockstep part ", p, " has n_out ",
                     parts[p].w.n_out, ", part 0 ", parts[0].w.n_out);
    for (int p = 0; p <= n_parts; ++p) offset[p] = 0;  // every part spans the same columns
    offset[n_parts] = parts[0].w.n_out;
  }
  if (fusion.input) {
    for (int p = 0; p < n_parts; ++p)
      if (!matmul_reads_input(parts[p].w.type))
        return Error(ErrorCode::kInvalidArgument, "matmul: per-share input with ",
                     type_name(parts[p].w.type), " weights (quantized activations)");
  }
  if (m == 0) return Status::Ok();
  for (int p = 0; p < n_parts; ++p) {
    Status st = Status::Ok();
    kernels[p] = kernel_for(parts[p].w.type, ws.isa(), ws.zmm_tiles(), st);
    CHIMERA_RETURN_IF_ERROR(st);
    CHIMERA_CHECK(kernels[p] != nullptr, "no kernel for ", type_name(parts[p].w.type));
  }

  // Each distinct preparation once, all in one workspace buffer. Each row is quantized on its
  // own, so splitting rows over threads cannot change a bit.
  size_t bytes = 0, at[kMaxParts] = {};
  for (int p = 0; p < n_parts; ++p) {
    if (prep_of[p] != p || matmul_detail::act_format(parts[p].w.type) == ActFormat::kF32) continue;
    at[p] = bytes;
    bytes += (matmul_detail::prepared_row_bytes(parts[p].w.type, ws.isa(), n_in) *
                  static_cast<size_t>(m) +
              63) /
             64 * 64;
  }
  uint8_t* act = bytes ? static_cast<uint8_t*>(ws.reserve(bytes)) : nullptr;
  for (int p = 0; p < n_parts; ++p) {
    const int q = prep_of[p];
    const GgmlType type = parts[q].w.type;
    if (matmul_detail::act_format(type) == ActFormat::kF32) {
      args[p].act = reinterpret_cast<const uint8_t*>(x);
      args[p].act_stride = static_cast<size_t>(x_stride) * sizeof(float);
      continue;
    }
    const size_t row = matmul_detail::prepared_row_bytes(type, ws.isa(), n_in);
    args[p].act = act + at[q];
    args[p].act_stride = row;
    if (q != p) continue;
    auto quantize_rows = [&](int64_t i0, int64_t i1) {
      prepare_rows(type, ws.isa(), x, x_stride, n_in, act + at[q], row, i0, i1);
    };
    if (m >= 8) {
      ctx.parallel_for(m, 1, quantize_rows);
    } else {
      quantize_rows(0, m);
    }
  }

  // Virtual columns [v0, v1) (multiples of kColumnGrain, or the end) to the parts' kernels.
  // With per-share input, share ith's rows come from fusion.input(ith), set up by its first chunk
  // (a share's chunks run one after the other on one thread).
  const int64_t n_virtual = offset[n_parts];
  constexpr int kMaxShares = 256;
  const float* share_rows[kMaxShares];
  if (fusion.input) {
    CHIMERA_CHECK(ctx.n_threads() <= kMaxShares, "matmul: ", ctx.n_threads(), " threads");
    std::fill(share_rows, share_rows + ctx.n_threads(), nullptr);
  }
  // Share 0's rows once made: a share that starts later (its worker was late, or the caller runs
  // it) reads them instead of making its own, the same values.
  std::atomic<const float*> rows0{nullptr};
  auto columns = [&](int ith, int64_t v0, int64_t v1) {
    const matmul_detail::KernelArgs* a = args;
    matmul_detail::KernelArgs own[kMaxParts];
    if (fusion.input) {
      if (share_rows[ith] == nullptr && ith == 0) {
        share_rows[0] = fusion.input(0);
        rows0.store(share_rows[0], std::memory_order_release);
      } else if (share_rows[ith] == nullptr) {
        const float* made = rows0.load(std::memory_order_acquire);
        share_rows[ith] = made != nullptr ? made : fusion.input(ith);
      }
      for (int p = 0; p < n_parts; ++p) {
        own[p] = args[p];
        own[p].act = reinterpret_cast<const uint8_t*>(share_rows[ith]);
      }
      a = own;
    }
    if (fusion.lockstep) {
      for (int p = 0; p < n_parts; ++p) kernels[p](a[p], v0, v1);
      if (after) after(0, v0, v1);
      return;
    }
    for (int p = 0; p < n_parts && v0 < v1; ++p) {
      if (v0 >= offset[p + 1]) continue;
      const int64_t j0 = v0 - offset[p];
      const int64_t j1 = std::min(v1 - offset[p], parts[p].w.n_out);
      if (j0 < j1) {
        kernels[p](a[p], j0, j1);
        if (after) after(p, j0, j1);
      }
      v0 = offset[p + 1];
    }
  };
  if (ahead == nullptr || ahead->end <= ahead->begin) {
    ctx.parallel_for_balanced_shares(n_virtual, kColumnGrain, columns);
    return Status::Ok();
  }
  // Column blocks, each followed by its share of the read-ahead bytes (block boundaries are
  // multiples of kColumnGrain, as thread boundaries are: the kernels' results do not change).
  const uint64_t span = ahead->end - ahead->begin;
  const auto share = [&](int64_t j) {
    return ahead->begin + static_cast<uint64_t>(static_cast<double>(span) * j / n_virtual);
  };
  ctx.parallel_for_balanced_shares(n_virtual, kColumnGrain, [&](int ith, int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; j += kReadAheadColumns) {
      const int64_t je = std::min(j1, j + kReadAheadColumns);
      columns(ith, j, je);
      prefetch_ahead(*ahead, share(j), je == n_virtual ? ahead->end : share(je));
    }
  });
  return Status::Ok();
}

Status run_matmul(ThreadContext& ctx, const WeightMatrix& w, const uint8_t* wdata, const float* x,
                  int64_t m, float* y, MatmulWorkspace& ws, int64_t x_stride, int64_t y_stride,
                  const ReadAhead* ahead = nullptr) {
  MatmulPart part{w, y, y_stride};
  part.w.data = wdata;
  return run_matmul(ctx, &part, 1, x, m, ws, x_stride, ahead, MatmulFusion{});
}

}  // namespace

Status matmul(ThreadContext& ctx, const WeightMatrix& w, const float* x, int64_t m, float* y,
              MatmulWorkspace& ws, int64_t x_stride, int64_t y_stride, const ReadAhead* ahead) {
  CHIMERA_RETURN_IF_ERROR(validate_weights(w));
  if (w.n_expert != 1) {
    return Error(ErrorCode::kInvalidArgument, "matmul: weight has ", w.n_expert,
                 " experts; use matmul_expert to pick one");
  }
  return run_matmul(ctx, w, static_cast<const uint8_t*>(w.data), x, m, y, ws, x_stride, y_stride,
                    ahead);
}

Status matmul_parts(ThreadContext& ctx, const MatmulPart* parts, int n_parts, const float* x,
                    int64_t m, MatmulWorkspace& ws, int64_t x_stride, const ReadAhead* ahead,
                    FnRef<void(int part, int64_t j0, int64_t j1)> after) {
  MatmulFusion fusion;
  fusion.after = after;
  return matmul_fused(ctx, parts, n_parts, x, m, ws, x_stride, ahead, fusion);
}

bool matmul_reads_input(GgmlType type) {
  return matmul_supports(type) && matmul_detail::act_format(type) == ActFormat::kF32;
}

Status matmul_fused(ThreadContext& ctx, const MatmulPart* parts, int n_parts, const float* x,
                    int64_t m, MatmulWorkspace& ws, int64_t x_stride, const ReadAhead* ahead,
                    const MatmulFusion& fusion) {
  if (n_parts < 1 || n_parts > kMaxMatmulParts || parts == nullptr)
    return Error(ErrorCode::kInvalidArgument, "matmul_parts: ", n_parts, " parts at ", parts,
                 " (1 to ", kMaxMatmulParts, " allowed)");
  for (int p = 0; p < n_parts; ++p) {
    CHIMERA_RETURN_IF_ERROR(validate_weights(parts[p].w));
    if (parts[p].w.n_expert != 1)
      return Error(ErrorCode::kInvalidArgument, "matmul_parts: part ", p, " has ",
                   parts[p].w.n_expert, " experts");
  }
  return run_matmul(ctx, parts, n_parts, x, m, ws, x_stride, ahead, fusion);
}

Status gemv(ThreadContext& ctx, const WeightMatrix& w, const float* x, float* y,
            MatmulWorkspace& ws) {
  return matmul(ctx, w, x, 1, y, ws);
}

Status matmul_expert(ThreadContext& ctx, const WeightMatrix& w, int64_t expert, const float* x,
                     int64_t m, float* y, MatmulWorkspace& ws, int64_t x_stride, int64_t y_stride) {
  CHIMERA_RETURN_IF_ERROR(validate_weights(w));
  if (expert < 0 || expert >= w.n_expert) {
    return Error(ErrorCode::kInvalidArgument, "matmul_expert: expert ", expert,
                 " is out of range [0, ", w.n_expert, ")");
  }
  const uint8_t* base =
      static_cast<const uint8_t*>(w.data) + static_cast<size_t>(expert) * w.matrix_bytes();
  return run_matmul(ctx, w, base, x, m, y, ws, x_stride, y_stride);
}

uint64_t memory_read_probe(const void* data, size_t bytes, Isa isa) {
  if (isa != Isa::kScalar && isa_supported(Isa::kAvx2)) {
    return matmul_detail::memory_read_probe_avx2(data, bytes);
  }
  const uint64_t* p = static_cast<const uint64_t*>(data);
  const size_t n = bytes / 8;
  uint64_t acc[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) acc[k] += p[i + k];
  }
  for (; i < n; ++i) acc[0] += p[i];
  return acc[0] + acc[1] + acc[2] + acc[3];
}

}  // namespace chimera
