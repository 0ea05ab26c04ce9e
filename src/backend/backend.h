// The op set every compute backend implements (DESIGN section 1). The model (model/block.cpp)
// composes these ops and never knows which device runs them; a backend knows nothing of the
// model: ops take weight views (core/weights.h), plain shapes and tensors.
//
// Tensors are f32 matrices owned by the backend that made them: activations (rows = tokens)
// and KV caches (rows = positions). An op works on the first n rows of its activation tensors.
// Weights are host views; a device backend uploads each one the first time an op uses it and
// keeps it for the life of the backend (keyed by its host address), so a backend serves one
// model (or a few sharing its lifetime). A LoRA branch's A and B are tensors of the backend.
//
// A CPU backend runs each op at once. A device backend may queue ops and run them together:
// read(), head() with logits, take_loss() and sum_squares() wait for everything queued before.
//
// Backward ops follow cpu/ops.h's conventions: gradients come first and are ADDED to (callers
// zero them once per step), except where a comment says otherwise.
//
// The op families, each a file of the same name in cpu/ and vulkan/ holding its forward and
// backward ops: tensor (make, read, write, zero, copy, add), embedding, norm, linear (ternary
// and float products, LoRA branches), rope, attention, activation, loss (the LM head with
// logits or the cross-entropy), optimizer. Fused ops (norm_linear, rope_store_kv) have a
// default composition in backend.cpp that a device overrides where one kernel does the work.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/activation.h"
#include "core/adamw.h"
#include "core/weights.h"

