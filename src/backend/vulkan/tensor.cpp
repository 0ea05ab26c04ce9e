// The Vulkan backend's tensors: making them (zero-filled, KV caches on attention-chunk
// boundaries), host transfers, and the row copies, fills and sums over them.
#include <cstring>
#include <vector>

#include "backend/vulkan/vk_backend.h"
#include "core/half.h"

namespace trit::engine::vk {
namespace {

constexpr uint32_t kKvChunk = 64;  // attention chunk C of KV caches (rows per chunk)
constexpr uint32_t kAddWg = 128;   // add

// The largest power of two up to kKvChunk dividing every piece start of a KV cache.
uint32_t kv_chunk_of(const TiledTensor& t) {
  if (t.pieces() <= 1) return kKvChunk;
  uint32_t c = kKvChunk;
  while (c > 1 && t.rows_per_piece() % c != 0) c /= 2;
  return c;
}

}  // namespace

void check_n(const DeviceTensor& t, int64_t n, const char* op) {
  if (n < 0 || n > t.rows()) fail(op, ": ", n, " rows of tensor '", t.name(), "' with ", t.rows());
}

void check_same_cols(const DeviceTensor& a, const DeviceTensor& b, const char* op) {
  if (a.cols() != b.cols()) {
    fail(op, ": tensor '", a.name(), "' has ", a.cols(), " columns, '", b.name(), "' ", b.cols());
  }
}

void check_rows_of(const DeviceTensor& t, int64_t n, int64_t cols, const char* op) {
  if (n < 0 || n > t.rows() || t.cols() != cols) {
    fail(op, ": tensor '", t.name(), "' (", t.rows(), " x ", t.cols(), ") used as ", n, " rows of ",
         cols);
  }
}

const VkTensor& vk_tensor(const DeviceTensor& t) {
  auto* v = dynamic_cast<const VkTensor*>(&t);
  if (!v) fail("vulkan backend: tensor '", t.name(), "' belongs to another backend");
  return *v;
}

VkTensor& vk_tensor(DeviceTensor& t) {
  return const_cast<VkTensor&>(vk_tensor(static_cast<const DeviceTensor&>(t)));
}

std::unique_ptr<DeviceTensor> VulkanBackend::tensor(std::string_view name, int64_t rows,
                                                    int64_t cols, TensorUse use) {
  if (rows < 0 || cols <= 0) fail("vulkan backend: tensor '", name, "' of ", rows, " x ", cols);
  // KV caches keep their pieces on attention chunk boundaries (attention.comp's kv_r0).
  const bool kv = use == TensorUse::KvCache || use == TensorUse::KvCacheF16;
  const bool f16 = use == TensorUse::KvCacheF16;
  if (f16 && cols % 2 != 0) {
    fail("vulkan backend: f16 cache '", name, "' of ", cols, " columns (an even number needed)");
  }
  const uint64_t row_bytes = uint64_t(cols) * (f16 ? 2 : 4);
  TileOptions o;
  if (kv && row_bytes * kKvChunk <= ctx_->binding_limit()) o.row_align = kKvChunk;
  TiledTensor t = make_tiled(*ctx_, std::string(name), uint64_t(rows), row_bytes, o);
  // Zero, as the CPU backend's tensors start: queued with the other work (a trainer makes
  // hundreds of tensors; a submission and wait for each took seconds on a GPU).
  for (size_t i = 0; i < t.pieces(); ++i) rec_.seq().fill_zero(t.range(i));
  const uint32_t chunk = kv_chunk_of(t);
  return std::make_unique<VkTensor>(std::string(name), rows, cols, std::move(t), chunk, &rec_, f16);
}

VkTensor::~VkTensor() {
  if (owner_) owner_->retire(std::move(t_));
}

void VulkanBackend::flush(bool keep_host) {
  rec_.submit();
  queued_write_bytes_ = 0;
  collect_losses();  // reads host blocks
  if (!keep_host) scratch_.host.reset();
}

void VulkanBackend::release_weights(std::span<const LinearWeight* const> ws) {
  flush(true);  // the queued work that reads them runs first
  for (const LinearWeight* w : ws) weights_.drop(*w);
}

void VulkanBackend::write(DeviceTensor& t, int64_t row0, int64_t n, const float* src) {
  if (row0 < 0 || n < 0 || row0 + n > t.rows()) {
    fail("write: rows ", row0, "..", row0 + n, " of tensor '", t.name(), "' with ", t.rows(),
         " rows");
  }
  if (n == 0) return;
  TiledTensor& tiles = vk_tensor(t).tiles();
  std::vector<uint16_t> halves;  // an f16 tensor's rows, converted on the host
  if (t.f16()) {
    halves.resize(size_t(n * t.cols()));
    for (size_t i = 0; i < halves.size(); ++i) halves[i] = f32_to_fp16(src[i]);
    flush();
    tiles.upload(uint64_t(row0), uint64_t(n), halves.data());
    return;
  }
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
    const BufferRange staged = scratch_.host.alloc(dev.size);
    std::memcpy(static_cast<unsigned char*>(staged.buffer->mapped()) + staged.offset,
                host + (run.row0 - uint64_t(row0)) * tiles.row_bytes(), dev.size);
    rec_.seq().copy(staged, dev);
  }
}

