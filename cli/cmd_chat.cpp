// trit chat: an interactive conversation using the model's chat template.
#include <unistd.h>

#include <iostream>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "infer/generate.h"
#include "io/gguf.h"
#include "data/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace trit::cli {

void add_chat_command(CLI::App& app) {
  struct Args {
    RunOptions run;
    GenerateOptions gen;
    std::string system, chat_template;
  };
  auto args = std::make_shared<Args>();
  args->gen.n_predict = 512;
  CLI::App* cmd = app.add_subcommand(
      "chat", "Chat with the model (type a message, empty line or /exit to quit, /reset)");
  add_run_options(cmd, args->run);
  add_sampler_options(cmd, args->gen.sampler);
  cmd->add_option("-n,--n-predict", args->gen.n_predict, "Most tokens per reply");
  cmd->add_option("--system", args->system, "System message");
  cmd->add_option("--chat-template", args->chat_template,
                  "Built-in template instead of the model's: bitnet, chatml, llama3");
  cmd->callback([args] {
    auto model = load_model(args->run);
    const Tokenizer* tok = model->tokenizer();
    if (!tok) fail(model->path(), ": the model has no tokenizer, so it cannot chat");
    const ChatTemplate tmpl = args->chat_template.empty()
                                  ? ChatTemplate::for_model(model->file())
                                  : ChatTemplate::builtin(args->chat_template);
    const int64_t n_ctx =
        args->run.ctx > 0 ? args->run.ctx : std::min<int64_t>(model->hparams().n_ctx_train, 4096);
    Session session(*model, n_ctx, *model.backend, model.fwd());
    std::vector<ChatMessage> messages;
    if (!args->system.empty()) messages.push_back({"system", args->system});
    std::string rendered;  // the conversation as already fed to the session
    const bool interactive = isatty(0);
    std::fprintf(stderr, "trit: chat template %s; /exit or an empty line quits, /reset forgets\n",
                 tmpl.name().c_str());
    std::string line;
    while (true) {
      if (interactive) std::fprintf(stderr, "> ");
      if (!std::getline(std::cin, line) || line.empty() || line == "/exit") break;
      if (line == "/reset") {
        messages.resize(args->system.empty() ? 0 : 1);
        rendered.clear();
        session.truncate(0);
        continue;
      }
      messages.push_back({"user", line});
      const std::string full = tmpl.render(messages, true);
      // Feed only what the session has not seen yet.
      const std::string delta = full.substr(rendered.size());
      std::vector<int32_t> tokens =
          tok->encode(delta, session.n_past() == 0 && tok->add_bos_default(), true);
      if (session.n_past() + int64_t(tokens.size()) + 1 >= session.n_ctx()) {
        fail("chat: the conversation no longer fits the context of ", session.n_ctx(),
             " tokens (raise -c or /reset)");
      }
      std::string reply;
      Utf8Printer out;
      generate(session, tokens, args->gen, tok, [&](int32_t id) {
        const std::string piece = tok->token_to_piece(id);
        reply += piece;
        out.put(piece);
        return true;
      });
      out.flush();
      std::printf("\n");
      messages.push_back({"assistant", reply});
      // The session has seen the prompt and the reply, but not the end-of-turn marker: the
      // next turn's rendering starts with it, and only that difference is fed.
      rendered = full + reply;
    }
  });
}

}  // namespace trit::cli
