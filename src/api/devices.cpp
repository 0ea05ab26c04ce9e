// The devices trit can run on, as a list and as the report `trit devices` prints.
#include "trit/devices.h"

#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/vulkan/coop_matrix.h"
#include "backend/vulkan/device_info.h"
#include "core/error.h"
#include "tools/info.h"

namespace trit {
namespace {

// printf into a string.
[[gnu::format(printf, 2, 3)]] void appendf(std::string& out, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n > 0) {
    const size_t old = out.size();
    out.resize(old + size_t(n) + 1);
    std::vsnprintf(out.data() + old, size_t(n) + 1, fmt, args);
    out.resize(old + size_t(n));
  }
  va_end(args);
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::string fallback;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    if (value.empty()) continue;
    if (key == "model name") return value;                          // x86, some ARM kernels
    if (key == "Hardware" || key == "Processor") fallback = value;  // older ARM kernels
  }
  return fallback.empty() ? "unknown" : fallback;
}

// "134217728 (128 MiB)": the exact count, then a readable size (whole when exact).
std::string bytes_both(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  uint64_t unit = 1;
  while (u < 4 && n / unit >= 1024) {
    unit *= 1024;
    ++u;
  }
  const std::string readable =
      n % unit == 0 ? std::to_string(n / unit) + " " + units[u] : engine::format_bytes(n);
  return std::to_string(n) + " (" + readable + ")";
}

const char* yes_no(bool b) {
  return b ? "yes" : "no";
}

void print_device(std::string& out, const engine::VulkanDeviceInfo& d) {
  appendf(out, "  [%u] %s\n", d.index, d.name.c_str());
  appendf(out, "      type %s, Vulkan %s, driver %s",
          std::string(engine::vulkan_device_type_name(d.type)).c_str(),
          engine::vulkan_version_string(d.api_version).c_str(),
          engine::vulkan_driver_version_string(d.vendor_id, d.driver_version).c_str());
  if (!d.driver_name.empty()) {
    appendf(out, " (%s%s%s)", d.driver_name.c_str(), d.driver_info.empty() ? "" : " ",
            d.driver_info.c_str());
  }
  appendf(out, ", vendor 0x%04x device 0x%04x\n", d.vendor_id, d.device_id);
  appendf(out, "      maxStorageBufferRange %s\n", bytes_both(d.max_storage_buffer_range).c_str());
  appendf(out, "      maxMemoryAllocationSize %s\n",
          d.max_memory_allocation_size ? bytes_both(d.max_memory_allocation_size).c_str()
                                       : "not reported");
  appendf(out, "      maxBufferSize %s\n",
          d.max_buffer_size ? bytes_both(d.max_buffer_size).c_str() : "not reported");
  appendf(out, "      binding limit (smallest of these) %s\n",
          bytes_both(d.binding_limit()).c_str());
  appendf(out, "      maxComputeWorkGroupSize %u x %u x %u, invocations %u, count %u x %u x %u\n",
          d.max_compute_work_group_size[0], d.max_compute_work_group_size[1],
          d.max_compute_work_group_size[2], d.max_compute_work_group_invocations,
          d.max_compute_work_group_count[0], d.max_compute_work_group_count[1],
          d.max_compute_work_group_count[2]);
  appendf(out, "      maxComputeSharedMemorySize %s, maxPushConstantsSize %u\n",
          bytes_both(d.max_compute_shared_memory_size).c_str(), d.max_push_constants_size);
  appendf(out, "      subgroup size %u", d.subgroup_size);
  if (d.min_subgroup_size != 0) {
    appendf(out, " (%u..%u%s)", d.min_subgroup_size, d.max_subgroup_size,
            d.subgroup_size_control ? ", size control" : "");
  }
  appendf(out, "\n");
  for (size_t h = 0; h < d.heaps.size(); ++h) {
    const engine::VulkanHeap& heap = d.heaps[h];
    appendf(out, "      heap %zu: %s%s", h, bytes_both(heap.size).c_str(),
            heap.device_local ? ", device-local" : "");
    if (d.has_memory_budget) {
      appendf(out, ", budget %s, used %s", engine::format_bytes(heap.budget).c_str(),
              engine::format_bytes(heap.usage).c_str());
    }
    appendf(out, "\n");
  }
  if (!d.has_memory_budget)
    appendf(out, "      memory budget: not reported (no VK_EXT_memory_budget)\n");
  appendf(out,
          "      features: 8-bit storage %s, 16-bit storage %s, shaderInt8 %s, shaderFloat16 %s\n",
          yes_no(d.storage_buffer_8bit), yes_no(d.storage_buffer_16bit), yes_no(d.shader_int8),
          yes_no(d.shader_float16));
  appendf(out, "                integer dot product %s%s, cooperative matrix %s\n",
          yes_no(d.integer_dot_product),
          d.integer_dot_product
              ? (d.integer_dot_product_4x8_accelerated ? " (4x8-bit accelerated)"
                                                       : " (4x8-bit not accelerated)")
              : "",
          d.cooperative_matrix_khr && d.cooperative_matrix_nv ? "KHR, NV"
          : d.cooperative_matrix_khr                          ? "KHR"
          : d.cooperative_matrix_nv                           ? "NV"
                                                              : "none");
  auto shapes = [](const std::vector<engine::CoopMatShape>& list) {
    std::string out;
    for (const engine::CoopMatShape& s : list)
      out += engine::cat(out.empty() ? "" : ", ", s.m, "x", s.n, "x", s.k);
    return out.empty() ? std::string("none") : out;
  };
  appendf(out, "                int8 cooperative matrices: KHR %s; NV %s; Vulkan memory model %s\n",
          shapes(d.cooperative_matrix_int8_khr).c_str(), shapes(d.cooperative_matrix_int8).c_str(),
          yes_no(d.vulkan_memory_model));
  appendf(out, "                f16 cooperative matrices: KHR %s; NV %s\n",
          shapes(d.cooperative_matrix_f16_khr).c_str(), shapes(d.cooperative_matrix_f16).c_str());
  // As the backend will choose (TRIT_VK_COOPMAT honoured).
  const std::optional<engine::vk::CoopTiles> coop =
      engine::vk::plan_coop_tiles(d, engine::vk::coop_choice_from_env());
  appendf(out, "                int8 products: %s\n",
          coop ? engine::cat("cooperative matrices (", coop->khr ? "KHR" : "NV", ") ",
                             coop->shape.m, "x", coop->shape.n, "x", coop->shape.k)
                     .c_str()
               : "integer dot products or plain integer arithmetic");
  // As training will (TRIT_VK_EXACT=1: the exact products).
  const std::optional<engine::vk::CoopF16Tiles> f16 =
      coop && !engine::vk::exact_training_from_env() ? engine::vk::plan_coop_f16_tiles(d, coop->khr)
                                                     : std::nullopt;
  appendf(out, "                training's transposed products: %s\n",
          f16 ? engine::cat("f16 cooperative matrices (", f16->khr ? "KHR" : "NV", ") ",
                            f16->shape.m, "x", f16->shape.n, "x", f16->shape.k)
                    .c_str()
              : "f32, the CPU's bits");
}

}  // namespace

