#include "core/threads.h"

#include <algorithm>

#include "core/status.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CHIMERA_CPU_RELAX() _mm_pause()
#else
#define CHIMERA_CPU_RELAX() ((void)0)
#endif

namespace chimera {
namespace {

// Spin iterations before sleeping (about 0.2 ms on Zen 4): longer than the gap between the
// kernels of one decode step, far shorter than a human-visible idle period.
constexpr int kSpinIterations = 1 << 13;
// After kYieldAfter spins (~25 us, longer than a decode step's usual waits, so a quiet machine
// makes no system call), the spinner yields its core every 64 spins: when more threads are
// runnable than there are cores (one other busy process on two cores is enough), the thread it
// waits for may be the one queued behind it, and a spinner that holds its core to the end of its
// time slice stalls the pool for milliseconds per hand-off (tg64 of the 302M Q4_0 model beside
// one busy loop: 25 tokens/s spinning, 40 yielding).
constexpr int kYieldAfter = 1 << 10;
inline void spin_pause(int i) {
  CHIMERA_CPU_RELAX();
  if (i >= kYieldAfter && (i & 63) == 63) std::this_thread::yield();
}

}  // namespace

ThreadContext::ThreadContext(int n_threads)
    : n_threads_(std::max(1, n_threads)), claims_(new Claim[n_threads_]) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadContext::~ThreadContext() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_relaxed);
    hold_.store(false, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_start_.notify_all();
  for (auto& t : workers_) t.join();
}

// The sleep protocols are Dekker-style: a sleeper announces itself (sleepers_, caller_sleeping_)
// and then checks its condition under the mutex; the waker changes the condition and then reads
// the announcement (all sequentially consistent), so one of the two always sees the other, and
// the waker takes the mutex before notifying, so the notify cannot fall between the sleeper's
// check and its wait. Nobody sleeping: no lock, no notify.
void ThreadContext::worker_loop(int ith) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int i = 0; g == seen && i < kSpinIterations; ++i) {
      spin_pause(i);
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_start_.wait(lock, [&] {
          g = generation_.load(std::memory_order_seq_cst);
          return g != seen;
        });
      }
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
    }
    seen = g;
    if (stop_.load(std::memory_order_relaxed)) return;
    while (hold_.load(std::memory_order_relaxed)) std::this_thread::yield();
    // The caller may have taken this share already (and finished the job, and even started later
    // ones: then the claim holds a newer generation and the exchange fails just the same). A
    // claim that fails leaves pending_ alone: the caller counts the shares it runs.
    uint64_t free_gen = g - 1;
    if (!claims_[ith].generation.compare_exchange_strong(free_gen, g, std::memory_order_relaxed))
      continue;
    job_(ith, n_threads_);
    if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        caller_sleeping_.load(std::memory_order_seq_cst)) {
      std::lock_guard<std::mutex> lock(mu_);
      cv_done_.notify_one();
    }
  }
}

void ThreadContext::run(FnRef<void(int, int)> fn) {
  CHIMERA_CHECK(!running_.exchange(true, std::memory_order_acquire),
                "ThreadContext::run is not reentrant");
  if (n_threads_ == 1) {
    fn(0, 1);
    running_.store(false, std::memory_order_release);
    return;
  }
  regions_.store(regions_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  job_ = fn;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  // Publishes job_ and pending_. Only run() and the destructor move the generation, so g is
  // this job's.
  const uint64_t g = generation_.fetch_add(1, std::memory_order_seq_cst) + 1;
  if (sleepers_.load(std::memory_order_seq_cst) != 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    cv_start_.notify_all();
  }
  fn(0, n_threads_);
  // Shares whose workers have not started yet (descheduled, or still waking up) are run here
  // rather than waited for. On a quiet machine the workers have claimed theirs long ago: one
  // load of each claim line, and none when the workers are already done.
  if (pending_.load(std::memory_order_acquire) != 0) {
    int taken = 0;
    for (int i = 1; i < n_threads_; ++i) {
      uint64_t free_gen = g - 1;
      if (claims_[i].generation.load(std::memory_order_relaxed) == free_gen &&
          claims_[i].generation.compare_exchange_strong(free_gen, g, std::memory_order_relaxed)) {
        fn(i, n_threads_);
        ++taken;
      }
    }
    if (taken != 0) pending_.fetch_sub(taken, std::memory_order_relaxed);
  }
  for (int i = 0; pending_.load(std::memory_order_acquire) != 0 && i < kSpinIterations; ++i) {
    spin_pause(i);
  }
  if (pending_.load(std::memory_order_acquire) != 0) {
    caller_sleeping_.store(true, std::memory_order_seq_cst);
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_done_.wait(lock, [&] { return pending_.load(std::memory_order_seq_cst) == 0; });
    }
    caller_sleeping_.store(false, std::memory_order_relaxed);
  }
  running_.store(false, std::memory_order_release);
}

void ThreadContext::parallel_for(int64_t n, int64_t grain, FnRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t pieces = (n + grain - 1) / grain;
  if (n_threads_ == 1 || pieces == 1) {
    fn(0, n);
    return;
  }
  run([&](int ith, int nth) {
    const int64_t per = (pieces + nth - 1) / nth;
    const int64_t b = std::min(n, ith * per * grain);
    const int64_t e = std::min(n, (ith + 1) * per * grain);
    if (b < e) fn(b, e);
  });
}

void ThreadContext::parallel_for_balanced(int64_t n, int64_t grain,
                                          FnRef<void(int64_t, int64_t)> fn) {
  parallel_for_balanced_shares(n, grain, [&](int, int64_t b, int64_t e) { fn(b, e); });
}

void ThreadContext::parallel_for_balanced_shares(int64_t n, int64_t grain,
                                                 FnRef<void(int, int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t pieces = (n + grain - 1) / grain;
  const int64_t nth = n_threads_;
  const int64_t home = pieces * 3 / (4 * nth);  // pieces each thread takes first
  if (nth == 1 || pieces == 1) {
    fn(0, 0, n);
    return;
  }
  if (home == 0) {  // too few pieces to share out: parallel_for's contiguous chunks
    run([&](int ith, int nt) {
      const int64_t per = (pieces + nt - 1) / nt;
      const int64_t b = std::min(n, ith * per * grain);
      const int64_t e = std::min(n, (ith + 1) * per * grain);
      if (b < e) fn(ith, b, e);
    });
    return;
  }
  // The tail in chunks of about 1/32 of the pieces (2 threads): few enough that the shared
  // counter costs little, small enough that the last one ends the job soon after the other.
  const int64_t tail = home * nth;
  const int64_t chunk = std::max<int64_t>(1, (pieces - tail + 4 * nth - 1) / (4 * nth));
  next_piece_.store(tail, std::memory_order_relaxed);  // published by run()'s hand-off
  run([&](int ith, int) {
    // Thread nth - 1's share ends where the tail begins, so it streams on without a gap.
    fn(ith, ith * home * grain, std::min(n, (ith + 1) * home * grain));
    for (;;) {
      const int64_t p = next_piece_.fetch_add(chunk, std::memory_order_relaxed);
      if (p >= pieces) break;
      fn(ith, p * grain, std::min(n, std::min(pieces, p + chunk) * grain));
    }
  });
}

}  // namespace chimera
