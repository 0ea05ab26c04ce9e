#version 450
// add: y[i] = y[i] + alpha * x[i] over n elements (residual adds: alpha = 1, exact as the
// CPU's y += x; the product is rounded on its own, never fused).
//
// Bindings (set 0):
//   0 x float[n]  (read)
//   1 y float[n]  (read/write)
// Push constants: AddPush { n, alpha }.
// Spec constants: 0 workgroup size.
// Dispatch: G = ceil(n / WG) groups over x and y: x = min(G, 65535), y = ceil(G / x).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) buffer Y { float y[]; };

layout(push_constant) uniform Push {
  uint n;
  float alpha;
} pc;

void main() {
  uint i = group_x_y() * WG_SIZE + gl_LocalInvocationID.x;
  if (i >= pc.n) return;
  precise float p = pc.alpha * x[i];
  y[i] = y[i] + p;
}
