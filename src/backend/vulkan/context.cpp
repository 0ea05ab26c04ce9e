// Context: device choice, logical device creation with the optional features, and teardown.
#include "backend/vulkan/context.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>

#include "backend/vulkan/binding_limit.h"
#include "backend/vulkan/buffer.h"
#include "backend/vulkan/physical_device.h"
#include "backend/vulkan/pipeline.h"
#include "backend/vulkan/profile.h"
#include "backend/vulkan/shaders.h"

namespace trit::engine::vk {
namespace {

std::string list_devices(const std::vector<VulkanDeviceInfo>& devices) {
  std::string out;
  for (const VulkanDeviceInfo& d : devices) {
    out += cat(out.empty() ? "" : ", ", "[", d.index, "] ", d.name, " (",
               vulkan_device_type_name(d.type), ")");
  }
  return out;
}

std::set<std::string> device_extensions(const Functions& vk, VkPhysicalDevice pd) {
  uint32_t n = 0;
  check(vk.vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr),
        "vkEnumerateDeviceExtensionProperties");
  std::vector<VkExtensionProperties> list(n);
  check(vk.vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, list.data()),
        "vkEnumerateDeviceExtensionProperties");
  std::set<std::string> out;
  for (uint32_t i = 0; i < n && i < list.size(); ++i) out.insert(list[i].extensionName);
  return out;
}

// The queue family for compute: a compute-only family when there is one (it does not share
// time with graphics), else the first with compute.
uint32_t compute_queue_family(const Functions& vk, VkPhysicalDevice pd, const std::string& name) {
  uint32_t n = 0;
  vk.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
  std::vector<VkQueueFamilyProperties> fams(n);
  vk.vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, fams.data());
  int best = -1;
  for (uint32_t i = 0; i < n; ++i) {
    if (!(fams[i].queueFlags & VK_QUEUE_COMPUTE_BIT) || fams[i].queueCount == 0) continue;
    if (!(fams[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)) return i;
    if (best < 0) best = int(i);
  }
  if (best < 0) fail("vulkan: ", name, ": no queue family supports compute");
  return uint32_t(best);
}

template <class T>
void chain(void*& head, T& s) {
  s.pNext = head;
  head = &s;
}

}  // namespace

DeviceChoice DeviceChoice::parse(std::string_view spec) {
  if (spec.empty() || spec == "auto") return real_gpu();
  if (spec == "vulkan") return any();
  if (spec.rfind("vulkan:", 0) == 0) {
    const std::string_view num = spec.substr(7);
    uint32_t i = 0;
    const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), i);
    if (!num.empty() && ec == std::errc() && end == num.data() + num.size()) return at(i);
  }
  fail("--device ", spec, ": expected vulkan or vulkan:N (N = a device number of trit devices)");
}

uint32_t choose_device(const std::vector<VulkanDeviceInfo>& devices, DeviceChoice choice) {
  if (devices.empty()) fail("vulkan: no Vulkan devices");
  switch (choice.kind) {
    case DeviceChoice::Kind::Index:
      if (choice.index >= devices.size()) {
        fail("vulkan:", choice.index, ": no such device; the devices are ", list_devices(devices));
      }
      return choice.index;
    case DeviceChoice::Kind::RealGpu: {
      const int i = default_vulkan_device(devices);
      if (i < 0) {
        fail("vulkan: no real GPU (discrete or integrated) among the Vulkan devices (",
             list_devices(devices), "); --device vulkan uses a software device anyway");
      }
      return uint32_t(i);
    }
    case DeviceChoice::Kind::Any: {
      const int i = default_vulkan_device(devices);
      if (i >= 0) return uint32_t(i);
      for (size_t k = 0; k < devices.size(); ++k) {  // then virtual and other GPUs
        if (devices[k].type != VulkanDeviceType::Cpu) return uint32_t(k);
      }
      return 0;
    }
  }
  fail("vulkan: unknown device choice");
}

Context::Context(const ContextOptions& options) : options_(options) {
  try {
    create_device();
  } catch (...) {
    destroy();
    throw;
  }
}

Context::~Context() {
  destroy();
}

