#include "train/trainer.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <span>

#include "backend/select.h"
#include "core/error.h"
#include "core/random.h"
#include "core/thread_pool.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "io/adapter_gguf.h"
#include "io/file_util.h"
#include "model/lora_set.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
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

// The settings a resumed run must share with the checkpoint it continues.
json run_settings(const FinetuneOptions& o, int64_t total_steps) {
  return {{"model", fs::absolute(o.model).string()},
          {"data", fs::absolute(o.data).string()},
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

// Checkpoint folders are named checkpoint-<step>; the newest complete one, or "".
std::string latest_checkpoint(const std::string& dir) {
  std::string best;
  int64_t best_step = -1;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return best;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("checkpoint-", 0) != 0) continue;
    const std::string num = name.substr(11);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;
    if (!fs::exists(e.path() / "state.json")) continue;
    const int64_t step = std::stoll(num);
    if (step > best_step) {
      best_step = step;
      best = e.path().string();
    }
  }
  return best;
}

struct Checkpoint {
  int64_t step = 0;
  BatchState data_state;
  json settings;
};

// Writes adapter, optimizer state and the run's position to <dir>/checkpoint-<step>, through a
// temporary folder renamed into place.
std::string save_checkpoint(const std::string& dir, int64_t step, const LoraAdapter& adapter,
                            const AdamW& opt, const BatchState& data_state, const json& settings) {
  fs::create_directories(dir);
  const fs::path final_dir = fs::path(dir) / cat("checkpoint-", step);
  const fs::path tmp = fs::path(dir) / cat(".checkpoint-", step, ".tmp");
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  save_adapter_gguf(adapter, (tmp / "adapter.gguf").string());
  write_file_atomic((tmp / "optimizer.bin").string(), opt.save());
  const json state = {{"version", 1}, {"step", step}, {"data", data_state}, {"settings", settings}};
  write_file_atomic((tmp / "state.json").string(), state.dump(2));
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir);
  return final_dir.string();
}

Checkpoint read_checkpoint(const std::string& dir) {
  const std::string path = (fs::path(dir) / "state.json").string();
  json j;
  try {
    j = json::parse(read_whole_file(path));
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  Checkpoint c;
  try {
    c.step = j.at("step").get<int64_t>();
    c.settings = j.at("settings");
    c.data_state = j.at("data").get<BatchState>();
  } catch (const json::exception& e) {
    fail(path, ": ", e.what());
  }
  return c;
}

void check_same_settings(const json& saved, const json& now, const std::string& where) {
  // Settings added after checkpoints were first written, with the value older runs had.
  static const json kAddedLater = {{"act_quant", true}};
  for (auto it = now.begin(); it != now.end(); ++it) {
    if (!saved.contains(it.key()) && kAddedLater.contains(it.key()) &&
        kAddedLater[it.key()] == it.value()) {
      continue;
    }
    if (!saved.contains(it.key())) fail(where, ": the checkpoint has no setting '", it.key(), "'");
    if (saved[it.key()] != it.value()) {
      fail(where, ": setting '", it.key(), "' is ", saved[it.key()].dump(),
           " in the checkpoint but ", it.value().dump(), " now; resume with the same settings");
    }
  }
}

}  // namespace

