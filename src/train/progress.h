// The fine-tuning progress lines (DESIGN section 5), one per optimizer step:
//   step 12/200 | loss 2.3456 | lr 1.00e-04 | 1234 tok/s | peak 512 MiB | ETA 3m12s
// and one per validation:
//   step 0/200 | val loss 2.5000 | val ppl 12.18
// The formatting is pure; ProgressMeter adds the clock-derived numbers (tokens/s, ETA).
#pragma once

#include <cstdint>
#include <string>

namespace trit::engine {

struct StepLine {
  int64_t step = 0;         // optimizer steps done, counting this one (1-based)
  int64_t total_steps = 0;  // <= 0: unknown, printed as "step 12"
  double loss = 0;
  double lr = 0;
  double tokens_per_s = 0;
  double peak_mib = 0;
  double eta_s = -1;  // < 0 or not finite: unknown, printed as "ETA --"
};

// "45s", "3m12s", "1h05m" (rounded to whole seconds; hours show minutes only).
std::string format_eta(double seconds);

std::string format_step_line(const StepLine& line);

// The perplexity shown is exp(val_loss).
std::string format_val_line(int64_t step, int64_t total_steps, double val_loss);

// Times the run and fills in tokens/s and the ETA. ETA = mean seconds per step of this run
// (steps restored from a checkpoint do not count) times the steps left.
class ProgressMeter {
 public:
  // first_step: optimizer steps already done when this run starts (0, or the resumed step).
  ProgressMeter(int64_t total_steps, int64_t first_step = 0);

  // Records optimizer step `step` (1-based), which took `seconds` and consumed `tokens`, and
  // returns its line. tokens/s is this step's own rate.
  std::string step_line(int64_t step, double loss, double lr, int64_t tokens, double seconds,
                        double peak_mib);
  std::string val_line(int64_t step, double val_loss) const;

  double eta_s(int64_t step) const;  // after `step` steps; -1 before the first timed one

 private:
  int64_t total_steps_;
  int64_t first_step_;
  int64_t steps_timed_ = 0;
  double seconds_timed_ = 0;
};

}  // namespace trit::engine
