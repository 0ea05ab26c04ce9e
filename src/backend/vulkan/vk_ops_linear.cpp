// The Vulkan backend's matrix products: linear (bitlinear over T2 codes with int8 or float
// activations, merged float layers, LoRA terms) and the LM head.
//
// A linear op walks the row segments of x and every output (so that each stays within one
// piece), quantises the segment of x once into scratch, and dispatches every weight piece (a
// range of output columns) of every layer against it.
#include <algorithm>
#include <cstring>

#include "backend/vulkan/vk_backend_impl.h"
#include "model/lora_apply.h"
#include "model/model.h"
#include "train/lora.h"

namespace trit::vk {
namespace {

constexpr uint32_t kReadAll3 = 0b111;   // bindings 0..2 read-only
constexpr uint32_t kReadAll4 = 0b1111;  // bindings 0..3 read-only

// Spec constants and groups of one matmul dispatch over `tokens` tokens.
struct MatmulPlan {
  std::vector<uint32_t> spec;  // constant_id 0..8
  uint32_t rows_per_group = 1, tokens_per_group = 1;
};

// Matvec rows per workgroup: the shaders' threads tid < MV_ROWS * MV_TOKENS write the results,
// so that product may not exceed the workgroup size.
uint32_t matvec_rows(const MatmulConfig& c, uint32_t mv_tokens) {
  return std::max<uint32_t>(1, std::min(c.mv_rows, c.mv_wg / mv_tokens));
}

MatmulPlan plan_matmul(const MatmulConfig& c, uint64_t tokens, FloatWeightType type) {
  MatmulPlan p;
  if (tokens <= c.max_matvec_tokens) {
    const uint32_t mv_tokens = tokens == 1 ? 1 : 4;
    const uint32_t mv_rows = matvec_rows(c, mv_tokens);
    p.spec = {c.mv_wg,       uint32_t(MatmulPath::Matvec),
              mv_rows,       mv_tokens,
              c.tile_m,      c.tile_n,
              c.thread_m,    c.thread_n,
              uint32_t(type)};
    p.rows_per_group = mv_rows;
    p.tokens_per_group = mv_tokens;
  } else {
    p.spec = {c.tile_wg(),   uint32_t(MatmulPath::Tiled),
              c.mv_rows,     1,
              c.tile_m,      c.tile_n,
              c.thread_m,    c.thread_n,
              uint32_t(type)};
    p.rows_per_group = c.tile_m;
    p.tokens_per_group = c.tile_n;
  }
  return p;
}

// Whether tiles of tile_m rows x tile_n tokens would leave a large device idle
// (MatmulConfig::small_tile_groups): the int8 products then take smaller tiles.
bool small_grid(const MatmulConfig& c, uint64_t rows, uint64_t tokens, uint32_t tile_m,
                uint32_t tile_n) {
  return ceil_div(rows, tile_m) * ceil_div(tokens, tile_n) < c.small_tile_groups;
}

// The int8 ternary product of `rows` outputs: matmul_float's plan, with 32 x 16 tiles on a
// small grid.
MatmulPlan plan_ternary_int8(const MatmulConfig& c, uint64_t tokens, uint64_t rows) {
  if (tokens > c.max_matvec_tokens && small_grid(c, rows, tokens, c.tile_m, c.tile_n)) {
    MatmulConfig small = c;
    small.tile_m = 32;
    small.tile_n = 16;
    small.thread_m = 2;
    small.thread_n = 2;
    return plan_matmul(small, tokens, FloatWeightType::F32);
  }
  return plan_matmul(c, tokens, FloatWeightType::F32);
}

// The cooperative-matrix tiles for `rows` outputs: the small ones on a small grid.
CoopTiles coop_tiles(const CoopTiles& c, const MatmulConfig& mm, uint64_t tokens, uint64_t rows) {
  return small_grid(mm, rows, tokens, c.tile_m, c.tile_n) ? c.small() : c;
}

// matmul_ternary_f32 (float activations) always takes matvec-shaped workgroups.
MatmulPlan plan_ternary_f32(const MatmulConfig& c, uint64_t tokens) {
  MatmulPlan p;
  const uint32_t mv_tokens = tokens == 1 ? 1 : 4;
  const uint32_t mv_rows = matvec_rows(c, mv_tokens);
  p.spec = {c.mv_wg, 0, mv_rows, mv_tokens};
  p.rows_per_group = mv_rows;
  p.tokens_per_group = mv_tokens;
  return p;
}

}  // namespace

const Pipeline& VulkanBackend::pipeline(std::string_view shader, uint32_t bindings,
                                        uint32_t push_bytes, std::vector<uint32_t> spec,
                                        uint32_t readonly) {
  PipelineDesc d;
  d.shader = shader;
  d.bindings = bindings;
  d.push_bytes = push_bytes;
  d.spec = std::move(spec);
  d.readonly = readonly;
  return ctx_->pipeline(d);
}

void VulkanBackend::matmul_float(const FloatWeight& w, BufferRange x, BufferRange y,
                                 uint64_t tokens, uint64_t op_tokens, uint64_t y_stride,
                                 float alpha, float beta) {
  const MatmulPlan plan = plan_matmul(mm_, op_tokens, w.type);
  const Pipeline& p = pipeline("matmul_float", 3, sizeof(MatmulFloatPush), plan.spec, 0b011);
  for (size_t i = 0; i < w.rows.pieces(); ++i) {
    const TiledTensor::Piece& piece = w.rows.piece(i);
    const MatmulFloatPush push{uint32_t(w.n_in),
                               uint32_t(piece.rows()),
                               uint32_t(piece.row0),
                               uint32_t(tokens),
                               uint32_t(y_stride),
                               alpha,
                               beta};
    // The whole buffer: q8_0 rows need not end on a word, the shaders read whole words.
    dispatch_rows(p, {BufferRange(piece.buffer), x, y}, push,
                  ceil_div(piece.rows(), plan.rows_per_group),
                  ceil_div(tokens, plan.tokens_per_group));
  }
}

void VulkanBackend::lora_terms(const std::vector<LoraTerm>& terms, BufferRange x, BufferRange y,
                               uint64_t tokens, uint64_t op_tokens, int64_t n_in, int64_t n_out) {
  for (const LoraTerm& term : terms) {
    const LoraWeight& l = lora_weight(*term.layer);
    if (l.a.n_in != n_in || l.b.n_out != n_out) {
      fail("vulkan: LoRA layer of shape ", l.a.n_in, " -> ", l.b.n_out, " on a layer ", n_in,
           " -> ", n_out);
    }
    const uint64_t rank = uint64_t(l.a.n_out);
    const BufferRange ax = act_scratch_.alloc(tokens * rank * 4);  // (tokens, rank) = x A^T
    matmul_float(l.a, x, ax, tokens, op_tokens, rank, 1.0f, 0.0f);
    // y + scale * (B ax), the CPU's `y += acc * scale`.
    matmul_float(l.b, ax, y, tokens, op_tokens, uint64_t(n_out), term.scale, 1.0f);
  }
}

void VulkanBackend::linear(std::span<const LinearOp> ops, const DeviceTensor& xt, int64_t n,
                           bool act_quant) {
  const VkTensor& x = vk_tensor(xt);
  const int64_t n_in = x.cols();
  if (n <= 0 || ops.empty()) return;
  if (n > x.rows()) fail("linear: ", n, " rows of tensor '", x.name(), "' with ", x.rows());
  struct Job {
    const LinearOp* op;
    VkTensor* y;
    const TernaryWeight* t = nullptr;
    const FloatWeight* f = nullptr;
  };
  std::vector<Job> jobs;
  std::vector<RowsOf> touched = {{&x.tiles(), 0}};
  bool quantise = false;
  for (const LinearOp& op : ops) {
    const LinearWeight& w = *op.w;
    Job j{&op, &vk_tensor(*op.y)};
    if (w.m.n_in != n_in || j.y->cols() != w.m.n_out || j.y->rows() < n) {
      fail("linear ", w.name, ": weight ", w.m.n_in, " -> ", w.m.n_out, " with input '", x.name(),
           "' (", x.rows(), " x ", n_in, "), output '", j.y->name(), "' (", j.y->rows(), " x ",
           j.y->cols(), "), ", n, " rows");
    }
    if (w.is_float()) {
      j.f = &float_weight(w.f, w.name);
    } else {
      j.t = &ternary_weight(w);
      quantise |= act_quant;
    }
    touched.push_back({&j.y->tiles(), 0});
    jobs.push_back(j);
  }
  // x is the output of a held-back rms_norm: one dispatch normalises and quantises it.
  PendingNorm norm;
  if (quantise && pending_norm_.y == &x && pending_norm_.n == uint64_t(n)) {
    norm = pending_norm_;
    pending_norm_ = {};
    touched.push_back({&norm.x->tiles(), 0});
    if (norm.residual) touched.push_back({&norm.residual->tiles(), 0});
  }
  if (decode_matvec_applies(ops, x, n, act_quant)) {
    settle();  // anything else held back goes first
    // Held: a gated_act or an add of the output may join it (vk_ops_decode.cpp).
    pending_linear_ = {};
    for (const LinearOp& op : ops) pending_linear_.ops[pending_linear_.n_ops++] = op;
    pending_linear_.x = &x;
    pending_linear_.norm = norm;
    return;
  }
  const bool dot = ctx_->caps().enabled.integer_dot_product;
  const std::optional<CoopTiles>& coop = ctx_->caps().enabled.coop_tiles;
  act_scratch_.reset();
  for (const auto& [a, b] : row_segments(touched, uint64_t(n), max_seg_rows_)) {
    const uint64_t rows = b - a;
    // Rows of a width that is not a multiple of 4 floats may start off the device's binding
    // alignment inside a piece: bind_rows passes those through aligned scratch.
    const BufferRange xr = bind_rows(x.tiles(), a, b, true);
    BufferRange q, qs;
    if (quantise) {
      q = act_scratch_.alloc(rows * uint64_t(n_in));
      qs = act_scratch_.alloc(rows * 4);
      quantize_rows(x, a, b, norm, q, qs);
    }
    for (const Job& j : jobs) {
      const LinearWeight& w = *j.op->w;
      // Every output column is written before LoRA adds to it: no need to load y.
      const BufferRange yr = bind_rows(j.y->tiles(), a, b, false);
      if (j.f) {  // a merged layer: y = (W x) * out_scale, as the CPU's float_matmul then *=
        matmul_float(*j.f, xr, yr, rows, uint64_t(n), uint64_t(w.m.n_out), w.out_scale, 0.0f);
      } else {
        const TernaryWeight& tw = *j.t;
        MatmulPlan plan = act_quant ? plan_ternary_int8(mm_, uint64_t(n), uint64_t(w.m.n_out))
                                    : plan_ternary_f32(mm_, uint64_t(n));
        const Pipeline* p;
        // Cooperative matrices take the tiled int8 product of a uniform scale (block scales
        // need a float sum per block: the plain path keeps those).
        if (act_quant && coop && tw.d != 0.0f && uint64_t(n) > mm_.max_matvec_tokens) {
          const CoopTiles tiles = coop_tiles(*coop, mm_, uint64_t(n), uint64_t(w.m.n_out));
          plan.rows_per_group = tiles.tile_m;
          plan.tokens_per_group = tiles.tile_n;
          p = &pipeline(tiles.shader(), 5, sizeof(MatmulTernaryPush), tiles.spec(), kReadAll4);
        } else if (act_quant) {
          std::vector<uint32_t> spec(plan.spec.begin(), plan.spec.begin() + 8);
          p = &pipeline(dot ? "matmul_ternary_dot" : "matmul_ternary", 5, sizeof(MatmulTernaryPush),
                        spec, kReadAll4);
        } else {
          p = &pipeline("matmul_ternary_f32", 4, sizeof(MatmulTernaryPush), plan.spec, kReadAll3);
        }
        for (size_t i = 0; i < tw.codes.pieces(); ++i) {
          const TiledTensor::Piece& piece = tw.codes.piece(i);
          const BufferRange codes = tw.codes.range(i);
          const BufferRange dblk = tw.d == 0.0f ? tw.dblk.range(i) : codes;
          const MatmulTernaryPush push{uint32_t(n_in), uint32_t(piece.rows()), uint32_t(piece.row0),
                                       uint32_t(rows), uint32_t(w.m.n_out),    tw.d,
                                       w.out_scale};
          const uint64_t gx = ceil_div(piece.rows(), plan.rows_per_group);
          const uint64_t gy = ceil_div(rows, plan.tokens_per_group);
          if (act_quant) {
            dispatch_rows(*p, {codes, dblk, q, qs, yr}, push, gx, gy);
          } else {
            dispatch_rows(*p, {codes, dblk, xr, yr}, push, gx, gy);
          }
        }
      }
      // The LoRA branch sees the un-quantised input; `.scale` does not multiply it.
      if (j.op->lora && !j.op->lora->empty()) {
        lora_terms(*j.op->lora, xr, yr, rows, uint64_t(n), n_in, w.m.n_out);
      }
      unbind_rows(yr, j.y->tiles(), a, b);
    }
  }
}

void VulkanBackend::head(float* logits, const DeviceTensor& xt, int64_t row0, int64_t n,
                         const FloatMatrix& w, const std::vector<LoraTerm>* lora) {
  const VkTensor& x = vk_tensor(xt);
  if (row0 < 0 || n < 0 || row0 + n > x.rows()) {
    fail("head: rows ", row0, "..", row0 + n, " of tensor '", x.name(), "' with ", x.rows(),
         " rows");
  }
  if (w.n_in != x.cols()) {
    fail("head: weight ", w.n_in, " -> ", w.n_out, " on tensor '", x.name(), "' of ", x.cols(),
         " columns");
  }
  if (n == 0) return;
  const FloatWeight& hw = float_weight(w, "output");
  const uint64_t row_bytes = uint64_t(w.n_out) * 4;
  const uint64_t fit = ctx_->binding_limit() / row_bytes;
  if (fit == 0) {
    fail("head: one row of ", w.n_out, " logits is more than the binding limit of ",
         ctx_->binding_limit(), " bytes");
  }
  // Logits go straight to host-visible blocks, one per segment, each starting a binding.
  std::vector<std::pair<uint64_t, BufferRange>> blocks;
  act_scratch_.reset();
  for (const auto& [a, b] :
       row_segments({{&x.tiles(), uint64_t(row0)}}, uint64_t(n), std::min(fit, max_seg_rows_))) {
    const uint64_t rows = b - a;
    const BufferRange xr = rows_range(x.tiles(), uint64_t(row0) + a, uint64_t(row0) + b);
    const BufferRange out = host_.alloc(rows * row_bytes);
    matmul_float(hw, xr, out, rows, uint64_t(n), uint64_t(w.n_out), 1.0f, 0.0f);
    if (lora && !lora->empty()) lora_terms(*lora, xr, out, rows, uint64_t(n), w.n_in, w.n_out);
    blocks.emplace_back(a, out);
  }
  flush(/*keep_host=*/true);
  for (const auto& [a, out] : blocks) {
    std::memcpy(logits + a * uint64_t(w.n_out),
                static_cast<const unsigned char*>(out.buffer->mapped()) + out.offset, out.size);
  }
  host_.reset();
}

}  // namespace trit::vk
