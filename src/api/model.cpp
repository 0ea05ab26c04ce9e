// trit::Model and trit::Adapter over the engine: the model file, its backend, its tokenizer and
// chat template, and adapters uploaded once.
#include <cmath>
#include <filesystem>

#include "api/impl.h"
#include "backend/select.h"
#include "core/error.h"
#include "data/chat_template.h"
#include "infer/session.h"
#include "io/adapter_gguf.h"
#include "io/gguf.h"
#include "io/peft.h"
#include "model/llama_layout.h"
#include "tokenizer/tokenizer.h"
#include "tools/merge.h"

namespace trit {

namespace {

engine::ChatTemplate chat_template_of(const engine::Model& m, const std::string& name) {
  return name.empty() ? engine::ChatTemplate::for_model(m.file())
                      : engine::ChatTemplate::builtin(name);
}

ModelInfo info_of(const engine::Model& m) {
  const engine::HParams& hp = m.hparams();
  ModelInfo i;
  i.path = m.path();
  i.arch = hp.arch;
  i.family = hp.family() == engine::Family::Llama ? "llama" : "bitnet";
  i.activation = std::string(engine::activation_name(hp.act));
  i.activation_source = m.activation_source().why;
  i.n_vocab = hp.n_vocab;
  i.n_embd = hp.n_embd;
  i.n_ff = hp.n_ff;
  i.n_layer = hp.n_layer;
  i.n_head = hp.n_head;
  i.n_head_kv = hp.n_head_kv;
  i.n_ctx_train = hp.n_ctx_train;
  i.tied_head = hp.tied_head;
  i.has_tokenizer = m.tokenizer() != nullptr;
  if (i.has_tokenizer) i.chat_template = engine::ChatTemplate::for_model(m.file()).name();
  i.has_embedded_adapter = m.embedded_adapter() != nullptr;
  return i;
}

}  // namespace

// ---- Adapter ----

AdapterSpec parse_adapter_spec(const std::string& spec) {
  const engine::AdapterSpec s = engine::parse_adapter_spec(spec);
  return {s.path, s.scale};
}

const std::string& Adapter::path() const {
  if (!impl_) throw Error("adapter: an empty handle (load adapters with Model::load_adapter)");
  return impl_->path;
}

std::string Adapter::summary() const {
  if (!impl_) throw Error("adapter: an empty handle (load adapters with Model::load_adapter)");
  return impl_->summary;
}

// ---- Model::Impl ----

const engine::Tokenizer& Model::Impl::tokenizer() const {
  const engine::Tokenizer* tok = model->tokenizer();
  if (!tok) {
    engine::fail(model->path(), ": the model has no tokenizer (tokenizer.ggml.*); give token ids");
  }
  return *tok;
}

engine::LoraSet Model::Impl::lora_set(std::span<const AdapterScale> uses) {
  std::vector<std::pair<const engine::DeviceAdapter*, float>> all;
  if (const engine::LoraAdapter* e = model->embedded_adapter()) {
    if (!embedded) {
      embedded = std::make_unique<engine::DeviceAdapter>(*e, model->hparams(), *backend,
                                                         model->path() + " (embedded adapter)");
    }
    all.emplace_back(embedded.get(), model->embedded_adapter_scale());
  }
  for (const AdapterScale& use : uses) {
    const Adapter::Impl* a = ApiAccess::impl(use.adapter);
    if (!a) engine::fail("adapter: an empty handle (load adapters with Model::load_adapter)");
    if (a->owner != this) {
      engine::fail(a->path, ": the adapter was loaded for another model (", a->owner->info.path,
                   "); load it with this model's load_adapter");
    }
    if (!std::isfinite(use.scale)) engine::fail(a->path, ": scale ", use.scale, " is not finite");
    all.emplace_back(a->device.get(), use.scale);
  }
  return engine::lora_set(model->hparams(), all);
}

std::vector<std::pair<const void*, float>> Model::Impl::lora_key(
    std::span<const AdapterScale> uses) const {
  std::vector<std::pair<const void*, float>> key;
  for (const AdapterScale& use : uses) key.emplace_back(ApiAccess::impl(use.adapter), use.scale);
  return key;
}

// ---- Model ----

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::open(const std::string& path, const ModelOptions& options) {
  engine::DeviceRequest request = engine::parse_device(options.device);
  if (options.threads < 0)
    engine::fail_option("threads", "threads must be 0 (every core) or more, got ", options.threads);
  if (options.max_buffer_mb < 0) {
    engine::fail_option("max_buffer_mb", "max_buffer_mb must be positive, got ",
                        options.max_buffer_mb);
  }
  request.max_buffer_bytes = uint64_t(options.max_buffer_mb) << 20;
  auto impl = std::make_unique<Impl>();
  std::optional<engine::Activation> act;
  if (!options.activation.empty()) {
    act = engine::activation_from_name(options.activation);
    if (!act) {
      engine::fail_option("activation", "activation is '", options.activation,
                          "', expected relu2 or silu");
    }
  }
  impl->model = engine::Model::load(path, options.on_warning, act);
  impl->pool = std::make_unique<engine::ThreadPool>(options.threads);
  engine::BackendChoice choice = engine::make_backend(request, *impl->pool);
  impl->backend = std::move(choice.backend);
  impl->fallback = std::move(choice.fallback_reason);
  impl->act_quant = options.act_quant;
  impl->kv_type = kv_type_of(options.cache_type);
  if (options.mem_budget_mb < 0) {
    engine::fail_option("mem_budget_mb", "mem_budget_mb must be 0 (none) or more, got ",
                        options.mem_budget_mb);
  }
  if (options.mem_budget_mb > 0) {
    // On a GPU the blocks then stream through the device: each uploaded for its pass and
    // dropped after it (Backend::release_weights).
    // Inference on the host reads the head a piece at a time, so its budget may be smaller
    // than a fine-tune's (which checks its own, TrainableModel).
    impl->model->set_mem_budget(uint64_t(options.mem_budget_mb) << 20,
                                impl->backend->host_memory());
  }
  impl->info = info_of(*impl->model);
  return Model(std::move(impl));
}

engine::KvType kv_type_of(const std::string& cache_type) {
  if (cache_type == "f16") return engine::KvType::F16;
  if (!cache_type.empty() && cache_type != "f32") {
    engine::fail_option("cache_type", "cache_type is '", cache_type, "', expected f32 or f16");
  }
  return engine::KvType::F32;
}

const ModelInfo& Model::info() const {
  return impl_->info;
}

std::string Model::device() const {
  return impl_->backend->description();
}

const std::string& Model::device_fallback() const {
  return impl_->fallback;
}

std::vector<int32_t> Model::tokenize(std::string_view text, bool add_bos,
                                     bool parse_special) const {
  const engine::Tokenizer& tok = impl_->tokenizer();
  return tok.encode(text, add_bos && tok.add_bos_default(), parse_special);
}

std::string Model::detokenize(std::span<const int32_t> tokens) const {
  const engine::Tokenizer& tok = impl_->tokenizer();
  for (int32_t id : tokens) {
    if (id < 0 || id >= tok.vocab_size()) {
      engine::fail("detokenize: token id ", id, " is out of range: the vocabulary has ",
                   tok.vocab_size(), " tokens");
    }
  }
  return tok.decode(std::vector<int32_t>(tokens.begin(), tokens.end()));
}

std::string Model::token_text(int32_t token) const {
  const engine::Tokenizer& tok = impl_->tokenizer();
  if (token < 0 || token >= tok.vocab_size()) {
    engine::fail("token id ", token, " is out of range: the vocabulary has ", tok.vocab_size(),
                 " tokens");
  }
  return tok.token_to_piece(token);
}

int32_t Model::bos() const {
  return impl_->tokenizer().bos();
}

int32_t Model::eos() const {
  return impl_->tokenizer().eos();
}

bool Model::is_end_of_generation(int32_t token) const {
  return impl_->tokenizer().is_end_of_generation(token);
}

std::string Model::Impl::render_chat(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt,
                                     const std::string& template_name) const {
  std::vector<engine::ChatMessage> m;
  for (const ChatMessage& x : messages) m.push_back({x.role, x.content});
  return chat_template_of(*model, template_name).render(m, add_generation_prompt);
}

std::string Model::render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                               const std::string& template_name) const {
  return impl_->render_chat(messages, add_generation_prompt, template_name);
}

