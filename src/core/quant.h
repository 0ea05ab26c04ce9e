// Packing and unpacking of every tensor type trit reads (byte layouts: FORMATS.md), absmean
// ternarisation, and dequantisation to f32. Ternary codes are int8 in {-1, 0, +1}.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/dtype.h"

namespace trit::engine {

// DESIGN section 2: scale = max(mean|W|, 1e-5), T = clamp(round_half_even(W * (1 / scale)),
// -1, 1), computed as transformers' BitNet weight quantiser does. Returns the scale.
float absmean_ternarize(const float* w, int64_t n, int8_t* trits);

// Ternarises float weights as a GGUF file holds them, keeping their values when they are already
// ternary: when every non-zero weight has one magnitude s (llama.cpp's converter writes BitNet
// linear weights so, already rounded by absmean, and so do trit's float outputs), the trits are
// their signs and the scale is s; otherwise absmean_ternarize. (Absmean of a ternary tensor is s
// times its fraction of non-zeros: the codes would stay, the scale would not.) Returns the scale.
float ternarize(const float* w, int64_t n, int8_t* trits);

// s when the n weights are ternary already (at least one non-zero, and every non-zero of
// magnitude s, finite), else nothing.
std::optional<float> ternary_magnitude(const float* w, int64_t n);

// The bytes of ternary type `type` (TQ1_0, TQ2_0 or I2_S) for n float weights of a GGUF file:
// pack_ternary of ternarize.
std::vector<uint8_t> ternarize_float_weights(DType type, const float* w, int64_t n);

// Packs n trits (n a multiple of the type's block) with one scale for the whole tensor.
// TQ1_0/TQ2_0 store the scale as each block's fp16 d; I2_S stores it once as fp32 in the tail.
std::vector<uint8_t> pack_ternary(DType type, const int8_t* trits, int64_t n, float scale);

// Per-block packers (scales per 256-weight block) for exact round trips of files in the wild.
void pack_tq1_0(const int8_t* trits, const float* block_scales, int64_t n, uint8_t* out);
void pack_tq2_0(const int8_t* trits, const float* block_scales, int64_t n, uint8_t* out);
void pack_i2_s(const int8_t* trits, float scale, int64_t n, uint8_t* out);  // n/4 + 32 bytes

struct TernaryUnpacked {
  std::vector<int8_t> trits;
  std::vector<float> block_scales;  // one per 256 weights (TQ1_0/TQ2_0); one in all for I2_S
};
// Throws when a TQ2_0 or I2_S byte holds the unused code 3.
TernaryUnpacked unpack_ternary(DType type, const uint8_t* data, int64_t n);

// Per-type ternary decoders behind dequantize: value = (code - 1) * d (the block's fp16 d; for
// I2_S the fp32 scale in the tail, so n must be the whole tensor). Code 3 decodes as +2, as
// llama.cpp's dequantize_row_tq2_0 does.
void dequantize_tq1_0(const uint8_t* data, int64_t n, float* out);
void dequantize_tq2_0(const uint8_t* data, int64_t n, float* out);
void dequantize_i2_s(const uint8_t* data, int64_t n, float* out);

// Decodes n elements of a tensor of any type to f32 (n a multiple of the block; for I2_S the
// whole tensor, tail included, must be given).
void dequantize(DType type, const uint8_t* data, int64_t n, float* out);

// One row of a non-I2_S tensor (row bytes = row_bytes(type, n)).
void dequantize_row(DType type, const uint8_t* row, int64_t n, float* out);

// Encodes floats as F32, F16, BF16, Q8_0 or Q6_K (llama.cpp's reference quantisers), or as a
// ternary type by absmean (pack_ternary of absmean_ternarize). Returns tensor_bytes() bytes.
std::vector<uint8_t> quantize(DType type, const float* x, int64_t n);

// Converts TQ1_0 rows to TQ2_0 rows (same trits and block scales).
void tq1_0_to_tq2_0(const uint8_t* src, int64_t n, uint8_t* dst);

// TQ1_0 blocks of 256 weights: qs[48] (five base-3 digits a byte: digit n of qs[m] is weight
// m + 32n for m < 32, weight 160 + (m - 32) + 16n for m >= 32), qh[4] (four digits a byte:
// weight 240 + m + 4n), fp16 d at byte 52. Digit n of byte b is ((uint8)(b * 3^n) * 3) >> 8.
constexpr int64_t kTQ1BlockBytes = 54;
constexpr int64_t kTQ1DOffset = 52;
// The 256 codes (trit + 1, 0..2) of one TQ1_0 block.
void decode_tq1_0_block(const uint8_t* block, uint8_t* codes);

}  // namespace trit::engine
