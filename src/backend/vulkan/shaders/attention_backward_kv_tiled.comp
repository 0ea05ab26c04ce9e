#version 450
// attention_backward_kv_tiled: attention_backward_kv_wg.comp's key side (the same values and
// bits) for every sequence of a batch in one dispatch, after attention_backward_tiled.comp has
// left each query's [m, inv, D] in stats. For each key j of a sequence and its KV head, over
// the query heads of the group in order and, for each, the queries t >= j in order:
//   s = (q_t . k_j) * scale, P = exp(s - m_t) * inv_t, dS = (P (dp - D_t)) * scale with
//   dp = dout_t . v_j, dv_j[d] = dv_j[d] + P dout_t[d], dk_j[d] = dk_j[d] + dS q_t[d]
// The dot products run over d in order inside one invocation and dk[d], dv[d] over (head,
// query) in order inside the invocation that owns (key, d): the reference's order.
//
// Layout: 256 invocations over 64 keys; invocation (tj, ti) holds keys tj * 4 .. tj * 4 + 3
// and queries ti * 2, ti * 2 + 1 of each 32-query tile (scores in registers, a vec4 over its
// keys per query), and dk, dv of its four keys at dimensions ti * 2, ti * 2 + 1 of every 32
// (a vec4 per dimension). No register arrays, as attention_backward_tiled.comp. A subgroup of 32 spans 4 values of tj
// and 8 of ti. Scores stage 16 dimensions at a time, the sums into dk and dv 32.
//
// Bindings (set 0):
//   0 q, 1 dout (read), 2 k, 3 v (read), 4 stats (read), 5 dk, 6 dv (read/write), 7 seqs (read)
//   as attention_backward_tiled.comp.
// Push constants: AttentionBackwardTiledPush. Spec constants: 11 HD (a multiple of 32).
// Dispatch: (ceil(longest / 64), n_head_kv, sequences).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = SPEC_MAX_HEAD_DIM) const uint HD = 64;

const uint WG = 256;
const uint BKV = 64;           // keys a workgroup
const uint BQ = 32;            // queries a tile
const uint DC = 16;            // dimensions staged per barrier (scores)
const uint DB = 32;            // dimensions staged per barrier (dk, dv)
const uint NB = HD / DB;       // at most 4
const uint KP4 = BKV / 4 + 1;  // a staged dimension's keys, as vec4, padded
const uint QP2 = BQ / 2 + 1;   // a staged dimension's queries, as vec2, padded

layout(std430, set = 0, binding = 0) readonly buffer Qb { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer Dob { float dout[]; };
layout(std430, set = 0, binding = 2) readonly buffer Kb { float k[]; };
layout(std430, set = 0, binding = 3) readonly buffer Vb { float v[]; };
layout(std430, set = 0, binding = 4) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 5) buffer Dk { float dk[]; };
layout(std430, set = 0, binding = 6) buffer Dv { float dv[]; };
layout(std430, set = 0, binding = 7) readonly buffer Seqs { uint seqs[]; };

layout(push_constant) uniform Push {
  uint n_head;
  uint n_head_kv;
  uint kv_stride;
  float scale;
} pc;

shared vec4 ks4[DC * KP4];  // [d][key / 4]; the second pass: q as [query][d / 4]
shared vec4 vs4[DC * KP4];  // the second pass: dout as [query][d / 4]
shared vec2 qs2[DC * QP2];  // [d][query / 2]
shared vec2 dos2[DC * QP2];
shared float st[BQ * 3];
shared vec4 pt[BQ * (BKV / 4)];   // [query][key / 4]: P
shared vec4 dst[BQ * (BKV / 4)];  // dS

uint tid, tj, ti, j0, kvh, row0, n, qstride, h, i0;
uvec4 kp;  // this invocation's keys (positions in the sequence)
// dk (K) and dv (V) at dimensions c * 32 + ti * 2 + {0, 1}: <K|V><c><e>, vec4 over the keys.
precise vec4 k00, k01, k10, k11, k20, k21, k30, k31;
precise vec4 v00, v01, v10, v11, v20, v21, v30, v31;

