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
  void rms_norm(DeviceTensor& y, const DeviceTensor& x, const float* g, int64_t n, float eps,
                DeviceTensor* rstd = nullptr) override;
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

  // training (cpu_train_ops.cpp)
  void sum_squares(std::span<const DeviceTensor* const> ts, double* out) override;
  void adamw(DeviceTensor& p, const DeviceTensor& g, DeviceTensor& m, DeviceTensor& v,
             const AdamWScalars& k, float grad_scale) override;
  void zero(DeviceTensor& t) override;
  void copy(DeviceTensor& dst, const DeviceTensor& src, int64_t n) override;
  void lora_forward(DeviceTensor& y, DeviceTensor& xd, DeviceTensor& ax, const DeviceTensor& x,
                    int64_t n, const LoraBranch& br, float p, uint64_t key) override;
  void lora_backward(DeviceTensor& dx, const DeviceTensor& dy, const DeviceTensor& xd,
                     const DeviceTensor& ax, int64_t n, const LoraBranch& br, float p) override;
  void linear_backward(DeviceTensor& dx, const DeviceTensor& dy, const LinearWeight& w,
                       int64_t n) override;
  void rms_norm_backward(DeviceTensor& dx, const DeviceTensor& dy, const DeviceTensor& x,
                         const float* g, const DeviceTensor& rstd, int64_t n) override;
  void rope_backward(DeviceTensor& x, int64_t n, int64_t n_heads, const HParams& hp,
                     int64_t pos0) override;
  void attention_backward(DeviceTensor& dq, DeviceTensor& dk, DeviceTensor& dv,
                          const DeviceTensor& dout, const DeviceTensor& q, const DeviceTensor& k,
                          const DeviceTensor& v, int64_t n, const HParams& hp) override;
  void gated_act_backward(DeviceTensor& dgate, DeviceTensor& dup, const DeviceTensor& dout,
                          const DeviceTensor& gate, const DeviceTensor& up, int64_t n,
                          Activation act) override;
  void head_loss(const DeviceTensor& h, int64_t n, const FloatMatrix& w,
                 std::span<const LoraBranch> lora, const int32_t* targets, const float* mask,
                 float norm, int64_t chunk, DeviceTensor* dh) override;
  double take_loss() override;

  ThreadPool& pool() { return pool_; }

 private:
  ThreadPool& pool_;
  QuantizedActs xq_;           // int8 activations of the current bitlinear input
  std::vector<float> scores_;  // (n_threads, n_keys) attention probabilities
  double loss_ = 0;            // head_loss since the last take_loss
};

// The dropout of the LoRA branches: xd = x * keep / (1 - p), keep drawn per element from
// (key, salt, index) by splitmix64, so masks are a pure function of them.
uint64_t dropout_mix(uint64_t x);
void lora_dropout(const float* x, int64_t n, float p, uint64_t key, uint64_t salt, float* xd);

}  // namespace trit
