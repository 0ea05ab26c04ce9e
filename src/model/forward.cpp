#include "model/forward.h"

#include <algorithm>

#include "core/error.h"
#include "core/random.h"

namespace trit::engine {
namespace {

void check_tokens(const HParams& hp, const int32_t* tokens, int64_t n) {
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= hp.n_vocab) {
      fail("token id ", tokens[t], " is out of range: the vocabulary has ", hp.n_vocab, " tokens");
    }
  }
}

BlockLora block_lora(const LoraSet* lora, int64_t layer) {
  BlockLora out{};
  if (!lora) return out;
  for (size_t i = 0; i < size_t(kLinearCount); ++i) out[i] = lora->blocks[size_t(layer)][i];
  return out;
}

}  // namespace

// ---- generation ----

void KvCache::init(Backend& backend, const HParams& hp, int64_t ctx) {
  n_ctx = ctx;
  k.clear();
  v.clear();
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    k.push_back(backend.tensor(cat("cache_k.", l), ctx, hp.n_embd_kv(), TensorUse::KvCache));
    v.push_back(backend.tensor(cat("cache_v.", l), ctx, hp.n_embd_kv(), TensorUse::KvCache));
  }
}

void ForwardArena::init(Backend& be, const HParams& hp, int64_t batch) {
  n_batch = batch;
  x = be.tensor("x", batch, hp.n_embd);
  h = be.tensor("h", batch, hp.n_embd);
  q = be.tensor("q", batch, hp.n_embd);
  k = be.tensor("k", batch, hp.n_embd_kv());
  v = be.tensor("v", batch, hp.n_embd_kv());
  attn = be.tensor("attn", batch, hp.n_embd);
  proj = be.tensor("proj", batch, hp.n_embd);
  gate = be.tensor("gate", batch, hp.n_ff);
  up = be.tensor("up", batch, hp.n_ff);
  act = be.tensor("act", batch, hp.n_ff);
}

void model_forward(const Model& model, const int32_t* tokens, int64_t n, int64_t pos0,
                   KvCache& cache, ForwardArena& a, Backend& be, const ForwardOptions& opts,
                   float* logits, int64_t first_logit) {
  const HParams& hp = model.hparams();
  const ModelWeights& w = model.weights();
  if (n <= 0 || n > a.n_batch) fail("forward: ", n, " tokens for a batch of ", a.n_batch);
  if (pos0 < 0 || pos0 + n > cache.n_ctx) {
    fail("forward: positions ", pos0, "..", pos0 + n, " exceed the context of ", cache.n_ctx,
         " tokens");
  }
  if (opts.lora && int64_t(opts.lora->blocks.size()) != hp.n_layer) {
    fail("forward: LoRA set for ", opts.lora->blocks.size(), " blocks, the model has ", hp.n_layer);
  }
  check_tokens(hp, tokens, n);
  // Nothing is saved; h serves every norm of attention and the feed-forward's first, gate
  // the last (free once the activation has read it).
  BlockActs acts;
  acts.h1 = acts.h2 = acts.h3 = a.h.get();
  acts.q = a.q.get();
  acts.k = a.k.get();
  acts.v = a.v.get();
  acts.att = a.attn.get();
  acts.o = acts.down = a.proj.get();
  acts.gate = acts.h4 = a.gate.get();
  acts.up = a.up.get();
  acts.m = a.act.get();
  be.embedding(*a.x, w.token_embd, tokens, n);
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const BlockPass pass{hp, w.blocks[size_t(l)], block_lora(opts.lora, l), {opts.act_quant}};
    const KvView kv{cache.k[size_t(l)].get(), cache.v[size_t(l)].get(), pos0};
    block_forward(be, pass, *a.x, n, kv, acts);
  }
  be.rms_norm({a.x.get(), w.output_norm, hp.rms_eps, a.h.get()}, n);
  if (!logits || first_logit >= n) return;
  HeadOp head;
  head.h = a.h.get();
  head.row0 = first_logit;
  head.n = n - first_logit;
  head.w = &w.output;
  if (opts.lora) head.lora = opts.lora->head;
  head.logits = logits;
  be.head(head);
}

// ---- training ----

// One block's saved activations.
struct TrainActs::Saved {
  TensorPtr h1, rstd1, q, k, v, att, h2, rstd2, o, x2, h3, rstd3, gate, up, m, h4, rstd4, down;
};

