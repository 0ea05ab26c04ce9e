// The Vulkan context: instance, the chosen physical device, a logical device with one compute
// queue, a command pool, a pipeline cache and the registry of built pipelines, plus DeviceCaps
// (what the device offers, what was enabled, and the binding limit). Device choice follows
// DESIGN section 4. A Context and everything made from it are used from one thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backend/vulkan/coop_matrix.h"
#include "backend/vulkan/device_info.h"
#include "backend/vulkan/vk_loader.h"

namespace trit::engine::vk {

class Pipeline;
class Profile;
struct PipelineDesc;

// Which device a Context opens.
struct DeviceChoice {
  enum class Kind {
    RealGpu,  // the first discrete or integrated GPU; never a software device (the default)
    Any,      // the first device of any kind, real GPUs first (--device vulkan)
    Index,    // the device at `index` in the loader's order (--device vulkan:N)
  };
  Kind kind = Kind::RealGpu;
  uint32_t index = 0;

  static DeviceChoice real_gpu() { return {Kind::RealGpu, 0}; }
  static DeviceChoice any() { return {Kind::Any, 0}; }
  static DeviceChoice at(uint32_t i) { return {Kind::Index, i}; }
  // "vulkan" -> any, "vulkan:N" -> at(N), "" or "auto" -> real_gpu; throws on anything else.
  static DeviceChoice parse(std::string_view spec);
};

// The position of the chosen device in `devices`; throws when there is none, saying which
// devices exist and what would pick them.
uint32_t choose_device(const std::vector<VulkanDeviceInfo>& devices, DeviceChoice choice);

struct ContextOptions {
  DeviceChoice device;
  // Lowers the binding limit (bytes, 0: none): the value of --max-buffer-mb or
  // max_buffer_bytes_from_env(), or a test's.
  uint64_t max_buffer_bytes = 0;
  double heap_fraction = 0.5;  // of the largest device-local heap, for the binding limit
  // Map device-local memory that is also host-visible (UMA GPUs, lavapipe) so uploads and
  // downloads skip staging. Off: always stage (tests use it to exercise that path).
  bool map_device_memory = true;
  // Bind buffers with VK_KHR_push_descriptor where the device has it (no descriptor pools or
  // set updates per dispatch). Off: always allocate descriptor sets (tests cover both paths).
  bool push_descriptors = true;
  // Cooperative matrices for the int8 tiled product where the device has them (the backend
  // takes TRIT_VK_COOPMAT: 0 off, nv, khr; tests and benchmarks compare the paths).
  CoopChoice cooperative_matrix = CoopChoice::Auto;
  // Keep training's float products on the paths that give the CPU's bits (the backend takes
  // TRIT_VK_EXACT=1): no f16 cooperative matrices (DESIGN section 2).
  bool exact_training = false;
};

// Optional features this context enabled (each only when the device offers it).
struct EnabledFeatures {
  bool storage_buffer_16bit = false;  // storageBuffer16BitAccess
  bool storage_buffer_8bit = false;   // storageBuffer8BitAccess
  bool shader_float16 = false;
  bool shader_int16 = false;
  bool shader_int8 = false;
  bool integer_dot_product = false;  // shaderIntegerDotProduct (1.3 or the KHR extension)
  bool memory_budget = false;        // VK_EXT_memory_budget
  bool push_descriptor = false;      // VK_KHR_push_descriptor
  // VK_KHR_pipeline_executable_properties, asked for by TRIT_VK_PIPELINE_STATS=1: each pipeline
  // prints the driver's statistics of its code (registers, spilled memory) as it is created.
  bool pipeline_statistics = false;
  // VK_KHR_ or VK_NV_cooperative_matrix with vulkanMemoryModel and shaderInt8, for
  // matmul_ternary_coop with these tiles (coop_matrix.h).
  std::optional<CoopTiles> coop_tiles;
  // The same extension with f16 shapes and shaderFloat16, unless exact_training: the transposed
  // ternary product of training on matrix units (matmul_ternary_t_coop with these tiles).
  std::optional<CoopF16Tiles> coop_f16_tiles;
};

struct DeviceCaps {
  // Identity, limits, heaps (budgets at creation), subgroup size and operations, and what the
  // device offers, including cooperative matrices. max_buffer_size 0 means
  // the device states no limit (no maintenance4).
  VulkanDeviceInfo info;
  EnabledFeatures enabled;
  uint64_t binding_limit = 0;  // bytes; see binding_limit.h
  bool uma = false;            // device-local memory is host-visible and coherent
};

class Buffer;

class Context {
 public:
  explicit Context(const ContextOptions& options = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const Functions& vk() const { return vk_; }
  VkDevice device() const { return device_; }
  VkPhysicalDevice physical_device() const { return physical_; }
  VkQueue queue() const { return queue_; }
  uint32_t queue_family() const { return queue_family_; }
  VkCommandPool command_pool() const { return command_pool_; }
  VkPipelineCache pipeline_cache() const { return pipeline_cache_; }
  const VkPhysicalDeviceMemoryProperties& memory_properties() const { return memory_; }

  const ContextOptions& options() const { return options_; }
  const DeviceCaps& caps() const { return caps_; }
  uint64_t binding_limit() const { return caps_.binding_limit; }
  // The heaps now, with fresh budgets when VK_EXT_memory_budget is enabled.
  std::vector<VulkanHeap> heaps() const;

  // The pipeline for (desc.shader, desc.spec), built on first use and kept for the life of
  // the context. Throws when a later request for the same key disagrees on the layout.
  const Pipeline& pipeline(const PipelineDesc& desc);
  size_t pipeline_count() const { return pipelines_.size(); }

  void wait_idle() const;

  // A host-visible buffer of at least `bytes` for staged transfers (TiledTensor uploads and
  // downloads, one at a time), kept for the next: a streamed model uploads every block on
  // every pass, and allocating device memory each time cost more than the copies.
  Buffer& staging(uint64_t bytes);

  // Per-pipeline GPU times of every submission when TRIT_VK_PROFILE is set (profile.h),
  // printed when the context closes; null otherwise.
  Profile* profile() const { return profile_.get(); }

  // Fault injection for tests (TRIT_VK_FAULT=lost@N or oom@N): the result the N-th queue
  // submission of recorded work of the process gets instead of running, as if the driver had
  // returned VK_ERROR_DEVICE_LOST (then every later submission of this context too, transfers
  // included) or VK_ERROR_OUT_OF_DEVICE_MEMORY (that one only); VK_SUCCESS otherwise. Staged
  // uploads and downloads (counted = false) do not count: how many there are depends on
  // whether the device's memory is mapped, and the tests' N should not.
  VkResult injected_fault(bool counted);

 private:
  bool injected_lost_ = false;
  void create_device();
  void destroy();

  ContextOptions options_;
  Instance instance_;
  Functions vk_;  // the instance's table, plus device level
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkCommandPool command_pool_ = VK_NULL_HANDLE;
  VkPipelineCache pipeline_cache_ = VK_NULL_HANDLE;
  VkPhysicalDeviceMemoryProperties memory_{};
  DeviceCaps caps_;
  std::map<std::string, std::unique_ptr<Pipeline>> pipelines_;
  std::unique_ptr<Profile> profile_;
  std::unique_ptr<Buffer> staging_;
};

}  // namespace trit::engine::vk
