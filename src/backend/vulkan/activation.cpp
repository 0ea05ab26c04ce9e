// The Vulkan backend's gated activations relu2(gate) * up and silu(gate) * up, forward and
// backward (gated_act.comp, gated_act_backward.comp).
#include "backend/vulkan/vk_backend.h"

namespace trit::engine::vk {
namespace {

constexpr uint32_t kActWg = 128;

}  // namespace

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
  const uint32_t kind =
      uint32_t(act == Activation::Silu ? GatedActKind::Silu : GatedActKind::Relu2);
  const Pipeline& p = rec_.pipeline("gated_act", 3, sizeof(GatedActPush),
                                    {kActWg, 0, 0, 0, 0, 0, 0, 0, 0, kind}, 0b011);
  for (const auto& [a, b] : row_segments({{&out.tiles(), 0}, {&gate.tiles(), 0}, {&up.tiles(), 0}},
                                         uint64_t(n), rec_.max_seg_rows())) {
    const uint64_t count = (b - a) * uint64_t(out.cols());
    rec_.dispatch_flat(p,
                       {rows_range(gate.tiles(), a, b), rows_range(up.tiles(), a, b),
                        rows_range(out.tiles(), a, b)},
                       GatedActPush{uint32_t(count)}, ceil_div(count, kActWg));
  }
}

void VulkanBackend::gated_act_backward(DeviceTensor& dgate_t, DeviceTensor& dup_t,
                                       const DeviceTensor& dout_t, const DeviceTensor& gate_t,
                                       const DeviceTensor& up_t, int64_t n, Activation act) {
  const char* op = "gated_act_backward";
  const int64_t cols = gate_t.cols();
  for (const DeviceTensor* t :
       std::initializer_list<const DeviceTensor*>{&dgate_t, &dup_t, &dout_t, &gate_t, &up_t}) {
    check_rows_of(*t, n, cols, op);
  }
  if (n == 0) return;
  VkTensor& dgate = vk_tensor(dgate_t);
  VkTensor& dup = vk_tensor(dup_t);
  const VkTensor& dout = vk_tensor(dout_t);
  const VkTensor& gate = vk_tensor(gate_t);
  const VkTensor& up = vk_tensor(up_t);
  if (&dgate == &dup) fail(op, ": dgate and dup are the same tensor '", dgate.name(), "'");
  scratch_.act.reset();
  const uint32_t kind =
      uint32_t(act == Activation::Silu ? GatedActKind::Silu : GatedActKind::Relu2);
  const Pipeline& p = rec_.pipeline("gated_act_backward", 5, sizeof(GatedActPush),
                                    {kActWg, 0, 0, 0, 0, 0, 0, 0, 0, kind}, 0b00111);
  for (const auto& [a, b] : row_segments({{&dgate.tiles(), 0},
                                          {&dup.tiles(), 0},
                                          {&dout.tiles(), 0},
                                          {&gate.tiles(), 0},
                                          {&up.tiles(), 0}},
                                         uint64_t(n), rec_.max_seg_rows())) {
    const uint64_t count = (b - a) * uint64_t(cols);
    const BufferRange dgr = scratch_.bind_rows(rec_, dgate.tiles(), a, b, true);
    const BufferRange dur = scratch_.bind_rows(rec_, dup.tiles(), a, b, true);
    rec_.dispatch_flat(p,
                       {scratch_.bind_rows(rec_, gate.tiles(), a, b, true),
                        scratch_.bind_rows(rec_, up.tiles(), a, b, true),
                        scratch_.bind_rows(rec_, dout.tiles(), a, b, true), dgr, dur},
                       GatedActPush{uint32_t(count)}, ceil_div(count, kActWg));
    scratch_.unbind_rows(rec_, dgr, dgate.tiles(), a, b);
    scratch_.unbind_rows(rec_, dur, dup.tiles(), a, b);
  }
}

}  // namespace trit::engine::vk
