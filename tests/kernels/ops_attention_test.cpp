// Paged attention: accuracy against a double-precision softmax reference, and the exactness
// promise: a query's output is bit-identical alone or in a batch, at any page size, in any order,
// with other sequences' queries mixed in, and with 1 to 4 threads; for F32, F16 and BF16 KV and
// each ISA.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "gguf/types.h"
#include "kernels/attention.h"

namespace chimera {
namespace {

constexpr double kEps32 = 1.1920929e-7;

std::vector<Isa> OpIsas() {
  std::vector<Isa> out{Isa::kScalar};
  if (isa_supported(Isa::kAvx2)) out.push_back(Isa::kAvx2);
  if (isa_supported(Isa::kAvx512)) out.push_back(Isa::kAvx512);  // the AVX2 task code, EVEX
  return out;
}

// One sequence's K/V for one layer, contiguous [n_tokens][n_head_kv*head_dim]. Values are
// multiples of 2^-10 in [-1, 1], exactly representable in F16 (2^-7 for BF16, whose significand
// is 8 bits), so the reference sees exactly what the pages hold whatever the KV type.
struct SeqKv {
  int n_tokens = 0;
  int row = 0;
  std::vector<float> k, v;
};

SeqKv make_seq(int n_tokens, int row, std::mt19937& rng, GgmlType type = GgmlType::F16) {
  const int steps = type == GgmlType::BF16 ? 128 : 1024;
  std::uniform_int_distribution<int> q(-steps, steps);
  SeqKv s{n_tokens, row, {}, {}};
  s.k.resize(static_cast<size_t>(n_tokens) * row);
  s.v.resize(s.k.size());
  for (float& x : s.k) x = q(rng) / static_cast<float>(steps);
  for (float& x : s.v) x = q(rng) / static_cast<float>(steps);
  return s;
}

// The sequence written into pages of the given size through kv_write_token; pages are separate
// heap blocks, listed in the table in order.
struct PagedSeq {
  std::vector<std::unique_ptr<uint8_t[]>> blocks;
  std::vector<const void*> kp, vp;
  KvPageTable table;
};

std::unique_ptr<PagedSeq> page(const SeqKv& s, const AttentionParams& p) {
  auto out = std::make_unique<PagedSeq>();
  const int n_pages = (s.n_tokens + p.page_size - 1) / p.page_size;
  const int64_t bytes = kv_page_bytes(p);
  for (int i = 0; i < n_pages; ++i) {
    for (auto* list : {&out->kp, &out->vp}) {
      out->blocks.emplace_back(new uint8_t[bytes]);
      std::memset(out->blocks.back().get(), 0xFF, bytes);  // F16 NaN / F32 NaN garbage
      list->push_back(out->blocks.back().get());
    }
  }
  for (int t = 0; t < s.n_tokens; ++t)
    EXPECT_TRUE(kv_write_token(p, &s.k[static_cast<size_t>(t) * s.row],
                               &s.v[static_cast<size_t>(t) * s.row],
                               const_cast<void*>(out->kp[t / p.page_size]),
                               const_cast<void*>(out->vp[t / p.page_size]), t % p.page_size)
                    .ok());
  out->table = {out->kp.data(), out->vp.data(), n_pages};
  return out;
}

// Reference in double; also returns the error bound for the float kernel (see below).
void reference(const AttentionParams& p, const SeqKv& s, const float* q, int n_visible,
               std::vector<double>& out, double& tol) {
  const int rep = p.n_head / p.n_head_kv, hd = p.head_dim;
  out.assign(static_cast<size_t>(p.n_head) * hd, 0.0);
  double max_score_err = 0;
  for (int h = 0; h < p.n_head; ++h) {
    const int g = h / rep;
    std::vector<double> sc(n_visible);
    double mx = -INFINITY;
    for (int j = 0; j < n_visible; ++j) {
      double dot = 0, abs_dot = 0;
      for (int e = 0; e < hd; ++e) {
        const double prod = static_cast<double>(q[h * hd + e]) * s.k[j * s.row + g * hd + e];
        dot += prod;
        abs_dot += std::fabs(prod);
      }
      sc[j] = dot * p.scale;
      mx = std::max(mx, sc[j]);
      // float dot of hd products: |error| <= (hd+1)·eps·Σ|q·k| (standard bound), then scaled
      max_score_err = std::max(max_score_err, (hd + 2) * kEps32 * abs_dot * p.scale);
    }
    double sum = 0;
    for (double& x : sc) sum += (x = std::exp(x - mx));
    for (int j = 0; j < n_visible; ++j)
      for (int e = 0; e < hd; ++e) out[h * hd + e] += sc[j] / sum * s.v[j * s.row + g * hd + e];
  }
  // |v| <= 1. Softmax moves by at most 2·max|Δscore| per unit of |v|; the online sums add ~32
  // terms per block plus a rescale per block, exp costs a few ulp: (36 + 3·blocks) ulp for the
  // sum and the accumulator each. Factor 2 of margin.
  const int blocks = (n_visible + kAttentionKeyBlock - 1) / kAttentionKeyBlock;
  tol = 2 * (2 * max_score_err + 2 * (36 + 3 * blocks) * kEps32);
}

struct Case {
  int n_head, n_head_kv, head_dim, n_tokens, page_size;
  GgmlType type;
};

const Case kCases[] = {
    {1, 1, 1, 1, 1, GgmlType::F32},
    {4, 2, 13, 70, 16, GgmlType::F16},
    {8, 2, 64, 300, 32, GgmlType::F16},
    {6, 3, 80, 97, 7, GgmlType::F32},
    {2, 1, 128, 65, 64, GgmlType::F16},
    {3, 3, 5, 33, 1000, GgmlType::F32},
    {4, 1, 9, 40, 3, GgmlType::F16},
    {4, 2, 13, 70, 16, GgmlType::BF16},
    {2, 1, 128, 65, 64, GgmlType::BF16},
    // three query heads per kv head (granite-4.0-h): the 4-key score and 4-vector V groups
    {12, 4, 64, 75, 32, GgmlType::F16},
    {3, 1, 20, 38, 16, GgmlType::BF16},
    {15, 3, 8, 41, 5, GgmlType::F32},  // five: a group of four and one of one
};

AttentionParams params_for(const Case& c) {
  AttentionParams p;
  p.n_head = c.n_head;
  p.n_head_kv = c.n_head_kv;
  p.head_dim = c.head_dim;
  p.page_size = c.page_size;
  p.kv_type = c.type;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  return p;
}

std::vector<float> random_queries(int n, int width, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(n) * width);
  for (float& x : q) x = u(rng);
  return q;
}

// All causal queries of one sequence (query t sees t+1 keys) in one batch.
std::vector<float> run_causal(const AttentionParams& p, const SeqKv& s, const std::vector<float>& q,
                              ThreadContext* threads, Isa isa) {
  auto paged = page(s, p);
  const int width = p.n_head * p.head_dim;
  std::vector<int32_t> vis(s.n_tokens), seq(s.n_tokens, 0);
  for (int t = 0; t < s.n_tokens; ++t) vis[t] = t + 1;
  std::vector<float> out(q.size(), -7.0f);
  AttentionBatch b;
  b.n_queries = s.n_tokens;
  b.q = q.data();
  b.q_stride = width;
  b.n_visible = vis.data();
  b.seq = seq.data();
  b.seqs = &paged->table;
  b.n_seqs = 1;
  b.out = out.data();
  b.out_stride = width;
  EXPECT_TRUE(attention_paged(p, b, threads, isa).ok());
  return out;
}

TEST(OpsAttention, MatchesReference) {
  std::mt19937 rng(31);
  ThreadContext two(2);
  for (const Case& c : kCases) {
    const AttentionParams p = params_for(c);
    const int width = c.n_head * c.head_dim;
    const SeqKv s = make_seq(c.n_tokens, c.n_head_kv * c.head_dim, rng, c.type);
    const std::vector<float> q = random_queries(c.n_tokens, width, rng);
    for (Isa isa : OpIsas()) {
      SCOPED_TRACE(::testing::Message() << isa_name(isa) << " H " << c.n_head << "/" << c.n_head_kv
                                        << " hd " << c.head_dim << " T " << c.n_tokens << " page "
                                        << c.page_size << " " << type_name(c.type));
      const std::vector<float> out = run_causal(p, s, q, &two, isa);
      for (int t = 0; t < c.n_tokens; ++t) {
        std::vector<double> want;
        double tol;
        reference(p, s, &q[static_cast<size_t>(t) * width], t + 1, want, tol);
        for (int e = 0; e < width; ++e)
          ASSERT_NEAR(out[static_cast<size_t>(t) * width + e], want[e], tol)
              << "query " << t << " element " << e;
      }
    }
  }
}

// The exactness promise, bitwise.
TEST(OpsAttention, QueryOutputIsBatchPageOrderAndThreadInvariant) {
  std::mt19937 rng(32);
  ThreadContext one(1), two(2), three(3), four(4);
  ThreadContext* const many[] = {&two, &three, &four};  // 3 and 4: uneven splits of the heads
  for (const Case& c : kCases) {
    const int width = c.n_head * c.head_dim;
    const SeqKv s = make_seq(c.n_tokens, c.n_head_kv * c.head_dim, rng, c.type);
    const SeqKv other = make_seq(c.n_tokens + 5, c.n_head_kv * c.head_dim, rng, c.type);
    const std::vector<float> q = random_queries(c.n_tokens, width, rng);
    for (Isa isa : OpIsas()) {
      SCOPED_TRACE(::testing::Message() << isa_name(isa) << " hd " << c.head_dim << " T "
                                        << c.n_tokens << " " << type_name(c.type));
      AttentionParams p = params_for(c);
      const std::vector<float> base = run_causal(p, s, q, &one, isa);
      const size_t bytes = base.size() * sizeof(float);
      int k = 0;
      for (int ps : {1, 5, 32, 33, 1000}) {  // page size must not matter
        p.page_size = ps;
        ThreadContext* threads = many[k++ % 3];
        EXPECT_EQ(0, std::memcmp(base.data(), run_causal(p, s, q, threads, isa).data(), bytes))
            << "page size " << ps << " threads " << threads->n_threads();
      }
      p = params_for(c);
      // Each query alone (decode-style), from a fresh paging with another page size.
      AttentionParams p7 = p;
      p7.page_size = 7;
      auto pg = page(s, p7);
      for (int t = 0; t < c.n_tokens; ++t) {
        std::vector<float> out(width);
        const int32_t vis = t + 1, seq = 0;
        AttentionBatch b{
            1,    &q[static_cast<size_t>(t) * width], width, &vis, &seq, &pg->table, 1, out.data(),
            width};
        ASSERT_TRUE(attention_paged(p7, b, nullptr, isa).ok());
        ASSERT_EQ(0, std::memcmp(out.data(), &base[static_cast<size_t>(t) * width],
                                 width * sizeof(float)))
            << "query " << t << " alone";
      }
      // Shuffled, interleaved with another sequence's queries, computed in place (out == q).
      auto pa = page(s, p);
      auto pb = page(other, p);
      const KvPageTable tables[2] = {pb->table, pa->table};
      std::vector<int> order(c.n_tokens);
      for (int t = 0; t < c.n_tokens; ++t) order[t] = t;
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<float> buf;
      std::vector<int32_t> vis, seq;
      for (int t : order) {
        buf.insert(buf.end(), q.begin() + static_cast<size_t>(t) * width,
                   q.begin() + static_cast<size_t>(t + 1) * width);
        vis.push_back(t + 1);
        seq.push_back(1);
        buf.insert(buf.end(), q.begin(), q.begin() + width);  // a query of the other sequence
        vis.push_back(std::min(other.n_tokens, 3 * t + 2));
        seq.push_back(0);
      }
      AttentionBatch b{static_cast<int64_t>(vis.size()),
                       buf.data(),
                       width,
                       vis.data(),
                       seq.data(),
                       tables,
                       2,
                       buf.data(),
                       width};
      ASSERT_TRUE(attention_paged(p, b, &three, isa).ok());
      for (size_t i = 0; i < order.size(); ++i)
        ASSERT_EQ(0, std::memcmp(&buf[2 * i * width], &base[static_cast<size_t>(order[i]) * width],
                                 width * sizeof(float)))
            << "query " << order[i] << " in a mixed batch";
    }
  }
}

// A ragged head_dim reads exactly its elements and counts zeros in the vector lanes past them:
// bitwise the same output as the same heads zero-padded to a multiple of 8 (the kernels' padded
// arithmetic), for every tail length, KV type and ISA. The pages are NaN garbage past each row,
// so a tail load that read one element too many, or left a lane unzeroed, shows.
TEST(OpsAttention, RaggedHeadDimEqualsZeroPaddedBitwise) {
  std::mt19937 rng(33);
  for (GgmlType type : {GgmlType::F16, GgmlType::BF16, GgmlType::F32}) {
    for (int hd = 1; hd <= 23; ++hd) {
      const int pad = (hd + 7) / 8 * 8;
      if (pad == hd) continue;
      AttentionParams p;
      p.n_head = 4;
      p.n_head_kv = 2;
      p.head_dim = hd;
      p.page_size = 16;
      p.kv_type = type;
      p.scale = 0.3f;
      AttentionParams pp = p;
      pp.head_dim = pad;
      const int n = 45;  // two key blocks, the second partial; three pages
      const SeqKv s = make_seq(n, p.n_head_kv * hd, rng, type);
      const std::vector<float> q = random_queries(n, p.n_head * hd, rng);
      // The same K, V and q with zeros appended to every head's row.
      SeqKv sp{n, pp.n_head_kv * pad, {}, {}};
      sp.k.assign(static_cast<size_t>(n) * sp.row, 0.0f);
      sp.v.assign(sp.k.size(), 0.0f);
      std::vector<float> qp(static_cast<size_t>(n) * pp.n_head * pad, 0.0f);
      for (int t = 0; t < n; ++t) {
        for (int g = 0; g < p.n_head_kv; ++g)
          for (int e = 0; e < hd; ++e) {
            sp.k[static_cast<size_t>(t) * sp.row + g * pad + e] = s.k[t * s.row + g * hd + e];
            sp.v[static_cast<size_t>(t) * sp.row + g * pad + e] = s.v[t * s.row + g * hd + e];
          }
        for (int h = 0; h < p.n_head; ++h)
          for (int e = 0; e < hd; ++e)
            qp[(static_cast<size_t>(t) * p.n_head + h) * pad + e] =
                q[(static_cast<size_t>(t) * p.n_head + h) * hd + e];
      }
      for (Isa isa : OpIsas()) {
        SCOPED_TRACE(::testing::Message()
                     << isa_name(isa) << " hd " << hd << " " << type_name(type));
        const std::vector<float> out = run_causal(p, s, q, nullptr, isa);
        const std::vector<float> outp = run_causal(pp, sp, qp, nullptr, isa);
        for (int t = 0; t < n; ++t)
          for (int h = 0; h < p.n_head; ++h)
            ASSERT_EQ(0, std::memcmp(&out[(static_cast<size_t>(t) * p.n_head + h) * hd],
                                     &outp[(static_cast<size_t>(t) * p.n_head + h) * pad],
                                     hd * sizeof(float)))
                << "query " << t << " head " << h;
      }
    }
  }
}

// F16 pages hold round-to-nearest-even halves of the written floats.
TEST(OpsAttention, KvWriteRoundsToNearestEvenF16) {
  AttentionParams p;
  p.n_head = p.n_head_kv = 1;
  p.head_dim = 4;
  p.page_size = 2;
  p.kv_type = GgmlType::F16;
  const float k[4] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, -2.0f, 65520.0f};
  const float v[4] = {0.5f, 0.25f, 0.0f, -0.0f};
  uint16_t kp[8] = {}, vp[8] = {};
  ASSERT_TRUE(kv_write_token(p, k, v, kp, vp, 1).ok());
  EXPECT_EQ(kp[4], 0x3C00);  // halfway between 1 and 1+2^-10: to even (1.0)
  EXPECT_EQ(kp[5], 0x3C02);  // halfway between 1+2^-10 and 1+2^-9: to even (1+2^-9)
  EXPECT_EQ(kp[6], 0xC000);
  EXPECT_EQ(kp[7], 0x7C00);  // 65520 rounds up past the largest half: +inf
  EXPECT_EQ(vp[4], 0x3800);
  EXPECT_EQ(vp[7], 0x8000);
  EXPECT_EQ(kp[0], 0);  // slot 0 untouched
  EXPECT_EQ(kv_write_token(p, k, v, kp, vp, 2).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(kv_write_token(p, k, v, kp, vp, -1).code(), ErrorCode::kInvalidArgument);
}

// BF16 pages hold round-to-nearest-even truncations of the written floats (the top 16 bits).
// Every F16 page element equals the scalar f32_to_fp16 of the written float, in the vector
// body and the tail alike: ties, subnormal results, overflow, infinities, NaN payloads and random
// bit patterns (the AVX2 write uses F16C and must not differ by a bit).
TEST(OpsAttention, KvWriteF16EqualsScalarConversionBitForBit) {
  AttentionParams p;
  p.n_head = p.n_head_kv = 2;
  p.head_dim = 67;  // 8 full vectors and a ragged tail per head
  p.page_size = 3;
  p.kv_type = GgmlType::F16;
  const int64_t row = 2 * 67;
  const uint32_t special[] = {0x3F800800u, 0x3F801800u, 0x477FF000u, 0x477FEFFFu, 0x7F800000u,
                              0xFF800000u, 0x7F800001u, 0x7FC00000u, 0xFFA12345u, 0x7FFFFFFFu,
                              0x33000000u, 0x33000001u, 0x387FC000u, 0x387FE000u, 0x38800000u,
                              0x00000001u, 0x80000000u, 0x00000000u, 0x3A000800u, 0xB3800000u};
  std::mt19937 rng(21);
  std::uniform_int_distribution<uint32_t> bits;
  std::uniform_real_distribution<float> small(-1e-4f, 1e-4f);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> k(row), v(row);
    for (int64_t i = 0; i < row; ++i) {
      uint32_t kb = bits(rng), vb = 0;
      const float sv = small(rng);  // subnormal-result range of F16
      std::memcpy(&vb, &sv, 4);
      if (trial == 0) kb = special[i % std::size(special)];
      if (trial == 1) vb = special[(i + 7) % std::size(special)];
      std::memcpy(&k[i], &kb, 4);
      std::memcpy(&v[i], &vb, 4);
    }
    std::vector<uint16_t> kp(2 * 3 * 67, 0), vp(2 * 3 * 67, 0);
    ASSERT_TRUE(kv_write_token(p, k.data(), v.data(), kp.data(), vp.data(), 1).ok());
    for (int g = 0; g < 2; ++g) {
      for (int e = 0; e < 67; ++e) {
        const size_t at = (static_cast<size_t>(g) * 3 + 1) * 67 + e;  // head-major pages
        ASSERT_EQ(kp[at], f32_to_fp16(k[g * 67 + e]))
            << "trial " << trial << " k " << g << "," << e;
        ASSERT_EQ(vp[at], f32_to_fp16(v[g * 67 + e]))
            << "trial " << trial << " v " << g << "," << e;
      }
    }
  }
}

