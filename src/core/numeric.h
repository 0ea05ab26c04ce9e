// Small numeric helpers over rows of logits.
#pragma once

#include <cstdint>

namespace trit::engine {

// Index of the largest value (first on ties).
int64_t argmax(const float* x, int64_t n);

// log(sum(exp(x))) computed stably (max subtracted, the sum in double).
double log_sum_exp(const float* x, int64_t n);

}  // namespace trit::engine
