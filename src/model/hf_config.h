// A Hugging Face BitNet config.json (model_type "bitnet", or a BitNet architecture such as
// 1bitLLM's llama-shaped BitnetForCausalLM) as hyperparameters, with what the converter needs
// to know of its quantization_config.
#pragma once

#include <optional>
#include <string>

#include "model/hparams.h"

namespace trit::engine {

// What weight_scale means in the packed layout. Settled on the reference machine
// (tools/hf_reference.py, transformers 5.17): a float model was exported packed and loaded back
// through transformers under both readings and both linear classes.
//  - linear_class "bitlinear" (BitLinear; the class microsoft/bitnet-b1.58-2B-4T's config names,
//    with quantization_mode "offline"): BitLinear computes y = (T . q(x)) / (weight_scale * s_x),
//    so weight_scale = 1 / mean|W| (a divisor). Stored that way the packed model reproduced the
//    float model's logits to 5e-6 (max abs); stored as mean|W| it was off by 1.4 (relative).
//    llama.cpp's converter reads it the same way ("The scale is inverted": W = T / weight_scale).
//  - linear_class "autobitlinear" with quantization_mode "offline": AutoBitLinear computes
//    y = (T . x_q) * weight_scale, so there weight_scale = mean|W| (a multiplier): that reading
//    reproduced the float model exactly, the inverse one was off by 1.4.
enum class HfScaleMeaning { Inverse, Multiplier };

struct HfConfig {
  HParams hp;               // arch "bitnet"; tied_head not yet decided (see tie)
  std::optional<bool> tie;  // tie_word_embeddings when given
  HfScaleMeaning scale_meaning = HfScaleMeaning::Inverse;
  std::string linear_class;  // quantization_config.linear_class, lower case
};

// Reads config.json; throws naming the file and key on missing or unsupported values.
HfConfig read_hf_config(const std::string& path);

// The hyperparameters of a folder's config.json: tied_head follows tie_word_embeddings, or
// !has_lm_head when the key is absent. Throws naming the file and key.
HParams hf_config_to_hparams(const std::string& config_path, bool has_lm_head);

}  // namespace trit::engine
