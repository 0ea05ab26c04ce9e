// Reference CPU versions of the ops of a BitNet block (DESIGN section 1), by family, forward
// beside backward; the heavy matrix products live in kernels.h. Each backward takes what its
// forward saved (inputs, rstd, ...) and recomputes the rest. Implemented in the family's file
// (norm.cpp, rope.cpp, activation.cpp, attention.cpp, loss.cpp, linear.cpp), which also holds
// the CpuBackend ops that run them.
//
// Conventions (llm.c's):
// - Forwards take inputs first, outputs last. Backwards take gradients first (prefixed d,
//   optional ones last), then the inputs of the forward.
// - Every backward ADDS into its gradient outputs: callers zero them once per step, and a
//   tensor used twice (the input of q, k and v, a residual) collects both parts. Exceptions,
//   named at the function: rope_backward rotates in place, and cross_entropy_backward
//   overwrites (so that dlogits may be the logits buffer itself).
// - Accumulation is f32 except where a comment says double (per-row statistics).
// - Results are deterministic: a range-split function computes every output element in the
//   same order whatever the split.
#pragma once

#include <cstdint>

#include "core/activation.h"
#include "core/weights.h"

namespace trit::engine {

// ---- norm ----

// y = x / sqrt(mean(x^2) + eps) * g, per row of n; rstd (n_rows) saved for the backward pass
// when not null. The squares summed in double, element i into the sum i % 4, in order, then
// (s0 + s1) + (s2 + s3).   x, y: (n_rows, n)
void rms_norm_forward(const float* x, const float* g, int64_t n_rows, int64_t n, float eps,
                      float* y, float* rstd = nullptr);

// Backward of y = x * rstd * g (rms_norm_forward; rstd saved by it):
//   dx += rstd * g * dy - x * rstd^3 / n * sum_i(dy_i * g_i * x_i)   (the sum in double, as
//   rms_norm_forward's)
//   dg += dy * x * rstd, summed over rows (only when dg is not null; g is frozen in trit)
//   dx, dy, x: (n_rows, n)   g, dg: (n)   rstd: (n_rows)
// dx must not alias dy or x. Rows may be split across threads, each with its own dg.
void rms_norm_backward(float* dx, const float* dy, const float* x, const float* g,
                       const float* rstd, int64_t n_rows, int64_t n, float* dg = nullptr);

// ---- rope ----

// NeoX (rotate-half) rotary embedding in place on (n_tokens, n_heads, head_dim), rotating the
// first rope_dim dimensions of each head as pairs (i, i + rope_dim / 2) by pos[t] * theta_i,
// theta_i = base^(-2i / rope_dim).
void rope_forward(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
                  const int32_t* pos, float base);

// Backward of rope_forward: rotates the gradient x (n_tokens, n_heads, head_dim) in place by
// the negative angles (the transpose of each 2x2 rotation). Same arguments as rope_forward.
void rope_backward(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
                   const int32_t* pos, float base);

// ---- activation ----

// out = act(gate) * up, elementwise over n.   act: relu2 (max(x, 0)^2) or silu (x * sigmoid(x))
void gated_act_forward(const float* gate, const float* up, int64_t n, Activation act, float* out);

// Backward of out = act(gate) * up:
//   dgate += act'(gate) * up * dout     relu2: act' = 2 max(gate, 0)
//   dup   += act(gate) * dout           silu:  act' = s (1 + gate (1 - s)), s = sigmoid(gate)
//   all buffers (n)
void gated_act_backward(float* dgate, float* dup, const float* dout, const float* gate,
                        const float* up, int64_t n, Activation act);

// ---- attention ----

// Causal attention with grouped KV heads for the query rows of n_tokens tokens at positions
// pos0 .. pos0 + n_tokens - 1, against keys/values of positions 0 .. pos0 + n_tokens - 1.
//   q:   (n_tokens, n_head, head_dim)
//   k,v: (n_kv_positions, n_head_kv, head_dim), row stride kv_stride floats per position
//   out: (n_tokens, n_head, head_dim)
//   scratch: attention_forward_scratch(pos0 + n_tokens, head_dim) floats
// Only query heads [h0, h1) are computed (for splitting across threads). k and v may hold KV
// heads from kv_head0 on only (column 0 is head kv_head0's first), for heads h0..h1 of them.
void attention_forward(const float* q, const float* k, const float* v, int64_t kv_stride,
                       int64_t n_tokens, int64_t pos0, int64_t n_head, int64_t n_head_kv,
                       int64_t head_dim, int64_t h0, int64_t h1, float* out, float* scratch,
                       int64_t kv_head0 = 0);
// The scratch attention_forward needs for rows of up to n_keys keys.
int64_t attention_forward_scratch(int64_t n_keys, int64_t head_dim);

// Backward of attention_forward for a whole sequence of n_tokens tokens at positions
// 0 .. n_tokens - 1 (training; no cache offset). The softmax of each query row is recomputed
// from q and k, so memory stays linear in n_tokens:
//   P = softmax(q k^T / sqrt(head_dim)) (causal), out = P v
//   dv += P^T dout,  dS = P * (dout v^T - rowsum(P * dout v^T)),
//   dq += dS k / sqrt(head_dim),  dk += dS^T q / sqrt(head_dim)
// dk and dv of a KV head collect the contributions of every query head of its group.
//   q, dq, dout: (n_tokens, n_head, head_dim)
//   k, v, dk, dv: (n_tokens, n_head_kv, head_dim), row stride kv_stride floats per position
//   scratch: attention_backward_scratch(n_tokens, head_dim) floats
// Only KV heads [kvh0, kvh1) are computed, with their query heads (kvh * group ..
// (kvh + 1) * group - 1, group = n_head / n_head_kv): split KV heads across threads and no two
// threads write the same element.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, int64_t kv_stride, int64_t n_tokens,
                        int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t kvh0,
                        int64_t kvh1, float* scratch);