TEST(OpsAttention, KvWriteRoundsToNearestEvenBF16) {
  AttentionParams p;
  p.n_head = p.n_head_kv = 1;
  p.head_dim = 4;
  p.page_size = 1;
  p.kv_type = GgmlType::BF16;
  const float k[4] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -2.0f, 1.0f + 0x1p-7f + 0x1p-9f};
  const float v[4] = {0.5f, 0.25f, 0.0f, -0.0f};
  uint16_t kp[4] = {}, vp[4] = {};
  ASSERT_TRUE(kv_write_token(p, k, v, kp, vp, 0).ok());
  EXPECT_EQ(kp[0], 0x3F80);  // halfway between 1 and 1+2^-7: to even (1.0)
  EXPECT_EQ(kp[1], 0x3F82);  // halfway between 1+2^-7 and 1+2^-6: to even (1+2^-6)
  EXPECT_EQ(kp[2], 0xC000);
  EXPECT_EQ(kp[3], 0x3F81);  // below halfway: down
  EXPECT_EQ(vp[0], 0x3F00);
  EXPECT_EQ(vp[3], 0x8000);
}

// Sliding windows: a query reading keys [first, n) equals, bit for bit, the same query over a
// sequence holding only those keys (the key blocks start at first), and pages wholly before the
// smallest first of the batch are never read (null here). Checked against the double reference.
TEST(OpsAttention, WindowEqualsTheSameKeysAsAPrefix) {
  std::mt19937 rng(34);
  ThreadContext two(2);
  const Case cases[] = {{4, 2, 13, 90, 16, GgmlType::F16},
                        {2, 1, 64, 75, 7, GgmlType::F32},
                        {4, 1, 9, 50, 8, GgmlType::BF16}};
  for (const Case& c : cases) {
    const AttentionParams p = params_for(c);
    const int width = c.n_head * c.head_dim, row = c.n_head_kv * c.head_dim;
    const SeqKv s = make_seq(c.n_tokens, row, rng, c.type);
    const std::vector<float> q = random_queries(c.n_tokens, width, rng);
    for (int window : {1, 5, 33, 40}) {
      for (Isa isa : OpIsas()) {
        SCOPED_TRACE(::testing::Message()
                     << isa_name(isa) << " window " << window << " " << type_name(c.type));
        // Queries of the last 20 positions in one batch, with their page tables' early pages
        // nulled out where no query of the batch reads them.
        auto paged = page(s, p);
        const int q0 = c.n_tokens - 20;
        const int lo = std::max(0, q0 + 1 - window);
        for (int pg = 0; pg < lo / p.page_size; ++pg) paged->kp[pg] = paged->vp[pg] = nullptr;
        std::vector<int32_t> vis, first, seq(20, 0);
        for (int t = q0; t < c.n_tokens; ++t) {
          vis.push_back(t + 1);
          first.push_back(std::max(0, t + 1 - window));
        }
        std::vector<float> out(20 * static_cast<size_t>(width), -7.0f);
        AttentionBatch b;
        b.n_queries = 20;
        b.q = &q[static_cast<size_t>(q0) * width];
        b.q_stride = width;
        b.n_visible = vis.data();
        b.first_visible = first.data();
        b.seq = seq.data();
        b.seqs = &paged->table;
        b.n_seqs = 1;
        b.out = out.data();
        b.out_stride = width;
        ASSERT_TRUE(attention_paged(p, b, &two, isa).ok());
        for (int i = 0; i < 20; ++i) {
          const int t = q0 + i, f = first[i], n = t + 1 - f;
          SeqKv sub{n, row, {}, {}};
          sub.k.assign(s.k.begin() + static_cast<size_t>(f) * row,
                       s.k.begin() + static_cast<size_t>(t + 1) * row);
          sub.v.assign(s.v.begin() + static_cast<size_t>(f) * row,
                       s.v.begin() + static_cast<size_t>(t + 1) * row);
          auto sp = page(sub, p);
          int32_t nv = n, zero = 0;
          std::vector<float> one(width, -9.0f);
          AttentionBatch ob{1,     &q[static_cast<size_t>(t) * width],
                            width, &nv,
                            &zero, &sp->table,
                            1,     one.data(),
                            width};
          ASSERT_TRUE(attention_paged(p, ob, nullptr, isa).ok());
          ASSERT_EQ(0, std::memcmp(one.data(), &out[static_cast<size_t>(i) * width], width * 4))
              << "query " << t;
          std::vector<double> want;
          double tol;
          reference(p, sub, &q[static_cast<size_t>(t) * width], n, want, tol);
          for (int e = 0; e < width; ++e) ASSERT_NEAR(one[e], want[e], tol);
        }
      }
    }
  }
}

