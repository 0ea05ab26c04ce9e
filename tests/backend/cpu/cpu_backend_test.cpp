// The CPU backend's ops of training (backend.h: the backward ops, the LoRA branches, the head with
// the loss, the optimizer ops), which the Vulkan parity tests take as their reference: each
// equals the reference function of cpu/ops.h / kernels_backward.h it wraps, bit for bit,
// including the adding into prefilled gradients; and on small shapes the
// gradients agree with finite differences of the backend's own forward ops (directional
// derivatives, 4-point stencil: float evaluation noise swamps single coordinates).
#include "backend/cpu/cpu_backend.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include "backend/cpu/kernels_backward.h"
#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/half.h"
#include "support/numeric.h"
#include "support/vulkan.h"
#include "train/optimizer.h"

// Defined where AddressSanitizer's runtime is in the process (weak: null elsewhere).
extern "C" void __asan_init() __attribute__((weak));

namespace trit::engine {
namespace {

using test::randn;
using test::TensorPtr;
using Vec = std::vector<float>;

class CpuTrainOps : public ::testing::Test {
 protected:
  TensorPtr up(const char* name, int64_t rows, int64_t cols, const Vec& v) {
    return test::upload(b_, name, rows, cols, v);
  }
  Vec get(const DeviceTensor& t) {
    Vec v(size_t(t.rows() * t.cols()));
    b_.read(t, 0, t.rows(), v.data());
    return v;
  }
  // Checks the gradient g of f at 0 (f(v, s) = the loss at params + s v) along g itself (the
  // derivative must be |g|) and along a random direction (g . v), within tol * |g|.
  void expect_directional(const Vec& g, const std::function<double(const Vec& v, double s)>& f,
                          uint64_t seed, const std::string& what, double tol = 2e-3) {
    double gn = 0;
    for (float x : g) gn += double(x) * x;
    gn = std::sqrt(gn);
    ASSERT_GT(gn, 0) << what;
    for (int dir = 0; dir < 2; ++dir) {
      Vec v = dir == 0 ? g : randn(int64_t(g.size()), seed);
      double vn = 0, want = 0;
      for (float x : v) vn += double(x) * x;
      for (size_t i = 0; i < v.size(); ++i)
        v[i] = float(v[i] / std::sqrt(vn)), want += double(g[i]) * v[i];
      const double h = 1e-2;
      const double fd = (8 * (f(v, h) - f(v, -h)) - (f(v, 2 * h) - f(v, -2 * h))) / (12 * h);
      EXPECT_NEAR(fd, want, tol * gn)
          << what << (dir == 0 ? " along the gradient" : " along a random direction") << ": |g| "
          << gn;
    }
  }
  static Vec plus(const Vec& x, const Vec& v, double s) {
    Vec y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = float(double(x[i]) + s * v[i]);
    return y;
  }
  static double dot(const Vec& a, const Vec& w) {
    return std::inner_product(a.begin(), a.end(), w.begin(), 0.0);
  }

