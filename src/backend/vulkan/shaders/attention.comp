#version 450
// attention: the per-chunk partials of causal GQA attention for query tokens [t0, t0 + n_q)
// of a token tile against ONE piece of the KV cache (positions [kv_r0, kv_r0 + kv_rows)).
// attention_combine.comp merges the partials into the output (CPU reference attention_forward
// in backend/cpu/ops.h).
//
// Query token t (tile row) is at position pos0 + t and sees keys 0 .. pos0 + t. Query head h
// uses KV head h / (n_head / n_head_kv). Keys are taken in fixed chunks of C positions
// (chunk c = positions [c * C, c * C + C)); for each (query, head, chunk) with a visible key:
//   s_j = dot(q, k_j) * scale (dot summed over d in order),  m = max_j s_j,
//   l = sum_j exp(s_j - m),  acc[d] = sum_j exp(s_j - m) * v_j[d]     (j in order)
// Partials depend only on the chunk, never on how the cache is split into pieces, so the
// result is the same for every tiling of the cache.
//
// Scratch layout (floats): record R(tq, h, c) at ((tq * n_head + h) * n_chunks + c) * (head_dim + 2)
//   = [m, l, acc[0 .. head_dim)],  tq = t - t0 in [0, n_q), c the absolute chunk index,
//   n_chunks = ceil((pos0 + t0 + n_q) / C) (the chunks the last query of the range needs).
//   Query t needs, and gets written, exactly chunks 0 .. (pos0 + t) / C once all pieces
//   covering positions [0, pos0 + t0 + n_q) are dispatched; no zeroing is needed.
//   Size n_q * n_head * n_chunks * (head_dim + 2) * 4 bytes: choose n_q (a sub-range of the
//   tile, t0 its start) so that it fits the binding limit.
//
// Bindings (set 0):
//   0 q       float[T * n_head * head_dim]      queries of the tile (rows t0.. used)  (read)
//   1 k       float[kv_rows * kv_stride]        K cache piece (n_embd_kv = kv_stride) (read)
//   2 v       float[kv_rows * kv_stride]        V cache piece                         (read)
//   3 partial float[see above]                  scratch                    (write; read: FUSE)
//   5 counters uint[n_q * n_head]               FUSE_COMBINE: zero before, zero after (read/write)
//   6 out     float[T * n_head * head_dim]      FUSE_COMBINE: attention_combine's output (write)
//   Without FUSE_COMBINE bindings 5 and 6 are bound but unused.
// Push constants: AttentionPush { n_q, t0, pos0, n_head, n_head_kv, head_dim, kv_stride,
//   kv_r0, kv_rows, n_chunks, scale }; kv_r0 a multiple of C; scale = 1 / sqrt(float(head_dim))
//   as the CPU computes it.
// Spec constants: 0 workgroup size (a power of two, >= C), 3 QT queries per workgroup,
//   10 chunk size C, 11 MAX_HEAD_DIM (>= head_dim). Shared memory:
//   4 * (QT * (MAX_HEAD_DIM + C + WG) + C * 33) bytes (no C * 33 when QT = 1).
// Dispatch: (ceil(kv_rows / C), n_head, ceil(n_q / QT)); workgroups whose chunk lies in the
//   future of all their queries return at once. ceil(n_q / QT) <= maxComputeWorkGroupCount[2].
//
// SEQ_TABLE = 1 (spec constant 17; QT = 1): the n_q queries are decoding rows of different
// sequences whose caches are rows of one pool. Binding 4 holds (base, pos) per query: the pool
// row of the sequence's position 0 (a multiple of C) and the query's position. kv_r0 / kv_rows
// are then the pool rows of the bound piece, the dispatch is (n_chunks, n_head, n_q) with x the
// chunk of the query's own sequence, pos0 and t0 are 0, and a chunk outside the piece returns.
// Without the table, binding 4 is bound but unused.
//
// FUSE_COMBINE = 1 (spec constant 20; QT = 1, decoding): the workgroup that completes a
// query's last chunk for a head merges that query's records into `out` itself (see
// merge_if_last), so no attention_combine dispatch follows. Every chunk a query sees must be
// dispatched (over one or several pieces) before the counters are whole again.
//
// KV_F16 = 1 (spec constant 18): the K and V pieces hold halves, two a 32-bit word (element
// i in word i / 2, the even element in the low half); indices and kv_stride count elements
// as with f32 caches.
//
// A workgroup stages its chunk's keys in shared memory, 32 dimensions at a time (coalesced
// loads; thread j then reads key j), and serves QT queries from them; the values are read once
// for all QT queries. With QT = 1 (decoding) thread j reads key j from memory directly, the
// row's first KEY_VEC uvec4s in loads issued together. Every partial is computed with the same operations in the same order
// whatever QT is (`precise`: no contraction into fused multiply-adds), so a prompt's attention
// equals that of its tokens decoded one by one, bit for bit.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 64;
layout(constant_id = SPEC_MV_TOKENS) const uint QT = 1;
layout(constant_id = SPEC_ATTN_CHUNK) const uint C = 64;
layout(constant_id = SPEC_MAX_HEAD_DIM) const uint MAX_HEAD_DIM = 256;
layout(constant_id = SPEC_SEQ_TABLE) const uint SEQ_TABLE = 0;
layout(constant_id = SPEC_KV_F16) const uint KV_F16 = 0;
layout(constant_id = SPEC_ATTN_FUSE_COMBINE) const uint FUSE_COMBINE = 0;

