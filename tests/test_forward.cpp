// The forward pass against an independent double-precision implementation written here from
// the dequantised weights, and the KV cache against recomputing the whole sequence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "core/error.h"
#include "core/quant.h"
#include "infer/session.h"
#include "io/gguf.h"
#include "model/create.h"
#include "model/model.h"
#include "test_util.h"

namespace trit {
namespace {

using Mat = std::vector<double>;  // row-major

struct RefLinear {
  Mat w;  // (n_out, n_in)
  int64_t n_in, n_out;
};

// A plain implementation of DESIGN section 2 in double, sharing no code with src/model.
class ReferenceModel {
 public:
  explicit ReferenceModel(const std::string& path) {
    auto f = GgufFile::open(path);
    hp_ = HParams::from_gguf(*f);
    embd_ = floats(*f, "token_embd.weight");
    head_ = hp_.tied_head ? embd_ : floats(*f, "output.weight");
    out_norm_ = floats(*f, "output_norm.weight");
    for (int64_t l = 0; l < hp_.n_layer; ++l) {
      Layer L;
      L.attn_norm = floats(*f, block_tensor_name(l, "attn_norm"));
      L.attn_sub_norm = floats(*f, block_tensor_name(l, "attn_sub_norm"));
      L.ffn_norm = floats(*f, block_tensor_name(l, "ffn_norm"));
      L.ffn_sub_norm = floats(*f, block_tensor_name(l, "ffn_sub_norm"));
      for (const std::string& what : block_linear_names()) {
        const GgufTensor& t = f->tensor(block_tensor_name(l, what));
        TernaryUnpacked u = unpack_ternary(t.type, t.data, t.n_elements());
        RefLinear r{Mat(u.trits.size()), t.ne[0], t.ne[1]};
        for (size_t i = 0; i < u.trits.size(); ++i) {
          const float s = t.type == DType::I2_S ? u.block_scales[0] : u.block_scales[i / 256];
          r.w[i] = double(u.trits[i]) * double(s);
        }
        L.lin[what] = std::move(r);
      }
      layers_.push_back(std::move(L));
    }
  }

