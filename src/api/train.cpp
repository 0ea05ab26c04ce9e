// trit::Trainer over the engine's fine-tuning run (train/trainer.h), on the model's backend.
#include "trit/train.h"

#include <optional>

#include "api/impl.h"
#include "core/error.h"
#include "train/trainer.h"

namespace trit {

struct Trainer::Impl {
  Impl(Model::Impl& model, engine::FinetuneOptions o) : m(model), options(std::move(o)) {}
  Model::Impl& m;
  engine::FinetuneOptions options;
  std::function<void(const TrainProgress&)> on_progress;
  std::atomic<bool> stop{false}, pause{false};
  DataParallel* ranks = nullptr;
};

namespace {

// The application's ranks as the engine's trainer takes them.
class RanksOf final : public engine::Collective {
 public:
  explicit RanksOf(DataParallel& r) : r_(r) {}
  int rank() const override { return r_.rank(); }
  int size() const override { return r_.size(); }
  void sum(std::span<double> v) override {
    lost_if_throws([&] { r_.sum(v); });
  }
  void sum(std::span<float> v) override {
    lost_if_throws([&] { r_.sum(v); });
  }

 private:
  template <class F>
  static void lost_if_throws(F f) {
    try {
      f();
    } catch (const std::exception& e) {
      throw engine::RanksLost(e.what());
    }
  }
  DataParallel& r_;
};

}  // namespace

namespace {

engine::FinetuneOptions engine_options(const TrainOptions& o, bool act_quant) {
  engine::FinetuneOptions e;
  e.data = o.data;
  e.out = o.output;
  e.targets = o.targets;
  e.rank = o.rank;
  e.alpha = o.alpha;
  e.rslora = o.rslora;
  e.dropout = o.dropout;
  e.init_adapter = o.init_adapter;
  e.lr = o.lr;
  e.schedule = o.schedule;
  e.warmup = o.warmup;
  e.weight_decay = o.weight_decay;
  e.grad_clip = o.grad_clip;
  e.epochs = o.epochs;
  e.steps = o.steps;
  e.ctx = o.ctx;
  e.batch = o.batch;
  e.grad_accum = o.grad_accum;
  e.pack_tokens = o.pack_tokens;
  e.mask_prompt = o.mask_prompt;
  e.chat_template = o.chat_template;
  e.checkpointing = o.grad_checkpointing;
  e.seed = o.seed;
  e.act_quant = act_quant;
  e.val_every = o.val_every;
  e.val_examples = o.val_examples;
  e.save_every = o.save_every;
  e.max_bad_steps = o.max_bad_steps;
  e.checkpoint_dir = o.checkpoint_dir;
  e.resume = o.resume;
  return e;
}

TrainProgress progress_of(const engine::FinetuneEvent& e) {
  TrainProgress p;
  switch (e.kind) {
    case engine::FinetuneEvent::Kind::Message:
      p.kind = TrainProgress::Kind::Message;
      break;
    case engine::FinetuneEvent::Kind::Step:
      p.kind = TrainProgress::Kind::Step;
      break;
    case engine::FinetuneEvent::Kind::Validation:
      p.kind = TrainProgress::Kind::Validation;
      break;
    case engine::FinetuneEvent::Kind::Checkpoint:
      p.kind = TrainProgress::Kind::Checkpoint;
      break;
  }
  p.step = e.step;
  p.total_steps = e.total_steps;
  p.epoch = e.epoch;
  p.loss = e.loss;
  p.lr = e.lr;
  p.grad_norm = e.grad_norm;
  p.tokens_per_s = e.tokens_per_s;
  p.peak_mib = e.peak_mib;
  p.eta_s = e.eta_s;
  p.elapsed_s = e.elapsed_s;
  p.val_loss = e.val_loss;
  p.checkpoint = e.checkpoint;
  p.line = e.line;
  return p;
}

}  // namespace

void check_train_options(const TrainOptions& options) {
  engine::check_finetune_options(engine_options(options, true));
}

Trainer::Trainer(Model& model, const TrainOptions& options) {
  Model::Impl& m = ApiAccess::impl(model);
  impl_ = std::make_unique<Impl>(m, engine_options(options, m.act_quant));
  engine::check_finetune_options(impl_->options);
}

Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;
Trainer::~Trainer() = default;

void Trainer::on_progress(std::function<void(const TrainProgress&)> callback) {
  impl_->on_progress = std::move(callback);
}

void Trainer::set_data_parallel(DataParallel* ranks) {
  impl_->ranks = ranks;
}

TrainResult Trainer::run() {
  Impl& t = *impl_;
  engine::FinetuneControl control;
  control.stop = &t.stop;
  control.pause = &t.pause;
  std::optional<RanksOf> ranks;
  if (t.ranks && t.ranks->size() > 1) control.collective = &ranks.emplace(*t.ranks);
  if (t.on_progress && (!t.ranks || t.ranks->rank() == 0)) {
    control.on_event = [&](const engine::FinetuneEvent& e) { t.on_progress(progress_of(e)); };
    TrainProgress device;
    device.line = "device: " + t.m.backend->description();
    if (!t.m.fallback.empty()) {
      TrainProgress fallback;
      fallback.line = "running on the CPU: " + t.m.fallback;
      t.on_progress(fallback);
    }
    t.on_progress(device);
  }
  struct ClearStop {  // a cancel() ends one run
    std::atomic<bool>& flag;
    ~ClearStop() { flag.store(false); }
  } clear{t.stop};
  const engine::FinetuneResult r = engine::finetune(*t.m.model, *t.m.backend, t.options, control);
  TrainResult out;
  out.steps_done = r.steps_done;
  out.stopped = r.stopped;
  out.last_loss = r.last_loss;
  out.last_val_loss = r.last_val_loss;
  out.adapter_path = r.adapter_path;
  out.metrics_path = r.metrics_path;
  out.plot_path = r.plot_path;
  out.last_checkpoint = r.last_checkpoint;
  return out;
}

void Trainer::pause() {
  impl_->pause.store(true);
}

void Trainer::resume() {
  impl_->pause.store(false);
}

void Trainer::cancel() {
  impl_->stop.store(true);
}

}  // namespace trit