  ThreadPool pool_{3};
  CpuBackend cpu_{pool_};
  Backend& b_ = cpu_;  // the op set as callers see it
};

// The backend's optimizer ops, composed as TrainableModel::optimizer_step does, give the host
// optimizer's bits (clip_grad_norm, then AdamW::step, which matches PyTorch's bit for bit).
TEST_F(CpuTrainOps, OptimizerOpsEqualTheHostOptimizer) {
  const int64_t rows[2] = {8, 300}, cols[2] = {96, 8};
  std::vector<Vec> host_p, host_g;
  std::vector<TensorPtr> p, g, m, v;
  for (int i = 0; i < 2; ++i) {
    const int64_t n = rows[i] * cols[i];
    host_p.push_back(randn(n, 10 + i, 0.1f));
    p.push_back(up("p", rows[i], cols[i], host_p.back()));
    m.push_back(b_.tensor("m", rows[i], cols[i]));
    v.push_back(b_.tensor("v", rows[i], cols[i]));
  }
  AdamWOptions o;
  o.weight_decay = 0.05;
  AdamW host(o);
  for (int step = 1; step <= 3; ++step) {
    const float max_norm = step == 2 ? 0.5f : 1e3f;  // step 2 clips
    host_g.clear();
    g.clear();
    for (int i = 0; i < 2; ++i) {
      host_g.push_back(randn(rows[i] * cols[i], 100 * step + i, 0.2f));
      g.push_back(up("g", rows[i], cols[i], host_g.back()));
    }
    std::vector<std::span<float>> spans(host_g.begin(), host_g.end());
    const float host_norm = clip_grad_norm(spans, max_norm);
    std::vector<ParamRef> refs;
    for (int i = 0; i < 2; ++i) {
      refs.push_back({cat("t", i), host_p[size_t(i)].data(), host_g[size_t(i)].data(),
                      int64_t(host_p[size_t(i)].size())});
    }
    host.step(refs, 1e-3);

    const DeviceTensor* gs[] = {g[0].get(), g[1].get()};
    double sums[2];
    b_.sum_squares(gs, sums);
    const GradClip clip = clip_from_sums(sums, max_norm);
    EXPECT_EQ(clip.norm, host_norm) << "step " << step;
    EXPECT_EQ(clip.scale != 1.0f, step == 2) << "step " << step;
    for (int i = 0; i < 2; ++i) {
      b_.adamw(*p[size_t(i)], *g[size_t(i)], *m[size_t(i)], *v[size_t(i)],
               adamw_scalars(o, 1e-3, step), clip.scale);
    }
  }
  for (int i = 0; i < 2; ++i) {
    const AdamWMoments& s = host.moments().at(cat("t", i));
    EXPECT_EQ(get(*p[size_t(i)]), host_p[size_t(i)]) << i;
    EXPECT_EQ(get(*m[size_t(i)]), s.m) << i;
    EXPECT_EQ(get(*v[size_t(i)]), s.v) << i;
  }
  EXPECT_THROW(b_.adamw(*p[0], *g[1], *m[0], *v[0], adamw_scalars(o, 1e-3, 4), 1.0f), Error);
}

TEST_F(CpuTrainOps, ZeroAndCopy) {
  TensorPtr t = up("t", 5, 7, randn(35, 1)), u = up("u", 5, 7, randn(35, 2));
  const Vec before = get(*t), src = get(*u);
  b_.copy(*t, *u, 3);
  Vec want(src.begin(), src.begin() + 21);
  want.insert(want.end(), before.begin() + 21, before.end());
  EXPECT_EQ(get(*t), want);
  b_.zero(*t);
  EXPECT_EQ(get(*t), Vec(35, 0.0f));
}

// The resident set of this process in bytes (/proc/self/statm), 0 where it cannot be read.
uint64_t resident_bytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t pages = 0, resident = 0;
  if (!(f >> pages >> resident)) return 0;
  return resident * uint64_t(sysconf(_SC_PAGESIZE));
}

// A new tensor reads as zeros and takes memory only where it is written: a server's KV caches
// (slots x ctx positions) are allocated whole and used from their first rows.
TEST_F(CpuTrainOps, NewTensorsAreZeroAndResidentWhereWritten) {
  const int64_t rows = 16384, cols = 4096;  // 256 MiB of f32
  const uint64_t before = resident_bytes();
  TensorPtr t = b_.tensor("big", rows, cols, TensorUse::KvCache);
  TensorPtr h = b_.tensor("big_f16", rows, cols, TensorUse::KvCacheF16);
  const Vec ones(size_t(2 * cols), 1.0f);
  b_.write(*t, 0, 2, ones.data());
  Vec back(size_t(3 * cols), -1.0f);
  b_.read(*t, rows - 3, 3, back.data());
  EXPECT_EQ(back, Vec(size_t(3 * cols), 0.0f));
  b_.read(*t, 0, 1, back.data());
  EXPECT_EQ(Vec(back.begin(), back.begin() + cols), Vec(size_t(cols), 1.0f));
  b_.read(*h, rows - 1, 1, back.data());  // an f16 tensor reads as floats
  EXPECT_EQ(Vec(back.begin(), back.begin() + cols), Vec(size_t(cols), 0.0f));
  // AddressSanitizer's allocator (the test code itself may be built without it) writes its
  // shadow of every block it hands out.
  if (&__asan_init != nullptr) GTEST_SKIP() << "AddressSanitizer's allocator is in this process";
  const uint64_t after = resident_bytes();
  if (before == 0 || after == 0) GTEST_SKIP() << "no /proc/self/statm";
  // 384 MiB allocated (f32 and f16), two rows written and four read: far below 64 MiB.
  EXPECT_LT(after - std::min(after, before), uint64_t(64) << 20)
      << "resident " << (before >> 20) << " -> " << (after >> 20) << " MiB";
}

TEST_F(CpuTrainOps, RmsNorm) {
  const int64_t n = 3, c = 64;
  const Vec xv = randn(n * c, 3), g = randn(c, 4, 0.1f), w = randn(n * c, 5);
  TensorPtr x = up("x", n, c, xv), y = b_.tensor("y", n, c), rstd = b_.tensor("rstd", n, 1);
  b_.rms_norm({.x = x.get(), .g = g.data(), .eps = 1e-5f, .y = y.get(), .rstd = rstd.get()}, n);
  Vec yr(xv.size()), rr(static_cast<size_t>(n));
  rms_norm_forward(xv.data(), g.data(), n, c, 1e-5f, yr.data(), rr.data());
  EXPECT_EQ(get(*y), yr);
  EXPECT_EQ(get(*rstd), rr);
  const Vec pre = randn(n * c, 6);
  TensorPtr dy = up("dy", n, c, w), dx = up("dx", n, c, pre);
  b_.rms_norm_backward(*dx, *dy, *x, g.data(), *rstd, n);
  Vec dxr = pre;
  rms_norm_backward(dxr.data(), w.data(), xv.data(), g.data(), rr.data(), n, c);
  const Vec got = get(*dx);
  EXPECT_EQ(got, dxr);
  Vec grad(got.size());
  for (size_t i = 0; i < got.size(); ++i) grad[i] = got[i] - pre[i];
  expect_directional(
      grad,
      [&](const Vec& v, double s) {
        TensorPtr xs = up("xs", n, c, plus(xv, v, s)), ys = b_.tensor("ys", n, c);
        b_.rms_norm({.x = xs.get(), .g = g.data(), .eps = 1e-5f, .y = ys.get()}, n);
        return dot(get(*ys), w);
      },
      7, "rms_norm dx");
}

TEST_F(CpuTrainOps, GatedAct) {
  for (Activation act : {Activation::Relu2, Activation::Silu}) {
    const int64_t n = 4, c = 32;
    Vec gv = randn(n * c, 8);
    for (float& v : gv) v += v > 0 ? 0.1f : -0.1f;  // away from relu2's kink
    const Vec uv = randn(n * c, 9), w = randn(n * c, 10), p1 = randn(n * c, 11),
              p2 = randn(n * c, 12);
    TensorPtr gate = up("gate", n, c, gv), upt = up("up", n, c, uv), dout = up("dout", n, c, w);
    TensorPtr dg = up("dg", n, c, p1), du = up("du", n, c, p2);
    b_.gated_act_backward(*dg, *du, *dout, *gate, *upt, n, act);
    Vec dgr = p1, dur = p2;
    gated_act_backward(dgr.data(), dur.data(), w.data(), gv.data(), uv.data(), n * c, act);
    EXPECT_EQ(get(*dg), dgr);
    EXPECT_EQ(get(*du), dur);
    Vec ggrad(dgr.size()), ugrad(dur.size());
    for (size_t i = 0; i < dgr.size(); ++i) ggrad[i] = dgr[i] - p1[i], ugrad[i] = dur[i] - p2[i];
    auto loss = [&](const Vec& g2, const Vec& u2) {
      TensorPtr a = up("a", n, c, g2), b = up("b", n, c, u2), o = b_.tensor("o", n, c);
      b_.gated_act(*o, *a, *b, n, act);
      return dot(get(*o), w);
    };
    const std::string what(activation_name(act));
    expect_directional(
        ggrad, [&](const Vec& v, double s) { return loss(plus(gv, v, s), uv); }, 13,
        what + " dgate");
    expect_directional(
        ugrad, [&](const Vec& v, double s) { return loss(gv, plus(uv, v, s)); }, 14, what + " dup");
  }
}

TEST_F(CpuTrainOps, Attention) {
  const AttnShape shape{.n_head = 4, .n_head_kv = 2, .head_dim = 8, .rope_dim = 8};
  const int64_t n = 6, d = 32, kv = 16;
  const Vec q = randn(n * d, 20), k = randn(n * kv, 21), v = randn(n * kv, 22),
            w = randn(n * d, 23);
  const Vec p1 = randn(n * d, 24), p2 = randn(n * kv, 25), p3 = randn(n * kv, 26);
  TensorPtr tq = up("q", n, d, q), tk = up("k", n, kv, k), tv = up("v", n, kv, v);
  TensorPtr dout = up("dout", n, d, w), dq = up("dq", n, d, p1), dk = up("dk", n, kv, p2),
            dv = up("dv", n, kv, p3);
  const SeqRows whole{0, n, 0, 0};
  b_.attention_backward(*dq, *dk, *dv, *dout, *tq, *tk, *tv, {&whole, 1}, shape);
  Vec dqr = p1, dkr = p2, dvr = p3, scratch(size_t(attention_backward_scratch(n, 8)));
  attention_backward(dqr.data(), dkr.data(), dvr.data(), w.data(), q.data(), k.data(), v.data(), kv,
                     n, 4, 2, 8, 0, 2, scratch.data());
  EXPECT_EQ(get(*dq), dqr);
  EXPECT_EQ(get(*dk), dkr);
  EXPECT_EQ(get(*dv), dvr);
  auto loss = [&](const Vec& q2, const Vec& k2, const Vec& v2) {
    TensorPtr a = up("q", n, d, q2), b = up("k", n, kv, k2), c = up("v", n, kv, v2);
    TensorPtr o = b_.tensor("o", n, d);
    b_.attention(*o, *a, *b, *c, std::vector<SeqRows>{{0, n, 0, 0}}, shape);
    return dot(get(*o), w);
  };
  auto minus = [](const Vec& a, const Vec& b) {
    Vec r(a.size());
    for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] - b[i];
    return r;
  };
  expect_directional(
      minus(dqr, p1), [&](const Vec& u, double s) { return loss(plus(q, u, s), k, v); }, 27,
      "attention dq");
  expect_directional(
      minus(dkr, p2), [&](const Vec& u, double s) { return loss(q, plus(k, u, s), v); }, 28,
      "attention dk");
  expect_directional(
      minus(dvr, p3), [&](const Vec& u, double s) { return loss(q, k, plus(v, u, s)); }, 29,
      "attention dv");
}

