// The Vulkan backend's optimizer ops: per-tensor sums of squares (for clipping by global norm:
// one f32 sum per row, added up on the host in double, so tiling changes nothing) and the
// AdamW step. Both walk the row segments on which their tensors stay within one piece;
// the adapter and its moments never leave the device, only the sums come back.
#include <cstring>

#include "backend/vulkan/vk_backend.h"

namespace trit::engine::vk {
namespace {

constexpr uint32_t kAdamWWg = 256;  // adamw
constexpr uint32_t kSumWg = 64;     // sum_squares: one workgroup per row

}  // namespace

void VulkanBackend::sum_squares(std::span<const DeviceTensor* const> ts, double* out) {
  const Pipeline& p = rec_.pipeline("sum_squares", 2, sizeof(SumSquaresPush), {kSumWg}, 0b01);
  std::vector<std::vector<BufferRange>> partials(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const VkTensor& t = vk_tensor(*ts[i]);
    const uint64_t cols = uint64_t(t.cols());
    for (const auto& [a, b] : row_segments({{&t.tiles(), 0}}, uint64_t(t.rows()), 0)) {
      const BufferRange part = scratch_.host.alloc((b - a) * sizeof(float));
      rec_.dispatch_rows(p, {rows_range(t.tiles(), a, b), part},
                         SumSquaresPush{uint32_t(b - a), uint32_t(cols)}, b - a, 1);
      partials[i].push_back(part);
    }
  }
  flush(/*keep_host=*/true);
  for (size_t i = 0; i < ts.size(); ++i) {
    double s = 0;
    for (const BufferRange& part : partials[i]) {
      const auto* f = reinterpret_cast<const float*>(
          static_cast<const unsigned char*>(part.buffer->mapped()) + part.offset);
      for (uint64_t k = 0; k < part.size / sizeof(float); ++k) s += double(f[k]);
    }
    out[i] = s;
  }
  scratch_.host.reset();
}

void VulkanBackend::adamw(DeviceTensor& p_t, const DeviceTensor& g_t, DeviceTensor& m_t,
                          DeviceTensor& v_t, const AdamWScalars& k, float grad_scale) {
  VkTensor& p = vk_tensor(p_t);
  const VkTensor& g = vk_tensor(g_t);
  VkTensor& m = vk_tensor(m_t);
  VkTensor& v = vk_tensor(v_t);
  for (const VkTensor* t :
       {&g, static_cast<const VkTensor*>(&m), static_cast<const VkTensor*>(&v)}) {
    if (t->rows() != p.rows() || t->cols() != p.cols()) {
      fail("adamw: '", t->name(), "' is ", t->rows(), " x ", t->cols(), ", its parameter '",
           p.name(), "' ", p.rows(), " x ", p.cols());
    }
  }
  const Pipeline& pipe = rec_.pipeline("adamw", 4, sizeof(AdamWPush), {kAdamWWg}, 0b0001);
  const uint64_t cols = uint64_t(p.cols());
  for (const auto& [a, b] :
       row_segments({{&p.tiles(), 0}, {&g.tiles(), 0}, {&m.tiles(), 0}, {&v.tiles(), 0}},
                    uint64_t(p.rows()), 0)) {
    const uint64_t n = (b - a) * cols;
    const AdamWPush push{uint32_t(n),       grad_scale, k.decay, k.one_minus_beta1, k.beta2,
                         k.one_minus_beta2, k.bc2_sqrt, k.eps,   k.neg_step_size};
    rec_.dispatch_flat(pipe,
                       {rows_range(g.tiles(), a, b), rows_range(p.tiles(), a, b),
                        rows_range(m.tiles(), a, b), rows_range(v.tiles(), a, b)},
                       push, ceil_div(n, kAdamWWg));
  }
}

}  // namespace trit::engine::vk
