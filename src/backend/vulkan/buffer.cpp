// Buffer: memory type choice, allocation with a distinct out-of-memory error, mapping.
#include "backend/vulkan/buffer.h"

#include <atomic>
#include <utility>
#include <vector>

#include "backend/vulkan/context.h"

namespace trit::engine::vk {
namespace {

std::atomic<uint64_t> g_next_serial{1};

std::string mib(uint64_t bytes) {
  if (bytes % (1 << 20) == 0) return cat(bytes >> 20, " MiB");
  if (bytes < (1 << 20)) return cat(bytes, " bytes");
  return cat(double(bytes) / double(1 << 20), " MiB");
}

// Memory types to try, best first: each has all of `required`; those with `preferred` first.
std::vector<uint32_t> candidates(const VkPhysicalDeviceMemoryProperties& mem, uint32_t type_bits,
                                 VkMemoryPropertyFlags required, VkMemoryPropertyFlags preferred) {
  std::vector<uint32_t> best, rest;
  for (uint32_t t = 0; t < mem.memoryTypeCount; ++t) {
    const VkMemoryPropertyFlags f = mem.memoryTypes[t].propertyFlags;
    if (!(type_bits & (1u << t)) || (f & required) != required) continue;
    ((f & preferred) == preferred ? best : rest).push_back(t);
  }
  best.insert(best.end(), rest.begin(), rest.end());
  return best;
}

}  // namespace

Buffer::Buffer(Context& ctx, uint64_t size, MemoryKind kind, std::string label)
    : ctx_(&ctx),
      size_((size + 3) & ~uint64_t(3)),
      kind_(kind),
      label_(std::move(label)),
      serial_(g_next_serial.fetch_add(1, std::memory_order_relaxed)) {
  const Functions& vk = ctx.vk();
  const VkDevice dev = ctx.device();
  if (size_ == 0) fail("vulkan: buffer ", label_, ": size 0");
  try {
    VkBufferCreateInfo bci{};
    bci.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
    bci.size = size_;
    bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    const uint64_t max_buffer = ctx.caps().info.max_buffer_size;
    if (max_buffer != 0 && size_ > max_buffer) {
      throw OutOfDeviceMemory(cat("vulkan: buffer ", label_, " (", mib(size_),
                                  "): more than maxBufferSize (", mib(max_buffer), ")"));
    }
    check(vk.vkCreateBuffer(dev, &bci, nullptr, &buffer_), "vkCreateBuffer for ", label_, " (",
          mib(size_), ")");
    VkMemoryRequirements req{};
    vk.vkGetBufferMemoryRequirements(dev, buffer_, &req);

    const VkPhysicalDeviceMemoryProperties& mem = ctx.memory_properties();
    const VkMemoryPropertyFlags host =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    std::vector<uint32_t> types;
    if (kind == MemoryKind::Host) {
      types = candidates(mem, req.memoryTypeBits, host, VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
    } else if (ctx.caps().uma && ctx.options().map_device_memory) {
      types = candidates(mem, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, host);
    } else {
      types = candidates(mem, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
    }
    if (types.empty()) {
      fail("vulkan: buffer ", label_, ": no ",
           kind == MemoryKind::Host ? "host-visible" : "device-local", " memory type fits it");
    }

    // Try each memory type; the heap of the last one tried names the failure.
    VkResult r = VK_ERROR_OUT_OF_DEVICE_MEMORY;
    std::string why;
    for (uint32_t t : types) {
      const VkMemoryHeap& heap = mem.memoryHeaps[mem.memoryTypes[t].heapIndex];
      const uint64_t max_alloc = ctx.caps().info.max_memory_allocation_size;
      if (req.size > heap.size) {
        why = cat("more than its heap of ", mib(heap.size));
        continue;
      }
      if (max_alloc != 0 && req.size > max_alloc) {
        why = cat("more than maxMemoryAllocationSize (", mib(max_alloc), ")");
        continue;
      }
      VkMemoryAllocateInfo mai{};
      mai.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
      mai.allocationSize = req.size;
      mai.memoryTypeIndex = t;
      r = vk.vkAllocateMemory(dev, &mai, nullptr, &memory_);
      if (r == VK_SUCCESS) {
        const VkMemoryPropertyFlags f = mem.memoryTypes[t].propertyFlags;
        const bool map =
            (f & host) == host &&
            (kind == MemoryKind::Host || (ctx.caps().uma && ctx.options().map_device_memory));
        check(vk.vkBindBufferMemory(dev, buffer_, memory_, 0), "vkBindBufferMemory for ", label_);
        if (map) {
          check(vk.vkMapMemory(dev, memory_, 0, VK_WHOLE_SIZE, 0, &mapped_), "vkMapMemory for ",
                label_);
        }
        return;
      }
      memory_ = VK_NULL_HANDLE;
      if (r != VK_ERROR_OUT_OF_DEVICE_MEMORY && r != VK_ERROR_OUT_OF_HOST_MEMORY) break;
    }
    if (!why.empty() && r == VK_ERROR_OUT_OF_DEVICE_MEMORY) {
      throw OutOfDeviceMemory(cat("vulkan: vkAllocateMemory for ", label_, " (", mib(size_),
                                  "): VK_ERROR_OUT_OF_DEVICE_MEMORY (", why, ")"));
    }
    fail_call(r, cat("vkAllocateMemory for ", label_, " (", mib(size_), ")"));
  } catch (...) {
    release();
    throw;
  }
}

Buffer::~Buffer() {
  release();
}

Buffer::Buffer(Buffer&& o) noexcept
    : ctx_(o.ctx_),
      buffer_(std::exchange(o.buffer_, VK_NULL_HANDLE)),
      memory_(std::exchange(o.memory_, VK_NULL_HANDLE)),
      size_(std::exchange(o.size_, 0)),
      kind_(o.kind_),
      mapped_(std::exchange(o.mapped_, nullptr)),
      label_(std::move(o.label_)),
      serial_(std::exchange(o.serial_, 0)) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    ctx_ = o.ctx_;
    buffer_ = std::exchange(o.buffer_, VK_NULL_HANDLE);
    memory_ = std::exchange(o.memory_, VK_NULL_HANDLE);
    size_ = std::exchange(o.size_, 0);
    kind_ = o.kind_;
    mapped_ = std::exchange(o.mapped_, nullptr);
    serial_ = std::exchange(o.serial_, 0);
    label_ = std::move(o.label_);
  }
  return *this;
}

void Buffer::release() {
  if (!ctx_) return;
  const Functions& vk = ctx_->vk();
  if (buffer_ != VK_NULL_HANDLE) vk.vkDestroyBuffer(ctx_->device(), buffer_, nullptr);
  if (memory_ != VK_NULL_HANDLE) vk.vkFreeMemory(ctx_->device(), memory_, nullptr);  // unmaps
  buffer_ = VK_NULL_HANDLE;
  memory_ = VK_NULL_HANDLE;
  mapped_ = nullptr;
}

}  // namespace trit::engine::vk
