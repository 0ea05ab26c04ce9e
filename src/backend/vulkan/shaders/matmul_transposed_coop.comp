#version 450
// matmul_ternary_t_coop / matmul_float_t_coop (FLOAT_F16): the transposed products of the
// backward pass (matmul_transposed.comp: dx += scale * W^T dy for one weight piece) on f16
// cooperative matrices with f32 sums, the fast path DESIGN section 2 allows GPU training:
//   S(t, c) = sum over the piece's rows r of dyh[t, r0 + r] * w(r, c)   (f32 sums, any order)
//   ternary: w(r, c) = float(T[r, c]) (uniform scale, applied below), or half(d_{r,c}) * T[r, c]
//     (block scales: a TQ1_0 / TQ2_0 scale is a half, so the product is exact);
//   FLOAT_F16 (the LM head's dh += dlogits W): w(r, c) = W[r, c], f16 rows as stored;
//   dx[t, c] += scale * d * tscale[t] * (sum of S over the pieces)     (d = 1 for block scales)
// with dyh and tscale from dy_to_f16.comp (each dy row scaled by a power of two into halves).
// Errors: dy rounded to a half (relative 2^-12), f32 sums in the matrix units' order; tests
// hold the result to 2^-9 of sum_r |dy[t, r] * w(r, c)| of the sums in double.
//
// Split over the rows (split_rows != 0: a small grid over many rows, as the LM head's 128 tokens
// over 128,256 rows): workgroup y takes token tile y % ceil(n_tokens / TT) and rows
// [s * split_rows, (s + 1) * split_rows) of the piece, s = y / ceil(n_tokens / TT), and stores
// its sums S_s in acc at (s * n_tokens + t) * n_in + c; transposed_reduce.comp then adds the
// splits in order and ends as below.
//
// Work: a workgroup owns TT = 64 tokens x TC = 128 columns of dx; its four subgroups 32 x 64
// each, as FRAG_M x FRAG_N matrices of CM_M tokens x CM_N columns (FRAG_M * CM_M = 32,
// FRAG_N * CM_N = 64). Weight rows go by RK = 32 a step: the step's halves of dy (64 tokens x 32)
// and its weights as halves (32 rows x 128) are staged in shared memory, the next
// step's words loaded into registers while the current one is multiplied.
//
// Bindings (set 0):
//   0 wt     uint [piece]                   T2 codes, row_in / 16 words a row; FLOAT_F16:
//                                           halves, n_in / 2 words a row               (read)
//   1 dblk   float[rows * row_in / 256]     block scales, read only when d == 0 (ternary) (read)
//   2 dyh    uint [n_tokens * dy_stride]    dy as halves (dy_to_f16)                   (read)
//   3 tscale float[n_tokens]                the rows' scales                           (read)
//   4 acc    float[n_tokens * n_in]         sums between pieces; anything when first and last;
//                                           split: the splits' sums [splits][n_tokens][n_in]
//   5 dx     float[n_tokens * n_in]         added to on the last piece (not when split)
// Push constants: MatmulTransposedCoopPush: matmul_transposed.comp's, dy_stride counting words
//   of dyh, r0 even (a piece starts on a word), FLOAT_F16: d = 0, n_in even; and split_rows (a
//   multiple of RK, or 0).
// Spec constants: 0 workgroup size = 4 subgroups; 6 FRAG_M, 7 FRAG_N; 14..16 CM_M, CM_N, CM_K
//   (a device's f16 shape; CM_K divides 32 and is a multiple of 8, CM_N a multiple of 8).
// Shared memory: 4 * max(64 * 20 + 32 * 68, 64 * 132) bytes = 33,792.
// Dispatch: ceil(n_in / 128) column groups over x (and z past 65535), ceil(n_tokens / 64) times
//   the splits over y.
// Needs: cooperativeMatrix (NV, or KHR through the derived module), shaderFloat16,
//   vulkanMemoryModel, subgroup basic operations.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_NV_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_THREAD_M) const uint FRAG_M = 2;
layout(constant_id = SPEC_THREAD_N) const uint FRAG_N = 8;
layout(constant_id = SPEC_COOP_M) const uint CM_M = 16;
layout(constant_id = SPEC_COOP_N) const uint CM_N = 8;
layout(constant_id = SPEC_COOP_K) const uint CM_K = 16;

