// The tools of the public API (include/trit/tools.h) over the engine's tools/ floor.
#include "trit/tools.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>

#include "api/impl.h"
#include "backend/cpu/kernels.h"
#include "core/error.h"
#include "core/lora.h"
#include "io/adapter_gguf.h"
#include "io/gguf.h"
#include "io/peft.h"
#include "model/llama_layout.h"
#include "model/lora_set.h"
#include "tools/convert.h"
#include "tools/create.h"
#include "tools/info.h"
#include "tools/merge.h"
#include "tools/requantize.h"
#include "train/lora_init.h"
#include "train/trainable_model.h"
#include "train/trainer.h"

namespace trit {
namespace {

namespace fs = std::filesystem;
using engine::cat;
using engine::DType;
using engine::fail;
using engine::fail_option;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

uint64_t size_of(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? 0 : uint64_t(n);
}

// A PEFT adapter folder to an adapter GGUF; with a base model, checked against its shapes and
// written for its architecture.
ToolResult convert_peft(const std::string& src, const std::string& out, const ConvertOptions& o) {
  DType type = DType::F32;
  if (!o.type.empty()) {
    const auto t = engine::dtype_from_name(o.type);
    if (!t || (*t != DType::F32 && *t != DType::F16)) {
      fail_option("type", "convert: type '", o.type, "' is not an adapter type (f32 or f16)");
    }
    type = *t;
  }
  if (!o.embd_type.empty()) {
    fail_option("embd_type", "convert: an embedding type does not apply to adapters (", src,
                " holds adapter_config.json)");
  }
  engine::LoraAdapter adapter = engine::load_peft(src);
  if (!o.base.empty()) {
    const auto model = engine::GgufFile::open(o.base);
    if (model->get_string_or("general.type", "model") == "adapter") {
      fail(o.base, ": is a LoRA adapter; the base must be a model");
    }
    const engine::HParams hp = engine::HParams::from_gguf(*model);
    adapter.base_arch = hp.arch;  // a PEFT folder names no GGUF architecture: the base's
    engine::check_adapter_against(adapter, hp, o.base);
    engine::adapter_rows_to_file(adapter, hp, out);  // a llama base: llama.cpp's row order
  }
  engine::save_adapter_gguf(adapter, out, type);
  ToolResult r;
  r.output = out;
  r.file_bytes = size_of(out);
  r.summary = cat("wrote ", out, ": LoRA adapter, ", engine::lora_summary(adapter), ", ",
                  engine::dtype_name(type), ", for ", adapter.base_arch, " (",
                  o.base.empty() ? "not checked against a model; a base model checks the shapes"
                                 : "shapes checked against " + o.base,
                  ")");
  return r;
}

}  // namespace

ToolResult convert(const std::string& src, const std::string& out, const ConvertOptions& o) {
  const double t0 = now_seconds();
  std::error_code ec;
  if (fs::exists(fs::path(src) / "adapter_config.json", ec)) {
    ToolResult r = convert_peft(src, out, o);
    r.seconds = now_seconds() - t0;
    return r;
  }
  if (!o.base.empty()) {
    fail_option("base", "convert: a base model is for PEFT adapter folders, and ", src,
                " holds no adapter_config.json");
  }
  engine::HfConvertOptions opt;
  opt.src_dir = src;
  opt.out_path = out;
  const std::string type = o.type.empty() ? "tq2_0" : o.type;
  const auto t = engine::dtype_from_name(type);
  if (!t) fail_option("type", "convert: type '", type, "' is not one of tq1_0, tq2_0, i2_s, f16");
  opt.type = *t;
  const std::string embd_type = o.embd_type.empty() ? "f16" : o.embd_type;
  const auto embd = engine::dtype_from_name(embd_type);
  if (!embd) {
    fail_option("embd_type", "convert: embedding type '", embd_type,
                "' is not one of f16, bf16, f32, q8_0, q6_K");
  }
  opt.embd_type = *embd;
  opt.warn = o.on_warning;
  const engine::HfConvertResult c = engine::convert_hf_model(opt);
  std::string types;
  for (const auto& [name, count] : c.tensors_per_type) {
    types += (types.empty() ? "" : ", ") + std::to_string(count) + " " + name;
  }
  char mib[32];
  std::snprintf(mib, sizeof mib, "%.1f", double(c.file_bytes) / (1024.0 * 1024.0));
  ToolResult r;
  r.output = out;
  r.file_bytes = c.file_bytes;
  r.seconds = now_seconds() - t0;
  r.summary =
      cat("wrote ", out, ": ", c.n_tensors, " tensors (", types, "), ", mib, " MiB; ", c.hp.n_layer,
          " layers, embedding ", c.hp.n_embd, ", vocab ", c.hp.n_vocab, ", ",
          engine::activation_name(c.hp.act), ", ", c.hp.tied_head ? "tied" : "separate", " head",
          c.packed_source ? ", from packed weights" : "", c.has_tokenizer ? "" : ", no tokenizer");
  return r;
}

ToolResult quantize(const std::string& in, const std::string& out, const std::string& type) {
  const auto t = engine::dtype_from_name(type);
  if (!t || !engine::dtype_traits(*t).ternary) {
    fail("quantize: type is '", type, "', expected tq1_0, tq2_0 or i2_s");
  }
  const engine::RequantizeResult q = engine::requantize_model(in, out, *t);
  ToolResult r;
  r.output = out;
  r.file_bytes = q.file_bytes;
  r.seconds = q.seconds;
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.2f", q.seconds);
  r.summary =
      cat("wrote ", out, ": ", engine::format_bytes(q.file_bytes), ", ", q.n_converted,
          " tensors re-packed as ", engine::dtype_name(*t), ", ", q.n_copied, " copied, in ", secs,
          " s",
          q.n_kept > 0 ? cat("; ", q.n_kept, " kept in their type (", q.kept,
                             ": not a multiple of ", engine::dtype_traits(*t).block_elems, ")")
                       : std::string());
  return r;
}

ToolResult create_model(const std::string& out, const CreateOptions& o) {
  if (o.preset.empty() == o.config.empty()) fail("create: give a preset or a config file");
  engine::CreateOptions opt;
  if (!o.preset.empty()) {
    auto hp = engine::hparams_preset(o.preset);
    if (!hp) {
      std::string names;
      for (const std::string& n : engine::hparams_preset_names()) {
        names += (names.empty() ? "" : ", ") + n;
      }
      fail("create: unknown preset '", o.preset, "' (known: ", names, ")");
    }
    opt.hp = *hp;
    opt.name = "trit-random-" + o.preset;
  } else {
    opt.hp = engine::hparams_from_config_json(o.config);
    opt.name = "trit-random-" + fs::path(o.config).stem().string();
  }
  const auto type = engine::dtype_from_name(o.type);
  if (!type || !engine::dtype_traits(*type).ternary) {
    fail("create: type is '", o.type, "', expected tq1_0, tq2_0 or i2_s");
  }
  const auto embd = engine::dtype_from_name(o.embd_type);
  if (!embd || engine::dtype_traits(*embd).ternary) {
    fail("create: embedding type is '", o.embd_type, "', expected f16, bf16, f32, q8_0 or q6_K");
  }
  opt.type = *type;
  opt.embd_type = *embd;
  if (!o.arch.empty()) {
    if (o.arch != "bitnet" && o.arch != "llama") {
      fail("create: architecture is '", o.arch, "', expected bitnet or llama");
    }
    opt.hp.arch = o.arch;
    if (o.arch == "llama") opt.hp.act = engine::Activation::Silu;
  }
  if (!o.activation.empty()) {
    const auto act = engine::activation_from_name(o.activation);
    if (!act) fail("create: activation is '", o.activation, "', expected relu2 or silu");
    opt.hp.act = *act;
  }
  if (o.untied) opt.hp.tied_head = false;
  if (o.vocab != 0) opt.hp.n_vocab = o.vocab;
  if (o.layers != 0) opt.hp.n_layer = o.layers;
  opt.seed = o.seed;
  const engine::CreateResult c = engine::create_random_model(opt, out);
  ToolResult r;
  r.output = out;
  r.file_bytes = c.file_bytes;
  r.seconds = c.seconds;
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.2f", c.seconds);
  r.summary = cat(
      "wrote ", out, ": ", engine::format_bytes(c.file_bytes), ", ", c.n_tensors, " tensors, ",
      engine::dtype_name(opt.type), " weights",
      c.n_f16_linears > 0
          ? cat(" (", c.n_f16_linears, " layers f16: widths not a multiple of the type's block)")
          : std::string(),
      ", in ", secs, " s");
  return r;
}

ToolResult merge(const std::string& model, const std::string& out, const MergeOptions& o) {
  if (o.mode != "float" && o.mode != "attach") {
    fail("merge: mode is '", o.mode, "', expected float or attach");
  }
  if (o.type != "f16" && o.type != "f32")
    fail("merge: type is '", o.type, "', expected f16 or f32");
  if (o.adapters.empty()) fail("merge: no adapters to merge");
  engine::MergeOptions opt;
  opt.mode = o.mode == "attach" ? engine::MergeMode::Attach : engine::MergeMode::Float;
  opt.type = o.type == "f32" ? DType::F32 : DType::F16;
  opt.threads = o.threads;
  const engine::MergeResult m = engine::merge_adapter_files(model, o.adapters, out, opt);
  ToolResult r;
  r.output = out;
  r.file_bytes = m.file_bytes;
  r.seconds = m.seconds;
  if (opt.mode == engine::MergeMode::Float) {
    r.summary = cat("wrote ", out, ": ", engine::format_bytes(m.file_bytes), ", ", m.n_adapters,
                    " adapter(s) folded into ", m.n_merged, " layers as ", o.type);
    if (m.n_ternarised) r.summary += cat(", ", m.n_ternarised, " float master layers ternarised");
  } else {
    r.summary = cat("wrote ", out, ": ", engine::format_bytes(m.file_bytes), ", ", m.n_adapters,
                    " adapter(s) stored as ", m.n_adapter_layers, " layers");
  }
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.2f", m.seconds);
  r.summary += cat(", ", m.n_copied, " tensors copied, in ", secs, " s");
  return r;
}

ToolResult export_peft(const std::string& adapter_path, const std::string& out,
                       const std::string& base) {
  const double t0 = now_seconds();
  engine::LoraAdapter adapter = engine::load_adapter_gguf(adapter_path);
  if (adapter.base_arch == "llama") {  // q, k rows in llama.cpp's order: PEFT has HF's
    if (base.empty()) {
      fail_option("base", "export-peft: ", adapter_path,
                  " is an adapter of a llama model, whose q and k rows need the base model's "
                  "head size to be put back in Hugging Face's order; give the base model");
    }
    const auto model = engine::GgufFile::open(base);
    const engine::HParams hp = engine::HParams::from_gguf(*model);
    engine::check_adapter_against(adapter, hp, base);
    engine::adapter_rows_from_file(adapter, hp, adapter_path);
  }
  engine::save_peft(adapter, out);
  ToolResult r;
  r.output = out;
  r.file_bytes = size_of((fs::path(out) / "adapter_model.safetensors").string());
  r.seconds = now_seconds() - t0;
  r.summary = cat("wrote ", out, ": PEFT adapter, ", engine::lora_summary(adapter),
                  " (base architecture ", adapter.base_arch, ")");
  return r;
}

std::string describe_file(const std::string& path, bool all_tensors, bool json,
                          const MemoryQuery& memory) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, ": no such file");
  if (fs::is_directory(path, ec)) fail(path, ": is a folder, not a file");
  engine::MemoryQuery q;
  q.run_ctx = memory.ctx;
  q.kv = kv_type_of(memory.cache_type);
  for (const auto& [name, v] : {std::pair<const char*, int64_t>{"ctx", memory.ctx},
                                {"train_ctx", memory.train_ctx},
                                {"rank", memory.rank},
                                {"batch", memory.batch}}) {
    if (v < 0 || (v == 0 && std::string_view(name) != "ctx")) {
      engine::fail_option(name, name, " is ", v, ", expected a positive number");
    }
  }
  engine::lora_target_suffixes(memory.targets);  // throws naming an unknown target
  q.train_ctx = memory.train_ctx;
  q.rank = memory.rank;
  q.batch = memory.batch;
  q.targets = memory.targets;
  q.checkpointing = memory.grad_checkpointing;
  const std::unique_ptr<engine::GgufFile> f = engine::GgufFile::open(path);
  const engine::ModelInfo info = engine::read_model_info(*f, q);
  return json ? engine::model_info_json(info, all_tensors) + "\n"
              : engine::format_model_info(info, all_tensors);
}

