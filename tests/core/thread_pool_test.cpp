// ThreadPool: every index covered exactly once, the documented deterministic split,
// exceptions reach the caller, and the pool survives many small jobs.
#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"

namespace trit::engine {
namespace {

struct Call {
  int64_t begin, end;
  int thread;
};

std::vector<Call> record(ThreadPool& pool, int64_t n, int64_t align) {
  std::mutex mu;
  std::vector<Call> calls;
  pool.parallel_for(
      n,
      [&](int64_t b, int64_t e, int t) {
        std::lock_guard<std::mutex> lock(mu);
        calls.push_back({b, e, t});
      },
      align);
  return calls;
}

TEST(ThreadPool, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 3, 4, 7, 8}) {
    ThreadPool pool(threads);
    ASSERT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 3, 5, 7, 16, 31, 64, 100, 127, 128, 129, 1000, 6912}) {
      for (int64_t align : {1, 2, 3, 4, 16, 32, 128}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int> bad_thread{0};
        pool.parallel_for(
            n,
            [&](int64_t b, int64_t e, int t) {
              if (t < 0 || t >= threads) bad_thread = 1;
              for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
            },
            align);
        EXPECT_EQ(bad_thread.load(), 0);
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[size_t(i)].load(), 1)
              << "threads " << threads << " n " << n << " align " << align << " index " << i;
        }
      }
    }
  }
}

TEST(ThreadPool, DeterministicAlignedSplit) {
  for (int threads : {1, 2, 3, 5, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 9, 100, 1000, 4097}) {
      for (int64_t align : {1, 4, 32}) {
        std::vector<Call> a = record(pool, n, align);
        std::vector<Call> b = record(pool, n, align);
        auto key = [](const std::vector<Call>& v, int t) {
          for (const Call& c : v) {
            if (c.thread == t) return std::pair<int64_t, int64_t>(c.begin, c.end);
          }
          return std::pair<int64_t, int64_t>(-1, -1);
        };
        EXPECT_LE(a.size(), size_t(threads));
        int64_t covered = 0;
        for (const Call& c : a) {
          EXPECT_LT(c.begin, c.end) << "empty ranges are not handed out";
          if (c.end != n) {
            EXPECT_EQ((c.end - c.begin) % align, 0);
          }
          EXPECT_EQ(c.begin % align, 0);
          covered += c.end - c.begin;
        }
        EXPECT_EQ(covered, n);
        for (int t = 0; t < threads; ++t) EXPECT_EQ(key(a, t), key(b, t));
        // Ranges follow thread order: thread t's range ends where thread t + 1's begins.
        int64_t pos = 0;
        for (int t = 0; t < threads; ++t) {
          const auto r = key(a, t);
          if (r.first < 0) continue;
          EXPECT_EQ(r.first, pos);
          pos = r.second;
        }
        EXPECT_EQ(pos, n);
      }
    }
  }
}

TEST(ThreadPool, ZeroAndNegativeLengthDoNothing) {
  ThreadPool pool(3);
  int calls = 0;
  pool.parallel_for(0, [&](int64_t, int64_t, int) { ++calls; });
  pool.parallel_for(-5, [&](int64_t, int64_t, int) { ++calls; });
  EXPECT_EQ(calls, 0);
}

// The chunked mode: every index once, in chunks of the size asked (the last shorter), every
// thread index valid; a thread held up leaves the rest to the others; exceptions stop the job.
TEST(ThreadPool, DynamicChunksCoverEveryIndexOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 5, 16, 100, 129, 6912}) {
      for (int64_t chunk : {1, 7, 16, 64, 1000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int> bad{0};
        pool.parallel_for_dynamic(
            n,
            [&](int64_t b, int64_t e, int t) {
              if (t < 0 || t >= threads || b % chunk != 0 || (e - b != chunk && e != n)) bad = 1;
              for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
            },
            chunk);
        EXPECT_EQ(bad.load(), 0) << "threads " << threads << " n " << n << " chunk " << chunk;
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[size_t(i)].load(), 1)
              << "threads " << threads << " n " << n << " chunk " << chunk << " index " << i;
        }
      }
    }
  }
  ThreadPool pool(2);
  std::atomic<int64_t> by_other{0};
  std::atomic<bool> first{true};
  pool.parallel_for_dynamic(
      1600,
      [&](int64_t b, int64_t e, int t) {
        if (t == 0 && first.exchange(false)) {
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        if (t == 1) by_other += e - b;
      },
      100);
  EXPECT_GE(by_other.load(), 1600 - 2 * 100) << "the held-up thread kept its share";
  EXPECT_THROW(pool.parallel_for_dynamic(
                   1000,
                   [&](int64_t b, int64_t, int) {
                     if (b >= 500) throw std::runtime_error("boom");
                   },
                   10),
               std::runtime_error);
  std::atomic<int64_t> sum{0};
  pool.parallel_for_dynamic(
      1000,
      [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) sum += i;
      },
      10);
  EXPECT_EQ(sum.load(), 999 * 1000 / 2);
}

