#version 450
// gated_act_backward: the gradients of out = act(gate) * up over n elements (CPU reference
// gated_act_backward in backend/cpu/ops.h):
//   relu2 (act 0): r = max(gate, 0);  dgate += ((2 r) up) dout;  dup += (r r) dout
//   silu  (act 1): s = 1 / (1 + exp(-gate));  dgate += ((s (1 + gate (1 - s))) up) dout;
//                  dup += (gate s) dout
// relu2 is bit-exact (products rounded one by one); silu differs by the GPU's exp and
// division, a few ULP.
//
// Bindings (set 0):
//   0 gate  float[n]  (read)
//   1 up    float[n]  (read)
//   2 dout  float[n]  (read)
//   3 dgate float[n]  (read/write)
//   4 dup   float[n]  (read/write)
// Push constants: GatedActPush { n }.
// Spec constants: 0 workgroup size, 9 activation (0 relu2, 1 silu).
// Dispatch: G = ceil(n / WG) groups over x and y: x = min(G, 65535), y = ceil(G / x).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_ACTIVATION) const uint ACTIVATION = 0;

layout(std430, set = 0, binding = 0) readonly buffer Gate { float gate[]; };
layout(std430, set = 0, binding = 1) readonly buffer Up { float up[]; };
layout(std430, set = 0, binding = 2) readonly buffer Dout { float dout[]; };
layout(std430, set = 0, binding = 3) buffer DGate { float dgate[]; };
layout(std430, set = 0, binding = 4) buffer DUp { float dup[]; };

layout(push_constant) uniform Push {
  uint n;
} pc;

void main() {
  uint i = group_x_y() * WG_SIZE + gl_LocalInvocationID.x;
  if (i >= pc.n) return;
  float g = gate[i];
  float u = up[i];
  float o = dout[i];
  precise float dg, du;
  if (ACTIVATION == 0u) {
    float r = g > 0.0 ? g : 0.0;
    dg = ((2.0 * r) * u) * o;
    du = (r * r) * o;
  } else {
    precise float s = 1.0 / (1.0 + exp(-g));
    dg = ((s * (1.0 + g * (1.0 - s))) * u) * o;
    du = (g * s) * o;
  }
  dgate[i] = dgate[i] + dg;
  dup[i] = dup[i] + du;
}
