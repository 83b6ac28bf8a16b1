// Sliding-window layers in the hybrid memory, on the Gemma 3 fixture (five window-8 layers and a
// global one, from transformers): a long sequence holds its window's pages, not its length, and
// every path (decode, rollback behind the released rows, fork, snapshot, save/load) gives the
// logits of a cold run in a memory that releases nothing, bit for bit (memcmp).
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "runtime/context.h"

namespace chimera {
namespace {

constexpr uint32_t kPage = 4;
constexpr uint32_t kReserve = 4;

class WindowMemory : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = load_model(std::string(CHIMERA_SOURCE_DIR) +
                        "/tests/fixtures/models/gemma3/model-f32.gguf");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(*m);
    for (const LayerWeights& l : model_->layers) window_ = std::max(window_, l.n_swa);
    ASSERT_EQ(window_, 8u);
  }

  ContextParams params(uint32_t reserve, uint32_t snapshot_every = 0) const {
    ContextParams p;
    p.n_threads = 1;
    p.max_seqs = 4;
    p.page_size = kPage;
    p.kv_type = GgmlType::F32;
    p.memory_budget = 64ull << 20;
    p.set_snapshot_policy(SnapshotPolicy::one_shot());
    p.snapshot_interval = snapshot_every;
    p.window_reserve = reserve;
    return p;
  }

  std::unique_ptr<Context> make(const ContextParams& p) {
    auto ctx = Context::create(*model_, p);
    EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
    return ctx.ok() ? std::move(*ctx) : nullptr;
  }

  // Next-token logits of a cold run over toks in a memory that keeps every row.
  std::vector<float> cold(const std::vector<int32_t>& toks) {
    auto ctx = make(params(UINT32_MAX));
    Batch b;
    for (size_t i = 0; i < toks.size(); ++i)
      b.add(toks[i], static_cast<int32_t>(i), 0, i + 1 == toks.size());
    EXPECT_TRUE(ctx->decode(b).ok());
    const float* l = ctx->logits(toks.size() - 1);
    return std::vector<float>(l, l + model_->hp.n_vocab);
  }

  // Decodes `tok` onto seq (which holds `toks`) and checks the logits against a cold run.
  void step_and_check(Context& ctx, int32_t seq, std::vector<int32_t>& toks, int32_t tok) {
    Batch b;
    b.add(tok, static_cast<int32_t>(toks.size()), seq, true);
    ASSERT_TRUE(ctx.decode(b).ok());
    toks.push_back(tok);
    const std::vector<float> want = cold(toks);
    ASSERT_EQ(std::memcmp(ctx.logits(0), want.data(), want.size() * 4), 0)
        << "seq " << seq << " at " << toks.size() << " tokens";
  }

  int32_t random_token() { return static_cast<int32_t>(rng_() % model_->hp.n_vocab); }

  std::unique_ptr<Model> model_;
  uint32_t window_ = 0;
  std::mt19937 rng_{20261206};
};

TEST_F(WindowMemory, LongSequenceStaysWithinItsWindow) {
  auto rel = make(params(kReserve));
  auto keep = make(params(UINT32_MAX));
  const uint32_t n_total = 10 * window_;  // ten windows
  // Most window pages a sequence may hold: the pages overlapping its window + reserve, plus
  // the page being filled.
  const uint32_t bound = (window_ + kReserve + kPage - 1) / kPage + 1;
  uint32_t n = 0;
  for (uint32_t step = 0; n < n_total; ++step) {
    const uint32_t k = step == 0 ? 6 : 1;  // a prompt, then decoding
    Batch b;
    for (uint32_t i = 0; i < k; ++i)
      b.add(random_token(), static_cast<int32_t>(n + i), 0, i + 1 == k);
    ASSERT_TRUE(rel->decode(b).ok());
    ASSERT_TRUE(keep->decode(b).ok());
    n += k;
    ASSERT_EQ(std::memcmp(rel->logits(k - 1), keep->logits(k - 1), model_->hp.n_vocab * 4), 0)
        << "at " << n << " tokens";
    const MemoryUsage u = rel->memory().usage(), w = keep->memory().usage();
    const uint32_t pages = (n + kPage - 1) / kPage;
    ASSERT_EQ(u.pages_in_use, pages);  // the global layer and the token ids keep everything
    ASSERT_LE(u.window_pages_in_use, bound) << "at " << n << " tokens";
    ASSERT_EQ(w.window_pages_in_use, pages);  // nothing released
    ASSERT_EQ(u.seqs.size(), 1u);
    ASSERT_EQ(u.seqs[0].window_pages, u.window_pages_in_use);
  }
  const MemoryUsage u = rel->memory().usage(), w = keep->memory().usage();
  EXPECT_EQ(rel->memory().window_from(0) / kPage + u.window_pages_in_use, n / kPage);
  EXPECT_LT(u.window_kv_bytes * 4, w.window_kv_bytes);
  EXPECT_LT(u.kv_bytes, w.kv_bytes);
  EXPECT_NE(u.summary().find("sliding-window layers"), std::string::npos) << u.summary();
  // And the logits are a cold run's.
  std::vector<int32_t> toks = rel->memory().tokens(0);
  step_and_check(*rel, 0, toks, random_token());
}

