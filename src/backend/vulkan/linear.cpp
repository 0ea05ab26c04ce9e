// The Vulkan backend's linear family: the bitlinear over T2 codes (int8 activations through
// matmul_ternary, its integer dot product and cooperative-matrix forms, or float activations),
// merged float layers, the LoRA branches forward and backward, the gradient through a frozen
// layer, and norm_linear with its fused decoding kernels.
//
// A linear op walks the row segments of x and every output (so that each stays within one
// piece), quantises the segment of x once into scratch, and dispatches every weight piece (a
// range of output columns) of every layer against it.
//
// norm_linear's fused forms (every fused kernel computes each value with the expression of the
// ops it replaces, so the results are the same bits; the tests compare them with the fusions
// off, TRIT_VK_DECODE_FUSION=0):
//   - a decoding step (up to max_fused_tokens tokens, int8 activations, up to three ternary
//     layers of one scale each, no LoRA branches): one matvec_ternary dispatch over up to four
//     weight pieces, which reads each code word once for every token; a gated epilogue (gate
//     and up) or a residual one (o, down) joins the same dispatch. With one token every
//     workgroup also normalises and quantises the input row itself (matvec_norm_ternary);
//     several tokens' norm and quantiser are one rms_norm_quant dispatch before it;
//   - more tokens with int8 activations (a batch of decoding sequences, a prompt): the norm
//     writes its output and the quantised activations in one dispatch (rms_norm_quant).
#include <algorithm>
#include <cmath>

#include "backend/vulkan/vk_backend.h"
#include "core/random.h"

