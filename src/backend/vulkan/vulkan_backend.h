// The Vulkan implementation of the Backend op set (DESIGN section 6): weights uploaded once
// and kept packed, every tensor split into row pieces within the device's binding limit, ops
// recorded into one command buffer and submitted when a result is read.
#pragma once

#include <cstdint>
#include <memory>

#include "backend/backend.h"

namespace trit::engine {

struct VulkanRequest {
  int index = -1;                 // a device number from `trit devices`; -1: the first that suits
  bool real_gpu_only = false;     // skip CPU/software devices such as lavapipe
  uint64_t max_buffer_bytes = 0;  // lowers the binding limit; 0: the device's own (or
                                  // TRIT_VK_MAX_BUFFER_MB)
};

// Opens the device; throws trit::Error saying why when there is none or it fails.
std::unique_ptr<Backend> make_vulkan_backend(const VulkanRequest& request);

}  // namespace trit::engine
