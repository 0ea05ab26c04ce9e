// trit info: metadata, hyperparameters, tokenizer, tensors and memory needed of a GGUF file.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "io/gguf.h"
#include "tools/info.h"

namespace trit::cli {

using namespace trit::engine;  // until the CLI moves onto the public API

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
    std::error_code ec;
    if (!std::filesystem::exists(args->path, ec)) fail(args->path, ": no such file");
    if (std::filesystem::is_directory(args->path, ec))
      fail(args->path, ": is a folder, not a file");
    const std::unique_ptr<GgufFile> f = GgufFile::open(args->path);
    const ModelInfo info = read_model_info(*f);
    const std::string text = args->json ? model_info_json(info, args->tensors) + "\n"
                                        : format_model_info(info, args->tensors);
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
}

}  // namespace trit::cli
