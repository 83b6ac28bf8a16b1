// ThreadContext: a persistent worker pool passed explicitly to kernels (no global pools, no
// OpenMP). Work is split over *outputs* (rows, heads, sequences), never over a reduction, so the
// result of every element is independent of the thread count.
//
// Decode calls run() hundreds of times per token, each for tens of microseconds, so hand-off is
// spin-then-wait: workers and the caller spin on atomics (catching back-to-back jobs without a
// syscall or a lock) and only then sleep on a condition variable (so an idle pool costs no CPU).
// The mutex and the condition variables are touched only when someone actually sleeps.
//
// Each thread index's share of a job is claimed exactly once: by its worker when it picks the job
// up, or else by the caller once its own share is done. A worker that is descheduled (another
// process on a shared machine) or still waking from its sleep therefore costs the job nothing: the
// caller runs that share itself instead of waiting for the worker to start. A share a worker has
// claimed is always waited for.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace chimera {

// A non-owning reference to a callable: what run() and parallel_for() take instead of a
// std::function, which heap-allocates a lambda capturing more than two pointers on every call.
// Valid only while the referenced callable lives: pass a lambda straight as the argument (it lives
// to the end of the call), never keep an FnRef made from a temporary in a variable.
template <class Sig>
class FnRef;
template <class R, class... Args>
class FnRef<R(Args...)> {
 public:
  FnRef() = default;  // empty: calling it is undefined (ThreadContext's idle job slot)
  template <class F, class = std::enable_if_t<!std::is_same_v<std::remove_cvref_t<F>, FnRef> &&
                                              std::is_invocable_r_v<R, F&, Args...>>>
  FnRef(F&& f)  // NOLINT(google-explicit-constructor): lambdas convert implicitly
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, Args... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(a)...);
        }) {}
  R operator()(Args... a) const { return call_(obj_, std::forward<Args>(a)...); }
  explicit operator bool() const { return call_ != nullptr; }

 private:
  void* obj_ = nullptr;
  R (*call_)(void*, Args...) = nullptr;
};

class ThreadContext {
 public:
  // n_threads >= 1; the calling thread is one of them (n_threads - 1 workers are spawned).
  explicit ThreadContext(int n_threads = 1);
  ~ThreadContext();
  ThreadContext(const ThreadContext&) = delete;
  ThreadContext& operator=(const ThreadContext&) = delete;

  int n_threads() const { return n_threads_; }

  // Calls fn(ith, n_threads) once for every ith in [0, n_threads) and waits for all the calls.
  // Not reentrant: fn must not call run() on the same context.
  // The rule for fn: ith names a share of the work, not a thread. Share ith runs on its worker or,
  // when that worker has not started it by the time the caller is done with its own share, on the
  // calling thread (after share 0, so one thread may run several shares one after the other). So
  // per-share state is indexed by ith (or is local to the call), never tied to the physical
  // thread: no thread_local, no thread ids.
  void run(FnRef<void(int ith, int nth)> fn);

  // Splits [0, n) into contiguous chunks of whole `grain`-sized pieces, one per thread, and calls
  // fn(begin, end) on each non-empty chunk. Each index is handled by exactly one call. A single
  // piece runs on the calling thread without a hand-off.
  void parallel_for(int64_t n, int64_t grain, FnRef<void(int64_t, int64_t)> fn);

  // As parallel_for, for work whose pieces are independent of which thread runs them (matmul
  // columns, scan heads): each thread first takes a fixed contiguous share of about three
  // quarters of the pieces, then the rest goes in small chunks to whichever thread is free first.
  // A thread that started late or was slowed (by a cold cache, or by another process on a shared
  // machine) no longer holds the others at the barrier. fn may be called several times per
  // thread, always on whole grains; each index is handled by exactly one call.
  void parallel_for_balanced(int64_t n, int64_t grain, FnRef<void(int64_t, int64_t)> fn);
  // The same, fn also told the share ith that makes the call: a share's calls run one after the
  // other on one thread, so per-share state (indexed by ith, set up by the share's first call)
  // needs no lock.
  void parallel_for_balanced_shares(int64_t n, int64_t grain,
                                    FnRef<void(int ith, int64_t, int64_t)> fn);

  // Parallel regions handed to the workers so far (run() calls with more than one thread): what
  // a decode step's synchronisation cost is counted in (tests and benchmarks read it).
  uint64_t regions() const { return regions_.load(std::memory_order_relaxed); }

  // Tests only: while held, workers that see a new job wait before claiming their share, so the
  // caller runs every share itself (what a descheduled worker looks like, made deterministic).
  void hold_workers_for_test(bool hold) { hold_.store(hold, std::memory_order_relaxed); }

 private:
  void worker_loop(int ith);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_start_;
  std::condition_variable cv_done_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> running_{false};  // catches reentrant / concurrent run() calls
  std::atomic<uint64_t> regions_{0};
  // Hand-off words on two cache lines: the caller writes the first (the job, published by
  // generation_), the workers the second, so a worker picks up a job in one line transfer.
  alignas(64) std::atomic<uint64_t> generation_{0};  // +1 per job (and once to stop)
  FnRef<void(int, int)> job_;                        // published by generation_ (release)
  std::atomic<bool> hold_{false};                    // hold_workers_for_test
  std::atomic<int> sleepers_{0};                     // workers asleep or about to sleep
  alignas(64) std::atomic<int> pending_{0};          // worker shares not yet finished
  std::atomic<bool> caller_sleeping_{false};         // the caller waits on cv_done_
  alignas(64) std::atomic<int64_t> next_piece_{0};   // parallel_for_balanced's shared tail
  // Per worker index, on its own cache line (its worker writes it once per job): the generation
  // whose share was last claimed. Share ith of job g is free while it holds g - 1; whoever moves
  // it to g (the worker, or the caller stealing it) runs that share.
  struct alignas(64) Claim {
    std::atomic<uint64_t> generation{0};
  };
  std::unique_ptr<Claim[]> claims_;
};

}  // namespace chimera