// Sequences of training packed in the rows of one pass (each its own keys): attention_backward
// over all of them at once equals the reference over each sequence's rows alone, bit for bit,
// and rope_backward from a sequence's first row rotates those rows as the reference does.
TEST_F(CpuTrainOps, PackedSequencesAttendAndRotateAsEachAlone) {
  const AttnShape shape{.n_head = 4, .n_head_kv = 2, .head_dim = 8, .rope_dim = 8};
  const int64_t n = 12, d = shape.q_cols(), kv = shape.kv_cols();
  const std::vector<SeqRows> seqs = {{0, 5, 0, 0}, {5, 1, 0, 5}, {6, 6, 0, 6}};
  const Vec q = randn(n * d, 40), k = randn(n * kv, 41), v = randn(n * kv, 42),
            w = randn(n * d, 43);
  TensorPtr tq = up("q", n, d, q), tk = up("k", n, kv, k), tv = up("v", n, kv, v);
  TensorPtr dout = up("dout", n, d, w), dq = b_.tensor("dq", n, d), dk = b_.tensor("dk", n, kv),
            dv = b_.tensor("dv", n, kv);
  b_.attention_backward(*dq, *dk, *dv, *dout, *tq, *tk, *tv, seqs, shape);
  for (const SeqRows& s : seqs) b_.rope_backward(*dq, s.row0, s.n, shape.n_head, shape, 0);
  Vec dqr(q.size()), dkr(k.size()), dvr(v.size()),
      scratch(size_t(attention_backward_scratch(n, 8)));
  for (const SeqRows& s : seqs) {
    const int64_t r = s.row0;
    attention_backward(dqr.data() + r * d, dkr.data() + r * kv, dvr.data() + r * kv,
                       w.data() + r * d, q.data() + r * d, k.data() + r * kv, v.data() + r * kv, kv,
                       s.n, 4, 2, 8, 0, 2, scratch.data());
    std::vector<int32_t> pos(size_t(s.n));
    std::iota(pos.begin(), pos.end(), 0);
    rope_backward(dqr.data() + r * d, s.n, 4, 8, 8, pos.data(), shape.rope_theta);
  }
  EXPECT_EQ(get(*dq), dqr);
  EXPECT_EQ(get(*dk), dkr);
  EXPECT_EQ(get(*dv), dvr);
  // A sequence that does not start at position 0 or is not its own keys is refused.
  const SeqRows shifted{5, 1, 3, 5};
  EXPECT_THROW(b_.attention_backward(*dq, *dk, *dv, *dout, *tq, *tk, *tv, {&shifted, 1}, shape),
               Error);
}

