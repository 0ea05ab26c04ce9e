// trit devices: the CPU and the Vulkan devices with the limits, heaps and features trit uses.
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/vulkan/coop_matrix.h"
#include "backend/vulkan/device_info.h"
#include "cli/commands.h"
#include "core/error.h"
#include "tools/info.h"

namespace trit::cli {

using namespace trit::engine;  // until the CLI moves onto the public API
namespace {

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
      n % unit == 0 ? std::to_string(n / unit) + " " + units[u] : format_bytes(n);
  return std::to_string(n) + " (" + readable + ")";
}

const char* yes_no(bool b) {
  return b ? "yes" : "no";
}

void print_device(const VulkanDeviceInfo& d) {
  std::printf("  [%u] %s\n", d.index, d.name.c_str());
  std::printf("      type %s, Vulkan %s, driver %s",
              std::string(vulkan_device_type_name(d.type)).c_str(),
              vulkan_version_string(d.api_version).c_str(),
              vulkan_driver_version_string(d.vendor_id, d.driver_version).c_str());
  if (!d.driver_name.empty()) {
    std::printf(" (%s%s%s)", d.driver_name.c_str(), d.driver_info.empty() ? "" : " ",
                d.driver_info.c_str());
  }
  std::printf(", vendor 0x%04x device 0x%04x\n", d.vendor_id, d.device_id);
  std::printf("      maxStorageBufferRange %s\n", bytes_both(d.max_storage_buffer_range).c_str());
  std::printf("      maxMemoryAllocationSize %s\n",
              d.max_memory_allocation_size ? bytes_both(d.max_memory_allocation_size).c_str()
                                           : "not reported");
  std::printf("      maxBufferSize %s\n",
              d.max_buffer_size ? bytes_both(d.max_buffer_size).c_str() : "not reported");
  std::printf("      binding limit (smallest of these) %s\n",
              bytes_both(d.binding_limit()).c_str());
  std::printf("      maxComputeWorkGroupSize %u x %u x %u, invocations %u, count %u x %u x %u\n",
              d.max_compute_work_group_size[0], d.max_compute_work_group_size[1],
              d.max_compute_work_group_size[2], d.max_compute_work_group_invocations,
              d.max_compute_work_group_count[0], d.max_compute_work_group_count[1],
              d.max_compute_work_group_count[2]);
  std::printf("      maxComputeSharedMemorySize %s, maxPushConstantsSize %u\n",
              bytes_both(d.max_compute_shared_memory_size).c_str(), d.max_push_constants_size);
  std::printf("      subgroup size %u", d.subgroup_size);
  if (d.min_subgroup_size != 0) {
    std::printf(" (%u..%u%s)", d.min_subgroup_size, d.max_subgroup_size,
                d.subgroup_size_control ? ", size control" : "");
  }
  std::printf("\n");
  for (size_t h = 0; h < d.heaps.size(); ++h) {
    const VulkanHeap& heap = d.heaps[h];
    std::printf("      heap %zu: %s%s", h, bytes_both(heap.size).c_str(),
                heap.device_local ? ", device-local" : "");
    if (d.has_memory_budget) {
      std::printf(", budget %s, used %s", format_bytes(heap.budget).c_str(),
                  format_bytes(heap.usage).c_str());
    }
    std::printf("\n");
  }
  if (!d.has_memory_budget)
    std::printf("      memory budget: not reported (no VK_EXT_memory_budget)\n");
  std::printf(
      "      features: 8-bit storage %s, 16-bit storage %s, shaderInt8 %s, shaderFloat16 %s\n",
      yes_no(d.storage_buffer_8bit), yes_no(d.storage_buffer_16bit), yes_no(d.shader_int8),
      yes_no(d.shader_float16));
  std::printf("                integer dot product %s%s, cooperative matrix %s\n",
              yes_no(d.integer_dot_product),
              d.integer_dot_product
                  ? (d.integer_dot_product_4x8_accelerated ? " (4x8-bit accelerated)"
                                                           : " (4x8-bit not accelerated)")
                  : "",
              d.cooperative_matrix_khr && d.cooperative_matrix_nv ? "KHR, NV"
              : d.cooperative_matrix_khr                          ? "KHR"
              : d.cooperative_matrix_nv                           ? "NV"
                                                                  : "none");
  auto shapes = [](const std::vector<CoopMatShape>& list) {
    std::string out;
    for (const CoopMatShape& s : list) out += cat(out.empty() ? "" : ", ", s.m, "x", s.n, "x", s.k);
    return out.empty() ? std::string("none") : out;
  };
  std::printf("                int8 cooperative matrices: KHR %s; NV %s; Vulkan memory model %s\n",
              shapes(d.cooperative_matrix_int8_khr).c_str(),
              shapes(d.cooperative_matrix_int8).c_str(), yes_no(d.vulkan_memory_model));
  // As the backend will choose (TRIT_VK_COOPMAT honoured).
  const std::optional<vk::CoopTiles> coop = vk::plan_coop_tiles(d, vk::coop_choice_from_env());
  std::printf("                int8 products: %s\n",
              coop ? cat("cooperative matrices (", coop->khr ? "KHR" : "NV", ") ", coop->shape.m,
                         "x", coop->shape.n, "x", coop->shape.k)
                         .c_str()
                   : "integer dot products or plain integer arithmetic");
}

}  // namespace

void add_devices_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("devices", "Show the CPU and the Vulkan devices");
  cmd->callback([] {
    const unsigned threads = std::thread::hardware_concurrency();
    std::printf("CPU: %s\n", cpu_model_name().c_str());
    std::printf("  %u logical cores, kernels: %s (detected: %s)\n", threads,
                std::string(cpu_level_name(active_cpu_level())).c_str(),
                std::string(cpu_level_name(detect_cpu_level())).c_str());

    const VulkanDeviceList list = enumerate_vulkan_devices();
    if (list.devices.empty()) {
      std::printf("Vulkan: no devices (%s)\n", list.reason.c_str());
    } else {
      std::printf("Vulkan: instance %s, %zu device%s\n",
                  vulkan_version_string(list.instance_version).c_str(), list.devices.size(),
                  list.devices.size() == 1 ? "" : "s");
      for (const VulkanDeviceInfo& d : list.devices) print_device(d);
    }
    const int pick = default_vulkan_device(list.devices);
    if (pick >= 0) {
      std::printf("default device: vulkan:%d (%s)\n", pick,
                  list.devices[size_t(pick)].name.c_str());
    } else if (!list.devices.empty()) {
      std::printf(
          "default device: cpu (no real GPU; software Vulkan devices run only with "
          "--device vulkan)\n");
    } else {
      std::printf("default device: cpu\n");
    }
  });
}

}  // namespace trit::cli
