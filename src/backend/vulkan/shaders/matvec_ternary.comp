#version 450
// matvec_ternary: the decoding bitlinear, a few tokens (n_tokens <= MV_TOKENS; one with NORM)
// against up to four T2 weight pieces that share their int8 activations (q, k and v of a block; gate and up), each subgroup taking one
// output row at a time for every token (each code word is read once for all of them) and adding
// its lanes' exact int32 partial sums with subgroupAdd (an integer sum: any order gives the same
// value). Per token t and row (uniform scale d only):
//   y_s[t * y_stride_s + r0_s + r] = div_rn(d_s * float(isum), qscale[t]) * out_scale_s
// the expression matmul_ternary.comp's matvec path stores, so the results are its bits (and
// the CPU's). Gated (gated != 0; segments 0 and 1 are the gate and up pieces, of equal rows and
// r0): each row computes both sums, writes both outputs to y_0 and y_1 and
// y_2[t * y_stride_0 + r0_0 + r] = gated_value(ACTIVATION, gate, up), gated_act.comp's value.
//
// Residual (add != 0, not gated): xo[t * y_stride_0 + r0_s + r] += y, add.comp's sum.
// Normalising (-DNORM=1, modules matvec_norm_ternary[_dot]): the input is an f32 row nx that
// every workgroup normalises (rms_norm with weight ng and eps, norm_row.glsl: rms_norm.comp's
// bits) and quantises into shared memory (rms_norm_quant's bits) before its rows; workgroup 0
// also writes the normalised row to nh. nh must not be nx: other workgroups still read nx.
//
// Bindings (set 0):
//   0..3 w_s    uvec4[rows_s * n_in / 64]  T2 codes of segment s's weight piece     (read)
//               (-DTQ1=1: uint[rows_s * n_in / 256 * 13], TQ1_0 rows kept in place)
//   4    q      uvec4[n_tokens * n_in / 16] the tokens' int8 activations, 16 a uvec4, a token's
//                                          row after another (read; unused with NORM)
//   5    qscale float[n_tokens]            their activation scales         (read; as q)
//   6..9 y_s    float[]                    segment s's output row (columns r0_s..)  (write)
//   10   xo     float[]                    the residual row added to when add != 0  (read/write)
//   NORM: 11 nx float[n_in] (read), 12 ng float[n_in] (read), 13 nh float[n_in] (write)
// Unused segments' bindings (and xo without add) may repeat any buffer.
// Push constants: MatvecTernaryPush { n_in, segments, gated, add, eps, n_tokens, pad[2], rows[4],
//   r0[4], group0[4], d[4], out_scale[4], y_stride[4] }; n_in a multiple of 256, d_s != 0;
//   NORM: n_in <= 32 * WG and n_tokens 1.
// Spec constants: 0 workgroup size (NORM: rms_norm_spec's, 256), 2 ROWS output rows per
//   workgroup (per segment; a segment starts a workgroup), 3 MV_TOKENS the most tokens (sizes
//   the accumulators; 1 with NORM), 9 activation (gated), 13 NORM_VEC (NORM: rms_norm_spec's
//   units an invocation), 23 MV_PAIR (1: not gated, not NORM, a subgroup's rows two at a time,
//   sharing each step's activation loads).
// Needs subgroup arithmetic (Vulkan 1.1 subgroup operations basic + arithmetic in compute).
// Dispatch: group0[segments - 1] + ceil(rows_last / ROWS) workgroups, split over x and z when
//   more than maxComputeWorkGroupCount[0]. group0[0] = 0, group0[s + 1] = group0[s] +
//   ceil(rows_s / ROWS).
// Variants: plain, and -DINT_DOT=1 (OpSDotKHR, needs shaderIntegerDotProduct); each also with
// -DTQ1=1 (the same sums: a weight's trit is the same from either layout).
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_MV_ROWS) const uint ROWS = 4;
layout(constant_id = SPEC_MV_TOKENS) const uint MV_TOKENS = 1;
layout(constant_id = SPEC_ACTIVATION) const uint ACTIVATION = 0;
layout(constant_id = SPEC_MV_PAIR) const uint MV_PAIR = 0;

