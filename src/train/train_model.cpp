#include "train/train_model.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace trit {

using TensorPtr = std::unique_ptr<DeviceTensor>;

// One LoRA layer attached to a linear layer: its tensors on the backend, its host gradient.
struct TrainableModel::Term {
  LoraLayer* layer = nullptr;
  LoraGrad* grad = nullptr;
  float scale = 0;
  uint64_t salt = 0;  // distinguishes the dropout masks of different layers
  int64_t n_in = 0, n_out = 0;
  TensorPtr a, b, da, db;  // (rank, n_in), (n_out, rank), and their gradients
  LoraBranch branch() const { return {a.get(), b.get(), da.get(), db.get(), scale, salt}; }
};

// Everything one block's backward pass reads, saved by its forward pass.
struct TrainableModel::Acts {
  TensorPtr x;                       // (T, d) block input
  TensorPtr h1, rstd1;               // (T, d), (T, 1) attn_norm
  TensorPtr q, k, v;                 // (T, d), (T, dkv), (T, dkv) after rope
  TensorPtr att, h2, rstd2;          // (T, d) attention output, attn_sub_norm
  TensorPtr o, x2, h3, rstd3;        // (T, d) o_proj, after attention, ffn_norm
  TensorPtr gate, up, m, h4, rstd4;  // (T, ff) ..., ffn_sub_norm
  std::array<std::vector<TensorPtr>, kLinearCount> xd, ax;  // per LoRA term: (T, n_in), (T, r)
};

// One adapter tensor as the optimizer sees it.
struct TrainableModel::Param {
  std::string name;  // "<layer>.lora_a" / ".lora_b"
  DeviceTensor* value = nullptr;
  DeviceTensor* grad = nullptr;
  std::vector<float>* host = nullptr;  // the LoraAdapter's copy
  TensorPtr m, v;
  int64_t step = 0;
};

// The residual stream, the head's tensors and the backward pass's gradients.
struct TrainableModel::Grads {
  TensorPtr x, y;                              // (T, d) block input / output
  TensorPtr hf, rstdf, dhf;                    // (T, d), (T, 1), (T, d) output_norm
  TensorPtr dx, dx2, dh1, dh2, dh3, datt, dq;  // (T, d)
  TensorPtr dk, dv;                            // (T, dkv)
  TensorPtr dh4, dm, dgate, dup;               // (T, ff)
};

TrainableModel::TrainableModel(const Model& model, LoraAdapter& adapter, Backend& backend,
                               TrainOptions opts)
    : model_(model), adapter_(adapter), be_(backend), opts_(opts) {
  init();
}

TrainableModel::TrainableModel(const Model& model, LoraAdapter& adapter, ThreadPool& pool,
                               TrainOptions opts)
    : model_(model),
      adapter_(adapter),
      owned_backend_(std::make_unique<CpuBackend>(pool)),
      be_(*owned_backend_),
      opts_(opts) {
  init();
}

TrainableModel::~TrainableModel() = default;

void TrainableModel::init() {
  const HParams& hp = model_.hparams();
  const LoraSet set = resolve_lora({{&adapter_, 1.0f}}, hp);  // checks every shape
  (void)set;
  terms_.resize(size_t(hp.n_layer));
  uint64_t salt = 1;
  for (const std::string& name : lora_layer_order(adapter_)) {
    LoraLayer& L = adapter_.layers.at(name);
    LoraGrad& g = grads_[name];
    g.da.assign(L.a.size(), 0.0f);
    g.db.assign(L.b.size(), 0.0f);
    auto term = std::make_unique<Term>();
    term->layer = &L;
    term->grad = &g;
    term->scale = adapter_.scaling(L.rank);
    term->salt = salt++;
    term->n_in = int64_t(L.a.size()) / L.rank;
    term->n_out = int64_t(L.b.size()) / L.rank;
    term->a = be_.tensor(name + ".lora_a", L.rank, term->n_in);
    term->b = be_.tensor(name + ".lora_b", term->n_out, L.rank);
    term->da = be_.tensor(name + ".lora_a.grad", L.rank, term->n_in);
    term->db = be_.tensor(name + ".lora_b.grad", term->n_out, L.rank);
    const auto target = parse_lora_layer_name(name);
    if (!target || target->layer < 0) {
      head_terms_.push_back(term.get());
    } else {
      const auto& names = block_linear_names();
      const size_t idx =
          size_t(std::find(names.begin(), names.end(), target->what) - names.begin());
      terms_[size_t(target->layer)][idx].push_back(term.get());
    }
    for (int which = 0; which < 2; ++which) {
      Param prm;
      prm.name = name + (which ? ".lora_b" : ".lora_a");
      prm.value = which ? term->b.get() : term->a.get();
      prm.grad = which ? term->db.get() : term->da.get();
      prm.host = which ? &L.b : &L.a;
      prm.m = be_.tensor(prm.name + ".exp_avg", prm.value->rows(), prm.value->cols());
      prm.v = be_.tensor(prm.name + ".exp_avg_sq", prm.value->rows(), prm.value->cols());
      params_.push_back(std::move(prm));
    }
    all_terms_.push_back(std::move(term));
  }
  upload_adapter();
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
  for (const auto& term : all_terms_) {
    be_.read(*term->da, 0, term->da->rows(), term->grad->da.data());
    be_.read(*term->db, 0, term->db->rows(), term->grad->db.data());
  }
  return grads_;
}

