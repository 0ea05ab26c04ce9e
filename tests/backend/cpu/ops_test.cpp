// The reference ops (backend/cpu/ops.h) and the transposed ternary product (kernels_backward.h):
// analytic gradients of the f32 code against central finite differences of double-precision
// forward passes written here from the formulas, on small random shapes; the transposed
// product against a dense W^T dy (exactly, on integer-valued data) and fast against reference.
#include "backend/cpu/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/cpu/kernels_backward.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/quant.h"

namespace trit::engine {
namespace {

using Vec = std::vector<double>;
using FVec = std::vector<float>;

size_t sz(int64_t n) {
  return static_cast<size_t>(n);
}

// ---- helpers ----

FVec random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  FVec v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

Vec to_d(const FVec& v) {
  return Vec(v.begin(), v.end());
}

double weighted_sum(const Vec& y, const Vec& r) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * r[i];
  return s;
}

// Central differences of f at x, every coordinate, in double.
Vec numeric_grad(Vec x, const std::function<double(const Vec&)>& f, double h = 1e-6) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// The largest |got - want| relative to the largest |want| must stay within rtol.
void expect_grad_near(const FVec& got, const Vec& want, double rtol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0, err = 0;
  size_t worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(want[i]));
    const double e = std::fabs(double(got[i]) - want[i]);
    if (e > err) {
      err = e;
      worst = i;
    }
  }
  ASSERT_GT(scale, 0.0) << what << ": the expected gradient is all zero";
  EXPECT_LE(err / scale, rtol) << what << ": relative error " << err / scale << " at element "
                               << worst << " (got " << got[worst] << ", want " << want[worst]
                               << ", max |grad| " << scale << ")";
}

// The CPU levels this processor can run.
std::vector<CpuLevel> levels() {
  std::vector<CpuLevel> out = {CpuLevel::Scalar};
  if (detect_cpu_level() >= CpuLevel::Avx2) out.push_back(CpuLevel::Avx2);
  if (detect_cpu_level() >= CpuLevel::Avx512Vnni) out.push_back(CpuLevel::Avx512Vnni);
  return out;
}

// ---- double-precision forward passes, from the formulas ----

Vec rms_norm_d(const Vec& x, const Vec& g, int64_t rows, int64_t n, double eps) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += x[sz(r * n + i)] * x[sz(r * n + i)];
    const double s = 1.0 / std::sqrt(ss / double(n) + eps);
    for (int64_t i = 0; i < n; ++i) y[sz(r * n + i)] = x[sz(r * n + i)] * s * g[sz(i)];
  }
  return y;
}

Vec rope_d(Vec x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
           const std::vector<int32_t>& pos, double base) {
  const int64_t half = rope_dim / 2;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t h = 0; h < n_heads; ++h) {
      double* xh = x.data() + (t * n_heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = pos[sz(t)] * std::pow(base, -double(2 * i) / double(rope_dim));
        const double a = xh[i], b = xh[i + half];
        xh[i] = a * std::cos(angle) - b * std::sin(angle);
        xh[i + half] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  }
  return x;
}

double act_d(double g, Activation act) {
  if (act == Activation::Relu2) return g > 0 ? g * g : 0.0;
  return g / (1.0 + std::exp(-g));
}

// q: (T, n_head, hd)   k, v: (T, kv_stride)   out: (T, n_head, hd)
Vec attention_d(const Vec& q, const Vec& k, const Vec& v, int64_t kv_stride, int64_t T,
                int64_t n_head, int64_t n_head_kv, int64_t hd) {
  const int64_t group = n_head / n_head_kv;
  Vec out(sz(T * n_head * hd), 0.0);
  Vec p(sz(T));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < n_head; ++h) {
      const int64_t kvh = h / group;
      double m = -1e300;
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < hd; ++d) {
          dot += q[sz((t * n_head + h) * hd + d)] * k[sz(j * kv_stride + kvh * hd + d)];
        }
        p[sz(j)] = dot / std::sqrt(double(hd));
        m = std::max(m, p[sz(j)]);
      }
      double sum = 0;
      for (int64_t j = 0; j <= t; ++j) sum += (p[sz(j)] = std::exp(p[sz(j)] - m));
      for (int64_t j = 0; j <= t; ++j) {
        for (int64_t d = 0; d < hd; ++d) {
          out[sz((t * n_head + h) * hd + d)] +=
              p[sz(j)] / sum * v[sz(j * kv_stride + kvh * hd + d)];
        }
      }
    }
  }
  return out;
}

double cross_entropy_d(const Vec& logits, const std::vector<int32_t>& targets, const FVec& mask,
                       int64_t T, int64_t V, double norm) {
  double loss = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (mask[sz(t)] == 0) continue;
    double m = -1e300;
    for (int64_t i = 0; i < V; ++i) m = std::max(m, logits[sz(t * V + i)]);
    double s = 0;
    for (int64_t i = 0; i < V; ++i) s += std::exp(logits[sz(t * V + i)] - m);
    loss += mask[sz(t)] * (m + std::log(s) - logits[sz(t * V + targets[sz(t)])]);
  }
  return loss / std::max(norm, 1.0);
}

