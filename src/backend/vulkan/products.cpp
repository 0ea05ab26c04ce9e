// The matrix products several Vulkan ops share: float weights x f32 activations
// (matmul_float.comp), the f32 gemm of the LoRA branches (gemm_f32.comp, each output element
// adding its products one by one in the CPU's order, so equal to the CPU backend's
// gemm_f32_acc bit for bit, and a product split over token segments or over the pieces of A,
// B, da, db giving the same bits as an unsplit one) and the transposed products that carry
// gradients through frozen weights (matmul_transposed.comp, bit-exact in the same way).
#include <algorithm>

#include "backend/vulkan/vk_backend.h"

namespace trit::engine::vk {
namespace {

// gemm_f32: a tile of 64 elements of C per workgroup (one an invocation), shaped to C.
constexpr uint32_t kGemmWg = 64;
// gemm_f32_short_k: k up to kShortK; 64 columns x kShortKRows rows of C a workgroup.
constexpr uint32_t kShortK = 32, kShortKWg = 128, kShortKRows = 32;
// matmul_transposed: 64 columns x 8 * tpt tokens a workgroup, 4 columns x tpt tokens an
// invocation; tpt = 4 (fewer shared loads a product) where that still makes kTransManyGroups
// workgroups, else 2: a 128-token step of a 1B model (n_in 2048) then runs 256 workgroups of
// 64 x 16 rather than 128 of 64 x 32, fewer than the SMs of a large GPU.
constexpr uint32_t kTransWg = 128;
constexpr uint32_t kTransCols = 64, kTransTokenRuns = 8;  // 16 x 8 invocations
constexpr uint64_t kTransManyGroups = 256;
constexpr uint32_t kDropoutWg = 128;  // dropout
constexpr uint32_t kDyToF16Wg = 128;  // dy_to_f16: one workgroup a token
// matmul_transposed_coop split over its rows: about this many workgroups, each over at least
// this many rows; transposed_reduce's workgroup.
constexpr uint64_t kTransCoopGroups = 256, kTransCoopSplitRows = 512;
constexpr uint32_t kReduceWg = 256;

void check_shape(const DeviceTensor* t, int64_t rows, int64_t cols, const char* what,
                 const char* op) {
  if (!t) fail(op, ": LoRA branch without its ", what, " tensor");
  if (t->rows() != rows || t->cols() != cols) {
    fail(op, ": LoRA ", what, " '", t->name(), "' is ", t->rows(), " x ", t->cols(), ", expected ",
         rows, " x ", cols);
  }
}

}  // namespace

// Matvec rows per workgroup: the shaders' threads tid < MV_ROWS * MV_TOKENS write the results,
// so that product may not exceed the workgroup size.
uint32_t matvec_rows(const Tuning& c, uint32_t mv_tokens) {
  return std::max<uint32_t>(1, std::min(c.mv_rows, c.mv_wg / mv_tokens));
}

MatmulPlan plan_matmul(const Tuning& c, uint64_t tokens, FloatWeightType type) {
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
    // A few more tokens than the matvec takes (a server's 9 to 16 slots): tiles half as wide in
    // tokens, half the outputs a thread, the same workgroup, so that half of each tile does not
    // compute padding (the LM head of 16 slots on an H100: 1.19 ms a step with 32-token tiles).
    // Each output sums over k in the same order in any tile: the same bits.
    const bool narrow = tokens <= 16 && c.tile_n == 32 && c.thread_n % 2 == 0;
    const uint32_t tile_n = narrow ? 16 : c.tile_n, thread_n = narrow ? c.thread_n / 2 : c.thread_n;
    p.spec = {c.tile_wg(),   uint32_t(MatmulPath::Tiled),
              c.mv_rows,     1,
              c.tile_m,      tile_n,
              c.thread_m,    thread_n,
              uint32_t(type)};
    p.rows_per_group = c.tile_m;
    p.tokens_per_group = tile_n;
  }
  return p;
}

