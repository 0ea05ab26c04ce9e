// What stands behind the public API's handles (include/trit/): each class's Impl over the
// engine, and ApiAccess, through which the API's files reach each other's Impl.
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "core/lora.h"
#include "core/thread_pool.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "model/lora_set.h"
#include "model/model.h"
#include "trit/model.h"

namespace trit {

struct Adapter::Impl {
  const Model::Impl* owner = nullptr;
  std::string path;
  std::string summary;
  std::unique_ptr<engine::DeviceAdapter> device;
};

// A cache_type option ("", "f32" or "f16"); throws naming the option otherwise.
engine::KvType kv_type_of(const std::string& cache_type);

struct Model::Impl {
  std::unique_ptr<engine::Model> model;
  std::unique_ptr<engine::ThreadPool> pool;
  std::unique_ptr<engine::Backend> backend;  // after pool, before every tensor of it
  std::string fallback;
  bool act_quant = true;
  engine::KvType kv_type = engine::KvType::F32;  // ModelOptions::cache_type
  ModelInfo info;
  // The model's own adapter (trit merge --mode attach), uploaded when first used.
  std::unique_ptr<engine::DeviceAdapter> embedded;
  std::deque<Adapter::Impl> adapters;  // a deque: handles keep pointing at their entry

  // How generation passes compute, with these adapters (null: none).
  engine::ForwardOptions forward_options(const engine::LoraSet* lora) const {
    return {act_quant, lora, kv_type};
  }
  const engine::Tokenizer& tokenizer() const;  // throws naming the file when it has none
  // Model::render_chat.
  std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                          const std::string& template_name) const;
  // The branches of a call: the embedded adapter, then `uses` (each checked to belong to this
  // model).
  engine::LoraSet lora_set(std::span<const AdapterScale> uses);
  // An identity of a call's adapters and scales: a cache computed with another one is stale.
  std::vector<std::pair<const void*, float>> lora_key(std::span<const AdapterScale> uses) const;
};

// The engine's generation options for GenerateOptions (sampling, stop strings, limits; the
// callbacks are the caller's to connect; throws where the logit bias names a token outside
// n_vocab), and the public name of an engine stop reason.
engine::GenerateOptions engine_generate_options(const GenerateOptions& o, int64_t n_vocab);
StopReason public_stop_reason(engine::StopReason reason);
TokenLogprob public_logprob(const engine::TokenLogprob& t);

struct ApiAccess {
  static Model::Impl& impl(Model& m) { return *m.impl_; }
  static const Adapter::Impl* impl(const Adapter& a) { return a.impl_; }
  static Adapter adapter(const Adapter::Impl* impl) { return Adapter(impl); }
};

}  // namespace trit
