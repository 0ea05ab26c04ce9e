#include "train/trainer.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <thread>

#include "core/clock.h"
#include "core/digest.h"
#include "core/error.h"
#include "core/random.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "io/adapter_gguf.h"
#include "io/file_util.h"
#include "model/llama_layout.h"
#include "model/lora_set.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/lora_init.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/progress.h"
#include "train/schedule.h"
#include "train/trainable_model.h"

namespace trit::engine {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

double peak_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

std::string strip_gguf(const std::string& path) {
  return path.size() > 5 && path.substr(path.size() - 5) == ".gguf"
             ? path.substr(0, path.size() - 5)
             : path;
}

// What the run trains on, independent of where the files lie (a checkpoint written on another
// device resumes here): FNV-1a over the train and validation examples' tokens and masks.
std::string data_digest(const DatasetSplits& d) {
  Fnv1a64 h;
  auto mix = [&](const void* p, size_t n) { h.update(p, n); };
  for (const Dataset* set : {&d.train, &d.valid}) {
    const uint64_t n = set->examples.size();
    mix(&n, sizeof n);
    for (const Example& e : set->examples) {
      const uint64_t len = e.tokens.size();
      mix(&len, sizeof len);
      mix(e.tokens.data(), e.tokens.size() * sizeof(int32_t));
      mix(e.loss_mask.data(), e.loss_mask.size());
    }
  }
  return "tokens:" + h.hex();
}

// The settings a resumed run must share with the checkpoint it continues. The model by its
// file name and size and the data by its tokens, not their paths: a delegated run's checkpoints
// come from another device's copies of the same files.
json run_settings(const std::string& model_path, const DatasetSplits& data,
                  const FinetuneOptions& o, int64_t total_steps) {
  std::error_code ec;
  const auto model_bytes = fs::file_size(model_path, ec);
  return {{"model", fs::path(model_path).filename().string()},
          {"model_bytes", ec ? 0 : int64_t(model_bytes)},
          {"data", data_digest(data)},
          {"targets", o.targets},
          {"rank", o.rank},
          {"alpha", o.alpha},
          {"rslora", o.rslora},
          {"dropout", o.dropout},
          {"lr", o.lr},
          {"schedule", o.schedule},
          {"warmup", o.warmup},
          {"weight_decay", o.weight_decay},
          {"grad_clip", o.grad_clip},
          {"total_steps", total_steps},
          {"ctx", o.ctx},
          {"batch", o.batch},
          {"grad_accum", o.grad_accum},
          {"mask_prompt", o.mask_prompt},
          {"act_quant", o.act_quant},
          {"seed", o.seed}};
}

// One fine-tuning run, step by step.
class FinetuneRun {
 public:
  FinetuneRun(const Model& model, Backend& backend, const FinetuneOptions& o,
              const FinetuneControl& control)
      : model_(model), be_(backend), o_(o), control_(control) {
    if (Collective* c = control.collective) {
      rank_ = c->rank();
      ranks_ = c->size();
      if (ranks_ < 1 || rank_ < 0 || rank_ >= ranks_) {
        fail("data-parallel: rank ", rank_, " of ", ranks_, " ranks");
      }
      if (rank_ != 0) control_.on_event = nullptr;  // rank 0 reports for every rank
    }
  }

  FinetuneResult run();

