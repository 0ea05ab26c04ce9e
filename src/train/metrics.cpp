// metrics.jsonl writing, reading and truncation, and the loss-curve SVG (see metrics.h).
#include "train/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/error.h"
#include "io/file_util.h"

namespace trit::engine {

namespace {

using Json = nlohmann::ordered_json;

// --- numbers in JSON -------------------------------------------------------------------------

// A value that came from a float is written with the float's shortest digits ("2.3456", not
// "2.3456001281738281"); other values keep every digit of the double.
Json float_number(double x) {
  if (!std::isfinite(x)) return nullptr;
  const float f = float(x);
  if (double(f) != x) return x;
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof(buf), f);
  double back = x;
  std::from_chars(buf, res.ptr, back);
  return back;
}

Json rounded_number(double x, int decimals) {
  if (!std::isfinite(x)) return nullptr;
  const double scale = std::pow(10.0, decimals);
  const double r = std::round(x * scale) / scale;
  return std::isfinite(r) ? r : x;
}

Json exact_number(double x) {
  if (!std::isfinite(x)) return nullptr;
  return x;
}

double get_number(const Json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nan("");
  return it->get<double>();
}

// The step of a parsed line, or false when the line has none.
bool get_step(const Json& j, int64_t& step) {
  if (!j.is_object()) return false;
  const auto it = j.find("step");
  if (it == j.end()) return false;
  if (it->is_number_integer()) {
    step = it->get<int64_t>();
    return true;
  }
  if (it->is_number_float()) {
    const double d = it->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
      step = int64_t(d);
      return true;
    }
  }
  return false;
}

bool parse_line(const std::string& line, Json& j) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) return false;
  j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  return !j.is_discarded() && j.is_object();
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) fail(path, ": cannot open metrics file: ", std::strerror(errno));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(std::move(line));
  if (in.bad()) fail(path, ": cannot read metrics file");
  return lines;
}

}  // namespace

// --- metrics.jsonl ---------------------------------------------------------------------------

MetricsWriter::MetricsWriter(std::string path, int64_t resume_step) : path_(std::move(path)) {
  if (resume_step >= 0) {
    truncate_metrics(path_, resume_step);
    out_ = std::fopen(path_.c_str(), "ab");
  } else {
    out_ = std::fopen(path_.c_str(), "wb");
  }
  if (out_ == nullptr) fail(path_, ": cannot open metrics file: ", std::strerror(errno));
}

MetricsWriter::~MetricsWriter() {
  if (out_ != nullptr) std::fclose(out_);
}

void MetricsWriter::append_line(const std::string& line) {
  if (std::fwrite(line.data(), 1, line.size(), out_) != line.size() ||
      std::fputc('\n', out_) == EOF || std::fflush(out_) != 0) {
    fail(path_, ": cannot write metrics: ", std::strerror(errno));
  }
}

void MetricsWriter::write(const TrainMetrics& m) {
  Json j;
  j["step"] = m.step;
  j["epoch"] = rounded_number(m.epoch, 6);
  j["loss"] = float_number(m.loss);
  j["lr"] = exact_number(m.lr);
  j["grad_norm"] = float_number(m.grad_norm);
  j["tokens_per_s"] = rounded_number(m.tokens_per_s, 1);
  j["peak_mib"] = rounded_number(m.peak_mib, 1);
  j["elapsed_s"] = rounded_number(m.elapsed_s, 3);
  append_line(j.dump());
}

void MetricsWriter::write(const ValMetrics& m) {
  Json j;
  j["step"] = m.step;
  j["val_loss"] = float_number(m.val_loss);
  j["val_ppl"] = float_number(m.val_ppl);
  append_line(j.dump());
}

