// trit quantize: re-pack the ternary weights of a model as tq1_0, tq2_0 or i2_s.
#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_quantize_command(CLI::App& app) {
  struct Args {
    std::string in, out, type;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("quantize", "Re-pack ternary weights (tq1_0, tq2_0, i2_s)");
  cmd->add_option("input", args->in, "Input GGUF model")->required();
  cmd->add_option("output", args->out, "Output GGUF model")->required();
  cmd->add_option("type", args->type, "Target type: tq1_0, tq2_0 or i2_s")->required();
  cmd->callback(
      [args] { std::printf("%s\n", quantize(args->in, args->out, args->type).summary.c_str()); });
}

}  // namespace trit::cli
