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
// Layout: 256 invocations over 64 keys; invocation (tj, ti) = (id % 16, id / 16) holds keys
// tj * 4 .. tj * 4 + 3 and queries ti, ti + 16 of each 32-query tile (scores in registers),
// and dk, dv of its four keys at dimensions ti, ti + 16, ... Staging as attention_backward_tiled.
//
// Bindings (set 0):
//   0 q, 1 dout (read), 2 k, 3 v (read), 4 stats (read), 5 dk, 6 dv (read/write), 7 seqs (read)
//   as attention_backward_tiled.comp.
// Push constants: AttentionBackwardTiledPush. Spec constants: 11 HD (a multiple of 16).
// Dispatch: (ceil(longest / 64), n_head_kv, sequences).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = SPEC_MAX_HEAD_DIM) const uint HD = 64;

const uint WG = 256;
const uint BKV = 64;          // keys a workgroup
const uint BQ = 32;           // queries a tile
const uint DC = 16;           // dimensions staged per barrier
const uint NC = HD / DC;
const uint KP4 = BKV / 4 + 1;  // a staged dimension's keys, as vec4, padded
const uint QP = BQ + 1;

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

shared vec4 ks4[DC * KP4];  // [d][key / 4]
shared vec4 vs4[DC * KP4];
shared float qs[DC * QP];   // [d][query]; the second pass: [query][d]
shared float dos[DC * QP];
shared float st[BQ * 3];
shared vec4 pt[BQ * (BKV / 4)];  // [query][key / 4]: P
shared vec4 dst[BQ * (BKV / 4)];  // dS

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint tj = tid % 16, ti = tid / 16;
  const uint j0 = gl_WorkGroupID.x * BKV;
  const uint kvh = gl_WorkGroupID.y;
  const uint row0 = seqs[2 * gl_WorkGroupID.z], n = seqs[2 * gl_WorkGroupID.z + 1];
  if (j0 >= n || kvh >= pc.n_head_kv) return;
  const uint qstride = pc.n_head * HD;
  const uint group = pc.n_head / pc.n_head_kv;

  uint kp[4];
  precise float acc_k[4][NC], acc_v[4][NC];
  for (uint r = 0; r < 4; ++r) {
    kp[r] = j0 + tj * 4 + r;
    const uint row = (row0 + min(kp[r], n - 1)) * pc.kv_stride + kvh * HD + ti;
    for (uint c = 0; c < NC; ++c) {
      acc_k[r][c] = dk[row + c * DC];
      acc_v[r][c] = dv[row + c * DC];
    }
  }

  for (uint g = 0; g < group; ++g) {
    const uint h = kvh * group + g;
    for (uint i0 = j0; i0 < n; i0 += BQ) {
      precise float s[4][2], dp[4][2];
      for (uint r = 0; r < 4; ++r) {
        for (uint c = 0; c < 2; ++c) {
          s[r][c] = 0.0;
          dp[r][c] = 0.0;
        }
      }
      for (uint c = 0; c < NC; ++c) {
        barrier();  // the previous chunk (or tile) is read by every invocation
        for (uint e = tid; e < BKV * DC; e += WG) {
          const uint j = e / DC, d = e % DC;
          const uint src = (row0 + min(j0 + j, n - 1)) * pc.kv_stride + kvh * HD + c * DC + d;
          ks4[d * KP4 + j / 4][j % 4] = k[src];
          vs4[d * KP4 + j / 4][j % 4] = v[src];
        }
        for (uint e = tid; e < BQ * DC; e += WG) {
          const uint i = e / DC, d = e % DC;
          const uint src = (row0 + min(i0 + i, n - 1)) * qstride + h * HD + c * DC + d;
          qs[d * QP + i] = q[src];
          dos[d * QP + i] = dout[src];
        }
        if (c == 0 && tid < BQ * 3) {
          st[tid] = stats[((row0 + min(i0 + tid / 3, n - 1)) * pc.n_head + h) * 3 + tid % 3];
        }
        barrier();
        for (uint d = 0; d < DC; ++d) {
          const vec4 kk = ks4[d * KP4 + tj];
          const vec4 vv = vs4[d * KP4 + tj];
          for (uint c2 = 0; c2 < 2; ++c2) {
            const float qq = qs[d * QP + ti + 16 * c2];
            const float gg = dos[d * QP + ti + 16 * c2];
            for (uint r = 0; r < 4; ++r) {
              precise float a = qq * kk[r];
              s[r][c2] += a;
              precise float b = gg * vv[r];
              dp[r][c2] += b;
            }
          }
        }
      }
      for (uint c2 = 0; c2 < 2; ++c2) {
        const uint i = ti + 16 * c2;
        vec4 wp, wd;
        for (uint r = 0; r < 4; ++r) {
          precise float sv = s[r][c2] * pc.scale;
          precise float p = exp(sv - st[i * 3]) * st[i * 3 + 1];
          precise float ds = (p * (dp[r][c2] - st[i * 3 + 2])) * pc.scale;
          wp[r] = p;
          wd[r] = ds;
        }
        pt[i * (BKV / 4) + tj] = wp;
        dst[i * (BKV / 4) + tj] = wd;
      }
      // dv += P dout, dk += dS q over the tile's queries in order, 16 dimensions at a time.
      const uint cnt = min(BQ, n - i0);
      for (uint c = 0; c < NC; ++c) {
        barrier();  // P and dS are written; the previous chunk is read
        for (uint e = tid; e < BQ * DC; e += WG) {
          const uint i = e / DC, d = e % DC;
          const uint src = (row0 + min(i0 + i, n - 1)) * qstride + h * HD + c * DC + d;
          qs[i * DC + d] = q[src];
          dos[i * DC + d] = dout[src];
        }
        barrier();
        for (uint i = 0; i < cnt; ++i) {
          const float qq = qs[i * DC + ti];
          const float gg = dos[i * DC + ti];
          const vec4 wp = pt[i * (BKV / 4) + tj];
          const vec4 wd = dst[i * (BKV / 4) + tj];
          for (uint r = 0; r < 4; ++r) {
            if (i0 + i >= kp[r]) {
              precise float a = wp[r] * gg;
              acc_v[r][c] += a;
              precise float b = wd[r] * qq;
              acc_k[r][c] += b;
            }
          }
        }
      }
    }
  }
  for (uint r = 0; r < 4; ++r) {
    if (kp[r] >= n) continue;
    const uint row = (row0 + kp[r]) * pc.kv_stride + kvh * HD + ti;
    for (uint c = 0; c < NC; ++c) {
      dk[row + c * DC] = acc_k[r][c];
      dv[row + c * DC] = acc_v[r][c];
    }
  }
}
