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

void KvCache::init(Backend& backend, const HParams& hp, int64_t ctx, KvType type) {
  n_ctx = ctx;
  k.clear();
  v.clear();
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    k.push_back(backend.tensor(cat("cache_k.", l), ctx, hp.n_embd_kv(), kv_use(type)));
    v.push_back(backend.tensor(cat("cache_v.", l), ctx, hp.n_embd_kv(), kv_use(type)));
  }
}

std::vector<KvCache> KvCache::pool(Backend& backend, const HParams& hp, int64_t ctx, int64_t n,
                                   KvType type) {
  if (ctx <= 0 || n <= 0) fail("KV pool: ", n, " caches of ", ctx, " positions");
  const int64_t stride = (ctx + kKvPoolAlign - 1) / kKvPoolAlign * kKvPoolAlign;
  std::vector<KvCache> caches(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    caches[size_t(i)].n_ctx = ctx;
    caches[size_t(i)].base = i * stride;
  }
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    std::shared_ptr<DeviceTensor> k =
        backend.tensor(cat("pool_k.", l), n * stride, hp.n_embd_kv(), kv_use(type));
    std::shared_ptr<DeviceTensor> v =
        backend.tensor(cat("pool_v.", l), n * stride, hp.n_embd_kv(), kv_use(type));
    for (KvCache& c : caches) {
      c.k.push_back(k);
      c.v.push_back(v);
    }
  }
  return caches;
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

namespace {

// Rows [row0, row0 + rows) of a batch that share one sequence's adapters.
struct LoraRun {
  const LoraSet* lora = nullptr;
  int64_t row0 = 0, rows = 0;
};

// The branches of a batch's rows: one set for every row when the sequences share it, else each
// run's branches restricted to its rows.
const LoraSet* batch_lora(const std::vector<LoraRun>& runs, int64_t n_layer, LoraSet& merged) {
  bool shared = true;
  for (const LoraRun& r : runs) shared = shared && r.lora == runs.front().lora;
  if (shared) return runs.empty() ? nullptr : runs.front().lora;
  merged.blocks.assign(size_t(n_layer), {});
  merged.head.clear();  // the head's branches go with each HeadOp
  for (const LoraRun& r : runs) {
    if (!r.lora) continue;
    for (size_t l = 0; l < size_t(n_layer); ++l) {
      for (size_t i = 0; i < size_t(kLinearCount); ++i) {
        for (LoraBranch br : r.lora->blocks[l][i]) {
          br.row0 = r.row0;
          br.rows = r.rows;
          merged.blocks[l][i].push_back(br);
        }
      }
    }
  }
  return &merged;
}

std::span<const LoraBranch> head_branches(const LoraSet* lora) {
  return lora ? std::span<const LoraBranch>(lora->head) : std::span<const LoraBranch>();
}

bool same_branches(std::span<const LoraBranch> a, std::span<const LoraBranch> b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].a != b[i].a || a[i].b != b[i].b || a[i].scale != b[i].scale) return false;
  }
  return true;
}

void check_lora_set(const LoraSet* lora, const HParams& hp) {
  if (lora && int64_t(lora->blocks.size()) != hp.n_layer) {
    fail("forward: LoRA set for ", lora->blocks.size(), " blocks, the model has ", hp.n_layer);
  }
}

// Whether a training pass streams the weights: always on the CPU (forward.h), on a device
// under a memory budget.
bool streams_weights(const Model& model, const Backend& be, const TrainPassOptions& o) {
  const bool saves = model.resident_run_bytes() >= model.min_stream_bytes() + o.stream_min_saving;
  return o.stream_weights && ((be.host_memory() && saves) || model.mem_budget() > 0);
}

// After block l's pass: its file pages leave the resident set where the model streams
// (Model::block_out), and a device streaming the model drops its copy of the block's weights
// (b: those the pass used, which the device knows them by).
void block_done(const Model& model, Backend& be, int64_t l, const BlockWeights& b,
                bool pass_streams = false) {
  model.block_out(l, {.host = be.host_memory(), .pass_streams = pass_streams});
  if ((model.streaming() || pass_streams) && !be.host_memory()) {
    const LinearWeight* ws[] = {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down};
    be.release_weights(ws);
  }
}

// Embedding, every block (attention per sequence, `seqs` per layer from its caches) and the
// final norm over n rows; the normalised final hidden states end in a.h.
void forward_rows(const Model& model, const int32_t* tokens, int64_t n,
                  const std::vector<std::vector<KvView>>& seqs, const LoraSet* lora,
                  ForwardArena& a, Backend& be, bool act_quant) {
  const HParams& hp = model.hparams();
  const ModelWeights& w = model.weights();
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
  const Model::WeightUse use{.host = be.host_memory(), .head_pieces = true};
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const Model::BlockRef bw = model.block(l, use);
    const BlockPass pass{hp, bw.weights(), block_lora(lora, l), {act_quant}};
    model.read_ahead(l + 1, use);
    block_forward(be, pass, *a.x, n, seqs[size_t(l)], acts);
    block_done(model, be, l, bw.weights());
  }
  be.rms_norm({a.x.get(), w.output_norm, hp.rms_eps, a.h.get()}, n);
}

