// A summary of a GGUF file (`trit info`): metadata, hyperparameters when it is a BitNet model,
// tokenizer, tensors and their types, and an estimate of the memory needed to run it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "model/hparams.h"
#include "model/memory_estimate.h"

namespace trit::engine {

class GgufFile;

struct TensorSummary {
  std::string name;
  DType type = DType::F32;
  std::vector<int64_t> ne;
  uint64_t nbytes = 0;
};

struct TypeTotals {
  DType type = DType::F32;
  int64_t n_tensors = 0;
  int64_t n_elements = 0;
  uint64_t nbytes = 0;
};

// The runs `trit info` estimates memory for.
struct MemoryQuery {
  int64_t run_ctx = 0;  // 0: the trained context, at most 4096 (a session's default)
  int64_t run_batch = 64;
  KvType kv = KvType::F32;
  int64_t train_ctx = 512, rank = 8, batch = 4;  // `trit finetune`'s defaults
  std::string targets = "all";
  bool checkpointing = true;
  int threads = 0;  // the fine-tune's threads (each keeps scratch); 0: the machine's cores
};

struct ModelInfo {
  std::string path;
  uint64_t file_size = 0;
  uint32_t version = 0;
  uint64_t alignment = 0;
  std::string arch;  // general.architecture ("" when missing)
  std::string name;  // general.name
  std::optional<uint32_t> file_type;

  // Set when the file is a model trit runs (bitnet, or llama with ternary linear weights)
  // whose hyperparameters read cleanly; otherwise hparams_error says why not (empty for
  // other architectures).
  std::optional<HParams> hparams;
  std::string hparams_error;
  ActivationSource act_source;  // how the activation was decided
  std::string family;           // "BitNet b1.58 (...)" or "Llama-architecture ternary (...)"

  // Every metadata key with a short rendering of its value (arrays as "[type x N]").
  std::vector<std::pair<std::string, std::string>> metadata;

  // Tokenizer (tokenizer.ggml.*); model empty when there is none.
  std::string tokenizer_model;
  std::string tokenizer_pre;
  int64_t tokenizer_vocab = 0;
  int64_t bos = -1, eos = -1;
  bool chat_template = false;

  std::vector<TensorSummary> tensors;
  std::vector<TypeTotals> type_totals;  // in order of first appearance
  int64_t n_params = 0;
  uint64_t tensor_bytes = 0;

  // Memory on the CPU (model/memory_estimate.h) to run and to fine-tune with the settings of
  // `memory`; a run's weights count every tensor, read in place from the file, a fine-tune's the
  // two largest neighbouring blocks (its passes stream the weights). Zero when hparams are
  // unknown.
  MemoryQuery memory;
  MemoryEstimate run, finetune;
  bool finetune_streams = false;  // the fine-tune estimate holds two blocks, not every one
};

ModelInfo read_model_info(const GgufFile& file, const MemoryQuery& memory = {});

// Human-readable report; all_tensors lists every tensor, otherwise totals per type.
std::string format_model_info(const ModelInfo& info, bool all_tensors);
// The same as a JSON object (tensors listed only with all_tensors), pretty-printed.
std::string model_info_json(const ModelInfo& info, bool all_tensors);

// "1.23 GiB", "512 KiB", "77 B".
std::string format_bytes(uint64_t bytes);

}  // namespace trit::engine
