// The op set every compute backend implements (DESIGN section 1). The model code
// (model/forward.cpp) composes these ops and never knows which device runs them.
//
// Tensors are f32 matrices owned by the backend that made them: activations (rows = tokens)
// and KV caches (rows = positions). An op works on the first n rows of its activation tensors.
// Weights are passed as the model's host structures (LinearWeight, FloatMatrix, norm vectors);
// a device backend uploads each one the first time an op uses it and keeps it for the life of
// the backend, so a backend serves one model (or a few sharing its lifetime).
//
// A CPU backend runs each op at once. A device backend may queue ops and run them together:
// read(), head() and take_loss() wait for everything queued before them.
//
// The training ops (second half) follow ops_backward.h's conventions: gradients come first and
// are ADDED to (callers zero them once per step), except where a comment says otherwise.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/hparams.h"

namespace trit {

struct FloatMatrix;
struct LinearWeight;
struct LoraTerm;

// The f32 scalars of one AdamW step of one tensor (train/optimizer.h computes them as PyTorch
// does, in double rounded to f32).
struct AdamWScalars {
  float decay = 1;            // 1 - lr * wd (1: no decay)
  float one_minus_beta1 = 0;  // exp_avg.lerp_ weight
  float beta2 = 0;
  float one_minus_beta2 = 0;
  float bc2_sqrt = 1;  // sqrt(1 - beta2^t)
  float eps = 0;
  float neg_step_size = 0;  // -lr / (1 - beta1^t)
};

// An f32 matrix of rows x cols living on one backend.
class DeviceTensor {
 public:
  DeviceTensor(std::string name, int64_t rows, int64_t cols)
      : name_(std::move(name)), rows_(rows), cols_(cols) {}
  virtual ~DeviceTensor() = default;
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  const std::string& name() const { return name_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }

 private:
  std::string name_;
  int64_t rows_;
  int64_t cols_;
};

// A trainable LoRA branch on a linear layer of n_in inputs and n_out outputs, all on the
// backend: y += scale * (dropout(x) A^T) B^T.
struct LoraBranch {
  DeviceTensor* a = nullptr;   // (rank, n_in)
  DeviceTensor* b = nullptr;   // (n_out, rank)
  DeviceTensor* da = nullptr;  // like a
  DeviceTensor* db = nullptr;  // like b
  float scale = 0;
  uint64_t salt = 0;  // tells the dropout masks of different branches apart
};

// One linear layer applied to a shared input: y = layer(x) * out_scale + its LoRA terms.
struct LinearOp {
  const LinearWeight* w = nullptr;
  DeviceTensor* y = nullptr;  // (n, w->m.n_out)
  const std::vector<LoraTerm>* lora = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // A line for logs: the device and how it computes, e.g. "cpu: avx512-vnni, 2 threads".
  virtual std::string description() const = 0;

  virtual std::unique_ptr<DeviceTensor> tensor(std::string_view name, int64_t rows,
                                               int64_t cols) = 0;
  // Copies rows [row0, row0 + n) between the host (row-major, t.cols() floats a row) and t.
  virtual void write(DeviceTensor& t, int64_t row0, int64_t n, const float* src) = 0;
  virtual void read(const DeviceTensor& t, int64_t row0, int64_t n, float* dst) = 0;

  // out[t, :] = table[tokens[t], :] for t < n (ids already checked against the table).
  virtual void embedding(DeviceTensor& out, const FloatMatrix& table, const int32_t* tokens,
                         int64_t n) = 0;
  // y = x / sqrt(mean(x^2) + eps) * g per row; y may be x.   g: (x.cols()) host vector
  // rstd (n, 1): the per-row 1 / sqrt(...), saved for the backward pass when not null.
  virtual void rms_norm(DeviceTensor& y, const DeviceTensor& x, const float* g, int64_t n,
                        float eps, DeviceTensor* rstd = nullptr) = 0;
  // Every op's y = its layer applied to x (n, n_in): ternary layers quantise x per token to
  // int8 when act_quant (W1.58A8), else use float activations; float (merged) layers use x.
  // The LoRA terms see the un-quantised x.
  virtual void linear(std::span<const LinearOp> ops, const DeviceTensor& x, int64_t n,
                      bool act_quant) = 0;
  // NeoX rope in place on x viewed as (n, n_heads, head_dim), token t at position pos0 + t.
  virtual void rope(DeviceTensor& x, int64_t n, int64_t n_heads, const HParams& hp,
                    int64_t pos0) = 0;
  // cache rows [pos0, pos0 + n) = src rows [0, n).
  virtual void store_kv(DeviceTensor& cache, const DeviceTensor& src, int64_t n, int64_t pos0) = 0;
  // A block's rope and KV store together: rope on q and k (n_head and n_head_kv heads), then
  // cache rows [pos0, pos0 + n) = k and v. k's contents afterwards are unspecified (a device
  // may write the rotated values only to the cache). The default calls rope and store_kv.
  virtual void rope_store_kv(DeviceTensor& q, DeviceTensor& k, const DeviceTensor& v,
                             DeviceTensor& k_cache, DeviceTensor& v_cache, int64_t n, int64_t pos0,
                             const HParams& hp);
  // Causal GQA attention of n query tokens at positions pos0.. against cache rows
  // [0, pos0 + n).   q, out: (n, n_head * head_dim); k_cache, v_cache: (n_ctx, n_embd_kv)
  virtual void attention(DeviceTensor& out, const DeviceTensor& q, const DeviceTensor& k_cache,
                         const DeviceTensor& v_cache, int64_t n, int64_t pos0,
                         const HParams& hp) = 0;
  // out = act(gate) * up elementwise over (n, cols).
  virtual void gated_act(DeviceTensor& out, const DeviceTensor& gate, const DeviceTensor& up,
                         int64_t n, Activation act) = 0;
  // y += x over (n, cols).
  virtual void add(DeviceTensor& y, const DeviceTensor& x, int64_t n) = 0;
  // The LM head for rows [row0, row0 + n) of x, written to the host: logits ((n, w.n_out),
  // row-major) = x W^T + LoRA terms (may be null). Waits for the result.
  virtual void head(float* logits, const DeviceTensor& x, int64_t row0, int64_t n,
                    const FloatMatrix& w, const std::vector<LoraTerm>* lora) = 0;

