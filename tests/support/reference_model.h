// A plain double-precision BitNet b1.58 forward pass (DESIGN section 2) written from the
// dequantised weights of a GGUF file, sharing no code with src/model, for tests to compare
// against. LoRA adapters can be attached; their branch sees the un-quantised input.
// A llama file (a ternary Llama model) is computed as llama.cpp defines that architecture: no
// sub-norms, W_q and W_k used in the file's row order with rope on adjacent pairs (2i, 2i + 1)
// (llama.cpp's "normal" rope), not the engine's way (rows put back in Hugging Face's order,
// NeoX rope); adapters, written in Hugging Face's order, have their q and k rows moved to the
// file's order here.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/lora.h"
#include "core/quant.h"
#include "core/tensor_names.h"
#include "io/gguf.h"
#include "model/hparams.h"

namespace trit::engine::test {

using Mat = std::vector<double>;  // row-major

struct RefLora {
  Mat a, b;  // (r, n_in), (n_out, r)
  int64_t rank;
  double scale;
};

struct RefLinear {
  Mat w;  // (n_out, n_in)
  int64_t n_in, n_out;
  std::vector<RefLora> lora;
  int64_t file_order_head_dim = 0;  // llama W_q, W_k: LoRA rows go to the file's order
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
      L.ffn_norm = floats(*f, block_tensor_name(l, "ffn_norm"));
      if (!llama()) {
        L.attn_sub_norm = floats(*f, block_tensor_name(l, "attn_sub_norm"));
        L.ffn_sub_norm = floats(*f, block_tensor_name(l, "ffn_sub_norm"));
      }
      for (const std::string& what : block_linear_names()) {
        const GgufTensor& t = f->tensor(block_tensor_name(l, what));
        RefLinear r{Mat(size_t(t.n_elements())), t.ne[0], t.ne[1], {}};
        if (dtype_traits(t.type).ternary) {
          TernaryUnpacked u = unpack_ternary(t.type, t.data, t.n_elements());
          for (size_t i = 0; i < u.trits.size(); ++i) {
            const float s = t.type == DType::I2_S ? u.block_scales[0] : u.block_scales[i / 256];
            r.w[i] = double(u.trits[i]) * double(s);
          }
        } else {  // floats that are ternary already: their values
          std::vector<float> v(size_t(t.n_elements()));
          dequantize(t.type, t.data, t.n_elements(), v.data());
          std::copy(v.begin(), v.end(), r.w.begin());
        }
        if (llama() && (what == "attn_q" || what == "attn_k"))
          r.file_order_head_dim = hp_.head_dim();
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
      Mat o = linear(L.lin.at("attn_output"), llama() ? att : norm(att, L.attn_sub_norm, n), n,
                     act_quant);
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
      h = norm(x, L.ffn_norm, n);
      Mat g = linear(L.lin.at("ffn_gate"), h, n, act_quant);
      Mat u = linear(L.lin.at("ffn_up"), h, n, act_quant);
      for (size_t i = 0; i < g.size(); ++i) {
        const double a = hp_.act == Activation::Relu2 ? std::pow(std::max(g[i], 0.0), 2)
                                                      : g[i] / (1 + std::exp(-g[i]));
        g[i] = a * u[i];
      }
      Mat dn = linear(L.lin.at("ffn_down"), llama() ? g : norm(g, L.ffn_sub_norm, n), n, act_quant);
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
      for (const RefLora& lo : head_lora_) {
        add_lora_branch(lo, h.data() + t * d, d, out.data() + t * hp_.n_vocab, hp_.n_vocab);
      }
    }
    return out;
  }

  const HParams& hp() const { return hp_; }
  bool llama() const { return hp_.arch == "llama"; }

  // Attaches an adapter: scale = user_scale * alpha / r (alpha / sqrt(r) with rsLoRA),
  // computed here from the adapter's fields.
  void add_lora(const LoraAdapter& ad, double user_scale) {
    for (const auto& [name, L] : ad.layers) {
      RefLora lo{
          Mat(L.a.begin(), L.a.end()), Mat(L.b.begin(), L.b.end()), L.rank,
          user_scale * double(ad.alpha) / (ad.rslora ? std::sqrt(double(L.rank)) : double(L.rank))};
      if (name == "output.weight") {
        head_lora_.push_back(std::move(lo));
        continue;
      }
      bool found = false;
      for (int64_t l = 0; l < hp_.n_layer && !found; ++l) {
        for (auto& [what, lin] : layers_[size_t(l)].lin) {
          if (block_tensor_name(l, what) == name) {
            lin.lora.push_back(lo);
            found = true;
            break;
          }
        }
      }
      if (!found) throw std::runtime_error("reference: no layer " + name);
    }
  }

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
      for (const RefLora& lo : L.lora) {
        if (L.file_order_head_dim == 0) {
          add_lora_branch(lo, xt, L.n_in, y.data() + t * L.n_out, L.n_out);
          continue;
        }
        // Hugging Face row h * hd + a * hd / 2 + j is the file's row h * hd + 2 j + a.
        std::vector<double> hf(size_t(L.n_out), 0.0);
        add_lora_branch(lo, xt, L.n_in, hf.data(), L.n_out);
        const int64_t hd = L.file_order_head_dim, half = hd / 2;
        for (int64_t r = 0; r < L.n_out; ++r) {
          const int64_t head = r / hd, a = (r % hd) / half, j = r % half;
          y[size_t(t * L.n_out + head * hd + 2 * j + a)] += hf[size_t(r)];
        }
      }
    }
    return y;
  }

  static void add_lora_branch(const RefLora& lo, const double* x, int64_t n_in, double* y,
                              int64_t n_out) {
    std::vector<double> ax(size_t(lo.rank), 0.0);
    for (int64_t k = 0; k < lo.rank; ++k) {
      for (int64_t i = 0; i < n_in; ++i) ax[size_t(k)] += lo.a[size_t(k * n_in + i)] * x[i];
    }
    for (int64_t o = 0; o < n_out; ++o) {
      double acc = 0;
      for (int64_t k = 0; k < lo.rank; ++k) acc += lo.b[size_t(o * lo.rank + k)] * ax[size_t(k)];
      y[o] += lo.scale * acc;
    }
  }

  void rope(Mat& x, int64_t n, int64_t heads) const {
    const int64_t hd = hp_.head_dim(), half = hp_.rope_dim / 2;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        double* v = x.data() + (t * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          const double ang =
              double(t) * std::pow(double(hp_.rope_theta), -2.0 * double(i) / double(hp_.rope_dim));
          // NeoX pairs (i, i + half); llama.cpp's llama pairs (2i, 2i + 1)
          const int64_t i0 = llama() ? 2 * i : i, i1 = llama() ? 2 * i + 1 : i + half;
          const double a = v[i0], b = v[i1];
          v[i0] = a * std::cos(ang) - b * std::sin(ang);
          v[i1] = b * std::cos(ang) + a * std::sin(ang);
        }
      }
    }
  }

  HParams hp_;
  Mat embd_, head_, out_norm_;
  std::vector<Layer> layers_;
  std::vector<RefLora> head_lora_;
};

}  // namespace trit::engine::test
