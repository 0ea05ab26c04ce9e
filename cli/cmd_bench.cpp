// trit bench: prompt-processing and generation throughput, or training throughput, and peak
// memory.
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/bench_serve.h"
#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_bench_command(CLI::App& app) {
  struct Args {
    RunOptions run;
    BenchOptions bench;
    bool json = false;
    std::string serve;  // "1,4,16,64"
    std::string serve_url;
    int64_t n_batch = 0;  // trit serve's: 512 on a GPU, 64 on the CPU
  };
  auto args = std::make_shared<Args>();
  BenchOptions& b = args->bench;
  CLI::App* cmd =
      app.add_subcommand("bench", "Measure prompt and generation tokens/s and peak memory");
  add_run_options(cmd, args->run, false);
  cmd->add_option("-p,--n-prompt", b.n_prompt, "Prompt tokens (0: skip)");
  cmd->add_option("-n,--n-gen", b.n_gen, "Generated tokens (0: skip)");
  cmd->add_option("-r,--repetitions", b.repetitions, "Repetitions (the best is reported)");
  cmd->add_flag("--json", args->json, "Print one JSON object");
  cmd->add_flag("--train", b.train,
                "Measure LoRA training (forward, backward, AdamW) instead of inference");
  cmd->add_option("-c,--ctx", b.train_ctx, "Training sequence length (with --train)");
  cmd->add_option("--steps", b.train_steps, "Training steps timed (with --train)");
  cmd->add_option("--rank", b.rank, "LoRA rank (with --train)");
  cmd->add_option("--train-batch", b.train_batch, "Sequences per training step (with --train)");
  cmd->add_option("--pack-tokens", b.pack_tokens,
                  "Tokens of one training pass, as trit finetune's (with --train)");
  cmd->add_option("--targets", b.targets,
                  "LoRA targets: all (the seven layers of every block) or a list of q, k, v, o, "
                  "gate, up, down, head (with --train)");
  cmd->add_flag("!--no-grad-checkpointing", b.grad_checkpointing,
                "Keep every block's activations (with --train)");
  cmd->add_option("--serve", args->serve,
                  "Measure `trit serve` with these numbers of parallel streams (e.g. 1,4,16,64): "
                  "aggregate tokens/s and time to first token over 127.0.0.1");
  cmd->add_option("-b,--batch", args->n_batch, "Prompt tokens per step (with --serve)");
  cmd->add_option("--serve-url", args->serve_url,
                  "With --serve: load another OpenAI-compatible server at http://HOST:PORT "
                  "instead (e.g. llama-server started with enough --parallel slots)");
  cmd->callback([args] {
    LoadedModel lm = load_model(args->run);
    if (!args->serve.empty()) {
      ServeBenchOptions so;
      for (int32_t n : parse_ids(args->serve, "--serve")) {
        if (n <= 0) fail("--serve: stream counts must be positive");
        so.streams.push_back(n);
      }
      so.n_prompt = args->bench.n_prompt;
      so.n_gen = args->bench.n_gen;
      so.n_batch = args->n_batch;
      so.json = args->json;
      so.url = args->serve_url;
      run_serve_bench(lm, so);
      return;
    }
    const ModelInfo& info = lm.model.info();
    BenchOptions o = args->bench;
    o.adapters = lm.adapters;
    if (!args->json)
      o.on_line = [](const std::string& l) { std::fprintf(stderr, "%s\n", l.c_str()); };
    const BenchResult r = bench(lm.model, o);
    const int threads = args->run.threads > 0
                            ? args->run.threads
                            : int(std::max(1u, std::thread::hardware_concurrency()));
    if (o.train) {
      if (args->json) {
        const nlohmann::json j = {{"model", args->run.model},
                                  {"threads", threads},
                                  {"device", r.device},
                                  {"ctx", o.train_ctx},
                                  {"batch", o.train_batch},
                                  {"rank", o.rank},
                                  {"targets", o.targets},
                                  {"checkpointing", o.grad_checkpointing},
                                  {"train_tokens_per_s", r.train_tokens_per_s},
                                  {"peak_rss_mib", r.peak_rss_mib},
                                  {"device_memory_mib", r.device_memory_mib}};
        std::printf("%s\n", j.dump().c_str());
        return;
      }
      std::printf("model %s: %lld layers, %lld embd; %d threads; LoRA rank %lld on %s\n",
                  args->run.model.c_str(), static_cast<long long>(info.n_layer),
                  static_cast<long long>(info.n_embd), threads, static_cast<long long>(o.rank),
                  o.targets.c_str());
      std::printf("device: %s\n", r.device.c_str());
      std::printf("training (ctx %lld, batch %lld, gradient checkpointing %s): %.1f tokens/s\n",
                  static_cast<long long>(o.train_ctx), static_cast<long long>(o.train_batch),
                  o.grad_checkpointing ? "on" : "off", r.train_tokens_per_s);
      std::printf("peak memory (RSS): %.1f MiB\n", r.peak_rss_mib);
      if (r.device_memory_mib > 0) {
        std::printf("device memory (the driver's count): %.1f MiB\n", r.device_memory_mib);
      }
      return;
    }
    if (args->json) {
      const nlohmann::json j = {{"model", args->run.model},
                                {"threads", threads},
                                {"cpu", r.cpu_kernels},
                                {"device", r.device},
                                {"n_prompt", o.n_prompt},
                                {"n_gen", o.n_gen},
                                {"pp_tokens_per_s", r.prompt_tokens_per_s},
                                {"tg_tokens_per_s", r.gen_tokens_per_s},
                                {"weight_bytes_per_token", r.weight_bytes_per_token},
                                {"peak_rss_mib", r.peak_rss_mib},
                                {"device_memory_mib", r.device_memory_mib}};
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("model %s: %lld layers, %lld embd, %lld vocab; %d threads, %s kernels\n",
                args->run.model.c_str(), static_cast<long long>(info.n_layer),
                static_cast<long long>(info.n_embd), static_cast<long long>(info.n_vocab), threads,
                r.cpu_kernels.c_str());
    std::printf("device: %s\n", r.device.c_str());
    if (o.n_prompt > 0) {
      std::printf("prompt processing (pp%lld): %.2f tokens/s\n", static_cast<long long>(o.n_prompt),
                  r.prompt_tokens_per_s);
    }
    if (o.n_gen > 0) {
      const double bytes = double(r.weight_bytes_per_token);
      std::printf("generation (tg%lld): %.2f tokens/s, %.1f MiB of weights per token, %.2f GB/s\n",
                  static_cast<long long>(o.n_gen), r.gen_tokens_per_s, bytes / (1 << 20),
                  bytes * r.gen_tokens_per_s / 1e9);
    }
    std::printf("peak memory (RSS): %.1f MiB\n", r.peak_rss_mib);
    if (r.device_memory_mib > 0) {
      std::printf("device memory (the driver's count): %.1f MiB\n", r.device_memory_mib);
    }
  });
}

}  // namespace trit::cli
