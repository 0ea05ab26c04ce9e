// Ternary formats: absmean ternarisation, TQ1_0 / TQ2_0 / I2_S packing, unpacking and
// dequantisation (byte layouts: FORMATS.md, "Block layouts").
#include <array>
#include <cmath>
#include <cstring>

#include "core/bytes.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"

namespace trit::engine {
namespace {

constexpr int64_t kTQ2Bytes = 66;  // qs[64], fp16 d at 64
constexpr int64_t kTQ2D = 64;

// Decoded base-3 digits of every TQ1_0 byte: digit n of byte b is ((uint8)(b * 3^n) * 3) >> 8,
// the first digit the most significant. Codes 0..2 (trit + 1).
struct Tq1Lut {
  std::array<std::array<uint8_t, 5>, 256> code{};
  constexpr Tq1Lut() {
    constexpr uint32_t kPow3[5] = {1, 3, 9, 27, 81};
    for (uint32_t b = 0; b < 256; ++b) {
      for (int n = 0; n < 5; ++n) {
        const uint32_t q = (b * kPow3[n]) & 0xff;
        code[b][n] = uint8_t((q * 3) >> 8);
      }
    }
  }
};
constexpr Tq1Lut kTq1Lut;

// Code (trit + 1) of trit i, checked to be 0, 1 or 2.
inline uint8_t code_of(const char* op, const int8_t* trits, int64_t i) {
  const uint8_t c = uint8_t(trits[i] + 1);
  if (c > 2) fail(op, ": trit ", i, " is ", int(trits[i]), ", not -1, 0 or +1");
  return c;
}

uint16_t scale_to_fp16(const char* op, float scale, int64_t block) {
  if (!std::isfinite(scale)) fail(op, ": scale of block ", block, " is ", scale);
  const uint16_t h = f32_to_fp16(scale);
  if ((h & 0x7c00) == 0x7c00) fail(op, ": scale ", scale, " of block ", block, " overflows fp16");
  return h;
}

// Base-3 value of codes[0..count) (first most significant), padded with zero digits to five,
// stored as ceil(v * 256 / 243).
inline uint8_t tq1_byte(const uint8_t* codes, int64_t stride, int count) {
  uint32_t v = 0;
  for (int k = 0; k < 5; ++k) v = v * 3 + (k < count ? codes[k * stride] : 0);
  return uint8_t((v * 256 + 242) / 243);
}

// One TQ1_0 block from 256 codes (0..2).
void encode_tq1_block(const uint8_t* codes, uint16_t d, uint8_t* out) {
  for (int m = 0; m < 32; ++m) out[m] = tq1_byte(codes + m, 32, 5);
  for (int m = 0; m < 16; ++m) out[32 + m] = tq1_byte(codes + 160 + m, 16, 5);
  for (int m = 0; m < 4; ++m) out[48 + m] = tq1_byte(codes + 240 + m, 4, 4);
  store_u16(out + kTQ1DOffset, d);
}

// One TQ2_0 block from 256 codes (0..2): byte 32h + m holds weight 128h + 32l + m at bits 2l.
void encode_tq2_block(const uint8_t* codes, uint16_t d, uint8_t* out) {
  for (int h = 0; h < 2; ++h) {
    const uint8_t* c = codes + 128 * h;
    for (int m = 0; m < 32; ++m) {
      out[32 * h + m] = uint8_t(c[m] | (c[32 + m] << 2) | (c[64 + m] << 4) | (c[96 + m] << 6));
    }
  }
  store_u16(out + kTQ2D, d);
}

// 256 codes (0..3) of one TQ2_0 block.
inline void decode_tq2_block(const uint8_t* in, uint8_t* codes) {
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 4; ++l) {
      for (int m = 0; m < 32; ++m) codes[128 * h + 32 * l + m] = (in[32 * h + m] >> (2 * l)) & 3;
    }
  }
}

// Whether a byte of 2-bit codes holds the invalid code 3.
inline bool has_code3(uint8_t b) {
  return (b & (b >> 1) & 0x55) != 0;
}

// scales[block * scale_stride] is the scale of each block (stride 0: one scale for all).
void pack_tq1_0_impl(const char* op, const int8_t* trits, const float* scales, int64_t stride,
                     int64_t n, uint8_t* out) {
  check_block_count(op, DType::TQ1_0, n);
  uint8_t codes[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const int64_t base = b * kQK_K;
    for (int64_t i = 0; i < kQK_K; ++i) codes[i] = code_of(op, trits, base + i);
    encode_tq1_block(codes, scale_to_fp16(op, scales[b * stride], b), out + b * kTQ1BlockBytes);
  }
}

void pack_tq2_0_impl(const char* op, const int8_t* trits, const float* scales, int64_t stride,
                     int64_t n, uint8_t* out) {
  check_block_count(op, DType::TQ2_0, n);
  uint8_t codes[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const int64_t base = b * kQK_K;
    for (int64_t i = 0; i < kQK_K; ++i) codes[i] = code_of(op, trits, base + i);
    encode_tq2_block(codes, scale_to_fp16(op, scales[b * stride], b), out + b * kTQ2Bytes);
  }
}

