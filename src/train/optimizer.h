// AdamW as torch.optim.AdamW computes it (single-tensor path, foreach=False, amsgrad off),
// and gradient clipping by global norm as torch.nn.utils.clip_grad_norm_ does.
//
// Per element of each parameter, in f32 and in PyTorch's order of operations:
//   p = p * (1 - lr * wd)                       (decoupled weight decay, first)
//   m = fma(1 - b1, g - m, m)                   (exp_avg.lerp_(g, 1 - b1))
//   v = fma((1 - b2) * g, g, v * b2)            (exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2))
//   denom = sqrt(v) / sqrt(1 - b2^t) + eps      (eps outside the bias-corrected root)
//   p = p + (-lr / (1 - b1^t)) * m / denom
// The scalars (1 - lr*wd, lr / (1 - b1^t), sqrt(1 - b2^t)) are computed in double and rounded
// to f32 where they meet a tensor, as Python floats are. The two fmas are where PyTorch's CPU
// kernels fuse; so written, the result equals torch 2.11's CPU AdamW bit for bit
// (tests/test_optimizer.cpp, AdamW.MatchesPyTorchBitForBit).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/adamw.h"

namespace trit::engine {

// One trainable tensor: its values (updated in place) and its gradient (same length). A null
// grad skips the tensor for this step, as PyTorch skips parameters whose .grad is None.
struct ParamRef {
  std::string name;
  float* value = nullptr;
  const float* grad = nullptr;
  int64_t n = 0;
};

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // torch.optim.AdamW's default
};

// The optimizer state of one tensor, as PyTorch keeps it: its own step count, exp_avg (m) and
// exp_avg_sq (v), created as zeros at the tensor's first step.
struct AdamWMoments {
  int64_t step = 0;
  std::vector<float> m;  // (n)
  std::vector<float> v;  // (n)
};

class AdamW {
 public:
  explicit AdamW(AdamWOptions opts = {});

  // One optimizer step over every tensor with a gradient, at learning rate lr. Moments are
  // keyed by name; a name seen before with another length throws.
  void step(const std::vector<ParamRef>& params, double lr);

  // Number of step() calls so far (restored by load/set_state).
  int64_t t() const { return t_; }
  const AdamWOptions& options() const { return opts_; }

  // Checkpointing, as named float vectors...
  const std::map<std::string, AdamWMoments>& moments() const { return moments_; }
  void set_state(int64_t t, std::map<std::string, AdamWMoments> moments);  // checks lengths
  // ...or as one binary blob: "TRITADAM", version, t, then per tensor its name, step, n, m, v
  // (little-endian). `what` names the source in error messages.
  std::string save() const;
  void load(std::string_view blob, std::string_view what = "adamw state");

 private:
  AdamWOptions opts_;
  int64_t t_ = 0;
  std::map<std::string, AdamWMoments> moments_;
};

// The f32 scalars of a tensor's AdamW step number `step` (from 1) at learning rate lr.
AdamWScalars adamw_scalars(const AdamWOptions& o, double lr, int64_t step);

// Clipping by global norm from the per-tensor sums of squares of the gradients: the norm
// (before clipping) and the factor the gradients are multiplied by (1: unclipped, also when
// max_norm <= 0 or the norm is not finite).
struct GradClip {
  float norm = 0;
  float scale = 1;
};
GradClip clip_from_sums(std::span<const double> sums, float max_norm);

// The global 2-norm of all gradients, as clip_grad_norm_ computes it (the norm of the per-tensor
// norms), returned before clipping. When max_norm > 0 and max_norm / (norm + 1e-6) < 1, every
// gradient is scaled by that factor. max_norm <= 0 only measures. A non-finite norm is returned
// and the gradients are left as they are (PyTorch would scale them by NaN), so that the caller
// can skip the step.
float clip_grad_norm(std::span<const std::span<float>> grads, float max_norm);

}  // namespace trit::engine