namespace {

// Bytes of weights one decoded token reads: every linear layer, the head, one embedding row.
int64_t weight_bytes_per_token(const engine::Model& m) {
  int64_t bytes = 0;
  for (const engine::BlockWeights& b : m.weights().blocks) {
    for (const engine::LinearWeight* w : {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down}) {
      bytes += engine::row_bytes(w->m.type, w->m.stored_in()) * w->m.n_out;
    }
  }
  const engine::FloatMatrix& head = m.weights().output;
  bytes += engine::row_bytes(head.type, head.n_in) * head.n_out;
  bytes += engine::row_bytes(m.weights().token_embd.type, m.hparams().n_embd);
  return bytes;
}

// Training steps of train_batch sequences of ctx random tokens each, packed into passes as a
// fine-tune packs them: forward, backward and an AdamW update of a rank-r adapter on the
// targets; the first step is a warm-up.
double bench_training(Model::Impl& m, const BenchOptions& o, double& device_mib) {
  const engine::HParams& hp = m.model->hparams();
  engine::LoraAdapter adapter = engine::lora_init(hp, o.targets, o.rank, 16.0f, false, 1);
  engine::TrainPassOptions topt;
  topt.checkpointing = o.grad_checkpointing;
  topt.act_quant = m.act_quant;
  engine::TrainableModel tm(*m.model, adapter, *m.backend, topt);
  const int64_t T = o.train_ctx, B = o.train_batch;
  const int64_t pack = engine::pack_tokens_for(*m.backend, o.pack_tokens, T);
  const int64_t per_pass = std::max<int64_t>(1, std::min(B, pack / T));  // sequences a pass
  tm.check_budget(per_pass * T);
  const engine::AdamWOptions opt;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(hp.n_vocab - 1));
  std::vector<int32_t> tokens(static_cast<size_t>(per_pass * T + 1));
  std::vector<float> mask(static_cast<size_t>(per_pass * T), 1.0f);
  double seconds = 0;
  for (int64_t s = 0; s <= o.train_steps; ++s) {
    const double t0 = now_seconds();
    tm.zero_grads();
    for (int64_t b0 = 0; b0 < B; b0 += per_pass) {
      const int64_t n = std::min(per_pass, B - b0);
      for (int32_t& t : tokens) t = pick(rng);
      const std::vector<int64_t> lengths(static_cast<size_t>(n), T);
      tm.forward_backward(tokens.data(), tokens.data() + 1, mask.data(), n * T, float(B * T),
                          uint64_t(s), lengths);
    }
    tm.optimizer_step(opt, 1e-4, 1.0f);
    const double dt = now_seconds() - t0;
    if (s > 0) seconds += dt;
    device_mib = std::max(device_mib, double(m.backend->device_memory_used()) / double(1 << 20));
    if (o.on_line) {
      char line[64];
      std::snprintf(line, sizeof line, "step %lld%s: %.3f s", static_cast<long long>(s),
                    s == 0 ? " (warm-up)" : "", dt);
      o.on_line(line);
    }
  }
  return double(B * T * o.train_steps) / std::max(seconds, 1e-9);
}

}  // namespace

