// CPU kernels of the backward pass: the transposed ternary product that carries gradients
// through the frozen bitlinear layers (DESIGN sections 1 and 2), and the f32 product under the
// LoRA matmuls of ops.h. Both live in ternary_transposed.cpp and share one
// register-tile loop.
#pragma once

#include <cstdint>

#include "backend/cpu/kernels.h"

namespace trit::engine {

// The bitlinear forward is y = (T . q(x)) * d / s_x (times LinearWeight::out_scale, passed here
// as `scale`). The straight-through estimator treats q(x) / s_x as the identity, so
//   dx[t, c] += scale * sum_r dy[t * dy_stride + r] * d_{r,c} * T[r, c]
// for columns c in [c0, c1) of dx and every token t, where d_{r,c} is the scale of the block
// holding weight (r, c) (uniform_scale when set, as ternary_matmul uses it; for I2_S the
// tensor's scale). The sum over r runs in row order from 0 in f32, and is then scaled and ADDED
// to dx, so dx may already hold other gradients of the same input (q, k, v, LoRA).
//   dy: (n_tokens, dy_stride), the first w.n_out values of each row used
//   dx: (n_tokens, w.n_in)
// Split columns across threads (ranges aligned to 256 work best; any range is correct): no two
// calls with disjoint column ranges write the same element. Both versions give the same bits,
// whatever the level and the split (the build's -ffp-contract=off keeps a*b+c unfused).

// The definition: one column of one token at a time. For tests.
void ternary_matmul_transposed_ref(const TernaryMatrix& w, const float* dy, int64_t dy_stride,
                                   int64_t n_tokens, float scale, float* dx, int64_t c0,
                                   int64_t c1);

// Blocked version: each 256-column tile of a weight row is decoded once per 64 tokens into f32
// values d * T, and a register tile of tokens x 16 columns accumulates over the rows.
// Vectorised by the compiler (AVX-512 or AVX2 code on x86 by `level`, plain elsewhere).
// Keeps (64 + 256) x 256 floats (320 KiB) of scratch per thread.
void ternary_matmul_transposed(const TernaryMatrix& w, const float* dy, int64_t dy_stride,
                               int64_t n_tokens, float scale, float* dx, int64_t c0, int64_t c1,
                               CpuLevel level = active_cpu_level());

// C[i * ldc + j] += sum_k A[i * a_row + k * a_col] * B[k * ldb + j] for rows i in [i0, i1),
// columns j in [0, n), k in [0, n_k): f32, each element adding its products to C in k order
// (the same bits at every level and for any split of the rows). A's two strides let one kernel
// serve A, A^T and strided views; B is row-major. Split rows across threads.
void gemm_f32_acc(int64_t i0, int64_t i1, int64_t n, int64_t n_k, const float* a, int64_t a_row,
                  int64_t a_col, const float* b, int64_t ldb, float* c, int64_t ldc,
                  CpuLevel level = active_cpu_level());

}  // namespace trit::engine
