// TiledTensor: splitting rows into pieces, row-range runs, uploads and downloads.
#include "backend/vulkan/tiled_tensor.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "backend/vulkan/context.h"
#include "backend/vulkan/sequence.h"

namespace trit::engine::vk {
namespace {

constexpr uint64_t kMaxStagingBytes = 32ull << 20;

}  // namespace

TiledTensor::TiledTensor(Context& ctx, std::string name, uint64_t rows, uint64_t row_bytes,
                         const TileOptions& options)
    : ctx_(&ctx), name_(std::move(name)), rows_(rows), row_bytes_(row_bytes) {
  if (row_bytes_ == 0) fail("vulkan: tensor ", name_, ": rows of 0 bytes");
  if (options.row_align == 0) fail("vulkan: tensor ", name_, ": row_align 0");
  limit_ = ctx.binding_limit();
  if (options.max_piece_bytes != 0)
    limit_ = std::min<uint64_t>(limit_, options.max_piece_bytes & ~uint64_t(3));
  if (row_bytes_ > limit_) {
    fail("vulkan: tensor ", name_, ": one row is ", row_bytes_,
         " bytes, more than the binding limit of ", limit_, " bytes",
         ctx.options().max_buffer_bytes != 0 ? "; raise --max-buffer-mb" : " of this device");
  }
  if (rows_ == 0) return;
  if (rows_ <= limit_ / row_bytes_) {
    rows_per_piece_ = rows_;  // one piece; the last piece need not be aligned
  } else {
    rows_per_piece_ = limit_ / row_bytes_ / options.row_align * options.row_align;
    if (rows_per_piece_ == 0) {
      fail("vulkan: tensor ", name_, ": ", options.row_align, " rows of ", row_bytes_,
           " bytes (the row alignment) are more than the binding limit of ", limit_, " bytes",
           ctx.options().max_buffer_bytes != 0 ? "; raise --max-buffer-mb" : "");
    }
  }
  const uint64_t n = (rows_ + rows_per_piece_ - 1) / rows_per_piece_;
  pieces_.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    Piece p;
    p.row0 = i * rows_per_piece_;
    p.row1 = std::min(rows_, p.row0 + rows_per_piece_);
    p.buffer = Buffer(ctx, p.rows() * row_bytes_, options.memory, cat("'", name_, "' piece ", i));
    pieces_.push_back(std::move(p));
  }
}

size_t TiledTensor::piece_of(uint64_t row) const {
  if (row >= rows_) fail("vulkan: tensor ", name_, ": row ", row, " of ", rows_);
  return size_t(row / rows_per_piece_);
}

std::vector<PieceRun> TiledTensor::runs(uint64_t row0, uint64_t row1) const {
  if (row0 > row1 || row1 > rows_) {
    fail("vulkan: tensor ", name_, ": rows [", row0, ", ", row1, ") of ", rows_);
  }
  std::vector<PieceRun> out;
  for (uint64_t r = row0; r < row1;) {
    const size_t i = piece_of(r);
    const Piece& p = pieces_[i];
    const uint64_t end = std::min(row1, p.row1);
    out.push_back({i, r, end, r - p.row0});
    r = end;
  }
  return out;
}

BufferRange TiledTensor::range(const PieceRun& run) const {
  return BufferRange(pieces_.at(run.piece).buffer, run.local0 * row_bytes_,
                     run.rows() * row_bytes_);
}

BufferRange TiledTensor::range(size_t piece) const {
  const Piece& p = pieces_.at(piece);
  return BufferRange(p.buffer, 0, p.rows() * row_bytes_);
}

void TiledTensor::check_rows(uint64_t row0, uint64_t n, const char* what) const {
  if (row0 > rows_ || n > rows_ - row0) {
    fail("vulkan: tensor ", name_, ": ", what, " of rows [", row0, ", ", row0 + n, ") of ", rows_);
  }
}

void TiledTensor::upload(uint64_t row0, uint64_t n, const void* src) {
  check_rows(row0, n, "upload");
  transfer(row0, n, const_cast<void*>(src), true);
}

void TiledTensor::download(uint64_t row0, uint64_t n, void* dst) const {
  check_rows(row0, n, "download");
  transfer(row0, n, dst, false);
}

void TiledTensor::transfer(uint64_t row0, uint64_t n, void* host, bool to_device) const {
  if (n == 0) return;
  auto* bytes = static_cast<unsigned char*>(host);
  // Staged chunks of whole rows, each within the limit; created only if a piece is unmapped.
  const uint64_t chunk_rows =
      std::max<uint64_t>(1, std::min(limit_, kMaxStagingBytes) / row_bytes_);
  Buffer* staging = nullptr;
  std::unique_ptr<Sequence> seq;
  for (uint64_t c0 = row0; c0 < row0 + n; c0 += chunk_rows) {
    const uint64_t c1 = std::min(row0 + n, c0 + chunk_rows);
    unsigned char* chunk_host = bytes + (c0 - row0) * row_bytes_;
    bool staged = false;
    for (const PieceRun& run : runs(c0, c1)) {
      unsigned char* h = chunk_host + (run.row0 - c0) * row_bytes_;
      const BufferRange dev = range(run);
      if (void* m = dev.buffer->mapped()) {
        unsigned char* d = static_cast<unsigned char*>(m) + dev.offset;
        to_device ? std::memcpy(d, h, dev.size) : std::memcpy(h, d, dev.size);
        continue;
      }
      if (!staging) {
        staging = &ctx_->staging(std::min(n, chunk_rows) * row_bytes_);
        seq = std::make_unique<Sequence>(*ctx_, /*profiled=*/false);
      }
      if (!staged) seq->reset();
      staged = true;
      const BufferRange st(*staging, (run.row0 - c0) * row_bytes_, dev.size);
      if (to_device) {
        std::memcpy(static_cast<unsigned char*>(staging->mapped()) + st.offset, h, dev.size);
        seq->copy(st, dev);
      } else {
        seq->copy(dev, st);
      }
    }
    if (!staged) continue;
    seq->submit_and_wait();
    if (!to_device) {  // mapped runs were copied already; take the staged ones
      for (const PieceRun& run : runs(c0, c1)) {
        if (range(run).buffer->mapped()) continue;
        const uint64_t off = (run.row0 - c0) * row_bytes_;
        std::memcpy(chunk_host + off, static_cast<unsigned char*>(staging->mapped()) + off,
                    run.rows() * row_bytes_);
      }
    }
  }
}

void TiledTensor::fill_zero() {
  if (pieces_.empty()) return;
  Sequence seq(*ctx_, /*profiled=*/false);
  for (const Piece& p : pieces_) seq.fill_zero(BufferRange(p.buffer));
  seq.submit_and_wait();
}

}  // namespace trit::engine::vk
