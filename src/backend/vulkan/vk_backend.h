// The Vulkan backend's internals (DESIGN section 6), shared by its files. Below the op set,
// four parts with one job each:
//   Recorder     recorder.cpp  the one Sequence every op records into, pipelines, dispatch
//                              helpers, submission, buffers retired while queued work may
//                              still read them
//   Scratch      scratch.cpp   scratch arenas, row segments (the tiling rule), bindable rows
//   WeightCache  weights.cpp   weights uploaded on first use and kept: T2 ternary codes, float
//                              matrices, norm vectors, the rope table
//   Products     products.cpp  the matrix products several ops share: float weights x f32,
//                              the f32 gemm of LoRA branches, transposed products, quantisers
// and the op set itself, one file per family as in cpu/: tensor.cpp, embedding.cpp, norm.cpp,
// linear.cpp (with norm_linear's fused decoding kernels), rope.cpp, attention.cpp,
// activation.cpp, loss.cpp, optimizer.cpp; vulkan_backend.cpp opens the device.
//
// Every op is recorded into one Sequence; read(), head() with logits, take_loss() and
// sum_squares() submit it and wait. Tensors are TiledTensors of f32 rows; an op over n token
// rows walks the row segments on which every tensor it touches stays within one piece, and,
// for weights, every weight piece (a range of output rows) in turn.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <tuple>
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

namespace trit::engine::vk {

// ---- Recorder ----

class Recorder {
 public:
  explicit Recorder(Context& ctx);
  ~Recorder();  // waits for queued work before its buffers go

  Context& ctx() { return ctx_; }
  Sequence& seq() { return *seq_; }
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
  // Group-count bound on the rows of one segment.
  uint64_t max_seg_rows() const { return max_seg_rows_; }

  // Submits what is queued and waits; then starts a new recording and frees retired buffers.
  void submit();
  // Drops what is recorded and not run (after a failed submission) and frees retired buffers.
  void abandon();
  // Keeps t's buffers alive until queued work has run.
  void retire(TiledTensor t);

 private:
  Context& ctx_;
  std::unique_ptr<Sequence> seq_;
  uint64_t max_seg_rows_ = 0;
  std::vector<TiledTensor> retired_;
  int probes_ = 0;             // TRIT_VK_RERUN's reports so far
  double last_submit_us_ = 0;  // when the last probed submission returned
};

// ---- Scratch ----

// Bump allocations of aligned byte ranges over a list of buffers, each within the binding
// limit. Device arenas are reset by each op (reuse is ordered by the Sequence's automatic
// barriers); the host arena only after a submission has finished.
class ScratchArena {
 public:
  ScratchArena(Context& ctx, std::string name, MemoryKind kind)
      : ctx_(ctx), name_(std::move(name)), kind_(kind) {}
  // align: a larger alignment than the device's offset alignment (0: none).
  BufferRange alloc(uint64_t bytes, uint64_t align = 0);
  // n pairs of words, pair(i) -> {first, second}, written into a fresh range of a host arena
  // (the shaders' per-sequence tables).
  template <class Pair>
  BufferRange pairs(size_t n, Pair pair) {
    const BufferRange r = alloc(n * 8);
    auto* t =
        reinterpret_cast<uint32_t*>(static_cast<unsigned char*>(r.buffer->mapped()) + r.offset);
    for (size_t i = 0; i < n; ++i) {
      const auto [a, b] = pair(i);
      t[2 * i] = uint32_t(a);
      t[2 * i + 1] = uint32_t(b);
    }
    return r;
  }
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

// The arenas ops take scratch memory from.
struct Scratch {
  explicit Scratch(Context& ctx);
  ScratchArena act;   // quantised activations, LoRA A x, staged narrow rows
  ScratchArena attn;  // attention partials and statistics
  ScratchArena host;  // token ids, logits, losses, small writes (host-visible)
  // Rows [r0, r1) of t (one piece) as a binding: the range itself when its offset suits the
  // device's minStorageBufferOffsetAlignment, else a copy in `act` (filled from t when
  // `load`). A tensor of narrow rows (rstd, a LoRA ax of small rank) needs that where a
  // segment starts inside a piece. unbind_rows() copies a written copy back.
  BufferRange bind_rows(Recorder& rec, const TiledTensor& t, uint64_t r0, uint64_t r1, bool load);
  void unbind_rows(Recorder& rec, BufferRange bound, const TiledTensor& t, uint64_t r0,
                   uint64_t r1);

