// metrics.jsonl round trip and truncation on resume, the loss-curve SVG, and the progress lines.
#include "train/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "support/files.h"
#include "train/progress.h"

namespace trit::engine {
namespace {

using test::read_file;
using test::TempDir;
using test::write_file;

TrainMetrics train_at(int64_t step, double loss) {
  TrainMetrics t;
  t.step = step;
  t.epoch = double(step) / 100.0;
  t.loss = loss;
  t.lr = 1e-4 * double(step) / 10.0;
  t.grad_norm = 0.5f;
  t.tokens_per_s = 1234.56;
  t.peak_mib = 512.25;
  t.elapsed_s = 1.5 * double(step);
  return t;
}

ValMetrics val_at(int64_t step, double loss) {
  return {step, loss, std::exp(loss)};
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(Metrics, JsonlRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  {
    MetricsWriter w(path);
    w.write(val_at(0, 2.5));
    w.write(train_at(1, 2.3456f));  // a float loss is written with the float's digits
    w.write(train_at(2, 2.25));
    // Each line is flushed as soon as it is written.
    EXPECT_EQ(lines_of(read_file(path)).size(), 3u);
  }
  const auto lines = lines_of(read_file(path));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], R"({"step":0,"val_loss":2.5,"val_ppl":12.182493960703473})");
  EXPECT_EQ(lines[1], R"({"step":1,"epoch":0.01,"loss":2.3456,"lr":1e-05,"grad_norm":0.5,)"
                      R"("tokens_per_s":1234.6,"peak_mib":512.3,"elapsed_s":1.5})");

  const MetricsLog log = read_metrics(path);
  ASSERT_EQ(log.train.size(), 2u);
  ASSERT_EQ(log.val.size(), 1u);
  EXPECT_EQ(log.val[0].step, 0);
  EXPECT_DOUBLE_EQ(log.val[0].val_loss, 2.5);
  EXPECT_DOUBLE_EQ(log.val[0].val_ppl, std::exp(2.5));
  EXPECT_EQ(log.train[1].step, 2);
  EXPECT_DOUBLE_EQ(log.train[1].loss, 2.25);
  EXPECT_DOUBLE_EQ(log.train[1].lr, 2e-5);
  EXPECT_DOUBLE_EQ(log.train[1].elapsed_s, 3.0);
  EXPECT_DOUBLE_EQ(log.train[0].grad_norm, 0.5);
}

TEST(Metrics, NonFiniteValuesAreNullAndReadBackAsNan) {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  {
    MetricsWriter w(path);
    w.write(train_at(1, NAN));
    w.write(train_at(2, INFINITY));
  }
  const auto lines = lines_of(read_file(path));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("\"loss\":null"), std::string::npos) << lines[0];
  EXPECT_TRUE(nlohmann::json::accept(lines[1]));
  const MetricsLog log = read_metrics(path);
  ASSERT_EQ(log.train.size(), 2u);
  EXPECT_TRUE(std::isnan(log.train[0].loss));
  EXPECT_TRUE(std::isnan(log.train[1].loss));
}

TEST(Metrics, ResumeDropsLinesAfterTheCheckpointStep) {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  {
    MetricsWriter w(path);
    w.write(val_at(0, 3.0));
    for (int s = 1; s <= 6; ++s) w.write(train_at(s, 3.0 - 0.1 * s));
    w.write(val_at(4, 2.7));
    w.write(val_at(6, 2.5));
  }
  // The run crashed while writing a line after step 6; it resumes from the checkpoint at 4.
  write_file(path, read_file(path) + R"({"step":7,"epoch":0.0)");
  {
    MetricsWriter w(path, 4);
    EXPECT_FALSE(test::file_exists(path + ".tmp"));
    const MetricsLog kept = read_metrics(path);
    ASSERT_EQ(kept.train.size(), 4u);
    EXPECT_EQ(kept.train.back().step, 4);
    ASSERT_EQ(kept.val.size(), 2u);
    EXPECT_EQ(kept.val.back().step, 4);
    w.write(train_at(5, 1.0));
  }
  const MetricsLog log = read_metrics(path);
  ASSERT_EQ(log.train.size(), 5u);
  EXPECT_EQ(log.train.back().step, 5);
  EXPECT_DOUBLE_EQ(log.train.back().loss, 1.0);
  for (const std::string& line : lines_of(read_file(path))) {
    EXPECT_TRUE(nlohmann::json::accept(line)) << line;
  }
}