MetricsLog read_metrics(const std::string& path) {
  MetricsLog log;
  Json j;
  for (const std::string& line : read_lines(path)) {
    int64_t step = 0;
    if (!parse_line(line, j) || !get_step(j, step)) continue;
    if (j.contains("val_loss")) {
      ValMetrics v;
      v.step = step;
      v.val_loss = get_number(j, "val_loss");
      v.val_ppl = get_number(j, "val_ppl");
      log.val.push_back(v);
    } else if (j.contains("loss")) {
      TrainMetrics t;
      t.step = step;
      t.epoch = get_number(j, "epoch");
      t.loss = get_number(j, "loss");
      t.lr = get_number(j, "lr");
      t.grad_norm = get_number(j, "grad_norm");
      t.tokens_per_s = get_number(j, "tokens_per_s");
      t.peak_mib = get_number(j, "peak_mib");
      t.elapsed_s = get_number(j, "elapsed_s");
      log.train.push_back(t);
    }
  }
  return log;
}

void truncate_metrics(const std::string& path, int64_t max_step) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return;
  std::string kept;
  Json j;
  for (const std::string& line : read_lines(path)) {
    int64_t step = 0;
    if (!parse_line(line, j) || !get_step(j, step) || step > max_step) continue;
    kept += line;
    kept += '\n';
  }
  write_file_atomic(path, kept);
}

// --- loss-curve SVG --------------------------------------------------------------------------

namespace {

constexpr double kWidth = 800, kHeight = 450;
constexpr double kLeft = 72, kRight = 24, kTop = 52, kBottom = 58;
constexpr const char* kTrainColor = "#1f77b4";
constexpr const char* kValColor = "#d62728";

std::string fmt(const char* f, auto... args) {
  const int n = std::snprintf(nullptr, 0, f, args...);
  std::string out(size_t(std::max(n, 0)), '\0');
  std::snprintf(out.data(), out.size() + 1, f, args...);
  return out;
}

std::string xml_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        // Control characters are not allowed in XML 1.0 text.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n') out += c;
    }
  }
  return out;
}

// A "nice" tick spacing (1, 2 or 5 times a power of ten) giving about `target` intervals.
double nice_step(double span, int target) {
  const double raw = span / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double nice = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
  return nice * mag;
}

int tick_decimals(double step) {
  return std::max(0, int(-std::floor(std::log10(step) + 1e-9)));
}

struct Axis {
  double lo = 0, hi = 1, step = 0.2;
  int decimals = 1;
};

struct Point {
  double x, y;
};

}  // namespace