// y (T, n_out) = x (T, n_in) W^T, W (n_out, n_in); w0 the first row of W used
Vec matmul_d(const Vec& x, const Vec& w, int64_t T, int64_t n_in, int64_t n_out, int64_t w0 = 0) {
  Vec y(sz(T * n_out), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t o = 0; o < n_out; ++o) {
      double s = 0;
      for (int64_t k = 0; k < n_in; ++k) {
        s += x[sz(t * n_in + k)] * w[sz((w0 + o) * n_in + k)];
      }
      y[sz(t * n_out + o)] = s;
    }
  }
  return y;
}

// ---- rms_norm ----

TEST(OpsBackward, RmsNormDxAndDg) {
  const int64_t rows = 3, n = 37;
  const float eps = 1e-5f;
  const FVec x = random_floats(sz(rows * n), 1, -2.0f, 2.0f);
  const FVec g = random_floats(sz(n), 2, 0.5f, 1.5f);
  const FVec r = random_floats(sz(rows * n), 3);  // dL/dy for L = sum(r * y)
  FVec y(x.size()), rstd(sz(rows));
  rms_norm_forward(x.data(), g.data(), rows, n, eps, y.data(), rstd.data());

  const FVec dx0 = random_floats(x.size(), 4);  // dx accumulates on what it holds
  FVec dx = dx0, dg(sz(n), 0.0f);
  rms_norm_backward(dx.data(), r.data(), x.data(), g.data(), rstd.data(), rows, n, dg.data());
  for (size_t i = 0; i < dx.size(); ++i) dx[i] -= dx0[i];

  const Vec want_dx = numeric_grad(to_d(x), [&](const Vec& xv) {
    return weighted_sum(rms_norm_d(xv, to_d(g), rows, n, eps), to_d(r));
  });
  const Vec want_dg = numeric_grad(to_d(g), [&](const Vec& gv) {
    return weighted_sum(rms_norm_d(to_d(x), gv, rows, n, eps), to_d(r));
  });
  expect_grad_near(dx, want_dx, 1e-5, "rms_norm dx");
  expect_grad_near(dg, want_dg, 1e-5, "rms_norm dg");

  FVec dx_no_dg(x.size(), 0.0f);  // dg may be null
  rms_norm_backward(dx_no_dg.data(), r.data(), x.data(), g.data(), rstd.data(), rows, n);
  expect_grad_near(dx_no_dg, want_dx, 1e-5, "rms_norm dx without dg");
}

// ---- rope ----

TEST(OpsBackward, RopeIsTheInverseRotation) {
  const int64_t T = 4, H = 3, hd = 8, rope_dim = 6;  // partial rotation: dims 6, 7 pass through
  const std::vector<int32_t> pos = {0, 3, 7, 20};
  const float base = 10000.0f;
  const FVec x = random_floats(sz(T * H * hd), 5);
  const FVec r = random_floats(x.size(), 6);

  FVec dx = r;
  rope_backward(dx.data(), T, H, hd, rope_dim, pos.data(), base);
  const Vec want = numeric_grad(to_d(x), [&](const Vec& xv) {
    return weighted_sum(rope_d(xv, T, H, hd, rope_dim, pos, base), to_d(r));
  });
  expect_grad_near(dx, want, 1e-5, "rope dx");

  FVec round_trip = x;  // backward undoes forward
  rope_forward(round_trip.data(), T, H, hd, rope_dim, pos.data(), base);
  rope_backward(round_trip.data(), T, H, hd, rope_dim, pos.data(), base);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(round_trip[i], x[i], 1e-6) << i;
}

// ---- gated activation ----

TEST(OpsBackward, GatedActRelu2AndSilu) {
  const int64_t n = 64;
  const FVec gate = random_floats(sz(n), 7, -3.0f, 3.0f);  // about half negative
  const FVec up = random_floats(sz(n), 8, -2.0f, 2.0f);
  const FVec r = random_floats(sz(n), 9);
  for (Activation act : {Activation::Relu2, Activation::Silu}) {
    const std::string name = act == Activation::Relu2 ? "relu2" : "silu";
    const auto loss = [&](const Vec& g, const Vec& u) {
      double s = 0;
      for (size_t i = 0; i < g.size(); ++i) s += act_d(g[i], act) * u[i] * r[i];
      return s;
    };
    FVec dgate(sz(n), 0.5f), dup(sz(n), -0.25f);  // accumulated onto
    gated_act_backward(dgate.data(), dup.data(), r.data(), gate.data(), up.data(), n, act);
    for (float& v : dgate) v -= 0.5f;
    for (float& v : dup) v += 0.25f;
    expect_grad_near(dgate,
                     numeric_grad(to_d(gate), [&](const Vec& g) { return loss(g, to_d(up)); }),
                     1e-5, name + " dgate");
    expect_grad_near(dup, numeric_grad(to_d(up), [&](const Vec& u) { return loss(to_d(gate), u); }),
                     1e-5, name + " dup");
    if (act == Activation::Relu2) {
      for (int64_t i = 0; i < n; ++i) {
        if (gate[sz(i)] <= 0) {
          EXPECT_EQ(dgate[sz(i)], 0.0f) << i;
          EXPECT_EQ(dup[sz(i)], 0.0f) << i;
        }
      }
    }
  }
}

