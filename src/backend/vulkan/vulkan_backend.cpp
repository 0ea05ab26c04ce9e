// The Vulkan backend: opening the device, tensors, host transfers and submission. The ops
// live in vk_ops_*.cpp, the weight cache in vk_weights.cpp (see vk_backend_impl.h).
#include "backend/vulkan/vulkan_backend.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backend/vulkan/binding_limit.h"
#include "backend/vulkan/vk_backend_impl.h"
#include "model/lora_apply.h"
#include "model/model.h"
#include "train/lora.h"

namespace trit {
namespace vk {
namespace {

constexpr uint32_t kKvChunk = 64;  // attention chunk C of KV caches (rows per chunk)

ContextOptions context_options(const VulkanRequest& r) {
  ContextOptions o;
  o.device = r.index >= 0 ? DeviceChoice::at(uint32_t(r.index))
                          : (r.real_gpu_only ? DeviceChoice::real_gpu() : DeviceChoice::any());
  const uint64_t env = max_buffer_bytes_from_env();
  o.max_buffer_bytes = r.max_buffer_bytes;
  if (env != 0 && (o.max_buffer_bytes == 0 || env < o.max_buffer_bytes)) o.max_buffer_bytes = env;
  o.cooperative_matrix = coop_choice_from_env();
  return o;
}

// Tile shapes whose shared memory (matmul_ternary: 260 * (TILE_M + TILE_N) bytes, the larger
// of the two matmuls) fits the device. Software devices (lavapipe) pay per workgroup, so their
// matvec workgroups take more rows with fewer threads.
MatmulConfig matmul_config(const DeviceCaps& caps) {
  MatmulConfig c;
  if (caps.info.type == VulkanDeviceType::Cpu) {
    c.mv_wg = 32;
    c.mv_rows = 16;
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
  return c;
}

// The largest power of two up to kKvChunk dividing every piece start of a KV cache.
uint32_t kv_chunk_of(const TiledTensor& t) {
  if (t.pieces() <= 1) return kKvChunk;
  uint32_t c = kKvChunk;
  while (c > 1 && t.rows_per_piece() % c != 0) c /= 2;
  return c;
}

}  // namespace

const VkTensor& vk_tensor(const DeviceTensor& t) {
  auto* v = dynamic_cast<const VkTensor*>(&t);
  if (!v) fail("vulkan backend: tensor '", t.name(), "' belongs to another backend");
  return *v;
}

VkTensor& vk_tensor(DeviceTensor& t) {
  return const_cast<VkTensor&>(vk_tensor(static_cast<const DeviceTensor&>(t)));
}

VulkanBackend::VulkanBackend(const VulkanRequest& request)
    : ctx_(std::make_unique<Context>(context_options(request))),
      seq_(std::make_unique<Sequence>(*ctx_)),
      mm_(matmul_config(ctx_->caps())),
      act_scratch_(*ctx_, "activations", MemoryKind::Device),
      attn_scratch_(*ctx_, "attention", MemoryKind::Device),
      host_(*ctx_, "host", MemoryKind::Host),
      decode_scratch_(*ctx_, "decoding", MemoryKind::Device) {
  const DeviceCaps& caps = ctx_->caps();
  const uint32_t* max = caps.info.max_compute_work_group_count;
  max_seg_rows_ = std::min({max[0], max[1], max[2]});
  // Decoding fusions: matvec_ternary sums with subgroupAdd. TRIT_VK_DECODE_FUSION=0 turns them
  // off (the tests compare both ways; a tuning aid).
  const uint32_t needed = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_ARITHMETIC_BIT;
  const char* fusion = std::getenv("TRIT_VK_DECODE_FUSION");
  fuse_decode_ =
      (caps.info.subgroup_operations & needed) == needed && !(fusion && std::string(fusion) == "0");
  if (caps.info.subgroup_size > 0) subgroup_size_ = caps.info.subgroup_size;
  if (const char* e = std::getenv("TRIT_VK_ATTN_QT")) {
    const int qt = std::atoi(e);
    if (qt >= 1 && qt <= 16) attn_qt_ = uint32_t(qt);
  }
  // Vulkan only promises 128 invocations a workgroup.
  while (norm_wg_ > 32 && (norm_wg_ > caps.info.max_compute_work_group_invocations ||
                           norm_wg_ > caps.info.max_compute_work_group_size[0])) {
    norm_wg_ /= 2;
  }
}

VulkanBackend::~VulkanBackend() {
  try {
    settle();
    seq_->submit_and_wait();  // queued work must end before its buffers go
  } catch (...) {
  }
  ctx_->wait_idle();
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
  return cat("vulkan: ", d.name, " (", vulkan_device_type_name(d.type), ", driver ", driver,
             caps.enabled.integer_dot_product ? ", int8 dot product" : "", coop_text,
             ", binding limit ", ctx_->binding_limit() >> 20, " MiB)");
}

std::unique_ptr<DeviceTensor> VulkanBackend::tensor(std::string_view name, int64_t rows,
                                                    int64_t cols) {
  if (rows < 0 || cols <= 0) fail("vulkan backend: tensor '", name, "' of ", rows, " x ", cols);
  // KV caches keep their pieces on attention chunk boundaries (attention.comp's kv_r0).
  const bool kv = name.rfind("cache_", 0) == 0;
  TileOptions o;
  if (kv && uint64_t(cols) * 4 * kKvChunk <= ctx_->binding_limit()) o.row_align = kKvChunk;
  TiledTensor t = make_tiled(*ctx_, std::string(name), uint64_t(rows), uint64_t(cols) * 4, o);
  // Zero, as the CPU backend's tensors start: queued with the other work (a trainer makes
  // hundreds of tensors; a submission and wait for each took seconds on a GPU).
  for (size_t i = 0; i < t.pieces(); ++i) rec().fill_zero(t.range(i));
  const uint32_t chunk = kv_chunk_of(t);
  return std::make_unique<VkTensor>(std::string(name), rows, cols, std::move(t), chunk, this);
}

VkTensor::~VkTensor() {
  if (owner_) owner_->retire(*this);
}

void VulkanBackend::retire(VkTensor& t) {
  if (pending_uses(t)) {
    try {
      settle();  // it reads or writes the tensor going away
    } catch (...) {
      pending_add_ = {};
      pending_norm_ = {};
      pending_linear_ = {};
    }
  }
  if (seq_->commands() > 0) retired_.push_back(std::move(t.tiles()));
}

void VulkanBackend::flush(bool keep_host) {
  settle();
  seq_->submit_and_wait();
  queued_write_bytes_ = 0;
  seq_->reset();
  retired_.clear();
  collect_losses();  // reads host_ blocks
  if (!keep_host) host_.reset();
}

void VulkanBackend::write(DeviceTensor& t, int64_t row0, int64_t n, const float* src) {
  if (row0 < 0 || n < 0 || row0 + n > t.rows()) {
    fail("write: rows ", row0, "..", row0 + n, " of tensor '", t.name(), "' with ", t.rows(),
         " rows");
  }
  if (n == 0) return;
  TiledTensor& tiles = vk_tensor(t).tiles();
  const uint64_t bytes = uint64_t(n) * tiles.row_bytes();
  if (bytes > kQueuedWriteBytes) {  // large: staged in chunks, synchronously
    flush();                        // queued ops that use t run first
    tiles.upload(uint64_t(row0), uint64_t(n), src);
    return;
  }
  // Small (an adapter's tensors, one by one): copied from host-visible scratch in the order of
  // the queued work, with no wait. The scratch lives until the next submission ends.
  if (queued_write_bytes_ + bytes > kMaxQueuedWrites) flush();
  queued_write_bytes_ += bytes;
  const auto* host = static_cast<const unsigned char*>(static_cast<const void*>(src));
  for (const PieceRun& run : tiles.runs(uint64_t(row0), uint64_t(row0 + n))) {
    const BufferRange dev = tiles.range(run);
    const BufferRange staged = host_.alloc(dev.size);
    std::memcpy(static_cast<unsigned char*>(staged.buffer->mapped()) + staged.offset,
                host + (run.row0 - uint64_t(row0)) * tiles.row_bytes(), dev.size);
    rec().copy(staged, dev);
  }
}

void VulkanBackend::read(const DeviceTensor& t, int64_t row0, int64_t n, float* dst) {
  if (row0 < 0 || n < 0 || row0 + n > t.rows()) {
    fail("read: rows ", row0, "..", row0 + n, " of tensor '", t.name(), "' with ", t.rows(),
         " rows");
  }
  flush();
  vk_tensor(t).tiles().download(uint64_t(row0), uint64_t(n), dst);
}

}  // namespace vk

std::unique_ptr<Backend> make_vulkan_backend(const VulkanRequest& request) {
  return std::make_unique<vk::VulkanBackend>(request);
}

}  // namespace trit
