// Sequence: command recording, automatic barriers, descriptor pools, submission.
#include "backend/vulkan/sequence.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "backend/vulkan/context.h"
#include "backend/vulkan/pipeline.h"
#include "backend/vulkan/profile.h"

namespace trit::engine::vk {
namespace {

constexpr VkPipelineStageFlags kWork =
    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
constexpr VkAccessFlags kWrites = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
constexpr uint32_t kMaxBindings = 32;  // Pipeline's bound
const std::string kCopyName = "(copy)";
const std::string kFillName = "(fill)";

constexpr VkAccessFlags kAll = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                               VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;

}  // namespace

Sequence::Sequence(Context& ctx, bool profiled) : ctx_(ctx), fault_counted_(profiled) {
  const Functions& vk = ctx.vk();
  VkFenceCreateInfo fci{};
  fci.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
  check(vk.vkCreateFence(ctx.device(), &fci, nullptr, &fence_), "vkCreateFence");
  if (const char* e = std::getenv("TRIT_VK_CHUNK")) {
    unsigned first = 0, most = 0;
    if (std::sscanf(e, "%u,%u", &first, &most) == 2 && first >= 1 && most >= first) {
      first_chunk_ = first;
      max_chunk_ = most;
    }
  }
  host_profiled_ = profiled && ctx.profile();
  if (host_profiled_ && !Profile::host_only()) {
    query_capacity_ = 16384;
    VkQueryPoolCreateInfo qi{};
    qi.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO;
    qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
    qi.queryCount = query_capacity_;
    if (vk.vkCreateQueryPool(ctx.device(), &qi, nullptr, &queries_) < 0) query_capacity_ = 0;
  }
}

Sequence::~Sequence() {
  const Functions& vk = ctx_.vk();
  const VkDevice dev = ctx_.device();
  // Chunks submitted without a wait may still run and use the pools' descriptor sets.
  if (!ended_ && chunk_ > 0) vk.vkQueueWaitIdle(ctx_.queue());
  for (const Pool& p : pools_) vk.vkDestroyDescriptorPool(dev, p.pool, nullptr);
  if (queries_ != VK_NULL_HANDLE) vk.vkDestroyQueryPool(dev, queries_, nullptr);
  vk.vkDestroyFence(dev, fence_, nullptr);
  if (!cmds_.empty()) {
    vk.vkFreeCommandBuffers(dev, ctx_.command_pool(), uint32_t(cmds_.size()), cmds_.data());
  }
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
  if (chunk_ == cmds_.size()) {
    VkCommandBufferAllocateInfo cai{};
    cai.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
    cai.commandPool = ctx_.command_pool();
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    VkCommandBuffer cb = VK_NULL_HANDLE;
    check(ctx_.vk().vkAllocateCommandBuffers(ctx_.device(), &cai, &cb), "vkAllocateCommandBuffers");
    cmds_.push_back(cb);
  }
  cmd_ = cmds_[chunk_];
  VkCommandBufferBeginInfo bi{};
  bi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  check(ctx_.vk().vkBeginCommandBuffer(cmd_, &bi), "vkBeginCommandBuffer");
  recording_ = true;
  chunk_commands_ = 0;
  since_barrier_.clear();  // the barrier below orders everything before it
  if (host_profiled_ && chunk_ == 0) record_start_ns_ = host_ns();
  if (queries_ != VK_NULL_HANDLE && chunk_ == 0) {
    ctx_.vk().vkCmdResetQueryPool(cmd_, queries_, 0, query_capacity_);
    ctx_.vk().vkCmdWriteTimestamp(cmd_, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, queries_, 0);
    stamped_.clear();
  }
  // Writes of earlier submissions and of the host become visible to this one.
  record_barrier(kWork | VK_PIPELINE_STAGE_HOST_BIT, kWrites | VK_ACCESS_HOST_WRITE_BIT, kWork,
                 kAll);
}

void Sequence::touch(std::span<const Access> acc) {
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
  // Decoding records hundreds of dispatches per token: no allocations on this path.
  const uint64_t align = std::max<uint64_t>(caps.info.min_storage_buffer_offset_alignment, 1);
  Access acc[kMaxBindings];
  VkDescriptorBufferInfo infos[kMaxBindings];
  uint32_t n = 0;
  for (const BufferRange& r : bindings) {
    if (!r.buffer || !*r.buffer || r.size == 0 || r.offset > r.buffer->size() ||
        r.size > r.buffer->size() - r.offset) {
      check_range(r, cat("dispatch of ", p.name(), " binding ", n).c_str());
    }
    if (r.offset % align != 0) {
      fail("vulkan: dispatch of ", p.name(), " binding ", n, ": offset ", r.offset,
           " is not a multiple of ", align);
    }
    if (r.size > ctx_.binding_limit()) {
      fail("vulkan: dispatch of ", p.name(), " binding ", n, ": ", r.size, " bytes of ",
           r.buffer->label(), " are more than the binding limit of ", ctx_.binding_limit(),
           " bytes");
    }
    const bool write = !(p.readonly_mask() & (1u << n));
    acc[n] = {r.buffer->handle(), r.offset, r.offset + r.size, write};
    infos[n] = {r.buffer->handle(), r.offset, r.size};
    ++n;
  }
  begin_if_needed();
  touch(std::span<const Access>(acc, n));

  const Functions& vk = ctx_.vk();
  const bool pushed = caps.enabled.push_descriptor;
  const VkDescriptorSet set = pushed ? VK_NULL_HANDLE : allocate_set(p.set_layout(), n);
  VkWriteDescriptorSet writes[kMaxBindings];
  for (uint32_t b = 0; b < n; ++b) {
    writes[b] = {};
    writes[b].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
    writes[b].dstSet = set;
    writes[b].dstBinding = b;
    writes[b].descriptorCount = 1;
    writes[b].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[b].pBufferInfo = &infos[b];
  }
  vk.vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.handle());
  if (pushed) {
    vk.vkCmdPushDescriptorSetKHR(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout(), 0, n, writes);
  } else {
    vk.vkUpdateDescriptorSets(ctx_.device(), n, writes, 0, nullptr);
    vk.vkCmdBindDescriptorSets(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout(), 0, 1, &set, 0,
                               nullptr);
  }
  if (push_size > 0) {
    vk.vkCmdPushConstants(cmd_, p.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, uint32_t(push_size),
                          push);
  }
  vk.vkCmdDispatch(cmd_, gx, gy, gz);
  ++commands_;
  stamp(&p.name());
  end_command();
}