// With fewer (sequence, KV head) pairs than threads want, the backward pass splits by query
// rows and then by key rows: bit for bit the reference, one sequence or several, any group.
TEST_F(CpuTrainOps, AttentionBackwardSplitByRowsIsTheReference) {
  ThreadPool pool(4);
  CpuBackend cpu(pool);
  for (int64_t n_kv : {1, 2}) {
    const AttnShape shape{.n_head = 6, .n_head_kv = n_kv, .head_dim = 16, .rope_dim = 16};
    const int64_t n = 60, d = shape.q_cols(), kv = shape.kv_cols();
    const std::vector<SeqRows> one = {{0, 37, 0, 0}};
    const std::vector<SeqRows> three = {{0, 37, 0, 0}, {37, 1, 0, 37}, {38, 22, 0, 38}};
    for (const auto* seqs : {&one, &three}) {
      const Vec q = randn(n * d, 50), k = randn(n * kv, 51, 2.0f), v = randn(n * kv, 52),
                w = randn(n * d, 53), g0 = randn(n * d, 54), gk0 = randn(n * kv, 55);
      TensorPtr tq = test::upload(cpu, "q", n, d, q), tk = test::upload(cpu, "k", n, kv, k),
                tv = test::upload(cpu, "v", n, kv, v), dout = test::upload(cpu, "dout", n, d, w);
      // The gradients add to what the tensors hold.
      TensorPtr dq = test::upload(cpu, "dq", n, d, g0), dk = test::upload(cpu, "dk", n, kv, gk0),
                dv = test::upload(cpu, "dv", n, kv, gk0);
      cpu.attention_backward(*dq, *dk, *dv, *dout, *tq, *tk, *tv, *seqs, shape);
      Vec dqr = g0, dkr = gk0, dvr = gk0, scratch(size_t(attention_backward_scratch(n, 16)));
      for (const SeqRows& s : *seqs) {
        const int64_t r = s.row0;
        attention_backward(dqr.data() + r * d, dkr.data() + r * kv, dvr.data() + r * kv,
                           w.data() + r * d, q.data() + r * d, k.data() + r * kv, v.data() + r * kv,
                           kv, s.n, 6, n_kv, 16, 0, n_kv, scratch.data());
      }
      Vec got(size_t(n * d)), gk(size_t(n * kv)), gv(size_t(n * kv));
      cpu.read(*dq, 0, n, got.data());
      cpu.read(*dk, 0, n, gk.data());
      cpu.read(*dv, 0, n, gv.data());
      EXPECT_EQ(got, dqr) << n_kv << " KV heads, " << seqs->size() << " sequences";
      EXPECT_EQ(gk, dkr) << n_kv << " KV heads, " << seqs->size() << " sequences";
      EXPECT_EQ(gv, dvr) << n_kv << " KV heads, " << seqs->size() << " sequences";
    }
  }
}

// With fewer (sequence, head) pairs than threads want, attention splits by query rows: bit for
// bit the reference over the whole sequence, at a position past a cached prefix and a base.
TEST_F(CpuTrainOps, AttentionSplitByRowsIsTheReference) {
  ThreadPool pool(4);
  CpuBackend cpu_backend(pool);
  Backend& cpu = cpu_backend;
  const AttnShape shape{.n_head = 6, .n_head_kv = 2, .head_dim = 16, .rope_dim = 16};
  const int64_t n = 37, pos0 = 5, base = 3, cache = base + pos0 + n;
  const int64_t d = shape.q_cols(), kv = shape.kv_cols();
  const Vec q = randn(n * d, 60), k = randn(cache * kv, 61, 2.0f), v = randn(cache * kv, 62);
  TensorPtr tq = test::upload(cpu, "q", n, d, q), tk = test::upload(cpu, "k", cache, kv, k),
            tv = test::upload(cpu, "v", cache, kv, v), out = cpu.tensor("out", n, d);
  const SeqRows seq{0, n, pos0, base};
  cpu.attention(*out, *tq, *tk, *tv, {&seq, 1}, shape);
  Vec want(static_cast<size_t>(n * d)), got(want.size()),
      scratch(static_cast<size_t>(attention_forward_scratch(cache, 16)));
  attention_forward(q.data(), k.data() + base * kv, v.data() + base * kv, kv, n, pos0, 6, 2, 16, 0,
                    6, want.data(), scratch.data());
  cpu.read(*out, 0, n, got.data());
  EXPECT_EQ(got, want);
}

// f16 KV caches (TensorUse::KvCacheF16): store_kv rounds to nearest even, read gives the
// halves back, and attention over them equals attention over f32 caches holding the rounded
// values, bit for bit, for sequences of a pool at different bases (GQA, prompt and decoding).
TEST_F(CpuTrainOps, F16CachesAttendAsF32CachesOfTheirRoundedValues) {
  const AttnShape shape{.n_head = 6, .n_head_kv = 2, .head_dim = 16, .rope_dim = 16};
  const int64_t n_ctx = 600, kv = shape.kv_cols(), d = shape.q_cols(), n = 9;
  const Vec kvals = randn(n_ctx * kv, 30, 3.0f), vvals = randn(n_ctx * kv, 31, 3.0f);
  Vec kr(kvals.size()), vr(vvals.size());
  for (size_t i = 0; i < kr.size(); ++i) {
    kr[i] = fp16_to_f32(f32_to_fp16(kvals[i]));
    vr[i] = fp16_to_f32(f32_to_fp16(vvals[i]));
  }
  TensorPtr kh = b_.tensor("k16", n_ctx, kv, TensorUse::KvCacheF16);
  TensorPtr vh = b_.tensor("v16", n_ctx, kv, TensorUse::KvCacheF16);
  ASSERT_TRUE(kh->f16());
  TensorPtr ksrc = up("k", n_ctx, kv, kvals), vsrc = up("v", n_ctx, kv, vvals);
  b_.store_kv(*kh, *ksrc, 0, n_ctx, 0);
  b_.store_kv(*vh, *vsrc, 0, n_ctx, 0);
  EXPECT_EQ(get(*kh), kr);
  EXPECT_EQ(get(*vh), vr);
  TensorPtr kf = up("k32", n_ctx, kv, kr), vf = up("v32", n_ctx, kv, vr);
  TensorPtr q = up("q", n + 2, d, randn((n + 2) * d, 32));
  const std::vector<SeqRows> seqs = {{0, n, 20, 0}, {n, 1, 250, 256}, {n + 1, 1, 0, 512}};
  TensorPtr o16 = b_.tensor("o16", n + 2, d), o32 = b_.tensor("o32", n + 2, d);
  b_.attention(*o16, *q, *kh, *vh, seqs, shape);
  b_.attention(*o32, *q, *kf, *vf, seqs, shape);
  EXPECT_EQ(get(*o16), get(*o32));
  // An op that takes f32 tensors refuses an f16 one by name.
  try {
    b_.add(*kh, *kf, 1);
    FAIL() << "add took an f16 cache";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'k16' holds f16"), std::string::npos) << e.what();
  }
}

