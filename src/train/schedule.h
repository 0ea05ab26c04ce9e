// Learning-rate schedules with linear warmup, as transformers' get_constant_schedule_with_warmup,
// get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup and
// get_cosine_with_min_lr_schedule_with_warmup define them (num_cycles = 0.5).
//
// `step` counts optimizer steps from 0, as LambdaLR does: the first optimizer step runs at
// base_lr * factor(0), which is 0 when warmup > 0.
//   warmup (step < warmup):  step / max(1, warmup)
//   constant:                1
//   linear:                  max(0, (total - step) / max(1, total - warmup))
//   cosine:                  p = (step - warmup) / max(1, total - warmup)
//                            c = 0.5 * (1 + cos(pi * 0.5 * 2 * p))
//                            max(0, c * (1 - min_lr_ratio) + min_lr_ratio)
// As in transformers nothing is clamped past `total` (the cosine would rise again).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace trit::engine {

enum class ScheduleKind { kConstant, kLinear, kCosine };

struct ScheduleOptions {
  ScheduleKind kind = ScheduleKind::kConstant;
  double base_lr = 1e-4;
  int64_t warmup = 0;         // steps of linear warmup from 0
  int64_t total_steps = 0;    // optimizer steps in the whole run (linear and cosine)
  double min_lr_ratio = 0.0;  // cosine only: the floor, as a fraction of base_lr
};

// "constant", "linear" or "cosine"; anything else throws.
ScheduleKind parse_schedule(std::string_view name);
const char* schedule_name(ScheduleKind kind);

// The multiplier of base_lr (LambdaLR's lambda) at optimizer step `step` (0-based).
double schedule_factor(const ScheduleOptions& opts, int64_t step);

// base_lr * schedule_factor(opts, step).
double schedule_lr(const ScheduleOptions& opts, int64_t step);

}  // namespace trit::engine
