// Which backend runs a model: the device request (DESIGN section 4) and the fallback rules.
//   Auto         the first Vulkan device that is a real GPU (integrated or discrete) if it works,
//                else the CPU, with the reason it fell back; software drivers are never picked
//   Cpu          the CPU
//   VulkanAny    the first Vulkan device of any kind, real GPUs first; an error if none works
//   VulkanIndex  Vulkan device N as `trit devices` numbers them; an error if it does not work
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "backend/backend.h"
#include "core/thread_pool.h"

namespace trit::engine {

struct DeviceRequest {
  enum class Kind { Auto, Cpu, VulkanAny, VulkanIndex };
  Kind kind = Kind::Auto;
  int index = -1;                 // VulkanIndex
  uint64_t max_buffer_bytes = 0;  // the binding limit in bytes; 0: the device's own limit
};

// Parses a device name: "", "auto", "cpu", "vulkan" or "vulkan:N"; throws on anything else.
DeviceRequest parse_device(std::string_view spec);

struct BackendChoice {
  std::unique_ptr<Backend> backend;
  std::string fallback_reason;  // why Auto ended on the CPU ("" when it did not fall back)
};

// The backend for a request; pool serves the CPU backend (and must outlive it).
BackendChoice make_backend(const DeviceRequest& request, ThreadPool& pool);

// The CPU backend with the threads of pool (which must outlive it).
std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool);

}  // namespace trit::engine
