// Sequence: command recording, automatic barriers, descriptor pools, submission.
#include "backend/vulkan/sequence.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string_view>

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
  const char* r = std::getenv("TRIT_VK_REPLAY");
  replay_ = ctx.caps().enabled.push_descriptor && queries_ == VK_NULL_HANDLE &&
            !(r && std::string_view(r) == "0");
}

Sequence::~Sequence() {
  const Functions& vk = ctx_.vk();
  const VkDevice dev = ctx_.device();
  // Chunks submitted without a wait may still run and use the pools' descriptor sets.
  if (!ended_ && submitted_ > 0) vk.vkQueueWaitIdle(ctx_.queue());
  for (const Pool& p : pools_) vk.vkDestroyDescriptorPool(dev, p.pool, nullptr);
  if (queries_ != VK_NULL_HANDLE) vk.vkDestroyQueryPool(dev, queries_, nullptr);
  vk.vkDestroyFence(dev, fence_, nullptr);
  if (!all_cbs_.empty()) {
    vk.vkFreeCommandBuffers(dev, ctx_.command_pool(), uint32_t(all_cbs_.size()), all_cbs_.data());
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

VkCommandBuffer Sequence::take_command_buffer() {
  if (!free_cbs_.empty()) {
    const VkCommandBuffer cb = free_cbs_.back();
    free_cbs_.pop_back();
    return cb;
  }
  VkCommandBufferAllocateInfo cai{};
  cai.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
  cai.commandPool = ctx_.command_pool();
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  VkCommandBuffer cb = VK_NULL_HANDLE;
  check(ctx_.vk().vkAllocateCommandBuffers(ctx_.device(), &cai, &cb), "vkAllocateCommandBuffers");
  all_cbs_.push_back(cb);
  return cb;
}

void Sequence::give_back(VkCommandBuffer cb) {
  check(ctx_.vk().vkResetCommandBuffer(cb, 0), "vkResetCommandBuffer");
  free_cbs_.push_back(cb);
}

void Sequence::open_command_buffer() {
  cmd_ = take_command_buffer();
  VkCommandBufferBeginInfo bi{};
  bi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  check(ctx_.vk().vkBeginCommandBuffer(cmd_, &bi), "vkBeginCommandBuffer");
  if (queries_ != VK_NULL_HANDLE && rec_.chunks.empty()) {
    ctx_.vk().vkCmdResetQueryPool(cmd_, queries_, 0, query_capacity_);
    ctx_.vk().vkCmdWriteTimestamp(cmd_, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, queries_, 0);
    stamped_.clear();
  }
  // Writes of earlier submissions and of the host become visible to this one.
  record_barrier(kWork | VK_PIPELINE_STAGE_HOST_BIT, kWrites | VK_ACCESS_HOST_WRITE_BIT, kWork,
                 kAll);
}

void Sequence::begin_if_needed() {
  if (ended_) fail("vulkan: sequence already submitted; reset() it before recording more");
  if (recording_) return;
  recording_ = true;
  chunk_commands_ = 0;
  chunk_first_ = rec_.commands.size();
  since_barrier_.clear();  // the chunk's first barrier orders everything before it
  if (host_profiled_ && rec_.chunks.empty()) record_start_ns_ = host_ns();
  if (!matching_) open_command_buffer();
}

bool Sequence::same(const Recording& a, size_t i, const Recording& b, size_t j) {
  const Command& x = a.commands[i];
  const Command& y = b.commands[j];
  if (x.kind != y.kind || x.pipeline != y.pipeline || x.bound_count != y.bound_count ||
      x.push_size != y.push_size || x.groups[0] != y.groups[0] || x.groups[1] != y.groups[1] ||
      x.groups[2] != y.groups[2]) {
    return false;
  }
  return std::equal(a.bound.begin() + x.bound_first,
                    a.bound.begin() + x.bound_first + x.bound_count,
                    b.bound.begin() + y.bound_first) &&
         std::equal(a.push.begin() + x.push_first, a.push.begin() + x.push_first + x.push_size,
                    b.push.begin() + y.push_first);
}

bool Sequence::add(Command c, std::span<const Bound> bound, const void* push) {
  c.bound_first = uint32_t(rec_.bound.size());
  c.bound_count = uint32_t(bound.size());
  rec_.bound.insert(rec_.bound.end(), bound.begin(), bound.end());
  c.push_first = uint32_t(rec_.push.size());
  const auto* bytes = static_cast<const uint8_t*>(push);
  rec_.push.insert(rec_.push.end(), bytes, bytes + c.push_size);
  const size_t i = rec_.commands.size();
  rec_.commands.push_back(c);
  if (!matching_) return false;
  if (i < prev_.commands.size() && same(prev_, i, rec_, i)) return true;
  diverge(i);
  return false;
}

void Sequence::diverge(size_t upto) {
  static const bool log = std::getenv("TRIT_VK_REPLAY_LOG") != nullptr;
  if (log) {
    const Command* c = upto < rec_.commands.size() ? &rec_.commands[upto] : nullptr;
    std::fprintf(stderr, "replay: recording anew from command %zu of %zu (%s)\n", upto,
                 prev_.commands.size(),
                 !c            ? "the end"
                 : c->pipeline ? c->pipeline->name().c_str()
                               : "a copy, fill or barrier");
  }
  matching_ = false;
  matched_ = upto;
  // The chunks that went out are this recording's now; the rest of the previous one's go.
  for (size_t k = rec_.chunks.size(); k < prev_.chunks.size(); ++k) give_back(prev_.chunks[k].cb);
  prev_.clear();
  open_command_buffer();
  for (size_t j = chunk_first_; j < upto; ++j) issue(rec_, j);
}

void Sequence::issue(const Recording& rec, size_t i) {
  const Functions& vk = ctx_.vk();
  const Command& c = rec.commands[i];
  const Bound* b = rec.bound.data() + c.bound_first;
  switch (c.kind) {
    case Command::Kind::Barrier:
      record_barrier(kWork, kWrites, kWork, kAll);
      return;
    case Command::Kind::Copy: {
      const VkBufferCopy region{b[0].offset, b[1].offset, b[0].size};
      vk.vkCmdCopyBuffer(cmd_, b[0].buffer, b[1].buffer, 1, &region);
      return;
    }
    case Command::Kind::Fill:
      vk.vkCmdFillBuffer(cmd_, b[0].buffer, b[0].offset, b[0].size, 0);
      return;
    case Command::Kind::Dispatch:
      break;
  }
  const Pipeline& p = *c.pipeline;
  const uint32_t n = c.bound_count;
  VkDescriptorBufferInfo infos[kMaxBindings];
  VkWriteDescriptorSet writes[kMaxBindings];
  const bool pushed = ctx_.caps().enabled.push_descriptor;
  const VkDescriptorSet set = pushed ? VK_NULL_HANDLE : allocate_set(p.set_layout(), n);
  for (uint32_t k = 0; k < n; ++k) {
    infos[k] = {b[k].buffer, b[k].offset, b[k].size};
    writes[k] = {};
    writes[k].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
    writes[k].dstSet = set;
    writes[k].dstBinding = k;
    writes[k].descriptorCount = 1;
    writes[k].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[k].pBufferInfo = &infos[k];
  }
  vk.vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.handle());
  if (pushed) {
    vk.vkCmdPushDescriptorSetKHR(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout(), 0, n, writes);
  } else {
    vk.vkUpdateDescriptorSets(ctx_.device(), n, writes, 0, nullptr);
    vk.vkCmdBindDescriptorSets(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout(), 0, 1, &set, 0,
                               nullptr);
  }
  if (c.push_size > 0) {
    vk.vkCmdPushConstants(cmd_, p.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, c.push_size,
                          rec.push.data() + c.push_first);
  }
  vk.vkCmdDispatch(cmd_, c.groups[0], c.groups[1], c.groups[2]);
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
  if (!add(Command{}, {}, nullptr)) record_barrier(kWork, kWrites, kWork, kAll);
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
  Bound bound[kMaxBindings];
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
    bound[n] = {r.buffer->handle(), r.buffer->serial(), r.offset, r.size};
    ++n;
  }
  begin_if_needed();
  touch(std::span<const Access>(acc, n));
  Command c;
  c.kind = Command::Kind::Dispatch;
  c.pipeline = &p;
  c.groups[0] = gx;
  c.groups[1] = gy;
  c.groups[2] = gz;
  c.push_size = uint32_t(push_size);
  if (!add(c, std::span<const Bound>(bound, n), push)) issue(rec_, rec_.commands.size() - 1);
  ++commands_;
  stamp(&p.name());
  end_command();
}