 private:
  void message(const std::string& line) const;
  void load_data();
  void make_adapter();
  int64_t restore();  // returns the step to start from
  void validate(int64_t step);
  void train_step(int64_t step);
  void save_checkpoint_at(int64_t step);
  // The adapter as its GGUF holds it (a llama model's q, k rows in the file's order).
  LoraAdapter file_order(const LoraAdapter& a) const {
    LoraAdapter f = a;
    adapter_rows_to_file(f, model_.hparams(), o_.out);
    return f;
  }
  // Waits while paused; false when a stop request came meanwhile.
  bool wait_while_paused() const;
  bool stop_requested() const { return control_.stop && control_.stop->load(); }
  // Data-parallel: rank 0 writes the files; every rank sums its share of a step with the others'.
  bool lead() const { return rank_ == 0; }
  void sum_over_ranks(std::span<double> v) const {
    if (ranks_ > 1) control_.collective->sum(v);
  }
  // The other ranks are gone: a checkpoint of the run up to `step` (rank 0), then the error.
  [[noreturn]] void ranks_lost(const RanksLost& e, int64_t step, const std::string& when) {
    save_checkpoint_at(step);
    fail(e.what(), when, "; ",
         lead() ? res_.last_checkpoint + " holds the run up to step " + std::to_string(step) +
                      ": resume from it (--resume), with any number of ranks"
                : "rank 0 checkpoints the run up to step " + std::to_string(step));
  }
  // A stop request of any rank stops every rank at the same step.
  bool stop_agreed() const {
    double flag = stop_requested() ? 1 : 0;
    sum_over_ranks({&flag, 1});
    return flag > 0;
  }

