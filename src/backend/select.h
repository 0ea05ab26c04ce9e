// Which backend runs a model: the --device flag (DESIGN section 4) and the fallback rules.
//   ""/"auto"  the first Vulkan device that is a real GPU (integrated or discrete) if it works,
//              else the CPU, with one line saying why; software drivers are never picked here
//   "cpu"      the CPU
//   "vulkan"   the first Vulkan device of any kind, real GPUs first; an error if none works
//   "vulkan:N" Vulkan device N as `trit devices` numbers them; an error if it does not work
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "backend/backend.h"
#include "backend/cpu/thread_pool.h"

namespace trit {

struct DeviceRequest {
  enum class Kind { Auto, Cpu, VulkanAny, VulkanIndex };
  Kind kind = Kind::Auto;
  int index = -1;                 // VulkanIndex
  uint64_t max_buffer_bytes = 0;  // --max-buffer-mb in bytes; 0: the device's own limit
};

// Parses a --device value; throws naming the flag on anything else.
DeviceRequest parse_device(std::string_view spec);

struct BackendChoice {
  std::unique_ptr<Backend> backend;
  std::string fallback_reason;  // why Auto ended on the CPU ("" when it did not fall back)
};

// The backend for a request; pool serves the CPU backend (and must outlive it).
BackendChoice make_backend(const DeviceRequest& request, ThreadPool& pool);

}  // namespace trit