vec4 kv_at(uint d, bool is_k) {
  vec4 r;
  for (uint i = 0; i < 4; ++i) {
    const uint at = (row0 + min(kp[i], n - 1)) * pc.kv_stride + kvh * HD + d;
    r[i] = is_k ? dk[at] : dv[at];
  }
  return r;
}
void kv_store(uint d, vec4 dkv, vec4 dvv) {
  for (uint i = 0; i < 4; ++i) {
    if (kp[i] >= n) continue;
    const uint at = (row0 + kp[i]) * pc.kv_stride + kvh * HD + d;
    dk[at] = dkv[i];
    dv[at] = dvv[i];
  }
}

// dv += P dout, dk += dS q over the tile's queries [i0, i0 + cnt) in order, dimensions
// c * 32 .. c * 32 + 31.
#define KV_CHUNK(C, K0, K1, V0, V1)                                               \
  if (C < NB) {                                                                   \
    barrier(); /* P and dS are written; the previous chunk is read */            \
    for (uint x = 0; x < 4; ++x) {                                                \
      const uint i = tid / DB + 8 * x, d = tid % DB;                              \
      const uint src = (row0 + min(i0 + i, n - 1)) * qstride + h * HD + C * DB + d; \
      ks4[i * (DB / 4) + d / 4][d % 4] = q[src];                                  \
      vs4[i * (DB / 4) + d / 4][d % 4] = dout[src];                               \
    }                                                                             \
    barrier();                                                                    \
    for (uint i = 0; i < cnt; ++i) {                                              \
      const vec4 qw = ks4[i * (DB / 4) + ti / 2];                                 \
      const vec4 gw = vs4[i * (DB / 4) + ti / 2];                                 \
      const vec2 qq = ti % 2 == 0 ? qw.xy : qw.zw;                                \
      const vec2 gg = ti % 2 == 0 ? gw.xy : gw.zw;                                \
      const vec4 wp = pt[i * (BKV / 4) + tj];                                     \
      const vec4 wd = dst[i * (BKV / 4) + tj];                                    \
      const bvec4 seen = greaterThanEqual(uvec4(i0 + i), kp);                     \
      precise vec4 a0 = wp * gg.x;                                                \
      precise vec4 b0 = V0 + a0;                                                  \
      V0 = mix(V0, b0, seen);                                                     \
      precise vec4 c0 = wd * qq.x;                                                \
      precise vec4 e0 = K0 + c0;                                                  \
      K0 = mix(K0, e0, seen);                                                     \
      precise vec4 a1 = wp * gg.y;                                                \
      precise vec4 b1 = V1 + a1;                                                  \
      V1 = mix(V1, b1, seen);                                                     \
      precise vec4 c1 = wd * qq.y;                                                \
      precise vec4 e1 = K1 + c1;                                                  \
      K1 = mix(K1, e1, seen);                                                     \
    }                                                                             \
  }

