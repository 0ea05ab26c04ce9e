#include "model/forward.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"
#include "model/lora_apply.h"

namespace trit {
namespace {

// Trits of one row of a TQ2_0 or I2_S matrix and the scale of each weight's block.
void decode_ternary_row(const TernaryMatrix& w, int64_t r, int8_t* trits, float* scales) {
  const int64_t n = w.n_in;
  if (w.type == DType::TQ2_0) {
    const uint8_t* row = w.data + r * row_bytes(DType::TQ2_0, n);
    for (int64_t b = 0; b < n / kQK_K; ++b) {
      const uint8_t* blk = row + b * 66;
      uint16_t d16;
      std::memcpy(&d16, blk + 64, 2);
      const float d = fp16_to_f32(d16);
      for (int64_t j = 0; j < kQK_K; ++j) {
        const int64_t h = j / 128, l = (j % 128) / 32, m = j % 32;
        trits[b * kQK_K + j] = int8_t(((blk[32 * h + m] >> (2 * l)) & 3) - 1);
        scales[b * kQK_K + j] = d;
      }
    }
  } else {
    const uint8_t* row = w.data + r * (n / 4);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t run = j / 128, k = j % 128;
      trits[j] = int8_t(((row[run * 32 + k % 32] >> (6 - 2 * (k / 32))) & 3) - 1);
      scales[j] = w.uniform_scale;
    }
  }
}

struct LinearJob {
  const LinearWeight* w;
  float* y;  // (T, n_out)
  const std::vector<LoraTerm>* lora = nullptr;
};

// Several bitlinears sharing one input x (T, n_in): the rows of all of them are split across
// the threads in one dispatch.
void bitlinear(std::initializer_list<LinearJob> jobs, const float* x, int64_t T, int64_t n_in,
               ForwardArena& arena, ThreadPool& pool, const ForwardOptions& opts) {
  int64_t total = 0;
  bool any_ternary = false;
  for (const LinearJob& j : jobs) {
    total += j.w->m.n_out;
    any_ternary |= !j.w->is_float();
  }
  if (opts.act_quant && any_ternary) quantize_acts(x, T, n_in, arena.xq);
  const std::vector<LinearJob> list(jobs);
  pool.parallel_for(
      total,
      [&](int64_t begin, int64_t end, int) {
        int64_t base = 0;
        for (const LinearJob& j : list) {
          const int64_t rows = j.w->m.n_out;
          const int64_t r0 = std::max(begin - base, int64_t(0));
          const int64_t r1 = std::min(end - base, rows);
          if (r0 < r1) {
            if (j.w->is_float()) {  // a merged layer: float weights, un-quantised input
              float_matmul(j.w->f, x, T, j.y, rows, r0, r1);
            } else if (opts.act_quant) {
              ternary_matmul(j.w->m, arena.xq, j.y, rows, r0, r1);
            } else {
              ternary_matmul_float(j.w->m, x, T, j.y, r0, r1);
            }
          }
          base += rows;
        }
      },
      16);
  for (const LinearJob& j : list) {
    if (j.w->out_scale != 1.0f) {
      const int64_t n = T * j.w->m.n_out;
      for (int64_t i = 0; i < n; ++i) j.y[i] *= j.w->out_scale;
    }
    // The LoRA branch sees the un-quantised input; `.scale` does not multiply it.
    if (j.lora && !j.lora->empty()) lora_add(*j.lora, x, T, n_in, j.y, j.w->m.n_out, pool);
  }
}

void block_forward(const HParams& hp, const BlockWeights& b, int64_t layer, int64_t T, int64_t pos0,
                   KvCache& cache, ForwardArena& a, ThreadPool& pool, const ForwardOptions& opts) {
  const int64_t d = hp.n_embd, dkv = hp.n_embd_kv(), hd = hp.head_dim();
  static const std::vector<LoraTerm> kNone;
  auto lora = [&](LinearIndex i) -> const std::vector<LoraTerm>* {
    return opts.lora ? &opts.lora->blocks[size_t(layer)][i] : &kNone;
  };
  // attention
  rms_norm_forward(a.x.data(), b.attn_norm, T, d, hp.rms_eps, a.h.data());
  bitlinear(
      {{&b.q, a.q.data(), lora(kQ)}, {&b.k, a.k.data(), lora(kK)}, {&b.v, a.v.data(), lora(kV)}},
      a.h.data(), T, d, a, pool, opts);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), int32_t(pos0));
  rope_forward(a.q.data(), T, hp.n_head, hd, hp.rope_dim, pos.data(), hp.rope_theta);
  rope_forward(a.k.data(), T, hp.n_head_kv, hd, hp.rope_dim, pos.data(), hp.rope_theta);
  float* kc = cache.k_layer(layer);
  float* vc = cache.v_layer(layer);
  std::copy(a.k.begin(), a.k.begin() + T * dkv, kc + pos0 * dkv);
  std::copy(a.v.begin(), a.v.begin() + T * dkv, vc + pos0 * dkv);
  const int64_t n_ctx = cache.n_ctx;
  pool.parallel_for(hp.n_head, [&](int64_t h0, int64_t h1, int thread) {
    attention_forward(a.q.data(), kc, vc, dkv, T, pos0, hp.n_head, hp.n_head_kv, hd, h0, h1,
                      a.attn.data(), a.scores.data() + thread * n_ctx);
  });
  rms_norm_forward(a.attn.data(), b.attn_sub_norm, T, d, hp.rms_eps, a.h.data());
  bitlinear({{&b.o, a.proj.data(), lora(kO)}}, a.h.data(), T, d, a, pool, opts);
  for (int64_t i = 0; i < T * d; ++i) a.x[size_t(i)] += a.proj[size_t(i)];
  // feed-forward
  rms_norm_forward(a.x.data(), b.ffn_norm, T, d, hp.rms_eps, a.h.data());
  bitlinear({{&b.gate, a.gate.data(), lora(kGate)}, {&b.up, a.up.data(), lora(kUp)}}, a.h.data(), T,
            d, a, pool, opts);
  gated_act_forward(a.gate.data(), a.up.data(), T * hp.n_ff, hp.act, a.act.data());
  rms_norm_forward(a.act.data(), b.ffn_sub_norm, T, hp.n_ff, hp.rms_eps, a.act.data());
  bitlinear({{&b.down, a.proj.data(), lora(kDown)}}, a.act.data(), T, hp.n_ff, a, pool, opts);
  for (int64_t i = 0; i < T * d; ++i) a.x[size_t(i)] += a.proj[size_t(i)];
}

}  // namespace

