// ThreadContext: a persistent worker pool passed explicitly to kernels (no global pools, no
// OpenMP). Work is split over *outputs* (rows, heads, sequences), never over a reduction, so the
// result of every element is independent of the thread count.
//
// Decode calls run() hundreds of times per token, each for tens of microseconds, so hand-off is
// spin-then-wait: workers and the caller spin briefly on atomics (catching back-to-back jobs
// without a syscall) and only then sleep on a condition variable (so an idle pool costs no CPU).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace chimera {

class ThreadContext {
 public:
  // n_threads >= 1; the calling thread is one of them (n_threads - 1 workers are spawned).
  explicit ThreadContext(int n_threads = 1);
  ~ThreadContext();
  ThreadContext(const ThreadContext&) = delete;
  ThreadContext& operator=(const ThreadContext&) = delete;

  int n_threads() const { return n_threads_; }

  // Runs fn(thread_index, n_threads) on every thread and waits for all of them. Not reentrant:
  // fn must not call run() on the same context.
  void run(const std::function<void(int ith, int nth)>& fn);

  // Splits [0, n) into contiguous chunks of whole `grain`-sized pieces, one per thread, and calls
  // fn(begin, end) on each non-empty chunk. Each index is handled by exactly one call.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // As parallel_for, for work whose pieces are independent of which thread runs them (matmul
  // columns, scan heads): each thread first takes a fixed contiguous share of about three
  // quarters of the pieces, then the rest goes in small chunks to whichever thread is free first.
  // A thread that started late or was slowed (by a cold cache, or by another process on a shared
  // machine) no longer holds the others at the barrier. fn may be called several times per
  // thread, always on whole grains; each index is handled by exactly one call.
  void parallel_for_balanced(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker_loop(int ith);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_start_;
  std::condition_variable cv_done_;
  const std::function<void(int, int)>* job_ = nullptr;  // published by generation_ (release)
  std::atomic<uint64_t> generation_{0};                 // +1 per job (and once to stop)
  std::atomic<int> pending_{0};                         // workers still running the job
  std::atomic<bool> stop_{false};
  std::atomic<bool> running_{false};                // catches reentrant / concurrent run() calls
  alignas(64) std::atomic<int64_t> next_piece_{0};  // parallel_for_balanced's shared tail
};

}  // namespace chimera
