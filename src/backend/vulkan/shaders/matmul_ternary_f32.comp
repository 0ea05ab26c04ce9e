#version 450
// matmul_ternary_f32: bitlinear with float activations (--act-quant none), one weight piece
// (output rows [r0, r0 + rows)) against one token tile (CPU reference ternary_matmul_float in
// backend/cpu/cpu_backend.cpp):
//   y[t, r0 + r] = (sum_j (float(trit[r, j]) * s_j) * x[t, j]) * out_scale
// with s_j = d (uniform scale, d != 0) or the scale of weight j's 256-block (d == 0). Each
// weight float(trit) * s_j is exact; the sum is split over threads and reduced as a tree, so
// it differs from the CPU's sequential sum by rounding.
//
// Bindings (set 0), T2 layout as matmul_ternary.comp:
//   0 w    uint [rows * n_in / 16]    T2 codes of the weight piece                (read)
//   1 dblk float[rows * n_in / 256]   per-256-block scales; read only when d == 0 (read)
//   2 x    float[n_tokens * n_in]     f32 activations of the token tile           (read)
//   3 y    float[n_tokens * y_stride] output tile; columns [r0, r0 + rows) written (write)
// Push constants: MatmulTernaryPush { n_in, rows, r0, n_tokens, y_stride, d, out_scale };
//   n_in a multiple of 256.
// Spec constants: 0 workgroup size (power of two), 2 MV_ROWS rows and 3 MV_TOKENS tokens per
//   workgroup (the threads split n_in). Shared memory: 4 * WG * MV_ROWS * MV_TOKENS bytes.
// Dispatch: row groups G = ceil(rows / MV_ROWS) over x (and z when G > 65535: x = min(G, 65535),
//   z = ceil(G / x)), ceil(n_tokens / MV_TOKENS) over y.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_MV_ROWS) const uint MV_ROWS = 2;
layout(constant_id = SPEC_MV_TOKENS) const uint MV_TOKENS = 1;

layout(std430, set = 0, binding = 0) readonly buffer W { uint w[]; };
layout(std430, set = 0, binding = 1) readonly buffer DBlk { float dblk[]; };
layout(std430, set = 0, binding = 2) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
  uint n_in;
  uint rows;
  uint r0;
  uint n_tokens;
  uint y_stride;
  float d;
  float out_scale;
} pc;

const uint MV_VALUES = MV_ROWS * MV_TOKENS;
shared float red[WG_SIZE * MV_VALUES];

void main() {
  uint row0 = group_x_z() * MV_ROWS;
  uint tok0 = gl_WorkGroupID.y * MV_TOKENS;
  if (row0 >= pc.rows || tok0 >= pc.n_tokens) return;
  uint tid = gl_LocalInvocationID.x;
  uint n_words = pc.n_in / 16;
  uint n_blocks = pc.n_in / 256;
  float acc[MV_VALUES];
  for (uint v = 0; v < MV_VALUES; ++v) acc[v] = 0.0;
  for (uint k = tid; k < n_words; k += WG_SIZE) {
    for (uint r = 0; r < MV_ROWS; ++r) {
      if (row0 + r >= pc.rows) break;
      uint word = w[(row0 + r) * n_words + k];
      float s = pc.d != 0.0 ? pc.d : dblk[(row0 + r) * n_blocks + k / 16];
      for (uint t = 0; t < MV_TOKENS; ++t) {
        if (tok0 + t >= pc.n_tokens) break;
        uint xb = (tok0 + t) * pc.n_in + 16 * k;
        for (uint i = 0; i < 16; ++i) {
          precise float wv = float(int((word >> (2 * i)) & 3u) - 1) * s;
          precise float p = wv * x[xb + i];
          acc[r * MV_TOKENS + t] += p;
        }
      }
    }
  }
  for (uint v = 0; v < MV_VALUES; ++v) red[v * WG_SIZE + tid] = acc[v];
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) {
      for (uint v = 0; v < MV_VALUES; ++v) red[v * WG_SIZE + tid] += red[v * WG_SIZE + tid + s];
    }
    barrier();
  }
  if (tid < MV_VALUES) {
    uint r = tid / MV_TOKENS, t = tid % MV_TOKENS;
    if (row0 + r < pc.rows && tok0 + t < pc.n_tokens) {
      precise float v = red[tid * WG_SIZE] * pc.out_scale;
      y[(tok0 + t) * pc.y_stride + pc.r0 + row0 + r] = v;
    }
  }
}
