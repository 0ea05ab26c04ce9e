#include "backend/vulkan/coop_matrix.h"

#include <cstdlib>
#include <string>

#include "backend/vulkan/push_constants.h"
#include "backend/vulkan/vk_loader.h"

namespace trit::engine::vk {

namespace {

// The specialization constants both cooperative-matrix modules take: the workgroup size, the
// matrices per subgroup along each side and the matrix shape (constant_id 0..16, the rest 0).
std::vector<uint32_t> coop_spec(uint32_t wg, uint32_t frag_m, uint32_t frag_n,
                                const CoopMatShape& shape) {
  std::vector<uint32_t> s(uint32_t(SpecId::CoopK) + 1, 0);
  s[uint32_t(SpecId::WorkgroupSize)] = wg;
  s[uint32_t(SpecId::ThreadM)] = frag_m;
  s[uint32_t(SpecId::ThreadN)] = frag_n;
  s[uint32_t(SpecId::CoopM)] = shape.m;
  s[uint32_t(SpecId::CoopN)] = shape.n;
  s[uint32_t(SpecId::CoopK)] = shape.k;
  return s;
}

}  // namespace

std::vector<uint32_t> CoopTiles::spec() const {
  std::vector<uint32_t> s = coop_spec(wg, frag_m, frag_n, shape);
  s[uint32_t(SpecId::MatmulPath)] = uint32_t(MatmulPath::Tiled);
  s[uint32_t(SpecId::TileM)] = tile_m;
  s[uint32_t(SpecId::TileN)] = tile_n;
  return s;
}

CoopTiles CoopTiles::small() const {
  if (16 % shape.m != 0 || 16 % shape.n != 0) return *this;
  CoopTiles t = *this;
  t.tile_m = t.tile_n = 32;
  t.frag_m = 16 / shape.m;
  t.frag_n = 16 / shape.n;
  return t;
}

namespace {

std::optional<CoopTiles> tiles_for(const VulkanDeviceInfo& info,
                                   const std::vector<CoopMatShape>& shapes, bool khr) {
  auto divides = [](uint32_t a, uint32_t b) { return a != 0 && b % a == 0; };
  for (const CoopMatShape& s : shapes) {
    if (!divides(s.m, 32) || !divides(s.n, 32) || s.k % 4 != 0 || !divides(s.k, 256)) continue;
    CoopTiles t;
    t.shape = s;
    t.khr = khr;
    t.wg = 4 * info.subgroup_size;
    t.frag_m = 32 / s.m;
    t.frag_n = 32 / s.n;
    // 32 KiB of shared memory (common on phones) holds the small tiles only.
    if (t.shared_bytes() > info.max_compute_shared_memory_size) t = t.small();
    if (t.wg > info.max_compute_work_group_invocations ||
        t.wg > info.max_compute_work_group_size[0] ||
        t.shared_bytes() > info.max_compute_shared_memory_size) {
      return std::nullopt;
    }
    return t;
  }
  return std::nullopt;
}

}  // namespace

CoopChoice coop_choice_from_env() {
  const char* e = std::getenv("TRIT_VK_COOPMAT");
  const std::string v = e ? e : "";
  if (v == "0") return CoopChoice::Off;
  if (v == "nv") return CoopChoice::Nv;
  if (v == "khr") return CoopChoice::Khr;
  return CoopChoice::Auto;
}

bool exact_training_from_env() {
  const char* e = std::getenv("TRIT_VK_EXACT");
  return e && std::string(e) == "1";
}

std::optional<CoopTiles> plan_coop_tiles(const VulkanDeviceInfo& info, CoopChoice choice) {
  if (choice == CoopChoice::Off || !info.shader_int8 || !info.vulkan_memory_model ||
      !(info.subgroup_operations & VK_SUBGROUP_FEATURE_BASIC_BIT) || info.subgroup_size == 0) {
    return std::nullopt;
  }
  std::optional<CoopTiles> t;
  if (choice != CoopChoice::Nv && info.cooperative_matrix_khr) {
    t = tiles_for(info, info.cooperative_matrix_int8_khr, true);
  }
  if (!t && choice != CoopChoice::Khr && info.cooperative_matrix_nv) {
    t = tiles_for(info, info.cooperative_matrix_int8, false);
  }
  return t;
}

std::vector<uint32_t> CoopF16Tiles::spec() const {
  return coop_spec(wg, frag_m, frag_n, shape);
}

std::optional<CoopF16Tiles> plan_coop_f16_tiles(const VulkanDeviceInfo& info, bool khr) {
  if (!info.shader_float16 || !info.vulkan_memory_model ||
      !(info.subgroup_operations & VK_SUBGROUP_FEATURE_BASIC_BIT) || info.subgroup_size == 0 ||
      !(khr ? info.cooperative_matrix_khr : info.cooperative_matrix_nv)) {
    return std::nullopt;
  }
  const uint32_t wg = 4 * info.subgroup_size;
  if (wg > info.max_compute_work_group_invocations || wg > info.max_compute_work_group_size[0] ||
      CoopF16Tiles::shared_bytes() > info.max_compute_shared_memory_size) {
    return std::nullopt;
  }
  auto divides = [](uint32_t a, uint32_t b) { return a != 0 && b % a == 0; };
  for (const CoopMatShape& s :
       khr ? info.cooperative_matrix_f16_khr : info.cooperative_matrix_f16) {
    if (!divides(s.m, 32) || !divides(s.n, 64) || s.n % 8 != 0 || !divides(s.k, 32) ||
        s.k % 8 != 0) {
      continue;
    }
    return CoopF16Tiles{.shape = s, .wg = wg, .frag_m = 32 / s.m, .frag_n = 64 / s.n, .khr = khr};
  }
  return std::nullopt;
}

}  // namespace trit::engine::vk
