// Sequence: command recording, automatic barriers, descriptor pools, submission.
#include "backend/vulkan/sequence.h"

#include <algorithm>

#include "backend/vulkan/context.h"
#include "backend/vulkan/pipeline.h"

namespace trit::vk {
namespace {

constexpr VkPipelineStageFlags kWork =
    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
constexpr VkAccessFlags kWrites = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
constexpr VkAccessFlags kAll = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                               VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;

}  // namespace

Sequence::Sequence(Context& ctx) : ctx_(ctx) {
  const Functions& vk = ctx.vk();
  VkCommandBufferAllocateInfo cai{};
  cai.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
  cai.commandPool = ctx.command_pool();
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  check(vk.vkAllocateCommandBuffers(ctx.device(), &cai, &cmd_), "vkAllocateCommandBuffers");
  VkFenceCreateInfo fci{};
  fci.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
  const VkResult r = vk.vkCreateFence(ctx.device(), &fci, nullptr, &fence_);
  if (r < 0) {
    vk.vkFreeCommandBuffers(ctx.device(), ctx.command_pool(), 1, &cmd_);
    fail_call(r, "vkCreateFence");
  }
}

Sequence::~Sequence() {
  const Functions& vk = ctx_.vk();
  const VkDevice dev = ctx_.device();
  for (const Pool& p : pools_) vk.vkDestroyDescriptorPool(dev, p.pool, nullptr);
  vk.vkDestroyFence(dev, fence_, nullptr);
  vk.vkFreeCommandBuffers(dev, ctx_.command_pool(), 1, &cmd_);
}

void Sequence::record_barrier(VkPipelineStageFlags src_stage, VkAccessFlags src_access,
                              VkPipelineStageFlags dst_stage, VkAccessFlags dst_access) {
  VkMemoryBarrier mb{};
  mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
  mb.srcAccessMask = src_access;
  mb.dstAccessMask = dst_access;
  ctx_.vk().vkCmdPipelineBarrier(cmd_, src_stage, dst_stage, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

void Sequence::begin_if_needed() {
  if (ended_) fail("vulkan: sequence already submitted; reset() it before recording more");
  if (recording_) return;
  VkCommandBufferBeginInfo bi{};
  bi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  check(ctx_.vk().vkBeginCommandBuffer(cmd_, &bi), "vkBeginCommandBuffer");
  recording_ = true;
  // Writes of earlier submissions and of the host become visible to this one.
  record_barrier(kWork | VK_PIPELINE_STAGE_HOST_BIT, kWrites | VK_ACCESS_HOST_WRITE_BIT, kWork,
                 kAll);
}

void Sequence::touch(const std::vector<Access>& acc) {
  bool hazard = false;
  for (const Access& a : acc) {
    for (const Access& b : since_barrier_) {
      if (a.buffer == b.buffer && a.begin < b.end && b.begin < a.end && (a.write || b.write)) {
        hazard = true;
      }
    }
  }
  if (hazard) barrier();
  since_barrier_.insert(since_barrier_.end(), acc.begin(), acc.end());
}

void Sequence::barrier() {
  begin_if_needed();
  record_barrier(kWork, kWrites, kWork, kAll);
  since_barrier_.clear();
  ++barriers_;
}

void Sequence::check_range(const BufferRange& r, const char* what) const {
  if (!r.buffer || !*r.buffer) fail("vulkan: ", what, ": no buffer");
  if (r.size == 0 || r.offset > r.buffer->size() || r.size > r.buffer->size() - r.offset) {
    fail("vulkan: ", what, ": bytes [", r.offset, ", ", r.offset + r.size, ") of buffer ",
         r.buffer->label(), " of ", r.buffer->size(), " bytes");
  }
}

VkDescriptorSet Sequence::allocate_set(VkDescriptorSetLayout layout, uint32_t descriptors) {
  const Functions& vk = ctx_.vk();
  while (pool_ < pools_.size() &&
         (pools_[pool_].used_sets == pools_[pool_].sets ||
          pools_[pool_].used_descriptors + descriptors > pools_[pool_].descriptors)) {
    ++pool_;
  }
  if (pool_ == pools_.size()) {  // each new pool doubles, from 64 sets
    const uint32_t sets = 64u << std::min<size_t>(pools_.size(), 10);
    Pool p{VK_NULL_HANDLE, sets, std::max(sets * 8, descriptors), 0, 0};
    VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, p.descriptors};
    VkDescriptorPoolCreateInfo pci{};
    pci.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
    pci.maxSets = p.sets;
    pci.poolSizeCount = 1;
    pci.pPoolSizes = &size;
    check(vk.vkCreateDescriptorPool(ctx_.device(), &pci, nullptr, &p.pool),
          "vkCreateDescriptorPool");
    pools_.push_back(p);
  }
  Pool& p = pools_[pool_];
  VkDescriptorSetAllocateInfo ai{};
  ai.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
  ai.descriptorPool = p.pool;
  ai.descriptorSetCount = 1;
  ai.pSetLayouts = &layout;
  VkDescriptorSet set = VK_NULL_HANDLE;
  check(vk.vkAllocateDescriptorSets(ctx_.device(), &ai, &set), "vkAllocateDescriptorSets");
  ++p.used_sets;
  p.used_descriptors += descriptors;
  return set;
}

void Sequence::dispatch(const Pipeline& p, std::initializer_list<BufferRange> bindings,
                        const void* push, size_t push_size, uint32_t gx, uint32_t gy, uint32_t gz) {
  if (bindings.size() != p.bindings()) {
    fail("vulkan: dispatch of ", p.name(), ": ", bindings.size(),
         " bindings given, the pipeline has ", p.bindings());
  }
  if (push_size != p.push_bytes() || (push_size > 0 && !push)) {
    fail("vulkan: dispatch of ", p.name(), ": ", push_size,
         " push-constant bytes given, the pipeline takes ", p.push_bytes());
  }
  const DeviceCaps& caps = ctx_.caps();
  const uint32_t groups[3] = {gx, gy, gz};
  for (int i = 0; i < 3; ++i) {
    if (groups[i] == 0 || groups[i] > caps.info.max_compute_work_group_count[i]) {
      fail("vulkan: dispatch of ", p.name(), ": ", groups[i], " groups in dimension ", i,
           " (1 to maxComputeWorkGroupCount ", caps.info.max_compute_work_group_count[i], ")");
    }
  }
  const uint64_t align = std::max<uint64_t>(caps.info.min_storage_buffer_offset_alignment, 1);
  std::vector<Access> acc;
  std::vector<VkDescriptorBufferInfo> infos;
  uint32_t i = 0;
  for (const BufferRange& r : bindings) {
    const std::string what = cat("dispatch of ", p.name(), " binding ", i);
    check_range(r, what.c_str());
    if (r.offset % align != 0) {
      fail("vulkan: ", what, ": offset ", r.offset, " is not a multiple of ", align);
    }
    if (r.size > ctx_.binding_limit()) {
      fail("vulkan: ", what, ": ", r.size, " bytes of ", r.buffer->label(),
           " are more than the binding limit of ", ctx_.binding_limit(), " bytes");
    }
    const bool write = !(p.readonly_mask() & (1u << i));
    acc.push_back({r.buffer->handle(), r.offset, r.offset + r.size, write});
    infos.push_back({r.buffer->handle(), r.offset, r.size});
    ++i;
  }
  begin_if_needed();
  touch(acc);

  const Functions& vk = ctx_.vk();
  const VkDescriptorSet set = allocate_set(p.set_layout(), p.bindings());
  std::vector<VkWriteDescriptorSet> writes(infos.size());
  for (uint32_t b = 0; b < infos.size(); ++b) {
    writes[b] = {};
    writes[b].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
    writes[b].dstSet = set;
    writes[b].dstBinding = b;
    writes[b].descriptorCount = 1;
    writes[b].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[b].pBufferInfo = &infos[b];
  }
  vk.vkUpdateDescriptorSets(ctx_.device(), uint32_t(writes.size()), writes.data(), 0, nullptr);
  vk.vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.handle());
  vk.vkCmdBindDescriptorSets(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout(), 0, 1, &set, 0,
                             nullptr);
  if (push_size > 0) {
    vk.vkCmdPushConstants(cmd_, p.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, uint32_t(push_size),
                          push);
  }
  vk.vkCmdDispatch(cmd_, gx, gy, gz);
  ++commands_;
}

void Sequence::copy(BufferRange src, BufferRange dst) {
  check_range(src, "copy source");
  check_range(dst, "copy destination");
  if (src.size != dst.size) {
    fail("vulkan: copy of ", src.size, " bytes from ", src.buffer->label(), " into ", dst.size,
         " bytes of ", dst.buffer->label());
  }
  if (src.buffer == dst.buffer && src.offset < dst.offset + dst.size &&
      dst.offset < src.offset + src.size) {
    fail("vulkan: copy within ", src.buffer->label(), ": the ranges overlap");
  }
  begin_if_needed();
  touch({{src.buffer->handle(), src.offset, src.offset + src.size, false},
         {dst.buffer->handle(), dst.offset, dst.offset + dst.size, true}});
  const VkBufferCopy region{src.offset, dst.offset, src.size};
  ctx_.vk().vkCmdCopyBuffer(cmd_, src.buffer->handle(), dst.buffer->handle(), 1, &region);
  ++commands_;
}

void Sequence::fill_zero(BufferRange dst) {
  check_range(dst, "fill");
  if (dst.offset % 4 != 0 || dst.size % 4 != 0) {
    fail("vulkan: fill of ", dst.buffer->label(), ": offset ", dst.offset, " and size ", dst.size,
         " must be multiples of 4");
  }
  begin_if_needed();
  touch({{dst.buffer->handle(), dst.offset, dst.offset + dst.size, true}});
  ctx_.vk().vkCmdFillBuffer(cmd_, dst.buffer->handle(), dst.offset, dst.size, 0);
  ++commands_;
}

void Sequence::submit_and_wait() {
  const Functions& vk = ctx_.vk();
  if (recording_) {
    // Device writes become visible to the host once the fence has signalled.
    record_barrier(kWork, kWrites, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    check(vk.vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
    recording_ = false;
    ended_ = true;
  }
  if (!ended_) return;  // nothing recorded
  check(vk.vkResetFences(ctx_.device(), 1, &fence_), "vkResetFences");
  VkSubmitInfo si{};
  si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd_;
  check(vk.vkQueueSubmit(ctx_.queue(), 1, &si, fence_), "vkQueueSubmit of ", commands_,
        " commands");
  check(vk.vkWaitForFences(ctx_.device(), 1, &fence_, VK_TRUE, UINT64_MAX),
        "vkWaitForFences after ", commands_, " commands");
}

void Sequence::reset() {
  const Functions& vk = ctx_.vk();
  check(vk.vkResetCommandBuffer(cmd_, 0), "vkResetCommandBuffer");
  for (Pool& p : pools_) {
    check(vk.vkResetDescriptorPool(ctx_.device(), p.pool, 0), "vkResetDescriptorPool");
    p.used_sets = 0;
    p.used_descriptors = 0;
  }
  pool_ = 0;
  since_barrier_.clear();
  recording_ = false;
  ended_ = false;
  commands_ = 0;
  barriers_ = 0;
}

}  // namespace trit::vk
