#version 450
// gemm_f32_short_k: gemm_f32.comp's products, modes and bits where k is short (k = K <= 32):
// the LoRA branches' y += (x A^T) B^T and dx += (dy B) A, whose k is the rank while C is a whole
// activation (tokens x n_out or n_in). gemm_f32's 8 x 8 tiles staged k values of 8 rows and 8
// columns for every 64 elements and wrote C in 32-byte pieces; here an invocation owns a column
// j of C, keeps its K values of B in registers (loaded once) and walks rows, each row's
// a_scale * A values staged once per workgroup; a subgroup covers consecutive columns, so C is
// read and written in whole lines.
//   S(i, j) = sum over k = 0 .. K-1 IN ORDER of (a_scale * A(i, k)) * B(k, j), each product
//   rounded on its own (`precise`); modes 0 (set), 1 (accumulate), 2 (add scaled) as gemm_f32.
//
// Bindings (set 0): 0 a float[] (read), 1 b float[] (read), 2 c float[] (read/write).
// Push constants: GemmF32Push (gemm_f32's; its k must equal K).
// Spec constants: 0 workgroup size (a multiple of 64), 4 RB rows of C per workgroup, 12 K.
// Dispatch: G = ceil(m / RB) row groups over x (and z as gemm_f32), ceil(n / 64) over y.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_TILE_M) const uint RB = 32;
layout(constant_id = SPEC_GEMM_KB) const uint K = 16;
const uint COLS = 64;
const uint LANES = WG_SIZE / COLS;  // invocations a column

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) buffer C { float c[]; };

layout(push_constant) uniform Push {
  uint m;
  uint n;
  uint k;
  uint a_off;
  uint a_row;
  uint a_col;
  uint b_off;
  uint b_row;
  uint b_col;
  uint c_off;
  uint c_row;
  uint mode;
  float a_scale;
  float post;
} pc;

shared float as_[RB][K];  // a_scale * A(i0 + r, k); every invocation of a row reads one address

void main() {
  uint tid = gl_LocalInvocationID.x;
  uint col = tid % COLS, lane = tid / COLS;
  uint i0 = group_x_z() * RB;
  uint j = gl_WorkGroupID.y * COLS + col;
  for (uint e = tid; e < RB * K; e += WG_SIZE) {
    uint r = e / K, kk = e % K;
    uint i = i0 + r;
    precise float v = i < pc.m ? pc.a_scale * a[pc.a_off + i * pc.a_row + kk * pc.a_col] : 0.0;
    as_[r][kk] = v;
  }
  float bv[K];
  for (uint kk = 0; kk < K; ++kk) {
    bv[kk] = j < pc.n ? b[pc.b_off + kk * pc.b_row + j * pc.b_col] : 0.0;
  }
  barrier();
  if (j >= pc.n) return;
  // Four rows of C loaded before any is summed: C may alias A or B as far as the compiler
  // knows, so it cannot move the next row's load above this row's store itself.
  for (uint r0 = lane; r0 < RB; r0 += 4u * LANES) {
    uint ci[4];
    float cv[4];
    for (uint q = 0u; q < 4u; ++q) {
      uint r = r0 + q * LANES, i = i0 + r;
      ci[q] = pc.c_off + i * pc.c_row + j;
      cv[q] = r < RB && i < pc.m && pc.mode != 0u ? c[ci[q]] : 0.0;
    }
    for (uint q = 0u; q < 4u; ++q) {
      uint r = r0 + q * LANES, i = i0 + r;
      if (r >= RB || i >= pc.m) break;
      precise float acc = pc.mode == 1u ? cv[q] : 0.0;
      for (uint kk = 0; kk < K; ++kk) {
        precise float p = as_[r][kk] * bv[kk];
        acc += p;
      }
      if (pc.mode == 2u) {
        precise float v = acc * pc.post;
        c[ci[q]] = cv[q] + v;
      } else {
        c[ci[q]] = acc;
      }
    }
  }
}
