#version 450
// rope: NeoX (rotate-half) rotary embedding in place on x viewed as (n_tokens, n_heads,
// head_dim); token t of the tile is at position pos0 + t. For i < rope_dim / 2 the pair
// (a, b) = (x[i], x[i + rope_dim / 2]) of every head becomes
//   forward (inverse == 0):  (a * c - b * s, b * c + a * s)
//   inverse (inverse != 0):  (a * c + b * s, b * c - a * s)     (rope_backward)
// with c = cos(angle), s = sin(angle) read from a host-computed table, so the result equals
// the CPU's rope_forward / rope_backward bit for bit (products rounded one by one: `precise`).
// Dimensions past rope_dim are left as they are.
//
// Table: row p (position tab_r0 + p) = rope_dim / 2 cosines, then rope_dim / 2 sines (f32),
// cos/sin of float(pos) * inv_freq[i] exactly as rope_forward computes them. The table may be
// in pieces of positions: tokens whose position is outside [tab_r0, tab_r0 + tab_rows) are
// skipped, so the host dispatches each piece that overlaps [pos0, pos0 + n_tokens).
//
// Bindings (set 0):
//   0 x     float[n_tokens * n_heads * head_dim]   q or k of the tile (read/write)
//   1 table float[tab_rows * rope_dim]             angle table piece  (read)
// Push constants: RopePush { n_tokens, n_heads, head_dim, rope_dim, pos0, tab_r0, tab_rows,
//   inverse }.
// Spec constants: 0 workgroup size.
// Dispatch: (ceil(n_heads * rope_dim / 2 / WG), n_tokens, 1).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;

layout(std430, set = 0, binding = 0) buffer X { float x[]; };
layout(std430, set = 0, binding = 1) readonly buffer Table { float table[]; };

layout(push_constant) uniform Push {
  uint n_tokens;
  uint n_heads;
  uint head_dim;
  uint rope_dim;
  uint pos0;
  uint tab_r0;
  uint tab_rows;
  uint inverse;
} pc;

void main() {
  uint t = gl_WorkGroupID.y;
  uint half_dim = pc.rope_dim / 2;
  uint idx = gl_GlobalInvocationID.x;
  if (t >= pc.n_tokens || idx >= pc.n_heads * half_dim) return;
  uint pos = pc.pos0 + t;
  if (pos < pc.tab_r0 || pos - pc.tab_r0 >= pc.tab_rows) return;
  uint h = idx / half_dim;
  uint i = idx % half_dim;
  uint row = (pos - pc.tab_r0) * pc.rope_dim;
  float c = table[row + i];
  float s = table[row + half_dim + i];
  uint base = (t * pc.n_heads + h) * pc.head_dim;
  float a = x[base + i];
  float b = x[base + i + half_dim];
  precise float ac = a * c, bs = b * s, bc = b * c, as_ = a * s;
  if (pc.inverse == 0u) {
    x[base + i] = ac - bs;
    x[base + i + half_dim] = bc + as_;
  } else {
    x[base + i] = ac + bs;
    x[base + i + half_dim] = bc - as_;
  }
}
