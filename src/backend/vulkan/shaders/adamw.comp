#version 450
// adamw: one AdamW step over n elements of a parameter p with gradient g * grad_scale and
// moments m, v, in the order of operations of train/optimizer.h (PyTorch's). The rounding of
// sqrt and division follows the device's precision, so results are close to the CPU's, not
// bit-equal.
//
// Bindings (set 0):
//   0 g float[n]  (read)
//   1 p float[n]  (read/write)
//   2 m float[n]  (read/write)
//   3 v float[n]  (read/write)
// Push constants: AdamWPush { n, grad_scale, the seven AdamWScalars }.
// Spec constants: 0 workgroup size.
// Dispatch: G = ceil(n / WG) groups over x and y: x = min(G, 65535), y = ceil(G / x).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;

layout(std430, set = 0, binding = 0) readonly buffer G { float g[]; };
layout(std430, set = 0, binding = 1) buffer P { float p[]; };
layout(std430, set = 0, binding = 2) buffer M { float m[]; };
layout(std430, set = 0, binding = 3) buffer V { float v[]; };

layout(push_constant) uniform Push {
  uint n;
  float grad_scale;
  float decay;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float bc2_sqrt;
  float eps;
  float neg_step_size;
} pc;

void main() {
  uint i = group_x_y() * WG_SIZE + gl_LocalInvocationID.x;
  if (i >= pc.n) return;
  precise float gi = pc.grad_scale != 1.0 ? g[i] * pc.grad_scale : g[i];
  precise float pi = p[i];
  if (pc.decay != 1.0) pi = pi * pc.decay;
  precise float mi = m[i];
  if (abs(pc.one_minus_beta1) < 0.5) {
    mi = fma(pc.one_minus_beta1, gi - mi, mi);
  } else {
    mi = fma(pc.one_minus_beta1 - 1.0, gi - mi, gi);
  }
  precise float vi = v[i] * pc.beta2;
  vi = fma(pc.one_minus_beta2 * gi, gi, vi);
  precise float denom = sqrt(vi) / pc.bc2_sqrt + pc.eps;
  pi = pi + pc.neg_step_size * mi / denom;
  p[i] = pi;
  m[i] = mi;
  v[i] = vi;
}