TEST(ThreadPool, PropagatesExceptions) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    for (int thrower = 0; thrower < threads; ++thrower) {
      try {
        pool.parallel_for(100, [&](int64_t, int64_t, int t) {
          if (t == thrower) throw std::runtime_error("boom " + std::to_string(t));
        });
        ADD_FAILURE() << "no exception";
      } catch (const std::runtime_error& e) {
        EXPECT_EQ(std::string(e.what()), "boom " + std::to_string(thrower));
      }
    }
    // Every thread throws: the lowest thread index wins.
    try {
      pool.parallel_for(100, [&](int64_t, int64_t, int t) {
        throw std::runtime_error("boom " + std::to_string(t));
      });
      ADD_FAILURE() << "no exception";
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), "boom 0");
    }
    // The pool still works afterwards.
    std::atomic<int64_t> sum{0};
    pool.parallel_for(1000, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) sum += i;
    });
    EXPECT_EQ(sum.load(), 999 * 1000 / 2);
  }
}

TEST(ThreadPool, NestedUseIsRejected) {
  ThreadPool pool(2);
  EXPECT_THROW(
      pool.parallel_for(
          10, [&](int64_t, int64_t, int) { pool.parallel_for(10, [](int64_t, int64_t, int) {}); }),
      Error);
  int calls = 0;
  pool.parallel_for(
      10, [&](int64_t b, int64_t e, int) { calls += int(e > b); }, 10);
  EXPECT_EQ(calls, 1);
}

TEST(ThreadPool, ManySmallJobs) {
  // Exercises the sleep / wake path: pauses longer than the spin time between some jobs.
  for (int threads : {2, 4}) {
    ThreadPool pool(threads);
    std::atomic<int64_t> total{0};
    for (int job = 0; job < 3000; ++job) {
      if (job % 500 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      pool.parallel_for(64, [&](int64_t b, int64_t e, int) { total += e - b; });
    }
    EXPECT_EQ(total.load(), 3000 * 64);
  }
}

TEST(ThreadPool, DispatchOverhead) {
  // Not a pass / fail bound (the machine may be shared); prints the cost of an empty job.
  ThreadPool pool{int(std::thread::hardware_concurrency())};
  const int jobs = 20000;
  std::atomic<int64_t> sink{0};
  const auto t0 = std::chrono::steady_clock::now();
  for (int job = 0; job < jobs; ++job) {
    pool.parallel_for(pool.size(), [&](int64_t b, int64_t, int) { sink += b; });
  }
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[          ] parallel_for with %d threads: %.2f us per call\n", pool.size(),
              us / jobs);
  EXPECT_GE(sink.load(), 0);
}

#if defined(__x86_64__) || defined(__i386__)
// Work run by a pool flushes denormal results to zero (unless TRIT_FTZ=0, which the test run
// does not set), the caller's share included: 1e-20 * 1e-20 (1e-40, a denormal) is 0 on each of
// them, while 1e-18 * 1e-18 (a normal 1e-36) is not.
TEST(ThreadPool, ThreadsFlushDenormalsToZero) {
  if (const char* e = std::getenv("TRIT_FTZ"); e && e[0] == '0') GTEST_SKIP() << "TRIT_FTZ=0";
  ThreadPool pool(3);
  std::vector<float> tiny(3, -1.0f), small(3, -1.0f);
  pool.parallel_for(3, [&](int64_t i0, int64_t i1, int) {
    volatile float a = 1e-20f, b = 1e-18f;
    for (int64_t i = i0; i < i1; ++i) {
      tiny[size_t(i)] = a * a;
      small[size_t(i)] = b * b;
    }
  });
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(tiny[i], 0.0f) << "thread " << i;
    EXPECT_GT(small[i], 0.0f) << "thread " << i;
  }
  // The calling thread (an application's) gets its own mode back.
  volatile float a = 1e-20f;
  EXPECT_GT(a * a, 0.0f);
}
#endif
}  // namespace

// TRIT_POOL_PROFILE=1: the table printed when the pool goes names each call site with its calls
// and the time its threads were busy: both sleep 100 ms a call, so busy is above 50% of the two
// threads' wall time unless a thread's time were missed (one thread's alone is below 50%)
// or the worker woke 100 ms late (a loaded machine wakes it within a few ms).
TEST(ThreadPool, ProfileNamesEachCallSite) {
  ::setenv("TRIT_POOL_PROFILE", "1", 1);
  ::testing::internal::CaptureStderr();
  unsigned line = 0;
  {
    ThreadPool pool(2);
    ::unsetenv("TRIT_POOL_PROFILE");
    for (int i = 0; i < 3; ++i) {
      line = __LINE__ + 1;
      pool.parallel_for(2, [](int64_t, int64_t, int) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      });
    }
  }
  const std::string table = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(table.find("thread pool profile (2 threads)"), std::string::npos) << table;
  const std::string site = "thread_pool_test.cpp:" + std::to_string(line);
  const size_t at = table.find(site);
  ASSERT_NE(at, std::string::npos) << table;
  // The row: wall ms, calls (3), busy %.
  const size_t row = table.rfind('\n', at) + 1;
  double wall = 0, busy = 0;
  unsigned long long calls = 0;
  ASSERT_EQ(std::sscanf(table.c_str() + row, "%lf %llu %lf", &wall, &calls, &busy), 3) << table;
  EXPECT_EQ(calls, 3u);
  EXPECT_GE(wall, 300.0);
  EXPECT_GT(busy, 50.0);
  EXPECT_LE(busy, 100.0);
  // Without the variable: no table.
  ::testing::internal::CaptureStderr();
  {
    ThreadPool quiet(2);
    quiet.parallel_for(2, [](int64_t, int64_t, int) {});
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr().find("thread pool profile"),
            std::string::npos);
}

}  // namespace trit::engine
