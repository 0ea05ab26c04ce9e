#include "backend/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace trit {

void rms_norm_forward(const float* x, const float* g, int64_t n_rows, int64_t n, float eps,
                      float* y, float* rstd) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    const float s = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] * s) * g[i];
    if (rstd) rstd[r] = s;
  }
}

void rope_forward(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
                  const int32_t* pos, float base) {
  const int64_t half = rope_dim / 2;
  const size_t n_half = size_t(half);
  std::vector<float> inv_freq(n_half), c(n_half), s(n_half);
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[size_t(i)] = 1.0f / std::pow(base, float(2 * i) / float(rope_dim));
  }
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(pos[t]) * inv_freq[size_t(i)];
      c[size_t(i)] = std::cos(angle);
      s[size_t(i)] = std::sin(angle);
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* xh = x + (t * n_heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = xh[i];
        const float b = xh[i + half];
        xh[i] = a * c[size_t(i)] - b * s[size_t(i)];
        xh[i + half] = b * c[size_t(i)] + a * s[size_t(i)];
      }
    }
  }
}

void gated_act_forward(const float* gate, const float* up, int64_t n, Activation act, float* out) {
  if (act == Activation::Relu2) {
    for (int64_t i = 0; i < n; ++i) {
      const float r = gate[i] > 0 ? gate[i] : 0.0f;
      out[i] = r * r * up[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  }
}

void attention_forward(const float* q, const float* k, const float* v, int64_t kv_stride,
                       int64_t n_tokens, int64_t pos0, int64_t n_head, int64_t n_head_kv,
                       int64_t head_dim, int64_t h0, int64_t h1, float* out, float* scratch) {
  const int64_t group = n_head / n_head_kv;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int64_t n_keys = pos0 + t + 1;
    for (int64_t h = h0; h < h1; ++h) {
      const float* qh = q + (t * n_head + h) * head_dim;
      const int64_t kvh = h / group;
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n_keys; ++j) {
        const float* kj = k + j * kv_stride + kvh * head_dim;
        float dot = 0;
        for (int64_t d = 0; d < head_dim; ++d) dot += qh[d] * kj[d];
        scratch[j] = dot * scale;
        max_score = std::max(max_score, scratch[j]);
      }
      float sum = 0;
      for (int64_t j = 0; j < n_keys; ++j) {
        scratch[j] = std::exp(scratch[j] - max_score);
        sum += scratch[j];
      }
      const float inv = 1.0f / sum;
      float* oh = out + (t * n_head + h) * head_dim;
      std::fill(oh, oh + head_dim, 0.0f);
      for (int64_t j = 0; j < n_keys; ++j) {
        const float p = scratch[j] * inv;
        const float* vj = v + j * kv_stride + kvh * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) oh[d] += p * vj[d];
      }
    }
  }
}

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

double log_sum_exp(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(double(x[i]) - m);
  return double(m) + std::log(s);
}

}  // namespace trit
