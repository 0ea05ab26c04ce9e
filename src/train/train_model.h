// The training forward and backward pass of a BitNet model with one LoRA adapter: the frozen
// ternary base carries gradients to earlier layers (dx = w_scale * T^T dy, straight-through
// for the activation quantiser), and only the adapter's A and B get gradients.
//
// With gradient checkpointing the forward pass keeps only each block's input; the backward
// pass recomputes one block's activations at a time from it.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "backend/cpu/thread_pool.h"
#include "model/lora_apply.h"
#include "model/model.h"
#include "train/lora.h"
#include "train/optimizer.h"

namespace trit {

struct TrainOptions {
  bool act_quant = true;  // W1.58A8 with the straight-through estimator; false: float activations
  bool checkpointing = true;
  float dropout = 0.0f;     // on the LoRA branch input
  int64_t head_chunk = 32;  // tokens whose logits are held at once
};

struct LoraGrad {
  std::vector<float> da;  // (rank, n_in), like LoraLayer::a
  std::vector<float> db;  // (n_out, rank), like LoraLayer::b
};

class TrainableModel {
 public:
  TrainableModel(const Model& model, LoraAdapter& adapter, ThreadPool& pool, TrainOptions opts);
  ~TrainableModel();

  // One sequence of T tokens from position 0. Token t is scored on targets[t] with weight
  // mask[t]; the loss is sum_t mask[t] * nll_t / norm (norm: the counted tokens of the whole
  // step). Adds the gradients of that loss to grads() and returns it. dropout_key makes the
  // dropout masks a pure function of (key, layer, position), so recomputation and resumed
  // runs draw the same ones.
  double forward_backward(const int32_t* tokens, const int32_t* targets, const float* mask,
                          int64_t T, float norm, uint64_t dropout_key);
  // The same loss without gradients and without dropout (validation).
  double forward_loss(const int32_t* tokens, const int32_t* targets, const float* mask, int64_t T,
                      float norm);

  void zero_grads();
  // Every adapter tensor with its gradient ("<layer>.lora_a" / ".lora_b"), for the optimizer,
  // and the gradients alone, for clipping.
  std::vector<ParamRef> param_refs();
  std::vector<std::span<float>> grad_spans();
  std::map<std::string, LoraGrad>& grads() { return grads_; }
  const LoraAdapter& adapter() const { return adapter_; }

 private:
  struct Acts;
  struct Term;
  // out (T, d) = the block's output; a gets everything its backward pass reads.
  void block_forward(int64_t l, const float* x, int64_t T, Acts& a, bool train, uint64_t key,
                     float* out);
  void block_backward(int64_t l, Acts& a, int64_t T, float* dx);
  double head(const float* x_last, int64_t T, const int32_t* targets, const float* mask, float norm,
              float* dx_last);
  double run(const int32_t* tokens, const int32_t* targets, const float* mask, int64_t T,
             float norm, bool backward, uint64_t key);

  const Model& model_;
  LoraAdapter& adapter_;
  ThreadPool& pool_;
  TrainOptions opts_;
  std::map<std::string, LoraGrad> grads_;
  std::vector<std::array<std::vector<Term>, kLinearCount>> terms_;  // (n_layer)
  std::vector<Term> head_terms_;
};

}  // namespace trit
