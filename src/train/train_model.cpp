#include "train/train_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "backend/cpu/kernels.h"
#include "backend/cpu/kernels_backward.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/ops_backward.h"
#include "core/error.h"
#include "backend/cpu/cpu_backend.h"
#include "model/forward.h"

namespace trit {

using Vec = std::vector<float>;

// One LoRA layer attached to a linear layer, with its gradient and the activations of its
// branch saved by the forward pass: xd = dropout(x) (T, n_in), ax = xd A^T (T, r).
struct TrainableModel::Term {
  LoraLayer* layer = nullptr;
  LoraGrad* grad = nullptr;
  float scale = 0;
  uint64_t salt = 0;  // distinguishes the dropout masks of different layers
};

// Everything one block's backward pass reads, saved by its forward pass.
struct TrainableModel::Acts {
  Vec x;                                              // (T, d) block input
  Vec h1, rstd1;                                      // (T, d), (T) attn_norm
  Vec q, k, v;                                        // (T, d), (T, dkv), (T, dkv) after rope
  Vec att, h2, rstd2;                                 // (T, d) attention output, attn_sub_norm
  Vec x2, h3, rstd3;                                  // (T, d) after attention, ffn_norm
  Vec gate, up, m, h4, rstd4;                         // (T, ff) ..., ffn_sub_norm
  std::array<std::vector<Vec>, kLinearCount> xd, ax;  // per LoRA term
};

namespace {

uint64_t mix(uint64_t x) {  // splitmix64
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// xd = x * keep / (1 - p) with keep drawn per element from (key, salt, index).
void dropout(const float* x, int64_t n, float p, uint64_t key, uint64_t salt, float* xd) {
  const float inv = 1.0f / (1.0f - p);
  const uint64_t base = mix(key ^ mix(salt));
  for (int64_t i = 0; i < n; ++i) {
    const double u = double(mix(base + uint64_t(i)) >> 11) * 0x1.0p-53;
    xd[i] = u < p ? 0.0f : x[i] * inv;
  }
}

}  // namespace

TrainableModel::TrainableModel(const Model& model, LoraAdapter& adapter, ThreadPool& pool,
                               TrainOptions opts)
    : model_(model), adapter_(adapter), pool_(pool), opts_(opts) {
  const HParams& hp = model.hparams();
  const LoraSet set = resolve_lora({{&adapter, 1.0f}}, hp);  // checks every shape
  (void)set;
  terms_.resize(size_t(hp.n_layer));
  uint64_t salt = 1;
  for (const std::string& name : lora_layer_order(adapter)) {
    LoraLayer& L = adapter.layers.at(name);
    LoraGrad& g = grads_[name];
    g.da.assign(L.a.size(), 0.0f);
    g.db.assign(L.b.size(), 0.0f);
    Term term{&L, &g, adapter.scaling(L.rank), salt++};
    const auto target = parse_lora_layer_name(name);
    if (!target || target->layer < 0) {
      head_terms_.push_back(term);
      continue;
    }
    const auto& names = block_linear_names();
    const size_t idx = size_t(std::find(names.begin(), names.end(), target->what) - names.begin());
    terms_[size_t(target->layer)][idx].push_back(term);
  }
}

TrainableModel::~TrainableModel() = default;

std::vector<ParamRef> TrainableModel::param_refs() {
  std::vector<ParamRef> params;
  for (auto& [name, g] : grads_) {
    LoraLayer& L = adapter_.layers.at(name);
    params.push_back({name + ".lora_a", L.a.data(), g.da.data(), int64_t(L.a.size())});
    params.push_back({name + ".lora_b", L.b.data(), g.db.data(), int64_t(L.b.size())});
  }
  return params;
}

std::vector<std::span<float>> TrainableModel::grad_spans() {
  std::vector<std::span<float>> spans;
  for (auto& [name, g] : grads_) {
    spans.emplace_back(g.da);
    spans.emplace_back(g.db);
  }
  return spans;
}

void TrainableModel::zero_grads() {
  for (auto& [name, g] : grads_) {
    std::fill(g.da.begin(), g.da.end(), 0.0f);
    std::fill(g.db.begin(), g.db.end(), 0.0f);
  }
}

namespace {

// y (T, n_out) = bitlinear(x) + LoRA branches; saves each branch's xd and ax.
template <class TermT>
void linear_forward(const LinearWeight& w, const std::vector<TermT>& terms, const float* x,
                    const QuantizedActs& xq, int64_t T, float* y, std::vector<Vec>& xd,
                    std::vector<Vec>& ax, float p, uint64_t key, bool train, ThreadPool& pool) {
  const int64_t n_in = w.m.n_in, n_out = w.m.n_out;
  pool.parallel_for(
      n_out,
      [&](int64_t r0, int64_t r1, int) {
        if (xq.n_tokens == T) {
          ternary_matmul(w.m, xq, y, n_out, r0, r1);
        } else {  // no quantised input: float activations
          ternary_matmul_float(w.m, x, T, y, r0, r1);
        }
      },
      16);
  if (w.out_scale != 1.0f) {
    for (int64_t i = 0; i < T * n_out; ++i) y[i] *= w.out_scale;
  }
  xd.resize(terms.size());
  ax.resize(terms.size());
  for (size_t j = 0; j < terms.size(); ++j) {
    const LoraLayer& L = *terms[j].layer;
    const int64_t r = L.rank;
    xd[j].resize(size_t(T * n_in));
    if (train && p > 0) {
      dropout(x, T * n_in, p, key, terms[j].salt, xd[j].data());
    } else {
      std::copy(x, x + T * n_in, xd[j].begin());
    }
    ax[j].resize(size_t(T * r));
    pool.parallel_for(T, [&](int64_t t0, int64_t t1, int) {
      matmul_f32_forward(xd[j].data(), L.a.data(), n_in, r, ax[j].data(), t0, t1);
    });
    const float s = terms[j].scale;
    pool.parallel_for(n_out, [&](int64_t o0, int64_t o1, int) {
      for (int64_t t = 0; t < T; ++t) {
        const float* at = ax[j].data() + t * r;
        float* yt = y + t * n_out;
        for (int64_t o = o0; o < o1; ++o) {
          const float* bo = L.b.data() + o * r;
          float acc = 0;
          for (int64_t k = 0; k < r; ++k) acc += bo[k] * at[k];
          yt[o] += acc * s;
        }
      }
    });
  }
}

// dx (T, n_in) += d bitlinear / dx . dy + the LoRA branches'; adds dA and dB.
template <class TermT>
void linear_backward(const LinearWeight* w, int64_t n_in, int64_t n_out,
                     const std::vector<TermT>& terms, const float* dy, int64_t T, float* dx,
                     const std::vector<Vec>& xd, const std::vector<Vec>& ax, float p,
                     ThreadPool& pool) {
  if (w) {
    pool.parallel_for(
        n_in,
        [&](int64_t c0, int64_t c1, int) {
          ternary_matmul_transposed(w->m, dy, n_out, T, w->out_scale, dx, c0, c1);
        },
        256);
  }
  for (size_t j = 0; j < terms.size(); ++j) {
    const LoraLayer& L = *terms[j].layer;
    LoraGrad& g = *terms[j].grad;
    const int64_t r = L.rank;
    const float s = terms[j].scale;
    Vec ds(static_cast<size_t>(T * n_out));  // d(branch output before the scale) = s * dy
    for (int64_t i = 0; i < T * n_out; ++i) ds[size_t(i)] = s * dy[i];
    pool.parallel_for(n_out, [&](int64_t r0, int64_t r1, int) {
      matmul_f32_backward_dw(g.db.data(), ds.data(), ax[j].data(), T, r, n_out, r0, r1);
    });
    Vec dax(size_t(T * r), 0.0f);  // (T, r) = ds B
    pool.parallel_for(T, [&](int64_t t0, int64_t t1, int) {
      matmul_f32_backward_dx(dax.data(), ds.data(), L.b.data(), r, n_out, t0, t1);
    });
    pool.parallel_for(r, [&](int64_t r0, int64_t r1, int) {
      matmul_f32_backward_dw(g.da.data(), dax.data(), xd[j].data(), T, n_in, r, r0, r1);
    });
    Vec dxd(size_t(T * n_in), 0.0f);
    pool.parallel_for(T, [&](int64_t t0, int64_t t1, int) {
      matmul_f32_backward_dx(dxd.data(), dax.data(), L.a.data(), n_in, r, t0, t1);
    });
    // Through the dropout: xd = x * keep / (1 - p), and xd is 0 exactly where dropped.
    const float inv = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
    for (int64_t i = 0; i < T * n_in; ++i) {
      if (p > 0 && xd[j][size_t(i)] == 0.0f) continue;
      dx[i] += dxd[size_t(i)] * inv;
    }
  }
}

}  // namespace

void TrainableModel::block_forward(int64_t l, const float* x, int64_t T, Acts& a, bool train,
                                   uint64_t key, float* out) {
  const HParams& hp = model_.hparams();
  const BlockWeights& b = model_.weights().blocks[size_t(l)];
  const int64_t d = hp.n_embd, dkv = hp.n_embd_kv(), ff = hp.n_ff, hd = hp.head_dim();
  const auto& terms = terms_[size_t(l)];
  const float p = opts_.dropout;
  const uint64_t lkey = mix(key + uint64_t(l));
  auto sz = [&](int64_t n) { return static_cast<size_t>(T * n); };
  a.x.assign(x, x + T * d);
  a.h1.resize(sz(d));
  a.rstd1.resize(size_t(T));
  rms_norm_forward(x, b.attn_norm, T, d, hp.rms_eps, a.h1.data(), a.rstd1.data());
  QuantizedActs xq;
  auto quantize = [&](const float* in, int64_t n) {
    if (opts_.act_quant) quantize_acts(in, T, n, xq);
  };
  quantize(a.h1.data(), d);
  a.q.resize(sz(d));
  a.k.resize(sz(dkv));
  a.v.resize(sz(dkv));
  linear_forward(b.q, terms[kQ], a.h1.data(), xq, T, a.q.data(), a.xd[kQ], a.ax[kQ], p, lkey, train,
                 pool_);
  linear_forward(b.k, terms[kK], a.h1.data(), xq, T, a.k.data(), a.xd[kK], a.ax[kK], p, lkey, train,
                 pool_);
  linear_forward(b.v, terms[kV], a.h1.data(), xq, T, a.v.data(), a.xd[kV], a.ax[kV], p, lkey, train,
                 pool_);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), 0);
  rope_forward(a.q.data(), T, hp.n_head, hd, hp.rope_dim, pos.data(), hp.rope_theta);
  rope_forward(a.k.data(), T, hp.n_head_kv, hd, hp.rope_dim, pos.data(), hp.rope_theta);
  a.att.resize(sz(d));
  Vec scores(size_t(T) * size_t(pool_.size()));
  pool_.parallel_for(hp.n_head, [&](int64_t h0, int64_t h1, int thread) {
    attention_forward(a.q.data(), a.k.data(), a.v.data(), dkv, T, 0, hp.n_head, hp.n_head_kv, hd,
                      h0, h1, a.att.data(), scores.data() + thread * T);
  });
  a.h2.resize(sz(d));
  a.rstd2.resize(size_t(T));
  rms_norm_forward(a.att.data(), b.attn_sub_norm, T, d, hp.rms_eps, a.h2.data(), a.rstd2.data());
  quantize(a.h2.data(), d);
  Vec o(sz(d));
  linear_forward(b.o, terms[kO], a.h2.data(), xq, T, o.data(), a.xd[kO], a.ax[kO], p, lkey, train,
                 pool_);
  a.x2.resize(sz(d));
  for (size_t i = 0; i < sz(d); ++i) a.x2[i] = x[i] + o[i];
  a.h3.resize(sz(d));
  a.rstd3.resize(size_t(T));
  rms_norm_forward(a.x2.data(), b.ffn_norm, T, d, hp.rms_eps, a.h3.data(), a.rstd3.data());
  quantize(a.h3.data(), d);
  a.gate.resize(sz(ff));
  a.up.resize(sz(ff));
  linear_forward(b.gate, terms[kGate], a.h3.data(), xq, T, a.gate.data(), a.xd[kGate], a.ax[kGate],
                 p, lkey, train, pool_);
  linear_forward(b.up, terms[kUp], a.h3.data(), xq, T, a.up.data(), a.xd[kUp], a.ax[kUp], p, lkey,
                 train, pool_);
  a.m.resize(sz(ff));
  gated_act_forward(a.gate.data(), a.up.data(), T * ff, hp.act, a.m.data());
  a.h4.resize(sz(ff));
  a.rstd4.resize(size_t(T));
  rms_norm_forward(a.m.data(), b.ffn_sub_norm, T, ff, hp.rms_eps, a.h4.data(), a.rstd4.data());
  quantize(a.h4.data(), ff);
  linear_forward(b.down, terms[kDown], a.h4.data(), xq, T, out, a.xd[kDown], a.ax[kDown], p, lkey,
                 train, pool_);
  for (size_t i = 0; i < sz(d); ++i) out[i] += a.x2[i];
}

