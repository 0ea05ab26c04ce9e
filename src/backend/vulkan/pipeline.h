// Pipeline: a compute pipeline built from embedded SPIR-V (shaders.h): shader module, a
// descriptor set layout of N storage buffers at bindings 0..N-1, one push-constant range and
// specialization constants for constant_id 0..k, created through the context's pipeline
// cache. RAII, owned by the Context's registry (Context::pipeline), which builds each
// (shader, spec constants) once.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/vulkan/vk_loader.h"

namespace trit::engine::vk {

class Context;

struct PipelineDesc {
  std::string_view shader;     // name given to trit_shader() in shaders/*.cmake
  uint32_t bindings = 1;       // storage buffers at bindings 0..bindings-1
  uint32_t push_bytes = 0;     // size of the push-constant block (a multiple of 4)
  std::vector<uint32_t> spec;  // values of constant_id 0, 1, ... (uint, int or float bits)
  // Bit i set: the shader only reads binding i. Sequence uses it to skip barriers between
  // dispatches that only read the same data; an unset bit (the default) counts as a write,
  // which is always safe.
  uint32_t readonly = 0;
};

class Pipeline {
 public:
  // `name` is used in errors ("test_axpy:64").
  Pipeline(Context& ctx, std::string name, std::span<const uint32_t> spirv,
           const PipelineDesc& desc);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  const std::string& name() const { return name_; }
  VkPipeline handle() const { return pipeline_; }
  VkPipelineLayout layout() const { return layout_; }
  VkDescriptorSetLayout set_layout() const { return set_layout_; }
  uint32_t bindings() const { return bindings_; }
  uint32_t push_bytes() const { return push_bytes_; }
  uint32_t readonly_mask() const { return readonly_; }

 private:
  void release();
  void print_statistics() const;
  const Context& ctx_;
  std::string name_;
  uint32_t bindings_ = 0;
  uint32_t push_bytes_ = 0;
  uint32_t readonly_ = 0;
  VkShaderModule module_ = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkPipeline pipeline_ = VK_NULL_HANDLE;
};

}  // namespace trit::engine::vk