 private:
  Context& ctx_;
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

// A tiled tensor, retried with smaller pieces when the device runs out of memory; the final
// failure names the tensor, its size and the device's heap.
TiledTensor make_tiled(Context& ctx, const std::string& name, uint64_t rows, uint64_t row_bytes,
                       TileOptions options = {});

// ---- tensors ----

// An f32 matrix (rows, cols) of the Vulkan backend (f16: a KV cache of halves, two a word).
// Destroyed while queued work may still use it, it hands its buffers to the recorder, which frees
// them after the next submission ends.
class VkTensor final : public DeviceTensor {
 public:
  VkTensor(std::string name, int64_t rows, int64_t cols, TiledTensor t, uint32_t kv_chunk,
           Recorder* owner, bool f16 = false)
      : DeviceTensor(std::move(name), rows, cols, f16),
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
  Recorder* owner_;
};

// Throw naming t when it belongs to another backend.
const VkTensor& vk_tensor(const DeviceTensor& t);
VkTensor& vk_tensor(DeviceTensor& t);

// Argument checks shared by the ops (errors start with op and name the tensor).
void check_n(const DeviceTensor& t, int64_t n, const char* op);  // t has n rows at least
void check_same_cols(const DeviceTensor& a, const DeviceTensor& b, const char* op);
void check_rows_of(const DeviceTensor& t, int64_t n, int64_t cols, const char* op);  // and cols

// ---- WeightCache ----

// A ternary weight as T2 codes (n_in / 16 words a row) and either one scale d or, when d == 0,
// per-256-block scales tiled exactly like the codes.
struct TernaryWeight {
  // (n_out, n_in / 4 bytes) of T2 codes, or with tq1 (n_out, n_in / 256 * 52 bytes): TQ1_0 rows
  // kept in place (common.glsl), tiled into the same rows per piece as their T2 codes would be.
  TiledTensor codes;
  TiledTensor dblk;  // (n_out, n_in / 256 floats); no rows when d != 0
  float d = 0;
  // Weights per row on the device: the layer's inputs rounded up to 256, the codes past them
  // zero (1bitLLM's 3B: 3200 -> 3328), so that an input padded with zeros gives the exact sums.
  uint64_t n_in = 0;
  bool tq1 = false;
  uint64_t codes_piece = 0, dblk_piece = 0;  // the TileOptions::max_piece_bytes they took
  // A T2 view of a tq1 weight (WeightCache::t2) reads the stored weight's block scales.
  const TiledTensor* scales_of = nullptr;
  const TiledTensor& block_scales() const { return scales_of ? *scales_of : dblk; }
};

// Float weight rows as the shaders read them (q6_K is converted to f32 at upload), or a view
// of an f32 tensor's pieces (LoRA A and B).
struct FloatRows {
  const TiledTensor* rows = nullptr;  // (n_out, row bytes of type)
  FloatWeightType type = FloatWeightType::F32;
  int64_t n_in = 0, n_out = 0;
};

// Every host weight is uploaded the first time an op uses it and kept, keyed by its host
// address.
class WeightCache {
 public:
  // TRIT_VK_TQ1_IN_PLACE=0 converts TQ1_0 to T2 codes at upload instead (a comparison aid).
  WeightCache(Context& ctx, Recorder& rec);
  // The weight as stored (T2 codes, or TQ1_0 rows in place: tq1).
  const TernaryWeight& ternary(const LinearWeight& w);
  // Forgets w's device copy (its buffers freed now: the caller has waited for the work that
  // read them); the next use uploads it again.
  void drop(const LinearWeight& w);
  // Its T2 codes, for the products that read those: the stored weight, or for a tq1 one a view
  // whose codes a tq1_codes dispatch recorded now writes into scratch slot `slot` of its shape
  // (a caller holding several views at once gives each its own slot; the recording orders a
  // slot's reuse after the reads before it).
  const TernaryWeight& t2(const LinearWeight& w, uint32_t slot = 0);
  FloatRows float_matrix(const FloatMatrix& m, const std::string& name);
  const TiledTensor& norm(const float* g, int64_t n);  // one row of n floats
  // (positions, rope_dim): cos then sin of each position's angles, computed as the CPU's
  // rope_forward computes them; grown (and the old one retired) when more positions are asked.
  const TiledTensor& rope_table(int64_t positions, int64_t rope_dim, float base);

