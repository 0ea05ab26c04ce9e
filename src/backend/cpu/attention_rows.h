// Attention's two inner loops over a KV head, with keys (scores) or head dimensions (the
// weighted sum of values) as the vector lanes. Every value is computed with the reference's
// operations in the reference's order at every level (products rounded on their own, sums in
// order, -ffp-contract=off): the scalar loops' bits, only more of them at once.
#pragma once

#include <cstdint>

#include "backend/cpu/kernels.h"

namespace trit::engine {

constexpr int64_t kAttnKeyTile = 16;  // keys transposed at a time (the score lanes)
constexpr int64_t kAttnRows = 32;     // query rows that share one transposed tile

// Scratch floats attention_rows_scores needs for its transposed tile.
constexpr int64_t attention_tile_floats(int64_t head_dim) {
  return kAttnKeyTile * head_dim;
}

// Scores of n_rows (<= kAttnRows) query rows against one KV head: for row i (head_dim values at
// q[i]) and keys j in [0, n_keys[i]) (key j's head_dim values at k + j * stride),
//   s[i * ld + j] = (sum_d q_i[d] * k_j[d]) * scale,
// summed over d in order from 0 with every product rounded: attention_score's value. The keys
// are read kAttnKeyTile at a time into `tile` (attention_tile_floats), transposed so that every
// row reads them as one vector a dimension.
void attention_rows_scores(const float* const* q, const int64_t* n_keys, int64_t n_rows,
                           const float* k, int64_t stride, int64_t head_dim, float scale, float* s,
                           int64_t ld, float* tile, CpuLevel level = active_cpu_level());

// The attention outputs of n_rows query rows that share keys [0, n) (the heads of a GQA group
// at one token): for row i (weights p_i at p + i * ldp),
//   out[i][d] = sum_j (p_i[j] * inv[i]) * v_j[d] over j in order (v_j at v + j * stride),
// out[i] overwritten. Each value of v is read once for every row.
void attention_weighted_values(float* const* out, const float* p, int64_t ldp, const float* inv,
                               int64_t n_rows, const float* v, int64_t stride, int64_t n,
                               int64_t head_dim, CpuLevel level = active_cpu_level());

// dp[j] = dout . v_j for j in [0, n) (v_j at v + j * stride), each summed in 16 lanes (lane l
// takes the products of dimensions l, l + 16, ... in order), then the lanes added pairwise
// (l + 8 into l, then l + 4, l + 2, l + 1): the attention backward's order for dP.
void attention_value_dots(float* dp, const float* dout, const float* v, int64_t stride, int64_t n,
                          int64_t head_dim, CpuLevel level = active_cpu_level());

// One query row's part of the backward pass over keys [0, n), as the reference takes it:
//   for each j: dv_j += p[j] * dout;  p[j] = p[j] * (dp[j] - big_d) * scale  (dS, in p)
//   then for each j: dq += p[j] * k_j;  dk_j += p[j] * q
// (k, dk, dv rows at j * stride; q, dout, dq one row of head_dim).
void attention_backward_row(float* p, const float* dp, float big_d, float scale, int64_t n,
                            const float* q, const float* dout, float* dq, const float* k, float* dk,
                            float* dv, int64_t stride, int64_t head_dim,
                            CpuLevel level = active_cpu_level());

}  // namespace trit::engine