float i2_s_scale(const uint8_t* data, int64_t n) {
  float scale;
  std::memcpy(&scale, data + n / 4, 4);
  return scale;
}

}  // namespace

float absmean_ternarize(const float* w, int64_t n, int8_t* trits) {
  if (n < 0) fail("absmean_ternarize: n=", n, " is negative");
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::fabs(double(w[i]));
  if (!std::isfinite(sum)) fail("absmean_ternarize: the weights hold a nan or inf");
  const float mean = n > 0 ? float(sum / double(n)) : 0.0f;
  const float scale = std::fmax(mean, 1e-5f);
  const float inv = 1.0f / scale;
  // clamp(round_half_even(v), -1, 1) is +1 for v > 0.5, -1 for v < -0.5 and 0 otherwise (the
  // ties +-0.5 round to 0, +-1.5 to +-2 and clamp to +-1).
  for (int64_t i = 0; i < n; ++i) {
    const float v = w[i] * inv;
    trits[i] = int8_t(int(v > 0.5f) - int(v < -0.5f));
  }
  return scale;
}

std::optional<float> ternary_magnitude(const float* w, int64_t n) {
  float magnitude = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(w[i]);
    if (a == 0) continue;
    if (magnitude == 0) {
      magnitude = a;
    } else if (a != magnitude) {
      return std::nullopt;
    }
  }
  if (magnitude == 0 || !std::isfinite(magnitude)) return std::nullopt;
  return magnitude;
}

float ternarize(const float* w, int64_t n, int8_t* trits) {
  const std::optional<float> magnitude = ternary_magnitude(w, n);
  // master weights (or a nan or inf: absmean says so)
  if (!magnitude) return absmean_ternarize(w, n, trits);
  // Ternary already: the signs, whatever the size of s (absmean's 1e-5 floor would zero the
  // codes of a tensor whose s is below it).
  for (int64_t i = 0; i < n; ++i) trits[i] = int8_t(int(w[i] > 0) - int(w[i] < 0));
  return *magnitude;
}

std::vector<uint8_t> ternarize_float_weights(DType type, const float* w, int64_t n) {
  std::vector<int8_t> trits(static_cast<size_t>(n));
  const float scale = ternarize(w, n, trits.data());
  return pack_ternary(type, trits.data(), n, scale);
}

void pack_tq1_0(const int8_t* trits, const float* block_scales, int64_t n, uint8_t* out) {
  pack_tq1_0_impl("pack_tq1_0", trits, block_scales, 1, n, out);
}

void pack_tq2_0(const int8_t* trits, const float* block_scales, int64_t n, uint8_t* out) {
  pack_tq2_0_impl("pack_tq2_0", trits, block_scales, 1, n, out);
}

void pack_i2_s(const int8_t* trits, float scale, int64_t n, uint8_t* out) {
  const char* op = "pack_i2_s";
  check_block_count(op, DType::I2_S, n);
  if (!std::isfinite(scale)) fail(op, ": scale is ", scale);
  // Weight j of each run of 128 goes to byte j % 32, bits 7 - 2(j / 32) .. 6 - 2(j / 32).
  for (int64_t r = 0; r < n / kI2SRun; ++r) {
    const int64_t base = r * kI2SRun;
    uint8_t* o = out + r * (kI2SRun / 4);
    for (int64_t m = 0; m < 32; ++m) {
      o[m] =
          uint8_t((code_of(op, trits, base + m) << 6) | (code_of(op, trits, base + 32 + m) << 4) |
                  (code_of(op, trits, base + 64 + m) << 2) | code_of(op, trits, base + 96 + m));
    }
  }
  uint8_t* tail = out + n / 4;
  std::memset(tail, 0, kI2STail);
  std::memcpy(tail, &scale, 4);
}

std::vector<uint8_t> pack_ternary(DType type, const int8_t* trits, int64_t n, float scale) {
  const char* op = "pack_ternary";
  if (!dtype_traits(type).ternary) fail(op, ": ", dtype_name(type), " is not a ternary type");
  check_block_count(op, type, n);
  const DTypeTraits& tr = dtype_traits(type);
  std::vector<uint8_t> out(size_t(n / tr.block_elems * tr.block_bytes) +
                           (type == DType::I2_S ? size_t(kI2STail) : 0));
  switch (type) {
    case DType::TQ1_0:
      pack_tq1_0_impl(op, trits, &scale, 0, n, out.data());
      break;
    case DType::TQ2_0:
      pack_tq2_0_impl(op, trits, &scale, 0, n, out.data());
      break;
    case DType::I2_S:
      pack_i2_s(trits, scale, n, out.data());
      break;
    default:
      break;
  }
  return out;
}

