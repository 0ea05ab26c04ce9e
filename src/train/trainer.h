// LoRA fine-tuning of a frozen BitNet base (DESIGN section 5): data, adapter, AdamW with a
// schedule and clipping, validation, metrics, checkpoints that resume exactly, pausing and a
// clean stop on request. The model and its backend are opened by the caller.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "backend/backend.h"
#include "model/model.h"
#include "train/collective.h"

namespace trit::engine {

struct FinetuneOptions {
  std::string data;  // folder with train/valid/test.jsonl, or one .jsonl / .txt
  std::string out;   // adapter GGUF
  // adapter
  std::string targets = "all";
  int64_t rank = 8;
  float alpha = 16.0f;
  bool rslora = false;
  float dropout = 0.0f;
  std::string init_adapter;  // train this adapter further instead of a fresh one
  // optimisation
  double lr = 1e-4;
  std::string schedule = "constant";
  int64_t warmup = 0;
  double weight_decay = 0.0;
  double grad_clip = 1.0;  // <= 0: no clipping
  int64_t epochs = 1;
  int64_t steps = 0;  // > 0 overrides epochs
  int64_t ctx = 512;
  int64_t batch = 4;
  int64_t grad_accum = 1;
  // The sequences of a micro-batch computed together as one pass (their rows one matrix), up
  // to this many tokens a pass; 0: one sequence a pass; < 0: the device decides
  // (pack_tokens_for).
  int64_t pack_tokens = -1;
  bool mask_prompt = false;
  std::string chat_template;  // built-in name, or "" for the model's
  bool checkpointing = true;
  uint64_t seed = 0;
  bool act_quant = true;  // W1.58A8; false: float activations
  // validation and checkpoints
  int64_t val_every = 50;      // 0: only at the start and the end
  int64_t val_examples = 0;    // validation examples used (0: all)
  int64_t save_every = 0;      // 0: only on a stop request
  int64_t max_bad_steps = 5;   // non-finite steps in a row before stopping; 0: never
  std::string checkpoint_dir;  // default: <out>.checkpoints
  std::string resume;          // "": fresh; "latest": newest in checkpoint_dir; else a folder
};

// Checks the options on their own (before any file is read); errors name the option.
void check_finetune_options(const FinetuneOptions& o);

// The tokens a training pass takes on a backend: `requested` when >= 0, else what suits the
// device: a GPU computes a micro-batch's sequences together (up to kAutoPackTokens, or one
// sequence of ctx when longer), the CPU up to ctx tokens a pass: short sequences share a pass
// (each pass reads every weight once, from the file where the weights stream) in no more
// memory than one sequence of ctx takes; more rows a pass are no faster there.
inline constexpr int64_t kAutoPackTokens = 4096;
int64_t pack_tokens_for(const Backend& be, int64_t requested, int64_t ctx);

// What the run reports as it goes.
struct FinetuneEvent {
  enum class Kind { Message, Step, Validation, Checkpoint };
  Kind kind = Kind::Message;
  int64_t step = 0, total_steps = 0;
  double epoch = 0, loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, peak_mib = 0;
  double eta_s = -1, elapsed_s = 0, val_loss = 0;
  std::string checkpoint;
  std::string line;  // the progress line, or the message
};

struct FinetuneControl {
  std::function<void(const FinetuneEvent&)> on_event;
  // Polled between steps. stop: a checkpoint is written and the run returns with
  // stopped = true. pause: the run waits (between steps) until it is cleared or stop is set.
  const std::atomic<bool>* stop = nullptr;
  const std::atomic<bool>* pause = nullptr;
  // Data-parallel ranks (train/collective.h), or null: this process alone. Rank 0 writes the
  // metrics, checkpoints and the adapter and reports events; the others report nothing.
  Collective* collective = nullptr;
};

struct FinetuneResult {
  int64_t steps_done = 0;
  bool stopped = false;  // a stop request ended the run early (a checkpoint was written)
  double last_loss = 0;
  double last_val_loss = -1;  // -1 without validation data
  std::string adapter_path, metrics_path, plot_path, last_checkpoint;
};

// Runs the fine-tuning of model on backend. Throws trit::Error naming the file or setting on
// bad input, and when a resumed run's settings differ from the checkpoint's.
FinetuneResult finetune(const Model& model, Backend& backend, const FinetuneOptions& opts,
                        const FinetuneControl& control = {});

}  // namespace trit::engine
