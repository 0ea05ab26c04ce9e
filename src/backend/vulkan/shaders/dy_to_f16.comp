#version 450
// dy_to_f16: the gradient rows a transposed product on f16 cooperative matrices reads
// (matmul_transposed_coop.comp), each scaled by a power of two into the range of a half:
//   m = max_j |dy[t, j]|, e = 15 - k where m = f * 2^k, f in [0.5, 1) (e = 0 when m is 0,
//   infinite or NaN; clamped to [-100, 100]; k = -126 for a subnormal m), so that m * 2^e lies
//   in [2^14, 2^15);
//   dyh[t, j] = half(dy[t, j] * 2^e) rounded to nearest even (f16_bits), 0 for j >= n;
//   tscale[t] = 2^-e.
// Scaling by a power of two is exact, so the only rounding is to the half's 11 bits (a
// relative 2^-12 for every value down to 2^-20 of the row's largest; smaller ones lose bits
// or flush to 0). A NaN or an infinity stays one (the training step's check finds it).
//
// Bindings (set 0):
//   0 dy     float[n_tokens * dy_stride]   the rows                                   (read)
//   1 dyh    uint [n_tokens * dyh_words]   halves, element 2w + k in bits 16k of word w (write)
//   2 tscale float[n_tokens]               2^-e per token                            (write)
// Push constants: DyToF16Push { n_tokens, n, dy_stride, dyh_words }; 2 * dyh_words >= n.
// Spec constants: 0 workgroup size (power of two).
// Dispatch: one workgroup per token over x (and y past 65535: group_x_y).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;

layout(std430, set = 0, binding = 0) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dyh { uint dyh[]; };
layout(std430, set = 0, binding = 2) writeonly buffer TScale { float tscale[]; };

layout(push_constant) uniform Push {
  uint n_tokens;
  uint n;
  uint dy_stride;
  uint dyh_words;
} pc;

shared float red[WG_SIZE];

void main() {
  uint t = group_x_y();
  if (t >= pc.n_tokens) return;
  uint tid = gl_LocalInvocationID.x;
  uint base = t * pc.dy_stride;

  // The largest magnitude; a NaN makes it NaN (max() of GLSL may drop it, so compare).
  float m = 0.0;
  for (uint j = tid; j < pc.n; j += WG_SIZE) {
    float a = abs(dy[base + j]);
    m = (a > m || isnan(a)) ? a : m;
  }
  red[tid] = m;
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) {
      float o = red[tid + s];
      red[tid] = (o > red[tid] || isnan(o)) ? o : red[tid];
    }
    barrier();
  }
  m = red[0];
  // k and the powers of two from the bits (frexp and ldexp of some drivers lose large
  // exponents): m = 1.f * 2^(E - 127) = 0.1f * 2^(E - 126).
  int e = 0;
  if (m > 0.0 && !isinf(m) && !isnan(m)) {
    int k = int((floatBitsToUint(m) >> 23) & 0xFFu) - 126;
    e = clamp(15 - k, -100, 100);
  }
  float up = uintBitsToFloat(uint(127 + e) << 23);
  if (tid == 0) tscale[t] = uintBitsToFloat(uint(127 - e) << 23);

  for (uint w = tid; w < pc.dyh_words; w += WG_SIZE) {
    uint j = 2 * w;
    float a = j < pc.n ? dy[base + j] * up : 0.0;
    float b = j + 1 < pc.n ? dy[base + j + 1] * up : 0.0;
    dyh[t * pc.dyh_words + w] = f16x2_bits(a, b);
  }
}