std::string devices_report() {
  std::string out;
  const unsigned threads = std::thread::hardware_concurrency();
  appendf(out, "CPU: %s\n", cpu_model_name().c_str());
  appendf(out, "  %u logical cores, kernels: %s (detected: %s)\n", threads,
          engine::cpu_kernels_name().c_str(),
          std::string(engine::cpu_level_name(engine::detect_cpu_level())).c_str());

  const engine::VulkanDeviceList list = engine::enumerate_vulkan_devices();
  if (list.devices.empty()) {
    appendf(out, "Vulkan: no devices (%s)\n", list.reason.c_str());
  } else {
    appendf(out, "Vulkan: instance %s, %zu device%s\n",
            engine::vulkan_version_string(list.instance_version).c_str(), list.devices.size(),
            list.devices.size() == 1 ? "" : "s");
    for (const engine::VulkanDeviceInfo& d : list.devices) print_device(out, d);
  }
  const int pick = engine::default_vulkan_device(list.devices);
  if (pick >= 0) {
    appendf(out, "default device: vulkan:%d (%s)\n", pick, list.devices[size_t(pick)].name.c_str());
  } else if (!list.devices.empty()) {
    appendf(out,
            "default device: cpu (no real GPU; software Vulkan devices run only with "
            "--device vulkan)\n");
  } else {
    appendf(out, "default device: cpu\n");
  }
  return out;
}

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
  DeviceInfo cpu;
  cpu.name = "cpu";
  cpu.description = cpu_model_name();
  cpu.kind = "cpu";
  cpu.features = engine::cpu_kernels_name();
  const engine::VulkanDeviceList list = engine::enumerate_vulkan_devices();
  const int pick = engine::default_vulkan_device(list.devices);
  cpu.is_default = pick < 0;
  out.push_back(cpu);
  for (const engine::VulkanDeviceInfo& d : list.devices) {
    DeviceInfo v;
    v.name = engine::cat("vulkan:", d.index);
    v.description = d.name;
    v.kind = std::string(engine::vulkan_device_type_name(d.type));
    v.real_gpu = d.type == engine::VulkanDeviceType::Discrete ||
                 d.type == engine::VulkanDeviceType::Integrated;
    v.is_default = pick == int(d.index);
    for (const engine::VulkanHeap& h : d.heaps) {
      if (h.device_local) v.memory_bytes = std::max(v.memory_bytes, h.size);
    }
    v.binding_limit_bytes = d.binding_limit();
    const std::optional<engine::vk::CoopTiles> coop =
        engine::vk::plan_coop_tiles(d, engine::vk::coop_choice_from_env());
    v.features = d.integer_dot_product ? "int8 dot product" : "plain int8";
    if (coop) v.features += engine::cat(", cooperative matrices (", coop->khr ? "KHR" : "NV", ")");
    out.push_back(v);
  }
  return out;
}

}  // namespace trit