void matmul_float(Kit& k, const FloatRows& w, BufferRange x, BufferRange y, uint64_t tokens,
                  uint64_t op_tokens, uint64_t y_stride, float alpha, float beta) {
  const MatmulPlan plan = plan_matmul(k.tune, op_tokens, w.type);
  const Pipeline& p = k.rec.pipeline("matmul_float", 3, sizeof(MatmulFloatPush), plan.spec, 0b011);
  for (size_t i = 0; i < w.rows->pieces(); ++i) {
    const TiledTensor::Piece& piece = w.rows->piece(i);
    const MatmulFloatPush push{uint32_t(w.n_in),
                               uint32_t(piece.rows()),
                               uint32_t(piece.row0),
                               uint32_t(tokens),
                               uint32_t(y_stride),
                               alpha,
                               beta};
    // The whole buffer: q8_0 rows need not end on a word, the shaders read whole words.
    k.rec.dispatch_rows(p, {BufferRange(piece.buffer), x, y}, push,
                        ceil_div(piece.rows(), plan.rows_per_group),
                        ceil_div(tokens, plan.tokens_per_group));
  }
}

FloatRows lora_rows(const DeviceTensor& t) {
  return {&vk_tensor(t).tiles(), FloatWeightType::F32, t.cols(), t.rows()};
}

void lora_apply_rows(Kit& k, const LoraBranch& br, BufferRange x, BufferRange y, uint64_t tokens,
                     uint64_t op_tokens, uint64_t y_stride) {
  const uint64_t rank = uint64_t(br.a->rows());
  const BufferRange ax = k.scratch.act.alloc(tokens * rank * 4);  // (tokens, rank) = x A^T
  matmul_float(k, lora_rows(*br.a), x, ax, tokens, op_tokens, rank, 1.0f, 0.0f);
  // y + scale * (B ax), the CPU's `y += acc * scale`.
  matmul_float(k, lora_rows(*br.b), ax, y, tokens, op_tokens, y_stride, br.scale, 1.0f);
}

// site: which product of a LoRA branch this is (1 x A^T, 2 y += ax B^T, 3 db, 4 dy B, 5 da,
// 6 dx += dax A), in a specialisation slot the shaders do not read, so that each site has a
// pipeline name of its own in TRIT_VK_PROFILE's table; 0 when not profiling.
void gemm(Kit& k, BufferRange a, BufferRange b, BufferRange c, const GemmF32Push& p,
          uint32_t site) {
  if (!k.ctx.profile()) site = 0;
  // A short k (the rank: y += (x A^T) B^T, dx += (dy B) A) over a large C: a column an
  // invocation, its k values of B in registers (gemm_f32_short_k.comp; the same bits).
  if (p.k >= 1 && p.k <= kShortK && k.tune.gemm_short_k) {
    const Pipeline& pl =
        k.rec.pipeline("gemm_f32_short_k", 3, sizeof(GemmF32Push),
                       {kShortKWg, 0, 0, 0, kShortKRows, 0, 0, site, 0, 0, 0, 0, p.k}, 0b011);
    k.rec.dispatch_rows(pl, {a, b, c}, p, ceil_div(p.m, kShortKRows), ceil_div(p.n, 64));
    return;
  }
  // Tiles of 64 leave many workgroups where C is small: a rank-8 product over 128 tokens whose
  // k runs over n_in or n_out (one long chain of adds an element) spreads over 16 of them.
  // A thin C (the rank on one side) takes a thin tile, so that no invocation idles.
  const uint32_t tj = p.n <= 4 ? 4 : p.m <= 4 ? 16 : 8, ti = kGemmWg / tj;
  // k values staged per barrier: 128 where k runs over the tokens or over thousands, 16 for a
  // short k (the rank), whose staging would be mostly padding.
  const uint32_t kb = p.k >= 128 ? 128 : 16;
  const Pipeline& pl = k.rec.pipeline("gemm_f32", 3, sizeof(GemmF32Push),
                                      {kGemmWg, 0, 0, 0, ti, tj, 0, site, 0, 0, 0, 0, kb}, 0b011);
  k.rec.dispatch_rows(pl, {a, b, c}, p, ceil_div(p.m, ti), ceil_div(p.n, tj));
}

