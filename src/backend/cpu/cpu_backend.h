// The CPU implementation of the Backend op set: tensors in host memory, ops split across a
// thread pool, heavy products through the kernels of kernels.h (scalar, AVX2, AVX-512 VNNI).
#pragma once

#include <vector>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/thread_pool.h"

namespace trit {

struct TernaryMatrix;

// y[t * n_out + r] = sum_j T[r, j] * d * x[t * n_in + j] for rows [r0, r1): the bitlinear with
// float activations (--act-quant none). Scalar.
void ternary_matmul_float(const TernaryMatrix& w, const float* x, int64_t n_tokens, float* y,
                          int64_t r0, int64_t r1);

class CpuTensor final : public DeviceTensor {
 public:
  CpuTensor(std::string name, int64_t rows, int64_t cols);
  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }

 private:
  std::vector<float> data_;  // (rows, cols)
};

// The host data of a tensor made by a CpuBackend (throws naming the tensor otherwise).
float* cpu_data(DeviceTensor& t);
const float* cpu_data(const DeviceTensor& t);

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool& pool) : pool_(pool) {}

  std::string description() const override;
  std::unique_ptr<DeviceTensor> tensor(std::string_view name, int64_t rows, int64_t cols) override;
  void write(DeviceTensor& t, int64_t row0, int64_t n, const float* src) override;
  void read(const DeviceTensor& t, int64_t row0, int64_t n, float* dst) override;

  void embedding(DeviceTensor& out, const FloatMatrix& table, const int32_t* tokens,
                 int64_t n) override;
  void rms_norm(DeviceTensor& y, const DeviceTensor& x, const float* g, int64_t n,
                float eps) override;
  void linear(std::span<const LinearOp> ops, const DeviceTensor& x, int64_t n,
              bool act_quant) override;
  void rope(DeviceTensor& x, int64_t n, int64_t n_heads, const HParams& hp, int64_t pos0) override;
  void store_kv(DeviceTensor& cache, const DeviceTensor& src, int64_t n, int64_t pos0) override;
  void attention(DeviceTensor& out, const DeviceTensor& q, const DeviceTensor& k_cache,
                 const DeviceTensor& v_cache, int64_t n, int64_t pos0, const HParams& hp) override;
  void gated_act(DeviceTensor& out, const DeviceTensor& gate, const DeviceTensor& up, int64_t n,
                 Activation act) override;
  void add(DeviceTensor& y, const DeviceTensor& x, int64_t n) override;
  void head(float* logits, const DeviceTensor& x, int64_t row0, int64_t n, const FloatMatrix& w,
            const std::vector<LoraTerm>* lora) override;

  ThreadPool& pool() { return pool_; }

 private:
  ThreadPool& pool_;
  QuantizedActs xq_;           // int8 activations of the current bitlinear input
  std::vector<float> scores_;  // (n_threads, n_keys) attention probabilities
};

}  // namespace trit