void TrainableModel::block_backward(int64_t l, Acts& a, int64_t T, float* dx) {
  const HParams& hp = model_.hparams();
  const BlockWeights& b = model_.weights().blocks[size_t(l)];
  const int64_t d = hp.n_embd, dkv = hp.n_embd_kv(), ff = hp.n_ff, hd = hp.head_dim();
  const auto& terms = terms_[size_t(l)];
  const float p = opts_.dropout;
  auto sz = [&](int64_t n) { return static_cast<size_t>(T * n); };
  // dx holds d(block output) on entry; the residuals pass it through to x2 and x.
  Vec dx2(dx, dx + T * d);
  Vec dh4(sz(ff), 0.0f);
  linear_backward(&b.down, ff, d, terms[kDown], dx, T, dh4.data(), a.xd[kDown], a.ax[kDown], p,
                  pool_);
  Vec dm(sz(ff), 0.0f);
  rms_norm_backward(dm.data(), dh4.data(), a.m.data(), b.ffn_sub_norm, a.rstd4.data(), T, ff);
  Vec dgate(sz(ff), 0.0f), dup(sz(ff), 0.0f);
  gated_act_backward(dgate.data(), dup.data(), dm.data(), a.gate.data(), a.up.data(), T * ff,
                     hp.act);
  Vec dh3(sz(d), 0.0f);
  linear_backward(&b.gate, d, ff, terms[kGate], dgate.data(), T, dh3.data(), a.xd[kGate],
                  a.ax[kGate], p, pool_);
  linear_backward(&b.up, d, ff, terms[kUp], dup.data(), T, dh3.data(), a.xd[kUp], a.ax[kUp], p,
                  pool_);
  rms_norm_backward(dx2.data(), dh3.data(), a.x2.data(), b.ffn_norm, a.rstd3.data(), T, d);
  // attention
  Vec dh2(sz(d), 0.0f);
  linear_backward(&b.o, d, d, terms[kO], dx2.data(), T, dh2.data(), a.xd[kO], a.ax[kO], p, pool_);
  Vec datt(sz(d), 0.0f);
  rms_norm_backward(datt.data(), dh2.data(), a.att.data(), b.attn_sub_norm, a.rstd2.data(), T, d);
  Vec dq(sz(d), 0.0f), dk(sz(dkv), 0.0f), dv(sz(dkv), 0.0f);
  const int64_t threads = pool_.size();
  Vec scratch(static_cast<size_t>(2 * T * threads));
  pool_.parallel_for(hp.n_head_kv, [&](int64_t k0, int64_t k1, int thread) {
    attention_backward(dq.data(), dk.data(), dv.data(), datt.data(), a.q.data(), a.k.data(),
                       a.v.data(), dkv, T, hp.n_head, hp.n_head_kv, hd, k0, k1,
                       scratch.data() + 2 * T * thread);
  });
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), 0);
  rope_backward(dq.data(), T, hp.n_head, hd, hp.rope_dim, pos.data(), hp.rope_theta);
  rope_backward(dk.data(), T, hp.n_head_kv, hd, hp.rope_dim, pos.data(), hp.rope_theta);
  Vec dh1(sz(d), 0.0f);
  linear_backward(&b.q, d, d, terms[kQ], dq.data(), T, dh1.data(), a.xd[kQ], a.ax[kQ], p, pool_);
  linear_backward(&b.k, d, dkv, terms[kK], dk.data(), T, dh1.data(), a.xd[kK], a.ax[kK], p, pool_);
  linear_backward(&b.v, d, dkv, terms[kV], dv.data(), T, dh1.data(), a.xd[kV], a.ax[kV], p, pool_);
  rms_norm_backward(dx2.data(), dh1.data(), a.x.data(), b.attn_norm, a.rstd1.data(), T, d);
  std::copy(dx2.begin(), dx2.end(), dx);
}