// ---- attention ----

TEST(OpsBackward, AttentionGqa) {
  const int64_t T = 7, H = 4, Hkv = 2, hd = 8;
  const int64_t kv_stride = Hkv * hd + 3;  // padded rows: the padding is never touched
  const FVec q = random_floats(sz(T * H * hd), 10, -1.5f, 1.5f);
  const FVec k = random_floats(sz(T * kv_stride), 11, -1.5f, 1.5f);
  const FVec v = random_floats(sz(T * kv_stride), 12);
  const FVec r = random_floats(q.size(), 13);

  // the double forward agrees with attention_forward
  FVec out(q.size()),
      scratch(sz(std::max(attention_backward_scratch(T, hd), attention_forward_scratch(T, hd))));
  attention_forward(q.data(), k.data(), v.data(), kv_stride, T, 0, H, Hkv, hd, 0, H, out.data(),
                    scratch.data());
  const Vec out_d = attention_d(to_d(q), to_d(k), to_d(v), kv_stride, T, H, Hkv, hd);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], out_d[i], 1e-5) << i;

  FVec dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
  attention_backward(dq.data(), dk.data(), dv.data(), r.data(), q.data(), k.data(), v.data(),
                     kv_stride, T, H, Hkv, hd, 0, Hkv, scratch.data());
  const auto loss = [&](const Vec& qv, const Vec& kv, const Vec& vv) {
    return weighted_sum(attention_d(qv, kv, vv, kv_stride, T, H, Hkv, hd), to_d(r));
  };
  expect_grad_near(dq,
                   numeric_grad(to_d(q), [&](const Vec& x) { return loss(x, to_d(k), to_d(v)); }),
                   1e-5, "attention dq");
  expect_grad_near(dk,
                   numeric_grad(to_d(k), [&](const Vec& x) { return loss(to_d(q), x, to_d(v)); }),
                   1e-5, "attention dk");
  expect_grad_near(dv,
                   numeric_grad(to_d(v), [&](const Vec& x) { return loss(to_d(q), to_d(k), x); }),
                   1e-5, "attention dv");
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = Hkv * hd; i < kv_stride; ++i) {
      EXPECT_EQ(dk[sz(t * kv_stride + i)], 0.0f);
      EXPECT_EQ(dv[sz(t * kv_stride + i)], 0.0f);
    }
  }

  // one call per KV head (as two threads would) gives the same bits
  FVec dq2(q.size(), 0.0f), dk2(k.size(), 0.0f), dv2(v.size(), 0.0f);
  for (int64_t h = Hkv - 1; h >= 0; --h) {
    attention_backward(dq2.data(), dk2.data(), dv2.data(), r.data(), q.data(), k.data(), v.data(),
                       kv_stride, T, H, Hkv, hd, h, h + 1, scratch.data());
  }
  EXPECT_EQ(dq, dq2);
  EXPECT_EQ(dk, dk2);
  EXPECT_EQ(dv, dv2);

  EXPECT_THROW(attention_backward(dq.data(), dk.data(), dv.data(), r.data(), q.data(), k.data(),
                                  v.data(), kv_stride, T, H, Hkv, hd, 0, Hkv + 1, scratch.data()),
               Error);
}

// ---- cross-entropy ----