  const Model& model_;
  Backend& be_;
  const FinetuneOptions& o_;
  FinetuneControl control_;
  int rank_ = 0, ranks_ = 1;
  DatasetSplits data_;
  LoraAdapter adapter_;
  int64_t per_epoch_ = 1, total_ = 0;
  int64_t saved_step_ = -1;  // the step of the checkpoint written last
  int64_t bad_in_row_ = 0;   // steps just before this one whose loss or gradient was not finite
  int64_t pack_tokens_ = 0;  // tokens of one pass (pack_tokens_for)
  json settings_;
  std::string ckpt_dir_;
  std::unique_ptr<BatchIterator> batches_;
  AdamWOptions aopt_;
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<TrainableModel> tm_;
  ScheduleOptions sched_;
  std::unique_ptr<MetricsWriter> metrics_;
  std::unique_ptr<ProgressMeter> meter_;
  std::chrono::steady_clock::time_point t_begin_;
  FinetuneResult res_;
};

void FinetuneRun::message(const std::string& line) const {
  if (!control_.on_event) return;
  FinetuneEvent e;
  e.kind = FinetuneEvent::Kind::Message;
  e.line = line;
  control_.on_event(e);
}

void FinetuneRun::load_data() {
  const Tokenizer* tok = model_.tokenizer();
  if (!tok) fail(model_.path(), ": the model has no tokenizer; fine-tuning reads text data");
  const ChatTemplate tmpl = o_.chat_template.empty() ? ChatTemplate::for_model(model_.file())
                                                     : ChatTemplate::builtin(o_.chat_template);
  DatasetOptions dopt;
  dopt.ctx = o_.ctx;
  dopt.mask_prompt = o_.mask_prompt;
  data_ = load_dataset(o_.data, *tok, tmpl, dopt,
                       [&](const std::string& w) { message("warning: " + w); });
}

void FinetuneRun::make_adapter() {
  const HParams& hp = model_.hparams();
  if (!o_.init_adapter.empty()) {
    adapter_ = load_adapter_gguf(o_.init_adapter);
    check_adapter_against(adapter_, hp, o_.init_adapter);
    adapter_rows_from_file(adapter_, hp, o_.init_adapter);
  } else {
    adapter_ = lora_init(hp, o_.targets, o_.rank, o_.alpha, o_.rslora, o_.seed);
  }
  adapter_.base_arch = hp.arch;
  adapter_.dropout = o_.dropout;
}

int64_t FinetuneRun::restore() {
  if (o_.resume.empty()) return 0;
  std::string dir = o_.resume;
  if (o_.resume == "latest") {
    // The newest checkpoint that is whole: a damaged one (a flipped byte, a truncated file) is
    // passed over, and the run says so.
    std::vector<std::string> damaged;
    dir = newest_good_checkpoint(ckpt_dir_, [&](const std::string& why) {
      damaged.push_back(why);
      message("warning: " + why + "; trying an older checkpoint");
    });
    if (dir.empty() && !damaged.empty()) {
      fail(ckpt_dir_, ": every checkpoint is damaged (the newest: ", damaged.front(), ")");
    }
    if (dir.empty()) fail(ckpt_dir_, ": no checkpoint to resume from");
  }
  const Checkpoint c = read_checkpoint(dir);
  for (const std::string& line : check_same_settings(c.settings, settings_, dir)) {
    message("resuming: " + line);
  }
  adapter_ = load_adapter_gguf((fs::path(dir) / "adapter.gguf").string());
  adapter_rows_from_file(adapter_, model_.hparams(), dir);
  adapter_.dropout = o_.dropout;
  opt_->load(read_whole_file((fs::path(dir) / "optimizer.bin").string()),
             (fs::path(dir) / "optimizer.bin").string());
  batches_->restore(c.data_state);
  message(cat("resuming from ", dir, " at step ", c.step));
  return c.step;
}

void FinetuneRun::validate(int64_t step) {
  const Dataset& valid = data_.has_valid ? data_.valid : data_.test;
  if (!(data_.has_valid || data_.has_test) || valid.examples.empty()) return;
  const int64_t n = o_.val_examples > 0
                        ? std::min<int64_t>(o_.val_examples, int64_t(valid.examples.size()))
                        : int64_t(valid.examples.size());
  double norm = 0;
  for (int64_t i = 0; i < n; ++i) norm += double(valid.examples[size_t(i)].n_targets());
  double loss = 0;
  // Groups of `batch` examples, packed into passes as training's.
  for (int64_t i0 = 0; i0 < n; i0 += o_.batch) {
    std::vector<int64_t> idx;
    for (int64_t i = i0; i < std::min(n, i0 + o_.batch); ++i) idx.push_back(i);
    const Batch b = make_batch(valid, idx);
    for (const PackedRows& p : pack_rows(b, pack_tokens_, rank_, ranks_)) {
      if (std::none_of(p.mask.begin(), p.mask.end(), [](float m) { return m != 0; })) continue;
      loss += tm_->forward_loss(p.tokens.data(), p.targets.data(), p.mask.data(), p.tokens_total(),
                                float(norm), p.lengths);
    }
  }
  sum_over_ranks({&loss, 1});
  if (lead()) metrics_->write(ValMetrics{step, loss, std::exp(loss)});
  res_.last_val_loss = loss;
  if (control_.on_event) {
    FinetuneEvent e;
    e.kind = FinetuneEvent::Kind::Validation;
    e.step = step;
    e.total_steps = total_;
    e.val_loss = loss;
    e.line = meter_->val_line(step, loss);
    control_.on_event(e);
  }
}

void FinetuneRun::train_step(int64_t step) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Batch> micro;
  double norm = 0;
  for (int64_t a = 0; a < o_.grad_accum; ++a) {
    micro.push_back(batches_->next());
    norm += double(micro.back().n_targets);
  }
  tm_->zero_grads();
  double loss = 0;
  int64_t tokens = 0;
  for (size_t a = 0; a < micro.size(); ++a) {
    for (const PackedRows& p : pack_rows(micro[a], pack_tokens_, rank_, ranks_)) {
      // The dropout key of the pass's first row (a pass of one row draws what it always has).
      const uint64_t key = splitmix64(
          o_.seed ^ splitmix64(uint64_t(step) * 1000003u + a * 7919u + uint64_t(p.first_row)));
      loss += tm_->forward_backward(p.tokens.data(), p.targets.data(), p.mask.data(),
                                    p.tokens_total(), float(norm), key, p.lengths);
      tokens += p.tokens_total();
    }
  }
  if (ranks_ > 1) {  // the step's loss, tokens and gradients: every rank's share summed
    double sums[2] = {loss, double(tokens)};
    sum_over_ranks(sums);
    loss = sums[0];
    tokens = int64_t(sums[1]);
    tm_->sum_grads(*control_.collective);
  }
  const double lr = schedule_lr(sched_, step);
  // A non-finite loss or gradient norm leaves the adapter and the optimizer as they were (an
  // absurd learning rate, or data that overflows the activations).
  const bool loss_ok = std::isfinite(loss);
  const float gnorm = loss_ok ? tm_->optimizer_step(aopt_, lr, float(o_.grad_clip)) : std::nanf("");
  if (!loss_ok || !std::isfinite(gnorm)) {
    ++bad_in_row_;
    message(cat("warning: step ", step + 1, ": the ", loss_ok ? "gradient norm" : "loss",
                " is not finite; the step is skipped (", bad_in_row_, " in a row)"));
  } else {
    bad_in_row_ = 0;
  }
  const double secs = seconds_since(t0);
  TrainMetrics m;
  m.step = step + 1;
  m.epoch = double(step + 1) / double(per_epoch_);
  m.loss = loss;
  m.lr = lr;
  m.grad_norm = gnorm;
  m.tokens_per_s = double(tokens) / std::max(secs, 1e-9);
  m.peak_mib = peak_mib();
  m.elapsed_s = seconds_since(t_begin_);
  if (lead()) metrics_->write(m);
  const std::string line = meter_->step_line(step + 1, loss, lr, tokens, secs, m.peak_mib);
  res_.last_loss = loss;
  res_.steps_done = step + 1;
  if (control_.on_event) {
    FinetuneEvent e;
    e.kind = FinetuneEvent::Kind::Step;
    e.step = m.step;
    e.total_steps = total_;
    e.epoch = m.epoch;
    e.loss = loss;
    e.lr = lr;
    e.grad_norm = gnorm;
    e.tokens_per_s = m.tokens_per_s;
    e.peak_mib = m.peak_mib;
    e.eta_s = meter_->eta_s(step + 1);
    e.elapsed_s = m.elapsed_s;
    e.line = line;
    control_.on_event(e);
  }
}

