// Pipeline creation and teardown.
#include "backend/vulkan/pipeline.h"

#include <cstdio>

#include "backend/vulkan/context.h"

namespace trit::engine::vk {

Pipeline::Pipeline(Context& ctx, std::string name, std::span<const uint32_t> spirv,
                   const PipelineDesc& desc)
    : ctx_(ctx),
      name_(std::move(name)),
      bindings_(desc.bindings),
      push_bytes_(desc.push_bytes),
      readonly_(desc.readonly) {
  const Functions& vk = ctx.vk();
  const VkDevice dev = ctx.device();
  if (spirv.size() < 5 || spirv[0] != 0x07230203) fail("vulkan: pipeline ", name_, ": not SPIR-V");
  if (bindings_ > 32) fail("vulkan: pipeline ", name_, ": more than 32 bindings");
  if (push_bytes_ % 4 != 0 || push_bytes_ > ctx.caps().info.max_push_constants_size) {
    fail("vulkan: pipeline ", name_, ": push constants of ", push_bytes_,
         " bytes (a multiple of 4 up to maxPushConstantsSize ",
         ctx.caps().info.max_push_constants_size, " is needed)");
  }
  try {
    VkShaderModuleCreateInfo smi{};
    smi.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
    smi.codeSize = spirv.size() * sizeof(uint32_t);
    smi.pCode = spirv.data();
    check(vk.vkCreateShaderModule(dev, &smi, nullptr, &module_), "vkCreateShaderModule for ",
          name_);

    std::vector<VkDescriptorSetLayoutBinding> binds(bindings_);
    for (uint32_t i = 0; i < bindings_; ++i) {
      binds[i] = {};
      binds[i].binding = i;
      binds[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      binds[i].descriptorCount = 1;
      binds[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    }
    VkDescriptorSetLayoutCreateInfo dli{};
    dli.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
    if (ctx.caps().enabled.push_descriptor) {
      dli.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
    }
    dli.bindingCount = bindings_;
    dli.pBindings = binds.data();
    check(vk.vkCreateDescriptorSetLayout(dev, &dli, nullptr, &set_layout_),
          "vkCreateDescriptorSetLayout for ", name_);

    VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes_};
    VkPipelineLayoutCreateInfo pli{};
    pli.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
    pli.setLayoutCount = 1;
    pli.pSetLayouts = &set_layout_;
    pli.pushConstantRangeCount = push_bytes_ > 0 ? 1 : 0;
    pli.pPushConstantRanges = &range;
    check(vk.vkCreatePipelineLayout(dev, &pli, nullptr, &layout_), "vkCreatePipelineLayout for ",
          name_);

    std::vector<VkSpecializationMapEntry> entries(desc.spec.size());
    for (uint32_t i = 0; i < entries.size(); ++i) {
      entries[i] = {i, uint32_t(i * sizeof(uint32_t)), sizeof(uint32_t)};
    }
    VkSpecializationInfo spec{};
    spec.mapEntryCount = uint32_t(entries.size());
    spec.pMapEntries = entries.data();
    spec.dataSize = desc.spec.size() * sizeof(uint32_t);
    spec.pData = desc.spec.data();

    VkComputePipelineCreateInfo cpi{};
    cpi.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
    cpi.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    cpi.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    cpi.stage.module = module_;
    cpi.stage.pName = "main";
    cpi.stage.pSpecializationInfo = desc.spec.empty() ? nullptr : &spec;
    cpi.layout = layout_;
    if (ctx.caps().enabled.pipeline_statistics) {
      cpi.flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;
    }
    check(vk.vkCreateComputePipelines(dev, ctx.pipeline_cache(), 1, &cpi, nullptr, &pipeline_),
          "vkCreateComputePipelines for ", name_);
    if (ctx.caps().enabled.pipeline_statistics) print_statistics();
  } catch (...) {
    release();
    throw;
  }
}

// One line a pipeline executable: its name and the driver's statistics (TRIT_VK_PIPELINE_STATS=1,
// a tuning aid: a register count near the limit or spilled bytes explain a slow kernel).
void Pipeline::print_statistics() const {
  const Functions& vk = ctx_.vk();
  VkPipelineInfoKHR pi{};
  pi.sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR;
  pi.pipeline = pipeline_;
  uint32_t n = 0;
  if (vk.vkGetPipelineExecutablePropertiesKHR(ctx_.device(), &pi, &n, nullptr) != VK_SUCCESS)
    return;
  std::vector<VkPipelineExecutablePropertiesKHR> props(n);
  for (auto& p : props) p.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_PROPERTIES_KHR;
  if (vk.vkGetPipelineExecutablePropertiesKHR(ctx_.device(), &pi, &n, props.data()) != VK_SUCCESS) {
    return;
  }
  for (uint32_t e = 0; e < n; ++e) {
    VkPipelineExecutableInfoKHR ei{};
    ei.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR;
    ei.pipeline = pipeline_;
    ei.executableIndex = e;
    uint32_t m = 0;
    if (vk.vkGetPipelineExecutableStatisticsKHR(ctx_.device(), &ei, &m, nullptr) != VK_SUCCESS) {
      continue;
    }
    std::vector<VkPipelineExecutableStatisticKHR> st(m);
    for (auto& s : st) s.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR;
    if (vk.vkGetPipelineExecutableStatisticsKHR(ctx_.device(), &ei, &m, st.data()) != VK_SUCCESS) {
      continue;
    }
    std::string line = "pipeline " + name_ + ":";
    for (const auto& s : st) {
      line += std::string(" ") + s.name + "=";
      switch (s.format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
          line += s.value.b32 ? "yes" : "no";
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
          line += std::to_string(s.value.i64);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
          line += std::to_string(s.value.u64);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_FLOAT64_KHR:
          line += std::to_string(s.value.f64);
          break;
        default:
          line += "?";
      }
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

Pipeline::~Pipeline() {
  release();
}

void Pipeline::release() {
  const Functions& vk = ctx_.vk();
  const VkDevice dev = ctx_.device();
  if (pipeline_ != VK_NULL_HANDLE) vk.vkDestroyPipeline(dev, pipeline_, nullptr);
  if (layout_ != VK_NULL_HANDLE) vk.vkDestroyPipelineLayout(dev, layout_, nullptr);
  if (set_layout_ != VK_NULL_HANDLE) vk.vkDestroyDescriptorSetLayout(dev, set_layout_, nullptr);
  if (module_ != VK_NULL_HANDLE) vk.vkDestroyShaderModule(dev, module_, nullptr);
  pipeline_ = VK_NULL_HANDLE;
  layout_ = VK_NULL_HANDLE;
  set_layout_ = VK_NULL_HANDLE;
  module_ = VK_NULL_HANDLE;
}

}  // namespace trit::engine::vk
