// Embedding lookup: rows decoded by a straightforward double-precision reference written from the
// block layouts of spec 1.5, and input validation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gguf/types.h"
#include "kernels/embedding.h"

namespace chimera {
namespace {

float h2f(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_f32(h);
}

// Reference decode of one row, in double. For these formats every product is exact in float
// (an fp16 scale has 11 significant bits, a sub-scale <= 8 bits, a quant <= 6 bits: <= 24 bits)
// and at most one subtraction rounds, so the double result rounded to float must equal the
// kernel's bit for bit.
std::vector<double> decode_ref(GgmlType t, const uint8_t* r, int n) {
  std::vector<double> y(n);
  switch (t) {
    case GgmlType::F32:
      for (int i = 0; i < n; ++i) {
        float f;
        std::memcpy(&f, r + 4 * i, 4);
        y[i] = f;
      }
      break;
    case GgmlType::F16:
      for (int i = 0; i < n; ++i) y[i] = h2f(r + 2 * i);
      break;
    case GgmlType::BF16:
      for (int i = 0; i < n; ++i) {
        uint32_t u = static_cast<uint32_t>(r[2 * i] | (r[2 * i + 1] << 8)) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        y[i] = f;
      }
      break;
    case GgmlType::Q8_0:
      for (int b = 0; b < n / 32; ++b) {
        const uint8_t* blk = r + 34 * b;
        for (int j = 0; j < 32; ++j) y[32 * b + j] = h2f(blk) * static_cast<int8_t>(blk[2 + j]);
      }
      break;
    case GgmlType::Q4_0:
      for (int b = 0; b < n / 32; ++b) {
        const uint8_t* blk = r + 18 * b;
        for (int j = 0; j < 16; ++j) {
          y[32 * b + j] = h2f(blk) * ((blk[2 + j] & 15) - 8);
          y[32 * b + j + 16] = h2f(blk) * ((blk[2 + j] >> 4) - 8);
        }
      }
      break;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool five = t == GgmlType::Q5_K;
      const int bs = five ? 176 : 144;
      for (int b = 0; b < n / 256; ++b) {
        const uint8_t* blk = r + bs * b;
        const double d = h2f(blk), dmin = h2f(blk + 2);
        const uint8_t* sc = blk + 4;
        const uint8_t* qh = blk + 16;
        const uint8_t* qs = blk + (five ? 48 : 16);
        for (int s = 0; s < 8; ++s) {
          int scale, mn;
          if (s < 4) {
            scale = sc[s] & 63;
            mn = sc[s + 4] & 63;
          } else {
            scale = (sc[s + 4] & 15) | ((sc[s - 4] >> 6) << 4);
            mn = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
          }
          const int c = s / 2;
          for (int l = 0; l < 32; ++l) {
            int q = s % 2 == 0 ? (qs[32 * c + l] & 15) : (qs[32 * c + l] >> 4);
            if (five && (qh[l] >> s) & 1) q += 16;
            y[256 * b + 32 * s + l] = d * scale * q - dmin * mn;
          }
        }
      }
      break;
    }
    case GgmlType::Q6_K:
      for (int b = 0; b < n / 256; ++b) {
        const uint8_t* blk = r + 210 * b;
        const double d = h2f(blk + 208);
        for (int i = 0; i < 256; ++i) {
          const int half = i / 128, w = i % 128, quarter = w / 32, l = w % 32;
          const uint8_t* ql = blk + 64 * half;
          const uint8_t* qh = blk + 128 + 32 * half;
          const int8_t* scales = reinterpret_cast<const int8_t*>(blk + 192 + 8 * half);
          const uint8_t qlb = ql[l + (quarter % 2 == 1 ? 32 : 0)];
          const int low4 = quarter < 2 ? (qlb & 15) : (qlb >> 4);
          const int high2 = (qh[l] >> (2 * quarter)) & 3;
          const int q = (low4 | (high2 << 4)) - 32;
          y[i + 256 * b] = d * scales[l / 16 + 2 * quarter] * q;
        }
      }
      break;
    default:
      ADD_FAILURE() << "no reference for " << type_name(t);
  }
  return y;
}

// Random bytes everywhere, with the block scales replaced by sane normal fp16 values.
std::vector<uint8_t> random_table(GgmlType t, int n_embd, int n_vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> sc(0.01f, 0.5f);
  std::vector<uint8_t> tab(row_bytes(t, n_embd) * n_vocab);
  for (uint8_t& b : tab) b = static_cast<uint8_t>(byte(rng));
  auto put = [&](size_t off, float v) {
    const uint16_t h = f32_to_fp16(v);
    std::memcpy(&tab[off], &h, 2);
  };
  const size_t bs = type_traits(t).type_size;
  const size_t nblocks = tab.size() / bs;
  for (size_t b = 0; b < nblocks; ++b) {
    switch (t) {
      case GgmlType::F32:
        for (size_t i = 0; i < tab.size() / 4; ++i) {
          const float v = sc(rng) - 0.25f;
          std::memcpy(&tab[4 * i], &v, 4);
        }
        b = nblocks;
        break;
      case GgmlType::Q8_0:
      case GgmlType::Q4_0:
        put(b * bs, sc(rng));
        break;
      case GgmlType::Q4_K:
      case GgmlType::Q5_K:
        put(b * bs, sc(rng));
        put(b * bs + 2, sc(rng));
        break;
      case GgmlType::Q6_K:
        put(b * bs + 208, sc(rng));
        break;
      default:
        b = nblocks;
        break;  // F16 / BF16: any bit pattern is a value (NaNs compared as bits)
    }
  }
  return tab;
}

TEST(OpsEmbedding, EveryTypeMatchesReference) {
  std::mt19937 rng(21);
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,
                     GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    SCOPED_TRACE(type_name(t));
    const int n_embd = type_traits(t).block_size == 256 ? 512 : 96, n_vocab = 11;
    const std::vector<uint8_t> tab = random_table(t, n_embd, n_vocab, rng);
    const int32_t tokens[5] = {3, 0, 10, 3, 7};
    std::vector<float> out(5 * (n_embd + 1), -1.0f);
    ASSERT_TRUE(
        embedding_lookup(t, tab.data(), n_embd, n_vocab, tokens, 5, out.data(), n_embd + 1).ok());
    for (int i = 0; i < 5; ++i) {
      const std::vector<double> want =
          decode_ref(t, tab.data() + row_bytes(t, n_embd) * tokens[i], n_embd);
      for (int e = 0; e < n_embd; ++e) {
        const float w = static_cast<float>(want[e]);
        const float g = out[i * (n_embd + 1) + e];
        if (std::isnan(w)) {
          ASSERT_TRUE(std::isnan(g));
        } else {
          ASSERT_EQ(g, w) << "token " << tokens[i] << " element " << e;
        }
      }
      ASSERT_EQ(out[i * (n_embd + 1) + n_embd], -1.0f);  // stride gap untouched
    }
  }
}