TEST(OpsBackward, CrossEntropyWithMask) {
  const int64_t T = 5, V = 11;
  const FVec logits = random_floats(sz(T * V), 14, -4.0f, 4.0f);
  const std::vector<int32_t> targets = {3, -100, 0, 10, 7};  // token 1 is masked out
  const FVec mask = {1, 0, 1, 1, 0};
  const float norm = 6;  // counted tokens of the whole step (other micro-batches hold 4 more)

  FVec nll(sz(T)), lse(sz(T));
  const double loss = cross_entropy_forward(logits.data(), targets.data(), mask.data(), T, V, norm,
                                            nll.data(), lse.data());
  EXPECT_NEAR(loss, cross_entropy_d(to_d(logits), targets, mask, T, V, norm), 1e-6);
  EXPECT_EQ(nll[1], 0.0f);
  EXPECT_EQ(nll[4], 0.0f);

  FVec dlogits(logits.size(), 123.0f);  // overwritten
  cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), mask.data(), lse.data(), T,
                         V, norm);
  const Vec want = numeric_grad(
      to_d(logits), [&](const Vec& x) { return cross_entropy_d(x, targets, mask, T, V, norm); });
  expect_grad_near(dlogits, want, 1e-5, "cross_entropy dlogits");
  for (int64_t i = 0; i < V; ++i) EXPECT_EQ(dlogits[sz(V + i)], 0.0f);

  // without lse, and in place over the logits: the same bits
  FVec in_place = logits;
  cross_entropy_backward(in_place.data(), in_place.data(), targets.data(), mask.data(), nullptr, T,
                         V, norm);
  EXPECT_EQ(in_place, dlogits);

  // no mask: every token counts; norm below 1 acts as 1
  const std::vector<int32_t> all_targets = {3, 1, 0, 10, 7};
  const FVec ones(sz(T), 1.0f);
  EXPECT_NEAR(cross_entropy_forward(logits.data(), all_targets.data(), nullptr, T, V, float(T)),
              cross_entropy_d(to_d(logits), all_targets, ones, T, V, double(T)), 1e-6);
  const FVec zeros(sz(T), 0.0f);
  EXPECT_EQ(cross_entropy_forward(logits.data(), targets.data(), zeros.data(), T, V, 0.0f), 0.0);

  // a counted token with a target outside the vocabulary is an error
  EXPECT_THROW(cross_entropy_forward(logits.data(), targets.data(), ones.data(), T, V, 5.0f),
               Error);
  EXPECT_THROW(cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), ones.data(),
                                      nullptr, T, V, 5.0f),
               Error);
}

TEST(OpsBackward, CrossEntropyIsStableForLargeLogits) {
  const int64_t T = 2, V = 5;
  FVec logits = random_floats(sz(T * V), 15);
  const std::vector<int32_t> targets = {1, 4};
  FVec dl(logits.size()), dl_big(logits.size());
  const double loss = cross_entropy_forward(logits.data(), targets.data(), nullptr, T, V, 2.0f);
  cross_entropy_backward(dl.data(), logits.data(), targets.data(), nullptr, nullptr, T, V, 2.0f);
  for (float& x : logits) x += 5000.0f;  // exp would overflow without the max subtracted
  const double loss_big = cross_entropy_forward(logits.data(), targets.data(), nullptr, T, V, 2.0f);
  cross_entropy_backward(dl_big.data(), logits.data(), targets.data(), nullptr, nullptr, T, V,
                         2.0f);
  EXPECT_NEAR(loss_big, loss, 2e-3);  // 5000 + x rounds x to about 2.4e-4
  for (size_t i = 0; i < dl.size(); ++i) EXPECT_NEAR(dl_big[i], dl[i], 1e-3) << i;
}

// ---- f32 matrix product ----

TEST(OpsBackward, MatmulF32) {
  const int64_t T = 5, n_in = 37, n_out = 7;
  const FVec x = random_floats(sz(T * n_in), 16);
  const FVec w = random_floats(sz(n_out * n_in), 17);
  const FVec r = random_floats(sz(T * n_out), 18);

  FVec y(sz(T * n_out), 99.0f);  // overwritten
  matmul_f32_forward(x.data(), w.data(), n_in, n_out, y.data(), 0, 2);
  matmul_f32_forward(x.data(), w.data(), n_in, n_out, y.data(), 2, T);
  const Vec y_d = matmul_d(to_d(x), to_d(w), T, n_in, n_out);
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], y_d[i], 1e-5) << i;

  FVec dx(x.size(), 0.0f), dw(w.size(), 0.0f);
  matmul_f32_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), T, n_in, n_out);
  expect_grad_near(dx,
                   numeric_grad(to_d(x),
                                [&](const Vec& xv) {
                                  return weighted_sum(matmul_d(xv, to_d(w), T, n_in, n_out),
                                                      to_d(r));
                                }),
                   1e-5, "matmul dx");
  expect_grad_near(dw,
                   numeric_grad(to_d(w),
                                [&](const Vec& wv) {
                                  return weighted_sum(matmul_d(to_d(x), wv, T, n_in, n_out),
                                                      to_d(r));
                                }),
                   1e-5, "matmul dw");

  // split over tokens and over rows of W (blocks of four and the rest): the same bits
  FVec dx2(x.size(), 0.0f), dw2(w.size(), 0.0f);
  matmul_f32_backward_dx(dx2.data(), r.data(), w.data(), n_in, n_out, 3, T);
  matmul_f32_backward_dx(dx2.data(), r.data(), w.data(), n_in, n_out, 0, 3);
  matmul_f32_backward_dw(dw2.data(), r.data(), x.data(), T, n_in, n_out, 1, n_out);
  matmul_f32_backward_dw(dw2.data(), r.data(), x.data(), T, n_in, n_out, 0, 1);
  EXPECT_EQ(dx, dx2);
  EXPECT_EQ(dw, dw2);

  // accumulation: a second call adds about the same again (the terms are added one by one)
  matmul_f32_backward(dx2.data(), dw2.data(), r.data(), x.data(), w.data(), T, n_in, n_out);
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_NEAR(dx2[i], 2 * dx[i], 1e-5) << i;
  for (size_t i = 0; i < dw.size(); ++i) EXPECT_NEAR(dw2[i], 2 * dw[i], 1e-5) << i;
}