  // ---- training ----
  virtual void zero(DeviceTensor& t) = 0;
  // dst rows [0, n) = src rows [0, n) (same cols).
  virtual void copy(DeviceTensor& dst, const DeviceTensor& src, int64_t n) = 0;
  // y (n, n_out) += scale * ax B^T with xd = dropout(x) (x * keep / (1 - p), keep drawn from
  // (key, branch salt, element index) as train_model.cpp's dropout; a copy of x when p == 0)
  // and ax = xd A^T, both saved for the backward pass.   x, xd: (n, n_in)   ax: (n, rank)
  virtual void lora_forward(DeviceTensor& y, DeviceTensor& xd, DeviceTensor& ax,
                            const DeviceTensor& x, int64_t n, const LoraBranch& br, float p,
                            uint64_t key) = 0;
  // With ds = scale * dy: db += ds^T ax, dax = ds B, da += dax^T xd, and
  // dx += (dax A) / (1 - p) where xd != 0 (everywhere when p == 0).
  virtual void lora_backward(DeviceTensor& dx, const DeviceTensor& dy, const DeviceTensor& xd,
                             const DeviceTensor& ax, int64_t n, const LoraBranch& br, float p) = 0;
  // dx (n, n_in) += out_scale * w_scale * T^T dy through a frozen ternary layer (the
  // straight-through estimator for the activation quantiser).   dy: (n, n_out)
  virtual void linear_backward(DeviceTensor& dx, const DeviceTensor& dy, const LinearWeight& w,
                               int64_t n) = 0;
  // dx += d rms_norm / dx . dy (g frozen).   dx, dy, x: (n, cols)   rstd: (n, 1) from rms_norm
  virtual void rms_norm_backward(DeviceTensor& dx, const DeviceTensor& dy, const DeviceTensor& x,
                                 const float* g, const DeviceTensor& rstd, int64_t n) = 0;
  // Rotates the gradient x in place by the negative angles (the inverse of rope).
  virtual void rope_backward(DeviceTensor& x, int64_t n, int64_t n_heads, const HParams& hp,
                             int64_t pos0) = 0;
  // Backward of attention over a whole sequence (positions 0 .. n - 1, keys and values of the
  // same n tokens):   dq, q, dout: (n, n_head * head_dim)   dk, dv, k, v: (n, n_embd_kv)
  virtual void attention_backward(DeviceTensor& dq, DeviceTensor& dk, DeviceTensor& dv,
                                  const DeviceTensor& dout, const DeviceTensor& q,
                                  const DeviceTensor& k, const DeviceTensor& v, int64_t n,
                                  const HParams& hp) = 0;
  // dgate += act'(gate) * up * dout, dup += act(gate) * dout.
  virtual void gated_act_backward(DeviceTensor& dgate, DeviceTensor& dup, const DeviceTensor& dout,
                                  const DeviceTensor& gate, const DeviceTensor& up, int64_t n,
                                  Activation act) = 0;
  // The LM head and the loss over rows [0, n) of h (the normalised final hidden states), in
  // chunks of `chunk` tokens (chunks without a counted token are skipped): logits = h W^T +
  // the branches, loss += sum_t mask[t] * nll_t / max(norm, 1) (mask null: every token
  // counts); when dh is not null also dh += dlogits W + the branches' dx and the branches'
  // da, db (dropout off). targets, mask: host arrays of n. The loss accumulates on the
  // backend until take_loss().
  virtual void head_loss(const DeviceTensor& h, int64_t n, const FloatMatrix& w,
                         std::span<const LoraBranch> lora, const int32_t* targets,
                         const float* mask, float norm, int64_t chunk, DeviceTensor* dh) = 0;
  // The loss accumulated by head_loss since the last call (waits for it), then 0 again.
  virtual double take_loss() = 0;

  // ---- optimizer ----
  // out[i] = the sum of squares of every element of ts[i] (waits for it; the CPU sums in
  // double, so its norms are correctly rounded).
  virtual void sum_squares(std::span<const DeviceTensor* const> ts, double* out) = 0;
  // One AdamW step of p with gradient grad_scale * g (the clipping factor; 1: none) and
  // moments m, v, all of p's shape, in optimizer.h's order of operations.
  virtual void adamw(DeviceTensor& p, const DeviceTensor& g, DeviceTensor& m, DeviceTensor& v,
                     const AdamWScalars& k, float grad_scale) = 0;
};

}  // namespace trit
