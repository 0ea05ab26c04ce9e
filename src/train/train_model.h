// The training forward and backward pass of a BitNet model with one LoRA adapter: the frozen
// ternary base carries gradients to earlier layers (dx = w_scale * T^T dy, straight-through
// for the activation quantiser), and only the adapter's A and B get gradients.
//
// With gradient checkpointing the forward pass keeps only each block's input; the backward
// pass recomputes one block's activations at a time from it.
//
// The passes are compositions of Backend ops (backend.h), so they run on the CPU or on a GPU.
// The adapter, its gradients and the AdamW moments live on the backend: a training step sends
// nothing there and brings back only the loss and the gradient norm. The LoraAdapter given at
// construction is uploaded then (and by upload_adapter()); sync_adapter() copies the trained
// values back into it, and save_optimizer()/load_optimizer() move the moments to and from a
// host AdamW for checkpoints.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
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
  // On a backend, which must outlive this object.
  TrainableModel(const Model& model, LoraAdapter& adapter, Backend& backend, TrainOptions opts);
  // On the CPU, with the threads of pool.
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
  // The gradients, read back from the backend (tests and tools; training needs no copy).
  const std::map<std::string, LoraGrad>& grads();

  // Clips the gradients to a global norm of max_norm (<= 0: no clipping) as clip_grad_norm
  // does, then takes one AdamW step (options o, learning rate lr) on every adapter tensor
  // ("<layer>.lora_a" / ".lora_b"), all on the backend. Returns the norm before clipping; a
  // non-finite norm skips the step and leaves everything as it was.
  float optimizer_step(const AdamWOptions& o, double lr, float max_norm);
  // The optimizer state as a host AdamW holds it (checkpoints), and back (resume): moments
  // of tensors the adapter lacks are ignored, tensors without moments start from zero.
  void save_optimizer(AdamW& opt);
  void load_optimizer(const AdamW& opt);
  // The adapter's values: from the backend into the LoraAdapter, and from it to the backend.
  void sync_adapter();
  void upload_adapter();
  const LoraAdapter& adapter() const { return adapter_; }

 private:
  struct Acts;
  struct Grads;
  struct Term;
  struct Param;
  void init();
  // Makes room for sequences of T tokens.
  void reserve(int64_t T);
  // out (T, d) = the block's output; a gets everything its backward pass reads.
  void block_forward(int64_t l, const DeviceTensor& x, int64_t T, Acts& a, bool train, uint64_t key,
                     DeviceTensor& out);
  // dx (T, d): d(block output) on entry, d(block input) on return.
  void block_backward(int64_t l, Acts& a, int64_t T, DeviceTensor& dx);
  double run(const int32_t* tokens, const int32_t* targets, const float* mask, int64_t T,
             float norm, bool backward, uint64_t key);

  const Model& model_;
  LoraAdapter& adapter_;
  std::unique_ptr<Backend> owned_backend_;
  Backend& be_;
  TrainOptions opts_;
  std::map<std::string, LoraGrad> grads_;
  std::vector<std::unique_ptr<Term>> all_terms_;
  std::vector<Param> params_;  // a and b of every term, with their moments
  int64_t opt_steps_ = 0;      // AdamW::t(): optimizer steps taken
  std::vector<std::array<std::vector<Term*>, kLinearCount>> terms_;  // (n_layer)
  std::vector<Term*> head_terms_;
  int64_t capacity_ = 0;  // tokens the activations below hold
  std::vector<Acts> acts_;
  std::unique_ptr<Grads> g_;
  std::vector<std::unique_ptr<DeviceTensor>> inputs_;  // block inputs kept for recomputation
};

}  // namespace trit
