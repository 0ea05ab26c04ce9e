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
// KV_F16 = 1 (spec constant 18): the caches hold halves, two a word (kc, vc as uint words);
// an invocation writes one word of k or v (two neighbouring elements, each rounded to nearest
// even as the CPU rounds it).
// Dispatch: (ceil((n_head * rope_dim / 2 + W * n_head_kv * head_dim) / WG), n_tokens, 1),
// W = 2 (f32 caches) or 1 (f16).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_SEQ_TABLE) const uint SEQ_TABLE = 0;
layout(constant_id = SPEC_KV_F16) const uint KV_F16 = 0;

layout(std430, set = 0, binding = 0) buffer Qb { float q[]; };
layout(std430, set = 0, binding = 1) readonly buffer Kb { float k[]; };
layout(std430, set = 0, binding = 2) readonly buffer Vb { float v[]; };
layout(std430, set = 0, binding = 3) writeonly buffer KC { uint kc[]; };  // f32 bits or 2 halves
layout(std430, set = 0, binding = 4) writeonly buffer VC { uint vc[]; };
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

// Element e of row t's k after rope (a copy beyond rope_dim); row: the position's table row.
float k_value(uint t, uint e, uint row) {
  uint half_dim = pc.rope_dim / 2;
  uint kv = pc.n_head_kv * pc.head_dim;
  uint h = e / pc.head_dim;
  uint j = e % pc.head_dim;
  uint base = t * kv + h * pc.head_dim;
  if (j >= pc.rope_dim) return k[t * kv + e];
  uint i = j < half_dim ? j : j - half_dim;
  float c = table[row + i];
  float s = table[row + half_dim + i];
  float a = k[base + i];
  float b = k[base + i + half_dim];
  precise float ac = a * c, bs = b * s, bc = b * c, as_ = a * s;
  precise float r = j < half_dim ? ac - bs : bc + as_;
  return r;
}

void main() {
  uint t = gl_WorkGroupID.y;
  uint idx = gl_GlobalInvocationID.x;
  uint half_dim = pc.rope_dim / 2;
  uint q_pairs = pc.n_head * half_dim;
  uint kv = pc.n_head_kv * pc.head_dim;
  uint kv_work = KV_F16 != 0 ? kv : 2 * kv;  // words of k and v written
  if (t >= pc.n_tokens || idx >= q_pairs + kv_work) return;
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
  if (KV_F16 != 0) {  // word e of k's row, then of v's (elements 2w, 2w + 1)
    uint words = kv / 2;
    if (e >= words) {
      uint w = e - words;
      vc[crow * words + w] = f16x2_bits(v[t * kv + 2 * w], v[t * kv + 2 * w + 1]);
    } else {
      kc[crow * words + e] = f16x2_bits(k_value(t, 2 * e, row), k_value(t, 2 * e + 1, row));
    }
    return;
  }
  if (e >= kv) {  // v is copied
    e -= kv;
    vc[crow * kv + e] = floatBitsToUint(v[t * kv + e]);
    return;
  }
  kc[crow * kv + e] = floatBitsToUint(k_value(t, e, row));
}
