// The Vulkan backend: opening the device and choosing how its shaders run (Tuning). The ops
// live in the family files (vk_backend.h lists them).
#include "backend/vulkan/vulkan_backend.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "backend/vulkan/binding_limit.h"
#include "backend/vulkan/vk_backend.h"

namespace trit::engine {
namespace vk {
namespace {

ContextOptions context_options(const VulkanRequest& r) {
  ContextOptions o;
  o.device = r.index >= 0 ? DeviceChoice::at(uint32_t(r.index))
                          : (r.real_gpu_only ? DeviceChoice::real_gpu() : DeviceChoice::any());
  const uint64_t env = max_buffer_bytes_from_env();
  o.max_buffer_bytes = r.max_buffer_bytes;
  if (env != 0 && (o.max_buffer_bytes == 0 || env < o.max_buffer_bytes)) o.max_buffer_bytes = env;
  o.cooperative_matrix = coop_choice_from_env();
  o.exact_training = exact_training_from_env();
  return o;
}

// Tile shapes whose shared memory (matmul_ternary: 260 * (TILE_M + TILE_N) bytes, the larger
// of the two matmuls) fits the device. Software devices (lavapipe) pay per workgroup, so their
// matvec workgroups take more rows with fewer threads.
}  // namespace

Tuning tuning_for(const DeviceCaps& caps) {
  Tuning c;
  if (caps.info.type == VulkanDeviceType::Cpu) {
    c.mv_wg = 32;
    c.mv_rows = 16;
    c.attn_fuse_combine = true;
  } else {
    c.small_tile_groups = 1024;
  }
  // Tests force the small tiles on any device (TRIT_VK_SMALL_TILES=1), or the default ones
  // (=0), to compare their bits.
  if (const char* e = std::getenv("TRIT_VK_SMALL_TILES")) {
    if (std::string(e) == "1") c.small_tile_groups = UINT32_MAX;
    if (std::string(e) == "0") c.small_tile_groups = 0;
  }
  if (caps.info.max_compute_shared_memory_size < 260u * (c.tile_m + c.tile_n)) {
    c.tile_m = 32;
    c.tile_n = 16;
    c.thread_m = 2;
    c.thread_n = 2;
  }
  // Tuning knob: TRIT_VK_MATVEC=<threads>,<rows> overrides the matvec shape (powers of two).
  if (const char* e = std::getenv("TRIT_VK_MATVEC")) {
    unsigned wg = 0, rows = 0;
    if (std::sscanf(e, "%u,%u", &wg, &rows) == 2 && wg >= 16 && wg <= 1024 && rows >= 1 &&
        rows <= 64 && (wg & (wg - 1)) == 0) {
      c.mv_wg = wg;
      c.mv_rows = rows;
    }
  }
  // Decoding fusions: matvec_ternary sums with subgroupAdd. TRIT_VK_DECODE_FUSION=0 turns them
  // off (the tests compare both ways; a tuning aid).
  const uint32_t needed = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_ARITHMETIC_BIT;
  const char* fusion = std::getenv("TRIT_VK_DECODE_FUSION");
  c.fuse_decode =
      (caps.info.subgroup_operations & needed) == needed && !(fusion && std::string(fusion) == "0");
  if (caps.info.subgroup_size > 0) c.subgroup_size = caps.info.subgroup_size;
  // Tuning knob: TRIT_VK_FUSED_TOKENS=<n> (1..16) caps the tokens of the fused matvec.
  if (const char* e = std::getenv("TRIT_VK_FUSED_TOKENS")) {
    const int n = std::atoi(e);
    if (n >= 1 && n <= 16) c.max_fused_tokens = uint32_t(n);
  }
  if (const char* e = std::getenv("TRIT_VK_FUSED_ROWS")) {
    const int n = std::atoi(e);
    if (n >= 1 && n <= 64) c.fused_rows_per_subgroup = uint32_t(n);
  }
  if (const char* e = std::getenv("TRIT_VK_FUSED_PAIR")) {
    c.fused_row_pairs = std::string(e) == "1";
    if (c.fused_row_pairs)
      c.fused_rows_per_subgroup = std::max<uint32_t>(2, c.fused_rows_per_subgroup);
  }
  if (const char* e = std::getenv("TRIT_VK_FOLD_NORM")) c.fold_decode_norm = std::string(e) != "0";
  // Tuning knob: TRIT_VK_NORM_WG=32..1024 (a power of two) sets every norm's workgroup (their
  // sums follow it, on every path alike).
  if (const char* e = std::getenv("TRIT_VK_NORM_WG")) {
    const int n = std::atoi(e);
    if (n >= 32 && n <= 1024 && (n & (n - 1)) == 0) c.norm_wg = uint32_t(n);
  }
  if (const char* e = std::getenv("TRIT_VK_SHORT_K")) c.gemm_short_k = std::string(e) != "0";
  if (const char* e = std::getenv("TRIT_VK_ATTN_UNROLL")) {
    const int n = std::atoi(e);
    if (n >= 2 && n <= 64 && n % 2 == 0) c.attn_unroll = uint32_t(n);
  }
  if (const char* e = std::getenv("TRIT_VK_ATTN_FUSE_COMBINE")) {
    c.attn_fuse_combine = std::string(e) != "0";
  }
  if (const char* e = std::getenv("TRIT_VK_ATTN_BWD_TILED")) {
    c.attn_bwd_tiled = std::string(e) != "0";
  }
  if (const char* e = std::getenv("TRIT_VK_ATTN_QT")) {
    const int qt = std::atoi(e);
    if (qt >= 1 && qt <= 16) c.attn_qt = uint32_t(qt);
  }
  // Vulkan only promises 128 invocations a workgroup.
  while (c.norm_wg > 32 && (c.norm_wg > caps.info.max_compute_work_group_invocations ||
                            c.norm_wg > caps.info.max_compute_work_group_size[0])) {
    c.norm_wg /= 2;
  }
  return c;
}

VulkanBackend::VulkanBackend(const VulkanRequest& request)
    : ctx_(std::make_unique<Context>(context_options(request))),
      rec_(*ctx_),
      scratch_(*ctx_),
      weights_(*ctx_, rec_),
      tune_(tuning_for(ctx_->caps())),
      kit_{*ctx_, rec_, scratch_, weights_, tune_} {}

VulkanBackend::~VulkanBackend() {
  try {
    rec_.submit();  // queued work must end before its buffers go
  } catch (...) {
  }
  ctx_->wait_idle();
}

void VulkanBackend::finish() {
  rec_.submit();
}

void VulkanBackend::abandon() {
  // Chunks of the failed recording may be running: they finish before their buffers go.
  try {
    ctx_->wait_idle();
  } catch (const Error&) {  // a lost device runs nothing more
  }
  rec_.abandon();
}

uint64_t VulkanBackend::device_memory_used() const {
  uint64_t used = 0;
  for (const VulkanHeap& h : ctx_->heaps()) {
    if (h.device_local) used += h.usage;
  }
  return used;
}

std::string VulkanBackend::description() const {
  const DeviceCaps& caps = ctx_->caps();
  const VulkanDeviceInfo& d = caps.info;
  std::string driver = d.driver_info.empty()
                           ? vulkan_driver_version_string(d.vendor_id, d.driver_version)
                           : d.driver_info;
  const std::optional<CoopTiles>& coop = caps.enabled.coop_tiles;
  const std::string coop_text =
      coop ? cat(", int8 cooperative matrices (", coop->khr ? "KHR" : "NV", ") ", coop->shape.m,
                 "x", coop->shape.n, "x", coop->shape.k)
           : std::string();
  const std::optional<CoopF16Tiles>& f16 = caps.enabled.coop_f16_tiles;
  const std::string f16_text =
      f16 ? cat(", f16 training products ", f16->shape.m, "x", f16->shape.n, "x", f16->shape.k)
          : std::string();
  return cat("vulkan: ", d.name, " (", vulkan_device_type_name(d.type), ", driver ", driver,
             caps.enabled.integer_dot_product ? ", int8 dot product" : "", coop_text, f16_text,
             ", binding limit ", ctx_->binding_limit() >> 20, " MiB)");
}

}  // namespace vk

std::unique_ptr<Backend> make_vulkan_backend(const VulkanRequest& request) {
  return std::make_unique<vk::VulkanBackend>(request);
}

}  // namespace trit::engine
