#include "backend/vulkan/device_info.h"

// Listing devices uses the shared loader (vk_loader.h): no prototypes, only function pointers.
#include <algorithm>
#include <cstring>
#include <exception>
#include <set>
#include <type_traits>

#include "backend/vulkan/physical_device.h"
#include "backend/vulkan/vk_loader.h"
#include "core/error.h"

namespace trit::engine {
namespace {

using vk::Functions;

// Links a struct into a pNext chain.
template <class T>
void chain(void*& head, T& s) {
  s.pNext = head;
  head = &s;
}

// The subgroup shapes a cooperative matrix extension lists whose A and B components are `ab`
// and whose C and result are `cd` (Props: VkCooperativeMatrixPropertiesNV or ...KHR, whose
// fields and values agree on these): int8 x int8 -> int32, f16 x f16 -> f32.
template <class Props, class Query>
std::vector<CoopMatShape> coop_shapes(Query query, VkStructureType stype, VkPhysicalDevice pd,
                                      VkComponentTypeNV ab, VkComponentTypeNV cd) {
  std::vector<CoopMatShape> out;
  uint32_t n = 0;
  if (!query || query(pd, &n, nullptr) != VK_SUCCESS) return out;
  std::vector<Props> list(n);
  for (Props& p : list) p.sType = stype;
  if (query(pd, &n, list.data()) < VK_SUCCESS) return out;
  for (uint32_t i = 0; i < n && i < list.size(); ++i) {
    const Props& p = list[i];
    if constexpr (std::is_same_v<Props, VkCooperativeMatrixPropertiesKHR>) {
      if (uint32_t(p.ResultType) != uint32_t(cd) || p.saturatingAccumulation) continue;
    } else {
      if (p.DType != cd) continue;
    }
    if (uint32_t(p.AType) == uint32_t(ab) && uint32_t(p.BType) == uint32_t(ab) &&
        uint32_t(p.CType) == uint32_t(cd) && uint32_t(p.scope) == uint32_t(VK_SCOPE_SUBGROUP_NV)) {
      out.push_back({p.MSize, p.NSize, p.KSize});
    }
  }
  return out;
}

VulkanDeviceType convert_type(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return VulkanDeviceType::Integrated;
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return VulkanDeviceType::Discrete;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return VulkanDeviceType::Virtual;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return VulkanDeviceType::Cpu;
    default:
      return VulkanDeviceType::Other;
  }
}

}  // namespace

