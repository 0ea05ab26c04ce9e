#version 450
// gemm_f32: a small f32 matrix product with arbitrary strides, for the LoRA branches of
// training (CPU reference gemm_f32_acc in backend/cpu/ternary_transposed.cpp, through
// matmul_f32_forward / _backward_dx / _backward_dw in backend/cpu/ops.h):
//   A(i, k) = a[a_off + i * a_row + k * a_col]   (two strides: A, A^T and column ranges)
//   B(k, j) = b[b_off + k * b_row + j * b_col]
//   S(i, j) = sum over k = 0 .. K-1 IN ORDER of (a_scale * A(i, k)) * B(k, j)
//   mode 0 (set):        C(i, j) = S, summed from 0
//   mode 1 (accumulate): C(i, j) = C(i, j) + p_0 + p_1 + ... (the sum starts from C, as
//                        gemm_f32_acc adds its products to C one by one)
//   mode 2 (add scaled): C(i, j) = C(i, j) + S * post   (the CPU's `y += acc * s`)
// with C(i, j) = c[c_off + i * c_row + j]. One invocation owns one element of C and adds its
// products one at a time in k order, each product rounded on its own (`precise`), so the
// result equals the CPU's bit for bit, and a product split over K in several dispatches
// (mode 0, then mode 1) gives the same bits as one dispatch.
//
// Work: a workgroup owns a TI x TJ tile of C, one element an invocation. The sum over k cannot
// be shared out without changing its bits, so a long k (x A^T and dy B of the LoRA branches:
// k = n_in or n_out, C only tokens x rank) is one chain of k dependent adds an element; the
// shader keeps that chain fed: k goes by in blocks of KB, the block's a_scale * A values and B
// values are staged in shared memory ([row][k] and [column][k], so that an invocation reads 4
// k values of each with one vec4 load), and the next block's values are loaded into registers
// while the current block is summed. The host picks small tiles (64 invocations) so that the
// few elements of such a product spread over many workgroups.
//
// Bindings (set 0):
//   0 a float[]   (read)
//   1 b float[]   (read)
//   2 c float[]   (read/write; not the buffer range of a or b)
// Push constants: GemmF32Push { m, n, k, a_off, a_row, a_col, b_off, b_row, b_col, c_off,
//   c_row, mode, a_scale, post }.
// Spec constants: 0 workgroup size, must be TI * TJ; 4 TI, 5 TJ (rows, columns of the tile,
//   powers of two); 12 KB, k values per barrier (a multiple of 4; TI * KB and TJ * KB
//   multiples of the workgroup size).
// Shared memory: 4 * (TI + TJ) * (KB + 4) bytes (8.3 KiB for 8 x 8 and KB = 128).
// Dispatch: G = ceil(m / TI) row groups over x (and z when G > 65535: x = min(G, 65535),
//   z = ceil(G / x)), ceil(n / TJ) over y.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 64;
layout(constant_id = SPEC_TILE_M) const uint TI = 8;
layout(constant_id = SPEC_TILE_N) const uint TJ = 8;
layout(constant_id = SPEC_GEMM_KB) const uint KB = 128;

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

// a_scale * A(i0 + r, k0 + kk) at as_[r][kk / 4][kk % 4], B(k0 + kk, j0 + j) at
// bs_[j][kk / 4][kk % 4]; one vec4 of padding a row spreads the rows over the banks.
shared vec4 as_[TI][KB / 4 + 1];
shared vec4 bs_[TJ][KB / 4 + 1];

const uint NA = TI * KB / WG_SIZE;  // values of A an invocation stages per block
const uint NB = TJ * KB / WG_SIZE;  // values of B
float av_[NA];  // the next block's values, loaded before the current block is summed
float bv_[NB];

// Staging element e = tid + WG_SIZE q of a block: k runs fastest across invocations where the
// operand is contiguous in k (a_col == 1, b_row == 1), so that loads coalesce; else the row or
// column does.
uvec2 a_place(uint e) {  // (r, kk)
  return pc.a_col == 1u ? uvec2(e / KB, e % KB) : uvec2(e % TI, e / TI);
}
uvec2 b_place(uint e) {  // (j, kk)
  return pc.b_row == 1u ? uvec2(e / KB, e % KB) : uvec2(e % TJ, e / TJ);
}

void fetch(uint k0, uint i0, uint j0, uint tid) {
  for (uint q = 0; q < NA; ++q) {
    uvec2 rk = a_place(tid + WG_SIZE * q);
    uint i = i0 + rk.x, kk = k0 + rk.y;
    av_[q] = (i < pc.m && kk < pc.k) ? a[pc.a_off + i * pc.a_row + kk * pc.a_col] : 0.0;
  }
  for (uint q = 0; q < NB; ++q) {
    uvec2 jk = b_place(tid + WG_SIZE * q);
    uint j = j0 + jk.x, kk = k0 + jk.y;
    bv_[q] = (j < pc.n && kk < pc.k) ? b[pc.b_off + kk * pc.b_row + j * pc.b_col] : 0.0;
  }
}

void stage(uint tid) {
  for (uint q = 0; q < NA; ++q) {
    uvec2 rk = a_place(tid + WG_SIZE * q);
    precise float v = pc.a_scale * av_[q];
    as_[rk.x][rk.y / 4][rk.y % 4] = v;
  }
  for (uint q = 0; q < NB; ++q) {
    uvec2 jk = b_place(tid + WG_SIZE * q);
    bs_[jk.x][jk.y / 4][jk.y % 4] = bv_[q];
  }
}

void main() {
  uint tid = gl_LocalInvocationID.x;
  uint tj = tid % TJ;
  uint ti = tid / TJ;
  uint i0 = group_x_z() * TI;
  uint j0 = gl_WorkGroupID.y * TJ;
  if (i0 >= pc.m || j0 >= pc.n) return;
  uint i = i0 + ti;
  uint j = j0 + tj;
  bool live = i < pc.m && j < pc.n;
  uint ci = pc.c_off + i * pc.c_row + j;
  precise float acc = 0.0;
  if (live && pc.mode == 1u) acc = c[ci];
  fetch(0, i0, j0, tid);
  for (uint k0 = 0; k0 < pc.k; k0 += KB) {
    stage(tid);
    barrier();
    if (k0 + KB < pc.k) fetch(k0 + KB, i0, j0, tid);  // in flight while the block is summed
    uint kn = min(KB, pc.k - k0);
    if (kn == KB) {
      for (uint k4 = 0; k4 < KB / 4; ++k4) {
        vec4 x = as_[ti][k4];
        vec4 y = bs_[tj][k4];
        for (uint u = 0; u < 4; ++u) {
          precise float p = x[u] * y[u];
          acc += p;
        }
      }
    } else {
      for (uint kk = 0; kk < kn; ++kk) {
        precise float p = as_[ti][kk / 4][kk % 4] * bs_[tj][kk / 4][kk % 4];
        acc += p;
      }
    }
    barrier();
  }
  if (!live) return;
  if (pc.mode == 2u) {
    precise float v = acc * pc.post;
    c[ci] = c[ci] + v;
  } else {
    c[ci] = acc;
  }
}
