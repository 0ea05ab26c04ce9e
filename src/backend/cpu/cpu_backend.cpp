#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"
#include "model/lora_apply.h"
#include "model/model.h"

namespace trit {
namespace {

// Trits of one row of a TQ2_0 or I2_S matrix and the scale of each weight's block.
void decode_ternary_row(const TernaryMatrix& w, int64_t r, int8_t* trits, float* scales) {
  const int64_t n = w.n_in;
  if (w.type == DType::TQ2_0) {
    const uint8_t* row = w.data + r * row_bytes(DType::TQ2_0, n);
    for (int64_t b = 0; b < n / kQK_K; ++b) {
      const uint8_t* blk = row + b * 66;
      uint16_t d16;
      std::memcpy(&d16, blk + 64, 2);
      const float d = fp16_to_f32(d16);
      for (int64_t j = 0; j < kQK_K; ++j) {
        const int64_t h = j / 128, l = (j % 128) / 32, m = j % 32;
        trits[b * kQK_K + j] = int8_t(((blk[32 * h + m] >> (2 * l)) & 3) - 1);
        scales[b * kQK_K + j] = d;
      }
    }
  } else {
    const uint8_t* row = w.data + r * (n / 4);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t run = j / 128, k = j % 128;
      trits[j] = int8_t(((row[run * 32 + k % 32] >> (6 - 2 * (k / 32))) & 3) - 1);
      scales[j] = w.uniform_scale;
    }
  }
}

void check_rows(const DeviceTensor& t, int64_t row0, int64_t n, const char* op) {
  if (row0 < 0 || n < 0 || row0 + n > t.rows()) {
    fail(op, ": rows ", row0, "..", row0 + n, " of tensor '", t.name(), "' with ", t.rows(),
         " rows");
  }
}

}  // namespace

void ternary_matmul_float(const TernaryMatrix& w, const float* x, int64_t n_tokens, float* y,
                          int64_t r0, int64_t r1) {
  if (w.type != DType::TQ2_0 && w.type != DType::I2_S) {  // e.g. a merged model's float layer
    fail("ternary_matmul_float: weight type ", dtype_name(w.type), " is not tq2_0 or i2_s");
  }
  std::vector<int8_t> trits(static_cast<size_t>(w.n_in));
  std::vector<float> scales(static_cast<size_t>(w.n_in));
  for (int64_t r = r0; r < r1; ++r) {
    decode_ternary_row(w, r, trits.data(), scales.data());
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * w.n_in;
      float acc = 0;
      for (int64_t j = 0; j < w.n_in; ++j)
        acc += float(trits[size_t(j)]) * scales[size_t(j)] * xt[j];
      y[t * w.n_out + r] = acc;
    }
  }
}

CpuTensor::CpuTensor(std::string name, int64_t rows, int64_t cols)
    : DeviceTensor(std::move(name), rows, cols),
      data_(static_cast<size_t>(rows) * static_cast<size_t>(cols), 0.0f) {}

float* cpu_data(DeviceTensor& t) {
  auto* c = dynamic_cast<CpuTensor*>(&t);
  if (!c) fail("cpu backend: tensor '", t.name(), "' belongs to another backend");
  return c->data();
}

const float* cpu_data(const DeviceTensor& t) {
  return cpu_data(const_cast<DeviceTensor&>(t));
}

std::string CpuBackend::description() const {
  return cat("cpu: ", cpu_level_name(active_cpu_level()), ", ", pool_.size(), " threads");
}

std::unique_ptr<DeviceTensor> CpuBackend::tensor(std::string_view name, int64_t rows,
                                                 int64_t cols) {
  if (rows < 0 || cols < 0) fail("cpu backend: tensor '", name, "' of ", rows, " x ", cols);
  return std::make_unique<CpuTensor>(std::string(name), rows, cols);
}

void CpuBackend::write(DeviceTensor& t, int64_t row0, int64_t n, const float* src) {
  check_rows(t, row0, n, "write");
  std::copy(src, src + n * t.cols(), cpu_data(t) + row0 * t.cols());
}

void CpuBackend::read(const DeviceTensor& t, int64_t row0, int64_t n, float* dst) {
  check_rows(t, row0, n, "read");
  const float* s = cpu_data(t) + row0 * t.cols();
  std::copy(s, s + n * t.cols(), dst);
}

void CpuBackend::embedding(DeviceTensor& out, const FloatMatrix& table, const int32_t* tokens,
                           int64_t n) {
  float* o = cpu_data(out);
  for (int64_t t = 0; t < n; ++t) float_matrix_row(table, tokens[t], o + t * out.cols());
}

void CpuBackend::rms_norm(DeviceTensor& y, const DeviceTensor& x, const float* g, int64_t n,
                          float eps, DeviceTensor* rstd) {
  rms_norm_forward(cpu_data(x), g, n, x.cols(), eps, cpu_data(y), rstd ? cpu_data(*rstd) : nullptr);
}