FinetuneResult finetune(const FinetuneOptions& o, const LogFn& log, const std::atomic<bool>* stop) {
  if (o.rank <= 0) fail("--rank must be positive");
  if (o.batch <= 0 || o.grad_accum <= 0) fail("--batch and --grad-accum must be positive");
  if (o.ctx < 2) fail("--ctx must be at least 2");
  if (o.out.empty()) fail("-o: the adapter's output path is required");
  auto model = Model::load(o.model, [&](const std::string& w) { log("warning: " + w); });
  const HParams& hp = model->hparams();
  if (model->embedded_adapter()) {
    fail(o.model, ": the model carries an adapter inside it (trit merge --mode attach); ",
         "fine-tune the base model, with that adapter as --lora to train it further");
  }
  for (const BlockWeights& b : model->weights().blocks) {
    for (const LinearWeight* w : {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down}) {
      if (w->is_float()) {
        fail(o.model, ": tensor ", w->name,
             " holds merged float weights; fine-tune the ternary base model instead");
      }
    }
  }
  const Tokenizer* tok = model->tokenizer();
  if (!tok) fail(o.model, ": the model has no tokenizer; fine-tuning reads text data");
  const ChatTemplate tmpl = o.chat_template.empty() ? ChatTemplate::for_model(model->file())
                                                    : ChatTemplate::builtin(o.chat_template);
  DatasetOptions dopt;
  dopt.ctx = o.ctx;
  dopt.mask_prompt = o.mask_prompt;
  const DatasetSplits data =
      load_dataset(o.data, *tok, tmpl, dopt, [&](const std::string& w) { log("warning: " + w); });

  LoraAdapter adapter;
  if (!o.init_adapter.empty()) {
    adapter = load_adapter_gguf(o.init_adapter);
    check_adapter_against(adapter, hp, o.init_adapter);
  } else {
    adapter = lora_init(hp, o.targets, o.rank, o.alpha, o.rslora, o.seed);
  }
  adapter.base_arch = hp.arch;
  adapter.dropout = o.dropout;

  ThreadPool pool(o.threads);
  TrainPassOptions topt;
  topt.checkpointing = o.checkpointing;
  topt.act_quant = o.act_quant;
  topt.dropout = o.dropout;
  const int64_t per_epoch = std::max<int64_t>(
      1, (int64_t(data.train.examples.size()) + o.batch - 1) / o.batch / o.grad_accum);
  const int64_t total = o.steps > 0 ? o.steps : o.epochs * per_epoch;
  const json settings = run_settings(o, total);
  const std::string ckpt_dir =
      o.checkpoint_dir.empty() ? strip_gguf(o.out) + ".checkpoints" : o.checkpoint_dir;

  BatchIterator it(data.train, o.batch, o.seed);
  AdamWOptions aopt;
  aopt.weight_decay = o.weight_decay;
  AdamW opt(aopt);
  int64_t start = 0;
  if (!o.resume.empty()) {
    const std::string dir = o.resume == "latest" ? latest_checkpoint(ckpt_dir) : o.resume;
    if (dir.empty()) fail(ckpt_dir, ": no checkpoint to resume from");
    const Checkpoint c = read_checkpoint(dir);
    check_same_settings(c.settings, settings, dir);
    adapter = load_adapter_gguf((fs::path(dir) / "adapter.gguf").string());
    adapter.dropout = o.dropout;
    opt.load(read_whole_file((fs::path(dir) / "optimizer.bin").string()),
             (fs::path(dir) / "optimizer.bin").string());
    it.restore(c.data_state);
    start = c.step;
    log(cat("resuming from ", dir, " at step ", start));
  }
  DeviceRequest request = parse_device(o.device);
  request.max_buffer_bytes = uint64_t(o.max_buffer_mb) << 20;
  BackendChoice choice = make_backend(request, pool);
  if (!choice.fallback_reason.empty()) log(cat("running on the CPU: ", choice.fallback_reason));
  log(cat("device: ", choice.backend->description()));
  TrainableModel tm(*model, adapter, *choice.backend, topt);
  tm.load_optimizer(opt);

  ScheduleOptions sopt;
  sopt.kind = parse_schedule(o.schedule);
  sopt.base_lr = o.lr;
  sopt.warmup = o.warmup;
  sopt.total_steps = total;

  FinetuneResult res;
  res.adapter_path = o.out;
  res.metrics_path = strip_gguf(o.out) + ".metrics.jsonl";
  res.plot_path = strip_gguf(o.out) + ".loss.svg";
  MetricsWriter metrics(res.metrics_path, start > 0 ? start : -1);
  ProgressMeter meter(total, start);

  const Dataset& valid = data.has_valid ? data.valid : data.test;
  const bool has_val = (data.has_valid || data.has_test) && !valid.examples.empty();
  auto validate = [&](int64_t step) {
    if (!has_val) return;
    const int64_t n = o.val_examples > 0
                          ? std::min<int64_t>(o.val_examples, int64_t(valid.examples.size()))
                          : int64_t(valid.examples.size());
    double norm = 0;
    for (int64_t i = 0; i < n; ++i) norm += double(valid.examples[size_t(i)].n_targets());
    double loss = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t idx[1] = {i};
      const Batch b = make_batch(valid, std::span<const int64_t>(idx, 1));
      if (b.n_targets == 0) continue;
      loss += tm.forward_loss(b.tokens.data(), b.targets.data(), b.mask.data(), b.lengths[0],
                              float(norm));
    }
    metrics.write(ValMetrics{step, loss, std::exp(loss)});
    log(meter.val_line(step, loss));
    res.last_val_loss = loss;
  };

  if (start == 0) validate(0);
  const auto t_begin = std::chrono::steady_clock::now();
  for (int64_t step = start; step < total; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Batch> micro;
    double norm = 0;
    for (int64_t a = 0; a < o.grad_accum; ++a) {
      micro.push_back(it.next());
      norm += double(micro.back().n_targets);
    }
    tm.zero_grads();
    double loss = 0;
    int64_t tokens = 0;
    for (size_t a = 0; a < micro.size(); ++a) {
      const Batch& b = micro[a];
      for (int64_t r = 0; r < b.B; ++r) {
        const int64_t T = b.lengths[size_t(r)];
        if (T <= 0) continue;
        const size_t off = size_t(r * b.T);
        const uint64_t key = splitmix64(o.seed ^ splitmix64(uint64_t(step) * 1000003u + a * 7919u + uint64_t(r)));
        loss += tm.forward_backward(b.tokens.data() + off, b.targets.data() + off,
                                    b.mask.data() + off, T, float(norm), key);
        tokens += T;
      }
    }
    const double lr = schedule_lr(sopt, step);
    const float gnorm = tm.optimizer_step(aopt, lr, float(o.grad_clip));
    if (!std::isfinite(gnorm)) {
      log(cat("warning: step ", step + 1, ": gradient norm is not finite; the step is skipped"));
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    TrainMetrics m;
    m.step = step + 1;
    m.epoch = double(step + 1) / double(per_epoch);
    m.loss = loss;
    m.lr = lr;
    m.grad_norm = gnorm;
    m.tokens_per_s = double(tokens) / std::max(secs, 1e-9);
    m.peak_mib = peak_mib();
    m.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_begin).count();
    metrics.write(m);
    log(meter.step_line(step + 1, loss, lr, tokens, secs, m.peak_mib));
    res.last_loss = loss;
    res.steps_done = step + 1;

    const bool last = step + 1 == total;
    if ((o.val_every > 0 && (step + 1) % o.val_every == 0) || last) validate(step + 1);
    const bool stopping = stop && stop->load();
    if ((o.save_every > 0 && (step + 1) % o.save_every == 0) || stopping) {
      tm.sync_adapter();
      tm.save_optimizer(opt);
      res.last_checkpoint = save_checkpoint(ckpt_dir, step + 1, adapter, opt, it.state(), settings);
      log("checkpoint: " + res.last_checkpoint);
    }
    if (stopping && !last) {
      res.stopped = true;
      log(cat("stopped at step ", step + 1, "; resume with --resume"));
      break;
    }
  }
  tm.sync_adapter();
  save_adapter_gguf(adapter, o.out);
  write_loss_curve_svg(res.plot_path, read_metrics(res.metrics_path), "trit finetune: loss");
  return res;
}

}  // namespace trit::engine