void ternary_matmul_float(const TernaryMatrix& w, const float* x, int64_t n_tokens, float* y,
                          int64_t r0, int64_t r1) {
  if (w.type != DType::TQ2_0 && w.type != DType::I2_S) {  // e.g. a merged model's float layer
    fail("ternary_matmul_float: weight type ", dtype_name(w.type), " is not tq2_0 or i2_s");
  }
  std::vector<int8_t> trits(static_cast<size_t>(w.n_in));
  std::vector<float> scales(static_cast<size_t>(w.n_in));
  for (int64_t r = r0; r < r1; ++r) {
    decode_ternary_row(w, r, trits.data(), scales.data());
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * w.n_in;
      float acc = 0;
      for (int64_t j = 0; j < w.n_in; ++j)
        acc += float(trits[size_t(j)]) * scales[size_t(j)] * xt[j];
      y[t * w.n_out + r] = acc;
    }
  }
}

void KvCache::init(const HParams& hp, int64_t ctx) {
  n_ctx = ctx;
  n_embd_kv = hp.n_embd_kv();
  const size_t n = size_t(hp.n_layer) * size_t(ctx) * size_t(n_embd_kv);
  k.assign(n, 0.0f);
  v.assign(n, 0.0f);
}

void ForwardArena::init(const HParams& hp, int64_t batch, int64_t n_ctx, int n_threads) {
  n_batch = batch;
  const auto sz = [&](int64_t n) { return static_cast<size_t>(batch * n); };
  x.assign(sz(hp.n_embd), 0.0f);
  h.assign(sz(std::max(hp.n_embd, hp.n_ff)), 0.0f);
  q.assign(sz(hp.n_embd), 0.0f);
  k.assign(sz(hp.n_embd_kv()), 0.0f);
  v.assign(sz(hp.n_embd_kv()), 0.0f);
  attn.assign(sz(hp.n_embd), 0.0f);
  proj.assign(sz(hp.n_embd), 0.0f);
  gate.assign(sz(hp.n_ff), 0.0f);
  up.assign(sz(hp.n_ff), 0.0f);
  act.assign(sz(hp.n_ff), 0.0f);
  scores.assign(static_cast<size_t>(n_ctx) * static_cast<size_t>(std::max(n_threads, 1)), 0.0f);
}

void model_forward(const Model& model, const int32_t* tokens, int64_t n, int64_t pos0,
                   KvCache& cache, ForwardArena& a, ThreadPool& pool, const ForwardOptions& opts,
                   float* logits, int64_t first_logit) {
  const HParams& hp = model.hparams();
  const ModelWeights& w = model.weights();
  if (!opts.lora && model.embedded_lora()) {  // the adapter stored in the model file
    ForwardOptions with_embedded = opts;
    with_embedded.lora = model.embedded_lora();
    model_forward(model, tokens, n, pos0, cache, a, pool, with_embedded, logits, first_logit);
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
    float_matrix_row(w.token_embd, tokens[t], a.x.data() + t * hp.n_embd);
  }
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    block_forward(hp, w.blocks[size_t(l)], l, n, pos0, cache, a, pool, opts);
  }
  rms_norm_forward(a.x.data(), w.output_norm, n, hp.n_embd, hp.rms_eps, a.h.data());
  if (!logits || first_logit >= n) return;
  const int64_t rows = n - first_logit;
  const float* hin = a.h.data() + first_logit * hp.n_embd;
  pool.parallel_for(
      hp.n_vocab,
      [&](int64_t r0, int64_t r1, int) {
        float_matmul(w.output, hin, rows, logits, hp.n_vocab, r0, r1);
      },
      64);
  if (opts.lora && !opts.lora->head.empty()) {
    lora_add(opts.lora->head, hin, rows, hp.n_embd, logits, hp.n_vocab, pool);
  }
}

}  // namespace trit
