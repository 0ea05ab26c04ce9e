// trit logits: raw float32 logits (n_tokens x n_vocab, row-major) for given tokens.
#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "infer/session.h"
#include "io/file_util.h"

namespace trit::cli {

void add_logits_command(CLI::App& app) {
  struct Args {
    RunOptions run;
    std::string ids, prompt, out;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("logits", "Write the logits of every position to a file");
  add_run_options(cmd, args->run, false);
  cmd->add_option("--ids", args->ids, "Comma-separated token ids");
  cmd->add_option("-p,--prompt", args->prompt, "Text to tokenise instead of --ids");
  cmd->add_option("-o,--output", args->out, "Output file (raw little-endian float32)")->required();
  cmd->callback([args] {
    if (args->ids.empty() && args->prompt.empty()) fail("logits: give --ids or -p");
    auto model = load_model(args->run);
    const std::vector<int32_t> tokens = prompt_tokens(*model, args->prompt, args->ids, true);
    Session session(*model, int64_t(tokens.size()), *model.backend, model.fwd());
    std::vector<float> logits;
    session.eval(tokens, logits, true);
    write_file_atomic(args->out, std::string_view(reinterpret_cast<const char*>(logits.data()),
                                                  logits.size() * sizeof(float)));
    std::fprintf(stderr, "trit: wrote %zu x %lld logits to %s\n", tokens.size(),
                 static_cast<long long>(model->hparams().n_vocab), args->out.c_str());
  });
}

}  // namespace trit::cli
