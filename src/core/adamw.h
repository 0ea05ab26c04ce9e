// AdamW's per-element update with PyTorch's CPU arithmetic (train/optimizer.h lists the order
// of operations). Shared by the host optimizer (train/) and the backends' adamw op.
#pragma once

#include <cstdint>

namespace trit::engine {

// The f32 scalars of one AdamW step of one tensor (train/optimizer.h computes them as PyTorch
// does, in double rounded to f32).
struct AdamWScalars {
  float decay = 1;            // 1 - lr * wd (1: no decay)
  float one_minus_beta1 = 0;  // exp_avg.lerp_ weight
  float beta2 = 0;
  float one_minus_beta2 = 0;
  float bc2_sqrt = 1;  // sqrt(1 - beta2^t)
  float eps = 0;
  float neg_step_size = 0;  // -lr / (1 - beta1^t)
};

// p, m, v updated in place from gradient g (times grad_scale, the clipping factor, when that
// is not 1: the f32 product clip_grad_norm_ would have stored), n elements.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k,
                  float grad_scale = 1.0f);

}  // namespace trit::engine
