#include "model/forward.h"

#include "core/error.h"
#include "model/lora_apply.h"

namespace trit {
namespace {

void block_forward(const HParams& hp, const BlockWeights& b, int64_t layer, int64_t T, int64_t pos0,
                   KvCache& cache, ForwardArena& a, Backend& be, const ForwardOptions& opts) {
  static const std::vector<LoraTerm> kNone;
  auto lora = [&](LinearIndex i) -> const std::vector<LoraTerm>* {
    return opts.lora ? &opts.lora->blocks[size_t(layer)][i] : &kNone;
  };
  // attention
  be.rms_norm(*a.h, *a.x, b.attn_norm, T, hp.rms_eps);
  const LinearOp qkv[] = {
      {&b.q, a.q.get(), lora(kQ)}, {&b.k, a.k.get(), lora(kK)}, {&b.v, a.v.get(), lora(kV)}};
  be.linear(qkv, *a.h, T, opts.act_quant);
  DeviceTensor& kc = *cache.k[size_t(layer)];
  DeviceTensor& vc = *cache.v[size_t(layer)];
  be.rope_store_kv(*a.q, *a.k, *a.v, kc, vc, T, pos0, hp);
  be.attention(*a.attn, *a.q, kc, vc, T, pos0, hp);
  be.rms_norm(*a.h, *a.attn, b.attn_sub_norm, T, hp.rms_eps);
  const LinearOp o[] = {{&b.o, a.proj.get(), lora(kO)}};
  be.linear(o, *a.h, T, opts.act_quant);
  be.add(*a.x, *a.proj, T);
  // feed-forward
  be.rms_norm(*a.h, *a.x, b.ffn_norm, T, hp.rms_eps);
  const LinearOp gate_up[] = {{&b.gate, a.gate.get(), lora(kGate)}, {&b.up, a.up.get(), lora(kUp)}};
  be.linear(gate_up, *a.h, T, opts.act_quant);
  be.gated_act(*a.act, *a.gate, *a.up, T, hp.act);
  // gate is free now: it takes the normalised act (a norm out of place, which a device can
  // fold into the bitlinear reading it).
  be.rms_norm(*a.gate, *a.act, b.ffn_sub_norm, T, hp.rms_eps);
  const LinearOp down[] = {{&b.down, a.proj.get(), lora(kDown)}};
  be.linear(down, *a.gate, T, opts.act_quant);
  be.add(*a.x, *a.proj, T);
}

}  // namespace

void KvCache::init(Backend& backend, const HParams& hp, int64_t ctx) {
  n_ctx = ctx;
  k.clear();
  v.clear();
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    k.push_back(backend.tensor(cat("cache_k.", l), ctx, hp.n_embd_kv()));
    v.push_back(backend.tensor(cat("cache_v.", l), ctx, hp.n_embd_kv()));
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
  if (!opts.lora && model.embedded_lora()) {  // the adapter stored in the model file
    ForwardOptions with_embedded = opts;
    with_embedded.lora = model.embedded_lora();
    model_forward(model, tokens, n, pos0, cache, a, be, with_embedded, logits, first_logit);
    return;
  }
  if (n <= 0 || n > a.n_batch) fail("forward: ", n, " tokens for a batch of ", a.n_batch);
  if (pos0 < 0 || pos0 + n > cache.n_ctx) {
    fail("forward: positions ", pos0, "..", pos0 + n, " exceed the context of ", cache.n_ctx,
         " tokens");
  }
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= hp.n_vocab) {
      fail("token id ", tokens[t], " is out of range: the vocabulary has ", hp.n_vocab, " tokens");
    }
  }
  be.embedding(*a.x, w.token_embd, tokens, n);
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    block_forward(hp, w.blocks[size_t(l)], l, n, pos0, cache, a, be, opts);
  }
  be.rms_norm(*a.h, *a.x, w.output_norm, n, hp.rms_eps);
  if (!logits || first_logit >= n) return;
  const std::vector<LoraTerm>* head_lora = opts.lora ? &opts.lora->head : nullptr;
  be.head(logits, *a.h, first_logit, n - first_logit, w.output, head_lora);
}

}  // namespace trit
