// trit generate: streamed text generation, then speed figures.
#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_generate_command(CLI::App& app) {
  struct Args {
    RunOptions run;
    GenerateOptions gen;
    std::string prompt, ids;
    std::vector<std::string> stop;
    bool no_special = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt");
  add_run_options(cmd, args->run);
  add_sampler_options(cmd, args->gen.sampling);
  cmd->add_option("-p,--prompt", args->prompt, "Prompt text");
  cmd->add_option("--ids", args->ids, "Prompt as comma-separated token ids");
  cmd->add_option("-n,--n-predict", args->gen.max_tokens, "Tokens to generate (-1: until the end)");
  cmd->add_option("--stop", args->stop, "Stop before this text (repeatable)")->take_all();
  cmd->add_flag("--ignore-eos", args->gen.ignore_eos,
                "Keep generating past end-of-generation tokens");
  cmd->add_flag("--no-special", args->no_special, "Treat special-token text in the prompt as text");
  cmd->callback([args] {
    LoadedModel lm = load_model(args->run);
    Model& model = lm.model;
    const ModelInfo& info = model.info();
    if (args->prompt.empty() && args->ids.empty()) {
      if (!info.has_tokenizer || model.bos() < 0) fail("generate: give a prompt with -p or --ids");
      args->ids = std::to_string(model.bos());
    }
    const std::vector<int32_t> prompt =
        prompt_tokens(model, args->prompt, args->ids, !args->no_special);
    int64_t n_ctx = args->run.ctx;
    if (n_ctx <= 0) {
      const int64_t want = int64_t(prompt.size()) +
                           (args->gen.max_tokens < 0 ? info.n_ctx_train : args->gen.max_tokens);
      n_ctx = std::min(want, info.n_ctx_train);
      n_ctx = std::max<int64_t>(n_ctx, int64_t(prompt.size()) + 1);
    }
    Session session(model, {n_ctx, 64});
    GenerateOptions gen = args->gen;
    gen.stop = args->stop;
    gen.adapters = lm.adapters;
    if (info.has_tokenizer) {
      print_piece(args->prompt.empty() ? model.detokenize(prompt) : args->prompt);
      gen.on_text = [](std::string_view piece) {
        print_piece(piece);
        return true;
      };
    }
    const GenerateResult r = session.generate(prompt, gen);
    if (!info.has_tokenizer) {  // token ids, as they have no text
      for (int32_t id : r.tokens) std::printf("%d ", id);
    }
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr,
                 "trit: prompt %lld tokens in %.2f s (%.1f tokens/s), generated %lld tokens in "
                 "%.2f s (%.1f tokens/s)\n",
                 static_cast<long long>(r.n_prompt), r.prompt_seconds,
                 r.n_prompt / std::max(r.prompt_seconds, 1e-9),
                 static_cast<long long>(r.n_generated), r.generate_seconds,
                 r.n_generated / std::max(r.generate_seconds, 1e-9));
  });
}

}  // namespace trit::cli