layout(std430, set = 0, binding = 0) readonly buffer Wt { uint wt[]; };
layout(std430, set = 0, binding = 1) readonly buffer DBlk { float dblk[]; };
layout(std430, set = 0, binding = 2) readonly buffer Dyh { uint dyh[]; };
layout(std430, set = 0, binding = 3) readonly buffer TScale { float tscale[]; };
layout(std430, set = 0, binding = 4) buffer Acc { float accbuf[]; };
layout(std430, set = 0, binding = 5) buffer Dx { float dx[]; };

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
  uint row_in;
  uint split_rows;
} pc;

const uint TT = 64;          // tokens per workgroup
const uint TC = 128;         // columns per workgroup
const uint RK = 32;          // weight rows per step
const uint AS = RK / 2 + 4;  // words per token row of the dy tile (rows 16 bytes apart, padded)
const uint BS = TC / 2 + 4;  // words per weight row of the weight tile
const uint CS = TC + 4;      // floats per token row of the sums
const uint B0 = TT * AS;     // the weight tile's first word
const uint SH_AB = TT * AS + RK * BS;
const uint SH_C = TT * CS;
shared uint sh[SH_AB > SH_C ? SH_AB : SH_C];

const uint A_WORDS = TT * RK / 2;  // words of dy a step
#ifdef FLOAT_F16
const uint B_WORDS = RK * TC / 2;  // words of halves a step
#else
const uint B_WORDS = RK * TC / 16;  // code words a step
#endif
const uint A_PER = (A_WORDS + WG_SIZE - 1) / WG_SIZE;
const uint B_PER = (B_WORDS + WG_SIZE - 1) / WG_SIZE;

uint row_end;  // the rows this workgroup sums end here
uint a_reg[A_PER];
uint b_reg[B_PER];
#ifndef FLOAT_F16
float b_scale[B_PER];
#endif

void fetch(uint rb, uint t0, uint c0, uint tid) {
  for (uint j = 0; j < A_PER; ++j) {
    uint i = tid + j * WG_SIZE;
    uint m = i / (RK / 2), k = i % (RK / 2);
    uint t = t0 + m, r = rb + 2 * k;
    a_reg[j] = (i < A_WORDS && t < pc.n_tokens && r < row_end)
                   ? dyh[t * pc.dy_stride + (pc.r0 + rb) / 2 + k]
                   : 0u;
  }
  for (uint j = 0; j < B_PER; ++j) {
    uint i = tid + j * WG_SIZE;
#ifdef FLOAT_F16
    uint r = rb + i / (TC / 2), w = i % (TC / 2);
    bool valid = i < B_WORDS && r < row_end && c0 + 2 * w < pc.n_in;
    b_reg[j] = valid ? wt[r * (pc.n_in / 2) + c0 / 2 + w] : 0u;
#else
    uint r = rb + i / (TC / 16), w = i % (TC / 16);
    bool valid = i < B_WORDS && r < row_end;
    b_reg[j] = valid ? wt[r * (pc.row_in / 16) + c0 / 16 + w] : 0x55555555u;  // code 1: trit 0
    b_scale[j] = (valid && pc.d == 0.0) ? dblk[r * (pc.row_in / 256) + c0 / 256] : 1.0;
#endif
  }
}

// The half of trit code c (0, 1, 2 for -1, 0, +1) times the half h.
uint trit_half(uint c, uint h) {
  return c == 1u ? 0u : (c == 0u ? h ^ 0x8000u : h);
}

void stage(uint tid) {
  for (uint j = 0; j < A_PER; ++j) {
    uint i = tid + j * WG_SIZE;
    if (i < A_WORDS) sh[(i / (RK / 2)) * AS + i % (RK / 2)] = a_reg[j];
  }
  for (uint j = 0; j < B_PER; ++j) {
    uint i = tid + j * WG_SIZE;
    if (i >= B_WORDS) continue;
#ifdef FLOAT_F16
    sh[B0 + (i / (TC / 2)) * BS + i % (TC / 2)] = b_reg[j];
#else
    uint base = B0 + (i / (TC / 16)) * BS + 8 * (i % (TC / 16));
    uint h = f16_bits(b_scale[j]);
    uint word = b_reg[j];
    for (uint q = 0; q < 8; ++q) {
      sh[base + q] = trit_half((word >> (4 * q)) & 3u, h) |
                     (trit_half((word >> (4 * q + 2)) & 3u, h) << 16);
    }
#endif
  }
}