float TrainableModel::optimizer_step(const AdamWOptions& o, double lr, float max_norm) {
  if (!std::isfinite(lr) || lr < 0) fail("adamw: learning rate must be finite and >= 0, got ", lr);
  std::vector<const DeviceTensor*> grads;
  for (const Param& p : params_) grads.push_back(p.grad);
  std::vector<double> sums(grads.size());
  be_.sum_squares(grads, sums.data());
  const GradClip clip = clip_from_sums(sums, max_norm);
  if (!std::isfinite(clip.norm)) return clip.norm;
  ++opt_steps_;
  for (Param& p : params_) {
    be_.adamw(*p.value, *p.grad, *p.m, *p.v, adamw_scalars(o, lr, ++p.step), clip.scale);
  }
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

void TrainableModel::reserve(int64_t T) {
  if (T <= capacity_) return;
  const HParams& hp = model_.hparams();
  const int64_t d = hp.n_embd, dkv = hp.n_embd_kv(), ff = hp.n_ff;
  auto t = [&](const char* name, int64_t cols) { return be_.tensor(name, T, cols); };
  acts_.clear();
  acts_.resize(opts_.checkpointing ? 1 : size_t(hp.n_layer));
  for (size_t i = 0; i < acts_.size(); ++i) {
    Acts& a = acts_[i];
    a.x = t("x", d), a.h1 = t("h1", d), a.rstd1 = t("rstd1", 1);
    a.q = t("q", d), a.k = t("k", dkv), a.v = t("v", dkv);
    a.att = t("att", d), a.h2 = t("h2", d), a.rstd2 = t("rstd2", 1);
    a.o = t("o", d), a.x2 = t("x2", d), a.h3 = t("h3", d), a.rstd3 = t("rstd3", 1);
    a.gate = t("gate", ff), a.up = t("up", ff), a.m = t("m", ff), a.h4 = t("h4", ff);
    a.rstd4 = t("rstd4", 1);
    // Every layer has the same LoRA targets, so layer 0's terms size the shared Acts; with
    // all layers kept, each gets its own.
    const auto& terms = terms_[opts_.checkpointing ? 0 : i];
    for (size_t idx = 0; idx < size_t(kLinearCount); ++idx) {
      a.xd[idx].clear();
      a.ax[idx].clear();
      size_t n_terms = terms[idx].size();
      if (opts_.checkpointing) {
        for (const auto& layer_terms : terms_) n_terms = std::max(n_terms, layer_terms[idx].size());
      }
      for (size_t j = 0; j < n_terms; ++j) {
        const Term* term = j < terms[idx].size() ? terms[idx][j] : nullptr;
        if (!term) {  // a layer with more terms than layer 0 (checkpointing): find its shape
          for (const auto& layer_terms : terms_) {
            if (j < layer_terms[idx].size()) term = layer_terms[idx][j];
          }
        }
        a.xd[idx].push_back(t("lora_xd", term->n_in));
        a.ax[idx].push_back(t("lora_ax", term->layer->rank));
      }
    }
  }
  g_ = std::make_unique<Grads>();
  Grads& g = *g_;
  g.x = t("x", d), g.y = t("y", d), g.hf = t("hf", d), g.rstdf = t("rstdf", 1);
  g.dhf = t("dhf", d), g.dx = t("dx", d), g.dx2 = t("dx2", d), g.dh1 = t("dh1", d);
  g.dh2 = t("dh2", d), g.dh3 = t("dh3", d), g.datt = t("datt", d), g.dq = t("dq", d);
  g.dk = t("dk", dkv), g.dv = t("dv", dkv);
  g.dh4 = t("dh4", ff), g.dm = t("dm", ff), g.dgate = t("dgate", ff), g.dup = t("dup", ff);
  inputs_.clear();
  if (opts_.checkpointing) {
    for (int64_t l = 0; l < hp.n_layer; ++l) inputs_.push_back(t("block_input", d));
  }
  capacity_ = T;
}

void TrainableModel::zero_grads() {
  for (const auto& term : all_terms_) {
    be_.zero(*term->da);
    be_.zero(*term->db);
  }
}

void TrainableModel::block_forward(int64_t l, const DeviceTensor& x, int64_t T, Acts& a, bool train,
                                   uint64_t key, DeviceTensor& out) {
  const HParams& hp = model_.hparams();
  const BlockWeights& b = model_.weights().blocks[size_t(l)];
  const auto& terms = terms_[size_t(l)];
  const float p = train ? opts_.dropout : 0.0f;
  const uint64_t lkey = dropout_mix(key + uint64_t(l));
  const bool aq = opts_.act_quant;
  // The layer idx reads `in` and wrote y; its LoRA branches add to y.
  auto lora = [&](LinearIndex idx, DeviceTensor& y, const DeviceTensor& in) {
    for (size_t j = 0; j < terms[idx].size(); ++j) {
      be_.lora_forward(y, *a.xd[idx][j], *a.ax[idx][j], in, T, terms[idx][j]->branch(), p, lkey);
    }
  };
  be_.copy(*a.x, x, T);
  be_.rms_norm(*a.h1, x, b.attn_norm, T, hp.rms_eps, a.rstd1.get());
  const LinearOp qkv[] = {{&b.q, a.q.get()}, {&b.k, a.k.get()}, {&b.v, a.v.get()}};
  be_.linear(qkv, *a.h1, T, aq);
  lora(kQ, *a.q, *a.h1);
  lora(kK, *a.k, *a.h1);
  lora(kV, *a.v, *a.h1);
  be_.rope(*a.q, T, hp.n_head, hp, 0);
  be_.rope(*a.k, T, hp.n_head_kv, hp, 0);
  be_.attention(*a.att, *a.q, *a.k, *a.v, T, 0, hp);
  be_.rms_norm(*a.h2, *a.att, b.attn_sub_norm, T, hp.rms_eps, a.rstd2.get());
  const LinearOp o[] = {{&b.o, a.o.get()}};
  be_.linear(o, *a.h2, T, aq);
  lora(kO, *a.o, *a.h2);
  be_.copy(*a.x2, x, T);
  be_.add(*a.x2, *a.o, T);
  be_.rms_norm(*a.h3, *a.x2, b.ffn_norm, T, hp.rms_eps, a.rstd3.get());
  const LinearOp gate_up[] = {{&b.gate, a.gate.get()}, {&b.up, a.up.get()}};
  be_.linear(gate_up, *a.h3, T, aq);
  lora(kGate, *a.gate, *a.h3);
  lora(kUp, *a.up, *a.h3);
  be_.gated_act(*a.m, *a.gate, *a.up, T, hp.act);
  be_.rms_norm(*a.h4, *a.m, b.ffn_sub_norm, T, hp.rms_eps, a.rstd4.get());
  const LinearOp down[] = {{&b.down, &out}};
  be_.linear(down, *a.h4, T, aq);
  lora(kDown, out, *a.h4);
  be_.add(out, *a.x2, T);
}

void TrainableModel::block_backward(int64_t l, Acts& a, int64_t T, DeviceTensor& dx) {
  const HParams& hp = model_.hparams();
  const BlockWeights& b = model_.weights().blocks[size_t(l)];
  const auto& terms = terms_[size_t(l)];
  const float p = opts_.dropout;
  Grads& g = *g_;
  // dx_in += d(layer idx)/d(input) . dy, through the ternary weights and the LoRA branches.
  auto linear_back = [&](LinearIndex idx, const LinearWeight& w, DeviceTensor& dx_in,
                         const DeviceTensor& dy) {
    be_.linear_backward(dx_in, dy, w, T);
    for (size_t j = 0; j < terms[idx].size(); ++j) {
      be_.lora_backward(dx_in, dy, *a.xd[idx][j], *a.ax[idx][j], T, terms[idx][j]->branch(), p);
    }
  };
  // dx holds d(block output) on entry; the residuals pass it through to x2 and x.
  be_.copy(*g.dx2, dx, T);
  be_.zero(*g.dh4);
  linear_back(kDown, b.down, *g.dh4, dx);
  be_.zero(*g.dm);
  be_.rms_norm_backward(*g.dm, *g.dh4, *a.m, b.ffn_sub_norm, *a.rstd4, T);
  be_.zero(*g.dgate);
  be_.zero(*g.dup);
  be_.gated_act_backward(*g.dgate, *g.dup, *g.dm, *a.gate, *a.up, T, hp.act);
  be_.zero(*g.dh3);
  linear_back(kGate, b.gate, *g.dh3, *g.dgate);
  linear_back(kUp, b.up, *g.dh3, *g.dup);
  be_.rms_norm_backward(*g.dx2, *g.dh3, *a.x2, b.ffn_norm, *a.rstd3, T);
  // attention
  be_.zero(*g.dh2);
  linear_back(kO, b.o, *g.dh2, *g.dx2);
  be_.zero(*g.datt);
  be_.rms_norm_backward(*g.datt, *g.dh2, *a.att, b.attn_sub_norm, *a.rstd2, T);
  be_.zero(*g.dq);
  be_.zero(*g.dk);
  be_.zero(*g.dv);
  be_.attention_backward(*g.dq, *g.dk, *g.dv, *g.datt, *a.q, *a.k, *a.v, T, hp);
  be_.rope_backward(*g.dq, T, hp.n_head, hp, 0);
  be_.rope_backward(*g.dk, T, hp.n_head_kv, hp, 0);
  be_.zero(*g.dh1);
  linear_back(kQ, b.q, *g.dh1, *g.dq);
  linear_back(kK, b.k, *g.dh1, *g.dk);
  linear_back(kV, b.v, *g.dh1, *g.dv);
  be_.rms_norm_backward(*g.dx2, *g.dh1, *a.x, b.attn_norm, *a.rstd1, T);
  be_.copy(dx, *g.dx2, T);
}

double TrainableModel::run(const int32_t* tokens, const int32_t* targets, const float* mask,
                           int64_t T, float norm, bool backward, uint64_t key) {
  const HParams& hp = model_.hparams();
  const ModelWeights& w = model_.weights();
  const int64_t L = hp.n_layer;
  if (T <= 0) fail("train: empty sequence");
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= hp.n_vocab) {
      fail("token id ", tokens[t], " is out of range: the vocabulary has ", hp.n_vocab, " tokens");
    }
  }
  reserve(T);
  Grads& g = *g_;
  be_.embedding(*g.x, w.token_embd, tokens, T);
  const bool keep_all = backward && !opts_.checkpointing;
  for (int64_t l = 0; l < L; ++l) {
    if (backward && opts_.checkpointing) be_.copy(*inputs_[size_t(l)], *g.x, T);
    block_forward(l, *g.x, T, acts_[keep_all ? size_t(l) : 0], backward, key, *g.y);
    std::swap(g.x, g.y);
  }
  be_.rms_norm(*g.hf, *g.x, w.output_norm, T, hp.rms_eps, g.rstdf.get());
  if (backward) be_.zero(*g.dhf);
  std::vector<LoraBranch> head;
  for (const Term* term : head_terms_) head.push_back(term->branch());
  be_.head_loss(*g.hf, T, w.output, head, targets, mask, norm, opts_.head_chunk,
                backward ? g.dhf.get() : nullptr);
  if (!backward) return be_.take_loss();
  be_.zero(*g.dx);
  be_.rms_norm_backward(*g.dx, *g.dhf, *g.x, w.output_norm, *g.rstdf, T);
  for (int64_t l = L - 1; l >= 0; --l) {
    Acts& a = acts_[keep_all ? size_t(l) : 0];
    if (!keep_all) block_forward(l, *inputs_[size_t(l)], T, a, true, key, *g.y);
    block_backward(l, a, T, *g.dx);
  }
  return be_.take_loss();  // one submission for the whole pass on a device
}

double TrainableModel::forward_backward(const int32_t* tokens, const int32_t* targets,
                                        const float* mask, int64_t T, float norm,
                                        uint64_t dropout_key) {
  return run(tokens, targets, mask, T, norm, true, dropout_key);
}

double TrainableModel::forward_loss(const int32_t* tokens, const int32_t* targets,
                                    const float* mask, int64_t T, float norm) {
  return run(tokens, targets, mask, T, norm, false, 0);
}

}  // namespace trit
