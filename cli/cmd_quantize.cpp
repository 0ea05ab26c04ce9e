// trit quantize: re-pack the ternary weights of a model as tq1_0, tq2_0 or i2_s.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "tools/info.h"
#include "tools/requantize.h"

namespace trit::cli {

using namespace trit::engine;  // until the CLI moves onto the public API

void add_quantize_command(CLI::App& app) {
  struct Args {
    std::string in, out, type;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("quantize", "Re-pack ternary weights (tq1_0, tq2_0, i2_s)");
  cmd->add_option("input", args->in, "Input GGUF model")->required();
  cmd->add_option("output", args->out, "Output GGUF model")->required();
  cmd->add_option("type", args->type, "Target type: tq1_0, tq2_0 or i2_s")->required();
  cmd->callback([args] {
    auto type = dtype_from_name(args->type);
    if (!type || !dtype_traits(*type).ternary) {
      fail("quantize: type is '", args->type, "', expected tq1_0, tq2_0 or i2_s");
    }
    const RequantizeResult r = requantize_model(args->in, args->out, *type);
    std::printf("wrote %s: %s, %lld tensors re-packed as %s, %lld copied, in %.2f s\n",
                args->out.c_str(), format_bytes(r.file_bytes).c_str(),
                static_cast<long long>(r.n_converted), std::string(dtype_name(*type)).c_str(),
                static_cast<long long>(r.n_copied), r.seconds);
  });
}

}  // namespace trit::cli
