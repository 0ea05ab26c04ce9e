#version 450
// Test shader of the Vulkan core layer: y[i] = a * x[i] + y[i] (+ ADD with -DBIAS) for i < n.
// Specialization constants: 0 = the workgroup size, 1 = ADD (an unsigned integer).
#extension GL_GOOGLE_include_directive : require
#include "core_test.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ADD = 0;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Y { float y[]; };
layout(push_constant) uniform Push {
  uint n;
  float a;
} p;

void main() {
  const uint i = gl_GlobalInvocationID.x;
  if (i >= p.n) return;
  float v = core_test_axpy(p.a, x[i], y[i]);
#ifdef BIAS
  v += float(ADD);
#endif
  y[i] = v;
}
