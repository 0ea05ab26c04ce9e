// AdamW against an independent double-precision AdamW, gradient clipping on known vectors, and
// the learning-rate schedules against transformers' closed forms written out again here.
#include "train/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <span>
#include <vector>

#include "core/adamw.h"
#include "core/error.h"
#include "support/numeric.h"
#include "train/schedule.h"

namespace trit::engine {
namespace {

// Textbook AdamW (Loshchilov & Hutter, as torch.optim.AdamW documents it), in double:
// p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
struct RefAdamW {
  double b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  int t = 0;
  std::vector<double> m, v;

  void step(std::vector<double>& p, const std::vector<double>& g, double lr) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] -= lr * wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double m_hat = m[i] / (1 - std::pow(b1, t));
      const double v_hat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

// A deterministic gradient that changes sign and size from step to step.
double grad_at(int step, size_t i, double p) {
  return 0.3 * std::sin(1.7 * double(i) + 0.9 * step) + 0.05 * p + (i == 2 ? 1e-3 : 0.0);
}

TEST(AdamW, MatchesADoublePrecisionReferenceOverSteps) {
  for (const double wd : {0.0, 0.01, 0.1}) {
    AdamWOptions o;
    o.weight_decay = wd;
    AdamW opt(o);
    RefAdamW ref;
    ref.wd = wd;
    std::vector<float> p = {0.5f, -1.25f, 0.0f, 2.0f, -0.01f};
    std::vector<double> pd(p.begin(), p.end());
    std::vector<float> g(p.size());
    for (int step = 1; step <= 8; ++step) {
      const double lr = 0.01 * step;  // a changing lr, as a schedule gives
      std::vector<double> gd(p.size());
      for (size_t i = 0; i < p.size(); ++i) {
        gd[i] = grad_at(step, i, pd[i]);
        g[i] = float(gd[i]);
        gd[i] = double(g[i]);  // both see the same f32 gradient
      }
      opt.step({{"w", p.data(), g.data(), int64_t(p.size())}}, lr);
      ref.step(pd, gd, lr);
      for (size_t i = 0; i < p.size(); ++i) {
        EXPECT_NEAR(p[i], pd[i], 1e-5 * std::max(1.0, std::fabs(pd[i])))
            << "wd " << wd << " step " << step << " element " << i;
      }
    }
    EXPECT_EQ(opt.t(), 8);
    const AdamWMoments& s = opt.moments().at("w");
    EXPECT_EQ(s.step, 8);
    for (size_t i = 0; i < p.size(); ++i) {
      EXPECT_NEAR(s.m[i], ref.m[i], 1e-6);
      EXPECT_NEAR(s.v[i], ref.v[i], 1e-7);
    }
  }
}

TEST(AdamW, MatchesPyTorchBitForBit) {
  // torch 2.11 on CPU: AdamW([a, b], weight_decay=0.1, foreach=False), lr set per step, these
  // exactly representable values; the expected floats are what torch printed (float.hex).
  const std::vector<std::vector<float>> ga = {{0.015625f, -0.25f, 0.5f, 0.0f, -1.0f},
                                              {0.125f, 0.25f, -0.5f, 0.0078125f, 2.0f},
                                              {-0.0625f, 0.375f, 0.5f, -0.5f, 0.25f},
                                              {0.03125f, -0.125f, -0.75f, 1.0f, 0.5f}};
  const std::vector<std::vector<float>> gb = {
      {1.0f, -0.5f, 0.25f}, {0.5f, 0.5f, -0.125f}, {-0.25f, 0.75f, 0.0f}, {0.0625f, -1.0f, 0.5f}};
  const double lrs[4] = {1e-2, 5e-3, 2e-2, 1e-2};
  std::vector<float> a = {0.5f, -0.25f, 0.125f, 1.5f, -0.03125f}, b = {0.75f, -1.0f, 0.0625f};
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW opt(o);
  for (int s = 0; s < 4; ++s) {
    opt.step({{"a", a.data(), ga[s].data(), 5}, {"b", b.data(), gb[s].data(), 3}}, lrs[s]);
  }
  EXPECT_EQ(a, (std::vector<float>{0x1.e5da5ap-2f, -0x1.019ca2p-2f, 0x1.c18e32p-4f, 0x1.7fce4ep+0f,
                                   -0x1.173c9ap-5f}));
  EXPECT_EQ(b, (std::vector<float>{0x1.6e8126p-1f, -0x1.fd2f1ep-1f, 0x1.4f30b4p-5f}));
  EXPECT_EQ(opt.moments().at("a").m,
            (std::vector<float>{0x1.1f2e4ap-7f, 0x1.7d566ep-6f, -0x1.16f006p-5f, 0x1.c7be76p-5f,
                                0x1.4af4f0p-3f}));
  EXPECT_EQ(opt.moments().at("a").v,
            (std::vector<float>{0x1.5b8ee6p-16f, 0x1.266fe8p-12f, 0x1.57abcap-10f, 0x1.47a164p-10f,
                                0x1.5b6f7cp-8f}));
}

// adamw_update over a whole tensor (eight lanes at a time where the CPU has them, then the
// rest) gives every element the bits of the same update applied to that element alone (the
// scalar loop): both lerp forms, with and without decay and a clipping factor.
TEST(AdamW, ATensorAtOnceGivesEachElementAloneBits) {
  const int64_t n = 1003;  // not a multiple of eight: a tail after the lanes
  const std::vector<float> p0 = test::randn(n, 1), g = test::randn(n, 2, 0.1f),
                           m0 = test::randn(n, 3, 0.01f);
  std::vector<float> v0 = test::randn(n, 4, 1e-3f);
  for (float& x : v0) x = x * x;
  for (float one_minus_beta1 : {0.1f, 0.75f}) {
    for (auto [decay, scale] : {std::pair{1.0f, 1.0f}, {0.999f, 0.37f}}) {
      const AdamWScalars k{decay, one_minus_beta1, 0.999f, 0.001f, 0.0447f, 1e-8f, -0.002f};
      std::vector<float> p = p0, m = m0, v = v0;
      adamw_update(p.data(), g.data(), m.data(), v.data(), n, k, scale);
      std::vector<float> pe = p0, me = m0, ve = v0;
      for (int64_t i = 0; i < n; ++i) adamw_update(&pe[i], &g[i], &me[i], &ve[i], 1, k, scale);
      EXPECT_EQ(p, pe) << one_minus_beta1 << " " << decay;
      EXPECT_EQ(m, me) << one_minus_beta1 << " " << decay;
      EXPECT_EQ(v, ve) << one_minus_beta1 << " " << decay;
      EXPECT_NE(p, p0);
    }
  }
}

TEST(AdamW, FirstStepIsDecayThenLrTimesSignOfGrad) {
  // With zero moments, m_hat = g and v_hat = g^2: p1 = p0 (1 - lr wd) - lr g / (|g| + eps).
  AdamWOptions o;
  o.weight_decay = 0.5;
  AdamW opt(o);
  std::vector<float> p = {1.0f, -2.0f, 3.0f};
  const std::vector<float> g = {0.25f, -4.0f, 1e-3f};
  opt.step({{"w", p.data(), g.data(), 3}}, 0.1);
  EXPECT_NEAR(p[0], 1.0 * 0.95 - 0.1, 1e-6);
  EXPECT_NEAR(p[1], -2.0 * 0.95 + 0.1, 1e-6);
  EXPECT_NEAR(p[2], 3.0 * 0.95 - 0.1 * 1e-3 / (1e-3 + 1e-8), 1e-6);
}

TEST(AdamW, SkipsTensorsWithoutGradAndKeepsPerTensorSteps) {
  AdamW opt;
  std::vector<float> a = {1.0f}, b = {1.0f};
  const std::vector<float> ga = {0.5f}, gb = {0.5f};
  opt.step({{"a", a.data(), ga.data(), 1}, {"b", b.data(), nullptr, 1}}, 0.1);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(opt.moments().count("b"), 0u);
  // "b" joins later: its bias correction starts from its own first step, as in PyTorch, so
  // its first update equals a's first update.
  const float a_after_1 = a[0];
  opt.step({{"a", a.data(), ga.data(), 1}, {"b", b.data(), gb.data(), 1}}, 0.1);
  EXPECT_EQ(opt.moments().at("a").step, 2);
  EXPECT_EQ(opt.moments().at("b").step, 1);
  EXPECT_EQ(b[0], a_after_1);
  EXPECT_EQ(opt.t(), 2);
}

TEST(AdamW, RejectsALengthChangeAndBadOptions) {
  AdamW opt;
  std::vector<float> p(4, 1.0f), g(4, 0.1f);
  opt.step({{"w", p.data(), g.data(), 4}}, 0.1);
  EXPECT_THROW(opt.step({{"w", p.data(), g.data(), 3}}, 0.1), Error);
  EXPECT_THROW(opt.step({{"w", p.data(), g.data(), 4}}, -1.0), Error);
  AdamWOptions bad;
  bad.beta1 = 1.0;
  EXPECT_THROW(AdamW{bad}, Error);
}

TEST(AdamW, SaveAndLoadContinueBitForBit) {
  std::vector<float> p1 = {0.1f, 0.2f, -0.3f}, q1 = {5.0f};
  std::vector<float> g = {0.01f, -0.2f, 0.3f}, h = {-1.0f};
  AdamW a;
  for (int s = 0; s < 3; ++s) {
    a.step({{"p", p1.data(), g.data(), 3}, {"q", q1.data(), h.data(), 1}}, 0.05);
  }
  const std::string blob = a.save();
  std::vector<float> p2 = p1, q2 = q1;
  AdamW b;
  b.load(blob);
  EXPECT_EQ(b.t(), 3);
  for (int s = 0; s < 3; ++s) {
    g[0] += 0.1f;
    a.step({{"p", p1.data(), g.data(), 3}, {"q", q1.data(), h.data(), 1}}, 0.05);
    b.step({{"p", p2.data(), g.data(), 3}, {"q", q2.data(), h.data(), 1}}, 0.05);
  }
  EXPECT_EQ(p1, p2);
  EXPECT_EQ(q1, q2);
  EXPECT_EQ(a.save(), b.save());

  AdamW c;
  EXPECT_THROW(c.load(blob.substr(0, blob.size() - 1)), Error);
  EXPECT_THROW(c.load(blob + "x"), Error);
  EXPECT_THROW(c.load("NOTADAMW" + blob.substr(8)), Error);
  EXPECT_THROW(c.load(""), Error);

  // The same state through named vectors.
  AdamW d;
  d.set_state(a.t(), a.moments());
  EXPECT_EQ(d.save(), a.save());
}

// --- gradient clipping ---

TEST(ClipGradNorm, ScalesByMaxNormOverTotalNorm) {
  std::vector<float> a = {3.0f, 4.0f}, b = {12.0f};
  std::vector<std::span<float>> grads = {a, b};
  const float norm = clip_grad_norm(grads, 6.5f);
  EXPECT_FLOAT_EQ(norm, 13.0f);  // sqrt(5^2 + 12^2)
  const double coef = 6.5 / (13.0 + 1e-6);
  EXPECT_NEAR(a[0], 3.0 * coef, 1e-6);
  EXPECT_NEAR(a[1], 4.0 * coef, 1e-6);
  EXPECT_NEAR(b[0], 12.0 * coef, 1e-6);
  const float after = clip_grad_norm(grads, 0.0f);  // measure only
  EXPECT_NEAR(after, 6.5, 1e-5);
}

TEST(ClipGradNorm, LeavesSmallNormsAndMeasureOnlyAlone) {
  std::vector<float> a = {0.3f, -0.4f};
  std::vector<std::span<float>> grads = {a};
  EXPECT_FLOAT_EQ(clip_grad_norm(grads, 1.0f), 0.5f);
  EXPECT_EQ(a, (std::vector<float>{0.3f, -0.4f}));
  EXPECT_FLOAT_EQ(clip_grad_norm(grads, 0.0f), 0.5f);
  EXPECT_EQ(a, (std::vector<float>{0.3f, -0.4f}));
  // The norm exactly at max_norm is still scaled by max / (max + 1e-6) < 1, as in torch.
  std::vector<float> c = {3.0f, 4.0f};
  std::vector<std::span<float>> gc = {c};
  clip_grad_norm(gc, 5.0f);
  EXPECT_LT(c[0], 3.0f);
  EXPECT_NEAR(c[0], 3.0f, 1e-5);
}

TEST(ClipGradNorm, EmptyAndNonFinite) {
  std::vector<std::span<float>> none;
  EXPECT_EQ(clip_grad_norm(none, 1.0f), 0.0f);
  std::vector<float> a = {1.0f, NAN}, b = {INFINITY};
  std::vector<std::span<float>> ga = {a}, gb = {b};
  EXPECT_TRUE(std::isnan(clip_grad_norm(ga, 1.0f)));
  EXPECT_EQ(a[0], 1.0f);
  EXPECT_TRUE(std::isinf(clip_grad_norm(gb, 1.0f)));
  EXPECT_TRUE(std::isinf(b[0]));
}

// --- learning-rate schedules: transformers' lambdas written out independently ---

double warm(int64_t s, int64_t w) {
  return double(s) / double(std::max<int64_t>(1, w));
}

double ref_constant(int64_t s, int64_t w) {
  return s < w ? warm(s, w) : 1.0;
}

double ref_linear(int64_t s, int64_t w, int64_t n) {
  if (s < w) return warm(s, w);
  return std::max(0.0, double(n - s) / double(std::max<int64_t>(1, n - w)));
}

double ref_cosine(int64_t s, int64_t w, int64_t n, double min_ratio) {
  if (s < w) return warm(s, w);
  const double prog = double(s - w) / double(std::max<int64_t>(1, n - w));
  const double c = 0.5 * (1.0 + std::cos(std::numbers::pi * prog));
  return std::max(0.0, min_ratio + (1.0 - min_ratio) * c);
}

TEST(Schedule, ClosedFormsAtEveryStep) {
  const double base = 3e-4;
  for (const int64_t warmup : {0, 1, 5}) {
    for (const int64_t total : {1, 10, 37}) {
      for (int64_t s = 0; s <= total + 2; ++s) {
        ScheduleOptions o;
        o.base_lr = base;
        o.warmup = warmup;
        o.total_steps = total;
        o.kind = ScheduleKind::kConstant;
        EXPECT_NEAR(schedule_lr(o, s), base * ref_constant(s, warmup), 1e-15);
        o.kind = ScheduleKind::kLinear;
        EXPECT_NEAR(schedule_lr(o, s), base * ref_linear(s, warmup, total), 1e-15)
            << "linear w " << warmup << " n " << total << " s " << s;
        o.kind = ScheduleKind::kCosine;
        if (s <= total) {  // past the end transformers' cosine rises again; not compared
          EXPECT_NEAR(schedule_lr(o, s), base * ref_cosine(s, warmup, total, 0.0), 1e-15)
              << "cosine w " << warmup << " n " << total << " s " << s;
          o.min_lr_ratio = 0.1;
          EXPECT_NEAR(schedule_lr(o, s), base * ref_cosine(s, warmup, total, 0.1), 1e-15);
        }
      }
    }
  }
}

TEST(Schedule, WarmupBoundariesAndEndpoints) {
  ScheduleOptions o;
  o.base_lr = 1.0;
  o.warmup = 4;
  o.total_steps = 14;
  for (ScheduleKind k : {ScheduleKind::kConstant, ScheduleKind::kLinear, ScheduleKind::kCosine}) {
    o.kind = k;
    EXPECT_EQ(schedule_factor(o, 0), 0.0) << schedule_name(k);  // first step at lr 0
    EXPECT_EQ(schedule_factor(o, 1), 0.25);
    EXPECT_EQ(schedule_factor(o, 3), 0.75);
    EXPECT_EQ(schedule_factor(o, 4), 1.0);  // warmup done: the full lr
  }
  o.kind = ScheduleKind::kLinear;
  EXPECT_DOUBLE_EQ(schedule_factor(o, 9), 0.5);
  EXPECT_EQ(schedule_factor(o, 14), 0.0);
  EXPECT_EQ(schedule_factor(o, 20), 0.0);
  o.kind = ScheduleKind::kCosine;
  EXPECT_NEAR(schedule_factor(o, 9), 0.5, 1e-15);
  EXPECT_NEAR(schedule_factor(o, 14), 0.0, 1e-15);
  o.min_lr_ratio = 0.2;
  EXPECT_NEAR(schedule_factor(o, 14), 0.2, 1e-15);
  EXPECT_NEAR(schedule_factor(o, 9), 0.6, 1e-15);
  o.kind = ScheduleKind::kConstant;
  EXPECT_EQ(schedule_factor(o, 1000), 1.0);
  // No warmup: the first step runs at the full lr.
  o.warmup = 0;
  EXPECT_EQ(schedule_factor(o, 0), 1.0);
}

TEST(Schedule, ParsesNames) {
  EXPECT_EQ(parse_schedule("constant"), ScheduleKind::kConstant);
  EXPECT_EQ(parse_schedule("linear"), ScheduleKind::kLinear);
  EXPECT_EQ(parse_schedule("cosine"), ScheduleKind::kCosine);
  EXPECT_THROW(parse_schedule("exp"), Error);
  EXPECT_STREQ(schedule_name(ScheduleKind::kCosine), "cosine");
}

}  // namespace
}  // namespace trit::engine
