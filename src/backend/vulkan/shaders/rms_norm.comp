#version 450
// rms_norm: y[t, :] = (x[t, :] * rstd[t]) * g,  rstd[t] = 1 / sqrt(mean(x[t, :]^2) + eps)
// (CPU reference rms_norm_forward in backend/cpu/ops.h, which sums the squares in double;
// here f32: each invocation sums its own elements in order, then wg_sum adds the partials in a
// fixed order, so rstd differs from the CPU's by a few ULP and never depends on the tiling).
// In place (y and x bound to the same buffer) is allowed.
//
// Bindings (set 0):
//   0 x    float[n_tokens * n]   input tile                                 (read)
//   1 g    float[n]              norm weight                                (read)
//   2 y    float[n_tokens * n]   output tile; may be the same buffer as x   (write)
//   3 rstd float[n_tokens]       1 / rms per token, written when write_rstd != 0 (always bound)
// Push constants: RmsNormPush { n_tokens, n, eps, write_rstd }.
// Spec constants: 0 workgroup size (a power of two, >= 32), 13 NORM_VEC: when n % 4 == 0
//   and n <= 32 * WG the row is held in registers, 4 consecutive elements per unit, and
//   NORM_VEC = ceil(n / 4 / WG) units an invocation; else 0. Every module of this source must
//   be given the same NORM_VEC for the same n: it fixes which invocation sums which elements.
// Dispatch: (n_tokens, 1, 1), one workgroup per token.
//
// Speed: a decoding step runs one workgroup per norm, so the row's latency is the kernel's.
// With NORM_VEC every load (x, g) is issued before any store: x and y may alias,
// so a load after a store would wait for it.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#ifndef QUANT
#define QUANT 0
#endif

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_NORM_VEC) const uint NORM_VEC = 0;

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

#endif
layout(push_constant) uniform Push {
  uint n_tokens;
  uint n;
  float eps;
  uint write_rstd;
} pc;

#define NORM_X x
#define NORM_G g
#include "norm_row.glsl"

// ---- NORM_VEC > 0: the row in registers (norm_row.glsl) ----

void row_in_registers(uint t) {
  uint tid = gl_LocalInvocationID.x;
  uint base = t * pc.n;
  uint units = pc.n / 4;
  float v[NORM_E];
  float gv[NORM_E];
  norm_load(base, pc.n, v, gv);
  float r = norm_rstd(v, pc.n, pc.eps);
  if (tid == 0 && pc.write_rstd != 0u) rstd[t] = r;
  float m = norm_apply(v, gv, r);
  for (uint k = 0; k < NORM_MAXU; ++k) {
    uint u = tid + k * WG_SIZE;
    if (u < units) {
      for (uint j = 0; j < 4; ++j) y[base + 4 * u + j] = v[4 * k + j];
    }
  }
#if QUANT
  m = wg_max(m);
  float sc = div_rn(127.0, m > 1e-5 ? m : 1e-5);
  if (tid == 0) qscale[t] = sc;
  for (uint k = 0; k < NORM_MAXU; ++k) {
    uint u = tid + k * WG_SIZE;
    if (u < units) q[t * units + u] = pack4_i8(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3], sc);
  }
#endif
}

// ---- NORM_VEC = 0: any n, elements re-read from memory ----

void row_from_memory(uint t) {
  uint tid = gl_LocalInvocationID.x;
  uint base = t * pc.n;
  precise float ss = 0.0;
  for (uint i = tid; i < pc.n; i += WG_SIZE) {
    float v = x[base + i];
    ss += v * v;
  }
  float r = inv_rms(wg_sum(ss), pc.n, pc.eps);
  if (tid == 0 && pc.write_rstd != 0u) rstd[t] = r;
#if QUANT
  // Each invocation writes, then quantises, the elements of whole words 4w..4w+3.
  uint words = pc.n / 4;
  float m = 0.0;
  barrier();  // every read of x is done before y (maybe x) is written
  for (uint w = tid; w < words; w += WG_SIZE) {
    for (uint k = 0; k < 4; ++k) {
      uint i = 4 * w + k;
      precise float v = x[base + i] * r;
      precise float o = v * g[i];
      y[base + i] = o;
      m = larger(m, abs(o));
    }
  }
  m = wg_max(m);
  float sc = div_rn(127.0, m > 1e-5 ? m : 1e-5);
  if (tid == 0) qscale[t] = sc;
  for (uint w = tid; w < words; w += WG_SIZE) {
    uint e = base + 4 * w;
    q[t * words + w] = pack4_i8(y[e], y[e + 1], y[e + 2], y[e + 3], sc);
  }
#else
  for (uint i = tid; i < pc.n; i += WG_SIZE) {
    precise float v = x[base + i] * r;
    y[base + i] = v * g[i];
  }
#endif
}

void main() {
  uint t = gl_WorkGroupID.x;
  if (t >= pc.n_tokens) return;
  if (NORM_VEC != 0u) {
    row_in_registers(t);
  } else {
    row_from_memory(t);
  }
}