// Queries of one sequence next to each other in a batch are computed together, a key block at a
// time for the group (speculative verify, prefill). Each must still give bitwise what it gives
// alone: ragged visible counts in any order (so each query's last block differs, and some
// queries end blocks before others), GQA, sliding windows (runs of queries sharing a first key,
// and ones that do not), head_dim not a multiple of 8, runs longer than a group, other
// sequences' runs in between, 1 to 3 threads and every ISA.
TEST(OpsAttention, MultiQueryGroupEqualsEachQueryAloneBitwise) {
  std::mt19937 rng(35);
  ThreadContext one(1), two(2), three(3);
  ThreadContext* const pools[] = {&one, &two, &three};
  const Case cases[] = {{4, 2, 13, 150, 16, GgmlType::F16},  {8, 2, 20, 200, 32, GgmlType::F16},
                        {6, 3, 64, 120, 7, GgmlType::BF16},  {3, 1, 9, 97, 5, GgmlType::F32},
                        {12, 4, 64, 180, 32, GgmlType::F16}, {2, 2, 5, 70, 1000, GgmlType::F32},
                        {4, 2, 12, 300, 16, GgmlType::F16},  {4, 2, 12, 130, 7, GgmlType::BF16},
                        {8, 2, 12, 90, 32, GgmlType::F32}};
  for (const Case& c : cases) {
    const AttentionParams p = params_for(c);
    const int width = c.n_head * c.head_dim, row = c.n_head_kv * c.head_dim;
    const SeqKv sa = make_seq(c.n_tokens, row, rng, c.type);
    const SeqKv sb = make_seq(c.n_tokens / 2 + 3, row, rng, c.type);
    auto pa = page(sa, p);
    auto pb = page(sb, p);
    const KvPageTable tables[2] = {pa->table, pb->table};
    const int n_tok[2] = {sa.n_tokens, sb.n_tokens};
    // Runs of consecutive queries of one sequence: 1 to 19 long (groups hold up to 8, 12 with one
    // or two heads per kv head), with random visible counts; a run either shares a first key (0 or
    // a window start) or gives each query its own.
    std::vector<int32_t> vis, first, seq;
    for (int run = 0; run < 12; ++run) {
      const int sq = run % 3 == 2 ? 1 : 0;
      const int len = std::uniform_int_distribution<int>(1, 19)(rng);
      const int mode = run % 4;  // 0: all keys from 0, 1: shared window start, 2/3: own starts
      const int shared = std::uniform_int_distribution<int>(0, n_tok[sq] / 2)(rng);
      for (int k = 0; k < len; ++k) {
        int nv = std::uniform_int_distribution<int>(1, n_tok[sq])(rng);
        int f = 0;
        if (mode == 1) {
          nv = std::max(nv, shared + 1);
          f = shared;
        } else if (mode >= 2) {
          f = std::uniform_int_distribution<int>(0, nv - 1)(rng);
        }
        vis.push_back(nv);
        first.push_back(f);
        seq.push_back(sq);
      }
    }
    const int n = static_cast<int>(vis.size());
    const std::vector<float> q = random_queries(n, width, rng);
    for (Isa isa : OpIsas()) {
      for (ThreadContext* threads : pools) {
        SCOPED_TRACE(::testing::Message()
                     << isa_name(isa) << " H " << c.n_head << "/" << c.n_head_kv << " hd "
                     << c.head_dim << " " << type_name(c.type) << " threads "
                     << threads->n_threads());
        std::vector<float> out(q.size(), -7.0f);
        AttentionBatch b{n,      q.data(), width,      vis.data(), seq.data(),
                         tables, 2,        out.data(), width,      first.data()};
        ASSERT_TRUE(attention_paged(p, b, threads, isa).ok());
        for (int i = 0; i < n; ++i) {
          std::vector<float> alone(width, -9.0f);
          AttentionBatch ob{1,       &q[static_cast<size_t>(i) * width],
                            width,   &vis[i],
                            &seq[i], tables,
                            2,       alone.data(),
                            width,   &first[i]};
          ASSERT_TRUE(attention_paged(p, ob, nullptr, isa).ok());
          ASSERT_EQ(0, std::memcmp(alone.data(), &out[static_cast<size_t>(i) * width],
                                   width * sizeof(float)))
              << "query " << i << " sees [" << first[i] << ", " << vis[i] << ") of sequence "
              << seq[i];
        }
      }
    }
  }
}

