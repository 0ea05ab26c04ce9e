// Whether and how matmul_ternary_coop (the int8 tiled product on cooperative matrices) runs on
// a device: the matrix shape it uses and the tiles of its workgroups.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "backend/vulkan/device_info.h"

namespace trit::engine::vk {

// Which cooperative matrix extension to use: Auto takes KHR where the device lists int8 shapes
// for it, NV otherwise.
enum class CoopChoice { Off, Auto, Nv, Khr };

// TRIT_VK_COOPMAT: "0" off, "nv", "khr", anything else (or unset) Auto.
CoopChoice coop_choice_from_env();

// TRIT_VK_EXACT=1: training keeps the products that give the CPU's bits (no f16 matrices).
bool exact_training_from_env();

// A workgroup of 2 x 2 subgroups, each computing (tile_m / 2) rows x (tile_n / 2) tokens of
// output as frag_m x frag_n cooperative matrices of `shape`.
struct CoopTiles {
  CoopMatShape shape;
  uint32_t wg = 0;  // invocations: four subgroups
  uint32_t tile_m = 64, tile_n = 64;
  uint32_t frag_m = 0, frag_n = 0;
  bool khr = false;  // VK_KHR_cooperative_matrix (else NV)
  // The module: matmul_ternary_coop, or its KHR form (shaders.h).
  std::string_view shader() const {
    return khr ? "matmul_ternary_coop_khr" : "matmul_ternary_coop";
  }
  // 32 x 32 tiles (16 x 16 a subgroup) for small grids (MatmulConfig::small_tile_groups), when
  // the shape allows (m and n dividing 16); these tiles otherwise.
  CoopTiles small() const;
  // matmul_ternary_coop's specialization constants (constant_id 0..16).
  std::vector<uint32_t> spec() const;
  // Shared memory of one workgroup, bytes (matmul_ternary_coop.comp's header).
  uint32_t shared_bytes() const { return 4 * 68 * (tile_m + tile_n); }
};

// The 64 x 64 tiles (32 x 32 where shared memory holds only those) for the first of the
// device's int8 shapes of the chosen extension (in the device's order of preference) whose m
// and n divide 32 and whose k is a multiple of 4 dividing 256. nullopt when none does, when the
// device lacks a feature the module needs (the extension, shaderInt8, vulkanMemoryModel, basic
// subgroup operations, a known subgroup size), or when a workgroup would exceed its invocation
// or shared-memory limits.
std::optional<CoopTiles> plan_coop_tiles(const VulkanDeviceInfo& info,
                                         CoopChoice choice = CoopChoice::Auto);

// The transposed products of training (ternary and f16 weights) on f16 cooperative matrices
// (matmul_ternary_t_coop, matmul_float_t_coop: matmul_transposed_coop.comp): a workgroup of four
// subgroups computes 64 tokens x 128 columns of dx, each subgroup 32 x 64 as frag_m x frag_n
// matrices of `shape` (m tokens, n columns, k weight rows).
struct CoopF16Tiles {
  CoopMatShape shape;
  uint32_t wg = 0;  // invocations: four subgroups
  uint32_t frag_m = 0, frag_n = 0;
  bool khr = false;
  static constexpr uint32_t kTokens = 64, kColumns = 128;
  // The ternary module, or (float_rows) the one for f16 weight rows.
  std::string_view shader(bool float_rows = false) const {
    if (float_rows) return khr ? "matmul_float_t_coop_khr" : "matmul_float_t_coop";
    return khr ? "matmul_ternary_t_coop_khr" : "matmul_ternary_t_coop";
  }
  std::vector<uint32_t> spec() const;  // constant_id 0..16
  // Shared memory of one workgroup, bytes (the module's header).
  static constexpr uint32_t shared_bytes() { return 4 * 64 * 132; }
};

// The tiles for the first of the device's f16 x f16 -> f32 shapes of the extension `khr`
// names whose m divides 32, n divides 64 and is a multiple of 8, and k divides 32 and is a
// multiple of 8. nullopt when none does, when the device lacks shaderFloat16, the extension,
// vulkanMemoryModel, basic subgroup operations or a known subgroup size, or when a workgroup
// would exceed its limits.
std::optional<CoopF16Tiles> plan_coop_f16_tiles(const VulkanDeviceInfo& info, bool khr);

}  // namespace trit::engine::vk
