// Reading float weight rows (f32, f16, bf16, q8_0) out of a uint-word buffer, for
// matmul_float.comp and embedding.comp. The includer declares
//   layout(constant_id = SPEC_WEIGHT_TYPE) const uint WEIGHT_TYPE
// and a buffer whose uint array is named `wt`, then includes this file.
//
// Row layouts (row r of the piece starts at word / byte row_offset(r)):
//   f32   n_in words;
//   f16, bf16  n_in / 2 words, element 2i in the low half of word i (n_in must be even);
//   q8_0  n_in / 32 GGUF blocks of 34 bytes (f16 d, then 32 int8), byte-addressed: a row or
//         block need not start on a word boundary, but always starts on an even byte.
#ifndef TRIT_FLOAT_WEIGHTS_GLSL
#define TRIT_FLOAT_WEIGHTS_GLSL

// Bytes of a row of n_in elements.
uint row_bytes(uint n_in) {
  if (WEIGHT_TYPE == WTYPE_F32) return 4 * n_in;
  if (WEIGHT_TYPE == WTYPE_Q8_0) return 34 * (n_in / 32);
  return 2 * n_in;
}

// The 32 bits starting at an even byte offset (two halves of neighbouring words when it is
// 2 mod 4).
uint load_u32_even(uint byte_off) {
  uint i = byte_off >> 2;
  if ((byte_off & 2u) == 0u) return wt[i];
  return (wt[i] >> 16) | (wt[i + 1] << 16);
}

// Elements 4u .. 4u + 3 of the row starting at byte row_off, as f32; elements at or past n_in
// read as 0 (their words are not touched). For q8_0, 4u + 3 < n_in always (n_in % 32 == 0).
vec4 load4(uint row_off, uint u, uint n_in) {
  uint e = 4 * u;
  if (WEIGHT_TYPE == WTYPE_F32) {
    uint i = (row_off >> 2) + e;
    return vec4(uintBitsToFloat(wt[i]),
                e + 1 < n_in ? uintBitsToFloat(wt[i + 1]) : 0.0,
                e + 2 < n_in ? uintBitsToFloat(wt[i + 2]) : 0.0,
                e + 3 < n_in ? uintBitsToFloat(wt[i + 3]) : 0.0);
  }
  if (WEIGHT_TYPE == WTYPE_Q8_0) {
    uint blk = row_off + 34 * (e / 32);
    float d = unpackHalf2x16(load_u32_even(blk)).x;
    int v = int(load_u32_even(blk + 2 + (e % 32)));
    return d * vec4(float(bitfieldExtract(v, 0, 8)), float(bitfieldExtract(v, 8, 8)),
                    float(bitfieldExtract(v, 16, 8)), float(bitfieldExtract(v, 24, 8)));
  }
  // f16 / bf16: words (row_off + 2e) / 4 and the next (row_off is a multiple of 4 as n_in is even).
  uint i = (row_off >> 2) + e / 2;
  uint w0 = wt[i];
  uint w1 = e + 2 < n_in ? wt[i + 1] : 0u;
  if (WEIGHT_TYPE == WTYPE_F16) return vec4(unpackHalf2x16(w0), unpackHalf2x16(w1));
  return vec4(uintBitsToFloat(w0 << 16), uintBitsToFloat(w0 & 0xFFFF0000u),
              uintBitsToFloat(w1 << 16), uintBitsToFloat(w1 & 0xFFFF0000u));
}

// Element e of the row starting at byte row_off, as f32.
float load1(uint row_off, uint e) {
  if (WEIGHT_TYPE == WTYPE_F32) return uintBitsToFloat(wt[(row_off >> 2) + e]);
  if (WEIGHT_TYPE == WTYPE_Q8_0) {
    uint blk = row_off + 34 * (e / 32);
    float d = unpackHalf2x16(load_u32_even(blk)).x;
    uint byte_off = blk + 2 + (e % 32);
    int v = int(bitfieldExtract(wt[byte_off >> 2], int(8 * (byte_off & 3u)), 8));
    return d * float(bitfieldExtract(v, 0, 8));
  }
  uint word = wt[(row_off >> 2) + e / 2];
  uint h = (e & 1u) == 0u ? (word & 0xFFFFu) : (word >> 16);
  if (WEIGHT_TYPE == WTYPE_F16) return unpackHalf2x16(h).x;
  return uintBitsToFloat(h << 16);
}

#endif  // TRIT_FLOAT_WEIGHTS_GLSL
