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

#ifndef QUANT
#define QUANT 0
#endif

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;

// x and y may alias: neither is restrict, nor readonly / writeonly.
//
// Built with -DQUANT=1 (module rms_norm_quant) it also quantises each output row to int8 as
// quantize_acts.comp does, bit for bit (decoding fuses the norm and the quantiser of the
// bitlinear that follows it):
//   4 q      uint [n_tokens * n / 4]  (write)
//   5 qscale float[n_tokens]          (write)
layout(std430, set = 0, binding = 0) buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer G { float g[]; };
layout(std430, set = 0, binding = 2) buffer Y { float y[]; };
layout(std430, set = 0, binding = 3) writeonly buffer RStd { float rstd[]; };
#if QUANT
layout(std430, set = 0, binding = 4) writeonly buffer Q { uint q[]; };
layout(std430, set = 0, binding = 5) writeonly buffer QScale { float qscale[]; };

int quantize(float v, float s) {
  float y = v * s;
  y = y > -128.0 ? y : -128.0;  // the CPU's comparisons: NaN ends at -128
  y = y < 127.0 ? y : 127.0;
  return int(roundEven(y));
}
#endif

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
  precise float r = 1.0 / sqrt(red[0] / float(pc.n) + pc.eps);
  if (tid == 0 && pc.write_rstd != 0u) rstd[t] = r;
#if QUANT
  // Each invocation writes, then quantises, the elements of whole words 4w..4w+3 (y may be x:
  // all of x was read before the barrier above).
  uint words = pc.n / 4;
  float m = 0.0;
  for (uint w = tid; w < words; w += WG_SIZE) {
    for (uint k = 0; k < 4; ++k) {
      uint i = 4 * w + k;
      precise float v = x[base + i] * r;
      precise float o = v * g[i];
      y[base + i] = o;
      float a = abs(o);
      m = a > m ? a : m;
    }
  }
  barrier();  // every read of x is done before red is reused
  red[tid] = m;
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) {
      float o = red[tid + s];
      red[tid] = o > red[tid] ? o : red[tid];
    }
    barrier();
  }
  m = red[0];
  float sc = div_rn(127.0, m > 1e-5 ? m : 1e-5);
  if (tid == 0) qscale[t] = sc;
  for (uint w = tid; w < words; w += WG_SIZE) {
    uint e = base + 4 * w;
    uint b0 = uint(quantize(y[e], sc)) & 0xFFu;
    uint b1 = uint(quantize(y[e + 1], sc)) & 0xFFu;
    uint b2 = uint(quantize(y[e + 2], sc)) & 0xFFu;
    uint b3 = uint(quantize(y[e + 3], sc)) & 0xFFu;
    q[t * words + w] = b0 | (b1 << 8) | (b2 << 16) | (b3 << 24);
  }
#else
  for (uint i = tid; i < pc.n; i += WG_SIZE) {
    precise float v = x[base + i] * r;
    y[base + i] = v * g[i];
  }
#endif
}
