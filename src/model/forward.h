// The forward pass of a BitNet b1.58 model over a run of tokens of one sequence, with a KV
// cache for incremental decoding (DESIGN sections 1 and 2), composed of the ops of a Backend.
// Every buffer the pass writes is a named tensor of ForwardArena, sized for a batch of tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
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
  std::vector<std::unique_ptr<DeviceTensor>> k;  // n_layer x (n_ctx, n_embd_kv)
  std::vector<std::unique_ptr<DeviceTensor>> v;  // n_layer x (n_ctx, n_embd_kv)
  void init(Backend& backend, const HParams& hp, int64_t n_ctx);
};

// Activations for up to n_batch tokens.
struct ForwardArena {
  int64_t n_batch = 0;
  std::unique_ptr<DeviceTensor> x;     // (T, n_embd) residual stream
  std::unique_ptr<DeviceTensor> h;     // (T, n_embd) normed input of attention / ffn
  std::unique_ptr<DeviceTensor> q;     // (T, n_embd)
  std::unique_ptr<DeviceTensor> k;     // (T, n_embd_kv)
  std::unique_ptr<DeviceTensor> v;     // (T, n_embd_kv)
  std::unique_ptr<DeviceTensor> attn;  // (T, n_embd) attention output
  std::unique_ptr<DeviceTensor> proj;  // (T, n_embd) o_proj / down_proj output
  std::unique_ptr<DeviceTensor> gate;  // (T, n_ff)
  std::unique_ptr<DeviceTensor> up;    // (T, n_ff)
  std::unique_ptr<DeviceTensor> act;   // (T, n_ff)
  void init(Backend& backend, const HParams& hp, int64_t n_batch);
};

// Runs tokens [0, n) at positions pos0 .. pos0 + n - 1 (n <= arena.n_batch, pos0 + n <=
// cache.n_ctx), appending to the cache. Leaves the normalised final hidden states in arena.h
// and, when logits is not null, writes the logits of the tokens [first_logit, n) to it
// ((n - first_logit, n_vocab), row-major).
void model_forward(const Model& model, const int32_t* tokens, int64_t n, int64_t pos0,
                   KvCache& cache, ForwardArena& arena, Backend& backend,
                   const ForwardOptions& opts, float* logits, int64_t first_logit);

}  // namespace trit