VulkanDeviceInfo vk::describe_physical_device(const Functions& vk, VkPhysicalDevice pd,
                                              uint32_t index, uint32_t instance_version) {
  VulkanDeviceInfo d;
  d.index = index;

  VkPhysicalDeviceProperties props{};
  vk.vkGetPhysicalDeviceProperties(pd, &props);
  d.name = props.deviceName;
  d.type = convert_type(props.deviceType);
  d.api_version = props.apiVersion;
  d.driver_version = props.driverVersion;
  d.vendor_id = props.vendorID;
  d.device_id = props.deviceID;
  const VkPhysicalDeviceLimits& lim = props.limits;
  d.max_storage_buffer_range = lim.maxStorageBufferRange;
  for (int i = 0; i < 3; ++i) {
    d.max_compute_work_group_size[i] = lim.maxComputeWorkGroupSize[i];
    d.max_compute_work_group_count[i] = lim.maxComputeWorkGroupCount[i];
  }
  d.max_compute_work_group_invocations = lim.maxComputeWorkGroupInvocations;
  d.max_compute_shared_memory_size = lim.maxComputeSharedMemorySize;
  d.max_push_constants_size = lim.maxPushConstantsSize;
  d.timestamp_period = lim.timestampPeriod;

  std::set<std::string> exts;
  uint32_t n_ext = 0;
  if (vk.vkEnumerateDeviceExtensionProperties(pd, nullptr, &n_ext, nullptr) == VK_SUCCESS) {
    std::vector<VkExtensionProperties> list(n_ext);
    if (vk.vkEnumerateDeviceExtensionProperties(pd, nullptr, &n_ext, list.data()) >= VK_SUCCESS) {
      for (uint32_t i = 0; i < n_ext && i < list.size(); ++i) exts.insert(list[i].extensionName);
    }
  }
  auto has = [&](const char* e) { return exts.count(e) != 0; };

  // Core structs may be queried up to the lower of the instance's and the device's version.
  const uint32_t api = std::min(instance_version, props.apiVersion);
  const bool v11 = api >= VK_API_VERSION_1_1 && vk.vkGetPhysicalDeviceProperties2 &&
                   vk.vkGetPhysicalDeviceFeatures2 && vk.vkGetPhysicalDeviceMemoryProperties2;
  const bool v12 = api >= VK_API_VERSION_1_2;
  const bool v13 = api >= VK_API_VERSION_1_3;
  d.cooperative_matrix_khr = has("VK_KHR_cooperative_matrix");
  d.cooperative_matrix_nv = has("VK_NV_cooperative_matrix");
  d.has_memory_budget = has("VK_EXT_memory_budget");

  d.min_storage_buffer_offset_alignment = lim.minStorageBufferOffsetAlignment;
  VkPhysicalDeviceFeatures core{};
  vk.vkGetPhysicalDeviceFeatures(pd, &core);
  d.shader_int16 = core.shaderInt16 == VK_TRUE;

  if (!v11) {  // Vulkan 1.0: the basic properties and heaps only
    d.has_memory_budget = false;
    d.heaps = read_heaps(vk, pd, false);
    return d;
  }

  // Properties.
  VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, nullptr, {}};
  VkPhysicalDeviceMaintenance3Properties m3{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES, nullptr, 0, 0};
  VkPhysicalDeviceMaintenance4Properties m4{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES, nullptr, 0};
  VkPhysicalDeviceSubgroupProperties sg{};
  sg.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
  VkPhysicalDeviceSubgroupSizeControlProperties sgc{};
  sgc.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES;
  VkPhysicalDeviceDriverProperties drv{};
  drv.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES;
  VkPhysicalDeviceShaderIntegerDotProductProperties dotp{};
  dotp.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES;
  const bool want_m4 = v13 || has("VK_KHR_maintenance4");
  const bool want_sgc = v13 || has("VK_EXT_subgroup_size_control");
  const bool want_drv = v12 || has("VK_KHR_driver_properties");
  const bool want_dot = v13 || has("VK_KHR_shader_integer_dot_product");
  void* head = nullptr;
  chain(head, m3);
  chain(head, sg);
  if (want_m4) chain(head, m4);
  if (want_sgc) chain(head, sgc);
  if (want_drv) chain(head, drv);
  if (want_dot) chain(head, dotp);
  p2.pNext = head;
  vk.vkGetPhysicalDeviceProperties2(pd, &p2);
  d.max_memory_allocation_size = m3.maxMemoryAllocationSize;
  d.subgroup_size = sg.subgroupSize;
  d.subgroup_operations = sg.supportedOperations;
  if (want_m4) d.max_buffer_size = m4.maxBufferSize;
  if (want_sgc) {
    d.min_subgroup_size = sgc.minSubgroupSize;
    d.max_subgroup_size = sgc.maxSubgroupSize;
  }
  if (want_drv) {
    d.driver_name = drv.driverName;
    d.driver_info = drv.driverInfo;
  }
  if (want_dot) {
    d.integer_dot_product_4x8_accelerated =
        dotp.integerDotProduct4x8BitPackedSignedAccelerated == VK_TRUE;
  }

  // Features.
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, nullptr, {}};
  VkPhysicalDevice16BitStorageFeatures s16{};
  s16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES;
  VkPhysicalDevice8BitStorageFeatures s8{};
  s8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES;
  VkPhysicalDeviceShaderFloat16Int8Features f16i8{};
  f16i8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
  VkPhysicalDeviceShaderIntegerDotProductFeatures dotf{};
  dotf.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES;
  VkPhysicalDeviceSubgroupSizeControlFeatures sgcf{};
  sgcf.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES;
  VkPhysicalDeviceCooperativeMatrixFeaturesNV cmnv{};
  cmnv.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV;
  VkPhysicalDeviceCooperativeMatrixFeaturesKHR cmkhr{};
  cmkhr.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR;
  VkPhysicalDeviceVulkanMemoryModelFeatures vmm{};
  vmm.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES;
  const bool want_vmm = v12 || has("VK_KHR_vulkan_memory_model");
  const bool want_s8 = v12 || has("VK_KHR_8bit_storage");
  const bool want_f16i8 = v12 || has("VK_KHR_shader_float16_int8");
  head = nullptr;
  chain(head, s16);
  if (want_s8) chain(head, s8);
  if (want_f16i8) chain(head, f16i8);
  if (want_dot) chain(head, dotf);
  if (want_sgc) chain(head, sgcf);
  if (d.cooperative_matrix_nv) chain(head, cmnv);
  if (d.cooperative_matrix_khr) chain(head, cmkhr);
  if (want_vmm) chain(head, vmm);
  f2.pNext = head;
  vk.vkGetPhysicalDeviceFeatures2(pd, &f2);
  d.storage_buffer_16bit = s16.storageBuffer16BitAccess == VK_TRUE;
  d.storage_buffer_8bit = want_s8 && s8.storageBuffer8BitAccess == VK_TRUE;
  d.shader_int8 = want_f16i8 && f16i8.shaderInt8 == VK_TRUE;
  d.shader_float16 = want_f16i8 && f16i8.shaderFloat16 == VK_TRUE;
  d.integer_dot_product = want_dot && dotf.shaderIntegerDotProduct == VK_TRUE;
  d.subgroup_size_control = want_sgc && sgcf.subgroupSizeControl == VK_TRUE;
  d.cooperative_matrix_nv = d.cooperative_matrix_nv && cmnv.cooperativeMatrix == VK_TRUE;
  d.cooperative_matrix_khr = d.cooperative_matrix_khr && cmkhr.cooperativeMatrix == VK_TRUE;
  d.vulkan_memory_model = want_vmm && vmm.vulkanMemoryModel == VK_TRUE;
  const VkComponentTypeNV i8 = VK_COMPONENT_TYPE_SINT8_NV, i32 = VK_COMPONENT_TYPE_SINT32_NV;
  const VkComponentTypeNV f16 = VK_COMPONENT_TYPE_FLOAT16_NV, f32 = VK_COMPONENT_TYPE_FLOAT32_NV;
  if (d.cooperative_matrix_nv) {
    const auto q = vk.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV;
    const VkStructureType st = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
    d.cooperative_matrix_int8 = coop_shapes<VkCooperativeMatrixPropertiesNV>(q, st, pd, i8, i32);
    d.cooperative_matrix_f16 = coop_shapes<VkCooperativeMatrixPropertiesNV>(q, st, pd, f16, f32);
  }
  if (d.cooperative_matrix_khr) {
    const auto q = vk.vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR;
    const VkStructureType st = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR;
    d.cooperative_matrix_int8_khr =
        coop_shapes<VkCooperativeMatrixPropertiesKHR>(q, st, pd, i8, i32);
    d.cooperative_matrix_f16_khr =
        coop_shapes<VkCooperativeMatrixPropertiesKHR>(q, st, pd, f16, f32);
  }

  d.heaps = read_heaps(vk, pd, d.has_memory_budget);
  return d;
}

