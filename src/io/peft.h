// PEFT LoRA adapters (Hugging Face peft's save_pretrained folders): adapter_config.json plus
// adapter_model.safetensors with keys such as
//   base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight  (r, in)
//   base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight  (out, r)
//   base_model.model.lm_head.lora_A.weight / lora_B.weight           (the LM head)
// Torch's (r, in) is row-major with `in` innermost: the same bytes as GGUF's lora_a with ne =
// [in, r], and LoraLayer::a as it is; likewise lora_B (out, r) and lora_b ne = [r, out].
#pragma once

#include <optional>
#include <string>

#include "core/lora.h"

namespace trit::engine {

// Reads a PEFT adapter folder into an adapter keyed by GGUF names (base_arch "bitnet"; the
// caller sets the base's when it knows it). adapter_config.json: r, lora_alpha, target_modules
// (a list of module names matched as PEFT does, by the name or a "."-suffix, or one string:
// "all-linear" or a regular expression matched against whole module names), use_rslora,
// lora_dropout; refused with an error naming the field: a non-empty rank_pattern or
// alpha_pattern, bias other than "none", fan_in_fan_out, modules_to_save, use_dora, peft_type
// other than LORA. task_type and the rest are ignored. Tensors: F32, F16 or BF16, in complete
// lora_A / lora_B pairs of rank r, each belonging to a module target_modules selects. Errors
// name the file and the field or tensor.
LoraAdapter load_peft(const std::string& dir);

// Writes adapter_config.json and adapter_model.safetensors (F32) into a temporary folder beside
// `dir`, renamed into place; an existing `dir` is replaced only when it holds nothing but those
// two files. Every layer must have the same rank (PEFT's rank_pattern is not written).
// target_modules lists the PEFT names (q_proj ... down_proj, lm_head) when every block
// 0..N-1 carries the same targets, else the full module names.
void save_peft(const LoraAdapter& adapter, const std::string& dir);

// "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj", "output.weight" -> "lm_head",
// and back (nullopt for names that are not LoRA targets).
std::optional<std::string> peft_module_of(const std::string& gguf_name);
std::optional<std::string> gguf_name_of_peft_module(const std::string& module);

}  // namespace trit::engine
