#include "train/trainable_model.h"

#include <algorithm>
#include <cmath>

#include "backend/select.h"
#include "core/error.h"
#include "model/memory_estimate.h"

namespace trit::engine {

// One adapter tensor as the optimizer sees it.
struct TrainableModel::Param {
  std::string name;  // "<layer>.lora_a" / ".lora_b"
  DeviceTensor* value = nullptr;
  DeviceTensor* grad = nullptr;
  std::vector<float>* host = nullptr;  // the LoraAdapter's copy
  std::vector<float>* host_grad = nullptr;
  std::unique_ptr<DeviceTensor> m, v;
  int64_t step = 0;
};

TrainableModel::TrainableModel(const Model& model, LoraAdapter& adapter, Backend& backend,
                               TrainPassOptions opts)
    : model_(model),
      adapter_(adapter),
      be_(backend),
      opts_(opts),
      stream_asked_(opts.stream_weights),
      acts_(be_, model.hparams(), opts) {
  init();
}

TrainableModel::TrainableModel(const Model& model, LoraAdapter& adapter, ThreadPool& pool,
                               TrainPassOptions opts)
    : model_(model),
      adapter_(adapter),
      owned_backend_(make_cpu_backend(pool)),
      be_(*owned_backend_),
      opts_(opts),
      stream_asked_(opts.stream_weights),
      acts_(be_, model.hparams(), opts) {
  init();
}

TrainableModel::~TrainableModel() = default;

void TrainableModel::init() {
  const HParams& hp = model_.hparams();
  (void)resolve_lora({{&adapter_, 1.0f}}, hp);  // checks every shape
  lora_.blocks.resize(size_t(hp.n_layer));
  uint64_t salt = 1;
  for (const std::string& name : lora_layer_order(adapter_)) {
    LoraLayer& L = adapter_.layers.at(name);
    LoraGrad& g = grads_[name];  // filled by grads() (tests): no host copy otherwise
    auto make = [&](const std::string& tname, int64_t rows, int64_t cols) {
      tensors_.push_back(be_.tensor(tname, rows, cols));
      return tensors_.back().get();
    };
    // The values: the adapter's own memory where the backend computes in host memory (one
    // copy of a 13B model's rank-16 adapter is 250 MB), else a device copy kept in sync. The
    // adapter's arrays must then keep their size and place while this object lives.
    auto values = [&](const std::string& tname, std::vector<float>& host, int64_t rows,
                      int64_t cols) {
      if (int64_t(host.size()) == rows * cols) {
        if (auto v = be_.host_view(tname, host.data(), rows, cols)) {
          tensors_.push_back(std::move(v));
          return tensors_.back().get();
        }
      }
      return make(tname, rows, cols);
    };
    LoraBranch br;
    br.a = values(name + ".lora_a", L.a, L.rank, L.n_in);
    br.b = values(name + ".lora_b", L.b, L.n_out, L.rank);
    br.da = make(name + ".lora_a.grad", L.rank, L.n_in);
    br.db = make(name + ".lora_b.grad", L.n_out, L.rank);
    br.scale = adapter_.scaling(L.rank);
    br.salt = salt++;
    const auto target = parse_lora_layer_name(name);
    if (target->layer < 0) {
      lora_.head.push_back(br);
    } else {
      lora_.blocks[size_t(target->layer)][linear_index(target->what)].push_back(br);
    }
    for (int which = 0; which < 2; ++which) {
      Param prm;
      prm.name = name + (which ? ".lora_b" : ".lora_a");
      prm.value = which ? br.b : br.a;
      prm.grad = which ? br.db : br.da;
      prm.host = which ? &L.b : &L.a;
      prm.host_grad = which ? &g.db : &g.da;
      prm.m = be_.tensor(prm.name + ".exp_avg", prm.value->rows(), prm.value->cols());
      prm.v = be_.tensor(prm.name + ".exp_avg_sq", prm.value->rows(), prm.value->cols());
      params_.push_back(std::move(prm));
    }
  }
  check_budget(0);
  upload_adapter();
}

void TrainableModel::check_budget(int64_t max_tokens) {
  const uint64_t budget = model_.mem_budget();
  if (budget == 0) return;
  // The adapter's values, gradients and two AdamW moments, four bytes a parameter each.
  uint64_t params = 0;
  int64_t rank = 0;
  for (const Param& p : params_) {
    params += uint64_t(p.value->rows() * p.value->cols());
    rank = std::max(rank, std::min(p.value->rows(), p.value->cols()));
  }
  const uint64_t state = params * 16;
  // The passes' tensors for sequences of max_tokens (an upper bound: every layer's branches
  // at the adapter's largest rank).
  const uint64_t acts = max_tokens > 0 ? finetune_memory(model_.hparams(), 0, max_tokens, rank,
                                                         "all", opts_.checkpointing, opts_.dropout)
                                             .activations
                                       : 0;
  // Streaming costs a fault for every page of every block in each pass (docs/PERF.md: 2B4T
  // trains about a fifth slower streamed on a 2-core VM); a budget with room for everything
  // keeps the weights, once the passes' size is known. A device streams under any budget (its
  // uploads are the copies).
  const bool keep = max_tokens > 0 && be_.host_memory() && !model_.streaming() &&
                    model_.resident_run_bytes() + state + acts <= budget;
  opts_.stream_weights = stream_asked_ && !keep;
  acts_.set_stream_weights(opts_.stream_weights);
  const bool streams = model_.streaming() || opts_.stream_weights;  // (forward.cpp)
  const uint64_t weights = streams ? model_.min_stream_bytes() : model_.resident_run_bytes();
  if (weights + state + acts > budget) {
    auto mib = [](uint64_t b) { return (b + (1 << 20) - 1) >> 20; };
    fail(model_.path(), ": a memory budget of ", mib(budget),
         " MiB cannot hold this fine-tune: its adapter of ", params, " parameters takes ",
         mib(state), " MiB with gradients and AdamW moments",
         max_tokens > 0 ? cat(", its passes over ", max_tokens, " tokens ", mib(acts), " MiB")
                        : std::string(),
         "; the smallest budget that could work is ", mib(weights + state + acts),
         " MiB (fewer targets, a lower rank or a shorter context need less)");
  }
}

double TrainableModel::forward_backward(const int32_t* tokens, const int32_t* targets,
                                        const float* mask, int64_t T, float norm,
                                        uint64_t dropout_key, std::span<const int64_t> lengths) {
  const TrainBatch batch{tokens, targets, mask, T, norm, dropout_key, lengths};
  const double loss = model_forward(model_, batch, lora_, acts_, true);
  model_backward(model_, batch, lora_, acts_);
  return loss;
}

double TrainableModel::forward_loss(const int32_t* tokens, const int32_t* targets,
                                    const float* mask, int64_t T, float norm,
                                    std::span<const int64_t> lengths) {
  return model_forward(model_, {tokens, targets, mask, T, norm, 0, lengths}, lora_, acts_, false);
}

void TrainableModel::upload_adapter() {
  for (const Param& p : params_) {
    if (int64_t(p.host->size()) != p.value->rows() * p.value->cols()) {
      fail("train: adapter tensor ", p.name, " has ", p.host->size(), " values, ",
           p.value->rows() * p.value->cols(), " expected");
    }
    be_.write(*p.value, 0, p.value->rows(), p.host->data());
  }
}

void TrainableModel::sync_adapter() {
  for (const Param& p : params_) be_.read(*p.value, 0, p.value->rows(), p.host->data());
}

const std::map<std::string, LoraGrad>& TrainableModel::grads() {
  for (const Param& p : params_) {
    p.host_grad->resize(size_t(p.grad->rows() * p.grad->cols()));
    be_.read(*p.grad, 0, p.grad->rows(), p.host_grad->data());
  }
  return grads_;
}

void TrainableModel::sum_grads(Collective& ranks) {
  size_t n = 0;
  for (const Param& p : params_) n += size_t(p.grad->rows() * p.grad->cols());
  std::vector<float> all(n);
  size_t at = 0;
  for (const Param& p : params_) {
    be_.read(*p.grad, 0, p.grad->rows(), all.data() + at);
    at += size_t(p.grad->rows() * p.grad->cols());
  }
  ranks.sum(all);
  at = 0;
  for (const Param& p : params_) {
    be_.write(*p.grad, 0, p.grad->rows(), all.data() + at);
    at += size_t(p.grad->rows() * p.grad->cols());
  }
}

void TrainableModel::zero_grads() {
  for (const Param& p : params_) be_.zero(*p.grad);
}

float TrainableModel::optimizer_step(const AdamWOptions& o, double lr, float max_norm) {
  if (!std::isfinite(lr) || lr < 0) fail("adamw: learning rate must be finite and >= 0, got ", lr);
  std::vector<const DeviceTensor*> grads;
  for (const Param& p : params_) grads.push_back(p.grad);
  std::vector<double> sums(grads.size());
  be_.sum_squares(grads, sums.data());
  const GradClip clip = clip_from_sums(sums, max_norm);
  if (!std::isfinite(clip.norm)) return clip.norm;
  updating_ = true;
  for (Param& p : params_) {
    be_.adamw(*p.value, *p.grad, *p.m, *p.v, adamw_scalars(o, lr, p.step + 1), clip.scale);
  }
  // The update runs before the step counts as done: a device error anywhere in a step leaves
  // the adapter, its moments and these counts as the step before (a checkpoint of them is then
  // the run up to there).
  be_.finish();
  ++opt_steps_;
  for (Param& p : params_) ++p.step;
  updating_ = false;
  return clip.norm;
}

void TrainableModel::save_optimizer(AdamW& opt) {
  std::map<std::string, AdamWMoments> moments;
  for (const Param& p : params_) {
    if (p.step == 0) continue;  // as PyTorch: no state before a tensor's first step
    AdamWMoments& s = moments[p.name];
    s.step = p.step;
    s.m.resize(size_t(p.m->rows() * p.m->cols()));
    s.v.resize(s.m.size());
    be_.read(*p.m, 0, p.m->rows(), s.m.data());
    be_.read(*p.v, 0, p.v->rows(), s.v.data());
  }
  opt.set_state(opt_steps_, std::move(moments));
}

void TrainableModel::load_optimizer(const AdamW& opt) {
  for (Param& p : params_) {
    const auto it = opt.moments().find(p.name);
    const int64_t n = p.value->rows() * p.value->cols();
    if (it == opt.moments().end()) {
      be_.zero(*p.m);
      be_.zero(*p.v);
      p.step = 0;
      continue;
    }
    const AdamWMoments& s = it->second;
    if (int64_t(s.m.size()) != n || int64_t(s.v.size()) != n) {
      fail("adamw: parameter ", p.name, " has ", n, " elements but its moments have ", s.m.size());
    }
    be_.write(*p.m, 0, p.m->rows(), s.m.data());
    be_.write(*p.v, 0, p.v->rows(), s.v.data());
    p.step = s.step;
  }
  opt_steps_ = opt.t();
}

}  // namespace trit::engine
