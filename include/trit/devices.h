// The devices trit can run on: the CPU (the instruction sets its kernels use) and every Vulkan
// device with the limits, memory and features trit relies on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trit/export.h"

namespace trit {

struct DeviceInfo {
  std::string name;         // "cpu", "vulkan:0", ...: what ModelOptions::device takes
  std::string description;  // the processor's model name, or the GPU's
  std::string kind;         // "cpu", or the Vulkan type: "discrete", "integrated", "virtual", "cpu"
  bool real_gpu = false;    // a discrete or integrated GPU (what "auto" picks)
  bool is_default = false;  // what ModelOptions::device = "auto" would open
  uint64_t memory_bytes = 0;         // the largest device-local heap (Vulkan)
  uint64_t binding_limit_bytes = 0;  // the largest buffer binding trit uses (Vulkan)
  std::string features;  // "avx512-vnni"; "int8 dot product, cooperative matrices (KHR) ..."
};

// The CPU first, then the Vulkan devices in the loader's order. Never throws for a machine
// without Vulkan: the list then holds the CPU alone.
TRIT_API std::vector<DeviceInfo> list_devices();

// What `trit devices` prints: the CPU and every Vulkan device with its limits, heaps and
// features, and the default device.
TRIT_API std::string devices_report();

}  // namespace trit
