// LoRA adapters over the linear layers of a BitNet model (DESIGN sections 2 and 3):
// y = bitlinear(x) + scale * B (A x), where the LoRA branch sees the un-quantised x, runs in
// f32, and scale = user_scale * alpha / r (alpha / sqrt(r) with rsLoRA).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor_names.h"

namespace trit::engine {

struct LoraLayer {
  int64_t n_in = 0;
  int64_t n_out = 0;
  int64_t rank = 0;
  std::vector<float> a;  // (rank, n_in) row-major: GGUF ne = [n_in, rank], PEFT lora_A (r, in)
  std::vector<float> b;  // (n_out, rank) row-major: GGUF ne = [rank, n_out], PEFT lora_B (out, r)
};

struct LoraAdapter {
  float alpha = 16.0f;
  bool rslora = false;   // scaling alpha / sqrt(r) instead of alpha / r
  float dropout = 0.0f;  // training only: dropout on the LoRA branch input
  std::string base_arch = "bitnet";
  // Keyed by the base tensor's GGUF name: "blk.3.attn_q.weight", ..., "output.weight".
  std::map<std::string, LoraLayer> layers;

  float scaling(int64_t rank) const;  // alpha / r, or alpha / sqrt(r) with rsLoRA
};

// Short target names (q, k, v, o, gate, up, down, head) to GGUF tensor suffixes and back.
// "all" means the seven linear layers of every block.
std::vector<std::string> lora_target_suffixes(const std::string& targets);  // throws on unknown

// The base layer an adapter key names: "blk.N.<linear>.weight" (layer N, what = "attn_q", ...)
// or "output.weight" (the LM head: layer -1, what = "output"; for tied models its weight is
// token_embd, but the key stays "output.weight").
struct LoraTarget {
  int64_t layer = -1;
  std::string what;
};
std::optional<LoraTarget> parse_lora_layer_name(std::string_view name);  // nullopt if unknown
std::string lora_layer_name(const LoraTarget& t);
// The short target name of a suffix: "attn_q" -> "q", ..., "output" -> "head"; throws on unknown.
std::string lora_target_short_name(std::string_view suffix);

// Checks an adapter's own consistency: keys name linear layers, rank/n_in/n_out positive, a and b
// hold rank * n_in and n_out * rank values, alpha finite, dropout in [0, 1). Throws naming
// `where` and the layer.
void lora_validate(const LoraAdapter& adapter, std::string_view where);

// The adapter's keys in a fixed order: by block, the seven layers in block_linear_names()
// order, the head last (rather than the map's lexicographic "blk.10" < "blk.2").
std::vector<std::string> lora_layer_order(const LoraAdapter& adapter);

// One line for people: "15 layers (q, k, v, o, gate, up, down in 2 blocks; head), rank 8,
// alpha 16, rsLoRA".
std::string lora_summary(const LoraAdapter& adapter);

}  // namespace trit::engine