namespace trit::engine::vk {
namespace {

constexpr uint32_t kReadAll3 = 0b111;           // bindings 0..2 read-only
constexpr uint32_t kReadAll4 = 0b1111;          // bindings 0..3 read-only
constexpr uint32_t kLinearWg = 128;             // matvec_ternary, dropout
constexpr uint32_t kMaxSegments = 4;            // weight pieces per matvec_ternary dispatch
constexpr uint32_t kMatvecReadOnly = 0b111111;  // w0..w3, q, qscale
constexpr uint32_t kMatvecNormReadOnly = 0b1100000111111;  // and nx, ng

// Whether tiles of tile_m rows x tile_n tokens would leave a large device idle
// (Tuning::small_tile_groups): the int8 products then take smaller tiles.
bool small_grid(const Tuning& c, uint64_t rows, uint64_t tokens, uint32_t tile_m, uint32_t tile_n) {
  return ceil_div(rows, tile_m) * ceil_div(tokens, tile_n) < c.small_tile_groups;
}

// The int8 ternary product of `rows` outputs: matmul_float's plan, with 32 x 16 tiles on a
// small grid.
MatmulPlan plan_ternary_int8(const Tuning& c, uint64_t tokens, uint64_t rows) {
  if (tokens > c.max_matvec_tokens && small_grid(c, rows, tokens, c.tile_m, c.tile_n)) {
    Tuning small = c;
    small.tile_m = 32;
    small.tile_n = 16;
    small.thread_m = 2;
    small.thread_n = 2;
    return plan_matmul(small, tokens, FloatWeightType::F32);
  }
  return plan_matmul(c, tokens, FloatWeightType::F32);
}

// The cooperative-matrix tiles for `rows` outputs: the small ones on a small grid.
CoopTiles coop_tiles(const CoopTiles& c, const Tuning& t, uint64_t tokens, uint64_t rows) {
  return small_grid(t, rows, tokens, c.tile_m, c.tile_n) ? c.small() : c;
}

// matmul_ternary_f32 (float activations) always takes matvec-shaped workgroups.
MatmulPlan plan_ternary_f32(const Tuning& c, uint64_t tokens) {
  MatmulPlan p;
  const uint32_t mv_tokens = tokens == 1 ? 1 : 4;
  const uint32_t mv_rows = matvec_rows(c, mv_tokens);
  p.spec = {c.mv_wg, 0, mv_rows, mv_tokens};
  p.rows_per_group = mv_rows;
  p.tokens_per_group = mv_tokens;
  return p;
}

}  // namespace

// Quantises rows [a, b) of x into q, qs: with a norm, x is that norm's output, written on the
// way (rms_norm_quant).
void VulkanBackend::quantize_rows(const VkTensor& x, uint64_t a, uint64_t b, const NormOp* norm,
                                  BufferRange q, BufferRange qs, uint64_t q_words) {
  const uint64_t rows = b - a;
  const uint32_t n_in = uint32_t(x.cols());
  if (q_words == 0) q_words = n_in / 4;
  if (norm && q_words != n_in / 4) fail("quantize_rows: a fused norm writes unpadded rows");
  const BufferRange xr = rows_range(x.tiles(), a, b);
  if (norm) {
    const BufferRange gr = weights_.norm(norm->g, n_in).range(size_t(0));
    const RmsNormPush push{uint32_t(rows), n_in, norm->eps, 0u};
    const BufferRange nx = rows_range(vk_tensor(*norm->x).tiles(), a, b);
    const Pipeline& p = rec_.pipeline("rms_norm_quant", 6, sizeof(RmsNormPush),
                                      tune_.rms_norm_spec(n_in), 0b001011);
    rec_.seq().dispatch(p, {nx, gr, xr, gr, q, qs}, push, uint32_t(rows));
  } else {
    const Pipeline& p = rec_.pipeline("quantize_acts", 3, sizeof(QuantizeActsPush), {128}, 0b001);
    rec_.seq().dispatch(p, {xr, q, qs}, QuantizeActsPush{uint32_t(rows), n_in, uint32_t(q_words)},
                        uint32_t(rows));
  }
}

void VulkanBackend::linear(std::span<const LinearOp> ops, const DeviceTensor& x, int64_t n,
                           const LinearMode& mode) {
  if (decode_matvec_applies(nullptr, ops, x, n, mode, LinearEpilogue::none())) {
    record_decode_linear(nullptr, ops, vk_tensor(x), n, LinearEpilogue::none());
    return;
  }
  linear_rows(ops, vk_tensor(x), n, mode, nullptr);
}

void VulkanBackend::linear_rows(std::span<const LinearOp> ops, const VkTensor& x, int64_t n,
                                const LinearMode& mode, const NormOp* norm) {
  const int64_t n_in = x.cols();
  if (n <= 0 || ops.empty()) return;
  if (n > x.rows()) fail("linear: ", n, " rows of tensor '", x.name(), "' with ", x.rows());
  const bool act_quant = mode.act_quant;
  struct Job {
    const LinearOp* op;
    VkTensor* y;
    const TernaryWeight* t = nullptr;
    FloatRows f;
  };
  std::vector<Job> jobs;
  std::vector<RowsOf> touched = {{&x.tiles(), 0}};
  if (norm) touched.push_back({&vk_tensor(*norm->x).tiles(), 0});
  bool quantise = false;
  uint64_t width = uint64_t(n_in);  // of the ternary rows on the device (TernaryWeight::n_in)
  bool any_ternary = false;
  uint32_t ternary_jobs = 0;  // each holds its own T2 slot (WeightCache::t2)
  for (const LinearOp& op : ops) {
    const LinearWeight& w = *op.w;
    Job j{&op, &vk_tensor(*op.y), nullptr, {}};
    if (w.m.n_in != n_in || j.y->cols() != w.m.n_out || j.y->rows() < n) {
      fail("linear ", w.name, ": weight ", w.m.n_in, " -> ", w.m.n_out, " with input '", x.name(),
           "' (", x.rows(), " x ", n_in, "), output '", j.y->name(), "' (", j.y->rows(), " x ",
           j.y->cols(), "), ", n, " rows");
    }
    if (!op.saved.empty() && op.saved.size() != op.lora.size()) {
      fail("linear ", w.name, ": ", op.saved.size(), " saves for ", op.lora.size(), " branches");
    }
    if (w.is_float()) {
      j.f = weights_.float_matrix(w.f, w.name);
    } else {
      j.t = &weights_.t2(w, ternary_jobs++);
      if (any_ternary && j.t->n_in != width) {
        fail("linear ", w.name, ": device rows of ", j.t->n_in, " weights beside rows of ", width,
             " on one input");
      }
      any_ternary = true;
      width = j.t->n_in;
      quantise |= act_quant;
    }
    touched.push_back({&j.y->tiles(), 0});
    jobs.push_back(j);
  }
  if (norm && !quantise) fail("linear: a fused norm needs int8 activations of a ternary layer");
  // Rows padded on the device (a width that is not a multiple of 256) read the input padded
  // with zeros: the same sums, and the same absmax for the quantiser.
  const bool padded = width != uint64_t(n_in);
  if (padded && norm) fail("linear: a fused norm with rows padded to ", width);
  const bool dot = ctx_->caps().enabled.integer_dot_product;
  const std::optional<CoopTiles>& coop = ctx_->caps().enabled.coop_tiles;
  scratch_.act.reset();
  // Padded float rows take more than x's rows: segments within the binding limit for them.
  uint64_t seg_rows = rec_.max_seg_rows();
  if (padded && !act_quant) {
    const uint64_t fit = std::max<uint64_t>(1, ctx_->binding_limit() / (width * 4));
    seg_rows = seg_rows == 0 ? fit : std::min(seg_rows, fit);
  }
  for (const auto& [a, b] : row_segments(touched, uint64_t(n), seg_rows)) {
    const uint64_t rows = b - a;
    BufferRange q, qs;
    if (quantise) {
      q = scratch_.act.alloc(rows * width);
      qs = scratch_.act.alloc(rows * 4);
      quantize_rows(x, a, b, norm, q, qs, width / 4);  // with the norm: writes x first
    }
    // Rows of a width that is not a multiple of 4 floats may start off the device's binding
    // alignment inside a piece: bind_rows passes those through aligned scratch.
    const BufferRange xr = scratch_.bind_rows(rec_, x.tiles(), a, b, true);
    // Float activations of padded rows: x copied row by row into zeroed rows of `width`.
    BufferRange xpad = xr;
    if (padded && !act_quant) {
      const uint64_t in_bytes = uint64_t(n_in) * 4, out_bytes = width * 4;
      xpad = scratch_.act.alloc(rows * out_bytes);
      rec_.seq().fill_zero(xpad);
      for (uint64_t r = 0; r < rows; ++r) {
        rec_.seq().copy(BufferRange(*xr.buffer, xr.offset + r * in_bytes, in_bytes),
                        BufferRange(*xpad.buffer, xpad.offset + r * out_bytes, in_bytes));
      }
    }
    for (const Job& j : jobs) {
      const LinearWeight& w = *j.op->w;
      // Every output column is written: no need to load y.
      const BufferRange yr = scratch_.bind_rows(rec_, j.y->tiles(), a, b, false);
      if (j.t == nullptr) {  // a merged layer: y = (W x) * out_scale, as the CPU's float_matmul
        matmul_float(kit_, j.f, xr, yr, rows, uint64_t(n), uint64_t(w.m.n_out), w.out_scale, 0.0f);
      } else {
        const TernaryWeight& tw = *j.t;
        MatmulPlan plan = act_quant ? plan_ternary_int8(tune_, uint64_t(n), uint64_t(w.m.n_out))
                                    : plan_ternary_f32(tune_, uint64_t(n));
        const Pipeline* p;
        // Cooperative matrices take the tiled int8 product of a uniform scale (block scales
        // need a float sum per block: the plain path keeps those).
        if (act_quant && coop && tw.d != 0.0f && uint64_t(n) > tune_.max_matvec_tokens) {
          const CoopTiles tiles = coop_tiles(*coop, tune_, uint64_t(n), uint64_t(w.m.n_out));
          plan.rows_per_group = tiles.tile_m;
          plan.tokens_per_group = tiles.tile_n;
          p = &rec_.pipeline(tiles.shader(), 5, sizeof(MatmulTernaryPush), tiles.spec(), kReadAll4);
        } else if (act_quant) {
          std::vector<uint32_t> spec(plan.spec.begin(), plan.spec.begin() + 8);
          p = &rec_.pipeline(dot ? "matmul_ternary_dot" : "matmul_ternary", 5,
                             sizeof(MatmulTernaryPush), spec, kReadAll4);
        } else {
          p = &rec_.pipeline("matmul_ternary_f32", 4, sizeof(MatmulTernaryPush), plan.spec,
                             kReadAll3);
        }
        for (size_t i = 0; i < tw.codes.pieces(); ++i) {
          const TiledTensor::Piece& piece = tw.codes.piece(i);
          const BufferRange codes = tw.codes.range(i);
          const BufferRange dblk = tw.d == 0.0f ? tw.block_scales().range(i) : codes;
          const MatmulTernaryPush push{uint32_t(width),      uint32_t(piece.rows()),
                                       uint32_t(piece.row0), uint32_t(rows),
                                       uint32_t(w.m.n_out),  tw.d,
                                       w.out_scale};
          const uint64_t gx = ceil_div(piece.rows(), plan.rows_per_group);
          const uint64_t gy = ceil_div(rows, plan.tokens_per_group);
          if (act_quant) {
            rec_.dispatch_rows(*p, {codes, dblk, q, qs, yr}, push, gx, gy);
          } else {
            rec_.dispatch_rows(*p, {codes, dblk, xpad, yr}, push, gx, gy);
          }
        }
      }
      scratch_.unbind_rows(rec_, yr, j.y->tiles(), a, b);
    }
  }
  // The LoRA branches see the un-quantised input; `.scale` does not multiply them.
  for (const Job& j : jobs) {
    for (size_t b = 0; b < j.op->lora.size(); ++b) {
      lora_forward(*j.y, x, n, j.op->lora[b], j.op->saved.empty() ? LoraSaved{} : j.op->saved[b],
                   mode.dropout, mode.key);
    }
  }
}

void VulkanBackend::lora_forward(DeviceTensor& y_t, const DeviceTensor& x_t, int64_t n,
                                 const LoraBranch& br, const LoraSaved& saved, float p,
                                 uint64_t key) {
  const char* op = "lora_forward";
  const int64_t n_in = x_t.cols(), n_out = y_t.cols();
  const int64_t rank = check_lora_branch(br, n_in, n_out, op, false);
  check_rows_of(x_t, n, n_in, op);
  check_rows_of(y_t, n, n_out, op);
  if (saved.xd) check_rows_of(*saved.xd, n, n_in, op);
  if (saved.ax) check_rows_of(*saved.ax, n, rank, op);
  if (!(p >= 0.0f && p < 1.0f)) fail(op, ": dropout probability ", p, " outside [0, 1)");
  // A branch of some rows of a batch (generation): the rows as a pass of their own.
  const int64_t row0 = br.row0, n_rows = br.rows < 0 ? n - br.row0 : br.rows;
  if (row0 < 0 || n_rows < 0 || row0 + n_rows > n) {
    fail(op, ": rows [", row0, ", ", row0 + n_rows, ") of a pass of ", n);
  }
  if (n_rows != n && (p > 0 || saved.xd || saved.ax)) {
    fail(op, ": a branch of some rows of a batch cannot train");
  }
  if (n_rows == 0) return;
  VkTensor& y = vk_tensor(y_t);
  const VkTensor& x = vk_tensor(x_t);
  // Generation (nothing saved, no dropout): matmul_float's products, which take the matvec
  // path for a few tokens. Training: gemm_f32's, bit-exact with the CPU.
  if (!saved.xd && !saved.ax && p == 0) {
    const uint64_t r0 = uint64_t(row0);
    scratch_.act.reset();
    for (const auto& [a, b] : row_segments({{&x.tiles(), r0}, {&y.tiles(), r0}}, uint64_t(n_rows),
                                           rec_.max_seg_rows())) {
      const BufferRange xr = scratch_.bind_rows(rec_, x.tiles(), r0 + a, r0 + b, true);
      const BufferRange yr = scratch_.bind_rows(rec_, y.tiles(), r0 + a, r0 + b, true);
      lora_apply_rows(kit_, br, xr, yr, b - a, uint64_t(n_rows), uint64_t(n_out));
      scratch_.unbind_rows(rec_, yr, y.tiles(), r0 + a, r0 + b);
    }
    return;
  }
  std::vector<RowsOf> touched = {{&x.tiles(), 0}, {&y.tiles(), 0}};
  VkTensor* xd = saved.xd && saved.xd != &x_t ? &vk_tensor(*saved.xd) : nullptr;
  VkTensor* ax = saved.ax ? &vk_tensor(*saved.ax) : nullptr;
  if (xd) touched.push_back({&xd->tiles(), 0});
  if (ax) touched.push_back({&ax->tiles(), 0});
  // u < p exactly when the 53-bit value is below ceil(p * 2^53) (cpu/ops.h's lora_dropout).
  const uint64_t thr = uint64_t(std::ceil(double(p) * 0x1.0p53));
  const uint64_t base = splitmix64(key ^ splitmix64(br.salt));
  const Pipeline& drop = rec_.pipeline("dropout", 3, sizeof(DropoutPush), {kLinearWg}, 0b011);
  scratch_.act.reset();
  for (const auto& [a, b] : row_segments(touched, uint64_t(n), rec_.max_seg_rows())) {
    const uint64_t rows = b - a;
    const BufferRange xr = scratch_.bind_rows(rec_, x.tiles(), a, b, true);
    const BufferRange xdr = xd ? scratch_.bind_rows(rec_, xd->tiles(), a, b, false)
                               : (p > 0 ? scratch_.act.alloc(rows * uint64_t(n_in) * 4) : xr);
    const BufferRange axr = ax ? scratch_.bind_rows(rec_, ax->tiles(), a, b, false)
                               : scratch_.act.alloc(rows * uint64_t(rank) * 4);
    const BufferRange yr = scratch_.bind_rows(rec_, y.tiles(), a, b, true);
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
      rec_.dispatch_flat(drop, {xr, xr, xdr}, push, ceil_div(count, kLinearWg));
    } else if (xd) {
      rec_.seq().copy(xr, xdr);
    }
    lora_forward_rows(kit_, br, xdr, axr, yr, rows, uint64_t(n_out));
    if (xd) scratch_.unbind_rows(rec_, xdr, xd->tiles(), a, b);
    if (ax) scratch_.unbind_rows(rec_, axr, ax->tiles(), a, b);
    scratch_.unbind_rows(rec_, yr, y.tiles(), a, b);
  }
}

