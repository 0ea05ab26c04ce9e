#version 450
// attention_backward_kv: the key side of causal GQA attention's backward pass (CPU reference
// attention_backward in backend/cpu/ops.h), after attention_backward.comp has left
// each query's statistics [m, inv = 1 / l, D] in stats. For the keys of one K/V segment
// (positions [kv_r0, kv_r0 + kv_rows)), the query heads h = kvh * group + g of each KV head
// kvh for g = head_in_group .. head_in_group + stage - 1, and the queries of one segment
// (rows [0, n_q) at positions q_pos0 ..):
//   for each head g in order, for the queries t >= key j in order:
//     s = (q_t . k_j) * scale (as attention_backward),
//     P = exp(s - m_t) * inv_t,  dS = (P (dp - D_t)) * scale with dp = dout_t . v_j,
//     dv_j[d] = dv_j[d] + P dout_t[d],  dk_j[d] = dk_j[d] + dS q_t[d]
// The host dispatches every head of a group at once when the queries are one segment, else
// one head at a time and, for each, every query segment in order, so dk and dv sum their
// terms in the CPU's order (head, then query), the same whatever the tiling, without atomics.
//
// One invocation per key: its k and v rows and its dk and dv sums stay in registers while the
// queries pass through shared memory KEY_TILE at a time, each read once for WG_SIZE keys.
//
// Bindings (set 0):
//   0 q     float[n_q * n_head * head_dim]   (read)
//   1 dout  float[n_q * n_head * head_dim]   (read)
//   2 k     float[kv_rows * kv_stride]       (read)
//   3 v     float[kv_rows * kv_stride]       (read)
//   4 stats float[n_q * n_head * 3]          (read)
//   5 dk    float[kv_rows * kv_stride]       (read/write)
//   6 dv    float[kv_rows * kv_stride]       (read/write)
// Push constants: AttentionBackwardPush (stage: the number of heads of a group; first unused).
// Spec constants: 0 workgroup size (keys per workgroup), 10 KEY_TILE (queries staged per
//   barrier), 11 MAX_HEAD_DIM (== head_dim).
// Dispatch: (ceil(kv_rows / WG_SIZE), n_head_kv, 1); workgroups whose keys all come after the
//   segment's last query return.
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

shared float qs[KEY_TILE * MAX_HEAD_DIM];
shared float dos[KEY_TILE * MAX_HEAD_DIM];
shared float st[KEY_TILE * 3];

void main() {
  const uint HD = MAX_HEAD_DIM;
  uint tid = gl_LocalInvocationID.x;
  uint j0 = gl_WorkGroupID.x * WG_SIZE;  // the workgroup's first key
  uint kvh = gl_WorkGroupID.y;
  if (j0 >= pc.kv_rows || kvh >= pc.n_head_kv) return;
  uint kp0 = pc.kv_r0 + j0;
  if (kp0 >= pc.q_pos0 + pc.n_q) return;  // the whole workgroup: after the last query
  uint tq_first = kp0 > pc.q_pos0 ? kp0 - pc.q_pos0 : 0u;
  uint j = j0 + tid;
  bool live = j < pc.kv_rows;
  uint kpos = pc.kv_r0 + j;
  uint kv = min(j, pc.kv_rows - 1) * pc.kv_stride + kvh * HD;

  float kr[MAX_HEAD_DIM], vr[MAX_HEAD_DIM];
  precise float acc_k[MAX_HEAD_DIM], acc_v[MAX_HEAD_DIM];
  for (uint d = 0; d < HD; ++d) {
    kr[d] = k[kv + d];
    vr[d] = v[kv + d];
    acc_k[d] = dk[kv + d];
    acc_v[d] = dv[kv + d];
  }
  uint group = pc.n_head / pc.n_head_kv;
  for (uint g = pc.head_in_group; g < pc.head_in_group + pc.stage; ++g) {
    uint h = kvh * group + g;
    for (uint b0 = tq_first; b0 < pc.n_q; b0 += KEY_TILE) {
      uint cnt = min(KEY_TILE, pc.n_q - b0);
      barrier();  // the previous tile is read by every invocation
      for (uint i = tid; i < cnt * HD; i += WG_SIZE) {
        uint t = i / HD, d = i % HD;
        uint src = ((b0 + t) * pc.n_head + h) * HD + d;
        qs[i] = q[src];
        dos[i] = dout[src];
      }
      for (uint i = tid; i < cnt * 3; i += WG_SIZE) {
        st[i] = stats[((b0 + i / 3) * pc.n_head + h) * 3 + i % 3];
      }
      barrier();
      if (!live) continue;
      // Queries before this key contribute nothing (causal): start at the first one it sees.
      uint first = kpos > pc.q_pos0 + b0 ? min(cnt, kpos - pc.q_pos0 - b0) : 0u;
      for (uint t = first; t < cnt; ++t) {
        precise float dot = 0.0, dp = 0.0;
        for (uint d = 0; d < HD; ++d) {
          precise float a = qs[t * HD + d] * kr[d];
          dot += a;
        }
        for (uint d = 0; d < HD; ++d) {
          precise float a = dos[t * HD + d] * vr[d];
          dp += a;
        }
        precise float s = dot * pc.scale;
        precise float p = exp(s - st[t * 3]) * st[t * 3 + 1];
        precise float ds = (p * (dp - st[t * 3 + 2])) * pc.scale;
        for (uint d = 0; d < HD; ++d) {
          precise float pv = p * dos[t * HD + d];
          acc_v[d] += pv;
          precise float pk = ds * qs[t * HD + d];
          acc_k[d] += pk;
        }
      }
    }
  }
  if (!live) return;
  for (uint d = 0; d < HD; ++d) {
    dk[kv + d] = acc_k[d];
    dv[kv + d] = acc_v[d];
  }
}
