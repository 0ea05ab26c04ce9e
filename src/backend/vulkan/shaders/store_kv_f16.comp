#version 450
// store_kv_f16: rows of f32 keys or values into an f16 KV cache: word w of the destination
// (from word dst0 of the bound piece) = the halves of source elements 2w and 2w + 1, each
// rounded to nearest even as the CPU rounds it (f16_bits).
//
// Bindings (set 0):
//   0 src float[2 * n_words]          the rows stored              (read)
//   1 dst uint[dst0 + n_words]        a piece of the f16 cache     (write)
// Push constants: StoreKvF16Push { n_words, dst0 }.
// Spec constants: 0 workgroup size.
// Dispatch: G = ceil(n_words / WG) groups over x and y: x = min(G, 65535), y = ceil(G / x).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;

layout(std430, set = 0, binding = 0) readonly buffer Src { float src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { uint dst[]; };

layout(push_constant) uniform Push {
  uint n_words;
  uint dst0;
} pc;

void main() {
  uint w = group_x_y() * WG_SIZE + gl_LocalInvocationID.x;
  if (w >= pc.n_words) return;
  dst[pc.dst0 + w] = f16x2_bits(src[2 * w], src[2 * w + 1]);
}
