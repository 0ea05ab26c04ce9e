// The Vulkan loader, opened at run time: the binary never links libvulkan, so it starts (and
// says why Vulkan is unusable) on machines without a loader. One table of function pointers,
// declared once by X-macro lists, is filled in three steps (global, instance, device); the
// rest of the backend calls Vulkan only through it. Also: VkResult names, the error thrown for
// a failed call, and a small RAII instance.
#pragma once

#ifndef VK_NO_PROTOTYPES
#define VK_NO_PROTOTYPES
#endif
#include <vulkan/vulkan.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

// Headers older than 1.3.255 lack VK_KHR_cooperative_matrix; its structs and values are fixed
// by the specification (component types and scopes share NV's values).
#ifndef VK_KHR_cooperative_matrix
#define VK_KHR_cooperative_matrix 1
constexpr VkStructureType VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR =
    VkStructureType(1000506000);
constexpr VkStructureType VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR =
    VkStructureType(1000506001);
typedef struct VkPhysicalDeviceCooperativeMatrixFeaturesKHR {
  VkStructureType sType;
  void* pNext;
  VkBool32 cooperativeMatrix;
  VkBool32 cooperativeMatrixRobustBufferAccess;
} VkPhysicalDeviceCooperativeMatrixFeaturesKHR;
typedef struct VkCooperativeMatrixPropertiesKHR {
  VkStructureType sType;
  void* pNext;
  uint32_t MSize;
  uint32_t NSize;
  uint32_t KSize;
  VkComponentTypeNV AType;
  VkComponentTypeNV BType;
  VkComponentTypeNV CType;
  VkComponentTypeNV ResultType;
  VkBool32 saturatingAccumulation;
  VkScopeNV scope;
} VkCooperativeMatrixPropertiesKHR;
typedef VkResult(VKAPI_PTR* PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR)(
    VkPhysicalDevice, uint32_t*, VkCooperativeMatrixPropertiesKHR*);
#endif

// X(name, required): entry points resolved with vkGetInstanceProcAddr(NULL, ...).
#define TRIT_VK_GLOBAL_FUNCTIONS(X)               \
  X(vkCreateInstance, true)                       \
  X(vkEnumerateInstanceExtensionProperties, true) \
  X(vkEnumerateInstanceVersion, false) /* Vulkan 1.1 loaders */

// Resolved with vkGetInstanceProcAddr(instance, ...). The *2 queries are Vulkan 1.1.
#define TRIT_VK_INSTANCE_FUNCTIONS(X)                        \
  X(vkDestroyInstance, true)                                 \
  X(vkEnumeratePhysicalDevices, true)                        \
  X(vkGetPhysicalDeviceProperties, true)                     \
  X(vkGetPhysicalDeviceProperties2, false)                   \
  X(vkGetPhysicalDeviceFeatures, true)                       \
  X(vkGetPhysicalDeviceFeatures2, false)                     \
  X(vkGetPhysicalDeviceMemoryProperties, true)               \
  X(vkGetPhysicalDeviceMemoryProperties2, false)             \
  X(vkGetPhysicalDeviceQueueFamilyProperties, true)          \
  X(vkEnumerateDeviceExtensionProperties, true)              \
  X(vkCreateDevice, true)                                    \
  X(vkGetDeviceProcAddr, true)                               \
  X(vkGetPhysicalDeviceCooperativeMatrixPropertiesNV, false) \
  X(vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR, false)

