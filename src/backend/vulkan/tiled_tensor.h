// TiledTensor, the heart of dynamic tiling (DESIGN section 6): a 2-D array of `rows` rows of
// `row_bytes` bytes, stored as pieces of whole rows, each piece its own Buffer of at most the
// binding limit. Every piece but the last holds the same number of rows, a multiple of
// `row_align`. Ops bind one piece at a time and walk a row range piece by piece with runs().
// Uploads and downloads are synchronous: they return when the data has arrived.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backend/vulkan/buffer.h"

namespace trit::engine::vk {

class Context;

struct TileOptions {
  uint64_t row_align = 1;        // rows per piece (except the last) are a multiple of this
  uint64_t max_piece_bytes = 0;  // lowers the context's binding limit for this tensor; 0: none
  MemoryKind memory = MemoryKind::Device;
};

// The part of a row range that lies in one piece.
struct PieceRun {
  size_t piece = 0;
  uint64_t row0 = 0, row1 = 0;  // global rows [row0, row1)
  uint64_t local0 = 0;          // row0 - the piece's first row
  uint64_t rows() const { return row1 - row0; }
};

class TiledTensor {
 public:
  struct Piece {
    uint64_t row0 = 0, row1 = 0;  // global rows [row0, row1)
    Buffer buffer;
    uint64_t rows() const { return row1 - row0; }
  };

  TiledTensor() = default;
  // Allocates every piece (contents undefined; see fill_zero). Throws a clear error when one
  // row (or row_align rows) is more than the limit, and OutOfDeviceMemory, naming the piece,
  // when the device runs out.
  TiledTensor(Context& ctx, std::string name, uint64_t rows, uint64_t row_bytes,
              const TileOptions& options = {});
  TiledTensor(TiledTensor&&) noexcept = default;
  TiledTensor& operator=(TiledTensor&&) noexcept = default;

  const std::string& name() const { return name_; }
  void rename(std::string name) { name_ = std::move(name); }  // buffers taken for another use
  uint64_t rows() const { return rows_; }
  uint64_t row_bytes() const { return row_bytes_; }
  uint64_t bytes() const { return rows_ * row_bytes_; }
  uint64_t rows_per_piece() const { return rows_per_piece_; }  // all but the last piece

  size_t pieces() const { return pieces_.size(); }
  const Piece& piece(size_t i) const { return pieces_.at(i); }
  size_t piece_of(uint64_t row) const;  // throws for row >= rows()
  // Splits rows [row0, row1) into one run per piece it touches, in order.
  std::vector<PieceRun> runs(uint64_t row0, uint64_t row1) const;
  // The bytes of a run inside its piece's buffer, for binding or copying.
  BufferRange range(const PieceRun& run) const;
  BufferRange range(size_t piece) const;  // a whole piece

  // Copies `n` rows starting at `row0` from / to host memory (n * row_bytes bytes). Mapped
  // pieces are written directly; others go through a staging buffer no larger than the limit.
  void upload(uint64_t row0, uint64_t n, const void* src);
  void download(uint64_t row0, uint64_t n, void* dst) const;
  void fill_zero();

 private:
  void check_rows(uint64_t row0, uint64_t n, const char* what) const;
  // Moves rows [row0, row0 + n) between host memory and the pieces.
  void transfer(uint64_t row0, uint64_t n, void* host, bool to_device) const;

  Context* ctx_ = nullptr;
  std::string name_;
  uint64_t rows_ = 0;
  uint64_t row_bytes_ = 0;
  uint64_t rows_per_piece_ = 0;
  uint64_t limit_ = 0;  // bytes per piece at most
  std::vector<Piece> pieces_;
};

}  // namespace trit::engine::vk
