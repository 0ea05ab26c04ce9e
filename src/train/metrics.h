// Training metrics: metrics.jsonl (one JSON object per line, appended and flushed as the run
// goes) and the loss-curve SVG drawn from it.
//
//   {"step":12,"epoch":0.06,"loss":2.3456,"lr":0.0001,"grad_norm":0.91,"tokens_per_s":1234.5,
//    "peak_mib":512.0,"elapsed_s":30.125}
//   {"step":0,"val_loss":2.5,"val_ppl":12.18}
//
// `step` counts optimizer steps done (the first train line has step 1; the first validation,
// before training, step 0). Non-finite numbers are written as null and read back as NaN.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace trit::engine {

struct TrainMetrics {
  int64_t step = 0;
  double epoch = 0;  // fractional epochs done
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double tokens_per_s = 0;
  double peak_mib = 0;
  double elapsed_s = 0;
};

struct ValMetrics {
  int64_t step = 0;
  double val_loss = 0;
  double val_ppl = 0;
};

struct MetricsLog {
  std::vector<TrainMetrics> train;
  std::vector<ValMetrics> val;
};

class MetricsWriter {
 public:
  // resume_step < 0: starts path as an empty file (a previous run's lines are gone).
  // resume_step >= 0: keeps the existing lines with step <= resume_step (the rest, and any
  // torn line, are dropped by an atomic rewrite) and appends after them.
  explicit MetricsWriter(std::string path, int64_t resume_step = -1);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Each appends one line and flushes it.
  void write(const TrainMetrics& m);
  void write(const ValMetrics& m);

  const std::string& path() const { return path_; }

 private:
  void append_line(const std::string& line);

  std::string path_;
  std::FILE* out_ = nullptr;
};

// Reads a metrics.jsonl; blank and unparsable lines (a line torn by a crash) are skipped.
// A missing file throws.
MetricsLog read_metrics(const std::string& path);

// Drops the lines with step > max_step (and unparsable ones) by an atomic rewrite. A missing
// file is left missing.
void truncate_metrics(const std::string& path, int64_t max_step);

// A self-contained SVG of the train loss (a line; with a smoothed line over it when there are
// many points) and the validation loss (points joined by a line), with axes, ticks, labels, a
// title and a legend. Non-finite losses are skipped. The train polyline has class="train" and
// one point per finite train loss.
std::string loss_curve_svg(const MetricsLog& log, std::string_view title);

// Writes loss_curve_svg(...) to path atomically ("<path>.tmp", then renamed).
void write_loss_curve_svg(const std::string& path, const MetricsLog& log, std::string_view title);

}  // namespace trit::engine
