// Thread pool: workers wait for a job generation number to change, spinning briefly first
// (a decode step issues a few hundred parallel_for calls per token, so the next job usually
// arrives within microseconds) and then sleeping on the atomic (a futex on Linux). The caller
// runs range 0 itself and waits for the others the same way.
#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "core/error.h"
#include "core/memory_limits.h"
#include "core/pool_profile.h"

namespace trit::engine {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// An idle thread polls for up to kSpin before it sleeps (the next job of a decode step usually
// comes within microseconds): a short burst of pause instructions, then sched_yield, so that
// on an oversubscribed machine the thread it waits for can have this core. (Pure pause
// spinning cost ~400 us per parallel_for on a 2-core machine shared with a compiler; with the
// yield, ~4 us.)
constexpr auto kSpin = std::chrono::microseconds(200);

// Polls while a == old, for at most kSpin; returns the last value seen.
template <class T>
T spin_while_equal(const std::atomic<T>& a, T old) {
  T v = a.load(std::memory_order_acquire);
  if (v != old) return v;
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      cpu_relax();
      v = a.load(std::memory_order_acquire);
      if (v != old) return v;
    }
    if (std::chrono::steady_clock::now() - start > kSpin) return v;
    std::this_thread::yield();
  }
}

// Blocks while a == old: spins first (when `spin`), then sleeps. Sleepers announce themselves
// in `sleepers` so that the writer only makes the wake-up system call when someone sleeps:
// the writer stores to `a` and then reads `sleepers`, the sleeper increments `sleepers` and
// then reads `a` (all sequentially consistent), so one of the two sees the other.
template <class T>
T wait_while_equal(const std::atomic<T>& a, T old, std::atomic<int>& sleepers, bool spin) {
  T v = spin ? spin_while_equal(a, old) : a.load(std::memory_order_acquire);
  if (v != old) return v;
  sleepers.fetch_add(1);
  while ((v = a.load()) == old) a.wait(old);
  sleepers.fetch_sub(1);
  return v;
}

template <class T>
void wake(std::atomic<T>& a, const std::atomic<int>& sleepers, bool all) {
  if (sleepers.load() == 0) return;
  if (all) {
    a.notify_all();
  } else {
    a.notify_one();
  }
}

// Work run by a pool flushes denormal results and inputs to zero (as GPUs do): an Intel Xeon
// handles them in microcode assists, and the backward pass of a model whose attention scores
// spread widely makes many (softmax weights below 1e-38). Measured on a 16-core Xeon: 125m
// training 1.49x faster at 2 threads, 1.2x at 16; no change on AMD. TRIT_FTZ=0 keeps IEEE
// denormals. The workers set it once; the caller's thread only while it runs a parallel_for
// (an application's own thread keeps its floating-point mode).
[[maybe_unused]] constexpr unsigned kFlushBits = 0x8040;  // MXCSR: FTZ (bit 15) and DAZ (bit 6)

[[maybe_unused]] bool flush_denormals() {
  static const bool on = [] {
    const char* e = std::getenv("TRIT_FTZ");
    return !(e && e[0] == '0');
  }();
  return on;
}

void flush_denormals_here() {
#if defined(__x86_64__) || defined(__i386__)
  if (flush_denormals()) _mm_setcsr(_mm_getcsr() | kFlushBits);
#endif
}

// The caller's mode for the length of one parallel_for.
class CallerFlush {
 public:
  CallerFlush() {
#if defined(__x86_64__) || defined(__i386__)
    if (flush_denormals()) {
      saved_ = _mm_getcsr();
      _mm_setcsr(saved_ | kFlushBits);
      set_ = true;
    }
#endif
  }
  ~CallerFlush() {
#if defined(__x86_64__) || defined(__i386__)
    if (set_) _mm_setcsr(saved_);
#endif
  }
  CallerFlush(const CallerFlush&) = delete;
  CallerFlush& operator=(const CallerFlush&) = delete;

 private:
  unsigned saved_ = 0;
  bool set_ = false;
};

}  // namespace

struct ThreadPool::State {
  int n_threads = 1;
  bool spin = true;  // false when there are more threads than processors
  std::vector<std::thread> workers;

  // The job. Written by the caller before it bumps `generation`, read by workers after they
  // see the new generation (release / acquire).
  const std::function<void(int64_t, int64_t, int)>* fn = nullptr;
  int64_t n = 0;
  int64_t align = 1;
  int64_t chunk = 0;  // > 0: chunks taken from `next` (parallel_for_dynamic)
  bool stop = false;

  std::atomic<uint32_t> generation{0};  // bumped once per job (and to stop)
  std::atomic<int> worker_sleepers{0};
  std::atomic<int> pending{0};  // workers still running the current job
  std::atomic<int> caller_sleeping{0};
  alignas(64) std::atomic<int64_t> next{0};   // the next chunk's start (parallel_for_dynamic)
  alignas(64) std::atomic<bool> busy{false};  // a parallel_for is in progress
  std::vector<std::exception_ptr> errors;     // one slot per thread
  std::unique_ptr<PoolProfile> profile;       // TRIT_POOL_PROFILE=1
  std::vector<uint64_t> busy_ns;              // with a profile: each thread's time in the job