void Sequence::end_command() {
  // A profile keeps one chunk: between chunks the device waits for the host, and the wait
  // would be charged to the command after it.
  if (++chunk_commands_ < chunk_size() || queries_ != VK_NULL_HANDLE) return;
  // Hand the GPU what is recorded so far: it works while the host records the rest. The
  // barrier that starts the next chunk orders it after this one.
  check(ctx_.vk().vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
  recording_ = false;
  VkSubmitInfo si{};
  si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd_;
  check(ctx_.vk().vkQueueSubmit(ctx_.queue(), 1, &si, VK_NULL_HANDLE), "vkQueueSubmit of ",
        chunk_commands_, " commands");
  ++chunk_;
}

void Sequence::stamp(const std::string* name) {
  if (queries_ == VK_NULL_HANDLE || stamped_.size() + 1 >= query_capacity_) return;
  stamped_.push_back(name);
  ctx_.vk().vkCmdWriteTimestamp(cmd_, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries_,
                                uint32_t(stamped_.size()));
}

void Sequence::collect_profile(double record_ns, double wait_ns) {
  Profile* prof = ctx_.profile();
  if (!prof || queries_ == VK_NULL_HANDLE) return;
  std::vector<uint64_t> ticks(stamped_.size() + 1);
  if (ctx_.vk().vkGetQueryPoolResults(ctx_.device(), queries_, 0, uint32_t(ticks.size()),
                                      ticks.size() * sizeof(uint64_t), ticks.data(),
                                      sizeof(uint64_t), VK_QUERY_RESULT_64_BIT) != VK_SUCCESS) {
    return;
  }
  for (size_t i = 0; i < stamped_.size(); ++i) {
    prof->add_command(*stamped_[i], double(ticks[i + 1] - ticks[i]) * prof->ns_per_tick());
  }
  prof->add_submission(record_ns, double(ticks.back() - ticks.front()) * prof->ns_per_tick(),
                       wait_ns);
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
  const Access acc[2] = {{src.buffer->handle(), src.offset, src.offset + src.size, false},
                         {dst.buffer->handle(), dst.offset, dst.offset + dst.size, true}};
  touch(acc);
  const VkBufferCopy region{src.offset, dst.offset, src.size};
  ctx_.vk().vkCmdCopyBuffer(cmd_, src.buffer->handle(), dst.buffer->handle(), 1, &region);
  ++commands_;
  stamp(&kCopyName);
  end_command();
}

void Sequence::fill_zero(BufferRange dst) {
  check_range(dst, "fill");
  if (dst.offset % 4 != 0 || dst.size % 4 != 0) {
    fail("vulkan: fill of ", dst.buffer->label(), ": offset ", dst.offset, " and size ", dst.size,
         " must be multiples of 4");
  }
  begin_if_needed();
  const Access acc[1] = {{dst.buffer->handle(), dst.offset, dst.offset + dst.size, true}};
  touch(acc);
  ctx_.vk().vkCmdFillBuffer(cmd_, dst.buffer->handle(), dst.offset, dst.size, 0);
  ++commands_;
  stamp(&kFillName);
  end_command();
}

void Sequence::submit_and_wait() {
  const Functions& vk = ctx_.vk();
  uint32_t first = 0;  // the first chunk to submit now
  const bool fresh = !ended_;
  if (!ended_) {
    if (!recording_ && chunk_ == 0) return;  // nothing recorded
    // The last chunk (an empty one when everything went out already) carries the barrier that
    // makes device writes visible to the host once the fence has signalled.
    begin_if_needed();
    record_barrier(kWork, kWrites, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    check(vk.vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
    recording_ = false;
    ended_ = true;
    first = uint32_t(chunk_);
    chunks_ = chunk_ + 1;
  }
  // Called again after the end (first = 0): every chunk runs once more, in order.
  const double submit_ns = host_ns();
  check(vk.vkResetFences(ctx_.device(), 1, &fence_), "vkResetFences");
  VkSubmitInfo si{};
  si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  si.commandBufferCount = uint32_t(chunks_) - first;
  si.pCommandBuffers = cmds_.data() + first;
  // The fence signals once these and everything submitted before them have finished.
  check(ctx_.injected_fault(fault_counted_), "vkQueueSubmit of ", commands_, " commands");
  check(vk.vkQueueSubmit(ctx_.queue(), 1, &si, fence_), "vkQueueSubmit of ", commands_,
        " commands");
  check(vk.vkWaitForFences(ctx_.device(), 1, &fence_, VK_TRUE, UINT64_MAX),
        "vkWaitForFences after ", commands_, " commands");
  if (queries_ != VK_NULL_HANDLE) {
    collect_profile(submit_ns - record_start_ns_, host_ns() - submit_ns);
  } else if (host_profiled_ && fresh) {
    ctx_.profile()->add_submission(submit_ns - record_start_ns_, 0, host_ns() - submit_ns);
  }
}

void Sequence::reset() {
  const Functions& vk = ctx_.vk();
  if (!ended_ && chunk_ > 0) submit_and_wait();  // chunks still running must finish first
  // The chunks begun since the last reset (a long recording leaves many buffers behind).
  const size_t used = ended_ ? chunks_ : chunk_ + (recording_ ? 1 : 0);
  for (size_t i = 0; i < used; ++i) {
    check(vk.vkResetCommandBuffer(cmds_[i], 0), "vkResetCommandBuffer");
  }
  chunk_ = 0;
  chunks_ = 0;
  chunk_commands_ = 0;
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

}  // namespace trit::engine::vk
