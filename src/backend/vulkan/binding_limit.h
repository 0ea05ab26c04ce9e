// The binding limit (DESIGN section 6): the most bytes one storage-buffer binding, and so one
// allocation, may hold on a device. Every tensor is split into pieces of at most this size.
// Also the parser of the user's override (--max-buffer-mb, TRIT_VK_MAX_BUFFER_MB).
#pragma once

#include <cstdint>
#include <string_view>

#include "backend/vulkan/device_info.h"

namespace trit::engine::vk {

// Every binding limit is a multiple of this (safe for any minStorageBufferOffsetAlignment).
inline constexpr uint64_t kBindingAlign = 256;

// min(maxStorageBufferRange, maxMemoryAllocationSize, maxBufferSize, heap_fraction times the
// largest device-local heap (its budget when known)), then lowered, never raised, by
// `override_bytes` (0: none), rounded down to a multiple of kBindingAlign. Limits the device
// does not report (0) do not count. Throws when the result is below kBindingAlign.
uint64_t binding_limit(const VulkanDeviceInfo& device, uint64_t override_bytes = 0,
                       double heap_fraction = 0.5);

// "512" (MiB) from `source` (the flag or variable name, for the message) to bytes. Accepts a
// whole positive number of MiB, surrounding spaces allowed; throws on anything else.
uint64_t parse_max_buffer_mb(std::string_view text, std::string_view source);

// The override in TRIT_VK_MAX_BUFFER_MB, in bytes; 0 when unset or empty. Throws on junk.
uint64_t max_buffer_bytes_from_env();

}  // namespace trit::engine::vk