#ifndef TQ1
#define TQ1 0
#endif
#if TQ1
layout(std430, set = 0, binding = 0) readonly buffer W0 { uint w0[]; };
layout(std430, set = 0, binding = 1) readonly buffer W1 { uint w1[]; };
layout(std430, set = 0, binding = 2) readonly buffer W2 { uint w2[]; };
layout(std430, set = 0, binding = 3) readonly buffer W3 { uint w3[]; };
#else
layout(std430, set = 0, binding = 0) readonly buffer W0 { uvec4 w0[]; };
layout(std430, set = 0, binding = 1) readonly buffer W1 { uvec4 w1[]; };
layout(std430, set = 0, binding = 2) readonly buffer W2 { uvec4 w2[]; };
layout(std430, set = 0, binding = 3) readonly buffer W3 { uvec4 w3[]; };
#endif
layout(std430, set = 0, binding = 4) readonly buffer Q { uvec4 q[]; };
layout(std430, set = 0, binding = 5) readonly buffer QScale { float qscale[]; };
layout(std430, set = 0, binding = 6) writeonly buffer Y0 { float y0[]; };
layout(std430, set = 0, binding = 7) writeonly buffer Y1 { float y1[]; };
layout(std430, set = 0, binding = 8) writeonly buffer Y2 { float y2[]; };
layout(std430, set = 0, binding = 9) writeonly buffer Y3 { float y3[]; };
layout(std430, set = 0, binding = 10) buffer XO { float xo[]; };
#ifndef NORM
#define NORM 0
#endif
#if NORM
layout(std430, set = 0, binding = 11) readonly buffer NX { float nx[]; };
layout(std430, set = 0, binding = 12) readonly buffer NG { float ng[]; };
layout(std430, set = 0, binding = 13) writeonly buffer NH { float nh[]; };
#endif

layout(push_constant) uniform Push {
  uint n_in;
  uint segments;
  uint gated;
  uint add;
  float eps;
  uint n_tokens;
  uint pad1;
  uint pad2;
  uvec4 rows;
  uvec4 r0;
  uvec4 group0;
  vec4 d;
  vec4 out_scale;
  uvec4 y_stride;
} pc;

// s is uniform over the workgroup, so these branches are too.
#if TQ1
uint code_word(uint s, uint i) {
  return s == 0u ? w0[i] : s == 1u ? w1[i] : s == 2u ? w2[i] : w3[i];
}
#else
uvec4 code_words(uint s, uint i) {
  return s == 0u ? w0[i] : s == 1u ? w1[i] : s == 2u ? w2[i] : w3[i];
}
#endif

void store(uint s, uint t, uint row, float v) {
  uint i = t * pc.y_stride[s] + pc.r0[s] + row;
  if (s == 0u) {
    y0[i] = v;
  } else if (s == 1u) {
    y1[i] = v;
  } else if (s == 2u) {
    y2[i] = v;
  } else {
    y3[i] = v;
  }
}

#if NORM
layout(constant_id = SPEC_NORM_VEC) const uint NORM_VEC = 8;
#define NORM_X nx
#define NORM_G ng
#include "norm_row.glsl"
shared uint qsh[NORM_E / 4 * WG_SIZE];  // the quantised row, 4 values a word
uvec4 qv(uint t, uint i) {
  return uvec4(qsh[4 * i], qsh[4 * i + 1], qsh[4 * i + 2], qsh[4 * i + 3]);
}
#else
uvec4 qv(uint t, uint i) {
  return q[t * (pc.n_in / 16) + i];
}
#endif

// The 64 weights of a lane's step as 16 packed int8x4 words of trits (4 weights each, in order):
// decoded once, then taken against every token's activations.
// T2: the 4 code words of the step.
void t2_trits64(uvec4 words, out uint tr[16]) {
  for (uint u = 0u; u < 4u; ++u) {
    for (int g = 0; g < 4; ++g) tr[4u * u + uint(g)] = trits4(words[u], g);
  }
}

// The 64 weights' trits against token t's activations 64k..64k+63.
int dot64_trits(uint tr[16], uint k, uint t) {
  int sum = 0;
  for (uint u = 0u; u < 4u; ++u) {
    uvec4 a = qv(t, 4u * k + u);
    sum += dot4(tr[4u * u], a.x) + dot4(tr[4u * u + 1u], a.y) + dot4(tr[4u * u + 2u], a.z) +
           dot4(tr[4u * u + 3u], a.w);
  }
  return sum;
}

#if TQ1
// Where part j of a block (weights 64j..64j+63) comes from: its u-th 16 weights are the digit
// of multiplier mul[u] of words off[u] + e (e = 0..3); with tail (j = 3) the last 16 are word
// 12's digits 0..3.
struct Tq1Part {
  uvec4 off;
  uvec4 mul;
  bool tail;
};

