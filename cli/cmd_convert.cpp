// trit convert: a Hugging Face BitNet folder (config.json + safetensors) to GGUF.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "core/dtype.h"
#include "core/error.h"
#include "io/hf_import.h"

namespace trit::cli {

void add_convert_command(CLI::App& app) {
  struct Args {
    std::string src, out, type = "tq2_0", embd_type = "f16";
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Convert a Hugging Face BitNet model folder (config.json + safetensors) to GGUF");
  cmd->add_option("SRC", args->src, "Folder with config.json and *.safetensors")->required();
  cmd->add_option("-o,--output", args->out, "Output GGUF file")->required();
  cmd->add_option("--type", args->type,
                  "Type of the linear layers: tq1_0, tq2_0, i2_s, or f16 (ternary weights "
                  "as floats, for interchange)")
      ->capture_default_str();
  cmd->add_option("--embd-type", args->embd_type,
                  "Type of token_embd and output: f16, bf16, f32, q8_0 or q6_K")
      ->capture_default_str();
  cmd->callback([args] {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::exists(fs::path(args->src) / "config.json", ec) &&
        fs::exists(fs::path(args->src) / "adapter_config.json", ec)) {
      fail("convert: ", args->src,
           " holds a PEFT adapter (adapter_config.json); converting adapters is not supported yet");
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