TEST_F(WindowMemory, RollbackForkSnapshotAndSaveLoadAreExact) {
  auto ctx = make(params(kReserve, 16));  // automatic snapshots every 16 tokens
  std::vector<int32_t> toks;
  Batch b;
  for (uint32_t i = 0; i < 70; ++i) {
    toks.push_back(random_token());
    b.add(toks.back(), static_cast<int32_t>(i), 0, false);
  }
  ASSERT_TRUE(ctx->decode(b).ok());
  HybridMemory& mem = ctx->memory();
  ASSERT_GT(mem.window_from(0), 40u);
  // An explicit snapshot and a fork at 70 tokens.
  auto snap = mem.snapshot(0);
  ASSERT_TRUE(snap.ok());
  const std::vector<int32_t> at_snap = toks;
  ASSERT_TRUE(mem.seq_cp(0, 1).ok());
  std::vector<int32_t> fork = toks;

  // Rollback within the reserve: no replay.
  const uint64_t replayed0 = ctx->stats().tokens_replayed;
  ASSERT_TRUE(ctx->seq_rm(0, 68, -1).ok());
  toks.resize(68);
  EXPECT_EQ(ctx->stats().tokens_replayed, replayed0);
  step_and_check(*ctx, 0, toks, random_token());
  // Rollback behind the released rows: the snapshot at 32 is restored and 3 tokens replayed.
  ASSERT_TRUE(ctx->seq_rm(0, 35, -1).ok());
  toks.resize(35);
  EXPECT_EQ(ctx->stats().tokens_replayed, replayed0 + 3);
  step_and_check(*ctx, 0, toks, random_token());
  // The fork kept its rows.
  for (int i = 0; i < 3; ++i) step_and_check(*ctx, 1, fork, random_token());
  // The explicit snapshot restores onto another sequence.
  ASSERT_TRUE(mem.restore(2, *snap).ok());
  std::vector<int32_t> restored = at_snap;
  step_and_check(*ctx, 2, restored, random_token());
  // A middle removal behind the window replays from the start (its one snapshot is later).
  ASSERT_TRUE(ctx->seq_rm(2, 20, 30).ok());
  restored.erase(restored.begin() + 20, restored.begin() + 30);
  step_and_check(*ctx, 2, restored, random_token());
  // Save/load of a sequence (format version 2 keeps only the held window rows) round-trips.
  auto bytes = mem.save_seq(1);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  ASSERT_TRUE(mem.load_seq(bytes->data(), bytes->size(), 3).ok());
  EXPECT_EQ(mem.window_from(3), mem.window_from(1));
  std::vector<int32_t> loaded = fork;
  step_and_check(*ctx, 3, loaded, random_token());
  // Its snapshots came along with their window rows: a rollback behind the window replays.
  ASSERT_TRUE(ctx->seq_rm(3, 50, -1).ok());
  loaded.resize(50);
  step_and_check(*ctx, 3, loaded, random_token());
  // And a whole-memory save loads into a fresh memory with the same results.
  auto all = mem.save();
  ASSERT_TRUE(all.ok());
  auto other = make(params(kReserve, 16));
  ASSERT_TRUE(other->memory().load(all->data(), all->size()).ok());
  EXPECT_EQ(other->memory().tokens(1), mem.tokens(1));
  EXPECT_EQ(other->memory().window_from(1), mem.window_from(1));
  step_and_check(*other, 0, toks, random_token());
  step_and_check(*other, 2, restored, random_token());
  ASSERT_TRUE(mem.release(*snap).ok());
}

}  // namespace
}  // namespace chimera
