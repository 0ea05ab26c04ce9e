// The Vulkan backend's attention block ops: rope (angles from a host table computed exactly as
// the CPU's rope_forward computes them), store_kv (buffer copies) and causal GQA attention in
// chunk partials merged in a fixed order, so the result does not depend on the KV tiling.
#include <algorithm>
#include <cmath>

#include "backend/vulkan/vk_backend_impl.h"

namespace trit::vk {
namespace {

constexpr uint32_t kWg = 128;     // rope
constexpr uint32_t kAttnWg = 64;  // attention, attention_combine
constexpr uint64_t kMinRopeRows = 256;

}  // namespace

const TiledTensor& VulkanBackend::rope_table(int64_t positions, int64_t rope_dim, float base) {
  if (rope_.rows() >= uint64_t(positions) && rope_dim_ == rope_dim && rope_base_ == base) {
    return rope_;
  }
  uint64_t rows = kMinRopeRows;
  while (rows < uint64_t(positions)) rows *= 2;
  // Row p: cos of float(p) * inv_freq[i] for i < rope_dim / 2, then the sines (rope_forward).
  const int64_t half = rope_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[size_t(i)] = 1.0f / std::pow(base, float(2 * i) / float(rope_dim));
  }
  std::vector<float> tab(rows * uint64_t(rope_dim));
  for (uint64_t p = 0; p < rows; ++p) {
    float* row = tab.data() + p * uint64_t(rope_dim);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(int32_t(p)) * inv_freq[size_t(i)];
      row[i] = std::cos(angle);
      row[half + i] = std::sin(angle);
    }
  }
  if (rope_.rows() != 0) retired_.push_back(std::move(rope_));  // queued work may read it
  rope_ = make_tiled(*ctx_, "rope table", rows, uint64_t(rope_dim) * 4);
  rope_.upload(0, rows, tab.data());
  rope_dim_ = rope_dim;
  rope_base_ = base;
  return rope_;
}

void VulkanBackend::rope(DeviceTensor& x_t, int64_t n, int64_t n_heads, const HParams& hp,
                         int64_t pos0) {
  VkTensor& x = vk_tensor(x_t);
  const int64_t head_dim = hp.head_dim();
  if (n < 0 || n > x.rows() || pos0 < 0 || x.cols() != n_heads * head_dim) {
    fail("rope: tensor '", x.name(), "' (", x.rows(), " x ", x.cols(), "), ", n, " rows of ",
         n_heads, " heads of ", head_dim);
  }
  if (hp.rope_dim % 2 != 0 || hp.rope_dim > head_dim) {
    fail("rope: rope_dim ", hp.rope_dim, " with head_dim ", head_dim);
  }
  if (n == 0 || hp.rope_dim == 0) return;
  const TiledTensor& table = rope_table(pos0 + n, hp.rope_dim, hp.rope_theta);
  const Pipeline& p = pipeline("rope", 2, sizeof(RopePush), {kWg}, 0b10);
  const uint64_t pairs = uint64_t(n_heads) * uint64_t(hp.rope_dim / 2);
  for (const auto& [a, b] : row_segments({{&x.tiles(), 0}}, uint64_t(n), max_seg_rows_)) {
    const BufferRange xr = rows_range(x.tiles(), a, b);
    const uint64_t p0 = uint64_t(pos0) + a, p1 = uint64_t(pos0) + b;
    for (const PieceRun& run : table.runs(p0, p1)) {
      const TiledTensor::Piece& piece = table.piece(run.piece);
      const RopePush push{
          uint32_t(b - a), uint32_t(n_heads),    uint32_t(head_dim),     uint32_t(hp.rope_dim),
          uint32_t(p0),    uint32_t(piece.row0), uint32_t(piece.rows()), 0};
      rec().dispatch(p, {xr, table.range(run.piece)}, push, uint32_t(ceil_div(pairs, kWg)),
                     uint32_t(b - a));
    }
  }
}

void VulkanBackend::store_kv(DeviceTensor& cache_t, const DeviceTensor& src_t, int64_t n,
                             int64_t pos0) {
  VkTensor& cache = vk_tensor(cache_t);
  const VkTensor& src = vk_tensor(src_t);
  if (n < 0 || pos0 < 0 || pos0 + n > cache.rows() || n > src.rows() ||
      src.cols() != cache.cols()) {
    fail("store_kv: rows ", pos0, "..", pos0 + n, " of cache '", cache.name(), "' (", cache.rows(),
         " x ", cache.cols(), ") from '", src.name(), "' (", src.rows(), " x ", src.cols(), ")");
  }
  for (const auto& [a, b] :
       row_segments({{&src.tiles(), 0}, {&cache.tiles(), uint64_t(pos0)}}, uint64_t(n), 0)) {
    rec().copy(rows_range(src.tiles(), a, b),
               rows_range(cache.tiles(), uint64_t(pos0) + a, uint64_t(pos0) + b));
  }
}

