#version 450
// matmul_float: float weights x f32 activations, one weight piece (output rows
// [r0, r0 + rows)) against one token tile, f32 accumulation (the LM head, LoRA A and B, merged
// layers; CPU reference float_matmul_scalar in backend/cpu/kernels.cpp, the LoRA branch in
// backend/cpu/linear.cpp):
//   y[t, r0 + r] = alpha * dot(W[r, :], x[t, :])                       (beta == 0: y not read)
//   y[t, r0 + r] = alpha * dot(W[r, :], x[t, :]) + beta * y[t, r0 + r] (beta != 0; LoRA adds
//                                                   scale * B (A x) into a bitlinear's output)
// The sum is split over threads and reduced as a tree, so it differs from the CPU's sequential
// sum by rounding (compare with a relative tolerance, ~1e-5 for n_in in the thousands).
//
// Weight rows: f32, f16, bf16 (n_in even) or q8_0 (n_in % 32 == 0), see float_weights.glsl.
// Bindings (set 0):
//   0 wt  uint [piece bytes / 4]        weight piece, rows of row_bytes(n_in)       (read)
//   1 x   float[n_tokens * n_in]        activations of the token tile               (read)
//   2 y   float[n_tokens * y_stride]    output tile; columns [r0, r0 + rows)  (read/write)
// Push constants: MatmulFloatPush { n_in, rows, r0, n_tokens, y_stride, alpha, beta }.
// Spec constants: 0 workgroup size (power of two), 1 path (0 matvec, 1 tiled), 2 MV_ROWS,
//   3 MV_TOKENS, 4 TILE_M, 5 TILE_N, 6 THREAD_M, 7 THREAD_N (as matmul_ternary.comp:
//   (TILE_M / THREAD_M) * (TILE_N / THREAD_N) == workgroup size), 8 weight type
//   (0 f32, 1 f16, 2 bf16, 3 q8_0).
// Shared memory: matvec 4 * WG * MV_ROWS * MV_TOKENS bytes; tiled 4 * 33 * (TILE_M + TILE_N)
//   bytes (default 64 x 32: 12672 B).
// Dispatch: as matmul_ternary.comp: row groups G = ceil(rows / MV_ROWS) or ceil(rows / TILE_M)
//   over x (and z when G > 65535: x = min(G, 65535), z = ceil(G / x)); y = ceil(n_tokens /
//   MV_TOKENS) or ceil(n_tokens / TILE_N). The LM head of a 128k vocabulary with MV_ROWS = 1
//   needs the z split.
// Only a plain module: 16-bit values and q8_0 bytes are read out of uint words, which costs
// no more memory traffic than 8/16-bit storage would.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_MATMUL_PATH) const uint PATH = PATH_MATVEC;
layout(constant_id = SPEC_MV_ROWS) const uint MV_ROWS = 2;
layout(constant_id = SPEC_MV_TOKENS) const uint MV_TOKENS = 1;
layout(constant_id = SPEC_TILE_M) const uint TILE_M = 64;
layout(constant_id = SPEC_TILE_N) const uint TILE_N = 32;
layout(constant_id = SPEC_THREAD_M) const uint THREAD_M = 4;
layout(constant_id = SPEC_THREAD_N) const uint THREAD_N = 4;
layout(constant_id = SPEC_WEIGHT_TYPE) const uint WEIGHT_TYPE = WTYPE_F32;

layout(std430, set = 0, binding = 0) readonly buffer Wt { uint wt[]; };
layout(std430, set = 0, binding = 1) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 2) buffer Y { float y[]; };

layout(push_constant) uniform Push {
  uint n_in;
  uint rows;
  uint r0;
  uint n_tokens;
  uint y_stride;
  float alpha;
  float beta;
} pc;

#include "float_weights.glsl"

const uint KC = 32;  // tiled: elements per step (one q8_0 block)
const uint KS = KC + 1;
const uint MV_VALUES = MV_ROWS * MV_TOKENS;
const uint SH_MATVEC = WG_SIZE * MV_VALUES;
const uint SH_TILED = (TILE_M + TILE_N) * KS;
const uint SH_FLOATS = PATH == PATH_MATVEC ? SH_MATVEC : SH_TILED;
shared float sh[SH_FLOATS];

void store(uint t, uint r, float acc) {
  uint i = t * pc.y_stride + pc.r0 + r;
  precise float v = pc.alpha * acc;
  if (pc.beta != 0.0) {
    precise float old = pc.beta * y[i];
    v = old + v;
  }
  y[i] = v;
}

