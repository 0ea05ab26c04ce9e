// Lookup of embedded shaders by name.
#include "backend/vulkan/shaders.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <string>

#include "backend/vulkan/spirv_coopmat.h"
#include "core/error.h"

namespace trit::engine::vk {
namespace {

const detail::EmbeddedShader* find_embedded(std::string_view name) {
  const auto table = detail::embedded_shaders();
  const auto it = std::lower_bound(
      table.begin(), table.end(), name,
      [](const detail::EmbeddedShader& s, std::string_view n) { return s.name < n; });
  return it == table.end() || it->name != name ? nullptr : &*it;
}

}  // namespace

std::span<const uint32_t> shader_spirv(std::string_view name) {
  if (const detail::EmbeddedShader* s = find_embedded(name)) return {s->words, s->size};
  constexpr std::string_view kKhr = "_khr";
  if (name.size() > kKhr.size() && name.ends_with(kKhr)) {
    if (const detail::EmbeddedShader* nv =
            find_embedded(name.substr(0, name.size() - kKhr.size()))) {
      // Derived once per process and kept: pipelines hold no pointer into it after creation,
      // but callers may keep the span.
      static std::mutex mutex;
      static std::map<std::string, std::vector<uint32_t>, std::less<>> derived;
      const std::lock_guard<std::mutex> lock(mutex);
      auto it = derived.find(name);
      if (it == derived.end()) {
        it = derived.emplace(std::string(name), coopmat_nv_to_khr({nv->words, nv->size})).first;
      }
      return it->second;
    }
  }
  fail("vulkan: no embedded shader '", name, "' (", detail::embedded_shaders().size(),
       " shaders are declared in src/backend/vulkan/shaders/*.cmake)");
}

std::vector<std::string_view> shader_names() {
  std::vector<std::string_view> out;
  for (const detail::EmbeddedShader& s : detail::embedded_shaders()) out.push_back(s.name);
  return out;
}

}  // namespace trit::engine::vk
