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
// Work: a workgroup owns 64 columns x TT = 8 * TPT tokens of the output; each of its 128
// invocations owns 4 neighbouring columns x TPT neighbouring tokens (4 * TPT sums in
// registers, one chain of adds each). Rows go by in steps of 32: the step's weights are
// decoded once into shared memory (ternary: one invocation per T2 word, i.e. 16 weights of a
// row; float: four runs of 4 elements each) and its dy values staged beside them; each row of
// the step then costs an invocation one vec4 (4 weights) and TPT / 2 vec2 (its tokens) shared
// loads for 4 * TPT products. The next step's words and dy values are loaded into registers
// before the current step is summed, and decoded into shared memory after it.
//
// Bindings (set 0):
//   0 wt   uint [piece]                 T2 codes (n_in / 16 words a row) or float rows (read)
//   1 dblk float[rows * n_in / 256]     ternary block scales, read only when d == 0     (read)
//   2 dy   float[n_tokens * dy_stride]  gradient of the layer's output                   (read)
//   3 acc  float[n_tokens * n_in]       accumulator between pieces; bound to anything when
//                                       first and last                            (read/write)
//   4 dx   float[n_tokens * n_in]       gradient of the input, added to on the last piece
// Push constants: MatmulTransposedPush { n_in, rows, r0, n_tokens, dy_stride, d, scale,
//   first, last, row_in }; ternary: rows of row_in weights (n_in rounded up to 256, the codes
//   past n_in zero); dx has n_in columns.
// Spec constants: 0 workgroup size, must be 128; 7 tokens per invocation TPT, 2 or 4 (a
//   workgroup owns 8 * TPT tokens); 8 weight type (float only: 0 f32, 1 f16, 2 bf16, 3 q8_0).
// Shared memory: 4 * 32 * (68 + 8 * TPT + 2) bytes (10.8 KiB for TPT = 2, 12.8 KiB for 4).
// Dispatch: G = ceil(n_in / 64) column groups over x (and z when G > 65535), ceil(n_tokens /
//   (8 * TPT)) over y.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_THREAD_N) const uint TPT = 2;
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
  uint row_in;  // ternary: weights per stored row, n_in rounded up to 256
} pc;

#include "float_weights.glsl"

const uint TC = 64;        // columns per workgroup: 16 invocations x 4
const uint TT = 8 * TPT;   // tokens per workgroup: 8 invocations x TPT
const uint RC = 32;        // weight rows per step (per barrier)
const uint NY = RC * TT / 128;  // dy values each invocation stages per step (2 * TPT)

// w(rb + r, c0 + 4 i .. 4 i + 3) at ws[r][i]; the 17th vec4 of a row is padding, so that the
// 16-weight runs the invocations store in one instruction spread over the banks.
shared vec4 ws[RC][TC / 4 + 1];
// dy[t0 + 2 h .. 2 h + 1, r0 + rb + r] at ys[r][h] (padded by one vec2 a row likewise).
shared vec2 ys[RC][TT / 2 + 1];

// What an invocation loads for a step, before it is decoded into shared memory.
#ifdef TERNARY
uint code_word;    // the T2 word of row rb + tid / 4, columns c0 + 16 (tid % 4) .. + 15
float code_scale;  // its scale d_{r,c}
#else
uvec4 raw[RC * TC / 4 / 128];  // raw4 words of row rb + g / 16, elements c0 + 4 (g % 16) ..
#endif
float yv[NY];  // dy of token t0 + e / RC, row rb + e % RC, e = tid + 128 q

void fetch(uint rb, uint c0, uint t0, uint tid) {
#ifdef TERNARY
  uint r = rb + tid / 4;
  code_word = 0u;
  code_scale = 0.0;
  if (r < pc.rows) {
    code_word = wt[r * (pc.row_in / 16) + c0 / 16 + tid % 4];
    code_scale = pc.d != 0.0 ? pc.d : dblk[r * (pc.row_in / 256) + c0 / 256];
  }
#else
  for (uint q = 0; q < raw.length(); ++q) {
    uint g = tid + 128 * q;
    uint r = rb + g / 16, c = c0 + 4 * (g % 16);
    raw[q] = (r < pc.rows && c < pc.n_in) ? raw4(r * row_bytes(pc.n_in), c / 4, pc.n_in)
                                          : uvec4(0u);
  }
#endif
  for (uint q = 0; q < NY; ++q) {
    uint e = tid + 128 * q;
    uint t = t0 + e / RC, r = rb + e % RC;
    yv[q] = (t < pc.n_tokens && r < pc.rows) ? dy[t * pc.dy_stride + pc.r0 + r] : 0.0;
  }
}

