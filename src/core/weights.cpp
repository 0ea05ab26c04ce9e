#include "core/weights.h"

#include <array>
#include <cstring>

#include "core/bytes.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"

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
  uint8_t codes[kQK_K];
  static const std::array<uint8_t, kTQ1BlockBytes> tq1_zero = [] {
    std::array<uint8_t, kTQ1BlockBytes> z{};
    const std::array<int8_t, kQK_K> trits{};
    const float one = 1.0f;
    pack_tq1_0(trits.data(), &one, kQK_K, z.data());
    return z;
  }();
  // A byte that decodes to a digit other than 1 in any of its five places: not a zero block.
  static const std::array<bool, 256> nonzero_byte = [] {
    std::array<bool, 256> nz{};
    for (int b = 0; b < 256; ++b) {
      for (uint32_t n = 0, p = 1; n < 5; ++n, p *= 3)
        nz[size_t(b)] |= (((b * p) & 0xff) * 3) >> 8 != 1;
    }
    return nz;
  }();
  auto known_nonzero = [&](const uint8_t* blk) {
    for (int i = 0; i < 48; ++i) {
      if (nonzero_byte[blk[i]]) return true;
    }
    return false;
  };
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = data + b * block_bytes;
    bool zero = true;
    if (tq1) {  // the bytes a writer gives 256 zero trits; others are decoded to be sure
      zero = std::memcmp(blk, tq1_zero.data(), kTQ1DOffset) == 0;
      if (!zero && !known_nonzero(blk)) {
        decode_tq1_0_block(blk, codes);
        zero = true;
        for (int i = 0; i < kQK_K && zero; ++i) zero = codes[i] == 1;
      }
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
