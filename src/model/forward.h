// The forward pass of a BitNet b1.58 model over a run of tokens of one sequence, with a KV
// cache for incremental decoding (DESIGN sections 1 and 2). Every buffer the pass writes is a
// named view in ForwardArena, sized for a batch of tokens.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/cpu/thread_pool.h"
#include "model/model.h"

namespace trit {

struct LoraSet;

struct ForwardOptions {
  bool act_quant = true;  // W1.58A8; false computes with float activations (--act-quant none)
  // Adapters added to the linear layers; null: the model's embedded adapter, if any
  // (Model::embedded_lora; pass resolve_lora({}, hp) for none at all).
  const LoraSet* lora = nullptr;
};

// Keys (after rope) and values of every layer for positions [0, n_ctx).
struct KvCache {
  int64_t n_ctx = 0;
  int64_t n_embd_kv = 0;
  std::vector<float> k;  // (n_layer, n_ctx, n_embd_kv)
  std::vector<float> v;  // (n_layer, n_ctx, n_embd_kv)
  void init(const HParams& hp, int64_t n_ctx);
  float* k_layer(int64_t l) { return k.data() + l * n_ctx * n_embd_kv; }
  float* v_layer(int64_t l) { return v.data() + l * n_ctx * n_embd_kv; }
};

// Scratch for up to n_batch tokens.
struct ForwardArena {
  int64_t n_batch = 0;
  std::vector<float> x;       // (T, n_embd) residual stream
  std::vector<float> h;       // (T, n_embd) normed input of attention / ffn
  std::vector<float> q;       // (T, n_embd)
  std::vector<float> k;       // (T, n_embd_kv)
  std::vector<float> v;       // (T, n_embd_kv)
  std::vector<float> attn;    // (T, n_embd) attention output
  std::vector<float> proj;    // (T, n_embd) o_proj / down_proj output
  std::vector<float> gate;    // (T, n_ff)
  std::vector<float> up;      // (T, n_ff)
  std::vector<float> act;     // (T, n_ff)
  std::vector<float> scores;  // (n_threads, n_ctx) attention probabilities
  QuantizedActs xq;           // int8 activations of the current bitlinear input
  void init(const HParams& hp, int64_t n_batch, int64_t n_ctx, int n_threads);
};

// y[t * n_out + r] = sum_j T[r, j] * d * x[t * n_in + j] for rows [r0, r1): the bitlinear with
// float activations (--act-quant none). Scalar.
void ternary_matmul_float(const TernaryMatrix& w, const float* x, int64_t n_tokens, float* y,
                          int64_t r0, int64_t r1);

// Runs tokens [0, n) at positions pos0 .. pos0 + n - 1 (n <= arena.n_batch, pos0 + n <=
// cache.n_ctx), appending to the cache. Writes normalised final hidden states to arena.h
// and, when logits is not null, the logits of the tokens [first_logit, n) to it
// ((n - first_logit, n_vocab), row-major).
void model_forward(const Model& model, const int32_t* tokens, int64_t n, int64_t pos0,
                   KvCache& cache, ForwardArena& arena, ThreadPool& pool,
                   const ForwardOptions& opts, float* logits, int64_t first_logit);

}  // namespace trit
