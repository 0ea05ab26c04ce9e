// Rotary embedding (NeoX, rotate-half) forward and backward: the reference (ops.h) and the CPU
// backend's ops.
#include <cmath>
#include <initializer_list>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/ops.h"
#include "core/error.h"

namespace trit::engine {
namespace {

// 1 / base^(2i / rope_dim) for i in [0, rope_dim / 2): the frequencies every rotation uses.
std::vector<float> rope_inv_freq(int64_t rope_dim, float base) {
  std::vector<float> inv_freq(size_t(rope_dim / 2));
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    inv_freq[i] = 1.0f / std::pow(base, float(2 * int64_t(i)) / float(rope_dim));
  }
  return inv_freq;
}

// One token's n_heads heads at x rotated by the angles of position pos.
void rope_token(float* x, int64_t n_heads, int64_t head_dim, const std::vector<float>& inv_freq,
                int32_t pos, float* c, float* s) {
  const int64_t half = int64_t(inv_freq.size());
  for (int64_t i = 0; i < half; ++i) {
    const float angle = float(pos) * inv_freq[size_t(i)];
    c[i] = std::cos(angle);
    s[i] = std::sin(angle);
  }
  for (int64_t h = 0; h < n_heads; ++h) {
    float* xh = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float a = xh[i];
      const float b = xh[i + half];
      xh[i] = a * c[i] - b * s[i];
      xh[i + half] = b * c[i] + a * s[i];
    }
  }
}

}  // namespace

void rope_forward(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
                  const int32_t* pos, float base) {
  const std::vector<float> inv_freq = rope_inv_freq(rope_dim, base);
  std::vector<float> c(inv_freq.size()), s(inv_freq.size());
  for (int64_t t = 0; t < n_tokens; ++t) {
    rope_token(x + t * n_heads * head_dim, n_heads, head_dim, inv_freq, pos[t], c.data(), s.data());
  }
}

void rope_backward(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dim,
                   const int32_t* pos, float base) {
  const int64_t half = rope_dim / 2;
  const std::vector<float> inv_freq = rope_inv_freq(rope_dim, base);
  std::vector<float> c(inv_freq.size()), s(inv_freq.size());  // (rope_dim / 2) each
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

// Every sequence's rows in one parallel loop (a decoding step of many sequences is one row
// each): rope on the row of q and of k, then k's and v's rows into the cache. Each row's values
// are rope_forward's and store_kv's.
void CpuBackend::rope_store_kv(DeviceTensor& q, DeviceTensor& k, const DeviceTensor& v,
                               DeviceTensor& k_cache, DeviceTensor& v_cache,
                               std::span<const SeqRows> seqs, const AttnShape& shape) {
  const bool store = &k_cache != &k;
  struct Row {
    int64_t row, pos, cache_row;
  };
  std::vector<Row> rows;
  for (const SeqRows& s : seqs) {
    check_rows(q, s.row0, s.n, "rope_store_kv");
    check_rows(k, s.row0, s.n, "rope_store_kv");
    if (store) {
      check_rows(v, s.row0, s.n, "rope_store_kv");
      check_rows(k_cache, s.base + s.pos0, s.n, "rope_store_kv");
      check_rows(v_cache, s.base + s.pos0, s.n, "rope_store_kv");
    }
    for (int64_t t = 0; t < s.n; ++t) rows.push_back({s.row0 + t, s.pos0 + t, s.base + s.pos0 + t});
  }
  if (store) {
    for (const DeviceTensor* c :
         std::initializer_list<const DeviceTensor*>{&k_cache, &v_cache, &v}) {
      if (c->cols() != k.cols()) {
        fail("rope_store_kv: '", c->name(), "' has ", c->cols(), " columns, '", k.name(), "' ",
             k.cols());
      }
    }
    if (k_cache.f16() != v_cache.f16()) {
      fail("rope_store_kv: cache '", k_cache.name(), "' and '", v_cache.name(), "' differ in type");
    }
  }
  const std::vector<float> inv_freq = rope_inv_freq(shape.rope_dim, shape.rope_theta);
  const int64_t qc = q.cols(), kc = k.cols();
  pool_.parallel_for(int64_t(rows.size()), [&](int64_t r0, int64_t r1, int) {
    std::vector<float> c(inv_freq.size()), s(inv_freq.size());
    for (int64_t r = r0; r < r1; ++r) {
      const Row& w = rows[size_t(r)];
      const int32_t pos = int32_t(w.pos);
      rope_token(cpu_data(q) + w.row * qc, shape.n_head, shape.head_dim, inv_freq, pos, c.data(),
                 s.data());
      float* kr = cpu_data(k) + w.row * kc;
      rope_token(kr, shape.n_head_kv, shape.head_dim, inv_freq, pos, c.data(), s.data());
      if (!store) continue;
      const float* vr = cpu_data(v) + w.row * kc;
      if (k_cache.f16()) {
        float_to_half(kr, cpu_half(k_cache) + w.cache_row * kc, kc);
        float_to_half(vr, cpu_half(v_cache) + w.cache_row * kc, kc);
      } else {
        std::copy(kr, kr + kc, cpu_data(k_cache) + w.cache_row * kc);
        std::copy(vr, vr + kc, cpu_data(v_cache) + w.cache_row * kc);
      }
    }
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