// The AVX2 task's shortcuts for small heads: head_dim 12 and 16 compiled as constants, two or
// four kv heads in one pass where a kv head has fewer than four (query, head) pairs (a decode),
// and 12-wide heads' scores from transposed keys where it has four or more. Each must give
// bitwise what the run-time head_dim path gives one kv head at a time: every (query, head) keeps
// its own arithmetic. Ragged visible counts (partial last blocks), windows, 1 to 12 queries, 1 to
// 4 heads per kv head, kv head ranges that leave 1 or 3 heads (a pass of two then one), every KV
// type (pages of 32, 7 and 16 keys); and the AVX-512 copies of the tasks give the same bytes.
TEST(OpsAttention, SmallHeadPassesEqualOneKvHeadAtATimeBitwise) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "no AVX2";
  std::mt19937 rng(36);
  struct Shape {
    int n_head, n_head_kv, head_dim;
  };
  const Shape shapes[] = {{4, 2, 12}, {4, 4, 12}, {2, 2, 16}, {8, 4, 16}, {6, 3, 12},
                          {5, 5, 12}, {8, 2, 12}, {4, 2, 13}, {3, 3, 7},  {4, 4, 8}};
  for (const Shape& sh : shapes) {
    for (GgmlType type : {GgmlType::F16, GgmlType::BF16, GgmlType::F32}) {
      const int page_size = type == GgmlType::F16 ? 32 : type == GgmlType::BF16 ? 7 : 16;
      const Case c{sh.n_head, sh.n_head_kv, sh.head_dim, 150, page_size, type};
      const AttentionParams p = params_for(c);
      const int width = c.n_head * c.head_dim;
      const SeqKv s = make_seq(c.n_tokens, c.n_head_kv * c.head_dim, rng, type);
      auto paged = page(s, p);
      std::vector<float> scratch(static_cast<size_t>(ops_internal::attention_scratch_floats(p)));
      // 1-3 queries: passes of several kv heads; 4 or more pairs per kv head of a 12-wide head:
      // scores from transposed keys (lookup-staged drafts of 9 queries, verifies).
      for (int n_q : {1, 2, 3, 5, 8, 9, 12}) {
        if (n_q > ops_internal::attention_max_group(p)) continue;
        for (int trial = 0; trial < 4; ++trial) {
          std::vector<int32_t> vis(n_q);
          const int first = trial == 3 ? std::uniform_int_distribution<int>(0, 40)(rng) : 0;
          for (int32_t& v : vis) v = std::uniform_int_distribution<int>(first + 1, c.n_tokens)(rng);
          const std::vector<float> q = random_queries(n_q, width, rng);
          SCOPED_TRACE(::testing::Message()
                       << "H " << c.n_head << "/" << c.n_head_kv << " hd " << c.head_dim << " "
                       << type_name(type) << " queries " << n_q << " first " << first);
          const auto run = [&](int kv_begin, int kv_end, bool runtime_hd, bool avx512,
                               std::vector<float>& out) {
            const ops_internal::AttentionTask task{&p,    q.data(),      out.data(), width,
                                                   width, &paged->table, vis.data(), n_q,
                                                   first, kv_begin,      kv_end};
            if (avx512) {
              if (runtime_hd) {
                ops_internal::attention_task_avx512_runtime_hd(task, scratch.data());
              } else {
                ops_internal::attention_task_avx512(task, scratch.data());
              }
            } else if (runtime_hd) {
              ops_internal::attention_task_avx2_runtime_hd(task, scratch.data());
            } else {
              ops_internal::attention_task_avx2(task, scratch.data());
            }
          };
          std::vector<float> want(q.size(), -7.0f), got(q.size(), -8.0f);
          for (int g = 0; g < c.n_head_kv; ++g) run(g, g + 1, true, false, want);
          // The AVX-512 tasks (the same code with a 16-lane exp) give the AVX2 ones' bits.
          for (bool avx512 : {false, true}) {
            if (avx512 && !isa_supported(Isa::kAvx512)) continue;
            for (int kv_begin : {0, 1, -1}) {  // 1: an odd number of kv heads from an odd start
              if (kv_begin >= c.n_head_kv || (kv_begin < 0 && !avx512)) continue;
              std::fill(got.begin(), got.end(), -8.0f);
              if (kv_begin < 0) {  // -1: the run-time head_dim AVX-512 task, one kv head at a time
                for (int g = 0; g < c.n_head_kv; ++g) run(g, g + 1, true, true, got);
              } else {
                run(0, kv_begin, false, avx512, got);
                run(kv_begin, c.n_head_kv, false, avx512, got);
              }
              for (int i = 0; i < n_q; ++i)
                ASSERT_EQ(0,
                          std::memcmp(&got[static_cast<size_t>(i) * width],
                                      &want[static_cast<size_t>(i) * width], width * sizeof(float)))
                    << "query " << i << " sees [" << first << ", " << vis[i] << "), kv heads from "
                    << kv_begin << (avx512 ? " avx512" : " avx2");
            }
          }
        }
      }
    }
  }
}

