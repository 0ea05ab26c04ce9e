// The Vulkan backend's internals (DESIGN section 6), shared by its files:
//   vulkan_backend.cpp      device, tensors, read/write, submission, allocation retries
//   vk_scratch.cpp          scratch arenas and row segments (the tiling rule)
//   vk_weights.cpp          the weight cache: T2 ternary codes, float matrices, norms, LoRA
//   vk_ops_linear.cpp       linear (bitlinear, merged float layers, LoRA) and the LM head
//   vk_ops_attention.cpp    rope, store_kv, attention
//   vk_ops_elementwise.cpp  embedding, rms_norm, gated_act, add
//   vk_ops_decode.cpp       decoding fusions: held-back ops, the multi-weight matvec (with the
//                           input's norm, the gated activation or the residual add), rope_kv
//   vk_ops_train_linear.cpp training: lora_forward/_backward, linear_backward (f32 gemm,
//                           transposed weight products, dropout)
//   vk_ops_train_block.cpp  training: zero, copy, rms_norm/rope/attention/gated_act backward
//   vk_ops_train_head.cpp   training: head_loss (logits, cross-entropy, dh), take_loss
//   vk_ops_optimizer.cpp    sum_squares (clipping), adamw
//
// Every op is recorded into one Sequence; read(), head() and take_loss() submit it and wait.
// Small write()s are queued in it too (copies from host-visible scratch).
// Tensors are TiledTensors of f32 rows; an op over n token rows walks the row segments on which
// every tensor it touches stays within one piece, and, for weights, every weight piece (a range of
// output rows) in turn. Weights are uploaded on first use and kept (keyed by host pointer).
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/vulkan/context.h"
#include "backend/vulkan/pipeline.h"
#include "backend/vulkan/push_constants.h"
#include "backend/vulkan/sequence.h"
#include "backend/vulkan/tiled_tensor.h"
#include "backend/vulkan/vulkan_backend.h"

namespace trit {

struct LoraLayer;
struct TernaryMatrix;

namespace vk {

class VulkanBackend;

// An f32 matrix (rows, cols) of the Vulkan backend. Destroyed while queued work may still use
// it, it hands its buffers to the backend, which frees them after the next submission ends.
class VkTensor final : public DeviceTensor {
 public:
  VkTensor(std::string name, int64_t rows, int64_t cols, TiledTensor t, uint32_t kv_chunk,
           VulkanBackend* owner)
      : DeviceTensor(std::move(name), rows, cols),
        t_(std::move(t)),
        kv_chunk_(kv_chunk),
        owner_(owner) {}
  ~VkTensor() override;
  const TiledTensor& tiles() const { return t_; }
  TiledTensor& tiles() { return t_; }
  // Attention chunk C this tensor's pieces respect when it serves as a KV cache (every piece
  // starts at a multiple of it).
  uint32_t kv_chunk() const { return kv_chunk_; }

 private:
  TiledTensor t_;
  uint32_t kv_chunk_;
  VulkanBackend* owner_;
};

// Throw naming t when it belongs to another backend.
const VkTensor& vk_tensor(const DeviceTensor& t);
VkTensor& vk_tensor(DeviceTensor& t);

// A ternary weight as T2 codes (n_in / 16 words a row) and either one scale d or, when d == 0,
// per-256-block scales tiled exactly like the codes.
struct TernaryWeight {
  TiledTensor codes;  // (n_out, n_in / 4 bytes)
  TiledTensor dblk;   // (n_out, n_in / 256 floats); no rows when d != 0
  float d = 0;
};

// Float weight rows as the shaders read them (q6_K is converted to f32 at upload).
struct FloatWeight {
  TiledTensor rows;  // (n_out, row bytes of type)
  FloatWeightType type = FloatWeightType::F32;
  int64_t n_in = 0, n_out = 0;
};

struct LoraWeight {
  FloatWeight a;  // (rank, n_in)
  FloatWeight b;  // (n_out, rank)
};

// Bump allocations of aligned byte ranges over a list of buffers, each within the binding
// limit. Device arenas are reset by each op (reuse is ordered by the Sequence's automatic
// barriers); the host arena only after a submission has finished.
class ScratchArena {
 public:
  ScratchArena(Context& ctx, std::string name, MemoryKind kind)
      : ctx_(ctx), name_(name), kind_(kind) {}
  // align: a larger alignment than the device's offset alignment (0: none).
  BufferRange alloc(uint64_t bytes, uint64_t align = 0);
  void reset();
  uint64_t capacity() const;