 private:
  struct Float {
    TiledTensor rows;
    FloatWeightType type;
  };
  static std::unique_ptr<Float> upload_float(Context& ctx, const FloatMatrix& m,
                                             const std::string& name);
  Context& ctx_;
  Recorder& rec_;
  std::unordered_map<const void*, std::unique_ptr<TernaryWeight>> ternary_;
  std::map<std::tuple<uint64_t, uint64_t, uint32_t>, std::unique_ptr<TernaryWeight>> t2_slots_;
  // Buffers of dropped weights, keyed by (rows, row bytes, max_piece_bytes): the next weight of
  // that shape (a streamed model's next block) takes them instead of allocating.
  std::multimap<std::tuple<uint64_t, uint64_t, uint64_t>, TiledTensor> spare_;
  TiledTensor tiled(const std::string& name, uint64_t rows, uint64_t row_bytes,
                    const TileOptions& o = {});
  bool tq1_in_place_ = true;
  bool tq2_on_device_ = true;                // TQ2_0 rows converted to T2 codes on the device
                                             // (TRIT_VK_TQ2_ON_DEVICE=0: on the host)
  void tq2_codes(const TiledTensor& codes);  // converts uploaded qs bytes in place
  std::unordered_map<const void*, std::unique_ptr<Float>> float_;
  std::unordered_map<const void*, TiledTensor> norms_;
  TiledTensor rope_;
  int64_t rope_dim_ = 0;
  float rope_base_ = 0;
};

// ---- tuning ----

// The shaders' configuration for this device: matvec shape (decode) and tile shapes fitting
// its shared memory (prompts), workgroup sizes, and which fused decoding kernels apply.
struct Tuning {
  uint32_t mv_wg = 64;   // matvec: threads split n_in
  uint32_t mv_rows = 2;  // matvec: output rows per workgroup
  uint32_t tile_m = 64, tile_n = 32, thread_m = 4, thread_n = 4;
  uint32_t max_matvec_tokens = 8;  // ops over up to this many tokens take the matvec path
  // Ternary int8 products whose grid of tile_m x tile_n tiles has fewer groups than this take
  // 32 x 16 tiles (2 x 2 per thread): a training step's 128 tokens would leave most of a large
  // GPU idle. Integer sums are exact, so the tile shape never changes a result. 0: never.
  uint32_t small_tile_groups = 0;
  uint32_t tile_wg() const { return (tile_m / thread_m) * (tile_n / thread_n); }
  // The fused decoding kernels of norm_linear and rope_store_kv: they need subgroup
  // arithmetic (matvec_ternary sums with subgroupAdd); TRIT_VK_DECODE_FUSION=0 turns them off.
  bool fuse_decode = false;
  // Decoding steps of up to this many tokens (a server's slots) take the fused matvec: each
  // code word is read once for all of them, and q, k, v (or gate, up and the activation, or a
  // projection and its residual) are one dispatch. Its cost grows with the tokens (on an H100,
  // docs/PERF.md: 11 us a dispatch at two, 26 at eight, 52 at sixteen): two tokens gained 20%
  // over the separate products, four broke even, eight and sixteen lost. With the trits decoded
  // once a step for every token, sixteen still lose: 69 us a dispatch against the cooperative
  // matrices' 19, 16 streams of 2b4t 1,000 tokens/s against 1,611-1,633 (docs/PERF.md,
  // 2026-12-08). Up to 16 (TRIT_VK_FUSED_TOKENS).
  uint32_t max_fused_tokens = 2;
  // rms_norm.comp's workgroup: 256 invocations, or the device's largest power of two below.
  uint32_t norm_wg = 256;
  uint32_t subgroup_size = 32;  // for matvec_ternary's rows per workgroup
  // Rows each subgroup of the fused matvec takes in turn (a workgroup: its subgroups times
  // this). More rows share one normalisation of the input row (matvec_norm_ternary computes it
  // in every workgroup) and give fewer, longer workgroups. TRIT_VK_FUSED_ROWS=1..64 to tune.
  uint32_t fused_rows_per_subgroup = 1;
  // The fused matvec's rows two at a time a subgroup (MV_PAIR; TRIT_VK_FUSED_PAIR=1, with at
  // least two rows a subgroup).
  bool fused_row_pairs = false;
  // One token's norm before a decoding matvec is computed by each of its workgroups
  // (matvec_norm_ternary) instead of one rms_norm_quant dispatch before it. Same bits.
  // TRIT_VK_FOLD_NORM=0 keeps the dispatch apart (a tuning aid).
  bool fold_decode_norm = true;
  // The LoRA products with a short k take gemm_f32_short_k (TRIT_VK_SHORT_K=0: gemm_f32's
  // tiles, to compare).
  bool gemm_short_k = true;
  // attention.comp's queries per workgroup for prompts (TRIT_VK_ATTN_QT=1..16 to tune).
  uint32_t attn_qt = 8;
  // Batches whose tensors are each one piece take the attention backward in register tiles,
  // every sequence in one dispatch a stage (attention_backward_tiled.comp); others a workgroup
  // per query and per key, one sequence at a time (attention_backward_wg.comp). Same bits.
  // TRIT_VK_ATTN_BWD_TILED=0 takes the second for every batch (tests compare the two).
  bool attn_bwd_tiled = true;
  // Decoding's attention merges its chunks' partials in the workgroup that finishes a query's
  // last chunk (one dispatch instead of two a layer). Same bits. It hands results between
  // workgroups through coherent buffers and an atomic counter, so it is on where that was
  // checked (CPU devices: lavapipe) and off on GPUs until measured and tested there;
  // TRIT_VK_ATTN_FUSE_COMBINE=1 / =0 forces it either way.
  bool attn_fuse_combine = false;
  // attention.comp's key and value loads in flight together (TRIT_VK_ATTN_UNROLL=2..64, even).
  uint32_t attn_unroll = 8;
  // rms_norm.comp's specialization for rows of n values (every module of that source, and
  // matvec_norm_ternary, takes the same, so that they sum alike): the row is held in registers
  // when it fits (n <= norm_vec_width()). `tag` (constant 1, unused by the shader) keeps
  // pipelines with different read-only masks apart.
  std::vector<uint32_t> rms_norm_spec(uint64_t n, uint32_t tag = 0) const {
    const uint32_t vec =
        n % 4 == 0 && n <= norm_vec_width() ? uint32_t((n / 4 + norm_wg - 1) / norm_wg) : 0;
    return {norm_wg, tag, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, vec};
  }
  uint64_t norm_vec_width() const { return 32ull * norm_wg; }  // 8 units an invocation at most
};
Tuning tuning_for(const DeviceCaps& caps);

// ---- Products ----

// What the shared products work with.
struct Kit {
  Context& ctx;
  Recorder& rec;
  Scratch& scratch;
  WeightCache& weights;
  const Tuning& tune;
};

// Spec constants and groups of one matmul dispatch over `tokens` tokens.
struct MatmulPlan {
  std::vector<uint32_t> spec;  // constant_id 0..8
  uint32_t rows_per_group = 1, tokens_per_group = 1;
};
// Matvec rows per workgroup: the shaders' threads tid < MV_ROWS * MV_TOKENS write the results,
// so that product may not exceed the workgroup size.
uint32_t matvec_rows(const Tuning& c, uint32_t mv_tokens);
// matmul_float's plan (and the ternary int8 products' with F32): the matvec path up to
// max_matvec_tokens, tiles above.
MatmulPlan plan_matmul(const Tuning& c, uint64_t tokens, FloatWeightType type);

// y[:, r0 + rows of each piece] = alpha * W x (+ beta * y) for a segment of `tokens` rows of
// an op over `op_tokens` rows (which picks the shader path, so that every tiling of the op sums
// in the same order).
void matmul_float(Kit& k, const FloatRows& w, BufferRange x, BufferRange y, uint64_t tokens,
                  uint64_t op_tokens, uint64_t y_stride, float alpha, float beta);
// gemm_f32 over p.m x p.n (p's offsets and strides index the three ranges): each element adds
// its products in the CPU's order (bit-exact with the CPU's gemm_f32_acc). site: which LoRA
// product it is, for profiles (products.cpp).
void gemm(Kit& k, BufferRange a, BufferRange b, BufferRange c, const GemmF32Push& p,
          uint32_t site = 0);
// The f32 tiles of a LoRA branch's A and B.
FloatRows lora_rows(const DeviceTensor& t);
// y += scale * (x A^T) B^T for a segment of `tokens` rows of an op over `op_tokens` rows, with
// matmul_float's products (generation: nothing saved, the matvec path for a few tokens).
void lora_apply_rows(Kit& k, const LoraBranch& br, BufferRange x, BufferRange y, uint64_t tokens,
                     uint64_t op_tokens, uint64_t y_stride);
// ax = xd A^T, y += scale * ax B^T (y rows of y_stride floats), for one token segment, with
// gemm_f32's products (training: bit-exact with the CPU).
void lora_forward_rows(Kit& k, const LoraBranch& br, BufferRange xd, BufferRange ax, BufferRange y,
                       uint64_t rows, uint64_t y_stride);
// db += ds^T ax, da += (ds B)^T xd, dx += (ds B A) / (1 - p) where xd != 0 (ds = scale dy,
// dy rows of dy_stride floats), for one token segment.
void lora_backward_rows(Kit& k, const LoraBranch& br, BufferRange dx, BufferRange dy,
                        BufferRange xd, BufferRange ax, uint64_t rows, uint64_t dy_stride, float p);
// dx (rows, n_in) += scale * W^T dy over every piece of a ternary (t) or float (f) weight:
// bit-exact (matmul_transposed.comp), or for a ternary or f16 weight on a device with f16
// cooperative matrices (EnabledFeatures::coop_f16_tiles) within the tolerance its module states.
void transposed_product(Kit& k, const TernaryWeight* t, const FloatRows* f, BufferRange dy,
                        uint64_t dy_stride, BufferRange dx, uint64_t rows, uint64_t n_in,
                        float scale);
// Checks a LoRA branch's tensors against a layer of n_in inputs and n_out outputs (errors
// start with op); returns its rank. With grads, da and db must be there too.
int64_t check_lora_branch(const LoraBranch& br, int64_t n_in, int64_t n_out, const char* op,
                          bool grads);

// ---- the op set ----

class VulkanBackend final : public Backend {
 public:
  explicit VulkanBackend(const VulkanRequest& request);
  ~VulkanBackend() override;

