// trit convert: a Hugging Face BitNet folder (config.json + safetensors) to GGUF, or a PEFT
// LoRA adapter folder (adapter_config.json + adapter_model.safetensors) to an adapter GGUF.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "core/dtype.h"
#include "core/error.h"
#include "io/adapter_gguf.h"
#include "io/gguf.h"
#include "tools/convert.h"
#include "io/peft.h"
#include "model/hparams.h"
#include "core/lora.h"
#include "model/lora_set.h"

namespace trit::cli {

using namespace trit::engine;  // until the CLI moves onto the public API

namespace {

// A PEFT adapter folder to an adapter GGUF; with a base model, checked against its shapes and
// written for its architecture.
void convert_peft_adapter(const std::string& src, const std::string& out, const std::string& base,
                          const std::string& type_name, bool type_given) {
  DType type = DType::F32;
  if (type_given) {
    const auto t = dtype_from_name(type_name);
    if (!t || (*t != DType::F32 && *t != DType::F16)) {
      fail("convert: --type '", type_name, "' is not an adapter type (f32 or f16)");
    }
    type = *t;
  }
  LoraAdapter adapter = load_peft(src);
  if (!base.empty()) {
    const auto model = GgufFile::open(base);
    if (model->get_string_or("general.type", "model") == "adapter") {
      fail(base, ": is a LoRA adapter; --base takes the base model");
    }
    const HParams hp = HParams::from_gguf(*model);
    check_adapter_against(adapter, hp, base);
    adapter.base_arch = hp.arch;
  }
  save_adapter_gguf(adapter, out, type);
  std::fprintf(stderr, "trit: wrote %s: LoRA adapter, %s, %s, for %s (%s)\n", out.c_str(),
               lora_summary(adapter).c_str(), std::string(dtype_name(type)).c_str(),
               adapter.base_arch.c_str(),
               base.empty() ? "not checked against a model; --base checks the shapes"
                            : ("shapes checked against " + base).c_str());
}

}  // namespace

void add_convert_command(CLI::App& app) {
  struct Args {
    std::string src, out, type = "tq2_0", embd_type = "f16", base;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "convert",
      "Convert a Hugging Face BitNet model folder (config.json + safetensors) to GGUF, or a PEFT "
      "LoRA adapter folder (adapter_config.json + adapter_model.safetensors) to an adapter GGUF");
  cmd->add_option("SRC", args->src,
                  "Folder with config.json and *.safetensors, or a PEFT adapter folder")
      ->required();
  cmd->add_option("-o,--output", args->out, "Output GGUF file")->required();
  cmd->add_option("--type", args->type,
                  "Type of the linear layers: tq1_0, tq2_0, i2_s, or f16 (ternary weights "
                  "as floats, for interchange); for adapters f32 (default) or f16")
      ->capture_default_str();
  cmd->add_option("--embd-type", args->embd_type,
                  "Type of token_embd and output: f16, bf16, f32, q8_0 or q6_K")
      ->capture_default_str();
  cmd->add_option("--base", args->base,
                  "Adapters only: the base model GGUF; checks the adapter's shapes against it "
                  "and takes its architecture (without it: \"bitnet\", unchecked)");
  cmd->callback([args, cmd] {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::exists(fs::path(args->src) / "adapter_config.json", ec)) {
      if (cmd->count("--embd-type") > 0) {
        fail("convert: --embd-type does not apply to adapters (", args->src,
             " holds adapter_config.json)");
      }
      convert_peft_adapter(args->src, args->out, args->base, args->type, cmd->count("--type") > 0);
      return;
    }
    if (!args->base.empty()) {
      fail("convert: --base is for PEFT adapter folders, and ", args->src,
           " holds no adapter_config.json");
    }
    HfConvertOptions opt;
    opt.src_dir = args->src;
    opt.out_path = args->out;
    const auto type = dtype_from_name(args->type);
    if (!type) fail("convert: --type '", args->type, "' is not one of tq1_0, tq2_0, i2_s, f16");
    opt.type = *type;
    const auto embd = dtype_from_name(args->embd_type);
    if (!embd) {
      fail("convert: --embd-type '", args->embd_type, "' is not one of f16, bf16, f32, q8_0, q6_K");
    }
    opt.embd_type = *embd;
    opt.warn = [](const std::string& msg) {
      std::fprintf(stderr, "trit: warning: %s\n", msg.c_str());
    };

    const HfConvertResult r = convert_hf_model(opt);
    std::string types;
    for (const auto& [name, count] : r.tensors_per_type) {
      types += (types.empty() ? "" : ", ") + std::to_string(count) + " " + name;
    }
    std::fprintf(
        stderr,
        "trit: wrote %s: %zu tensors (%s), %.1f MiB; %lld layers, embedding %lld, "
        "vocab %lld, %s, %s head%s%s\n",
        args->out.c_str(), r.n_tensors, types.c_str(), double(r.file_bytes) / (1024.0 * 1024.0),
        static_cast<long long>(r.hp.n_layer), static_cast<long long>(r.hp.n_embd),
        static_cast<long long>(r.hp.n_vocab), std::string(activation_name(r.hp.act)).c_str(),
        r.hp.tied_head ? "tied" : "separate", r.packed_source ? ", from packed weights" : "",
        r.has_tokenizer ? "" : ", no tokenizer");
  });
}

}  // namespace trit::cli
