// trit::BatchGenerator over the engine's continuous batching (infer/batch_generate.h): each
// request's adapters resolved against the model, its options and callbacks passed through.
#include "trit/batch.h"

#include <algorithm>
#include <chrono>

#include "api/impl.h"
#include "core/error.h"
#include "infer/batch_generate.h"

namespace trit {

struct BatchGenerator::Impl {
  Model::Impl& m;
  engine::BatchGenerator gen;

  Impl(Model::Impl& model, const engine::BatchLimits& limits)
      : m(model), gen(*model.model, *model.backend, model.model->tokenizer(), limits) {
    m.lora_set({});  // uploads the model's embedded adapter now, on this thread
  }
};

BatchGenerator::BatchGenerator(Model& model, const BatchOptions& options) {
  Model::Impl& m = ApiAccess::impl(model);
  engine::BatchLimits limits;
  if (options.n_slots <= 0) {
    engine::fail_option("n_slots", "batch: n_slots must be positive, got ", options.n_slots);
  }
  if (options.n_ctx < 0) {
    engine::fail_option("n_ctx", "batch: n_ctx must be positive, got ", options.n_ctx);
  }
  if (options.n_batch < 0) {
    engine::fail_option("n_batch", "batch: n_batch must be positive (or 0: automatic), got ",
                        options.n_batch);
  }
  limits.n_slots = options.n_slots;
  limits.n_ctx =
      options.n_ctx > 0 ? options.n_ctx : std::min<int64_t>(m.model->hparams().n_ctx_train, 4096);
  limits.n_batch = options.n_batch > 0 ? options.n_batch : m.backend->host_memory() ? 64 : 512;
  limits.act_quant = m.act_quant;
  limits.kv_type = m.kv_type;
  impl_ = std::make_unique<Impl>(m, limits);
}

BatchGenerator::BatchGenerator(BatchGenerator&&) noexcept = default;
BatchGenerator& BatchGenerator::operator=(BatchGenerator&&) noexcept = default;
BatchGenerator::~BatchGenerator() = default;

uint64_t BatchGenerator::submit(BatchRequest request) {
  engine::BatchJob job;
  job.prompt = std::move(request.prompt);
  const GenerateOptions& o = request.options;
  job.gen = engine_generate_options(o, impl_->m.model->hparams().n_vocab);
  if (o.on_text) job.gen.on_text = o.on_text;
  if (o.on_logprob) {
    job.gen.on_logprob = [f = o.on_logprob](const engine::TokenLogprob& t) {
      f(public_logprob(t));
    };
  }
  // Adapters at scale 0 add nothing: left out, so that their rows share passes with others.
  std::vector<AdapterScale> uses;
  for (const AdapterScale& u : o.adapters) {
    if (u.scale != 0.0f) uses.push_back(u);
  }
  job.lora = impl_->m.lora_set(uses);  // checks each adapter belongs to the model
  job.lora_key = impl_->m.lora_key(uses);
  if (request.on_done) {
    job.on_done = [done = std::move(request.on_done)](const engine::BatchResult& b) {
      GenerateResult r;
      r.text = b.stats.text;
      r.tokens = b.stats.tokens;
      for (const engine::TokenLogprob& t : b.stats.logprobs) {
        r.logprobs.push_back(public_logprob(t));
      }
      r.stop_reason = public_stop_reason(b.stats.stop_reason);
      r.n_prompt = b.stats.n_prompt;
      r.n_cached = b.n_cached;
      r.n_generated = b.stats.n_generated;
      r.prompt_seconds = b.stats.prompt_seconds;
      r.generate_seconds = b.stats.generate_seconds;
      r.queue_seconds = b.queue_seconds;
      r.error = b.error;
      done(r);
    };
  }
  return impl_->gen.submit(std::move(job));
}

void BatchGenerator::cancel(uint64_t id) {
  impl_->gen.cancel(id);
}

bool BatchGenerator::step() {
  return impl_->gen.step();
}

bool BatchGenerator::wait_for_work(int64_t timeout_ms) {
  return impl_->gen.wait_for_work(std::chrono::milliseconds(std::max<int64_t>(timeout_ms, 0)));
}

BatchGenerator::Status BatchGenerator::status() const {
  const engine::BatchGenerator::Counts c = impl_->gen.counts();
  return {c.slots, c.active, c.queued};
}

int64_t BatchGenerator::n_ctx() const {
  return impl_->gen.limits().n_ctx;
}

}  // namespace trit
