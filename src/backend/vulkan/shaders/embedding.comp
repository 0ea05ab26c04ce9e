#version 450
// embedding: out[t, :] = row tokens[t] of the embedding table, for the tokens whose id falls in
// the table piece given (rows [r0, r0 + rows)); other tokens' rows are left untouched, so the
// host dispatches every piece of the table once per token tile (or only the pieces the tile's
// ids fall in). Ids must be checked on the host: an id outside [0, vocab) is written by no
// piece. Values as the CPU's float_matrix_row (exact conversions; q8_0: d * float(q)).
//
// Bindings (set 0):
//   0 wt     uint [piece bytes / 4]     table piece, rows of n_embd values (float_weights.glsl)
//   1 tokens int  [n_tokens]            token ids of the tile                     (read)
//   2 out    float[n_tokens * n_embd]   embeddings of the tile                     (write)
// Push constants: EmbeddingPush { n_embd, rows, r0, n_tokens }.
// Spec constants: 0 workgroup size, 8 weight type (0 f32, 1 f16, 2 bf16, 3 q8_0).
// Dispatch: (ceil(n_embd / WG), n_tokens, 1); n_tokens <= maxComputeWorkGroupCount[1].
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_WEIGHT_TYPE) const uint WEIGHT_TYPE = WTYPE_F32;

layout(std430, set = 0, binding = 0) readonly buffer Wt { uint wt[]; };
layout(std430, set = 0, binding = 1) readonly buffer Tokens { int tokens[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float out_[]; };

layout(push_constant) uniform Push {
  uint n_embd;
  uint rows;
  uint r0;
  uint n_tokens;
} pc;

#include "float_weights.glsl"

void main() {
  uint t = gl_WorkGroupID.y;
  uint e = gl_GlobalInvocationID.x;
  if (t >= pc.n_tokens || e >= pc.n_embd) return;
  int id = tokens[t];
  if (id < int(pc.r0) || id >= int(pc.r0 + pc.rows)) return;
  uint r = uint(id) - pc.r0;
  out_[t * pc.n_embd + e] = load1(r * row_bytes(pc.n_embd), e);
}
