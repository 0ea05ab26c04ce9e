// The Vulkan backend's training ops of a transformer block: zero, copy, and the backward
// passes of rms_norm, rope, attention and the gated activation. Each walks the row segments
// on which every tensor it touches stays within one piece.
//
// attention_backward recomputes the softmax from q and k (memory linear in n) in four passes
// over (query segment, K/V segment) pairs, each sum running in key or query order inside one
// invocation and carried between segments through memory: the max of each query's scores,
// then its sums l and E, then dq, then (per query head of a group, query segments in order)
// dk and dv. No atomics: the results do not depend on how the tensors are tiled.
#include <algorithm>
#include <cmath>

#include "backend/vulkan/vk_backend_impl.h"

namespace trit::vk {
namespace {

constexpr uint32_t kWg = 128;     // rms_norm_backward, gated_act_backward, rope
constexpr uint32_t kAttnWg = 64;  // attention_backward, attention_backward_kv

void check_rows(const DeviceTensor& t, int64_t n, int64_t cols, const char* op) {
  if (n < 0 || n > t.rows() || t.cols() != cols) {
    fail(op, ": tensor '", t.name(), "' (", t.rows(), " x ", t.cols(), ") used as ", n, " rows of ",
         cols);
  }
}

}  // namespace

void VulkanBackend::zero(DeviceTensor& t_t) {
  const TiledTensor& t = vk_tensor(t_t).tiles();
  for (size_t i = 0; i < t.pieces(); ++i) rec().fill_zero(t.range(i));
}

void VulkanBackend::copy(DeviceTensor& dst_t, const DeviceTensor& src_t, int64_t n) {
  check_rows(dst_t, n, src_t.cols(), "copy");
  check_rows(src_t, n, src_t.cols(), "copy");
  VkTensor& dst = vk_tensor(dst_t);
  const VkTensor& src = vk_tensor(src_t);
  if (n == 0 || &dst == &src) return;
  for (const auto& [a, b] : row_segments({{&src.tiles(), 0}, {&dst.tiles(), 0}}, uint64_t(n), 0)) {
    rec().copy(rows_range(src.tiles(), a, b), rows_range(dst.tiles(), a, b));
  }
}

void VulkanBackend::rms_norm_backward(DeviceTensor& dx_t, const DeviceTensor& dy_t,
                                      const DeviceTensor& x_t, const float* g,
                                      const DeviceTensor& rstd_t, int64_t n) {
  const char* op = "rms_norm_backward";
  const int64_t cols = x_t.cols();
  check_rows(dx_t, n, cols, op);
  check_rows(dy_t, n, cols, op);
  check_rows(x_t, n, cols, op);
  check_rows(rstd_t, n, 1, op);
  if (n == 0) return;
  VkTensor& dx = vk_tensor(dx_t);
  const VkTensor& dy = vk_tensor(dy_t);
  const VkTensor& x = vk_tensor(x_t);
  const VkTensor& rstd = vk_tensor(rstd_t);
  if (&dx == &dy || &dx == &x) fail(op, ": dx '", dx.name(), "' may not be dy or x");
  const BufferRange gr = norm_weight(g, cols).range(size_t(0));
  const Pipeline& p = pipeline("rms_norm_backward", 5, sizeof(RmsNormBackwardPush), {kWg}, 0b01111);
  act_scratch_.reset();
  for (const auto& [a, b] :
       row_segments({{&dx.tiles(), 0}, {&dy.tiles(), 0}, {&x.tiles(), 0}, {&rstd.tiles(), 0}},
                    uint64_t(n), max_seg_rows_)) {
    const RmsNormBackwardPush push{uint32_t(b - a), uint32_t(cols)};
    const BufferRange dxr = bind_rows(dx.tiles(), a, b, true);
    rec().dispatch(p,
                   {bind_rows(dy.tiles(), a, b, true), bind_rows(x.tiles(), a, b, true), gr,
                    bind_rows(rstd.tiles(), a, b, true), dxr},
                   push, uint32_t(b - a));
    unbind_rows(dxr, dx.tiles(), a, b);
  }
}

void VulkanBackend::rope_backward(DeviceTensor& x, int64_t n, int64_t n_heads, const HParams& hp,
                                  int64_t pos0) {
  rope_rows(x, n, n_heads, hp, pos0, /*inverse=*/true);
}

// rope() (vk_ops_attention.cpp) with the inverse flag of rope.comp.
void VulkanBackend::rope_rows(DeviceTensor& x_t, int64_t n, int64_t n_heads, const HParams& hp,
                              int64_t pos0, bool inverse) {
  const char* op = inverse ? "rope_backward" : "rope";
  VkTensor& x = vk_tensor(x_t);
  const int64_t head_dim = hp.head_dim();
  if (n < 0 || n > x.rows() || pos0 < 0 || x.cols() != n_heads * head_dim) {
    fail(op, ": tensor '", x.name(), "' (", x.rows(), " x ", x.cols(), "), ", n, " rows of ",
         n_heads, " heads of ", head_dim);
  }
  if (hp.rope_dim % 2 != 0 || hp.rope_dim > head_dim) {
    fail(op, ": rope_dim ", hp.rope_dim, " with head_dim ", head_dim);
  }
  if (n == 0 || hp.rope_dim == 0) return;
  act_scratch_.reset();
  const TiledTensor& table = rope_table(pos0 + n, hp.rope_dim, hp.rope_theta);
  const Pipeline& p = pipeline("rope", 2, sizeof(RopePush), {kWg}, 0b10);
  const uint64_t pairs = uint64_t(n_heads) * uint64_t(hp.rope_dim / 2);
  for (const auto& [a, b] : row_segments({{&x.tiles(), 0}}, uint64_t(n), max_seg_rows_)) {
    const BufferRange xr = bind_rows(x.tiles(), a, b, true);
    const uint64_t p0 = uint64_t(pos0) + a, p1 = uint64_t(pos0) + b;
    for (const PieceRun& run : table.runs(p0, p1)) {
      const TiledTensor::Piece& piece = table.piece(run.piece);
      const RopePush push{uint32_t(b - a),        uint32_t(n_heads), uint32_t(head_dim),
                          uint32_t(hp.rope_dim),  uint32_t(p0),      uint32_t(piece.row0),
                          uint32_t(piece.rows()), inverse ? 1u : 0u};
      rec().dispatch(p, {xr, table.range(run.piece)}, push, uint32_t(ceil_div(pairs, kWg)),
                     uint32_t(b - a));
    }
    unbind_rows(xr, x.tiles(), a, b);
  }
}

void VulkanBackend::gated_act_backward(DeviceTensor& dgate_t, DeviceTensor& dup_t,
                                       const DeviceTensor& dout_t, const DeviceTensor& gate_t,
                                       const DeviceTensor& up_t, int64_t n, Activation act) {
  const char* op = "gated_act_backward";
  const int64_t cols = gate_t.cols();
  for (const DeviceTensor* t :
       std::initializer_list<const DeviceTensor*>{&dgate_t, &dup_t, &dout_t, &gate_t, &up_t}) {
    check_rows(*t, n, cols, op);
  }
  if (n == 0) return;
  VkTensor& dgate = vk_tensor(dgate_t);
  VkTensor& dup = vk_tensor(dup_t);
  const VkTensor& dout = vk_tensor(dout_t);
  const VkTensor& gate = vk_tensor(gate_t);
  const VkTensor& up = vk_tensor(up_t);
  if (&dgate == &dup) fail(op, ": dgate and dup are the same tensor '", dgate.name(), "'");
  act_scratch_.reset();
  const uint32_t kind =
      uint32_t(act == Activation::Silu ? GatedActKind::Silu : GatedActKind::Relu2);
  const Pipeline& p = pipeline("gated_act_backward", 5, sizeof(GatedActPush),
                               {kWg, 0, 0, 0, 0, 0, 0, 0, 0, kind}, 0b00111);
  for (const auto& [a, b] : row_segments({{&dgate.tiles(), 0},
                                          {&dup.tiles(), 0},
                                          {&dout.tiles(), 0},
                                          {&gate.tiles(), 0},
                                          {&up.tiles(), 0}},
                                         uint64_t(n), max_seg_rows_)) {
    const uint64_t count = (b - a) * uint64_t(cols);
    const BufferRange dgr = bind_rows(dgate.tiles(), a, b, true);
    const BufferRange dur = bind_rows(dup.tiles(), a, b, true);
    dispatch_flat(p,
                  {bind_rows(gate.tiles(), a, b, true), bind_rows(up.tiles(), a, b, true),
                   bind_rows(dout.tiles(), a, b, true), dgr, dur},
                  GatedActPush{uint32_t(count)}, ceil_div(count, kWg));
    unbind_rows(dgr, dgate.tiles(), a, b);
    unbind_rows(dur, dup.tiles(), a, b);
  }
}

void VulkanBackend::attention_backward(DeviceTensor& dq_t, DeviceTensor& dk_t, DeviceTensor& dv_t,
                                       const DeviceTensor& dout_t, const DeviceTensor& q_t,
                                       const DeviceTensor& k_t, const DeviceTensor& v_t, int64_t n,
                                       const HParams& hp) {
  const char* op = "attention_backward";
  const int64_t hd = hp.head_dim(), n_head = hp.n_head, n_kv = hp.n_head_kv;
  if (n_kv <= 0 || n_head % n_kv != 0) {
    fail(op, ": ", n_head, " query heads are not a multiple of ", n_kv, " KV heads");
  }
  const int64_t q_cols = n_head * hd, kv_cols = hp.n_embd_kv();
  for (const DeviceTensor* t : std::initializer_list<const DeviceTensor*>{&dq_t, &dout_t, &q_t})
    check_rows(*t, n, q_cols, op);
  for (const DeviceTensor* t : std::initializer_list<const DeviceTensor*>{&dk_t, &dv_t, &k_t, &v_t})
    check_rows(*t, n, kv_cols, op);
  if (n == 0) return;
  VkTensor& dq = vk_tensor(dq_t);
  VkTensor& dk = vk_tensor(dk_t);
  VkTensor& dv = vk_tensor(dv_t);
  const VkTensor& dout = vk_tensor(dout_t);
  const VkTensor& q = vk_tensor(q_t);
  const VkTensor& k = vk_tensor(k_t);
  const VkTensor& v = vk_tensor(v_t);
  const std::vector<uint32_t> spec = {kAttnWg, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, uint32_t(hd)};
  const Pipeline& pq =
      pipeline("attention_backward", 6, sizeof(AttentionBackwardPush), spec, 0b001111);
  const Pipeline& pkv =
      pipeline("attention_backward_kv", 7, sizeof(AttentionBackwardPush), spec, 0b0011111);
  const float scale = 1.0f / std::sqrt(float(hd));
  const auto q_segs = row_segments({{&q.tiles(), 0}, {&dout.tiles(), 0}, {&dq.tiles(), 0}},
                                   uint64_t(n), max_seg_rows_);
  const auto kv_segs =
      row_segments({{&k.tiles(), 0}, {&v.tiles(), 0}, {&dk.tiles(), 0}, {&dv.tiles(), 0}},
                   uint64_t(n), max_seg_rows_);
  auto push = [&](uint64_t qa, uint64_t qb, uint64_t ka, uint64_t kb, uint32_t stage, uint32_t g) {
    return AttentionBackwardPush{uint32_t(qb - qa),
                                 uint32_t(qa),
                                 uint32_t(n_head),
                                 uint32_t(n_kv),
                                 uint32_t(hd),
                                 uint32_t(kv_cols),
                                 uint32_t(ka),
                                 uint32_t(kb - ka),
                                 stage,
                                 ka == 0 ? 1u : 0u,
                                 g,
                                 scale};
  };
  attn_scratch_.reset();
  act_scratch_.reset();
  // Bindable ranges of every segment (staged copies where a narrow row breaks the alignment).
  struct QueryRows {
    BufferRange q, dout, dq;
  };
  struct KeyRows {
    BufferRange k, v, dk, dv;
  };
  std::vector<QueryRows> qs;
  std::vector<KeyRows> kvs;
  for (const auto& [qa, qb] : q_segs) {
    qs.push_back({bind_rows(q.tiles(), qa, qb, true), bind_rows(dout.tiles(), qa, qb, true),
                  bind_rows(dq.tiles(), qa, qb, true)});
  }
  for (const auto& [ka, kb] : kv_segs) {
    kvs.push_back({bind_rows(k.tiles(), ka, kb, true), bind_rows(v.tiles(), ka, kb, true),
                   bind_rows(dk.tiles(), ka, kb, true), bind_rows(dv.tiles(), ka, kb, true)});
  }
  std::vector<BufferRange> stats;  // per query segment: (rows, n_head, 3) [m, l|inv, E|D]
  for (size_t s = 0; s < q_segs.size(); ++s) {
    const auto [qa, qb] = q_segs[s];
    stats.push_back(attn_scratch_.alloc((qb - qa) * uint64_t(n_head) * 3 * 4));
    for (uint32_t stage = 0; stage < 3; ++stage) {
      for (size_t c = 0; c < kv_segs.size(); ++c) {
        const auto [ka, kb] = kv_segs[c];
        if (ka >= qb) break;  // keys after the segment's last query
        rec().dispatch(pq, {qs[s].q, qs[s].dout, kvs[c].k, kvs[c].v, stats[s], qs[s].dq},
                       push(qa, qb, ka, kb, stage, 0), uint32_t(n_head), uint32_t(qb - qa));
      }
    }
    unbind_rows(qs[s].dq, dq.tiles(), qa, qb);
  }
  // dk, dv: query heads of a group in order, then query segments in order (the CPU's order).
  for (int64_t g = 0; g < n_head / n_kv; ++g) {
    for (size_t s = 0; s < q_segs.size(); ++s) {
      const auto [qa, qb] = q_segs[s];
      for (size_t c = 0; c < kv_segs.size(); ++c) {
        const auto [ka, kb] = kv_segs[c];
        if (ka >= qb) break;
        rec().dispatch(pkv,
                       {qs[s].q, qs[s].dout, kvs[c].k, kvs[c].v, stats[s], kvs[c].dk, kvs[c].dv},
                       push(qa, qb, ka, kb, 0, uint32_t(g)), uint32_t(kb - ka), uint32_t(n_kv));
      }
    }
  }
  for (size_t c = 0; c < kv_segs.size(); ++c) {
    unbind_rows(kvs[c].dk, dk.tiles(), kv_segs[c].first, kv_segs[c].second);
    unbind_rows(kvs[c].dv, dv.tiles(), kv_segs[c].first, kv_segs[c].second);
  }
}

}  // namespace trit::vk