void lora_forward_rows(Kit& k, const LoraBranch& br, BufferRange xd, BufferRange ax, BufferRange y,
                       uint64_t rows, uint64_t y_stride) {
  const TiledTensor& a = vk_tensor(*br.a).tiles();  // (rank, n_in)
  const TiledTensor& b = vk_tensor(*br.b).tiles();  // (n_out, rank)
  const uint32_t n_in = uint32_t(br.a->cols()), rank = uint32_t(br.a->rows());
  // ax (rows, rank) = xd A^T: columns [j0, j1) from each piece of A.
  for (size_t i = 0; i < a.pieces(); ++i) {
    const TiledTensor::Piece& pc = a.piece(i);
    gemm(k, xd, a.range(i), ax,
         {uint32_t(rows), uint32_t(pc.rows()), n_in, 0, n_in, 1, 0, 1, n_in, uint32_t(pc.row0),
          rank, uint32_t(GemmMode::Set), 1.0f, 1.0f},
         1);
  }
  // y += (ax B^T) * scale: columns [o0, o1) of y from each piece of B.
  for (size_t i = 0; i < b.pieces(); ++i) {
    const TiledTensor::Piece& pc = b.piece(i);
    gemm(k, ax, b.range(i), y,
         {uint32_t(rows), uint32_t(pc.rows()), rank, 0, rank, 1, 0, 1, rank, uint32_t(pc.row0),
          uint32_t(y_stride), uint32_t(GemmMode::AddScaled), 1.0f, br.scale},
         2);
  }
}

void lora_backward_rows(Kit& k, const LoraBranch& br, BufferRange dx, BufferRange dy,
                        BufferRange xd, BufferRange ax, uint64_t rows, uint64_t dy_stride,
                        float p) {
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
    gemm(k, dy, ax, db.range(i),
         {uint32_t(pc.rows()), rank, t, uint32_t(pc.row0), 1, ys, 0, rank, 1, 0, rank, accumulate,
          s, 1.0f},
         3);
  }
  // dax (rows, rank) = (s dy) B, summed over the pieces of B in order.
  const BufferRange dax = k.scratch.act.alloc(rows * rank * 4);
  for (size_t i = 0; i < b.pieces(); ++i) {
    const TiledTensor::Piece& pc = b.piece(i);
    gemm(k, dy, b.range(i), dax,
         {t, rank, uint32_t(pc.rows()), uint32_t(pc.row0), ys, 1, 0, rank, 1, 0, rank,
          i == 0 ? set : accumulate, s, 1.0f},
         4);
  }
  // da[j, c] += sum_t dax[t, j] xd[t, c]
  for (size_t i = 0; i < da.pieces(); ++i) {
    const TiledTensor::Piece& pc = da.piece(i);
    gemm(k, dax, xd, da.range(i),
         {uint32_t(pc.rows()), n_in, t, uint32_t(pc.row0), 1, rank, 0, n_in, 1, 0, n_in, accumulate,
          1.0f, 1.0f},
         5);
  }
  // Without dropout (and A in one piece) dx += dax A is one product: dx + S * 1 is what the
  // dropout kernel would add (dxd * 1 is dxd), without writing dxd and reading it back.
  if (p == 0 && a.pieces() == 1) {
    gemm(k, dax, a.range(0), dx,
         {t, n_in, rank, uint32_t(a.piece(0).row0), rank, 1, 0, n_in, 1, 0, n_in,
          uint32_t(GemmMode::AddScaled), 1.0f, 1.0f},
         6);
    return;
  }
  // dxd (rows, n_in) = dax A, then dx += dxd / (1 - p) where xd != 0.
  const BufferRange dxd = k.scratch.act.alloc(rows * n_in * 4);
  for (size_t i = 0; i < a.pieces(); ++i) {
    const TiledTensor::Piece& pc = a.piece(i);
    gemm(k, dax, a.range(i), dxd,
         {t, n_in, uint32_t(pc.rows()), uint32_t(pc.row0), rank, 1, 0, n_in, 1, 0, n_in,
          i == 0 ? set : accumulate, 1.0f, 1.0f});
  }
  const uint64_t count = rows * n_in;
  const DropoutPush push{
      uint32_t(count), 1, p > 0 ? 1u : 0u, 0, 0, 0, 0, p > 0 ? 1.0f / (1.0f - p) : 1.0f};
  const Pipeline& pl = k.rec.pipeline("dropout", 3, sizeof(DropoutPush), {kDropoutWg}, 0b011);
  k.rec.dispatch_flat(pl, {xd, dxd, dx}, push, ceil_div(count, kDropoutWg));
}

