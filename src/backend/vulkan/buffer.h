// Buffer: one VkBuffer with its own VkDeviceMemory (RAII, move-only), and BufferRange, a byte
// range of one buffer as shaders bind it and copies name it. Device buffers live in
// device-local memory (mapped too on UMA devices such as integrated GPUs and lavapipe, so
// uploads skip staging); host buffers are host-visible and coherent, for staging and readback.
#pragma once

#include <cstdint>
#include <string>

#include "backend/vulkan/vk_loader.h"

namespace trit::engine::vk {

class Context;

enum class MemoryKind {
  Device,  // device-local; mapped when the context is UMA and map_device_memory is on
  Host,    // host-visible + coherent (cached when the device offers it); always mapped
};

class Buffer {
 public:
  Buffer() = default;
  // `label` names the buffer in errors, e.g. "'blk.3.ffn_up.weight' piece 2". The size is
  // rounded up to a multiple of 4 (fills and shaders work in words). Throws OutOfDeviceMemory
  // when no heap can hold it (larger than the heap, than maxMemoryAllocationSize, or the
  // driver says so), trit::Error for other failures.
  Buffer(Context& ctx, uint64_t size, MemoryKind kind, std::string label);
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  VkBuffer handle() const { return buffer_; }
  // A number no other buffer of this process has had: a driver may hand a destroyed buffer's
  // handle to a new one, and a recording replayed (Sequence) must not take one for the other.
  uint64_t serial() const { return serial_; }
  uint64_t size() const { return size_; }
  MemoryKind kind() const { return kind_; }
  const std::string& label() const { return label_; }
  // The host address of the contents when mapped, else nullptr. Reads and writes through it
  // must not overlap GPU work on this buffer (Sequence::submit_and_wait returns after it).
  void* mapped() const { return mapped_; }
  explicit operator bool() const { return buffer_ != VK_NULL_HANDLE; }

 private:
  void release();
  const Context* ctx_ = nullptr;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  uint64_t size_ = 0;
  MemoryKind kind_ = MemoryKind::Device;
  void* mapped_ = nullptr;
  std::string label_;
  uint64_t serial_ = 0;
};

// A byte range [offset, offset + size) of a buffer. Shaders bind it as one storage buffer: the
// offset must be a multiple of minStorageBufferOffsetAlignment (piece starts are) and the size
// at most the binding limit.
struct BufferRange {
  const Buffer* buffer = nullptr;
  uint64_t offset = 0;
  uint64_t size = 0;

  BufferRange() = default;
  BufferRange(const Buffer& b) : buffer(&b), size(b.size()) {}  // the whole buffer
  BufferRange(const Buffer& b, uint64_t off, uint64_t n) : buffer(&b), offset(off), size(n) {}
};

}  // namespace trit::engine::vk
