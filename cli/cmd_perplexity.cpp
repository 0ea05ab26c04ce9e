// trit perplexity: perplexity of the model over a text file.
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_perplexity_command(CLI::App& app) {
  struct Args {
    RunOptions run;
    std::string file;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("perplexity", "Perplexity over a text file");
  add_run_options(cmd, args->run);
  cmd->add_option("-f,--file", args->file, "Text file")->required();
  cmd->callback([args] {
    LoadedModel lm = load_model(args->run);
    if (!lm.model.info().has_tokenizer) {
      fail(lm.model.info().path + ": the model has no tokenizer; perplexity needs one");
    }
    std::ifstream in(args->file, std::ios::binary);
    if (!in) fail(args->file + ": cannot open");
    std::stringstream ss;
    ss << in.rdbuf();
    const int64_t n_ctx = args->run.ctx > 0 ? args->run.ctx : 512;
    const double t0 = now_seconds();
    const PerplexityResult r = perplexity(
        lm.model, ss.str(), n_ctx,
        [](int64_t c, int64_t n, double ppl) {
          std::fprintf(stderr, "\rtrit: chunk %lld/%lld, perplexity %.4f",
                       static_cast<long long>(c), static_cast<long long>(n), ppl);
        },
        lm.adapters);
    std::fprintf(stderr, "\n");
    std::printf("perplexity %.4f over %lld tokens (%lld chunks of %lld), %.1f tokens/s\n",
                r.perplexity, static_cast<long long>(r.n_scored),
                static_cast<long long>(r.n_chunks), static_cast<long long>(n_ctx),
                double(r.n_chunks * n_ctx) / (now_seconds() - t0));
  });
}

}  // namespace trit::cli
