// One row's rms_norm held in registers, shared by rms_norm.comp (NORM_VEC) and the decoding
// matvec that normalises its own input (matvec_ternary.comp, NORM): both sum the squares in the
// same order, so they give the same bits.
//
// The row is split into units of 4 consecutive values; invocation tid of the workgroup holds
// units tid, tid + WG_SIZE, ... (at most NORM_MAXU, so n <= 4 * NORM_MAXU * WG_SIZE) and adds
// its squares in that order; wg_sum then adds the partials in a fixed order.
//
// The including shader defines WG_SIZE (>= 32, a power of two), the specialization constant
// NORM_VEC (the units an invocation holds, 1..8; 0 where the row is not held, which sizes the
// arrays for one) and the buffers the macros NORM_X (the row's input) and NORM_G (the norm
// weight) name. The host gives NORM_VEC = ceil(n / 4 / WG_SIZE) for rows of n: arrays no
// longer than the row keep the registers, and so the workgroups resident at once, the row
// needs (a fixed 8 units held 64 registers for a 2048-wide row's 16 values).
#ifndef TRIT_NORM_ROW_GLSL
#define TRIT_NORM_ROW_GLSL

const uint NORM_MAXU = NORM_VEC == 0u ? 1u : NORM_VEC;
const uint NORM_E = 4 * NORM_MAXU;

// Workgroup reductions in a fixed order: up to 32 invocations each combine a run of
// consecutive partials, then every invocation combines those in order. Two barriers; the
// next call may follow at once.
const uint RED_RUNS = WG_SIZE < 32 ? WG_SIZE : 32;
const uint RED_RUN = WG_SIZE / RED_RUNS;
shared float red[WG_SIZE];
shared float red2[RED_RUNS];

float wg_sum(float v) {
  uint tid = gl_LocalInvocationID.x;
  red[tid] = v;
  barrier();
  if (tid < RED_RUNS) {
    precise float s = 0.0;
    for (uint i = 0; i < RED_RUN; ++i) s += red[tid * RED_RUN + i];
    red2[tid] = s;
  }
  barrier();
  precise float total = 0.0;
  for (uint i = 0; i < RED_RUNS; ++i) total += red2[i];
  return total;
}

// quantize_acts.comp's comparison: a NaN never replaces m, so any order gives the same maximum.
float larger(float m, float a) {
  return a > m ? a : m;
}

float wg_max(float v) {
  uint tid = gl_LocalInvocationID.x;
  red[tid] = v;
  barrier();
  if (tid < RED_RUNS) {
    float m = 0.0;
    for (uint i = 0; i < RED_RUN; ++i) m = larger(m, red[tid * RED_RUN + i]);
    red2[tid] = m;
  }
  barrier();
  float m = 0.0;
  for (uint i = 0; i < RED_RUNS; ++i) m = larger(m, red2[i]);
  return m;
}

float inv_rms(float ss, uint n, float eps) {
  precise float r = 1.0 / sqrt(ss / float(n) + eps);
  return r;
}

// The invocation's values of the row at `base` into v and the matching norm
// weights into gv (0 past the row). Every load is issued before anything is stored: the
// including shader's stores may alias x, and a load after a store would wait for it.
void norm_load(uint base, uint n, out float v[NORM_E], out float gv[NORM_E]) {
  uint tid = gl_LocalInvocationID.x;
  uint units = n / 4;
  for (uint k = 0; k < NORM_MAXU; ++k) {
    uint u = tid + k * WG_SIZE;
    for (uint j = 0; j < 4; ++j) {
      uint i = 4 * u + j;
      bool in_row = u < units;
      v[4 * k + j] = in_row ? NORM_X[base + i] : 0.0;
      gv[4 * k + j] = in_row ? NORM_G[i] : 0.0;
    }
  }
}

// 1 / rms of the row whose values norm_load gave.
float norm_rstd(float v[NORM_E], uint n, float eps) {
  uint tid = gl_LocalInvocationID.x;
  precise float ss = 0.0;
  for (uint k = 0; k < NORM_MAXU; ++k) {
    if (tid + k * WG_SIZE < n / 4) {
      for (uint j = 0; j < 4; ++j) ss += v[4 * k + j] * v[4 * k + j];
    }
  }
  return inv_rms(wg_sum(ss), n, eps);
}

// v becomes the norm's output (v * r) * g; returns the largest |output| of the invocation.
float norm_apply(inout float v[NORM_E], float gv[NORM_E], float r) {
  float m = 0.0;
  for (uint k = 0; k < NORM_E; ++k) {
    precise float a = v[k] * r;
    precise float o = a * gv[k];
    v[k] = o;
    m = larger(m, abs(o));
  }
  return m;
}

#endif  // TRIT_NORM_ROW_GLSL
