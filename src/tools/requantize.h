// Re-packing of ternary tensors between TQ1_0, TQ2_0 and I2_S (`trit quantize`): the trits never
// change; scales move between TQ's fp16 per-block d and I2_S's one fp32 scale per tensor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace trit::engine {

struct GgufTensor;

struct RequantizeResult {
  int64_t n_converted = 0;  // ternary tensors re-packed
  int64_t n_copied = 0;     // tensors copied byte for byte
  // Ternary tensors whose rows the target type cannot hold (copied as they are), and the
  // first of them
  int64_t n_kept = 0;
  std::string kept;
  uint64_t file_bytes = 0;
  double seconds = 0;
};

// Reads `in_path`, writes `out_path` (via "<path>.tmp", renamed at the end) with every ternary
// tensor of another type re-packed to `type` (TQ1_0, TQ2_0 or I2_S) and everything else copied:
// metadata (general.file_type updated), alignment and the other tensors' bytes. Works tensor by
// tensor in chunks, so memory stays small. Throws trit::Error when the paths name the same file,
// when a tensor's row does not fit the target's block, and for TQ -> I2_S when the blocks of a
// tensor carry different scales (I2_S holds one per tensor; the message names both).
RequantizeResult requantize_model(const std::string& in_path, const std::string& out_path,
                                  DType type);

// The one scale a TQ1_0/TQ2_0 tensor of n weights has: the common d of its blocks whose codes
// are not all zero (the first block's d when every block is zero). For I2_S, the tail's scale.
// Throws trit::Error naming `where` and the two scales when blocks disagree.
float ternary_tensor_scale(DType type, const uint8_t* data, int64_t n, const std::string& where);

// Re-packs n weights of a ternary tensor to another ternary type (whole tensor in memory; the
// file-level function streams instead). Throws as requantize_model.
std::vector<uint8_t> requantize_tensor(DType from, const uint8_t* data, int64_t n, DType to,
                                       const std::string& where);

}  // namespace trit::engine