// The kernel under matmul_f32: every level gives the same bits, for widths that exercise
// each strip (16, 8, 4, single columns) and row counts that leave register-tile remainders,
// with A read through both strides.
TEST(OpsBackward, GemmF32AllLevelsAgree) {
  for (int64_t n : {1, 3, 4, 8, 13, 16, 29, 40}) {
    const int64_t m = 11, n_k = 300;  // k spans two chunks of 256
    const FVec a = random_floats(sz(m * n_k), 80);
    const FVec b = random_floats(sz(n_k * n), 81);
    const FVec c0 = random_floats(sz(m * n), 82);
    Vec want(c0.begin(), c0.end());
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t k = 0; k < n_k; ++k) {
          want[sz(i * n + j)] += double(a[sz(k * m + i)]) * b[sz(k * n + j)];  // A^T stored
        }
      }
    }
    FVec first;
    for (CpuLevel level : levels()) {
      FVec c = c0;
      gemm_f32_acc(0, 5, n, n_k, a.data(), 1, m, b.data(), n, c.data(), n, level);
      gemm_f32_acc(5, m, n, n_k, a.data(), 1, m, b.data(), n, c.data(), n, level);
      for (size_t i = 0; i < c.size(); ++i) {
        ASSERT_NEAR(c[i], want[i], 1e-4) << "n=" << n << " at " << cpu_level_name(level);
      }
      if (first.empty()) first = c;
      EXPECT_EQ(c, first) << "n=" << n << " at " << cpu_level_name(level);
    }
  }
}

// ---- transposed ternary product ----

struct TernaryCase {
  DType type;
  int64_t n_in, n_out;
  bool uniform;                // TQ2_0: uniform_scale set (I2_S always uniform)
  std::vector<uint8_t> bytes;  // packed
  Vec dense;                   // (n_out, n_in) d * T
  float uniform_scale = 0;

  TernaryMatrix matrix() const {
    TernaryMatrix m;
    m.type = type;
    m.data = bytes.data();
    m.n_in = n_in;
    m.n_out = n_out;
    m.uniform_scale = uniform_scale;
    return m;
  }
};

// Random trits (a third each) with block scales that are powers of two, so every product and
// every partial sum of small integers is exact in f32.
TernaryCase make_ternary(DType type, int64_t n_in, int64_t n_out, bool uniform, uint32_t seed) {
  std::mt19937 rng(seed);
  TernaryCase c{type, n_in, n_out, uniform, {}, Vec(sz(n_in * n_out))};
  std::vector<int8_t> trits(sz(n_in * n_out));
  for (int8_t& t : trits) t = int8_t(int(rng() % 3) - 1);
  const float scales[] = {0.5f, 0.25f, 1.0f, 2.0f};
  if (type == DType::TQ2_0 || type == DType::TQ1_0) {
    std::vector<float> d(sz(n_in * n_out / 256));
    for (float& s : d) s = uniform ? 0.5f : scales[rng() % 4];
    if (type == DType::TQ1_0) {
      c.bytes.resize(sz(n_in * n_out / 256 * 54));
      pack_tq1_0(trits.data(), d.data(), n_in * n_out, c.bytes.data());
    } else {
      c.bytes.resize(sz(n_in * n_out / 256 * 66));
      pack_tq2_0(trits.data(), d.data(), n_in * n_out, c.bytes.data());
    }
    for (size_t i = 0; i < trits.size(); ++i) c.dense[i] = trits[i] * double(d[i / 256]);
  } else {
    c.bytes.resize(sz(n_in * n_out / 4 + 32));
    pack_i2_s(trits.data(), 0.25f, n_in * n_out, c.bytes.data());
    for (size_t i = 0; i < trits.size(); ++i) c.dense[i] = trits[i] * 0.25;
  }
  c.uniform_scale = ternary_uniform_scale(type, c.bytes.data(), n_in, n_out);
  if (type != DType::I2_S) {
    EXPECT_EQ(c.uniform_scale != 0.0f, uniform);
  }
  return c;
}

// dx (T, n_in) = scale * dy W in double
Vec dense_transposed(const TernaryCase& c, const FVec& dy, int64_t T, double scale) {
  Vec dx(sz(T * c.n_in), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t r = 0; r < c.n_out; ++r) {
      for (int64_t j = 0; j < c.n_in; ++j) {
        dx[sz(t * c.n_in + j)] += scale * dy[sz(t * c.n_out + r)] * c.dense[sz(r * c.n_in + j)];
      }
    }
  }
  return dx;
}

std::string case_name(const TernaryCase& c) {
  return std::string(dtype_name(c.type)) + (c.uniform ? " uniform " : " per-block ") +
         std::to_string(c.n_out) + "x" + std::to_string(c.n_in);
}