TEST(OpsEmbedding, BadInputIsAnErrorAndWritesNothing) {
  std::vector<float> table(4 * 32, 0.5f);
  std::vector<float> out(64, -3.0f);
  const int32_t bad[2] = {1, 4};
  Status s = embedding_lookup(GgmlType::F32, table.data(), 32, 4, bad, 2, out.data(), 32);
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.message().find("position 1"), std::string::npos) << s.message();
  const int32_t neg[1] = {-1};
  EXPECT_FALSE(embedding_lookup(GgmlType::F32, table.data(), 32, 4, neg, 1, out.data(), 32).ok());
  const int32_t ok[1] = {0};
  EXPECT_EQ(embedding_lookup(GgmlType::Q4_K, table.data(), 32, 4, ok, 1, out.data(), 32).code(),
            ErrorCode::kInvalidArgument);  // 32 is not a multiple of 256
  EXPECT_EQ(embedding_lookup(GgmlType::Q8_1, table.data(), 32, 4, ok, 1, out.data(), 32).code(),
            ErrorCode::kUnsupported);
  EXPECT_EQ(embedding_lookup(GgmlType::F32, table.data(), 32, 4, ok, 1, out.data(), 16).code(),
            ErrorCode::kInvalidArgument);
  for (float v : out) EXPECT_EQ(v, -3.0f);
}

}  // namespace
}  // namespace chimera