BenchResult bench(Model& model, const BenchOptions& o) {
  Model::Impl& m = ApiAccess::impl(model);
  BenchResult r;
  r.device = m.backend->description();
  r.cpu_kernels = engine::cpu_kernels_name();
  if (o.train) {
    if (o.train_ctx < 1 || o.train_steps < 1 || o.rank < 1 || o.train_batch < 1) {
      fail("bench: ctx, steps, rank and batch must be positive");
    }
    if (o.pack_tokens < -1) fail("bench: pack tokens must be >= 0 (or -1: the device decides)");
    r.train_tokens_per_s = bench_training(m, o, r.device_memory_mib);
    r.peak_rss_mib = peak_rss_mib();
    return r;
  }
  const int64_t n_ctx = std::max<int64_t>(1, o.n_prompt + o.n_gen);
  const engine::LoraSet lora = m.lora_set(o.adapters);
  engine::Session session(*m.model, n_ctx, *m.backend, m.forward_options(&lora), 512);
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(m.model->hparams().n_vocab - 1));
  std::vector<float> logits;
  for (int rep = 0; rep < std::max(1, o.repetitions); ++rep) {
    if (o.n_prompt > 0) {
      std::vector<int32_t> prompt(static_cast<size_t>(o.n_prompt));
      for (int32_t& t : prompt) t = pick(rng);
      session.truncate(0);
      const double t0 = now_seconds();
      session.eval(prompt, logits);
      r.prompt_tokens_per_s =
          std::max(r.prompt_tokens_per_s, double(o.n_prompt) / (now_seconds() - t0));
    }
    if (o.n_gen > 0) {
      session.truncate(0);
      std::vector<int32_t> tok = {pick(rng)};
      const double t0 = now_seconds();
      for (int64_t i = 0; i < o.n_gen; ++i) {
        session.eval(tok, logits);
        tok[0] = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      }
      r.gen_tokens_per_s = std::max(r.gen_tokens_per_s, double(o.n_gen) / (now_seconds() - t0));
    }
  }
  r.weight_bytes_per_token = weight_bytes_per_token(*m.model);
  r.peak_rss_mib = peak_rss_mib();
  r.device_memory_mib = double(m.backend->device_memory_used()) / double(1 << 20);
  return r;
}

}  // namespace trit