void stage(uint tid) {
#ifdef TERNARY
  uint r = tid / 4, i0 = 4 * (tid % 4);
  for (uint i = 0; i < 4; ++i) {
    vec4 w;
    for (uint j = 0; j < 4; ++j) {
      int code = int((code_word >> (2 * (4 * i + j))) & 3u);
      precise float v = code_scale * float(code - 1);
      w[j] = v;
    }
    ws[r][i0 + i] = w;
  }
#else
  for (uint q = 0; q < raw.length(); ++q) {
    uint g = tid + 128 * q;
    ws[g / 16][g % 16] = cook4(raw[q]);
  }
#endif
  for (uint q = 0; q < NY; ++q) {
    uint e = tid + 128 * q;
    uint tt = e / RC;
    ys[e % RC][tt / 2][tt % 2] = yv[q];
  }
}

// Adds row kk of the staged step to the sums acc[4 q + j] (token TPT * ty + q, column
// 4 cx + j): each product rounded on its own (precise: no fused multiply-add), then added to
// its own sum.
#define ADD_ROW(kk)                                      \
  {                                                      \
    vec4 w = ws[kk][cx];                                 \
    for (uint h = 0; h < TPT / 2; ++h) {                 \
      vec2 y = ys[kk][ty * (TPT / 2) + h];               \
      for (uint j = 0; j < 4; ++j) {                     \
        precise float p0 = y.x * w[j];                   \
        acc[4 * (2 * h) + j] += p0;                      \
        precise float p1 = y.y * w[j];                   \
        acc[4 * (2 * h + 1) + j] += p1;                  \
      }                                                  \
    }                                                    \
  }

void main() {
  uint tid = gl_LocalInvocationID.x;
  uint c0 = group_x_z() * TC;
  uint t0 = gl_WorkGroupID.y * TT;
  if (c0 >= pc.n_in || t0 >= pc.n_tokens) return;
  // A 32-invocation subgroup covers 8 x 4 of the 16 x 8 (column run, token run) grid, so each
  // of its weight and dy loads touches 128 bytes or fewer.
  uint lane = tid % 32, sg = tid / 32;
  uint cx = 8 * (sg % 2) + lane % 8;
  uint ty = 4 * (sg / 2) + lane / 8;
  precise float acc[4 * TPT];  // acc[4 q + j]: token t0 + TPT * ty + q, column c0 + 4 cx + j
  for (uint q = 0; q < TPT; ++q) {
    for (uint j = 0; j < 4; ++j) {
      uint t = t0 + TPT * ty + q, c = c0 + 4 * cx + j;
      acc[4 * q + j] = (pc.first == 0u && t < pc.n_tokens && c < pc.n_in)
                           ? accbuf[t * pc.n_in + c]
                           : 0.0;
    }
  }
  fetch(0, c0, t0, tid);
  for (uint rb = 0; rb < pc.rows; rb += RC) {
    stage(tid);
    barrier();
    if (rb + RC < pc.rows) fetch(rb + RC, c0, t0, tid);  // in flight while the step is summed
    uint kn = min(RC, pc.rows - rb);
    if (kn == RC) {
      for (uint kk = 0; kk < RC; ++kk) ADD_ROW(kk)  // a constant count: unrolled
    } else {
      for (uint kk = 0; kk < kn; ++kk) ADD_ROW(kk)
    }
    barrier();
  }
  for (uint q = 0; q < TPT; ++q) {
    uint t = t0 + TPT * ty + q;
    if (t >= pc.n_tokens) continue;
    for (uint j = 0; j < 4; ++j) {
      uint c = c0 + 4 * cx + j;
      if (c >= pc.n_in) continue;
      uint i = t * pc.n_in + c;
      if (pc.last != 0u) {
        precise float v = pc.scale * acc[4 * q + j];
        dx[i] = dx[i] + v;
      } else {
        accbuf[i] = acc[4 * q + j];
      }
    }
  }
}