void Context::create_device() {
  const std::string why = instance_.create();
  if (!why.empty()) fail("vulkan: ", why);
  vk_ = instance_.functions();
  const std::vector<VkPhysicalDevice> pds = instance_.physical_devices();
  std::vector<VulkanDeviceInfo> infos;
  for (uint32_t i = 0; i < pds.size(); ++i) {
    infos.push_back(describe_physical_device(vk_, pds[i], i, instance_.api_version()));
  }
  const uint32_t index = choose_device(infos, options_.device);
  physical_ = pds[index];
  caps_.info = infos[index];
  const VulkanDeviceInfo& info = caps_.info;
  const uint32_t api = std::min(instance_.api_version(), info.api_version);
  if (api < VK_API_VERSION_1_1) {
    fail("vulkan: ", info.name, ": Vulkan 1.1 is needed, the device or loader offers ",
         vulkan_version_string(api));
  }
  caps_.binding_limit = vk::binding_limit(info, options_.max_buffer_bytes, options_.heap_fraction);
  queue_family_ = compute_queue_family(vk_, physical_, info.name);

  // Extensions: the ones that must be enabled when present, and those that bring a wanted
  // feature to a device older than the version that made it core.
  const std::set<std::string> exts = device_extensions(vk_, physical_);
  std::vector<const char*> enable;
  auto want = [&](const char* e) {
    if (!exts.count(e)) return false;
    enable.push_back(e);
    return true;
  };
  want("VK_KHR_portability_subset");
  EnabledFeatures& en = caps_.enabled;
  en.memory_budget = want("VK_EXT_memory_budget");
  en.push_descriptor = options_.push_descriptors && want("VK_KHR_push_descriptor");
  const bool v12 = api >= VK_API_VERSION_1_2, v13 = api >= VK_API_VERSION_1_3;
  const bool can_s8 = info.storage_buffer_8bit && (v12 || want("VK_KHR_8bit_storage"));
  const bool can_f16i8 =
      (info.shader_float16 || info.shader_int8) && (v12 || want("VK_KHR_shader_float16_int8"));
  const bool can_dot =
      info.integer_dot_product && (v13 || want("VK_KHR_shader_integer_dot_product"));
  std::optional<CoopTiles> coop;
  if (can_f16i8) coop = plan_coop_tiles(info, options_.cooperative_matrix);
  if (coop && !v12 && !want("VK_KHR_vulkan_memory_model")) coop.reset();
  if (coop) want(coop->khr ? "VK_KHR_cooperative_matrix" : "VK_NV_cooperative_matrix");

  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, nullptr, {}};
  VkPhysicalDevice16BitStorageFeatures s16{};
  s16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES;
  VkPhysicalDevice8BitStorageFeatures s8{};
  s8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES;
  VkPhysicalDeviceShaderFloat16Int8Features f16i8{};
  f16i8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
  VkPhysicalDeviceShaderIntegerDotProductFeatures dot{};
  dot.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES;
  void* head = nullptr;
  en.shader_int16 = info.shader_int16;
  f2.features.shaderInt16 = en.shader_int16 ? VK_TRUE : VK_FALSE;
  if ((en.storage_buffer_16bit = info.storage_buffer_16bit)) {
    s16.storageBuffer16BitAccess = VK_TRUE;
    chain(head, s16);
  }
  if ((en.storage_buffer_8bit = can_s8)) {
    s8.storageBuffer8BitAccess = VK_TRUE;
    chain(head, s8);
  }
  if (can_f16i8) {
    en.shader_float16 = info.shader_float16;
    en.shader_int8 = info.shader_int8;
    f16i8.shaderFloat16 = en.shader_float16 ? VK_TRUE : VK_FALSE;
    f16i8.shaderInt8 = en.shader_int8 ? VK_TRUE : VK_FALSE;
    chain(head, f16i8);
  }
  if ((en.integer_dot_product = can_dot)) {
    dot.shaderIntegerDotProduct = VK_TRUE;
    chain(head, dot);
  }
  VkPhysicalDeviceCooperativeMatrixFeaturesNV cm_nv{};
  cm_nv.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV;
  VkPhysicalDeviceCooperativeMatrixFeaturesKHR cm_khr{};
  cm_khr.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR;
  VkPhysicalDeviceVulkanMemoryModelFeatures vmm{};
  vmm.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES;
  en.coop_tiles = coop;
  if (coop && en.shader_float16 && !options_.exact_training) {
    en.coop_f16_tiles = plan_coop_f16_tiles(info, coop->khr);
  }
  if (coop) {
    vmm.vulkanMemoryModel = VK_TRUE;
    chain(head, vmm);
    if (coop->khr) {
      cm_khr.cooperativeMatrix = VK_TRUE;
      chain(head, cm_khr);
    } else {
      cm_nv.cooperativeMatrix = VK_TRUE;
      chain(head, cm_nv);
    }
  }
  VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pep{};
  pep.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR;
  const char* stats = std::getenv("TRIT_VK_PIPELINE_STATS");
  if (stats && std::string(stats) == "1" && want("VK_KHR_pipeline_executable_properties")) {
    pep.pipelineExecutableInfo = VK_TRUE;
    chain(head, pep);
    en.pipeline_statistics = true;
  }
  f2.pNext = head;

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qci{};
  qci.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
  qci.queueFamilyIndex = queue_family_;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  VkDeviceCreateInfo dci{};
  dci.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
  dci.pNext = &f2;
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  dci.enabledExtensionCount = uint32_t(enable.size());
  dci.ppEnabledExtensionNames = enable.data();
  check(vk_.vkCreateDevice(physical_, &dci, nullptr, &device_), "vkCreateDevice for ", info.name);
  const std::string missing = vk_.load_device(device_);
  if (!missing.empty()) fail("vulkan: ", info.name, ": ", missing);
  if (!vk_.vkCmdPushDescriptorSetKHR) en.push_descriptor = false;
  if (!vk_.vkGetPipelineExecutableStatisticsKHR || !vk_.vkGetPipelineExecutablePropertiesKHR) {
    en.pipeline_statistics = false;
  }
  vk_.vkGetDeviceQueue(device_, queue_family_, 0, &queue_);

  VkCommandPoolCreateInfo cpi{};
  cpi.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
  cpi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  cpi.queueFamilyIndex = queue_family_;
  check(vk_.vkCreateCommandPool(device_, &cpi, nullptr, &command_pool_), "vkCreateCommandPool");
  VkPipelineCacheCreateInfo pci{};
  pci.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO;
  check(vk_.vkCreatePipelineCache(device_, &pci, nullptr, &pipeline_cache_),
        "vkCreatePipelineCache");

  vk_.vkGetPhysicalDeviceMemoryProperties(physical_, &memory_);
  const VkMemoryPropertyFlags uma_flags = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                                          VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                          VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  // Discrete GPUs with a host-visible window (ReBAR) are not UMA: their weights belong in
  // plain device memory.
  if (info.type == VulkanDeviceType::Integrated || info.type == VulkanDeviceType::Cpu) {
    for (uint32_t t = 0; t < memory_.memoryTypeCount; ++t) {
      if ((memory_.memoryTypes[t].propertyFlags & uma_flags) == uma_flags) caps_.uma = true;
    }
  }
  if (Profile::wanted() && info.timestamp_period > 0) {
    profile_ = std::make_unique<Profile>(info.name, double(info.timestamp_period));
  }
}