void VulkanBackend::lora_backward(DeviceTensor& dx_t, const DeviceTensor& dy_t,
                                  const LoraSaved& saved, int64_t n, const LoraBranch& br,
                                  float p) {
  const char* op = "lora_backward";
  const int64_t n_in = dx_t.cols(), n_out = dy_t.cols();
  const int64_t rank = check_lora_branch(br, n_in, n_out, op, true);
  if (!saved.xd || !saved.ax) fail(op, ": branch '", br.a->name(), "' without its saved input");
  check_rows_of(dx_t, n, n_in, op);
  check_rows_of(*saved.xd, n, n_in, op);
  check_rows_of(*saved.ax, n, rank, op);
  check_rows_of(dy_t, n, n_out, op);
  if (!(p >= 0.0f && p < 1.0f)) fail(op, ": dropout probability ", p, " outside [0, 1)");
  if (n == 0) return;
  VkTensor& dx = vk_tensor(dx_t);
  const VkTensor& dy = vk_tensor(dy_t);
  const VkTensor& xd = vk_tensor(*saved.xd);
  const VkTensor& ax = vk_tensor(*saved.ax);
  scratch_.act.reset();
  for (const auto& [a, b] :
       row_segments({{&dx.tiles(), 0}, {&dy.tiles(), 0}, {&xd.tiles(), 0}, {&ax.tiles(), 0}},
                    uint64_t(n), rec_.max_seg_rows())) {
    const BufferRange dxr = scratch_.bind_rows(rec_, dx.tiles(), a, b, true);
    lora_backward_rows(kit_, br, dxr, scratch_.bind_rows(rec_, dy.tiles(), a, b, true),
                       scratch_.bind_rows(rec_, xd.tiles(), a, b, true),
                       scratch_.bind_rows(rec_, ax.tiles(), a, b, true), b - a, uint64_t(n_out), p);
    scratch_.unbind_rows(rec_, dxr, dx.tiles(), a, b);
  }
}

