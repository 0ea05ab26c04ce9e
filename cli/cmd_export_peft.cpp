// trit export-peft: an adapter GGUF to a PEFT adapter folder (adapter_config.json +
// adapter_model.safetensors) that Hugging Face peft loads with PeftModel.from_pretrained.
#include <cstdio>

#include "cli/commands.h"
#include "io/adapter_gguf.h"
#include "io/peft.h"
#include "core/lora.h"

namespace trit::cli {

using namespace trit::engine;  // until the CLI moves onto the public API

void add_export_peft_command(CLI::App& app) {
  struct Args {
    std::string src, out;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "export-peft",
      "Write a LoRA adapter GGUF as a PEFT adapter folder (adapter_config.json + "
      "adapter_model.safetensors)");
  cmd->add_option("ADAPTER", args->src, "Adapter GGUF (general.type = adapter)")->required();
  cmd->add_option("-o,--output", args->out,
                  "Output folder (created; an existing one is replaced only when it holds "
                  "nothing but a previous export)")
      ->required();
  cmd->callback([args] {
    const LoraAdapter adapter = load_adapter_gguf(args->src);
    save_peft(adapter, args->out);
    std::fprintf(stderr, "trit: wrote %s: PEFT adapter, %s (base architecture %s)\n",
                 args->out.c_str(), lora_summary(adapter).c_str(), adapter.base_arch.c_str());
  });
}

}  // namespace trit::cli
