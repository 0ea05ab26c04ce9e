// The whole model's passes (DESIGN sections 1 and 2), over the one block of model/block.h:
//   - generation: runs of tokens of one sequence appended to a KV cache, logits out;
//   - training: sequences from position 0, packed in the rows of one pass, scored against
//     their targets (the loss, and with it the head's gradient), then model_backward through
//     every block to the LoRA branches.
// Every buffer a pass writes is a named tensor of ForwardArena or TrainActs.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "model/block.h"
#include "model/lora_set.h"
#include "model/memory_estimate.h"
#include "model/model.h"

namespace trit::engine {

// ---- generation ----

struct ForwardOptions {
  bool act_quant = true;  // W1.58A8; false computes with float activations (--act-quant none)
  const LoraSet* lora = nullptr;  // branches added to the linear layers; null: none
  KvType kv_type = KvType::F32;   // the elements of the caches a Session makes
};

// Keys (after rope) and values of every layer for positions [0, n_ctx).
// A sequence's keys and values: rows [base, base + n_ctx) of k and v per layer. A cache of its
// own (init) starts at row 0; the caches of a pool (several sequences decoded together) share
// tensors, so that a device can attend for all of them in one dispatch.
struct KvCache {
  int64_t n_ctx = 0;
  int64_t base = 0;
  std::vector<std::shared_ptr<DeviceTensor>> k;  // n_layer x (>= base + n_ctx, n_embd_kv)
  std::vector<std::shared_ptr<DeviceTensor>> v;
  void init(Backend& backend, const HParams& hp, int64_t n_ctx, KvType type = KvType::F32);
  // n caches of n_ctx positions each in one pair of tensors per layer (bases kKvPoolAlign apart
  // at least).
  static std::vector<KvCache> pool(Backend& backend, const HParams& hp, int64_t n_ctx, int64_t n,
                                   KvType type = KvType::F32);
};

// Activations for up to n_batch tokens; the block's tensors share memory where their uses do
// not overlap (block.h).
struct ForwardArena {
  int64_t n_batch = 0;
  std::unique_ptr<DeviceTensor> x;     // (T, n_embd) residual stream
  std::unique_ptr<DeviceTensor> h;     // (T, n_embd) normed input of attention / ffn
  std::unique_ptr<DeviceTensor> q;     // (T, n_embd)
  std::unique_ptr<DeviceTensor> k;     // (T, n_embd_kv)
  std::unique_ptr<DeviceTensor> v;     // (T, n_embd_kv)
  std::unique_ptr<DeviceTensor> attn;  // (T, n_embd) attention output
  std::unique_ptr<DeviceTensor> proj;  // (T, n_embd) o_proj / down_proj output
  std::unique_ptr<DeviceTensor> gate;  // (T, n_ff), then the normed input of down_proj
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

// One sequence of a batched pass (model_forward_batch): its next n tokens, at positions pos0
// .., appended to its own cache, with its own adapters.
struct BatchSeq {
  KvCache* cache = nullptr;
  int64_t n = 0;
  int64_t pos0 = 0;
  const LoraSet* lora = nullptr;  // null: none
  bool logits = true;             // whether the logits of its last token are wanted
};

// Runs the tokens of several sequences as one pass: tokens holds each sequence's n tokens in
// turn (their sum <= arena.n_batch). The linear layers and the head read their weights once
// for every row; attention runs per sequence against its cache; each row gets its sequence's
// LoRA branches. logits gets, in order, the last token's logits of each sequence that wants
// them ((count, n_vocab), row-major). A batch of one sequence computes what model_forward does.
void model_forward_batch(const Model& model, const int32_t* tokens, std::span<const BatchSeq> seqs,
                         ForwardArena& arena, Backend& backend, bool act_quant, float* logits);

// ---- training ----

struct TrainPassOptions {
  bool act_quant = true;      // W1.58A8 with the straight-through estimator; false: float
  bool checkpointing = true;  // keep only each block's input; recompute the block backward
  float dropout = 0.0f;       // on the LoRA branches' input
  int64_t head_chunk = 32;    // tokens whose logits are held at once
  // On a backend computing in host memory (the CPU), each block's file pages leave the resident
  // set after the block's pass and fault in again for the next (Model::block_out): a step
  // computes over all its tokens per page brought in, so the weights need not stay resident. On
  // a device under a memory budget each block's device copy is dropped after its pass and
  // uploaded again for the next (Backend::release_weights).
  bool stream_weights = true;
  // ... where that keeps at least this many bytes out of the resident set (the pages brought
  // back cost time: model/memory_estimate.h). 0: whatever it saves.
  uint64_t stream_min_saving = kStreamSavingBytes;
};

// Sequences of training packed one after another in T rows, each from position 0 (lengths:
// their tokens; empty: one sequence of T). Token t is scored on targets[t] with weight mask[t];
// the loss is sum_t mask[t] * nll_t / norm (norm: the counted tokens of the whole step). The
// linear layers and the head run over all T rows at once; attention keeps to each sequence.
// dropout_key makes the dropout masks a pure function of (key, layer, row), so recomputation
// and resumed runs draw the same ones (a sequence packed with others draws other masks than
// alone).
struct TrainBatch {
  const int32_t* tokens = nullptr;
  const int32_t* targets = nullptr;
  const float* mask = nullptr;
  int64_t T = 0;
  float norm = 1;
  uint64_t dropout_key = 0;
  std::span<const int64_t> lengths = {};
};

// The tensors of training passes: each block's input, its saved activations (every block's,
// or one set recomputed block by block with checkpointing), and the backward pass's scratch.
class TrainActs {
 public:
  TrainActs(Backend& backend, const HParams& hp, TrainPassOptions opts);
  ~TrainActs();
  const TrainPassOptions& options() const { return opts_; }
  void set_stream_weights(bool on) { opts_.stream_weights = on; }

