#version 450
// attention_backward_wg: a workgroup per query, for tensors split into pieces (one-piece
// batches take attention_backward_tiled.comp, the same bits).
//
// The query side of causal GQA attention's backward pass over a whole
// sequence (positions 0 .. n - 1; CPU reference attention_backward in
// backend/cpu/ops.h), for query tokens of one segment (rows [0, n_q) at positions
// q_pos0 ..) against the keys of ONE segment of K and V (positions [kv_r0, kv_r0 + kv_rows)).
// The host runs stage 0 over every KV segment, then stage 1, then stage 2; query (t, h) sees
// keys 0 .. t, with
//   s_j = (sum_d q[d] k_j[d], in order) * scale,  e_j = exp(s_j - m),  dp_j = dout . v_j
// stage 0: m = max_j s_j                                     -> stats[0]
// stage 1: l = sum_j e_j, E = sum_j e_j dp_j (in key order)   -> stats[1], stats[2]
// stage 2: on the segment holding key 0 (first != 0) stats[1..2] become inv = 1 / l and
//          D = E * inv; then P_j = e_j * inv, dS_j = (P_j (dp_j - D)) * scale and
//          dq[d] = dq[d] + dS_0 k_0[d] + dS_1 k_1[d] + ... (keys in order, read-modify-write)
// Each sum runs in key order in one invocation and carries over between segments through
// stats and dq, so the results do not depend on how the tensors are split into pieces.
// attention_backward_kv_wg.comp then computes dk and dv from the same statistics.
//
// Stats record of query tq, head h: stats[(tq * n_head + h) * 3 + {0, 1, 2}]; the first
// segment (first != 0) writes it, later ones update it.
//
// Bindings (set 0):
//   0 q     float[n_q * n_head * head_dim]     (read)
//   1 dout  float[n_q * n_head * head_dim]     (read)
//   2 k     float[kv_rows * kv_stride]         (read)
//   3 v     float[kv_rows * kv_stride]         (read)
//   4 stats float[n_q * n_head * 3]            (read/write)
//   5 dq    float[n_q * n_head * head_dim]     (read/write; stage 2)
// Push constants: AttentionBackwardPush { n_q, q_pos0, n_head, n_head_kv, head_dim, kv_stride,
//   kv_r0, kv_rows, stage, first, head_in_group (unused), scale }; scale = 1 / sqrt(head_dim).
// Spec constants: 0 workgroup size (power of two), 11 MAX_HEAD_DIM (>= head_dim).
// Dispatch: (n_head, n_q, 1); workgroups whose query sees no key of the segment return.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 64;
layout(constant_id = SPEC_MAX_HEAD_DIM) const uint MAX_HEAD_DIM = 256;

layout(std430, set = 0, binding = 0) readonly buffer Qb { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer Dob { float dout[]; };
layout(std430, set = 0, binding = 2) readonly buffer Kb { float k[]; };
layout(std430, set = 0, binding = 3) readonly buffer Vb { float v[]; };
layout(std430, set = 0, binding = 4) buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 5) buffer Dq { float dq[]; };

layout(push_constant) uniform Push {
  uint n_q;
  uint q_pos0;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint kv_stride;
  uint kv_r0;
  uint kv_rows;
  uint stage;
  uint first;
  uint head_in_group;
  float scale;
} pc;

const uint DPT = (MAX_HEAD_DIM + WG_SIZE - 1) / WG_SIZE;  // head dims per invocation
shared float qs[MAX_HEAD_DIM];
shared float dos[MAX_HEAD_DIM];
shared float sc[WG_SIZE];
shared float dpv[WG_SIZE];
shared float red[WG_SIZE];
shared float sh_m, sh_inv, sh_d;

float score(uint j, uint kv_off) {  // s_j for the key at segment row j
  precise float dot = 0.0;
  for (uint d = 0; d < pc.head_dim; ++d) {
    precise float p = qs[d] * k[j * pc.kv_stride + kv_off + d];
    dot += p;
  }
  precise float s = dot * pc.scale;
  return s;
}

