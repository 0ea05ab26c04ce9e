// Hugging Face BitNet b1.58 checkpoints (config.json + safetensors) to GGUF: the `trit convert`
// tool (config.json itself is read by model/hf_config.h). Float master weights are ternarised by
// absmean; the packed 2B4T layout (uint8 codes plus weight_scale) is unpacked and re-packed.
// Tensors are streamed one at a time into a temporary file renamed into place, so memory stays near
// one tensor and a failure leaves no output behind.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/hparams.h"

namespace trit::engine {

struct HfConvertOptions {
  std::string src_dir;
  std::string out_path;
  // The seven linear layers of each block: TQ1_0, TQ2_0 or I2_S, or F16 / BF16 / F32 (for
  // interchange: the ternary weights as floats, T * scale, as llama.cpp's converter writes them).
  DType type = DType::TQ2_0;
  // token_embd and output: F32, F16, BF16, Q8_0 or Q6_K; F16 when not given.
  std::optional<DType> embd_type;
  // Receives warnings (no tokenizer, unused tensors, ...); none are reported when empty.
  std::function<void(const std::string&)> warn;
};

struct HfConvertResult {
  HParams hp;
  size_t n_tensors = 0;
  std::map<std::string, size_t> tensors_per_type;  // "tq2_0" -> 14, ...
  uint64_t file_bytes = 0;
  bool packed_source = false;  // the linear layers came as uint8 codes with weight_scale
  bool has_tokenizer = false;
};

HfConvertResult convert_hf_model(const HfConvertOptions& options);

// The packed 2B4T layout: byte [i, k] of the (n_out / 4, n_in) codes holds (trit + 1) of row
// i + j * (n_out / 4) at bits 2j..2j+1. Returns the (n_out, n_in) trits, row-major. Throws
// naming `where` on the unused code 3.
std::vector<int8_t> unpack_hf_ternary(const uint8_t* packed, int64_t n_out, int64_t n_in,
                                      const std::string& where);

}  // namespace trit::engine
