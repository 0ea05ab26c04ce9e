// The LoRA forward's up-projection over a block of outputs, with outputs as vector lanes: the
// reference's operations in the reference's order at every level (each product rounded, each
// sum over the rank in order from zero, then scaled and added), only more of them at once.
#pragma once

#include <cstdint>

#include "backend/cpu/kernels.h"

namespace trit::engine {

// For tokens t in [0, T) and outputs o in [0, m):
//   y[t * ldy + o] += (sum_k bt[k * ldb + o] * ax[t * r + k], k = 0 .. r - 1 in order) * s
// (bt: B^T's rows for these outputs; the sum starts from zero).
void lora_b_block(const float* bt, int64_t ldb, const float* ax, int64_t T, int64_t r, int64_t m,
                  float s, float* y, int64_t ldy, CpuLevel level = active_cpu_level());

}  // namespace trit::engine
