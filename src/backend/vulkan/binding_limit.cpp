// The binding limit and the parser of its override.
#include "backend/vulkan/binding_limit.h"

#include <cstdlib>
#include <string>

#include "core/error.h"

namespace trit::engine::vk {

uint64_t binding_limit(const VulkanDeviceInfo& d, uint64_t override_bytes, double heap_fraction) {
  uint64_t limit = UINT64_MAX;
  auto lower = [&](uint64_t l) {
    if (l != 0 && l < limit) limit = l;
  };
  lower(d.max_storage_buffer_range);
  lower(d.max_memory_allocation_size);
  lower(d.max_buffer_size);
  if (heap_fraction > 0) lower(uint64_t(double(d.device_local_bytes()) * heap_fraction));
  lower(override_bytes);
  if (limit == UINT64_MAX) fail("vulkan: ", d.name, ": the device reports no buffer limits");
  if (limit < kBindingAlign) {
    fail("vulkan: ", d.name, ": a binding limit of ", limit, " bytes is below the minimum of ",
         kBindingAlign, " bytes");
  }
  limit -= limit % kBindingAlign;
  return limit;
}

uint64_t parse_max_buffer_mb(std::string_view text, std::string_view source) {
  const std::string shown(text);
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  uint64_t mb = 0;
  bool ok = !text.empty();
  for (char c : text) {
    if (c < '0' || c > '9' || mb > (UINT64_MAX >> 20) / 10) {
      ok = false;
      break;
    }
    mb = mb * 10 + uint64_t(c - '0');
  }
  if (!ok || mb == 0 || mb > (UINT64_MAX >> 20)) {
    fail(source, ": '", shown, "' is not a positive whole number of MiB (for example 256)");
  }
  return mb << 20;
}

uint64_t max_buffer_bytes_from_env() {
  const char* v = std::getenv("TRIT_VK_MAX_BUFFER_MB");
  if (v == nullptr || *v == '\0') return 0;
  return parse_max_buffer_mb(v, "TRIT_VK_MAX_BUFFER_MB");
}

}  // namespace trit::engine::vk
