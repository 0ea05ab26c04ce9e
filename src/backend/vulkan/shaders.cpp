// Lookup of embedded shaders by name.
#include "backend/vulkan/shaders.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace trit::vk {

std::span<const uint32_t> shader_spirv(std::string_view name) {
  const auto table = detail::embedded_shaders();
  const auto it = std::lower_bound(
      table.begin(), table.end(), name,
      [](const detail::EmbeddedShader& s, std::string_view n) { return s.name < n; });
  if (it == table.end() || it->name != name) {
    fail("vulkan: no embedded shader '", name, "' (", table.size(),
         " shaders are declared in src/backend/vulkan/shaders/*.cmake)");
  }
  return {it->words, it->size};
}

std::vector<std::string_view> shader_names() {
  std::vector<std::string_view> out;
  for (const detail::EmbeddedShader& s : detail::embedded_shaders()) out.push_back(s.name);
  return out;
}

}  // namespace trit::vk
