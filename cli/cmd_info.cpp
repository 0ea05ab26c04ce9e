// trit info: metadata, hyperparameters, tokenizer, tensors and memory needed of a GGUF file.
#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_info_command(CLI::App& app) {
  struct Args {
    std::string path;
    bool tensors = false, json = false;
    int64_t ctx = 0;
    MemoryQuery memory;
    bool no_checkpointing = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("info", "Show a model's metadata, tensors and memory needed");
  cmd->add_option("model", args->path, "GGUF file")->required();
  cmd->add_flag("--tensors", args->tensors, "List every tensor");
  cmd->add_flag("--json", args->json, "Print a JSON object");
  cmd->add_option("-c,--ctx", args->ctx,
                  "Context of the memory estimates (default: the trained context, at most 4096, "
                  "to run; 512 to fine-tune)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--cache-type", args->memory.cache_type, "KV cache elements: f32 or f16")
      ->check(CLI::IsMember({"f32", "f16"}));
  cmd->add_option("--rank", args->memory.rank, "LoRA rank of the fine-tune estimate")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--targets", args->memory.targets, "LoRA targets of the fine-tune estimate");
  cmd->add_option("--batch", args->memory.batch, "Sequences per step of the fine-tune estimate")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--no-grad-checkpointing", args->no_checkpointing,
                "Fine-tune estimate without gradient checkpointing");
  cmd->callback([args] {
    MemoryQuery q = args->memory;
    if (args->ctx > 0) q.ctx = q.train_ctx = args->ctx;
    q.grad_checkpointing = !args->no_checkpointing;
    const std::string text = describe_file(args->path, args->tensors, args->json, q);
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
}

}  // namespace trit::cli
