// Memory bandwidth of this machine: a read-only sum and a copy over buffers much larger than
// the last-level cache, with 1 thread and with N threads, best of several passes.
//
//   membw [-t threads] [-p passes] [size_mib]     (default: all hardware threads, 5, 1024)
//
// Prints one line per test: name, threads, GB/s (1 GB = 1e9 bytes; a copy counts the bytes
// read plus the bytes written). "read+prefetch" adds a software prefetch 16 KB ahead into L2, as
// the weight kernels do; on some processors (AMD Zen 4) it reads much faster than the plain loop.
// Decoding an LLM streams its weights once per token, so the faster of the two read tests is the
// ceiling for single-token generation speed.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;

// Sums 64-bit words of [p, p + n) with several independent chains so the loop is limited by
// memory, not by the adder's latency. Vectorised by the compiler where it can.
uint64_t read_sum(const uint64_t* p, size_t n) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
    s4 += p[i + 4];
    s5 += p[i + 5];
    s6 += p[i + 6];
    s7 += p[i + 7];
  }
  for (; i < n; ++i) s0 += p[i];
  return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same with explicit 256-bit loads (AVX2), compiled for this function only.
__attribute__((target("avx2"))) uint64_t read_sum_avx2(const uint64_t* p, size_t n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_add_epi64(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    s2 = _mm256_add_epi64(s2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    s3 = _mm256_add_epi64(s3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  s0 = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s0);
  uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) s += p[i];
  return s;
}

// The same with a software prefetch 16 KB ahead into L2 (what the weight kernels do).
__attribute__((target("avx2"))) uint64_t read_sum_avx2_prefetch(const uint64_t* p, size_t n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_prefetch(reinterpret_cast<const char*>(p + i) + 16384, _MM_HINT_T1);
    s0 = _mm256_add_epi64(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
  }
  s0 = _mm256_add_epi64(s0, s1);
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s0);
  uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < n; ++i) s += p[i];
  return s;
}
#endif

uint64_t read_best(const uint64_t* p, size_t n, bool prefetch) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("avx2")) {
    return prefetch ? read_sum_avx2_prefetch(p, n) : read_sum_avx2(p, n);
  }
#endif
  (void)prefetch;
  return read_sum(p, n);
}

// Runs body(thread, begin, end) on `threads` threads over [0, n) words, returns seconds.
template <class Body>
double timed(int threads, size_t n, Body body) {
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) {
    pool.emplace_back([&, t] { body(t, n * t / threads, n * (t + 1) / threads); });
  }
  body(0, 0, n / threads);
  for (auto& th : pool) th.join();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

volatile uint64_t g_sink;

void run(int threads, size_t bytes, int passes) {
  const size_t n = bytes / sizeof(uint64_t);
  std::vector<uint64_t> src(n), dst(n);
  // Touch every page (on the threads that will read it, for first-touch NUMA placement).
  timed(threads, n, [&](int, size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) src[i] = i * 0x9e3779b97f4a7c15ull;
    std::memset(dst.data() + b, 0, (e - b) * sizeof(uint64_t));
  });

  double best_read = 1e30, best_read_pf = 1e30, best_copy = 1e30;
  for (int pass = 0; pass < passes; ++pass) {
    std::vector<uint64_t> sums(static_cast<size_t>(threads));
    best_read = std::min(best_read, timed(threads, n, [&](int t, size_t b, size_t e) {
                           sums[size_t(t)] = read_best(src.data() + b, e - b, false);
                         }));
    for (uint64_t s : sums) g_sink = g_sink + s;
    best_read_pf = std::min(best_read_pf, timed(threads, n, [&](int t, size_t b, size_t e) {
                              sums[size_t(t)] = read_best(src.data() + b, e - b, true);
                            }));
    for (uint64_t s : sums) g_sink = g_sink + s;
    best_copy = std::min(best_copy, timed(threads, n, [&](int, size_t b, size_t e) {
                           std::memcpy(dst.data() + b, src.data() + b, (e - b) * sizeof(uint64_t));
                         }));
    g_sink = g_sink + dst[n / 2];
  }
  const double gb = double(n * sizeof(uint64_t)) / 1e9;
  std::printf("read           threads=%-3d size=%zu MiB  %7.2f GB/s\n", threads, bytes >> 20,
              gb / best_read);
  std::printf("read+prefetch  threads=%-3d size=%zu MiB  %7.2f GB/s\n", threads, bytes >> 20,
              gb / best_read_pf);
  std::printf("copy           threads=%-3d size=%zu MiB  %7.2f GB/s (read + write)\n", threads,
              bytes >> 20, 2 * gb / best_copy);
  std::fflush(stdout);
}

[[noreturn]] void usage() {
  std::fprintf(stderr, "usage: membw [-t threads] [-p passes] [size_mib]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = int(std::thread::hardware_concurrency());
  int passes = 5;
  size_t mib = 1024;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-t" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (a == "-p" && i + 1 < argc) {
      passes = std::atoi(argv[++i]);
    } else if (a == "-h" || a == "--help") {
      usage();
    } else if (!a.empty() && a[0] != '-') {
      mib = size_t(std::strtoull(a.c_str(), nullptr, 10));
    } else {
      usage();
    }
  }
  if (threads < 1 || passes < 1 || mib < 1) usage();
  run(1, mib << 20, passes);
  if (threads > 1) run(threads, mib << 20, passes);
  return 0;
}
