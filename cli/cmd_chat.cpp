// trit chat: an interactive conversation using the model's chat template. Each turn reuses the
// session's cache for the conversation so far. With --delegate, the provider's trit serve
// answers (its model's template); with --fallback-local, this device takes over the
// conversation when the provider cannot be reached or drops.
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/peer_program.h"

namespace trit::cli {
namespace {

// The conversation as a chat completion request.
std::string chat_body(const std::vector<ChatMessage>& messages, const GenerateOptions& g,
                      const std::string& model) {
  nlohmann::json msgs = nlohmann::json::array();
  for (const ChatMessage& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  nlohmann::json body = sampling_fields(g.sampling);
  body["messages"] = msgs;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  if (g.max_tokens >= 0) body["max_tokens"] = g.max_tokens;
  if (!model.empty()) body["model"] = model;
  return body.dump();
}

}  // namespace

void add_chat_command(CLI::App& app) {
  struct Args {
    RunOptions run;
    GenerateOptions gen;
    std::string system, chat_template;
    DelegateOptions delegate;
  };
  auto args = std::make_shared<Args>();
  args->gen.max_tokens = 512;
  CLI::App* cmd = app.add_subcommand(
      "chat", "Chat with the model (type a message, empty line or /exit to quit, /reset)");
  add_run_options(cmd, args->run, true, false);
  add_sampler_options(cmd, args->gen.sampling);
  add_delegate_options(cmd, args->delegate);
  cmd->add_option("-n,--n-predict", args->gen.max_tokens, "Most tokens per reply");
  cmd->add_option("--system", args->system, "System message");
  cmd->add_option("--chat-template", args->chat_template,
                  "Built-in template instead of the model's: bitnet, chatml, llama3");
  cmd->callback([args] {
    const DelegateOptions& d = args->delegate;
    if (args->run.model.empty() && (d.key.empty() || d.fallback_local)) {
      fail(d.key.empty() ? "--model is required (or --delegate KEY)"
                         : "--fallback-local needs -m, the model to run here");
    }
    // This device's model and session, made when first needed (at once without --delegate).
    struct Local {
      LoadedModel lm;
      std::unique_ptr<Session> session;
    };
    std::optional<Local> local;
    auto open_local = [&] {
      local.emplace(Local{load_model(args->run), nullptr});
      Model& model = local->lm.model;
      const ModelInfo& info = model.info();
      if (!info.has_tokenizer) fail(info.path + ": the model has no tokenizer, so it cannot chat");
      (void)model.render_chat({}, false, args->chat_template);  // the template, checked early
      const int64_t n_ctx =
          args->run.ctx > 0 ? args->run.ctx : std::min<int64_t>(info.n_ctx_train, 4096);
      local->session = std::make_unique<Session>(model, SessionOptions{n_ctx, 64});
      return args->chat_template.empty() ? info.chat_template : args->chat_template;
    };
    std::unique_ptr<PeerTunnel> tunnel;
    std::string tmpl = "the provider's";
    if (d.key.empty()) {
      tmpl = open_local();
    } else {
      tunnel = std::make_unique<PeerTunnel>(d);
    }
    std::vector<ChatMessage> messages;
    if (!args->system.empty()) messages.push_back({"system", args->system});
    GenerateOptions gen = args->gen;
    gen.on_text = [](std::string_view piece) {
      print_piece(piece);
      return true;
    };
    // The reply of this device's model to the conversation so far.
    auto local_reply = [&]() -> std::string {
      Model& model = local->lm.model;
      Session& session = *local->session;
      const std::string rendered = model.render_chat(messages, true, args->chat_template);
      const int64_t need = int64_t(model.tokenize(rendered).size()) + 1;
      if (need >= session.n_ctx()) {
        fail("chat: the conversation no longer fits the context of " +
             std::to_string(session.n_ctx()) + " tokens (raise -c or /reset)");
      }
      GenerateOptions g = gen;
      g.adapters = local->lm.adapters;
      return session.chat(messages, g, args->chat_template).text;
    };
    // The provider's reply; nullopt when this device should take over.
    auto delegated_reply = [&]() -> std::optional<std::string> {
      std::string text;
      auto on_text = [&](std::string_view piece) {
        text += piece;
        print_piece(piece);
      };
      // -m NAME picks the provider's model; with --fallback-local, -m is this device's file.
      const std::string body = chat_body(
          messages, gen,
          d.fallback_local ? "" : std::filesystem::path(args->run.model).filename().string());
      DelegateResult r = delegate_stream(tunnel->port(), "/v1/chat/completions", body, on_text);
      if (!r.ok && r.status == 0 && text.empty()) {  // the DHT can time out a first attempt
        r = delegate_stream(tunnel->port(), "/v1/chat/completions", body, on_text);
      }
      if (r.ok) return text;
      if (r.status != 0 && r.status != 200) {
        fail("chat --delegate " + d.key + ": the provider refused the request: " + r.error);
      }
      if (!d.fallback_local) fail("chat --delegate " + d.key + ": " + r.error);
      if (!text.empty()) std::printf("\n");
      std::fprintf(stderr, "trit: the provider %s did not finish (%s); this device answers now\n",
                   d.key.c_str(), r.error.c_str());
      return std::nullopt;
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
        if (local) local->session->reset();
        continue;
      }
      messages.push_back({"user", line});
      std::optional<std::string> reply;
      if (tunnel) reply = delegated_reply();
      if (!reply) {
        if (tunnel) {
          tunnel.reset();  // the rest of the conversation stays here
          open_local();
        }
        reply = local_reply();
      }
      std::printf("\n");
      std::fflush(stdout);
      messages.push_back({"assistant", *reply});
    }
  });
}

}  // namespace trit::cli