void VulkanBackend::linear_backward(DeviceTensor& dx_t, const DeviceTensor& dy_t,
                                    const LinearWeight& w, int64_t n) {
  const char* op = "linear_backward";
  check_rows_of(dx_t, n, w.m.n_in, op);
  check_rows_of(dy_t, n, w.m.n_out, op);
  if (n == 0) return;
  VkTensor& dx = vk_tensor(dx_t);
  const VkTensor& dy = vk_tensor(dy_t);
  const TernaryWeight* t = w.is_float() ? nullptr : &weights_.t2(w);
  const FloatRows f = w.is_float() ? weights_.float_matrix(w.f, w.name) : FloatRows{};
  scratch_.act.reset();
  for (const auto& [a, b] :
       row_segments({{&dx.tiles(), 0}, {&dy.tiles(), 0}}, uint64_t(n), rec_.max_seg_rows())) {
    const BufferRange dxr = scratch_.bind_rows(rec_, dx.tiles(), a, b, true);
    transposed_product(kit_, t, t ? nullptr : &f, scratch_.bind_rows(rec_, dy.tiles(), a, b, true),
                       uint64_t(w.m.n_out), dxr, b - a, uint64_t(w.m.n_in), w.out_scale);
    scratch_.unbind_rows(rec_, dxr, dx.tiles(), a, b);
  }
}

