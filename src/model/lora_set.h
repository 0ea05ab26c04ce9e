// LoRA adapters applied to a model (DESIGN section 2): host adapters checked and resolved
// against the model's shape, and the branches (backend.h's LoraBranch, the one representation
// on every backend) that a pass adds to each linear layer.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "core/lora.h"
#include "model/hparams.h"

namespace trit::engine {

// (n_in, n_out) of the base layer an adapter key names, for a model of shape hp; throws naming
// `where` and the key when it names no linear layer of that model (unknown name, layer out of
// range).
std::pair<int64_t, int64_t> lora_base_shape(const HParams& hp, const std::string& name,
                                            std::string_view where);

// Checks that an adapter fits a model: same architecture (the two BitNet names "bitnet" and
// "bitnet-b1.58" are one family), every layer's block exists and its (n_in, n_out) equals the
// base layer's. Throws naming `where`.
void check_adapter_against(const LoraAdapter& adapter, const HParams& hp, const std::string& where);

// An adapter's layer with the scale it is applied with (user scale * alpha / rank, or
// alpha / sqrt(rank) with rsLoRA), on the host.
struct LoraTerm {
  const LoraLayer* layer = nullptr;
  float scale = 0;
};

// For every block's linear layers (in LinearIndex order) and the head, the terms that apply.
struct LoraTerms {
  std::vector<std::array<std::vector<LoraTerm>, kLinearCount>> blocks;  // (n_layer)
  std::vector<LoraTerm> head;
};

// Resolves adapters (each with a user scale) against the model's shape. Throws naming the
// adapter layer when a layer does not exist in the model or its shape differs.
LoraTerms resolve_lora(const std::vector<std::pair<const LoraAdapter*, float>>& adapters,
                       const HParams& hp);

// The branches one pass adds to the model's linear layers.
struct LoraSet {
  std::vector<std::array<std::vector<LoraBranch>, kLinearCount>> blocks;  // (n_layer)
  std::vector<LoraBranch> head;
  bool empty() const;
};

// An adapter uploaded to a backend once: every layer's A and B as tensors of it. Applied to
// passes with a scale chosen per call (lora_set). The backend must outlive it.
class DeviceAdapter {
 public:
  // Checks the adapter against the model (errors name `where`) and uploads it.
  DeviceAdapter(const LoraAdapter& adapter, const HParams& hp, Backend& backend,
                const std::string& where);
  ~DeviceAdapter();
  DeviceAdapter(const DeviceAdapter&) = delete;
  DeviceAdapter& operator=(const DeviceAdapter&) = delete;

  const std::string& where() const { return where_; }

 private:
  friend LoraSet lora_set(const HParams& hp,
                          std::span<const std::pair<const DeviceAdapter*, float>> adapters);
  struct Layer {
    int64_t block = -1;  // -1: the head
    LinearIndex index = kLinearCount;
    std::unique_ptr<DeviceTensor> a, b;
    float scaling = 0;  // alpha / rank (or alpha / sqrt(rank))
  };
  std::string where_;
  std::vector<Layer> layers_;  // in lora_layer_order
};

// The branches of the adapters, each applied with its user scale (in the order given).
LoraSet lora_set(const HParams& hp,
                 std::span<const std::pair<const DeviceAdapter*, float>> adapters);

}  // namespace trit::engine
