#include "core/weights.h"

#include <array>
#include <cstring>

#include "core/bytes.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"  // kTQ1BlockBytes, kTQ1DOffset

namespace trit::engine {

float ternary_uniform_scale(DType type, const uint8_t* data, int64_t n_in, int64_t n_out) {
  if (type == DType::I2_S) {
    float s;
    std::memcpy(&s, data + n_out * (n_in / 4), 4);
    return s;
  }
  if (type != DType::TQ2_0 && type != DType::TQ1_0) {
    fail("ternary_uniform_scale: type ", dtype_name(type), " is not tq1_0, tq2_0 or i2_s");
  }
  // Blocks whose trits are all zero (every code 1; TQ2_0: bytes 0x55) take any d; skip them.
  const bool tq1 = type == DType::TQ1_0;
  const int64_t blocks = n_in / kQK_K * n_out;
  const int64_t block_bytes = tq1 ? kTQ1BlockBytes : 66, d_at = tq1 ? kTQ1DOffset : 64;
  bool found = false;
  float common = 0.0f;
  // TQ1_0: whether a byte's base-3 digits are all 1 (trit 0): [0] its five (a qs byte), [1]
  // its first four (a qh byte). Digit n of byte b is ((uint8)(b * 3^n) * 3) >> 8.
  static const std::array<std::array<bool, 256>, 2> all_ones = [] {
    std::array<std::array<bool, 256>, 2> t{};
    for (uint32_t b = 0; b < 256; ++b) {
      bool ones = true;
      for (uint32_t n = 0, p = 1; n < 5; ++n, p *= 3) {
        ones = ones && (((b * p) & 0xff) * 3) >> 8 == 1;
        if (n == 3) t[1][b] = ones;
      }
      t[0][b] = ones;
    }
    return t;
  }();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = data + b * block_bytes;
    bool zero = true;
    if (tq1) {
      for (int i = 0; i < kTQ1DOffset && zero; ++i) zero = all_ones[i < 48 ? 0 : 1][blk[i]];
    } else {
      for (int i = 0; i < 64 && zero; ++i) zero = blk[i] == 0x55;
    }
    if (zero) continue;
    const float d = fp16_to_f32(load_u16(blk + d_at));
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