  // Range of thread `t`: units of `align` split as evenly as possible, earlier threads
  // taking the extra units.
  void range(int t, int64_t& begin, int64_t& end) const {
    const int64_t units = (n + align - 1) / align;
    const int64_t base = units / n_threads, extra = units % n_threads;
    const int64_t u0 = t * base + (t < extra ? t : extra);
    const int64_t u1 = u0 + base + (t < extra ? 1 : 0);
    begin = u0 * align < n ? u0 * align : n;
    end = u1 * align < n ? u1 * align : n;
  }

  void run(int t) {
    int64_t begin = 0, end = 0;
    if (chunk == 0) {
      range(t, begin, end);
      if (begin >= end) return;
    }
    const uint64_t t0 = profile ? pool_clock_ns() : 0;
    try {
      if (chunk == 0) {
        (*fn)(begin, end, t);
      } else {
        while ((begin = next.fetch_add(chunk, std::memory_order_relaxed)) < n) {
          (*fn)(begin, std::min(begin + chunk, n), t);
        }
      }
    } catch (...) {
      errors[size_t(t)] = std::current_exception();
      if (chunk != 0) next.store(n, std::memory_order_relaxed);  // the chunks left are not run
    }
    if (profile) busy_ns[size_t(t)] = pool_clock_ns() - t0;
  }

  void worker(int t) {
    uint32_t seen = 0;
    for (;;) {
      seen = wait_while_equal(generation, seen, worker_sleepers, spin);
      if (stop) return;
      run(t);
      if (pending.fetch_sub(1) == 1) wake(pending, caller_sleeping, false);
    }
  }

  void start() {
    generation.fetch_add(1);
    wake(generation, worker_sleepers, true);
  }
};

ThreadPool::ThreadPool(int n_threads) : state_(std::make_unique<State>()) {
  const int hw = int(std::thread::hardware_concurrency());
  if (n_threads <= 0) n_threads = hw > 0 ? hw : 1;
  n_threads_ = n_threads;
  state_->n_threads = n_threads;
  state_->spin = hw <= 0 || n_threads <= hw;
  state_->errors.resize(size_t(n_threads));
  state_->profile.reset(PoolProfile::from_env(n_threads));
  state_->busy_ns.assign(size_t(n_threads), 0);
  state_->workers.reserve(size_t(n_threads - 1));
  try {
    for (int t = 1; t < n_threads; ++t) {
      state_->workers.emplace_back([s = state_.get(), t] {
        flush_denormals_here();
        s->worker(t);
      });
    }
  } catch (const std::system_error& e) {
    // The threads started end before the error leaves (a joinable thread may not be destroyed).
    state_->stop = true;
    state_->start();
    for (auto& w : state_->workers) w.join();
    fail("cannot start ", n_threads, " threads: ", e.what(), address_space_note());
  }
}

ThreadPool::~ThreadPool() {
  State& s = *state_;
  s.stop = true;
  s.start();
  for (auto& w : s.workers) w.join();
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                              int64_t align, const char* file, unsigned line) {
  run_job(n, fn, align < 1 ? 1 : align, 0, file, line);
}

void ThreadPool::parallel_for_dynamic(int64_t n,
                                      const std::function<void(int64_t, int64_t, int)>& fn,
                                      int64_t chunk, const char* file, unsigned line) {
  static const bool off = [] {
    const char* e = std::getenv("TRIT_POOL_DYNAMIC");
    return e && e[0] == '0';
  }();
  chunk = std::max<int64_t>(chunk, 1);
  if (off) return run_job(n, fn, std::min<int64_t>(chunk, 16), 0, file, line);
  run_job(n, fn, 1, chunk, file, line);
}

void ThreadPool::run_job(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                         int64_t align, int64_t chunk, const char* file, unsigned line) {
  if (n <= 0) return;
  State& s = *state_;
  const CallerFlush flush;
  const uint64_t t0 = s.profile ? pool_clock_ns() : 0;
  if (n_threads_ == 1) {
    fn(0, n, 0);
    if (s.profile) {
      const uint64_t wall = pool_clock_ns() - t0;
      s.profile->add(file, line, wall, wall, wall);
    }
    return;
  }
  if (s.busy.exchange(true, std::memory_order_acquire)) {
    fail(
        "thread_pool: parallel_for called while another is running (nested or concurrent "
        "use is not supported)");
  }
  s.fn = &fn;
  s.n = n;
  s.align = align;
  s.chunk = chunk;
  s.next.store(0, std::memory_order_relaxed);  // published by start()'s release
  s.pending.store(n_threads_ - 1, std::memory_order_relaxed);
  s.start();
  s.run(0);
  for (int p = s.pending.load(); p != 0;) {
    p = wait_while_equal(s.pending, p, s.caller_sleeping, s.spin);
  }

  if (s.profile) {
    uint64_t sum = 0, most = 0;
    for (uint64_t& b : s.busy_ns) {
      sum += b;
      most = std::max(most, b);
      b = 0;
    }
    s.profile->add(file, line, pool_clock_ns() - t0, sum, most);
  }
  std::exception_ptr first;
  for (auto& e : s.errors) {
    if (e && !first) first = e;
    e = nullptr;
  }
  s.fn = nullptr;
  s.busy.store(false, std::memory_order_release);
  if (first) std::rethrow_exception(first);
}

}  // namespace trit::engine
