// Views of a model's weights as both backends read them: ternary matrices (TQ2_0 or I2_S codes
// with their scales), float matrices (f32, f16, bf16, q8_0, q6_K rows) and the linear layer of
// a block that holds one or the other. A view points into memory it does not own (the
// memory-mapped file, or a buffer its loader keeps).
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/host_pages.h"

namespace trit::engine {

// A ternary weight matrix of n_out rows of n_in weights, laid out as its GGUF type.
struct TernaryMatrix {
  DType type = DType::TQ2_0;  // TQ1_0, TQ2_0 or I2_S
  const uint8_t* data = nullptr;
  int64_t n_in = 0;
  int64_t n_out = 0;
  // I2_S: the tensor's scale. TQ1_0/TQ2_0: the common d of all blocks whose codes are not all zero,
  // when they share one (files written by absmean always do), else 0 (use per-block d).
  float uniform_scale = 0;
  // The width rows are stored at, when n_in is not a multiple of the type's block (1bitLLM's
  // 3B model: 3200 and 8640 inputs): n_in rounded up, the codes past n_in zero, so that an
  // input padded with zeros gives the exact product. 0: n_in.
  int64_t row_in = 0;

  int64_t stored_in() const { return row_in > 0 ? row_in : n_in; }
  bool padded() const { return stored_in() != n_in; }
  // The matrix as the kernels read it: rows of stored_in() weights.
  TernaryMatrix storage() const {
    TernaryMatrix s = *this;
    s.n_in = stored_in();
    s.row_in = 0;
    return s;
  }
};

// Finds the uniform block scale of TQ1_0 or TQ2_0 (0 when the blocks disagree); for I2_S reads
// the tail.
float ternary_uniform_scale(DType type, const uint8_t* data, int64_t n_in, int64_t n_out);

// Float weights: n_out rows of n_in values of an f32, f16, bf16, q8_0 or q6_K tensor.
struct FloatMatrix {
  DType type = DType::F32;
  const uint8_t* data = nullptr;
  int64_t n_in = 0;
  int64_t n_out = 0;
  // Set when data lies in a file mapping: a device uploading the matrix releases each piece's
  // pages once copied, so that a large embedding never sits whole in the host's memory.
  const HostPages* pages = nullptr;
};

// A linear layer of a block, times out_scale (the optional per-tensor `.scale` of llama.cpp's
// bitnet files). Ternary (the usual case): y = (T . q(x)) * w_scale / s_x. Float (a model with
// adapters merged in): y = W x with the un-quantised x.
struct LinearWeight {
  std::string name;  // the tensor's name, for messages
  TernaryMatrix m;   // ternary weights; m.n_in and m.n_out give the shape of either kind
  FloatMatrix f;     // float weights (f.data not null) of a merged model
  float out_scale = 1.0f;
  bool is_float() const { return f.data != nullptr; }
};

}  // namespace trit::engine