 private:
  struct Block {
    Buffer buffer;
    uint64_t used = 0;
  };
  Context& ctx_;
  std::string name_;
  MemoryKind kind_;
  std::deque<Block> blocks_;  // a deque: ranges handed out keep pointing at their Buffer
  size_t current_ = 0;
};

// Rows [base, base + n) of a tensor that an op touches.
struct RowsOf {
  const TiledTensor* t;
  uint64_t base;
};
// [a, b) ranges covering [0, n) such that for every tensor, rows [base + a, base + b) lie in
// one piece, each at most max_rows long (0: no bound).
std::vector<std::pair<uint64_t, uint64_t>> row_segments(const std::vector<RowsOf>& tensors,
                                                        uint64_t n, uint64_t max_rows);
inline uint64_t ceil_div(uint64_t a, uint64_t b) {
  return (a + b - 1) / b;
}
// Whether rows [r0, r0 + n) of t lie in one piece.
inline bool one_piece(const TiledTensor& t, uint64_t r0, uint64_t n) {
  if (t.pieces() == 1) return r0 + n <= t.rows();
  return t.runs(r0, r0 + n).size() == 1;
}
// The bytes of rows [r0, r1) of t, which must lie in one piece.
BufferRange rows_range(const TiledTensor& t, uint64_t r0, uint64_t r1);

// Checks a LoRA branch's tensors against a layer of n_in inputs and n_out outputs (errors
// start with op); returns its rank (vk_ops_train_linear.cpp).
int64_t check_lora_branch(const LoraBranch& br, int64_t n_in, int64_t n_out, const char* op);

// A tiled tensor, retried with smaller pieces when the device runs out of memory; the final
// failure names the tensor, its size and the device's heap.
TiledTensor make_tiled(Context& ctx, const std::string& name, uint64_t rows, uint64_t row_bytes,
                       TileOptions options = {});

// The matmul shaders' configuration: matvec shape (decode) and tile shapes fitting the
// device's shared memory (prompts).
struct MatmulConfig {
  uint32_t mv_wg = 64;   // matvec: threads split n_in
  uint32_t mv_rows = 2;  // matvec: output rows per workgroup
  uint32_t tile_m = 64, tile_n = 32, thread_m = 4, thread_n = 4;
  uint32_t max_matvec_tokens = 8;  // ops over up to this many tokens take the matvec path
  // Ternary int8 products whose grid of tile_m x tile_n tiles has fewer groups than this take
  // 32 x 16 tiles (2 x 2 per thread): a training step's 128 tokens would leave most of a large
  // GPU idle. Integer sums are exact, so the tile shape never changes a result. 0: never.
  uint32_t small_tile_groups = 0;
  uint32_t tile_wg() const { return (tile_m / thread_m) * (tile_n / thread_n); }
};

class VulkanBackend final : public Backend {
 public:
  explicit VulkanBackend(const VulkanRequest& request);
  ~VulkanBackend() override;

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
  void rope_store_kv(DeviceTensor& q, DeviceTensor& k, const DeviceTensor& v, DeviceTensor& k_cache,
                     DeviceTensor& v_cache, int64_t n, int64_t pos0, const HParams& hp) override;
  void attention(DeviceTensor& out, const DeviceTensor& q, const DeviceTensor& k_cache,
                 const DeviceTensor& v_cache, int64_t n, int64_t pos0, const HParams& hp) override;
  void gated_act(DeviceTensor& out, const DeviceTensor& gate, const DeviceTensor& up, int64_t n,
                 Activation act) override;
  void add(DeviceTensor& y, const DeviceTensor& x, int64_t n) override;
  void head(float* logits, const DeviceTensor& x, int64_t row0, int64_t n, const FloatMatrix& w,
            const std::vector<LoraTerm>* lora) override;

