// Options and helpers shared by the subcommands that run a model. The CLI is a shell over the
// public API (include/trit/): it parses flags, calls the library and prints.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "trit/trit.hpp"

namespace trit::cli {

struct RunOptions {
  std::string model;
  int threads = 0;
  std::string device;
  int64_t max_buffer_mb = 0;  // 0: the device's own binding limit
  int64_t mem_budget_mb = 0;  // 0: none
  std::string act_quant = "int8";
  std::string activation;          // "": the file's
  std::string cache_type = "f32";  // --cache-type
  int64_t ctx = 0;                 // 0: the command's default
  std::vector<std::string> lora;   // ADAPTER.gguf[:SCALE]
};

// A model with the adapters of --lora.
struct LoadedModel {
  Model model;
  std::vector<AdapterScale> adapters;
};

// --mem-budget MiB.
void add_mem_budget_option(CLI::App* cmd, int64_t& mem_budget_mb);
// --device and --max-buffer-mb.
void add_device_options(CLI::App* cmd, std::string& device, int64_t& max_buffer_mb);
// --activation (relu2 | silu).
void add_activation_option(CLI::App* cmd, std::string& activation);
// -m, -t, --device, --max-buffer-mb, --mem-budget, --act-quant, --activation, --cache-type,
// --lora (and -c when with_ctx);
// -m optional where a command can delegate (it checks itself).
void add_run_options(CLI::App* cmd, RunOptions& o, bool with_ctx = true,
                     bool model_required = true);
void add_sampler_options(CLI::App* cmd, SamplingOptions& s);
// llama.cpp's --logit-bias: "15043+1.5", "15043-2", "15043-inf" (a ban); throws
// CLI::ValidationError naming the flag for anything else.
std::pair<int32_t, float> parse_logit_bias(const std::string& v);
// The sampling options as the fields of an OpenAI completion or chat request (trit serve's
// names: llama-server's for top_k, min_p and the repetition penalty).
nlohmann::json sampling_fields(const SamplingOptions& s);

// Opens the model named by -m on the device --device names and loads the adapters of --lora,
// printing load warnings to stderr (and, when the default device falls back to the CPU, why).
LoadedModel load_model(const RunOptions& o);

// "1,2,3" -> {1, 2, 3}; throws naming the flag on a bad list.
std::vector<int32_t> parse_ids(const std::string& text, const std::string& flag);

// The prompt as token ids: from ids, or tokenised text (with bos when the tokenizer adds one).
std::vector<int32_t> prompt_tokens(const Model& m, const std::string& text, const std::string& ids,
                                   bool parse_special);

// Writes text to stdout as it comes, flushing each piece.
void print_piece(std::string_view piece);

double now_seconds();

// The output path without ".gguf" (the stem of its metrics, plot and checkpoints).
std::string strip_gguf(const std::string& path);
// Where a fine-tune's checkpoints go: checkpoint_dir, or <output without .gguf>.checkpoints.
std::string checkpoint_dir_of(const TrainOptions& o);
// True when dir holds a checkpoint-<step> folder.
bool has_checkpoint(const std::string& dir);

// Throws trit::Error with the concatenated message.
[[noreturn]] void fail(const std::string& message);

}  // namespace trit::cli
