#include "backend/select.h"

#include <charconv>

#include "backend/cpu/cpu_backend.h"
#include "backend/vulkan/vulkan_backend.h"
#include "core/error.h"

namespace trit::engine {

DeviceRequest parse_device(std::string_view spec) {
  DeviceRequest r;
  if (spec.empty() || spec == "auto") return r;
  if (spec == "cpu") {
    r.kind = DeviceRequest::Kind::Cpu;
  } else if (spec == "vulkan") {
    r.kind = DeviceRequest::Kind::VulkanAny;
  } else if (spec.rfind("vulkan:", 0) == 0) {
    const std::string_view n = spec.substr(7);
    int index = -1;
    const auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), index);
    if (n.empty() || ec != std::errc() || end != n.data() + n.size() || index < 0) {
      fail("device ", spec, ": expected vulkan:N with N a device number from `trit devices`");
    }
    r.kind = DeviceRequest::Kind::VulkanIndex;
    r.index = index;
  } else {
    fail("device ", spec, ": unknown device, expected cpu, vulkan, vulkan:N or auto");
  }
  return r;
}

BackendChoice make_backend(const DeviceRequest& request, ThreadPool& pool) {
  BackendChoice c;
  if (request.kind == DeviceRequest::Kind::Cpu) {
    c.backend = std::make_unique<CpuBackend>(pool);
    return c;
  }
  VulkanRequest vr;
  vr.index = request.kind == DeviceRequest::Kind::VulkanIndex ? request.index : -1;
  vr.real_gpu_only = request.kind == DeviceRequest::Kind::Auto;
  vr.max_buffer_bytes = request.max_buffer_bytes;
  if (request.kind != DeviceRequest::Kind::Auto) {
    c.backend = make_vulkan_backend(vr);  // throws with the reason
    return c;
  }
  try {
    c.backend = make_vulkan_backend(vr);
  } catch (const Error& e) {
    c.fallback_reason = e.what();
    c.backend = std::make_unique<CpuBackend>(pool);
  }
  return c;
}

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool) {
  return std::make_unique<CpuBackend>(pool);
}

}  // namespace trit::engine
