#version 450
// quantize_acts: per-token int8 quantisation of the activations entering a bitlinear
// (DESIGN section 2; CPU reference quantize_row_scalar in backend/cpu/kernels.cpp):
//   m = max_j |x[t, j]| (NaN never raises it),  s = 127 / max(m, 1e-5)  (correctly rounded),
//   q[t, j] = clamp(roundEven(x[t, j] * s), -128, 127)  (NaN -> -128),  qscale[t] = s.
// Bit-identical to the CPU: the maximum is exact in any order and div_rn rounds like IEEE.
//
// Bindings (set 0):
//   0 x      float[n_tokens * n]        f32 activations of one token tile       (read)
//   1 q      uint [n_tokens * q_words]  int8 q, element 4w + k in byte k of word w; words
//                                       n / 4 .. q_words - 1 of a row zero (padded rows) (write)
//   2 qscale float[n_tokens]            s per token                              (write)
// Push constants: QuantizeActsPush { n_tokens, n, q_words }; n a multiple of 4.
// Spec constants: 0 workgroup size (power of two).
// Dispatch: (n_tokens, 1, 1), one workgroup per token; n_tokens <= maxComputeWorkGroupCount[0].
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Q { uint q[]; };
layout(std430, set = 0, binding = 2) writeonly buffer QScale { float qscale[]; };

layout(push_constant) uniform Push {
  uint n_tokens;
  uint n;
  uint q_words;
} pc;

shared float red[WG_SIZE];

void main() {
  uint t = gl_WorkGroupID.x;
  if (t >= pc.n_tokens) return;
  uint tid = gl_LocalInvocationID.x;
  uint base = t * pc.n;

  float m = 0.0;
  for (uint j = tid; j < pc.n; j += WG_SIZE) {
    float a = abs(x[base + j]);
    m = a > m ? a : m;
  }
  red[tid] = m;
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) {
      float o = red[tid + s];
      red[tid] = o > red[tid] ? o : red[tid];
    }
    barrier();
  }
  m = red[0];
  float sc = div_rn(127.0, m > 1e-5 ? m : 1e-5);
  if (tid == 0) qscale[t] = sc;

  uint words = pc.n / 4;
  for (uint w = tid; w < pc.q_words; w += WG_SIZE) {
    uint e = base + 4 * w;
    q[t * pc.q_words + w] = w < words ? pack4_i8(x[e], x[e + 1], x[e + 2], x[e + 3], sc) : 0u;
  }
}