  // Training (vk_ops_train_*.cpp).
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

  // Keeps t's buffers alive until queued work has run (VkTensor's destructor).
  void retire(VkTensor& t);

  // Optimizer (vk_ops_optimizer.cpp).
  void sum_squares(std::span<const DeviceTensor* const> ts, double* out) override;
  void adamw(DeviceTensor& p, const DeviceTensor& g, DeviceTensor& m, DeviceTensor& v,
             const AdamWScalars& k, float grad_scale) override;

 private:
  // The sequence, after recording a held-back op (every op records through it).
  Sequence& rec() {
    settle();
    return *seq_;
  }
  // Records the held-back op, if any (vk_ops_decode.cpp).
  void settle();
  // rms_norm; with residual, x += residual first (add_rms_norm).
  void record_rms_norm(VkTensor& y, const VkTensor& x, const float* g, uint64_t n, float eps,
                       VkTensor* rstd, const VkTensor* residual = nullptr);
  void record_add(VkTensor& y, const VkTensor& x, uint64_t n);
  // Submits what is queued, waits, and starts a new recording. The host arena is reset too
  // unless keep_host (head() copies its logits out of it first).
  void flush(bool keep_host = false);

  // Weight cache (vk_weights.cpp).
  const TernaryWeight& ternary_weight(const LinearWeight& w);
  const FloatWeight& float_weight(const FloatMatrix& m, const std::string& name);
  const LoraWeight& lora_weight(const LoraLayer& l);
  const TiledTensor& norm_weight(const float* g, int64_t n);  // one row of n floats

  // Dispatch helpers (vk_ops_linear.cpp).
  const Pipeline& pipeline(std::string_view shader, uint32_t bindings, uint32_t push_bytes,
                           std::vector<uint32_t> spec, uint32_t readonly);
  // Records a dispatch of `row_groups` groups split over x and z, and gy over y.
  template <class Push>
  void dispatch_rows(const Pipeline& p, std::initializer_list<BufferRange> b, const Push& push,
                     uint64_t row_groups, uint64_t gy);
  // Records a dispatch of `groups` groups split over x and y (elementwise shaders).
  template <class Push>
  void dispatch_flat(const Pipeline& p, std::initializer_list<BufferRange> b, const Push& push,
                     uint64_t groups);
  // y[:, r0 + rows of each piece] = alpha * W x (+ beta * y) for a segment of `tokens` rows
  // of an op over `op_tokens` rows (which picks the shader path, so that every tiling of the
  // op sums in the same order).
  void matmul_float(const FloatWeight& w, BufferRange x, BufferRange y, uint64_t tokens,
                    uint64_t op_tokens, uint64_t y_stride, float alpha, float beta);
  // Adds the LoRA terms of one layer: y += scale * B (A x) for a segment of `tokens` rows.
  void lora_terms(const std::vector<LoraTerm>& terms, BufferRange x, BufferRange y, uint64_t tokens,
                  uint64_t op_tokens, int64_t n_in, int64_t n_out);
  const TiledTensor& rope_table(int64_t positions, int64_t rope_dim, float base);

  // Rows [r0, r1) of t (one piece) as a binding: the range itself when its offset suits the
  // device's minStorageBufferOffsetAlignment, else a copy in act_scratch_ (filled from t when
  // `load`). A tensor of narrow rows (rstd, a LoRA ax of small rank) needs that where a
  // segment starts inside a piece. unbind_rows() copies a written copy back (vk_scratch.cpp).
  BufferRange bind_rows(const TiledTensor& t, uint64_t r0, uint64_t r1, bool load);
  void unbind_rows(BufferRange bound, const TiledTensor& t, uint64_t r0, uint64_t r1);

