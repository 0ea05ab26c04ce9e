#include "model/llama_layout.h"

#include <cstring>
#include <optional>

#include "core/error.h"
#include "model/hparams.h"

namespace trit::engine {

bool rows_permuted_in_file(const HParams& hp, std::string_view what) {
  return hp.family() == Family::Llama && (what == "attn_q" || what == "attn_k");
}

int64_t file_row_of(int64_t hf_row, int64_t head_dim) {
  const int64_t half = head_dim / 2, head = hf_row / head_dim, i = hf_row % head_dim;
  return head * head_dim + 2 * (i % half) + i / half;
}

int64_t hf_row_of(int64_t file_row, int64_t head_dim) {
  const int64_t half = head_dim / 2, head = file_row / head_dim, i = file_row % head_dim;
  return head * head_dim + (i % 2) * half + i / 2;
}

std::vector<uint8_t> reorder_rows(const uint8_t* data, size_t total_bytes, int64_t n_rows,
                                  size_t row_bytes, int64_t head_dim, RowOrder order) {
  if (head_dim <= 0 || head_dim % 2 != 0 || n_rows % head_dim != 0 ||
      size_t(n_rows) * row_bytes > total_bytes) {
    fail("reorder_rows: ", n_rows, " rows of ", row_bytes, " bytes in ", total_bytes,
         " bytes, head dim ", head_dim);
  }
  std::vector<uint8_t> out(total_bytes);
  for (int64_t r = 0; r < n_rows; ++r) {
    // out row r in the target order comes from this row of the source order
    const int64_t src =
        order == RowOrder::FileToHf ? file_row_of(r, head_dim) : hf_row_of(r, head_dim);
    std::memcpy(out.data() + size_t(r) * row_bytes, data + size_t(src) * row_bytes, row_bytes);
  }
  const size_t rows_end = size_t(n_rows) * row_bytes;
  std::memcpy(out.data() + rows_end, data + rows_end, total_bytes - rows_end);
  return out;
}

namespace {

void adapter_rows(LoraAdapter& adapter, const HParams& hp, const std::string& where,
                  RowOrder order) {
  if (hp.family() != Family::Llama) return;
  for (auto& [name, L] : adapter.layers) {
    const std::optional<LoraTarget> t = parse_lora_layer_name(name);
    if (!t || !rows_permuted_in_file(hp, t->what)) continue;
    if (L.n_out % hp.head_dim() != 0 || L.b.size() != size_t(L.n_out * L.rank)) {
      fail(where, ": layer ", name, ": ", L.n_out, " outputs of rank ", L.rank,
           " do not fit heads of ", hp.head_dim());
    }
    const std::vector<uint8_t> rows =
        reorder_rows(reinterpret_cast<const uint8_t*>(L.b.data()), L.b.size() * sizeof(float),
                     L.n_out, size_t(L.rank) * sizeof(float), hp.head_dim(), order);
    std::memcpy(L.b.data(), rows.data(), rows.size());
  }
}

}  // namespace

void adapter_rows_to_file(LoraAdapter& adapter, const HParams& hp, const std::string& where) {
  adapter_rows(adapter, hp, where, RowOrder::HfToFile);
}

void adapter_rows_from_file(LoraAdapter& adapter, const HParams& hp, const std::string& where) {
  adapter_rows(adapter, hp, where, RowOrder::FileToHf);
}

}  // namespace trit::engine