void matvec(uint row0, uint tok0) {
  uint tid = gl_LocalInvocationID.x;
  uint units = (pc.n_in + 3) / 4;
  uint rb = row_bytes(pc.n_in);
  float acc[MV_VALUES];
  for (uint v = 0; v < MV_VALUES; ++v) acc[v] = 0.0;
  for (uint u = tid; u < units; u += WG_SIZE) {
    vec4 xv[MV_TOKENS];
    for (uint t = 0; t < MV_TOKENS; ++t) {
      vec4 a = vec4(0.0);
      if (tok0 + t < pc.n_tokens) {
        uint b = (tok0 + t) * pc.n_in + 4 * u;
        a.x = x[b];
        if (4 * u + 1 < pc.n_in) a.y = x[b + 1];
        if (4 * u + 2 < pc.n_in) a.z = x[b + 2];
        if (4 * u + 3 < pc.n_in) a.w = x[b + 3];
      }
      xv[t] = a;
    }
    for (uint r = 0; r < MV_ROWS; ++r) {
      if (row0 + r >= pc.rows) break;
      vec4 wv = load4((row0 + r) * rb, u, pc.n_in);
      for (uint t = 0; t < MV_TOKENS; ++t) acc[r * MV_TOKENS + t] += dot(wv, xv[t]);
    }
  }
  for (uint v = 0; v < MV_VALUES; ++v) sh[v * WG_SIZE + tid] = acc[v];
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) {
      for (uint v = 0; v < MV_VALUES; ++v) sh[v * WG_SIZE + tid] += sh[v * WG_SIZE + tid + s];
    }
    barrier();
  }
  if (tid < MV_VALUES) {
    uint r = tid / MV_TOKENS, t = tid % MV_TOKENS;
    if (row0 + r < pc.rows && tok0 + t < pc.n_tokens) store(tok0 + t, row0 + r, sh[tid * WG_SIZE]);
  }
}

// Shared: weights sh[m * KS + k] (m < TILE_M), activations sh[TILE_M * KS + n * KS + k]. Each
// thread loads its part of the next step into registers before the products of this one, so
// that a step's loads overlap the previous step's arithmetic (each output still sums k in
// order: the same bits).
const uint W_PER = (TILE_M * (KC / 4) + WG_SIZE - 1) / WG_SIZE;
const uint X_PER = (TILE_N * KC + WG_SIZE - 1) / WG_SIZE;

void tiled(uint row0, uint tok0) {
  uint tid = gl_LocalInvocationID.x;
  uint rb = row_bytes(pc.n_in);
  const uint TX = TILE_N / THREAD_N;
  const uint RS = TILE_M / THREAD_M;
  uint tx = tid % TX;
  uint ty = tid / TX;
  float acc[THREAD_M * THREAD_N];
  for (uint v = 0; v < THREAD_M * THREAD_N; ++v) acc[v] = 0.0;

  vec4 w_reg[W_PER];
  float x_reg[X_PER];
  for (uint k0 = 0; k0 < pc.n_in + KC; k0 += KC) {
    if (k0 > 0) {  // the previous step's values into shared memory
      for (uint j = 0; j < W_PER; ++j) {
        uint i = tid + j * WG_SIZE;
        if (i < TILE_M * (KC / 4)) {
          uint m = i / (KC / 4), u = i % (KC / 4);
          sh[m * KS + 4 * u] = w_reg[j].x;
          sh[m * KS + 4 * u + 1] = w_reg[j].y;
          sh[m * KS + 4 * u + 2] = w_reg[j].z;
          sh[m * KS + 4 * u + 3] = w_reg[j].w;
        }
      }
      for (uint j = 0; j < X_PER; ++j) {
        uint i = tid + j * WG_SIZE;
        if (i < TILE_N * KC) sh[TILE_M * KS + (i / KC) * KS + i % KC] = x_reg[j];
      }
      barrier();
    }
    if (k0 < pc.n_in) {  // this step's values into registers
      for (uint j = 0; j < W_PER; ++j) {
        uint i = tid + j * WG_SIZE;
        uint m = i / (KC / 4), u = i % (KC / 4);
        uint e = k0 + 4 * u;
        w_reg[j] = (i < TILE_M * (KC / 4) && row0 + m < pc.rows && e < pc.n_in)
                       ? load4((row0 + m) * rb, e / 4, pc.n_in)
                       : vec4(0.0);
      }
      for (uint j = 0; j < X_PER; ++j) {
        uint i = tid + j * WG_SIZE;
        uint n = i / KC, k = i % KC;
        x_reg[j] = (i < TILE_N * KC && tok0 + n < pc.n_tokens && k0 + k < pc.n_in)
                       ? x[(tok0 + n) * pc.n_in + k0 + k]
                       : 0.0;
      }
    }
    if (k0 > 0) {  // the previous step's products
      for (uint k = 0; k < KC; ++k) {
        float xv[THREAD_N];
        for (uint j = 0; j < THREAD_N; ++j) xv[j] = sh[TILE_M * KS + (tx + j * TX) * KS + k];
        for (uint i = 0; i < THREAD_M; ++i) {
          float wv = sh[(ty + i * RS) * KS + k];
          for (uint j = 0; j < THREAD_N; ++j) acc[i * THREAD_N + j] += wv * xv[j];
        }
      }
      barrier();
    }
  }

  for (uint i = 0; i < THREAD_M; ++i) {
    uint m = ty + i * RS;
    if (row0 + m >= pc.rows) continue;
    for (uint j = 0; j < THREAD_N; ++j) {
      uint n = tx + j * TX;
      if (tok0 + n < pc.n_tokens) store(tok0 + n, row0 + m, acc[i * THREAD_N + j]);
    }
  }
}

void main() {
  uint group = group_x_z();
  if (PATH == PATH_MATVEC) {
    uint row0 = group * MV_ROWS;
    uint tok0 = gl_WorkGroupID.y * MV_TOKENS;
    if (row0 >= pc.rows || tok0 >= pc.n_tokens) return;
    matvec(row0, tok0);
  } else {
    uint row0 = group * TILE_M;
    uint tok0 = gl_WorkGroupID.y * TILE_N;
    if (row0 >= pc.rows || tok0 >= pc.n_tokens) return;
    tiled(row0, tok0);
  }
}