std::vector<VulkanHeap> vk::read_heaps(const Functions& vk, VkPhysicalDevice pd, bool budget) {
  std::vector<VulkanHeap> out;
  if (!vk.vkGetPhysicalDeviceMemoryProperties2) budget = false;
  VkPhysicalDeviceMemoryProperties mem{};
  VkPhysicalDeviceMemoryBudgetPropertiesEXT b{};
  b.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT;
  if (budget) {
    VkPhysicalDeviceMemoryProperties2 mp2{
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2, &b, {}};
    vk.vkGetPhysicalDeviceMemoryProperties2(pd, &mp2);
    mem = mp2.memoryProperties;
  } else {
    vk.vkGetPhysicalDeviceMemoryProperties(pd, &mem);
  }
  for (uint32_t h = 0; h < mem.memoryHeapCount && h < VK_MAX_MEMORY_HEAPS; ++h) {
    VulkanHeap heap;
    heap.size = mem.memoryHeaps[h].size;
    heap.device_local = (mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) != 0;
    if (budget) {
      heap.budget = b.heapBudget[h];
      heap.usage = b.heapUsage[h];
    }
    out.push_back(heap);
  }
  return out;
}

namespace {

VulkanDeviceList enumerate() {
  VulkanDeviceList out;
  vk::Instance inst;
  out.reason = inst.create();
  out.instance_version = inst.loader_version();
  if (!out.reason.empty()) return out;
  std::vector<VkPhysicalDevice> pds;
  try {
    pds = inst.physical_devices();
  } catch (const Error& e) {
    out.reason = e.what();
    return out;
  }
  const uint32_t n = uint32_t(pds.size());
  if (n == 0) {
    out.reason = "no Vulkan devices";
    return out;
  }
  for (uint32_t i = 0; i < n; ++i) {
    out.devices.push_back(
        vk::describe_physical_device(inst.functions(), pds[i], i, inst.api_version()));
  }
  return out;
}

}  // namespace

