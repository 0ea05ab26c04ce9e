// Reading float weight rows (f32, f16, bf16, q8_0) out of a uint-word buffer, for
// matmul_float.comp, embedding.comp and matmul_transposed.comp. The includer declares
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

// The words that hold elements 4u .. 4u + 3 of the row starting at byte row_off (f32: four
// words; f16, bf16: two in .xy; q8_0: the block's scale word in .x, the four int8 in .y); words
// of elements at or past n_in read as 0 and are not touched. For q8_0, 4u + 3 < n_in always
// (n_in % 32 == 0). With cook4, a shader can issue the loads early and convert them later.
uvec4 raw4(uint row_off, uint u, uint n_in) {
  uint e = 4 * u;
  if (WEIGHT_TYPE == WTYPE_F32) {
    uint i = (row_off >> 2) + e;
    return uvec4(wt[i], e + 1 < n_in ? wt[i + 1] : 0u, e + 2 < n_in ? wt[i + 2] : 0u,
                 e + 3 < n_in ? wt[i + 3] : 0u);
  }
  if (WEIGHT_TYPE == WTYPE_Q8_0) {
    uint blk = row_off + 34 * (e / 32);
    return uvec4(load_u32_even(blk), load_u32_even(blk + 2 + (e % 32)), 0u, 0u);
  }
  // f16 / bf16: words (row_off + 2e) / 4 and the next (row_off is a multiple of 4 as n_in is even).
  uint i = (row_off >> 2) + e / 2;
  return uvec4(wt[i], e + 2 < n_in ? wt[i + 1] : 0u, 0u, 0u);
}

// The four elements held by raw4's words, as f32 (a zero word gives 0.0).
vec4 cook4(uvec4 r) {
  if (WEIGHT_TYPE == WTYPE_F32) return uintBitsToFloat(r);
  if (WEIGHT_TYPE == WTYPE_Q8_0) {
    float d = unpackHalf2x16(r.x).x;
    int v = int(r.y);
    return d * vec4(float(bitfieldExtract(v, 0, 8)), float(bitfieldExtract(v, 8, 8)),
                    float(bitfieldExtract(v, 16, 8)), float(bitfieldExtract(v, 24, 8)));
  }
  if (WEIGHT_TYPE == WTYPE_F16) return vec4(unpackHalf2x16(r.x), unpackHalf2x16(r.y));
  return vec4(uintBitsToFloat(r.x << 16), uintBitsToFloat(r.x & 0xFFFF0000u),
              uintBitsToFloat(r.y << 16), uintBitsToFloat(r.y & 0xFFFF0000u));
}

// Elements 4u .. 4u + 3 of the row starting at byte row_off, as f32; elements at or past n_in
// read as 0 (their words are not touched). For q8_0, 4u + 3 < n_in always (n_in % 32 == 0).
vec4 load4(uint row_off, uint u, uint n_in) {
  return cook4(raw4(row_off, u, n_in));
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