void Sequence::end_command() {
  // A profile keeps one chunk: between chunks the device waits for the host, and the wait
  // would be charged to the command after it.
  if (++chunk_commands_ < chunk_size() || queries_ != VK_NULL_HANDLE) return;
  close_chunk();
}

void Sequence::close_chunk() {
  // Hand the GPU what is recorded so far: it works while the host records the rest. The
  // barrier that starts the next chunk orders it after this one.
  const size_t k = rec_.chunks.size();
  if (matching_ && (k + 1 >= prev_.chunks.size() || prev_.chunks[k].end != rec_.commands.size())) {
    diverge(rec_.commands.size());  // the previous recording's chunks ended elsewhere
  }
  if (matching_) {
    rec_.chunks.push_back(prev_.chunks[k]);
  } else {
    check(ctx_.vk().vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
    rec_.chunks.push_back({cmd_, rec_.commands.size()});
  }
  recording_ = false;
  VkSubmitInfo si{};
  si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &rec_.chunks.back().cb;
  check(ctx_.vk().vkQueueSubmit(ctx_.queue(), 1, &si, VK_NULL_HANDLE), "vkQueueSubmit of ",
        chunk_commands_, " commands");
  ++submitted_;
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
  const Bound bound[2] = {{src.buffer->handle(), src.buffer->serial(), src.offset, src.size},
                          {dst.buffer->handle(), dst.buffer->serial(), dst.offset, dst.size}};
  Command c;
  c.kind = Command::Kind::Copy;
  if (!add(c, bound, nullptr)) issue(rec_, rec_.commands.size() - 1);
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
  const Bound bound[1] = {{dst.buffer->handle(), dst.buffer->serial(), dst.offset, dst.size}};
  Command c;
  c.kind = Command::Kind::Fill;
  if (!add(c, bound, nullptr)) issue(rec_, rec_.commands.size() - 1);
  ++commands_;
  stamp(&kFillName);
  end_command();
}

void Sequence::submit_and_wait() {
  const Functions& vk = ctx_.vk();
  size_t first = 0;  // the first chunk to submit now
  const bool fresh = !ended_;
  if (!ended_) {
    if (!recording_ && rec_.chunks.empty()) return;  // nothing recorded
    // The last chunk (an empty one when everything went out already) carries the barrier that
    // makes device writes visible to the host once the fence has signalled.
    begin_if_needed();
    if (matching_ && (rec_.commands.size() != prev_.commands.size() ||
                      rec_.chunks.size() + 1 != prev_.chunks.size())) {
      diverge(rec_.commands.size());
    }
    if (matching_) {
      rec_.chunks.push_back(prev_.chunks.back());
      matched_ = rec_.commands.size();
    } else {
      record_barrier(kWork, kWrites, VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
      check(vk.vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
      rec_.chunks.push_back({cmd_, rec_.commands.size()});
    }
    replayed_ = matched_;
    recording_ = false;
    ended_ = true;
    first = submitted_;
  }
  // Called again after the end (first = 0): every chunk runs once more, in order.
  const double submit_ns = host_ns();
  check(vk.vkResetFences(ctx_.device(), 1, &fence_), "vkResetFences");
  std::vector<VkCommandBuffer> cbs;
  cbs.reserve(rec_.chunks.size() - first);
  for (size_t k = first; k < rec_.chunks.size(); ++k) cbs.push_back(rec_.chunks[k].cb);
  VkSubmitInfo si{};
  si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  si.commandBufferCount = uint32_t(cbs.size());
  si.pCommandBuffers = cbs.data();
  // The fence signals once these and everything submitted before them have finished.
  check(ctx_.injected_fault(fault_counted_), "vkQueueSubmit of ", commands_, " commands");
  check(vk.vkQueueSubmit(ctx_.queue(), 1, &si, fence_), "vkQueueSubmit of ", commands_,
        " commands");
  submitted_ = rec_.chunks.size();
  check(vk.vkWaitForFences(ctx_.device(), 1, &fence_, VK_TRUE, UINT64_MAX),
        "vkWaitForFences after ", commands_, " commands");
  waited_ = true;
  if (queries_ != VK_NULL_HANDLE) {
    collect_profile(submit_ns - record_start_ns_, host_ns() - submit_ns);
  } else if (host_profiled_ && fresh) {
    ctx_.profile()->add_submission(submit_ns - record_start_ns_, 0, host_ns() - submit_ns);
  }
}

void Sequence::reset() {
  const Functions& vk = ctx_.vk();
  if (!ended_ && submitted_ > 0) submit_and_wait();  // chunks still running must finish first
  if (ended_ && !waited_) {
    // The last submission failed: chunks sent before it may still run, and the recording is
    // not one to replay.
    vk.vkQueueWaitIdle(ctx_.queue());
    ended_ = false;
    recording_ = false;
  }
  if (ended_ && replay_) {
    // This recording serves the next one. Its chunks are the previous one's where it matched
    // them (and diverge() let the others go), so nothing else is held.
    std::swap(prev_, rec_);
  } else {
    if (recording_ && !matching_) give_back(cmd_);  // an open chunk, never submitted
    // Chunks submitted by this recording that are not the previous one's.
    for (size_t k = 0; k < rec_.chunks.size(); ++k) {
      if (k >= prev_.chunks.size() || prev_.chunks[k].cb != rec_.chunks[k].cb) {
        give_back(rec_.chunks[k].cb);
      }
    }
    // prev_ stays: its chunks still serve a next recording that matches them (without replay
    // it is always empty).
  }
  rec_.clear();
  matching_ = replay_ && !prev_.chunks.empty();
  matched_ = 0;
  cmd_ = VK_NULL_HANDLE;
  chunk_commands_ = 0;
  chunk_first_ = 0;
  for (Pool& p : pools_) {
    check(vk.vkResetDescriptorPool(ctx_.device(), p.pool, 0), "vkResetDescriptorPool");
    p.used_sets = 0;
    p.used_descriptors = 0;
  }
  pool_ = 0;
  since_barrier_.clear();
  recording_ = false;
  ended_ = false;
  waited_ = false;
  submitted_ = 0;
  commands_ = 0;
  barriers_ = 0;
}

}  // namespace trit::engine::vk
