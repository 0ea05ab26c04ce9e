#include "backend/cpu/ops_backward.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/kernels_backward.h"
#include "core/error.h"

namespace trit {
namespace {

// Dot product in 16 independent f32 lanes (a loop the compiler vectorises without
// reassociating), the lanes summed pairwise at the end: the same order for every call.
float dot_f32(const float* a, const float* b, int64_t n) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += a[k + j] * b[k + j];
  }
  for (int j = 0; k < n; ++k, ++j) acc[j] += a[k] * b[k];
  for (int w = kLanes / 2; w > 0; w /= 2) {
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  }
  return acc[0];
}

// y += a * x over n
void axpy_f32(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

// ---- rms_norm ----

void rms_norm_backward(float* dx, const float* dy, const float* x, const float* g,
                       const float* rstd, int64_t n_rows, int64_t n, float* dg) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n;    // (n)
    const float* dyr = dy + r * n;  // (n)
    float* dxr = dx + r * n;        // (n)
    const float s = rstd[r];
    double dot = 0;  // sum_i dy_i g_i x_i
    for (int64_t i = 0; i < n; ++i) dot += double(dyr[i]) * g[i] * xr[i];
    const float c = float(dot * s * s * s / double(n));
    for (int64_t i = 0; i < n; ++i) dxr[i] += s * g[i] * dyr[i] - c * xr[i];
    if (dg) {
      for (int64_t i = 0; i < n; ++i) dg[i] += dyr[i] * xr[i] * s;
    }
  }
}

// ---- rope ----

void rope_backward(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
                   const int32_t* pos, float base) {
  const int64_t half = rope_dim / 2;
  const size_t n_half = size_t(half);
  std::vector<float> inv_freq(n_half), c(n_half), s(n_half);  // (rope_dim / 2) each
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[size_t(i)] = 1.0f / std::pow(base, float(2 * i) / float(rope_dim));
  }
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {  // the angles of rope_forward, bit for bit
      const float angle = float(pos[t]) * inv_freq[size_t(i)];
      c[size_t(i)] = std::cos(angle);
      s[size_t(i)] = std::sin(angle);
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* xh = x + (t * n_heads + h) * head_dim;  // (head_dim)
      for (int64_t i = 0; i < half; ++i) {
        const float a = xh[i];
        const float b = xh[i + half];
        xh[i] = a * c[size_t(i)] + b * s[size_t(i)];
        xh[i + half] = b * c[size_t(i)] - a * s[size_t(i)];
      }
    }
  }
}

// ---- gated activation ----

void gated_act_backward(float* dgate, float* dup, const float* dout, const float* gate,
                        const float* up, int64_t n, Activation act) {
  if (act == Activation::Relu2) {
    for (int64_t i = 0; i < n; ++i) {
      const float r = gate[i] > 0 ? gate[i] : 0.0f;
      dgate[i] += 2.0f * r * up[i] * dout[i];
      dup[i] += r * r * dout[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float g = gate[i];
      const float sig = 1.0f / (1.0f + std::exp(-g));
      dgate[i] += sig * (1.0f + g * (1.0f - sig)) * up[i] * dout[i];
      dup[i] += g * sig * dout[i];
    }
  }
}

// ---- causal attention ----

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, int64_t kv_stride, int64_t n_tokens,
                        int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t kvh0,
                        int64_t kvh1, float* scratch) {
  if (n_head_kv <= 0 || n_head % n_head_kv != 0) {
    fail("attention_backward: ", n_head, " query heads are not a multiple of ", n_head_kv,
         " KV heads");
  }
  if (kvh0 < 0 || kvh1 < kvh0 || kvh1 > n_head_kv) {
    fail("attention_backward: KV heads [", kvh0, ", ", kvh1, ") outside 0..", n_head_kv);
  }
  const int64_t group = n_head / n_head_kv;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  float* p = scratch;              // (n_tokens) softmax row, then dS
  float* dp = scratch + n_tokens;  // (n_tokens) dout . v_j
  for (int64_t kvh = kvh0; kvh < kvh1; ++kvh) {
    for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
      for (int64_t t = 0; t < n_tokens; ++t) {
        const int64_t n_keys = t + 1;
        const float* qh = q + (t * n_head + h) * head_dim;      // (head_dim)
        const float* doh = dout + (t * n_head + h) * head_dim;  // (head_dim)
        float* dqh = dq + (t * n_head + h) * head_dim;          // (head_dim)
        // P: recomputed exactly as attention_forward does
        float max_score = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < n_keys; ++j) {
          const float* kj = k + j * kv_stride + kvh * head_dim;
          float dot = 0;
          for (int64_t d = 0; d < head_dim; ++d) dot += qh[d] * kj[d];
          p[j] = dot * scale;
          max_score = std::max(max_score, p[j]);
        }
        float sum = 0;
        for (int64_t j = 0; j < n_keys; ++j) {
          p[j] = std::exp(p[j] - max_score);
          sum += p[j];
        }
        const float inv = 1.0f / sum;
        // dP = dout v^T and D = sum_j P_j dP_j (= dout . out)
        float big_d = 0;
        for (int64_t j = 0; j < n_keys; ++j) {
          p[j] *= inv;
          dp[j] = dot_f32(doh, v + j * kv_stride + kvh * head_dim, head_dim);
          big_d += p[j] * dp[j];
        }
        for (int64_t j = 0; j < n_keys; ++j) {
          float* dvj = dv + j * kv_stride + kvh * head_dim;  // (head_dim)
          axpy_f32(dvj, p[j], doh, head_dim);
          p[j] = p[j] * (dp[j] - big_d) * scale;  // dS / sqrt(head_dim)
        }
        for (int64_t j = 0; j < n_keys; ++j) {
          const float* kj = k + j * kv_stride + kvh * head_dim;  // (head_dim)
          float* dkj = dk + j * kv_stride + kvh * head_dim;      // (head_dim)
          axpy_f32(dqh, p[j], kj, head_dim);
          axpy_f32(dkj, p[j], qh, head_dim);
        }
      }
    }
  }
}

