// Reference CPU versions of the small ops of a BitNet block (DESIGN section 1). The heavy
// matrix products live in kernels.h; these are the rest, in plain loops over (tokens, dims).
#pragma once

#include <cstdint>

#include "model/hparams.h"

namespace trit {

// y = x / sqrt(mean(x^2) + eps) * g, per row of n; rstd (n_rows) saved for the backward pass
// when not null.   x, y: (n_rows, n)
void rms_norm_forward(const float* x, const float* g, int64_t n_rows, int64_t n, float eps,
                      float* y, float* rstd = nullptr);

// NeoX (rotate-half) rotary embedding in place on (n_tokens, n_heads, head_dim), rotating the
// first rope_dim dimensions of each head as pairs (i, i + rope_dim / 2) by pos[t] * theta_i,
// theta_i = base^(-2i / rope_dim).
void rope_forward(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
                  const int32_t* pos, float base);

// out = act(gate) * up, elementwise over n.   act: relu2 (max(x, 0)^2) or silu (x * sigmoid(x))
void gated_act_forward(const float* gate, const float* up, int64_t n, Activation act, float* out);

// Causal attention with grouped KV heads for the query rows of n_tokens tokens at positions
// pos0 .. pos0 + n_tokens - 1, against keys/values of positions 0 .. pos0 + n_tokens - 1.
//   q:   (n_tokens, n_head, head_dim)
//   k,v: (n_kv_positions, n_head_kv, head_dim), row stride kv_stride floats per position
//   out: (n_tokens, n_head, head_dim)
//   scratch: at least pos0 + n_tokens floats
// Only query heads [h0, h1) are computed (for splitting across threads).
void attention_forward(const float* q, const float* k, const float* v, int64_t kv_stride,
                       int64_t n_tokens, int64_t pos0, int64_t n_head, int64_t n_head_kv,
                       int64_t head_dim, int64_t h0, int64_t h1, float* out, float* scratch);

// Index of the largest value (first on ties).
int64_t argmax(const float* x, int64_t n);

// log(sum(exp(x))) computed stably.
double log_sum_exp(const float* x, int64_t n);

}  // namespace trit
