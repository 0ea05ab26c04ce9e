// LoRA adapters folded into a model file (`trit merge`), and adapters stored inside model files.
//
// Two modes:
//   - Float: every linear layer that an adapter touches becomes W' = W + sum_i s_i B_i A_i,
//     where W is the layer's effective weight (trits times their block scale, times the optional
//     `.scale` tensor, which is then left out of the file) and s_i the adapter's user scale times
//     alpha / r (alpha / sqrt(r) with rsLoRA); W' is written as f16 or f32 and the file gets
//     trit.linear_weights = "merged", so the loader uses those layers as float matrices: y = W' x
//     with the un-quantised x (model/model.h). Layers no adapter touches keep their bytes, except
//     float master weights of an input without that key: they are ternarised as the
//     loader would do and written as TQ2_0, because the key changes what float layers mean.
//     An adapter on the head of a model with tied embeddings adds output.weight (token_embd +
//     s B A) in the chosen float type. general.file_type becomes the float type's (1 for f16,
//     0 for f32) when every block linear layer is float afterwards.
//   - Attach: the base's tensors keep their bytes; the adapters are stored in the same file as
//     one adapter, with the tensor names of adapter GGUFs ("blk.0.attn_q.weight.lora_a" with
//     ne [n_in, r], ".lora_b" with ne [r, n_out], always f32) and the keys
//     trit.adapter.alpha (f32), trit.adapter.rslora (bool) and trit.adapter.scale (f32, the user
//     scale). Model::load reads it (model/embedded_adapter.h) and applies it by default. One
//     adapter is stored as it is, so the file computes bit for bit what --lora A:SCALE does.
//     Several are folded into one set per layer by concatenating ranks: A = [A_1; A_2; ...]
//     (rows stacked), B = [c_1 B_1 | c_2 B_2 | ...] (side by side) with c_i = s_i R / R_max,
//     where R is the layer's total rank and R_max the largest R of any layer, stored with
//     alpha = R_max, no rsLoRA and scale 1 (so the layer's scaling alpha / R times c_i gives s_i).
//     Sums in another order, so equal to the separate adapters within float rounding.
//
// An adapter already embedded in the input model counts as the first adapter (its tensors and
// trit.adapter.* keys are replaced). Both modes copy every other tensor byte for byte and the
// metadata (keys in order), append the adapters to the string array trit.merged_adapters
// ("A.gguf", or "A.gguf:SCALE" when the scale is not 1), and write through "<out>.tmp" renamed
// into place, so a failure leaves no output. Tensors are computed and written one chunk of rows
// at a time: memory stays near a few megabytes beyond the adapters (a float master weight is
// ternarised whole, as the loader does, so one tensor of floats then).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/lora.h"

namespace trit::engine {

enum class MergeMode { Float, Attach };

struct MergeOptions {
  MergeMode mode = MergeMode::Float;
  DType type = DType::F16;  // float mode: the merged layers' type, F16 or F32
  int threads = 0;          // 0: all hardware threads
};

// One adapter to merge. `name` stands for it in messages and in trit.merged_adapters.
struct MergeSource {
  std::string name;
  const LoraAdapter* adapter = nullptr;
  float scale = 1.0f;  // the user scale, as in --lora A.gguf:SCALE
};

struct MergeResult {
  int64_t n_adapters = 0;        // merged adapters, an embedded one of the input included
  int64_t n_merged = 0;          // float mode: linear layers (and the head) written as floats
  int64_t n_ternarised = 0;      // float mode: float master layers written as TQ2_0
  int64_t n_adapter_layers = 0;  // attach mode: adapter layers stored
  int64_t n_copied = 0;          // tensors copied byte for byte
  uint64_t file_bytes = 0;
  double seconds = 0;
};

// Merges into `out_path` (which must not be the model). Throws trit::Error naming the adapter
// (its MergeSource name) when it does not fit the model, the model file on malformed input,
// and the tensor when a merged weight does not fit f16 (use f32 then).
MergeResult merge_model(const std::string& model_path, const std::vector<MergeSource>& adapters,
                        const std::string& out_path, const MergeOptions& options);

// "A.gguf" or "A.gguf:SCALE" (a tail after the last ':' that is not a number stays part of
// the path), as --lora takes it.
struct AdapterSpec {
  std::string path;
  float scale = 1.0f;
};
AdapterSpec parse_adapter_spec(const std::string& spec);

// Loads the adapter files of the specs (errors name the file) and merges them.
MergeResult merge_adapter_files(const std::string& model_path,
                                const std::vector<std::string>& specs, const std::string& out_path,
                                const MergeOptions& options);

}  // namespace trit::engine
