// Many concurrent requests over shared conversation prefixes, with random cancellations, under
// a small cache budget: every request that completes equals its solo cold run bit for bit, and
// afterwards only cache entries are left in memory, within the budget.
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "serving/engine_testing.h"
#include "serving_test_util.h"

namespace chimera::serving {
namespace {

using testutil::Fixture;
using testutil::Outcome;

TEST(EngineStress, ConcurrentCancellingRequestsStayExactAndLeaveOnlyTheCache) {
  Fixture f;
  std::mt19937 rng(42);
  const char* heads[] = {"In the beginning", "And God said", "The LORD is my shepherd"};
  const char* tails[] = {" and the earth", " let there be light", " I shall not want",
                         " and the darkness"};
  std::vector<RequestParams> reqs;
  std::vector<int> cancel_after;
  for (int i = 0; i < 40; ++i) {
    RequestParams p = f.request(std::string(heads[rng() % 3]) + tails[rng() % 4] + tails[rng() % 4],
                                static_cast<int>(2 + rng() % 10));
    const auto h = f.encode(heads[rng() % 3]);
    p.boundaries = {static_cast<uint32_t>(std::min(h.size(), p.prompt.size()))};
    p.sampling = f.hot_sampling(rng() % 5);
    p.n = 1 + static_cast<int>(rng() % 2);
    p.top_logprobs = static_cast<int>(rng() % 3);
    reqs.push_back(p);
    cancel_after.push_back(rng() % 4 == 0 ? static_cast<int>(rng() % 4) : -1);
  }
  EngineConfig cfg = f.config();
  cfg.n_parallel = 6;
  cfg.queue_capacity = 64;
  cfg.step_token_budget = 16;
  cfg.cache_mem = 1 << 20;  // a few conversations with their snapshots, not all
  auto engine = f.engine(cfg);
  const uint64_t baseline = engine->metrics().memory_bytes;
  std::vector<Outcome> got(reqs.size());
  std::vector<bool> cancelled(reqs.size(), false);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < reqs.size(); ++i) {
    clients.emplace_back([&, i] {
      auto h = engine->submit(reqs[i]);
      ASSERT_TRUE(h.ok()) << h.status().ToString();
      if (cancel_after[i] < 0) {
        got[i] = testutil::collect(**h);
        return;
      }
      for (int seen = 0; seen < cancel_after[i];) {
        auto ev = (*h)->next(std::chrono::milliseconds(5000));
        if (!ev || ev->kind != Event::Kind::kDelta) break;
        ++seen;
      }
      (*h)->cancel();
      cancelled[i] = true;
      while ((*h)->next(std::chrono::milliseconds(5000))) {
      }
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 0; i < 200 && engine->metrics().requests_running > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const MetricsSnapshot m = engine->metrics();
  EXPECT_EQ(m.requests_running, 0u);
  EXPECT_EQ(m.requests_queued, 0u);
  EXPECT_LE(m.cache_bytes, cfg.cache_mem);
  EXPECT_EQ(m.memory_bytes, baseline + m.cache_bytes);
  EngineConfig none = f.config();
  none.cache_mem = 0;
  auto cold = f.engine(none);
  int checked = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (cancelled[i]) continue;
    ASSERT_TRUE(got[i].ok) << "request " << i << ": " << got[i].error.ToString();
    testutil::expect_same(f.run(*cold, reqs[i]), got[i], "request " + std::to_string(i));
    ++checked;
  }
  EXPECT_GT(checked, 20);
  EXPECT_GT(m.cache_evictions, 0u);
  EXPECT_GT(m.cache_hits, 0u) << engine->cache_info().dump();
}

}  // namespace
}  // namespace chimera::serving
