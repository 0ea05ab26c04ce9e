// The Vulkan loader opened with dlopen, the function table, VkResult names and the instance.
#include "backend/vulkan/vk_loader.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <utility>

namespace trit::engine::vk {
namespace {

struct LoaderLibrary {
  PFN_vkGetInstanceProcAddr get_instance_proc = nullptr;
  std::string why;
};

LoaderLibrary open_library() {
  const char* names[] = {
#if defined(__APPLE__)
    "libvulkan.1.dylib",
    "libvulkan.dylib",
    "libMoltenVK.dylib",
#else
    "libvulkan.so.1",
    "libvulkan.so",
#endif
  };
  LoaderLibrary out;
  void* lib = nullptr;
  for (const char* n : names) {
    lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
    if (lib) break;
  }
  if (!lib) {
    out.why = cat("no Vulkan loader (", names[0], " not found)");
    return out;
  }
  out.get_instance_proc =
      reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
  if (!out.get_instance_proc) out.why = "the Vulkan loader has no vkGetInstanceProcAddr";
  return out;
}

}  // namespace

PFN_vkGetInstanceProcAddr open_loader(std::string* why) {
  static const LoaderLibrary lib = open_library();  // once per process, thread-safe
  if (!lib.get_instance_proc && why) *why = lib.why;
  return lib.get_instance_proc;
}

std::string Functions::load_global() {
  std::string why;
  vkGetInstanceProcAddr = open_loader(&why);
  if (!vkGetInstanceProcAddr) return why;
#define TRIT_VK_LOAD(name, required)                                                 \
  name = reinterpret_cast<PFN_##name>(vkGetInstanceProcAddr(VK_NULL_HANDLE, #name)); \
  if (required && !name) return "the Vulkan loader has no " #name;
  TRIT_VK_GLOBAL_FUNCTIONS(TRIT_VK_LOAD)
#undef TRIT_VK_LOAD
  return "";
}

std::string Functions::load_instance(VkInstance instance) {
#define TRIT_VK_LOAD(name, required)                                           \
  name = reinterpret_cast<PFN_##name>(vkGetInstanceProcAddr(instance, #name)); \
  if (required && !name) return "the Vulkan loader lacks " #name;
  TRIT_VK_INSTANCE_FUNCTIONS(TRIT_VK_LOAD)
#undef TRIT_VK_LOAD
  return "";
}

std::string Functions::load_device(VkDevice device) {
#define TRIT_VK_LOAD(name, required)                                       \
  name = reinterpret_cast<PFN_##name>(vkGetDeviceProcAddr(device, #name)); \
  if (required && !name) return "the Vulkan driver lacks " #name;
  TRIT_VK_DEVICE_FUNCTIONS(TRIT_VK_LOAD)
#undef TRIT_VK_LOAD
  return "";
}

std::string vk_result_name(VkResult r) {
  switch (r) {
#define TRIT_VK_RESULT(name) \
  case name:                 \
    return #name;
    TRIT_VK_RESULT(VK_SUCCESS)
    TRIT_VK_RESULT(VK_NOT_READY)
    TRIT_VK_RESULT(VK_TIMEOUT)
    TRIT_VK_RESULT(VK_EVENT_SET)
    TRIT_VK_RESULT(VK_EVENT_RESET)
    TRIT_VK_RESULT(VK_INCOMPLETE)
    TRIT_VK_RESULT(VK_ERROR_OUT_OF_HOST_MEMORY)
    TRIT_VK_RESULT(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    TRIT_VK_RESULT(VK_ERROR_INITIALIZATION_FAILED)
    TRIT_VK_RESULT(VK_ERROR_DEVICE_LOST)
    TRIT_VK_RESULT(VK_ERROR_MEMORY_MAP_FAILED)
    TRIT_VK_RESULT(VK_ERROR_LAYER_NOT_PRESENT)
    TRIT_VK_RESULT(VK_ERROR_EXTENSION_NOT_PRESENT)
    TRIT_VK_RESULT(VK_ERROR_FEATURE_NOT_PRESENT)
    TRIT_VK_RESULT(VK_ERROR_TOO_MANY_OBJECTS)
    TRIT_VK_RESULT(VK_ERROR_FORMAT_NOT_SUPPORTED)
    TRIT_VK_RESULT(VK_ERROR_FRAGMENTED_POOL)
    TRIT_VK_RESULT(VK_ERROR_UNKNOWN)
    TRIT_VK_RESULT(VK_ERROR_OUT_OF_POOL_MEMORY)
    TRIT_VK_RESULT(VK_ERROR_INVALID_EXTERNAL_HANDLE)
    TRIT_VK_RESULT(VK_ERROR_FRAGMENTATION)
    TRIT_VK_RESULT(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
    TRIT_VK_RESULT(VK_PIPELINE_COMPILE_REQUIRED)
#undef TRIT_VK_RESULT
    case VK_ERROR_INCOMPATIBLE_DRIVER:
      return "VK_ERROR_INCOMPATIBLE_DRIVER (no Vulkan driver)";
    default:
      return cat("VkResult ", int(r));
  }
}

void fail_call(VkResult r, const std::string& what) {
  const std::string msg = cat("vulkan: ", what, ": ", vk_result_name(r));
  if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY) throw OutOfDeviceMemory(msg);
  if (r == VK_ERROR_DEVICE_LOST) throw DeviceLost(msg);
  throw Error(msg);
}

Instance::~Instance() {
  destroy();
}

Instance::Instance(Instance&& o) noexcept
    : vk_(o.vk_),
      handle_(std::exchange(o.handle_, VK_NULL_HANDLE)),
      api_version_(o.api_version_),
      loader_version_(o.loader_version_) {}

Instance& Instance::operator=(Instance&& o) noexcept {
  if (this != &o) {
    destroy();
    vk_ = o.vk_;
    handle_ = std::exchange(o.handle_, VK_NULL_HANDLE);
    api_version_ = o.api_version_;
    loader_version_ = o.loader_version_;
  }
  return *this;
}

void Instance::destroy() {
  if (handle_ != VK_NULL_HANDLE && vk_.vkDestroyInstance) vk_.vkDestroyInstance(handle_, nullptr);
  handle_ = VK_NULL_HANDLE;
}

std::string Instance::create() {
  destroy();
  std::string why = vk_.load_global();
  if (!why.empty()) return why;
  loader_version_ = VK_API_VERSION_1_0;
  if (vk_.vkEnumerateInstanceVersion &&
      vk_.vkEnumerateInstanceVersion(&loader_version_) != VK_SUCCESS) {
    loader_version_ = VK_API_VERSION_1_0;
  }
  api_version_ = std::min<uint32_t>(loader_version_, VK_API_VERSION_1_3);

  // Portability drivers (MoltenVK) are listed only when the instance asks for them.
  std::vector<const char*> extensions;
  VkInstanceCreateFlags flags = 0;
  uint32_t n = 0;
  if (vk_.vkEnumerateInstanceExtensionProperties(nullptr, &n, nullptr) == VK_SUCCESS) {
    std::vector<VkExtensionProperties> list(n);
    if (vk_.vkEnumerateInstanceExtensionProperties(nullptr, &n, list.data()) >= VK_SUCCESS) {
      for (uint32_t i = 0; i < n && i < list.size(); ++i) {
        if (std::strcmp(list[i].extensionName, "VK_KHR_portability_enumeration") == 0) {
          extensions.push_back("VK_KHR_portability_enumeration");
          flags |= 0x00000001;  // VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR
        }
      }
    }
  }

  VkApplicationInfo app{};
  app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
  app.pApplicationName = "trit";
  app.pEngineName = "trit";
  app.apiVersion = api_version_;
  VkInstanceCreateInfo ci{};
  ci.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
  ci.flags = flags;
  ci.pApplicationInfo = &app;
  ci.enabledExtensionCount = uint32_t(extensions.size());
  ci.ppEnabledExtensionNames = extensions.data();
  VkInstance inst = VK_NULL_HANDLE;
  const VkResult r = vk_.vkCreateInstance(&ci, nullptr, &inst);
  if (r != VK_SUCCESS) return cat("vkCreateInstance failed: ", vk_result_name(r));
  handle_ = inst;
  // The loader unloads the drivers with the last instance, and some (Mesa's) leave allocations
  // behind that leak checkers then report; one instance kept for the life of the process keeps
  // them loaded. It is made once, with the same settings, and never used.
  static const VkInstance keep_drivers_loaded = [&] {
    VkInstance keep = VK_NULL_HANDLE;
    if (vk_.vkCreateInstance(&ci, nullptr, &keep) != VK_SUCCESS) keep = VK_NULL_HANDLE;
    return keep;
  }();
  (void)keep_drivers_loaded;
  why = vk_.load_instance(handle_);
  if (!why.empty()) {
    // Without vkDestroyInstance the handle cannot be released; drop it.
    if (!vk_.vkDestroyInstance) handle_ = VK_NULL_HANDLE;
    destroy();
    return why;
  }
  return "";
}

std::vector<VkPhysicalDevice> Instance::physical_devices() const {
  uint32_t n = 0;
  check(vk_.vkEnumeratePhysicalDevices(handle_, &n, nullptr), "vkEnumeratePhysicalDevices");
  std::vector<VkPhysicalDevice> out(n);
  const VkResult r = vk_.vkEnumeratePhysicalDevices(handle_, &n, out.data());
  check(r, "vkEnumeratePhysicalDevices");
  out.resize(n);
  return out;
}

}  // namespace trit::engine::vk