  // Training helpers (vk_ops_train_linear.cpp). Each works on one token segment of `rows`
  // rows whose bindings are given as ranges.
  // Records gemm_f32 over p.m x p.n (p's offsets and strides index the three ranges).
  void gemm(BufferRange a, BufferRange b, BufferRange c, const GemmF32Push& p);
  // ax = xd A^T, y += scale * ax B^T (y rows of y_stride floats).
  void lora_forward_rows(const LoraBranch& br, BufferRange xd, BufferRange ax, BufferRange y,
                         uint64_t rows, uint64_t y_stride);
  // db += ds^T ax, da += (ds B)^T xd, dx += (ds B A) / (1 - p) where xd != 0 (ds = scale dy,
  // dy rows of dy_stride floats).
  void lora_backward_rows(const LoraBranch& br, BufferRange dx, BufferRange dy, BufferRange xd,
                          BufferRange ax, uint64_t rows, uint64_t dy_stride, float p);
  // dx (rows, n_in) += scale * W^T dy over every piece of a ternary (t) or float (f) weight.
  void transposed_product(const TernaryWeight* t, const FloatWeight* f, BufferRange dy,
                          uint64_t dy_stride, BufferRange dx, uint64_t rows, uint64_t n_in,
                          float scale);
  // rope (inverse = false) or its backward over rows [0, n) of x (vk_ops_train_block.cpp).
  void rope_rows(DeviceTensor& x, int64_t n, int64_t n_heads, const HParams& hp, int64_t pos0,
                 bool inverse);
  // Adds the per-token losses of finished head_loss chunks to loss_ (vk_ops_train_head.cpp);
  // flush() calls it once the submission has ended, before the host arena is reset.
  void collect_losses();

  std::unique_ptr<Context> ctx_;
  std::unique_ptr<Sequence> seq_;
  MatmulConfig mm_;
  uint64_t max_seg_rows_ = 0;  // group-count bound on the rows of one segment
  ScratchArena act_scratch_;   // quantised activations, LoRA A x
  ScratchArena attn_scratch_;  // attention partials
  ScratchArena host_;          // token ids, logits, small writes (host-visible)
  // write(): up to kQueuedWriteBytes a call is queued through host_ (at most kMaxQueuedWrites
  // between submissions); larger writes are staged synchronously.
  static constexpr uint64_t kQueuedWriteBytes = 4ull << 20;
  static constexpr uint64_t kMaxQueuedWrites = 64ull << 20;
  uint64_t queued_write_bytes_ = 0;
  // The decoding matvec's activations: settle() may record it in the middle of another op's
  // use of act_scratch_.
  ScratchArena decode_scratch_;
  std::vector<TiledTensor> retired_;  // replaced while queued work may still use them

  std::unordered_map<const void*, std::unique_ptr<TernaryWeight>> ternary_;
  std::unordered_map<const void*, std::unique_ptr<FloatWeight>> float_;
  std::unordered_map<const void*, std::unique_ptr<LoraWeight>> lora_;
  std::unordered_map<const void*, TiledTensor> norms_;

  // head_loss chunks whose per-token losses (in host_ blocks) wait for the submission.
  struct PendingLoss {
    double inv_norm = 1;           // 1 / max(norm, 1)
    std::vector<float> mask;       // (chunk tokens)
    std::vector<BufferRange> nll;  // the chunk's per-token losses, in token order
  };
  std::vector<PendingLoss> pending_loss_;
  double loss_ = 0;  // since the last take_loss()

  // An rms_norm without rstd over at most max_matvec_tokens rows, not recorded yet: linear()
  // fuses it with the quantiser of its input (rms_norm_quant), any other recording first
  // records it as it is (settle).
  struct PendingNorm {
    VkTensor* y = nullptr;
    const VkTensor* x = nullptr;
    const float* g = nullptr;
    uint64_t n = 0;
    float eps = 0;
    const VkTensor* residual = nullptr;  // a held-back add: x += residual first
  };
  PendingNorm pending_norm_;

