// trit info: metadata, hyperparameters, tokenizer, tensors and memory needed of a GGUF file.
#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_info_command(CLI::App& app) {
  struct Args {
    std::string path;
    bool tensors = false, json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("info", "Show a model's metadata, tensors and memory needed");
  cmd->add_option("model", args->path, "GGUF file")->required();
  cmd->add_flag("--tensors", args->tensors, "List every tensor");
  cmd->add_flag("--json", args->json, "Print a JSON object");
  cmd->callback([args] {
    const std::string text = describe_file(args->path, args->tensors, args->json);
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
}

}  // namespace trit::cli