Tq1Part tq1_part(uint j) {
  Tq1Part p;
  for (uint u = 0u; u < 4u; ++u) {
    uvec2 at = tq1_source(4u * j + u, 0u);
    p.off[u] = at.x;
    p.mul[u] = tq1_pow3(at.y);
  }
  p.tail = j == 3u;
  return p;
}

// The trits of part `part` of the TQ1_0 block of segment s at word `block`, as 16 packed int8x4
// words (4 weights each, in order).
void tq1_trits64(uint s, uint block, Tq1Part part, out uint tr[16]) {
  for (uint u = 0u; u < 3u; ++u) {
    for (uint e = 0u; e < 4u; ++e) {
      tr[4u * u + e] =
          codes4_trits(tq1_codes4_pow(code_word(s, block + part.off[u] + e), part.mul[u]));
    }
  }
  if (part.tail) {
    uint x = code_word(s, block + 12u);
    for (uint e = 0u; e < 4u; ++e) tr[12u + e] = codes4_trits(tq1_codes4_pow(x, tq1_pow3(e)));
  } else {
    for (uint e = 0u; e < 4u; ++e) {
      tr[12u + e] =
          codes4_trits(tq1_codes4_pow(code_word(s, block + part.off[3] + e), part.mul[3]));
    }
  }
}

#endif

// The output of segment s for the integer sum isum (matmul_ternary's store()).
// Every step is `precise`: the value must not be reassociated with what uses it (gated_value).
float output_value(uint s, int isum, float qs) {
  precise float p = pc.d[s] * float(isum);
  precise float v = div_rn(p, qs) * pc.out_scale[s];
  return v;
}

// Sums a subgroup's partial sums of one row for each token and stores them (with the residual
// add). qn: the normalised row's scale (NORM); otherwise each token's qscale.
void finish_row(uint s, uint row, uint nt, int acc[MV_TOKENS], float qn) {
  for (uint t = 0; t < nt; ++t) {
    int isum = subgroupAdd(acc[t]);
    if (subgroupElect()) {
      float v = output_value(s, isum, NORM != 0 ? qn : qscale[t]);
      store(s, t, row, v);
      if (pc.add != 0u) {
        uint o = t * pc.y_stride[0] + pc.r0[s] + row;
        precise float sum = xo[o] + v;
        xo[o] = sum;
      }
    }
  }
}

void main() {
  uint group = group_x_z();
  uint s = 0u;
  for (uint i = 1u; i < pc.segments; ++i) {
    if (group >= pc.group0[i]) s = i;
  }
  uint row_base = (group - pc.group0[s]) * ROWS;
  if (s >= pc.segments || row_base >= pc.rows[s]) return;
  uint n_vec = pc.n_in / 64;  // groups of 64 weights a row (T2: uvec4s of codes)
  uint lane = gl_SubgroupInvocationID;
#if NORM
  float qs_norm;
  {
    uint tid = gl_LocalInvocationID.x;
    uint units = pc.n_in / 4;
    float v[NORM_E];
    float gv[NORM_E];
    norm_load(0, pc.n_in, v, gv);
    float r = norm_rstd(v, pc.n_in, pc.eps);
    float m = wg_max(norm_apply(v, gv, r));
    qs_norm = div_rn(127.0, m > 1e-5 ? m : 1e-5);
    for (uint k = 0; k < NORM_MAXU; ++k) {
      uint u = tid + k * WG_SIZE;
      if (u < units) {
        qsh[u] = pack4_i8(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3], qs_norm);
        if (group == 0u) {
          for (uint j = 0; j < 4; ++j) nh[4 * u + j] = v[4 * k + j];
        }
      }
    }
    barrier();
  }
#define token_scale(t) qs_norm
#else
#define token_scale(t) qscale[t]
#endif
  const uint nt = NORM != 0 ? 1u : pc.n_tokens;
#if TQ1
  // A lane's k advances by the subgroup size: its part of a block (k % 4) stays the same when
  // that is a multiple of 4, so the part's words and digits are worked out once.
  const bool same_part = (gl_SubgroupSize & 3u) == 0u;
  const Tq1Part lane_part = tq1_part(lane & 3u);
#define TQ1_PART(k) (same_part ? lane_part : tq1_part((k)&3u))
#define ROW_BASE(row) ((row) * (pc.n_in / 256) * TQ1_BLOCK_WORDS)
#define ROW_TRITS(s, b, k, tr) tq1_trits64(s, (b) + ((k) >> 2) * TQ1_BLOCK_WORDS, TQ1_PART(k), tr)
#else
#define ROW_BASE(row) ((row) * n_vec)
#define ROW_TRITS(s, b, k, tr) t2_trits64(code_words(s, (b) + (k)), tr)
#endif
  uint rr = gl_SubgroupID;