// The AVX-512 path (attention_avx512.cpp: the AVX2 task code with its own exp) gives the AVX2
// path's bytes through the whole op: head sizes from 1 to 128 (run-time and constant head_dim),
// every KV type, pages of 16, 7 and 32 keys, groups of 1 to 12 queries with ragged visible counts
// and windows, 1 and 2 threads; queries scaled up so that many exps underflow to 0 or subnormals.
TEST(OpsAttention, Avx512PathEqualsAvx2Bitwise) {
  if (!isa_supported(Isa::kAvx512)) GTEST_SKIP() << "no AVX-512";
  std::mt19937 rng(37);
  ThreadContext one(1), two(2);
  const Case cases[] = {{4, 2, 12, 230, 16, GgmlType::F16}, {4, 2, 12, 170, 7, GgmlType::BF16},
                        {4, 2, 12, 100, 32, GgmlType::F32}, {8, 2, 64, 140, 16, GgmlType::F16},
                        {12, 4, 64, 90, 7, GgmlType::BF16}, {2, 1, 128, 75, 32, GgmlType::F32},
                        {4, 4, 16, 110, 16, GgmlType::F16}, {6, 3, 13, 95, 7, GgmlType::F32},
                        {3, 3, 5, 60, 32, GgmlType::BF16},  {4, 1, 1, 40, 16, GgmlType::F16}};
  for (const Case& c : cases) {
    const AttentionParams p = params_for(c);
    const int width = c.n_head * c.head_dim;
    const SeqKv s = make_seq(c.n_tokens, c.n_head_kv * c.head_dim, rng, c.type);
    auto paged = page(s, p);
    for (int n_q = 1; n_q <= 12; ++n_q) {
      for (float qscale : {1.0f, 40.0f}) {
        std::vector<int32_t> vis(n_q), first(n_q), seq(n_q, 0);
        const int shared = n_q % 3 == 0 ? std::uniform_int_distribution<int>(0, 30)(rng) : 0;
        for (int i = 0; i < n_q; ++i) {
          vis[i] = std::uniform_int_distribution<int>(shared + 1, c.n_tokens)(rng);
          first[i] = shared;
        }
        std::vector<float> q = random_queries(n_q, width, rng);
        for (float& x : q) x *= qscale;
        for (ThreadContext* threads : {&one, &two}) {
          SCOPED_TRACE(::testing::Message()
                       << "H " << c.n_head << "/" << c.n_head_kv << " hd " << c.head_dim << " "
                       << type_name(c.type) << " page " << c.page_size << " queries " << n_q
                       << " q x" << qscale << " threads " << threads->n_threads());
          std::vector<float> a(q.size(), -7.0f), b(q.size(), -8.0f);
          AttentionBatch ba{n_q,           q.data(), width,    vis.data(), seq.data(),
                            &paged->table, 1,        a.data(), width,      first.data()};
          AttentionBatch bb = ba;
          bb.out = b.data();
          ASSERT_TRUE(attention_paged(p, ba, threads, Isa::kAvx2).ok());
          ASSERT_TRUE(attention_paged(p, bb, threads, Isa::kAvx512).ok());
          ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
        }
      }
    }
  }
}

