// Rotary embedding (NeoX, rotate-half) forward and backward: the reference (ops.h) and the CPU
// backend's ops.
#include <cmath>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace trit::engine {

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

void CpuBackend::rope(DeviceTensor& x, int64_t row0, int64_t n, int64_t n_heads,
                      const AttnShape& shape, int64_t pos0) {
  check_rows(x, row0, n, "rope");
  std::vector<int32_t> pos(static_cast<size_t>(n));
  std::iota(pos.begin(), pos.end(), int32_t(pos0));
  // Tokens are independent (each computes its own angles): split over the threads.
  const int64_t cols = x.cols();
  pool_.parallel_for(n, [&](int64_t t0, int64_t t1, int) {
    rope_forward(cpu_data(x) + (row0 + t0) * cols, t1 - t0, n_heads, shape.head_dim, shape.rope_dim,
                 pos.data() + t0, shape.rope_theta);
  });
}

void CpuBackend::rope_backward(DeviceTensor& x, int64_t row0, int64_t n, int64_t n_heads,
                               const AttnShape& shape, int64_t pos0) {
  check_rows(x, row0, n, "rope_backward");
  std::vector<int32_t> pos(static_cast<size_t>(n));
  std::iota(pos.begin(), pos.end(), int32_t(pos0));
  const int64_t cols = x.cols();
  pool_.parallel_for(n, [&](int64_t t0, int64_t t1, int) {
    engine::rope_backward(cpu_data(x) + (row0 + t0) * cols, t1 - t0, n_heads, shape.head_dim,
                          shape.rope_dim, pos.data() + t0, shape.rope_theta);
  });
}

}  // namespace trit::engine
