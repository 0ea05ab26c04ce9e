#version 450
// attention_backward_tiled: attention_backward_wg.comp's query side (stages 0, 1, 2: the same
// values and the same bits) for every sequence of a batch in one dispatch, with a tile of 64
// queries x BK keys per step held in registers across the workgroup.
//
// For query t of a sequence (keys 0 .. t) and head h, as attention_backward_wg.comp:
//   s_j = (sum_d q[d] k_j[d], d in order) * scale,  e_j = exp(s_j - m),  dp_j = sum_d dout[d] v_j[d]
//   stage 0: m = max_j s_j                                         -> stats[0]
//   stage 1: l = sum_j e_j, E = sum_j e_j dp_j (keys in order)      -> stats[1], stats[2]
//   stage 2: inv = 1 / l, D = E * inv -> stats[1], stats[2]; P_j = e_j * inv,
//            dS_j = (P_j (dp_j - D)) * scale, dq[d] = dq[d] + dS_0 k_0[d] + dS_1 k_1[d] + ...
// Every sum keeps the reference's order: a dot product runs over d in order inside one
// invocation (its partial sums carry across the staged chunks of 16 dimensions), l and E over
// the keys in order inside the invocation that owns the query, and dq[d] over the keys in order
// inside the invocation that owns (query, d). So the bits do not depend on the tiling.
//
// Layout: 256 invocations; invocation (tq, tk) = (id % 16, id / 16) holds queries tq * 4 ..
// tq * 4 + 3 of the workgroup's 64 and keys tk, tk + 16, ... of the tile (scores and dp in
// registers), and in stage 2 dq of its four queries at dimensions tk, tk + 16, ...
// q and dout (then k and v) pass through shared memory 16 dimensions at a time; stage 1's e and
// e dp and stage 2's dS pass through a [keys x queries] tile.
//
// Bindings (set 0): the whole tensors of the batch, rows as in the forward pass
//   0 q     float[rows * n_head * head_dim]   (read)
//   1 dout  float[rows * n_head * head_dim]   (read)
//   2 k     float[rows * kv_stride]           (read)
//   3 v     float[rows * kv_stride]           (read)
//   4 stats float[rows * n_head * 3]          (stage 0, 1: write; 2: read/write)
//   5 dq    float[rows * n_head * head_dim]   (read/write; stage 2)
//   6 seqs  uint[2 * sequences]: first row and length of each sequence (its own keys)
// Push constants: AttentionBackwardTiledPush { n_head, n_head_kv, kv_stride, scale }.
// Spec constants: 10 BK (keys a tile, a multiple of 16), 11 HD (head_dim, a multiple of 16),
//   19 STAGE.
// Dispatch: (n_head, ceil(longest / 64), sequences); workgroups past a sequence's end return.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = SPEC_ATTN_CHUNK) const uint BK = 32;
layout(constant_id = SPEC_MAX_HEAD_DIM) const uint HD = 64;
layout(constant_id = SPEC_ATTN_STAGE) const uint STAGE = 0;

const uint WG = 256;
const uint BQ = 64;          // queries a workgroup
const uint DC = 16;          // dimensions staged per barrier
const uint RK = BK / 16;     // keys an invocation holds
const uint NC = HD / DC;     // chunks of a row
const uint QP4 = BQ / 4 + 1; // a staged dimension's queries, as vec4, padded

layout(std430, set = 0, binding = 0) readonly buffer Qb { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer Dob { float dout[]; };
layout(std430, set = 0, binding = 2) readonly buffer Kb { float k[]; };
layout(std430, set = 0, binding = 3) readonly buffer Vb { float v[]; };
layout(std430, set = 0, binding = 4) buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 5) buffer Dq { float dq[]; };
layout(std430, set = 0, binding = 6) readonly buffer Seqs { uint seqs[]; };

layout(push_constant) uniform Push {
  uint n_head;
  uint n_head_kv;
  uint kv_stride;
  float scale;
} pc;

