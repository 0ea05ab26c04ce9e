#version 450
// attention: the per-chunk partials of causal GQA attention for query tokens [t0, t0 + n_q)
// of a token tile against ONE piece of the KV cache (positions [kv_r0, kv_r0 + kv_rows)).
// attention_combine.comp merges the partials into the output (CPU reference attention_forward
// in backend/cpu/ops.cpp).
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
//   3 partial float[see above]                  scratch                               (write)
// Push constants: AttentionPush { n_q, t0, pos0, n_head, n_head_kv, head_dim, kv_stride,
//   kv_r0, kv_rows, n_chunks, scale }; kv_r0 a multiple of C; scale = 1 / sqrt(float(head_dim))
//   as the CPU computes it.
// Spec constants: 0 workgroup size (power of two), 10 chunk size C, 11 MAX_HEAD_DIM
//   (>= head_dim; sizes shared memory: 4 * (MAX_HEAD_DIM + C + WG) bytes).
// Dispatch: (ceil(kv_rows / C), n_head, n_q); workgroups of chunks in the future of their
//   query return at once. n_q <= maxComputeWorkGroupCount[2] (65535 at least).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 64;
layout(constant_id = SPEC_ATTN_CHUNK) const uint C = 64;
layout(constant_id = SPEC_MAX_HEAD_DIM) const uint MAX_HEAD_DIM = 256;

layout(std430, set = 0, binding = 0) readonly buffer Qb { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer Kb { float k[]; };
layout(std430, set = 0, binding = 2) readonly buffer Vb { float v[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Partial { float partial[]; };

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

shared float qs[MAX_HEAD_DIM];
shared float sc[C];
shared float red[WG_SIZE];

void main() {
  uint tid = gl_LocalInvocationID.x;
  uint local0 = gl_WorkGroupID.x * C;  // first key of the chunk, relative to the piece
  uint h = gl_WorkGroupID.y;
  uint tq = gl_WorkGroupID.z;
  if (tq >= pc.n_q || h >= pc.n_head || local0 >= pc.kv_rows) return;
  uint t = pc.t0 + tq;
  uint qpos = pc.pos0 + t;
  uint key0 = pc.kv_r0 + local0;
  if (key0 > qpos) return;
  uint n_keys = min(min(pc.kv_r0 + pc.kv_rows, qpos + 1) - key0, C);
  uint c = key0 / C;
  uint hd = pc.head_dim;
  uint kv_off = (h / (pc.n_head / pc.n_head_kv)) * hd;

  for (uint d = tid; d < hd; d += WG_SIZE) qs[d] = q[(t * pc.n_head + h) * hd + d];
  barrier();

  float m = uintBitsToFloat(0xFF800000u);  // -inf
  for (uint j = tid; j < n_keys; j += WG_SIZE) {
    uint kb = (local0 + j) * pc.kv_stride + kv_off;
    float dot = 0.0;
    for (uint d = 0; d < hd; ++d) dot += qs[d] * k[kb + d];
    float s = dot * pc.scale;
    sc[j] = s;
    m = s > m ? s : m;
  }
  red[tid] = m;
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] = max(red[tid], red[tid + s]);
    barrier();
  }
  m = red[0];
  barrier();

  float l = 0.0;
  for (uint j = tid; j < n_keys; j += WG_SIZE) {
    float p = exp(sc[j] - m);
    sc[j] = p;
    l += p;
  }
  red[tid] = l;
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] += red[tid + s];
    barrier();
  }

  uint rec = ((tq * pc.n_head + h) * pc.n_chunks + c) * (hd + 2);
  if (tid == 0) {
    partial[rec] = m;
    partial[rec + 1] = red[0];
  }
  for (uint d = tid; d < hd; d += WG_SIZE) {
    float acc = 0.0;
    for (uint j = 0; j < n_keys; ++j) acc += sc[j] * v[(local0 + j) * pc.kv_stride + kv_off + d];
    partial[rec + 2 + d] = acc;
  }
}
