// The Vulkan backend's training ops of the linear layers: the LoRA branch forward (dropout,
// ax = xd A^T, y += scale * ax B^T) and backward (db, da, dx), and the gradient through a
// frozen layer (dx += out_scale * W^T dy).
//
// The LoRA products run in gemm_f32.comp, where each output element adds its products one by
// one in the CPU's order: they equal the CPU backend's (gemm_f32_acc) bit for bit, and a
// product split over token segments or over the pieces of A, B, da, db (accumulating into the
// same element in order) gives the same bits as an unsplit one. The transposed ternary product
// is bit-exact in the same way (matmul_transposed.comp).
#include <algorithm>
#include <cmath>

#include "backend/vulkan/vk_backend_impl.h"
#include "model/model.h"

namespace trit::vk {
namespace {

// gemm_f32: a tile of 64 elements of C per workgroup (one an invocation), shaped to C.
constexpr uint32_t kGemmWg = 64;
// matmul_transposed: 64 columns x 8 * tpt tokens a workgroup, 4 columns x tpt tokens an
// invocation; tpt = 4 (fewer shared loads a product) where that still makes kTransManyGroups
// workgroups, else 2: a 128-token step of a 1B model (n_in 2048) then runs 256 workgroups of
// 64 x 16 rather than 128 of 64 x 32, fewer than the SMs of a large GPU.
constexpr uint32_t kTransWg = 128;
constexpr uint32_t kTransCols = 64, kTransTokenRuns = 8;  // 16 x 8 invocations
constexpr uint64_t kTransManyGroups = 256;
constexpr uint32_t kWg = 128;  // dropout

uint64_t mix(uint64_t x) {  // splitmix64, as train_model.cpp's
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void check_rows(const DeviceTensor& t, int64_t n, int64_t cols, const char* op) {
  if (n < 0 || n > t.rows() || t.cols() != cols) {
    fail(op, ": tensor '", t.name(), "' (", t.rows(), " x ", t.cols(), ") used as ", n, " rows of ",
         cols);
  }
}

void check_shape(const DeviceTensor* t, int64_t rows, int64_t cols, const char* what,
                 const char* op) {
  if (!t) fail(op, ": LoRA branch without its ", what, " tensor");
  if (t->rows() != rows || t->cols() != cols) {
    fail(op, ": LoRA ", what, " '", t->name(), "' is ", t->rows(), " x ", t->cols(), ", expected ",
         rows, " x ", cols);
  }
}

}  // namespace

// Checks the branch's tensors against a layer of n_in inputs and n_out outputs; returns rank.
int64_t check_lora_branch(const LoraBranch& br, int64_t n_in, int64_t n_out, const char* op) {
  if (!br.a) fail(op, ": LoRA branch without its a tensor");
  const int64_t rank = br.a->rows();
  check_shape(br.a, rank, n_in, "a", op);
  check_shape(br.b, n_out, rank, "b", op);
  check_shape(br.da, rank, n_in, "da", op);
  check_shape(br.db, n_out, rank, "db", op);
  return rank;
}

void VulkanBackend::gemm(BufferRange a, BufferRange b, BufferRange c, const GemmF32Push& p) {
  // Tiles of 64 leave many workgroups where C is small: a rank-8 product over 128 tokens whose
  // k runs over n_in or n_out (one long chain of adds an element) spreads over 16 of them.
  // A thin C (the rank on one side) takes a thin tile, so that no invocation idles.
  const uint32_t tj = p.n <= 4 ? 4 : p.m <= 4 ? 16 : 8, ti = kGemmWg / tj;
  // k values staged per barrier: 128 where k runs over the tokens or over thousands, 16 for a
  // short k (the rank), whose staging would be mostly padding.
  const uint32_t kb = p.k >= 128 ? 128 : 16;
  const Pipeline& pl = pipeline("gemm_f32", 3, sizeof(GemmF32Push),
                                {kGemmWg, 0, 0, 0, ti, tj, 0, 0, 0, 0, 0, 0, kb}, 0b011);
  dispatch_rows(pl, {a, b, c}, p, ceil_div(p.m, ti), ceil_div(p.n, tj));
}

void VulkanBackend::lora_forward_rows(const LoraBranch& br, BufferRange xd, BufferRange ax,
                                      BufferRange y, uint64_t rows, uint64_t y_stride) {
  const TiledTensor& a = vk_tensor(*br.a).tiles();  // (rank, n_in)
  const TiledTensor& b = vk_tensor(*br.b).tiles();  // (n_out, rank)
  const uint32_t n_in = uint32_t(br.a->cols()), rank = uint32_t(br.a->rows());
  // ax (rows, rank) = xd A^T: columns [j0, j1) from each piece of A.
  for (size_t i = 0; i < a.pieces(); ++i) {
    const TiledTensor::Piece& pc = a.piece(i);
    gemm(xd, a.range(i), ax,
         {uint32_t(rows), uint32_t(pc.rows()), n_in, 0, n_in, 1, 0, 1, n_in, uint32_t(pc.row0),
          rank, uint32_t(GemmMode::Set), 1.0f, 1.0f});
  }
  // y += (ax B^T) * scale: columns [o0, o1) of y from each piece of B.
  for (size_t i = 0; i < b.pieces(); ++i) {
    const TiledTensor::Piece& pc = b.piece(i);
    gemm(ax, b.range(i), y,
         {uint32_t(rows), uint32_t(pc.rows()), rank, 0, rank, 1, 0, 1, rank, uint32_t(pc.row0),
          uint32_t(y_stride), uint32_t(GemmMode::AddScaled), 1.0f, br.scale});
  }
}

void VulkanBackend::lora_backward_rows(const LoraBranch& br, BufferRange dx, BufferRange dy,
                                       BufferRange xd, BufferRange ax, uint64_t rows,
                                       uint64_t dy_stride, float p) {
  const TiledTensor& a = vk_tensor(*br.a).tiles();    // (rank, n_in)
  const TiledTensor& b = vk_tensor(*br.b).tiles();    // (n_out, rank)
  const TiledTensor& da = vk_tensor(*br.da).tiles();  // (rank, n_in)
  const TiledTensor& db = vk_tensor(*br.db).tiles();  // (n_out, rank)
  const uint32_t n_in = uint32_t(br.a->cols()), rank = uint32_t(br.a->rows());
  const uint32_t t = uint32_t(rows), ys = uint32_t(dy_stride);
  const float s = br.scale;
  const auto set = uint32_t(GemmMode::Set), accumulate = uint32_t(GemmMode::Accumulate);
  // db[o, j] += sum_t (s dy[t, o]) ax[t, j]
  for (size_t i = 0; i < db.pieces(); ++i) {
    const TiledTensor::Piece& pc = db.piece(i);
    gemm(dy, ax, db.range(i),
         {uint32_t(pc.rows()), rank, t, uint32_t(pc.row0), 1, ys, 0, rank, 1, 0, rank, accumulate,
          s, 1.0f});
  }
  // dax (rows, rank) = (s dy) B, summed over the pieces of B in order.
  const BufferRange dax = act_scratch_.alloc(rows * rank * 4);
  for (size_t i = 0; i < b.pieces(); ++i) {
    const TiledTensor::Piece& pc = b.piece(i);
    gemm(dy, b.range(i), dax,
         {t, rank, uint32_t(pc.rows()), uint32_t(pc.row0), ys, 1, 0, rank, 1, 0, rank,
          i == 0 ? set : accumulate, s, 1.0f});
  }
  // da[j, c] += sum_t dax[t, j] xd[t, c]
  for (size_t i = 0; i < da.pieces(); ++i) {
    const TiledTensor::Piece& pc = da.piece(i);
    gemm(dax, xd, da.range(i),
         {uint32_t(pc.rows()), n_in, t, uint32_t(pc.row0), 1, rank, 0, n_in, 1, 0, n_in, accumulate,
          1.0f, 1.0f});
  }
  // dxd (rows, n_in) = dax A, then dx += dxd / (1 - p) where xd != 0.
  const BufferRange dxd = act_scratch_.alloc(rows * n_in * 4);
  for (size_t i = 0; i < a.pieces(); ++i) {
    const TiledTensor::Piece& pc = a.piece(i);
    gemm(dax, a.range(i), dxd,
         {t, n_in, uint32_t(pc.rows()), uint32_t(pc.row0), rank, 1, 0, n_in, 1, 0, n_in,
          i == 0 ? set : accumulate, 1.0f, 1.0f});
  }
  const uint64_t count = rows * n_in;
  const DropoutPush push{
      uint32_t(count), 1, p > 0 ? 1u : 0u, 0, 0, 0, 0, p > 0 ? 1.0f / (1.0f - p) : 1.0f};
  const Pipeline& pl = pipeline("dropout", 3, sizeof(DropoutPush), {kWg}, 0b011);
  dispatch_flat(pl, {xd, dxd, dx}, push, ceil_div(count, kWg));
}

void VulkanBackend::transposed_product(const TernaryWeight* t, const FloatWeight* f, BufferRange dy,
                                       uint64_t dy_stride, BufferRange dx, uint64_t rows,
                                       uint64_t n_in, float scale) {
  const TiledTensor& w = t ? t->codes : f->rows;
  const size_t pieces = w.pieces();
  // Several pieces sum through an accumulator tile, in piece (row) order.
  const BufferRange acc = pieces > 1 ? act_scratch_.alloc(rows * n_in * 4) : dx;
  const uint64_t col_groups = ceil_div(n_in, kTransCols);
  const uint32_t tpt = col_groups * ceil_div(rows, kTransTokenRuns * 4) >= kTransManyGroups ? 4 : 2;
  const Pipeline& p = t ? pipeline("matmul_ternary_t", 5, sizeof(MatmulTransposedPush),
                                   {kTransWg, 0, 0, 0, 0, 0, 0, tpt}, 0b00111)
                        : pipeline("matmul_float_t", 5, sizeof(MatmulTransposedPush),
                                   {kTransWg, 0, 0, 0, 0, 0, 0, tpt, uint32_t(f->type)}, 0b00111);
  for (size_t i = 0; i < pieces; ++i) {
    const TiledTensor::Piece& piece = w.piece(i);
    // Float rows: the whole buffer (q8_0 rows need not end on a word).
    const BufferRange wr = t ? w.range(i) : BufferRange(piece.buffer);
    const BufferRange dblk = t && t->d == 0.0f ? t->dblk.range(i) : wr;
    const MatmulTransposedPush push{
        uint32_t(n_in), uint32_t(piece.rows()), uint32_t(piece.row0),
        uint32_t(rows), uint32_t(dy_stride),    t ? t->d : 0.0f,
        scale,          i == 0 ? 1u : 0u,       i + 1 == pieces ? 1u : 0u};
    dispatch_rows(p, {wr, dblk, dy, acc, dx}, push, col_groups,
                  ceil_div(rows, kTransTokenRuns * tpt));
  }
}

void VulkanBackend::lora_forward(DeviceTensor& y_t, DeviceTensor& xd_t, DeviceTensor& ax_t,
                                 const DeviceTensor& x_t, int64_t n, const LoraBranch& br, float p,
                                 uint64_t key) {
  const char* op = "lora_forward";
  const int64_t n_in = x_t.cols(), n_out = y_t.cols();
  const int64_t rank = check_lora_branch(br, n_in, n_out, op);
  check_rows(x_t, n, n_in, op);
  check_rows(xd_t, n, n_in, op);
  check_rows(ax_t, n, rank, op);
  check_rows(y_t, n, n_out, op);
  if (!(p >= 0.0f && p < 1.0f)) fail(op, ": dropout probability ", p, " outside [0, 1)");
  if (n == 0) return;
  VkTensor& y = vk_tensor(y_t);
  VkTensor& xd = vk_tensor(xd_t);
  VkTensor& ax = vk_tensor(ax_t);
  const VkTensor& x = vk_tensor(x_t);
  // u < p exactly when the 53-bit value is below ceil(p * 2^53) (train_model.cpp's dropout).
  const uint64_t thr = uint64_t(std::ceil(double(p) * 0x1.0p53));
  const uint64_t base = mix(key ^ mix(br.salt));
  const Pipeline& drop = pipeline("dropout", 3, sizeof(DropoutPush), {kWg}, 0b011);
  act_scratch_.reset();
  for (const auto& [a, b] :
       row_segments({{&x.tiles(), 0}, {&xd.tiles(), 0}, {&ax.tiles(), 0}, {&y.tiles(), 0}},
                    uint64_t(n), max_seg_rows_)) {
    const uint64_t rows = b - a;
    const BufferRange xr = bind_rows(x.tiles(), a, b, true);
    const BufferRange xdr = bind_rows(xd.tiles(), a, b, false);
    const BufferRange axr = bind_rows(ax.tiles(), a, b, false);
    const BufferRange yr = bind_rows(y.tiles(), a, b, true);
    if (p > 0) {
      const uint64_t count = rows * uint64_t(n_in);
      const uint64_t start = base + a * uint64_t(n_in);
      const DropoutPush push{uint32_t(count),
                             0,
                             1,
                             uint32_t(start),
                             uint32_t(start >> 32),
                             uint32_t(thr),
                             uint32_t(thr >> 32),
                             1.0f / (1.0f - p)};
      dispatch_flat(drop, {xr, xr, xdr}, push, ceil_div(count, kWg));
    } else if (&x != &xd) {
      rec().copy(xr, xdr);
    }
    lora_forward_rows(br, xdr, axr, yr, rows, uint64_t(n_out));
    unbind_rows(xdr, xd.tiles(), a, b);
    unbind_rows(axr, ax.tiles(), a, b);
    unbind_rows(yr, y.tiles(), a, b);
  }
}

void VulkanBackend::lora_backward(DeviceTensor& dx_t, const DeviceTensor& dy_t,
                                  const DeviceTensor& xd_t, const DeviceTensor& ax_t, int64_t n,
                                  const LoraBranch& br, float p) {
  const char* op = "lora_backward";
  const int64_t n_in = dx_t.cols(), n_out = dy_t.cols();
  const int64_t rank = check_lora_branch(br, n_in, n_out, op);
  check_rows(dx_t, n, n_in, op);
  check_rows(xd_t, n, n_in, op);
  check_rows(ax_t, n, rank, op);
  check_rows(dy_t, n, n_out, op);
  if (!(p >= 0.0f && p < 1.0f)) fail(op, ": dropout probability ", p, " outside [0, 1)");
  if (n == 0) return;
  VkTensor& dx = vk_tensor(dx_t);
  const VkTensor& dy = vk_tensor(dy_t);
  const VkTensor& xd = vk_tensor(xd_t);
  const VkTensor& ax = vk_tensor(ax_t);
  act_scratch_.reset();
  for (const auto& [a, b] :
       row_segments({{&dx.tiles(), 0}, {&dy.tiles(), 0}, {&xd.tiles(), 0}, {&ax.tiles(), 0}},
                    uint64_t(n), max_seg_rows_)) {
    const BufferRange dxr = bind_rows(dx.tiles(), a, b, true);
    lora_backward_rows(br, dxr, bind_rows(dy.tiles(), a, b, true),
                       bind_rows(xd.tiles(), a, b, true), bind_rows(ax.tiles(), a, b, true), b - a,
                       uint64_t(n_out), p);
    unbind_rows(dxr, dx.tiles(), a, b);
  }
}

void VulkanBackend::linear_backward(DeviceTensor& dx_t, const DeviceTensor& dy_t,
                                    const LinearWeight& w, int64_t n) {
  const char* op = "linear_backward";
  check_rows(dx_t, n, w.m.n_in, op);
  check_rows(dy_t, n, w.m.n_out, op);
  if (n == 0) return;
  VkTensor& dx = vk_tensor(dx_t);
  const VkTensor& dy = vk_tensor(dy_t);
  const TernaryWeight* t = w.is_float() ? nullptr : &ternary_weight(w);
  const FloatWeight* f = w.is_float() ? &float_weight(w.f, w.name) : nullptr;
  act_scratch_.reset();
  for (const auto& [a, b] :
       row_segments({{&dx.tiles(), 0}, {&dy.tiles(), 0}}, uint64_t(n), max_seg_rows_)) {
    const BufferRange dxr = bind_rows(dx.tiles(), a, b, true);
    transposed_product(t, f, bind_rows(dy.tiles(), a, b, true), uint64_t(w.m.n_out), dxr, b - a,
                       uint64_t(w.m.n_in), w.out_scale);
    unbind_rows(dxr, dx.tiles(), a, b);
  }
}

}  // namespace trit::vk