void main() {
  uint c0 = group_x_z() * TC;
  uint token_groups = (pc.n_tokens + TT - 1) / TT;
  uint split = pc.split_rows != 0u ? gl_WorkGroupID.y / token_groups : 0u;
  uint t0 = (gl_WorkGroupID.y % token_groups) * TT;
  uint row0 = split * pc.split_rows;
  row_end = pc.split_rows != 0u ? min(pc.rows, row0 + pc.split_rows) : pc.rows;
  if (c0 >= pc.n_in || t0 >= pc.n_tokens || row0 >= row_end) return;
  uint tid = gl_LocalInvocationID.x;
  uint sg = gl_SubgroupID;
  uint sm = (sg % 2) * FRAG_M * CM_M;  // this subgroup's first token in the tile
  uint sn = (sg / 2) * FRAG_N * CM_N;  // and first column

  fcoopmatNV<32, gl_ScopeSubgroup, CM_M, CM_N> acc[FRAG_M * FRAG_N];
  for (uint f = 0; f < FRAG_M * FRAG_N; ++f) {
    acc[f] = fcoopmatNV<32, gl_ScopeSubgroup, CM_M, CM_N>(0.0);
  }

  fetch(row0, t0, c0, tid);
  for (uint rb = row0; rb < row_end; rb += RK) {
    stage(tid);
    barrier();
    if (rb + RK < row_end) fetch(rb + RK, t0, c0, tid);  // in flight during the products
    for (uint kk = 0; kk < RK / CM_K; ++kk) {
      fcoopmatNV<16, gl_ScopeSubgroup, CM_M, CM_K> fa[FRAG_M];
      fcoopmatNV<16, gl_ScopeSubgroup, CM_K, CM_N> fb[FRAG_N];
      for (uint i = 0; i < FRAG_M; ++i) {
        coopMatLoadNV(fa[i], sh, (sm + i * CM_M) * AS + kk * (CM_K / 2), AS, false);
      }
      for (uint j = 0; j < FRAG_N; ++j) {
        coopMatLoadNV(fb[j], sh, B0 + kk * CM_K * BS + (sn + j * CM_N) / 2, BS, false);
      }
      for (uint i = 0; i < FRAG_M; ++i) {
        for (uint j = 0; j < FRAG_N; ++j) {
          acc[i * FRAG_N + j] = coopMatMulAddNV(fa[i], fb[j], acc[i * FRAG_N + j]);
        }
      }
    }
    barrier();
  }

  // The sums through shared memory (a cooperative matrix's element order is the device's),
  // token-major so that the reads and writes of dx are contiguous.
  for (uint i = 0; i < FRAG_M; ++i) {
    for (uint j = 0; j < FRAG_N; ++j) {
      coopMatStoreNV(acc[i * FRAG_N + j], sh, (sm + i * CM_M) * CS + sn + j * CM_N, CS, false);
    }
  }
  barrier();
  float dq = pc.d != 0.0 ? pc.d : 1.0;
  for (uint i = tid; i < TT * TC; i += WG_SIZE) {
    uint m = i / TC, n = i % TC;
    uint t = t0 + m, c = c0 + n;
    if (t >= pc.n_tokens || c >= pc.n_in) continue;
    uint o = t * pc.n_in + c;
    float s = uintBitsToFloat(sh[m * CS + n]);
    if (pc.split_rows != 0u) {
      accbuf[split * pc.n_tokens * pc.n_in + o] = s;
      continue;
    }
    if (pc.first == 0u) s = accbuf[o] + s;
    if (pc.last != 0u) {
      dx[o] = dx[o] + pc.scale * (dq * (tscale[t] * s));
    } else {
      accbuf[o] = s;
    }
  }
}
