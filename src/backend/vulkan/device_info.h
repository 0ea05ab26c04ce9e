// What the Vulkan physical devices of this machine offer: identity, the limits the memory
// planner needs (DESIGN section 6), memory heaps and budgets, and optional features. Uses a
// short-lived instance of its own; never throws and never crashes when Vulkan is missing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trit::engine {

enum class VulkanDeviceType { Other, Integrated, Discrete, Virtual, Cpu };

std::string_view vulkan_device_type_name(VulkanDeviceType t);  // "discrete", "cpu", ...
std::string vulkan_version_string(uint32_t version);           // "1.3.239"
// driverVersion decoded as the vendor does (NVIDIA 10.8.8.6 bits, else as an API version).
std::string vulkan_driver_version_string(uint32_t vendor_id, uint32_t driver_version);

struct VulkanHeap {
  uint64_t size = 0;
  bool device_local = false;
  uint64_t budget = 0;  // VK_EXT_memory_budget; 0 when unknown
  uint64_t usage = 0;
};

// A cooperative matrix shape: A is m x k, B k x n, C and D m x n.
struct CoopMatShape {
  uint32_t m = 0, n = 0, k = 0;
  bool operator==(const CoopMatShape&) const = default;
};

struct VulkanDeviceInfo {
  uint32_t index = 0;  // position in vkEnumeratePhysicalDevices
  std::string name;
  VulkanDeviceType type = VulkanDeviceType::Other;
  uint32_t api_version = 0;
  uint32_t driver_version = 0;  // vendor-specific encoding
  uint32_t vendor_id = 0;
  uint32_t device_id = 0;
  std::string driver_name;  // VkPhysicalDeviceDriverProperties; empty when unknown
  std::string driver_info;

  // Limits; 0 when the device does not report them.
  uint64_t max_storage_buffer_range = 0;
  uint64_t max_memory_allocation_size = 0;  // VkPhysicalDeviceMaintenance3Properties
  uint64_t max_buffer_size = 0;  // VkPhysicalDeviceMaintenance4Properties; 0: no limit stated
  uint32_t max_compute_work_group_size[3] = {0, 0, 0};
  uint32_t max_compute_work_group_invocations = 0;
  uint32_t max_compute_work_group_count[3] = {0, 0, 0};
  uint32_t max_compute_shared_memory_size = 0;
  uint32_t max_push_constants_size = 0;
  float timestamp_period = 0;  // nanoseconds per timestamp tick
  uint32_t subgroup_size = 0;
  uint32_t min_subgroup_size = 0;  // VK_EXT_subgroup_size_control / 1.3; 0 when unknown
  uint32_t max_subgroup_size = 0;
  uint32_t subgroup_operations = 0;  // VkSubgroupFeatureFlags (basic, vote, arithmetic, ...)
  uint64_t min_storage_buffer_offset_alignment = 0;

  std::vector<VulkanHeap> heaps;
  bool has_memory_budget = false;

  // Optional features.
  bool storage_buffer_8bit = false;   // storageBuffer8BitAccess
  bool storage_buffer_16bit = false;  // storageBuffer16BitAccess
  bool shader_int8 = false;
  bool shader_int16 = false;
  bool shader_float16 = false;
  bool integer_dot_product = false;                  // VK_KHR_shader_integer_dot_product or 1.3
  bool integer_dot_product_4x8_accelerated = false;  // packed signed 4x8-bit dot is fast
  bool cooperative_matrix_khr = false;               // VK_KHR_cooperative_matrix
  bool cooperative_matrix_nv = false;                // VK_NV_cooperative_matrix
  // Shapes with int8 A and B and int32 C and result at subgroup scope, in the device's order
  // of preference: VK_NV_cooperative_matrix's and VK_KHR_cooperative_matrix's.
  std::vector<CoopMatShape> cooperative_matrix_int8;
  std::vector<CoopMatShape> cooperative_matrix_int8_khr;
  // Shapes with f16 A and B and f32 C and result at subgroup scope (the float products of
  // training), likewise.
  std::vector<CoopMatShape> cooperative_matrix_f16;
  std::vector<CoopMatShape> cooperative_matrix_f16_khr;
  bool vulkan_memory_model = false;  // vulkanMemoryModel (1.2 or VK_KHR_vulkan_memory_model)
  bool subgroup_size_control = false;

  bool is_real_gpu() const {
    return type == VulkanDeviceType::Discrete || type == VulkanDeviceType::Integrated;
  }
  // The smallest of maxStorageBufferRange, maxMemoryAllocationSize and maxBufferSize that the
  // device reports: the most one storage-buffer binding may hold.
  uint64_t binding_limit() const;
  uint64_t device_local_bytes() const;  // the largest device-local heap (budget when known)
};

struct VulkanDeviceList {
  std::vector<VulkanDeviceInfo> devices;
  uint32_t instance_version = 0;  // 0 when no loader answered
  std::string reason;             // why the list is empty (no loader, no devices, ...)
};

// Enumerates every physical device. On any failure returns an empty list and a reason.
VulkanDeviceList enumerate_vulkan_devices();

// The device trit would pick without --device: the first real GPU (discrete or integrated);
// -1 when there is none (the CPU backend). Software devices such as lavapipe never count.
int default_vulkan_device(const std::vector<VulkanDeviceInfo>& devices);

}  // namespace trit::engine
