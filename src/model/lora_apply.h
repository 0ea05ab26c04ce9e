// Adapters attached to a model for a forward pass: for every linear layer of every block (and
// the head), the LoRA layers that add scale * B (A x) to its output.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/thread_pool.h"
#include "train/lora.h"

namespace trit {

struct HParams;

struct LoraTerm {
  const LoraLayer* layer = nullptr;
  float scale = 0;  // user scale * alpha / r (or / sqrt(r))
};

// Index of a block's linear layers, in block_linear_names() order.
enum LinearIndex { kQ, kK, kV, kO, kGate, kUp, kDown, kLinearCount };

struct LoraSet {
  std::vector<std::array<std::vector<LoraTerm>, kLinearCount>> blocks;  // (n_layer)
  std::vector<LoraTerm> head;
  bool empty() const;
};

// Resolves adapters (each with a user scale) against the model's shape. Throws naming the
// adapter layer when a layer does not exist in the model or its shape differs.
LoraSet resolve_lora(const std::vector<std::pair<const LoraAdapter*, float>>& adapters,
                     const HParams& hp);

// y (T, n_out) += sum over terms of scale * (x A^T) B^T, with x (T, n_in) un-quantised.
void lora_add(const std::vector<LoraTerm>& terms, const float* x, int64_t T, int64_t n_in, float* y,
              int64_t n_out, ThreadPool& pool);

}  // namespace trit