  std::string description() const override;
  uint64_t device_memory_used() const override;
  void finish() override;
  void abandon() override;
  void release_weights(std::span<const LinearWeight* const> ws) override;
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
  void norm_linear(const NormOp& norm, std::span<const LinearOp> ops, int64_t n,
                   const LinearMode& mode, const LinearEpilogue& epilogue) override;
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

 private:
  // Submits what is queued and waits; adds up the losses of finished head() chunks; resets the
  // host arena unless keep_host (an op copies its results out of it first).
  void flush(bool keep_host = false);
  // linear.cpp: the products of linear() over row segments; with a norm, x is that norm's
  // output, computed with the quantiser (rms_norm_quant).
  void linear_rows(std::span<const LinearOp> ops, const VkTensor& x, int64_t n,
                   const LinearMode& mode, const NormOp* norm);
  // q rows of q_words words (0: x.cols() / 4); words past x.cols() / 4 are zero.
  void quantize_rows(const VkTensor& x, uint64_t a, uint64_t b, const NormOp* norm, BufferRange q,
                     BufferRange qs, uint64_t q_words = 0);
  // Up to max_fused_tokens tokens, int8 activations, at most three ternary layers of uniform
  // scale without LoRA, every tensor in one piece over the tokens: the decoding matvec applies,
  // with the epilogue in its dispatch and (one token) the norm too.
  bool decode_matvec_applies(const NormOp* norm, std::span<const LinearOp> ops,
                             const DeviceTensor& x, int64_t n, const LinearMode& mode,
                             const LinearEpilogue& epilogue);
  void record_decode_linear(const NormOp* norm, std::span<const LinearOp> ops, const VkTensor& x,
                            int64_t n, const LinearEpilogue& epilogue);
  void head_logits(const HeadOp& op);  // loss.cpp
  void head_loss(const HeadOp& op);
  void collect_losses();
  void rope_rows(DeviceTensor& x, int64_t row0, int64_t n, int64_t n_heads, const AttnShape& shape,
                 int64_t pos0, bool inverse);  // rope.cpp
  // One sequence's rope and store (rope.cpp) and attention (attention.cpp).
  void rope_store_kv_seq(DeviceTensor& q, DeviceTensor& k, const DeviceTensor& v,
                         DeviceTensor& k_cache, DeviceTensor& v_cache, const SeqRows& s,
                         const AttnShape& shape);
  void attention_seq(VkTensor& out, const VkTensor& q, const VkTensor& kc, const VkTensor& vc,
                     const SeqRows& s, const AttnShape& shape);
  // attention_backward of one sequence at rows [row0, row0 + n) of every tensor.
  void attention_backward_seq(VkTensor& dq, VkTensor& dk, VkTensor& dv, const VkTensor& dout,
                              const VkTensor& q, const VkTensor& k, const VkTensor& v,
                              uint64_t row0, uint64_t n, const AttnShape& shape);
  // attention_backward of every sequence at once (attention_backward_tiled.comp, the same
  // bits): false when the tensors or the device do not qualify (the caller takes them one by
  // one).
  bool attention_backward_tiled(VkTensor& dq, VkTensor& dk, VkTensor& dv, const VkTensor& dout,
                                const VkTensor& q, const VkTensor& k, const VkTensor& v,
                                std::span<const SeqRows> seqs, const AttnShape& shape);
  // Decoding rows of several sequences of one pool (one query each) in one dispatch per
  // step: false when they do not qualify (the caller takes them one by one).
  bool rope_store_kv_decode(VkTensor& q, const VkTensor& k, const VkTensor& v, VkTensor& kc,
                            VkTensor& vc, std::span<const SeqRows> seqs, const AttnShape& shape);
  bool attention_decode(VkTensor& out, const VkTensor& q, const VkTensor& kc, const VkTensor& vc,
                        std::span<const SeqRows> seqs, const AttnShape& shape);
  // The zeroed counters of n (query, head) pairs for attention that merges in its last
  // workgroup, or an empty range (no buffer) when that does not apply: the attention
  // dispatch then takes attention_combine after it.
  BufferRange attention_counters(uint64_t n);