std::string_view vulkan_device_type_name(VulkanDeviceType t) {
  switch (t) {
    case VulkanDeviceType::Integrated:
      return "integrated";
    case VulkanDeviceType::Discrete:
      return "discrete";
    case VulkanDeviceType::Virtual:
      return "virtual";
    case VulkanDeviceType::Cpu:
      return "cpu";
    case VulkanDeviceType::Other:
      break;
  }
  return "other";
}

std::string vulkan_version_string(uint32_t v) {
  return cat(VK_API_VERSION_MAJOR(v), ".", VK_API_VERSION_MINOR(v), ".", VK_API_VERSION_PATCH(v));
}

std::string vulkan_driver_version_string(uint32_t vendor_id, uint32_t v) {
  if (vendor_id == 0x10de) {  // NVIDIA
    return cat(v >> 22, ".", (v >> 14) & 0xff, ".", (v >> 6) & 0xff, ".", v & 0x3f);
  }
  return vulkan_version_string(v);
}

uint64_t VulkanDeviceInfo::binding_limit() const {
  uint64_t limit = max_storage_buffer_range;
  for (uint64_t l : {max_memory_allocation_size, max_buffer_size}) {
    if (l != 0 && (limit == 0 || l < limit)) limit = l;
  }
  return limit;
}

uint64_t VulkanDeviceInfo::device_local_bytes() const {
  uint64_t best = 0;
  for (const VulkanHeap& h : heaps) {
    if (!h.device_local) continue;
    best = std::max(best, h.budget != 0 ? std::min(h.budget, h.size) : h.size);
  }
  return best;
}

VulkanDeviceList enumerate_vulkan_devices() {
  try {
    return enumerate();
  } catch (const std::exception& e) {
    VulkanDeviceList out;
    out.reason = cat("Vulkan enumeration failed: ", e.what());
    return out;
  }
}

int default_vulkan_device(const std::vector<VulkanDeviceInfo>& devices) {
  for (size_t i = 0; i < devices.size(); ++i) {
    if (devices[i].is_real_gpu()) return int(i);
  }
  return -1;
}

}  // namespace trit::engine
