// The Vulkan backend's embedding lookup: rows of the (possibly split) table by token id.
#include <cstring>

#include "backend/vulkan/vk_backend.h"

namespace trit::engine::vk {
namespace {

constexpr uint32_t kEmbeddingWg = 128;

}  // namespace

void VulkanBackend::embedding(DeviceTensor& out_t, const FloatMatrix& table, const int32_t* tokens,
                              int64_t n) {
  VkTensor& out = vk_tensor(out_t);
  check_n(out, n, "embedding");
  if (table.n_in != out.cols()) {
    fail("embedding: table rows of ", table.n_in, " values, tensor '", out.name(), "' has ",
         out.cols(), " columns");
  }
  if (n == 0) return;
  const FloatRows tw = weights_.float_matrix(table, "token_embd");
  const Pipeline& p = rec_.pipeline("embedding", 3, sizeof(EmbeddingPush),
                                    {kEmbeddingWg, 0, 0, 0, 0, 0, 0, 0, uint32_t(tw.type)}, 0b011);
  for (const auto& [a, b] : row_segments({{&out.tiles(), 0}}, uint64_t(n), rec_.max_seg_rows())) {
    const uint64_t rows = b - a;
    const BufferRange ids = scratch_.host.alloc(rows * 4);  // kept until the submission ends
    std::memcpy(static_cast<unsigned char*>(ids.buffer->mapped()) + ids.offset, tokens + a,
                rows * 4);
    const BufferRange o = rows_range(out.tiles(), a, b);
    for (size_t i = 0; i < tw.rows->pieces(); ++i) {
      const TiledTensor::Piece& piece = tw.rows->piece(i);
      bool used = false;  // only the pieces the segment's ids fall in
      for (uint64_t t = a; t < b && !used; ++t) {
        used = uint64_t(tokens[t]) >= piece.row0 && uint64_t(tokens[t]) < piece.row1;
      }
      if (!used) continue;
      const EmbeddingPush push{uint32_t(out.cols()), uint32_t(piece.rows()), uint32_t(piece.row0),
                               uint32_t(rows)};
      rec_.seq().dispatch(p, {BufferRange(piece.buffer), ids, o}, push,
                          uint32_t(ceil_div(uint64_t(out.cols()), kEmbeddingWg)), uint32_t(rows));
    }
  }
}

}  // namespace trit::engine::vk
