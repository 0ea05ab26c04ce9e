// LoRA adapters as GGUF files, in the layout llama.cpp loads with --lora (FORMATS.md, "LoRA
// adapters"): general.type = adapter, general.architecture = the base's, adapter.type = lora,
// adapter.lora.alpha (f32); tensors "<base name>.lora_a" with ne = [n_in, r] and
// "<base name>.lora_b" with ne = [r, n_out].
//
// llama.cpp scales by adapter.lora.alpha / r. For rsLoRA (alpha / sqrt(r)) the file stores
// alpha * sqrt(r) there, so llama.cpp computes the same scaling, and keeps the exact settings in
// trit's own keys: trit.lora.rslora (bool), trit.lora.alpha (the original alpha, f32) and
// trit.lora.dropout (f32).
#pragma once

#include <map>
#include <string>

#include "core/dtype.h"
#include "core/lora.h"

namespace trit::engine {

class GgufFile;

// Writes the adapter to `path` through "<path>.tmp" renamed into place. `type` is F32, F16 or
// BF16. Throws naming the path and layer on an inconsistent adapter (see lora_validate), on
// non-finite values, and for rsLoRA adapters whose layers have different ranks (llama.cpp's
// alpha / r can then not express alpha / sqrt(r)).
void save_adapter_gguf(const LoraAdapter& adapter, const std::string& path,
                       DType type = DType::F32);

// Reads and validates an adapter GGUF: every key's type, every tensor's name (a linear layer
// of the model + .lora_a / .lora_b, in complete pairs), type (F32, F16, BF16), shape
// (a.ne[1] == b.ne[0]) and values (finite). Errors name the file and the key or tensor.
LoraAdapter load_adapter_gguf(const std::string& path);
LoraAdapter adapter_from_gguf(const GgufFile& file);

// The .lora_a / .lora_b tensor pairs of a file as LoRA layers keyed by base tensor name, each
// checked (partner present, matrix shapes that agree on the rank, f32/f16/bf16, finite values).
// Other tensors are an error, or skipped when skip_others (a model file with an adapter inside).
std::map<std::string, LoraLayer> read_lora_tensors(const GgufFile& file, bool skip_others);

}  // namespace trit::engine
