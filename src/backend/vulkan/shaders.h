// The SPIR-V of every shader declared with trit_shader() in shaders/*.cmake, compiled by
// glslc, checked by spirv-val and embedded at build time (cmake/TritShaders.cmake).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace trit::engine::vk {

// The words of shader `name`; throws trit::Error for a name no trit_shader() declared.
// NAME_khr is the SPV_KHR_cooperative_matrix form of NAME, a module written with
// GL_NV_cooperative_matrix (spirv_coopmat.h), derived on first use.
std::span<const uint32_t> shader_spirv(std::string_view name);
// Every embedded shader's name, sorted.
std::vector<std::string_view> shader_names();

namespace detail {
struct EmbeddedShader {
  std::string_view name;
  const uint32_t* words;
  size_t size;  // words
};
// The generated table (shader_table.cpp in the build folder), sorted by name.
std::span<const EmbeddedShader> embedded_shaders();
}  // namespace detail

}  // namespace trit::engine::vk