layout(std430, set = 0, binding = 0) readonly buffer Qb { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer Kb { uint k[]; };  // f32 bits or 2 halves
layout(std430, set = 0, binding = 1) readonly buffer Kb4 { uvec4 k4[]; };  // the same, 16 bytes
layout(std430, set = 0, binding = 2) readonly buffer Vb { uint v[]; };
// coherent: with FUSE_COMBINE a workgroup reads the records other workgroups wrote.
layout(std430, set = 0, binding = 3) coherent buffer Partial { float partial[]; };
layout(std430, set = 0, binding = 4) readonly buffer Seqs { uint seqs[]; };
layout(std430, set = 0, binding = 5) coherent buffer Counters { uint counters[]; };
layout(std430, set = 0, binding = 6) writeonly buffer Out { float out_[]; };

layout(push_constant) uniform Push {
  uint n_q;
  uint t0;
  uint pos0;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint kv_stride;
  uint kv_r0;
  uint kv_rows;
  uint n_chunks;
  float scale;
} pc;

// Element i of the K or V piece.
float k_at(uint i) {
  if (KV_F16 != 0) {
    vec2 p = f16x2(k[i >> 1]);
    return (i & 1u) == 0u ? p.x : p.y;
  }
  return uintBitsToFloat(k[i]);
}
float v_at(uint i) {
  if (KV_F16 != 0) {
    vec2 p = f16x2(v[i >> 1]);
    return (i & 1u) == 0u ? p.x : p.y;
  }
  return uintBitsToFloat(v[i]);
}

#define MERGE_IN partial
#define MERGE_OUT out_
#include "attention_merge.glsl"

const uint KD = 32;  // key dimensions staged per step
// Loads of keys and values issued before their products (spec constant 21; a multiple of 2).
layout(constant_id = SPEC_ATTN_UNROLL) const uint UNROLL = 8;
// Decoding: uvec4s of a key row loaded together (spec constant 22; 0: the UNROLL loop alone).
layout(constant_id = SPEC_ATTN_KEY_VEC) const uint KEY_VEC = 0;
const uint KS = KD + 1;
shared float qs[QT * MAX_HEAD_DIM];
shared float ks[QT > 1 ? C * KS : 1];  // decoding (QT = 1) stages nothing
shared float sc[QT * C];
shared float red[QT * WG_SIZE];

// FUSE_COMBINE (QT = 1): the workgroup that finishes the last of its query's chunks (the
// counter of the query and head reaching `last` + 1) merges the records into the output, as
// attention_combine.comp would, and sets the counter back to zero for the next dispatch.
shared bool merges;
void merge_if_last(uint tid, uint h, uint tq, uint last, uint hd) {
  memoryBarrierBuffer();  // this workgroup's records, before its count
  barrier();
  if (tid == 0) {
    uint key = tq * pc.n_head + h;
    merges = atomicAdd(counters[key], 1u) == last;
    if (merges) counters[key] = 0u;
  }
  barrier();
  if (!merges) return;
  memoryBarrierBuffer();  // the other workgroups' records, after their counts
  merge_partials((tq * pc.n_head + h) * pc.n_chunks * (hd + 2), last, hd,
                 ((pc.t0 + tq) * pc.n_head + h) * hd);
}

void main() {
  uint tid = gl_LocalInvocationID.x;
  uint h = gl_WorkGroupID.y;
  uint tq0 = gl_WorkGroupID.z * QT;
  if (tq0 >= pc.n_q || h >= pc.n_head) return;
  uint n_tq = min(QT, pc.n_q - tq0);
  // local0: the chunk's first row in the bound piece; key0: its position; pos_end: the position
  // where the piece ends; qpos0: the position of the group's first query.
  uint local0, key0, pos_end, qpos0;
  if (SEQ_TABLE != 0) {
    uint base = seqs[2 * tq0];
    qpos0 = seqs[2 * tq0 + 1];
    key0 = gl_WorkGroupID.x * C;
    uint row = base + key0;
    if (key0 > qpos0 || row < pc.kv_r0 || row >= pc.kv_r0 + pc.kv_rows) return;
    local0 = row - pc.kv_r0;
    pos_end = pc.kv_r0 + pc.kv_rows - base;
  } else {
    local0 = gl_WorkGroupID.x * C;
    if (local0 >= pc.kv_rows) return;
    key0 = pc.kv_r0 + local0;
    pos_end = pc.kv_r0 + pc.kv_rows;
    qpos0 = pc.pos0 + pc.t0 + tq0;
    if (key0 > qpos0 + n_tq - 1) return;  // no query of the group sees the chunk
  }
  uint c = key0 / C;
  uint hd = pc.head_dim;
  uint kv_off = (h / (pc.n_head / pc.n_head_kv)) * hd;
  uint rows_here = min(pos_end - key0, C);

  // Keys each query sees: 0 for queries past the range or before the chunk.
  uint nk[QT];
  uint nk_max = 0;
  for (uint i = 0; i < QT; ++i) {
    uint qpos = qpos0 + i;
    nk[i] = i < n_tq && key0 <= qpos ? min(min(pos_end, qpos + 1) - key0, C) : 0;
    nk_max = max(nk_max, nk[i]);
  }
  for (uint x = tid; x < QT * hd; x += WG_SIZE) {
    uint i = x / hd, d = x % hd;
    qs[i * MAX_HEAD_DIM + d] = i < n_tq ? q[((pc.t0 + tq0 + i) * pc.n_head + h) * hd + d] : 0.0;
  }

  // Scores: thread j takes key j, summing over d in order.
  precise float dot[QT];
  for (uint i = 0; i < QT; ++i) dot[i] = 0.0;
  if (QT == 1) {
    // Decoding: nothing to share, so no staging (the same products in the same order).
    barrier();  // qs written
    if (tid < nk_max) {
      // UNROLL loads issued together, then summed in order: the loop bound is a push
      // constant, so a plain loop waits for each load before the next (~30 us a dispatch).
      uint kb = (local0 + tid) * pc.kv_stride + kv_off;
      uint d = 0;
      // The row is contiguous: KEY_VEC uvec4s of it loaded together, then summed in order.
      const uint W = KV_F16 != 0 ? 8u : 4u;  // elements a uvec4
      if (KEY_VEC > 0 && (pc.kv_stride % W) == 0u && (kv_off % W) == 0u) {
        for (; d + KEY_VEC * W <= hd; d += KEY_VEC * W) {
          uvec4 kw[KEY_VEC > 0 ? KEY_VEC : 1];
          for (uint u = 0; u < KEY_VEC; ++u) kw[u] = k4[(kb + d) / W + u];
          for (uint u = 0; u < KEY_VEC; ++u) {
            for (uint e = 0; e < 4u; ++e) {
              if (KV_F16 != 0) {
                vec2 p = f16x2(kw[u][e]);
                precise float p0 = qs[d + u * 8u + 2u * e] * p.x;
                dot[0] = dot[0] + p0;
                precise float p1 = qs[d + u * 8u + 2u * e + 1u] * p.y;
                dot[0] = dot[0] + p1;
              } else {
                precise float prod = qs[d + u * 4u + e] * uintBitsToFloat(kw[u][e]);
                dot[0] = dot[0] + prod;
              }
            }
          }
        }
      }
      for (; d + UNROLL <= hd; d += UNROLL) {
        float kk[UNROLL];
        if (KV_F16 != 0) {  // pairs of halves: one word for two (kb + d is even)
          for (uint u = 0; u < UNROLL; u += 2) {
            vec2 p = f16x2(k[(kb + d + u) >> 1]);
            kk[u] = p.x;
            kk[u + 1] = p.y;
          }
        } else {
          for (uint u = 0; u < UNROLL; ++u) kk[u] = k_at(kb + d + u);
        }
        for (uint u = 0; u < UNROLL; ++u) {
          precise float prod = qs[d + u] * kk[u];
          dot[0] = dot[0] + prod;
        }
      }
      for (; d < hd; ++d) {
        precise float prod = qs[d] * k_at(kb + d);
        dot[0] = dot[0] + prod;
      }
    }
  }
  for (uint d0 = 0; QT > 1 && d0 < hd; d0 += KD) {
    uint dn = min(KD, hd - d0);
    barrier();  // qs written / the last block read
    for (uint x = tid; x < C * KD; x += WG_SIZE) {
      uint j = x / KD, dd = x % KD;
      ks[j * KS + dd] = j < rows_here && dd < dn ? k_at((local0 + j) * pc.kv_stride + kv_off + d0 + dd) : 0.0;
    }
    barrier();
    if (tid < nk_max) {
      for (uint dd = 0; dd < dn; ++dd) {
        float kv = ks[tid * KS + dd];
        for (uint i = 0; i < QT; ++i) {
          precise float prod = qs[i * MAX_HEAD_DIM + d0 + dd] * kv;
          dot[i] = dot[i] + prod;
        }
      }
    }
  }

  const float NEG_INF = uintBitsToFloat(0xFF800000u);
  for (uint i = 0; i < QT; ++i) {
    float m = NEG_INF;
    if (tid < nk[i]) {
      float s = dot[i] * pc.scale;
      sc[i * C + tid] = s;
      m = s;
    }
    red[i * WG_SIZE + tid] = m;
  }
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) {
      for (uint i = 0; i < QT; ++i) {
        red[i * WG_SIZE + tid] = max(red[i * WG_SIZE + tid], red[i * WG_SIZE + tid + s]);
      }
    }
    barrier();
  }
  float m[QT];
  for (uint i = 0; i < QT; ++i) m[i] = red[i * WG_SIZE];
  barrier();

  for (uint i = 0; i < QT; ++i) {
    float l = 0.0;
    if (tid < nk[i]) {
      float p = exp(sc[i * C + tid] - m[i]);
      sc[i * C + tid] = p;
      l = p;
    }
    red[i * WG_SIZE + tid] = l;
  }
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) {
      for (uint i = 0; i < QT; ++i) {
        red[i * WG_SIZE + tid] = red[i * WG_SIZE + tid] + red[i * WG_SIZE + tid + s];
      }
    }
    barrier();
  }

  uint rec0 = ((tq0 * pc.n_head + h) * pc.n_chunks + c) * (hd + 2);
  uint rec_step = pc.n_head * pc.n_chunks * (hd + 2);  // the next query's record
  if (tid == 0) {
    for (uint i = 0; i < QT; ++i) {
      if (nk[i] == 0) continue;
      partial[rec0 + i * rec_step] = m[i];
      partial[rec0 + i * rec_step + 1] = red[i * WG_SIZE];
    }
  }
  for (uint d = tid; d < hd; d += WG_SIZE) {
    precise float acc[QT];
    for (uint i = 0; i < QT; ++i) acc[i] = 0.0;
    // Values UNROLL keys at a time: their loads in flight together, the sums in key order.
    for (uint j0 = 0; j0 < nk_max; j0 += UNROLL) {
      float vv[UNROLL];
      for (uint u = 0; u < UNROLL; ++u) {
        vv[u] = j0 + u < nk_max ? v_at((local0 + j0 + u) * pc.kv_stride + kv_off + d) : 0.0;
      }
      for (uint u = 0; u < UNROLL; ++u) {
        uint j = j0 + u;
        for (uint i = 0; i < QT; ++i) {
          if (j < nk[i]) {
            precise float prod = sc[i * C + j] * vv[u];
            acc[i] = acc[i] + prod;
          }
        }
      }
    }
    for (uint i = 0; i < QT; ++i) {
      if (nk[i] != 0) partial[rec0 + i * rec_step + 2 + d] = acc[i];
    }
  }
  if (FUSE_COMBINE != 0) merge_if_last(tid, h, tq0, qpos0 / C, hd);
}
