#version 450
// matmul_ternary_t / matmul_float_t: the transposed weight product of the backward pass,
// dx += scale * W^T dy, for one weight piece (rows [r0, r0 + rows) of W, i.e. columns
// [r0, r0 + rows) of dy) against one token tile:
//   S(t, c) = sum over the piece's rows r IN ORDER of dy[t, r0 + r] * w(r, c)
//   ternary (TERNARY defined; CPU reference ternary_matmul_transposed in
//     backend/cpu/ternary_transposed.cpp): w(r, c) = d_{r,c} * float(T[r, c]), d_{r,c} = d
//     (uniform, d != 0) or the scale of the 256-block (d == 0); T2 codes as matmul_ternary;
//   float (the LM head's dh += dlogits W): w(r, c) = W[r, c] as float_weights.glsl reads it.
// A weight in several pieces is summed piece by piece, in order, through an f32 accumulator
// tile: the first piece starts from 0 (first != 0) else from acc; the last (last != 0) ends
// with dx[t, c] = dx[t, c] + scale * S, else it stores S in acc. Every product is rounded on
// its own and added in row order, so the result equals the CPU reference bit for bit
// (ternary) whatever the tiling.
//
// Bindings (set 0):
//   0 wt   uint [piece]                 T2 codes (n_in / 16 words a row) or float rows (read)
//   1 dblk float[rows * n_in / 256]     ternary block scales, read only when d == 0     (read)
//   2 dy   float[n_tokens * dy_stride]  gradient of the layer's output                   (read)
//   3 acc  float[n_tokens * n_in]       accumulator between pieces; bound to anything when
//                                       first and last                            (read/write)
//   4 dx   float[n_tokens * n_in]       gradient of the input, added to on the last piece
// Push constants: MatmulTransposedPush { n_in, rows, r0, n_tokens, dy_stride, d, scale,
//   first, last }; ternary: n_in a multiple of 256.
// Spec constants: 0 workgroup size, must be 256 (64 columns x 16 tokens per workgroup),
//   8 weight type (float only: 0 f32, 1 f16, 2 bf16, 3 q8_0).
// Shared memory: 4 * (32 * 64 + 16 * 33) bytes.
// Dispatch: G = ceil(n_in / 64) column groups over x (and z when G > 65535), ceil(n_tokens /
//   16) over y.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 256;
layout(constant_id = SPEC_WEIGHT_TYPE) const uint WEIGHT_TYPE = WTYPE_F32;

layout(std430, set = 0, binding = 0) readonly buffer Wt { uint wt[]; };
layout(std430, set = 0, binding = 1) readonly buffer DBlk { float dblk[]; };
layout(std430, set = 0, binding = 2) readonly buffer Dy { float dy[]; };
layout(std430, set = 0, binding = 3) buffer Acc { float accbuf[]; };
layout(std430, set = 0, binding = 4) buffer Dx { float dx[]; };

layout(push_constant) uniform Push {
  uint n_in;
  uint rows;
  uint r0;
  uint n_tokens;
  uint dy_stride;
  float d;
  float scale;
  uint first;
  uint last;
} pc;

#include "float_weights.glsl"

const uint TC = 64;  // columns per workgroup
const uint TT = 16;  // tokens per workgroup
const uint RC = 32;  // weight rows per step (per barrier)
const uint TPT = TT / (256 / TC);  // tokens per thread (4)

shared float ws[RC][TC];
shared float ys[TT][RC + 1];

float weight(uint r, uint c) {
#ifdef TERNARY
  uint word = wt[r * (pc.n_in / 16) + c / 16];
  int code = int((word >> (2 * (c % 16))) & 3u);
  float s = pc.d != 0.0 ? pc.d : dblk[r * (pc.n_in / 256) + c / 256];
  precise float v = s * float(code - 1);
  return v;
#else
  return load1(r * row_bytes(pc.n_in), c);
#endif
}

void main() {
  uint tid = gl_LocalInvocationID.x;
  uint c0 = group_x_z() * TC;
  uint t0 = gl_WorkGroupID.y * TT;
  if (c0 >= pc.n_in || t0 >= pc.n_tokens) return;
  uint cx = tid % TC;
  uint ty = tid / TC;
  uint c = c0 + cx;
  precise float acc[TPT];
  for (uint q = 0; q < TPT; ++q) {
    uint t = t0 + ty + q * (256 / TC);
    acc[q] = (pc.first == 0u && t < pc.n_tokens && c < pc.n_in) ? accbuf[t * pc.n_in + c] : 0.0;
  }
  for (uint rb = 0; rb < pc.rows; rb += RC) {
    for (uint q = 0; q < RC * TC / 256; ++q) {
      uint idx = tid + 256 * q;
      uint rr = idx / TC, cc = idx % TC;
      ws[rr][cc] = (rb + rr < pc.rows && c0 + cc < pc.n_in) ? weight(rb + rr, c0 + cc) : 0.0;
    }
    for (uint q = 0; q < TT * RC / 256; ++q) {
      uint idx = tid + 256 * q;
      uint tt = idx / RC, rr = idx % RC;
      ys[tt][rr] = (t0 + tt < pc.n_tokens && rb + rr < pc.rows)
                       ? dy[(t0 + tt) * pc.dy_stride + pc.r0 + rb + rr]
                       : 0.0;
    }
    barrier();
    uint kn = min(RC, pc.rows - rb);
    for (uint kk = 0; kk < kn; ++kk) {
      float w = ws[kk][cx];
      for (uint q = 0; q < TPT; ++q) {
        precise float p = ys[ty + q * (256 / TC)][kk] * w;
        acc[q] += p;
      }
    }
    barrier();
  }
  if (c >= pc.n_in) return;
  for (uint q = 0; q < TPT; ++q) {
    uint t = t0 + ty + q * (256 / TC);
    if (t >= pc.n_tokens) continue;
    uint i = t * pc.n_in + c;
    if (pc.last != 0u) {
      precise float v = pc.scale * acc[q];
      dx[i] = dx[i] + v;
    } else {
      accbuf[i] = acc[q];
    }
  }
}