double TrainableModel::head(const float* x_last, int64_t T, const int32_t* targets,
                            const float* mask, float norm, float* dx_last) {
  const HParams& hp = model_.hparams();
  const ModelWeights& w = model_.weights();
  const int64_t d = hp.n_embd, V = hp.n_vocab;
  Vec hf(static_cast<size_t>(T * d)), rstd(static_cast<size_t>(T));
  rms_norm_forward(x_last, w.output_norm, T, d, hp.rms_eps, hf.data(), rstd.data());
  Vec dhf(dx_last ? size_t(T * d) : 0, 0.0f);
  double loss = 0;
  const int64_t chunk = std::max<int64_t>(1, opts_.head_chunk);
  Vec logits;
  std::vector<Vec> xd(1), ax(1);
  const int threads = pool_.size();
  std::vector<Vec> dpart(static_cast<size_t>(threads));
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t n = std::min(chunk, T - t0);
    bool any = false;
    for (int64_t t = t0; t < t0 + n; ++t) any |= !mask || mask[t] != 0.0f;
    if (!any) continue;
    const float* h = hf.data() + t0 * d;
    logits.assign(size_t(n * V), 0.0f);
    pool_.parallel_for(
        V,
        [&](int64_t r0, int64_t r1, int) {
          float_matmul(w.output, h, n, logits.data(), V, r0, r1);
        },
        64);
    std::vector<std::vector<Vec>> hxd(head_terms_.size()), hax(head_terms_.size());
    for (size_t j = 0; j < head_terms_.size(); ++j) {
      const Term& term = head_terms_[j];
      const LoraLayer& L = *term.layer;
      Vec a1(static_cast<size_t>(n * L.rank));
      matmul_f32_forward(h, L.a.data(), d, L.rank, a1.data(), 0, n);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t o = 0; o < V; ++o) {
          float acc = 0;
          for (int64_t k = 0; k < L.rank; ++k)
            acc += L.b[size_t(o * L.rank + k)] * a1[size_t(t * L.rank + k)];
          logits[size_t(t * V + o)] += acc * term.scale;
        }
      }
      hxd[j] = {Vec(h, h + n * d)};
      hax[j] = {std::move(a1)};
    }
    loss +=
        cross_entropy_forward(logits.data(), targets + t0, mask ? mask + t0 : nullptr, n, V, norm);
    if (!dx_last) continue;
    cross_entropy_backward(logits.data(), logits.data(), targets + t0, mask ? mask + t0 : nullptr,
                           nullptr, n, V, norm);
    // dh = dlogits W: each thread takes rows of W and sums into its own buffer.
    pool_.parallel_for(V, [&](int64_t r0, int64_t r1, int thread) {
      Vec& part = dpart[size_t(thread)];
      part.assign(size_t(n * d), 0.0f);
      Vec row(static_cast<size_t>(d));
      for (int64_t r = r0; r < r1; ++r) {
        float_matrix_row(w.output, r, row.data());
        for (int64_t t = 0; t < n; ++t) {
          const float g = logits[size_t(t * V + r)];
          if (g == 0.0f) continue;
          float* out = part.data() + t * d;
          for (int64_t i = 0; i < d; ++i) out[i] += g * row[size_t(i)];
        }
      }
    });
    float* dh = dhf.data() + t0 * d;
    for (int th = 0; th < threads; ++th) {
      if (dpart[size_t(th)].empty()) continue;
      for (int64_t i = 0; i < n * d; ++i) dh[i] += dpart[size_t(th)][size_t(i)];
      dpart[size_t(th)].clear();
    }
    for (size_t j = 0; j < head_terms_.size(); ++j) {
      linear_backward<Term>(nullptr, d, V, {head_terms_[j]}, logits.data(), n, dh, hxd[j], hax[j],
                            0.0f, pool_);
    }
  }
  if (dx_last) {
    rms_norm_backward(dx_last, dhf.data(), x_last, w.output_norm, rstd.data(), T, d);
  }
  return loss;
}