TrainActs::TrainActs(Backend& backend, const HParams& hp, TrainPassOptions opts)
    : be_(backend), hp_(hp), opts_(opts) {}

TrainActs::~TrainActs() = default;

TrainActs::TensorPtr TrainActs::make(const char* name, int64_t cols) {
  return be_.tensor(name, capacity_, cols);
}

void TrainActs::reserve(int64_t T, const LoraSet& lora) {
  if (T > capacity_) {
    capacity_ = T;
    const int64_t d = hp_.n_embd, dkv = hp_.n_embd_kv(), ff = hp_.n_ff;
    saved_.clear();
    acts_.clear();
    lora_.clear();
    const size_t sets = opts_.checkpointing ? 1 : size_t(hp_.n_layer);
    for (size_t i = 0; i < sets; ++i) {
      auto s = std::make_unique<Saved>();
      s->h1 = make("h1", d), s->rstd1 = make("rstd1", 1);
      s->q = make("q", d), s->k = make("k", dkv), s->v = make("v", dkv);
      s->att = make("att", d);
      s->o = make("o", d), s->x2 = make("x2", d), s->h3 = make("h3", d);
      s->rstd3 = make("rstd3", 1);
      s->gate = make("gate", ff), s->up = make("up", ff), s->m = make("m", ff);
      s->down = make("down", d);
      if (hp_.sub_norms()) {  // a llama block has none (model/block.h)
        s->h2 = make("h2", d), s->rstd2 = make("rstd2", 1);
        s->h4 = make("h4", ff), s->rstd4 = make("rstd4", 1);
      }
      BlockActs a;
      a.h1 = s->h1.get(), a.rstd1 = s->rstd1.get();
      a.q = s->q.get(), a.k = s->k.get(), a.v = s->v.get();
      a.att = s->att.get(), a.h2 = s->h2.get(), a.rstd2 = s->rstd2.get();
      a.o = s->o.get(), a.x2 = s->x2.get(), a.h3 = s->h3.get(), a.rstd3 = s->rstd3.get();
      a.gate = s->gate.get(), a.up = s->up.get(), a.m = s->m.get();
      a.h4 = s->h4.get(), a.rstd4 = s->rstd4.get(), a.down = s->down.get();
      saved_.push_back(std::move(s));
      acts_.push_back(std::move(a));
    }
    inputs_.clear();
    for (int64_t l = 0; l < hp_.n_layer; ++l) inputs_.push_back(make("block_input", d));
    x_ = make("x", d), hf_ = make("hf", d), rstdf_ = make("rstdf", 1), dhf_ = make("dhf", d);
    dx_ = make("dx", d);
    grads_.clear();
    auto grad = [&](const char* name, int64_t cols) {
      grads_.push_back(make(name, cols));
      return grads_.back().get();
    };
    g_.dx2 = grad("dx2", d), g_.dh1 = grad("dh1", d);
    g_.dh3 = grad("dh3", d), g_.datt = grad("datt", d), g_.dq = grad("dq", d);
    g_.dk = grad("dk", dkv), g_.dv = grad("dv", dkv);
    g_.dm = grad("dm", ff), g_.dgate = grad("dgate", ff);
    g_.dup = grad("dup", ff);
    if (hp_.sub_norms()) g_.dh2 = grad("dh2", d), g_.dh4 = grad("dh4", ff);
  }
  // What each branch saves: ax (T, rank), and xd (T, n_in) unless it is the input itself
  // (no dropout).
  for (int64_t l = 0; l < int64_t(lora.blocks.size()); ++l) {
    const size_t set = opts_.checkpointing ? 0 : size_t(l);
    for (int i = 0; i < kLinearCount; ++i) {
      const std::vector<LoraBranch>& branches = lora.blocks[size_t(l)][size_t(i)];
      for (size_t j = 0; j < branches.size(); ++j) {
        const int64_t rank = branches[j].a->rows(), n_in = branches[j].a->cols();
        auto& [xd, ax] = lora_[{set, i, j, rank}];
        if (!ax) ax = make("lora_ax", rank);
        if (!xd && opts_.dropout > 0) xd = make("lora_xd", n_in);
      }
    }
  }
}

BlockActs& TrainActs::acts(int64_t l) {
  return acts_[opts_.checkpointing ? 0 : size_t(l)];
}

