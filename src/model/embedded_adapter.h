// What a model file may carry besides its base weights, as `trit merge` writes it
// (tools/merge.h): float linear layers with adapters folded in (the key trit.linear_weights =
// "merged"), or one LoRA adapter stored beside the weights (attach mode), which the model
// applies by default.
#pragma once

#include <optional>
#include <string_view>

#include "core/lora.h"

namespace trit::engine {

class GgufFile;
struct HParams;

// The metadata key that tells what float linear weights mean (model/model.h), and its value
// for merged models.
inline constexpr std::string_view kLinearWeightsKey = "trit.linear_weights";
inline constexpr std::string_view kLinearWeightsMerged = "merged";

// An adapter stored in a model file: tensors named as in adapter GGUFs
// ("blk.0.attn_q.weight.lora_a", ".lora_b") and these keys.
inline constexpr std::string_view kEmbeddedAlphaKey = "trit.adapter.alpha";    // f32
inline constexpr std::string_view kEmbeddedRsloraKey = "trit.adapter.rslora";  // bool
inline constexpr std::string_view kEmbeddedScaleKey = "trit.adapter.scale";    // f32 user scale

struct EmbeddedAdapter {
  LoraAdapter adapter;
  float scale = 1.0f;
};

// The adapter a model file holds, or nullopt when it holds none. Throws naming the file and
// the key or tensor when it is malformed (a LoRA tensor without the keys or without its
// partner, bad types, shapes or values) or does not fit the model of shape hp.
std::optional<EmbeddedAdapter> read_embedded_adapter(const GgufFile& file, const HParams& hp);

}  // namespace trit::engine
