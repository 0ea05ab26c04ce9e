// The CPU implementation of the Backend op set: tensors in host memory, ops split across a
// thread pool, heavy products through the kernels of kernels.h (scalar, AVX2, AVX-512 VNNI),
// the rest through the reference ops of ops.h. Each op family lives in the file of its name
// (tensor.cpp, embedding.cpp, norm.cpp, linear.cpp, rope.cpp, attention.cpp, activation.cpp,
// loss.cpp, optimizer.cpp), as in vulkan/. The CPU runs the fused ops as their default
// compositions.
#pragma once

#include <cstdlib>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "core/thread_pool.h"

namespace trit::engine {

class CpuTensor final : public DeviceTensor {
 public:
  CpuTensor(std::string name, int64_t rows, int64_t cols, bool f16 = false);
  // Over memory the caller owns (Backend::host_view).
  CpuTensor(std::string name, int64_t rows, int64_t cols, float* data);
  float* data() { return data_; }  // null for an f16 tensor
  const float* data() const { return data_; }
  uint16_t* half_data() { return half_; }  // an f16 tensor's values

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  // The values, zero: from calloc, whose large blocks are fresh pages the system maps as they
  // are first written, so a tensor of which a run uses a part (a server's KV caches: slots x
  // ctx positions) is resident only as far as it is used. Unless the tensor views the
  // caller's memory.
  std::unique_ptr<void, Free> owned_;
  float* data_ = nullptr;     // (rows, cols) f32
  uint16_t* half_ = nullptr;  // (rows, cols) of an f16 tensor (KvCacheF16)
};

// The host data of a tensor made by a CpuBackend (throws naming the tensor otherwise, and for
// an f16 tensor, which only the ops that take KV caches read).
float* cpu_data(DeviceTensor& t);
const float* cpu_data(const DeviceTensor& t);
// An f16 tensor's values (throws naming the tensor for an f32 one).
uint16_t* cpu_half(DeviceTensor& t);
const uint16_t* cpu_half(const DeviceTensor& t);

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool& pool) : pool_(pool) {}

  std::string description() const override;
  bool host_memory() const override { return true; }
  std::unique_ptr<DeviceTensor> host_view(std::string_view name, float* data, int64_t rows,
                                          int64_t cols) override;

  // tensor.cpp
  std::unique_ptr<DeviceTensor> tensor(std::string_view name, int64_t rows, int64_t cols,
                                       TensorUse use) override;
  void write(DeviceTensor& t, int64_t row0, int64_t n, const float* src) override;
  void read(const DeviceTensor& t, int64_t row0, int64_t n, float* dst) override;
  void zero(DeviceTensor& t) override;
  void copy(DeviceTensor& dst, const DeviceTensor& src, int64_t n) override;
  void add(DeviceTensor& y, const DeviceTensor& x, int64_t n) override;
  // embedding.cpp
  void embedding(DeviceTensor& out, const FloatMatrix& table, const int32_t* tokens,
                 int64_t n) override;
  // norm.cpp
  void rms_norm(const NormOp& op, int64_t n) override;
  void rms_norm_backward(DeviceTensor& dx, const DeviceTensor& dy, const DeviceTensor& x,
                         const float* g, const DeviceTensor& rstd, int64_t n) override;
  // linear.cpp
  void linear(std::span<const LinearOp> ops, const DeviceTensor& x, int64_t n,
              const LinearMode& mode) override;
  void lora_forward(DeviceTensor& y, const DeviceTensor& x, int64_t n, const LoraBranch& br,
                    const LoraSaved& saved, float p, uint64_t key) override;
  void linear_backward(DeviceTensor& dx, const DeviceTensor& dy, const LinearWeight& w,
                       int64_t n) override;
  void lora_backward(DeviceTensor& dx, const DeviceTensor& dy, const LoraSaved& saved, int64_t n,
                     const LoraBranch& br, float p) override;
  // rope.cpp
  void rope(DeviceTensor& x, int64_t row0, int64_t n, int64_t n_heads, const AttnShape& shape,
            int64_t pos0) override;
  void rope_backward(DeviceTensor& x, int64_t row0, int64_t n, int64_t n_heads,
                     const AttnShape& shape, int64_t pos0) override;
  void rope_store_kv(DeviceTensor& q, DeviceTensor& k, const DeviceTensor& v, DeviceTensor& k_cache,
                     DeviceTensor& v_cache, std::span<const SeqRows> seqs,
                     const AttnShape& shape) override;
  // attention.cpp
  void store_kv(DeviceTensor& cache, const DeviceTensor& src, int64_t row0, int64_t n,
                int64_t pos0) override;
  void attention(DeviceTensor& out, const DeviceTensor& q, const DeviceTensor& k_cache,
                 const DeviceTensor& v_cache, std::span<const SeqRows> seqs,
                 const AttnShape& shape) override;
  void attention_backward(DeviceTensor& dq, DeviceTensor& dk, DeviceTensor& dv,
                          const DeviceTensor& dout, const DeviceTensor& q, const DeviceTensor& k,
                          const DeviceTensor& v, std::span<const SeqRows> seqs,
                          const AttnShape& shape) override;
  // activation.cpp
  void gated_act(DeviceTensor& out, const DeviceTensor& gate, const DeviceTensor& up, int64_t n,
                 Activation act) override;
  void gated_act_backward(DeviceTensor& dgate, DeviceTensor& dup, const DeviceTensor& dout,
                          const DeviceTensor& gate, const DeviceTensor& up, int64_t n,
                          Activation act) override;
  // loss.cpp
  void head(const HeadOp& op) override;
  double take_loss() override;
  // optimizer.cpp
  void sum_squares(std::span<const DeviceTensor* const> ts, double* out) override;
  void adamw(DeviceTensor& p, const DeviceTensor& g, DeviceTensor& m, DeviceTensor& v,
             const AdamWScalars& k, float grad_scale) override;

  ThreadPool& pool() { return pool_; }

 private:
  void head_logits(const HeadOp& op, float* logits);  // loss.cpp
  void head_loss(const HeadOp& op);
  // attention.cpp: attention split by query rows; attention_backward by query rows, then by
  // key rows
  void attention_split(DeviceTensor& out, const DeviceTensor& q, const DeviceTensor& k_cache,
                       const DeviceTensor& v_cache, std::span<const SeqRows> seqs,
                       const AttnShape& shape, int64_t scratch_floats);
  void attention_backward_split(DeviceTensor& dq, DeviceTensor& dk, DeviceTensor& dv,
                                const DeviceTensor& dout, const DeviceTensor& q,
                                const DeviceTensor& k, const DeviceTensor& v,
                                std::span<const SeqRows> seqs, const AttnShape& shape,
                                float* scratch, int64_t per_thread, int64_t longest);

  ThreadPool& pool_;
  QuantizedActs xq_;                         // int8 activations of the current bitlinear input
  std::vector<float> x_padded_, dx_padded_;  // inputs and gradients of padded rows (linear.cpp)
  std::vector<float> scores_;                // (n_threads, n_keys) attention probabilities
  std::vector<float> kv_f32_;  // (n_threads, 2, n_keys, head_dim): one head of f16 caches
  double loss_ = 0;            // head() losses since the last take_loss
  std::vector<float> lora_xd_, lora_ax_;  // a branch's input and A x when not saved
  // head_loss's logits of a chunk, kept between calls: every element is written before it is
  // read, so neither a zero fill nor fresh pages are needed each step.
  std::vector<float> head_logits_;
};

// The LoRA branch on host arrays (linear.cpp; the head's branches use them too):
// y (T, n_out) += s * ax B^T, each element's dot product summed in rank order.
void lora_b_forward(const float* b, const float* ax, int64_t T, int64_t r, int64_t n_out, float s,
                    float* y, ThreadPool& pool);
// The branch's backward pass (Backend::lora_backward) on host arrays.
void lora_backward_host(float* dx, const float* dy, const float* xd, const float* ax,
                        const float* a, const float* b, float* da, float* db, int64_t T,
                        int64_t n_in, int64_t n_out, int64_t r, float s, float p, ThreadPool& pool);

// Throws naming op and the tensor when rows [row0, row0 + n) are not all in t.
void check_rows(const DeviceTensor& t, int64_t row0, int64_t n, const char* op);

}  // namespace trit::engine
