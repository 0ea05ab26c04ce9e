// Progress lines for fine-tuning (see progress.h).
#include "train/progress.h"

#include <cmath>
#include <cstdio>

namespace trit::engine {

namespace {

std::string printf_string(const char* fmt, auto... args) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), fmt, args...);
  return buf;
}

std::string step_prefix(int64_t step, int64_t total_steps) {
  if (total_steps > 0) {
    return printf_string("step %lld/%lld", (long long)step, (long long)total_steps);
  }
  return printf_string("step %lld", (long long)step);
}

}  // namespace

std::string format_eta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const double rounded = std::round(seconds);
  if (rounded >= 1e12) return "--";
  const long long s = (long long)rounded;
  if (s < 60) return printf_string("%llds", s);
  if (s < 3600) return printf_string("%lldm%02llds", s / 60, s % 60);
  const long long m = (s + 30) / 60;  // hours and minutes, to the nearest minute
  return printf_string("%lldh%02lldm", m / 60, m % 60);
}

std::string format_step_line(const StepLine& l) {
  return step_prefix(l.step, l.total_steps) +
         // fabs: a NaN loss prints as "nan", whatever its sign bit.
         printf_string(" | loss %.4f | lr %.2e | %.0f tok/s | peak %.0f MiB | ETA ",
                       std::isnan(l.loss) ? std::fabs(l.loss) : l.loss, l.lr, l.tokens_per_s,
                       l.peak_mib) +
         format_eta(l.eta_s);
}

std::string format_val_line(int64_t step, int64_t total_steps, double val_loss) {
  return step_prefix(step, total_steps) +
         printf_string(" | val loss %.4f | val ppl %.2f", val_loss, std::exp(val_loss));
}

ProgressMeter::ProgressMeter(int64_t total_steps, int64_t first_step)
    : total_steps_(total_steps), first_step_(first_step) {}

std::string ProgressMeter::step_line(int64_t step, double loss, double lr, int64_t tokens,
                                     double seconds, double peak_mib) {
  if (step > first_step_ && seconds >= 0 && std::isfinite(seconds)) {
    ++steps_timed_;
    seconds_timed_ += seconds;
  }
  StepLine l;
  l.step = step;
  l.total_steps = total_steps_;
  l.loss = loss;
  l.lr = lr;
  l.tokens_per_s = seconds > 0 ? double(tokens) / seconds : 0.0;
  l.peak_mib = peak_mib;
  l.eta_s = eta_s(step);
  return format_step_line(l);
}

std::string ProgressMeter::val_line(int64_t step, double val_loss) const {
  return format_val_line(step, total_steps_, val_loss);
}

double ProgressMeter::eta_s(int64_t step) const {
  if (steps_timed_ == 0 || total_steps_ <= 0) return -1;
  const int64_t left = total_steps_ > step ? total_steps_ - step : 0;
  return seconds_timed_ / double(steps_timed_) * double(left);
}

}  // namespace trit::engine
