#version 450
// tq2_codes: TQ2_0 rows uploaded as their blocks' qs bytes (64 a block of 256 weights; the host
// leaves each block's d out) turned into T2 codes (the ternary shaders' layout) in place, the
// same words as weights.cpp's t2_row computes on the host: T2 word 8h + 2l + g of a block is
// field l (bits 2l) of its bytes 32h + 16g .. + 15, a code a byte, in byte order.
//
// Bindings (set 0):
//   0 codes uint[blocks * 16]  qs bytes in, T2 words out  (read, write)
// Push constants: Tq2CodesPush { blocks } (the blocks to convert).
// Spec constants: 0 workgroup size.
// Dispatch: G = ceil(blocks / WG) groups over x and z; an invocation converts one block.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 256;

layout(std430, set = 0, binding = 0) buffer Codes { uint codes[]; };

layout(push_constant) uniform Push {
  uint blocks;
} pc;

void main() {
  uint b = group_x_z() * WG_SIZE + gl_LocalInvocationID.x;
  if (b >= pc.blocks) return;
  uint src[16];
  for (uint i = 0u; i < 16u; ++i) src[i] = codes[b * 16u + i];
  for (uint h = 0u; h < 2u; ++h) {
    for (uint l = 0u; l < 4u; ++l) {
      for (uint g = 0u; g < 2u; ++g) {
        uint word = 0u;
        for (uint e = 0u; e < 4u; ++e) {
          uint c = (src[8u * h + 4u * g + e] >> (2u * l)) & 0x03030303u;  // a code a byte
          uint t = c | (c >> 6u);                                          // codes 0, 1: bits 0..3
          word |= ((t & 0xFu) | ((t >> 12u) & 0xF0u)) << (8u * e);
        }
        codes[b * 16u + 8u * h + 2u * l + g] = word;
      }
    }
  }
}
