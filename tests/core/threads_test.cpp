// ThreadContext: every thread runs each job exactly once, parallel_for covers each index once,
// and the spin-then-sleep hand-off survives many back-to-back jobs and idle gaps.
#include "core/threads.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace chimera {
namespace {

TEST(ThreadContext, RunCallsEveryThreadOnce) {
  for (int n : {1, 2, 3, 5}) {
    ThreadContext ctx(n);
    EXPECT_EQ(ctx.n_threads(), n);
    std::vector<std::atomic<int>> calls(n);
    for (int rep = 0; rep < 100; ++rep) {
      ctx.run([&](int ith, int nth) {
        EXPECT_EQ(nth, n);
        calls[ith].fetch_add(1);
      });
    }
    for (int i = 0; i < n; ++i) EXPECT_EQ(calls[i].load(), 100) << "thread " << i;
  }
}

TEST(ThreadContext, ParallelForCoversEachIndexOnce) {
  ThreadContext ctx(3);
  for (int64_t n : {1, 2, 7, 16, 17, 100, 1000}) {
    for (int64_t grain : {1, 4, 16, 64}) {
      std::vector<std::atomic<int>> hits(n);
      ctx.parallel_for(n, grain, [&](int64_t b, int64_t e) {
        EXPECT_EQ(b % grain, 0) << "chunks start on whole grains";
        for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
    }
  }
  ctx.parallel_for(0, 4, [&](int64_t, int64_t) { ADD_FAILURE() << "called for n = 0"; });
}

TEST(ThreadContext, ParallelForBalancedCoversEachIndexOnce) {
  for (int threads : {1, 2, 3}) {
    ThreadContext ctx(threads);
    for (int64_t n : {1, 2, 7, 16, 17, 100, 1000, 3376}) {
      for (int64_t grain : {1, 4, 16, 64}) {
        std::vector<std::atomic<int>> hits(n);
        ctx.parallel_for_balanced(n, grain, [&](int64_t b, int64_t e) {
          EXPECT_EQ(b % grain, 0) << "chunks start on whole grains";
          EXPECT_LT(b, e);
          for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[i].load(), 1) << "threads=" << threads << " n=" << n << " i=" << i;
      }
    }
    ctx.parallel_for_balanced(0, 4, [&](int64_t, int64_t) { ADD_FAILURE() << "called for 0"; });
  }
}

// A thread held up in its own share leaves the shared tail to the other: thread 0 (the caller)
// waits in its share until thread 1 has done everything else, and then finds nothing left.
TEST(ThreadContext, ParallelForBalancedTailGoesToTheFreeThread) {
  ThreadContext ctx(2);
  std::atomic<int64_t> others{0}, mine{0};
  const std::thread::id caller = std::this_thread::get_id();
  ctx.parallel_for_balanced(1000, 1, [&](int64_t b, int64_t e) {
    if (std::this_thread::get_id() != caller) {
      others.fetch_add(e - b);
      return;
    }
    mine.fetch_add(e - b);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (others.load() < 1000 - 375 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  EXPECT_EQ(mine.load(), 375);  // its own share (3/8 of the pieces), none of the tail
  EXPECT_EQ(others.load(), 625);
}

TEST(ThreadContext, ManyShortJobsAndIdleGaps) {
  ThreadContext ctx(2);
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 20000; ++rep) {
    ctx.run([&](int ith, int) { sum.fetch_add(ith + 1); });
  }
  EXPECT_EQ(sum.load(), 20000 * 3);
  // Long enough for workers to stop spinning and sleep; the next job must still wake them.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ctx.run([&](int ith, int) { sum.fetch_add(ith + 1); });
  EXPECT_EQ(sum.load(), 20000 * 3 + 3);
}

TEST(ThreadContext, RegionsCountsHandOffsOnly) {
  ThreadContext two(2), one(1);
  int calls = 0;
  two.run([&](int ith, int) { calls += ith == 0; });
  two.parallel_for(100, 10, [&](int64_t, int64_t) {});
  two.parallel_for(5, 10, [&](int64_t, int64_t) { ++calls; });  // one piece: the caller alone
  two.parallel_for_balanced(1000, 1, [&](int64_t, int64_t) {});
  EXPECT_EQ(two.regions(), 3u);
  EXPECT_EQ(calls, 2);
  one.run([&](int, int) { ++calls; });
  one.parallel_for(100, 10, [&](int64_t, int64_t) {});
  EXPECT_EQ(one.regions(), 0u);
  EXPECT_EQ(calls, 3);
}

TEST(ThreadContext, CallerSleepsUntilASlowWorkerFinishes) {
  // The worker outlasts the caller's spin: the caller must sleep and be woken, every time.
  ThreadContext ctx(2);
  std::atomic<int> done{0};
  for (int rep = 0; rep < 5; ++rep) {
    ctx.run([&](int ith, int) {
      if (ith == 1) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      done.fetch_add(1);
    });
    EXPECT_EQ(done.load(), 2 * (rep + 1));
  }
}

TEST(ThreadContext, ResultsVisibleToCaller) {
  ThreadContext ctx(2);
  std::vector<int> out(1000, 0);  // plain writes, published by run()'s completion
  for (int rep = 1; rep <= 50; ++rep) {
    ctx.parallel_for(1000, 8, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] = rep;
    });
    for (int v : out) ASSERT_EQ(v, rep);
  }
}

}  // namespace
}  // namespace chimera
