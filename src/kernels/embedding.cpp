// Row dequantizers follow the block layouts of spec 1.5 (ggml-quants.c reference semantics).
#include "kernels/embedding.h"

namespace chimera {
namespace {

// 6-bit scale and min of sub-block s of a Q4_K / Q5_K block (spec 1.5).
void k_scale_min(const uint8_t* scales, int s, uint8_t* sc, uint8_t* m) {
  if (s < 4) {
    *sc = scales[s] & 63;
    *m = scales[s + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((scales[s + 4] & 0x0F) | ((scales[s - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((scales[s + 4] >> 4) | ((scales[s] >> 6) << 4));
  }
}

void row_q8_0(const BlockQ8_0* b, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, y += kQK8_0) {
    const float d = fp16_to_f32(b[i].d);
    for (int j = 0; j < kQK8_0; ++j) y[j] = d * static_cast<float>(b[i].qs[j]);
  }
}

void row_q4_0(const BlockQ4_0* b, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, y += kQK4_0) {
    const float d = fp16_to_f32(b[i].d);
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      y[j] = d * static_cast<float>((b[i].qs[j] & 0x0F) - 8);
      y[j + kQK4_0 / 2] = d * static_cast<float>((b[i].qs[j] >> 4) - 8);
    }
  }
}

// Q4_K and Q5_K share everything but the fifth bit (qh null for Q4_K).
void row_qk_4_5(const uint16_t d16, const uint16_t dmin16, const uint8_t* scales, const uint8_t* qh,
                const uint8_t* qs, float* y) {
  const float d = fp16_to_f32(d16);
  const float dmin = fp16_to_f32(dmin16);
  for (int c = 0; c < 4; ++c) {
    uint8_t sc0, m0, sc1, m1;
    k_scale_min(scales, 2 * c, &sc0, &m0);
    k_scale_min(scales, 2 * c + 1, &sc1, &m1);
    const float d0 = d * sc0, mm0 = dmin * m0;
    const float d1 = d * sc1, mm1 = dmin * m1;
    for (int l = 0; l < 32; ++l) {
      int lo = qs[32 * c + l] & 0x0F;
      int hi = qs[32 * c + l] >> 4;
      if (qh) {
        lo += (qh[l] >> (2 * c)) & 1 ? 16 : 0;
        hi += (qh[l] >> (2 * c + 1)) & 1 ? 16 : 0;
      }
      y[64 * c + l] = d0 * static_cast<float>(lo) - mm0;
      y[64 * c + 32 + l] = d1 * static_cast<float>(hi) - mm1;
    }
  }
}

void row_q6_k(const BlockQ6_K* b, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, y += kQK_K) {
    const float d = fp16_to_f32(b[i].d);
    for (int n = 0; n < 2; ++n) {
      const uint8_t* ql = b[i].ql + 64 * n;
      const uint8_t* qh = b[i].qh + 32 * n;
      const int8_t* sc = b[i].scales + 8 * n;
      float* o = y + 128 * n;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        o[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
        o[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        o[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        o[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

bool lookup_supported(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return true;
    default:
      return false;
  }
}

}  // namespace

void dequantize_row_for_lookup(GgmlType type, const void* row, int64_t n, float* out) {
  const int64_t nb = n / type_traits(type).block_size;
  switch (type) {
    case GgmlType::F32: {
      const float* s = static_cast<const float*>(row);
      for (int64_t i = 0; i < n; ++i) out[i] = s[i];
      return;
    }
    case GgmlType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < n; ++i) out[i] = fp16_to_f32(s[i]);
      return;
    }
    case GgmlType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(s[i]);
      return;
    }
    case GgmlType::Q8_0:
      return row_q8_0(static_cast<const BlockQ8_0*>(row), nb, out);
    case GgmlType::Q4_0:
      return row_q4_0(static_cast<const BlockQ4_0*>(row), nb, out);
    case GgmlType::Q4_K: {
      const BlockQ4_K* b = static_cast<const BlockQ4_K*>(row);
      for (int64_t i = 0; i < nb; ++i)
        row_qk_4_5(b[i].d, b[i].dmin, b[i].scales, nullptr, b[i].qs, out + i * kQK_K);
      return;
    }
    case GgmlType::Q5_K: {
      const BlockQ5_K* b = static_cast<const BlockQ5_K*>(row);
      for (int64_t i = 0; i < nb; ++i)
        row_qk_4_5(b[i].d, b[i].dmin, b[i].scales, b[i].qh, b[i].qs, out + i * kQK_K);
      return;
    }
    case GgmlType::Q6_K:
      return row_q6_k(static_cast<const BlockQ6_K*>(row), nb, out);
    default:
      CHIMERA_CHECK(false, "dequantize_row_for_lookup: unsupported type ", type_name(type));
  }
}

Status embedding_lookup(GgmlType type, const void* table, int64_t n_embd, int64_t n_vocab,
                        const int32_t* tokens, int64_t n_tokens, float* out, int64_t out_stride) {
  if (!lookup_supported(type))
    return Error(ErrorCode::kUnsupported, "embedding_lookup: tensor type ", type_name(type),
                 " (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)");
  const int64_t block = type_traits(type).block_size;
  if (n_embd < 1 || n_embd % block != 0)
    return Error(ErrorCode::kInvalidArgument, "embedding_lookup: n_embd ", n_embd,
                 " is not a positive multiple of the ", type_name(type), " block size ", block);
  if (n_tokens < 0 || out_stride < n_embd)
    return Error(ErrorCode::kInvalidArgument, "embedding_lookup: n_tokens ", n_tokens,
                 " / out stride ", out_stride, " invalid for n_embd ", n_embd);
  for (int64_t t = 0; t < n_tokens; ++t)
    if (tokens[t] < 0 || tokens[t] >= n_vocab)
      return Error(ErrorCode::kInvalidArgument, "embedding_lookup: token ", tokens[t],
                   " at position ", t, " is outside the vocabulary [0, ", n_vocab, ")");
  const uint64_t rb = row_bytes(type, static_cast<uint64_t>(n_embd));
  for (int64_t t = 0; t < n_tokens; ++t)
    dequantize_row_for_lookup(type, static_cast<const uint8_t*>(table) + rb * tokens[t], n_embd,
                              out + t * out_stride);
  return Status::Ok();
}

}  // namespace chimera