  std::unique_ptr<Context> ctx_;
  Recorder rec_;
  Scratch scratch_;
  WeightCache weights_;
  Tuning tune_;
  Kit kit_;
  // write(): up to kQueuedWriteBytes a call is queued through the host arena (at most
  // kMaxQueuedWrites between submissions); larger writes are staged synchronously.
  static constexpr uint64_t kQueuedWriteBytes = 4ull << 20;
  static constexpr uint64_t kMaxQueuedWrites = 64ull << 20;
  uint64_t queued_write_bytes_ = 0;

  // head() loss chunks whose per-token losses (in host blocks) wait for the submission.
  struct PendingLoss {
    double inv_norm = 1;           // 1 / max(norm, 1)
    std::vector<float> mask;       // (chunk tokens)
    std::vector<BufferRange> nll;  // the chunk's per-token losses, in token order
  };
  std::vector<PendingLoss> pending_loss_;
  Buffer attn_counters_;  // attention_counters(): zero between dispatches
  double loss_ = 0;       // since the last take_loss()
};

// `row_groups` workgroups split over x and z (shaders index them with group_x_z()); fails when
// they and gy exceed the device's grid.
struct GroupsXZ {
  uint32_t x, z;
};
inline GroupsXZ groups_x_z(const Context& ctx, const Pipeline& p, uint64_t row_groups,
                           uint64_t gy) {
  const uint32_t* max = ctx.caps().info.max_compute_work_group_count;
  const uint64_t gx = std::min<uint64_t>(row_groups, max[0]);
  const uint64_t gz = (row_groups + gx - 1) / gx;
  if (gz > max[2] || gy > max[1]) {
    fail("vulkan: ", p.name(), ": ", row_groups, " x ", gy, " workgroups exceed the device's grid");
  }
  return {uint32_t(gx), uint32_t(gz)};
}

template <class Push>
void Recorder::dispatch_rows(const Pipeline& p, std::initializer_list<BufferRange> b,
                             const Push& push, uint64_t row_groups, uint64_t gy) {
  const GroupsXZ g = groups_x_z(ctx_, p, row_groups, gy);
  seq_->dispatch(p, b, push, g.x, uint32_t(gy), g.z);
}

template <class Push>
void Recorder::dispatch_flat(const Pipeline& p, std::initializer_list<BufferRange> b,
                             const Push& push, uint64_t groups) {
  const uint32_t* max = ctx_.caps().info.max_compute_work_group_count;
  const uint64_t gx = std::min<uint64_t>(groups, max[0]);
  const uint64_t gy = (groups + gx - 1) / gx;
  if (gy > max[1]) fail("vulkan: ", p.name(), ": ", groups, " workgroups exceed the device's grid");
  seq_->dispatch(p, b, push, uint32_t(gx), uint32_t(gy));
}

}  // namespace trit::engine::vk
