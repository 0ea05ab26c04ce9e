#version 450
// attention_combine: merges the chunk partials of attention.comp into the attention output:
// for query token t = t0 + tq and head h, over chunks c = 0 .. (pos0 + t) / C in order,
//   M = max_c m_c,  L = sum_c l_c * exp(m_c - M),
//   out[t, h, d] = (sum_c acc_c[d] * exp(m_c - M)) / L.
// The sums run in chunk order, so the result is deterministic and independent of the KV
// tiling (it differs from the CPU's single-pass softmax by rounding only). The merge itself is
// attention_merge.glsl's, which attention.comp's decoding workgroups also run.
//
// Bindings (set 0):
//   0 partial float[n_q * n_head * n_chunks * (head_dim + 2)]  scratch of attention.comp (read)
//   1 out     float[T * n_head * head_dim]   output tile; rows [t0, t0 + n_q) written  (write)
// Push constants: AttentionCombinePush { n_q, t0, pos0, n_head, head_dim, n_chunks } (the
//   values given to attention.comp).
// Spec constants: 0 workgroup size, 10 chunk size C (as for attention.comp).
// SEQ_TABLE = 1 (spec constant 17): query tq's position is binding 2's entry 2 * tq + 1 (the
// table of attention.comp); otherwise binding 2 is bound but unused.
// Dispatch: (n_head, n_q, 1), threads over head_dim. Run after every attention.comp dispatch
//   of the range, with a compute->compute memory barrier in between.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 64;
layout(constant_id = SPEC_ATTN_CHUNK) const uint C = 64;
layout(constant_id = SPEC_SEQ_TABLE) const uint SEQ_TABLE = 0;

layout(std430, set = 0, binding = 0) readonly buffer Partial { float partial[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { float out_[]; };
layout(std430, set = 0, binding = 2) readonly buffer Seqs { uint seqs[]; };

layout(push_constant) uniform Push {
  uint n_q;
  uint t0;
  uint pos0;
  uint n_head;
  uint head_dim;
  uint n_chunks;
} pc;

#define MERGE_IN partial
#define MERGE_OUT out_
#include "attention_merge.glsl"

void main() {
  uint h = gl_WorkGroupID.x;
  uint tq = gl_WorkGroupID.y;
  if (h >= pc.n_head || tq >= pc.n_q) return;
  uint t = pc.t0 + tq;
  uint last = (SEQ_TABLE != 0 ? seqs[2 * tq + 1] : pc.pos0 + t) / C;
  uint hd = pc.head_dim;
  merge_partials((tq * pc.n_head + h) * pc.n_chunks * (hd + 2), last, hd, (t * pc.n_head + h) * hd);
}