TEST(TernaryTransposed, ExactOnIntegerData) {
  // 300 rows: two row blocks; 67 tokens: two token chunks and register-tile remainders;
  // I2_S 384 inputs: a last tile of 128 columns.
  const int64_t T = 67;
  std::vector<TernaryCase> cases;
  cases.push_back(make_ternary(DType::TQ2_0, 512, 300, false, 20));
  cases.push_back(make_ternary(DType::TQ2_0, 256, 40, true, 21));
  cases.push_back(make_ternary(DType::I2_S, 384, 70, true, 22));
  cases.push_back(make_ternary(DType::TQ1_0, 512, 300, false, 20));
  cases.push_back(make_ternary(DType::TQ1_0, 256, 40, true, 21));
  for (const TernaryCase& c : cases) {
    std::mt19937 rng(23);
    FVec dy(sz(T * c.n_out));
    for (float& v : dy) v = float(int(rng() % 9) - 4);
    FVec dx0(sz(T * c.n_in));
    for (float& v : dx0) v = float(int(rng() % 5) - 2);  // accumulated onto
    const float scale = 2.0f;
    const Vec want = dense_transposed(c, dy, T, scale);

    FVec ref = dx0;
    ternary_matmul_transposed_ref(c.matrix(), dy.data(), c.n_out, T, scale, ref.data(), 0, c.n_in);
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_EQ(double(ref[i]), dx0[i] + want[i]) << case_name(c) << " reference, element " << i;
    }
    for (CpuLevel level : levels()) {
      FVec fast = dx0;
      ternary_matmul_transposed(c.matrix(), dy.data(), c.n_out, T, scale, fast.data(), 0, c.n_in,
                                level);
      EXPECT_EQ(fast, ref) << case_name(c) << " at " << cpu_level_name(level);
    }
  }
}

TEST(TernaryTransposed, FastMatchesReferenceBitForBit) {
  const int64_t T = 21;
  for (const TernaryCase& c : {make_ternary(DType::TQ2_0, 768, 270, false, 30),
                               make_ternary(DType::I2_S, 640, 33, true, 31),
                               make_ternary(DType::TQ1_0, 768, 270, false, 30)}) {
    // dy rows with a stride: the first n_out of each row of n_out + 5 are used
    const int64_t stride = c.n_out + 5;
    const FVec dy = random_floats(sz(T * stride), 32);
    const FVec dx0 = random_floats(sz(T * c.n_in), 33);
    FVec ref = dx0;
    ternary_matmul_transposed_ref(c.matrix(), dy.data(), stride, T, 0.75f, ref.data(), 0, c.n_in);
    for (CpuLevel level : levels()) {
      FVec fast = dx0;
      ternary_matmul_transposed(c.matrix(), dy.data(), stride, T, 0.75f, fast.data(), 0, c.n_in,
                                level);
      EXPECT_EQ(fast, ref) << case_name(c) << " at " << cpu_level_name(level);
      // column ranges as threads would split them, aligned or not: the same bits
      FVec split = dx0;
      const int64_t cuts[] = {0, 100, 333, 512, c.n_in};
      for (size_t i = 0; i + 1 < std::size(cuts); ++i) {
        const int64_t c0 = std::min(cuts[i], c.n_in), c1 = std::min(cuts[i + 1], c.n_in);
        ternary_matmul_transposed(c.matrix(), dy.data(), stride, T, 0.75f, split.data(), c0, c1,
                                  level);
      }
      EXPECT_EQ(split, ref) << case_name(c) << " split at " << cpu_level_name(level);
    }
  }
}

// The straight-through model of a bitlinear: the forward with q(x) / s_x as the identity,
// y = out_scale * W x. Its gradient is what the transposed product computes, and the quantised
// forward (quantize_acts + ternary_matmul) stays close to it, so the two kernels agree on the
// layout of W.
TEST(TernaryTransposed, MatchesFiniteDifferencesOfTheSteModel) {
  const int64_t T = 3;
  const float out_scale = 1.5f;
  for (const TernaryCase& c : {make_ternary(DType::TQ2_0, 256, 24, false, 40),
                               make_ternary(DType::I2_S, 128, 16, true, 41)}) {
    const FVec x = random_floats(sz(T * c.n_in), 42);
    const FVec r = random_floats(sz(T * c.n_out), 43);
    const auto ste = [&](const Vec& xv) {
      Vec y = matmul_d(xv, c.dense, T, c.n_in, c.n_out);
      for (double& v : y) v *= out_scale;
      return y;
    };
    FVec dx(x.size(), 0.0f);
    ternary_matmul_transposed(c.matrix(), r.data(), c.n_out, T, out_scale, dx.data(), 0, c.n_in);
    expect_grad_near(
        dx, numeric_grad(to_d(x), [&](const Vec& xv) { return weighted_sum(ste(xv), to_d(r)); }),
        1e-6, case_name(c) + " vs the STE model");

    QuantizedActs xq;
    quantize_acts(x.data(), T, c.n_in, xq);
    FVec y(sz(T * c.n_out));
    ternary_matmul(c.matrix(), xq, y.data(), c.n_out, 0, c.n_out);
    const Vec y_ste = ste(to_d(x));
    double err = 0, mag = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      err = std::max(err, std::fabs(out_scale * y[i] - y_ste[i]));
      mag = std::max(mag, std::fabs(y_ste[i]));
    }
    EXPECT_LT(err / mag, 0.02) << case_name(c) << ": quantised forward vs the STE model";
  }
}

