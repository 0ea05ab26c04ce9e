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
// Layout: 256 invocations; invocation (tq, tk) holds queries tq * 4 .. tq * 4 + 3 of the
// workgroup's 64 and keys tk * 2, tk * 2 + 1 of the tile (scores and dp in registers, a vec4
// over its queries per key), and in stage 2 dq of its four queries at dimensions tk * 2,
// tk * 2 + 1 of every 32 (a vec4 per dimension). No register arrays: an index the compiler
// does not resolve would put one in memory, and unrolling by the SPIR-V optimizer loses
// `precise` (it fuses the copies' multiply-adds). A subgroup of 32
// spans 4 values of tq and 8 of tk, so each staged read serves many invocations at once.
// q and dout (then k and v) pass through shared memory 16 dimensions at a time; stage 1's e and
// e dp and stage 2's dS pass through a [keys x queries] tile; stage 2 then reads k again, 32
// dimensions at a time.
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
// Spec constants: 10 BK (keys a tile: 32), 11 HD (head_dim, a multiple of 32),
//   19 STAGE.
// Dispatch: (n_head, ceil(longest / 64), sequences); workgroups past a sequence's end return.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = SPEC_ATTN_CHUNK) const uint BK = 32;
layout(constant_id = SPEC_MAX_HEAD_DIM) const uint HD = 64;
layout(constant_id = SPEC_ATTN_STAGE) const uint STAGE = 0;

const uint WG = 256;
const uint BQ = 64;           // queries a workgroup
const uint DC = 16;           // dimensions staged per barrier (scores)
const uint DB = 32;           // dimensions staged per barrier (stage 2's dq += dS k)
const uint NB = HD / DB;      // chunks of a row in stage 2 (at most 4)
const uint QP4 = BQ / 4 + 1;  // a staged dimension's queries, as vec4, padded
const uint KP2 = BK / 2 + 1;  // a staged dimension's keys, as vec2, padded

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

shared vec4 qs4[DC * QP4];  // [d][query / 4]; stage 2's second pass: k as [key][d / 4]
shared vec4 dos4[DC * QP4];
shared vec2 ks2[DC * KP2];  // [d][key / 2]
shared vec2 vs2[DC * KP2];
shared vec4 t0[BK * (BQ / 4)];  // [key][query / 4]: e (stage 1), dS (stage 2), maxima (stage 0)
shared vec4 t1[BK * (BQ / 4)];  // e dp (stage 1)

uint tid, tq, tk, h, q0, row0, n, qstride, kv_off;
uvec4 qp;      // this invocation's queries (positions in the sequence)
vec4 m, inv, dd;
// dq at dimensions c * 32 + tk * 2 + {0, 1}: a<c><e>, one vec4 over the four queries.
precise vec4 a00, a01, a10, a11, a20, a21, a30, a31;

// dq rows of the four queries (clamped to the sequence) at dimension d.
vec4 dq_at(uint d) {
  vec4 r;
  for (uint i = 0; i < 4; ++i) r[i] = dq[(row0 + min(qp[i], n - 1)) * qstride + h * HD + d];
  return r;
}
void dq_store(uint d, vec4 val) {
  for (uint i = 0; i < 4; ++i) {
    if (qp[i] < n) dq[(row0 + qp[i]) * qstride + h * HD + d] = val[i];
  }
}

// dq += dS k over the tile's keys [k0, k0 + BK) in order, dimensions c * 32 .. c * 32 + 31.
#define DQ_CHUNK(C, A0, A1)                                                          \
  if (C < NB) {                                                                      \
    barrier(); /* dS is written; the previous chunk of k is read */                 \
    for (uint x = 0; x < 4; ++x) {                                                   \
      const uint j = tid / DB + 8 * x, d = tid % DB;                                 \
      qs4[j * (DB / 4) + d / 4][d % 4] =                                             \
          k[(row0 + min(k0 + j, n - 1)) * pc.kv_stride + kv_off + C * DB + d];       \
    }                                                                                \
    barrier();                                                                       \
    for (uint j = 0; j < BK; ++j) {                                                  \
      const vec4 kw = qs4[j * (DB / 4) + tk / 2];                                    \
      const vec2 kk = tk % 2 == 0 ? kw.xy : kw.zw;                                   \
      const vec4 w = t0[j * (BQ / 4) + tq];                                          \
      const bvec4 seen = lessThanEqual(uvec4(k0 + j), qp);                           \
      precise vec4 t = w * kk.x;                                                     \
      precise vec4 u = A0 + t;                                                       \
      A0 = mix(A0, u, seen);                                                         \
      precise vec4 t2 = w * kk.y;                                                    \
      precise vec4 u2 = A1 + t2;                                                     \
      A1 = mix(A1, u2, seen);                                                        \
    }                                                                                \
  }