void VulkanBackend::attention(DeviceTensor& out_t, const DeviceTensor& q_t, const DeviceTensor& k_t,
                              const DeviceTensor& v_t, int64_t n, int64_t pos0, const HParams& hp) {
  VkTensor& out = vk_tensor(out_t);
  const VkTensor& q = vk_tensor(q_t);
  const VkTensor& kc = vk_tensor(k_t);
  const VkTensor& vc = vk_tensor(v_t);
  const int64_t hd = hp.head_dim();
  const int64_t n_head = hp.n_head;
  if (n < 0 || pos0 < 0 || n > q.rows() || n > out.rows() || q.cols() != n_head * hd ||
      out.cols() != q.cols() || pos0 + n > kc.rows() || kc.cols() != hp.n_embd_kv() ||
      vc.rows() != kc.rows() || vc.cols() != kc.cols() ||
      vc.tiles().rows_per_piece() != kc.tiles().rows_per_piece() || hp.n_head_kv <= 0 ||
      n_head % hp.n_head_kv != 0) {
    fail("attention: ", n, " queries at ", pos0, " in '", q.name(), "' (", q.rows(), " x ",
         q.cols(), ") against '", kc.name(), "' and '", vc.name(), "' (", kc.rows(), " x ",
         kc.cols(), "), ", n_head, " heads of ", hd, ", ", hp.n_head_kv, " KV heads");
  }
  if (n == 0) return;
  const uint32_t chunk = std::min(kc.kv_chunk(), vc.kv_chunk());
  const std::vector<uint32_t> spec = {kAttnWg, 0, 0, 0, 0, 0, 0, 0, 0, 0, chunk, uint32_t(hd)};
  // Queries per workgroup: one when decoding, attn_qt_ for prompts and training (each staged
  // chunk of keys serves them all).
  const uint32_t qt = uint64_t(n) >= attn_qt_ ? attn_qt_ : 1;
  std::vector<uint32_t> spec_a = spec;
  spec_a[uint32_t(SpecId::MvTokens)] = qt;
  const Pipeline& pa = pipeline("attention", 4, sizeof(AttentionPush), spec_a, 0b0111);
  const Pipeline& pc = pipeline("attention_combine", 2, sizeof(AttentionCombinePush), spec, 0b01);
  const float scale = 1.0f / std::sqrt(float(hd));
  const uint64_t limit = ctx_->binding_limit();
  const uint32_t max_z = ctx_->caps().info.max_compute_work_group_count[2];
  attn_scratch_.reset();
  for (const auto& [a, b] :
       row_segments({{&q.tiles(), 0}, {&out.tiles(), 0}}, uint64_t(n), max_seg_rows_)) {
    const BufferRange qr = rows_range(q.tiles(), a, b);
    const BufferRange outr = rows_range(out.tiles(), a, b);
    const uint64_t tile_pos0 = uint64_t(pos0) + a;  // position of the segment's row 0
    // Queries per dispatch: their partials (n_head * n_chunks records of hd + 2 floats each)
    // fit the binding limit.
    const uint64_t per_query =
        uint64_t(n_head) * ceil_div(tile_pos0 + (b - a), chunk) * uint64_t(hd + 2) * 4;
    if (per_query > limit) {
      fail("attention: the partials of one query at position ", tile_pos0 + (b - a) - 1, " take ",
           per_query, " bytes, more than the binding limit of ", limit,
           " bytes; raise --max-buffer-mb or shorten the context");
    }
    const uint64_t step = std::min<uint64_t>(limit / per_query, max_z);
    for (uint64_t t0 = 0; t0 < b - a; t0 += step) {
      const uint64_t n_q = std::min(step, b - a - t0);
      const uint64_t end = tile_pos0 + t0 + n_q;  // keys [0, end) are needed
      const uint64_t n_chunks = ceil_div(end, chunk);
      const BufferRange part =
          attn_scratch_.alloc(n_q * uint64_t(n_head) * n_chunks * uint64_t(hd + 2) * 4);
      for (size_t i = 0; i < kc.tiles().pieces(); ++i) {
        const TiledTensor::Piece& piece = kc.tiles().piece(i);
        if (piece.row0 >= end) break;
        const uint64_t kv_rows = std::min(piece.row1, end) - piece.row0;
        const AttentionPush push{uint32_t(n_q),
                                 uint32_t(t0),
                                 uint32_t(tile_pos0),
                                 uint32_t(n_head),
                                 uint32_t(hp.n_head_kv),
                                 uint32_t(hd),
                                 uint32_t(kc.cols()),
                                 uint32_t(piece.row0),
                                 uint32_t(kv_rows),
                                 uint32_t(n_chunks),
                                 scale};
        rec().dispatch(pa, {qr, kc.tiles().range(i), vc.tiles().range(i), part}, push,
                       uint32_t(ceil_div(kv_rows, chunk)), uint32_t(n_head),
                       uint32_t(ceil_div(n_q, qt)));
      }
      const AttentionCombinePush cpush{uint32_t(n_q),    uint32_t(t0), uint32_t(tile_pos0),
                                       uint32_t(n_head), uint32_t(hd), uint32_t(n_chunks)};
      rec().dispatch(pc, {part, outr}, cpush, uint32_t(n_head), uint32_t(n_q));
    }
  }
}

}  // namespace trit::vk