void VulkanBackend::read(const DeviceTensor& t, int64_t row0, int64_t n, float* dst) {
  if (row0 < 0 || n < 0 || row0 + n > t.rows()) {
    fail("read: rows ", row0, "..", row0 + n, " of tensor '", t.name(), "' with ", t.rows(),
         " rows");
  }
  flush();
  if (t.f16()) {
    std::vector<uint16_t> halves(size_t(n * t.cols()));
    vk_tensor(t).tiles().download(uint64_t(row0), uint64_t(n), halves.data());
    for (size_t i = 0; i < halves.size(); ++i) dst[i] = fp16_to_f32(halves[i]);
    return;
  }
  vk_tensor(t).tiles().download(uint64_t(row0), uint64_t(n), dst);
}

void VulkanBackend::zero(DeviceTensor& t_t) {
  const TiledTensor& t = vk_tensor(t_t).tiles();
  for (size_t i = 0; i < t.pieces(); ++i) rec_.seq().fill_zero(t.range(i));
}

void VulkanBackend::copy(DeviceTensor& dst_t, const DeviceTensor& src_t, int64_t n) {
  check_rows_of(dst_t, n, src_t.cols(), "copy");
  check_rows_of(src_t, n, src_t.cols(), "copy");
  VkTensor& dst = vk_tensor(dst_t);
  const VkTensor& src = vk_tensor(src_t);
  if (dst.f16() != src.f16()) {
    fail("copy: '", src.name(), "' and '", dst.name(), "' hold different element types");
  }
  if (n == 0 || &dst == &src) return;
  for (const auto& [a, b] : row_segments({{&src.tiles(), 0}, {&dst.tiles(), 0}}, uint64_t(n), 0)) {
    rec_.seq().copy(rows_range(src.tiles(), a, b), rows_range(dst.tiles(), a, b));
  }
}

void VulkanBackend::add(DeviceTensor& y_t, const DeviceTensor& x_t, int64_t n) {
  VkTensor& y = vk_tensor(y_t);
  const VkTensor& x = vk_tensor(x_t);
  check_n(x, n, "add");
  check_n(y, n, "add");
  check_same_cols(x, y, "add");
  if (n == 0) return;
  const Pipeline& p = rec_.pipeline("add", 2, sizeof(AddPush), {kAddWg}, 0b01);
  for (const auto& [a, b] :
       row_segments({{&x.tiles(), 0}, {&y.tiles(), 0}}, uint64_t(n), rec_.max_seg_rows())) {
    const uint64_t count = (b - a) * uint64_t(y.cols());
    rec_.dispatch_flat(p, {rows_range(x.tiles(), a, b), rows_range(y.tiles(), a, b)},
                       AddPush{uint32_t(count), 1.0f}, ceil_div(count, kAddWg));
  }
}

}  // namespace trit::engine::vk