Adapter Model::load_adapter(const std::string& path) {
  std::error_code ec;
  engine::LoraAdapter host = std::filesystem::is_directory(path, ec)
                                 ? engine::load_peft(path)
                                 : engine::load_adapter_gguf(path);
  if (std::filesystem::is_directory(path, ec)) {
    host.base_arch = impl_->model->hparams().arch;
  } else {  // a llama model's GGUF adapter: W_q, W_k rows in the file's order
    engine::adapter_rows_from_file(host, impl_->model->hparams(), path);
  }
  Adapter::Impl a;
  a.owner = impl_.get();
  a.path = path;
  a.summary = engine::lora_summary(host);
  a.device =
      std::make_unique<engine::DeviceAdapter>(host, impl_->model->hparams(), *impl_->backend, path);
  impl_->adapters.push_back(std::move(a));
  return ApiAccess::adapter(&impl_->adapters.back());
}

std::vector<float> Model::logits(std::span<const int32_t> tokens,
                                 std::span<const AdapterScale> adapters) {
  if (tokens.empty()) engine::fail("logits: no tokens");
  const engine::LoraSet set = impl_->lora_set(adapters);
  engine::Session session(*impl_->model, int64_t(tokens.size()), *impl_->backend,
                          impl_->forward_options(&set));
  std::vector<float> out;
  session.eval(std::vector<int32_t>(tokens.begin(), tokens.end()), out, true);
  return out;
}

}  // namespace trit
