// The Vulkan backend's decoding fusions. A decoding step runs hundreds of tiny dispatches, each
// bound by latency rather than work, so ops over a few tokens are held back and merged with the
// op that consumes them:
//   add + rms_norm of the sum         -> add_rms_norm (the residual stream written on the way)
//   rms_norm + bitlinear quantiser    -> rms_norm_quant / add_rms_norm_quant (linear())
//   q, k, v (or gate, up) bitlinears  -> one matvec_ternary over up to four weight pieces
//   rms_norm + bitlinears             -> matvec_norm_ternary: every workgroup normalises and
//                                        quantises the input row itself (no norm dispatch)
//   gate/up bitlinears + gated_act    -> matvec_ternary's gated mode
//   bitlinear + add of its output     -> matvec_ternary's residual mode (o and down)
//   rope on q and k + store_kv        -> rope_kv
// Every fused kernel computes each value with the expression of the ops it replaces, so the
// results are the same bits (the Vulkan op and model tests compare them with the fusions off,
// TRIT_VK_DECODE_FUSION=0).
#include <algorithm>

#include "backend/vulkan/vk_backend_impl.h"
#include "model/model.h"

namespace trit::vk {
namespace {

constexpr uint32_t kWg = 128;                   // matvec_ternary, rope_kv
constexpr uint32_t kMaxSegments = 4;            // weight pieces per matvec_ternary dispatch
constexpr uint32_t kMatvecReadOnly = 0b111111;  // w0..w3, q, qscale
constexpr uint32_t kMatvecNormReadOnly = 0b1100000111111;  // and nx, ng

}  // namespace

bool VulkanBackend::pending_uses(const VkTensor& t) const {
  const PendingLinear& l = pending_linear_;
  if (l.x) {
    if (l.x == &t || l.norm.x == &t || l.norm.residual == &t) return true;
    for (size_t i = 0; i < l.n_ops; ++i) {
      if (l.ops[i].y == &t) return true;
    }
  }
  return pending_add_.y == &t || pending_add_.x == &t || pending_norm_.y == &t ||
         pending_norm_.x == &t || pending_norm_.residual == &t;
}

void VulkanBackend::settle() {
  if (pending_add_.y) {
    const PendingAdd a = pending_add_;
    pending_add_ = {};
    record_add(*a.y, *a.x, a.n);
  }
  if (pending_norm_.y) {
    const PendingNorm p = pending_norm_;
    pending_norm_ = {};
    record_rms_norm(*p.y, *p.x, p.g, p.n, p.eps, nullptr, p.residual);
  }
  if (pending_linear_.x) {
    const PendingLinear l = pending_linear_;
    pending_linear_ = {};
    record_decode_linear(l, nullptr, Activation::Relu2, nullptr);
  }
}

bool VulkanBackend::decode_matvec_applies(std::span<const LinearOp> ops, const VkTensor& x,
                                          int64_t n, bool act_quant) {
  if (!fuse_decode_ || n != 1 || !act_quant || ops.empty() || ops.size() > 3 ||
      !one_piece(x.tiles(), 0, 1) || x.cols() % 256 != 0) {
    return false;
  }
  for (const LinearOp& op : ops) {
    const LinearWeight& w = *op.w;
    if (w.is_float() || (op.lora && !op.lora->empty())) return false;
    if (!one_piece(vk_tensor(*op.y).tiles(), 0, 1)) return false;
    if (ternary_weight(w).d == 0.0f) return false;
  }
  return true;
}

bool VulkanBackend::gate_up_pair(std::span<const LinearOp> ops, const VkTensor& x) {
  if (ops.size() != 2 || ops[0].y == ops[1].y || ops[0].y == &x || ops[1].y == &x) return false;
  const TiledTensor& g = ternary_weight(*ops[0].w).codes;
  const TiledTensor& u = ternary_weight(*ops[1].w).codes;
  if (ops[0].w->m.n_out != ops[1].w->m.n_out || g.pieces() != u.pieces()) return false;
  for (size_t i = 0; i < g.pieces(); ++i) {
    if (g.piece(i).row0 != u.piece(i).row0 || g.piece(i).rows() != u.piece(i).rows()) return false;
  }
  return true;
}

void VulkanBackend::quantize_rows(const VkTensor& x, uint64_t a, uint64_t b,
                                  const PendingNorm& norm, BufferRange q, BufferRange qs) {
  const uint64_t rows = b - a;
  const uint32_t n_in = uint32_t(x.cols());
  const BufferRange xr = rows_range(x.tiles(), a, b);
  if (norm.y) {
    const BufferRange gr = norm_weight(norm.g, n_in).range(size_t(0));
    const RmsNormPush push{uint32_t(rows), n_in, norm.eps, 0u};
    const BufferRange nx = rows_range(norm.x->tiles(), a, b);
    if (norm.residual) {
      const Pipeline& p =
          pipeline("add_rms_norm_quant", 7, sizeof(RmsNormPush), rms_norm_spec(n_in), 0b1001010);
      rec().dispatch(p, {nx, gr, xr, gr, q, qs, rows_range(norm.residual->tiles(), a, b)}, push,
                     uint32_t(rows));
    } else {
      const Pipeline& p =
          pipeline("rms_norm_quant", 6, sizeof(RmsNormPush), rms_norm_spec(n_in), 0b001011);
      rec().dispatch(p, {nx, gr, xr, gr, q, qs}, push, uint32_t(rows));
    }
  } else {
    const Pipeline& p = pipeline("quantize_acts", 3, sizeof(QuantizeActsPush), {128}, 0b001);
    rec().dispatch(p, {xr, q, qs}, QuantizeActsPush{uint32_t(rows), n_in}, uint32_t(rows));
  }
}

void VulkanBackend::record_decode_linear(const PendingLinear& l, VkTensor* gated_out,
                                         Activation act, VkTensor* add_to) {
  const VkTensor& x = *l.x;
  const PendingNorm& norm = l.norm;
  const uint64_t n_in = uint64_t(x.cols());
  // The norm goes into the matvec unless it adds a residual (x written) or works in place
  // (workgroup 0 writes its output while the others read its input).
  bool fold_norm = norm.y && !norm.residual && norm.x != norm.y && n_in <= norm_vec_width() &&
                   gated_out != norm.x && add_to != norm.x;
  for (size_t k = 0; k < l.n_ops; ++k) fold_norm = fold_norm && l.ops[k].y != norm.x;
  BufferRange q, qs;
  if (!fold_norm) {
    decode_scratch_.reset();
    q = decode_scratch_.alloc(n_in, 16);  // read as uvec4
    qs = decode_scratch_.alloc(4);
    quantize_rows(x, 0, 1, norm, q, qs);
  }
  const bool dot = ctx_->caps().enabled.integer_dot_product;
  const uint32_t kind =
      uint32_t(act == Activation::Silu ? GatedActKind::Silu : GatedActKind::Relu2);
  const uint32_t wg = fold_norm ? norm_wg_ : kWg;  // with the norm: rms_norm's workgroup
  const uint32_t rows_per_group = std::max<uint32_t>(1, wg / subgroup_size_);
  const std::vector<uint32_t> spec = {wg, 0, rows_per_group, 0, 0, 0, 0, 0, 0, kind};
  const Pipeline& p = fold_norm ? pipeline(dot ? "matvec_norm_ternary_dot" : "matvec_norm_ternary",
                                           14, sizeof(MatvecTernaryPush), spec, kMatvecNormReadOnly)
                                : pipeline(dot ? "matvec_ternary_dot" : "matvec_ternary", 11,
                                           sizeof(MatvecTernaryPush), spec, kMatvecReadOnly);
  BufferRange nx, ng, nh;
  if (fold_norm) {
    nx = rows_range(norm.x->tiles(), 0, 1);
    ng = norm_weight(norm.g, int64_t(n_in)).range(size_t(0));
    nh = rows_range(x.tiles(), 0, 1);  // the norm's output, written by workgroup 0
    q = nx;                            // unread
    qs = nx;
  }
  // One segment per weight piece; gated: gate piece i and up piece i, two at a time.
  struct Segment {
    BufferRange w, y;
    uint32_t rows = 0, r0 = 0;
    float d = 0, out_scale = 0;
  };
  std::vector<Segment> segs;
  for (size_t k = 0; k < l.n_ops; ++k) {
    const LinearOp& op = l.ops[k];
    const TernaryWeight& tw = ternary_weight(*op.w);
    const BufferRange y = rows_range(vk_tensor(*op.y).tiles(), 0, 1);
    for (size_t i = 0; i < tw.codes.pieces(); ++i) {
      const TiledTensor::Piece& piece = tw.codes.piece(i);
      segs.push_back({tw.codes.range(i), y, uint32_t(piece.rows()), uint32_t(piece.row0), tw.d,
                      op.w->out_scale});
    }
  }
  const size_t per_pieces = gated_out ? segs.size() / 2 : 0;  // gate pieces, then up pieces
  const BufferRange out = gated_out ? rows_range(gated_out->tiles(), 0, 1) : BufferRange();
  const BufferRange xo = add_to ? rows_range(add_to->tiles(), 0, 1) : segs[0].y;
  const size_t batches = gated_out ? per_pieces : ceil_div(segs.size(), kMaxSegments);
  for (size_t bi = 0; bi < batches; ++bi) {
    Segment batch[kMaxSegments];
    uint32_t count = 0;
    if (gated_out) {
      batch[count++] = segs[bi];
      batch[count++] = segs[per_pieces + bi];
    } else {
      for (size_t i = bi * kMaxSegments; i < std::min(segs.size(), (bi + 1) * kMaxSegments); ++i) {
        batch[count++] = segs[i];
      }
    }
    MatvecTernaryPush push{};
    push.n_in = uint32_t(n_in);
    push.segments = count;
    push.gated = gated_out ? 1u : 0u;
    push.add = add_to ? 1u : 0u;
    push.eps = norm.eps;
    uint32_t groups = 0;
    for (uint32_t s = 0; s < kMaxSegments; ++s) {
      const Segment& g = batch[s < count ? s : 0];
      push.rows[s] = s < count ? g.rows : 0;
      push.r0[s] = g.r0;
      push.group0[s] = groups;
      push.d[s] = g.d;
      push.out_scale[s] = g.out_scale;
      if (s < count && !(gated_out && s == 1)) {
        groups += uint32_t(ceil_div(g.rows, rows_per_group));
      }
    }
    auto w = [&](uint32_t s) { return batch[s < count ? s : 0].w; };
    auto y = [&](uint32_t s) { return batch[s < count ? s : 0].y; };
    const BufferRange y2 = gated_out ? out : y(2);
    if (fold_norm) {
      dispatch_rows(p, {w(0), w(1), w(2), w(3), q, qs, y(0), y(1), y2, y(3), xo, nx, ng, nh}, push,
                    groups, 1);
    } else {
      dispatch_rows(p, {w(0), w(1), w(2), w(3), q, qs, y(0), y(1), y2, y(3), xo}, push, groups, 1);
    }
  }
}

void VulkanBackend::rope_store_kv(DeviceTensor& q_t, DeviceTensor& k_t, const DeviceTensor& v_t,
                                  DeviceTensor& kc_t, DeviceTensor& vc_t, int64_t n, int64_t pos0,
                                  const HParams& hp) {
  VkTensor& q = vk_tensor(q_t);
  const VkTensor& k = vk_tensor(k_t);
  const VkTensor& v = vk_tensor(v_t);
  VkTensor& kc = vk_tensor(kc_t);
  VkTensor& vc = vk_tensor(vc_t);
  const int64_t head_dim = hp.head_dim();
  const bool fits = fuse_decode_ && n >= 1 && uint64_t(n) <= mm_.max_matvec_tokens && pos0 >= 0 &&
                    hp.rope_dim > 0 && hp.rope_dim % 2 == 0 && hp.rope_dim <= head_dim &&
                    q.cols() == hp.n_head * head_dim && k.cols() == hp.n_embd_kv() &&
                    v.cols() == k.cols() && kc.cols() == k.cols() && vc.cols() == k.cols() &&
                    n <= q.rows() && n <= k.rows() && n <= v.rows() && pos0 + n <= kc.rows() &&
                    pos0 + n <= vc.rows() && one_piece(q.tiles(), 0, uint64_t(n)) &&
                    one_piece(k.tiles(), 0, uint64_t(n)) && one_piece(v.tiles(), 0, uint64_t(n)) &&
                    one_piece(kc.tiles(), uint64_t(pos0), uint64_t(n)) &&
                    one_piece(vc.tiles(), uint64_t(pos0), uint64_t(n));
  if (!fits) {
    Backend::rope_store_kv(q_t, k_t, v_t, kc_t, vc_t, n, pos0, hp);
    return;
  }
  const TiledTensor& table = rope_table(pos0 + n, hp.rope_dim, hp.rope_theta);
  const auto runs = table.runs(uint64_t(pos0), uint64_t(pos0 + n));
  if (runs.size() != 1) {
    Backend::rope_store_kv(q_t, k_t, v_t, kc_t, vc_t, n, pos0, hp);
    return;
  }
  const TiledTensor::Piece& piece = table.piece(runs[0].piece);
  const RopeKvPush push{uint32_t(n),          uint32_t(hp.n_head),   uint32_t(hp.n_head_kv),
                        uint32_t(head_dim),   uint32_t(hp.rope_dim), uint32_t(pos0),
                        uint32_t(piece.row0), uint32_t(piece.rows())};
  const Pipeline& p = pipeline("rope_kv", 6, sizeof(RopeKvPush), {kWg}, 0b100110);
  const uint64_t work = uint64_t(hp.n_head) * uint64_t(hp.rope_dim / 2) + 2 * uint64_t(k.cols());
  const uint64_t end = uint64_t(pos0 + n);
  rec().dispatch(
      p,
      {rows_range(q.tiles(), 0, uint64_t(n)), rows_range(k.tiles(), 0, uint64_t(n)),
       rows_range(v.tiles(), 0, uint64_t(n)), rows_range(kc.tiles(), uint64_t(pos0), end),
       rows_range(vc.tiles(), uint64_t(pos0), end), table.range(runs[0].piece)},
      push, uint32_t(ceil_div(work, kWg)), uint32_t(n));
}

}  // namespace trit::vk
