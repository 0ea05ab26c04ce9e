#version 450
// tq1_codes: T2 codes (the ternary shaders' layout, 2 bits a weight) of rows of TQ1_0 kept in
// place on the device (common.glsl, "TQ1_0 read in place"), for the products that read T2
// words: the codes are the CPU's, so every product over them gives the bits it gives for T2
// weights.
//
// Bindings (set 0):
//   0 src uint[rows * blocks * 13]  TQ1_0 rows    (read)
//   1 dst uint[rows * blocks * 16]  T2 words      (write)
// Push constants: Tq1CodesPush { words } (rows * blocks * 16, the T2 words to write).
// Spec constants: 0 workgroup size.
// Dispatch: G = ceil(words / WG) groups over x and z.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 256;

layout(std430, set = 0, binding = 0) readonly buffer Src { uint src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { uint dst[]; };

layout(push_constant) uniform Push {
  uint words;
} pc;

void main() {
  uint i = group_x_z() * WG_SIZE + gl_LocalInvocationID.x;
  if (i >= pc.words) return;
  uint base = (i / 16u) * TQ1_BLOCK_WORDS, w = i % 16u;
  uint word = 0u;
  for (uint e = 0u; e < 4u; ++e) {
    uvec2 at = tq1_source(w, e);
    word |= codes4_t2(tq1_codes4(src[base + at.x], at.y)) << (8u * e);
  }
  dst[i] = word;
}