void FinetuneRun::save_checkpoint_at(int64_t step) {
  // A stop while paused comes right after the step's own checkpoint: writing it again would
  // replace the folder under a reader that the first one's event sent to it.
  if (step == saved_step_ || !lead()) return;
  saved_step_ = step;
  tm_->sync_adapter();
  tm_->save_optimizer(*opt_);
  res_.last_checkpoint =
      save_checkpoint(ckpt_dir_, step, file_order(adapter_), *opt_, batches_->state(), settings_);
  if (control_.on_event) {
    FinetuneEvent e;
    e.kind = FinetuneEvent::Kind::Checkpoint;
    e.step = step;
    e.total_steps = total_;
    e.checkpoint = res_.last_checkpoint;
    e.line = "checkpoint: " + res_.last_checkpoint;
    control_.on_event(e);
  }
}

bool FinetuneRun::wait_while_paused() const {
  while (control_.pause && control_.pause->load()) {
    if (stop_requested()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return !stop_requested();
}

FinetuneResult FinetuneRun::run() {
  load_data();
  make_adapter();
  per_epoch_ = std::max<int64_t>(
      1, (int64_t(data_.train.examples.size()) + o_.batch - 1) / o_.batch / o_.grad_accum);
  total_ = o_.steps > 0 ? o_.steps : o_.epochs * per_epoch_;
  settings_ = run_settings(model_.path(), data_, o_, total_);
  ckpt_dir_ = o_.checkpoint_dir.empty() ? strip_gguf(o_.out) + ".checkpoints" : o_.checkpoint_dir;
  batches_ = std::make_unique<BatchIterator>(data_.train, o_.batch, o_.seed);
  aopt_.weight_decay = o_.weight_decay;
  opt_ = std::make_unique<AdamW>(aopt_);
  const int64_t start = restore();

  TrainPassOptions topt;
  topt.checkpointing = o_.checkpointing;
  topt.act_quant = o_.act_quant;
  topt.dropout = o_.dropout;
  tm_ = std::make_unique<TrainableModel>(model_, adapter_, be_, topt);
  pack_tokens_ = pack_tokens_for(be_, o_.pack_tokens, o_.ctx);
  tm_->check_budget(std::max(o_.ctx, std::min(pack_tokens_, o_.ctx * o_.batch)));
  tm_->load_optimizer(*opt_);

  sched_.kind = parse_schedule(o_.schedule);
  sched_.base_lr = o_.lr;
  sched_.warmup = o_.warmup;
  sched_.total_steps = total_;

  res_.adapter_path = o_.out;
  if (const fs::path dir = fs::path(o_.out).parent_path(); !dir.empty()) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail(dir.string(), ": cannot create the adapter's folder: ", ec.message());
  }
  res_.metrics_path = strip_gguf(o_.out) + ".metrics.jsonl";
  res_.plot_path = strip_gguf(o_.out) + ".loss.svg";
  if (lead()) metrics_ = std::make_unique<MetricsWriter>(res_.metrics_path, start > 0 ? start : -1);
  meter_ = std::make_unique<ProgressMeter>(total_, start);

  if (start == 0) validate(0);
  t_begin_ = std::chrono::steady_clock::now();
  for (int64_t step = start; step < total_; ++step) {
    if (step > start && !wait_while_paused()) {  // a stop request while paused
      save_checkpoint_at(step);
      res_.stopped = true;
      message(cat("stopped at step ", step, "; resume with --resume"));
      break;
    }
    const BatchState before = batches_->state();
    try {
      train_step(step);
    } catch (const DeviceOutOfMemory& e) {
      // The device still works and holds the adapter and moments of the last step (an update
      // counts once it ran: TrainableModel::optimizer_step): they are checkpointed with the
      // data as it was before this step, once what the failed step recorded is dropped.
      be_.abandon();
      if (tm_->update_interrupted()) {
        // The failure came while the update ran: part of it may have run. The newest
        // checkpoint on disk is where the run can go on.
        const std::string newest = newest_good_checkpoint(ckpt_dir_, nullptr);
        fail(e.what(), " at step ", step + 1, ", during the optimizer's update; ",
             newest.empty() ? std::string("no checkpoint was written yet")
                            : "resume from the newest checkpoint, " + newest + " (--resume)");
      }
      batches_->restore(before);
      save_checkpoint_at(step);
      fail(e.what(), " at step ", step + 1, "; ", res_.last_checkpoint,
           " holds the run up to step ", step,
           ": resume from it (--resume), on the CPU with --device cpu");
    } catch (const RanksLost& e) {
      // Data-parallel: the step's sums did not complete (a rank is gone); the adapter and
      // moments are the step before's, checkpointed with the data as it was before this step.
      batches_->restore(before);
      ranks_lost(e, step, " at step " + std::to_string(step + 1));
    } catch (const DeviceLost& e) {
      // What the device held is gone: the newest checkpoint on disk is where the run can go on.
      const std::string newest = newest_good_checkpoint(ckpt_dir_, nullptr);
      throw DeviceLost(cat(e.what(), " at step ", step + 1, "; ",
                           newest.empty() ? std::string("no checkpoint was written yet")
                                          : "the newest checkpoint is " + newest));
    }
    if (o_.max_bad_steps > 0 && bad_in_row_ >= o_.max_bad_steps) {
      save_checkpoint_at(step + 1);  // the adapter of the last good step, the data after the bad
      fail("stopped at step ", step + 1, ": ", bad_in_row_,
           " steps in a row had a non-finite loss or gradient (each was skipped); the adapter of "
           "the last step that had neither is in ",
           res_.last_checkpoint,
           ". Check the data, or resume from it (--resume) with a lower --lr (or from an earlier "
           "checkpoint if that step had already diverged)");
    }
    const bool last = step + 1 == total_;
    if ((o_.val_every > 0 && (step + 1) % o_.val_every == 0) || last) validate(step + 1);
    bool stopping = stop_requested();
    if (ranks_ > 1) {
      try {
        stopping = stop_agreed();
      } catch (const RanksLost& e) {
        // This step's update ran on every rank: its checkpoint holds the run. An error, not a
        // stop: the job is broken (finishing MPI with a rank gone could wait forever).
        ranks_lost(e, step + 1, " after step " + std::to_string(step + 1));
      }
    }
    if ((o_.save_every > 0 && (step + 1) % o_.save_every == 0) || stopping) {
      save_checkpoint_at(step + 1);
    }
    if (stopping && !last) {
      res_.stopped = true;
      message(cat("stopped at step ", step + 1, "; resume with --resume"));
      break;
    }
  }
  tm_->sync_adapter();
  if (!lead()) return res_;
  save_adapter_gguf(file_order(adapter_), o_.out);
  write_loss_curve_svg(res_.plot_path, read_metrics(res_.metrics_path), "trit finetune: loss");
  return res_;
}

}  // namespace

