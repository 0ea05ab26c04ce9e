// Unaligned loads and stores of the little-endian fields of packed tensor blocks.
#pragma once

#include <cstdint>
#include <cstring>

namespace trit::engine {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline void store_u16(uint8_t* p, uint16_t v) {
  std::memcpy(p, &v, 2);
}

}  // namespace trit::engine