float dot_dout_v(uint j, uint kv_off) {
  precise float dot = 0.0;
  for (uint d = 0; d < pc.head_dim; ++d) {
    precise float p = dos[d] * v[j * pc.kv_stride + kv_off + d];
    dot += p;
  }
  return dot;
}

void main() {
  uint tid = gl_LocalInvocationID.x;
  uint h = gl_WorkGroupID.x;
  uint tq = gl_WorkGroupID.y;
  if (h >= pc.n_head || tq >= pc.n_q) return;
  uint qpos = pc.q_pos0 + tq;
  if (pc.kv_r0 > qpos) return;
  uint n_keys = min(pc.kv_rows, qpos + 1 - pc.kv_r0);
  uint hd = pc.head_dim;
  uint kv_off = (h / (pc.n_head / pc.n_head_kv)) * hd;
  uint row = (tq * pc.n_head + h) * hd;
  uint rec = (tq * pc.n_head + h) * 3;
  for (uint d = tid; d < hd; d += WG_SIZE) {
    qs[d] = q[row + d];
    dos[d] = dout[row + d];
  }
  if (tid == 0) {
    sh_m = pc.first != 0u && pc.stage == 0u ? 0.0 : stats[rec];
    if (pc.stage == 2u) {
      if (pc.first != 0u) {
        precise float inv = 1.0 / stats[rec + 1];
        precise float dd = stats[rec + 2] * inv;
        stats[rec + 1] = inv;
        stats[rec + 2] = dd;
        sh_inv = inv;
        sh_d = dd;
      } else {
        sh_inv = stats[rec + 1];
        sh_d = stats[rec + 2];
      }
    }
  }
  barrier();

  if (pc.stage == 0u) {
    float mx = uintBitsToFloat(0xFF800000u);  // -inf
    for (uint j = tid; j < n_keys; j += WG_SIZE) mx = max(mx, score(j, kv_off));
    red[tid] = mx;
    barrier();
    for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
      if (tid < s) red[tid] = max(red[tid], red[tid + s]);
      barrier();
    }
    if (tid == 0) stats[rec] = pc.first != 0u ? red[0] : max(sh_m, red[0]);
    return;
  }

  float m = sh_m;
  precise float l = 0.0, e_sum = 0.0;  // stage 1, invocation 0
  if (pc.stage == 1u && tid == 0 && pc.first == 0u) {
    l = stats[rec + 1];
    e_sum = stats[rec + 2];
  }
  precise float acc[DPT];  // stage 2: dq of dims tid, tid + WG, ...
  for (uint i = 0; i < DPT; ++i) {
    uint d = tid + i * WG_SIZE;
    acc[i] = pc.stage == 2u && d < hd ? dq[row + d] : 0.0;
  }
  for (uint j0 = 0; j0 < n_keys; j0 += WG_SIZE) {
    uint j = j0 + tid;
    if (j < n_keys) {
      precise float e = exp(score(j, kv_off) - m);
      float dp = dot_dout_v(j, kv_off);
      if (pc.stage == 1u) {
        sc[tid] = e;
        dpv[tid] = dp;
      } else {
        precise float p = e * sh_inv;
        precise float ds = (p * (dp - sh_d)) * pc.scale;
        sc[tid] = ds;
      }
    }
    barrier();
    uint cnt = min(WG_SIZE, n_keys - j0);
    if (pc.stage == 1u) {
      if (tid == 0) {
        for (uint jj = 0; jj < cnt; ++jj) {
          l += sc[jj];
          precise float ed = sc[jj] * dpv[jj];
          e_sum += ed;
        }
      }
    } else {
      for (uint i = 0; i < DPT; ++i) {
        uint d = tid + i * WG_SIZE;
        if (d >= hd) break;
        for (uint jj = 0; jj < cnt; ++jj) {
          precise float p = sc[jj] * k[(j0 + jj) * pc.kv_stride + kv_off + d];
          acc[i] += p;
        }
      }
    }
    barrier();
  }
  if (pc.stage == 1u) {
    if (tid == 0) {
      stats[rec + 1] = l;
      stats[rec + 2] = e_sum;
    }
  } else {
    for (uint i = 0; i < DPT; ++i) {
      uint d = tid + i * WG_SIZE;
      if (d < hd) dq[row + d] = acc[i];
    }
  }
}
