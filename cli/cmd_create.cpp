// trit create: a model with random ternary weights of a given shape, streamed to disk.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "tools/create.h"
#include "tools/info.h"

namespace trit::cli {

using namespace trit::engine;  // until the CLI moves onto the public API

void add_create_command(CLI::App& app) {
  struct Args {
    std::string preset, config, out, type = "tq2_0", embd_type = "f16", act;
    bool random = false, untied = false;
    uint64_t seed = 42;
    int64_t vocab = 0, layers = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("create", "Write a model with random ternary weights");
  auto* preset = cmd->add_option("--preset", args->preset, "Shape: tiny, 125m, 1b, 2b4t, 7b, 13b");
  auto* config = cmd->add_option("--config", args->config,
                                 "JSON file with the hyperparameters (trit or Hugging Face names)");
  preset->excludes(config);
  cmd->add_flag("--random", args->random, "Random weights (the only kind for now)");
  cmd->add_option("-o,--output", args->out, "Output GGUF file")->required();
  cmd->add_option("--type", args->type, "Linear layers: tq1_0, tq2_0 or i2_s")
      ->capture_default_str();
  cmd->add_option("--embd-type", args->embd_type, "Embeddings: f16, bf16, f32, q8_0 or q6_K")
      ->capture_default_str();
  cmd->add_option("--act", args->act, "Activation: relu2 or silu (default: the preset's)");
  cmd->add_flag("--untied", args->untied, "Separate output.weight instead of tied embeddings");
  cmd->add_option("--seed", args->seed, "Random seed")->capture_default_str();
  cmd->add_option("--vocab", args->vocab, "Override the vocabulary size");
  cmd->add_option("--layers", args->layers, "Override the number of layers");
  cmd->callback([args] {
    if (args->preset.empty() == args->config.empty()) {
      fail("create: give --preset NAME or --config FILE");
    }
    if (!args->random) fail("create: pass --random (only random models can be created)");
    CreateOptions opt;
    if (!args->preset.empty()) {
      auto hp = hparams_preset(args->preset);
      if (!hp) {
        std::string names;
        for (const std::string& n : hparams_preset_names())
          names += (names.empty() ? "" : ", ") + n;
        fail("create: unknown preset '", args->preset, "' (known: ", names, ")");
      }
      opt.hp = *hp;
      opt.name = "trit-random-" + args->preset;
    } else {
      opt.hp = hparams_from_config_json(args->config);
      opt.name = "trit-random-" + std::filesystem::path(args->config).stem().string();
    }
    auto type = dtype_from_name(args->type);
    if (!type || !dtype_traits(*type).ternary) {
      fail("create: --type is '", args->type, "', expected tq1_0, tq2_0 or i2_s");
    }
    auto embd = dtype_from_name(args->embd_type);
    if (!embd || dtype_traits(*embd).ternary) {
      fail("create: --embd-type is '", args->embd_type, "', expected f16, bf16, f32, q8_0 or q6_K");
    }
    opt.type = *type;
    opt.embd_type = *embd;
    if (!args->act.empty()) {
      auto act = activation_from_name(args->act);
      if (!act) fail("create: --act is '", args->act, "', expected relu2 or silu");
      opt.hp.act = *act;
    }
    if (args->untied) opt.hp.tied_head = false;
    if (args->vocab != 0) opt.hp.n_vocab = args->vocab;
    if (args->layers != 0) opt.hp.n_layer = args->layers;
    opt.seed = args->seed;
    const CreateResult r = create_random_model(opt, args->out);
    std::printf("wrote %s: %s, %llu tensors, %s weights, in %.2f s\n", args->out.c_str(),
                format_bytes(r.file_bytes).c_str(), static_cast<unsigned long long>(r.n_tensors),
                std::string(dtype_name(opt.type)).c_str(), r.seconds);
  });
}

}  // namespace trit::cli