// ---- norm_linear ----

void VulkanBackend::norm_linear(const NormOp& norm, std::span<const LinearOp> ops, int64_t n,
                                const LinearMode& mode, const LinearEpilogue& epilogue) {
  const VkTensor& x = vk_tensor(*norm.y);
  if (decode_matvec_applies(&norm, ops, x, n, mode, epilogue)) {
    record_decode_linear(&norm, ops, x, n, epilogue);
    return;
  }
  bool ternary = false;
  for (const LinearOp& op : ops) ternary |= !op.w->is_float();
  // Tokens with int8 activations (not training: no rstd kept): the norm and the quantiser in
  // one dispatch of a workgroup a row (rows of a multiple of 256: the fused quantiser writes
  // unpadded rows).
  constexpr int64_t kMostRows = 65535;  // a workgroup a row: the least maxComputeWorkGroupCount
  if (n >= 1 && n <= kMostRows && !norm.rstd && mode.act_quant && ternary && norm.x != norm.y &&
      x.cols() % 256 == 0) {
    const VkTensor& nx = vk_tensor(*norm.x);
    if (nx.cols() != x.cols() || n > nx.rows()) {
      fail("rms_norm: tensor '", nx.name(), "' (", nx.rows(), " x ", nx.cols(), ") into '",
           x.name(), "' (", x.rows(), " x ", x.cols(), "), ", n, " rows");
    }
    linear_rows(ops, x, n, mode, &norm);
    if (epilogue.kind == LinearEpilogue::Kind::Gated) {
      gated_act(*epilogue.out, *ops[0].y, *ops[1].y, n, epilogue.act);
    } else if (epilogue.kind == LinearEpilogue::Kind::Residual) {
      add(*epilogue.residual, *ops[0].y, n);
    }
    return;
  }
  Backend::norm_linear(norm, ops, n, mode, epilogue);
}

