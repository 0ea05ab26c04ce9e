// A LoRA adapter in training over a frozen BitNet model: the adapter's A and B, their
// gradients and AdamW moments as tensors of a backend, and one training step's passes
// (model/forward.h's model_forward and model_backward: the frozen ternary base carries
// gradients to earlier layers, dx = w_scale * T^T dy, straight-through for the activation
// quantiser, and only the adapter's A and B get gradients).
//
// A training step sends nothing to the backend and brings back only the loss and the gradient
// norm. The LoraAdapter given at construction is uploaded then (and by upload_adapter());
// sync_adapter() copies the trained values back into it, and save_optimizer()/load_optimizer()
// move the moments to and from a host AdamW for checkpoints.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/thread_pool.h"
#include "model/forward.h"
#include "model/lora_set.h"
#include "model/model.h"
#include "train/collective.h"
#include "train/optimizer.h"

namespace trit::engine {

struct LoraGrad {
  std::vector<float> da;  // (rank, n_in), like LoraLayer::a
  std::vector<float> db;  // (n_out, rank), like LoraLayer::b
};

class TrainableModel {
 public:
  // On a backend, which must outlive this object.
  TrainableModel(const Model& model, LoraAdapter& adapter, Backend& backend, TrainPassOptions opts);
  // On the CPU, with the threads of pool.
  TrainableModel(const Model& model, LoraAdapter& adapter, ThreadPool& pool, TrainPassOptions opts);
  ~TrainableModel();

  // Sequences of T tokens in all, each from position 0, computed as one pass (model/forward.h's
  // TrainBatch; lengths empty: one sequence): adds the gradients of their loss to grads() and
  // returns the loss.
  double forward_backward(const int32_t* tokens, const int32_t* targets, const float* mask,
                          int64_t T, float norm, uint64_t dropout_key,
                          std::span<const int64_t> lengths = {});
  // The same loss without gradients and without dropout (validation).
  double forward_loss(const int32_t* tokens, const int32_t* targets, const float* mask, int64_t T,
                      float norm, std::span<const int64_t> lengths = {});

  void zero_grads();
  // Data-parallel: every gradient summed with the other ranks' (the same sums on every rank).
  void sum_grads(Collective& ranks);
  // The gradients, read back from the backend (tests and tools; training needs no copy).
  const std::map<std::string, LoraGrad>& grads();

  // Clips the gradients to a global norm of max_norm (<= 0: no clipping) as clip_grad_norm
  // does, then takes one AdamW step (options o, learning rate lr) on every adapter tensor
  // ("<layer>.lora_a" / ".lora_b"), all on the backend. Returns the norm before clipping; a
  // non-finite norm skips the step and leaves everything as it was.
  float optimizer_step(const AdamWOptions& o, double lr, float max_norm);
  // True when an optimizer_step was cut short by a device error: part of its update may have
  // run, so the adapter and moments on the device are not any step's.
  bool update_interrupted() const { return updating_; }
  // The optimizer state as a host AdamW holds it (checkpoints), and back (resume): moments
  // of tensors the adapter lacks are ignored, tensors without moments start from zero.
  void save_optimizer(AdamW& opt);
  void load_optimizer(const AdamW& opt);
  // The adapter's values: from the backend into the LoraAdapter, and from it to the backend.
  void sync_adapter();
  void upload_adapter();
  const LoraAdapter& adapter() const { return adapter_; }
  // Refuses a fine-tune that cannot fit the model's memory budget: the adapter's training
  // state, and with max_tokens > 0 the passes over sequences of that many tokens (the
  // constructor checks the state alone). On the CPU a budget that holds the whole fine-tune
  // (max_tokens > 0) with every block's weights resident keeps them so (no pages released and
  // faulted in again each pass); a smaller one, or none, streams them as
  // TrainPassOptions::stream_weights says.
  void check_budget(int64_t max_tokens);
  // Whether the passes release each block's file pages after it (forward.cpp's rule applies).
  bool streams_weights() const { return opts_.stream_weights; }
  Backend& backend() { return be_; }

 private:
  struct Param;
  void init();

  const Model& model_;
  LoraAdapter& adapter_;
  std::unique_ptr<Backend> owned_backend_;
  Backend& be_;
  TrainPassOptions opts_;
  bool stream_asked_ = true;  // opts.stream_weights as given
  std::map<std::string, LoraGrad> grads_;
  std::vector<std::unique_ptr<DeviceTensor>> tensors_;  // a, b, da, db of every layer
  std::vector<Param> params_;  // a and b of every layer, with their moments
  int64_t opt_steps_ = 0;      // AdamW::t(): optimizer steps taken
  bool updating_ = false;      // an update was recorded and has not finished running
  LoraSet lora_;               // the adapter's branches, with their gradients
  TrainActs acts_;
};

}  // namespace trit::engine
