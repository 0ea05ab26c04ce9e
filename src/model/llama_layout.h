// The row order of a llama file's W_q and W_k. llama.cpp's converters (and bitnet.cpp's) store
// a Llama model's query and key rows permuted, because llama.cpp rotates adjacent pairs for that
// architecture while Hugging Face rotates each head's halves (NeoX). Within every head of hd
// rows, file row 2j + a holds Hugging Face row a * hd / 2 + j (j < hd / 2, a in {0, 1}); the
// attention scores are the same either way. trit computes in the Hugging Face order (NeoX rope,
// adapters as PEFT writes them), so it puts these rows back at load and permutes them when it
// writes a llama file. BitNet files ("bitnet", "bitnet-b1.58") are not permuted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/lora.h"

namespace trit::engine {

struct HParams;

// Whether a block layer's rows are permuted in a file of this model (W_q and W_k of a llama).
bool rows_permuted_in_file(const HParams& hp, std::string_view what);

// The file row that holds Hugging Face row r, and the inverse (head_dim even).
int64_t file_row_of(int64_t hf_row, int64_t head_dim);
int64_t hf_row_of(int64_t file_row, int64_t head_dim);

// Rows of row_bytes bytes each reordered: out row r = in row pick(r). Bytes after the last row
// (I2_S's scale) are copied as they are. n_rows must be a multiple of head_dim.
enum class RowOrder { FileToHf, HfToFile };
std::vector<uint8_t> reorder_rows(const uint8_t* data, size_t total_bytes, int64_t n_rows,
                                  size_t row_bytes, int64_t head_dim, RowOrder order);

// An adapter of a llama model in a LoRA GGUF holds the B rows of W_q and W_k in the file's
// order, as the base's rows are and as llama.cpp's LoRA files have them; in memory (and in
// PEFT folders) they are in Hugging Face's. These move an adapter between the two (nothing for
// a BitNet model). `where` names the file in errors.
void adapter_rows_to_file(LoraAdapter& adapter, const HParams& hp, const std::string& where);
void adapter_rows_from_file(LoraAdapter& adapter, const HParams& hp, const std::string& where);

}  // namespace trit::engine