TEST(TernaryTransposed, RejectsBadInput) {
  TernaryCase c = make_ternary(DType::TQ2_0, 256, 4, true, 50);
  FVec dy(4), dx(256);
  EXPECT_THROW(ternary_matmul_transposed(c.matrix(), dy.data(), 4, 1, 1.0f, dx.data(), 0, 257),
               Error);
  TernaryMatrix f32 = c.matrix();
  f32.type = DType::F32;
  EXPECT_THROW(ternary_matmul_transposed(f32, dy.data(), 4, 1, 1.0f, dx.data(), 0, 256), Error);
  EXPECT_THROW(ternary_matmul_transposed_ref(f32, dy.data(), 4, 1, 1.0f, dx.data(), 0, 256), Error);
}

// ---- composed: gradients through a chain of ops ----

// rms_norm -> matmul_f32 (gate and up halves of W, standing in for a LoRA branch) -> gated act
// -> rms_norm -> cross-entropy (the normed values as logits): dL/dW and dL/dx.
TEST(OpsBackward, ChainThroughGatedBlock) {
  const int64_t T = 4, d = 16, n_ff = 12;
  const float eps = 1e-5f;
  const FVec x = random_floats(sz(T * d), 60, -2.0f, 2.0f);
  const FVec w = random_floats(sz(2 * n_ff * d), 61, -0.5f, 0.5f);  // (2 n_ff, d)
  const FVec g1 = random_floats(sz(d), 62, 0.5f, 1.5f);
  const FVec g2 = random_floats(sz(n_ff), 63, 0.5f, 1.5f);
  const std::vector<int32_t> targets = {2, 11, -1, 5};
  const FVec mask = {1, 1, 0, 1};
  const float norm = 3;

  for (Activation act : {Activation::Relu2, Activation::Silu}) {
    const std::string name = act == Activation::Relu2 ? "relu2" : "silu";
    const auto loss_d = [&](const Vec& xv, const Vec& wv) {
      const Vec h = rms_norm_d(xv, to_d(g1), T, d, eps);
      const Vec gate = matmul_d(h, wv, T, d, n_ff, 0);
      const Vec up = matmul_d(h, wv, T, d, n_ff, n_ff);
      Vec a(gate.size());
      for (size_t i = 0; i < a.size(); ++i) a[i] = act_d(gate[i], act) * up[i];
      const Vec z = rms_norm_d(a, to_d(g2), T, n_ff, eps);
      return cross_entropy_d(z, targets, mask, T, n_ff, norm);
    };

    // forward in f32, saving what the backward needs
    FVec h(sz(T * d)), rstd1(sz(T)), gate(sz(T * n_ff)), up(sz(T * n_ff));
    FVec a(sz(T * n_ff)), z(sz(T * n_ff)), rstd2(sz(T));
    const float* w_up = w.data() + n_ff * d;
    rms_norm_forward(x.data(), g1.data(), T, d, eps, h.data(), rstd1.data());
    matmul_f32_forward(h.data(), w.data(), d, n_ff, gate.data(), 0, T);
    matmul_f32_forward(h.data(), w_up, d, n_ff, up.data(), 0, T);
    gated_act_forward(gate.data(), up.data(), T * n_ff, act, a.data());
    rms_norm_forward(a.data(), g2.data(), T, n_ff, eps, z.data(), rstd2.data());
    FVec lse(sz(T));
    const double loss = cross_entropy_forward(z.data(), targets.data(), mask.data(), T, n_ff, norm,
                                              nullptr, lse.data());
    EXPECT_NEAR(loss, loss_d(to_d(x), to_d(w)), 1e-5) << name;

    // backward
    FVec dz(z.size()), da(a.size(), 0.0f), dgate(gate.size(), 0.0f), dup(up.size(), 0.0f);
    FVec dh(h.size(), 0.0f), dw(w.size(), 0.0f), dx(x.size(), 0.0f);
    cross_entropy_backward(dz.data(), z.data(), targets.data(), mask.data(), lse.data(), T, n_ff,
                           norm);
    rms_norm_backward(da.data(), dz.data(), a.data(), g2.data(), rstd2.data(), T, n_ff);
    gated_act_backward(dgate.data(), dup.data(), da.data(), gate.data(), up.data(), T * n_ff, act);
    matmul_f32_backward(dh.data(), dw.data(), dgate.data(), h.data(), w.data(), T, d, n_ff);
    matmul_f32_backward(dh.data(), dw.data() + n_ff * d, dup.data(), h.data(), w_up, T, d, n_ff);
    rms_norm_backward(dx.data(), dh.data(), x.data(), g1.data(), rstd1.data(), T, d);

    expect_grad_near(dw, numeric_grad(to_d(w), [&](const Vec& wv) { return loss_d(to_d(x), wv); }),
                     1e-4, name + " chain dW");
    expect_grad_near(dx, numeric_grad(to_d(x), [&](const Vec& xv) { return loss_d(xv, to_d(w)); }),
                     1e-4, name + " chain dx");
  }
}

