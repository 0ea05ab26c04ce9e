// A fixed pool of worker threads for data-parallel loops. parallel_for splits [0, n) into one
// contiguous range per thread; the calling thread takes part, so a pool of size 1 has no
// worker threads at all.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

namespace trit::engine {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads <= 0: the number of hardware threads
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(begin, end, thread_index) for disjoint ranges covering [0, n), each range a
  // multiple of `align` long (but the last), and returns when all are done. The split is a
  // pure function of (n, size(), align), so results are deterministic for a thread count:
  // ceil(n / align) units shared out in thread order, earlier threads taking one more when
  // they do not divide evenly; thread t (the caller is thread 0) runs range t, and threads
  // whose range is empty are not called. n <= 0 calls nothing.
  // If fn throws, the exception of the lowest thread index is rethrown here once all are done.
  // Not reentrant: calling parallel_for from inside fn, or from two threads at once, throws
  // trit::Error (a pool of size 1 just runs fn inline).
  // `file` and `line` name the call site in TRIT_POOL_PROFILE's table (core/pool_profile.h).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                    int64_t align = 1, const char* file = __builtin_FILE(),
                    unsigned line = __builtin_LINE());

  // As parallel_for, but the threads take [0, n) in chunks of `chunk` (the last may be
  // shorter) from a shared counter as they come free, calling fn once a chunk: threads that
  // the machine runs slower take fewer. Which thread runs which chunk varies from call to call,
  // so fn's results must not depend on the split (units computed on their own).
  // TRIT_POOL_DYNAMIC=0 gives parallel_for's split instead, aligned to the chunk up to 16 (a
  // tuning aid).
  void parallel_for_dynamic(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                            int64_t chunk, const char* file = __builtin_FILE(),
                            unsigned line = __builtin_LINE());

 private:
  void run_job(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t align,
               int64_t chunk, const char* file, unsigned line);
  struct State;
  int n_threads_;
  std::unique_ptr<State> state_;
};

}  // namespace trit::engine