#if !NORM
  // MV_PAIR: a subgroup's rows two at a time, each step's activations loaded once for both
  // (many tokens: their loads, not the weights', are most of a step's reads).
  if (MV_PAIR != 0u && pc.gated == 0u) {
    for (; rr + gl_NumSubgroups < ROWS; rr += 2u * gl_NumSubgroups) {
      uint row = row_base + rr, row2 = row + gl_NumSubgroups;
      if (row2 >= pc.rows[s]) break;  // the last row, if any, below
      uint base = ROW_BASE(row), base2 = ROW_BASE(row2);
      int acc[MV_TOKENS], acc2[MV_TOKENS];
      for (uint t = 0; t < MV_TOKENS; ++t) {
        acc[t] = 0;
        acc2[t] = 0;
      }
      for (uint k = lane; k < n_vec; k += gl_SubgroupSize) {
        uint tr[16], tr2[16];
        ROW_TRITS(s, base, k, tr);
        ROW_TRITS(s, base2, k, tr2);
        for (uint t = 0; t < MV_TOKENS; ++t) {
          if (t < nt) {
            for (uint u = 0u; u < 4u; ++u) {
              uvec4 a = qv(t, 4u * k + u);
              acc[t] += dot4(tr[4u * u], a.x) + dot4(tr[4u * u + 1u], a.y) +
                        dot4(tr[4u * u + 2u], a.z) + dot4(tr[4u * u + 3u], a.w);
              acc2[t] += dot4(tr2[4u * u], a.x) + dot4(tr2[4u * u + 1u], a.y) +
                         dot4(tr2[4u * u + 2u], a.z) + dot4(tr2[4u * u + 3u], a.w);
            }
          }
        }
      }
      finish_row(s, row, nt, acc, 0.0);
      finish_row(s, row2, nt, acc2, 0.0);
    }
  }
#endif
  for (; rr < ROWS; rr += gl_NumSubgroups) {
    uint row = row_base + rr;
    if (row >= pc.rows[s]) break;
    uint base = ROW_BASE(row);
    if (pc.gated == 0u) {
      int acc[MV_TOKENS];
      for (uint t = 0; t < MV_TOKENS; ++t) acc[t] = 0;
      for (uint k = lane; k < n_vec; k += gl_SubgroupSize) {
        uint tr[16];
        ROW_TRITS(s, base, k, tr);
        for (uint t = 0; t < MV_TOKENS; ++t) {
          if (t < nt) acc[t] += dot64_trits(tr, k, t);
        }
      }
      finish_row(s, row, nt, acc, token_scale(0));
    } else {
      int acc_g[MV_TOKENS], acc_u[MV_TOKENS];
      for (uint t = 0; t < MV_TOKENS; ++t) {
        acc_g[t] = 0;
        acc_u[t] = 0;
      }
      for (uint k = lane; k < n_vec; k += gl_SubgroupSize) {
#if TQ1
        uint tg[16], tu[16];
        const Tq1Part part = TQ1_PART(k);
        tq1_trits64(0u, base + (k >> 2) * TQ1_BLOCK_WORDS, part, tg);
        tq1_trits64(1u, base + (k >> 2) * TQ1_BLOCK_WORDS, part, tu);
        for (uint t = 0; t < MV_TOKENS; ++t) {
          if (t < nt) {
            acc_g[t] += dot64_trits(tg, k, t);
            acc_u[t] += dot64_trits(tu, k, t);
          }
        }
#else
        uint tg[16], tu[16];
        t2_trits64(w0[base + k], tg);
        t2_trits64(w1[base + k], tu);
        for (uint t = 0; t < MV_TOKENS; ++t) {
          if (t < nt) {
            acc_g[t] += dot64_trits(tg, k, t);
            acc_u[t] += dot64_trits(tu, k, t);
          }
        }
#endif
      }
      for (uint t = 0; t < nt; ++t) {
        int sum_g = subgroupAdd(acc_g[t]);
        int sum_u = subgroupAdd(acc_u[t]);
        if (subgroupElect()) {
          float qs = token_scale(t);
          float g = output_value(0u, sum_g, qs);
          float u = output_value(1u, sum_u, qs);
          uint o = t * pc.y_stride[0] + pc.r0[0] + row;
          y0[o] = g;
          y1[o] = u;
          y2[o] = gated_value(ACTIVATION, g, u);
        }
      }
    }
  }
}
