// splitmix64: the mixing function behind every random stream trit derives from a seed and a
// position (dropout masks, data order, per-step keys), so that resumed and recomputed work
// draws the same numbers.
#pragma once

#include <cstdint>

namespace trit::engine {

constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace trit::engine
