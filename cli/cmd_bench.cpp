// trit bench: prompt-processing and generation throughput and peak memory.
#include <nlohmann/json.hpp>
#include <random>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "infer/session.h"
#include "backend/cpu/kernels.h"
#include "train/lora_init.h"
#include "train/optimizer.h"
#include "train/trainable_model.h"

namespace trit::cli {
namespace {

// Bytes of weights one decoded token reads: every linear layer, the head, one embedding row.
int64_t weight_bytes_per_token(const Model& m) {
  const HParams& hp = m.hparams();
  int64_t bytes = 0;
  for (const BlockWeights& b : m.weights().blocks) {
    for (const LinearWeight* w : {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down}) {
      bytes += row_bytes(w->m.type, w->m.n_in) * w->m.n_out;
    }
  }
  const FloatMatrix& head = m.weights().output;
  bytes += row_bytes(head.type, head.n_in) * head.n_out;
  bytes += row_bytes(m.weights().token_embd.type, hp.n_embd);
  return bytes;
}

struct BenchArgs {
  RunOptions run;
  int64_t n_prompt = 128, n_gen = 64;
  int reps = 3;
  bool json = false;
  bool train = false;
  int64_t train_ctx = 128, train_steps = 3, rank = 8;
  bool checkpointing = true;
};

// One training step per sequence of ctx random tokens: forward, backward and an AdamW update
// of a rank-r adapter on all seven linear layers; the first step is a warm-up.
void bench_training(const BenchArgs& a) {
  auto model = load_model(a.run);
  const HParams& hp = model->hparams();
  const int threads = thread_count(a.run);
  LoraAdapter adapter = lora_init(hp, "all", a.rank, 16.0f, false, 1);
  TrainPassOptions topt;
  topt.checkpointing = a.checkpointing;
  TrainableModel tm(*model, adapter, *model.backend, topt);
  const AdamWOptions opt;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(hp.n_vocab - 1));
  const int64_t T = a.train_ctx;
  std::vector<int32_t> tokens(static_cast<size_t>(T + 1));
  std::vector<float> mask(static_cast<size_t>(T), 1.0f);
  double seconds = 0;
  for (int64_t s = 0; s <= a.train_steps; ++s) {
    for (int32_t& t : tokens) t = pick(rng);
    const double t0 = now_seconds();
    tm.zero_grads();
    tm.forward_backward(tokens.data(), tokens.data() + 1, mask.data(), T, float(T), uint64_t(s));
    tm.optimizer_step(opt, 1e-4, 1.0f);
    const double dt = now_seconds() - t0;
    if (s > 0) seconds += dt;
    if (!a.json)
      std::fprintf(stderr, "step %lld%s: %.3f s\n", static_cast<long long>(s),
                   s == 0 ? " (warm-up)" : "", dt);
  }
  const double tps = double(T * a.train_steps) / std::max(seconds, 1e-9);
  const double peak_mib = double(peak_rss_bytes()) / (1 << 20);
  if (a.json) {
    nlohmann::json j = {{"model", a.run.model},
                        {"threads", threads},
                        {"device", model.backend->description()},
                        {"ctx", T},
                        {"rank", a.rank},
                        {"checkpointing", a.checkpointing},
                        {"train_tokens_per_s", tps},
                        {"peak_rss_mib", peak_mib}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("model %s: %lld layers, %lld embd; %d threads; LoRA rank %lld on all layers\n",
              a.run.model.c_str(), static_cast<long long>(hp.n_layer),
              static_cast<long long>(hp.n_embd), threads, static_cast<long long>(a.rank));
  std::printf("device: %s\n", model.backend->description().c_str());
  std::printf("training (ctx %lld, gradient checkpointing %s): %.1f tokens/s\n",
              static_cast<long long>(T), a.checkpointing ? "on" : "off", tps);
  std::printf("peak memory (RSS): %.1f MiB\n", peak_mib);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  using Args = BenchArgs;
  auto args = std::make_shared<Args>();
  CLI::App* cmd =
      app.add_subcommand("bench", "Measure prompt and generation tokens/s and peak memory");
  add_run_options(cmd, args->run, false);
  cmd->add_option("-p,--n-prompt", args->n_prompt, "Prompt tokens (0: skip)");
  cmd->add_option("-n,--n-gen", args->n_gen, "Generated tokens (0: skip)");
  cmd->add_option("-r,--repetitions", args->reps, "Repetitions (the best is reported)");
  cmd->add_flag("--json", args->json, "Print one JSON object");
  cmd->add_flag("--train", args->train,
                "Measure LoRA training (forward, backward, AdamW) instead of inference");
  cmd->add_option("-c,--ctx", args->train_ctx, "Training sequence length (with --train)");
  cmd->add_option("--steps", args->train_steps, "Training steps timed (with --train)");
  cmd->add_option("--rank", args->rank, "LoRA rank on all seven layers (with --train)");
  cmd->add_flag("!--no-grad-checkpointing", args->checkpointing,
                "Keep every block's activations (with --train)");
  cmd->callback([args] {
    if (args->train) return bench_training(*args);
    auto model = load_model(args->run);
    const HParams& hp = model->hparams();
    const int threads = thread_count(args->run);
    const int64_t n_ctx = std::max<int64_t>(1, args->n_prompt + args->n_gen);
    Session session(*model, n_ctx, *model.backend, model.fwd(), 512);
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int32_t> pick(0, int32_t(hp.n_vocab - 1));
    std::vector<float> logits;
    double best_pp = 0, best_tg = 0;
    for (int r = 0; r < std::max(1, args->reps); ++r) {
      if (args->n_prompt > 0) {
        std::vector<int32_t> prompt(static_cast<size_t>(args->n_prompt));
        for (int32_t& t : prompt) t = pick(rng);
        session.truncate(0);
        const double t0 = now_seconds();
        session.eval(prompt, logits);
        best_pp = std::max(best_pp, double(args->n_prompt) / (now_seconds() - t0));
      }
      if (args->n_gen > 0) {
        session.truncate(0);
        std::vector<int32_t> tok = {pick(rng)};
        const double t0 = now_seconds();
        for (int64_t i = 0; i < args->n_gen; ++i) {
          session.eval(tok, logits);
          tok[0] = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        }
        best_tg = std::max(best_tg, double(args->n_gen) / (now_seconds() - t0));
      }
    }
    const int64_t bytes = weight_bytes_per_token(*model);
    const double peak_mib = double(peak_rss_bytes()) / (1 << 20);
    if (args->json) {
      nlohmann::json j = {{"model", args->run.model},
                          {"threads", threads},
                          {"cpu", std::string(cpu_level_name(active_cpu_level()))},
                          {"device", model.backend->description()},
                          {"n_prompt", args->n_prompt},
                          {"n_gen", args->n_gen},
                          {"pp_tokens_per_s", best_pp},
                          {"tg_tokens_per_s", best_tg},
                          {"weight_bytes_per_token", bytes},
                          {"peak_rss_mib", peak_mib}};
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("model %s: %lld layers, %lld embd, %lld vocab; %d threads, %s kernels\n",
                args->run.model.c_str(), static_cast<long long>(hp.n_layer),
                static_cast<long long>(hp.n_embd), static_cast<long long>(hp.n_vocab), threads,
                std::string(cpu_level_name(active_cpu_level())).c_str());
    std::printf("device: %s\n", model.backend->description().c_str());
    if (args->n_prompt > 0) {
      std::printf("prompt processing (pp%lld): %.2f tokens/s\n",
                  static_cast<long long>(args->n_prompt), best_pp);
    }
    if (args->n_gen > 0) {
      std::printf("generation (tg%lld): %.2f tokens/s, %.1f MiB of weights per token, %.2f GB/s\n",
                  static_cast<long long>(args->n_gen), best_tg, double(bytes) / (1 << 20),
                  double(bytes) * best_tg / 1e9);
    }
    std::printf("peak memory (RSS): %.1f MiB\n", peak_mib);
  });
}

}  // namespace trit::cli
