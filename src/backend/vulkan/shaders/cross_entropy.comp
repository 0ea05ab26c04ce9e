#version 450
// cross_entropy: the loss of each token of a logits tile and, when write_grad != 0, its
// gradient written over the logits (CPU reference cross_entropy_forward / _backward in
// backend/cpu/ops.h), one token per workgroup:
//   mask[t] == 0:  nll[t] = 0 (and the row of dlogits = 0)
//   else: mx = max_i x_i, lse = mx + log(sum_i exp(x_i - mx)) (f32 tree; the CPU sums in
//         double), nll[t] = lse - x[target],
//         dlogits_i = (mask[t] * inv_norm) * (exp(x_i - lse) - [i == target])
// The host sums mask[t] * nll[t] in double (VulkanBackend::take_loss).
//
// Bindings (set 0):
//   0 logits  float[n_tokens * n_vocab]  (read; overwritten by the gradient when write_grad)
//   1 targets int  [n_tokens]            in [0, n_vocab) where mask != 0 (checked by the host)
//   2 mask    float[n_tokens]            (read)
//   3 nll     float[n_tokens]            (write)
// Push constants: CrossEntropyPush { n_tokens, n_vocab, inv_norm, write_grad }.
// Spec constants: 0 workgroup size (power of two).
// Dispatch: (n_tokens, 1, 1), one workgroup per token.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 256;

layout(std430, set = 0, binding = 0) buffer Logits { float logits[]; };
layout(std430, set = 0, binding = 1) readonly buffer Targets { int targets[]; };
layout(std430, set = 0, binding = 2) readonly buffer Mask { float mask[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Nll { float nll[]; };

layout(push_constant) uniform Push {
  uint n_tokens;
  uint n_vocab;
  float inv_norm;
  uint write_grad;
} pc;

shared float red[WG_SIZE];

void main() {
  uint t = gl_WorkGroupID.x;
  if (t >= pc.n_tokens) return;
  uint tid = gl_LocalInvocationID.x;
  uint base = t * pc.n_vocab;
  float m = mask[t];
  if (m == 0.0) {
    if (tid == 0) nll[t] = 0.0;
    if (pc.write_grad != 0u) {
      for (uint i = tid; i < pc.n_vocab; i += WG_SIZE) logits[base + i] = 0.0;
    }
    return;
  }
  uint target = uint(targets[t]);
  float mx = uintBitsToFloat(0xFF800000u);  // -inf
  for (uint i = tid; i < pc.n_vocab; i += WG_SIZE) mx = max(mx, logits[base + i]);
  red[tid] = mx;
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] = max(red[tid], red[tid + s]);
    barrier();
  }
  mx = red[0];
  barrier();
  float sum = 0.0;
  for (uint i = tid; i < pc.n_vocab; i += WG_SIZE) sum += exp(logits[base + i] - mx);
  red[tid] = sum;
  barrier();
  for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] += red[tid + s];
    barrier();
  }
  precise float lse = mx + log(red[0]);
  float xt = logits[base + target];
  barrier();  // every invocation has read x[target] before any overwrites it
  if (tid == 0) nll[t] = lse - xt;
  if (pc.write_grad == 0u) return;
  precise float w = m * pc.inv_norm;
  for (uint i = tid; i < pc.n_vocab; i += WG_SIZE) {
    precise float p = exp(logits[base + i] - lse);
    logits[base + i] = w * (i == target ? p - 1.0 : p);
  }
}
