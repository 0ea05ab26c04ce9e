#version 450
// attention_backward: the query side of causal GQA attention's backward pass over a whole
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
// attention_backward_kv.comp then computes dk and dv from the same statistics.
//
// One invocation per query: its q and dout rows (and dq in stage 2) stay in registers while
// the workgroup's keys pass through shared memory KEY_TILE at a time, each key read once for
// WG_SIZE queries (every invocation reads the same key element at once: a broadcast).
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
// Spec constants: 0 workgroup size (queries per workgroup), 10 KEY_TILE (keys staged per
//   barrier), 11 MAX_HEAD_DIM (== head_dim: the loops over a row unroll into registers).
// Dispatch: (n_head, ceil(n_q / WG_SIZE), 1); workgroups whose queries see no key of the
//   segment return.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 64;
layout(constant_id = SPEC_ATTN_CHUNK) const uint KEY_TILE = 32;
layout(constant_id = SPEC_MAX_HEAD_DIM) const uint MAX_HEAD_DIM = 64;

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

shared float ks[KEY_TILE * MAX_HEAD_DIM];
shared float vs[KEY_TILE * MAX_HEAD_DIM];

void main() {
  const uint HD = MAX_HEAD_DIM;
  uint tid = gl_LocalInvocationID.x;
  uint h = gl_WorkGroupID.x;
  uint tq0 = gl_WorkGroupID.y * WG_SIZE;  // the workgroup's first query
  if (h >= pc.n_head || tq0 >= pc.n_q) return;
  uint last_pos = pc.q_pos0 + min(pc.n_q, tq0 + WG_SIZE) - 1;
  if (pc.kv_r0 > last_pos) return;  // the whole workgroup: no key of this segment is seen
  uint block_keys = min(pc.kv_rows, last_pos + 1 - pc.kv_r0);
  uint tq = tq0 + tid;
  bool live = tq < pc.n_q && pc.kv_r0 <= pc.q_pos0 + tq;
  uint n_keys = live ? min(pc.kv_rows, pc.q_pos0 + tq + 1 - pc.kv_r0) : 0u;
  uint kv_off = (h / (pc.n_head / pc.n_head_kv)) * HD;
  uint row = (min(tq, pc.n_q - 1) * pc.n_head + h) * HD;
  uint rec = (min(tq, pc.n_q - 1) * pc.n_head + h) * 3;

  float qr[MAX_HEAD_DIM], dr[MAX_HEAD_DIM];
  precise float acc[MAX_HEAD_DIM];
  for (uint d = 0; d < HD; ++d) {
    qr[d] = q[row + d];
    dr[d] = pc.stage == 0u ? 0.0 : dout[row + d];
    acc[d] = 0.0;
  }
  float m = 0.0, inv = 0.0, dd = 0.0;
  precise float l = 0.0, e_sum = 0.0;
  float mx = uintBitsToFloat(0xFF800000u);  // -inf
  if (live) {
    if (pc.stage != 0u || pc.first == 0u) m = stats[rec];
    if (pc.stage == 0u && pc.first == 0u) mx = m;
    if (pc.stage == 1u && pc.first == 0u) {
      l = stats[rec + 1];
      e_sum = stats[rec + 2];
    }
    if (pc.stage == 2u) {
      if (pc.first != 0u) {
        precise float i = 1.0 / stats[rec + 1];
        precise float e = stats[rec + 2] * i;
        inv = i;
        dd = e;
      } else {
        inv = stats[rec + 1];
        dd = stats[rec + 2];
      }
      for (uint d = 0; d < HD; ++d) acc[d] = dq[row + d];
    }
  }

  for (uint t0 = 0; t0 < block_keys; t0 += KEY_TILE) {
    uint cnt = min(KEY_TILE, block_keys - t0);
    barrier();  // the previous tile is read by every invocation
    for (uint i = tid; i < cnt * HD; i += WG_SIZE) {
      uint j = i / HD, d = i % HD;
      uint src = (t0 + j) * pc.kv_stride + kv_off + d;
      ks[i] = k[src];
      if (pc.stage != 0u) vs[i] = v[src];
    }
    barrier();
    uint mine = n_keys > t0 ? min(cnt, n_keys - t0) : 0u;
    for (uint j = 0; j < mine; ++j) {
      precise float dot = 0.0, dp = 0.0;
      for (uint d = 0; d < HD; ++d) {
        precise float p = qr[d] * ks[j * HD + d];
        dot += p;
      }
      precise float s = dot * pc.scale;
      if (pc.stage == 0u) {
        mx = max(mx, s);
        continue;
      }
      for (uint d = 0; d < HD; ++d) {
        precise float p = dr[d] * vs[j * HD + d];
        dp += p;
      }
      precise float e = exp(s - m);
      if (pc.stage == 1u) {
        l += e;
        precise float ed = e * dp;
        e_sum += ed;
      } else {
        precise float p = e * inv;
        precise float ds = (p * (dp - dd)) * pc.scale;
        for (uint d = 0; d < HD; ++d) {
          precise float t = ds * ks[j * HD + d];
          acc[d] += t;
        }
      }
    }
  }
  if (!live) return;
  if (pc.stage == 0u) {
    stats[rec] = mx;
  } else if (pc.stage == 1u) {
    stats[rec + 1] = l;
    stats[rec + 2] = e_sum;
  } else {
    if (pc.first != 0u) {
      stats[rec + 1] = inv;
      stats[rec + 2] = dd;
    }
    for (uint d = 0; d < HD; ++d) dq[row + d] = acc[d];
  }
}