TEST(Metrics, FreshStartEmptiesTheFileAndResumeCreatesAMissingOne) {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  write_file(path, R"({"step":1,"loss":9})"
                   "\n");
  { MetricsWriter w(path); }
  EXPECT_EQ(read_file(path), "");
  const std::string other = dir.file("other.jsonl");
  {
    MetricsWriter w(other, 10);
    w.write(val_at(10, 1.0));
  }
  EXPECT_EQ(read_metrics(other).val.size(), 1u);
  truncate_metrics(dir.file("missing.jsonl"), 3);  // nothing to do
  EXPECT_FALSE(test::file_exists(dir.file("missing.jsonl")));
  EXPECT_THROW(read_metrics(dir.file("missing.jsonl")), Error);
  EXPECT_THROW(MetricsWriter(dir.file("no/such/dir/m.jsonl")), Error);
}

// --- loss-curve SVG ---

// The number of "x,y" pairs in the points of the polyline with the given class.
int polyline_points(const std::string& svg, const std::string& cls) {
  const size_t at = svg.find("<polyline class=\"" + cls + "\"");
  if (at == std::string::npos) return -1;
  const size_t begin = svg.find("points=\"", at) + 8;
  const size_t end = svg.find('"', begin);
  std::istringstream in(svg.substr(begin, end - begin));
  int n = 0;
  for (std::string pair; in >> pair;) {
    EXPECT_NE(pair.find(','), std::string::npos) << pair;
    ++n;
  }
  return n;
}

