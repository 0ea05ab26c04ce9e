#version 450
// gemm_f32: a small f32 matrix product with arbitrary strides, for the LoRA branches of
// training (CPU reference gemm_f32_acc in backend/cpu/ternary_transposed.cpp, through
// matmul_f32_forward / _backward_dx / _backward_dw in backend/cpu/ops_backward.cpp):
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
// Bindings (set 0):
//   0 a float[]   (read)
//   1 b float[]   (read)
//   2 c float[]   (read/write; not the buffer range of a or b)
// Push constants: GemmF32Push { m, n, k, a_off, a_row, a_col, b_off, b_row, b_col, c_off,
//   c_row, mode, a_scale, post }.
// Spec constants: 0 workgroup size, must be 256 (a 16 x 16 tile of C per workgroup);
//   12 k values per barrier (16 or 64).
// Shared memory: 2 * 16 * (KB + 1) floats.
// Dispatch: G = ceil(m / 16) row groups over x (and z when G > 65535: x = min(G, 65535),
//   z = ceil(G / x)), ceil(n / 16) over y.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 256;

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

const uint T = 16;   // a T x T tile of C per workgroup
// k values staged per barrier: 64 where k runs over thousands (the LoRA A products), 16 for a
// short k (the rank), whose staging would be mostly padding.
layout(constant_id = SPEC_GEMM_KB) const uint KB = 64;
shared float as_[T][KB + 1];  // [i][k]
shared float bs_[KB][T + 1];  // [k][j]

void main() {
  uint tid = gl_LocalInvocationID.x;
  uint tj = tid % T;
  uint ti = tid / T;
  uint i0 = group_x_z() * T;
  uint j0 = gl_WorkGroupID.y * T;
  if (i0 >= pc.m || j0 >= pc.n) return;
  uint i = i0 + ti;
  uint j = j0 + tj;
  bool live = i < pc.m && j < pc.n;
  uint ci = pc.c_off + i * pc.c_row + j;
  precise float acc = 0.0;
  if (live && pc.mode == 1u) acc = c[ci];
  for (uint k0 = 0; k0 < pc.k; k0 += KB) {
    for (uint e = tid; e < T * KB; e += WG_SIZE) {
      uint r = e / KB, kk = e % KB;  // A(i0 + r, k0 + kk)
      as_[r][kk] = (i0 + r < pc.m && k0 + kk < pc.k)
                       ? a[pc.a_off + (i0 + r) * pc.a_row + (k0 + kk) * pc.a_col]
                       : 0.0;
      uint kb = e / T, jj = e % T;  // B(k0 + kb, j0 + jj)
      bs_[kb][jj] = (k0 + kb < pc.k && j0 + jj < pc.n)
                        ? b[pc.b_off + (k0 + kb) * pc.b_row + (j0 + jj) * pc.b_col]
                        : 0.0;
    }
    barrier();
    uint kn = min(KB, pc.k - k0);
    for (uint kk = 0; kk < kn; ++kk) {
      precise float av = pc.a_scale * as_[ti][kk];
      precise float p = av * bs_[kk][tj];
      acc += p;
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
