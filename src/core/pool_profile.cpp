// TRIT_POOL_PROFILE: per call site totals of a thread pool's parallel loops (pool_profile.h).
#include "core/pool_profile.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace trit::engine {

uint64_t pool_clock_ns() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

PoolProfile* PoolProfile::from_env(int threads) {
  const char* e = std::getenv("TRIT_POOL_PROFILE");
  return e && e[0] == '1' ? new PoolProfile(threads) : nullptr;
}

PoolProfile::PoolProfile(int threads)
    : threads_(threads), start_ns_(pool_clock_ns()), last_end_ns_(start_ns_) {}

void PoolProfile::add(const char* file_name, unsigned line, uint64_t wall_ns, uint64_t busy_ns,
                      uint64_t max_busy_ns) {
  std::string file = file_name;
  if (const size_t src = file.rfind("/src/"); src != std::string::npos) file = file.substr(src + 5);
  const uint64_t end = pool_clock_ns();
  const std::lock_guard<std::mutex> lock(mutex_);
  Site& s = sites_[{file, line}];
  ++s.calls;
  const uint64_t start = end - std::min(wall_ns, end);
  if (s.calls == 1 && sites_.size() == 1) {
    first_gap_ns_ = start > last_end_ns_ ? start - last_end_ns_ : 0;  // setup before any loop
  } else if (start > last_end_ns_) {
    s.serial_before_ns += start - last_end_ns_;
  }
  last_end_ns_ = std::max(last_end_ns_, end);
  s.wall_ns += wall_ns;
  s.busy_ns += busy_ns;
  s.max_busy_ns += max_busy_ns;
}

PoolProfile::~PoolProfile() {
  const double life_ms = double(pool_clock_ns() - start_ns_) * 1e-6;
  std::vector<std::pair<std::pair<std::string, unsigned>, Site>> rows(sites_.begin(), sites_.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.wall_ns > b.second.wall_ns; });
  double parallel_ms = 0;
  for (const auto& r : rows) parallel_ms += double(r.second.wall_ns) * 1e-6;
  std::fprintf(stderr,
               "thread pool profile (%d threads): %.1f ms alive, %.1f ms in parallel loops, %.1f "
               "ms outside them (one thread)\n",
               threads_, life_ms, parallel_ms, life_ms - parallel_ms);
  std::fprintf(stderr, "%.1f ms serial before the first loop\n", double(first_gap_ns_) * 1e-6);
  std::fprintf(stderr, "%10s %8s %7s %7s %14s  %s\n", "wall ms", "calls", "busy %", "longest",
               "serial before", "site");
  for (size_t i = 0; i < rows.size() && i < 30; ++i) {
    const Site& s = rows[i].second;
    // busy %: the threads' busy time over threads x wall; longest: the slowest thread's time over
    // the mean thread's (1.00: balanced).
    const double busy = s.wall_ns ? 100.0 * double(s.busy_ns) / (double(s.wall_ns) * threads_) : 0;
    const double longest = s.busy_ns ? double(s.max_busy_ns) * threads_ / double(s.busy_ns) : 0;
    std::fprintf(stderr, "%10.1f %8llu %6.1f%% %7.2f %11.1f ms  %s:%u\n", double(s.wall_ns) * 1e-6,
                 static_cast<unsigned long long>(s.calls), busy, longest,
                 double(s.serial_before_ns) * 1e-6, rows[i].first.first.c_str(),
                 rows[i].first.second);
  }
  std::fprintf(stderr, "%.1f ms serial after the last loop\n",
               double(pool_clock_ns() - last_end_ns_) * 1e-6);
}

}  // namespace trit::engine
