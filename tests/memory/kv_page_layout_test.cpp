// Head-major KV pages: the memory's KvPageLayout, the attention kernel's kv_write_token and the
// state files agree on where each element of a token row lives.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "memory/hybrid_memory.h"

namespace chimera {
namespace {

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(KvPageLayout, HeadMajorOffsetsAndRowRoundTrip) {
  const KvPageLayout l{5, 3, 4, 2};  // page 5 tokens, 3 heads of 4 elements, 2-byte elements
  EXPECT_EQ(l.row_bytes(), 3u * 4 * 2);
  EXPECT_EQ(l.page_bytes(), 5u * 3 * 4 * 2);
  std::vector<uint8_t> page(l.page_bytes(), 0);
  std::vector<std::vector<uint8_t>> rows;
  for (uint32_t s = 0; s < l.page_size; ++s) {
    rows.push_back(random_bytes(l.row_bytes(), 100 + s));
    l.write_row(page.data(), s, rows.back().data());
  }
  for (uint32_t s = 0; s < l.page_size; ++s) {
    for (uint32_t h = 0; h < l.n_heads; ++h) {
      // Head h of slot s sits at (h * page_size + s) * head_dim elements: a head's slots follow
      // each other.
      const size_t off = (size_t{h} * l.page_size + s) * l.head_dim * l.elem_bytes;
      ASSERT_EQ(l.offset(s, h), off);
      ASSERT_EQ(0, std::memcmp(page.data() + off, rows[s].data() + h * l.head_dim * l.elem_bytes,
                               l.head_dim * l.elem_bytes));
    }
    std::vector<uint8_t> back(l.row_bytes());
    l.read_row(page.data(), s, back.data());
    ASSERT_EQ(back, rows[s]);
  }
  // copy_rows moves exactly the first n rows of every head.
  std::vector<uint8_t> dst(l.page_bytes(), 0xAB);
  l.copy_rows(page.data(), dst.data(), 2);
  for (uint32_t s = 0; s < l.page_size; ++s) {
    std::vector<uint8_t> got(l.row_bytes());
    l.read_row(dst.data(), s, got.data());
    if (s < 2) {
      EXPECT_EQ(got, rows[s]) << s;
    } else {
      EXPECT_EQ(got, std::vector<uint8_t>(l.row_bytes(), 0xAB)) << s;
    }
  }
}

// kv_write_token (the forward pass's writer) puts every element where KvPageLayout (the memory's
// reader for save, fingerprints and inspection) expects it.
TEST(KvPageLayout, MatchesTheAttentionKernelsPages) {
  struct Shape {
    int n_head_kv, head_dim, page_size;
    GgmlType type;
  };
  for (const Shape sh : {Shape{8, 128, 32, GgmlType::F16}, Shape{3, 5, 7, GgmlType::F32},
                         Shape{1, 9, 4, GgmlType::F16}, Shape{2, 16, 1, GgmlType::F32}}) {
    AttentionParams p;
    p.n_head = sh.n_head_kv * 2;
    p.n_head_kv = sh.n_head_kv;
    p.head_dim = sh.head_dim;
    p.page_size = sh.page_size;
    p.kv_type = sh.type;
    const uint32_t elem = sh.type == GgmlType::F32 ? 4 : 2;
    const KvPageLayout l{static_cast<uint32_t>(sh.page_size), static_cast<uint32_t>(sh.n_head_kv),
                         static_cast<uint32_t>(sh.head_dim), elem};
    ASSERT_EQ(static_cast<int64_t>(l.page_bytes()), kv_page_bytes(p));
    std::vector<uint8_t> kp(l.page_bytes(), 0), vp(l.page_bytes(), 0);
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> q(-1024, 1024);  // exact in F16
    const int row = sh.n_head_kv * sh.head_dim;
    for (int s = 0; s < sh.page_size; ++s) {
      std::vector<float> k(row), v(row);
      for (float& x : k) x = q(rng) / 1024.0f;
      for (float& x : v) x = q(rng) / 1024.0f;
      ASSERT_TRUE(kv_write_token(p, k.data(), v.data(), kp.data(), vp.data(), s).ok());
      std::vector<uint8_t> want_k(l.row_bytes()), want_v(l.row_bytes()), got(l.row_bytes());
      for (int e = 0; e < row; ++e) {
        if (elem == 2) {
          const uint16_t hk = f32_to_fp16(k[e]), hv = f32_to_fp16(v[e]);
          std::memcpy(&want_k[2 * e], &hk, 2);
          std::memcpy(&want_v[2 * e], &hv, 2);
        } else {
          std::memcpy(&want_k[4 * e], &k[e], 4);
          std::memcpy(&want_v[4 * e], &v[e], 4);
        }
      }
      l.read_row(kp.data(), s, got.data());
      ASSERT_EQ(got, want_k) << "K slot " << s;
      l.read_row(vp.data(), s, got.data());
      ASSERT_EQ(got, want_v) << "V slot " << s;
    }
  }
}

// State files hold token rows, so a file saved from head-major pages loads into a memory whose
// pages split the same rows into a different number of heads, row for row.
TEST(KvPageLayout, StateFilesDoNotDependOnThePageLayout) {
  auto config = [](uint32_t heads) {
    MemoryConfig c;
    c.layers = {{LayerKind::kAttention, 12, 0, 0, heads}, {LayerKind::kRecurrent, 0, 3, 5}};
    c.n_vocab = 50;
    c.max_seqs = 4;
    c.page_size = 4;
    c.kv_type = GgmlType::F16;
    c.budget_bytes = 1 << 20;
    return c;
  };
  auto four = HybridMemory::create(config(4));
  auto one = HybridMemory::create(config(1));
  ASSERT_TRUE(four.ok() && one.ok());
  HybridMemory& m = **four;
  Batch b;
  for (int i = 0; i < 10; ++i) b.add(i + 3, i, 1, i == 9);
  auto plan = m.begin_batch(b);
  ASSERT_TRUE(plan.ok());
  const KvPageLayout& l = m.kv_layout(0);
  ASSERT_EQ(l.n_heads, 4u);
  ASSERT_EQ(l.head_dim, 3u);
  std::vector<std::vector<uint8_t>> k_rows, v_rows;
  for (size_t u = 0; u < (*plan)->ubatches.size(); ++u) {
    const Ubatch& ub = (*plan)->ubatches[u];
    for (size_t r = 0; r < ub.runs.size(); ++r) {
      for (uint32_t t = 0; t < ub.runs[r].n_tokens; ++t) {
        const KvSlot s = m.kv_slot(0, u, r, t);
        k_rows.push_back(random_bytes(l.row_bytes(), 1000 + k_rows.size()));
        v_rows.push_back(random_bytes(l.row_bytes(), 5000 + v_rows.size()));
        l.write_row(s.k_page, s.slot, k_rows.back().data());
        l.write_row(s.v_page, s.slot, v_rows.back().data());
      }
      const RecurrentRun rr = m.recurrent(1, u, r);
      for (uint64_t i = 0; i < rr.conv_floats; ++i) rr.conv_dst[i] = 1.0f + i;
      for (uint64_t i = 0; i < rr.ssm_floats; ++i) rr.ssm_dst[i] = 2.0f + i;
    }
  }
  ASSERT_TRUE(m.commit().ok());
  auto saved = m.save();
  ASSERT_TRUE(saved.ok());
  ASSERT_TRUE((*one)->load(saved->data(), saved->size()).ok());
  ASSERT_EQ((*one)->n_tokens(1), 10u);
  std::vector<uint8_t> got(l.row_bytes());
  for (uint32_t t = 0; t < 10; ++t) {
    (*one)->k_at(0, 1, t, got.data());
    ASSERT_EQ(got, k_rows[t]) << t;
    (*one)->v_at(0, 1, t, got.data());
    ASSERT_EQ(got, v_rows[t]) << t;
    m.k_at(0, 1, t, got.data());
    ASSERT_EQ(got, k_rows[t]) << t;
  }
  // And back: the one-head memory's file reloads into the four-head memory unchanged.
  auto again = (*one)->save();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *saved);
}

}  // namespace
}  // namespace chimera
