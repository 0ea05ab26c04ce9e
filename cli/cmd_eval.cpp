// trit eval: loss, perplexity and exact-match accuracy of a model on a data file.
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_eval_command(CLI::App& app) {
  struct Args {
    RunOptions run;
    std::string data, chat_template;
    int64_t max_new = 0;
    bool mask_prompt = false, no_exact = false, json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Loss, perplexity and exact-match accuracy on a .jsonl or .txt data file");
  add_run_options(cmd, args->run);
  cmd->add_option("--data", args->data, "Data file: .jsonl rows as for finetune, or .txt")
      ->required();
  cmd->add_option("--max-new", args->max_new,
                  "Exact match: tokens to generate at most (default: the completion's + 8)");
  cmd->add_flag("--mask-prompt", args->mask_prompt,
                "Loss on completions / assistant turns only, as in training");
  cmd->add_option("--chat-template", args->chat_template, "bitnet, chatml or llama3");
  cmd->add_flag("--no-exact-match", args->no_exact, "Skip greedy generation for exact match");
  cmd->add_flag("--json", args->json, "Print the results as one JSON object");
  cmd->callback([args] {
    LoadedModel lm = load_model(args->run);
    EvalOptions opt;
    opt.ctx = args->run.ctx > 0 ? args->run.ctx : 512;  // finetune's default
    opt.mask_prompt = args->mask_prompt;
    opt.chat_template = args->chat_template;
    opt.max_new = args->max_new;
    opt.exact_match = !args->no_exact;
    opt.adapters = lm.adapters;
    opt.on_warning = [](const std::string& w) {
      std::fprintf(stderr, "trit: warning: %s\n", w.c_str());
    };
    opt.on_progress = [](std::string_view phase, int64_t done, int64_t total) {
      std::fprintf(stderr, "\rtrit: %.*s %lld/%lld", int(phase.size()), phase.data(),
                   static_cast<long long>(done), static_cast<long long>(total));
      if (done == total) std::fprintf(stderr, "\n");
    };
    const double t0 = now_seconds();
    const EvalResult r = evaluate(lm.model, args->data, opt);
    const double seconds = now_seconds() - t0;
    if (args->json) {
      nlohmann::json j;
      j["data"] = r.data;
      j["kind"] = r.kind;
      j["rows"] = r.n_rows;
      j["examples"] = r.n_examples;
      j["target_tokens"] = r.n_targets;
      j["loss"] = r.loss;
      j["perplexity"] = r.perplexity;
      if (r.has_exact_match) {
        j["exact_match"] = r.exact_scored ? nlohmann::json(r.exact_accuracy) : nlohmann::json();
        j["exact_matched"] = r.exact_matched;
        j["exact_scored"] = r.exact_scored;
      }
      j["seconds"] = seconds;
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("data: %s (%s, %lld examples, %lld target tokens)\n", r.data.c_str(),
                r.kind.c_str(), static_cast<long long>(r.n_examples),
                static_cast<long long>(r.n_targets));
    std::printf("loss %.4f, perplexity %.6g\n", r.loss, r.perplexity);
    if (r.has_exact_match) {
      if (r.exact_scored) {
        std::printf("exact match %.4f (%lld of %lld completions, greedy)\n", r.exact_accuracy,
                    static_cast<long long>(r.exact_matched),
                    static_cast<long long>(r.exact_scored));
      } else {
        std::printf("exact match: no completion to score\n");
      }
    }
    std::printf("%.2f s\n", seconds);
  });
}

}  // namespace trit::cli