bool VulkanBackend::decode_matvec_applies(const NormOp* norm, std::span<const LinearOp> ops,
                                          const DeviceTensor& x_t, int64_t n,
                                          const LinearMode& mode, const LinearEpilogue& epi) {
  const VkTensor& x = vk_tensor(x_t);
  const uint64_t rows = uint64_t(n);
  if (!tune_.fuse_decode || n < 1 || rows > tune_.max_fused_tokens || !mode.act_quant ||
      ops.empty() || ops.size() > 3 || !one_piece(x.tiles(), 0, rows) || x.cols() % 256 != 0 ||
      x.rows() < n) {
    return false;
  }
  if (norm) {
    const VkTensor& nx = vk_tensor(*norm->x);
    if (norm->rstd || nx.cols() != x.cols() || nx.rows() < n || !one_piece(nx.tiles(), 0, rows)) {
      return false;
    }
  }
  auto fits = [&](const VkTensor& t) { return t.rows() >= n && one_piece(t.tiles(), 0, rows); };
  for (const LinearOp& op : ops) {
    const LinearWeight& w = *op.w;
    if (w.is_float() || !op.lora.empty() || w.m.n_in != x.cols()) return false;
    const VkTensor& y = vk_tensor(*op.y);
    if (y.cols() != w.m.n_out || !fits(y) || &y == &x) return false;
    if (norm && &y == norm->x) return false;
    if (weights_.ternary(w).d == 0.0f) return false;
    // One pipeline reads every weight: T2 codes or TQ1_0 in place, not both.
    if (weights_.ternary(w).tq1 != weights_.ternary(*ops[0].w).tq1) return false;
  }
  switch (epi.kind) {
    case LinearEpilogue::Kind::None:
      return true;
    case LinearEpilogue::Kind::Gated: {
      // gate and up: equal shapes and weight pieces, outputs apart from x, each other and out
      if (ops.size() != 2 || ops[0].y == ops[1].y) return false;
      const VkTensor& out = vk_tensor(*epi.out);
      if (!fits(out) || &out == &x || (norm && &out == norm->x) ||
          out.cols() != ops[0].w->m.n_out || epi.out == ops[0].y || epi.out == ops[1].y) {
        return false;
      }
      const TiledTensor& g = weights_.ternary(*ops[0].w).codes;
      const TiledTensor& u = weights_.ternary(*ops[1].w).codes;
      if (ops[0].w->m.n_out != ops[1].w->m.n_out || g.pieces() != u.pieces()) return false;
      for (size_t i = 0; i < g.pieces(); ++i) {
        if (g.piece(i).row0 != u.piece(i).row0 || g.piece(i).rows() != u.piece(i).rows()) {
          return false;
        }
      }
      return true;
    }
    case LinearEpilogue::Kind::Residual: {
      if (ops.size() != 1) return false;
      const VkTensor& r = vk_tensor(*epi.residual);
      return fits(r) && &r != &x && (!norm || &r != norm->x) && r.cols() == ops[0].w->m.n_out &&
             epi.residual != ops[0].y;
    }
  }
  return false;
}

