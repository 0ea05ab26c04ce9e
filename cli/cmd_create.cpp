// trit create: a model with random ternary weights of a given shape, streamed to disk.
#include "cli/commands.h"
#include "cli/common.h"

namespace trit::cli {

void add_create_command(CLI::App& app) {
  struct Args {
    std::string out;
    CreateOptions opt;
    bool random = false;
  };
  auto args = std::make_shared<Args>();
  CreateOptions& o = args->opt;
  CLI::App* cmd = app.add_subcommand("create", "Write a model with random ternary weights");
  auto* preset = cmd->add_option("--preset", o.preset, "Shape: tiny, 125m, 1b, 2b4t, 7b, 13b");
  auto* config = cmd->add_option("--config", o.config,
                                 "JSON file with the hyperparameters (trit or Hugging Face names)");
  preset->excludes(config);
  cmd->add_flag("--random", args->random, "Random weights (the only kind for now)");
  cmd->add_option("-o,--output", args->out, "Output GGUF file")->required();
  cmd->add_option("--type", o.type, "Linear layers: tq1_0, tq2_0 or i2_s")->capture_default_str();
  cmd->add_option("--embd-type", o.embd_type, "Embeddings: f16, bf16, f32, q8_0 or q6_K")
      ->capture_default_str();
  cmd->add_option("--act", o.activation, "Activation: relu2 or silu (default: the preset's)");
  cmd->add_option("--arch", o.arch,
                  "bitnet (BitNet b1.58, default) or llama (ternary Llama blocks, no sub-norms)")
      ->check(CLI::IsMember({"bitnet", "llama"}));
  cmd->add_flag("--untied", o.untied, "Separate output.weight instead of tied embeddings");
  cmd->add_option("--seed", o.seed, "Random seed")->capture_default_str();
  cmd->add_option("--vocab", o.vocab, "Override the vocabulary size");
  cmd->add_option("--layers", o.layers, "Override the number of layers");
  cmd->callback([args] {
    if (args->opt.preset.empty() == args->opt.config.empty()) {
      fail("create: give --preset NAME or --config FILE");
    }
    if (!args->random) fail("create: pass --random (only random models can be created)");
    std::printf("%s\n", create_model(args->out, args->opt).summary.c_str());
  });
}

}  // namespace trit::cli
