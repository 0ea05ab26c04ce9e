// trit logits: raw float32 logits (n_tokens x n_vocab, row-major) for given tokens.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {
namespace {

// Writes bytes to "<path>.tmp" and renames it over path, so a failure leaves no partial file.
void write_file_atomic(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(data), std::streamsize(size));
    out.flush();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      fail(path + ": cannot write");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    fail(path + ": cannot write: " + ec.message());
  }
}

}  // namespace

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
    LoadedModel lm = load_model(args->run);
    const std::vector<int32_t> tokens = prompt_tokens(lm.model, args->prompt, args->ids, true);
    const std::vector<float> logits = lm.model.logits(tokens, lm.adapters);
    write_file_atomic(args->out, logits.data(), logits.size() * sizeof(float));
    std::fprintf(stderr, "trit: wrote %zu x %lld logits to %s\n", tokens.size(),
                 static_cast<long long>(lm.model.info().n_vocab), args->out.c_str());
  });
}

}  // namespace trit::cli