  // Logits (n, n_vocab) for a whole sequence from position 0.
  Mat logits(const std::vector<int32_t>& ids, bool act_quant) const {
    const int64_t n = int64_t(ids.size()), d = hp_.n_embd, hd = hp_.head_dim();
    Mat x(size_t(n * d));
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < d; ++i) x[size_t(t * d + i)] = embd_[size_t(ids[size_t(t)] * d + i)];
    }
    for (const Layer& L : layers_) {
      Mat h = norm(x, L.attn_norm, n);
      Mat q = linear(L.lin.at("attn_q"), h, n, act_quant);
      Mat k = linear(L.lin.at("attn_k"), h, n, act_quant);
      Mat v = linear(L.lin.at("attn_v"), h, n, act_quant);
      rope(q, n, hp_.n_head);
      rope(k, n, hp_.n_head_kv);
      Mat att(size_t(n * d), 0.0);
      const int64_t group = hp_.n_head / hp_.n_head_kv, dkv = hp_.n_embd_kv();
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t hh = 0; hh < hp_.n_head; ++hh) {
          const int64_t kh = hh / group;
          std::vector<double> s(size_t(t + 1));
          double mx = -1e300;
          for (int64_t j = 0; j <= t; ++j) {
            double dot = 0;
            for (int64_t e = 0; e < hd; ++e) {
              dot += q[size_t(t * d + hh * hd + e)] * k[size_t(j * dkv + kh * hd + e)];
            }
            s[size_t(j)] = dot / std::sqrt(double(hd));
            mx = std::max(mx, s[size_t(j)]);
          }
          double sum = 0;
          for (double& e : s) sum += e = std::exp(e - mx);
          for (int64_t j = 0; j <= t; ++j) {
            for (int64_t e = 0; e < hd; ++e) {
              att[size_t(t * d + hh * hd + e)] +=
                  s[size_t(j)] / sum * v[size_t(j * dkv + kh * hd + e)];
            }
          }
        }
      }
      Mat o = linear(L.lin.at("attn_output"), norm(att, L.attn_sub_norm, n), n, act_quant);
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
      h = norm(x, L.ffn_norm, n);
      Mat g = linear(L.lin.at("ffn_gate"), h, n, act_quant);
      Mat u = linear(L.lin.at("ffn_up"), h, n, act_quant);
      for (size_t i = 0; i < g.size(); ++i) {
        const double a = hp_.act == Activation::Relu2 ? std::pow(std::max(g[i], 0.0), 2)
                                                      : g[i] / (1 + std::exp(-g[i]));
        g[i] = a * u[i];
      }
      Mat dn = linear(L.lin.at("ffn_down"), norm(g, L.ffn_sub_norm, n), n, act_quant);
      for (size_t i = 0; i < x.size(); ++i) x[i] += dn[i];
    }
    Mat h = norm(x, out_norm_, n);
    Mat out(size_t(n * hp_.n_vocab));
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = 0; r < hp_.n_vocab; ++r) {
        double acc = 0;
        for (int64_t i = 0; i < d; ++i) acc += head_[size_t(r * d + i)] * h[size_t(t * d + i)];
        out[size_t(t * hp_.n_vocab + r)] = acc;
      }
    }
    return out;
  }

  const HParams& hp() const { return hp_; }

 private:
  struct Layer {
    Mat attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm;
    std::map<std::string, RefLinear> lin;
  };

  static Mat floats(const GgufFile& f, const std::string& name) {
    const GgufTensor& t = f.tensor(name);
    std::vector<float> v(size_t(t.n_elements()));
    dequantize(t.type, t.data, t.n_elements(), v.data());
    return Mat(v.begin(), v.end());
  }

  Mat norm(const Mat& x, const Mat& g, int64_t n) const {
    const int64_t d = int64_t(g.size());
    Mat y(x.size());
    for (int64_t t = 0; t < n; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += x[size_t(t * d + i)] * x[size_t(t * d + i)];
      const double s = 1 / std::sqrt(ss / double(d) + double(hp_.rms_eps));
      for (int64_t i = 0; i < d; ++i)
        y[size_t(t * d + i)] = x[size_t(t * d + i)] * s * g[size_t(i)];
    }
    return y;
  }

  // y = W q(x) / s_x, with q the per-token absmax int8 quantiser (or the identity).
  static Mat linear(const RefLinear& L, const Mat& x, int64_t n, bool act_quant) {
    Mat y(size_t(n * L.n_out));
    std::vector<double> xq(size_t(L.n_in));
    for (int64_t t = 0; t < n; ++t) {
      const double* xt = x.data() + t * L.n_in;
      double scale = 1;
      if (act_quant) {
        double amax = 0;
        for (int64_t i = 0; i < L.n_in; ++i) amax = std::max(amax, std::fabs(xt[i]));
        scale = 127.0 / std::max(amax, 1e-5);
        for (int64_t i = 0; i < L.n_in; ++i) {
          xq[size_t(i)] = std::clamp(std::nearbyint(xt[i] * scale), -128.0, 127.0);
        }
      } else {
        std::copy(xt, xt + L.n_in, xq.begin());
      }
      for (int64_t r = 0; r < L.n_out; ++r) {
        double acc = 0;
        for (int64_t i = 0; i < L.n_in; ++i) acc += L.w[size_t(r * L.n_in + i)] * xq[size_t(i)];
        y[size_t(t * L.n_out + r)] = acc / scale;
      }
    }
    return y;
  }

  void rope(Mat& x, int64_t n, int64_t heads) const {
    const int64_t hd = hp_.head_dim(), half = hp_.rope_dim / 2;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        double* v = x.data() + (t * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          const double ang =
              double(t) * std::pow(double(hp_.rope_theta), -2.0 * double(i) / double(hp_.rope_dim));
          const double a = v[i], b = v[i + half];
          v[i] = a * std::cos(ang) - b * std::sin(ang);
          v[i + half] = b * std::cos(ang) + a * std::sin(ang);
        }
      }
    }
  }

  HParams hp_;
  Mat embd_, head_, out_norm_;
  std::vector<Layer> layers_;
};