  // Decoding fusions (vk_ops_decode.cpp). At most one op is held back at a time: an add (y +=
  // x, which the next rms_norm of y takes in), an rms_norm (above), or the bitlinears of a
  // decoding step, which a gated_act (gate and up) or an add of their output (the residual
  // after o and down) may join.
  struct PendingAdd {
    VkTensor* y = nullptr;
    const VkTensor* x = nullptr;
    uint64_t n = 0;
  };
  PendingAdd pending_add_;
  struct PendingLinear {
    LinearOp ops[3];
    size_t n_ops = 0;
    const VkTensor* x = nullptr;  // null: nothing held
    PendingNorm norm;             // the norm whose output x is, if held back too
  };
  PendingLinear pending_linear_;
  bool fuse_decode_ = false;  // subgroup arithmetic, and not TRIT_VK_DECODE_FUSION=0
  // rms_norm.comp's workgroup: 256 invocations, or the device's largest power of two below.
  uint32_t norm_wg_ = 256;
  // rms_norm.comp's specialization for rows of n values (every module of that source, and
  // matvec_norm_ternary, takes the same, so that they sum alike): the row is held in registers
  // when it fits (n <= norm_vec_width()). `tag` (constant 1, unused by the shader) keeps
  // pipelines with different read-only masks apart.
  std::vector<uint32_t> rms_norm_spec(uint64_t n, uint32_t tag = 0) const {
    const uint32_t vec = n % 4 == 0 && n <= norm_vec_width() ? 1 : 0;
    return {norm_wg_, tag, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, vec};
  }
  uint64_t norm_vec_width() const { return 32ull * norm_wg_; }  // the shaders' 4 * NORM_MAXU
  uint32_t subgroup_size_ = 32;  // for matvec_ternary's rows per workgroup
  // attention.comp's queries per workgroup for prompts (TRIT_VK_ATTN_QT=1..16 to tune).
  uint32_t attn_qt_ = 8;
  // One token, int8 activations, at most three ternary layers of uniform scale without LoRA,
  // every tensor in one piece at the token: the decoding matvec applies.
  bool decode_matvec_applies(std::span<const LinearOp> ops, const VkTensor& x, int64_t n,
                             bool act_quant);
  // ops, held by decode_matvec_applies' rules, are a gate and an up layer (equal shapes and
  // weight pieces, outputs apart from x and each other) that matvec_ternary's gated mode can
  // take with the gated_act after them.
  bool gate_up_pair(std::span<const LinearOp> ops, const VkTensor& x);
  // Quantises rows [a, b) of x into q, qs: through the held-back norm when norm.y is set.
  void quantize_rows(const VkTensor& x, uint64_t a, uint64_t b, const PendingNorm& norm,
                     BufferRange q, BufferRange qs);
  // The decoding matvec of ops on x (one token), normalising x itself when norm allows;
  // gated: ops are gate and up, and out gets act(gate) * up as well; add_to: the single op's
  // output is added to it too.
  void record_decode_linear(const PendingLinear& l, VkTensor* gated_out, Activation act,
                            VkTensor* add_to);
  // Whether t is read or written by a held-back op.
  bool pending_uses(const VkTensor& t) const;

  TiledTensor rope_;  // (positions, rope_dim): cos then sin per row
  int64_t rope_dim_ = 0;
  float rope_base_ = 0;
};

template <class Push>
void VulkanBackend::dispatch_rows(const Pipeline& p, std::initializer_list<BufferRange> b,
                                  const Push& push, uint64_t row_groups, uint64_t gy) {
  const uint32_t* max = ctx_->caps().info.max_compute_work_group_count;
  const uint64_t gx = std::min<uint64_t>(row_groups, max[0]);
  const uint64_t gz = (row_groups + gx - 1) / gx;
  if (gz > max[2] || gy > max[1]) {
    fail("vulkan: ", p.name(), ": ", row_groups, " x ", gy, " workgroups exceed the device's grid");
  }
  rec().dispatch(p, b, push, uint32_t(gx), uint32_t(gy), uint32_t(gz));
}

template <class Push>
void VulkanBackend::dispatch_flat(const Pipeline& p, std::initializer_list<BufferRange> b,
                                  const Push& push, uint64_t groups) {
  const uint32_t* max = ctx_->caps().info.max_compute_work_group_count;
  const uint64_t gx = std::min<uint64_t>(groups, max[0]);
  const uint64_t gy = (groups + gx - 1) / gx;
  if (gy > max[1]) fail("vulkan: ", p.name(), ": ", groups, " workgroups exceed the device's grid");
  rec().dispatch(p, b, push, uint32_t(gx), uint32_t(gy));
}

}  // namespace vk
}  // namespace trit