// The fused rope and KV store (one parallel loop over every sequence's rows) equals the
// default composition, rope on q and k and then store_kv, sequence by sequence: sequences of one
// pool at their bases and positions, one of several tokens, f32 and f16 caches, a partial
// rotation, and a training pass whose keys are their own cache (rotations only).
TEST_F(CpuTrainOps, RopeStoreKvIsRopeThenStore) {
  for (TensorUse use : {TensorUse::KvCache, TensorUse::KvCacheF16}) {
    const AttnShape shape{
        .n_head = 6, .n_head_kv = 2, .head_dim = 16, .rope_dim = 12, .rope_theta = 1e4f};
    const int64_t n = 9, n_ctx = 1024, d = shape.q_cols(), kv = shape.kv_cols();
    const std::vector<SeqRows> seqs = {
        {0, 1, 0, 0}, {1, 1, 37, 256}, {2, 5, 100, 512}, {7, 2, 250, 768}};
    const Vec q = randn(n * d, 70), k = randn(n * kv, 71), v = randn(n * kv, 72);
    TensorPtr q1 = up("q1", n, d, q), k1 = up("k1", n, kv, k), v1 = up("v1", n, kv, v);
    TensorPtr q2 = up("q2", n, d, q), k2 = up("k2", n, kv, k), v2 = up("v2", n, kv, v);
    TensorPtr kc1 = b_.tensor("kc1", n_ctx, kv, use), vc1 = b_.tensor("vc1", n_ctx, kv, use);
    TensorPtr kc2 = b_.tensor("kc2", n_ctx, kv, use), vc2 = b_.tensor("vc2", n_ctx, kv, use);
    b_.rope_store_kv(*q1, *k1, *v1, *kc1, *vc1, seqs, shape);
    b_.Backend::rope_store_kv(*q2, *k2, *v2, *kc2, *vc2, seqs, shape);
    EXPECT_EQ(get(*q1), get(*q2));
    EXPECT_EQ(get(*kc1), get(*kc2));
    EXPECT_EQ(get(*vc1), get(*vc2));
    EXPECT_NE(get(*q1), q);  // rotated (position 0 leaves only the first row as it was)
    // Training: the keys are their own cache; q and k rotated in place, nothing stored.
    const SeqRows pass[] = {{0, n, 0, 0}};
    TensorPtr q3 = up("q3", n, d, q), k3 = up("k3", n, kv, k);
    TensorPtr q4 = up("q4", n, d, q), k4 = up("k4", n, kv, k);
    b_.rope_store_kv(*q3, *k3, *v1, *k3, *v1, pass, shape);
    b_.Backend::rope_store_kv(*q4, *k4, *v2, *k4, *v2, pass, shape);
    EXPECT_EQ(get(*q3), get(*q4));
    EXPECT_EQ(get(*k3), get(*k4));
    // A sequence past the cache's rows is refused by name.
    const SeqRows past[] = {{0, 2, n_ctx - 1, 0}};
    try {
      b_.rope_store_kv(*q1, *k1, *v1, *kc1, *vc1, past, shape);
      FAIL() << "stored past the cache";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("kc1"), std::string::npos) << e.what();
    }
  }
}

TEST_F(CpuTrainOps, RopeBackwardIsTheInverseRotation) {
  for (int64_t rope_dim : {16, 8}) {
    const AttnShape shape{
        .n_head = 4, .n_head_kv = 4, .head_dim = 16, .rope_dim = rope_dim, .rope_theta = 1e4f};
    const int64_t n = 7;
    const Vec xv = randn(n * 64, 30);
    TensorPtr x = up("x", n, 64, xv);
    b_.rope_backward(*x, 0, n, 4, shape, 0);
    Vec ref = xv;
    std::vector<int32_t> pos(static_cast<size_t>(n));
    std::iota(pos.begin(), pos.end(), 0);
    rope_backward(ref.data(), n, 4, 16, rope_dim, pos.data(), 1e4f);
    EXPECT_EQ(get(*x), ref);
    b_.rope(*x, 0, n, 4, shape, 0);
    const Vec back = get(*x);
    for (size_t i = 0; i < back.size(); ++i) ASSERT_NEAR(back[i], xv[i], 1e-5) << i;
  }
}

