#version 450
// rope_kv: a decoding step's rope and KV store in one dispatch. For each token t of the tile:
// q rotated in place, and cache rows pos0 + t of k_cache = rope(k) and of v_cache = v (k itself
// is only read). Every rotated value is rope.comp's expression, so the results are the bits of
// rope on q and k followed by store_kv.
//
// Bindings (set 0):
//   0 q     float[n_tokens * n_head * head_dim]     rotated in place         (read/write)
//   1 k     float[n_tokens * n_head_kv * head_dim]                          (read)
//   2 v     float[n_tokens * n_head_kv * head_dim]                          (read)
//   3 kc    float[n_tokens * n_head_kv * head_dim]  k cache rows pos0..      (write)
//   4 vc    float[n_tokens * n_head_kv * head_dim]  v cache rows pos0..      (write)
//   5 table float[tab_rows * rope_dim]              rope.comp's table piece  (read)
// Push constants: RopeKvPush { n_tokens, n_head, n_head_kv, head_dim, rope_dim, pos0, tab_r0,
//   tab_rows }; positions pos0 .. pos0 + n_tokens - 1 lie in the table piece.
// Spec constants: 0 workgroup size.
// SEQ_TABLE = 1 (spec constant 17): token t is a decoding row of its own sequence; binding 6
// holds (base, pos) per token (its sequence's cache row of position 0, its position), kc and
// vc are bound from pool row 0 and the row written is base + pos; pos0 is 0. Otherwise binding
// 6 is bound but unused.
// Dispatch: (ceil((n_head * rope_dim / 2 + 2 * n_head_kv * head_dim) / WG), n_tokens, 1).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_SEQ_TABLE) const uint SEQ_TABLE = 0;

layout(std430, set = 0, binding = 0) buffer Qb { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer Kb { float k[]; };
layout(std430, set = 0, binding = 2) readonly buffer Vb { float v[]; };
layout(std430, set = 0, binding = 3) writeonly buffer KC { float kc[]; };
layout(std430, set = 0, binding = 4) writeonly buffer VC { float vc[]; };
layout(std430, set = 0, binding = 5) readonly buffer Table { float table[]; };
layout(std430, set = 0, binding = 6) readonly buffer Seqs { uint seqs[]; };

layout(push_constant) uniform Push {
  uint n_tokens;
  uint n_head;
  uint n_head_kv;
  uint head_dim;
  uint rope_dim;
  uint pos0;
  uint tab_r0;
  uint tab_rows;
} pc;

void main() {
  uint t = gl_WorkGroupID.y;
  uint idx = gl_GlobalInvocationID.x;
  uint half_dim = pc.rope_dim / 2;
  uint q_pairs = pc.n_head * half_dim;
  uint kv = pc.n_head_kv * pc.head_dim;
  if (t >= pc.n_tokens || idx >= q_pairs + 2 * kv) return;
  uint pos = SEQ_TABLE != 0 ? seqs[2 * t + 1] : pc.pos0 + t;
  uint crow = SEQ_TABLE != 0 ? seqs[2 * t] + pos : t;  // the cache row written, as bound
  uint row = (pos - pc.tab_r0) * pc.rope_dim;
  if (idx < q_pairs) {  // a pair of q, as rope.comp
    uint h = idx / half_dim;
    uint i = idx % half_dim;
    float c = table[row + i];
    float s = table[row + half_dim + i];
    uint base = (t * pc.n_head + h) * pc.head_dim;
    float a = q[base + i];
    float b = q[base + i + half_dim];
    precise float ac = a * c, bs = b * s, bc = b * c, as_ = a * s;
    q[base + i] = ac - bs;
    q[base + i + half_dim] = bc + as_;
    return;
  }
  uint e = idx - q_pairs;
  if (e >= kv) {  // v is copied
    e -= kv;
    vc[crow * kv + e] = v[t * kv + e];
    return;
  }
  // One element of k: the first or second half of its pair, or beyond rope_dim, a copy.
  uint h = e / pc.head_dim;
  uint j = e % pc.head_dim;
  uint base = t * kv + h * pc.head_dim;
  if (j >= pc.rope_dim) {
    kc[crow * kv + e] = k[t * kv + e];
    return;
  }
  uint i = j < half_dim ? j : j - half_dim;
  float c = table[row + i];
  float s = table[row + half_dim + i];
  float a = k[base + i];
  float b = k[base + i + half_dim];
  precise float ac = a * c, bs = b * s, bc = b * c, as_ = a * s;
  kc[crow * kv + e] = j < half_dim ? ac - bs : bc + as_;
}
