// trit export-peft: an adapter GGUF to a PEFT adapter folder (adapter_config.json +
// adapter_model.safetensors) that Hugging Face peft loads with PeftModel.from_pretrained.
#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_export_peft_command(CLI::App& app) {
  struct Args {
    std::string src, out, base;
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
  cmd->add_option("--base", args->base,
                  "The base model (GGUF); needed for adapters of llama models");
  cmd->callback([args] {
    std::fprintf(stderr, "trit: %s\n",
                 export_peft(args->src, args->out, args->base).summary.c_str());
  });
}

}  // namespace trit::cli