void main() {
  tid = gl_LocalInvocationID.x;
  const uint lane = tid % 32, warp = tid / 32;
  tj = (warp % 4) * 4 + lane / 8;
  ti = (warp / 4) * 8 + lane % 8;
  j0 = gl_WorkGroupID.x * BKV;
  kvh = gl_WorkGroupID.y;
  row0 = seqs[2 * gl_WorkGroupID.z];
  n = seqs[2 * gl_WorkGroupID.z + 1];
  if (j0 >= n || kvh >= pc.n_head_kv) return;
  qstride = pc.n_head * HD;
  const uint group = pc.n_head / pc.n_head_kv;

  kp = uvec4(j0 + tj * 4) + uvec4(0, 1, 2, 3);
  const uint d0 = ti * 2;
  k00 = kv_at(d0, true), k01 = kv_at(d0 + 1, true);
  v00 = kv_at(d0, false), v01 = kv_at(d0 + 1, false);
  if (1 < NB) {
    k10 = kv_at(DB + d0, true), k11 = kv_at(DB + d0 + 1, true);
    v10 = kv_at(DB + d0, false), v11 = kv_at(DB + d0 + 1, false);
  }
  if (2 < NB) {
    k20 = kv_at(2 * DB + d0, true), k21 = kv_at(2 * DB + d0 + 1, true);
    v20 = kv_at(2 * DB + d0, false), v21 = kv_at(2 * DB + d0 + 1, false);
  }
  if (3 < NB) {
    k30 = kv_at(3 * DB + d0, true), k31 = kv_at(3 * DB + d0 + 1, true);
    v30 = kv_at(3 * DB + d0, false), v31 = kv_at(3 * DB + d0 + 1, false);
  }

  for (uint g = 0; g < group; ++g) {
    h = kvh * group + g;
    for (i0 = j0; i0 < n; i0 += BQ) {
      // Scores and dp of this invocation's keys against queries i0 + ti * 2 + {0, 1}.
      precise vec4 s0 = vec4(0.0), s1 = vec4(0.0), p0 = vec4(0.0), p1 = vec4(0.0);
      for (uint c = 0; c < HD / DC; ++c) {
        barrier();  // the previous chunk (or tile) is read by every invocation
        for (uint x = 0; x < 4; ++x) {
          const uint j = tid / DC + 16 * x, d = tid % DC;
          const uint src = (row0 + min(j0 + j, n - 1)) * pc.kv_stride + kvh * HD + c * DC + d;
          ks4[d * KP4 + j / 4][j % 4] = k[src];
          vs4[d * KP4 + j / 4][j % 4] = v[src];
        }
        for (uint x = 0; x < 2; ++x) {
          const uint i = tid / DC + 16 * x, d = tid % DC;
          const uint src = (row0 + min(i0 + i, n - 1)) * qstride + h * HD + c * DC + d;
          qs2[d * QP2 + i / 2][i % 2] = q[src];
          dos2[d * QP2 + i / 2][i % 2] = dout[src];
        }
        if (c == 0 && tid < BQ * 3) {
          st[tid] = stats[((row0 + min(i0 + tid / 3, n - 1)) * pc.n_head + h) * 3 + tid % 3];
        }
        barrier();
        for (uint d = 0; d < DC; ++d) {
          const vec4 kk = ks4[d * KP4 + tj];
          const vec4 vv = vs4[d * KP4 + tj];
          const vec2 qq = qs2[d * QP2 + ti];
          const vec2 gg = dos2[d * QP2 + ti];
          precise vec4 x0 = kk * qq.x;
          s0 += x0;
          precise vec4 x1 = kk * qq.y;
          s1 += x1;
          precise vec4 y0 = vv * gg.x;
          p0 += y0;
          precise vec4 y1 = vv * gg.y;
          p1 += y1;
        }
      }
      for (uint c2 = 0; c2 < 2; ++c2) {
        const uint i = ti * 2 + c2;
        precise vec4 sv = (c2 == 0 ? s0 : s1) * pc.scale;
        precise vec4 pr = exp(sv - st[i * 3]) * st[i * 3 + 1];
        precise vec4 diff = (c2 == 0 ? p0 : p1) - st[i * 3 + 2];
        precise vec4 ds = (pr * diff) * pc.scale;
        pt[i * (BKV / 4) + tj] = pr;
        dst[i * (BKV / 4) + tj] = ds;
      }
      const uint cnt = min(BQ, n - i0);
      KV_CHUNK(0, k00, k01, v00, v01)
      KV_CHUNK(1, k10, k11, v10, v11)
      KV_CHUNK(2, k20, k21, v20, v21)
      KV_CHUNK(3, k30, k31, v30, v31)
    }
  }
  kv_store(d0, k00, v00), kv_store(d0 + 1, k01, v01);
  if (1 < NB) kv_store(DB + d0, k10, v10), kv_store(DB + d0 + 1, k11, v11);
  if (2 < NB) kv_store(2 * DB + d0, k20, v20), kv_store(2 * DB + d0 + 1, k21, v21);
  if (3 < NB) kv_store(3 * DB + d0, k30, v30), kv_store(3 * DB + d0 + 1, k31, v31);
}