namespace trit::engine {

// The shape of causal GQA attention and of the rotary embedding of its queries and keys.
struct AttnShape {
  int64_t n_head = 0;     // query heads
  int64_t n_head_kv = 0;  // key/value heads (n_head is a multiple)
  int64_t head_dim = 0;
  int64_t rope_dim = 0;  // rotated dimensions of each head: NeoX pairs (i, i + rope_dim / 2)
  float rope_theta = 10000.0f;
  int64_t q_cols() const { return n_head * head_dim; }
  int64_t kv_cols() const { return n_head_kv * head_dim; }
};

// One sequence's rows in a batch and where its keys and values live: query rows [row0, row0 + n)
// at positions pos0 .., whose keys and values go to cache rows [base + pos0, base + pos0 + n) and
// whose attention reads cache rows [base, base + pos0 + n). Sequences of a batch may share one
// pair of cache tensors at different bases (KvCache::pool); base is a multiple of kKvPoolAlign.
struct SeqRows {
  int64_t row0 = 0;
  int64_t n = 0;
  int64_t pos0 = 0;
  int64_t base = 0;
};
inline constexpr int64_t kKvPoolAlign = 256;

// What a tensor serves as: KV caches keep their pieces on attention-chunk boundaries on devices
// that split tensors. A KvCacheF16 tensor holds IEEE half values (rounded to nearest even when
// stored): store_kv, rope_store_kv and attention take it where they take an f32 cache, read and
// write convert, copy and zero work on it; other ops refuse it. Its cols must be even.
enum class TensorUse { Activations, KvCache, KvCacheF16 };

// What a KV cache's elements are.
enum class KvType { F32, F16 };
inline TensorUse kv_use(KvType t) {
  return t == KvType::F16 ? TensorUse::KvCacheF16 : TensorUse::KvCache;
}

// An f32 matrix of rows x cols living on one backend (f16: a KvCacheF16 tensor).
class DeviceTensor {
 public:
  DeviceTensor(std::string name, int64_t rows, int64_t cols, bool f16 = false)
      : name_(std::move(name)), rows_(rows), cols_(cols), f16_(f16) {}
  virtual ~DeviceTensor() = default;
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  const std::string& name() const { return name_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  bool f16() const { return f16_; }

 private:
  std::string name_;
  int64_t rows_;
  int64_t cols_;
  bool f16_;
};

// A LoRA branch on a linear layer of n_in inputs and n_out outputs: y += scale * (xd A^T) B^T
// with xd = dropout(x). The one representation of an adapter's layer on every backend: in
// generation (da, db null) and in training (gradients added to da, db). In a batch of several
// sequences with different adapters, a branch applies to the rows of its sequences only
// (row0, rows; generation only).
struct LoraBranch {
  DeviceTensor* a = nullptr;   // (rank, n_in)
  DeviceTensor* b = nullptr;   // (n_out, rank)
  DeviceTensor* da = nullptr;  // like a; null when the branch does not train
  DeviceTensor* db = nullptr;  // like b
  float scale = 0;             // user scale * alpha / rank (alpha / sqrt(rank) with rsLoRA)
  uint64_t salt = 0;           // tells the dropout masks of different branches apart
  int64_t row0 = 0;            // the rows of a pass it applies to: [row0, row0 + rows)
  int64_t rows = -1;           // -1: every row from row0
};

// What a branch's forward pass saves for its backward pass (training); both null: nothing.
// xd may be the branch's input itself when there is no dropout.
struct LoraSaved {
  DeviceTensor* xd = nullptr;  // (n, n_in) dropout(x)
  DeviceTensor* ax = nullptr;  // (n, rank) xd A^T
};

// One linear layer applied to a shared input: y = layer(x) * out_scale + its LoRA branches.
struct LinearOp {
  const LinearWeight* w = nullptr;
  DeviceTensor* y = nullptr;              // (n, w->m.n_out)
  std::span<const LoraBranch> lora;       // added to y
  std::span<const LoraSaved> saved = {};  // one per branch, or empty: nothing saved
};

// How the linear ops of one call compute.
struct LinearMode {
  bool act_quant = true;  // W1.58A8; false: float activations (--act-quant none)
  float dropout = 0;      // on the LoRA branches' input (training), in [0, 1)
  uint64_t key = 0;       // dropout masks are a pure function of (key, branch salt, element)
};

// y = x / sqrt(mean(x^2) + eps) * g per row of x; rstd (n, 1) saves 1 / sqrt(...) for the
// backward pass when not null. y may be x.
struct NormOp {
  const DeviceTensor* x = nullptr;
  const float* g = nullptr;  // (x.cols()) host vector
  float eps = 1e-5f;
  DeviceTensor* y = nullptr;
  DeviceTensor* rstd = nullptr;
};

// What follows the linear ops of norm_linear.
struct LinearEpilogue {
  enum class Kind { None, Gated, Residual };
  Kind kind = Kind::None;
  Activation act = Activation::Relu2;  // Gated: out = act(ops[0].y) * ops[1].y
  DeviceTensor* out = nullptr;         // Gated: (n, ops[0].w->m.n_out)
  DeviceTensor* residual = nullptr;    // Residual: residual += ops[0].y
  static LinearEpilogue none() { return {}; }
  static LinearEpilogue gated(Activation a, DeviceTensor& out) {
    return {Kind::Gated, a, &out, nullptr};
  }
  static LinearEpilogue add_to(DeviceTensor& residual) {
    return {Kind::Residual, Activation::Relu2, nullptr, &residual};
  }
};

// The LM head over rows [row0, row0 + n) of h (the normalised final hidden states):
// logits = h W^T + the LoRA branches. Either the logits go to the host (logits not null), or
// the cross-entropy is taken (targets not null): loss += sum_t mask[t] * nll_t / max(norm, 1)
// (mask null: every token counts), in chunks of at most `chunk` tokens whose logits are held at
// once (a masked token's logits are never used: a backend may leave such tokens out); then dh,
// when not null, gets dh += dlogits W + the branches' dx, and the branches' da, db their
// gradients (no dropout). The loss accumulates on the backend until take_loss().
struct HeadOp {
  const DeviceTensor* h = nullptr;
  int64_t row0 = 0, n = 0;
  const FloatMatrix* w = nullptr;  // (n_vocab, h.cols())
  std::span<const LoraBranch> lora;
  float* logits = nullptr;  // host (n, n_vocab), row-major
  // Logits only: the distance between rows of `logits` (0: w->n_out). A piece of the head's rows
  // (a matrix of its rows) writes its columns of the whole rows this way; not with lora.
  int64_t logits_stride = 0;
  const int32_t* targets = nullptr;  // host (n); counted targets must be in [0, n_vocab)
  const float* mask = nullptr;       // host (n), or null
  float norm = 1;
  int64_t chunk = 32;
  DeviceTensor* dh = nullptr;  // (row0 + n, h.cols())
};

class Backend {
 public:
  virtual ~Backend() = default;

  // A line for logs: the device and how it computes, e.g. "cpu: avx512-vnni, 2 threads".
  virtual std::string description() const = 0;