void TrainActs::bind_lora(int64_t l, const BlockLora& lora) {
  const size_t set = opts_.checkpointing ? 0 : size_t(l);
  BlockActs& a = acts_[set];
  // What each layer reads: without sub-norms, W_o reads att and W_down m themselves.
  const bool sub = hp_.sub_norms();
  DeviceTensor* inputs[kLinearCount] = {
      a.h1, a.h1, a.h1, sub ? a.h2 : a.att, a.h3, a.h3, sub ? a.h4 : a.m};
  for (size_t i = 0; i < size_t(kLinearCount); ++i) {
    a.lora[i].clear();
    for (size_t j = 0; j < lora[i].size(); ++j) {
      const auto& [xd, ax] = lora_.at({set, int(i), j, lora[i][j].a->rows()});
      a.lora[i].push_back({xd ? xd.get() : inputs[i], ax.get()});
    }
  }
}

double model_forward(const Model& model, const TrainSequence& seq, const LoraSet& lora,
                     TrainActs& ta, bool for_backward) {
  const HParams& hp = model.hparams();
  const ModelWeights& w = model.weights();
  Backend& be = ta.be_;
  const int64_t T = seq.T;
  if (T <= 0) fail("train: empty sequence");
  if (int64_t(lora.blocks.size()) != hp.n_layer) {
    fail("train: LoRA set for ", lora.blocks.size(), " blocks, the model has ", hp.n_layer);
  }
  check_tokens(hp, seq.tokens, T);
  ta.reserve(T, lora);
  const TrainPassOptions& o = ta.opts_;
  be.embedding(*ta.x_, w.token_embd, seq.tokens, T);
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    if (for_backward) be.copy(*ta.inputs_[size_t(l)], *ta.x_, T);
    BlockActs& a = ta.acts(l);
    const BlockLora bl = block_lora(&lora, l);
    if (for_backward) {
      ta.bind_lora(l, bl);
    } else {  // nothing to save
      for (auto& saved : a.lora) saved.clear();
    }
    const float p = for_backward ? o.dropout : 0.0f;
    const BlockPass pass{
        hp, w.blocks[size_t(l)], bl, {o.act_quant, p, splitmix64(seq.dropout_key + uint64_t(l))}};
    block_forward(be, pass, *ta.x_, T, {a.k, a.v, 0}, a);
  }
  be.rms_norm({ta.x_.get(), w.output_norm, hp.rms_eps, ta.hf_.get(), ta.rstdf_.get()}, T);
  if (for_backward) be.zero(*ta.dhf_);
  HeadOp head;
  head.h = ta.hf_.get();
  head.n = T;
  head.w = &w.output;
  head.lora = lora.head;
  head.targets = seq.targets;
  head.mask = seq.mask;
  head.norm = seq.norm;
  head.chunk = o.head_chunk;
  head.dh = for_backward ? ta.dhf_.get() : nullptr;
  be.head(head);
  return be.take_loss();  // one submission for the whole pass on a device
}

void model_backward(const Model& model, const TrainSequence& seq, const LoraSet& lora,
                    TrainActs& ta) {
  const HParams& hp = model.hparams();
  const ModelWeights& w = model.weights();
  Backend& be = ta.be_;
  const int64_t T = seq.T;
  const TrainPassOptions& o = ta.opts_;
  if (T > ta.capacity_) fail("train: model_backward of ", T, " tokens without its forward pass");
  be.zero(*ta.dx_);
  be.rms_norm_backward(*ta.dx_, *ta.dhf_, *ta.x_, w.output_norm, *ta.rstdf_, T);
  for (int64_t l = hp.n_layer - 1; l >= 0; --l) {
    BlockActs& a = ta.acts(l);
    const BlockLora bl = block_lora(&lora, l);
    const BlockPass pass{hp,
                         w.blocks[size_t(l)],
                         bl,
                         {o.act_quant, o.dropout, splitmix64(seq.dropout_key + uint64_t(l))}};
    if (o.checkpointing) {  // recompute the block's activations from its input
      ta.bind_lora(l, bl);
      be.copy(*ta.x_, *ta.inputs_[size_t(l)], T);
      block_forward(be, pass, *ta.x_, T, {a.k, a.v, 0}, a);
    }
    block_backward(be, pass, *ta.inputs_[size_t(l)], a, ta.g_, *ta.dx_, T);
  }
}

}  // namespace trit::engine