TEST_F(CpuTrainOps, LinearBackwardIsTheTransposedTernaryProduct) {
  for (DType type : {DType::TQ1_0, DType::TQ2_0, DType::I2_S}) {
    auto w = test::ternary_weight(type, 512, 96, type != DType::I2_S, 40);
    w->w.out_scale = 1.5f;
    const int64_t n = 5;
    const Vec dy = randn(n * 96, 41), pre = randn(n * 512, 42);
    TensorPtr tdy = up("dy", n, 96, dy), dx = up("dx", n, 512, pre);
    b_.linear_backward(*dx, *tdy, w->w, n);
    Vec ref = pre;
    ternary_matmul_transposed_ref(w->w.m, dy.data(), 96, n, 1.5f, ref.data(), 0, 512);
    EXPECT_EQ(get(*dx), ref) << dtype_name(type);
  }
}

// A layer of few 256-column panels (768 inputs: 3) splits its tokens over the threads too: the
// reference's bits at every thread count.
TEST_F(CpuTrainOps, LinearBackwardSplitByTokensIsTheReference) {
  auto w = test::ternary_weight(DType::TQ2_0, 768, 200, false, 43);
  const int64_t n = 100;
  const Vec dy = randn(n * 200, 44), pre = randn(n * 768, 45);
  Vec ref = pre;
  ternary_matmul_transposed_ref(w->w.m, dy.data(), 200, n, 1.0f, ref.data(), 0, 768);
  for (int threads : {1, 2, 3, 16}) {
    ThreadPool pool(threads);
    CpuBackend cpu(pool);
    TensorPtr tdy = test::upload(cpu, "dy", n, 200, dy), dx = test::upload(cpu, "dx", n, 768, pre);
    cpu.linear_backward(*dx, *tdy, w->w, n);
    Vec got(ref.size());
    cpu.read(*dx, 0, n, got.data());
    EXPECT_EQ(got, ref) << threads << " threads";
  }
}

// lora_backward's da splits its rank rows by 256-column blocks too (rank 16 is fewer rows than
// a large machine's threads); each element still sums over the tokens in order: the unsplit
// product's bits at any thread count, widths with a partial block included.
TEST_F(CpuTrainOps, LoraBackwardSplitByColumnsIsTheReference) {
  const int64_t n = 37, n_in = 600, n_out = 40, r = 16;
  const Vec av = randn(r * n_in, 60, 0.3f), bv = randn(n_out * r, 61, 0.3f);
  const Vec xd = randn(n * n_in, 62), ax = randn(n * r, 63), dyv = randn(n * n_out, 64);
  const Vec p_da = randn(r * n_in, 65);
  Vec ds(dyv.size()), dax(size_t(n * r)), want = p_da;
  for (size_t i = 0; i < dyv.size(); ++i) ds[i] = 2.0f * dyv[i];
  matmul_f32_backward_dx(dax.data(), ds.data(), bv.data(), r, n_out, 0, n);
  matmul_f32_backward_dw(want.data(), dax.data(), xd.data(), n, n_in, r, 0, r);
  for (int threads : {1, 2, 16}) {
    ThreadPool pool(threads);
    CpuBackend cpu(pool);
    auto put = [&](const char* name, int64_t rows, int64_t cols, const Vec& v) {
      return test::upload(cpu, name, rows, cols, v);
    };
    TensorPtr a = put("a", r, n_in, av), b = put("b", n_out, r, bv), da = put("da", r, n_in, p_da),
              db = put("db", n_out, r, Vec(size_t(n_out * r)));
    TensorPtr txd = put("xd", n, n_in, xd), tax = put("ax", n, r, ax),
              dy = put("dy", n, n_out, dyv), dx = put("dx", n, n_in, Vec(size_t(n * n_in)));
    const LoraBranch br{a.get(), b.get(), da.get(), db.get(), 2.0f, 7};
    cpu.lora_backward(*dx, *dy, LoraSaved{txd.get(), tax.get()}, n, br, 0.0f);
    Vec got(want.size());
    cpu.read(*da, 0, r, got.data());
    EXPECT_EQ(got, want) << threads << " threads";
  }
}

// The dropout of lora_forward: element i of x is dropped when u < p, u = (mix(mix(key ^
// mix(salt)) + i) >> 11) * 2^-53, mix = splitmix64 (cpu/ops.h's lora_dropout), written out here.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