namespace {

// The transposed product on f16 cooperative matrices (matmul_transposed_coop.comp) of a
// ternary weight (t) or of f16 rows (f): dy's rows as halves once (dy_to_f16.comp), then the
// product piece by piece. False, having recorded nothing, where the device has no such matrices
// (or TRIT_VK_EXACT=1), for other float types or an odd width, or where a piece starts on an
// odd row (the module reads dy's halves a word at a time).
bool transposed_product_f16(Kit& k, const TernaryWeight* t, const FloatRows* f, BufferRange dy,
                            uint64_t dy_stride, BufferRange dx, uint64_t tokens, uint64_t n_in,
                            float scale) {
  const std::optional<CoopF16Tiles>& tiles = k.ctx.caps().enabled.coop_f16_tiles;
  if (!tiles || (t ? t->tq1 : (f->type != FloatWeightType::F16 || n_in % 2 != 0))) return false;
  const TiledTensor& w = t ? t->codes : *f->rows;
  for (size_t i = 0; i < w.pieces(); ++i) {
    if (w.piece(i).row0 % 2 != 0) return false;
  }
  const uint64_t n = w.rows(), words = ceil_div(n, 2);
  const BufferRange dyh = k.scratch.act.alloc(tokens * words * 4);
  const BufferRange tscale = k.scratch.act.alloc(tokens * 4);
  const BufferRange acc = w.pieces() > 1 ? k.scratch.act.alloc(tokens * n_in * 4) : dx;
  const Pipeline& half = k.rec.pipeline("dy_to_f16", 3, sizeof(DyToF16Push), {kDyToF16Wg}, 0b001);
  k.rec.dispatch_flat(
      half, {dy, dyh, tscale},
      DyToF16Push{uint32_t(tokens), uint32_t(n), uint32_t(dy_stride), uint32_t(words)}, tokens);
  const Pipeline& p = k.rec.pipeline(tiles->shader(t == nullptr), 6,
                                     sizeof(MatmulTransposedCoopPush), tiles->spec(), 0b001111);
  const uint64_t col_groups = ceil_div(n_in, CoopF16Tiles::kColumns);
  const uint64_t token_groups = ceil_div(tokens, CoopF16Tiles::kTokens);
  const float dq = t && t->d != 0.0f ? t->d : 1.0f;
  for (size_t i = 0; i < w.pieces(); ++i) {
    const TiledTensor::Piece& piece = w.piece(i);
    const BufferRange wr = w.range(i);
    const BufferRange dblk = t && t->d == 0.0f ? t->block_scales().range(i) : wr;
    const bool first = i == 0, last = i + 1 == w.pieces();
    MatmulTransposedCoopPush push{{uint32_t(n_in), uint32_t(piece.rows()), uint32_t(piece.row0),
                                   uint32_t(tokens), uint32_t(words), t ? t->d : 0.0f, scale,
                                   first ? 1u : 0u, last ? 1u : 0u, uint32_t(t ? t->n_in : n_in)},
                                  0};
    // A small grid over many rows (the head's 128 tokens over its vocabulary) leaves most of a
    // large GPU idle: split the rows so that about kTransCoopGroups workgroups run, each over at
    // least kTransCoopSplitRows rows, their sums added in order by transposed_reduce.
    uint64_t splits = std::min(ceil_div(kTransCoopGroups, col_groups * token_groups),
                               ceil_div(piece.rows(), kTransCoopSplitRows));
    const uint64_t part_row = tokens * n_in * 4;
    splits = std::min(splits, k.ctx.binding_limit() / part_row);
    if (splits <= 1) {
      k.rec.dispatch_rows(p, {wr, dblk, dyh, tscale, acc, dx}, push, col_groups, token_groups);
      continue;
    }
    const uint64_t split_rows = ceil_div(ceil_div(piece.rows(), splits), 32) * 32;
    splits = ceil_div(piece.rows(), split_rows);
    push.split_rows = uint32_t(split_rows);
    const BufferRange part = k.scratch.act.alloc(splits * part_row);
    k.rec.dispatch_rows(p, {wr, dblk, dyh, tscale, part, dx}, push, col_groups,
                        token_groups * splits);
    const Pipeline& reduce =
        k.rec.pipeline("transposed_reduce", 4, sizeof(TransposedReducePush), {kReduceWg}, 0b0011);
    const TransposedReducePush rp{uint32_t(tokens), uint32_t(n_in), uint32_t(splits), dq, scale,
                                  first ? 1u : 0u,  last ? 1u : 0u};
    k.rec.dispatch_flat(reduce, {part, tscale, acc, dx}, rp, ceil_div(tokens * n_in, kReduceWg));
  }
  return true;
}

}  // namespace