shared vec4 qs4[DC * QP4];    // [d][query / 4]
shared vec4 dos4[DC * QP4];
shared float ks[DC * (BK + 1)];  // [d][key]; stage 2's second pass: [key][d]
shared float vs[DC * (BK + 1)];
shared vec4 t0[BK * (BQ / 4)];  // [key][query / 4]: e (stage 1), dS (stage 2), maxima (stage 0)
shared vec4 t1[BK * (BQ / 4)];  // e dp (stage 1)

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint tq = tid % 16, tk = tid / 16;
  const uint h = gl_WorkGroupID.x;
  const uint q0 = gl_WorkGroupID.y * BQ;
  const uint row0 = seqs[2 * gl_WorkGroupID.z], n = seqs[2 * gl_WorkGroupID.z + 1];
  if (h >= pc.n_head || q0 >= n) return;
  const uint qstride = pc.n_head * HD;
  const uint kv_off = (h / (pc.n_head / pc.n_head_kv)) * HD;
  const uint kend = min(n, q0 + BQ);  // keys [0, kend) are seen by some query of the tile

  // This invocation's queries (positions in the sequence) and their statistics.
  uint qp[4];
  float m[4], inv[4], dd[4];
  float mx[4];
  precise float acc[4][NC];
  for (uint r = 0; r < 4; ++r) {
    qp[r] = q0 + tq * 4 + r;
    const uint rec = ((row0 + min(qp[r], n - 1)) * pc.n_head + h) * 3;
    mx[r] = uintBitsToFloat(0xFF800000u);  // -inf
    m[r] = STAGE != 0 ? stats[rec] : 0.0;
    inv[r] = 0.0;
    dd[r] = 0.0;
    if (STAGE == 2) {
      precise float i = 1.0 / stats[rec + 1];
      precise float e = stats[rec + 2] * i;
      inv[r] = i;
      dd[r] = e;
      const uint dqrow = (row0 + min(qp[r], n - 1)) * qstride + h * HD + tk;
      for (uint c = 0; c < NC; ++c) acc[r][c] = dq[dqrow + c * DC];
    }
  }
  // Stage 1: invocation tid < 64 owns query q0 + tid's sums.
  const uint own = q0 + tid;
  precise float l = 0.0, e_sum = 0.0;

  for (uint k0 = 0; k0 < kend; k0 += BK) {
    precise float s[4][RK], dp[4][RK];
    for (uint r = 0; r < 4; ++r) {
      for (uint c = 0; c < RK; ++c) {
        s[r][c] = 0.0;
        dp[r][c] = 0.0;
      }
    }
    for (uint c = 0; c < NC; ++c) {
      barrier();  // the previous chunk (or tile) is read by every invocation
      for (uint e = tid; e < BQ * DC; e += WG) {
        const uint i = e / DC, d = e % DC;
        const uint src = (row0 + min(q0 + i, n - 1)) * qstride + h * HD + c * DC + d;
        qs4[d * QP4 + i / 4][i % 4] = q[src];
        if (STAGE != 0) dos4[d * QP4 + i / 4][i % 4] = dout[src];
      }
      for (uint e = tid; e < BK * DC; e += WG) {
        const uint j = e / DC, d = e % DC;
        const uint src = (row0 + min(k0 + j, n - 1)) * pc.kv_stride + kv_off + c * DC + d;
        ks[d * (BK + 1) + j] = k[src];
        if (STAGE != 0) vs[d * (BK + 1) + j] = v[src];
      }
      barrier();
      for (uint d = 0; d < DC; ++d) {
        const vec4 a = qs4[d * QP4 + tq];
        const vec4 g = STAGE != 0 ? dos4[d * QP4 + tq] : vec4(0.0);
        for (uint c2 = 0; c2 < RK; ++c2) {
          const float kk = ks[d * (BK + 1) + tk + 16 * c2];
          const float vv = STAGE != 0 ? vs[d * (BK + 1) + tk + 16 * c2] : 0.0;
          for (uint r = 0; r < 4; ++r) {
            precise float p = a[r] * kk;
            s[r][c2] += p;
            if (STAGE != 0) {
              precise float pd = g[r] * vv;
              dp[r][c2] += pd;
            }
          }
        }
      }
    }
    for (uint c2 = 0; c2 < RK; ++c2) {
      const uint j = tk + 16 * c2;
      vec4 w0 = vec4(0.0), w1 = vec4(0.0);
      for (uint r = 0; r < 4; ++r) {
        precise float sv = s[r][c2] * pc.scale;
        if (STAGE == 0) {
          if (k0 + j <= qp[r] && qp[r] < n) mx[r] = max(mx[r], sv);
        } else {
          precise float e = exp(sv - m[r]);
          if (STAGE == 1) {
            precise float ed = e * dp[r][c2];
            w0[r] = e;
            w1[r] = ed;
          } else {
            precise float p = e * inv[r];
            precise float ds = (p * (dp[r][c2] - dd[r])) * pc.scale;
            w0[r] = ds;
          }
        }
      }
      if (STAGE != 0) t0[j * (BQ / 4) + tq] = w0;
      if (STAGE == 1) t1[j * (BQ / 4) + tq] = w1;
    }
    if (STAGE == 1) {
      barrier();
      if (tid < BQ && own < n && own >= k0) {
        const uint cnt = min(BK, own - k0 + 1);
        for (uint j = 0; j < cnt; ++j) {
          l += t0[j * (BQ / 4) + tid / 4][tid % 4];
          e_sum += t1[j * (BQ / 4) + tid / 4][tid % 4];
        }
      }
    }
    if (STAGE == 2) {
      // dq += dS K over the tile's keys in order, 16 dimensions at a time.
      for (uint c = 0; c < NC; ++c) {
        barrier();  // dS is written; the previous chunk of k is read
        for (uint e = tid; e < BK * DC; e += WG) {
          const uint j = e / DC, d = e % DC;
          ks[j * DC + d] = k[(row0 + min(k0 + j, n - 1)) * pc.kv_stride + kv_off + c * DC + d];
        }
        barrier();
        for (uint j = 0; j < BK; ++j) {
          const float kk = ks[j * DC + tk];
          const vec4 w = t0[j * (BQ / 4) + tq];
          for (uint r = 0; r < 4; ++r) {
            if (k0 + j <= qp[r]) {
              precise float t = w[r] * kk;
              acc[r][c] += t;
            }
          }
        }
      }
    }
  }

  if (STAGE == 0) {
    barrier();
    t0[tk * (BQ / 4) + tq] = vec4(mx[0], mx[1], mx[2], mx[3]);
    barrier();
    if (tid < BQ && own < n) {
      float v = t0[tid / 4][tid % 4];
      for (uint i = 1; i < 16; ++i) v = max(v, t0[i * (BQ / 4) + tid / 4][tid % 4]);
      stats[((row0 + own) * pc.n_head + h) * 3] = v;
    }
  } else if (STAGE == 1) {
    if (tid < BQ && own < n) {
      const uint rec = ((row0 + own) * pc.n_head + h) * 3;
      stats[rec + 1] = l;
      stats[rec + 2] = e_sum;
    }
  } else {
    for (uint r = 0; r < 4; ++r) {
      if (qp[r] >= n) continue;
      if (tk == 0) {
        const uint rec = ((row0 + qp[r]) * pc.n_head + h) * 3;
        stats[rec + 1] = inv[r];
        stats[rec + 2] = dd[r];
      }
      const uint dqrow = (row0 + qp[r]) * qstride + h * HD + tk;
      for (uint c = 0; c < NC; ++c) dq[dqrow + c * DC] = acc[r][c];
    }
  }
}
