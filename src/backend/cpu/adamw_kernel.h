// AdamW's per-element update with PyTorch's CPU arithmetic (train/optimizer.h lists the order
// of operations). Shared by the host optimizer and the CPU backend's adamw op.
#pragma once

#include <cstdint>

#include "backend/backend.h"

namespace trit {

// p, m, v updated in place from gradient g (times grad_scale, the clipping factor, when that
// is not 1: the f32 product clip_grad_norm_ would have stored), n elements.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k,
                  float grad_scale = 1.0f);

}  // namespace trit