  // ---- tensor ----
  // A zero-filled tensor.
  virtual std::unique_ptr<DeviceTensor> tensor(std::string_view name, int64_t rows, int64_t cols,
                                               TensorUse use = TensorUse::Activations) = 0;
  // True for a backend that computes in host memory as the calls come (the CPU): the model's
  // weights are read where they are mapped, so streaming them keeps a memory budget.
  virtual bool host_memory() const { return false; }
  // Bytes of device memory this process uses, as the device's driver reports them; 0 where the
  // backend computes in host memory or the driver does not say.
  virtual uint64_t device_memory_used() const { return 0; }
  // Runs the work recorded so far and waits for it (a GPU's queue; the CPU has none).
  virtual void finish() {}
  // Drops the device's copies of these weights once the work recorded so far has run (a memory
  // budget smaller than the model streams blocks through the device: the next use uploads them
  // again); nothing where the backend reads the weights in host memory.
  virtual void release_weights(std::span<const LinearWeight* const>) {}
  // Forgets work recorded but not run, after a device error: nothing of a failed step runs
  // later with the next one's.
  virtual void abandon() {}
  // A tensor over the caller's host memory (rows x cols floats that outlive it), for backends
  // that compute in host memory; nullptr where the device needs its own copy.
  virtual std::unique_ptr<DeviceTensor> host_view(std::string_view, float*, int64_t, int64_t) {
    return nullptr;
  }
  // Copies rows [row0, row0 + n) between the host (row-major, t.cols() floats a row) and t.
  virtual void write(DeviceTensor& t, int64_t row0, int64_t n, const float* src) = 0;
  virtual void read(const DeviceTensor& t, int64_t row0, int64_t n, float* dst) = 0;
  virtual void zero(DeviceTensor& t) = 0;
  // dst rows [0, n) = src rows [0, n) (same cols).
  virtual void copy(DeviceTensor& dst, const DeviceTensor& src, int64_t n) = 0;
  // y += x over (n, cols).
  virtual void add(DeviceTensor& y, const DeviceTensor& x, int64_t n) = 0;

  // ---- embedding ----
  // out[t, :] = table[tokens[t], :] for t < n (ids already checked against the table).
  virtual void embedding(DeviceTensor& out, const FloatMatrix& table, const int32_t* tokens,
                         int64_t n) = 0;

  // ---- norm ----
  virtual void rms_norm(const NormOp& op, int64_t n) = 0;
  // dx += d rms_norm / dx . dy (g frozen).   dx, dy, x: (n, cols)   rstd: (n, 1) from rms_norm
  virtual void rms_norm_backward(DeviceTensor& dx, const DeviceTensor& dy, const DeviceTensor& x,
                                 const float* g, const DeviceTensor& rstd, int64_t n) = 0;

  // ---- linear ----
  // Every op's y = its layer applied to x (n, n_in): ternary layers quantise x per token to
  // int8 when mode.act_quant (W1.58A8), else use float activations; float (merged) layers use
  // x. Then each LoRA branch adds to y (lora_forward), seeing the un-quantised x; the `.scale`
  // (out_scale) does not multiply it.
  virtual void linear(std::span<const LinearOp> ops, const DeviceTensor& x, int64_t n,
                      const LinearMode& mode) = 0;
  // y (n, n_out) += scale * ax B^T with xd = dropout(x) (x * keep / (1 - p), keep drawn from
  // (key, salt, element index); x itself when p == 0) and ax = xd A^T; xd and ax are written to
  // `saved` when given (saved.xd may be x when p == 0), else to scratch.
  virtual void lora_forward(DeviceTensor& y, const DeviceTensor& x, int64_t n, const LoraBranch& br,
                            const LoraSaved& saved, float p, uint64_t key) = 0;
  // The fused op of a BitNet layer: norm, then linear(ops) over its output, then the
  // epilogue (a gated activation of ops[0] and ops[1], or ops[0]'s output added to a
  // residual). The default composes rms_norm, linear, gated_act and add.
  virtual void norm_linear(const NormOp& norm, std::span<const LinearOp> ops, int64_t n,
                           const LinearMode& mode, const LinearEpilogue& epilogue);
  // dx (n, n_in) += out_scale * w_scale * T^T dy through a frozen ternary layer (the
  // straight-through estimator for the activation quantiser).   dy: (n, n_out)
  virtual void linear_backward(DeviceTensor& dx, const DeviceTensor& dy, const LinearWeight& w,
                               int64_t n) = 0;
  // With ds = scale * dy: db += ds^T ax, dax = ds B, da += dax^T xd, and
  // dx += (dax A) / (1 - p) where xd != 0 (everywhere when p == 0).
  virtual void lora_backward(DeviceTensor& dx, const DeviceTensor& dy, const LoraSaved& saved,
                             int64_t n, const LoraBranch& br, float p) = 0;