void expect_wellformed(const std::string& svg) {
  EXPECT_EQ(svg.rfind("<svg ", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
  // Every element opened is closed (self-closing or with its end tag).
  int depth = 0;
  for (size_t i = 0; (i = svg.find('<', i)) != std::string::npos; ++i) {
    const size_t close = svg.find('>', i);
    ASSERT_NE(close, std::string::npos);
    if (svg[i + 1] == '/') {
      --depth;
    } else if (svg[close - 1] != '/') {
      ++depth;
    }
    EXPECT_GE(depth, 0);
  }
  EXPECT_EQ(depth, 0);
}

TEST(LossCurve, OnePointPerFiniteTrainLossAndValidationPoints) {
  MetricsLog log;
  for (int s = 1; s <= 50; ++s) log.train.push_back(train_at(s, 3.0 / std::sqrt(double(s))));
  log.train[10].loss = NAN;
  log.train[20].loss = INFINITY;
  log.val = {val_at(0, 3.2), val_at(25, 1.0), val_at(50, 0.8), val_at(60, NAN)};
  const std::string svg = loss_curve_svg(log, "LoRA <r=8> & friends");
  expect_wellformed(svg);
  EXPECT_EQ(polyline_points(svg, "train"), 48);
  EXPECT_EQ(polyline_points(svg, "train-smoothed"), 48);
  EXPECT_EQ(polyline_points(svg, "val"), 3);
  EXPECT_NE(svg.find("LoRA &lt;r=8&gt; &amp; friends"), std::string::npos);
  EXPECT_NE(svg.find("validation loss"), std::string::npos);
  EXPECT_NE(svg.find(">step<"), std::string::npos);
}

TEST(LossCurve, OnePointEmptyAndAllNonFinite) {
  MetricsLog one;
  one.train.push_back(train_at(1, 2.0));
  std::string svg = loss_curve_svg(one, "one");
  expect_wellformed(svg);
  EXPECT_EQ(polyline_points(svg, "train"), 1);
  EXPECT_EQ(polyline_points(svg, "val"), -1);
  EXPECT_NE(svg.find("<circle"), std::string::npos);

  MetricsLog flat;
  for (int s = 1; s <= 5; ++s) flat.train.push_back(train_at(s, 0.0));
  svg = loss_curve_svg(flat, "flat");
  expect_wellformed(svg);
  EXPECT_EQ(polyline_points(svg, "train"), 5);

  MetricsLog bad;
  bad.train.push_back(train_at(1, NAN));
  bad.val.push_back(val_at(0, INFINITY));
  svg = loss_curve_svg(bad, "bad");
  expect_wellformed(svg);
  EXPECT_EQ(polyline_points(svg, "train"), -1);
  EXPECT_NE(svg.find("no data"), std::string::npos);

  svg = loss_curve_svg(MetricsLog{}, "");
  expect_wellformed(svg);
}

TEST(LossCurve, WritesTheFileAtomically) {
  TempDir dir;
  MetricsLog log;
  log.val.push_back(val_at(0, 2.0));
  const std::string path = dir.file("loss.svg");
  write_loss_curve_svg(path, log, "t");
  EXPECT_EQ(read_file(path), loss_curve_svg(log, "t"));
  EXPECT_FALSE(test::file_exists(path + ".tmp"));
  EXPECT_THROW(write_loss_curve_svg(dir.file("no/dir/loss.svg"), log, "t"), Error);
}

// --- progress lines ---

TEST(Progress, FormatsEta) {
  EXPECT_EQ(format_eta(0), "0s");
  EXPECT_EQ(format_eta(45.4), "45s");
  EXPECT_EQ(format_eta(59.6), "1m00s");
  EXPECT_EQ(format_eta(192), "3m12s");
  EXPECT_EQ(format_eta(3599), "59m59s");
  EXPECT_EQ(format_eta(3600), "1h00m");
  EXPECT_EQ(format_eta(3900), "1h05m");
  EXPECT_EQ(format_eta(100 * 3600 + 29), "100h00m");
  EXPECT_EQ(format_eta(-1), "--");
  EXPECT_EQ(format_eta(NAN), "--");
  EXPECT_EQ(format_eta(INFINITY), "--");
}

TEST(Progress, FormatsStepAndValidationLines) {
  StepLine l;
  l.step = 12;
  l.total_steps = 200;
  l.loss = 2.34561;
  l.lr = 1e-4;
  l.tokens_per_s = 1234.4;
  l.peak_mib = 512.2;
  l.eta_s = 192;
  EXPECT_EQ(format_step_line(l),
            "step 12/200 | loss 2.3456 | lr 1.00e-04 | 1234 tok/s | peak 512 MiB | ETA 3m12s");
  l.total_steps = 0;
  l.eta_s = -1;
  EXPECT_EQ(format_step_line(l),
            "step 12 | loss 2.3456 | lr 1.00e-04 | 1234 tok/s | peak 512 MiB | ETA --");
  EXPECT_EQ(format_val_line(0, 200, 2.5), "step 0/200 | val loss 2.5000 | val ppl 12.18");
}

TEST(Progress, MeterEstimatesTheRestFromThisRunsSteps) {
  ProgressMeter m(100, 40);  // resumed at step 40
  EXPECT_EQ(m.eta_s(40), -1);
  std::string line = m.step_line(41, 2.0, 1e-4, 2048, 2.0, 100);
  EXPECT_NE(line.find("step 41/100"), std::string::npos) << line;
  EXPECT_NE(line.find("1024 tok/s"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 1m58s"), std::string::npos) << line;  // 59 steps left at 2 s
  line = m.step_line(42, 2.0, 1e-4, 1000, 4.0, 100);
  EXPECT_NE(line.find("ETA 2m54s"), std::string::npos) << line;  // 58 left at 3 s
  EXPECT_DOUBLE_EQ(m.eta_s(100), 0.0);
  EXPECT_EQ(m.val_line(42, 0.0), "step 42/100 | val loss 0.0000 | val ppl 1.00");
}

}  // namespace
}  // namespace trit::engine
