// Wall-clock intervals for progress lines and statistics.
#pragma once

#include <chrono>

namespace trit::engine {

// Seconds from t0 to now on the steady clock.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace trit::engine
