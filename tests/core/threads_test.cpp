// ThreadContext: every share of a job runs exactly once (on its worker, or on the caller when the
// worker has not started it), parallel_for covers each index once, and the spin-then-sleep
// hand-off survives many back-to-back jobs and idle gaps.
#include "core/threads.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
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
// The shares variant: each index once, ith a valid share, a share's calls never overlapping
// each other (per-share state set up by a share's first call needs no lock), with the workers
// running or held (the caller then runs every share).
TEST(ThreadContext, ParallelForBalancedSharesCoversEachIndexOncePerShare) {
  for (int nth : {1, 2, 3}) {
    ThreadContext ctx(nth);
    for (bool hold : {false, true}) {
      ctx.hold_workers_for_test(hold);
      for (int64_t n : {1, 5, 16, 100, 1000})
        for (int64_t grain : {1, 4, 16}) {
          std::vector<std::atomic<int>> seen(n);
          std::vector<std::atomic<int>> inside(nth);
          std::atomic<int> bad{0};
          ctx.parallel_for_balanced_shares(n, grain, [&](int ith, int64_t b, int64_t e) {
            if (ith < 0 || ith >= nth || b >= e || b % grain != 0) {
              ++bad;
              return;
            }
            if (inside[ith].fetch_add(1) != 0) ++bad;
            for (int64_t i = b; i < e; ++i) seen[i].fetch_add(1);
            inside[ith].fetch_sub(1);
          });
          EXPECT_EQ(bad.load(), 0) << nth << " " << n << " " << grain;
          for (int64_t i = 0; i < n; ++i)
            ASSERT_EQ(seen[i].load(), 1) << n << " " << grain << " " << i;
        }
      ctx.hold_workers_for_test(false);
    }
  }
}

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

// Busy-waits about `us` microseconds (sleep_for would hand the core to the other threads, and
// would mostly sleep far longer than asked).
void spin_for_us(int us) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  while (std::chrono::steady_clock::now() < end) {
  }
}

// Workers held back from claiming: the caller must run every share itself, with each share's
// own index, and the job must still end (nobody waits for a worker that never started).
TEST(ThreadContext, CallerRunsTheSharesOfWorkersThatHaveNotStarted) {
  for (int n : {2, 3, 4}) {
    ThreadContext ctx(n);
    const std::thread::id caller = std::this_thread::get_id();
    ctx.hold_workers_for_test(true);
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<std::atomic<int>> calls(n);
      std::atomic<int> elsewhere{0};
      ctx.run([&](int ith, int nth) {
        EXPECT_EQ(nth, n);
        calls[ith].fetch_add(1);
        if (std::this_thread::get_id() != caller) elsewhere.fetch_add(1);
      });
      for (int i = 0; i < n; ++i) ASSERT_EQ(calls[i].load(), 1) << "n=" << n << " share " << i;
      ASSERT_EQ(elsewhere.load(), 0) << "a held worker ran a share";
      // Every piece on the caller, the balanced tail included.
      std::vector<std::atomic<int>> hits(1000);
      ctx.parallel_for_balanced(1000, 4, [&](int64_t b, int64_t e) {
        if (std::this_thread::get_id() != caller) elsewhere.fetch_add(1);
        for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
      });
      for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(hits[i].load(), 1) << "i=" << i;
      ASSERT_EQ(elsewhere.load(), 0);
    }
    // Released, the workers find their old shares taken, and take part again in later jobs.
    ctx.hold_workers_for_test(false);
    std::atomic<int> elsewhere{0};
    for (int rep = 0; rep < 1000 && elsewhere.load() == 0; ++rep) {
      ctx.run([&](int ith, int) {
        if (ith == 0) spin_for_us(200);  // time for the workers to pick the job up
        if (std::this_thread::get_id() != caller) elsewhere.fetch_add(1);
      });
    }
    EXPECT_GT(elsewhere.load(), 0) << "released workers never ran a share";
  }
}

// A share its worker has claimed is waited for, never taken: the caller blocks inside share 0
// until the worker has started share 1, and run() must not return before share 1 has ended.
TEST(ThreadContext, CallerWaitsForAClaimedShare) {
  ThreadContext ctx(2);
  const std::thread::id caller = std::this_thread::get_id();
  for (int rep = 0; rep < 5; ++rep) {
    std::atomic<bool> started{false}, finished{false};
    std::atomic<int> share1_on_caller{0};
    ctx.run([&](int ith, int) {
      if (ith == 1) {
        if (std::this_thread::get_id() == caller) {
          share1_on_caller.fetch_add(1);
          return;
        }
        started.store(true);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        finished.store(true);
        return;
      }
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (!started.load() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    });
    EXPECT_TRUE(started.load());
    EXPECT_TRUE(finished.load()) << "run() returned before the worker's share ended";
    EXPECT_EQ(share1_on_caller.load(), 0) << "a claimed share was run twice";
  }
}

// Many jobs with random per-share delays (some shares long, some workers slow to start, idle
// gaps that put workers to sleep): whoever runs a share, each one runs exactly once per job.
TEST(ThreadContext, EveryShareOnceUnderStress) {
  for (int n : {2, 3, 4}) {
    ThreadContext ctx(n);
    std::mt19937 rng(1234 + n);
    std::vector<int> delay_us(n);
    for (int rep = 0; rep < 3000; ++rep) {
      for (int& d : delay_us) d = rng() % 4 == 0 ? static_cast<int>(rng() % 50) : 0;
      std::vector<std::atomic<int>> calls(n);
      ctx.run([&](int ith, int nth) {
        EXPECT_EQ(nth, n);
        spin_for_us(delay_us[ith]);
        calls[ith].fetch_add(1);
      });
      for (int i = 0; i < n; ++i)
        ASSERT_EQ(calls[i].load(), 1) << "n=" << n << " rep=" << rep << " share " << i;
      if (rep % 8 == 0) {  // the balanced split too, with a delay per piece now and then
        const int64_t m = 64 + rng() % 2000;
        std::vector<std::atomic<int>> hits(m);
        ctx.parallel_for_balanced(m, 1 + rng() % 8, [&](int64_t b, int64_t e) {
          if ((b & 7) == 0) spin_for_us(static_cast<int>(b % 13));
          for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
        });
        for (int64_t i = 0; i < m; ++i) ASSERT_EQ(hits[i].load(), 1) << "m=" << m << " i=" << i;
      }
      if (rep % 500 == 499) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

}  // namespace
}  // namespace chimera