// x -> q, k, v projections -> rope on q and k -> GQA attention -> cross-entropy over the
// attention output: dWq, dWk, dWv and dx, as a training step of an attention layer needs them.
TEST(OpsBackward, ChainThroughAttention) {
  const int64_t T = 5, d = 8, H = 4, Hkv = 2, hd = 4, dq_n = H * hd, dkv = Hkv * hd;
  const float base = 10000.0f;
  std::vector<int32_t> pos(sz(T));
  for (int64_t t = 0; t < T; ++t) pos[sz(t)] = int32_t(t);
  const FVec x = random_floats(sz(T * d), 70);
  const FVec wq = random_floats(sz(dq_n * d), 71);
  const FVec wk = random_floats(sz(dkv * d), 72);
  const FVec wv = random_floats(sz(dkv * d), 73);
  const std::vector<int32_t> targets = {1, 15, 7, 0, 9};
  const FVec mask = {1, 1, 1, 0, 1};
  const float norm = 4;

  const auto loss_d = [&](const Vec& xv, const Vec& q_w, const Vec& k_w, const Vec& v_w) {
    const Vec q = rope_d(matmul_d(xv, q_w, T, d, dq_n), T, H, hd, hd, pos, base);
    const Vec k = rope_d(matmul_d(xv, k_w, T, d, dkv), T, Hkv, hd, hd, pos, base);
    const Vec v = matmul_d(xv, v_w, T, d, dkv);
    return cross_entropy_d(attention_d(q, k, v, dkv, T, H, Hkv, hd), targets, mask, T, dq_n, norm);
  };

  FVec q(sz(T * dq_n)), k(sz(T * dkv)), v(sz(T * dkv)), out(sz(T * dq_n));
  FVec scratch(sz(std::max(attention_backward_scratch(T, hd), attention_forward_scratch(T, hd))));
  matmul_f32_forward(x.data(), wq.data(), d, dq_n, q.data(), 0, T);
  matmul_f32_forward(x.data(), wk.data(), d, dkv, k.data(), 0, T);
  matmul_f32_forward(x.data(), wv.data(), d, dkv, v.data(), 0, T);
  rope_forward(q.data(), T, H, hd, hd, pos.data(), base);
  rope_forward(k.data(), T, Hkv, hd, hd, pos.data(), base);
  attention_forward(q.data(), k.data(), v.data(), dkv, T, 0, H, Hkv, hd, 0, H, out.data(),
                    scratch.data());

  FVec dout(out.size()), dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
  FVec dx(x.size(), 0.0f), dwq(wq.size(), 0.0f), dwk(wk.size(), 0.0f), dwv(wv.size(), 0.0f);
  cross_entropy_backward(dout.data(), out.data(), targets.data(), mask.data(), nullptr, T, dq_n,
                         norm);
  attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(),
                     dkv, T, H, Hkv, hd, 0, Hkv, scratch.data());
  rope_backward(dq.data(), T, H, hd, hd, pos.data(), base);
  rope_backward(dk.data(), T, Hkv, hd, hd, pos.data(), base);
  matmul_f32_backward(dx.data(), dwq.data(), dq.data(), x.data(), wq.data(), T, d, dq_n);
  matmul_f32_backward(dx.data(), dwk.data(), dk.data(), x.data(), wk.data(), T, d, dkv);
  matmul_f32_backward(dx.data(), dwv.data(), dv.data(), x.data(), wv.data(), T, d, dkv);

  const Vec xd = to_d(x), qd = to_d(wq), kd = to_d(wk), vd = to_d(wv);
  expect_grad_near(dwq, numeric_grad(qd, [&](const Vec& m) { return loss_d(xd, m, kd, vd); }), 1e-4,
                   "attention chain dWq");
  expect_grad_near(dwk, numeric_grad(kd, [&](const Vec& m) { return loss_d(xd, qd, m, vd); }), 1e-4,
                   "attention chain dWk");
  expect_grad_near(dwv, numeric_grad(vd, [&](const Vec& m) { return loss_d(xd, qd, kd, m); }), 1e-4,
                   "attention chain dWv");
  expect_grad_near(dx, numeric_grad(xd, [&](const Vec& m) { return loss_d(m, qd, kd, vd); }), 1e-4,
                   "attention chain dx");
}

}  // namespace
}  // namespace trit::engine
