// trit merge: fold LoRA adapters into a model (float layers), or store them inside it.
#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_merge_command(CLI::App& app) {
  struct Args {
    std::string model, out;
    MergeOptions opt;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("merge", "Fold LoRA adapters into a model");
  cmd->add_option("-m,--model", args->model, "Base model (GGUF)")->required();
  cmd->add_option("--lora", args->opt.adapters,
                  "LoRA adapter (GGUF), optionally with a scale: A.gguf:0.5")
      ->take_all()
      ->required();
  cmd->add_option("-o,--output", args->out, "Model to write (GGUF)")->required();
  cmd->add_option("--mode", args->opt.mode,
                  "float: adapted layers become f16/f32 weights W + s B A (default); attach: "
                  "the ternary base unchanged, the adapters stored in the file")
      ->check(CLI::IsMember({"float", "attach"}));
  cmd->add_option("--type", args->opt.type, "Type of the merged layers in float mode: f16 or f32")
      ->check(CLI::IsMember({"f16", "f32"}));
  cmd->add_option("-t,--threads", args->opt.threads, "Threads (default: all cores)");
  cmd->callback(
      [args] { std::printf("%s\n", merge(args->model, args->out, args->opt).summary.c_str()); });
}

}  // namespace trit::cli
