// trit generate: streamed text generation, then speed figures; with --delegate, on a peer's
// trit serve (`trit peer provide`), falling back to this device with --fallback-local.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/peer_program.h"

namespace trit::cli {
namespace {

// The completion request of the generate options (the provider's own chat template and
// tokenizer apply there).
nlohmann::json completion_body(const std::string& model, const std::string& prompt,
                               const std::vector<int32_t>& ids, const GenerateOptions& g) {
  nlohmann::json body = sampling_fields(g.sampling);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  body["ignore_eos"] = g.ignore_eos;
  if (!ids.empty()) {
    body["prompt"] = ids;
  } else {
    body["prompt"] = prompt;
  }
  if (g.max_tokens >= 0) body["max_tokens"] = g.max_tokens;
  if (!g.stop.empty()) body["stop"] = g.stop;
  if (!model.empty()) body["model"] = model;
  return body;
}

// Generation on the provider; true when it finished there. False (after saying why on stderr)
// when --fallback-local should take over; a refused request fails.
bool generate_delegated(const DelegateOptions& d, const std::string& model,
                        const std::string& prompt, const std::string& ids,
                        const GenerateOptions& gen) {
  PeerTunnel tunnel(d);
  const std::vector<int32_t> id_list =
      ids.empty() ? std::vector<int32_t>{} : parse_ids(ids, "--ids");
  // With -m and --fallback-local, -m names the local file; the provider serves its own model.
  const std::string name =
      d.fallback_local ? std::string() : std::filesystem::path(model).filename().string();
  bool printed = false;  // the prompt goes out with the first piece: a fallback prints it once
  auto on_text = [&](std::string_view piece) {
    if (!printed && !prompt.empty()) print_piece(prompt);
    printed = true;
    print_piece(piece);
  };
  const std::string body = completion_body(name, prompt, id_list, gen).dump();
  DelegateResult r = delegate_stream(tunnel.port(), "/v1/completions", body, on_text);
  // A connection that failed before any answer is tried once more: the DHT can time out a
  // first attempt.
  if (!r.ok && r.status == 0 && !printed) {
    r = delegate_stream(tunnel.port(), "/v1/completions", body, on_text);
  }
  if (r.ok) {
    if (!printed && !prompt.empty()) print_piece(prompt);
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr, "trit: delegated to %s: generated %lld tokens in %.2f s\n", d.key.c_str(),
                 static_cast<long long>(r.n_generated), r.seconds);
    return true;
  }
  if (r.status != 0 && r.status != 200) {
    fail("generate --delegate " + d.key + ": the provider refused the request: " + r.error);
  }
  if (!d.fallback_local) {
    fail("generate --delegate " + d.key + ": " + r.error +
         " (is `trit peer provide` running there, with this device's key allowed? "
         "--fallback-local runs here instead)");
  }
  if (printed) std::printf("\n");  // what came is left as it was; the text restarts below
  std::fflush(stdout);
  std::fprintf(stderr, "trit: the provider %s did not finish (%s); generating here\n",
               d.key.c_str(), r.error.c_str());
  return false;
}

}  // namespace

void add_generate_command(CLI::App& app) {
  struct Args {
    RunOptions run;
    GenerateOptions gen;
    std::string prompt, ids;
    std::vector<std::string> stop;
    bool no_special = false;
    DelegateOptions delegate;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt");
  add_run_options(cmd, args->run, true, false);
  add_sampler_options(cmd, args->gen.sampling);
  cmd->add_option("-p,--prompt", args->prompt, "Prompt text");
  cmd->add_option("--ids", args->ids, "Prompt as comma-separated token ids");
  cmd->add_option("-n,--n-predict", args->gen.max_tokens, "Tokens to generate (-1: until the end)");
  cmd->add_option("--stop", args->stop, "Stop before this text (repeatable)")->take_all();
  cmd->add_flag("--ignore-eos", args->gen.ignore_eos,
                "Keep generating past end-of-generation tokens");
  cmd->add_flag("--no-special", args->no_special, "Treat special-token text in the prompt as text");
  add_delegate_options(cmd, args->delegate);
  cmd->callback([args] {
    const DelegateOptions& d = args->delegate;
    if (args->run.model.empty() && (d.key.empty() || d.fallback_local)) {
      fail(d.key.empty() ? "--model is required (or --delegate KEY)"
                         : "--fallback-local needs -m, the model to run here");
    }
    if (!d.key.empty()) {
      GenerateOptions gen = args->gen;
      gen.stop = args->stop;
      if (generate_delegated(d, args->run.model, args->prompt, args->ids, gen)) return;
    }
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
