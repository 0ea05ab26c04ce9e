// The tools around models and adapters: convert from Hugging Face and PEFT, re-pack ternary
// weights, make random models, merge adapters into models, export adapters to PEFT, describe
// a file, and measure speed. Each writes through a temporary file renamed into place, so a
// failure leaves no partial output, and returns a summary line for people.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "trit/export.h"
#include "trit/model.h"

namespace trit {

// What a tool wrote.
struct ToolResult {
  std::string output;
  uint64_t file_bytes = 0;
  double seconds = 0;
  std::string summary;  // "wrote OUT: 12.3 MiB, 14 tensors re-packed as tq1_0, ..."
};

struct ConvertOptions {
  // Models: the linear layers' type, tq1_0, tq2_0 (default), i2_s, or f16 (the ternary weights
  // as floats, for interchange). Adapters: f32 (default) or f16.
  std::string type;
  std::string embd_type;  // models: token_embd and output, f16 (default), bf16, f32, q8_0, q6_K
  // Adapters: the base model GGUF, to check the adapter's shapes against and take its
  // architecture from ("": unchecked, for "bitnet").
  std::string base;
  std::function<void(const std::string& message)> on_warning;
};

// A Hugging Face BitNet folder (config.json + *.safetensors) to a model GGUF, or a PEFT adapter
// folder (adapter_config.json + adapter_model.safetensors) to an adapter GGUF.
TRIT_API ToolResult convert(const std::string& source, const std::string& output,
                            const ConvertOptions& options = {});

// Re-packs a model's ternary weights as tq1_0, tq2_0 or i2_s (the trits never change).
TRIT_API ToolResult quantize(const std::string& input, const std::string& output,
                             const std::string& type);

struct CreateOptions {
  std::string preset;             // tiny, 125m, 1b, 2b4t, 7b, 13b; or
  std::string config;             // a JSON file of hyperparameters (trit's or Hugging Face's names)
  std::string type = "tq2_0";     // the linear layers: tq1_0, tq2_0 or i2_s
  std::string embd_type = "f16";  // f16, bf16, f32, q8_0 or q6_K
  std::string activation;         // relu2 or silu; "": the preset's (llama: silu)
  // "bitnet" (sub-norms) or "llama" (a Llama-architecture ternary model, no sub-norms);
  // "": the config file's, else bitnet
  std::string arch;
  bool untied = false;  // a separate output.weight
  uint64_t seed = 42;
  int64_t vocab = 0, layers = 0;  // overrides when not 0
};
// A model with random ternary weights of a given shape (for tests and benchmarks).
TRIT_API ToolResult create_model(const std::string& output, const CreateOptions& options);

struct MergeOptions {
  std::vector<std::string> adapters;  // "A.gguf" or "A.gguf:SCALE"
  // "float": adapted layers become f16/f32 weights W + s B A; "attach": the ternary base
  // unchanged, the adapters stored in the file (applied whenever it runs).
  std::string mode = "float";
  std::string type = "f16";  // float mode: f16 or f32
  int threads = 0;
};
TRIT_API ToolResult merge(const std::string& model, const std::string& output,
                          const MergeOptions& options);

// An adapter GGUF to a PEFT adapter folder that Hugging Face peft loads.
// base: the base model, needed for an adapter of a llama model (its q and k rows are stored in
// llama.cpp's order and need the head size to be put back).
TRIT_API ToolResult export_peft(const std::string& adapter, const std::string& output_dir,
                                const std::string& base = "");

// The runs whose memory describe_file estimates (on the CPU: the peak resident set).
struct MemoryQuery {
  int64_t ctx = 0;          // generation: 0, the trained context (at most 4096)
  std::string cache_type;   // generation: "f32" (or "") or "f16"
  int64_t train_ctx = 512;  // fine-tuning, as `trit finetune`'s defaults
  int64_t rank = 8;
  std::string targets = "all";
  int64_t batch = 4;  // sequences run one after another: the estimate does not grow with it
  bool grad_checkpointing = true;
};

// A GGUF file's metadata, hyperparameters, tokenizer, tensors and the memory it needs to run
// and to fine-tune: as text, or as one JSON object; every tensor listed when all_tensors.
TRIT_API std::string describe_file(const std::string& path, bool all_tensors = false,
                                   bool json = false, const MemoryQuery& memory = {});

struct BenchOptions {
  int64_t n_prompt = 128, n_gen = 64;  // inference: prompt and generated tokens (0: skip)
  int repetitions = 3;                 // the best is reported
  bool train = false;                  // measure LoRA training (forward, backward, AdamW) instead
  int64_t train_ctx = 128, train_steps = 3, rank = 8;
  int64_t train_batch = 1;      // sequences of train_ctx tokens per step
  int64_t pack_tokens = -1;     // as TrainOptions::pack_tokens
  std::string targets = "all";  // LoRA targets of the training measured
  bool grad_checkpointing = true;
  std::vector<AdapterScale> adapters;                    // inference: applied to every token
  std::function<void(const std::string& line)> on_line;  // per-step timings of training
};

struct BenchResult {
  std::string device;
  std::string cpu_kernels;  // "avx512-vnni", "avx2", "scalar"
  double prompt_tokens_per_s = 0, gen_tokens_per_s = 0;
  int64_t weight_bytes_per_token = 0;  // read by each generated token
  double train_tokens_per_s = 0;
  double peak_rss_mib = 0;
  // A GPU's memory in use by this process at the end of the run, as its driver reports it
  // (VK_EXT_memory_budget; 0 on the CPU or when the driver does not say).
  double device_memory_mib = 0;
};
// Throughput and peak memory of a model on its device.
TRIT_API BenchResult bench(Model& model, const BenchOptions& options);

}  // namespace trit