int64_t attention_backward_scratch(int64_t n_tokens, int64_t head_dim);

// ---- loss: cross-entropy with a loss mask ----

// Token t counts with weight mask[t] (0 or 1; nullptr: every token counts); tokens of weight
// 0 are skipped entirely, so their target may be anything (-100, say). Loss of this call:
//   sum_t mask[t] * (lse_t - logits[t, targets[t]]) / max(norm, 1)
// where norm is the number of counted tokens of the whole step (every sequence of the batch
// and every accumulation micro-batch), so that the step's loss and gradients are a mean over
// all its tokens: sum the returned values over the calls of a step.
//   logits: (n_tokens, n_vocab)   targets, mask: (n_tokens)
//   nll: (n_tokens) per-token -log p(target), 0 where skipped (optional)
//   lse: (n_tokens) per-token log-sum-exp of the logits, saved for the backward (optional)
// Stable (max subtracted); each row's sum of exponentials accumulates in double. Throws
// trit::Error when a counted token's target is outside [0, n_vocab). Tokens may be split
// across threads; sum the returned parts in a fixed order.
double cross_entropy_forward(const float* logits, const int32_t* targets, const float* mask,
                             int64_t n_tokens, int64_t n_vocab, float norm, float* nll = nullptr,
                             float* lse = nullptr);

// dlogits = mask[t] * (softmax(logits[t]) - onehot(targets[t])) / max(norm, 1).
// OVERWRITES dlogits (rows of skipped tokens become 0); dlogits may be the logits buffer
// itself. lse from cross_entropy_forward, or nullptr to recompute it.
//   dlogits, logits: (n_tokens, n_vocab)   targets, mask, lse: (n_tokens)
void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                            const float* mask, const float* lse, int64_t n_tokens, int64_t n_vocab,
                            float norm);

// ---- linear: the bitlinear with float activations, the LoRA branches ----

// y[t * n_out + r] = sum_j T[r, j] * d * x[t * n_in + j] for rows [r0, r1): the bitlinear with
// float activations (--act-quant none). Scalar.
void ternary_matmul_float(const TernaryMatrix& w, const float* x, int64_t n_tokens, float* y,
                          int64_t r0, int64_t r1);

// The dropout of the LoRA branches: xd = x * keep / (1 - p), keep drawn per element from
// (key, salt, index) by splitmix64, so masks are a pure function of them.
void lora_dropout(const float* x, int64_t n, float p, uint64_t key, uint64_t salt, float* xd);

// Run by gemm_f32_acc (kernels_backward.h): register-tiled, vectorised for the processor
// (active_cpu_level()), each output element summing its products in order, so a split across
// threads never changes the bits.

// y = x W^T for tokens [t0, t1):   x: (n_tokens, n_in)   w: (n_out, n_in)   y: (n_tokens, n_out)
// OVERWRITES those rows of y. Split tokens across threads (each call transposes W into
// per-thread scratch of n_in * n_out floats first).
void matmul_f32_forward(const float* x, const float* w, int64_t n_in, int64_t n_out, float* y,
                        int64_t t0, int64_t t1);

// dx += dy W for tokens [t0, t1):   dx: (n_tokens, n_in)   dy: (n_tokens, n_out)
// Split tokens across threads.
void matmul_f32_backward_dx(float* dx, const float* dy, const float* w, int64_t n_in, int64_t n_out,
                            int64_t t0, int64_t t1);

// dW += dy^T x for rows [r0, r1) of W:   dw: (n_out, n_in)   dy: (n_tokens, n_out)
// x: (n_tokens, n_in). Split rows of W across threads.
void matmul_f32_backward_dw(float* dw, const float* dy, const float* x, int64_t n_tokens,
                            int64_t n_in, int64_t n_out, int64_t r0, int64_t r1);

// Both of the above over everything, one thread; dx or dw may be nullptr to skip it.
void matmul_f32_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                         int64_t n_tokens, int64_t n_in, int64_t n_out);

}  // namespace trit::engine
