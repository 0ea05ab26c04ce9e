// The Vulkan backend's rotary embedding: rope and its backward (rope.comp, angles from a table
// computed exactly as the CPU's rope_forward computes them), and a decoding step's rope with
// the KV store in one dispatch (rope_kv.comp), for one sequence or for the decoding rows of
// several sequences of one KV pool.
#include <algorithm>

#include "backend/vulkan/vk_backend.h"

namespace trit::engine::vk {
namespace {

constexpr uint32_t kRopeWg = 128;  // rope, rope_kv

std::vector<uint32_t> rope_kv_spec(bool seq_table, bool kv_f16) {
  std::vector<uint32_t> spec(uint32_t(SpecId::KvF16) + 1, 0);
  spec[uint32_t(SpecId::WorkgroupSize)] = kRopeWg;
  spec[uint32_t(SpecId::SeqTable)] = seq_table ? 1 : 0;
  spec[uint32_t(SpecId::KvF16)] = kv_f16 ? 1 : 0;
  return spec;
}

// The invocations of rope_kv: q's rotated pairs, then the words of k and v written.
uint64_t rope_kv_work(const AttnShape& shape, int64_t kv_cols, bool kv_f16) {
  return uint64_t(shape.n_head) * uint64_t(shape.rope_dim / 2) +
         (kv_f16 ? 1 : 2) * uint64_t(kv_cols);
}

}  // namespace

void VulkanBackend::rope(DeviceTensor& x, int64_t row0, int64_t n, int64_t n_heads,
                         const AttnShape& shape, int64_t pos0) {
  rope_rows(x, row0, n, n_heads, shape, pos0, /*inverse=*/false);
}

void VulkanBackend::rope_backward(DeviceTensor& x, int64_t row0, int64_t n, int64_t n_heads,
                                  const AttnShape& shape, int64_t pos0) {
  rope_rows(x, row0, n, n_heads, shape, pos0, /*inverse=*/true);
}

// rope.comp over rows [row0, row0 + n) of x: the angles of positions pos0.., negated when
// inverse.
void VulkanBackend::rope_rows(DeviceTensor& x_t, int64_t row0, int64_t n, int64_t n_heads,
                              const AttnShape& shape, int64_t pos0, bool inverse) {
  const char* op = inverse ? "rope_backward" : "rope";
  VkTensor& x = vk_tensor(x_t);
  const int64_t head_dim = shape.head_dim;
  if (n < 0 || row0 < 0 || row0 + n > x.rows() || pos0 < 0 || x.cols() != n_heads * head_dim) {
    fail(op, ": tensor '", x.name(), "' (", x.rows(), " x ", x.cols(), "), rows ", row0, "..",
         row0 + n, " of ", n_heads, " heads of ", head_dim);
  }
  if (shape.rope_dim % 2 != 0 || shape.rope_dim > head_dim) {
    fail(op, ": rope_dim ", shape.rope_dim, " with head_dim ", head_dim);
  }
  if (n == 0 || shape.rope_dim == 0) return;
  scratch_.act.reset();
  const TiledTensor& table = weights_.rope_table(pos0 + n, shape.rope_dim, shape.rope_theta);
  const Pipeline& p = rec_.pipeline("rope", 2, sizeof(RopePush), {kRopeWg}, 0b10);
  const uint64_t pairs = uint64_t(n_heads) * uint64_t(shape.rope_dim / 2);
  const uint64_t r0 = uint64_t(row0);
  for (const auto& [a, b] : row_segments({{&x.tiles(), r0}}, uint64_t(n), rec_.max_seg_rows())) {
    const BufferRange xr = scratch_.bind_rows(rec_, x.tiles(), r0 + a, r0 + b, true);
    const uint64_t p0 = uint64_t(pos0) + a, p1 = uint64_t(pos0) + b;
    for (const PieceRun& run : table.runs(p0, p1)) {
      const TiledTensor::Piece& piece = table.piece(run.piece);
      const RopePush push{uint32_t(b - a),          uint32_t(n_heads), uint32_t(head_dim),
                          uint32_t(shape.rope_dim), uint32_t(p0),      uint32_t(piece.row0),
                          uint32_t(piece.rows()),   inverse ? 1u : 0u};
      rec_.seq().dispatch(p, {xr, table.range(run.piece)}, push, uint32_t(ceil_div(pairs, kRopeWg)),
                          uint32_t(b - a));
    }
    scratch_.unbind_rows(rec_, xr, x.tiles(), r0 + a, r0 + b);
  }
}

void VulkanBackend::rope_store_kv(DeviceTensor& q, DeviceTensor& k, const DeviceTensor& v,
                                  DeviceTensor& kc, DeviceTensor& vc, std::span<const SeqRows> seqs,
                                  const AttnShape& shape) {
  // Decoding rows (one sequence too: its position then comes from a buffer, so that one
  // decoding step records what the one before it did and replays it, Sequence).
  if (&kc != &k && !seqs.empty() && seqs[0].n == 1 &&
      rope_store_kv_decode(vk_tensor(q), vk_tensor(k), vk_tensor(v), vk_tensor(kc), vk_tensor(vc),
                           seqs, shape)) {
    return;
  }
  for (const SeqRows& s : seqs) rope_store_kv_seq(q, k, v, kc, vc, s, shape);
}

bool VulkanBackend::rope_store_kv_decode(VkTensor& q, const VkTensor& k, const VkTensor& v,
                                         VkTensor& kc, VkTensor& vc, std::span<const SeqRows> seqs,
                                         const AttnShape& shape) {
  const int64_t head_dim = shape.head_dim;
  const uint64_t r0 = uint64_t(seqs[0].row0), n = seqs.size();
  int64_t max_pos = 0, min_pos = seqs[0].pos0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SeqRows& s = seqs[i];
    if (s.n != 1 || s.row0 != int64_t(r0 + i) || s.pos0 < 0 || s.base < 0 ||
        s.base + s.pos0 + 1 > kc.rows()) {
      return false;
    }
    max_pos = std::max(max_pos, s.pos0);
    min_pos = std::min(min_pos, s.pos0);
  }
  // Every row bound as it is: q, k, v rows in one piece at aligned offsets, the pool in one
  // piece, the positions in one piece of the rope table.
  if (!tune_.fuse_decode || shape.rope_dim <= 0 || shape.rope_dim % 2 != 0 ||
      shape.rope_dim > head_dim || q.cols() != shape.n_head * head_dim ||
      k.cols() != shape.kv_cols() || v.cols() != k.cols() || kc.cols() != k.cols() ||
      vc.cols() != k.cols() || vc.rows() != kc.rows() || vc.f16() != kc.f16() ||
      kc.tiles().pieces() != 1 || vc.tiles().pieces() != 1 || r0 + n > uint64_t(q.rows()) ||
      r0 + n > uint64_t(k.rows()) || r0 + n > uint64_t(v.rows()) || !one_piece(q.tiles(), r0, n) ||
      !one_piece(k.tiles(), r0, n) || !one_piece(v.tiles(), r0, n)) {
    return false;
  }
  const BufferRange qr = rows_range(q.tiles(), r0, r0 + n);
  const BufferRange kr = rows_range(k.tiles(), r0, r0 + n);
  const BufferRange vr = rows_range(v.tiles(), r0, r0 + n);
  const uint64_t align = ctx_->caps().info.min_storage_buffer_offset_alignment;
  for (const BufferRange& r : {qr, kr, vr}) {
    if (align > 0 && r.offset % align != 0) return false;
  }
  const TiledTensor& table = weights_.rope_table(max_pos + 1, shape.rope_dim, shape.rope_theta);
  const auto runs = table.runs(uint64_t(min_pos), uint64_t(max_pos + 1));
  if (runs.size() != 1) return false;
  const TiledTensor::Piece& piece = table.piece(runs[0].piece);
  const BufferRange seq_table =
      scratch_.host.pairs(n, [&](size_t i) { return std::pair(seqs[i].base, seqs[i].pos0); });
  const RopeKvPush push{uint32_t(n),          uint32_t(shape.n_head),   uint32_t(shape.n_head_kv),
                        uint32_t(head_dim),   uint32_t(shape.rope_dim), 0,
                        uint32_t(piece.row0), uint32_t(piece.rows())};
  const Pipeline& p =
      rec_.pipeline("rope_kv", 7, sizeof(RopeKvPush), rope_kv_spec(true, kc.f16()), 0b1100110);
  const uint64_t work = rope_kv_work(shape, k.cols(), kc.f16());
  rec_.seq().dispatch(
      p,
      {qr, kr, vr, kc.tiles().range(0), vc.tiles().range(0), table.range(runs[0].piece), seq_table},
      push, uint32_t(ceil_div(work, kRopeWg)), uint32_t(n));
  return true;
}