 private:
  friend double model_forward(const Model&, const TrainBatch&, const LoraSet&, TrainActs&, bool);
  friend void model_backward(const Model&, const TrainBatch&, const LoraSet&, TrainActs&);
  using TensorPtr = std::unique_ptr<DeviceTensor>;
  struct Saved;
  // Makes room for T tokens; `lora` sizes what the branches save.
  void reserve(int64_t T, const LoraSet& lora);
  // The activations block l writes (with checkpointing, every block shares one set).
  BlockActs& acts(int64_t l);
  // Points acts(l)'s LoRA saves at the tensors of block l's branches.
  void bind_lora(int64_t l, const BlockLora& lora);
  TensorPtr make(const char* name, int64_t cols);

  Backend& be_;
  const HParams& hp_;
  TrainPassOptions opts_;
  int64_t capacity_ = 0;                       // tokens the tensors hold
  std::vector<std::unique_ptr<Saved>> saved_;  // n_layer, or 1 with checkpointing
  std::vector<BlockActs> acts_;                // views of saved_
  std::vector<TensorPtr> inputs_;              // (T, d) every block's input
  // LoRA tensors by (saved set, linear index, branch, rank).
  std::map<std::tuple<size_t, int, size_t, int64_t>, std::pair<TensorPtr, TensorPtr>> lora_;
  TensorPtr x_, hf_, rstdf_, dhf_, dx_;  // residual stream, output_norm, its gradient
  std::vector<TensorPtr> grads_;
  BlockGrads g_;
};

// The loss of a batch's sequences (TrainBatch). With for_backward, the pass also saves what
// model_backward reads and adds the head's gradients (its LoRA branches' da, db and the
// gradient of the final hidden states); without, no dropout applies (validation).
double model_forward(const Model& model, const TrainBatch& batch, const LoraSet& lora,
                     TrainActs& acts, bool for_backward);
// After model_forward(..., true) of the same batch: adds the gradients of its loss to the
// da, db of every branch of `lora`, through the frozen ternary layers (straight-through for
// the activation quantiser).
void model_backward(const Model& model, const TrainBatch& batch, const LoraSet& lora,
                    TrainActs& acts);

}  // namespace trit::engine
