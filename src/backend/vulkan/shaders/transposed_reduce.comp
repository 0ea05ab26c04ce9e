#version 450
// transposed_reduce: the end of a transposed product on f16 cooperative matrices split over its
// weight rows (matmul_transposed_coop.comp with split_rows != 0): for each token t and column c
//   s = (first ? 0 : acc[t, c]) + S_0[t, c] + S_1[t, c] + ... (the splits in order)
//   last: dx[t, c] += scale * (dq * (tscale[t] * s)); else acc[t, c] = s
// (dq: the weight's uniform scale, or 1), as the unsplit module ends.
//
// Bindings (set 0):
//   0 part   float[splits * n_tokens * n_in]  the splits' sums                 (read)
//   1 tscale float[n_tokens]                  dy_to_f16's scales               (read)
//   2 acc    float[n_tokens * n_in]           sums between pieces; anything when first and last
//   3 dx     float[n_tokens * n_in]           added to on the last piece
// Push constants: TransposedReducePush { n_tokens, n_in, splits, dq, scale, first, last }.
// Spec constants: 0 workgroup size.
// Dispatch: ceil(n_tokens * n_in / workgroup size) groups over x and y (group_x_y).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 256;

layout(std430, set = 0, binding = 0) readonly buffer Part { float part[]; };
layout(std430, set = 0, binding = 1) readonly buffer TScale { float tscale[]; };
layout(std430, set = 0, binding = 2) buffer Acc { float accbuf[]; };
layout(std430, set = 0, binding = 3) buffer Dx { float dx[]; };

layout(push_constant) uniform Push {
  uint n_tokens;
  uint n_in;
  uint splits;
  float dq;
  float scale;
  uint first;
  uint last;
} pc;

void main() {
  uint o = group_x_y() * WG_SIZE + gl_LocalInvocationID.x;
  uint count = pc.n_tokens * pc.n_in;
  if (o >= count) return;
  float s = pc.first != 0u ? 0.0 : accbuf[o];
  for (uint k = 0; k < pc.splits; ++k) s += part[k * count + o];
  if (pc.last != 0u) {
    dx[o] = dx[o] + pc.scale * (pc.dq * (tscale[o / pc.n_in] * s));
  } else {
    accbuf[o] = s;
  }
}
