// e^x for the softmaxes (attention, the loss over the vocabulary): one algorithm at every CPU
// level and in scalar code, so a value has the same bits whichever computes it. Range
// reduction by ln 2 in two parts and a degree-6 polynomial (Cephes' expf), every product and
// sum rounded on its own (-ffp-contract=off); within 2 ulp of the exact value. Arguments below
// -87.3 (results under the smallest normal float) give 0, NaN gives NaN.
#pragma once

#include <cstdint>

#include "backend/cpu/kernels.h"

namespace trit::engine {

// e^x, the bits exp_shifted gives for x - shift = x.
float exp_f32(float x);

// The largest of x[0, n) (-infinity for none; NaNs skipped as std::max(m, x_i) skips them).
// Out of line on purpose: inlined where the result leaves through a pointer, GCC kept the
// running max in memory, a store and a reload an element.
float max_of(const float* x, int64_t n);

// x[i] = e^(x[i] - shift) for i in [0, n), each exp_f32(x[i] - shift).
void exp_shifted(float* x, int64_t n, float shift, CpuLevel level = active_cpu_level());

}  // namespace trit::engine