int64_t pack_tokens_for(const Backend& be, int64_t requested, int64_t ctx) {
  if (requested >= 0) return requested;
  return be.host_memory() ? ctx : std::max(kAutoPackTokens, ctx);
}

void check_finetune_options(const FinetuneOptions& o) {
  if (o.rank <= 0) fail_option("rank", "rank must be positive, got ", o.rank);
  if (o.pack_tokens < -1) {
    fail_option("pack_tokens", "pack_tokens must be >= 0 (or -1: the device decides), got ",
                o.pack_tokens);
  }
  if (o.batch <= 0) fail_option("batch", "batch must be positive, got ", o.batch);
  if (o.grad_accum <= 0)
    fail_option("grad_accum", "grad_accum must be positive, got ", o.grad_accum);
  if (o.ctx < 2) fail_option("ctx", "ctx must be at least 2, got ", o.ctx);
  if (o.out.empty()) fail_option("output", "the adapter's output path is empty");
  if (o.data.empty()) fail_option("data", "the data path is empty");
  if (!(o.dropout >= 0.0f && o.dropout < 1.0f)) {
    fail_option("dropout", "lora dropout must be in [0, 1), got ", o.dropout);
  }
  if (!std::isfinite(o.lr) || o.lr < 0) fail_option("lr", "lr must be finite and >= 0, got ", o.lr);
  if (o.max_bad_steps < 0) {
    fail_option("max_bad_steps", "max_bad_steps must be >= 0, got ", o.max_bad_steps);
  }
  if (o.epochs <= 0 && o.steps <= 0)
    fail_option("epochs", "epochs must be positive (or give steps), got ", o.epochs);
  // The parsers' messages, with the field they came from.
  try {
    (void)parse_schedule(o.schedule);
  } catch (const Error& e) {
    throw Error(e.what(), "schedule");
  }
  try {
    (void)lora_target_suffixes(o.targets);
  } catch (const Error& e) {
    throw Error(e.what(), "targets");
  }
}

FinetuneResult finetune(const Model& model, Backend& backend, const FinetuneOptions& o,
                        const FinetuneControl& control) {
  check_finetune_options(o);
  if (model.embedded_adapter()) {
    fail(model.path(), ": the model carries an adapter inside it (trit merge --mode attach); ",
         "fine-tune the base model, with that adapter as the adapter to train further");
  }
  for (const BlockWeights& b : model.weights().blocks) {
    for (const LinearWeight* w : {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down}) {
      if (w->is_float()) {
        fail(model.path(), ": tensor ", w->name,
             " holds merged float weights; fine-tune the ternary base model instead");
      }
    }
  }
  if (control.stop && control.stop->load()) {
    FinetuneResult r;
    r.stopped = true;
    return r;
  }
  FinetuneRun run(model, backend, o, control);
  return run.run();
}

}  // namespace trit::engine