// ---- cross-entropy ----

namespace {

void check_target(const char* op, const int32_t* targets, int64_t t, int64_t n_vocab) {
  if (targets[t] < 0 || targets[t] >= n_vocab) {
    fail(op, ": token ", t, " has target ", targets[t], ", outside the vocabulary of ", n_vocab,
         " tokens");
  }
}

float row_log_sum_exp(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(std::exp(x[i] - m));
  return float(double(m) + std::log(s));
}

}  // namespace

double cross_entropy_forward(const float* logits, const int32_t* targets, const float* mask,
                             int64_t n_tokens, int64_t n_vocab, float norm, float* nll,
                             float* lse) {
  const double inv_norm = 1.0 / std::max(double(norm), 1.0);
  double loss = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float m = mask ? mask[t] : 1.0f;
    if (m == 0.0f) {
      if (nll) nll[t] = 0.0f;
      if (lse) lse[t] = 0.0f;
      continue;
    }
    check_target("cross_entropy_forward", targets, t, n_vocab);
    const float* row = logits + t * n_vocab;  // (n_vocab)
    const float l = row_log_sum_exp(row, n_vocab);
    const float token_nll = l - row[targets[t]];
    if (nll) nll[t] = token_nll;
    if (lse) lse[t] = l;
    loss += double(m) * double(token_nll);
  }
  return loss * inv_norm;
}

void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                            const float* mask, const float* lse, int64_t n_tokens, int64_t n_vocab,
                            float norm) {
  const float inv_norm = 1.0f / std::max(norm, 1.0f);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* row = logits + t * n_vocab;  // (n_vocab)
    float* drow = dlogits + t * n_vocab;      // (n_vocab)
    const float m = mask ? mask[t] : 1.0f;
    if (m == 0.0f) {
      std::fill(drow, drow + n_vocab, 0.0f);
      continue;
    }
    check_target("cross_entropy_backward", targets, t, n_vocab);
    const float l = lse ? lse[t] : row_log_sum_exp(row, n_vocab);
    const float w = m * inv_norm;
    const int64_t target = targets[t];
    for (int64_t i = 0; i < n_vocab; ++i) {
      const float p = std::exp(row[i] - l);  // reads row[i] before writing drow[i]
      drow[i] = w * (i == target ? p - 1.0f : p);
    }
  }
}

// ---- f32 matrix product ----

void matmul_f32_forward(const float* x, const float* w, int64_t n_in, int64_t n_out, float* y,
                        int64_t t0, int64_t t1) {
  if (t1 <= t0) return;
  thread_local std::vector<float> wt;  // (n_in, n_out) W^T, so that the product is C += A B
  wt.resize(size_t(n_in * n_out));
  for (int64_t o = 0; o < n_out; ++o) {
    for (int64_t k = 0; k < n_in; ++k) wt[size_t(k * n_out + o)] = w[o * n_in + k];
  }
  std::fill(y + t0 * n_out, y + t1 * n_out, 0.0f);
  gemm_f32_acc(t0, t1, n_out, n_in, x, n_in, 1, wt.data(), n_out, y, n_out);
}

void matmul_f32_backward_dx(float* dx, const float* dy, const float* w, int64_t n_in, int64_t n_out,
                            int64_t t0, int64_t t1) {
  // dx (T, n_in) += dy (T, n_out) W (n_out, n_in)
  gemm_f32_acc(t0, t1, n_in, n_out, dy, n_out, 1, w, n_in, dx, n_in);
}

void matmul_f32_backward_dw(float* dw, const float* dy, const float* x, int64_t n_tokens,
                            int64_t n_in, int64_t n_out, int64_t r0, int64_t r1) {
  // dW (n_out, n_in) += dy^T (n_out, T) x (T, n_in)
  gemm_f32_acc(r0, r1, n_in, n_tokens, dy, 1, n_out, x, n_in, dw, n_in);
}

void matmul_f32_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                         int64_t n_tokens, int64_t n_in, int64_t n_out) {
  if (dx) matmul_f32_backward_dx(dx, dy, w, n_in, n_out, 0, n_tokens);
  if (dw) matmul_f32_backward_dw(dw, dy, x, n_tokens, n_in, n_out, 0, n_out);
}

}  // namespace trit
