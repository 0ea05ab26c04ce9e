// The Vulkan backend's row-wise and elementwise ops: embedding, rms_norm, gated_act, add. Each
// walks the row segments on which every tensor it touches stays within one piece.
#include <cstring>

#include "backend/vulkan/vk_backend_impl.h"
#include "model/model.h"

namespace trit::vk {
namespace {

constexpr uint32_t kWg = 128;  // workgroup size of these shaders

void check_n(const DeviceTensor& t, int64_t n, const char* op) {
  if (n < 0 || n > t.rows()) fail(op, ": ", n, " rows of tensor '", t.name(), "' with ", t.rows());
}

void check_same_cols(const DeviceTensor& a, const DeviceTensor& b, const char* op) {
  if (a.cols() != b.cols()) {
    fail(op, ": tensor '", a.name(), "' has ", a.cols(), " columns, '", b.name(), "' ", b.cols());
  }
}

}  // namespace

void VulkanBackend::embedding(DeviceTensor& out_t, const FloatMatrix& table, const int32_t* tokens,
                              int64_t n) {
  VkTensor& out = vk_tensor(out_t);
  check_n(out, n, "embedding");
  if (table.n_in != out.cols()) {
    fail("embedding: table rows of ", table.n_in, " values, tensor '", out.name(), "' has ",
         out.cols(), " columns");
  }
  if (n == 0) return;
  const FloatWeight& tw = float_weight(table, "token_embd");
  const Pipeline& p = pipeline("embedding", 3, sizeof(EmbeddingPush),
                               {kWg, 0, 0, 0, 0, 0, 0, 0, uint32_t(tw.type)}, 0b011);
  for (const auto& [a, b] : row_segments({{&out.tiles(), 0}}, uint64_t(n), max_seg_rows_)) {
    const uint64_t rows = b - a;
    const BufferRange ids = host_.alloc(rows * 4);  // kept until the submission ends
    std::memcpy(static_cast<unsigned char*>(ids.buffer->mapped()) + ids.offset, tokens + a,
                rows * 4);
    const BufferRange o = rows_range(out.tiles(), a, b);
    for (size_t i = 0; i < tw.rows.pieces(); ++i) {
      const TiledTensor::Piece& piece = tw.rows.piece(i);
      bool used = false;  // only the pieces the segment's ids fall in
      for (uint64_t t = a; t < b && !used; ++t) {
        used = uint64_t(tokens[t]) >= piece.row0 && uint64_t(tokens[t]) < piece.row1;
      }
      if (!used) continue;
      const EmbeddingPush push{uint32_t(out.cols()), uint32_t(piece.rows()), uint32_t(piece.row0),
                               uint32_t(rows)};
      rec().dispatch(p, {BufferRange(piece.buffer), ids, o}, push,
                     uint32_t(ceil_div(uint64_t(out.cols()), kWg)), uint32_t(rows));
    }
  }
}

void VulkanBackend::rms_norm(DeviceTensor& y_t, const DeviceTensor& x_t, const float* g, int64_t n,
                             float eps, DeviceTensor* rstd_t) {
  VkTensor& y = vk_tensor(y_t);
  const VkTensor& x = vk_tensor(x_t);
  check_n(x, n, "rms_norm");
  check_n(y, n, "rms_norm");
  check_same_cols(x, y, "rms_norm");
  VkTensor* rstd = rstd_t ? &vk_tensor(*rstd_t) : nullptr;
  if (rstd) {
    check_n(*rstd, n, "rms_norm");
    if (rstd->cols() != 1)
      fail("rms_norm: rstd tensor '", rstd->name(), "' has ", rstd->cols(), " columns, not 1");
  }
  if (n == 0) return;
  // A held-back add into x: the norm adds it on the way (add_rms_norm).
  const VkTensor* residual = nullptr;
  if (!rstd && pending_add_.y == &x && pending_add_.n == uint64_t(n) && pending_add_.x != &y) {
    residual = pending_add_.x;
    pending_add_ = {};
  }
  settle();
  // Decoding: held back, so that a bitlinear reading y can quantise it in the same dispatch.
  if (!rstd && uint64_t(n) <= mm_.max_matvec_tokens) {
    pending_norm_ = {&y, &x, g, uint64_t(n), eps, residual};
    return;
  }
  record_rms_norm(y, x, g, uint64_t(n), eps, rstd, residual);
}

void VulkanBackend::record_rms_norm(VkTensor& y, const VkTensor& x, const float* g, uint64_t n,
                                    float eps, VkTensor* rstd, const VkTensor* residual) {
  const BufferRange gr = norm_weight(g, x.cols()).range(size_t(0));
  // Without rstd, binding 3 is not written (write_rstd = 0): bind g there and call it
  // read-only. The second spec value (unused by the shader) keeps the two layouts apart.
  const uint64_t cols = uint64_t(x.cols());
  const Pipeline& p =
      rstd ? pipeline("rms_norm", 4, sizeof(RmsNormPush), rms_norm_spec(cols, 1), 0b0011)
           : pipeline("rms_norm", 4, sizeof(RmsNormPush), rms_norm_spec(cols), 0b1011);
  std::vector<RowsOf> touched = {{&x.tiles(), 0}, {&y.tiles(), 0}};
  if (residual) touched.push_back({&residual->tiles(), 0});
  if (rstd) {
    touched.push_back({&rstd->tiles(), 0});
    act_scratch_.reset();  // for bind_rows
  }
  for (const auto& [a, b] : row_segments(touched, n, max_seg_rows_)) {
    const RmsNormPush push{uint32_t(b - a), uint32_t(x.cols()), eps, rstd ? 1u : 0u};
    const BufferRange rr = rstd ? bind_rows(rstd->tiles(), a, b, false) : gr;
    if (residual) {  // x is written: x + residual
      const Pipeline& pa =
          pipeline("add_rms_norm", 5, sizeof(RmsNormPush), rms_norm_spec(cols), 0b11010);
      rec().dispatch(pa,
                     {rows_range(x.tiles(), a, b), gr, rows_range(y.tiles(), a, b), rr,
                      rows_range(residual->tiles(), a, b)},
                     push, uint32_t(b - a));
      continue;
    }
    rec().dispatch(p, {rows_range(x.tiles(), a, b), gr, rows_range(y.tiles(), a, b), rr}, push,
                   uint32_t(b - a));
    if (rstd) unbind_rows(rr, rstd->tiles(), a, b);
  }
}

void VulkanBackend::gated_act(DeviceTensor& out_t, const DeviceTensor& gate_t,
                              const DeviceTensor& up_t, int64_t n, Activation act) {
  VkTensor& out = vk_tensor(out_t);
  const VkTensor& gate = vk_tensor(gate_t);
  const VkTensor& up = vk_tensor(up_t);
  for (const VkTensor* t : {static_cast<const VkTensor*>(&out), &gate, &up}) {
    check_n(*t, n, "gated_act");
  }
  check_same_cols(gate, up, "gated_act");
  check_same_cols(gate, out, "gated_act");
  if (n == 0) return;
  const PendingLinear& held = pending_linear_;
  if (held.x && held.n_ops == 2 && held.ops[0].y == &gate && held.ops[1].y == &up && n == 1 &&
      one_piece(out.tiles(), 0, 1) && gate_up_pair({held.ops, 2}, *held.x)) {
    const PendingLinear l = held;
    pending_linear_ = {};
    record_decode_linear(l, &out, act, nullptr);
    return;
  }
  const uint32_t kind =
      uint32_t(act == Activation::Silu ? GatedActKind::Silu : GatedActKind::Relu2);
  const Pipeline& p =
      pipeline("gated_act", 3, sizeof(GatedActPush), {kWg, 0, 0, 0, 0, 0, 0, 0, 0, kind}, 0b011);
  for (const auto& [a, b] : row_segments({{&out.tiles(), 0}, {&gate.tiles(), 0}, {&up.tiles(), 0}},
                                         uint64_t(n), max_seg_rows_)) {
    const uint64_t count = (b - a) * uint64_t(out.cols());
    dispatch_flat(p,
                  {rows_range(gate.tiles(), a, b), rows_range(up.tiles(), a, b),
                   rows_range(out.tiles(), a, b)},
                  GatedActPush{uint32_t(count)}, ceil_div(count, kWg));
  }
}

void VulkanBackend::add(DeviceTensor& y_t, const DeviceTensor& x_t, int64_t n) {
  VkTensor& y = vk_tensor(y_t);
  const VkTensor& x = vk_tensor(x_t);
  check_n(x, n, "add");
  check_n(y, n, "add");
  check_same_cols(x, y, "add");
  if (n == 0) return;
  // The held bitlinear whose output x is (o, down): it adds its output to y itself.
  const PendingLinear& held = pending_linear_;
  if (held.x && held.n_ops == 1 && held.ops[0].y == &x && n == 1 && &y != held.x &&
      &y != held.norm.x && &y != held.norm.residual && one_piece(y.tiles(), 0, 1)) {
    const PendingLinear l = held;
    pending_linear_ = {};
    record_decode_linear(l, nullptr, Activation::Relu2, &y);
    return;
  }
  settle();
  if (fuse_decode_ && uint64_t(n) <= mm_.max_matvec_tokens) {  // the next rms_norm may take it
    pending_add_ = {&y, &x, uint64_t(n)};
    return;
  }
  record_add(y, x, uint64_t(n));
}

void VulkanBackend::record_add(VkTensor& y, const VkTensor& x, uint64_t n) {
  const Pipeline& p = pipeline("add", 2, sizeof(AddPush), {kWg}, 0b01);
  for (const auto& [a, b] : row_segments({{&x.tiles(), 0}, {&y.tiles(), 0}}, n, max_seg_rows_)) {
    const uint64_t count = (b - a) * uint64_t(y.cols());
    dispatch_flat(p, {rows_range(x.tiles(), a, b), rows_range(y.tiles(), a, b)},
                  AddPush{uint32_t(count), 1.0f}, ceil_div(count, kWg));
  }
}

}  // namespace trit::vk