Buffer& Context::staging(uint64_t bytes) {
  if (!staging_ || staging_->size() < bytes) {
    staging_.reset();  // the old one goes first
    staging_ = std::make_unique<Buffer>(*this, bytes, MemoryKind::Host, "staging");
  }
  return *staging_;
}

void Context::destroy() {
  if (device_ != VK_NULL_HANDLE) {
    vk_.vkDeviceWaitIdle(device_);
    pipelines_.clear();
    profile_.reset();
    staging_.reset();
    if (pipeline_cache_ != VK_NULL_HANDLE)
      vk_.vkDestroyPipelineCache(device_, pipeline_cache_, nullptr);
    if (command_pool_ != VK_NULL_HANDLE) vk_.vkDestroyCommandPool(device_, command_pool_, nullptr);
    vk_.vkDestroyDevice(device_, nullptr);
  }
  pipeline_cache_ = VK_NULL_HANDLE;
  command_pool_ = VK_NULL_HANDLE;
  device_ = VK_NULL_HANDLE;
  // instance_ is released by its own destructor.
}

std::vector<VulkanHeap> Context::heaps() const {
  return read_heaps(vk_, physical_, caps_.enabled.memory_budget);
}

const Pipeline& Context::pipeline(const PipelineDesc& desc) {
  // Looked up on every dispatch: built without streams ("name:v0:v1...").
  std::string key;
  key.reserve(desc.shader.size() + 11 * desc.spec.size());
  key.append(desc.shader);
  char digits[16];
  for (uint32_t v : desc.spec) {
    key += ':';
    key.append(digits, std::to_chars(digits, digits + sizeof(digits), v).ptr);
  }
  auto it = pipelines_.find(key);
  if (it == pipelines_.end()) {
    auto p = std::make_unique<Pipeline>(*this, key, shader_spirv(desc.shader), desc);
    it = pipelines_.emplace(key, std::move(p)).first;
  } else {
    const Pipeline& p = *it->second;
    if (p.bindings() != desc.bindings || p.push_bytes() != desc.push_bytes ||
        p.readonly_mask() != desc.readonly) {
      fail("vulkan: pipeline ", key, ": requested with ", desc.bindings, " bindings and ",
           desc.push_bytes, " push-constant bytes, built with ", p.bindings(), " and ",
           p.push_bytes());
    }
  }
  return *it->second;
}

void Context::wait_idle() const {
  check(vk_.vkDeviceWaitIdle(device_), "vkDeviceWaitIdle on ", caps_.info.name);
}

VkResult Context::injected_fault(bool counted) {
  if (injected_lost_) return VK_ERROR_DEVICE_LOST;
  // "lost@N" or "oom@N"; read once. The count is the process's: a context opened after the
  // fault (a run going on) is not hit again.
  static const std::pair<VkResult, int64_t> fault = [] {
    const char* v = std::getenv("TRIT_VK_FAULT");
    const std::string s = v ? v : "";
    const size_t at = s.find('@');
    if (at == std::string::npos) return std::pair<VkResult, int64_t>{VK_SUCCESS, 0};
    const VkResult r = s.substr(0, at) == "lost"  ? VK_ERROR_DEVICE_LOST
                       : s.substr(0, at) == "oom" ? VK_ERROR_OUT_OF_DEVICE_MEMORY
                                                  : VK_SUCCESS;
    return std::pair<VkResult, int64_t>{r, std::atoll(s.c_str() + at + 1)};
  }();
  static std::atomic<int64_t> submissions{0};
  if (fault.first == VK_SUCCESS || !counted || ++submissions != fault.second) return VK_SUCCESS;
  if (fault.first == VK_ERROR_DEVICE_LOST) injected_lost_ = true;
  return fault.first;
}

}  // namespace trit::engine::vk
