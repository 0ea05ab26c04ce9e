// The Vulkan backend's rms_norm forward and backward (rms_norm.comp, rms_norm_backward.comp).
#include "backend/vulkan/vk_backend.h"

namespace trit::engine::vk {
namespace {

constexpr uint32_t kNormBackwardWg = 128;  // rms_norm_backward

}  // namespace

void VulkanBackend::rms_norm(const NormOp& op, int64_t n_rows) {
  VkTensor& y = vk_tensor(*op.y);
  const VkTensor& x = vk_tensor(*op.x);
  check_n(x, n_rows, "rms_norm");
  check_n(y, n_rows, "rms_norm");
  check_same_cols(x, y, "rms_norm");
  VkTensor* rstd = op.rstd ? &vk_tensor(*op.rstd) : nullptr;
  if (rstd) {
    check_n(*rstd, n_rows, "rms_norm");
    if (rstd->cols() != 1)
      fail("rms_norm: rstd tensor '", rstd->name(), "' has ", rstd->cols(), " columns, not 1");
  }
  if (n_rows == 0) return;
  const uint64_t n = uint64_t(n_rows);
  const float* g = op.g;
  const float eps = op.eps;
  const BufferRange gr = weights_.norm(g, x.cols()).range(size_t(0));
  // Without rstd, binding 3 is not written (write_rstd = 0): bind g there and call it
  // read-only. The second spec value (unused by the shader) keeps the two layouts apart.
  const uint64_t cols = uint64_t(x.cols());
  const Pipeline& p =
      rstd ? rec_.pipeline("rms_norm", 4, sizeof(RmsNormPush), tune_.rms_norm_spec(cols, 1), 0b0011)
           : rec_.pipeline("rms_norm", 4, sizeof(RmsNormPush), tune_.rms_norm_spec(cols), 0b1011);
  std::vector<RowsOf> touched = {{&x.tiles(), 0}, {&y.tiles(), 0}};
  if (rstd) {
    touched.push_back({&rstd->tiles(), 0});
    scratch_.act.reset();  // for bind_rows
  }
  for (const auto& [a, b] : row_segments(touched, n, rec_.max_seg_rows())) {
    const RmsNormPush push{uint32_t(b - a), uint32_t(x.cols()), eps, rstd ? 1u : 0u};
    const BufferRange rr = rstd ? scratch_.bind_rows(rec_, rstd->tiles(), a, b, false) : gr;
    rec_.seq().dispatch(p, {rows_range(x.tiles(), a, b), gr, rows_range(y.tiles(), a, b), rr}, push,
                        uint32_t(b - a));
    if (rstd) scratch_.unbind_rows(rec_, rr, rstd->tiles(), a, b);
  }
}

void VulkanBackend::rms_norm_backward(DeviceTensor& dx_t, const DeviceTensor& dy_t,
                                      const DeviceTensor& x_t, const float* g,
                                      const DeviceTensor& rstd_t, int64_t n) {
  const char* op = "rms_norm_backward";
  const int64_t cols = x_t.cols();
  check_rows_of(dx_t, n, cols, op);
  check_rows_of(dy_t, n, cols, op);
  check_rows_of(x_t, n, cols, op);
  check_rows_of(rstd_t, n, 1, op);
  if (n == 0) return;
  VkTensor& dx = vk_tensor(dx_t);
  const VkTensor& dy = vk_tensor(dy_t);
  const VkTensor& x = vk_tensor(x_t);
  const VkTensor& rstd = vk_tensor(rstd_t);
  if (&dx == &dy || &dx == &x) fail(op, ": dx '", dx.name(), "' may not be dy or x");
  const BufferRange gr = weights_.norm(g, cols).range(size_t(0));
  const Pipeline& p = rec_.pipeline("rms_norm_backward", 5, sizeof(RmsNormBackwardPush),
                                    {kNormBackwardWg}, 0b01111);
  scratch_.act.reset();
  for (const auto& [a, b] :
       row_segments({{&dx.tiles(), 0}, {&dy.tiles(), 0}, {&x.tiles(), 0}, {&rstd.tiles(), 0}},
                    uint64_t(n), rec_.max_seg_rows())) {
    const RmsNormBackwardPush push{uint32_t(b - a), uint32_t(cols)};
    const BufferRange dxr = scratch_.bind_rows(rec_, dx.tiles(), a, b, true);
    rec_.seq().dispatch(p,
                        {scratch_.bind_rows(rec_, dy.tiles(), a, b, true),
                         scratch_.bind_rows(rec_, x.tiles(), a, b, true), gr,
                         scratch_.bind_rows(rec_, rstd.tiles(), a, b, true), dxr},
                        push, uint32_t(b - a));
    scratch_.unbind_rows(rec_, dxr, dx.tiles(), a, b);
  }
}

}  // namespace trit::engine::vk