double TrainableModel::run(const int32_t* tokens, const int32_t* targets, const float* mask,
                           int64_t T, float norm, bool backward, uint64_t key) {
  const HParams& hp = model_.hparams();
  const int64_t d = hp.n_embd, L = hp.n_layer;
  if (T <= 0) fail("train: empty sequence");
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= hp.n_vocab) {
      fail("token id ", tokens[t], " is out of range: the vocabulary has ", hp.n_vocab, " tokens");
    }
  }
  Vec x(static_cast<size_t>(T * d));
  for (int64_t t = 0; t < T; ++t) {
    float_matrix_row(model_.weights().token_embd, tokens[t], x.data() + t * d);
  }
  const bool keep_all = backward && !opts_.checkpointing;
  std::vector<Acts> acts(keep_all ? size_t(L) : 1);
  std::vector<Vec> inputs(backward && opts_.checkpointing ? size_t(L) : 0);
  Vec y(static_cast<size_t>(T * d));
  for (int64_t l = 0; l < L; ++l) {
    if (!inputs.empty()) inputs[size_t(l)] = x;
    block_forward(l, x.data(), T, acts[keep_all ? size_t(l) : 0], backward, key, y.data());
    std::swap(x, y);
  }
  Vec dx(backward ? size_t(T * d) : 0, 0.0f);
  const double loss = head(x.data(), T, targets, mask, norm, backward ? dx.data() : nullptr);
  if (!backward) return loss;
  for (int64_t l = L - 1; l >= 0; --l) {
    Acts* a = &acts[keep_all ? size_t(l) : 0];
    if (!keep_all) block_forward(l, inputs[size_t(l)].data(), T, *a, true, key, y.data());
    block_backward(l, *a, T, dx.data());
  }
  return loss;
}

double TrainableModel::forward_backward(const int32_t* tokens, const int32_t* targets,
                                        const float* mask, int64_t T, float norm,
                                        uint64_t dropout_key) {
  return run(tokens, targets, mask, T, norm, true, dropout_key);
}

double TrainableModel::forward_loss(const int32_t* tokens, const int32_t* targets,
                                    const float* mask, int64_t T, float norm) {
  return run(tokens, targets, mask, T, norm, false, 0);
}

}  // namespace trit
