// trit finetune: LoRA fine-tuning; Ctrl-C (SIGINT) or SIGTERM writes a checkpoint and exits 0.
// With --delegate, a peer's trit serve trains (cli/finetune_delegate.h).
#include <atomic>
#include <csignal>
#include <thread>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/finetune_delegate.h"
#include "cli/mpi_ranks.h"

namespace trit::cli {
namespace {

// The running trainer, for the signal handler: Trainer::cancel() is one lock-free atomic store.
std::atomic<Trainer*> g_trainer{nullptr};
std::atomic<bool> g_stop_signal{false};  // for data-parallel ranks waiting on the others
extern "C" void on_stop_signal(int) {
  g_stop_signal.store(true);
  if (Trainer* t = g_trainer.load()) t->cancel();
}

// Under mpirun: "vulkan:auto" spreads the ranks of a host over its GPUs, and a CPU rank takes
// its share of the cores.
void place_rank(ModelOptions& mo) {
  if (mo.device == "vulkan:auto") {
    int gpus = 0;
    for (const DeviceInfo& d : list_devices()) gpus += d.name.rfind("vulkan:", 0) == 0 ? 1 : 0;
    if (gpus == 0) fail("--device vulkan:auto: no Vulkan device");
    mo.device = "vulkan:" + std::to_string(MpiRanks::local_rank() % gpus);
  }
  if (mo.threads <= 0) {
    const int hw = int(std::max(1u, std::thread::hardware_concurrency()));
    mo.threads = std::max(1, hw / std::max(1, MpiRanks::local_size()));
  }
}

}  // namespace

void add_finetune_command(CLI::App& app) {
  struct Args {
    std::string model, device;
    int threads = 0;
    int64_t max_buffer_mb = 0;
    int64_t mem_budget_mb = 0;
    bool act_quant = true;
    std::string activation;
    TrainOptions train;
    DelegateOptions delegate;
  };
  auto a = std::make_shared<Args>();
  TrainOptions& o = a->train;
  CLI::App* cmd = app.add_subcommand("finetune", "Fine-tune a LoRA adapter on your data");
  cmd->add_option("-m,--model", a->model,
                  "Base model (GGUF); with --delegate, the provider's (and -m the local one for "
                  "--fallback-local)");
  cmd->add_option("--data", o.data, "Folder with train/valid/test.jsonl, or a .jsonl/.txt file")
      ->required();
  cmd->add_option("-o,--output", o.output, "Adapter to write (GGUF)")->required();
  cmd->add_option("--targets", o.targets, "all, or a list of q,k,v,o,gate,up,down,head");
  cmd->add_option("--rank", o.rank, "LoRA rank");
  cmd->add_option("--alpha", o.alpha, "LoRA alpha (scaling alpha / rank)");
  cmd->add_flag("--rslora", o.rslora, "Scale by alpha / sqrt(rank)");
  cmd->add_option("--lora-dropout", o.dropout, "Dropout on the LoRA branch input");
  cmd->add_option("--lora", o.init_adapter, "Adapter to train further");
  cmd->add_option("--lr", o.lr, "Peak learning rate");
  cmd->add_option("--schedule", o.schedule, "constant | linear | cosine")
      ->check(CLI::IsMember({"constant", "linear", "cosine"}));
  cmd->add_option("--warmup", o.warmup, "Warmup steps");
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW weight decay");
  cmd->add_option("--grad-clip", o.grad_clip, "Clip gradients to this global norm (0: off)");
  cmd->add_option("--epochs", o.epochs, "Passes over the training data");
  cmd->add_option("--steps", o.steps, "Optimizer steps (overrides --epochs)");
  cmd->add_option("-c,--ctx", o.ctx, "Context: longer examples are truncated");
  cmd->add_option("--batch", o.batch, "Sequences per step");
  cmd->add_option("--grad-accum", o.grad_accum, "Micro-batches per optimizer step");
  cmd->add_option("--pack-tokens", o.pack_tokens,
                  "Compute a micro-batch's sequences together, up to N tokens a pass (0: one "
                  "sequence a pass; default: a GPU packs up to 4096, the CPU up to the context)");
  cmd->add_flag("--mask-prompt", o.mask_prompt, "Loss on completions / assistant turns only");
  cmd->add_option("--chat-template", o.chat_template, "bitnet, chatml or llama3");
  cmd->add_flag("!--no-grad-checkpointing", o.grad_checkpointing,
                "Keep every block's activations instead of recomputing them");
  cmd->add_option("--val-every", o.val_every, "Validate every N steps (0: start and end)");
  cmd->add_option("--val-examples", o.val_examples, "Validation examples used (0: all)");
  cmd->add_option("--save-every", o.save_every, "Checkpoint every N steps");
  cmd->add_option("--max-bad-steps", o.max_bad_steps,
                  "Stop after N steps in a row with a non-finite loss or gradient (each is "
                  "skipped), with a checkpoint of the last good state (0: never)")
      ->capture_default_str();
  cmd->add_option("--checkpoint-dir", o.checkpoint_dir,
                  "Checkpoints (default <output>.checkpoints)");
  cmd->add_option("--resume", o.resume, "Continue from a checkpoint folder, or 'latest'")
      ->expected(0, 1)
      ->default_str("latest");
  cmd->add_option("-s,--seed", o.seed, "Random seed");
  cmd->add_option("-t,--threads", a->threads, "Threads (default: all cores)");
  cmd->add_option_function<std::string>(
         "--act-quant", [a](const std::string& v) { a->act_quant = v != "none"; },
         "Activation quantisation: int8 (W1.58A8, default) or none (float)")
      ->check(CLI::IsMember({"int8", "none"}));
  add_device_options(cmd, a->device, a->max_buffer_mb);
  add_mem_budget_option(cmd, a->mem_budget_mb);
  add_activation_option(cmd, a->activation);
  add_delegate_options(cmd, a->delegate);
  cmd->callback([a, cmd] {
    if (cmd->count("--resume") && a->train.resume.empty()) a->train.resume = "latest";
    const DelegateOptions& d = a->delegate;
    if (a->model.empty() && (d.key.empty() || d.fallback_local)) {
      fail(d.key.empty() ? "--model is required (or --delegate KEY)"
                         : "--fallback-local needs -m, the model to fine-tune here");
    }
    if (!d.key.empty()) {
      std::string resume_from;
      if (finetune_delegated(d, a->train, resume_from)) return;
      // The provider went away: this device goes on from the last checkpoint it sent back.
      a->train.resume = resume_from;
    }
    // `mpirun -np N trit finetune ...`: this process is one rank of a data-parallel run.
    std::unique_ptr<MpiRanks> ranks = MpiRanks::from_launcher(&g_stop_signal);
    if (ranks && !d.key.empty()) fail("--delegate does not run under mpirun");
    ModelOptions mo;
    mo.device = a->device;
    mo.threads = a->threads;
    mo.max_buffer_mb = a->max_buffer_mb;
    mo.mem_budget_mb = a->mem_budget_mb;
    mo.act_quant = a->act_quant;
    mo.activation = a->activation;
    mo.on_warning = [](const std::string& w) { std::fprintf(stderr, "warning: %s\n", w.c_str()); };
    if (ranks) place_rank(mo);
    if (mo.device == "vulkan:auto") mo.device = "vulkan:0";
    auto train = [&](const ModelOptions& opts, const TrainOptions& t) {
      Model model = Model::open(a->model, opts);
      Trainer trainer(model, t);
      trainer.set_data_parallel(ranks.get());
      trainer.on_progress(
          [](const TrainProgress& p) { std::fprintf(stderr, "%s\n", p.line.c_str()); });
      g_trainer.store(&trainer);
      std::signal(SIGINT, on_stop_signal);
      std::signal(SIGTERM, on_stop_signal);
      struct Restore {  // the default handlers again, however run() ends
        ~Restore() {
          std::signal(SIGINT, SIG_DFL);
          std::signal(SIGTERM, SIG_DFL);
          g_trainer.store(nullptr);
        }
      } restore;
      return trainer.run();
    };
    TrainResult r;
    try {
      r = train(mo, a->train);
    } catch (const DeviceLost& e) {
      // A GPU lost mid-run (a driver reset, a hang): open it again, or the CPU when it does not
      // come back, and go on from the newest checkpoint (from the start when there is none).
      std::fprintf(stderr, "trit: %s\ntrit: opening the device again to go on\n", e.what());
      try {
        (void)Model::open(a->model, mo);
      } catch (const Error& again) {
        std::fprintf(stderr, "trit: it does not open (%s); going on on the CPU\n", again.what());
        mo.device = "cpu";
      }
      TrainOptions t = a->train;
      if (has_checkpoint(checkpoint_dir_of(t))) t.resume = "latest";
      r = train(mo, t);
    }
    if (ranks) ranks->done();
    if (ranks && ranks->rank() != 0) return;  // rank 0 wrote the files and says so
    std::fprintf(stderr, "adapter: %s\nmetrics: %s\nloss plot: %s\n", r.adapter_path.c_str(),
                 r.metrics_path.c_str(), r.plot_path.c_str());
    if (r.stopped) {
      std::fprintf(stderr, "stopped early; checkpoint: %s\n", r.last_checkpoint.c_str());
    }
  });
}

}  // namespace trit::cli