// The head over rows [row0, row0 + n) of a.h with `lora`'s branches.
void head_rows(const Model& model, ForwardArena& a, Backend& be, int64_t row0, int64_t n,
               std::span<const LoraBranch> lora, float* logits) {
  HeadOp head;
  head.h = a.h.get();
  head.row0 = row0;
  head.n = n;
  head.w = &model.weights().output;
  head.lora = lora;
  head.logits = logits;
  const int64_t n_layer = model.hparams().n_layer;
  const Model::WeightUse use{.host = be.host_memory(), .head_pieces = lora.empty()};
  // A streamed head without branches goes piece by piece, each read into a buffer while the
  // one before computes (forward_rows read the first ahead).
  const int64_t pieces = model.head_pieces(use);
  // A budget taken for inference may be too small for the head read whole (with a head
  // adapter): refused here, before its pages fault in.
  if (pieces == 0 && use.host && model.streaming()) {
    model.check_head_whole_budget("an adapter on the head");
  }
  for (int64_t i = 0; i < pieces; ++i) {
    const Model::HeadPiece piece = model.head_piece(i, use);
    model.read_ahead(i + 1 < pieces ? n_layer + i + 1 : 0, use);
    head.w = &piece.weights();
    head.logits = logits + piece.row0();
    head.logits_stride = model.hparams().n_vocab;
    be.head(head);
  }
  if (pieces > 0) {
    model.block_out(n_layer, use);  // pieces read from the mapping (buffers all held) leave
    return;
  }
  model.read_ahead(0, use);  // the next pass starts at block 0
  be.head(head);
  model.block_out(n_layer, use);
}

}  // namespace

void model_forward(const Model& model, const int32_t* tokens, int64_t n, int64_t pos0,
                   KvCache& cache, ForwardArena& a, Backend& be, const ForwardOptions& opts,
                   float* logits, int64_t first_logit) {
  const HParams& hp = model.hparams();
  if (n <= 0 || n > a.n_batch) fail("forward: ", n, " tokens for a batch of ", a.n_batch);
  if (pos0 < 0 || pos0 + n > cache.n_ctx) {
    fail("forward: positions ", pos0, "..", pos0 + n, " exceed the context of ", cache.n_ctx,
         " tokens");
  }
  check_lora_set(opts.lora, hp);
  std::vector<std::vector<KvView>> seqs(size_t(hp.n_layer));
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    seqs[size_t(l)] = {
        {cache.k[size_t(l)].get(), cache.v[size_t(l)].get(), pos0, 0, n, cache.base}};
  }
  forward_rows(model, tokens, n, seqs, opts.lora, a, be, opts.act_quant);
  if (!logits || first_logit >= n) return;
  head_rows(model, a, be, first_logit, n - first_logit, head_branches(opts.lora), logits);
}

