// Tensor names of BitNet GGUF files (FORMATS.md): "token_embd.weight", "blk.3.attn_q.weight",
// and the seven linear layers of a block in one fixed order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trit::engine {

// An adapter GGUF's LoRA tensors: "<layer's weight name>.lora_a" (rank x n_in) and ".lora_b".
inline constexpr std::string_view kLoraSuffixA = ".lora_a";
inline constexpr std::string_view kLoraSuffixB = ".lora_b";

// Index of a block's linear layers, in block_linear_names() order.
enum LinearIndex { kQ, kK, kV, kO, kGate, kUp, kDown, kLinearCount };

// "blk.<layer>.<what>.weight"; what = "attn_q", "attn_norm", ...
std::string block_tensor_name(int64_t layer, std::string_view what);
// attn_q attn_k attn_v attn_output ffn_gate ffn_up ffn_down
const std::vector<std::string>& block_linear_names();
// The LinearIndex of "attn_q" ... "ffn_down", or kLinearCount for any other name.
LinearIndex linear_index(std::string_view what);

}  // namespace trit::engine
