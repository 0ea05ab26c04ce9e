// trit chat: an interactive conversation using the model's chat template. Each turn reuses the
// session's cache for the conversation so far.
#include <unistd.h>

#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_chat_command(CLI::App& app) {
  struct Args {
    RunOptions run;
    GenerateOptions gen;
    std::string system, chat_template;
  };
  auto args = std::make_shared<Args>();
  args->gen.max_tokens = 512;
  CLI::App* cmd = app.add_subcommand(
      "chat", "Chat with the model (type a message, empty line or /exit to quit, /reset)");
  add_run_options(cmd, args->run);
  add_sampler_options(cmd, args->gen.sampling);
  cmd->add_option("-n,--n-predict", args->gen.max_tokens, "Most tokens per reply");
  cmd->add_option("--system", args->system, "System message");
  cmd->add_option("--chat-template", args->chat_template,
                  "Built-in template instead of the model's: bitnet, chatml, llama3");
  cmd->callback([args] {
    LoadedModel lm = load_model(args->run);
    Model& model = lm.model;
    const ModelInfo& info = model.info();
    if (!info.has_tokenizer) fail(info.path + ": the model has no tokenizer, so it cannot chat");
    // The template's name, checked before the first message.
    const std::string tmpl = args->chat_template.empty() ? info.chat_template : args->chat_template;
    (void)model.render_chat({}, false, args->chat_template);
    const int64_t n_ctx =
        args->run.ctx > 0 ? args->run.ctx : std::min<int64_t>(info.n_ctx_train, 4096);
    Session session(model, {n_ctx, 64});
    std::vector<ChatMessage> messages;
    if (!args->system.empty()) messages.push_back({"system", args->system});
    GenerateOptions gen = args->gen;
    gen.adapters = lm.adapters;
    gen.on_text = [](std::string_view piece) {
      print_piece(piece);
      return true;
    };
    const bool interactive = isatty(0);
    std::fprintf(stderr, "trit: chat template %s; /exit or an empty line quits, /reset forgets\n",
                 tmpl.c_str());
    std::string line;
    while (true) {
      if (interactive) std::fprintf(stderr, "> ");
      if (!std::getline(std::cin, line) || line.empty() || line == "/exit") break;
      if (line == "/reset") {
        messages.resize(args->system.empty() ? 0 : 1);
        session.reset();
        continue;
      }
      messages.push_back({"user", line});
      const std::string rendered = model.render_chat(messages, true, args->chat_template);
      const int64_t need = int64_t(model.tokenize(rendered).size()) + 1;
      if (need >= session.n_ctx()) {
        fail("chat: the conversation no longer fits the context of " +
             std::to_string(session.n_ctx()) + " tokens (raise -c or /reset)");
      }
      const GenerateResult r = session.chat(messages, gen, args->chat_template);
      std::printf("\n");
      messages.push_back({"assistant", r.text});
    }
  });
}

}  // namespace trit::cli