void main() {
  tid = gl_LocalInvocationID.x;
  const uint lane = tid % 32, warp = tid / 32;
  tq = (warp % 4) * 4 + lane / 8;
  tk = (warp / 4) * 8 + lane % 8;
  h = gl_WorkGroupID.x;
  q0 = gl_WorkGroupID.y * BQ;
  row0 = seqs[2 * gl_WorkGroupID.z];
  n = seqs[2 * gl_WorkGroupID.z + 1];
  if (h >= pc.n_head || q0 >= n) return;
  qstride = pc.n_head * HD;
  kv_off = (h / (pc.n_head / pc.n_head_kv)) * HD;
  const uint kend = min(n, q0 + BQ);  // keys [0, kend) are seen by some query of the tile

  qp = uvec4(q0 + tq * 4) + uvec4(0, 1, 2, 3);
  vec4 mx = vec4(uintBitsToFloat(0xFF800000u));  // -inf
  m = vec4(0.0);
  inv = vec4(0.0);
  dd = vec4(0.0);
  for (uint i = 0; i < 4; ++i) {
    const uint rec = ((row0 + min(qp[i], n - 1)) * pc.n_head + h) * 3;
    if (STAGE != 0) m[i] = stats[rec];
    if (STAGE == 2) {
      precise float li = 1.0 / stats[rec + 1];
      precise float e = stats[rec + 2] * li;
      inv[i] = li;
      dd[i] = e;
    }
  }
  if (STAGE == 2) {
    a00 = dq_at(0 * DB + tk * 2), a01 = dq_at(0 * DB + tk * 2 + 1);
    if (1 < NB) a10 = dq_at(1 * DB + tk * 2), a11 = dq_at(1 * DB + tk * 2 + 1);
    if (2 < NB) a20 = dq_at(2 * DB + tk * 2), a21 = dq_at(2 * DB + tk * 2 + 1);
    if (3 < NB) a30 = dq_at(3 * DB + tk * 2), a31 = dq_at(3 * DB + tk * 2 + 1);
  }
  // Stage 1: invocation tid < 64 owns query q0 + tid's sums.
  const uint own = q0 + tid;
  precise float l = 0.0, e_sum = 0.0;

  for (uint k0 = 0; k0 < kend; k0 += BK) {
    // Scores and dp of this invocation's queries against keys k0 + tk * 2 + {0, 1}.
    precise vec4 s0 = vec4(0.0), s1 = vec4(0.0), p0 = vec4(0.0), p1 = vec4(0.0);
    for (uint c = 0; c < HD / DC; ++c) {
      barrier();  // the previous chunk (or tile) is read by every invocation
      for (uint x = 0; x < 4; ++x) {
        const uint i = tid / DC + 16 * x, d = tid % DC;
        const uint src = (row0 + min(q0 + i, n - 1)) * qstride + h * HD + c * DC + d;
        qs4[d * QP4 + i / 4][i % 4] = q[src];
        if (STAGE != 0) dos4[d * QP4 + i / 4][i % 4] = dout[src];
      }
      for (uint x = 0; x < 2; ++x) {
        const uint j = tid / DC + 16 * x, d = tid % DC;
        const uint src = (row0 + min(k0 + j, n - 1)) * pc.kv_stride + kv_off + c * DC + d;
        ks2[d * KP2 + j / 2][j % 2] = k[src];
        if (STAGE != 0) vs2[d * KP2 + j / 2][j % 2] = v[src];
      }
      barrier();
      for (uint d = 0; d < DC; ++d) {
        const vec4 a = qs4[d * QP4 + tq];
        const vec2 kk = ks2[d * KP2 + tk];
        precise vec4 x0 = a * kk.x;
        s0 += x0;
        precise vec4 x1 = a * kk.y;
        s1 += x1;
        if (STAGE != 0) {
          const vec4 g = dos4[d * QP4 + tq];
          const vec2 vv = vs2[d * KP2 + tk];
          precise vec4 y0 = g * vv.x;
          p0 += y0;
          precise vec4 y1 = g * vv.y;
          p1 += y1;
        }
      }
    }
    for (uint c2 = 0; c2 < 2; ++c2) {
      const uint j = tk * 2 + c2;
      precise vec4 sv = (c2 == 0 ? s0 : s1) * pc.scale;
      if (STAGE == 0) {
        const bvec4 seen = bvec4(uvec4(lessThanEqual(uvec4(k0 + j), qp)) & uvec4(lessThan(qp, uvec4(n))));
        mx = mix(mx, max(mx, sv), seen);
      } else {
        precise vec4 e = exp(sv - m);
        if (STAGE == 1) {
          precise vec4 ed = e * (c2 == 0 ? p0 : p1);
          t0[j * (BQ / 4) + tq] = e;
          t1[j * (BQ / 4) + tq] = ed;
        } else {
          precise vec4 pr = e * inv;
          precise vec4 diff = (c2 == 0 ? p0 : p1) - dd;
          precise vec4 ds = (pr * diff) * pc.scale;
          t0[j * (BQ / 4) + tq] = ds;
        }
      }
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
      DQ_CHUNK(0, a00, a01)
      DQ_CHUNK(1, a10, a11)
      DQ_CHUNK(2, a20, a21)
      DQ_CHUNK(3, a30, a31)
    }
  }

  if (STAGE == 0) {
    barrier();
    t0[tk * (BQ / 4) + tq] = mx;
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
    if (tk == 0) {
      for (uint i = 0; i < 4; ++i) {
        if (qp[i] >= n) continue;
        const uint rec = ((row0 + qp[i]) * pc.n_head + h) * 3;
        stats[rec + 1] = inv[i];
        stats[rec + 2] = dd[i];
      }
    }
    dq_store(0 * DB + tk * 2, a00), dq_store(0 * DB + tk * 2 + 1, a01);
    if (1 < NB) dq_store(1 * DB + tk * 2, a10), dq_store(1 * DB + tk * 2 + 1, a11);
    if (2 < NB) dq_store(2 * DB + tk * 2, a20), dq_store(2 * DB + tk * 2 + 1, a21);
    if (3 < NB) dq_store(3 * DB + tk * 2, a30), dq_store(3 * DB + tk * 2 + 1, a31);
  }
}
