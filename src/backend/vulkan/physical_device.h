// Reading one physical device: identity, limits, features, heaps and budgets, as
// VulkanDeviceInfo. Shared by the device listing (device_info.cpp) and Context.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/vulkan/device_info.h"
#include "backend/vulkan/vk_loader.h"

namespace trit::engine::vk {

// `instance_version` is the API version the instance was created with: core structs are
// queried up to the lower of it and the device's version.
VulkanDeviceInfo describe_physical_device(const Functions& vk, VkPhysicalDevice pd, uint32_t index,
                                          uint32_t instance_version);

// The memory heaps now, with VK_EXT_memory_budget's budget and usage when `budget` is true
// (the device offers the extension).
std::vector<VulkanHeap> read_heaps(const Functions& vk, VkPhysicalDevice pd, bool budget);

}  // namespace trit::engine::vk