TernaryUnpacked unpack_ternary(DType type, const uint8_t* data, int64_t n) {
  const char* op = "unpack_ternary";
  if (!dtype_traits(type).ternary) fail(op, ": ", dtype_name(type), " is not a ternary type");
  check_block_count(op, type, n);
  TernaryUnpacked u;
  u.trits.resize(size_t(n));
  int8_t* t = u.trits.data();
  uint8_t codes[kQK_K];
  switch (type) {
    case DType::TQ1_0:
    case DType::TQ2_0: {
      const bool tq1 = type == DType::TQ1_0;
      const int64_t bytes = tq1 ? kTQ1BlockBytes : kTQ2Bytes;
      u.block_scales.resize(size_t(n / kQK_K));
      for (int64_t b = 0; b < n / kQK_K; ++b) {
        const uint8_t* in = data + b * bytes;
        if (tq1) {
          decode_tq1_0_block(in, codes);
        } else {
          for (int i = 0; i < 64; ++i) {
            if (has_code3(in[i])) fail(op, ": tq2_0 block ", b, " byte ", i, " holds code 3");
          }
          decode_tq2_block(in, codes);
        }
        for (int64_t i = 0; i < kQK_K; ++i) t[b * kQK_K + i] = int8_t(codes[i] - 1);
        u.block_scales[size_t(b)] = fp16_to_f32(load_u16(in + (tq1 ? kTQ1DOffset : kTQ2D)));
      }
      break;
    }
    case DType::I2_S:
      for (int64_t r = 0; r < n / kI2SRun; ++r) {
        const uint8_t* in = data + r * (kI2SRun / 4);
        int8_t* o = t + r * kI2SRun;
        for (int m = 0; m < 32; ++m) {
          const uint8_t b = in[m];
          if (has_code3(b)) fail(op, ": i2_s byte ", r * 32 + m, " holds code 3");
          o[m] = int8_t((b >> 6) - 1);
          o[32 + m] = int8_t(((b >> 4) & 3) - 1);
          o[64 + m] = int8_t(((b >> 2) & 3) - 1);
          o[96 + m] = int8_t((b & 3) - 1);
        }
      }
      u.block_scales.assign(1, i2_s_scale(data, n));
      break;
    default:
      break;
  }
  return u;
}

void dequantize_tq1_0(const uint8_t* data, int64_t n, float* out) {
  check_block_count("dequantize_tq1_0", DType::TQ1_0, n);
  uint8_t codes[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const uint8_t* in = data + b * kTQ1BlockBytes;
    const float d = fp16_to_f32(load_u16(in + kTQ1DOffset));
    decode_tq1_0_block(in, codes);
    for (int64_t i = 0; i < kQK_K; ++i) out[b * kQK_K + i] = float(int(codes[i]) - 1) * d;
  }
}

void dequantize_tq2_0(const uint8_t* data, int64_t n, float* out) {
  check_block_count("dequantize_tq2_0", DType::TQ2_0, n);
  uint8_t codes[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const uint8_t* in = data + b * kTQ2Bytes;
    const float d = fp16_to_f32(load_u16(in + kTQ2D));
    decode_tq2_block(in, codes);
    for (int64_t i = 0; i < kQK_K; ++i) out[b * kQK_K + i] = float(int(codes[i]) - 1) * d;
  }
}

void dequantize_i2_s(const uint8_t* data, int64_t n, float* out) {
  check_block_count("dequantize_i2_s", DType::I2_S, n);
  const float scale = i2_s_scale(data, n);
  for (int64_t r = 0; r < n / kI2SRun; ++r) {
    const uint8_t* in = data + r * (kI2SRun / 4);
    float* o = out + r * kI2SRun;
    for (int m = 0; m < 32; ++m) {
      const uint8_t b = in[m];
      o[m] = float(int(b >> 6) - 1) * scale;
      o[32 + m] = float(int((b >> 4) & 3) - 1) * scale;
      o[64 + m] = float(int((b >> 2) & 3) - 1) * scale;
      o[96 + m] = float(int(b & 3) - 1) * scale;
    }
  }
}

void tq1_0_to_tq2_0(const uint8_t* src, int64_t n, uint8_t* dst) {
  check_block_count("tq1_0_to_tq2_0", DType::TQ1_0, n);
  uint8_t codes[kQK_K];
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const uint8_t* in = src + b * kTQ1BlockBytes;
    decode_tq1_0_block(in, codes);
    encode_tq2_block(codes, load_u16(in + kTQ1DOffset), dst + b * kTQ2Bytes);
  }
}

void decode_tq1_0_block(const uint8_t* in, uint8_t* codes) {
  for (int m = 0; m < 32; ++m) {
    const auto& c = kTq1Lut.code[in[m]];
    for (int n = 0; n < 5; ++n) codes[m + 32 * n] = c[n];
  }
  for (int m = 0; m < 16; ++m) {
    const auto& c = kTq1Lut.code[in[32 + m]];
    for (int n = 0; n < 5; ++n) codes[160 + m + 16 * n] = c[n];
  }
  for (int m = 0; m < 4; ++m) {
    const auto& c = kTq1Lut.code[in[48 + m]];
    for (int n = 0; n < 4; ++n) codes[240 + m + 4 * n] = c[n];
  }
}

}  // namespace trit::engine