// Resolved with vkGetDeviceProcAddr(device, ...): everything the compute backend records.
#define TRIT_VK_DEVICE_FUNCTIONS(X)                                                          \
  X(vkDestroyDevice, true)                                                                   \
  X(vkGetDeviceQueue, true)                                                                  \
  X(vkQueueSubmit, true)                                                                     \
  X(vkQueueWaitIdle, true)                                                                   \
  X(vkDeviceWaitIdle, true)                                                                  \
  X(vkCreateBuffer, true)                                                                    \
  X(vkDestroyBuffer, true)                                                                   \
  X(vkGetBufferMemoryRequirements, true)                                                     \
  X(vkAllocateMemory, true)                                                                  \
  X(vkFreeMemory, true)                                                                      \
  X(vkBindBufferMemory, true)                                                                \
  X(vkMapMemory, true)                                                                       \
  X(vkUnmapMemory, true)                                                                     \
  X(vkCreateShaderModule, true)                                                              \
  X(vkDestroyShaderModule, true)                                                             \
  X(vkCreateDescriptorSetLayout, true)                                                       \
  X(vkDestroyDescriptorSetLayout, true)                                                      \
  X(vkCreatePipelineLayout, true)                                                            \
  X(vkDestroyPipelineLayout, true)                                                           \
  X(vkCreatePipelineCache, true)                                                             \
  X(vkDestroyPipelineCache, true)                                                            \
  X(vkCreateComputePipelines, true)                                                          \
  X(vkDestroyPipeline, true)                                                                 \
  X(vkCreateDescriptorPool, true)                                                            \
  X(vkDestroyDescriptorPool, true)                                                           \
  X(vkResetDescriptorPool, true)                                                             \
  X(vkAllocateDescriptorSets, true)                                                          \
  X(vkUpdateDescriptorSets, true)                                                            \
  X(vkCreateCommandPool, true)                                                               \
  X(vkDestroyCommandPool, true)                                                              \
  X(vkAllocateCommandBuffers, true)                                                          \
  X(vkFreeCommandBuffers, true)                                                              \
  X(vkBeginCommandBuffer, true)                                                              \
  X(vkEndCommandBuffer, true)                                                                \
  X(vkResetCommandBuffer, true)                                                              \
  X(vkCmdBindPipeline, true)                                                                 \
  X(vkCmdBindDescriptorSets, true)                                                           \
  X(vkCmdPushConstants, true)                                                                \
  X(vkCmdDispatch, true)                                                                     \
  X(vkCmdPipelineBarrier, true)                                                              \
  X(vkCmdCopyBuffer, true)                                                                   \
  X(vkCmdFillBuffer, true)                                                                   \
  X(vkCreateFence, true)                                                                     \
  X(vkDestroyFence, true)                                                                    \
  X(vkWaitForFences, true)                                                                   \
  X(vkResetFences, true)                                                                     \
  X(vkCreateQueryPool, true)                                                                 \
  X(vkDestroyQueryPool, true)                                                                \
  X(vkCmdResetQueryPool, true)                                                               \
  X(vkCmdWriteTimestamp, true)                                                               \
  X(vkGetQueryPoolResults, true)                                                             \
  X(vkCmdPushDescriptorSetKHR, false)            /* VK_KHR_push_descriptor */                \
  X(vkGetPipelineExecutablePropertiesKHR, false) /* VK_KHR_pipeline_executable_properties */ \
  X(vkGetPipelineExecutableStatisticsKHR, false)

namespace trit::engine::vk {

// The one function table. Members keep the Vulkan names; an optional entry point the driver
// lacks stays null.
struct Functions {
  PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
#define TRIT_VK_MEMBER(name, required) PFN_##name name = nullptr;
  TRIT_VK_GLOBAL_FUNCTIONS(TRIT_VK_MEMBER)
  TRIT_VK_INSTANCE_FUNCTIONS(TRIT_VK_MEMBER)
  TRIT_VK_DEVICE_FUNCTIONS(TRIT_VK_MEMBER)
#undef TRIT_VK_MEMBER

  // Each step returns "" on success, else why Vulkan is unusable (no loader, or the name of
  // the first missing required entry point).
  std::string load_global();
  std::string load_instance(VkInstance instance);
  std::string load_device(VkDevice device);
};

// vkGetInstanceProcAddr of the process's Vulkan loader, which is opened on first use and never
// unloaded (drivers keep state that does not survive an unload); nullptr when there is none,
// with the reason in *why.
PFN_vkGetInstanceProcAddr open_loader(std::string* why);

// "VK_ERROR_OUT_OF_DEVICE_MEMORY"; "VkResult -13" for values this list does not know.
std::string vk_result_name(VkResult r);

// Thrown when the device has no memory for an allocation, so that a planner can retry with
// smaller pieces or tiles. A lost device throws trit::DeviceLost; every other Vulkan failure is
// a plain trit::Error.
class OutOfDeviceMemory : public DeviceOutOfMemory {
 public:
  using DeviceOutOfMemory::DeviceOutOfMemory;
};

// Throws for a failed call: "vulkan: <what>: VK_ERROR_...". OutOfDeviceMemory for
// VK_ERROR_OUT_OF_DEVICE_MEMORY, DeviceLost for VK_ERROR_DEVICE_LOST.
[[noreturn]] void fail_call(VkResult r, const std::string& what);

// Throws when r is an error code (negative); the arguments name the call and its object.
template <class... Args>
void check(VkResult r, const Args&... what) {
  if (r < 0) fail_call(r, cat(what...));
}

// A Vulkan instance with its function table filled up to instance level. Move-only.
class Instance {
 public:
  Instance() = default;
  ~Instance();
  Instance(Instance&& o) noexcept;
  Instance& operator=(Instance&& o) noexcept;
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  // Opens the loader and creates an instance for min(loader version, Vulkan 1.3), with
  // portability enumeration where the loader offers it (MoltenVK). Returns "" on success, else
  // the reason. Never throws.
  std::string create();

  VkInstance handle() const { return handle_; }
  const Functions& functions() const { return vk_; }
  uint32_t api_version() const { return api_version_; }        // what the instance asked for
  uint32_t loader_version() const { return loader_version_; }  // 0 before create()
  // The physical devices in the loader's order; throws when the call fails.
  std::vector<VkPhysicalDevice> physical_devices() const;

 private:
  void destroy();
  Functions vk_;
  VkInstance handle_ = VK_NULL_HANDLE;
  uint32_t api_version_ = 0;
  uint32_t loader_version_ = 0;
};

}  // namespace trit::engine::vk
