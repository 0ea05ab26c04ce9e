// trit merge: fold LoRA adapters into a model (float layers), or store them inside it.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "tools/merge.h"
#include "tools/info.h"

namespace trit::cli {

using namespace trit::engine;  // until the CLI moves onto the public API

void add_merge_command(CLI::App& app) {
  struct Args {
    std::string model, out, mode = "float", type = "f16";
    std::vector<std::string> lora;
    int threads = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("merge", "Fold LoRA adapters into a model");
  cmd->add_option("-m,--model", args->model, "Base model (GGUF)")->required();
  cmd->add_option("--lora", args->lora, "LoRA adapter (GGUF), optionally with a scale: A.gguf:0.5")
      ->take_all()
      ->required();
  cmd->add_option("-o,--output", args->out, "Model to write (GGUF)")->required();
  cmd->add_option("--mode", args->mode,
                  "float: adapted layers become f16/f32 weights W + s B A (default); attach: "
                  "the ternary base unchanged, the adapters stored in the file")
      ->check(CLI::IsMember({"float", "attach"}));
  cmd->add_option("--type", args->type, "Type of the merged layers in float mode: f16 or f32")
      ->check(CLI::IsMember({"f16", "f32"}));
  cmd->add_option("-t,--threads", args->threads, "Threads (default: all cores)");
  cmd->callback([args] {
    MergeOptions opt;
    opt.mode = args->mode == "attach" ? MergeMode::Attach : MergeMode::Float;
    opt.type = args->type == "f32" ? DType::F32 : DType::F16;
    opt.threads = args->threads;
    const MergeResult r = merge_adapter_files(args->model, args->lora, args->out, opt);
    if (opt.mode == MergeMode::Float) {
      std::printf("wrote %s: %s, %lld adapter(s) folded into %lld layers as %s", args->out.c_str(),
                  format_bytes(r.file_bytes).c_str(), static_cast<long long>(r.n_adapters),
                  static_cast<long long>(r.n_merged), args->type.c_str());
      if (r.n_ternarised) {
        std::printf(", %lld float master layers ternarised",
                    static_cast<long long>(r.n_ternarised));
      }
    } else {
      std::printf("wrote %s: %s, %lld adapter(s) stored as %lld layers", args->out.c_str(),
                  format_bytes(r.file_bytes).c_str(), static_cast<long long>(r.n_adapters),
                  static_cast<long long>(r.n_adapter_layers));
    }
    std::printf(", %lld tensors copied, in %.2f s\n", static_cast<long long>(r.n_copied),
                r.seconds);
  });
}

}  // namespace trit::cli
