#version 450
// dropout: the LoRA branch's input dropout and its backward (CPU reference dropout() in
// backend/cpu/ops.h), over n elements of a token tile whose element 0 has the global
// element index i0 (row * n_in + column of the op's whole input).
//   mode 0 (forward):  xd[i] = keep ? x[i] * inv : 0
//   mode 1 (backward): dx[i] = dx[i] + dxd[i] * inv   where xd[i] != 0 (everywhere when
//                      masked == 0, i.e. p == 0)
// keep: u >= p with u = (mix(base + i0 + i) >> 11) * 2^-53, mix = splitmix64 and
// base = mix(key ^ mix(salt)), all 64-bit integer arithmetic emulated on uvec2 (lo, hi), so
// the masks equal the CPU's bit for bit. The host passes start = base + i0 (mod 2^64) and
// thr = ceil(p * 2^53): u < p exactly when the 53-bit value is < thr.
//
// Bindings (set 0):
//   0 a float[n]  mode 0: x; mode 1: xd (the mask)        (read)
//   1 b float[n]  mode 0: unused; mode 1: dxd              (read)
//   2 c float[n]  mode 0: xd (written); mode 1: dx (read/write)
// Push constants: DropoutPush { n, mode, masked, start_lo, start_hi, thr_lo, thr_hi, inv }.
// Spec constants: 0 workgroup size.
// Dispatch: G = ceil(n / WG) groups over x and y: x = min(G, 65535), y = ceil(G / x).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) buffer C { float c[]; };

layout(push_constant) uniform Push {
  uint n;
  uint mode;
  uint masked;
  uint start_lo;
  uint start_hi;
  uint thr_lo;
  uint thr_hi;
  float inv;
} pc;

// 64-bit values as uvec2(lo, hi).
uvec2 add64(uvec2 x, uvec2 y) {
  uint carry;
  uint lo = uaddCarry(x.x, y.x, carry);
  return uvec2(lo, x.y + y.y + carry);
}
uvec2 mul64(uvec2 x, uvec2 y) {  // mod 2^64
  uint hi, lo;
  umulExtended(x.x, y.x, hi, lo);
  return uvec2(lo, hi + x.x * y.y + x.y * y.x);
}
uvec2 shr64(uvec2 x, uint s) {  // 0 < s < 32
  return uvec2((x.x >> s) | (x.y << (32u - s)), x.y >> s);
}
uvec2 splitmix64(uvec2 x) {
  x = add64(x, uvec2(0x7F4A7C15u, 0x9E3779B9u));
  x = mul64(x ^ shr64(x, 30u), uvec2(0x1CE4E5B9u, 0xBF58476Du));
  x = mul64(x ^ shr64(x, 27u), uvec2(0x133111EBu, 0x94D049BBu));
  return x ^ shr64(x, 31u);
}

void main() {
  uint i = group_x_y() * WG_SIZE + gl_LocalInvocationID.x;
  if (i >= pc.n) return;
  if (pc.mode == 0u) {
    uvec2 v = shr64(splitmix64(add64(uvec2(pc.start_lo, pc.start_hi), uvec2(i, 0u))), 11u);
    bool drop = v.y < pc.thr_hi || (v.y == pc.thr_hi && v.x < pc.thr_lo);
    precise float kept = a[i] * pc.inv;
    c[i] = drop ? 0.0 : kept;
  } else {
    if (pc.masked != 0u && a[i] == 0.0) return;
    precise float v = b[i] * pc.inv;
    c[i] = c[i] + v;
  }
}