TEST_F(CpuTrainOps, LoraBranch) {
  const int64_t n = 5, n_in = 16, n_out = 12, r = 4;
  const uint64_t key = 99;
  for (float p : {0.0f, 0.3f}) {
    const Vec x = randn(n * n_in, 50), av = randn(r * n_in, 51, 0.3f),
              bv = randn(n_out * r, 52, 0.3f);
    const Vec w = randn(n * n_out, 53), p_dx = randn(n * n_in, 54), p_da = randn(r * n_in, 55),
              p_db = randn(n_out * r, 56);
    TensorPtr a = up("a", r, n_in, av), b = up("b", n_out, r, bv), da = up("da", r, n_in, p_da),
              db = up("db", n_out, r, p_db);
    const LoraBranch br{a.get(), b.get(), da.get(), db.get(), 2.0f, 7};
    auto forward = [&](const Vec& x2, TensorPtr* xd, TensorPtr* ax) {
      TensorPtr tx = up("x", n, n_in, x2), y = up("y", n, n_out, Vec(size_t(n * n_out)));
      *xd = b_.tensor("xd", n, n_in), *ax = b_.tensor("ax", n, r);
      b_.lora_forward(*y, *tx, n, br, LoraSaved{xd->get(), ax->get()}, p, key);
      return get(*y);
    };
    TensorPtr xd, ax;
    const Vec y = forward(x, &xd, &ax), xdv = get(*xd), axv = get(*ax);
    // xd: the dropout rule; ax = xd A^T; y = 2 ax B^T.
    const uint64_t base = mix(key ^ mix(7));
    for (size_t i = 0; i < x.size(); ++i) {
      const bool drop = double(mix(base + i) >> 11) * 0x1.0p-53 < p;
      ASSERT_EQ(xdv[i], drop ? 0.0f : x[i] * (1.0f / (1.0f - p))) << "p " << p << " element " << i;
    }
    Vec axr(axv.size()), yr(y.size());
    matmul_f32_forward(xdv.data(), av.data(), n_in, r, axr.data(), 0, n);
    EXPECT_EQ(axv, axr);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t o = 0; o < n_out; ++o) {
        double s = 0;
        for (int64_t k = 0; k < r; ++k) s += double(axv[size_t(t * r + k)]) * bv[size_t(o * r + k)];
        EXPECT_NEAR(y[size_t(t * n_out + o)], 2 * s, 1e-6) << t << ", " << o;
      }
    }
    // Backward against matmul_f32_backward_* composed by hand.
    TensorPtr dy = up("dy", n, n_out, w), dx = up("dx", n, n_in, p_dx);
    b_.lora_backward(*dx, *dy, LoraSaved{xd.get(), ax.get()}, n, br, p);
    Vec ds(w.size()), dax(size_t(n * r)), dxd(x.size()), dxr = p_dx, dar = p_da, dbr = p_db;
    for (size_t i = 0; i < w.size(); ++i) ds[i] = 2.0f * w[i];
    matmul_f32_backward_dw(dbr.data(), ds.data(), axv.data(), n, r, n_out, 0, n_out);
    matmul_f32_backward_dx(dax.data(), ds.data(), bv.data(), r, n_out, 0, n);
    matmul_f32_backward_dw(dar.data(), dax.data(), xdv.data(), n, n_in, r, 0, r);
    matmul_f32_backward_dx(dxd.data(), dax.data(), av.data(), n_in, r, 0, n);
    for (size_t i = 0; i < x.size(); ++i) {
      if (p == 0 || xdv[i] != 0) dxr[i] += dxd[i] * (p > 0 ? 1.0f / (1.0f - p) : 1.0f);
    }
    const Vec gx = get(*dx), ga = get(*da), gb = get(*db);
    EXPECT_EQ(gx, dxr) << "p " << p;
    EXPECT_EQ(ga, dar) << "p " << p;
    EXPECT_EQ(gb, dbr) << "p " << p;
    // Finite differences of sum(w * y) in x, A and B (the dropout mask is fixed by the key).
    Vec gdx(gx.size()), gda(ga.size()), gdb(gb.size());
    for (size_t i = 0; i < gx.size(); ++i) gdx[i] = gx[i] - p_dx[i];
    for (size_t i = 0; i < ga.size(); ++i) gda[i] = ga[i] - p_da[i];
    for (size_t i = 0; i < gb.size(); ++i) gdb[i] = gb[i] - p_db[i];
    TensorPtr t1, t2;
    expect_directional(
        gdx, [&](const Vec& v, double s) { return dot(forward(plus(x, v, s), &t1, &t2), w); }, 57,
        cat("lora dx, p ", p));
    auto moved = [&](DeviceTensor& t, const Vec& orig, const Vec& v, double s) {
      b_.write(t, 0, t.rows(), plus(orig, v, s).data());
      const double l = dot(forward(x, &t1, &t2), w);
      b_.write(t, 0, t.rows(), orig.data());
      return l;
    };
    expect_directional(
        gda, [&](const Vec& v, double s) { return moved(*a, av, v, s); }, 58,
        cat("lora dA, p ", p));
    expect_directional(
        gdb, [&](const Vec& v, double s) { return moved(*b, bv, v, s); }, 59,
        cat("lora dB, p ", p));
  }
}

// The head with the cross-entropy (HeadOp with targets): the loss from the definition in double,
// the same for any chunk size, and its gradients (dh and the branches') against finite
// differences.
TEST_F(CpuTrainOps, HeadLoss) {
  const int64_t n = 12, d = 16, V = 50, r = 2;
  std::vector<uint8_t> bytes;
  const FloatMatrix W = test::float_matrix(bytes, DType::F32, d, V, 60, 0.3f);
  const Vec wv(reinterpret_cast<const float*>(bytes.data()),
               reinterpret_cast<const float*>(bytes.data()) + V * d);
  const Vec hv = randn(n * d, 61), av = randn(r * d, 62, 0.3f), bv = randn(V * r, 63, 0.3f);
  const Vec p_dh = randn(n * d, 64), p_da = randn(r * d, 65), p_db = randn(V * r, 66);
  std::vector<float> mask(size_t(n), 1.0f);
  std::vector<int32_t> targets(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    if ((t >= 4 && t < 8) || t == 10) mask[size_t(t)] = 0;  // chunk [4, 8) of 4 is skipped
    targets[size_t(t)] = mask[size_t(t)] != 0 ? int32_t((t * 7 + 3) % V) : -100;
  }
  const float norm = 9;
  TensorPtr h = up("h", n, d, hv), a = up("a", r, d, av), b = up("b", V, r, bv);
  TensorPtr da = up("da", r, d, p_da), db = up("db", V, r, p_db);
  const LoraBranch br{a.get(), b.get(), da.get(), db.get(), 1.5f, 3};
  // The loss in double from the definition.
  double want = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (mask[size_t(t)] == 0) continue;
    std::vector<double> z(static_cast<size_t>(V));
    double mx = -1e300, sum = 0;
    for (int64_t o = 0; o < V; ++o) {
      double s = 0, lo = 0;
      for (int64_t i = 0; i < d; ++i) s += double(hv[size_t(t * d + i)]) * wv[size_t(o * d + i)];
      for (int64_t k = 0; k < r; ++k) {
        double ax = 0;
        for (int64_t i = 0; i < d; ++i) ax += double(hv[size_t(t * d + i)]) * av[size_t(k * d + i)];
        lo += ax * bv[size_t(o * r + k)];
      }
      z[size_t(o)] = s + 1.5 * lo;
      mx = std::max(mx, z[size_t(o)]);
    }
    for (double v : z) sum += std::exp(v - mx);
    want += mx + std::log(sum) - z[size_t(targets[size_t(t)])];
  }
  want /= norm;
  // The loss of rows [0, n) in chunks of `chunk` tokens; with dh, the gradients too.
  auto head_loss = [&](int64_t chunk, DeviceTensor* dh) {
    b_.head({.h = h.get(),
             .row0 = 0,
             .n = n,
             .w = &W,
             .lora = {&br, 1},
             .targets = targets.data(),
             .mask = mask.data(),
             .norm = norm,
             .chunk = chunk,
             .dh = dh});
  };
  for (int64_t chunk : {1, 4, 100}) {
    head_loss(chunk, nullptr);
    EXPECT_NEAR(b_.take_loss(), want, 1e-6 * want) << "chunk " << chunk;
    EXPECT_EQ(b_.take_loss(), 0.0);
  }
  EXPECT_EQ(get(*da), p_da) << "no dh: no branch gradients";
  EXPECT_EQ(get(*db), p_db);
  TensorPtr dh = up("dh", n, d, p_dh);
  head_loss(4, dh.get());
  EXPECT_NEAR(b_.take_loss(), want, 1e-6 * want);
  Vec gh = get(*dh), ga = get(*da), gb = get(*db);
  for (size_t i = 0; i < gh.size(); ++i) gh[i] -= p_dh[i];
  for (size_t i = 0; i < ga.size(); ++i) ga[i] -= p_da[i];
  for (size_t i = 0; i < gb.size(); ++i) gb[i] -= p_db[i];
  for (int64_t i = 4 * d; i < 8 * d; ++i) EXPECT_EQ(gh[size_t(i)], 0.0f) << "skipped chunk";
  auto loss_at = [&](DeviceTensor& t, const Vec& orig, const Vec& v, double s) {
    b_.write(t, 0, t.rows(), plus(orig, v, s).data());
    head_loss(4, nullptr);
    b_.write(t, 0, t.rows(), orig.data());
    return b_.take_loss();
  };
  expect_directional(
      gh, [&](const Vec& v, double s) { return loss_at(*h, hv, v, s); }, 67, "head dh");
  expect_directional(
      ga, [&](const Vec& v, double s) { return loss_at(*a, av, v, s); }, 68, "head dA");
  expect_directional(
      gb, [&](const Vec& v, double s) { return loss_at(*b, bv, v, s); }, 69, "head dB");
}