TEST(OpsAttention, BadInputIsAnErrorAndWritesNothing) {
  std::mt19937 rng(33);
  const Case c{4, 2, 8, 20, 8, GgmlType::F16};
  AttentionParams p = params_for(c);
  const SeqKv s = make_seq(c.n_tokens, 16, rng);
  auto pg = page(s, p);
  std::vector<float> q = random_queries(2, 32, rng);
  std::vector<float> out(64, 5.0f);
  int32_t vis[2] = {3, 20};
  int32_t seq[2] = {0, 0};
  auto run = [&](const AttentionParams& pp) {
    AttentionBatch b{2, q.data(), 32, vis, seq, &pg->table, 1, out.data(), 32};
    return attention_paged(pp, b, nullptr);
  };
  ASSERT_TRUE(run(p).ok());
  std::fill(out.begin(), out.end(), 5.0f);
  vis[1] = 25;  // more keys than the 3 pages of 8 hold
  EXPECT_EQ(run(p).code(), ErrorCode::kInvalidArgument);
  vis[1] = 0;
  EXPECT_EQ(run(p).code(), ErrorCode::kInvalidArgument);
  vis[1] = 20;
  seq[1] = 1;
  EXPECT_EQ(run(p).code(), ErrorCode::kInvalidArgument);
  seq[1] = 0;
  pg->kp[2] = nullptr;  // the last page, needed by the 20-key query
  EXPECT_EQ(run(p).code(), ErrorCode::kInvalidArgument);
  vis[1] = 16;  // now only pages 0 and 1 are read: fine
  EXPECT_TRUE(run(p).ok());
  std::fill(out.begin(), out.end(), 5.0f);
  vis[1] = 20;
  int32_t first[2] = {0, 20};  // a window must hold at least the query's own key
  AttentionBatch wb{2, q.data(), 32, vis, seq, &pg->table, 1, out.data(), 32, first};
  EXPECT_EQ(attention_paged(p, wb, nullptr).code(), ErrorCode::kInvalidArgument);
  first[1] = -1;
  EXPECT_EQ(attention_paged(p, wb, nullptr).code(), ErrorCode::kInvalidArgument);
  AttentionParams bad = p;
  bad.n_head_kv = 3;
  EXPECT_EQ(run(bad).code(), ErrorCode::kInvalidArgument);
  bad = p;
  bad.kv_type = GgmlType::Q8_0;
  EXPECT_EQ(run(bad).code(), ErrorCode::kUnsupported);
  bad = p;
  bad.head_dim = 0;
  EXPECT_EQ(run(bad).code(), ErrorCode::kInvalidArgument);
  for (float v : out) EXPECT_EQ(v, 5.0f);
}

}  // namespace
}  // namespace chimera
