#version 450
// attention_backward_kv_wg: a workgroup per key and ONE query head of each group a dispatch
// (stage unused), for tensors split into pieces as attention_backward_wg.comp.
//
// The key side of causal GQA attention's backward pass (CPU reference
// attention_backward in backend/cpu/ops.h), after attention_backward_wg.comp has left
// each query's statistics [m, inv = 1 / l, D] in stats. For the keys of one K/V segment
// (positions [kv_r0, kv_r0 + kv_rows)), ONE query head h = kvh * group + head_in_group of each
// KV head kvh, and the queries of one segment (rows [0, n_q) at positions q_pos0 ..):
//   for the queries t >= key j, in order:  s = (q_t . k_j) * scale (as attention_backward),
//     P = exp(s - m_t) * inv_t,  dS = (P (dp - D_t)) * scale with dp = dout_t . v_j,
//     dv_j[d] = dv_j[d] + P dout_t[d],  dk_j[d] = dk_j[d] + dS q_t[d]
// The host dispatches head_in_group = 0 .. group - 1 and, for each, every query segment in
// order, so dk and dv sum their terms in the CPU's order (head, then query), the same
// whatever the tiling, without atomics.
//
// Bindings (set 0):
//   0 q     float[n_q * n_head * head_dim]   (read)
//   1 dout  float[n_q * n_head * head_dim]   (read)
//   2 k     float[kv_rows * kv_stride]       (read)
//   3 v     float[kv_rows * kv_stride]       (read)
//   4 stats float[n_q * n_head * 3]          (read)
//   5 dk    float[kv_rows * kv_stride]       (read/write)
//   6 dv    float[kv_rows * kv_stride]       (read/write)
// Push constants: AttentionBackwardPush (stage and first unused).
// Spec constants: 0 workgroup size (power of two), 11 MAX_HEAD_DIM (>= head_dim).
// Dispatch: (kv_rows, n_head_kv, 1); keys after the segment's last query return.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 64;
layout(constant_id = SPEC_MAX_HEAD_DIM) const uint MAX_HEAD_DIM = 256;

layout(std430, set = 0, binding = 0) readonly buffer Qb { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer Dob { float dout[]; };
layout(std430, set = 0, binding = 2) readonly buffer Kb { float k[]; };
layout(std430, set = 0, binding = 3) readonly buffer Vb { float v[]; };
layout(std430, set = 0, binding = 4) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 5) buffer Dk { float dk[]; };
layout(std430, set = 0, binding = 6) buffer Dv { float dv[]; };

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

const uint DPT = (MAX_HEAD_DIM + WG_SIZE - 1) / WG_SIZE;
shared float ks[MAX_HEAD_DIM];
shared float vs[MAX_HEAD_DIM];
shared float sp[WG_SIZE];
shared float sd[WG_SIZE];

void main() {
  uint tid = gl_LocalInvocationID.x;
  uint j = gl_WorkGroupID.x;
  uint kvh = gl_WorkGroupID.y;
  if (j >= pc.kv_rows || kvh >= pc.n_head_kv) return;
  uint kpos = pc.kv_r0 + j;
  if (kpos >= pc.q_pos0 + pc.n_q) return;
  uint tq0 = kpos > pc.q_pos0 ? kpos - pc.q_pos0 : 0u;
  uint hd = pc.head_dim;
  uint h = kvh * (pc.n_head / pc.n_head_kv) + pc.head_in_group;
  uint kv = j * pc.kv_stride + kvh * hd;
  for (uint d = tid; d < hd; d += WG_SIZE) {
    ks[d] = k[kv + d];
    vs[d] = v[kv + d];
  }
  precise float acc_k[DPT], acc_v[DPT];
  for (uint i = 0; i < DPT; ++i) {
    uint d = tid + i * WG_SIZE;
    acc_k[i] = d < hd ? dk[kv + d] : 0.0;
    acc_v[i] = d < hd ? dv[kv + d] : 0.0;
  }
  barrier();
  for (uint b0 = tq0; b0 < pc.n_q; b0 += WG_SIZE) {
    uint tq = b0 + tid;
    if (tq < pc.n_q) {
      uint row = (tq * pc.n_head + h) * hd;
      uint rec = (tq * pc.n_head + h) * 3;
      precise float dot = 0.0, dp = 0.0;
      for (uint d = 0; d < hd; ++d) {
        precise float a = q[row + d] * ks[d];
        dot += a;
      }
      for (uint d = 0; d < hd; ++d) {
        precise float a = dout[row + d] * vs[d];
        dp += a;
      }
      precise float s = dot * pc.scale;
      precise float p = exp(s - stats[rec]) * stats[rec + 1];
      precise float ds = (p * (dp - stats[rec + 2])) * pc.scale;
      sp[tid] = p;
      sd[tid] = ds;
    }
    barrier();
    uint cnt = min(WG_SIZE, pc.n_q - b0);
    for (uint i = 0; i < DPT; ++i) {
      uint d = tid + i * WG_SIZE;
      if (d >= hd) break;
      for (uint ii = 0; ii < cnt; ++ii) {
        uint row = ((b0 + ii) * pc.n_head + h) * hd;
        precise float pv = sp[ii] * dout[row + d];
        acc_v[i] += pv;
        precise float pk = sd[ii] * q[row + d];
        acc_k[i] += pk;
      }
    }
    barrier();
  }
  for (uint i = 0; i < DPT; ++i) {
    uint d = tid + i * WG_SIZE;
    if (d < hd) {
      dk[kv + d] = acc_k[i];
      dv[kv + d] = acc_v[i];
    }
  }
}
