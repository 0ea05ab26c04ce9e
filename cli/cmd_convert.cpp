// trit convert: a Hugging Face BitNet folder (config.json + safetensors) to GGUF, or a PEFT
// LoRA adapter folder (adapter_config.json + adapter_model.safetensors) to an adapter GGUF.
#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_convert_command(CLI::App& app) {
  struct Args {
    std::string src, out;
    ConvertOptions opt;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "convert",
      "Convert a Hugging Face BitNet model folder (config.json + safetensors) to GGUF, or a PEFT "
      "LoRA adapter folder (adapter_config.json + adapter_model.safetensors) to an adapter GGUF");
  cmd->add_option("SRC", args->src,
                  "Folder with config.json and *.safetensors, or a PEFT adapter folder")
      ->required();
  cmd->add_option("-o,--output", args->out, "Output GGUF file")->required();
  cmd->add_option("--type", args->opt.type,
                  "Type of the linear layers: tq1_0 | tq2_0 (default) | i2_s, or f16 (ternary "
                  "weights as floats, for interchange); for adapters f32 (default) or f16");
  cmd->add_option("--embd-type", args->opt.embd_type,
                  "Type of token_embd and output: f16 (default), bf16, f32, q8_0 or q6_K");
  cmd->add_option("--base", args->opt.base,
                  "Adapters only: the base model GGUF; checks the adapter's shapes against it "
                  "and takes its architecture (without it: \"bitnet\", unchecked)");
  cmd->callback([args] {
    ConvertOptions opt = args->opt;
    opt.on_warning = [](const std::string& msg) {
      std::fprintf(stderr, "trit: warning: %s\n", msg.c_str());
    };
    const ToolResult r = convert(args->src, args->out, opt);
    std::fprintf(stderr, "trit: %s\n", r.summary.c_str());
  });
}

}  // namespace trit::cli
