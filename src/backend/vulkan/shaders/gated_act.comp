#version 450
// gated_act: out[i] = act(gate[i]) * up[i] over n elements (a token tile of (T, n_ff)),
//   act 0 relu2: r = gate > 0 ? gate : 0, out = (r * r) * up
//   act 1 silu:  out = (gate / (1 + exp(-gate))) * up
// (CPU reference gated_act_forward in backend/cpu/ops.h; relu2 is bit-exact, silu differs
// by the GPU's exp and division, a few ULP). out may be the same buffer as gate or up.
//
// Bindings (set 0):
//   0 gate float[n]  (read)
//   1 up   float[n]  (read)
//   2 out  float[n]  (write; may alias gate or up)
// Push constants: GatedActPush { n }.
// Spec constants: 0 workgroup size, 9 activation (0 relu2, 1 silu).
// Dispatch: G = ceil(n / WG) groups over x and y: x = min(G, 65535), y = ceil(G / x).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_ACTIVATION) const uint ACTIVATION = 0;

layout(std430, set = 0, binding = 0) buffer Gate { float gate[]; };
layout(std430, set = 0, binding = 1) buffer Up { float up[]; };
layout(std430, set = 0, binding = 2) buffer Out { float out_[]; };

layout(push_constant) uniform Push {
  uint n;
} pc;

void main() {
  uint i = group_x_y() * WG_SIZE + gl_LocalInvocationID.x;
  if (i >= pc.n) return;
  out_[i] = gated_value(ACTIVATION, gate[i], up[i]);
}
