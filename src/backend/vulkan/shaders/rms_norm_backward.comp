#version 450
// rms_norm_backward: the gradient of y = x * rstd * g with g frozen (CPU reference
// rms_norm_backward in backend/cpu/ops.h), one token per workgroup:
//   dot = sum_i (dy_i * g_i) * x_i            (f32 partial sums and a tree; the CPU sums in
//   c = dot * s * s * s / n                    double, so dx differs by rounding, ~1e-6)
//   dx_i = dx_i + ((s * g_i) * dy_i - c * x_i)  with s = rstd[t] saved by rms_norm
//
// Bindings (set 0):
//   0 dy   float[n_tokens * n]  (read)
//   1 x    float[n_tokens * n]  (read)
//   2 g    float[n]             (read)
//   3 rstd float[n_tokens]      (read)
//   4 dx   float[n_tokens * n]  (read/write; not dy or x)
// Push constants: RmsNormBackwardPush { n_tokens, n }.
// Spec constants: 0 workgroup size (power of two).
// Dispatch: (n_tokens, 1, 1), one workgroup per token.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;

layout(std430, set = 0, binding = 0) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 1) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 2) readonly buffer G { float g[]; };
layout(std430, set = 0, binding = 3) readonly buffer RStd { float rstd[]; };
layout(std430, set = 0, binding = 4) buffer Dx { float dx[]; };

layout(push_constant) uniform Push {
  uint n_tokens;
  uint n;
} pc;

shared float red[WG_SIZE];

void main() {
  uint t = gl_WorkGroupID.x;
  if (t >= pc.n_tokens) return;
  uint tid = gl_LocalInvocationID.x;
  uint base = t * pc.n;
  precise float part = 0.0;
  for (uint i = tid; i < pc.n; i += WG_SIZE) {
    precise float p = (dy[base + i] * g[i]) * x[base + i];
    part += p;
  }
  red[tid] = part;
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] += red[tid + s];
    barrier();
  }
  float s = rstd[t];
  precise float c = red[0] * s * s * s / float(pc.n);
  for (uint i = tid; i < pc.n; i += WG_SIZE) {
    precise float a = (s * g[i]) * dy[base + i];
    precise float b = c * x[base + i];
    dx[base + i] = dx[base + i] + (a - b);
  }
}
