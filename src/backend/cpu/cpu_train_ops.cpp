// The training ops of the CPU backend: the LoRA branches with dropout, the backward passes of
// the block's ops, and the LM head with the cross-entropy loss (backend.h, "training").
#include <algorithm>
#include <vector>

#include "backend/cpu/adamw_kernel.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels_backward.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/ops_backward.h"
#include "core/error.h"
#include "model/model.h"

namespace trit {

using Vec = std::vector<float>;

uint64_t dropout_mix(uint64_t x) {  // splitmix64
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void lora_dropout(const float* x, int64_t n, float p, uint64_t key, uint64_t salt, float* xd) {
  const float inv = 1.0f / (1.0f - p);
  const uint64_t base = dropout_mix(key ^ dropout_mix(salt));
  for (int64_t i = 0; i < n; ++i) {
    const double u = double(dropout_mix(base + uint64_t(i)) >> 11) * 0x1.0p-53;
    xd[i] = u < p ? 0.0f : x[i] * inv;
  }
}

namespace {

// y (T, n_out) += s * ax B^T, each element's dot product summed in rank order.
void lora_b_forward(const float* b, const float* ax, int64_t T, int64_t r, int64_t n_out, float s,
                    float* y, ThreadPool& pool) {
  pool.parallel_for(n_out, [&](int64_t o0, int64_t o1, int) {
    for (int64_t t = 0; t < T; ++t) {
      const float* at = ax + t * r;
      float* yt = y + t * n_out;
      for (int64_t o = o0; o < o1; ++o) {
        const float* bo = b + o * r;
        float acc = 0;
        for (int64_t k = 0; k < r; ++k) acc += bo[k] * at[k];
        yt[o] += acc * s;
      }
    }
  });
}

// The LoRA part of a linear layer's backward pass, on host arrays.
void lora_backward_host(float* dx, const float* dy, const float* xd, const float* ax,
                        const float* a, const float* b, float* da, float* db, int64_t T,
                        int64_t n_in, int64_t n_out, int64_t r, float s, float p,
                        ThreadPool& pool) {
  Vec ds(static_cast<size_t>(T * n_out));  // d(branch output before the scale) = s * dy
  for (int64_t i = 0; i < T * n_out; ++i) ds[size_t(i)] = s * dy[i];
  pool.parallel_for(n_out, [&](int64_t r0, int64_t r1, int) {
    matmul_f32_backward_dw(db, ds.data(), ax, T, r, n_out, r0, r1);
  });
  Vec dax(size_t(T * r), 0.0f);  // (T, r) = ds B
  pool.parallel_for(T, [&](int64_t t0, int64_t t1, int) {
    matmul_f32_backward_dx(dax.data(), ds.data(), b, r, n_out, t0, t1);
  });
  pool.parallel_for(r, [&](int64_t r0, int64_t r1, int) {
    matmul_f32_backward_dw(da, dax.data(), xd, T, n_in, r, r0, r1);
  });
  Vec dxd(size_t(T * n_in), 0.0f);
  pool.parallel_for(T, [&](int64_t t0, int64_t t1, int) {
    matmul_f32_backward_dx(dxd.data(), dax.data(), a, n_in, r, t0, t1);
  });
  // Through the dropout: xd = x * keep / (1 - p), and xd is 0 exactly where dropped.
  const float inv = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
  for (int64_t i = 0; i < T * n_in; ++i) {
    if (p > 0 && xd[i] == 0.0f) continue;
    dx[i] += dxd[size_t(i)] * inv;
  }
}

}  // namespace

void CpuBackend::sum_squares(std::span<const DeviceTensor* const> ts, double* out) {
  for (size_t i = 0; i < ts.size(); ++i) {
    const float* x = cpu_data(*ts[i]);
    double sq = 0.0;
    for (int64_t j = 0; j < ts[i]->rows() * ts[i]->cols(); ++j) sq += double(x[j]) * double(x[j]);
    out[i] = sq;
  }
}

void CpuBackend::adamw(DeviceTensor& p, const DeviceTensor& g, DeviceTensor& m, DeviceTensor& v,
                       const AdamWScalars& k, float grad_scale) {
  for (const DeviceTensor* t :
       {&g, static_cast<const DeviceTensor*>(&m), static_cast<const DeviceTensor*>(&v)}) {
    if (t->rows() != p.rows() || t->cols() != p.cols()) {
      fail("adamw: '", t->name(), "' is ", t->rows(), " x ", t->cols(), ", its parameter '",
           p.name(), "' ", p.rows(), " x ", p.cols());
    }
  }
  adamw_update(cpu_data(p), cpu_data(g), cpu_data(m), cpu_data(v), p.rows() * p.cols(), k,
               grad_scale);
}

void CpuBackend::zero(DeviceTensor& t) {
  std::fill(cpu_data(t), cpu_data(t) + t.rows() * t.cols(), 0.0f);
}

void CpuBackend::copy(DeviceTensor& dst, const DeviceTensor& src, int64_t n) {
  if (dst.cols() != src.cols() || n > dst.rows() || n > src.rows()) {
    fail("copy: ", n, " rows of '", src.name(), "' (", src.rows(), " x ", src.cols(), ") to '",
         dst.name(), "' (", dst.rows(), " x ", dst.cols(), ")");
  }
  std::copy(cpu_data(src), cpu_data(src) + n * src.cols(), cpu_data(dst));
}

void CpuBackend::lora_forward(DeviceTensor& y, DeviceTensor& xd, DeviceTensor& ax,
                              const DeviceTensor& x, int64_t T, const LoraBranch& br, float p,
                              uint64_t key) {
  const int64_t n_in = x.cols(), r = br.a->rows();
  float* xdp = cpu_data(xd);
  if (p > 0) {
    lora_dropout(cpu_data(x), T * n_in, p, key, br.salt, xdp);
  } else {
    std::copy(cpu_data(x), cpu_data(x) + T * n_in, xdp);
  }
  const float* a = cpu_data(*br.a);
  float* axp = cpu_data(ax);
  pool_.parallel_for(
      T, [&](int64_t t0, int64_t t1, int) { matmul_f32_forward(xdp, a, n_in, r, axp, t0, t1); });
  lora_b_forward(cpu_data(*br.b), axp, T, r, y.cols(), br.scale, cpu_data(y), pool_);
}

void CpuBackend::lora_backward(DeviceTensor& dx, const DeviceTensor& dy, const DeviceTensor& xd,
                               const DeviceTensor& ax, int64_t T, const LoraBranch& br, float p) {
  lora_backward_host(cpu_data(dx), cpu_data(dy), cpu_data(xd), cpu_data(ax), cpu_data(*br.a),
                     cpu_data(*br.b), cpu_data(*br.da), cpu_data(*br.db), T, dx.cols(), dy.cols(),
                     br.a->rows(), br.scale, p, pool_);
}

void CpuBackend::linear_backward(DeviceTensor& dx, const DeviceTensor& dy, const LinearWeight& w,
                                 int64_t T) {
  if (w.is_float())
    fail("train: layer ", w.name, " has float (merged) weights; train a base model");
  const float* dyp = cpu_data(dy);
  float* dxp = cpu_data(dx);
  pool_.parallel_for(
      w.m.n_in,
      [&](int64_t c0, int64_t c1, int) {
        ternary_matmul_transposed(w.m, dyp, w.m.n_out, T, w.out_scale, dxp, c0, c1);
      },
      256);
}

void CpuBackend::rms_norm_backward(DeviceTensor& dx, const DeviceTensor& dy, const DeviceTensor& x,
                                   const float* g, const DeviceTensor& rstd, int64_t n) {
  trit::rms_norm_backward(cpu_data(dx), cpu_data(dy), cpu_data(x), g, cpu_data(rstd), n, x.cols());
}

void CpuBackend::rope_backward(DeviceTensor& x, int64_t n, int64_t n_heads, const HParams& hp,
                               int64_t pos0) {
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) pos[size_t(t)] = int32_t(pos0 + t);
  trit::rope_backward(cpu_data(x), n, n_heads, hp.head_dim(), hp.rope_dim, pos.data(),
                      hp.rope_theta);
}

void CpuBackend::attention_backward(DeviceTensor& dq, DeviceTensor& dk, DeviceTensor& dv,
                                    const DeviceTensor& dout, const DeviceTensor& q,
                                    const DeviceTensor& k, const DeviceTensor& v, int64_t T,
                                    const HParams& hp) {
  const int64_t threads = pool_.size();
  Vec scratch(static_cast<size_t>(2 * T * threads));
  pool_.parallel_for(hp.n_head_kv, [&](int64_t k0, int64_t k1, int thread) {
    trit::attention_backward(cpu_data(dq), cpu_data(dk), cpu_data(dv), cpu_data(dout), cpu_data(q),
                             cpu_data(k), cpu_data(v), k.cols(), T, hp.n_head, hp.n_head_kv,
                             hp.head_dim(), k0, k1, scratch.data() + 2 * T * thread);
  });
}

void CpuBackend::gated_act_backward(DeviceTensor& dgate, DeviceTensor& dup,
                                    const DeviceTensor& dout, const DeviceTensor& gate,
                                    const DeviceTensor& up, int64_t n, Activation act) {
  trit::gated_act_backward(cpu_data(dgate), cpu_data(dup), cpu_data(dout), cpu_data(gate),
                           cpu_data(up), n * gate.cols(), act);
}

void CpuBackend::head_loss(const DeviceTensor& hf, int64_t T, const FloatMatrix& w,
                           std::span<const LoraBranch> lora, const int32_t* targets,
                           const float* mask, float norm, int64_t chunk_tokens, DeviceTensor* dhf) {
  const int64_t d = hf.cols(), V = w.n_out;
  const int64_t chunk = std::max<int64_t>(1, chunk_tokens);
  Vec logits;
  const int threads = pool_.size();
  std::vector<Vec> dpart(static_cast<size_t>(threads));
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t n = std::min(chunk, T - t0);
    bool any = false;
    for (int64_t t = t0; t < t0 + n; ++t) any |= !mask || mask[t] != 0.0f;
    if (!any) continue;
    const float* h = cpu_data(hf) + t0 * d;
    logits.assign(size_t(n * V), 0.0f);
    pool_.parallel_for(
        V, [&](int64_t r0, int64_t r1, int) { float_matmul(w, h, n, logits.data(), V, r0, r1); },
        64);
    std::vector<Vec> hax(lora.size());
    for (size_t j = 0; j < lora.size(); ++j) {
      const LoraBranch& br = lora[j];
      const int64_t r = br.a->rows();
      hax[j].resize(static_cast<size_t>(n * r));
      matmul_f32_forward(h, cpu_data(*br.a), d, r, hax[j].data(), 0, n);
      const float* b = cpu_data(*br.b);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t o = 0; o < V; ++o) {
          float acc = 0;
          for (int64_t k = 0; k < r; ++k) acc += b[o * r + k] * hax[j][size_t(t * r + k)];
          logits[size_t(t * V + o)] += acc * br.scale;
        }
      }
    }
    loss_ +=
        cross_entropy_forward(logits.data(), targets + t0, mask ? mask + t0 : nullptr, n, V, norm);
    if (!dhf) continue;
    cross_entropy_backward(logits.data(), logits.data(), targets + t0, mask ? mask + t0 : nullptr,
                           nullptr, n, V, norm);
    // dh = dlogits W: each thread takes rows of W and sums into its own buffer.
    pool_.parallel_for(V, [&](int64_t r0, int64_t r1, int thread) {
      Vec& part = dpart[size_t(thread)];
      part.assign(size_t(n * d), 0.0f);
      Vec row(static_cast<size_t>(d));
      for (int64_t r = r0; r < r1; ++r) {
        float_matrix_row(w, r, row.data());
        for (int64_t t = 0; t < n; ++t) {
          const float g = logits[size_t(t * V + r)];
          if (g == 0.0f) continue;
          float* out = part.data() + t * d;
          for (int64_t i = 0; i < d; ++i) out[i] += g * row[size_t(i)];
        }
      }
    });
    float* dh = cpu_data(*dhf) + t0 * d;
    for (int th = 0; th < threads; ++th) {
      if (dpart[size_t(th)].empty()) continue;
      for (int64_t i = 0; i < n * d; ++i) dh[i] += dpart[size_t(th)][size_t(i)];
      dpart[size_t(th)].clear();
    }
    for (size_t j = 0; j < lora.size(); ++j) {
      const LoraBranch& br = lora[j];
      lora_backward_host(dh, logits.data(), h, hax[j].data(), cpu_data(*br.a), cpu_data(*br.b),
                         cpu_data(*br.da), cpu_data(*br.db), n, d, V, br.a->rows(), br.scale, 0.0f,
                         pool_);
    }
  }
}

double CpuBackend::take_loss() {
  const double l = loss_;
  loss_ = 0;
  return l;
}

}  // namespace trit