// Several layers sharing one input: the rows of all of them are split across the threads in
// one dispatch.
void CpuBackend::linear(std::span<const LinearOp> ops, const DeviceTensor& xt, int64_t T,
                        bool act_quant) {
  const float* x = cpu_data(xt);
  const int64_t n_in = xt.cols();
  int64_t total = 0;
  bool any_ternary = false;
  for (const LinearOp& j : ops) {
    total += j.w->m.n_out;
    any_ternary |= !j.w->is_float();
  }
  if (act_quant && any_ternary) quantize_acts(x, T, n_in, xq_);
  pool_.parallel_for(
      total,
      [&](int64_t begin, int64_t end, int) {
        int64_t base = 0;
        for (const LinearOp& j : ops) {
          const int64_t rows = j.w->m.n_out;
          const int64_t r0 = std::max(begin - base, int64_t(0));
          const int64_t r1 = std::min(end - base, rows);
          if (r0 < r1) {
            float* y = cpu_data(*j.y);
            if (j.w->is_float()) {  // a merged layer: float weights, un-quantised input
              float_matmul(j.w->f, x, T, y, rows, r0, r1);
            } else if (act_quant) {
              ternary_matmul(j.w->m, xq_, y, rows, r0, r1);
            } else {
              ternary_matmul_float(j.w->m, x, T, y, r0, r1);
            }
          }
          base += rows;
        }
      },
      16);
  for (const LinearOp& j : ops) {
    float* y = cpu_data(*j.y);
    if (j.w->out_scale != 1.0f) {
      const int64_t n = T * j.w->m.n_out;
      for (int64_t i = 0; i < n; ++i) y[i] *= j.w->out_scale;
    }
    // The LoRA branch sees the un-quantised input; `.scale` does not multiply it.
    if (j.lora && !j.lora->empty()) lora_add(*j.lora, x, T, n_in, y, j.w->m.n_out, pool_);
  }
}

void CpuBackend::rope(DeviceTensor& x, int64_t n, int64_t n_heads, const HParams& hp,
                      int64_t pos0) {
  std::vector<int32_t> pos(static_cast<size_t>(n));
  std::iota(pos.begin(), pos.end(), int32_t(pos0));
  rope_forward(cpu_data(x), n, n_heads, hp.head_dim(), hp.rope_dim, pos.data(), hp.rope_theta);
}

void CpuBackend::store_kv(DeviceTensor& cache, const DeviceTensor& src, int64_t n, int64_t pos0) {
  check_rows(cache, pos0, n, "store_kv");
  const float* s = cpu_data(src);
  std::copy(s, s + n * src.cols(), cpu_data(cache) + pos0 * cache.cols());
}

void CpuBackend::attention(DeviceTensor& out, const DeviceTensor& q, const DeviceTensor& k_cache,
                           const DeviceTensor& v_cache, int64_t n, int64_t pos0,
                           const HParams& hp) {
  const int64_t n_keys = pos0 + n;
  check_rows(k_cache, 0, n_keys, "attention");
  const size_t need = size_t(n_keys) * size_t(std::max(pool_.size(), 1));
  if (scores_.size() < need) scores_.resize(need);
  const float* kc = cpu_data(k_cache);
  const float* vc = cpu_data(v_cache);
  pool_.parallel_for(hp.n_head, [&](int64_t h0, int64_t h1, int thread) {
    attention_forward(cpu_data(q), kc, vc, k_cache.cols(), n, pos0, hp.n_head, hp.n_head_kv,
                      hp.head_dim(), h0, h1, cpu_data(out), scores_.data() + thread * n_keys);
  });
}

void CpuBackend::gated_act(DeviceTensor& out, const DeviceTensor& gate, const DeviceTensor& up,
                           int64_t n, Activation act) {
  gated_act_forward(cpu_data(gate), cpu_data(up), n * gate.cols(), act, cpu_data(out));
}

void CpuBackend::add(DeviceTensor& y, const DeviceTensor& x, int64_t n) {
  float* a = cpu_data(y);
  const float* b = cpu_data(x);
  for (int64_t i = 0; i < n * y.cols(); ++i) a[i] += b[i];
}

void CpuBackend::head(float* logits, const DeviceTensor& x, int64_t row0, int64_t n,
                      const FloatMatrix& w, const std::vector<LoraTerm>* lora) {
  const float* hin = cpu_data(x) + row0 * x.cols();
  pool_.parallel_for(
      w.n_out,
      [&](int64_t r0, int64_t r1, int) { float_matmul(w, hin, n, logits, w.n_out, r0, r1); }, 64);
  if (lora && !lora->empty()) lora_add(*lora, hin, n, x.cols(), logits, w.n_out, pool_);
}

}  // namespace trit
