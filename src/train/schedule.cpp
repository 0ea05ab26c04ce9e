// Learning-rate schedules: transformers' warmup lambdas, term for term (see schedule.h).
#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace trit::engine {

ScheduleKind parse_schedule(std::string_view name) {
  if (name == "constant") return ScheduleKind::kConstant;
  if (name == "linear") return ScheduleKind::kLinear;
  if (name == "cosine") return ScheduleKind::kCosine;
  fail("schedule: unknown learning-rate schedule '", name,
       "' (expected constant, linear or cosine)");
}

const char* schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kConstant:
      return "constant";
    case ScheduleKind::kLinear:
      return "linear";
    case ScheduleKind::kCosine:
      return "cosine";
  }
  return "?";
}

double schedule_factor(const ScheduleOptions& opts, int64_t step) {
  const int64_t warmup = opts.warmup, total = opts.total_steps;
  if (step < warmup) return double(step) / double(std::max<int64_t>(1, warmup));
  switch (opts.kind) {
    case ScheduleKind::kConstant:
      return 1.0;
    case ScheduleKind::kLinear:
      return std::max(0.0, double(total - step) / double(std::max<int64_t>(1, total - warmup)));
    case ScheduleKind::kCosine: {
      constexpr double kNumCycles = 0.5;
      const double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
      double factor = 0.5 * (1.0 + std::cos(std::numbers::pi * kNumCycles * 2.0 * progress));
      factor = factor * (1 - opts.min_lr_ratio) + opts.min_lr_ratio;
      return std::max(0.0, factor);
    }
  }
  fail("schedule: bad schedule kind ", int(opts.kind));
}

double schedule_lr(const ScheduleOptions& opts, int64_t step) {
  return opts.base_lr * schedule_factor(opts, step);
}

}  // namespace trit::engine
