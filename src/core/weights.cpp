#include "core/weights.h"

#include <cstring>

#include "core/bytes.h"
#include "core/error.h"
#include "core/half.h"

namespace trit::engine {

float ternary_uniform_scale(DType type, const uint8_t* data, int64_t n_in, int64_t n_out) {
  if (type == DType::I2_S) {
    float s;
    std::memcpy(&s, data + n_out * (n_in / 4), 4);
    return s;
  }
  if (type != DType::TQ2_0) {
    fail("ternary_uniform_scale: type ", dtype_name(type), " is not tq2_0 or i2_s");
  }
  // Blocks whose trits are all zero (every code 1: bytes 0x55) take any d; skip them.
  const int64_t blocks = n_in / kQK_K * n_out;
  bool found = false;
  float common = 0.0f;
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = data + b * 66;
    bool zero = true;
    for (int i = 0; i < 64 && zero; ++i) zero = blk[i] == 0x55;
    if (zero) continue;
    const float d = fp16_to_f32(load_u16(blk + 64));
    if (!found) {
      common = d;
      found = true;
    } else if (d != common) {
      return 0.0f;
    }
  }
  return found ? common : 0.0f;
}

}  // namespace trit::engine
