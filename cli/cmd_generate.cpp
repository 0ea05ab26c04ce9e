// trit generate: streamed text generation, then speed figures.
#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "infer/generate.h"
#include "tokenizer/tokenizer.h"

namespace trit::cli {

void add_generate_command(CLI::App& app) {
  struct Args {
    RunOptions run;
    GenerateOptions gen;
    std::string prompt, ids;
    bool no_special = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt");
  add_run_options(cmd, args->run);
  add_sampler_options(cmd, args->gen.sampler);
  cmd->add_option("-p,--prompt", args->prompt, "Prompt text");
  cmd->add_option("--ids", args->ids, "Prompt as comma-separated token ids");
  cmd->add_option("-n,--n-predict", args->gen.n_predict, "Tokens to generate (-1: until the end)");
  cmd->add_flag(
      "--ignore-eos", [args](int64_t) { args->gen.stop_at_end = false; },
      "Keep generating past end-of-generation tokens");
  cmd->add_flag("--no-special", args->no_special, "Treat special-token text in the prompt as text");
  cmd->callback([args] {
    auto model = load_model(args->run);
    const Tokenizer* tok = model->tokenizer();
    if (args->prompt.empty() && args->ids.empty()) {
      if (!tok || tok->bos() < 0) fail("generate: give a prompt with -p or --ids");
      args->ids = std::to_string(tok->bos());
    }
    const std::vector<int32_t> prompt =
        prompt_tokens(*model, args->prompt, args->ids, !args->no_special);
    int64_t n_ctx = args->run.ctx;
    if (n_ctx <= 0) {
      const int64_t want =
          int64_t(prompt.size()) +
          (args->gen.n_predict < 0 ? model->hparams().n_ctx_train : args->gen.n_predict);
      n_ctx = std::min(want, model->hparams().n_ctx_train);
      n_ctx = std::max<int64_t>(n_ctx, int64_t(prompt.size()) + 1);
    }
    Session session(*model, n_ctx, *model.backend, model.fwd());
    Utf8Printer out;
    if (tok) out.put(args->prompt.empty() ? tok->decode(prompt) : args->prompt);
    const GenerateStats st = generate(session, prompt, args->gen, tok, [&](int32_t id) {
      out.put(tok ? tok->token_to_piece(id) : std::to_string(id) + " ");
      return true;
    });
    out.flush();
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr,
                 "trit: prompt %lld tokens in %.2f s (%.1f tokens/s), generated %lld tokens in "
                 "%.2f s (%.1f tokens/s)\n",
                 static_cast<long long>(st.n_prompt), st.prompt_seconds,
                 st.n_prompt / std::max(st.prompt_seconds, 1e-9),
                 static_cast<long long>(st.n_generated), st.generate_seconds,
                 st.n_generated / std::max(st.generate_seconds, 1e-9));
  });
}

}  // namespace trit::cli
