// The merge of attention.comp's chunk partials for one query and head, shared by
// attention_combine.comp and by attention.comp's decoding workgroups that merge in place
// (ATTN_FUSE_COMBINE): both compile the same operations (`precise`: no fused multiply-adds), so
// a query merged either way gets the same bits.
//
// Over chunks c = 0 .. last, records of rs = head_dim + 2 floats from `base`:
//   M = max_c m_c,  L = sum_c l_c * exp(m_c - M),
//   out[out0 + d] = (sum_c acc_c[d] * exp(m_c - M)) / L   (threads of the workgroup over d).
//
// The including shader defines WG_SIZE and the arrays the macros MERGE_IN (the partials) and
// MERGE_OUT (the output) name.
#ifndef TRIT_ATTENTION_MERGE_GLSL
#define TRIT_ATTENTION_MERGE_GLSL

void merge_partials(uint base, uint last, uint hd, uint out0) {
  uint rs = hd + 2;
  float mx = MERGE_IN[base];
  for (uint c = 1; c <= last; ++c) mx = max(mx, MERGE_IN[base + c * rs]);
  precise float l = 0.0;
  for (uint c = 0; c <= last; ++c) {
    precise float w = MERGE_IN[base + c * rs + 1] * exp(MERGE_IN[base + c * rs] - mx);
    l = l + w;
  }
  for (uint d = gl_LocalInvocationID.x; d < hd; d += WG_SIZE) {
    precise float acc = 0.0;
    for (uint c = 0; c <= last; ++c) {
      precise float w = MERGE_IN[base + c * rs + 2 + d] * exp(MERGE_IN[base + c * rs] - mx);
      acc = acc + w;
    }
    MERGE_OUT[out0 + d] = acc / l;
  }
}

#endif  // TRIT_ATTENTION_MERGE_GLSL