void VulkanBackend::record_decode_linear(const NormOp* norm, std::span<const LinearOp> ops,
                                         const VkTensor& x, int64_t n, const LinearEpilogue& epi) {
  VkTensor* gated_out = epi.kind == LinearEpilogue::Kind::Gated ? &vk_tensor(*epi.out) : nullptr;
  VkTensor* add_to =
      epi.kind == LinearEpilogue::Kind::Residual ? &vk_tensor(*epi.residual) : nullptr;
  const uint64_t n_in = uint64_t(x.cols()), tokens = uint64_t(n);
  // One token's norm goes into the matvec unless it works in place (workgroup 0 writes its
  // output while the others read its input); several tokens' is rms_norm_quant's dispatch.
  const bool fold_norm = tune_.fold_decode_norm && tokens == 1 && norm && norm->x != norm->y &&
                         n_in <= tune_.norm_vec_width();
  BufferRange q, qs;
  scratch_.act.reset();
  if (!fold_norm) {
    q = scratch_.act.alloc(tokens * n_in, 16);  // read as uvec4
    qs = scratch_.act.alloc(tokens * 4);
    quantize_rows(x, 0, tokens, norm, q, qs);
  }
  // The accumulators are sized for a power of two of tokens: few pipelines serve every count.
  uint32_t mv_tokens = 1;
  while (mv_tokens < tokens) mv_tokens *= 2;
  const bool dot = ctx_->caps().enabled.integer_dot_product;
  const uint32_t kind =
      uint32_t(epi.act == Activation::Silu ? GatedActKind::Silu : GatedActKind::Relu2);
  const uint32_t wg = fold_norm ? tune_.norm_wg : kLinearWg;  // with the norm: rms_norm's workgroup
  const uint32_t rows_per_group =
      std::max<uint32_t>(1, wg / tune_.subgroup_size) * tune_.fused_rows_per_subgroup;
  std::vector<uint32_t> spec = {wg, 0, rows_per_group, mv_tokens, 0, 0, 0, 0, 0, kind};
  if (tune_.fused_row_pairs && !fold_norm) {
    spec.resize(uint32_t(SpecId::MvPair) + 1, 0);
    spec[uint32_t(SpecId::MvPair)] = 1;
  }
  if (fold_norm) {
    // The norm's units an invocation: rms_norm_spec's, so that both sum alike.
    spec.resize(uint32_t(SpecId::NormVec) + 1, 0);
    spec[uint32_t(SpecId::NormVec)] = tune_.rms_norm_spec(n_in)[uint32_t(SpecId::NormVec)];
  }
  const std::string module = cat(fold_norm ? "matvec_norm_ternary" : "matvec_ternary",
                                 weights_.ternary(*ops[0].w).tq1 ? "_tq1" : "", dot ? "_dot" : "");
  const Pipeline& p =
      fold_norm ? rec_.pipeline(module, 14, sizeof(MatvecTernaryPush), spec, kMatvecNormReadOnly)
                : rec_.pipeline(module, 11, sizeof(MatvecTernaryPush), spec, kMatvecReadOnly);
  BufferRange nx, ng, nh;
  if (fold_norm) {
    nx = rows_range(vk_tensor(*norm->x).tiles(), 0, 1);
    ng = weights_.norm(norm->g, int64_t(n_in)).range(size_t(0));
    nh = rows_range(x.tiles(), 0, 1);  // the norm's output, written by workgroup 0
    q = nx;                            // unread
    qs = nx;
  }
  // One segment per weight piece; gated: gate piece i and up piece i, two at a time.
  struct Segment {
    BufferRange w, y;
    uint32_t rows = 0, r0 = 0, y_stride = 0;
    float d = 0, out_scale = 0;
  };
  std::vector<Segment> segs;
  for (const LinearOp& op : ops) {
    const TernaryWeight& tw = weights_.ternary(*op.w);
    const VkTensor& yt = vk_tensor(*op.y);
    const BufferRange y = rows_range(yt.tiles(), 0, tokens);
    for (size_t i = 0; i < tw.codes.pieces(); ++i) {
      const TiledTensor::Piece& piece = tw.codes.piece(i);
      segs.push_back({tw.codes.range(i), y, uint32_t(piece.rows()), uint32_t(piece.row0),
                      uint32_t(yt.cols()), tw.d, op.w->out_scale});
    }
  }
  const size_t per_pieces = gated_out ? segs.size() / 2 : 0;  // gate pieces, then up pieces
  const BufferRange out = gated_out ? rows_range(gated_out->tiles(), 0, tokens) : BufferRange();
  const BufferRange xo = add_to ? rows_range(add_to->tiles(), 0, tokens) : segs[0].y;
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
    push.eps = norm ? norm->eps : 0.0f;
    push.n_tokens = uint32_t(tokens);
    uint32_t groups = 0;
    for (uint32_t s = 0; s < kMaxSegments; ++s) {
      const Segment& g = batch[s < count ? s : 0];
      push.rows[s] = s < count ? g.rows : 0;
      push.r0[s] = g.r0;
      push.group0[s] = groups;
      push.d[s] = g.d;
      push.out_scale[s] = g.out_scale;
      push.y_stride[s] = g.y_stride;
      if (s < count && !(gated_out && s == 1)) {
        groups += uint32_t(ceil_div(g.rows, rows_per_group));
      }
    }
    auto w = [&](uint32_t s) { return batch[s < count ? s : 0].w; };
    auto y = [&](uint32_t s) { return batch[s < count ? s : 0].y; };
    const BufferRange y2 = gated_out ? out : y(2);
    if (fold_norm) {
      rec_.dispatch_rows(p, {w(0), w(1), w(2), w(3), q, qs, y(0), y(1), y2, y(3), xo, nx, ng, nh},
                         push, groups, 1);
    } else {
      rec_.dispatch_rows(p, {w(0), w(1), w(2), w(3), q, qs, y(0), y(1), y2, y(3), xo}, push, groups,
                         1);
    }
  }
}

}  // namespace trit::engine::vk