std::string loss_curve_svg(const MetricsLog& log, std::string_view title) {
  std::vector<Point> train, val;
  for (const TrainMetrics& t : log.train) {
    if (std::isfinite(t.loss)) train.push_back({double(t.step), t.loss});
  }
  for (const ValMetrics& v : log.val) {
    if (std::isfinite(v.val_loss)) val.push_back({double(v.step), v.val_loss});
  }
  std::sort(val.begin(), val.end(), [](const Point& a, const Point& b) { return a.x < b.x; });

  // Data ranges.
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const auto* pts : {&train, &val}) {
    for (const Point& p : *pts) {
      x_lo = std::min(x_lo, p.x);
      x_hi = std::max(x_hi, p.x);
      y_lo = std::min(y_lo, p.y);
      y_hi = std::max(y_hi, p.y);
    }
  }
  const bool empty = train.empty() && val.empty();
  if (empty) x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;
  if (x_hi - x_lo < 1) {
    x_lo = std::max(0.0, x_lo - 1);
    x_hi = x_lo + 2;
  }
  if (!(y_hi - y_lo > 1e-9 * std::max(1.0, std::fabs(y_hi)))) {
    const double pad = std::max(0.5, std::fabs(y_hi) * 0.1);
    y_lo -= pad;
    y_hi += pad;
  }

  // Axes: x spans the steps exactly; y is padded and widened to whole ticks.
  Axis xa, ya;
  xa.lo = x_lo;
  xa.hi = x_hi;
  xa.step = std::max(1.0, std::round(nice_step(x_hi - x_lo, 8)));
  xa.decimals = 0;
  const double pad = 0.05 * (y_hi - y_lo);
  ya.step = nice_step(y_hi - y_lo + 2 * pad, 6);
  ya.lo = std::floor((y_lo - pad) / ya.step) * ya.step;
  ya.hi = std::ceil((y_hi + pad) / ya.step) * ya.step;
  if (y_lo >= 0 && ya.lo < 0) ya.lo = 0;  // losses are >= 0: no negative ticks
  ya.decimals = tick_decimals(ya.step);

  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto sx = [&](double x) { return kLeft + (x - xa.lo) / (xa.hi - xa.lo) * pw; };
  auto sy = [&](double y) { return kTop + (ya.hi - y) / (ya.hi - ya.lo) * ph; };
  auto points = [&](const std::vector<Point>& pts) {
    std::string s;
    for (const Point& p : pts) {
      if (!s.empty()) s += ' ';
      s += fmt("%.2f,%.2f", sx(p.x), sy(p.y));
    }
    return s;
  };

  std::string svg;
  svg +=
      fmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
          "viewBox=\"0 0 %.0f %.0f\" font-family=\"Helvetica, Arial, sans-serif\">\n",
          kWidth, kHeight, kWidth, kHeight);
  svg += fmt("<rect width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n", kWidth, kHeight);
  svg += fmt("<text x=\"%.1f\" y=\"30\" font-size=\"17\" font-weight=\"bold\" fill=\"#222\" "
             "text-anchor=\"middle\">",
             kLeft + pw / 2) +
         xml_escape(title) + "</text>\n";

  // Grid, ticks and tick labels.
  svg += "<g font-size=\"12\" fill=\"#444\">\n";
  const double x_first = std::ceil(xa.lo / xa.step - 1e-9) * xa.step;
  for (double x = x_first; x <= xa.hi + 1e-9 * xa.step; x += xa.step) {
    const double px = sx(x);
    svg += fmt("<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n", px,
               kTop, px, kTop + ph);
    svg += fmt("<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#444\"/>\n", px,
               kTop + ph, px, kTop + ph + 5);
    svg += fmt("<text x=\"%.2f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", px,
               kTop + ph + 19, x + 0.0);
  }
  const int n_y = int(std::round((ya.hi - ya.lo) / ya.step));
  for (int i = 0; i <= n_y; ++i) {
    const double y = ya.lo + i * ya.step;
    const double py = sy(y);
    svg += fmt("<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#e6e6e6\"/>\n",
               kLeft, py, kLeft + pw, py);
    svg += fmt("<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"#444\"/>\n",
               kLeft - 5, py, kLeft, py);
    svg += fmt("<text x=\"%.1f\" y=\"%.2f\" text-anchor=\"end\">%.*f</text>\n", kLeft - 8, py + 4,
               ya.decimals, std::fabs(y) < 0.5 * ya.step ? 0.0 : y);
  }
  svg += "</g>\n";

  // Frame and axis labels.
  svg +=
      fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
          "stroke=\"#444\"/>\n",
          kLeft, kTop, pw, ph);
  svg +=
      fmt("<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" fill=\"#222\" "
          "text-anchor=\"middle\">step</text>\n",
          kLeft + pw / 2, kHeight - 14);
  svg +=
      fmt("<text x=\"18\" y=\"%.1f\" font-size=\"13\" fill=\"#222\" text-anchor=\"middle\" "
          "transform=\"rotate(-90 18 %.1f)\">loss</text>\n",
          kTop + ph / 2, kTop + ph / 2);
  if (empty) {
    svg +=
        fmt("<text x=\"%.1f\" y=\"%.1f\" font-size=\"14\" fill=\"#888\" "
            "text-anchor=\"middle\">no data</text>\n",
            kLeft + pw / 2, kTop + ph / 2);
  }

  // Curves (the axes span every finite point, so nothing needs clipping; markers at the
  // edges stay whole).
  svg += "<g fill=\"none\" stroke-linejoin=\"round\">\n";
  // Many noisy train points: the raw line is drawn faint under a smoothed one whose window is
  // about 1/30 of the run.
  const bool smooth = train.size() >= 30;
  if (!train.empty()) {
    svg += fmt("<polyline class=\"train\" stroke=\"%s\" stroke-width=\"1.5\"%s points=\"",
               kTrainColor, smooth ? " stroke-opacity=\"0.3\"" : "") +
           points(train) + "\"/>\n";
  }
  if (smooth) {
    // A centred moving average (no lag behind a falling loss), narrowing towards the ends.
    const size_t n = train.size(), half = std::max<size_t>(1, n / 60);
    std::vector<double> prefix(n + 1, 0.0);
    for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + train[i].y;
    std::vector<Point> avg(n);
    for (size_t i = 0; i < n; ++i) {
      const size_t h = std::min({half, i, n - 1 - i});  // symmetric, so unbiased on slopes
      const size_t lo = i - h, hi = i + h + 1;
      avg[i] = {train[i].x, (prefix[hi] - prefix[lo]) / double(hi - lo)};
    }
    svg += fmt("<polyline class=\"train-smoothed\" stroke=\"%s\" stroke-width=\"2\" points=\"",
               kTrainColor) +
           points(avg) + "\"/>\n";
  }
  if (train.size() == 1) {
    svg += fmt("<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>\n", sx(train[0].x),
               sy(train[0].y), kTrainColor);
  }
  if (val.size() > 1) {
    svg += fmt("<polyline class=\"val\" stroke=\"%s\" stroke-width=\"1.5\" "
               "stroke-dasharray=\"5 3\" points=\"",
               kValColor) +
           points(val) + "\"/>\n";
  }
  for (const Point& p : val) {
    svg +=
        fmt("<circle class=\"val-point\" cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\" fill=\"%s\" "
            "stroke=\"#fff\" stroke-width=\"1\"/>\n",
            sx(p.x), sy(p.y), kValColor);
  }
  svg += "</g>\n";

  // Legend, top right inside the plot.
  std::vector<std::pair<std::string, std::string>> entries;  // (swatch svg, label)
  if (!train.empty()) {
    entries.push_back({fmt("<line x1=\"0\" y1=\"0\" x2=\"22\" y2=\"0\" stroke=\"%s\" "
                           "stroke-width=\"2\"%s/>",
                           kTrainColor, smooth ? " stroke-opacity=\"0.3\"" : ""),
                       "train loss"});
  }
  if (smooth) {
    entries.push_back({fmt("<line x1=\"0\" y1=\"0\" x2=\"22\" y2=\"0\" stroke=\"%s\" "
                           "stroke-width=\"2\"/>",
                           kTrainColor),
                       "train loss (smoothed)"});
  }
  if (!val.empty()) {
    entries.push_back({fmt("<line x1=\"0\" y1=\"0\" x2=\"22\" y2=\"0\" stroke=\"%s\" "
                           "stroke-width=\"1.5\" stroke-dasharray=\"5 3\"/><circle cx=\"11\" "
                           "cy=\"0\" r=\"3.5\" fill=\"%s\" stroke=\"#fff\"/>",
                           kValColor, kValColor),
                       "validation loss"});
  }
  if (!entries.empty()) {
    const double lw = smooth ? 182 : 138, lh = 10 + 20.0 * double(entries.size());
    const double lx = kLeft + pw - lw - 10, ly = kTop + 10;
    svg += fmt("<g transform=\"translate(%.1f %.1f)\" font-size=\"12\" fill=\"#222\">\n", lx, ly);
    svg +=
        fmt("<rect width=\"%.0f\" height=\"%.0f\" rx=\"4\" fill=\"#ffffff\" "
            "fill-opacity=\"0.9\" stroke=\"#bbb\"/>\n",
            lw, lh);
    for (size_t i = 0; i < entries.size(); ++i) {
      const double ey = 15 + 20.0 * double(i);
      svg += fmt("<g transform=\"translate(10 %.0f)\">", ey) + entries[i].first + "</g>";
      svg += fmt("<text x=\"40\" y=\"%.0f\">", ey + 4) + entries[i].second + "</text>\n";
    }
    svg += "</g>\n";
  }
  svg += "</svg>\n";
  return svg;
}

void write_loss_curve_svg(const std::string& path, const MetricsLog& log, std::string_view title) {
  write_file_atomic(path, loss_curve_svg(log, title));
}

}  // namespace trit::engine