// The head takes only the counted tokens, `chunk` of them at a time: their loss and dh are the
// bits they get as the only rows of a pass, masked rows' dh stay as they were.
TEST_F(CpuTrainOps, HeadLossComputesCountedRowsOnly) {
  const int64_t n = 20, d = 32, V = 70;
  std::vector<uint8_t> bytes;
  const FloatMatrix W = test::float_matrix(bytes, DType::F16, d, V, 70, 0.3f);
  const Vec hv = randn(n * d, 71), p_dh = randn(n * d, 72);
  std::vector<float> mask(size_t(n), 1.0f);
  std::vector<int32_t> targets(static_cast<size_t>(n));
  std::vector<int64_t> kept;
  for (int64_t t = 0; t < n; ++t) {
    if (t % 3 == 1 || (t >= 12 && t < 16)) mask[size_t(t)] = 0;  // rows in every chunk of 8
    if (t == 17) mask[size_t(t)] = 0.5f;                         // a weight, not a flag
    targets[size_t(t)] = mask[size_t(t)] != 0 ? int32_t((t * 11 + 5) % V) : -1;
    if (mask[size_t(t)] != 0) kept.push_back(t);
  }
  const float norm = 7;
  // The loss of rows of h with their targets and mask, in chunks of 8; dh gets the gradient.
  auto head_loss = [&](DeviceTensor& h, DeviceTensor& dh, std::vector<int32_t>& tg, Vec& m) {
    b_.head({.h = &h,
             .n = h.rows(),
             .w = &W,
             .lora = {},
             .targets = tg.data(),
             .mask = m.data(),
             .norm = norm,
             .chunk = 8,
             .dh = &dh});
    return b_.take_loss();
  };
  TensorPtr h = up("h", n, d, hv), dh = up("dh", n, d, p_dh);
  const double loss = head_loss(*h, *dh, targets, mask);
  const Vec gh = get(*dh);
  // The counted rows alone, eight at a time as the masked pass grouped them.
  double want_loss = 0;
  for (size_t c0 = 0; c0 < kept.size(); c0 += 8) {
    const std::vector<int64_t> rows(kept.begin() + int64_t(c0),
                                    kept.begin() + int64_t(std::min(kept.size(), c0 + 8)));
    const int64_t k = int64_t(rows.size());
    Vec hk, dk, mk;
    std::vector<int32_t> tk;
    for (int64_t t : rows) {
      hk.insert(hk.end(), hv.begin() + t * d, hv.begin() + (t + 1) * d);
      dk.insert(dk.end(), p_dh.begin() + t * d, p_dh.begin() + (t + 1) * d);
      mk.push_back(mask[size_t(t)]);
      tk.push_back(targets[size_t(t)]);
    }
    TensorPtr hks = up("hk", k, d, hk), dks = up("dk", k, d, dk);
    want_loss += head_loss(*hks, *dks, tk, mk);
    const Vec got_k = get(*dks);
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t c = 0; c < d; ++c) {
        ASSERT_EQ(gh[size_t(rows[size_t(i)] * d + c)], got_k[size_t(i * d + c)])
            << "row " << rows[size_t(i)] << " column " << c;
      }
    }
  }
  EXPECT_EQ(loss, want_loss);
  for (int64_t t = 0; t < n; ++t) {
    if (mask[size_t(t)] != 0) continue;
    for (int64_t c = 0; c < d; ++c) {
      ASSERT_EQ(gh[size_t(t * d + c)], p_dh[size_t(t * d + c)]) << "masked row " << t;
    }
  }
}

}  // namespace
}  // namespace trit::engine
