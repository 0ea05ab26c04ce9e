// Options and helpers shared by the subcommands that run a model.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/thread_pool.h"
#include "infer/sampler.h"
#include "model/forward.h"
#include "model/lora_set.h"
#include "model/model.h"

namespace trit::cli {

using namespace trit::engine;  // until the CLI moves onto the public API

struct RunOptions {
  std::string model;
  int threads = 0;
  std::string device;
  int64_t max_buffer_mb = 0;  // 0: the device's own binding limit
  std::string act_quant = "int8";
  int64_t ctx = 0;                // 0: the command's default
  std::vector<std::string> lora;  // ADAPTER.gguf[:SCALE]
};

// A model with its adapters and the forward options that apply them.
struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Backend> backend;  // what --device chose
  std::vector<std::unique_ptr<LoraAdapter>> adapters;
  std::vector<std::unique_ptr<DeviceAdapter>> device_adapters;
  LoraSet lora;
  bool act_quant = true;
  // Points into this object: take it after the object has its final address.
  ForwardOptions fwd() const { return {act_quant, lora.empty() ? nullptr : &lora}; }
  const Model* operator->() const { return model.get(); }
  const Model& operator*() const { return *model; }
};

// --device and --max-buffer-mb (the backend choice, select.h).
void add_device_options(CLI::App* cmd, std::string& device, int64_t& max_buffer_mb);
// -m, -t, --device, --max-buffer-mb, --act-quant, --lora (and -c when with_ctx).
void add_run_options(CLI::App* cmd, RunOptions& o, bool with_ctx = true);
void add_sampler_options(CLI::App* cmd, SamplerOptions& s);

// Loads the model named by -m and the adapters of --lora, printing load warnings to stderr,
// and opens the backend --device names (saying on stderr why when the default falls back to
// the CPU).
LoadedModel load_model(const RunOptions& o);
int thread_count(const RunOptions& o);

// "1,2,3" -> {1, 2, 3}; throws naming the flag on a bad list.
std::vector<int32_t> parse_ids(const std::string& text, const std::string& flag);

// The prompt as token ids: from ids, or tokenised text (with bos when the tokenizer adds one).
std::vector<int32_t> prompt_tokens(const Model& m, const std::string& text, const std::string& ids,
                                   bool parse_special);

// Writes token pieces to stdout without splitting UTF-8 characters across flushes.
class Utf8Printer {
 public:
  void put(const std::string& bytes);
  void flush();  // prints whatever is held

 private:
  std::string pending_;
};

double now_seconds();
int64_t peak_rss_bytes();

}  // namespace trit::cli
