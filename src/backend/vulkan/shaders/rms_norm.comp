#version 450
// rms_norm: y[t, :] = (x[t, :] * rstd[t]) * g,  rstd[t] = 1 / sqrt(mean(x[t, :]^2) + eps)
// (CPU reference rms_norm_forward in backend/cpu/ops.cpp, which sums the squares in double;
// here f32 partial sums and a tree, so rstd differs by a few ULP). In place (y and x bound to
// the same buffer) is allowed: each element is read and then written by the same invocation,
// after the whole row has been read.
//
// Bindings (set 0):
//   0 x    float[n_tokens * n]   input tile                                 (read)
//   1 g    float[n]              norm weight                                (read)
//   2 y    float[n_tokens * n]   output tile; may be the same buffer as x   (write)
//   3 rstd float[n_tokens]       1 / rms per token, written when write_rstd != 0 (always bound)
// Push constants: RmsNormPush { n_tokens, n, eps, write_rstd }.
// Spec constants: 0 workgroup size (power of two).
// Dispatch: (n_tokens, 1, 1), one workgroup per token.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;

// x and y may alias: neither is restrict, nor readonly / writeonly.
layout(std430, set = 0, binding = 0) buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer G { float g[]; };
layout(std430, set = 0, binding = 2) buffer Y { float y[]; };
layout(std430, set = 0, binding = 3) writeonly buffer RStd { float rstd[]; };

layout(push_constant) uniform Push {
  uint n_tokens;
  uint n;
  float eps;
  uint write_rstd;
} pc;

shared float red[WG_SIZE];

void main() {
  uint t = gl_WorkGroupID.x;
  if (t >= pc.n_tokens) return;
  uint tid = gl_LocalInvocationID.x;
  uint base = t * pc.n;

  float ss = 0.0;
  for (uint i = tid; i < pc.n; i += WG_SIZE) {
    float v = x[base + i];
    ss += v * v;
  }
  red[tid] = ss;
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] += red[tid + s];
    barrier();
  }
  float r = 1.0 / sqrt(red[0] / float(pc.n) + pc.eps);
  if (tid == 0 && pc.write_rstd != 0u) rstd[t] = r;
  for (uint i = tid; i < pc.n; i += WG_SIZE) {
    precise float v = x[base + i] * r;
    y[base + i] = v * g[i];
  }
}