double rel_error(const std::vector<float>& a, const Mat& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

std::string make_model(const test::TempDir& dir, DType type, Activation act, bool tied,
                       DType embd = DType::F16) {
  CreateOptions o;
  o.hp = *hparams_preset("tiny");
  o.hp.act = act;
  o.hp.tied_head = tied;
  o.type = type;
  o.embd_type = embd;
  o.seed = 7;
  const std::string path = dir.file(cat("m_", dtype_name(type), "_", int(act), tied, ".gguf"));
  create_random_model(o, path);
  return path;
}

std::vector<int32_t> some_ids(int64_t n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = int32_t((i * 131 + 7) % vocab);
  return ids;
}

struct Case {
  DType type;
  Activation act;
  bool tied;
  DType embd;
};

class ForwardVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardVsReference, LogitsMatchIndependentImplementation) {
  test::TempDir dir;
  const Case c = GetParam();
  const std::string path = make_model(dir, c.type, c.act, c.tied, c.embd);
  auto model = Model::load(path);
  ReferenceModel ref(path);
  const std::vector<int32_t> ids = some_ids(12, model->hparams().n_vocab);
  ThreadPool pool(2);
  for (bool act_quant : {false, true}) {
    Session s(*model, 32, pool, ForwardOptions{act_quant}, 5);  // several batches
    std::vector<float> logits;
    s.eval(ids, logits, true);
    const Mat expected = ref.logits(ids, act_quant);
    const double err = rel_error(logits, expected);
    // Float activations: only f32 rounding differs. Int8: a rare rounding flip of one
    // activation moves a logit slightly.
    EXPECT_LT(err, act_quant ? 1e-2 : 1e-4) << "act_quant " << act_quant;
    const int64_t V = model->hparams().n_vocab;
    int agree = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
      const auto* a = logits.data() + t * size_t(V);
      const auto* b = expected.data() + t * size_t(V);
      agree += std::max_element(a, a + V) - a == std::max_element(b, b + V) - b;
    }
    EXPECT_GE(agree, int(ids.size()) - 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, ForwardVsReference,
                         ::testing::Values(Case{DType::TQ2_0, Activation::Relu2, true, DType::F16},
                                           Case{DType::TQ1_0, Activation::Silu, false, DType::Q8_0},
                                           Case{DType::I2_S, Activation::Relu2, true, DType::Q6_K},
                                           Case{DType::TQ2_0, Activation::Silu, true, DType::F32}));

TEST(KvCache, IncrementalDecodingEqualsRecomputation) {
  test::TempDir dir;
  auto model = Model::load(make_model(dir, DType::TQ2_0, Activation::Relu2, true));
  const int64_t V = model->hparams().n_vocab;
  const std::vector<int32_t> ids = some_ids(20, V);
  ThreadPool pool(2);
  Session whole(*model, 32, pool);
  std::vector<float> all;
  whole.eval(ids, all, true);

  Session step(*model, 32, pool);
  std::vector<float> logits;
  step.eval({ids.begin(), ids.begin() + 7}, logits);  // a prompt, then one token at a time
  for (size_t t = 6; t < ids.size(); ++t) {
    if (t > 6) step.eval({ids[t]}, logits);
    for (int64_t i = 0; i < V; ++i) {
      ASSERT_NEAR(logits[size_t(i)], all[t * size_t(V) + size_t(i)],
                  1e-5 * (1 + std::fabs(all[t * size_t(V) + size_t(i)])))
          << "position " << t << " logit " << i;
    }
  }
}

TEST(KvCache, TruncateThenReplayGivesSameLogits) {
  test::TempDir dir;
  auto model = Model::load(make_model(dir, DType::TQ2_0, Activation::Relu2, true));
  const std::vector<int32_t> ids = some_ids(10, model->hparams().n_vocab);
  ThreadPool pool(1);
  Session s(*model, 16, pool);
  std::vector<float> first, second;
  s.eval(ids, first);
  s.truncate(4);
  s.eval({ids.begin() + 4, ids.end()}, second);
  EXPECT_EQ(first, second);
}

TEST(Forward, ThreadCountDoesNotChangeResults) {
  test::TempDir dir;
  auto model = Model::load(make_model(dir, DType::TQ2_0, Activation::Relu2, true));
  const std::vector<int32_t> ids = some_ids(9, model->hparams().n_vocab);
  std::vector<float> a, b;
  ThreadPool p1(1), p3(3);
  Session(*model, 16, p1).eval(ids, a, true);
  Session(*model, 16, p3).eval(ids, b, true);
  EXPECT_EQ(a, b);
}

TEST(Forward, RejectsOutOfRangeTokensBeforeTouchingTheCache) {
  test::TempDir dir;
  auto model = Model::load(make_model(dir, DType::TQ2_0, Activation::Relu2, true));
  ThreadPool pool(1);
  Session s(*model, 16, pool);
  std::vector<float> logits;
  try {
    s.eval({1, 2, int32_t(model->hparams().n_vocab)}, logits);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s.n_past(), 0);
  EXPECT_THROW(s.eval(some_ids(17, 100), logits), Error);  // beyond the context
}

}  // namespace
}  // namespace trit
