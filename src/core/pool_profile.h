// TRIT_POOL_PROFILE=1: where a thread pool's time goes, for finding what keeps a many-core CPU
// from scaling. Each parallel_for call site (file and line) sums its calls, its wall time as the
// caller waits, and its threads' busy time; the pool's life minus its parallel time is the
// serial part (one thread computing, the others idle), which each site also counts as the time
// between the loop before it and its own start ("serial before": the one-thread code that leads
// to it). The table goes to stderr when the pool is destroyed.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace trit::engine {

class PoolProfile {
 public:
  // Null unless TRIT_POOL_PROFILE=1.
  static PoolProfile* from_env(int threads);
  explicit PoolProfile(int threads);
  ~PoolProfile();  // prints the table
  // One parallel_for at file:line: its wall time and the sum and largest of its threads' busy
  // time.
  void add(const char* file, unsigned line, uint64_t wall_ns, uint64_t busy_ns,
           uint64_t max_busy_ns);

 private:
  struct Site {
    uint64_t calls = 0, wall_ns = 0, busy_ns = 0, max_busy_ns = 0, serial_before_ns = 0;
  };
  int threads_;
  uint64_t start_ns_;
  uint64_t last_end_ns_;       // when the last loop ended (the pool's start before any)
  uint64_t first_gap_ns_ = 0;  // from the pool's start to the first loop (setup)
  std::mutex mutex_;
  std::map<std::pair<std::string, unsigned>, Site> sites_;
};

uint64_t pool_clock_ns();

}  // namespace trit::engine