void model_forward_batch(const Model& model, const int32_t* tokens, std::span<const BatchSeq> seqs,
                         ForwardArena& a, Backend& be, bool act_quant, float* logits) {
  const HParams& hp = model.hparams();
  int64_t n = 0;
  std::vector<LoraRun> runs;
  std::vector<std::vector<KvView>> views(size_t(hp.n_layer));
  for (const BatchSeq& s : seqs) {
    if (!s.cache || s.n <= 0) fail("forward: a sequence of ", s.n, " tokens in a batch");
    if (s.pos0 < 0 || s.pos0 + s.n > s.cache->n_ctx) {
      fail("forward: positions ", s.pos0, "..", s.pos0 + s.n, " exceed the context of ",
           s.cache->n_ctx, " tokens");
    }
    check_lora_set(s.lora, hp);
    for (int64_t l = 0; l < hp.n_layer; ++l) {
      views[size_t(l)].push_back({s.cache->k[size_t(l)].get(), s.cache->v[size_t(l)].get(), s.pos0,
                                  n, s.n, s.cache->base});
    }
    if (!runs.empty() && runs.back().lora == s.lora) {
      runs.back().rows += s.n;
    } else {
      runs.push_back({s.lora, n, s.n});
    }
    n += s.n;
  }
  if (n <= 0 || n > a.n_batch) fail("forward: ", n, " tokens for a batch of ", a.n_batch);
  LoraSet merged;
  forward_rows(model, tokens, n, views, batch_lora(runs, hp.n_layer, merged), a, be, act_quant);
  if (!logits) return;
  // The head over runs of adjacent wanted rows that share their head branches.
  const int64_t n_vocab = hp.n_vocab;
  int64_t row = 0, out = 0;
  int64_t run0 = -1, run_n = 0;
  std::span<const LoraBranch> run_lora;
  auto flush = [&] {
    if (run_n > 0) head_rows(model, a, be, run0, run_n, run_lora, logits + out * n_vocab);
    out += run_n;
    run_n = 0;
  };
  for (const BatchSeq& s : seqs) {
    row += s.n;
    if (!s.logits) continue;
    const int64_t last = row - 1;
    const std::span<const LoraBranch> br = head_branches(s.lora);
    if (run_n > 0 && run0 + run_n == last && same_branches(br, run_lora)) {
      ++run_n;
      continue;
    }
    flush();
    run0 = last;
    run_n = 1;
    run_lora = br;
  }
  flush();
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

namespace {

// Each sequence's rows of a packed batch: row0 = base (its keys are its own rows), pos0 = 0.
std::vector<SeqRows> sequence_rows(const TrainBatch& b) {
  std::vector<SeqRows> rows;
  if (b.lengths.empty()) return {{0, b.T, 0, 0}};
  int64_t row = 0;
  for (const int64_t n : b.lengths) {
    if (n <= 0) fail("train: a sequence of ", n, " tokens in a batch");
    rows.push_back({row, n, 0, row});
    row += n;
  }
  if (row != b.T) fail("train: sequences of ", row, " tokens in a batch of ", b.T);
  return rows;
}

// Training attends within each sequence: its keys and values are its own rows of a.k, a.v.
std::vector<KvView> sequence_views(std::span<const SeqRows> rows, BlockActs& a) {
  std::vector<KvView> views;
  for (const SeqRows& r : rows) views.push_back({a.k, a.v, 0, r.row0, r.n, r.base});
  return views;
}

}  // namespace

double model_forward(const Model& model, const TrainBatch& seq, const LoraSet& lora, TrainActs& ta,
                     bool for_backward) {
  const HParams& hp = model.hparams();
  const ModelWeights& w = model.weights();
  Backend& be = ta.be_;
  const int64_t T = seq.T;
  if (T <= 0) fail("train: empty sequence");
  const std::vector<SeqRows> rows = sequence_rows(seq);
  if (int64_t(lora.blocks.size()) != hp.n_layer) {
    fail("train: LoRA set for ", lora.blocks.size(), " blocks, the model has ", hp.n_layer);
  }
  check_tokens(hp, seq.tokens, T);
  ta.reserve(T, lora);
  const TrainPassOptions& o = ta.opts_;
  const bool stream = streams_weights(model, be, o);
  const Model::WeightUse use{.host = be.host_memory(), .pass_streams = stream};
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
    const Model::BlockRef bw = model.block(l, use);
    const BlockPass pass{
        hp, bw.weights(), bl, {o.act_quant, p, splitmix64(seq.dropout_key + uint64_t(l))}};
    model.read_ahead(l + 1, use);
    block_forward(be, pass, *ta.x_, T, sequence_views(rows, a), a);
    block_done(model, be, l, bw.weights(), stream);
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
  model.read_ahead(for_backward ? hp.n_layer - 1 : 0, use);  // backward starts at the end
  be.head(head);
  model.block_out(hp.n_layer, use);
  return be.take_loss();  // one submission for the whole pass on a device
}

void model_backward(const Model& model, const TrainBatch& seq, const LoraSet& lora, TrainActs& ta) {
  const HParams& hp = model.hparams();
  const ModelWeights& w = model.weights();
  Backend& be = ta.be_;
  const int64_t T = seq.T;
  const std::vector<SeqRows> rows = sequence_rows(seq);
  const TrainPassOptions& o = ta.opts_;
  const bool stream = streams_weights(model, be, o);
  const Model::WeightUse use{.host = be.host_memory(), .pass_streams = stream};
  if (T > ta.capacity_) fail("train: model_backward of ", T, " tokens without its forward pass");
  be.zero(*ta.dx_);
  be.rms_norm_backward(*ta.dx_, *ta.dhf_, *ta.x_, w.output_norm, *ta.rstdf_, T);
  for (int64_t l = hp.n_layer - 1; l >= 0; --l) {
    BlockActs& a = ta.acts(l);
    const BlockLora bl = block_lora(&lora, l);
    const Model::BlockRef bw = model.block(l, use);
    const BlockPass pass{
        hp, bw.weights(), bl, {o.act_quant, o.dropout, splitmix64(seq.dropout_key + uint64_t(l))}};
    model.read_ahead(l - 1, use);
    if (o.checkpointing) {  // recompute the block's activations from its input
      ta.bind_lora(l, bl);
      be.copy(*ta.x_, *ta.inputs_[size_t(l)], T);
      block_forward(be, pass, *ta.x_, T, sequence_views(rows, a), a);
    }
    block_backward(be, pass, *ta.inputs_[size_t(l)], a, ta.g_, *ta.dx_, T, rows);
    block_done(model, be, l, bw.weights(), stream);
  }
}

}  // namespace trit::engine
