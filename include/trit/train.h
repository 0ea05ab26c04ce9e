// LoRA fine-tuning of a model on a dataset (DESIGN section 5): data, adapter, AdamW with a
// schedule and clipping, validation, metrics, checkpoints that resume to the same bytes, and
// pause, cancel and resume.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "trit/export.h"
#include "trit/model.h"

namespace trit {

// Every `trit finetune` option (names follow mlx-lm and llama.cpp); the device, threads and
// activation quantisation are the Model's.
struct TrainOptions {
  std::string data;    // folder with train/valid/test.jsonl, or one .jsonl or .txt file
  std::string output;  // the adapter GGUF to write
  // adapter
  std::string targets = "all";  // "all", or a list of q, k, v, o, gate, up, down, head
  int64_t rank = 8;
  float alpha = 16.0f;       // scaling alpha / rank
  bool rslora = false;       // scaling alpha / sqrt(rank)
  float dropout = 0.0f;      // on the LoRA branch input
  std::string init_adapter;  // an adapter GGUF to train further instead of a fresh one
  // optimisation
  double lr = 1e-4;
  std::string schedule = "constant";  // constant, linear or cosine
  int64_t warmup = 0;                 // steps
  double weight_decay = 0.0;
  double grad_clip = 1.0;  // global norm; <= 0: no clipping
  int64_t epochs = 1;
  int64_t steps = 0;  // > 0: overrides epochs
  int64_t ctx = 512;  // longer examples are truncated
  int64_t batch = 4;  // sequences per step
  int64_t grad_accum = 1;
  // The sequences of a micro-batch computed together as one pass, their rows one matrix, up to
  // this many tokens a pass; 0: one sequence a pass; -1: the device decides (a GPU packs up to
  // 4096 tokens, the CPU up to ctx: short sequences share a pass in the memory of one).
  int64_t pack_tokens = -1;
  bool mask_prompt = false;        // loss on completions / assistant turns only
  std::string chat_template;       // a built-in one (bitnet, chatml, llama3) instead of the model's
  bool grad_checkpointing = true;  // recompute each block in the backward pass (less memory)
  uint64_t seed = 0;
  // validation and checkpoints
  int64_t val_every = 50;    // 0: only at the start and the end
  int64_t val_examples = 0;  // validation examples used; 0: all
  int64_t save_every = 0;    // 0: only when stopped early
  // Steps in a row whose loss or gradient is not finite (each is skipped) before the run stops
  // with a checkpoint of the last good state and an error; 0: never stop.
  int64_t max_bad_steps = 5;
  std::string checkpoint_dir;  // default: <output without .gguf>.checkpoints
  std::string resume;          // "": a fresh run; "latest": the newest checkpoint; or a folder
};

// What the run reports, as it happens.
struct TrainProgress {
  enum class Kind {
    Message,     // a line for people: the device, a warning, resuming from a checkpoint
    Step,        // an optimizer step: step, loss, lr, grad_norm, tokens_per_s, ...
    Validation,  // step, val_loss
    Checkpoint,  // a checkpoint was written: checkpoint
  };
  Kind kind = Kind::Message;
  int64_t step = 0;         // optimizer steps done
  int64_t total_steps = 0;  // of the run
  double epoch = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  double tokens_per_s = 0;
  double peak_mib = 0;  // peak resident memory of the process
  double eta_s = -1;    // < 0: unknown
  double elapsed_s = 0;
  double val_loss = 0;
  std::string checkpoint;  // Checkpoint: its folder
  // The line `trit finetune` prints for this event:
  //   step 12/200 | loss 2.3456 | lr 1.00e-04 | 1234 tok/s | peak 512 MiB | ETA 3m12s
  std::string line;
};

struct TrainResult {
  int64_t steps_done = 0;
  // Cancelled before the end: a checkpoint was written (last_checkpoint), unless the cancel
  // came before the first step.
  bool stopped = false;
  double last_loss = 0;
  double last_val_loss = -1;  // -1 without validation data
  std::string adapter_path, metrics_path, plot_path, last_checkpoint;
};

// Checks the options on their own, before any file is read (what the Trainer's constructor
// checks): throws trit::Error whose option() names the field at fault.
TRIT_API void check_train_options(const TrainOptions& options);

// The ranks of a data-parallel fine-tune, over the application's communicator (the CLI's is
// MPI's: `mpirun -np N trit finetune ...`). Every rank runs the same Trainer on the same model
// and data and takes its share of each batch (rows r with r % size() == rank()); the ranks sum
// their losses and LoRA gradients each optimizer step and so take the same update. Rank 0
// writes the metrics, checkpoints and adapter and reports progress; the others report nothing.
class TRIT_API DataParallel {
 public:
  virtual ~DataParallel() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Sums v over the ranks in place; afterwards every rank must hold the same values, bit for
  // bit. Throws (trit::Error) when the other ranks do not answer in bounded time.
  virtual void sum(std::span<double> v) = 0;
  virtual void sum(std::span<float> v) = 0;
};

class TRIT_API Trainer {
 public:
  // The model must outlive the trainer. Checks the options (errors name the option).
  Trainer(Model& model, const TrainOptions& options);
  Trainer(Trainer&&) noexcept;
  Trainer& operator=(Trainer&&) noexcept;
  ~Trainer();

  // Called on the thread that runs run().
  void on_progress(std::function<void(const TrainProgress&)> callback);
  // Makes the run one rank of a data-parallel fine-tune (null: this process alone). The ranks
  // object must outlive run().
  void set_data_parallel(DataParallel* ranks);
  // Trains to the end, or until cancel(); writes the adapter, metrics.jsonl and a loss plot
  // beside it. Throws trit::Error naming the file or option on bad input, and when a resumed
  // run's settings differ from its checkpoint's.
  TrainResult run();

  // From any thread. pause() holds the run after its current step until resume();
  // cancel() ends it after its current step with a checkpoint (resumable with
  // TrainOptions::resume), or before it starts; it ends one run (the running one, or the next).
  void pause();
  void resume();
  void cancel();

  struct Impl;  // opaque

 private:
  friend struct ApiAccess;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trit
