// The Vulkan backend's memory helpers: scratch arenas, row segments (the tiling rule),
// bindable rows, and tiled tensors that retry with smaller pieces when the device runs out of
// memory.
#include <algorithm>

#include "backend/vulkan/vk_backend.h"

namespace trit::engine::vk {
namespace {

constexpr uint64_t MiB = 1ull << 20;
constexpr uint64_t kArenaBlock = 16 * MiB;  // the usual size of a scratch block
constexpr uint64_t kPieceFloor = 1 * MiB;   // allocation retries stop at pieces this small

uint64_t align_up(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}

std::string in_mib(uint64_t bytes) {
  return cat(double(bytes) / double(MiB), " MiB");
}

// "device-local heap 0: 2048 MiB (budget 1900 MiB, 120 MiB in use)".
std::string heap_summary(const Context& ctx) {
  std::string out;
  const std::vector<VulkanHeap> heaps = ctx.heaps();
  for (size_t i = 0; i < heaps.size(); ++i) {
    const VulkanHeap& h = heaps[i];
    if (!h.device_local) continue;
    if (!out.empty()) out += "; ";
    out += cat("device-local heap ", i, ": ", in_mib(h.size));
    if (h.budget != 0) out += cat(" (budget ", in_mib(h.budget), ", ", in_mib(h.usage), " in use)");
  }
  return out.empty() ? "no device-local heap" : out;
}

}  // namespace

BufferRange ScratchArena::alloc(uint64_t bytes, uint64_t min_align) {
  const uint64_t limit = ctx_.binding_limit();
  bytes = align_up(std::max<uint64_t>(bytes, 4), 4);
  if (bytes > limit) {
    fail("vulkan: scratch '", name_, "': ", bytes,
         " bytes requested, more than the binding limit of ", limit, " bytes");
  }
  const uint64_t device_align =
      std::max<uint64_t>(ctx_.caps().info.min_storage_buffer_offset_alignment, 4);
  // Offsets stay multiples of the device's alignment: align up to a common multiple.
  const uint64_t align =
      min_align > device_align && min_align % device_align == 0 ? min_align : device_align;
  for (; current_ < blocks_.size(); ++current_) {
    Block& b = blocks_[current_];
    const uint64_t off = align_up(b.used, align);
    if (off + bytes <= b.buffer.size()) {
      b.used = off + bytes;
      return BufferRange(b.buffer, off, bytes);
    }
  }
  const uint64_t size = std::max(bytes, std::min(limit, kArenaBlock));
  Block b;
  try {
    b.buffer = Buffer(ctx_, size, kind_, cat("scratch '", name_, "' block ", blocks_.size()));
  } catch (const OutOfDeviceMemory&) {
    fail("vulkan: out of device memory for ", in_mib(size), " of scratch '", name_, "' (",
         in_mib(capacity()), " held already); ", heap_summary(ctx_));
  }
  b.used = bytes;
  blocks_.push_back(std::move(b));
  current_ = blocks_.size() - 1;
  return BufferRange(blocks_.back().buffer, 0, bytes);
}

void ScratchArena::reset() {
  for (Block& b : blocks_) b.used = 0;
  current_ = 0;
}

uint64_t ScratchArena::capacity() const {
  uint64_t total = 0;
  for (const Block& b : blocks_) total += b.buffer.size();
  return total;
}

std::vector<std::pair<uint64_t, uint64_t>> row_segments(const std::vector<RowsOf>& tensors,
                                                        uint64_t n, uint64_t max_rows) {
  std::vector<uint64_t> cuts = {0, n};
  for (const RowsOf& r : tensors) {
    for (size_t i = 1; i < r.t->pieces(); ++i) {
      const uint64_t row0 = r.t->piece(i).row0;
      if (row0 > r.base && row0 - r.base < n) cuts.push_back(row0 - r.base);
    }
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    for (uint64_t a = cuts[i]; a < cuts[i + 1];) {
      const uint64_t b = max_rows == 0 ? cuts[i + 1] : std::min(cuts[i + 1], a + max_rows);
      out.emplace_back(a, b);
      a = b;
    }
  }
  return out;
}

BufferRange rows_range(const TiledTensor& t, uint64_t r0, uint64_t r1) {
  const std::vector<PieceRun> runs = t.runs(r0, r1);
  if (runs.size() != 1) {
    fail("vulkan: tensor ", t.name(), ": rows [", r0, ", ", r1, ") span ", runs.size(), " pieces");
  }
  return t.range(runs[0]);
}

Scratch::Scratch(Context& ctx)
    : act(ctx, "activations", MemoryKind::Device),
      attn(ctx, "attention", MemoryKind::Device),
      host(ctx, "host", MemoryKind::Host),
      ctx_(ctx) {}

BufferRange Scratch::bind_rows(Recorder& rec, const TiledTensor& t, uint64_t r0, uint64_t r1,
                               bool load) {
  const BufferRange r = rows_range(t, r0, r1);
  const uint64_t align =
      std::max<uint64_t>(ctx_.caps().info.min_storage_buffer_offset_alignment, 1);
  if (r.offset % align == 0) return r;
  const BufferRange copy = act.alloc(r.size);
  if (load) rec.seq().copy(r, copy);
  return copy;
}

void Scratch::unbind_rows(Recorder& rec, BufferRange bound, const TiledTensor& t, uint64_t r0,
                          uint64_t r1) {
  const BufferRange r = rows_range(t, r0, r1);
  if (bound.buffer != r.buffer || bound.offset != r.offset) rec.seq().copy(bound, r);
}

TiledTensor make_tiled(Context& ctx, const std::string& name, uint64_t rows, uint64_t row_bytes,
                       TileOptions options) {
  const uint64_t bytes = rows * row_bytes;
  uint64_t piece = options.max_piece_bytes != 0 ? options.max_piece_bytes : ctx.binding_limit();
  piece = std::min(piece, ctx.binding_limit());
  const uint64_t smallest = std::max(kPieceFloor, row_bytes * options.row_align);
  for (;;) {
    try {
      return TiledTensor(ctx, name, rows, row_bytes, options);
    } catch (const OutOfDeviceMemory& e) {
      // Smaller pieces may fit where large ones do not (fragmentation, per-allocation caps).
      const uint64_t next = std::min(piece, bytes) / 2;
      if (next < smallest) {
        fail("vulkan: out of device memory for tensor '", name, "' (", in_mib(bytes),
             " in pieces of up to ", in_mib(std::min(piece, bytes)), "): ", e.what(), "; ",
             heap_summary(ctx));
      }
      piece = next;
      options.max_piece_bytes = piece;
    }
  }
}

}  // namespace trit::engine::vk