void transposed_product(Kit& k, const TernaryWeight* t, const FloatRows* f, BufferRange dy,
                        uint64_t dy_stride, BufferRange dx, uint64_t rows, uint64_t n_in,
                        float scale) {
  if (transposed_product_f16(k, t, f, dy, dy_stride, dx, rows, n_in, scale)) return;
  const TiledTensor& w = t ? t->codes : *f->rows;
  const size_t pieces = w.pieces();
  // Several pieces sum through an accumulator tile, in piece (row) order.
  const BufferRange acc = pieces > 1 ? k.scratch.act.alloc(rows * n_in * 4) : dx;
  const uint64_t col_groups = ceil_div(n_in, kTransCols);
  const uint32_t tpt = col_groups * ceil_div(rows, kTransTokenRuns * 4) >= kTransManyGroups ? 4 : 2;
  const Pipeline& p =
      t ? k.rec.pipeline("matmul_ternary_t", 5, sizeof(MatmulTransposedPush),
                         {kTransWg, 0, 0, 0, 0, 0, 0, tpt}, 0b00111)
        : k.rec.pipeline("matmul_float_t", 5, sizeof(MatmulTransposedPush),
                         {kTransWg, 0, 0, 0, 0, 0, 0, tpt, uint32_t(f->type)}, 0b00111);
  for (size_t i = 0; i < pieces; ++i) {
    const TiledTensor::Piece& piece = w.piece(i);
    // Float rows: the whole buffer (q8_0 rows need not end on a word).
    const BufferRange wr = t ? w.range(i) : BufferRange(piece.buffer);
    const BufferRange dblk = t && t->d == 0.0f ? t->block_scales().range(i) : wr;
    const MatmulTransposedPush push{uint32_t(n_in),
                                    uint32_t(piece.rows()),
                                    uint32_t(piece.row0),
                                    uint32_t(rows),
                                    uint32_t(dy_stride),
                                    t ? t->d : 0.0f,
                                    scale,
                                    i == 0 ? 1u : 0u,
                                    i + 1 == pieces ? 1u : 0u,
                                    uint32_t(t ? t->n_in : n_in)};
    k.rec.dispatch_rows(p, {wr, dblk, dy, acc, dx}, push, col_groups,
                        ceil_div(rows, kTransTokenRuns * tpt));
  }
}

// Checks the branch's tensors against a layer of n_in inputs and n_out outputs; returns rank.
int64_t check_lora_branch(const LoraBranch& br, int64_t n_in, int64_t n_out, const char* op,
                          bool grads) {
  if (!br.a) fail(op, ": LoRA branch without its a tensor");
  const int64_t rank = br.a->rows();
  check_shape(br.a, rank, n_in, "a", op);
  check_shape(br.b, n_out, rank, "b", op);
  if (grads) {
    check_shape(br.da, rank, n_in, "da", op);
    check_shape(br.db, n_out, rank, "db", op);
  }
  return rank;
}

}  // namespace trit::engine::vk