  // ---- rope ----
  // NeoX rope in place on rows [row0, row0 + n) of x viewed as (rows, n_heads,
  // shape.head_dim), row row0 + t at position pos0 + t.
  virtual void rope(DeviceTensor& x, int64_t row0, int64_t n, int64_t n_heads,
                    const AttnShape& shape, int64_t pos0) = 0;
  // Rotates the gradient rows [row0, row0 + n) of x in place by the negative angles of
  // positions pos0 .. (the inverse of rope).
  virtual void rope_backward(DeviceTensor& x, int64_t row0, int64_t n, int64_t n_heads,
                             const AttnShape& shape, int64_t pos0) = 0;
  // A block's rope and KV store together, for each sequence of seqs over its rows of q, k and v:
  // rope on q and k (n_head and n_head_kv heads) at the sequence's positions, then its cache
  // rows (SeqRows) = those rows of k and v. k's contents afterwards are unspecified (a device
  // may write the rotated values only to the cache). When k_cache is k itself (training: a
  // sequence is its own cache, one SeqRows of zeros but n), only the rotations run.
  virtual void rope_store_kv(DeviceTensor& q, DeviceTensor& k, const DeviceTensor& v,
                             DeviceTensor& k_cache, DeviceTensor& v_cache,
                             std::span<const SeqRows> seqs, const AttnShape& shape);

  // ---- attention ----
  // cache rows [pos0, pos0 + n) = src rows [row0, row0 + n).
  virtual void store_kv(DeviceTensor& cache, const DeviceTensor& src, int64_t row0, int64_t n,
                        int64_t pos0) = 0;
  // Causal GQA attention, for each sequence of seqs, of its query rows of q against its cache
  // rows (SeqRows), into the same rows of out. Sequences whose caches are separate tensors
  // take one call each; a pool's share one call (a device may run them as one dispatch).
  //   q, out: (>= row0 + n, q_cols)   k_cache, v_cache: (>= base + pos0 + n, kv_cols)
  virtual void attention(DeviceTensor& out, const DeviceTensor& q, const DeviceTensor& k_cache,
                         const DeviceTensor& v_cache, std::span<const SeqRows> seqs,
                         const AttnShape& shape) = 0;
  // Backward of attention for each sequence of seqs, a whole sequence of training whose keys
  // and values are its own rows: rows [row0, row0 + n) of every tensor at positions 0 .. n - 1
  // (pos0 == 0, base == row0; sequences do not overlap).
  //   dq, q, dout: (>= row0 + n, q_cols)   dk, dv, k, v: (>= row0 + n, kv_cols)
  virtual void attention_backward(DeviceTensor& dq, DeviceTensor& dk, DeviceTensor& dv,
                                  const DeviceTensor& dout, const DeviceTensor& q,
                                  const DeviceTensor& k, const DeviceTensor& v,
                                  std::span<const SeqRows> seqs, const AttnShape& shape) = 0;

  // ---- activation ----
  // out = act(gate) * up elementwise over (n, cols).
  virtual void gated_act(DeviceTensor& out, const DeviceTensor& gate, const DeviceTensor& up,
                         int64_t n, Activation act) = 0;
  // dgate += act'(gate) * up * dout, dup += act(gate) * dout.
  virtual void gated_act_backward(DeviceTensor& dgate, DeviceTensor& dup, const DeviceTensor& dout,
                                  const DeviceTensor& gate, const DeviceTensor& up, int64_t n,
                                  Activation act) = 0;

  // ---- loss ----
  // The LM head: logits to the host (waits for them) or the cross-entropy (HeadOp).
  virtual void head(const HeadOp& op) = 0;
  // The loss accumulated by head() since the last call (waits for it), then 0 again.
  virtual double take_loss() = 0;

  // ---- optimizer ----
  // out[i] = the sum of squares of every element of ts[i] (waits for it; the CPU sums in
  // double, so its norms are correctly rounded).
  virtual void sum_squares(std::span<const DeviceTensor* const> ts, double* out) = 0;
  // One AdamW step of p with gradient grad_scale * g (the clipping factor; 1: none) and
  // moments m, v, all of p's shape, in core/adamw.h's order of operations.
  virtual void adamw(DeviceTensor& p, const DeviceTensor& g, DeviceTensor& m, DeviceTensor& v,
                     const AdamWScalars& k, float grad_scale) = 0;
};

}  // namespace trit::engine