void VulkanBackend::rope_store_kv_seq(DeviceTensor& q_t, DeviceTensor& k_t, const DeviceTensor& v_t,
                                      DeviceTensor& kc_t, DeviceTensor& vc_t, const SeqRows& s,
                                      const AttnShape& shape) {
  VkTensor& q = vk_tensor(q_t);
  const VkTensor& k = vk_tensor(k_t);
  const VkTensor& v = vk_tensor(v_t);
  VkTensor& kc = vk_tensor(kc_t);
  VkTensor& vc = vk_tensor(vc_t);
  const int64_t head_dim = shape.head_dim;
  const int64_t row0 = s.row0, n = s.n, pos0 = s.pos0;
  const int64_t c0 = s.base + pos0;  // the first cache row written
  // Cache rows bound as they are (rows of halves can start off the device's alignment).
  const uint64_t align = ctx_->caps().info.min_storage_buffer_offset_alignment;
  auto bindable = [&](const TiledTensor& t, int64_t r0, int64_t rows) {
    return align == 0 || rows_range(t, uint64_t(r0), uint64_t(r0 + rows)).offset % align == 0;
  };
  // A decoding step's rope and KV store in one dispatch (rope_kv.comp); training, whose
  // sequence is its own cache, and ops that cross pieces take the default composition.
  const bool fits = &kc != &k && &vc != &v && tune_.fuse_decode && n >= 1 &&
                    uint64_t(n) <= tune_.max_matvec_tokens && pos0 >= 0 && s.base >= 0 &&
                    shape.rope_dim > 0 && shape.rope_dim % 2 == 0 && shape.rope_dim <= head_dim &&
                    q.cols() == shape.n_head * head_dim && k.cols() == shape.kv_cols() &&
                    v.cols() == k.cols() && kc.cols() == k.cols() && vc.cols() == k.cols() &&
                    row0 >= 0 && row0 + n <= q.rows() && row0 + n <= k.rows() &&
                    row0 + n <= v.rows() && c0 + n <= kc.rows() && c0 + n <= vc.rows() &&
                    one_piece(q.tiles(), uint64_t(row0), uint64_t(n)) &&
                    one_piece(k.tiles(), uint64_t(row0), uint64_t(n)) &&
                    one_piece(v.tiles(), uint64_t(row0), uint64_t(n)) &&
                    one_piece(kc.tiles(), uint64_t(c0), uint64_t(n)) &&
                    one_piece(vc.tiles(), uint64_t(c0), uint64_t(n)) && vc.f16() == kc.f16() &&
                    bindable(kc.tiles(), c0, n) && bindable(vc.tiles(), c0, n);
  const SeqRows one[] = {s};
  if (!fits) {
    Backend::rope_store_kv(q_t, k_t, v_t, kc_t, vc_t, one, shape);
    return;
  }
  const TiledTensor& table = weights_.rope_table(pos0 + n, shape.rope_dim, shape.rope_theta);
  const auto runs = table.runs(uint64_t(pos0), uint64_t(pos0 + n));
  if (runs.size() != 1) {
    Backend::rope_store_kv(q_t, k_t, v_t, kc_t, vc_t, one, shape);
    return;
  }
  const TiledTensor::Piece& piece = table.piece(runs[0].piece);
  const RopeKvPush push{uint32_t(n),          uint32_t(shape.n_head),   uint32_t(shape.n_head_kv),
                        uint32_t(head_dim),   uint32_t(shape.rope_dim), uint32_t(pos0),
                        uint32_t(piece.row0), uint32_t(piece.rows())};
  const Pipeline& p =
      rec_.pipeline("rope_kv", 7, sizeof(RopeKvPush), rope_kv_spec(false, kc.f16()), 0b1100110);
  const uint64_t work = rope_kv_work(shape, k.cols(), kc.f16());
  const uint64_t end = uint64_t(c0 + n);
  // A sequence's rows inside a batch: staged copies where their offset breaks the alignment.
  const uint64_t r0 = uint64_t(row0), r1 = uint64_t(row0 + n);
  scratch_.act.reset();
  const BufferRange qr = scratch_.bind_rows(rec_, q.tiles(), r0, r1, true);
  rec_.seq().dispatch(
      p,
      {qr, scratch_.bind_rows(rec_, k.tiles(), r0, r1, true),
       scratch_.bind_rows(rec_, v.tiles(), r0, r1, true), rows_range(kc.tiles(), uint64_t(c0), end),
       rows_range(vc.tiles(), uint64_t(c0), end), table.range(runs[0].piece),
       table.range(runs[0].piece)},
      push, uint32_t(ceil_div(work, kRopeWg)), uint32_t(n));
  scratch_.unbind_rows(rec_, qr, q.tiles(), r0, r1);
}

}  // namespace trit::engine::vk
